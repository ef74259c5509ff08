"""Packed runs: up to K runs that share their data and schedule, trained as one fused network.

A small network (ResNet-32: 0.46M parameters) leaves a GPU launch-bound; K of them side by side
in one network do K runs' work per kernel launch (HFTA, Wang et al., MLSys 2021). The fused
network is `ltbench.engine.fuse` (`grouped` convolutions on CUDA; on CPU, where those are
slower, `serial`: the members' networks in turn); the step is `ltbench.engine.pack_step`: one
summed loss, one backward, one SGD update, every member with its own seed, data order,
augmentation and mixup draws, loss plugin and parameters and GA / DRW schedule.

Each member's initial weights are its solo run's (built with its seed, then copied in), and
its folder gets exactly the files of a solo run (`ltbench.engine.loop`): config.yaml,
metrics.jsonl, a checkpoint.pt in the solo layout (so a member can be resumed alone, and a
pack is resumed from its members' checkpoints) and result.json, with `pack` added (its size
and its members' folders). A member whose loss goes NaN or infinite fails with the solo run's
error at the end of that epoch; its weights are zeroed and it leaves the summed loss, and the
others go on. `epoch_seconds`, `epoch_cpu_seconds` and `wall_seconds` of a member are the
pack's (the time it waited), not a share of it.

What may differ between members: seed, loss and its parameters, mixup alpha (and the settings
that leave the numbers alone, e.g. `num_workers`). Everything else must be equal
(`pack_mismatch`). A method with its own stages, network or step is not packed
(`solo_reason`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltbench.engine import record
from ltbench.engine.checkpoint import load_checkpoint, prepare_out_dir, read_rows, write_rows
from ltbench.engine.config import TrainConfig, runtime_keys, save_yaml
from ltbench.engine.fuse import check_fusion, silence
from ltbench.engine.locks import check_out_dir, hold
from ltbench.engine.metrics import Evaluator
from ltbench.engine.pack_step import (
    Member,
    build_pack,
    member_batches,
    pack_epoch_steps,
    start_epoch,
)
from ltbench.engine.protocols import due_for_test, new_validation_minimum
from ltbench.errors import LtbenchError, os_error_message
from ltbench.runfiles import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, RESULT_FILE
from ltbench.sdk.stages import Stage

# What the members of a pack may differ in (all else, but the runtime settings, must be equal).
MEMBER_KEYS = frozenset({"seed", "loss", "loss_params", "mixup_alpha", "stage2"})


def solo_reason(cfg: TrainConfig, stages: Sequence[Stage]) -> str | None:
    """Why the resolved run `cfg` with its planned `stages` cannot be packed; None if it can."""
    if len(stages) != 1:
        return f"{cfg.loss} has {len(stages)} stages"
    stage = stages[0]
    if stage.model is not None or stage.step is not None or stage.extra_samplers:
        return f"{cfg.loss} brings its own network, step or samplers"
    if stage.sampler != "instance" or stage.trainable != "all" or stage.class_scale:
        return f"{cfg.loss} trains with its own sampler or weights"
    if stage.meta_per_class:  # the pack's data would keep the meta set's images
        return f"{cfg.loss} holds out a meta set"
    return None


def pack_signature(cfg: TrainConfig) -> tuple:
    """The settings the members of one pack share (a resolved configuration's, as a key)."""
    data, skip = cfg.to_dict(), runtime_keys(cfg.dataset)
    return tuple(
        (k, repr(v)) for k, v in data.items() if k not in MEMBER_KEYS and k not in skip
    ) + tuple((k, repr(data[k])) for k in ("device", "amp", "compile", "cuda_graphs"))


def pack_mismatch(first: TrainConfig, other: TrainConfig) -> str | None:
    """The first shared setting two resolved runs disagree on, as text; None if they may pack."""
    a, b = dict(pack_signature(first)), dict(pack_signature(other))
    for key in a:
        if a[key] != b.get(key):
            return f"{key} is {a[key]} in one and {b.get(key)} in the other"
    return None


def train_pack(
    cfgs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path],
    hooks: Sequence[Any] | None = None,
    *,
    resume: bool = True,
    progress: bool | None = None,
    fusion: str = "auto",
) -> list[dict[str, Any] | LtbenchError]:
    """Train the runs `cfgs` into `out_dirs` as one pack; each member's result (also in its
    result.json) or the `LtbenchError` it failed with, in order.

    `hooks[k]` (or None) hears member k's epochs like `train`'s hooks. A member that has its
    result.json already is not trained again (its stored result is returned); with `resume`
    the others continue from their own checkpoint.pt, members at different epochs in turn.
    Every input is checked before anything is written; the pack holds every member's lock.
    `fusion`: how the networks are fused (`check_fusion`; recorded in result.json's `pack`).
    """
    import json

    from ltbench.engine.stages import check_run

    if not cfgs or len(cfgs) != len(out_dirs):
        raise LtbenchError("a pack needs one output folder per run, and at least one run")
    members = []
    for cfg, out in zip(cfgs, out_dirs, strict=True):
        cfg, stages = check_run(cfg)
        reason = solo_reason(cfg, stages)
        if reason is not None:
            raise LtbenchError(f"cannot pack {cfg.loss!r}: {reason}; run it alone")
        if members:
            mismatch = pack_mismatch(members[0].cfg, cfg)
            if mismatch:
                raise LtbenchError(f"these runs cannot share a pack: {mismatch}")
        members.append(Member(cfg, stages[0], check_out_dir(out)))
    from ltbench.engine.step import pick_device

    check_fusion(fusion, pick_device(members[0].cfg.device))
    if len({m.out_dir for m in members}) != len(members):
        raise LtbenchError("two runs of a pack have the same output folder")
    hooks = list(hooks) if hooks is not None else [None] * len(members)
    try:
        with ExitStack() as stack:
            for m in members:
                stack.enter_context(hold(m.out_dir))
            todo = []
            for m in members:
                done = m.out_dir / RESULT_FILE
                if done.exists() and resume:
                    m.result = json.loads(done.read_text())
                    continue
                prepare_out_dir(m.out_dir, resume=resume, overwrite=False)
                ckpt = m.out_dir / CHECKPOINT_FILE
                if resume and ckpt.exists():
                    m.state = load_checkpoint(ckpt, m.cfg)
                    m.start = record.stage_epochs_done(m.state)
                todo.append(m)
            for start in sorted({m.start for m in todo}):
                group = [m for m in todo if m.start == start]
                _train_group(group, [hooks[members.index(m)] for m in group], progress, fusion)
    except OSError as exc:
        if exc.filename is None:
            raise
        raise LtbenchError(os_error_message(exc, members[0].out_dir)) from exc
    return [m.result if m.error is None else m.error for m in members]


