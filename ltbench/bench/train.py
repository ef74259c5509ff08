"""`ltbench bench train`: images per second of a full training step, ltbench against a reference.

Both loops train ResNet-32 with KPS-GA and the same SGD settings on the same images: random
uint8 CIFAR-shaped images (3 x 32 x 32, 10 classes, drawn once from a fixed seed) held in memory.
A step is everything between two batches: fetching and augmenting the batch (random crop with
4 pixels of zero padding, horizontal flip, normalisation), forward, loss, backward and the
optimizer update.

- ltbench: `epoch_steps` over `make_loaders(...).train` (a `TensorBatches` on the device,
  augmenting whole batches at once), with the model, optimizer, layout (channels-last), precision
  (bf16 autocast on CUDA) and `torch.compile` choice built by the same `step_options` and
  `build_step`, whose network is `build_network`'s, as `train()` builds it.
- reference: the loop of the public long-tail repositories (LDAM-DRW and the code derived from
  it): a torch `Dataset` that turns each image into a PIL image and applies torchvision's
  RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and Normalize, a `DataLoader` with
  `workers` worker processes (kept alive between epochs, which only helps the reference), float32
  in NCHW layout, and `loss.item()` plus a host-side top-1 accuracy after every step.

One timed run is one epoch of `steps` batches, timed from asking for the first batch to the end
of the epoch's bookkeeping (on CUDA, with the device synchronised at both ends). Each round runs
every (batch size, loop) pair once, and the two loops alternate which goes first, so that drifts
in the machine's speed hit both alike. The first `warmup` rounds are discarded; the figure is
the median images per second of the other `repeats` rounds, and the overall speedup is the
geometric mean over the batch sizes of ltbench's median over the reference's median.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

import torch

from ltbench.bench.inputs import (  # noqa: F401 (the bench's inputs, also imported from here)
    CLASS_COUNTS,
    DATA_SEED,
    IMAGE_SHAPE,
    NUM_CLASSES,
    bench_bundle,
    cifar_shaped_images,
)
from ltbench.errors import LtbenchError

LOSS = "kps-ga"
MODEL = "resnet32"
DEFAULTS = dict(batch_sizes=(64, 128), repeats=5, steps=20, warmup=1, workers=2)


# ----------------------------------------------------------------------------------------------
# The shared images and configuration


def bench_config(batch_size: int, device: str, **overrides: Any):
    """The resolved TrainConfig of CIFAR-10-LT with ResNet-32 and KPS-GA (paper Table 2)."""
    from ltbench.engine.config import TrainConfig, resolve

    cfg = TrainConfig(
        dataset="cifar10-lt",
        loss=LOSS,
        model=MODEL,
        batch_size=batch_size,
        device=device,
        **{k: v for k, v in overrides.items() if v is not None},
    )
    return resolve(cfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# (a) ltbench's loop, set up as `train()` sets it up


@dataclass
class LtbenchRun:
    """One batch size's model, optimizer, loss and loader for ltbench's loop."""

    cfg: Any
    device: torch.device
    amp: bool
    channels_last: bool
    plugin: Any
    step_model: Any
    optimizer: Any
    loader: Any

    def epoch(self, epoch: int) -> int:
        """Train one epoch and read its sums back as `train()` does; the number of images."""
        from ltbench.engine.step import epoch_batches, epoch_steps

        batches = epoch_batches(self.loader, epoch, self.channels_last)
        stats = epoch_steps(
            self.step_model, batches, self.plugin, self.optimizer, self.device, amp=self.amp
        )
        int(stats.first_bad_step)  # the end-of-epoch reads of train(): one host sync per epoch
        return int(stats.seen)


def ltbench_run(cfg, data, device: torch.device) -> LtbenchRun:
    """Build ltbench's side with the helpers of `ltbench.engine.step`."""
    from ltbench.engine.step import build_step, make_loaders, step_options

    bundle = bench_bundle(data)
    amp, channels_last = step_options(cfg, device)
    torch.manual_seed(cfg.seed)
    plugin, _, step_model, optimizer = build_step(
        cfg, list(CLASS_COUNTS), NUM_CLASSES, device, channels_last=channels_last
    )
    plugin.set_epoch(0)
    loader = make_loaders(bundle, cfg, device).train
    return LtbenchRun(cfg, device, amp, channels_last, plugin, step_model, optimizer, loader)


# ----------------------------------------------------------------------------------------------
# (b) the reference loop, in the style of the public long-tail repositories


