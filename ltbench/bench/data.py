"""`ltbench bench data`: can the file loader feed the training step?

It writes a folder of JPEG files shaped like ImageNet-LT into a temporary folder: `images`
images of about ImageNet's mean size (500 x 375, smooth content with edges, quality 90, so the
files decode like photographs rather than noise), in class folders `train/n<class>/`, with
long-tailed class counts (`classes` classes, the first 20 times as many images as the last)
and `ImageNet_LT_train.txt` beside them. Then it measures two rates:

- the loader: `ltbench`'s training loader of ImageNet-LT over that folder (the one `train` uses:
  split-file dataset, decode + resize + random crop + flip in `workers` DataLoader processes,
  uint8 batches, pinned memory and a non-blocking copy on CUDA, normalisation on the device),
  images per second over `batches` batches after one untimed batch, with nothing else running;
- with `decode="device"` the workers only read the files and each batch is decoded on the
  device with `torchvision.io.decode_jpeg` (nvJPEG on CUDA), resized and cropped there; this
  is for measuring on a GPU where it helps (on a CPU it moves the decoding into the training
  process, so it is not the default);
- the step: one training step of the model (ResNet-50 by default; forward, loss, backward,
  SGD; bf16 autocast and channels-last where `ltbench train` uses them) on a batch that is
  already on the device, images per second over `steps` steps after one untimed step.

The loader keeps up when its rate is at least the step's. Both use the same batch size.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ltbench.errors import LtbenchError

IMAGE_SIZE = (500, 375)  # width, height: about ImageNet's mean image
JPEG_QUALITY = 90
HEAD_TO_TAIL = 20  # images of the first class over those of the last


def class_counts(images: int, classes: int) -> list[int]:
    """Long-tailed counts (exponential profile, head/tail = HEAD_TO_TAIL) summing to `images`."""
    if classes < 1 or images < classes:
        raise LtbenchError(f"need at least one image per class: {images} images, {classes} classes")
    weights = np.power(1.0 / HEAD_TO_TAIL, np.arange(classes) / max(classes - 1, 1))
    counts = np.maximum(np.floor(weights / weights.sum() * images).astype(int), 1)
    counts[0] += images - counts.sum()
    return counts.tolist()


def write_jpeg_folder(root: Path, images: int, classes: int, seed: int = 0) -> Path:
    """The ImageNet-LT-shaped folder described in the module docstring; returns its split file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = IMAGE_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    lines = []
    for c, n in enumerate(class_counts(images, classes)):
        folder = root / "train" / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a, b, phase = rng.uniform(0.005, 0.05, 3)
            base = np.stack(
                [
                    127
                    + 100 * np.sin(a * xx + b * yy + phase * k + c)
                    + 20 * rng.standard_normal((h, w)).astype(np.float32)
                    for k in range(3)
                ],
                axis=-1,
            )
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 150)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            base[disc] = rng.uniform(0, 255, 3)
            rel = f"train/n{c:08d}/n{c:08d}_{i}.JPEG"
            image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
            image.save(root / rel, quality=JPEG_QUALITY)
            lines.append(f"{rel} {c}")
    split = root / "ImageNet_LT_train.txt"
    split.write_text("\n".join(lines) + "\n")
    (root / "ImageNet_LT_test.txt").write_text("\n".join(lines[:classes]) + "\n")
    return split


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(
    root: Path, batch: int, batches: int, workers: int, device: torch.device, decode="workers"
):
    """Images per second of the training loader over the folder (see the module docstring).
    `decode="device"`: the workers only read the files, and the batch is decoded on the device
    (`DeviceJpegDecoder`: nvJPEG on CUDA)."""
    from ltbench.data import load_dataset, make_loader
    from ltbench.data.batches import DatasetBatches
    from ltbench.data.files import DeviceJpegDecoder

    bundle = load_dataset("imagenet-lt", root=root, imb_factor=1.0)
    if decode == "device":
        loader = DatasetBatches(
            bundle.train,
            batch,
            train=True,
            device=device,
            num_workers=workers,
            mean=bundle.mean,
            std=bundle.std,
            decoder=DeviceJpegDecoder(device, train=True),
        )
    elif decode == "workers":
        loader = make_loader(bundle, "train", batch, seed=0, device=device, num_workers=workers)
    else:
        raise LtbenchError(f"--decode must be workers or device, got {decode!r}")
    loader.set_epoch(0)
    available = len(loader) - 1
    if available < 1:
        raise LtbenchError(f"{len(bundle.train)} images give fewer than 2 batches of {batch}")
    it = iter(loader)
    next(it)  # workers started, first batch decoded: not timed
    _sync(device)
    tick, seen = time.perf_counter(), 0
    for _ in range(min(batches, available)):
        x, _ = next(it)
        seen += x.shape[0]
    _sync(device)
    return seen / (time.perf_counter() - tick), seen


