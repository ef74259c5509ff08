"""The record of a run, the one owner of what a run writes: the epoch row of metrics.jsonl, the
history kept on resume, the checkpoint's keys, when an epoch is evaluated, and the final
result.json. The solo loop (`ltbench.engine.loop`) and the pack (`ltbench.engine.pack`) both
write through these functions, so a member of a pack writes exactly the files of a run alone.

A run's files and their names: `ltbench.runfiles`. The fields of result.json: docs/DESIGN.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ltbench.data.draws import META_FROM_DRAW
from ltbench.engine.checkpoint import append_row, environment, save_checkpoint, write_json
from ltbench.engine.config import TrainConfig
from ltbench.engine.curves import close_curves, log_epoch
from ltbench.engine.identity import identity, precision_name
from ltbench.engine.metrics import validation_metrics
from ltbench.engine.protocols import BEST_ON_TEST, epoch_protocols
from ltbench.runfiles import BEST_VAL_CHECKPOINT_FILE, CHECKPOINT_FILE, METRICS_FILE, RESULT_FILE

# ----------------------------------------------------------------------------------------------
# Epochs


def epoch_row(epoch: int, stage: str | None, lr: float, train: dict[str, float]) -> dict[str, Any]:
    """A metrics.jsonl line before evaluation: `epoch` (1-based, of the whole run), `stage`
    (only in a run of several stages), the stage's reported learning rate, `train_loss`,
    `train_acc`."""
    row: dict[str, Any] = {"epoch": epoch}
    if stage is not None:
        row["stage"] = stage
    row["lr"] = lr
    row.update(train)
    return row


# The keys of an epoch's line that differ between two otherwise identical runs
CLOCK_KEYS = ("epoch_seconds", "epoch_cpu_seconds")


class EpochClock:
    """The time an epoch took, started when the epoch starts and written into its line by
    `stamp`: `epoch_seconds` (wall clock, evaluation included), `epoch_cpu_seconds` (the CPU
    time of this process over the same span, all its threads together; data-loading worker
    processes and the GPU's own time are not in it) and `threads` (torch's intra-op threads).
    `read` gives the three; a pack reads them once for all its members' lines.

    The pair tells a slow epoch's cause from the record alone: alone on a CPU machine an epoch's
    CPU time is close to `threads` times its wall time; an epoch that spans a pause (SIGSTOP, a
    suspended laptop) or ran beside other work has a wall time far above its CPU time. `threads`
    per line shows a run resumed with another thread count."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def read(self) -> dict[str, float | int]:
        """The epoch's times, from the clock's start to now, by their metrics.jsonl keys."""
        return {
            "epoch_seconds": time.perf_counter() - self.wall,
            "epoch_cpu_seconds": time.process_time() - self.cpu,
            "threads": torch.get_num_threads(),
        }


# The per-group numbers of an evaluated epoch's line, each as `test_<name>` (None: an empty group)
EPOCH_GROUP_METRICS = (
    "many_acc",
    "medium_acc",
    "few_acc",
    "head_error",
    "mid_error",
    "tail_error",
    "worst_class_error",
)


def add_test(row: dict[str, Any], record: dict[str, Any]) -> None:
    """The test error of an evaluated epoch and its per-group numbers."""
    row["test_top1_error"] = record["top1_error"]
    for name in EPOCH_GROUP_METRICS:
        row[f"test_{name}"] = record.get(name)


def add_validation(row: dict[str, Any], record: dict[str, Any]) -> None:
    """The validation metrics of an epoch (the split's own properties go to result.json)."""
    row.update(validation_metrics(record["confusion_matrix"]))
    del row["val_classes_without_images"]


def kept_history(
    rows: list[dict[str, Any]], stage: str | None, last_epoch: int
) -> list[dict[str, Any]]:
    """The lines of metrics.jsonl a resumed run keeps: those of its `stage` (None: a run of one
    stage, whose lines have no `stage`) up to `last_epoch`, the checkpoint's epoch of the whole
    run; the lines after it are redone."""
    return [r for r in rows if r.get("stage", stage) == stage and r["epoch"] <= last_epoch]


def checkpoint_state(
    cfg: TrainConfig,
    *,
    epoch: int,
    stage: str,
    stage_epoch: int,
    model: dict[str, Any],
    optimizer: dict[str, Any],
) -> dict[str, Any]:
    """checkpoint.pt's content (`ltbench.runfiles.CHECKPOINT_KEYS`; `format` is added on save)."""
    return {
        "config": cfg.to_dict(),
        "epoch": epoch,
        "stage": stage,
        "stage_epoch": stage_epoch,
        "model": model,
        "optimizer": optimizer,
    }


def stage_epochs_done(state: dict[str, Any]) -> int:
    """The finished epochs of the checkpoint's stage (older checkpoints: `stage2_epoch`, or
    `epoch` for a run of one stage)."""
    return int(state.get("stage_epoch", state.get("stage2_epoch", state["epoch"])))


