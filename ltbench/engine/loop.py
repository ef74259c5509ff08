"""The training loop: one run of one method on one dataset, as one or more stages.

`train(cfg, out_dir)` is the whole job: it writes `config.yaml`, `metrics.jsonl` (one line per
epoch), `checkpoint.pt` (every epoch) and finally `result.json` into `out_dir`. It knows no
method by name: the method's spec says which stages to run (`ltbench.engine.stages`), each stage
says which loss, sampler, schedule and which weights to train, the loss plugin says which head
to build (`plugin.head`) and carries its own schedule (`plugin.set_epoch`), and mixup wraps any
loss. It knows nothing of Ray either: the suite runner passes `hooks` to hear about each epoch.

A two-stage run trains its first stage as an ordinary run in the shared stage-1 cache, then its
second stage in `out_dir`. There `metrics.jsonl` holds the stage-1 epochs (copied from the
cache, `"stage": "stage1"`) and then the stage-2 epochs (`"stage": "stage2"`); epochs keep
counting, so stage-2 epoch k is line E1 + k, and `lr` of a stage-2 line is the classifier's.
`checkpoint.pt` is the stage-2 state; a crash in stage 2 resumes from it, reusing stage 1.
`result.json` is the record of the final model with `stages: {stage1: <stage 1's result>,
stage2: <the same record without stages>}`, `stage1_dir`, `epochs` = E1 + E2 and
`wall_seconds` = stage 1's + stage 2's. `hooks` hear the epochs this process trains (numbered in
the whole run). `overwrite` clears the run's folder only, never the shared stage 1.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ltbench.engine import distributed
from ltbench.engine.checkpoint import (
    append_row,
    environment,
    load_checkpoint,
    prepare_out_dir,
    read_rows,
    save_checkpoint,
    write_json,
    write_rows,
)
from ltbench.engine.config import TrainConfig, resolve, save_yaml
from ltbench.engine.identity import identity, precision_name
from ltbench.engine.locks import check_out_dir, hold, missing_folders, remove_if_unused
from ltbench.engine.metrics import validation_metrics
from ltbench.engine.protocols import (
    BEST_ON_TEST,
    BEST_VAL_CHECKPOINT,
    due_for_test,
    epoch_protocols,
    new_validation_minimum,
)
from ltbench.engine.schedule import cosine_learning_rate, step_learning_rate
from ltbench.engine.stages import (
    StageModel,
    check_run,
    ensure_stage1,
    stage1_dir,
    stage_classifier,
    stage_config,
)
from ltbench.engine.step import (
    epoch_batches,
    evaluate,
    fit_epoch,
    float64_for_tests,
    hold_out_meta,
    load_run_data,
    make_loaders,
    pick_device,
    sgd,
    step_module,
    step_options,
)
from ltbench.errors import LtbenchError, os_error_message
from ltbench.sdk.stages import Stage


class TrainHooks(Protocol):
    """What the caller hears after every epoch (the Ray adapter reports it to Tune)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path) -> None: ...


