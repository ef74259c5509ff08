"""File-backed data: split-file datasets (ImageNet-LT, iNaturalist) with the ImageNet transforms,
and image folders (`root/<split>/<class>/<image>`) decoded into arrays with an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ltbench.errors import LtbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


# --------------------------------------------------------------------------- split files


def imagenet_transform(train: bool, image_size: int = 224, resize: int = 256) -> Callable:
    """The ImageNet-LT / iNaturalist pipeline: shorter side to 256, then a random 224 crop and a
    horizontal flip (train) or the centre 224 crop (eval), as a uint8 (3, H, W) tensor.

    Decoding, resizing and cropping run in the DataLoader's worker processes; the ImageNet
    normalisation (`ltbench.data.batches.normalize`, the arithmetic of torchvision's ToTensor
    and Normalize) runs on the training device once the batch is there, so a worker hands over
    a quarter of the bytes a float32 image would take, and the host-to-device copy too."""
    from torchvision import transforms as T

    crop = (
        [T.RandomCrop(image_size), T.RandomHorizontalFlip()]
        if train
        else [T.CenterCrop(image_size)]
    )
    return T.Compose([T.Resize(resize), *crop, T.PILToTensor()])


def read_split_file(path: Path) -> tuple[list[str], list[int]]:
    """Parse `relative/path label` lines (blank lines skipped) into paths and labels."""
    paths, labels = [], []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.rsplit(maxsplit=1)
                if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
                    raise LtbenchError(
                        f"{path}:{lineno}: expected 'relative/path label', got {line[:200]!r}"
                    )
                paths.append(parts[0])
                labels.append(int(parts[1]))
    except UnicodeDecodeError:
        raise LtbenchError(f"split file {path} is not a UTF-8 text file") from None
    except OSError as exc:
        raise LtbenchError(f"cannot read split file {path}: {exc.strerror or exc}") from None
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

    @property
    def ids(self) -> list[str]:
        """Each image's identity (`ltbench.data.draws`): its path as the split file gives it."""
        return self.paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = _open_rgb(self.image_root / self.paths[i])
        x = self.transform(img) if self.transform is not None else img
        return x, int(self.labels[i])


class EncodedFiles(torch.utils.data.Dataset):
    """The files of a `SplitFileDataset`, undecoded: items are (the file's bytes, label), for
    decoding a whole batch on the device (`DeviceJpegDecoder`). Plain bytes cross from the
    DataLoader workers by pickling (no shared-memory file descriptor per image)."""

    def __init__(self, dataset: SplitFileDataset):
        self.dataset = dataset
        self.labels = dataset.labels

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        path = self.dataset.image_root / self.dataset.paths[i]
        try:
            return path.read_bytes(), int(self.labels[i])
        except OSError as exc:
            reason = f"cannot read image {path}: {exc.strerror or exc}"
            raise LtbenchError(f"{reason}; replace or remove the file") from None


