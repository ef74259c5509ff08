"""The training loop: one run of one method on one dataset, with the paper's recipe.

`train(cfg, out_dir)` is the whole job: it writes `config.yaml`, `metrics.jsonl` (one line per
epoch), `checkpoint.pt` (every epoch) and finally `result.json` into `out_dir`. It knows no
method by name: the loss plugin says which head to build (`plugin.head`) and carries its own
schedule (`plugin.set_epoch`), and mixup wraps any loss. It knows nothing of Ray either: the
suite runner passes `hooks` to hear about each epoch.

A run is reproducible: the batch order, the augmentation and every other random draw of epoch
`e` come from generators seeded by (seed, e), so a run resumed from its epoch-e checkpoint
continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

import ltbench
from ltbench.engine.config import TrainConfig, resolve, save_yaml
from ltbench.engine.metrics import Evaluator
from ltbench.errors import LtbenchError

CHECKPOINT_FORMAT = "ltbench-checkpoint-1"
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "result.json")
# Settings that do not change the numbers a run produces: a resumed run may change them.
RUNTIME_KEYS = {
    "device",
    "amp",
    "channels_last",
    "compile",
    "num_workers",
    "eval_every",
    "data_root",
    "download",
}


class TrainHooks(Protocol):
    """What the caller hears after every epoch (the Ray adapter reports it to Tune)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path) -> None: ...


# ----------------------------------------------------------------------------------------------
# Setup: device, output directory, checkpoints


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LtbenchError("device 'cuda' was asked for but no CUDA device is available")
    return torch.device(name)


def prepare_out_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite a finished run or to silently mix with an unfinished one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not present:
        return
    if overwrite:
        for name in present:
            (out_dir / name).unlink()
        return
    if (out_dir / "result.json").exists() and not resume:
        raise LtbenchError(
            f"output directory {out_dir} already holds a finished run; "
            "choose another --out or pass --overwrite"
        )
    if not resume:
        raise LtbenchError(
            f"output directory {out_dir} holds an unfinished run; "
            "pass --resume to continue it or --overwrite to start again"
        )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically, so a crash mid-write never leaves a truncated checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Load without executing code (`weights_only`) and check that it belongs to this run."""
    if not path.is_file():
        raise LtbenchError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LtbenchError(
            f"checkpoint {path} is corrupted or not a checkpoint ({first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LtbenchError(f"checkpoint {path} was not written by ltbench ({CHECKPOINT_FORMAT})")
    saved, now = state["config"], cfg.to_dict()
    for key in now:
        if key not in RUNTIME_KEYS and saved.get(key) != now[key]:
            raise LtbenchError(
                f"checkpoint {path} belongs to another run: {key} is {saved.get(key)!r} there, "
                f"{now[key]!r} here"
            )
    return state


def environment(device: torch.device, *, amp: bool, channels_last: bool) -> dict[str, str]:
    """Versions, machine and the numerics settings of the step, stored with every result."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "ltbench": ltbench.__version__,
        "git_commit": commit or "unknown",
        "torch": torch.__version__,
        "device": f"{device.type} ({name or platform.machine()})",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": str(os.cpu_count()),
        "amp_bf16": str(amp),
        "channels_last": str(channels_last),
    }


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw of one epoch (batch order, augmentation, mixup, EQL)."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**63 - 1)


# ----------------------------------------------------------------------------------------------
# The step's parts: precision, layout, model, optimizer (`ltbench bench train` builds the same)

# where torch.optim.SGD has a fused kernel: one update for all ~100 parameter tensors
FUSED_SGD_DEVICES = ("cpu", "cuda")


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


def build_step(
    cfg: TrainConfig,
    counts: list[int],
    num_classes: int,
    device: torch.device,
    *,
    channels_last: bool,
):
    """The loss plugin, the model, the module the step calls (the model compiled when
    `cfg.compile`) and the SGD optimizer. Seed torch first: the initial weights come from it."""
    from ltbench.engine.models import build_model
    from ltbench.sdk.registry import build_loss

    plugin = build_loss(cfg.loss, counts, **cfg.loss_params).to(device)
    model = build_model(cfg.model, num_classes, head=plugin.head, width=cfg.width).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        fused=device.type in FUSED_SGD_DEVICES,
    )
    return plugin, model, step_model, optimizer