def step_rate(model_name: str, batch: int, steps: int, device: torch.device, classes: int):
    """Images per second of the training step on a batch already on the device."""
    from ltbench.engine.config import TrainConfig, resolve
    from ltbench.engine.step import build_step, epoch_steps, step_options

    cfg = TrainConfig(dataset="imagenet-lt", loss="ce", model=model_name, device=device.type)
    cfg = resolve(cfg)
    amp, channels_last = step_options(cfg, device)
    torch.manual_seed(0)
    plugin, _, step_model, optimizer = build_step(
        cfg, [1] * classes, classes, device, channels_last=channels_last
    )
    x = torch.randn(batch, 3, 224, 224, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.arange(batch, device=device) % classes

    def run(n: int) -> None:
        epoch_steps(step_model, [(x, y)] * n, plugin, optimizer, device, amp=amp)

    run(1)  # untimed
    _sync(device)
    tick = time.perf_counter()
    run(steps)
    _sync(device)
    return batch * steps / (time.perf_counter() - tick), amp, channels_last


def bench_data(
    *,
    device: str = "cpu",
    images: int = 512,
    classes: int = 16,
    batch: int = 64,
    batches: int = 6,
    workers: int = 2,
    steps: int = 2,
    model: str = "resnet50",
    folder: str | Path | None = None,
    decode: str = "workers",
) -> dict[str, Any]:
    """Both rates (see the module docstring); `folder`: write the JPEGs there instead of a
    temporary folder (kept)."""
    from ltbench.engine.step import pick_device

    if min(images, classes, batch, batches, steps) < 1 or workers < 0:
        raise LtbenchError("images, classes, batch, batches and steps must be >= 1, workers >= 0")
    dev = pick_device(device)
    with tempfile.TemporaryDirectory(prefix="ltbench-bench-data-") as tmp:
        root = Path(folder) if folder is not None else Path(tmp)
        tick = time.perf_counter()
        write_jpeg_folder(root, images, classes)
        written = time.perf_counter() - tick
        megabytes = sum(p.stat().st_size for p in root.rglob("*.JPEG")) / 1e6
        loader, seen = loader_rate(root, batch, batches, workers, dev, decode)
    step, amp, channels_last = step_rate(model, batch, steps, dev, classes)
    return {
        "device": dev.type,
        "images": images,
        "classes": classes,
        "megabytes": megabytes,
        "write_seconds": written,
        "batch": batch,
        "workers": workers,
        "decode": decode,
        "loader_images": seen,
        "loader": loader,
        "model": model,
        "steps": steps,
        "step": step,
        "amp": amp,
        "channels_last": channels_last,
    }


def format_data_bench(row: dict[str, Any]) -> str:
    from ltbench.bench.train import machine_line

    load = ""
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    verdict = "keeps up" if row["loader"] >= row["step"] else "does NOT keep up"
    return "\n".join(
        [
            f"ltbench bench data: {row['images']} generated JPEGs ({IMAGE_SIZE[0]}x"
            f"{IMAGE_SIZE[1]}, {row['megabytes']:.1f} MB, {row['classes']} long-tailed classes, "
            "ImageNet-LT split file)",
            machine_line(row["device"]) + (f", load average {load}" if load else ""),
            f"loader: batch {row['batch']}, {row['workers']} DataLoader workers, decoded in "
            f"{'the workers' if row['decode'] == 'workers' else 'batches on the device'}, "
            f"{row['loader_images']} images timed: {row['loader']:.1f} images/s",
            f"step:   {row['model']}, batch {row['batch']}, amp={row['amp']}, "
            f"channels_last={row['channels_last']}, {row['steps']} steps timed: "
            f"{row['step']:.1f} images/s",
            f"loader / step = {row['loader'] / row['step']:.2f}: the loader {verdict}",
        ]
    )


def bench_data_command(args) -> int:
    row = bench_data(
        device=args.device,
        images=args.images,
        classes=args.classes,
        batch=args.batch,
        batches=args.batches,
        workers=args.loader_workers,
        steps=args.steps if args.steps is not None else 2,
        model=args.model,
        decode=args.decode,
    )
    print(format_data_bench(row))
    return 0
