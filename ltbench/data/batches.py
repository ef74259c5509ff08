"""In-memory batches and samplers: `TensorData`, the (seed, epoch) sample order, on-device crop
and flip, `TensorBatches`, `DatasetBatches` for file-backed data, and `make_loader` over both.

Every shuffle and augmentation draw of epoch e comes from a generator seeded by (seed, e), so a
run resumed at epoch e sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.data.bundle import CIFAR_MEAN, CIFAR_STD, DatasetBundle
from ltbench.errors import LtbenchError

SAMPLING_MODES = ("instance", "class-balanced", "reversed")


def rank_share(n: int, rank: int, world: int) -> slice:
    """The contiguous part of a global batch of `n` that `rank` of `world` takes: sizes differ
    by at most one, the first ranks take the larger parts, and the parts in rank order are the
    batch (several processes training one run: `ltbench.engine.distributed`)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def global_batches(n: int, batch_size: int, drop_last: bool, world: int) -> int:
    """The number of global batches of an epoch of `n` samples. With several ranks a training
    epoch drops a last batch smaller than `world` (a rank without an image cannot take part in
    the gradient exchange)."""
    full, rest = divmod(n, batch_size)
    if rest and not drop_last and not (world > 1 and rest < world):
        full += 1
    return full


# --------------------------------------------------------------------------- containers


@dataclass
class TensorData:
    """An in-memory split: uint8 images (N, 3, H, W), int64 labels (N,) and, where the loader
    knows them, each image's identity (`ltbench.data.draws`: what a fingerprint hashes)."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: np.ndarray | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, 3, H, W)")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have shape (N,) matching the images")
        self.labels = self.labels.to(torch.int64)
        if self.ids is not None:
            self.ids = np.asarray(self.ids, dtype=str)
            if self.ids.shape != (self.images.shape[0],):
                raise ValueError("ids must have shape (N,) matching the images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, positions: Sequence[int]) -> TensorData:
        """The images at `positions`, in that order."""
        idx = torch.as_tensor(list(positions), dtype=torch.int64)
        ids = None if self.ids is None else self.ids[idx.numpy()]
        return TensorData(self.images[idx], self.labels[idx], ids)


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


def reversed_class_probabilities(counts) -> np.ndarray:
    """BBN's reversed sampler: class j is drawn with probability `(1/n_j) / sum_k (1/n_k)`
    (float64), the rarest class most often; an image of it is then drawn uniformly."""
    inv = 1.0 / np.asarray(counts, dtype=np.float64)
    return inv / inv.sum()


def reversed_weights(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Per-sample sampling weights of the reversed sampler: `p_j / n_j` for an image of class j
    (`reversed_class_probabilities`), so that class j is drawn with probability p_j."""
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    counts = torch.bincount(labels, minlength=num_classes or 0).to(torch.float64)
    present = counts > 0
    probs = torch.zeros_like(counts)
    probs[present] = torch.from_numpy(reversed_class_probabilities(counts[present].numpy()))
    return probs[labels] / counts[labels]


