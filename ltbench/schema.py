"""The results-file contract of a suite output directory: file names, columns, statuses, readers.

The runner writes these files (`ltbench.runner.results`) and the reports read them (`reports`);
both take the names from here. Standard library only: importing this module never loads torch,
Ray or the engine. The layout (docs/DESIGN.md, "Suite output directory"):

    DIR/suite.yaml               the resolved suite (sweeps: `search.params` names the
                                 searched parameters, in order)
    DIR/trials.json              every planned trial: {key: TrialSpec}
    DIR/trials/<key>/            one `ltbench train` output directory per trial:
        result.json              the run finished  -> status "finished"
        metrics.jsonl            one JSON line per epoch
        error.txt                the run failed    -> status "failed", its text is the error
        trial.json               sweeps: the trial's spec, written by the trial itself
                                 otherwise: not run, interrupted or stopped early -> "missing"
    DIR/results.csv              RESULTS_COLUMNS, one row per trial (rule "raw": the trained
                                 model's decision), plus one per post-hoc rule the trial's
                                 result.json holds (`posthoc`, `ltbench eval`)
    DIR/per_class.csv            PER_CLASS_COLUMNS, one row per (trial, rule, class)
    DIR/sweep.csv                sweeps only: sweep_columns(params), one row per tried point
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# The names live in `ltbench.runfiles` (the engine writes a run's files too); re-exported here.
from ltbench.runfiles import (  # noqa: F401  (re-exported)
    CONFIG_FILE,
    ERROR_FILE,
    METRICS_FILE,
    PER_CLASS_FILE,
    RESULT_FILE,
    RESULTS_FILE,
    SUITE_FILE,
    SWEEP_FILE,
    TRIAL_SPEC_FILE,
    TRIALS_DIR,
    TRIALS_FILE,
)

# ----------------------------------------------------------------------------------------------
# Statuses

FINISHED = "finished"  # result.json exists
FAILED = "failed"  # error.txt exists
MISSING = "missing"  # neither: not run, interrupted, or stopped early
STOPPED = "stopped"  # sweep.csv only: a missing trial that the scheduler (ASHA) stopped early
STATUSES = (FINISHED, FAILED, MISSING)  # the statuses of results.csv
SWEEP_STATUSES = (FINISHED, FAILED, STOPPED, MISSING)

# ----------------------------------------------------------------------------------------------
# Columns

METRIC_COLUMNS = [
    "top1_error",
    "many_acc",
    "medium_acc",
    "few_acc",
    "head_error",
    "mid_error",
    "tail_error",
    "ece",
    "worst_class_error",  # the largest per-class test error (older files lack it)
]
# The groups of a row: classes in each many / medium / few-shot group (0: an empty group, whose
# accuracy is empty) and the thresholds that made them (ltbench.engine.metrics)
GROUP_COLUMNS = ["many_classes", "medium_classes", "few_classes", "many_shot", "few_shot"]
RESULTS_COLUMNS = [
    "trial",
    "method",
    "params",  # JSON of the loss parameters (and mixup_alpha when mixup is on)
    "dataset",
    "imb_factor",
    "rho",
    "seed",
    "subset_seed",
    # the first 12 hex digits of the SHA-256 of the images trained on (result.json
    # `fingerprints`, ltbench.data.draws): rows with different ones trained on different images
    "train_fingerprint",
    # largest / smallest training class of the images trained on (result.json; rho is what the
    # draw asked for: 1 for data used as it is, whatever its own imbalance)
    "class_count_ratio",
    *METRIC_COLUMNS,
    "worst_class",  # the name of the class with the largest test error
    *GROUP_COLUMNS,
    "val_balanced_error",  # NaN without a validation split
    "val_top1_error",
    # the epoch protocols other than the final epoch (ltbench.engine.protocols; raw rows only):
    "test_error_best_on_val",  # test error at the lowest balanced validation error's epoch
    "epoch_best_on_val",
    "test_error_best_on_test",  # chosen on the test set: beside published numbers only
    "epoch_best_on_test",
    "epochs",
    "wall_seconds",
    "status",
    "error",
    # what the row is (result.json; older files lack them: OPTIONAL_COLUMNS fills them in)
    "label",  # the method label from the whole configuration (result.json `method`)
    "setup",  # how the setup differs from the paper's recipe ("; "-joined), or SAME_SETUP
    "precision",  # "bf16-autocast" or "float32" (of this row's evaluation)
    "full_schedule",  # True when epochs and milestones are the dataset recipe's
    "rule",  # decision rule: "raw" (the trained model) or a post-hoc rule
]
# Columns a reader fills with NaN when an older results.csv lacks them.
PROTOCOL_COLUMNS = {  # column: (protocol, key) in result.json's `epoch_protocols`
    "test_error_best_on_val": ("best-on-validation", "test_top1_error"),
    "epoch_best_on_val": ("best-on-validation", "epoch"),
    "test_error_best_on_test": ("best-on-test", "test_top1_error"),
    "epoch_best_on_test": ("best-on-test", "epoch"),
}
OPTIONAL_RESULTS_COLUMNS = (
    "class_count_ratio",
    "val_balanced_error",
    "val_top1_error",
    *PROTOCOL_COLUMNS,
    "worst_class_error",
    *GROUP_COLUMNS,
)
PER_CLASS_COLUMNS = [
    "trial",
    "method",
    "dataset",
    "rho",
    "seed",
    "class",
    "class_name",
    "count",
    "accuracy",
    "rule",
]

# Columns added after the first results files were written, with the value an older file
# means: a reader fills in a missing column with it ("unknown": not recorded).
UNKNOWN = "unknown"
RAW_RULE = "raw"
SAME_SETUP = "none"  # `setup` of a run whose setup is the paper's recipe
OPTIONAL_COLUMNS = {
    "label": UNKNOWN,
    "setup": UNKNOWN,
    "precision": UNKNOWN,
    "full_schedule": UNKNOWN,
    "rule": RAW_RULE,
    "worst_class": UNKNOWN,
    "train_fingerprint": UNKNOWN,
}


def required_columns(columns: Iterable[str]) -> list[str]:
    """The columns of `columns` that every results file has (the others are optional)."""
    return [c for c in columns if c not in OPTIONAL_COLUMNS]


# The metric a sweep selects on (lower is better): the balanced validation error, the mean over
# classes of the per-class validation error, which estimates the balanced test error. Optuna,
# ASHA and the best point use it; the instance-weighted validation error (dominated by the head
# classes of the long-tailed validation split) and the test error are shown beside it, and the
# test error is never read to choose anything.
SEARCH_METRIC = "val_balanced_error"
VAL_TOP1_METRIC = "val_top1_error"
SWEEP_TEST_METRIC = "test_top1_error"
SWEEP_FIXED_COLUMNS = (
    "trial",
    SEARCH_METRIC,
    VAL_TOP1_METRIC,
    SWEEP_TEST_METRIC,
    "epochs",
    "status",
)
# The columns every sweep.csv has; older ones lack SEARCH_METRIC (a reader fills it with NaN).
SWEEP_REQUIRED_COLUMNS = ("trial", SWEEP_TEST_METRIC, "epochs", "status")


def sweep_columns(param_names: Iterable[str]) -> list[str]:
    """sweep.csv's columns: trial, the searched parameters in order, then the fixed ones."""
    params = [p for p in dict.fromkeys(param_names) if p not in SWEEP_FIXED_COLUMNS]
    return ["trial", *params, *SWEEP_FIXED_COLUMNS[1:]]