# ----------------------------------------------------------------------------------------------
# The learning-rate schedule (paper Table 2): linear warm-up, then step decay


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based `epoch`: warm-up to `lr`, times `lr_decay_factor` per milestone.

    Warm-up follows the public CIFAR-LT recipe: epoch e < warmup uses lr * (e + 1) / warmup.
    """
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    drops = sum(epoch >= m for m in cfg.lr_decay_epochs)
    return cfg.lr * cfg.lr_decay_factor**drops


# ----------------------------------------------------------------------------------------------
# One epoch of training, one pass of evaluation


@dataclass
class EpochStats:
    """Sums kept on the device during an epoch; read once at its end."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: torch.Tensor
    first_bad_step: torch.Tensor  # -1 while every loss so far was finite


def train_one_epoch(
    model: torch.nn.Module,
    batches,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    amp: bool,
    mixup=None,
    generator: torch.Generator | None = None,
) -> EpochStats:
    """Train over `batches` (pairs of augmented, normalised images and labels on `device`).

    No host synchronisation happens inside: a non-finite loss is recorded on the device and
    reported by the caller at the end of the epoch.
    """
    model.train()
    zero = torch.zeros((), device=device)
    stats = EpochStats(
        zero.clone(),
        zero.clone().long(),
        zero.clone().long(),
        torch.full((), -1, device=device, dtype=torch.long),
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    for step, (images, labels) in enumerate(batches):
        if mixup is not None:
            images, labels_a, labels_b, lam = mixup.mix(images, labels, generator)
        with autocast:
            scores = model(images)
            if mixup is not None:
                loss = mixup.loss(loss_fn, scores, labels_a, labels_b, lam)
            else:
                loss = loss_fn(scores, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            loss = loss.detach().float()
            bad = ~torch.isfinite(loss) & (stats.first_bad_step < 0)
            stats.first_bad_step = torch.where(
                bad, torch.full_like(stats.first_bad_step, step), stats.first_bad_step
            )
            stats.loss_sum += loss * labels.shape[0]
            stats.correct += (scores.argmax(dim=1) == labels).sum()
            stats.seen += labels.shape[0]
    return stats


def fit_epoch(
    model,
    loader,
    plugin,
    optimizer,
    device: torch.device,
    *,
    seed: int,
    epoch: int,
    schedule_epoch: int,
    channels_last: bool,
    amp: bool,
    mixup=None,
    where: str = "",
    hint: str = "",
) -> dict[str, float]:
    """Train one epoch with its own seeds and return `train_loss`, `train_acc`.

    `epoch` (0-based) seeds the batch order, the augmentation and every other draw;
    `schedule_epoch` is what the loss's `set_epoch` sees (they differ in a second stage). A
    non-finite loss stops the run with an error naming the epoch and the step.
    """
    plugin.set_epoch(schedule_epoch)
    draw = epoch_seed(seed, epoch)
    torch.manual_seed(draw)
    generator = torch.Generator(device=device).manual_seed(draw)
    stats = train_one_epoch(
        model,
        epoch_batches(loader, epoch, channels_last),
        plugin,
        optimizer,
        device,
        amp=amp,
        mixup=mixup,
        generator=generator,
    )
    bad_step = int(stats.first_bad_step)
    if bad_step >= 0:
        raise LtbenchError(
            f"the loss became NaN or infinite {where}at epoch {schedule_epoch + 1}, step "
            f"{bad_step + 1}; {hint or 'try a lower learning rate or check the loss parameters'}"
        )
    seen = max(int(stats.seen), 1)
    return {
        "train_loss": float(stats.loss_sum) / seen,
        "train_acc": 100.0 * int(stats.correct) / seen,
    }


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
    """Accumulate predictions over `batches`; `to_logits` maps scores to the loss's logits."""
    model.eval()
    evaluator = Evaluator(num_classes, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    for images, labels in batches:
        with autocast:
            scores = model(images)
        scores = scores.float()
        evaluator.update(to_logits(scores) if to_logits else scores, labels)
    return evaluator


# ----------------------------------------------------------------------------------------------
# The whole run


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    os.replace(tmp, path)


def _truncate_metrics(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    """Keep the lines of epochs up to `last_epoch` (a resumed run rewrites the later ones)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["epoch"] <= last_epoch]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    hooks: TrainHooks | None = None,
    *,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train one run and return its final metrics (also written to `out_dir/result.json`).

    `resume`: False, True (continue from `out_dir/checkpoint.pt` if there is one) or the path
    of a checkpoint to continue from.
    """
    from ltbench.data import load_dataset
    from ltbench.engine.mixup import Mixup
    from ltbench.sdk.registry import get_spec

    cfg = resolve(cfg)
    spec = get_spec(cfg.loss)
    if spec.runner is not None:  # a method with its own schedule (e.g. two stages) runs itself
        return spec.runner(
            cfg, out_dir, hooks, resume=resume, overwrite=overwrite, progress=progress
        )
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, resume=bool(resume), overwrite=overwrite)
    device = pick_device(cfg.device)
    amp, channels_last = step_options(cfg, device)
    start_time = time.perf_counter()

    # -- data ------------------------------------------------------------------------------
    bundle = load_dataset(
        cfg.dataset,
        root=cfg.data_root,
        imb_factor=cfg.imb_factor,
        profile=cfg.profile,
        subset_seed=cfg.subset_seed,
        download=cfg.download,
        n_max=cfg.n_max,
        val_fraction=cfg.val_fraction,
        val_seed=cfg.seed,
    )
    counts = list(bundle.cls_num_list)
    if min(counts) < 1:
        empty = counts.index(min(counts))
        raise LtbenchError(
            f"the long-tailed training set leaves class {empty} ({bundle.class_names[empty]}) "
            f"without images (imb_factor={cfg.imb_factor:g}, n_max={cfg.n_max}); "
            "use a larger n_max or imb_factor"
        )
    loaders = make_loaders(bundle, cfg, device)

    # -- method: loss plugin, head, model ---------------------------------------------------
    torch.manual_seed(cfg.seed)
    plugin, model, step_model, optimizer = build_step(
        cfg, counts, bundle.num_classes, device, channels_last=channels_last
    )
    mixup = Mixup(cfg.mixup_alpha) if cfg.mixup_alpha > 0 else None
    to_logits = getattr(plugin, "eval_logits", None)

    def assess(loader) -> dict[str, Any]:
        batches = epoch_batches(loader, 0, channels_last)
        return evaluate(
            step_model, batches, bundle.num_classes, device, amp=amp, to_logits=to_logits
        ).compute(counts)

    # -- resume -----------------------------------------------------------------------------
    start_epoch, history = 0, []
    ckpt_path = out_dir / "checkpoint.pt"
    if resume:
        source = ckpt_path if resume is True else Path(resume)
        if resume is not True or source.exists():
            state = load_checkpoint(source, cfg)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"])
            history = _truncate_metrics(out_dir / "metrics.jsonl", start_epoch)
    save_yaml(cfg, out_dir / "config.yaml")

    # -- epochs -----------------------------------------------------------------------------
    show = progress if progress is not None else os.isatty(2)
    epochs = range(start_epoch, cfg.epochs)
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.epochs,
            initial=start_epoch,
            desc=f"{cfg.loss} on {cfg.dataset}",
            unit="epoch",
            dynamic_ncols=True,
        )
    for epoch in epochs:
        tick = time.perf_counter()
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": lr,
            **fit_epoch(
                step_model,
                loaders.train,
                plugin,
                optimizer,
                device,
                seed=cfg.seed,
                epoch=epoch,
                schedule_epoch=epoch,
                channels_last=channels_last,
                amp=amp,
                mixup=mixup,
                hint=f"try a lower learning rate (lr={lr:g}) or check the loss parameters",
            ),
        }
        last = epoch + 1 == cfg.epochs
        if last or (epoch + 1) % cfg.eval_every == 0:
            row["test_top1_error"] = assess(loaders.test)["top1_error"]
        if loaders.val is not None:
            row["val_top1_error"] = assess(loaders.val)["top1_error"]
        row["epoch_seconds"] = time.perf_counter() - tick
        history.append(row)
        state = {
            "config": cfg.to_dict(),
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        record_epoch(out_dir, state, row, hooks, bar)
    if bar is not None:
        bar.close()

    # -- final metrics, from the saved state so a relaunch gives the same file ---------------
    result = build_result(cfg, bundle, assess(loaders.test), history)
    if loaders.val is not None:
        result["val_top1_error"] = assess(loaders.val)["top1_error"]
    result["wall_seconds"] = (
        time.perf_counter()
        - start_time
        + sum(r.get("epoch_seconds", 0.0) for r in history[:start_epoch])
    )
    result["env"] = environment(device, amp=amp, channels_last=channels_last)
    write_json(out_dir / "result.json", result)
    return result


def record_epoch(out_dir: Path, state: dict[str, Any], row: dict[str, Any], hooks, bar) -> None:
    """Keep one finished epoch: the checkpoint first, then its metrics line, then tell the
    caller (`hooks`) and the progress bar. `row["epoch"]` is the count of finished epochs."""
    checkpoint = out_dir / "checkpoint.pt"
    save_checkpoint(checkpoint, {"format": CHECKPOINT_FORMAT, **state})
    with open(out_dir / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    if hooks is not None:
        hooks.on_epoch_end(row["epoch"], row, checkpoint)
    if bar is not None:
        bar.update(1)
        error = row.get("test_top1_error", math.nan)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{error:.1f}")


def build_result(
    cfg: TrainConfig, bundle, final: dict[str, Any], history: list[dict[str, Any]]
) -> dict[str, Any]:
    """The result record of DESIGN.md from the final metrics and the epoch history."""
    tested = [r for r in history if "test_top1_error" in r]
    best = min(tested, key=lambda r: r["test_top1_error"]) if tested else None
    return {
        "method": cfg.loss + ("+mixup" if cfg.mixup_alpha > 0 else ""),
        "loss": cfg.loss,
        "loss_params": cfg.loss_params,
        "mixup_alpha": cfg.mixup_alpha,
        "dataset": cfg.dataset,
        "imb_factor": cfg.imb_factor,
        "rho": round(cfg.rho, 6),
        "profile": cfg.profile,
        "seed": cfg.seed,
        "subset_seed": cfg.subset_seed,
        "model": cfg.model,
        "epochs": cfg.epochs,
        "status": "finished",
        **final,
        "best_test_top1_error_selected_on_test": best["test_top1_error"] if best else None,
        "best_epoch_selected_on_test": best["epoch"] if best else None,
        "class_counts": list(bundle.cls_num_list),
        "class_names": list(bundle.class_names),
    }


# ----------------------------------------------------------------------------------------------
# Loaders: in-memory tensors on the device, or a DataLoader over image files


def epoch_batches(loader, epoch: int, channels_last: bool):
    """The batches of one epoch, in channels-last layout where the model uses it."""
    loader.set_epoch(epoch)
    for images, labels in loader:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, labels


@dataclass
class Loaders:
    """Batch iterators (with `set_epoch`) of the bundle's splits; `val` is None without one."""

    train: Any
    test: Any
    val: Any | None


def make_loaders(bundle, cfg: TrainConfig, device: torch.device) -> Loaders:
    """In-memory data stays on `device` and is augmented there; files go through a DataLoader."""
    from ltbench.data import make_loader

    common = dict(seed=cfg.seed, device=device, num_workers=cfg.num_workers)
    eval_batch = max(cfg.batch_size, 256)
    return Loaders(
        train=make_loader(bundle, "train", cfg.batch_size, **common),
        test=make_loader(bundle, "test", eval_batch, **common),
        val=make_loader(bundle, "val", eval_batch, **common) if bundle.val is not None else None,
    )