def epoch_order(
    labels: torch.Tensor, generator: torch.Generator, shuffle: bool, sampling: str
) -> torch.Tensor:
    """The sample order of one epoch (CPU int64, one entry per sample).

    `instance`: a permutation (or 0..N-1 without shuffling); `class-balanced`: N draws with
    replacement, each sample with probability proportional to 1 / (its class's count);
    `reversed` (BBN): N draws with replacement, class j with probability ∝ 1 / n_j.
    """
    n = int(labels.shape[0])
    if sampling == "instance":
        return torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if sampling == "class-balanced":
        weights = class_balanced_weights(labels)
        return torch.multinomial(weights, n, replacement=True, generator=generator)
    if sampling == "reversed":
        weights = reversed_weights(labels)
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
    With `world` > 1 each global batch of `batch_size` is cut into `world` shares and this
    iterator yields share `rank` (`rank_share`); the order and augmentation draws are the
    global ones, so the shares together are the single-process batch.
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
        rank: int = 0,
        world: int = 1,
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
        self.rank, self.world = int(rank), int(world)

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch` (0-based): its order and augmentation depend on (seed, epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = int(self.labels.shape[0])
        world = self.world if self.train else 1  # evaluation keeps every image
        return global_batches(n, self.batch_size, self.drop_last, world)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = epoch_generator(self.seed, self.epoch)
        order = epoch_order(self._cpu_labels, gen, shuffle=self.train, sampling=self.sampling)
        device = self.images.device
        if self.augment:
            oy, ox, flips = (t.to(device) for t in draw_crop_flip(len(order), self.padding, gen))
        order = order.to(device)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min((b + 1) * self.batch_size, len(order)))
            if self.world > 1:
                part = rank_share(sl.stop - sl.start, self.rank, self.world)
                sl = slice(sl.start + part.start, sl.start + part.stop)
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

    The training step never waits on a file: `num_workers` processes decode and augment
    (persistent across epochs, each `prefetch_factor` batches ahead), batches of uint8 images
    land in pinned memory on CUDA and are copied without blocking, and are normalised with
    `mean`/`std` on the device.
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
        rank: int = 0,
        world: int = 1,
        prefetch_factor: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        decoder=None,
    ):
        self.decoder = decoder  # a DeviceJpegDecoder: workers read the files, it decodes them
        if decoder is not None:
            from ltbench.data.files import EncodedFiles

            dataset = EncodedFiles(dataset)
        self.sampler = EpochSampler(dataset.labels, shuffle=train, seed=seed, sampling=sampling)
        self.device = device
        where = torch.device(device) if device is not None else torch.device("cpu")
        self.mean = torch.tensor(mean, device=where) if mean is not None else None
        self.std = torch.tensor(std, device=where) if std is not None else None
        batches = ShardedBatchSampler(
            self.sampler, batch_size, drop_last=drop_last, rank=rank, world=world, train=train
        )
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            pin_memory=device is not None and torch.device(device).type == "cuda",
            persistent_workers=num_workers > 0,
            prefetch_factor=(prefetch_factor or 4) if num_workers > 0 else None,
            collate_fn=_encoded_batch if decoder is not None else None,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch` (0-based)."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader:
            if self.decoder is not None:
                x = self.decoder(x)
            if self.device is not None:
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
            if x.dtype == torch.uint8 and self.mean is not None:
                x = normalize(x, self.mean, self.std)
            yield x, y


def _encoded_batch(items):
    """A batch of undecoded files: (list of the files' bytes, label tensor)."""
    return [x for x, _ in items], torch.tensor([y for _, y in items], dtype=torch.int64)


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Batches of sample indices from `sampler`'s order: each global batch of `batch_size`, or
    this rank's share of it (`rank_share`) when `world` > 1. With one rank it is torch's
    BatchSampler."""

    def __init__(self, sampler, batch_size: int, *, drop_last: bool, rank=0, world=1, train=True):
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last
        self.rank, self.world = int(rank), int(world)
        self.train = train

    def __len__(self) -> int:
        world = self.world if self.train else 1
        return global_batches(len(self.sampler), self.batch_size, self.drop_last, world)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(self.sampler)
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self.world > 1:
                batch = batch[rank_share(len(batch), self.rank, self.world)]
            yield batch


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
    rank: int = 0,
    world: int = 1,
):
    """A batch iterator over `bundle.<split>` ("train", "val" or "test") with `set_epoch`.

    `rank`/`world`: the share of every global batch that this process of a run over `world`
    processes takes (`rank_share`); 0/1 in a single process.

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
            padding=bundle.crop_padding,
            mean=bundle.mean,
            std=bundle.std,
            device=device,
            rank=rank,
            world=world,
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
        rank=rank,
        world=world,
        mean=bundle.mean,
        std=bundle.std,
    )
