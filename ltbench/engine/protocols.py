"""Which epoch a run's number comes from: the three epoch protocols, named for what they are.

A run trains for its epochs and reports the model it ends with. Published long-tail numbers are
often taken another way, so a run records three numbers, each with its epoch:

- `final`: the model at the last epoch. The default, and what every table shows. Nothing was
  chosen, so nothing leaked.
- `best-on-validation`: the epoch with the lowest balanced validation error (the mean of the
  per-class errors on the split held out of the training data, `val_balanced_error`), evaluated
  on the test set. It needs a validation split (`--val-fraction`); the test labels play no part
  in choosing it. Ties go to the earlier epoch.
- `best-on-test`: the epoch with the lowest test error among those evaluated. This is what the
  public scripts of LDAM-DRW and KPS print ("Best Prec@1", the test set evaluated every epoch).
  It chooses on the test set, so it is optimistic: a report shows it only beside published
  numbers, never to rank methods, and nothing in ltbench selects with it.

When the test set is evaluated (`due_for_test`): every `eval_every` epochs, at the last epoch of a
stage, and at every epoch whose balanced validation error is a new minimum of its stage. The
last rule makes `best-on-validation` exact over every epoch, not only over the evaluated ones;
evaluation changes no weight, so the cadence never changes the numbers a run trains to. The
record names the epochs evaluated (`evaluated_epochs`).

Only the rows of the run's last stage are candidates: in a two-stage run the stage-1 epochs are
another model (its classifier is retrained afterwards).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ltbench.runfiles import BEST_VAL_CHECKPOINT_FILE

FINAL = "final"
BEST_ON_VALIDATION = "best-on-validation"
BEST_ON_TEST = "best-on-test"
PROTOCOLS = (FINAL, BEST_ON_VALIDATION, BEST_ON_TEST)

VAL_METRIC = "val_balanced_error"
TEST_METRIC = "test_top1_error"
BEST_VAL_CHECKPOINT = BEST_VAL_CHECKPOINT_FILE  # kept with `keep_best_val`

NO_VALIDATION = "no validation split (--val-fraction 0)"
ON_TEST_USE = "chosen on the test set: for comparison with published numbers only, never to rank"


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def stage_rows(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows of the last stage (all rows of a one-stage run, whose rows name no stage)."""
    if not history:
        return []
    last = history[-1].get("stage")
    return [r for r in history if r.get("stage") == last]


def new_validation_minimum(row: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether `row`'s balanced validation error is below every earlier one of its stage."""
    value = _number(row, VAL_METRIC)
    if value is None:
        return False
    stage = row.get("stage")
    earlier = [_number(r, VAL_METRIC) for r in history if r.get("stage") == stage]
    earlier = [v for v in earlier if v is not None]
    return not earlier or value < min(earlier)


def due_for_test(
    epoch: int, stage_epochs: int, eval_every: int, row: Mapping[str, Any], history
) -> bool:
    """Whether the test set is evaluated after 1-based `epoch` of a stage of `stage_epochs`:
    every `eval_every` epochs, the stage's last epoch, and each new validation minimum.

    `row` is the epoch's row (with its validation metrics, if any); `history` the rows before
    it."""
    return epoch == stage_epochs or epoch % eval_every == 0 or new_validation_minimum(row, history)


def _pick(rows, key: str) -> Mapping[str, Any] | None:
    scored = [(v, i) for i, r in enumerate(rows) if (v := _number(r, key)) is not None]
    if not scored:
        return None
    return rows[min(scored)[1]]


def epoch_protocols(
    history: Sequence[Mapping[str, Any]], final_test_error: float
) -> dict[str, Any]:
    """The result.json fields of the three protocols from the epoch rows of a finished run.

    `final_test_error` is the final model's test error (the `top1_error` of result.json).
    Returns `epoch_protocols` ({protocol: {epoch, test_top1_error, ...}}; best-on-validation is
    `{"epoch": None, "reason": ...}` without a validation split) and `evaluated_epochs`
    ({"test": [...], "validation": [...]}, whole-run epoch numbers).
    """
    rows = stage_rows(history)
    tested = [r for r in rows if _number(r, TEST_METRIC) is not None]
    final_epoch = rows[-1]["epoch"] if rows else None
    out: dict[str, Any] = {FINAL: {"epoch": final_epoch, TEST_METRIC: final_test_error}}

    candidates = [r for r in tested if _number(r, VAL_METRIC) is not None]
    best_val = _pick(candidates, VAL_METRIC)
    if best_val is None:
        has_val = any(_number(r, VAL_METRIC) is not None for r in rows)
        reason = "no epoch evaluated on both splits" if has_val else NO_VALIDATION
        out[BEST_ON_VALIDATION] = {"epoch": None, "reason": reason}
    else:
        out[BEST_ON_VALIDATION] = {
            "epoch": best_val["epoch"],
            TEST_METRIC: best_val[TEST_METRIC],
            VAL_METRIC: best_val[VAL_METRIC],
        }
    best_test = _pick(tested, TEST_METRIC)
    out[BEST_ON_TEST] = (
        {"epoch": best_test["epoch"], TEST_METRIC: best_test[TEST_METRIC], "use": ON_TEST_USE}
        if best_test is not None
        else {"epoch": None, "reason": "no epoch evaluated on the test set"}
    )
    return {
        "epoch_protocols": out,
        "evaluated_epochs": {
            "test": [r["epoch"] for r in tested],
            "validation": [r["epoch"] for r in rows if _number(r, VAL_METRIC) is not None],
        },
    }
