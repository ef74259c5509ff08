"""Long-tailed datasets, their subsets, and mini-batch loaders.

Datasets (`list_datasets()`, `load_dataset(name, ...)`):

- `synthetic-lt`: built in, drawn procedurally (see `ltbench.data.synthetic`); the offline default.
- `cifar10-lt`, `cifar100-lt`: CIFAR made long-tailed with `long_tailed_indices`; read from
  torchvision's python pickles or from an image-folder copy (`root/train/<class>/*.jpg`).
- `imagenet-lt`, `inat2018`: read from split files (`relative/path label` per line). They are
  long-tailed already, so no further subsampling is done and `imb_factor` must be 1.

CIFAR and synthetic-lt are held in memory as one uint8 tensor (N, 3, H, W) and an int64 label
tensor (`TensorData`); `TensorBatches` iterates shuffled, augmented mini-batches from them on any
device. ImageNet-LT and iNaturalist are `SplitFileDataset`s for a torch `DataLoader`
(`make_loader` wraps both cases behind one interface).

Every shuffle and augmentation draw of epoch e comes from a generator seeded by (seed, e), so a
run resumed at epoch e sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.data import synthetic
from ltbench.errors import LtbenchError

PROFILES = ("exp", "step")
SAMPLING_MODES = ("instance", "class-balanced")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


# --------------------------------------------------------------------------- long-tailed subsets


def check_imb_factor(imb_factor: float) -> float:
    """`imb_factor` (= 1/rho) as a float, or a one-line error if it is outside (0, 1]."""
    try:
        value = float(imb_factor)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise LtbenchError(
            f"imb_factor must be in (0, 1] (it is 1/rho, e.g. 0.01 for rho=100), got {imb_factor!r}"
        )
    return value


def check_profile(profile: str) -> str:
    """`profile` itself, or a one-line error naming the known profiles."""
    if profile not in PROFILES:
        raise LtbenchError(f"unknown imbalance profile {profile!r}; known: {', '.join(PROFILES)}")
    return profile


def long_tailed_counts(num_classes: int, n_max: int, imb_factor: float, profile: str = "exp"):
    """Target images per class: `int(n_max * imb_factor ** (i / (C - 1)))` for class i (exp), or
    n_max for the first C // 2 classes and `int(n_max * imb_factor)` for the rest (step)."""
    imb_factor = check_imb_factor(imb_factor)
    check_profile(profile)
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        return [int(n_max * imb_factor ** (i / (num_classes - 1))) for i in range(num_classes)]
    return [n_max if i < num_classes // 2 else int(n_max * imb_factor) for i in range(num_classes)]


def long_tailed_indices(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    imb_factor: float,
    seed: int,
    profile: str = "exp",
) -> tuple[list[int], list[int]]:
    """Pick a long-tailed subset of a (balanced) training set, as Cui et al. and LDAM-DRW do.

    C = max label + 1 and n_max = len(labels) // C; the target counts are `long_tailed_counts`.
    numpy's global generator is seeded once with `seed`; then, class by class in label order,
    the class's indices are shuffled and the first n_i kept. Returns the kept indices (grouped
    by class, in class order) and the number kept per class (fewer than n_i only if a class has
    fewer images). The caller's numpy global random state is restored afterwards.
    """
    imb_factor = check_imb_factor(imb_factor)
    check_profile(profile)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 1 or labels.size == 0:
        raise LtbenchError("long_tailed_indices needs a non-empty 1-D list of labels")
    if labels.min() < 0:
        raise LtbenchError(f"labels must be >= 0, got {int(labels.min())}")
    num_classes = int(labels.max()) + 1
    targets = long_tailed_counts(num_classes, len(labels) // num_classes, imb_factor, profile)

    saved = np.random.get_state()
    try:
        # the global generator on purpose: this is the exact draw of the reference construction
        np.random.seed(seed)
        kept: list[int] = []
        counts: list[int] = []
        for cls, n_cls in enumerate(targets):
            idx = np.where(labels == cls)[0]
            np.random.shuffle(idx)
            chosen = idx[:n_cls]
            kept.extend(int(i) for i in chosen)
            counts.append(len(chosen))
    finally:
        np.random.set_state(saved)
    return kept, counts


def split_validation(
    labels: Sequence[int] | np.ndarray | torch.Tensor, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Hold out `val_fraction` of each class's images: returns (train positions, val positions).

    Each class with at least 2 images gives round(fraction * n), but at least 1 and at most n - 1,
    images to validation; a class with a single image keeps it for training.
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise LtbenchError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    rng = np.random.default_rng(seed)
    train_pos: list[int] = []
    val_pos: list[int] = []
    for cls in range(int(labels.max()) + 1 if labels.size else 0):
        idx = np.where(labels == cls)[0]
        n_val = 0
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(1, int(round(val_fraction * len(idx)))), len(idx) - 1)
        held = set(rng.permutation(idx)[:n_val].tolist())
        for i in idx.tolist():
            (val_pos if i in held else train_pos).append(i)
    return sorted(train_pos), sorted(val_pos)


def class_counts(labels: Sequence[int] | np.ndarray | torch.Tensor, num_classes: int) -> list[int]:
    """Images per class, in class order."""
    labels = np.asarray(
        labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64
    )
    return np.bincount(labels, minlength=num_classes).tolist()


# --------------------------------------------------------------------------- containers


@dataclass
class TensorData:
    """An in-memory split: uint8 images (N, 3, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, 3, H, W)")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have shape (N,) matching the images")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, positions: Sequence[int]) -> TensorData:
        """The images at `positions`, in that order."""
        idx = torch.as_tensor(list(positions), dtype=torch.int64)
        return TensorData(self.images[idx], self.labels[idx])


@dataclass
class DatasetBundle:
    """Everything a training run needs to know about its data.

    `cls_num_list` counts the images actually trained on (after the long-tailed subset and the
    validation hold-out), in class order. `train`/`val`/`test` are `TensorData` when `in_memory`,
    else `SplitFileDataset`s; `val` is None without a validation split. The test split is never
    subsampled. `mean`/`std` are the per-channel normalisation constants.
    """

    name: str
    num_classes: int
    class_names: list[str]
    cls_num_list: list[int]
    train: Any
    val: Any | None
    test: Any
    image_size: int
    in_memory: bool
    mean: tuple[float, float, float] = CIFAR_MEAN
    std: tuple[float, float, float] = CIFAR_STD
    imb_factor: float = 1.0
    profile: str = "exp"


# --------------------------------------------------------------------------- sampling


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator that depends only on (seed, epoch)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def class_balanced_weights(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Per-sample sampling weights 1 / n_class, so that every class is drawn equally often."""
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    counts = torch.bincount(labels, minlength=num_classes or 0).to(torch.float64)
    return 1.0 / counts[labels]


def epoch_order(
    labels: torch.Tensor, generator: torch.Generator, shuffle: bool, sampling: str
) -> torch.Tensor:
    """The sample order of one epoch (CPU int64, one entry per sample).

    `instance`: a permutation (or 0..N-1 without shuffling); `class-balanced`: N draws with
    replacement, each sample with probability proportional to 1 / (its class's count).
    """
    n = int(labels.shape[0])
    if sampling == "instance":
        return torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if sampling == "class-balanced":
        weights = class_balanced_weights(labels)
        return torch.multinomial(weights, n, replacement=True, generator=generator)
    check_sampling(sampling)
    raise AssertionError(sampling)  # pragma: no cover


def check_sampling(sampling: str) -> str:
    """`sampling` itself, or a one-line error naming the known sampling modes."""
    if sampling not in SAMPLING_MODES:
        raise LtbenchError(
            f"unknown sampling mode {sampling!r}; known: {', '.join(SAMPLING_MODES)}"
        )
    return sampling


class EpochSampler(torch.utils.data.Sampler):
    """A DataLoader sampler with the same (seed, epoch) order as `TensorBatches`."""

    def __init__(self, labels, *, shuffle: bool, seed: int = 0, sampling: str = "instance"):
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.shuffle = shuffle
        self.seed = seed
        self.sampling = sampling
        self.epoch = 0
        check_sampling(sampling)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(
            self.labels, epoch_generator(self.seed, self.epoch), self.shuffle, self.sampling
        )
        return iter(order.tolist())

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# --------------------------------------------------------------------------- augmentation


def draw_crop_flip(
    n: int, padding: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random crop offsets in [0, 2 * padding] (y, x) and flip flags for n images (CPU)."""
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets[0], offsets[1], flips


def crop_flip(
    images: torch.Tensor,
    offset_y: torch.Tensor,
    offset_x: torch.Tensor,
    flip: torch.Tensor,
    padding: int = 4,
) -> torch.Tensor:
    """Zero-pad a batch (B, C, H, W) by `padding`, cut an H x W window at each image's own offset
    and mirror the images whose `flip` is set, all with two gathers (no per-image loop)."""
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offset_y, offset_x, flip = offset_y.to(device), offset_x.to(device), flip.to(device)
    rows = offset_y[:, None] + torch.arange(h, device=device)
    cols_fwd = torch.arange(w, device=device)
    cols = offset_x[:, None] + torch.where(flip[:, None], w - 1 - cols_fwd, cols_fwd)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32, scaled to [0, 1], per-channel standardised.

    `mean`/`std`: C numbers, or float32 tensors already on the images' device (no copy then).
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean_t) / std_t


class TensorBatches:
    """Mini-batches `(x, y)` from in-memory uint8 images, on the images' device.

    `train=True`: each epoch's order is drawn from (seed, epoch) (call `set_epoch` before
    iterating), and every image gets a random crop (zero padding `padding`) and a horizontal flip
    with probability 1/2. `train=False`: the data in order, no augmentation. `sampling` is
    "instance" or "class-balanced" (see `epoch_order`). `x` is float32, normalised with mean/std.
    """

    def __init__(
        self,
        data: TensorData,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        drop_last: bool = False,
        sampling: str = "instance",
        augment: bool | None = None,
        padding: int = 4,
        mean: Sequence[float] = CIFAR_MEAN,
        std: Sequence[float] = CIFAR_STD,
        device: str | torch.device | None = None,
    ):
        if batch_size < 1:
            raise LtbenchError(f"batch_size must be at least 1, got {batch_size}")
        check_sampling(sampling)
        self.images = data.images if device is None else data.images.to(device)
        self.labels = data.labels.to(self.images.device)
        self._cpu_labels = data.labels.cpu()
        self.batch_size = int(batch_size)
        self.train = train
        self.seed = seed
        self.drop_last = drop_last
        self.sampling = sampling
        self.augment = train if augment is None else augment
        self.padding = padding
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.images.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.images.device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch` (0-based): its order and augmentation depend on (seed, epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = int(self.labels.shape[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, self.epoch)
        order = epoch_order(self._cpu_labels, gen, shuffle=self.train, sampling=self.sampling)
        device = self.images.device
        if self.augment:
            oy, ox, flips = (t.to(device) for t in draw_crop_flip(len(order), self.padding, gen))
        order = order.to(device)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = order[sl]
            x = self.images[idx]
            if self.augment:
                x = crop_flip(x, oy[sl], ox[sl], flips[sl], self.padding)
            yield normalize(x, self.mean, self.std), self.labels[idx]


class DatasetBatches:
    """A DataLoader over a file-backed dataset with `set_epoch`, like `TensorBatches`.

    The order of epoch e depends only on (seed, e); the random crops and flips of the dataset's
    transform come from torch's global generator (in worker processes, seeded from it), so they
    repeat on resume only if that generator's state is restored too.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        drop_last: bool = False,
        sampling: str = "instance",
        num_workers: int = 0,
        device: str | torch.device | None = None,
    ):
        self.sampler = EpochSampler(dataset.labels, shuffle=train, seed=seed, sampling=sampling)
        self.device = device
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=device is not None and torch.device(device).type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch` (0-based)."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            yield x, y


def make_loader(
    bundle: DatasetBundle,
    split: str,
    batch_size: int,
    *,
    train: bool | None = None,
    seed: int = 0,
    sampling: str = "instance",
    drop_last: bool = False,
    device: str | torch.device | None = None,
    num_workers: int = 0,
):
    """A batch iterator over `bundle.<split>` ("train", "val" or "test") with `set_epoch`.

    `train` (default: split == "train") turns on shuffling and augmentation. In-memory data gives
    a `TensorBatches`; file-backed data a `DatasetBatches` (the dataset's own transform decides
    the augmentation there, so `train` only controls shuffling).
    """
    if split not in ("train", "val", "test"):
        raise LtbenchError(f"split must be train, val or test, got {split!r}")
    data = getattr(bundle, split)
    if data is None:
        raise LtbenchError(f"dataset {bundle.name!r} has no {split} split (set val_fraction)")
    train = split == "train" if train is None else train
    if bundle.in_memory:
        return TensorBatches(
            data,
            batch_size,
            train=train,
            seed=seed,
            drop_last=drop_last,
            sampling=sampling,
            mean=bundle.mean,
            std=bundle.std,
            device=device,
        )
    return DatasetBatches(
        data,
        batch_size,
        train=train,
        seed=seed,
        drop_last=drop_last,
        sampling=sampling,
        num_workers=num_workers,
        device=device,
    )


# --------------------------------------------------------------------------- file-backed data


def imagenet_transform(train: bool, image_size: int = 224, resize: int = 256) -> Callable:
    """The ImageNet-LT / iNaturalist pipeline: shorter side to 256, then a random 224 crop and a
    horizontal flip (train) or the centre 224 crop (eval); tensor, ImageNet normalisation."""
    from torchvision import transforms as T

    crop = (
        [T.RandomCrop(image_size), T.RandomHorizontalFlip()]
        if train
        else [T.CenterCrop(image_size)]
    )
    return T.Compose(
        [T.Resize(resize), *crop, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def read_split_file(path: Path) -> tuple[list[str], list[int]]:
    """Parse `relative/path label` lines (blank lines skipped) into paths and labels."""
    paths, labels = [], []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
                raise LtbenchError(f"{path}:{lineno}: expected 'relative/path label', got {line!r}")
            paths.append(parts[0])
            labels.append(int(parts[1]))
    if not paths:
        raise LtbenchError(f"split file {path} lists no images")
    return paths, labels


class SplitFileDataset(torch.utils.data.Dataset):
    """Images listed in a split file, relative to `image_root`, read with PIL on access.

    `labels` is an int64 tensor of all labels (for counts and samplers); items are
    `(transform(image), label)`.
    """

    def __init__(self, image_root, paths: Sequence[str], labels: Sequence[int], transform=None):
        self.image_root = Path(image_root)
        self.paths = list(paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.transform = transform

    @classmethod
    def from_split_file(cls, image_root, split_file, transform=None) -> SplitFileDataset:
        paths, labels = read_split_file(Path(split_file))
        return cls(image_root, paths, labels, transform)

    def subset(self, positions: Sequence[int], transform=None) -> SplitFileDataset:
        """The entries at `positions`, with `transform` (default: this dataset's)."""
        return SplitFileDataset(
            self.image_root,
            [self.paths[i] for i in positions],
            self.labels[list(positions)].tolist(),
            self.transform if transform is None else transform,
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.image_root / self.paths[i]) as img:
            img = img.convert("RGB")
        x = self.transform(img) if self.transform is not None else img
        return x, int(self.labels[i])


# --------------------------------------------------------------------------- image folders


def default_cache_dir() -> Path:
    """Where decoded image arrays are cached: $LTBENCH_CACHE, else $XDG_CACHE_HOME/ltbench,
    else ~/.cache/ltbench."""
    if os.environ.get("LTBENCH_CACHE"):
        return Path(os.environ["LTBENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ltbench"


def _list_image_folder(split_dir: Path, n_max: int | None) -> tuple[list[str], list[list[Path]]]:
    classes = sorted(
        p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    files = []
    for name in classes:
        found = sorted(
            p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        files.append(found[:n_max] if n_max is not None else found)
    return classes, files


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image_folder(
    split_dir: Path, n_max: int | None = None, cache_dir: Path | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Decode `split_dir/<class>/<image>` (classes sorted by name = label order; the first `n_max`
    files of each class by name) into (class names, uint8 images (N, 3, H, W), int64 labels).

    The arrays are cached under `cache_dir` (see `default_cache_dir`), keyed by the folder's path,
    `n_max`, and each class folder's modification time and file count; pass cache_dir=False to
    neither read nor write the cache.
    """
    split_dir = Path(split_dir).resolve()
    classes, files = _list_image_folder(split_dir, n_max)
    if not classes or not any(files):
        raise LtbenchError(
            f"no images found under {split_dir} (expected {split_dir}/<class>/*.jpg)"
        )
    key_parts = [str(split_dir), n_max]
    for name, found in zip(classes, files, strict=True):
        key_parts.append([name, (split_dir / name).stat().st_mtime_ns, len(found)])
    key = hashlib.sha1(json.dumps(key_parts).encode()).hexdigest()[:20]
    cache_file = None
    if cache_dir is not False:
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_file = cache_dir / f"imagefolder-{split_dir.name}-{key}.npz"
        if cache_file.exists():
            with np.load(cache_file) as z:
                return classes, z["images"], z["labels"]

    flat = [p for found in files for p in found]
    labels = np.concatenate(
        [np.full(len(found), c, dtype=np.int64) for c, found in enumerate(files)]
    )
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(_decode, flat, chunksize=256))
    shape = decoded[0].shape
    for path, arr in zip(flat, decoded, strict=True):
        if arr.shape != shape:
            raise LtbenchError(
                f"image {path} is {arr.shape[1]}x{arr.shape[0]}, expected "
                f"{shape[1]}x{shape[0]} like the others"
            )
    images = np.ascontiguousarray(np.stack(decoded).transpose(0, 3, 1, 2))
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            # write then rename, so concurrent trials never read a half-written file
            fd, tmp = tempfile.mkstemp(dir=cache_file.parent, suffix=".npz.tmp")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, images=images, labels=labels)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only cache only costs the decoding time next run
    return classes, images, labels


# --------------------------------------------------------------------------- dataset loaders


def _first_per_class(labels: np.ndarray, n_max: int | None) -> np.ndarray:
    """Positions of the first `n_max` images of each class, in their original order."""
    if n_max is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        keep[np.where(labels == cls)[0][:n_max]] = True
    return np.where(keep)[0]


def _check_n(name: str, value: int | None) -> int | None:
    if value is not None and int(value) < 1:
        raise LtbenchError(f"{name} must be at least 1, got {value!r}")
    return None if value is None else int(value)


def _in_memory_bundle(
    name,
    class_names,
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    imb_factor,
    profile,
    subset_seed,
    val_fraction,
    val_seed,
    mean,
    std,
) -> DatasetBundle:
    """Long-tailed subset + validation hold-out of a balanced in-memory training set."""
    num_classes = len(class_names)
    kept, _ = long_tailed_indices(train_y, imb_factor, subset_seed, profile)
    train = TensorData(torch.from_numpy(train_x[kept]), torch.from_numpy(train_y[kept]))
    val = None
    if val_fraction > 0:
        train_pos, val_pos = split_validation(train.labels, val_fraction, val_seed)
        train, val = train.subset(train_pos), train.subset(val_pos)
    test = TensorData(torch.from_numpy(np.ascontiguousarray(test_x)), torch.from_numpy(test_y))
    return DatasetBundle(
        name=name,
        num_classes=num_classes,
        class_names=list(class_names),
        cls_num_list=class_counts(train.labels, num_classes),
        train=train,
        val=val,
        test=test,
        image_size=int(train_x.shape[-1]),
        in_memory=True,
        mean=tuple(mean),
        std=tuple(std),
        imb_factor=imb_factor,
        profile=profile,
    )


def _load_synthetic(
    name,
    *,
    root,
    imb_factor,
    profile,
    subset_seed,
    download,
    n_max,
    val_fraction,
    val_seed,
    n_test_max=None,
) -> DatasetBundle:
    n_train = n_max or synthetic.DEFAULT_TRAIN_PER_CLASS
    n_test = n_test_max or synthetic.DEFAULT_TEST_PER_CLASS
    train_x, train_y = synthetic.generate("train", n_train)
    test_x, test_y = synthetic.generate("test", n_test)
    return _in_memory_bundle(
        name,
        synthetic.CLASS_NAMES,
        train_x,
        train_y,
        test_x,
        test_y,
        imb_factor=imb_factor,
        profile=profile,
        subset_seed=subset_seed,
        val_fraction=val_fraction,
        val_seed=val_seed,
        mean=synthetic.MEAN,
        std=synthetic.STD,
    )


_CIFAR = {
    "cifar10-lt": ("CIFAR10", "cifar-10-batches-py", 10),
    "cifar100-lt": ("CIFAR100", "cifar-100-python", 100),
}


def _load_cifar(
    name,
    *,
    root,
    imb_factor,
    profile,
    subset_seed,
    download,
    n_max,
    val_fraction,
    val_seed,
    n_test_max=None,
    cache_dir=None,
) -> DatasetBundle:
    tv_class, pickle_dir, num_classes = _CIFAR[name]
    if root is None:
        raise LtbenchError(f"dataset {name!r} needs its folder: pass --data-root DIR")
    root = Path(root).expanduser()
    folder = root / "train", root / "test"
    if folder[0].is_dir() and folder[1].is_dir():
        splits = []
        for split_dir, limit in zip(folder, (n_max, n_test_max), strict=True):
            classes, x, y = load_image_folder(split_dir, limit, cache_dir)
            if len(classes) != num_classes:
                raise LtbenchError(
                    f"{name}: {split_dir} has {len(classes)} class folders, expected {num_classes}"
                )
            splits.append((classes, x, y))
        (class_names, train_x, train_y), (_, test_x, test_y) = splits
    elif (root / pickle_dir).is_dir() or download:
        import torchvision

        try:
            tv_train = getattr(torchvision.datasets, tv_class)(root, train=True, download=download)
            tv_test = getattr(torchvision.datasets, tv_class)(root, train=False, download=download)
        except RuntimeError as exc:  # torchvision: missing or corrupt files
            raise LtbenchError(f"{name}: cannot read CIFAR under {root}: {exc}") from None
        class_names = list(tv_train.classes)
        train_y_all = np.asarray(tv_train.targets, dtype=np.int64)
        test_y_all = np.asarray(tv_test.targets, dtype=np.int64)
        keep = _first_per_class(train_y_all, n_max)
        keep_test = _first_per_class(test_y_all, n_test_max)
        train_x = np.ascontiguousarray(tv_train.data[keep].transpose(0, 3, 1, 2))
        test_x = np.ascontiguousarray(tv_test.data[keep_test].transpose(0, 3, 1, 2))
        train_y, test_y = train_y_all[keep], test_y_all[keep_test]
    else:
        raise LtbenchError(
            f"{name}: no CIFAR data under {root}: expected {root / pickle_dir} (torchvision "
            f"pickles) or {root}/train/<class>/ and {root}/test/<class>/ image folders; "
            "download=True fetches the pickles"
        )
    return _in_memory_bundle(
        name,
        class_names,
        train_x,
        train_y,
        test_x,
        test_y,
        imb_factor=imb_factor,
        profile=profile,
        subset_seed=subset_seed,
        val_fraction=val_fraction,
        val_seed=val_seed,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    )


_SPLIT_FILES = {
    "imagenet-lt": ("ImageNet_LT_train.txt", "ImageNet_LT_test.txt"),
    "inat2018": ("iNaturalist18_train.txt", "iNaturalist18_val.txt"),
}


def _resolve_split(root: Path, given, default: str, what: str, name: str) -> Path:
    path = Path(given).expanduser() if given is not None else Path(default)
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise LtbenchError(f"{name}: {what} split file not found: {path}")
    return path


def _load_split_files(
    name,
    *,
    root,
    imb_factor,
    profile,
    subset_seed,
    download,
    n_max,
    val_fraction,
    val_seed,
    train_split=None,
    test_split=None,
    val_split=None,
    image_root=None,
    image_size=224,
) -> DatasetBundle:
    if imb_factor != 1.0:
        raise LtbenchError(
            f"{name} is long-tailed already and is used as published: imb_factor must be 1, "
            f"got {imb_factor!r}"
        )
    if n_max is not None:
        raise LtbenchError(f"{name}: n_max is not supported (the split files fix the images)")
    if download:
        raise LtbenchError(f"{name} cannot be downloaded by ltbench; point root at a local copy")
    if root is None:
        raise LtbenchError(f"dataset {name!r} needs its folder: pass --data-root DIR")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LtbenchError(f"{name}: root folder not found: {root}")
    if val_split is not None and val_fraction > 0:
        raise LtbenchError(f"{name}: give val_split or val_fraction, not both")
    image_root = Path(image_root).expanduser() if image_root is not None else root
    train_file, test_file = _SPLIT_FILES[name]
    train_path = _resolve_split(root, train_split, train_file, "train", name)
    test_path = _resolve_split(root, test_split, test_file, "test", name)

    train_tf, eval_tf = imagenet_transform(True, image_size), imagenet_transform(False, image_size)
    train = SplitFileDataset.from_split_file(image_root, train_path, train_tf)
    test = SplitFileDataset.from_split_file(image_root, test_path, eval_tf)
    first = image_root / train.paths[0]
    if not first.is_file():
        raise LtbenchError(
            f"{name}: image {first} (first entry of {train_path}) not found; is image_root right?"
        )
    val = None
    if val_split is not None:
        val = SplitFileDataset.from_split_file(
            image_root, _resolve_split(root, val_split, "", "val", name), eval_tf
        )
    elif val_fraction > 0:
        train_pos, val_pos = split_validation(train.labels, val_fraction, val_seed)
        train, val = train.subset(train_pos), train.subset(val_pos, transform=eval_tf)
    num_classes = int(train.labels.max()) + 1
    for split_name, ds in (("test", test), ("val", val)):
        if ds is not None and int(ds.labels.max()) >= num_classes:
            raise LtbenchError(
                f"{name}: {split_name} split has label {int(ds.labels.max())}, "
                f"but the train split only {num_classes} classes"
            )
    # split files carry no class names; the folder holding a class's first image is the best
    # available (a WordNet id on ImageNet, a category id on iNaturalist)
    class_names = [str(c) for c in range(num_classes)]
    named = set()
    for rel, label in zip(train.paths, train.labels.tolist(), strict=True):
        if label not in named:
            named.add(label)
            parent = Path(rel).parent.name
            class_names[label] = parent or str(label)
    return DatasetBundle(
        name=name,
        num_classes=num_classes,
        class_names=class_names,
        cls_num_list=class_counts(train.labels, num_classes),
        train=train,
        val=val,
        test=test,
        image_size=image_size,
        in_memory=False,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        imb_factor=1.0,
        profile=profile,
    )


@dataclass(frozen=True)
class DatasetSpec:
    """What the dataset registry knows about one dataset."""

    name: str
    loader: Callable[..., DatasetBundle]
    num_classes: int
    in_memory: bool
    description: str


_DATASETS = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "synthetic-lt",
            _load_synthetic,
            10,
            True,
            "procedural 10-class 32x32 shapes and textures; built in, no download",
        ),
        DatasetSpec("cifar10-lt", _load_cifar, 10, True, "CIFAR-10, long-tailed subset"),
        DatasetSpec("cifar100-lt", _load_cifar, 100, True, "CIFAR-100, long-tailed subset"),
        DatasetSpec(
            "imagenet-lt",
            _load_split_files,
            1000,
            False,
            "ImageNet-LT (Liu et al. 2019) from its split files",
        ),
        DatasetSpec(
            "inat2018",
            _load_split_files,
            8142,
            False,
            "iNaturalist 2018 from its split files (val used as the test set)",
        ),
    )
}


_COMMON_OPTIONS = (
    "root",
    "imb_factor",
    "profile",
    "subset_seed",
    "download",
    "n_max",
    "val_fraction",
    "val_seed",
)


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`."""
    return list(_DATASETS)


def get_dataset_spec(name: str) -> DatasetSpec:
    """The registry record for `name`, or a one-line error listing the known names."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise LtbenchError(
            f"unknown dataset {name!r}; known datasets: {', '.join(_DATASETS)}"
        ) from None


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    imb_factor: float,
    profile: str = "exp",
    subset_seed: int = 0,
    download: bool = False,
    n_max: int | None = None,
    val_fraction: float = 0.0,
    val_seed: int = 0,
    **options: Any,
) -> DatasetBundle:
    """Load dataset `name` as a long-tailed training set plus its balanced test set.

    imb_factor: 1/rho in (0, 1] (0.01 for rho=100). CIFAR and synthetic-lt are subsampled with
        `long_tailed_indices(labels, imb_factor, subset_seed, profile)`; ImageNet-LT and
        iNaturalist are long-tailed as published and require imb_factor=1.
    n_max: images per class taken before the long-tailed construction (the first n_max of each
        class), to make small runs fast; synthetic-lt draws this many per class (default 500).
    val_fraction: share of each class's long-tailed training images held out as a validation
        split (at least one per class with two or more images), drawn with `val_seed`.
    download: fetch CIFAR with torchvision (opt-in; never done otherwise).
    options: `n_test_max` (synthetic, CIFAR: images per class in the test set), `cache_dir`
        (CIFAR image folders; False disables the cache), `train_split`, `test_split`,
        `val_split`, `image_root`, `image_size` (split-file datasets).
    """
    spec = get_dataset_spec(name)
    imb_factor = check_imb_factor(imb_factor)
    check_profile(profile)
    if not 0.0 <= float(val_fraction) < 1.0:
        raise LtbenchError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_max = _check_n("n_max", n_max)
    if "n_test_max" in options:
        options["n_test_max"] = _check_n("n_test_max", options["n_test_max"])
    accepted = set(inspect.signature(spec.loader).parameters) - set(_COMMON_OPTIONS)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise LtbenchError(
            f"dataset {name!r} has no option {unknown[0]!r}; its options: "
            f"{', '.join(sorted(accepted - {'name'})) or 'none'}"
        )
    return spec.loader(
        name,
        root=root,
        imb_factor=imb_factor,
        profile=profile,
        subset_seed=int(subset_seed),
        download=bool(download),
        n_max=n_max,
        val_fraction=float(val_fraction),
        val_seed=int(val_seed),
        **options,
    )