def _load_data(members: list[Member], device: torch.device) -> None:
    """Each member's bundle and loaders; one bundle for members whose data is the same (the
    validation hold-out is drawn with the run's seed, so only then does it differ)."""
    from ltbench.engine.step import load_run_data, make_loaders

    bundles: dict[Any, Any] = {}
    for m in members:
        key = m.cfg.seed if m.cfg.val_fraction > 0 else None
        if key not in bundles:
            bundles[key] = load_run_data(m.cfg)
        m.bundle = bundles[key]
        counts = list(m.bundle.cls_num_list)
        if min(counts) < 1:
            empty = counts.index(min(counts))
            raise LtbenchError(
                f"the long-tailed training set leaves class {empty} "
                f"({m.bundle.class_names[empty]}) without images (imb_factor="
                f"{m.cfg.imb_factor:g}, n_max={m.cfg.n_max}); use a larger n_max or imb_factor"
            )
        m.loaders = make_loaders(
            m.bundle, m.cfg, device, batch_size=m.stage.batch_size, sampling=m.stage.sampler
        )


def _train_group(
    members: list[Member], hooks: list, progress: bool | None, fusion: str = "auto"
) -> None:
    """Train members that are all at the same epoch as one fused network, to the end: build,
    resume each member's lines, train the epochs left, write the living members' results."""
    start_time = time.perf_counter()
    group = _Group.build(members, hooks, fusion)
    for m in members:  # resume: each member's metrics lines up to its checkpoint
        m.history = record.kept_history(read_rows(m.out_dir / METRICS_FILE), None, group.start)
        write_rows(m.out_dir / METRICS_FILE, m.history)
        save_yaml(m.cfg, m.out_dir / CONFIG_FILE)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=group.stage.epochs, initial=group.start, desc=f"pack of {len(members)}",
            unit="epoch",
        )  # fmt: skip
    for epoch in range(group.start, group.stage.epochs):
        if not group.train_epoch(epoch):
            break
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if group.alive:
        group.finish(start_time)


