"""Collect a suite directory's trial results into results.csv, per_class.csv and sweep.csv.

The trial directories are the source of truth (layout in docs/DESIGN.md):

    DIR/trials.json              every planned trial: {key: TrialSpec}
    DIR/trials/<key>/result.json the run finished  -> status "finished"
    DIR/trials/<key>/error.txt   the run failed    -> status "failed", the file's text as error
    otherwise                    not run, interrupted or stopped early -> status "missing"

No Ray here: collecting works offline, after a crash, and on a copy of the directory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ltbench.engine.config import DATASET_DEFAULTS
from ltbench.errors import LtbenchError
from ltbench.runner.suite import TrialSpec, load_trials

RESULTS_COLUMNS = [
    "trial",
    "method",
    "params",
    "dataset",
    "imb_factor",
    "rho",
    "seed",
    "subset_seed",
    "top1_error",
    "many_acc",
    "medium_acc",
    "few_acc",
    "head_error",
    "mid_error",
    "tail_error",
    "ece",
    "epochs",
    "wall_seconds",
    "status",
    "error",
]
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
]
SWEEP_COLUMNS = [
    "trial",
    "m_max",
    "s_base",
    "val_top1_error",
    "test_top1_error",
    "epochs",
    "status",
]
METRIC_COLUMNS = [
    "top1_error",
    "many_acc",
    "medium_acc",
    "few_acc",
    "head_error",
    "mid_error",
    "tail_error",
    "ece",
]
ERROR_FILE = "error.txt"


def trial_dir(out_dir: Path, key: str) -> Path:
    """DIR/trials/<key>."""
    return Path(out_dir) / "trials" / key


def read_result(path: Path) -> dict[str, Any] | None:
    """A trial's result.json, or None if it is absent or unreadable (a half-written file)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl, skipping a half-written last line."""
    rows = []
    try:
        text = path.read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def trial_state(out_dir: Path, key: str) -> tuple[str, dict[str, Any] | None, str]:
    """(status, result or None, error text) of one trial, from its directory alone."""
    tdir = trial_dir(out_dir, key)
    result = read_result(tdir / "result.json")
    if result is not None:
        return "finished", result, ""
    err = tdir / ERROR_FILE
    if err.is_file():
        text = " ".join(err.read_text().split()) or "failed (no message)"
        return "failed", None, text
    return "missing", None, ""


def finished_keys(out_dir: Path, keys) -> set[str]:
    """The keys among `keys` whose trial has a readable result.json."""
    return {k for k in keys if read_result(trial_dir(out_dir, k) / "result.json") is not None}


def _params_json(spec: TrialSpec) -> str:
    params = dict(spec.params)
    if spec.mixup_alpha:
        params["mixup_alpha"] = spec.mixup_alpha
    return json.dumps(params, sort_keys=True)


def _planned_epochs(spec: TrialSpec) -> int | None:
    epochs = spec.config.get("epochs")
    if epochs is None and spec.dataset in DATASET_DEFAULTS:
        epochs = DATASET_DEFAULTS[spec.dataset].epochs
    return epochs


def collect(
    out_dir: str | Path, notes: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, per_class) frames of every trial planned in DIR/trials.json.

    `notes` gives the error text of trials that are missing for a known reason (for example
    stopped early by ASHA).
    """
    out_dir = Path(out_dir)
    specs = load_trials(out_dir)
    if not specs:
        raise LtbenchError(f"{out_dir} has no trials.json: not a suite output directory")
    notes = notes or {}
    rows, class_rows = [], []
    for key, spec in specs.items():
        status, result, error = trial_state(out_dir, key)
        row: dict[str, Any] = {
            "trial": key,
            "method": spec.method,
            "params": _params_json(spec),
            "dataset": spec.dataset,
            "imb_factor": 1.0 / spec.rho,
            "rho": spec.rho,
            "seed": spec.seed,
            "subset_seed": spec.subset_seed,
            **{c: math.nan for c in METRIC_COLUMNS},
            "epochs": _planned_epochs(spec),
            "wall_seconds": math.nan,
            "status": status,
            "error": error or notes.get(key, ""),
        }
        if result is not None:
            for c in METRIC_COLUMNS:
                value = result.get(c)
                row[c] = math.nan if value is None else value
            row["epochs"] = result.get("epochs", row["epochs"])
            row["wall_seconds"] = result.get("wall_seconds", math.nan)
            accs = result.get("per_class_accuracy") or []
            counts = result.get("class_counts") or [None] * len(accs)
            names = result.get("class_names") or [str(i) for i in range(len(accs))]
            for c, acc in enumerate(accs):
                class_rows.append(
                    {
                        "trial": key,
                        "method": spec.method,
                        "dataset": spec.dataset,
                        "rho": spec.rho,
                        "seed": spec.seed,
                        "class": c,
                        "class_name": names[c] if c < len(names) else str(c),
                        "count": counts[c] if c < len(counts) else None,
                        "accuracy": math.nan if acc is None else acc,
                    }
                )
        rows.append(row)
    results = pd.DataFrame(rows, columns=RESULTS_COLUMNS)
    per_class = pd.DataFrame(class_rows, columns=PER_CLASS_COLUMNS)
    return results, per_class


def write_results(
    out_dir: str | Path, notes: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect and write DIR/results.csv and DIR/per_class.csv; returns the frames."""
    out_dir = Path(out_dir)
    results, per_class = collect(out_dir, notes)
    _write_csv(results, out_dir / "results.csv")
    _write_csv(per_class, out_dir / "per_class.csv")
    return results, per_class


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def collect_sweep(
    out_dir: str | Path,
    space: tuple[str, ...] = ("m_max", "s_base"),
    stopped: set[str] | None = None,
) -> pd.DataFrame:
    """One row per tried point of a sweep: the searched values, validation and test error.

    `status` is finished, failed, stopped (early, by the scheduler; `stopped` names those
    trials) or missing. For a stopped trial the errors are those of its last evaluated epoch
    and `epochs` counts the epochs it trained. Searched parameters other than m_max and s_base
    get their own columns after the standard ones.
    """
    out_dir = Path(out_dir)
    stopped = stopped or set()
    rows = []
    for key, spec in load_trials(out_dir).items():
        status, result, _ = trial_state(out_dir, key)
        row: dict[str, Any] = {name: spec.params.get(name) for name in ("m_max", "s_base", *space)}
        row["trial"] = key
        history = read_metrics(trial_dir(out_dir, key) / "metrics.jsonl")
        val = [r["val_top1_error"] for r in history if r.get("val_top1_error") is not None]
        test = [r["test_top1_error"] for r in history if r.get("test_top1_error") is not None]
        row["val_top1_error"] = val[-1] if val else math.nan
        row["test_top1_error"] = test[-1] if test else math.nan
        row["epochs"] = len(history)
        if result is not None:
            row["val_top1_error"] = result.get("val_top1_error", row["val_top1_error"])
            row["test_top1_error"] = result.get("top1_error", row["test_top1_error"])
            row["epochs"] = result.get("epochs", row["epochs"])
        elif status == "missing" and key in stopped:
            status = "stopped"
        row["status"] = status
        rows.append(row)
    columns = SWEEP_COLUMNS + [c for c in space if c not in SWEEP_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def write_sweep(
    out_dir: str | Path,
    space: tuple[str, ...] = ("m_max", "s_base"),
    stopped: set[str] | None = None,
) -> pd.DataFrame:
    """Collect and write DIR/sweep.csv."""
    df = collect_sweep(out_dir, space, stopped)
    _write_csv(df, Path(out_dir) / "sweep.csv")
    return df