class DeviceJpegDecoder:
    """Decode a batch of JPEG files with `torchvision.io.decode_jpeg` on `device` (nvJPEG on
    CUDA; on the CPU the same call, one image after another) and apply `imagenet_transform`'s
    geometry there: shorter side to `resize` (bilinear, antialiased), a random `image_size`
    crop and flip (`train`, drawn from `generator`) or the centre crop; uint8 (B, 3, S, S)."""

    def __init__(self, device, *, train: bool, image_size: int = 224, resize: int = 256):
        self.device = torch.device(device)
        self.train, self.size, self.resize = train, image_size, resize

    def __call__(self, encoded: list[bytes], generator=None) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms.v2 import functional as TF

        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in encoded]
        images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        out = []
        for img in images:
            img = TF.resize(img, [self.resize], antialias=True)
            h, w = img.shape[-2:]
            if self.train:
                top = int(torch.randint(0, h - self.size + 1, (1,), generator=generator))
                left = int(torch.randint(0, w - self.size + 1, (1,), generator=generator))
                img = img[:, top : top + self.size, left : left + self.size]
                if bool(torch.rand((), generator=generator) < 0.5):
                    img = img.flip(-1)
            else:
                img = TF.center_crop(img, [self.size, self.size])
            out.append(img)
        return torch.stack(out)


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


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _names(names, most: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(repr(n[:60]) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_same_classes(train_dir: Path, test_dir: Path) -> None:
    """The class folders of `test_dir` are those of `train_dir`, by name: labels go by the
    sorted names, so a folder named differently in one split would score its images against
    another class. A one-line error names the folders found in one split only."""
    train, test = set(_class_folders(train_dir)), set(_class_folders(test_dir))
    if train != test:
        only_train, only_test = train - test, test - train
        parts = [
            f"only in {d}: {_names(n)}"
            for d, n in ((train_dir, only_train), (test_dir, only_test))
            if n
        ]
        raise LtbenchError(
            f"the class folders of {test_dir} and {train_dir} differ ({'; '.join(parts)}); "
            "name every class the same in both splits"
        )


def check_class_names(split_dir: Path, expected: Sequence[str], whose: str) -> None:
    """The class folders of `split_dir` carry exactly the names `expected` (e.g. CIFAR's
    classes, whose sorted order is the label order); a one-line error names the others."""
    found = set(_class_folders(split_dir))
    unknown, absent = found - set(expected), set(expected) - found
    if unknown or absent:
        raise LtbenchError(
            f"{split_dir}: class folders {_names(unknown)} are not {whose} classes "
            f"(missing: {_names(absent)}); name the folders {_names(expected, 3)}, ... "
            "so that the labels are the dataset's"
        )


def _reason(exc: Exception) -> str:
    """Why PIL could not read a file, on one line."""
    return getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__


def _open_rgb(path: Path):
    """The image at `path` as an RGB PIL image; a file that cannot be read or decoded (missing,
    truncated, not an image) is a one-line error naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBomb..
        raise LtbenchError(
            f"cannot read image {path}: {_reason(exc)}; replace or remove the file"
        ) from None


def _decode(path: Path) -> np.ndarray:
    return np.asarray(_open_rgb(path), dtype=np.uint8)


def load_image_folder(
    split_dir: Path, n_max: int | None = None, cache_dir: Path | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Decode `split_dir/<class>/<image>` (classes sorted by name = label order; the first `n_max`
    files of each class by name) into (class names, uint8 images (N, 3, H, W), int64 labels).
    `read_image_folder` also gives each image's identity."""
    classes, images, labels, _ = read_image_folder(split_dir, n_max, cache_dir)
    return classes, images, labels


def read_image_folder(
    split_dir: Path, n_max: int | None = None, cache_dir: Path | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """`load_image_folder`'s (class names, images, labels) and the images' identities
    (`<split folder>/<class>/<file name>`, `ltbench.data.draws`).

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
    key_parts: list = [str(split_dir), n_max]
    for name, found in zip(classes, files, strict=True):
        key_parts.append([name, (split_dir / name).stat().st_mtime_ns, len(found)])
    flat = [p for found in files for p in found]
    labels = np.concatenate(
        [np.full(len(found), c, dtype=np.int64) for c, found in enumerate(files)]
    )
    # relative to the dataset's folder: "train/cat/0042.jpg"
    ids = np.asarray([f"{split_dir.name}/{p.parent.name}/{p.name}" for p in flat], dtype=str)
    images = decode_images(
        flat, f"imagefolder-{split_dir.name}", key_parts, cache_dir, labels=labels
    )
    return classes, images, labels, ids


def decode_images(
    paths: Sequence[Path],
    prefix: str,
    key_parts: list,
    cache_dir: Path | None | bool = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Decode image files of one size into uint8 (N, 3, H, W), in parallel threads, through an
    on-disk cache (`cache_dir`, see `default_cache_dir`; False: none) whose file is named
    `prefix` and a hash of `key_parts` (what must change when the files change). A file of
    another size is a one-line error naming it and the size expected. `labels`, when given, are
    stored beside the images: the cache files of image folders have always held both, and
    older ltbench versions sharing the cache read them."""
    key = hashlib.sha1(json.dumps(key_parts).encode()).hexdigest()[:20]
    cache_file = None
    if cache_dir is not False:
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_file = cache_dir / f"{prefix}-{key}.npz"
        if cache_file.exists():
            with np.load(cache_file) as z:
                return z["images"]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(_decode, paths, chunksize=256))
    shape = decoded[0].shape
    for path, arr in zip(paths, decoded, strict=True):
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
                np.savez(fh, images=images, **({} if labels is None else {"labels": labels}))
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only cache only costs the decoding time next run
    return images


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image from its header (the pixels are not decoded); a file that
    cannot be read is a one-line error naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception as exc:  # noqa: BLE001 (PIL raises many kinds)
        raise LtbenchError(f"cannot read image {path}: {_reason(exc)}") from None
