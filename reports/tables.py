"""Pure functions: results frames -> summary frames -> ``Table`` objects.

Conventions, all stated in the rendered notes:

* A cell is the mean ± standard deviation (ddof=1) over the seeds that finished. With one seed
  the deviation is undefined and shown as "± -".
* The expected number of seeds is the largest number of seeds any (method, dataset, rho) cell
  of the suite planned. A cell with fewer finished seeds carries a dagger and a note
  "n=2 of 3 seeds": fewer seeds are never averaged silently.
* Best and second-best are ranked per column on the values as printed (2 decimals); equal
  printed values share a mark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reports.content import BEST, SECOND, Cell, Column, Table
from reports.groups import EMPTY, empty_groups, group_note, has_values, worst_class_note
from reports.labels import paper_match, precision_note
from reports.paper import NATURAL_LT, PAPER_SETTINGS, PaperNumbers, reference_rows
from reports.subsets import subset_note

if TYPE_CHECKING:
    from reports.judge import Judge

DAGGER = "†"
DISTINCT = "*"  # Δ cell: the 95 % interval of the difference from the reference excludes 0
NEAR_BEST = "≈"  # value cell: the interval of the difference from the column's best includes 0
TEST_NOISE = "‡"  # Δ cell: one seed each, bootstrap over test images: test-set noise only
NO_STD = "-"
N_GROUPS = 10
PART_NAMES = ("Head",) * 3 + ("Mid",) * 4 + ("Tail",) * 3


@dataclass(frozen=True)
class Setting:
    """One column group of the tables: a dataset at one imbalance ratio."""

    dataset: str
    rho: float  # NaN where the run recorded none

    @property
    def label(self) -> str:
        """Column label, e.g. "cifar10-lt ρ=100" (ImageNet-LT and iNat show no ρ). ρ = 1 is
        data used as it is, not drawn (its own imbalance, if any, is in the subset note): "as
        is", since "ρ=1" would read as balanced."""
        if self.dataset in NATURAL_LT or math.isnan(self.rho):
            return self.dataset
        if self.rho == 1:
            return f"{self.dataset} as is"
        return f"{self.dataset} ρ={_num(self.rho)}"

    @property
    def slug(self) -> str:
        """File-name form of the label."""
        if self.dataset in NATURAL_LT or math.isnan(self.rho):
            return self.dataset
        return f"{self.dataset}_rho{_num(self.rho)}"


def _num(x: float) -> str:
    return f"{x:g}"


def fmt(x: float) -> str:
    """A percentage with two decimals ("-" for NaN)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def with_setting(df: pd.DataFrame) -> pd.DataFrame:
    """Add a ``setting`` column (the label) so NaN rho groups like any other value."""
    df = df.copy()
    df["setting"] = [
        Setting(d, float(r)).label for d, r in zip(df["dataset"], df["rho"], strict=True)
    ]
    return df


def settings_of(results: pd.DataFrame) -> list[Setting]:
    """Settings in suite order: datasets as first seen, larger rho first within a dataset."""
    order = {d: i for i, d in enumerate(dict.fromkeys(results["dataset"]))}
    pairs = {(d, float(r)) for d, r in zip(results["dataset"], results["rho"], strict=True)}
    unique: dict[str, Setting] = {}
    for d, r in sorted(pairs, key=lambda p: (order[p[0]], -np.nan_to_num(p[1], nan=-1.0))):
        s = Setting(d, r)
        unique.setdefault(s.label, s)
    return list(unique.values())


def methods_of(results: pd.DataFrame) -> list[str]:
    """Methods in the order the suite lists them (first appearance in results.csv)."""
    return list(dict.fromkeys(results["method"]))


def expected_seeds(results: pd.DataFrame) -> int:
    """The suite's maximum number of seeds planned for one (method, dataset, rho) cell."""
    if results.empty:
        return 0
    df = with_setting(results)
    return int(df.groupby(["method", "setting"])["seed"].nunique().max())