class PILImageDataset(torch.utils.data.Dataset):
    """Images kept as an (N, H, W, C) uint8 array, like torchvision's CIFAR; each item is made a
    PIL image and passed through `transform`."""

    def __init__(self, data, transform):
        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def reference_transform(mean, std):
    """The CIFAR training transform of the public repositories."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


@dataclass
class ReferenceRun:
    """One batch size's model, optimizer, loss and DataLoader for the reference loop."""

    device: torch.device
    model: Any
    loss_fn: Any
    optimizer: Any
    loader: Any

    def epoch(self, epoch: int) -> int:
        """Train one epoch the way the public loops do; the number of images."""
        self.model.train()
        seen, loss_sum, correct = 0, 0.0, 0
        for images, targets in self.loader:
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            output = self.model(images)
            loss = self.loss_fn(output, targets)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            # the per-step logging of the public loops: meters fed with host numbers
            n = targets.size(0)
            loss_sum += loss.item() * n
            _, pred = output.topk(1, 1, True, True)
            correct += pred.view(-1).eq(targets).sum().item()
            seen += n
        return seen


def reference_run(cfg, data, device: torch.device, workers: int) -> ReferenceRun:
    """Build the reference side: same initial weights, loss and SGD settings as ltbench's."""
    from ltbench.data import CIFAR_MEAN, CIFAR_STD
    from ltbench.engine.models import build_model
    from ltbench.sdk.registry import build_loss

    torch.manual_seed(cfg.seed)
    loss_fn = build_loss(cfg.loss, list(CLASS_COUNTS), **cfg.loss_params).to(device)
    model = build_model(cfg.model, NUM_CLASSES, head=loss_fn.head, width=cfg.width).to(device)
    loss_fn.set_epoch(0)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    loader = torch.utils.data.DataLoader(
        PILImageDataset(data, reference_transform(CIFAR_MEAN, CIFAR_STD)),
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    return ReferenceRun(device, model, loss_fn, optimizer, loader)


# ----------------------------------------------------------------------------------------------
# Timing


def _images_per_second(run, epoch: int, device: torch.device) -> float:
    _sync(device)
    tick = time.perf_counter()
    seen = run.epoch(epoch)
    _sync(device)
    return seen / (time.perf_counter() - tick)


def bench_train(
    device: str = "cpu",
    batch_sizes=DEFAULTS["batch_sizes"],
    repeats: int = DEFAULTS["repeats"],
    steps: int = DEFAULTS["steps"],
    warmup: int = DEFAULTS["warmup"],
    workers: int = DEFAULTS["workers"],
    pack: int = 0,
    fusion: str = "auto",
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Median images per second of both loops at each batch size (see the module docstring).

    `overrides` are TrainConfig fields for ltbench's side and the shared recipe, e.g.
    `compile=True`, `channels_last=False`, `width=0.25` (None keeps the default). One row per
    batch size: `batch, steps, ltbench, reference, ratio` (images per second, ratio of medians)
    and the per-round figures `ltbench_runs`, `reference_runs`. With `pack` = K > 0 a third
    side trains K runs (seeds 0..K-1) as one pack: `packed` is the images per second of its K
    runs together (K x one run's images over the time), so `pack_ratio` = packed / ltbench is
    how many unpacked runs' worth of work the pack does in the same time; `fusion` is the
    pack's (`ltbench.engine.pack.check_fusion`).
    """
    from ltbench.engine.step import pick_device

    if repeats < 1 or steps < 1 or warmup < 0 or workers < 0:
        raise LtbenchError("repeats and steps must be at least 1, warmup and workers at least 0")
    if not batch_sizes or min(batch_sizes) < 1:
        raise LtbenchError("batch sizes must be positive integers")
    if pack < 0:
        raise LtbenchError(f"--pack must be >= 1 (runs in one pack), got {pack}")
    dev = pick_device(device)
    pool = cifar_shaped_images(steps * max(batch_sizes))
    runs = {}
    for batch in batch_sizes:
        cfg = bench_config(batch, dev.type, **overrides)
        data = replace(
            pool, images=pool.images[: steps * batch], labels=pool.labels[: steps * batch]
        )
        runs[batch] = [ltbench_run(cfg, data, dev), reference_run(cfg, data, dev, workers)]
        if pack:
            from ltbench.bench.packed import packed_run

            runs[batch].append(packed_run(cfg, data, dev, pack, fusion))
    sides = len(runs[batch_sizes[0]])
    figures = {b: tuple([] for _ in range(sides)) for b in batch_sizes}
    for round_ in range(warmup + repeats):
        for batch in batch_sizes:
            # each side goes first in turn, so drifts in the machine's speed hit all alike
            order = [(round_ + i) % sides for i in range(sides)]
            for side in order:
                speed = _images_per_second(runs[batch][side], round_, dev)
                if round_ >= warmup:
                    figures[batch][side].append(speed)
    rows = []
    for batch in batch_sizes:
        ours, ref = figures[batch][:2]
        row = {
            "batch": batch,
            "steps": steps,
            "ltbench": statistics.median(ours),
            "reference": statistics.median(ref),
            "ratio": statistics.median(ours) / statistics.median(ref),
            "ltbench_runs": ours,
            "reference_runs": ref,
        }
        if pack:
            packed = figures[batch][2]
            row.update(
                pack=pack,
                packed=statistics.median(packed),
                pack_ratio=statistics.median(packed) / statistics.median(ours),
                packed_runs=packed,
            )
        rows.append(row)
    if pack:
        from ltbench.engine.fuse import check_fusion

        for row in rows:
            row["fusion"] = check_fusion(fusion, dev)
    return rows


def overall_speedup(rows: list[dict[str, Any]]) -> float:
    """The geometric mean of the per-batch-size ratios."""
    return math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows))


def machine_line(device: str) -> str:
    """The processor (or GPU), its core count and torch's thread count and version."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                name = next(
                    line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")
                )
        except (OSError, StopIteration):
            pass
    return (
        f"{device}: {name}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads"
    )


def format_train_bench(
    rows: list[dict[str, Any]],
    *,
    device: str,
    repeats: int,
    warmup: int,
    workers: int,
    settings: str = "",
) -> str:
    """The table of `bench_train`'s rows; the last line is `speedup <geometric mean>x`, or with a
    pack the pack's speedup over ltbench's unpacked loop."""
    steps = rows[0]["steps"]
    pack = rows[0].get("pack")
    lines = [
        f"ltbench bench train: {MODEL} + {LOSS}, one epoch of {steps} steps per run, median of "
        f"{repeats} runs after {warmup} warm-up",
        machine_line(device),
        f"ltbench: {settings or 'train() defaults'}; reference: DataLoader with {workers} "
        "workers, PIL + torchvision transforms, float32 NCHW, .item() every step",
    ]
    if pack:
        lines.append(
            f"packed: {pack} runs (seeds 0..{pack - 1}), {rows[0]['fusion']} fusion; its img/s "
            f"counts the images of all {pack} runs: pack/ltbench is unpacked runs' worth per time"
        )
    head = f"{'batch':>5}  {'ltbench img/s':>13}  {'reference img/s':>15}  {'ratio':>6}"
    lines += ["", head + (f"  {f'packed x{pack} img/s':>18}  {'pack/ltbench':>12}" if pack else "")]
    for r in rows:
        line = (
            f"{r['batch']:>5}  {r['ltbench']:>13.1f}  {r['reference']:>15.1f}  {r['ratio']:>5.2f}x"
        )
        if pack:
            line += f"  {r['packed']:>18.1f}  {r['pack_ratio']:>11.2f}x"
        lines.append(line)
    lines.append(f"speedup {overall_speedup(rows):.2f}x")
    if pack:
        gain = math.exp(sum(math.log(r["pack_ratio"]) for r in rows) / len(rows))
        lines.append(f"pack speedup (packed x{pack} / ltbench) {gain:.2f}x")
    return "\n".join(lines)


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """`"64,128"` -> (64, 128), with a one-line error for anything else."""
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise LtbenchError(f"--batch-sizes must be positive integers like 64,128, got {text!r}")
    return sizes


def bench_train_command(args) -> int:
    """`ltbench bench train`: run `bench_train` with the command's options and print the table."""
    given = {k: getattr(args, k) for k in ("repeats", "steps", "warmup", "workers")}
    repeats, steps, warmup, workers = (DEFAULTS[k] if v is None else v for k, v in given.items())
    overrides = {
        "compile": args.compile,
        "channels_last": args.channels_last,
        "amp": args.amp,
        "cuda_graphs": getattr(args, "cuda_graphs", None),
    }
    settings = ", ".join(f"{k}={v}" for k, v in overrides.items() if v is not None)
    pack = getattr(args, "pack", None) or 0
    if pack < 0 or (getattr(args, "pack", None) is not None and pack < 1):
        raise LtbenchError(f"--pack must be >= 1 (runs in one pack), got {args.pack}")
    rows = bench_train(
        device=args.device,
        pack=pack,
        fusion=getattr(args, "pack_fusion", None) or "auto",
        batch_sizes=parse_batch_sizes(args.batch_sizes),
        repeats=repeats,
        steps=steps,
        warmup=warmup,
        workers=workers,
        **overrides,
    )
    print(
        format_train_bench(
            rows,
            device=args.device,
            repeats=repeats,
            warmup=warmup,
            workers=workers,
            settings=settings,
        )
    )
    return 0