@dataclass
class Previous:
    """The finished stage a later stage starts from."""

    stage: Stage
    cfg: TrainConfig  # its run's configuration
    run_dir: Path
    result: dict[str, Any]


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    hooks: TrainHooks | None = None,
    *,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    progress: bool | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train one run and return its final metrics (also written to `out_dir/result.json`).

    `resume`: False, True (continue from `out_dir/checkpoint.pt` if there is one) or the path
    of a checkpoint to continue from. `cache_dir`: where shared first stages are kept.

    Every input is checked before anything is written (the configuration, the stages and their
    losses, the data files, the output folders, a given checkpoint); then the run holds the lock
    of `out_dir` (`ltbench.engine.locks`) to the end. A file that cannot be read or written
    mid-run is a one-line error naming it; the folder stays resumable.

    In a run over several processes (`ltbench.engine.distributed`) every process calls `train`
    with the same arguments; process 0 holds the folder and writes its files.
    """
    cfg, stages = check_run(cfg)
    out_dir = check_out_dir(out_dir)
    cfg1 = resolve(stage_config(cfg, stages[0])) if len(stages) > 1 else None
    run1 = check_out_dir(stage1_dir(cfg1, out_dir, cache_dir), "stage-1 cache") if cfg1 else None
    if resume not in (True, False):  # a checkpoint to start from: loaded and checked now
        resume = load_checkpoint(Path(resume), cfg)
    made = missing_folders(out_dir)  # removed again if the run stops before its first file
    try:
        first = lambda: prepare_out_dir(out_dir, resume=bool(resume), overwrite=overwrite)  # noqa: E731
        with distributed.hold_all(out_dir, hold, first=first):
            previous = None
            if cfg1 is not None:
                result1 = ensure_stage1(
                    run1, lambda: train(cfg1, run1, hooks, resume=True, progress=progress)
                )
                previous = Previous(stages[0], cfg1, run1, result1)
            return run_stage(
                cfg, stages[-1], out_dir, hooks, previous=previous, resume=resume, progress=progress
            )
    except OSError as exc:
        if exc.filename is None:
            raise
        started = (out_dir / "checkpoint.pt").is_file()  # else there is no run to continue
        raise LtbenchError(os_error_message(exc, out_dir if started else None)) from exc
    finally:
        if distributed.ranks().is_main:
            remove_if_unused(out_dir, made)


def run_stage(
    cfg: TrainConfig,
    stage: Stage,
    out_dir: Path,
    hooks: TrainHooks | None,
    *,
    previous: Previous | None,
    resume: bool | str | Path | dict,  # a dict: the checkpoint `train` loaded
    progress: bool | None,
) -> dict[str, Any]:
    """Train `stage` of the resolved run `cfg` in `out_dir` (from `previous`'s network, if any)."""
    from ltbench.engine.mixup import Mixup
    from ltbench.engine.models import build_model
    from ltbench.sdk.registry import build_loss, get_spec

    multi = previous is not None
    offset = previous.cfg.epochs if multi else 0  # epochs of the run before this stage
    start_time = time.perf_counter()
    device = pick_device(cfg.device)
    amp, channels_last = step_options(cfg, device)
    ranks = distributed.ranks()
    main = ranks.is_main  # the one process that writes the run's files
    distributed.check_batch(stage.batch_size, ranks.world)

    # -- data ------------------------------------------------------------------------------
    bundle, meta_set = hold_out_meta(load_run_data(cfg), stage.meta_per_class, cfg.seed)
    counts = list(bundle.cls_num_list)
    if min(counts) < 1:
        empty = counts.index(min(counts))
        raise LtbenchError(
            f"the long-tailed training set leaves class {empty} ({bundle.class_names[empty]}) "
            f"without images (imb_factor={cfg.imb_factor:g}, n_max={cfg.n_max}); "
            "use a larger n_max or imb_factor"
        )
    loaders = make_loaders(bundle, cfg, device, batch_size=stage.batch_size, sampling=stage.sampler)
    extra_loaders = [
        make_loaders(bundle, cfg, device, batch_size=stage.batch_size, sampling=s).train
        for s in stage.extra_samplers
    ]
    meta_loader = None
    if meta_set is not None:
        meta_bundle = dataclasses.replace(bundle, train=meta_set)
        meta_loader = make_loaders(meta_bundle, cfg, device, batch_size=stage.batch_size).train

    # -- loss plugin and network --------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    plugin = build_loss(stage.loss, counts, **stage.loss_params).to(device)

    def standard(head: str) -> torch.nn.Module:
        return build_model(cfg.model, bundle.num_classes, head=head, width=cfg.width)

    if not multi:
        model = (
            stage.model(standard, bundle.num_classes, plugin.head)
            if stage.model
            else standard(plugin.head)
        )
        model = model.to(device)
    else:
        net = standard(get_spec(previous.stage.loss).head)
        net.load_state_dict(
            load_checkpoint(previous.run_dir / "checkpoint.pt", previous.cfg)["model"]
        )
        torch.manual_seed(cfg.seed)
        classifier = stage_classifier(
            net.classifier, plugin.head, reinit=stage.classifier == "reinit"
        )
        model = StageModel(
            net.backbone,
            classifier,
            bundle.num_classes,
            frozen=stage.trainable in ("classifier", "class-scale"),
            bn_follows_data=stage.batchnorm == "train",
            class_scale=stage.class_scale,
            frozen_classifier=stage.trainable == "class-scale",
        ).to(device)
    if float64_for_tests():
        model = model.double()
    model = distributed.sync_batchnorm(model, device)  # new BatchNorm modules: groups after
    groups: Any = model.param_groups(stage.lr_factor) if multi else model.parameters()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    wrapped = distributed.data_parallel(model, device)  # the model itself in one process
    step_model = step_module(wrapped, cfg, device)  # compiled / CUDA graphs over DDP
    # evaluation runs each rank's shard through the network without DDP's gradient hooks
    eval_model = step_model if wrapped is model else step_module(model, cfg, device)
    optimizer = sgd(
        groups,
        device,
        lr=stage.lr,
        momentum=cfg.momentum,
        weight_decay=stage.weight_decay,
    )
    mixup = Mixup(stage.mixup_alpha) if stage.mixup_alpha > 0 else None
    to_logits = getattr(plugin, "eval_logits", None)

    def assess(loader) -> dict[str, Any]:
        batches = epoch_batches(loader, 0, channels_last)
        return evaluate(
            eval_model, batches, bundle.num_classes, device, amp=amp, to_logits=to_logits
        ).compute(counts)

    # -- resume: this stage's checkpoint; metrics = earlier stages' lines + this stage's kept --
    start = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if resume:
        source = ckpt_path if resume is True else Path(resume)
        if isinstance(resume, dict) or resume is not True or distributed.agree(source.exists()):
            state = resume if isinstance(resume, dict) else load_checkpoint(source, cfg)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state.get("stage_epoch", state.get("stage2_epoch", state["epoch"])))
    earlier = []
    if multi:
        earlier = [
            {**row, "stage": previous.stage.name}
            for row in read_rows(previous.run_dir / "metrics.jsonl")
        ]
    history = [
        row
        for row in read_rows(out_dir / "metrics.jsonl")
        if row.get("stage", stage.name if multi else None) == (stage.name if multi else None)
        and row["epoch"] <= offset + start
    ]
    if main:
        write_rows(out_dir / "metrics.jsonl", earlier + history)
        save_yaml(cfg, out_dir / "config.yaml")

    # -- epochs -----------------------------------------------------------------------------
    bar = _progress_bar(progress, stage, cfg, start, multi) if main else None
    for epoch in range(start, stage.epochs):
        tick = time.perf_counter()
        lr = stage_learning_rate(cfg, stage, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_factor", 1.0)
        row: dict[str, Any] = {"epoch": offset + epoch + 1}
        if multi:
            row["stage"] = stage.name
        row["lr"] = lr * stage.lr_factor
        row.update(
            fit_epoch(
                step_model,
                loaders.train,
                plugin,
                optimizer,
                device,
                seed=cfg.seed,
                epoch=offset + epoch,
                schedule_epoch=epoch,
                schedule_epochs=stage.epochs,
                channels_last=channels_last,
                amp=amp,
                mixup=mixup,
                step=stage.step,
                extra_loaders=extra_loaders,
                meta_loader=meta_loader,
                lr=lr,
                where=f"in {stage.name} " if multi else "",
            )
        )
        if loaders.val is not None:
            row.update(validation_metrics(assess(loaders.val)["confusion_matrix"]))
            del row["val_classes_without_images"]  # a property of the split: in result.json
        if due_for_test(epoch + 1, stage.epochs, cfg.eval_every, row, history):
            row["test_top1_error"] = assess(loaders.test)["top1_error"]
        row["epoch_seconds"] = time.perf_counter() - tick
        keep_best = cfg.keep_best_val and new_validation_minimum(row, history)
        history.append(row)
        state = {
            "config": cfg.to_dict(),
            "epoch": offset + epoch + 1,
            "stage": stage.name,
            "stage_epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        # The line first: a crash between the two redoes this epoch from the last checkpoint,
        # and the resumed run drops the line of the epoch it redoes.
        if main:
            append_row(out_dir / "metrics.jsonl", row)
            save_checkpoint(ckpt_path, state)
            if keep_best:  # best-on-validation's model, for `ltbench eval` or a look later
                save_checkpoint(out_dir / BEST_VAL_CHECKPOINT, state)
        distributed.barrier()  # every rank's hooks see the epoch's checkpoint on disk
        if hooks is not None:
            hooks.on_epoch_end(row["epoch"], row, ckpt_path)
        if bar is not None:
            bar.update(1)
            error = row.get("test_top1_error", math.nan)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{error:.1f}")
    if bar is not None:
        bar.close()

    # -- final metrics, from the saved state so a relaunch gives the same file ---------------
    result = build_result(cfg, bundle, assess(loaders.test), history)
    if loaders.val is not None:
        result.update(validation_metrics(assess(loaders.val)["confusion_matrix"]))
        result.update(validation_split_record(bundle))
    result["wall_seconds"] = (
        time.perf_counter() - start_time + sum(r.get("epoch_seconds", 0.0) for r in history[:start])
    )
    result["env"] = environment(device, amp=amp, channels_last=channels_last)
    result["env"]["workers"] = str(ranks.world)
    result["precision"] = precision_name(amp)
    if multi:  # a cached stage 1 may have run at another precision (amp is a runtime setting)
        first = previous.result.get("precision") or precision_name(
            previous.result.get("env", {}).get("amp_bf16") == "True"
        )
        if first != result["precision"]:
            result["precision"] = f"{first} (stage 1), {result['precision']} (stage 2)"
    if meta_set is not None:
        result["meta_set"] = meta_set_record(bundle, meta_set, stage.meta_per_class)
    result["stage_plan"] = ([previous.stage.describe()] if multi else []) + [stage.describe()]
    if multi:
        result["epochs"] = stage.epochs
        result = {
            **result,
            "epochs": offset + stage.epochs,
            "wall_seconds": previous.result.get("wall_seconds", 0.0) + result["wall_seconds"],
            "stage1_dir": str(previous.run_dir),
            "stages": {previous.stage.name: previous.result, stage.name: result},
        }
    if main:
        write_json(out_dir / "result.json", result)
    return result


def validation_split_record(bundle) -> dict[str, Any]:
    """What result.json says about the validation split: where it came from, its images per
    class and the classes with fewer than VAL_MIN_PER_CLASS (their error is noisy)."""
    from ltbench.data.longtail import VAL_MIN_PER_CLASS, class_counts, classes_short_of_minimum

    counts = class_counts(bundle.val.labels, bundle.num_classes)
    return {
        "val_source": bundle.val_source,
        "val_class_counts": counts,
        "val_min_per_class": VAL_MIN_PER_CLASS,
        "val_classes_below_minimum": classes_short_of_minimum(counts),
    }


def meta_set_record(bundle, meta_set, per_class: int) -> dict[str, Any]:
    """What result.json says about a stage's meta set (`Stage.meta_per_class`)."""
    from ltbench.data.longtail import class_counts

    return {
        "per_class": per_class,
        "class_counts": class_counts(meta_set.labels, bundle.num_classes),
        "size": len(meta_set),
        "drawn": "held out of the training split after the validation hold-out, per class "
        "min(per_class, n_j // 2) images at random (ltbench.data.longtail.split_meta); never "
        "trained on; disjoint from validation and test",
    }


def stage_learning_rate(cfg: TrainConfig, stage: Stage, epoch: int) -> float:
    """The learning rate of 0-based `epoch` of `stage`."""
    if stage.schedule == "cosine":
        return cosine_learning_rate(stage.lr, epoch, stage.epochs)
    factor = cfg.lr_decay_factor if stage.lr_decay_factor is None else stage.lr_decay_factor
    return step_learning_rate(stage.lr, epoch, cfg.warmup_epochs, cfg.lr_decay_epochs, factor)


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based `epoch` of a plain run of the resolved `cfg`."""
    return step_learning_rate(
        cfg.lr, epoch, cfg.warmup_epochs, cfg.lr_decay_epochs, cfg.lr_decay_factor
    )


def _progress_bar(progress: bool | None, stage: Stage, cfg: TrainConfig, start: int, multi: bool):
    if not (progress if progress is not None else os.isatty(2)):
        return None
    from tqdm import tqdm

    name = f"{cfg.loss} {stage.name}" if multi else cfg.loss
    return tqdm(
        total=stage.epochs,
        initial=start,
        desc=f"{name} on {cfg.dataset}",
        unit="epoch",
        dynamic_ncols=True,
    )


def build_result(
    cfg: TrainConfig, bundle, final: dict[str, Any], history: list[dict[str, Any]]
) -> dict[str, Any]:
    """The result record of DESIGN.md from the final metrics and the epoch history."""
    protocols = epoch_protocols(history, final["top1_error"])
    best = protocols["epoch_protocols"][BEST_ON_TEST]
    return {
        **identity(cfg),  # method (the label from the whole configuration), full_schedule, ...
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
        **protocols,  # final, best-on-validation, best-on-test, and the epochs evaluated
        "best_test_top1_error_selected_on_test": best.get("test_top1_error"),
        "best_epoch_selected_on_test": best["epoch"],
        "class_counts": list(bundle.cls_num_list),
        "class_names": list(bundle.class_names),
    }
