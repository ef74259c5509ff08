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

A run of more stages goes on the same way: each later stage trains in `out_dir` from the final
network of the one before, its lines follow, and `stages` holds every stage's record. From the
third stage on the checkpoint also carries `done_stages` (the records of the stages finished in
`out_dir`), so a run resumed there skips them. What a run writes and when is
`ltbench.engine.record`'s; which network a stage trains, `ltbench.engine.network`'s.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ltbench.engine import distributed
from ltbench.engine.checkpoint import load_checkpoint, prepare_out_dir, read_rows, write_rows
from ltbench.engine.config import TrainConfig, resolve, save_yaml
from ltbench.engine.locks import check_out_dir, hold, missing_folders, remove_if_unused
from ltbench.engine.network import build_stages_network
from ltbench.engine.protocols import due_for_test, new_validation_minimum
from ltbench.engine.record import (
    EpochClock,
    add_precision,
    add_test,
    add_validation,
    checkpoint_state,
    data_fingerprints,
    epoch_row,
    final_result,
    kept_history,
    meta_set_record,
    save_best_val,
    save_epoch,
    stage_epochs_done,
    write_result,
)
from ltbench.engine.schedule import stage_learning_rate, step_learning_rate
from ltbench.engine.stages import check_run, ensure_stage1, stage1_dir, stage_config
from ltbench.engine.step import (
    epoch_batches,
    evaluate,
    float64_for_tests,
    hold_out_meta,
    load_run_data,
    make_loaders,
    pick_device,
    sgd,
    step_module,
    step_options,
    train_epoch,
)
from ltbench.errors import LtbenchError, os_error_message
from ltbench.runfiles import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE
from ltbench.sdk.stages import Stage


class TrainHooks(Protocol):
    """What the caller hears after every epoch (the Ray adapter reports it to Tune)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path) -> None: ...


@dataclass(frozen=True)
class Plan:
    """A run resolved once, before anything is trained: its configuration and its stages; for a
    run of several stages, the first stage's own run (its configuration and cache folder)."""

    cfg: TrainConfig
    stages: tuple[Stage, ...]
    out_dir: Path
    first_cfg: TrainConfig | None = None
    first_dir: Path | None = None


@dataclass
class Previous:
    """The finished stages a later stage starts from: the first one (a cached run of its own)
    and those trained before in the run's folder."""

    stages: list[Stage]
    epochs: int  # theirs in all: a later stage's epochs count on from here
    weights: dict[str, Any] | None  # the last one's final network (None: resumed past it)
    rows: list[dict[str, Any]]  # their metrics lines, each naming its stage
    results: dict[str, dict[str, Any]]  # each one's record, by stage name
    first_dir: Path  # the cache folder of the first stage

    def after(self, stage: Stage, result, weights, rows) -> Previous:
        """These stages and `stage` (trained in the run's folder) after it."""
        return Previous(
            [*self.stages, stage],
            self.epochs + stage.epochs,
            weights,
            self.rows + rows,
            {**self.results, stage.name: result},
            self.first_dir,
        )

    @property
    def in_folder(self) -> dict[str, dict[str, Any]]:
        """The records of the stages trained in the run's folder (all but the first)."""
        return {s.name: self.results[s.name] for s in self.stages[1:]}


def plan_run(cfg: TrainConfig, out_dir: str | Path, cache_dir: str | Path | None = None) -> Plan:
    """Check and resolve the run: its configuration, its stages, its folder, the first stage's
    cache."""
    cfg, stages = check_run(cfg)
    out_dir = check_out_dir(out_dir)
    if len(stages) == 1:
        return Plan(cfg, tuple(stages), out_dir)
    cfg1 = resolve(stage_config(cfg, stages[0]))
    run1 = check_out_dir(stage1_dir(cfg1, out_dir, cache_dir), "stage-1 cache")
    return Plan(cfg, tuple(stages), out_dir, cfg1, run1)


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
    plan = plan_run(cfg, out_dir, cache_dir)
    out_dir = plan.out_dir
    start_from = Resume.of(resume, plan.cfg)  # a given checkpoint: loaded and checked now
    made = missing_folders(out_dir)  # removed again if the run stops before its first file
    try:
        first = lambda: prepare_out_dir(out_dir, resume=bool(resume), overwrite=overwrite)  # noqa: E731
        with distributed.hold_all(out_dir, hold, first=first):
            return run_plan(plan, hooks, start_from, progress)
    except OSError as exc:
        if exc.filename is None:
            raise
        started = (out_dir / CHECKPOINT_FILE).is_file()  # else there is no run to continue
        raise LtbenchError(os_error_message(exc, out_dir if started else None)) from exc
    finally:
        if distributed.ranks().is_main:
            remove_if_unused(out_dir, made)


