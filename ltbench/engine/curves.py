"""Training curves where people look for them: TensorBoard event files beside metrics.jsonl.

Every number of a metrics.jsonl line becomes a scalar at step = the line's epoch, tagged
`<section>/<key>` with the line's own key (`train/train_loss`, `schedule/lr`,
`test/test_top1_error`, `test/test_many_acc`, `val/val_balanced_error`, `time/epoch_seconds`,
`time/epoch_cpu_seconds`, `time/threads`);
a group without a class (None) and the lists are left out. `tensorboard --logdir DIR` on a run's
folder or a suite's (one run per trial folder) shows them.

The writer is tensorboardX's (a dependency of Ray Tune: no TensorFlow, no `tensorboard`
package needed to write). One writer per run folder and process, opened at the run's first
epoch line with `purge_step` at that epoch, so that a resumed run's redone epochs replace the
ones an earlier process wrote; `close_curves` closes it when the run finishes. Curves are a
convenience beside metrics.jsonl (the record): if writing fails, the run goes on and one warning
says why.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from pathlib import Path
from typing import Any

from ltbench.runfiles import TENSORBOARD_SUFFIX

SECTIONS = (("train_", "train"), ("test_", "test"), ("val_", "val"))
OTHER_SECTIONS = {
    "lr": "schedule",
    "epoch_seconds": "time",
    "epoch_cpu_seconds": "time",
    "threads": "time",
}

_writers: dict[Path, Any] = {}
_failed = False  # warned once: no more attempts in this process
_serial = itertools.count()


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key: `<section>/<key>`."""
    for prefix, section in SECTIONS:
        if key.startswith(prefix):
            return f"{section}/{key}"
    return f"{OTHER_SECTIONS.get(key, 'other')}/{key}"


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The scalars of one metrics.jsonl line by tag (numbers only; no epoch, no None)."""
    out = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[scalar_tag(key)] = float(value)
    return out


def _writer(out_dir: Path, epoch: int):
    key = out_dir.resolve()
    if key not in _writers:
        from tensorboardX import SummaryWriter

        suffix = f".{os.getpid()}-{next(_serial)}{TENSORBOARD_SUFFIX}"
        _writers[key] = SummaryWriter(str(out_dir), purge_step=epoch, filename_suffix=suffix)
    return _writers[key]


def log_epoch(out_dir: Path, row: dict[str, Any]) -> None:
    """Write one metrics.jsonl line's numbers as TensorBoard scalars at step `row["epoch"]`."""
    global _failed
    if _failed:
        return
    try:
        epoch = int(row["epoch"])
        writer = _writer(Path(out_dir), epoch)
        for tag, value in epoch_scalars(row).items():
            writer.add_scalar(tag, value, global_step=epoch)
        writer.flush()
    except Exception as exc:  # noqa: BLE001 (the record is metrics.jsonl: never stop a run)
        _failed = True
        warnings.warn(
            f"ltbench: TensorBoard curves are not written ({type(exc).__name__}: {exc}); "
            "metrics.jsonl has every number",
            RuntimeWarning,
            stacklevel=2,
        )


def close_curves(out_dir: Path) -> None:
    """Close the run folder's writer (its last events on disk); nothing if there is none."""
    writer = _writers.pop(Path(out_dir).resolve(), None)
    if writer is None:
        return
    try:
        writer.close()
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"ltbench: closing TensorBoard curves failed ({exc})", stacklevel=2)