def summarize(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std (ddof=1), n over finished seeds, and n_finished, per (method, setting).

    Every planned (method, setting) pair has a row, also those where nothing finished.
    """
    df = with_setting(results)
    planned = df[["method", "setting"]].drop_duplicates()
    fin = df[df["status"] == "finished"]
    values = pd.to_numeric(fin[metric], errors="coerce")
    stats = (
        fin.assign(_v=values)
        .groupby(["method", "setting"])
        .agg(
            mean=("_v", "mean"),
            std=("_v", lambda v: v.std(ddof=1)),
            n=("_v", "count"),
            n_finished=("_v", "size"),
        )
        .reset_index()
    )
    out = planned.merge(stats, on=["method", "setting"], how="left")
    out[["n", "n_finished"]] = out[["n", "n_finished"]].fillna(0).astype(int)
    return out.set_index(["method", "setting"])


def rank_marks(means: dict[str, float], higher_is_better: bool) -> dict[str, str]:
    """Best / second-best marks for one column, ranked on the printed (2-decimal) values."""
    shown = {k: round(v, 2) for k, v in means.items() if v is not None and not math.isnan(v)}
    distinct = sorted(set(shown.values()), reverse=higher_is_better)
    marks = {}
    for key, value in shown.items():
        if value == distinct[0]:
            marks[key] = BEST
        elif len(distinct) > 1 and value == distinct[1]:
            marks[key] = SECOND
    return marks


def _capped(items: list[str], limit: int = 12, sep: str = "; ") -> str:
    """Join a list for a note, naming at most ``limit`` items."""
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f"{sep}and {len(items) - limit} more"


class _Notes:
    """Collects the footnotes of one table (fewer seeds, single seed)."""

    def __init__(self, n_expected: int):
        self.n_expected = n_expected
        self.short: list[str] = []
        self.single = False

    def cell(self, row: pd.Series | None, method: str, setting: str) -> str:
        """Text of a measured cell, registering any footnote it needs."""
        if row is None:
            return "-"  # this method was not run on this setting
        n, nfin = int(row["n"]), int(row["n_finished"])
        dagger = ""
        if nfin < self.n_expected:
            dagger = DAGGER
            self.short.append(f"{method} on {setting}: n={nfin} of {self.n_expected} seeds")
        if n == 0:
            return "-" + dagger
        if n == 1:
            self.single = True
            return f"{fmt(row['mean'])} ± {NO_STD}{dagger}"
        return f"{fmt(row['mean'])} ± {fmt(row['std'])}{dagger}"

    def lines(self) -> list[str]:
        out = []
        if self.short:
            out.append(
                f"{DAGGER} fewer finished seeds than the suite's {self.n_expected}: "
                + _capped(list(dict.fromkeys(self.short)))
                + "."
            )
        if self.single:
            out.append(f"± {NO_STD}: a single finished seed, so no standard deviation.")
        return out


def _columns(settings, metrics, judge, paper) -> list[Column]:
    """The header of a metric table: per setting its metrics (a Δ column after a single metric
    with a reference), then the paper's number and Δ."""
    columns = [Column("method")]
    for s in settings:
        for _, label in metrics:
            columns.append(Column(label, s.label))
            if judge is not None and judge.reference and len(metrics) == 1:
                columns.append(Column(f"Δ vs {judge.reference} [95% CI]", s.label))
        if paper is not None:
            columns += [Column("paper", s.label), Column("Δ", s.label)]
    return columns


def _column_marks(stats, settings, methods, metrics, higher_is_better, judge):
    """The best / second marks per (setting, metric) column, settled by the judge if any."""
    marks: dict[tuple[str, str], dict[str, str]] = {}
    for s in settings:
        for m, _ in metrics:
            st = stats[m]
            means = {
                meth: st.loc[(meth, s.label), "mean"]
                for meth in methods
                if (meth, s.label) in st.index and st.loc[(meth, s.label), "n"] > 0
            }
            marks[(s.label, m)] = rank_marks(means, higher_is_better)
            if judge is not None:
                marks[(s.label, m)] = judge.settle(marks[(s.label, m)], means, s.label, m)
    return marks


def _paper_cells(fin, paper, meth, s, rec, used_tables: set, why: list) -> list[Cell]:
    """The paper's number and measured − paper for one method and setting (or why not)."""
    cell_rows = fin[(fin["method"] == meth) & (fin["setting"] == s.label)]
    pv, reason, note = paper_match(cell_rows, paper, s)
    mean = rec.loc[(meth, s.label), "mean"] if (meth, s.label) in rec.index else np.nan
    if pv is None:
        if note:
            why.append(f"{meth} on {s.label}: {reason}: {note}")
        return [Cell(reason), Cell("-")]
    used_tables.add(pv.table)
    delta = "-" if math.isnan(mean) else f"{mean - pv.value:+.2f}"
    return [Cell(fmt(pv.value)), Cell(delta)]


def _paper_notes(paper, used_tables: set, why: list) -> list[str]:
    cited = ", ".join(paper.table_title(t).split(":")[0] for t in sorted(used_tables))
    out = [
        "paper: the number the paper reports for the same method and setting"
        + (f" ({cited})" if cited else "")
        + "; Δ = measured mean − paper; '-' where the paper has no number. A number is shown "
        "only when the run's configuration (its label from loss, parameters, mixup and "
        "stages) is the paper row's and its setup (network, data, schedule) is the paper's; "
        "otherwise the cell says why."
    ]
    if why:
        out.append("Empty paper cells: " + _capped(list(dict.fromkeys(why))) + ".")
    return out


def metric_table(
    results: pd.DataFrame,
    metrics: list[tuple[str, str]],
    title: str,
    higher_is_better: bool,
    anchor: str,
    paper: PaperNumbers | None = None,
    judge: Judge | None = None,
    empty: set[tuple[str, str]] = frozenset(),
) -> Table:
    """Methods as rows; for every setting one column per metric ((column, label) pairs).

    ``empty``: (setting label, metric) of the groups without a class there: their cells read
    EMPTY ("–").

    With ``paper``, each setting also gets the paper's number and measured − paper (only
    sensible for a single metric: top-1 error). With ``judge`` (a comparer and an optional
    reference method), the best is marked only where it is distinguishable from the second,
    values indistinguishable from the best carry NEAR_BEST, and a single-metric table gets a
    "Δ vs reference" column per setting.
    """
    settings = settings_of(results)
    methods = methods_of(results)
    notes = _Notes(expected_seeds(results))
    stats = {m: summarize(results, m) for m, _ in metrics}
    columns = _columns(settings, metrics, judge, paper)
    marks = _column_marks(stats, settings, methods, metrics, higher_is_better, judge)
    with_delta = judge is not None and judge.reference and len(metrics) == 1

    used_tables: set[str] = set()
    why: list[str] = []
    fin = with_setting(results[results["status"] == "finished"])
    rows = []
    for meth in methods:
        row = [Cell(meth)]
        for s in settings:
            for m, _ in metrics:
                st = stats[m]
                rec = st.loc[(meth, s.label)] if (meth, s.label) in st.index else None
                text = notes.cell(rec, meth, s.label)
                if (s.label, m) in empty and rec is not None and int(rec["n"]) == 0:
                    text = EMPTY
                if judge is not None and meth in judge.near_best.get((s.label, m), ()):
                    text += f" {NEAR_BEST}"
                row.append(Cell(text, marks[(s.label, m)].get(meth, "")))
                if with_delta:
                    row.append(Cell(judge.delta_text(meth, s.label, m)))
            if paper is not None:
                rec = stats[metrics[0][0]]
                row += _paper_cells(fin, paper, meth, s, rec, used_tables, why)
        rows.append(row)

    rule = "Best per column: underlined bold; second best: bold."
    table_notes = [
        f"Mean ± standard deviation (ddof=1) over seeds, in percent; "
        f"{'higher' if higher_is_better else 'lower'} is better. "
        + (rule if judge is None else judge.rule_note())
    ]
    if paper is not None:
        table_notes += _paper_notes(paper, used_tables, why)
    table_notes += notes.lines()
    if judge is not None:
        table_notes += judge.notes([m for m, _ in metrics], len(metrics) == 1)
    if precision_note(results):
        table_notes.append(precision_note(results))
    return Table(title=title, columns=columns, rows=rows, notes=table_notes, anchor=anchor)


def result_tables(results: pd.DataFrame, paper: PaperNumbers | None, judge_for=None) -> list[Table]:
    """The report's tables of measured results, in reading order.

    ``judge_for(labels)`` (optional) gives each table its ``reports.judge.Judge``; ``labels``
    maps the table's metric columns to their names.
    """

    def judged(metrics):
        return None if judge_for is None else judge_for(dict(metrics))

    top1 = [("top1_error", "top-1 err")]
    shots = [("many_acc", "many"), ("medium_acc", "medium"), ("few_acc", "few")]
    parts = [("head_error", "head"), ("mid_error", "mid"), ("tail_error", "tail")]
    worst = has_values(results, "worst_class_error")
    if worst:  # older results.csv files lack it
        parts.append(("worst_class_error", "worst class"))
    framed = with_setting(results)
    tables = [
        metric_table(
            results,
            top1,
            "Top-1 error (%) on the balanced test set, final epoch",
            higher_is_better=False,
            anchor="top1",
            paper=paper,
            judge=judged(top1),
        ),
        metric_table(
            results,
            shots,
            _shots_title(framed),
            higher_is_better=True,
            anchor="shots",
            judge=judged(shots),
            empty=empty_groups(framed),
        ),
        metric_table(
            results,
            parts,
            "Head / Mid / Tail error (%): frequency groups 1-3, 4-7, 8-10 of 10"
            + ("; the worst class's error" if worst else ""),
            higher_is_better=False,
            anchor="parts",
            judge=judged(parts),
        ),
    ]
    notes = (
        (tables[0], subset_note(framed)),
        (tables[1], group_note(framed)),
        (tables[2], worst_class_note(framed)),
    )
    for table, note in notes:
        if note:
            table.notes.append(note)
    fin = results[results["status"] == "finished"]
    if pd.to_numeric(fin["ece"], errors="coerce").notna().any():
        tables.append(
            metric_table(
                results,
                [("ece", "ECE")],
                "Expected calibration error (%, 15 bins)",
                higher_is_better=False,
                anchor="ece",
                judge=judged([("ece", "ECE")]),
            )
        )
        tables[-1].notes.append(
            "Confidences: the softmax of the loss's evaluation logits (a cosine head: its "
            "scale s times the cosines) for trained rows; a post-hoc row [rule] uses the rule's "
            "own logits (train-logits: the training logits without margins; logit-adjust: "
            "those minus τ log prior; tau-norm: the τ-normalised scores times s)."
        )
    return tables


def _shots_title(framed: pd.DataFrame) -> str:
    """The many / medium / few table's title, with the thresholds when every finished row has
    the paper's (100 and 20) or has none recorded."""
    fin = framed[framed["status"] == "finished"]
    recorded = {
        (int(m), int(f))
        for m, f in zip(
            pd.to_numeric(fin.get("many_shot", pd.Series(dtype=float)), errors="coerce"),
            pd.to_numeric(fin.get("few_shot", pd.Series(dtype=float)), errors="coerce"),
            strict=True,
        )
        if not (math.isnan(m) or math.isnan(f))
    }
    title = "Many / medium / few-shot accuracy (%)"
    if recorded <= {(100, 20)}:
        return title + ": > 100, 20-100, < 20 training images"
    return title + ": thresholds per setting in the notes"


def per_group_errors(per_class: pd.DataFrame, finished_trials: set[str]) -> pd.DataFrame:
    """Error (%) per frequency group and trial, as in the paper's Figs. 6 and 7.

    Classes are sorted by training count (most frequent first). Ten classes or fewer: one
    group per class. More: 10 groups of consecutive classes (CIFAR-100: 10 classes each).
    A post-hoc rule's rows (method `m [rule]`) are grouped apart from the trained model's.
    Columns: trial, method, dataset, rho, seed, group (1-based), n_groups, error.
    """
    pc = per_class[per_class["trial"].isin(finished_trials)]
    out = []
    # one trial has one set of rows per decision rule; its `method` names the rule ("ce [tau-norm]")
    for (trial, _), g in pc.groupby(["trial", "method"], sort=False):
        g = g.sort_values("class", kind="stable")
        counts = pd.to_numeric(g["count"], errors="coerce").to_numpy()
        err = 100.0 - pd.to_numeric(g["accuracy"], errors="coerce").to_numpy()
        order = np.argsort(-counts, kind="stable")
        n_groups = min(N_GROUPS, len(order))
        first = g.iloc[0]
        for k, idx in enumerate(np.array_split(order, n_groups), start=1):
            out.append(
                (
                    trial,
                    first["method"],
                    first["dataset"],
                    float(first["rho"]),
                    first["seed"],
                    k,
                    n_groups,
                    float(np.nanmean(err[idx])),
                )
            )
    cols = ["trial", "method", "dataset", "rho", "seed", "group", "n_groups", "error"]
    return pd.DataFrame(out, columns=cols)


def group_labels(n_groups: int, grouped: bool) -> list[str]:
    """Tick labels: Head1-3 / Mid1-4 / Tail1-3 for exactly ten groups, else Class/Group k."""
    if n_groups == N_GROUPS:
        labels, seen = [], {}
        for part in PART_NAMES:
            seen[part] = seen.get(part, 0) + 1
            labels.append(f"{part}{seen[part]}")
        return labels
    word = "Group" if grouped else "Class"
    return [f"{word} {k}" for k in range(1, n_groups + 1)]


def reference_table(paper: PaperNumbers) -> Table:
    """All of the paper's rows (Tables 3-7) over its six settings, paper-only rows included."""
    cols = [Column("paper's method"), Column("ltbench")]
    for d, r in PAPER_SETTINGS:
        cols.append(Column("ResNet-50" if r is None else f"ρ={_num(r)}", d))
    cols.append(Column("tables"))
    rows = []
    for key, name, values in reference_rows(paper):
        label = "(paper only)" if key in paper.paper_only else key
        cells = [Cell(name), Cell(label)]
        cells += [Cell("-" if v is None or v.value is None else fmt(v.value)) for v in values]
        tabs = sorted(
            {
                t.replace("table", "")
                for t, body in paper.tables.items()
                if key in (body.get("values") or {})
            }
        )
        cells.append(Cell(", ".join(tabs)))
        rows.append(cells)
    notes = [
        "Top-1 error (%) as printed in the paper (ResNet-32 on CIFAR, ResNet-50 on ImageNet-LT "
        "and iNaturalist 2018); '-': not reported. Paper-only rows are methods ltbench does "
        "not implement.",
    ]
    return Table("Paper reference numbers", cols, rows, notes, anchor="paper")