@dataclass(frozen=True)
class Resume:
    """Where a stage starts: from scratch, from its folder's checkpoint.pt if there is one
    (`latest`), or from a checkpoint already loaded and checked (`state`)."""

    latest: bool = False
    state: dict | None = None

    @classmethod
    def of(cls, resume: bool | str | Path, cfg: TrainConfig) -> Resume:
        """`train`'s `resume` argument: False, True, or the path of a checkpoint."""
        if resume is True or resume is False:
            return cls(latest=resume)
        return cls(state=load_checkpoint(Path(resume), cfg))

    def checkpoint(self, out_dir: Path, cfg: TrainConfig) -> dict | None:
        """The state to continue from, None to start the stage afresh."""
        if self.state is not None:
            return self.state
        path = out_dir / CHECKPOINT_FILE
        if self.latest and distributed.agree(path.exists()):
            return load_checkpoint(path, cfg)
        return None


def run_plan(
    plan: Plan, hooks: TrainHooks | None, resume: Resume, progress: bool | None
) -> dict[str, Any]:
    """Train the planned stages in turn and return the run's result: the first stage as a run
    of its own in the shared cache (when there are several), each later one in the run's
    folder from the network of the one before. A resumed run skips the stages its checkpoint
    has finished (their records are in it) and continues the one it stopped in."""
    out_dir, stages = plan.out_dir, plan.stages
    state = resume.checkpoint(out_dir, plan.cfg)
    if len(stages) == 1:
        return finish(
            out_dir, run_stage(plan.cfg, stages[0], out_dir, hooks, None, state, progress)[0]
        )
    cfg1, run1 = plan.first_cfg, plan.first_dir
    result1 = ensure_stage1(run1, lambda: train(cfg1, run1, hooks, resume=True, progress=progress))
    rows1 = [{**row, "stage": stages[0].name} for row in read_rows(run1 / METRICS_FILE)]
    weights1 = load_checkpoint(run1 / CHECKPOINT_FILE, cfg1)["model"]
    previous = Previous([stages[0]], cfg1.epochs, weights1, rows1, {stages[0].name: result1}, run1)
    done = state.get("done_stages", {}) if state is not None else {}
    for index, stage in enumerate(stages[1:], 1):
        if stage.name in done:  # finished before the checkpoint's stage
            kept = kept_history(read_rows(out_dir / METRICS_FILE), stage.name, math.inf)
            previous = previous.after(stage, done[stage.name], None, kept)
            continue
        own = state if state is not None and state.get("stage", stage.name) == stage.name else None
        result, weights, history = run_stage(
            plan.cfg, stage, out_dir, hooks, previous, own, progress
        )
        if index == len(stages) - 1:
            return finish(out_dir, run_record(result, previous, stage))
        previous = previous.after(stage, result, weights, history)
    raise AssertionError("unreachable: the last stage returns")


