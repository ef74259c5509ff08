"""One epoch of training and one pass of evaluation, and the parts of the step.

The step is: forward (under bf16 autocast where that is fast), the loss plugin's loss (mixup
wraps any loss), backward, SGD. A stage may hand in its own forward-and-loss (`Stage.step`,
see `ltbench.sdk.stages.StepHook`); the engine still owns the backward pass, the optimizer and
the bookkeeping. Every random draw of epoch `e` comes from generators seeded by (seed, e), so a
run resumed from its epoch-e checkpoint continues exactly as the uninterrupted run would have.
`ltbench bench train` builds its step from the same parts.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from ltbench.engine import distributed
from ltbench.engine.config import TrainConfig
from ltbench.engine.metrics import Evaluator
from ltbench.errors import LtbenchError

# where torch.optim.SGD has a fused kernel: one update for all ~100 parameter tensors
FUSED_SGD_DEVICES = ("cpu", "cuda")


# ----------------------------------------------------------------------------------------------
# Device, precision, layout


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LtbenchError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix work is fast here: CUDA, or a CPU with AMX tiles (oneDNN uses them)."""
    if device.type == "cuda":
        return True
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def step_options(cfg: TrainConfig, device: torch.device) -> tuple[bool, bool]:
    """`(amp, channels_last)` of a run: the config's choice, else the default for the device.

    bf16 autocast (convolutions and the linear layer in bf16, the loss in float32) is on by
    default where bf16 is fast: on CUDA and on CPUs with AMX, where it about halves the step
    time of ResNet-32 (BENCHMARKS.md); `--no-amp` keeps float32. Channels-last changes only the
    memory layout, and both cuDNN and oneDNN (CPU) run the convolutions faster in it, so it is
    on by default everywhere. The choice is recorded in each result's `env`.
    """
    amp = cfg.amp if cfg.amp is not None else fast_bf16(device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else True
    return amp, channels_last


def step_module(model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
    """The module the training step calls: `model`, compiled with `cfg.compile`, or with
    `cfg.cuda_graphs` compiled in torch's "reduce-overhead" mode, which captures the forward
    and backward passes as CUDA graphs and replays them. Shapes stay static: every full batch
    replays one graph and an epoch's last, partial batch gets a graph of its own (nothing is
    dropped or padded, so the numbers are those of the eager step). The optimizer step and
    the epoch's sums run eagerly, with no host synchronisation inside an epoch.

    CUDA graphs are off by default and unmeasured: no device run has exercised them yet.
    """
    if cfg.cuda_graphs:
        if device.type != "cuda":
            raise LtbenchError(f"cuda_graphs needs a CUDA device; this run is on {device.type}")
        return torch.compile(model, mode="reduce-overhead")
    return torch.compile(model) if cfg.compile else model


# Tests only: `LTBENCH_FLOAT64=1` trains and evaluates in float64 (network and images), so that
# two runs that differ only in the order of their sums (one process against several) can be
# compared to the last digits. Read here and nowhere else; runs never set it.
FLOAT64_ENV = "LTBENCH_FLOAT64"


def float64_for_tests() -> bool:
    """Whether this process computes in float64 (`FLOAT64_ENV`, tests only)."""
    return os.environ.get(FLOAT64_ENV) == "1"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw of one epoch (batch order, augmentation, mixup, EQL)."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**63 - 1)


def sgd(groups, device: torch.device, cfg: TrainConfig, *, lr: float, weight_decay: float):
    """SGD with the run's momentum (Nesterov's where `cfg.nesterov`), fused where torch has
    the kernel; `lr` and `weight_decay` are the stage's."""
    return torch.optim.SGD(
        groups,
        lr=lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=weight_decay,
        fused=device.type in FUSED_SGD_DEVICES,
    )


def build_step(
    cfg: TrainConfig,
    counts: list[int],
    num_classes: int,
    device: torch.device,
    *,
    channels_last: bool,
):
    """The loss plugin, the model (`ltbench.engine.network.build_network`, as a run builds it),
    the module the step calls (the model compiled when `cfg.compile`) and the SGD optimizer of
    a plain run (`ltbench bench train`). Seed torch first: the initial weights come from it."""
    from ltbench.engine.network import build_network
    from ltbench.engine.stages import run_settings
    from ltbench.sdk.registry import build_loss
    from ltbench.sdk.stages import single_stage

    plugin = build_loss(cfg.loss, counts, **cfg.loss_params).to(device)
    stage = single_stage(cfg.loss, cfg.loss_params, run_settings(cfg))[0]
    model = build_network(cfg, stage, num_classes, plugin.head).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = step_module(model, cfg, device)
    optimizer = sgd(model.parameters(), device, cfg, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return plugin, model, step_model, optimizer


# ----------------------------------------------------------------------------------------------
# Data and batches


def load_run_data(cfg: TrainConfig, *, download: bool | None = None, meta_per_class: int = 0):
    """The dataset bundle of a resolved run: its long-tailed training set, its validation split
    (drawn with the run's seed) and its test set. `download` overrides the run's setting;
    `meta_per_class` (a stage's `Stage.meta_per_class`) asks the loader for that many images per
    class from outside the long-tailed draw, where the dataset has them (`bundle.extra`)."""
    from ltbench.data import load_dataset

    return load_dataset(
        cfg.dataset,
        root=cfg.data_root,
        imb_factor=cfg.imb_factor,
        profile=cfg.profile,
        subset_seed=cfg.subset_seed,
        download=cfg.download if download is None else download,
        n_max=cfg.n_max,
        val_fraction=cfg.val_fraction,
        val_seed=cfg.seed,
        extra_per_class=meta_per_class,
        draw=cfg.draw,
    )


def epoch_batches(loader, epoch: int, channels_last: bool):
    """The batches of one epoch, in channels-last layout where the model uses it."""
    loader.set_epoch(epoch)
    wide = float64_for_tests()
    for images, labels in loader:
        if wide:
            images = images.double()
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, labels


def meta_batches(loader, epoch: int, channels_last: bool):
    """Endless batches of a (small) meta set during epoch `epoch`: pass after pass, each pass
    in its own order seeded by (epoch, pass), so a resumed run draws the same batches."""
    for index in itertools.count():
        yield from epoch_batches(loader, (epoch << 20) + index, channels_last)


def hold_out_meta(bundle, per_class: int, seed: int):
    """(bundle, the meta set, where it came from) for `Stage.meta_per_class` = `per_class`
    (0: the bundle itself, None and "").

    As Jamal et al.'s code draws it where the dataset has images to spare (CIFAR's full
    training set): `per_class` images per class from outside the long-tailed draw, which
    `load_run_data(meta_per_class=...)` put in `bundle.extra`; the training split is left as
    drawn. Else, on a dataset published long-tailed with its own validation list
    (ImageNet-LT's `ImageNet_LT_val.txt`), out of that list, which keeps the rest. Else held
    out of the training split after the validation hold-out (at most half of a class,
    `longtail.meta_count`), and `cls_num_list` then counts the images trained on."""
    if per_class <= 0:
        return bundle, None, ""
    from ltbench.data.longtail import META_SEED_OFFSET, class_counts, split_meta
    from ltbench.engine.record import META_FROM_EXTRA, META_FROM_TRAIN, META_FROM_VAL_LIST

    if bundle.extra is not None:
        return bundle, bundle.extra, bundle.extra_source or META_FROM_EXTRA
    if bundle.val is not None and bundle.val_source not in ("", "holdout"):
        val_pos, meta_pos = split_meta(bundle.val.labels, per_class, seed + META_SEED_OFFSET)
        val = bundle.val.subset(val_pos)
        source = f"{META_FROM_VAL_LIST} {bundle.val_source}"
        return dataclasses.replace(bundle, val=val), bundle.val.subset(meta_pos), source
    train_pos, meta_pos = split_meta(bundle.train.labels, per_class, seed + META_SEED_OFFSET)
    train = bundle.train.subset(train_pos)
    meta = bundle.train.subset(meta_pos)
    counts = class_counts(train.labels, bundle.num_classes)
    return dataclasses.replace(bundle, train=train, cls_num_list=counts), meta, META_FROM_TRAIN


@dataclass
class Loaders:
    """Batch iterators (with `set_epoch`) of the bundle's splits; `val` is None without one."""

    train: Any
    test: Any
    val: Any | None


def make_loaders(
    bundle, cfg: TrainConfig, device: torch.device, *, batch_size=None, sampling="instance"
) -> Loaders:
    """In-memory data stays on `device` and is augmented there; files go through a DataLoader.
    `batch_size` and `sampling` are the training split's (default: the run's, instance). In a
    run over several processes each takes its share of every global batch
    (`ltbench.engine.distributed`)."""
    from ltbench.data import make_loader

    r = distributed.ranks()
    common = dict(
        seed=cfg.seed, device=device, num_workers=cfg.num_workers, rank=r.rank, world=r.world
    )
    eval_batch = max(cfg.batch_size, 256)
    return Loaders(
        train=make_loader(
            bundle, "train", batch_size or cfg.batch_size, sampling=sampling, **common
        ),
        test=make_loader(bundle, "test", eval_batch, **common),
        val=make_loader(bundle, "val", eval_batch, **common) if bundle.val is not None else None,
    )


# ----------------------------------------------------------------------------------------------
# One epoch of training


@dataclass
class EpochStats:
    """Sums kept on the device during an epoch; read once at its end."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: torch.Tensor
    first_bad_step: torch.Tensor  # -1 while every loss so far was finite


@dataclass
class StepContext:
    """What a method's own step (`Stage.step`) sees: the model, the loss, where the run is."""

    model: torch.nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    epoch: int  # 0-based, within the stage
    epochs: int  # the stage's length
    mixup: Any
    generator: torch.Generator | None
    extra: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # batches of extra samplers
    lr: float = 0.0  # the stage's learning rate of this epoch (a lookahead step uses it)
    meta: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None  # next meta batch


def default_step(ctx: StepContext, images: torch.Tensor, labels: torch.Tensor):
    """Forward and loss of the plain step (with mixup when the stage has it)."""
    if ctx.mixup is not None:
        images, labels_a, labels_b, lam = ctx.mixup.mix(images, labels, ctx.generator)
        scores = ctx.model(images)
        return ctx.mixup.loss(ctx.loss_fn, scores, labels_a, labels_b, lam), scores
    scores = ctx.model(images)
    return ctx.loss_fn(scores, labels), scores


def sgd_epoch(
    model: torch.nn.Module,
    batches: Iterable,
    forward: Callable[[int, Any], tuple[torch.Tensor, Any, torch.Tensor, Any]],
    hits: Callable[[torch.Tensor, Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    amp: bool,
    runs: int | None = None,
) -> EpochStats:
    """The one epoch loop, of a run alone and of a pack: per batch, `forward(index, batch)`
    (under bf16 autocast with `amp`) gives `(loss, losses, scores, labels)`; `loss` is
    backpropagated (scaled over the processes of a data-parallel run) and SGD steps; `losses`
    (one per run: a scalar, or a list of `runs` for a pack) and `hits(scores, labels)` (the
    correct predictions per run) are summed on the device. No host synchronisation inside: a
    non-finite loss is recorded on the device and reported by the caller at the epoch's end.
    """
    model.train()
    shape = () if runs is None else (runs,)
    stats = EpochStats(
        torch.zeros(shape, device=device),
        torch.zeros(shape, device=device, dtype=torch.long),
        torch.zeros((), device=device, dtype=torch.long),
        torch.full(shape, -1, device=device, dtype=torch.long),
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    for index, batch in enumerate(batches):
        with autocast:
            loss, losses, scores, labels = forward(index, batch)
        size = labels.shape[0] if runs is None else labels[0].shape[0]
        scale = distributed.loss_scale(size, device)  # None in one process
        optimizer.zero_grad(set_to_none=True)
        (loss if scale is None else loss * scale.to(loss.dtype)).backward()
        optimizer.step()
        with torch.no_grad():
            if runs is None:
                values = losses.detach().float()
            else:
                values = torch.stack([x.detach().float() for x in losses])
            bad = ~torch.isfinite(values) & (stats.first_bad_step < 0)
            stats.first_bad_step = torch.where(
                bad, torch.full_like(stats.first_bad_step, index), stats.first_bad_step
            )
            stats.loss_sum += values * size
            stats.correct += hits(scores, labels)
            stats.seen += size
    return stats


def epoch_steps(
    model: torch.nn.Module,
    batches: Iterable,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    amp: bool,
    mixup=None,
    generator: torch.Generator | None = None,
    step=None,
    epoch: int = 0,
    epochs: int = 1,
    extra: list[Iterable] | None = None,
    lr: float = 0.0,
    meta: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> EpochStats:
    """The steps of one epoch of a run alone over `batches` (pairs of augmented, normalised
    images and labels on `device`), through `sgd_epoch`.

    `step` (default `default_step`) computes the loss; `extra` are batch streams of further
    samplers, handed to it step by step; `meta` draws a batch of the stage's meta set.
    """
    ctx = StepContext(model, loss_fn, epoch, epochs, mixup, generator, lr=lr, meta=meta)
    step = step or default_step
    streams = zip(*extra, strict=False) if extra else None

    def forward(index: int, batch):
        images, labels = batch
        if streams is not None:
            ctx.extra = list(next(streams))
        loss, scores = step(ctx, images, labels)
        return loss, loss, scores, labels

    return sgd_epoch(model, batches, forward, _hits, optimizer, device, amp=amp)


def _hits(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (scores.argmax(dim=1) == labels).sum()


def train_epoch(
    model,
    loader,
    plugin,
    optimizer,
    device: torch.device,
    *,
    seed: int,
    epoch: int,
    schedule_epoch: int,
    schedule_epochs: int,
    channels_last: bool,
    amp: bool,
    mixup=None,
    step=None,
    extra_loaders=(),
    meta_loader=None,
    lr: float = 0.0,
    where: str = "",
) -> dict[str, float]:
    """Train one epoch with its own seeds and return `train_loss`, `train_acc`.

    `epoch` (0-based, of the whole run) seeds the batch order, the augmentation and every other
    draw; `schedule_epoch` is what the loss's `set_epoch` sees (they differ in a later stage).
    A non-finite loss stops the run with an error naming the epoch and the step.
    """
    plugin.set_epoch(schedule_epoch)
    draw = epoch_seed(seed, epoch)
    torch.manual_seed(draw)
    generator = torch.Generator(device=device).manual_seed(draw)
    extra = [epoch_batches(x, epoch, channels_last) for x in extra_loaders]
    meta = None
    if meta_loader is not None:
        stream = meta_batches(meta_loader, epoch, channels_last)
        meta = lambda: next(stream)  # noqa: E731
    stats = epoch_steps(
        model,
        epoch_batches(loader, epoch, channels_last),
        plugin,
        optimizer,
        device,
        amp=amp,
        mixup=mixup,
        generator=generator,
        step=step,
        epoch=schedule_epoch,
        epochs=schedule_epochs,
        extra=extra or None,
        lr=lr,
        meta=meta,
    )
    distributed.sum_over_ranks(stats.loss_sum, stats.correct, stats.seen)
    bad_step = int(distributed.first_bad(stats.first_bad_step))
    if bad_step >= 0:
        raise nonfinite_loss(schedule_epoch + 1, bad_step + 1, lr, where)
    seen = max(int(stats.seen), 1)
    return {
        "train_loss": float(stats.loss_sum) / seen,
        "train_acc": 100.0 * int(stats.correct) / seen,
    }


def nonfinite_loss(epoch: int, step: int, lr: float, where: str = "") -> LtbenchError:
    """The error of a run (or a pack member) whose loss went NaN or infinite at `epoch`, `step`
    (both 1-based); `where` names a stage ("in stage2 ")."""
    return LtbenchError(
        f"the loss became NaN or infinite {where}at epoch {epoch}, step {step}; try a lower "
        f"learning rate (lr={lr:g}) or check the loss parameters"
    )


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model,
    batches,
    num_classes: int,
    device: torch.device,
    *,
    amp: bool,
    to_logits: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Evaluator:
    """Accumulate predictions over `batches`; `to_logits` maps scores to the loss's logits.
    In a run over several processes each evaluates its share; the counts are summed over them
    at the end, so every process returns the evaluator of the whole split."""
    model.eval()
    evaluator = Evaluator(num_classes, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    for images, labels in batches:
        if labels.shape[0] == 0:  # a share of a last batch smaller than the ranks
            continue
        with autocast:
            scores = model(images)
        scores = scores.float()
        evaluator.update(to_logits(scores) if to_logits else scores, labels)
    distributed.sum_over_ranks(
        evaluator.confusion, evaluator.bin_counts, evaluator.bin_correct, evaluator.bin_confidence
    )
    return evaluator
