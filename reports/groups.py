"""The class groups behind the tables: how many classes each many / medium / few-shot group has
on each setting, which groups are empty, and which class is the worst. The functions take a
results frame with the tables' `setting` column (`reports.tables.with_setting`).

results.csv records per row the classes in each group (`many_classes`, ...) and the thresholds
that made them (`many_shot`, `few_shot`: a dataset or a run may set its own), and the worst
class's error and name (`worst_class_error`, `worst_class`). A group without a class has no
accuracy: its cells read EMPTY, never NaN. Older files lack these columns: nothing is said then.
"""

from __future__ import annotations

import pandas as pd

EMPTY = "–"  # the cell of a group that has no class on its setting
SHOT_GROUPS = ("many", "medium", "few")
UNKNOWN = "unknown"


def _finished(results: pd.DataFrame) -> pd.DataFrame:
    """The finished rows (the frame has the tables' `setting` column: `tables.with_setting`)."""
    return results[results["status"] == "finished"]


def _numbers(rows: pd.DataFrame, column: str) -> list[int]:
    """The distinct whole numbers a column holds on `rows` (none where it is not recorded)."""
    if column not in rows.columns:
        return []
    values = pd.to_numeric(rows[column], errors="coerce").dropna()
    return sorted({int(v) for v in values})


def empty_groups(results: pd.DataFrame) -> set[tuple[str, str]]:
    """(setting label, metric) of every many / medium / few group without a class on that
    setting: each finished row that records the group's size says 0."""
    out = set()
    for setting, rows in _finished(results).groupby("setting", sort=False):
        for group in SHOT_GROUPS:
            if _numbers(rows, f"{group}_classes") == [0]:
                out.add((setting, f"{group}_acc"))
    return out


def _span(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def group_note(results: pd.DataFrame) -> str | None:
    """The note under the many / medium / few table: per setting the thresholds and the
    number of classes in each group; None when results.csv records neither."""
    parts = []
    for setting, rows in _finished(results).groupby("setting", sort=False):
        many, few = _numbers(rows, "many_shot"), _numbers(rows, "few_shot")
        sizes = [_numbers(rows, f"{g}_classes") for g in SHOT_GROUPS]
        if len(many) != 1 or len(few) != 1 or not all(sizes):
            continue
        m, f = many[0], few[0]
        bounds = (f"> {m}", f"{f}-{m}", f"< {f}")
        groups = ", ".join(
            f"{g} ({b}) {_span(n)}" for g, b, n in zip(SHOT_GROUPS, bounds, sizes, strict=True)
        )
        parts.append(f"{setting}: {groups}")
    if not parts:
        return None
    return (
        "Classes in each group (training images per class): "
        + "; ".join(parts)
        + f". {EMPTY}: a group without a class on that setting."
    )


def worst_class_note(results: pd.DataFrame, limit: int = 12) -> str | None:
    """The note under the table with the worst-class column: per method and setting the class
    that was worst most often over the seeds; None when results.csv names none."""
    fin = _finished(results)
    if "worst_class" not in fin.columns:
        return None
    named = fin[fin["worst_class"].notna()]
    named = named[~named["worst_class"].astype(str).isin(["", UNKNOWN, "nan"])]
    parts = []
    for (method, setting), rows in named.groupby(["method", "setting"], sort=False):
        counts = rows["worst_class"].astype(str).value_counts(sort=True)
        top = counts.index[0]
        parts.append(f"{method} on {setting}: {top} ({counts.iloc[0]} of {len(rows)} seeds)")
    if not parts:
        return None
    shown = "; ".join(parts[:limit]) + (
        f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    )
    return (
        "worst class: the largest per-class test error of a run (mean ± sd over seeds); the "
        f"class most often worst: {shown}."
    )


def has_values(results: pd.DataFrame, column: str) -> bool:
    """Whether a finished row of results.csv has a number in `column`."""
    fin = results[results["status"] == "finished"]
    if column not in fin.columns:
        return False
    return bool(pd.to_numeric(fin[column], errors="coerce").notna().any())