def save_epoch(out_dir: Path, row: dict[str, Any], state: dict[str, Any]) -> None:
    """The line first: a crash between the two redoes this epoch from the last checkpoint, and
    the resumed run drops the line of the epoch it redoes."""
    append_row(out_dir / METRICS_FILE, row)
    log_epoch(out_dir, row)  # the same numbers as TensorBoard scalars (ltbench.engine.curves)
    save_checkpoint(out_dir / CHECKPOINT_FILE, state)


def save_best_val(out_dir: Path, state: dict[str, Any]) -> None:
    """The best-on-validation epoch's state beside the last one (`keep_best_val`)."""
    save_checkpoint(out_dir / BEST_VAL_CHECKPOINT_FILE, state)


# ----------------------------------------------------------------------------------------------
# The final record


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
        # the imbalance of the images trained on (rho is what the run asked the draw for: 1
        # for data used as it is, whatever its own imbalance)
        "class_count_ratio": _count_ratio(bundle.cls_num_list),
        "fingerprints": data_fingerprints(bundle),
        "draw_file": cfg.draw,
        "worst_class_name": class_name(bundle, final.get("worst_class")),
    }


def _count_ratio(counts) -> float | None:
    """max / min of the training counts, rounded to 4 places (None with an empty class)."""
    return round(max(counts) / min(counts), 4) if counts and min(counts) > 0 else None


def data_fingerprints(bundle, meta_set=None) -> dict[str, str | None]:
    """The SHA-256 fingerprints (`ltbench.data.draws.fingerprint`) of the images trained on,
    of the validation split and of the meta set; None where there is no such split."""
    from ltbench.data.draws import fingerprint, subset_ids

    return {
        "train": fingerprint(subset_ids(bundle.train)),
        "val": fingerprint(subset_ids(bundle.val)),
        "meta": fingerprint(subset_ids(meta_set)),
    }


def class_name(bundle, index: int | None) -> str | None:
    """The name of class `index` of the bundle (None for None)."""
    return None if index is None else str(bundle.class_names[index])


def final_result(
    cfg: TrainConfig,
    bundle,
    *,
    test: dict[str, Any],
    val: dict[str, Any] | None,
    history: list[dict[str, Any]],
    start: int,
    seconds: float,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> dict[str, Any]:
    """result.json of a stage that resumed after `start` epochs and trained for `seconds`:
    the record, the validation metrics and split (with `val`), the wall time (the epochs of
    earlier processes included), the environment and the precision."""
    result = build_result(cfg, bundle, test, history)
    if val is not None:
        result.update(validation_metrics(val["confusion_matrix"]))
        result.update(validation_split_record(bundle))
    result["wall_seconds"] = seconds + sum(r.get("epoch_seconds", 0.0) for r in history[:start])
    result["env"] = environment(device, amp=amp, channels_last=channels_last)
    return result


def add_precision(result: dict[str, Any], amp: bool) -> None:
    """`precision`: the numbers' type of the run."""
    result["precision"] = precision_name(amp)


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


# Where a meta set comes from (result.json's `meta_set.source`; `step.hold_out_meta` tries them
# in this order) and how each draws it.
META_FROM_EXTRA = "extra images outside the long-tailed draw"
META_FROM_VAL_LIST = "the validation list"  # followed by the list's file
META_FROM_TRAIN = "held out of the long-tailed training split"
META_DRAWS = {
    META_FROM_EXTRA: "per class per_class images at random from the training images the "
    "long-tailed draw left out, as Jamal et al.'s code (ltbench.data.longtail.draw_outside); a "
    "class the draw used up gives them from its drawn images (`from_the_draw`), every other "
    "class trains on the subset every other method trains on",
    META_FROM_VAL_LIST: "per class min(per_class, n_j // 2) images at random out of the "
    "dataset's validation list, which keeps the rest (ltbench.data.longtail.split_meta)",
    META_FROM_TRAIN: "held out of the training split after the validation hold-out, per class "
    "min(per_class, n_j // 2) images at random (ltbench.data.longtail.split_meta)",
    META_FROM_DRAW: "the images the draw file lists, in its order (ltbench.data.draws)",
}


def meta_set_record(bundle, meta_set, per_class: int, source: str) -> dict[str, Any]:
    """What result.json says about a stage's meta set (`Stage.meta_per_class`): its size per
    class, where it came from (`source`, from `step.hold_out_meta`) and how it was drawn."""
    from ltbench.data.longtail import class_counts

    how = next(text for key, text in META_DRAWS.items() if source.startswith(key))
    return {
        "per_class": per_class,
        "class_counts": class_counts(meta_set.labels, bundle.num_classes),
        "size": len(meta_set),
        "source": source,
        "from_the_draw": list(bundle.extra_from_draw) if source == META_FROM_EXTRA else None,
        "drawn": f"{how}; never trained on; disjoint from validation and test",
    }


def write_result(out_dir: Path, result: dict[str, Any]) -> None:
    """result.json, atomically: from then on the run is finished (its curves are closed)."""
    close_curves(out_dir)
    write_json(out_dir / RESULT_FILE, result)
