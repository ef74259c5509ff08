"""The search report's tables and numbers: the tried points of a sweep, best first; the
sensitivity table of a grid; the selected point; the rank correlation of validation and test.

A sweep's columns are `trial`, the searched parameters (in the suite's order), the balanced
validation error (the selection metric), the instance-weighted validation error, the test error,
`epochs` and `status` (`ltbench.schema`); nothing here names a parameter. The selected point is
`ltbench.schema.select_best`, the same rule the runner prints: the test error is shown, never
used to choose.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from ltbench.schema import (
    RESULT_FILE,
    SEARCH_METRIC,
    SWEEP_TEST_METRIC,
    VAL_TOP1_METRIC,
    read_result,
    select_best,
    sweep_params,
    trial_dir,
)
from reports.content import BEST, Cell, Column, Table
from reports.stats import N_BOOT, bootstrap_interval, least_favourable_pairs
from reports.tables import NEAR_BEST, fmt

GRID_MAX_VALUES = 12  # at most this many distinct values per parameter for a grid's table / map

LABELS = {
    SEARCH_METRIC: "balanced validation error",
    VAL_TOP1_METRIC: "instance-weighted validation error",
    SWEEP_TEST_METRIC: "test top-1 error",
}


def selection_metric(sweep: pd.DataFrame) -> str | None:
    """The column the sweep's points were selected on: the balanced validation error; for an
    older sweep.csv without it, the instance-weighted one; None when there is no validation
    error at all (no point is selected then: the test error never chooses)."""
    for col in (SEARCH_METRIC, VAL_TOP1_METRIC):
        if col in sweep.columns and sweep.loc[sweep["status"] == "finished", col].notna().any():
            return col
    return None


def selected(sweep: pd.DataFrame) -> pd.Series | None:
    """The selected point (see `selection_metric`), or None."""
    key = selection_metric(sweep)
    return None if key is None else select_best(sweep, key)


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation of two columns over the rows where both are known (average
    ranks for ties); NaN with fewer than 3 such rows or a constant column."""
    both = pd.DataFrame({"a": a, "b": b}).dropna()
    if len(both) < 3:
        return math.nan
    ra, rb = both["a"].rank(), both["b"].rank()
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(ra.corr(rb))


def correlations(sweep: pd.DataFrame) -> dict[str, float]:
    """Spearman's rank correlation with the test error over the finished points, of the
    balanced and of the instance-weighted validation error."""
    fin = sweep[sweep["status"] == "finished"]
    out = {}
    for col in (SEARCH_METRIC, VAL_TOP1_METRIC):
        if col in fin.columns:
            out[col] = spearman(fin[col], fin[SWEEP_TEST_METRIC])
    return out


