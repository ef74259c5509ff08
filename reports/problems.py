"""The trials that did not finish: the report's warning sentences and its problems table."""

from __future__ import annotations

import pandas as pd

from reports.content import Cell, Column, Table
from reports.tables import DAGGER, _capped, expected_seeds, summarize, with_setting


def problem_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Trials that did not finish (status failed or missing)."""
    return results[results["status"] != "finished"]


def problems_table(results: pd.DataFrame, only: tuple[str, ...] | None = None) -> Table | None:
    """The trials that did not finish (or only those with a status in ``only``), or None."""
    bad = problem_rows(results)
    if only is not None:
        bad = bad[bad["status"].isin(only)]
    if bad.empty:
        return None
    cols = ["trial", "method", "setting", "seed", "status", "error"]
    rows = []
    for r in with_setting(bad).itertuples(index=False):
        err = r.error.strip().splitlines()[-1] if r.error.strip() else "(no error recorded)"
        if len(err) > 160:
            err = err[:157] + "..."
        rows.append(
            [Cell(str(r.trial)), Cell(r.method), Cell(r.setting), Cell(str(r.seed))]
            + [Cell(r.status), Cell(err)]
        )
    columns = [Column(c, align="left" if c in ("trial", "error") else "center") for c in cols]
    return Table("Trials that did not finish", columns, rows, anchor="problems")


def incomplete_warnings(results: pd.DataFrame) -> list[str]:
    """Sentences for the report's warning section; empty when the run is complete."""
    if results.empty:
        return ["results.csv lists no trials: there is nothing to report."]
    out = []
    counts = results["status"].value_counts()
    bad = {s: int(n) for s, n in counts.items() if s != "finished"}
    if bad:
        what = " and ".join(f"{n} {s}" for s, n in sorted(bad.items()))
        out.append(
            f"This run is incomplete: of {len(results)} trials, {what} (listed below); "
            "the tables average only the finished ones."
        )
    n_expected = expected_seeds(results)
    st = summarize(results, "top1_error")
    short = st[st["n_finished"] < n_expected]
    if not short.empty:
        cells = _capped(
            [
                f"{m} on {s} (n={int(r.n_finished)} of {n_expected})"
                for (m, s), r in short.iterrows()
            ]
        )
        out.append(
            f"Cells averaged over fewer than {n_expected} seeds are marked {DAGGER} in the "
            f"tables: {cells}."
        )
    fin = with_setting(results[results["status"] == "finished"])
    dup = fin.duplicated(["method", "setting", "seed", "subset_seed"], keep=False)
    if dup.any():
        out.append(
            f"{int(dup.sum())} finished rows share method, setting and seed with another row "
            "(different params under one method label?); their cells average over them."
        )
    return out
