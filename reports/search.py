"""The search report's tables: the tried points of a sweep, best first, and its warnings.

A sweep's columns are `trial`, the searched parameters (in the suite's order), the selection
and test errors, `epochs` and `status` (`ltbench.schema`); nothing here names a parameter.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ltbench.schema import sweep_params
from reports.content import BEST, Cell, Column, Table
from reports.tables import fmt


def sweep_warnings(sweep: pd.DataFrame) -> list[str]:
    """Sentences about sweep points that did not finish (stopped early points are expected)."""
    counts = sweep["status"].value_counts()
    bad = {s: int(n) for s, n in counts.items() if s != "finished"}
    if not bad:
        return []
    what = " and ".join(f"{n} {s}" for s, n in sorted(bad.items()))
    out = [
        f"Of {len(sweep)} sweep points, {what}; only finished points enter the heat map and "
        "the table of best points."
    ]
    if "failed" in bad:
        out.append("Failed points are listed below with their error.")
    return out


def _value(v) -> str:
    """A searched parameter's value in a table cell: numbers with %g, "-" for none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, int | float | np.number) and not isinstance(v, bool):
        return f"{v:g}"
    return str(v)


def sweep_table(sweep: pd.DataFrame, params: list[str] | None = None, top: int = 10) -> Table:
    """The best points of a sweep by validation error (test error where none).

    ``params``: the searched parameters, one column each (default: sweep.csv's columns that
    are not fixed ones, see ``ltbench.schema.sweep_params``).
    """
    params = list(params) if params is not None else sweep_params({}, sweep.columns)
    fin = sweep[sweep["status"] == "finished"].copy()
    key = "val_top1_error" if fin["val_top1_error"].notna().any() else "test_top1_error"
    fin = fin.sort_values(key).head(top)
    cols = ["trial", *params, "val top-1 err", "test top-1 err", "epochs"]
    rows = [
        [
            Cell(str(r["trial"])),
            *(Cell(_value(r[p])) for p in params),
            Cell(fmt(r["val_top1_error"]), BEST if i == 0 and key == "val_top1_error" else ""),
            Cell(fmt(r["test_top1_error"]), BEST if i == 0 and key == "test_top1_error" else ""),
            Cell(str(r["epochs"])),
        ]
        for i, r in enumerate(fin.to_dict("records"))
    ]
    n_bad = int((sweep["status"] != "finished").sum())
    notes = [
        f"The {len(rows)} best of {len(sweep)} points, ranked by "
        f"{'validation' if key == 'val_top1_error' else 'test (no validation split)'} error."
    ]
    if n_bad:
        notes.append(f"{n_bad} point(s) did not finish and are left out.")
    return Table("Sweep: best points", [Column(c) for c in cols], rows, notes, anchor="sweep")