@dataclass
class _Group:
    """Members at the same epoch, fused into one network (`build_pack`), and the living ones."""

    members: list[Member]
    hooks: list
    fusion: str
    device: torch.device
    amp: bool
    channels_last: bool
    model: Any
    layout: Any
    step_model: Any
    optimizer: Any
    joined: Any
    alive: list[Member]

    @classmethod
    def build(cls, members: list[Member], hooks: list, fusion: str) -> _Group:
        from ltbench.engine.step import pick_device, step_options

        device = pick_device(members[0].cfg.device)
        amp, channels_last = step_options(members[0].cfg, device)
        _load_data(members, device)
        num_classes = members[0].bundle.num_classes
        model, layout, step_model, optimizer, joined = build_pack(
            members, num_classes, device, channels_last, fusion
        )
        return cls(
            members, hooks, fusion, device, amp, channels_last, model, layout, step_model,
            optimizer, joined, list(members),
        )  # fmt: skip

    @property
    def cfg(self) -> TrainConfig:
        return self.members[0].cfg

    @property
    def stage(self) -> Stage:
        return self.members[0].stage

    @property
    def start(self) -> int:
        return self.members[0].start

    @property
    def has_val(self) -> bool:
        return self.members[0].loaders.val is not None

    def fused(self, split: str, epoch: int):
        return member_batches([getattr(m.loaders, split) for m in self.members], epoch)

    @torch.no_grad()
    def assess(self, split: str) -> dict[int, dict[str, Any]]:
        """The metrics of each living member on `split`, by member index."""
        self.model.eval()
        num_classes = self.members[0].bundle.num_classes
        evaluators = [Evaluator(num_classes, self.device) for _ in self.members]
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()
        )
        for images, labels in self.fused(split, 0):
            with autocast:
                scores = self.step_model(self.joined(images))
            scores = scores.float()
            for k, m in enumerate(self.members):
                if m in self.alive:
                    to_logits = getattr(m.plugin, "eval_logits", None)
                    s = scores[:, k]
                    evaluators[k].update(to_logits(s) if to_logits else s, labels[k])
        return {
            k: evaluators[k].compute(list(m.bundle.cls_num_list), m.cfg.many_shot, m.cfg.few_shot)
            for k, m in enumerate(self.members)
            if m in self.alive
        }

    def train_epoch(self, epoch: int) -> bool:
        """Train 0-based `epoch`; write the living members' lines and checkpoints. False when
        no member is left alive."""
        from ltbench.engine.schedule import stage_learning_rate
        from ltbench.engine.step import nonfinite_loss

        clock = record.EpochClock()
        lr = stage_learning_rate(self.cfg, self.stage, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        start_epoch(self.members, epoch, self.device)
        stats = pack_epoch_steps(
            self.step_model, self.members, self.alive, self.optimizer,
            self.fused("train", epoch), self.joined, self.amp, self.device,
        )  # fmt: skip
        bad_steps = stats.first_bad_step.tolist()
        seen = max(int(stats.seen), 1)
        loss_sum, correct = stats.loss_sum.tolist(), stats.correct.tolist()
        for k, m in enumerate(self.members):
            if m in self.alive and bad_steps[k] >= 0:
                m.error = nonfinite_loss(epoch + 1, bad_steps[k] + 1, lr)
                self.alive.remove(m)
                silence(self.model, self.optimizer, self.layout, k)
        if not self.alive:
            return False
        rows = {}
        for k, m in enumerate(self.members):
            if m in self.alive:
                train = {"train_loss": loss_sum[k] / seen, "train_acc": 100.0 * correct[k] / seen}
                rows[k] = record.epoch_row(epoch + 1, None, lr * self.stage.lr_factor, train)
        if self.has_val:
            for k, metrics in self.assess("val").items():
                record.add_validation(rows[k], metrics)
        due = {  # each member's own cadence, as if it ran alone
            k
            for k in rows
            if due_for_test(
                epoch + 1, self.stage.epochs, self.cfg.eval_every, rows[k], self.members[k].history
            )
        }
        if due:  # the fused network is evaluated for every member at once
            for k, metrics in self.assess("test").items():
                if k in due:
                    record.add_test(rows[k], metrics)
        self.save(epoch, rows, clock)
        return True

    def save(self, epoch: int, rows: dict[int, dict[str, Any]], clock: record.EpochClock) -> None:
        """Each living member's line and checkpoint of `epoch`, then its hooks."""
        packed_state = self.model.state_dict()
        optimizer_state = self.optimizer.state_dict()
        times = clock.read()  # the pack's, the same in every member's line
        for k, row in rows.items():
            m = self.members[k]
            row.update(times)
            keep_best = m.cfg.keep_best_val and new_validation_minimum(row, m.history)
            m.history.append(row)
            state = record.checkpoint_state(
                m.cfg,
                epoch=epoch + 1,
                stage=m.stage.name,
                stage_epoch=epoch + 1,
                model=self.layout.member_state(packed_state, k),
                optimizer=self.layout.member_optimizer(optimizer_state, k),
            )
            record.save_epoch(m.out_dir, row, state)
            if keep_best:
                record.save_best_val(m.out_dir, state)
            if self.hooks[k] is not None:
                self.hooks[k].on_epoch_end(row["epoch"], row, m.out_dir / CHECKPOINT_FILE)

    def finish(self, start_time: float) -> None:
        """The final metrics of the living members: their result.json (wall time counted from
        `start_time`, the group's start)."""
        finals = self.assess("test")
        vals = self.assess("val") if self.has_val else {}
        elapsed = time.perf_counter() - start_time
        for k, m in enumerate(self.members):
            if m not in self.alive:
                continue
            result = record.final_result(
                m.cfg,
                m.bundle,
                test=finals[k],
                val=vals.get(k),
                history=m.history,
                start=self.start,
                seconds=elapsed,
                device=self.device,
                amp=self.amp,
                channels_last=self.channels_last,
            )
            record.add_precision(result, self.amp)
            result["stage_plan"] = [m.stage.describe()]
            result["pack"] = {
                "size": len(self.members),
                "fusion": check_fusion(self.fusion, self.device),
                "members": [x.out_dir.name for x in self.members],
            }
            record.write_result(m.out_dir, result)
            m.result = result