def _val_counts(run_dir, trial: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(errors, images) per validation class of a point, from its result.json."""
    result = read_result(trial_dir(run_dir, trial) / RESULT_FILE) or {}
    acc, counts = result.get("val_per_class_accuracy"), result.get("val_class_counts")
    if not acc or not counts or len(acc) != len(counts):
        return None
    n = np.asarray(counts, dtype=float)
    a = np.array([np.nan if v is None else float(v) for v in acc])
    return np.rint(n - np.nan_to_num(a) * n / 100.0), np.where(np.isnan(a), 0.0, n)


def within_noise(run_dir, sweep: pd.DataFrame) -> dict[str, bool]:
    """For each finished point: is its balanced validation error within noise of the selected
    point's? Within noise: the 95 % interval of the difference, a paired bootstrap over the
    validation images (``reports.stats.bootstrap_interval``; each class weighs 1/n_c, as in
    the balanced error; least favourable pairing of the per-class counts), includes 0.
    Points whose result.json lacks the per-class validation numbers are left out; {} when
    nothing is selected or nothing can be compared."""
    best = selected(sweep)
    if best is None or run_dir is None or selection_metric(sweep) != SEARCH_METRIC:
        return {}
    chosen = _val_counts(run_dir, str(best["trial"]))
    if chosen is None:
        return {}
    out = {}
    for trial in sweep.loc[sweep["status"] == "finished", "trial"].astype(str):
        if trial == str(best["trial"]):
            continue
        other = _val_counts(run_dir, trial)
        if other is None or not np.array_equal(other[1], chosen[1]):
            continue  # not the same validation images
        d, cls = least_favourable_pairs(other[0], chosen[0], chosen[1])
        n = chosen[1]
        w = np.where(n > 0, 1.0 / np.maximum(n, 1), 0.0)[cls]
        out[trial] = not bootstrap_interval(d, w).distinguishable
    return out


def noise_note(noise: dict[str, bool]) -> str:
    """The note that explains the within-noise mark."""
    if not noise:
        return (
            "Within noise of the selected point: not assessed (the points' result.json files "
            "lack per-class validation numbers, or nothing is selected)."
        )
    k = sum(noise.values())
    return (
        f"{NEAR_BEST}: balanced validation error within noise of the selected point ({k} of "
        f"{len(noise)} other finished points): the 95 % interval of the difference, a paired "
        f"bootstrap ({N_BOOT} resamples) over the validation images, includes 0. Which images "
        "both points got right is not recorded, so the least favourable pairing of their "
        "per-class counts is used (an interval that is, if anything, too wide). Many marks: a "
        "flat optimum; none: a sharp one."
    )


def _rho(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def grid_axes(sweep: pd.DataFrame, params: list[str]) -> dict[str, list] | None:
    """The values per parameter when the tried points form a full grid (every combination
    present, each once, at most GRID_MAX_VALUES values per parameter); None otherwise."""
    if not params or sweep.empty or sweep[params].isna().any().any():
        return None
    axes = {p: sorted(sweep[p].unique()) for p in params}
    if any(len(v) > GRID_MAX_VALUES for v in axes.values()):
        return None
    points = {tuple(r) for r in sweep[params].itertuples(index=False)}
    if len(points) != len(sweep) or len(points) != math.prod(len(v) for v in axes.values()):
        return None
    if points != set(itertools.product(*axes.values())):
        return None
    return axes


def sweep_warnings(sweep: pd.DataFrame) -> list[str]:
    """Sentences about sweep points that did not finish (stopped early points are expected),
    and about a sweep that has no balanced validation error to select on."""
    out = []
    counts = sweep["status"].value_counts()
    bad = {s: int(n) for s, n in counts.items() if s != "finished"}
    if bad:
        what = " and ".join(f"{n} {s}" for s, n in sorted(bad.items()))
        out.append(
            f"Of {len(sweep)} sweep points, {what}; only finished points enter the tables of "
            "best points and the validation-against-test figure."
        )
        if "failed" in bad:
            out.append("Failed points are listed below with their error.")
    key = selection_metric(sweep)
    if key == VAL_TOP1_METRIC:
        out.append(
            "This sweep.csv has no balanced validation error (an older sweep): its points are "
            "ranked by the instance-weighted validation error, which the head classes dominate."
        )
    elif key is None and (counts.get("finished", 0) > 0):
        out.append("No finished point has a validation error: no point is selected.")
    return out


def _value(v) -> str:
    """A searched parameter's value in a table cell: numbers with %g, "-" for none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int | float | np.number) and not isinstance(v, bool):
        return f"{v:g}"
    return str(v)


def sweep_table(
    sweep: pd.DataFrame,
    params: list[str] | None = None,
    top: int = 10,
    noise: dict[str, bool] | None = None,
) -> Table:
    """The best points of a sweep by balanced validation error, with the instance-weighted
    validation error and the test error beside it (never used to rank).

    ``params``: the searched parameters, one column each (default: sweep.csv's columns that
    are not fixed ones, see ``ltbench.schema.sweep_params``). ``noise``: `within_noise`'s
    answer; points within noise of the selected one carry NEAR_BEST.
    """
    params = list(params) if params is not None else sweep_params({}, sweep.columns)
    key = selection_metric(sweep)
    fin = sweep[sweep["status"] == "finished"].copy()
    for col in (SEARCH_METRIC, VAL_TOP1_METRIC):
        if col not in fin.columns:
            fin[col] = math.nan
    if key is not None:
        fin = fin.sort_values(key, kind="stable")
    fin = fin.head(top)
    best = selected(sweep)
    cols = ["trial", *params, "val balanced err", "val top-1 err (inst.)", "test top-1 err"]
    cols.append("epochs")
    rows = []
    for r in fin.to_dict("records"):
        chosen = best is not None and r["trial"] == best["trial"]
        near = f" {NEAR_BEST}" if (noise or {}).get(str(r["trial"])) else ""
        rows.append(
            [
                Cell(str(r["trial"])),
                *(Cell(_value(r[p])) for p in params),
                Cell(fmt(r[SEARCH_METRIC]) + near, BEST if chosen and key == SEARCH_METRIC else ""),
                Cell(fmt(r[VAL_TOP1_METRIC]), BEST if chosen and key == VAL_TOP1_METRIC else ""),
                Cell(fmt(r[SWEEP_TEST_METRIC])),
                Cell(str(r["epochs"])),
            ]
        )
    if key is None:
        ranked = "in trial order (no validation error: nothing is selected)"
    else:
        ranked = f"ranked by the {LABELS[key]} (the selected point is marked)"
    notes = [
        f"The {len(rows)} best of {len(sweep)} points, {ranked}. The test error is shown, "
        "never used to choose. The selected point is not retrained on training + validation "
        "data: its test error is that of the model the sweep trained."
    ]
    rho = correlations(sweep)
    if rho:
        parts = [f"{LABELS[c]} {_rho(v)}" for c, v in rho.items()]
        n = int((sweep["status"] == "finished").sum())
        notes.append(
            f"Spearman rank correlation with the test error over the {n} finished points: "
            + ", ".join(parts)
            + "."
        )
    n_bad = int((sweep["status"] != "finished").sum())
    if n_bad:
        notes.append(f"{n_bad} point(s) did not finish and are left out.")
    if noise is not None and key is not None:
        notes.append(noise_note(noise))
    return Table("Sweep: best points", [Column(c) for c in cols], rows, notes, anchor="sweep")


def grid_tables(
    sweep: pd.DataFrame, params: list[str], noise: dict[str, bool] | None = None
) -> list[Table]:
    """Sensitivity tables of a grid over one or two parameters, the paper's kind: the test
    error and the balanced validation error of every point (rows: the first parameter,
    columns: the second), the selected point marked, and in the validation table the points
    within noise of it (``noise``, see `within_noise`). [] when the points are not such a
    grid."""
    axes = grid_axes(sweep, params)
    if axes is None or len(params) > 2:
        return []
    best = selected(sweep)
    row_p = params[0]
    col_p = params[1] if len(params) == 2 else None
    col_values = axes[col_p] if col_p else [None]
    index = {(r[row_p], r[col_p] if col_p else None): r for r in sweep.to_dict("records")}
    columns = [Column(row_p)] + [
        Column(f"{col_p}={_value(v)}" if col_p else LABELS[SWEEP_TEST_METRIC].split(" ")[0])
        for v in col_values
    ]
    out = []
    for metric, title in (
        (SWEEP_TEST_METRIC, "test top-1 error"),
        (SEARCH_METRIC, "balanced validation error"),
    ):
        if metric not in sweep.columns or sweep[metric].isna().all():
            continue
        rows = []
        for rv in axes[row_p]:
            cells = [Cell(_value(rv))]
            for cv in col_values:
                r = index[(rv, cv)]
                chosen = best is not None and r["trial"] == best["trial"]
                text = fmt(r[metric]) if r["status"] == "finished" else r["status"]
                if metric == SEARCH_METRIC and (noise or {}).get(str(r["trial"])):
                    text += f" {NEAR_BEST}"
                cells.append(Cell(text, BEST if chosen else ""))
            rows.append(cells)
        what = f"{row_p} x {col_p}" if col_p else row_p
        notes = [
            f"The {title} (%) of every point of the {what} grid; the point selected on the "
            "balanced validation error is marked. Points that did not finish show their status."
        ]
        if metric == SWEEP_TEST_METRIC:
            notes.append("The test error is reported, never used to choose.")
        elif noise is not None:
            notes.append(noise_note(noise))
        anchor = "grid-test" if metric == SWEEP_TEST_METRIC else "grid-val"
        out.append(Table(f"Grid: {title}", columns, rows, notes, anchor=anchor))
    return out


def selected_table(sweep: pd.DataFrame, results: pd.DataFrame, params: list[str]) -> Table | None:
    """The selected point's numbers: its values, validation errors, and test errors (overall,
    many/medium/few, head/mid/tail) from results.csv. None when no point is selected."""
    best = selected(sweep)
    if best is None:
        return None
    row = results[results["trial"] == best["trial"]]
    res = row.iloc[0] if len(row) else pd.Series(dtype=object)
    items = [(p, _value(best[p])) for p in params]
    items += [
        ("balanced validation error", fmt(best.get(SEARCH_METRIC, math.nan))),
        ("instance-weighted validation error", fmt(best.get(VAL_TOP1_METRIC, math.nan))),
        ("test top-1 error", fmt(best[SWEEP_TEST_METRIC])),
    ]
    for col, label in (
        ("many_acc", "test many-shot accuracy"),
        ("medium_acc", "test medium-shot accuracy"),
        ("few_acc", "test few-shot accuracy"),
        ("head_error", "test head error"),
        ("mid_error", "test mid error"),
        ("tail_error", "test tail error"),
    ):
        if col in res.index:
            items.append((label, fmt(res[col])))
    rows = [[Cell(k), Cell(v)] for k, v in items]
    notes = [
        f"Trial {best['trial']}, selected on the {LABELS[selection_metric(sweep)]}; not retrained "
        "on training + validation data. Percent."
    ]
    columns = [Column("selected point", align="left"), Column("value")]
    return Table("Sweep: the selected point", columns, rows, notes, anchor="selected")