def sweep_params(suite: Mapping[str, Any] | None, columns: Iterable[str]) -> list[str]:
    """The searched parameters of a sweep directory, in order.

    From suite.yaml's `search.params` (the sweep command records them there); for a directory
    written before that, the columns of sweep.csv that are not fixed ones.
    """
    search = (suite or {}).get("search")
    recorded = search.get("params") if isinstance(search, Mapping) else None
    if isinstance(recorded, list) and recorded and all(isinstance(p, str) for p in recorded):
        return list(recorded)
    return [c for c in columns if c not in SWEEP_FIXED_COLUMNS]


def select_best(sweep, metric: str = SEARCH_METRIC):
    """The selected point of a sweep.csv frame: the finished row with the lowest `metric`.

    Ties go to the first such row (trial order). None when no finished point has the metric.
    Only `status` and `metric` are read, never a test column: the runner's "best" line and the
    report's marked point both come from here.
    """
    if metric not in sweep.columns:
        return None
    chosen = sweep[(sweep["status"] == FINISHED) & sweep[metric].notna()]
    if chosen.empty:
        return None
    return chosen.loc[chosen[metric].idxmin()]


# ----------------------------------------------------------------------------------------------
# Paths and readers


def trial_dir(out_dir: str | Path, key: str) -> Path:
    """DIR/trials/<key>."""
    return Path(out_dir) / TRIALS_DIR / key


def read_result(path: str | Path) -> dict[str, Any] | None:
    """A trial's result.json, or None if it is absent or unreadable (a half-written file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8 text
        return None
    return data if isinstance(data, dict) else None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl, skipping blank lines and a half-written last line."""
    rows = []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_error(path: str | Path) -> str | None:
    """An error.txt as one line ("failed (no message)" when empty); None if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    return " ".join(path.read_text().split()) or "failed (no message)"


def trial_state(out_dir: str | Path, key: str) -> tuple[str, dict[str, Any] | None, str]:
    """(status, result or None, error text) of one trial, from its directory alone."""
    tdir = trial_dir(out_dir, key)
    result = read_result(tdir / RESULT_FILE)
    if result is not None:
        return FINISHED, result, ""
    error = read_error(tdir / ERROR_FILE)
    if error is not None:
        return FAILED, None, error
    return MISSING, None, ""
