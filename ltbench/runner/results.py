"""Collect a suite directory's trial results into results.csv, per_class.csv and sweep.csv.

The trial directories are the source of truth; the file names, the columns and the statuses
are the contract in `ltbench.schema`:

    DIR/trials.json              every planned trial: {key: TrialSpec}
    DIR/trials/<key>/result.json the run finished  -> status "finished"
    DIR/trials/<key>/error.txt   the run failed    -> status "failed", the file's text as error
    otherwise                    not run, interrupted or stopped early -> status "missing"

No Ray here: collecting works offline, after a crash, and on a copy of the directory.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ltbench.data.draws import short
from ltbench.data.registry import DATASETS, dataset_recipe
from ltbench.engine.posthoc import FIXED_BY_USER, fixed_tau_rule
from ltbench.errors import LtbenchError
from ltbench.runner.trials import TrialSpec, format_point, load_trials
from ltbench.schema import (
    GROUP_COLUMNS,
    METRIC_COLUMNS,
    METRICS_FILE,
    MISSING,
    OPTIONAL_RESULTS_COLUMNS,
    PER_CLASS_COLUMNS,
    PER_CLASS_FILE,
    PROTOCOL_COLUMNS,
    RAW_RULE,
    RESULT_FILE,
    RESULTS_COLUMNS,
    RESULTS_FILE,
    SAME_SETUP,
    SEARCH_METRIC,
    STOPPED,
    SUITE_FILE,
    SWEEP_FILE,
    SWEEP_TEST_METRIC,
    TRIALS_DIR,
    VAL_TOP1_METRIC,
    read_metrics,
    read_result,
    select_best,
    sweep_columns,
    sweep_params,
    trial_dir,
    trial_state,
)

# ltbench.engine.stages still imports `read_metrics` from here; its home is ltbench.schema.


def finished_keys(out_dir: Path, keys: Iterable[str]) -> set[str]:
    """The keys among `keys` whose trial has a readable result.json."""
    return {k for k in keys if read_result(trial_dir(out_dir, k) / RESULT_FILE) is not None}


def _params_json(spec: TrialSpec) -> str:
    params = spec.params
    if spec.mixup_alpha:
        params["mixup_alpha"] = spec.mixup_alpha
    return json.dumps(params, sort_keys=True)


def _planned_epochs(spec: TrialSpec) -> int | None:
    epochs = spec.config.get("epochs")
    if epochs is None and spec.dataset in DATASETS:
        try:
            epochs = dataset_recipe(spec.dataset, spec.config.get("data_root")).epochs
        except LtbenchError:  # data without a paper recipe whose folder is gone
            return None
    return epochs


def _identity(spec: TrialSpec, result: dict[str, Any] | None) -> dict[str, Any]:
    """label, setup, precision, full_schedule of a trial: from its result.json, else (not
    finished) from its configuration; "" where neither says."""
    info: dict[str, Any] = {}
    if result is not None and "full_schedule" in result:
        info = {
            "label": result.get("method", ""),
            "setup": "; ".join(result.get("setup_deviations") or []) or SAME_SETUP,
            "full_schedule": bool(result.get("full_schedule")),
        }
    elif result is None:
        from ltbench.engine.config import resolve
        from ltbench.engine.identity import identity

        try:
            ident = identity(resolve(spec.train_config()))
        except LtbenchError:
            ident = None
        if ident is not None:
            info = {
                "label": ident["method"],
                "setup": "; ".join(ident["setup_deviations"]) or SAME_SETUP,
                "full_schedule": ident["full_schedule"],
            }
    info.setdefault("label", "")
    info.setdefault("setup", "")
    info.setdefault("full_schedule", "")
    info["precision"] = (result or {}).get("precision", "")
    return info


def _rules_of(result: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the `posthoc` block of a result, its rules by name); empty where there are none."""
    block = (result or {}).get("posthoc") or {}
    rules = block.get("rules") if isinstance(block, dict) else None
    return (block, rules) if isinstance(rules, dict) else ({}, {})


