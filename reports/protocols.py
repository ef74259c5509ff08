"""The epoch-protocol table: which epoch each number comes from.

Every other table shows the final epoch. This one puts beside it, per method and setting, the
test error at the epoch with the lowest balanced validation error (best-on-validation), and,
only for a row that has the paper's number beside it, the test error at the epoch with the
lowest test error (best-on-test): the public LDAM-DRW and KPS scripts print that number, so it
is what a published number may be; it is chosen on the test set and never ranks anything here
(no marks in this table). The protocols are defined in `ltbench.engine.protocols` (DESIGN.md,
"Epoch protocols"); results.csv carries them as `PROTOCOL_COLUMNS`.
"""

from __future__ import annotations

import math

import pandas as pd

from ltbench.schema import RAW_RULE
from reports.content import Cell, Column, Table
from reports.labels import paper_match
from reports.paper import PaperNumbers
from reports.tables import fmt, methods_of, settings_of, with_setting

ON_VAL, ON_TEST = "test_error_best_on_val", "test_error_best_on_test"
ON_VAL_EPOCH, ON_TEST_EPOCH = "epoch_best_on_val", "epoch_best_on_test"


def _mean_cell(rows: pd.DataFrame, value: str, epoch: str) -> str:
    """`mean (epochs)` over the seeds that have the protocol; "-" where none has."""
    values = pd.to_numeric(rows.get(value), errors="coerce")
    if values is None or values.notna().sum() == 0:
        return "-"
    epochs = pd.to_numeric(rows.get(epoch), errors="coerce").dropna().astype(int)
    at = ", ".join(str(e) for e in sorted(set(epochs)))
    n = int(values.notna().sum())
    return f"{fmt(float(values.mean()))} (ep. {at}{'' if n == len(rows) else f'; n={n}'})"


def protocol_table(results: pd.DataFrame, paper: PaperNumbers | None) -> Table | None:
    """The table, or None when no finished trained row records a protocol beyond the final."""
    fin = results[(results["status"] == "finished") & (results["rule"] == RAW_RULE)]
    if ON_VAL not in fin.columns or fin.empty:
        return None
    has_val = pd.to_numeric(fin[ON_VAL], errors="coerce").notna().any()
    on_test = ON_TEST in fin.columns and pd.to_numeric(fin[ON_TEST], errors="coerce").notna()
    if not has_val and not (isinstance(on_test, pd.Series) and on_test.any()):
        return None  # results written before the protocols were recorded
    fin = with_setting(fin)
    columns = [Column("method", align="left")]
    settings = settings_of(fin)
    for s in settings:
        columns += [
            Column("final", s.label),
            Column("best-on-val", s.label),
            Column("best-on-test", s.label),
            Column("paper", s.label),
        ]
    rows, shown_on_test = [], False
    for meth in methods_of(fin):
        row = [Cell(meth)]
        for s in settings:
            cell = fin[(fin["method"] == meth) & (fin["setting"] == s.label)]
            if cell.empty:
                row += [Cell("-")] * 4
                continue
            pv = paper_match(cell, paper, s)[0] if paper is not None else None
            final = pd.to_numeric(cell["top1_error"], errors="coerce").mean()
            on_test = "-"
            if pv is not None:  # best-on-test only beside a published number
                on_test, shown_on_test = _mean_cell(cell, ON_TEST, ON_TEST_EPOCH), True
            paper_text = fmt(pv.value) if pv is not None else "-"
            row += [
                Cell(fmt(final) if not math.isnan(final) else "-"),
                Cell(_mean_cell(cell, ON_VAL, ON_VAL_EPOCH)),
                Cell(on_test),
                Cell(paper_text),
            ]
        rows.append(row)
    if not has_val and not shown_on_test:
        return None
    notes = [
        "Top-1 test error (%), mean over seeds, with the epochs each number comes from. final: "
        "the last epoch, what every other table shows. best-on-val: the epoch with the lowest "
        "balanced validation error (needs a validation split; the test labels play no part). "
        "best-on-test: the epoch with the lowest test error, shown only beside the paper's "
        "number, because the public scripts report it; it is chosen on the test set, so it is "
        "optimistic and ranks nothing. No marks in this table."
    ]
    return Table(
        title="Which epoch: final, best on validation, best on test",
        columns=columns,
        rows=rows,
        notes=notes,
        anchor="protocols",
    )