def finish(out_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write the run's result.json (process 0) and return it."""
    if distributed.ranks().is_main:
        write_result(out_dir, result)
    return result


@dataclass
class StageRun:
    """Everything one stage trains with, built once (`build_stage_run`)."""

    cfg: TrainConfig
    stage: Stage
    device: torch.device
    amp: bool
    channels_last: bool
    bundle: Any
    meta_set: Any
    loaders: Any  # the batch iterators of the splits (`step.Loaders`)
    extra_loaders: list
    meta_loader: Any
    plugin: Any
    model: torch.nn.Module
    step_model: Any
    eval_model: Any
    optimizer: torch.optim.Optimizer
    mixup: Any
    meta_source: str = ""  # where the meta set came from (`step.hold_out_meta`)

    def assess(self, split_loader) -> dict[str, Any]:
        """The metrics of the current network on one split."""
        batches = epoch_batches(split_loader, 0, self.channels_last)
        to_logits = getattr(self.plugin, "eval_logits", None)
        evaluator = evaluate(
            self.eval_model,
            batches,
            self.bundle.num_classes,
            self.device,
            amp=self.amp,
            to_logits=to_logits,
        )
        counts = list(self.bundle.cls_num_list)
        return evaluator.compute(counts, self.cfg.many_shot, self.cfg.few_shot)


def stage_data(cfg: TrainConfig, stage: Stage, device: torch.device):
    """The stage's bundle (without its meta set), its meta set (or None) and where it came
    from, and the batch iterators: the splits, the extra samplers' training streams, the meta
    set's."""
    import dataclasses

    per_class = stage.meta_per_class
    data = load_run_data(cfg, meta_per_class=per_class)
    bundle, meta_set, meta_source = hold_out_meta(data, per_class, cfg.seed)
    counts = list(bundle.cls_num_list)
    if min(counts) < 1:
        empty = counts.index(min(counts))
        raise LtbenchError(
            f"the long-tailed training set leaves class {empty} ({bundle.class_names[empty]}) "
            f"without images (imb_factor={cfg.imb_factor:g}, n_max={cfg.n_max}); "
            "use a larger n_max or imb_factor"
        )
    loaders = make_loaders(bundle, cfg, device, batch_size=stage.batch_size, sampling=stage.sampler)
    extra = [
        make_loaders(bundle, cfg, device, batch_size=stage.batch_size, sampling=s).train
        for s in stage.extra_samplers
    ]
    meta_loader = None
    if meta_set is not None:
        meta_bundle = dataclasses.replace(bundle, train=meta_set)
        meta_loader = make_loaders(meta_bundle, cfg, device, batch_size=stage.batch_size).train
    return bundle, (meta_set, meta_source), loaders, extra, meta_loader


def build_stage_run(cfg: TrainConfig, stage: Stage, previous: Previous | None) -> StageRun:
    """Data, loss plugin, network (from `previous`'s, if any) and optimizer of `stage`."""
    from ltbench.engine.mixup import Mixup
    from ltbench.sdk.registry import build_loss, get_spec

    device = pick_device(cfg.device)
    amp, channels_last = step_options(cfg, device)
    distributed.check_batch(stage.batch_size, distributed.ranks().world)
    bundle, (meta_set, meta_source), loaders, extra, meta_loader = stage_data(cfg, stage, device)
    torch.manual_seed(cfg.seed)
    plugin = build_loss(stage.loss, list(bundle.cls_num_list), **stage.loss_params).to(device)
    earlier = previous.stages if previous is not None else []
    heads = [get_spec(s.loss).head for s in earlier] + [plugin.head]
    weights = previous.weights if previous is not None else None
    model = build_stages_network(cfg, [*earlier, stage], bundle.num_classes, heads, weights)
    model = model.to(device)
    if float64_for_tests():
        model = model.double()
    model = distributed.sync_batchnorm(model, device)  # new BatchNorm modules: groups after
    groups: Any = model.param_groups(stage.lr_factor) if previous else model.parameters()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    wrapped = distributed.data_parallel(model, device)  # the model itself in one process
    step_model = step_module(wrapped, cfg, device)  # compiled / CUDA graphs over DDP
    # evaluation runs each rank's shard through the network without DDP's gradient hooks
    eval_model = step_model if wrapped is model else step_module(model, cfg, device)
    optimizer = sgd(groups, device, cfg, lr=stage.lr, weight_decay=stage.weight_decay)
    mixup = Mixup(stage.mixup_alpha) if stage.mixup_alpha > 0 else None
    return StageRun(
        cfg, stage, device, amp, channels_last, bundle, meta_set, loaders, extra, meta_loader,
        plugin, model, step_model, eval_model, optimizer, mixup, meta_source,
    )  # fmt: skip


def run_stage(
    cfg: TrainConfig,
    stage: Stage,
    out_dir: Path,
    hooks: TrainHooks | None,
    previous: Previous | None,
    state: dict | None,
    progress: bool | None,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Train `stage` of the resolved run `cfg` in `out_dir` (from `previous`'s network, if any;
    continuing from the checkpoint `state`, if any): build, resume, train the epochs left.
    Returns the stage's record, its final network state and its metrics lines; the record of
    the last stage is the run's, written to result.json."""
    start_time = time.perf_counter()
    run = build_stage_run(cfg, stage, previous)
    start, history = resume_stage(run, out_dir, previous, state)
    train_epochs(run, out_dir, hooks, previous, start, history, progress)
    result = stage_result(run, previous, start, history, time.perf_counter() - start_time)
    return result, run.model.state_dict(), history


def resume_stage(
    run: StageRun, out_dir: Path, previous: Previous | None, state: dict | None
) -> tuple[int, list[dict[str, Any]]]:
    """The stage's finished epochs (its checkpoint's state loaded into the network and the
    optimizer) and the metrics lines it keeps; metrics.jsonl rewritten to the earlier stages'
    lines and this stage's kept ones, config.yaml written."""
    start = 0
    if state is not None:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        start = stage_epochs_done(state)
    name = run.stage.name if previous is not None else None
    offset = previous.epochs if previous is not None else 0
    earlier = previous.rows if previous is not None else []
    history = kept_history(read_rows(out_dir / METRICS_FILE), name, offset + start)
    if distributed.ranks().is_main:
        write_rows(out_dir / METRICS_FILE, earlier + history)
        save_yaml(run.cfg, out_dir / CONFIG_FILE)
    return start, history


def train_epochs(
    run: StageRun,
    out_dir: Path,
    hooks: TrainHooks | None,
    previous: Previous | None,
    start: int,
    history: list[dict[str, Any]],
    progress: bool | None,
) -> None:
    """Train the stage's epochs from `start`: each epoch's line (appended to `history`) and
    checkpoint written, then the hooks told."""
    cfg, stage, multi = run.cfg, run.stage, previous is not None
    offset = previous.epochs if multi else 0  # epochs of the run before this stage
    main = distributed.ranks().is_main  # the one process that writes the run's files
    bar = _progress_bar(progress, stage, cfg, start, multi) if main else None
    for epoch in range(start, stage.epochs):
        clock = EpochClock()
        lr = stage_learning_rate(cfg, stage, epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_factor", 1.0)
        stats = train_epoch(
            run.step_model,
            run.loaders.train,
            run.plugin,
            run.optimizer,
            run.device,
            seed=cfg.seed,
            epoch=offset + epoch,
            schedule_epoch=epoch,
            schedule_epochs=stage.epochs,
            channels_last=run.channels_last,
            amp=run.amp,
            mixup=run.mixup,
            step=stage.step,
            extra_loaders=run.extra_loaders,
            meta_loader=run.meta_loader,
            lr=lr,
            where=f"in {stage.name} " if multi else "",
        )
        name = stage.name if multi else None
        row = epoch_row(offset + epoch + 1, name, lr * stage.lr_factor, stats)
        if run.loaders.val is not None:
            add_validation(row, run.assess(run.loaders.val))
        if due_for_test(epoch + 1, stage.epochs, cfg.eval_every, row, history):
            add_test(row, run.assess(run.loaders.test))
        row.update(clock.read())
        keep_best = cfg.keep_best_val and new_validation_minimum(row, history)
        history.append(row)
        state = checkpoint_state(
            cfg,
            epoch=offset + epoch + 1,
            stage=stage.name,
            stage_epoch=epoch + 1,
            model=run.model.state_dict(),
            optimizer=run.optimizer.state_dict(),
        )
        if multi and previous.in_folder:  # what a resumed run skips to reach this stage
            state["done_stages"] = json.loads(json.dumps(previous.in_folder))  # plain data
        if main:
            save_epoch(out_dir, row, state)
            if keep_best:  # best-on-validation's model, for `ltbench eval` or a look later
                save_best_val(out_dir, state)
        distributed.barrier()  # every rank's hooks see the epoch's checkpoint on disk
        if hooks is not None:
            hooks.on_epoch_end(row["epoch"], row, out_dir / CHECKPOINT_FILE)
        if bar is not None:
            bar.update(1)
            error = row.get("test_top1_error", math.nan)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", err=f"{error:.1f}")
    if bar is not None:
        bar.close()


def stage_result(
    run: StageRun,
    previous: Previous | None,
    start: int,
    history: list[dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """The stage's record, from the final state (so a relaunch gives the same file): the run's
    result.json for a run of one stage; for a later stage, its entry in `stages` (`run_record`
    makes the run's)."""
    cfg, stage = run.cfg, run.stage
    val = run.assess(run.loaders.val) if run.loaders.val is not None else None
    result = final_result(
        cfg,
        run.bundle,
        test=run.assess(run.loaders.test),
        val=val,
        history=history,
        start=start,
        seconds=seconds,
        device=run.device,
        amp=run.amp,
        channels_last=run.channels_last,
    )
    result["env"]["workers"] = str(distributed.ranks().world)
    add_precision(result, run.amp)
    if previous is not None:  # a cached stage 1 may have run at another precision (amp is
        # a runtime setting)
        result1 = previous.results[previous.stages[0].name]
        first = result1.get("precision") or precision_of(result1)
        if first != result["precision"]:
            number = len(previous.stages) + 1
            result["precision"] = f"{first} (stage 1), {result['precision']} (stage {number})"
    if run.meta_set is not None:
        result["meta_set"] = meta_set_record(
            run.bundle, run.meta_set, stage.meta_per_class, run.meta_source
        )
        result["fingerprints"]["meta"] = data_fingerprints(run.bundle, run.meta_set)["meta"]
    earlier = previous.stages if previous is not None else []
    result["stage_plan"] = [s.describe() for s in earlier] + [stage.describe()]
    if previous is not None:
        result["epochs"] = stage.epochs
    return result


def run_record(result: dict[str, Any], previous: Previous | None, stage: Stage) -> dict[str, Any]:
    """The run's record from its last stage's `result`: for a run of several stages, with the
    epochs and wall time of all, the first stage's cache folder and every stage's record."""
    if previous is None:
        return result
    return {
        **result,
        "epochs": previous.epochs + stage.epochs,
        "wall_seconds": sum(r.get("wall_seconds", 0.0) for r in previous.results.values())
        + result["wall_seconds"],
        "stage1_dir": str(previous.first_dir),
        "stages": {**previous.results, stage.name: result},
    }


def precision_of(result: dict[str, Any]) -> str:
    """The precision of an older result without `precision` (from its environment)."""
    from ltbench.engine.identity import precision_name

    return precision_name(result.get("env", {}).get("amp_bf16") == "True")


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