def _posthoc_rules(result: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The post-hoc rules of a result (not `raw`: the trained model's row is that rule)."""
    block, rules = _rules_of(result)
    out = {}
    for rule, r in rules.items():
        if rule == RAW_RULE or not isinstance(r, dict):
            continue
        if r.get("tau_selected_on") == FIXED_BY_USER:  # never taken for the paper's row
            rule = fixed_tau_rule(rule, r["tau"])
        out[rule] = {**r, "precision": block.get("precision", "")}
    return out


def _raw_rule(result: dict[str, Any]) -> dict[str, Any]:
    """The `raw` rule of a result's `ltbench eval` (the final model's own decision, measured
    again), or {}: it supplies the numbers a result.json written before they existed lacks
    (e.g. `worst_class_error`); a number the result has is always the result's."""
    raw = _rules_of(result)[1].get(RAW_RULE)
    return raw if isinstance(raw, dict) else {}


def _class_rows(
    key: str, spec: TrialSpec, result: dict[str, Any], rule: str = RAW_RULE
) -> list[dict[str, Any]]:
    accs = result.get("per_class_accuracy") or []
    counts = result.get("class_counts") or [None] * len(accs)
    names = result.get("class_names") or [str(i) for i in range(len(accs))]
    return [
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
            "rule": rule,
        }
        for c, acc in enumerate(accs)
    ]


def _worst_class_name(result: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The name of `metrics`' worst class (its index named by `result`'s class names); "" when
    none is recorded."""
    index = metrics.get("worst_class")
    names = result.get("class_names") or []
    if not isinstance(index, int) or isinstance(index, bool):
        return ""
    return str(names[index]) if 0 <= index < len(names) else str(index)


def _protocol_cells(result: dict[str, Any]) -> dict[str, Any]:
    """The results.csv cells of the epoch protocols in `result` (NaN where it has none)."""
    protocols = result.get("epoch_protocols")
    out = {}
    for column, (protocol, key) in PROTOCOL_COLUMNS.items():
        entry = protocols.get(protocol) if isinstance(protocols, dict) else None
        value = entry.get(key) if isinstance(entry, dict) else None
        out[column] = value if isinstance(value, int | float) else math.nan
    return out


def results_frames(
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
            "imb_factor": spec.config.get("imb_factor"),
            "rho": spec.rho,
            "seed": spec.seed,
            "subset_seed": spec.subset_seed,
            "train_fingerprint": "",
            **{c: math.nan for c in (*METRIC_COLUMNS, *OPTIONAL_RESULTS_COLUMNS)},
            **{c: math.nan for c in PROTOCOL_COLUMNS},
            "epochs": _planned_epochs(spec),
            "wall_seconds": math.nan,
            "status": status,
            "error": error or notes.get(key, ""),
            **_identity(spec, result),
            "rule": RAW_RULE,
        }
        if result is not None:
            raw = _raw_rule(result)
            for c in (*METRIC_COLUMNS, *OPTIONAL_RESULTS_COLUMNS):
                value = result.get(c, raw.get(c))
                row[c] = math.nan if value is None else value
            row.update(_protocol_cells(result))
            row["worst_class"] = _worst_class_name(
                result, result if "worst_class" in result else raw
            )
            row["train_fingerprint"] = short((result.get("fingerprints") or {}).get("train"))
            row["epochs"] = result.get("epochs", row["epochs"])
            row["wall_seconds"] = result.get("wall_seconds", math.nan)
            class_rows += _class_rows(key, spec, result)
        rows.append(row)
        # one more row per post-hoc rule (`ltbench eval`, suite `posthoc:`), same trial
        for rule, r in _posthoc_rules(result).items():
            extra = {**row, "rule": rule, "precision": r["precision"]}
            extra.update({c: math.nan for c in PROTOCOL_COLUMNS})  # a rule sees the final model
            for c in (*METRIC_COLUMNS, *GROUP_COLUMNS):
                value = r.get(c, row[c] if c in GROUP_COLUMNS else None)
                extra[c] = math.nan if value is None else value
            extra["worst_class"] = _worst_class_name(result, r)
            rows.append(extra)
            class_rows += _class_rows(key, spec, {**result, **r}, rule)
    results = pd.DataFrame(rows, columns=RESULTS_COLUMNS)
    per_class = pd.DataFrame(class_rows, columns=PER_CLASS_COLUMNS)
    return results, per_class


def write_results(
    out_dir: str | Path, notes: dict[str, str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect and write DIR/results.csv and DIR/per_class.csv; returns the frames."""
    out_dir = Path(out_dir)
    results, per_class = results_frames(out_dir, notes)
    _write_csv(results, out_dir / RESULTS_FILE)
    _write_csv(per_class, out_dir / PER_CLASS_FILE)
    return results, per_class


def suite_of_trial(run_dir: str | Path) -> Path | None:
    """DIR when `run_dir` is a trial folder DIR/trials/<key> of a suite folder that has written
    its results.csv (DIR/trials.json plans the trial); else None."""
    run_dir = Path(os.path.abspath(run_dir))
    out_dir = run_dir.parent.parent
    if run_dir.parent.name != TRIALS_DIR or not (out_dir / RESULTS_FILE).is_file():
        return None
    try:
        planned = run_dir.name in load_trials(out_dir)
    except LtbenchError:
        return None
    return out_dir if planned else None


def refresh_results(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rewrite DIR/results.csv and per_class.csv from the trial folders, after a trial changed
    (`ltbench eval` added rules to it). The reasons the earlier file gave for missing trials
    (for example "stopped early by ASHA") are kept. The caller holds DIR."""
    out_dir = Path(out_dir)
    notes: dict[str, str] = {}
    try:
        old = pd.read_csv(out_dir / RESULTS_FILE, dtype=str, keep_default_na=False)
        for row in old.to_dict("records"):
            if row.get("status") == MISSING and row.get("error") and row.get("trial"):
                notes.setdefault(str(row["trial"]), str(row["error"]))
    except (OSError, ValueError, pd.errors.ParserError):
        notes = {}
    return write_results(out_dir, notes)


def refresh_after_eval(run_dir: str | Path) -> str | None:
    """After `ltbench eval` on a suite's trial: the suite's results.csv gets the new rows, so
    that `ltbench report` shows them; a line saying so (None for a run outside a suite). While
    the suite's driver holds its folder, the driver writes them when it ends."""
    from ltbench.engine.locks import FolderBusy, hold

    out_dir = suite_of_trial(run_dir)
    if out_dir is None:
        return None
    try:
        with hold(out_dir):
            refresh_results(out_dir)
    except FolderBusy:
        return f"-> {out_dir} is in use by its driver; it writes results.csv when it ends"
    return f"-> {out_dir / RESULTS_FILE} (the suite's table; next: ltbench report {out_dir})"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


def _recorded_params(out_dir: Path) -> list[str]:
    """The searched parameters that DIR/suite.yaml records (`search.params`); [] if none."""
    try:
        suite = yaml.safe_load((out_dir / SUITE_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return []
    return sweep_params(suite if isinstance(suite, dict) else {}, [])


def sweep_frame(
    out_dir: str | Path,
    params: Iterable[str] | None = None,
    stopped: set[str] | None = None,
) -> pd.DataFrame:
    """One row per tried point of a sweep: the searched values, validation and test errors.

    The columns are `ltbench.schema.sweep_columns(params)`: the trial, the searched parameters
    in order (default: those DIR/suite.yaml records), the balanced validation error (the
    selection metric), the instance-weighted validation error, the test error, the epochs and
    the status.
    `status` is finished, failed, stopped (early, by the scheduler; `stopped` names those
    trials) or missing. For a stopped trial the errors are those of its last evaluated epoch
    and `epochs` counts the epochs it trained.
    """
    out_dir = Path(out_dir)
    params = list(params) if params is not None else _recorded_params(out_dir)
    stopped = stopped or set()
    rows = []
    for key, spec in load_trials(out_dir).items():
        status, result, _ = trial_state(out_dir, key)
        values = spec.params
        row: dict[str, Any] = {"trial": key, **{name: values.get(name) for name in params}}
        history = read_metrics(trial_dir(out_dir, key) / METRICS_FILE)
        for col in (SEARCH_METRIC, VAL_TOP1_METRIC, SWEEP_TEST_METRIC):
            seen = [r[col] for r in history if r.get(col) is not None]
            row[col] = seen[-1] if seen else math.nan
        row["epochs"] = len(history)
        if result is not None:
            for col in (SEARCH_METRIC, VAL_TOP1_METRIC):
                row[col] = result.get(col, row[col])
            row[SWEEP_TEST_METRIC] = result.get("top1_error", row[SWEEP_TEST_METRIC])
            row.update(_protocol_cells(result))
            row["epochs"] = result.get("epochs", row["epochs"])
        elif status == MISSING and key in stopped:
            status = STOPPED
        row["status"] = status
        rows.append(row)
    return pd.DataFrame(rows, columns=sweep_columns(params))


def write_sweep(
    out_dir: str | Path,
    params: Iterable[str] | None = None,
    stopped: set[str] | None = None,
) -> pd.DataFrame:
    """Collect and write DIR/sweep.csv."""
    df = sweep_frame(out_dir, params, stopped)
    _write_csv(df, Path(out_dir) / SWEEP_FILE)
    return df


def best_line(sweep: pd.DataFrame, params: list[str]) -> str | None:
    """The sweep's selected point as one line, or None when no point finished.

    The choice is `ltbench.schema.select_best`: the lowest balanced validation error among the
    finished points; the instance-weighted validation error and the test error are only shown.
    """
    best = select_best(sweep)
    if best is None:
        return None
    return (
        f"best (selected on balanced validation error): "
        f"{format_point({k: best[k] for k in params})}: balanced validation error "
        f"{best[SEARCH_METRIC]:.2f}% (instance-weighted {best[VAL_TOP1_METRIC]:.2f}%), "
        f"test error {best[SWEEP_TEST_METRIC]:.2f}% (trial {best['trial']})"
    )
