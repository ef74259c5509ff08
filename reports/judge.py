"""The marks and notes that say which differences of a table are real (one ``Judge`` per
table): Δ against the reference with its interval, "distinguishable from the reference",
"indistinguishable from the best", the best marked only where it is distinguishable from the
second, and how many seeds would settle a difference (the table's notes)."""

from __future__ import annotations

import pandas as pd

from ltbench.errors import LtbenchError
from reports.compare import Comparer
from reports.content import BEST, Cell, Column, Table
from reports.stats import (
    ALPHA,
    BOOTSTRAP,
    N_BOOT,
    PAIRED,
    POWER,
    Interval,
    detectable_difference,
    seeds_needed,
)
from reports.tables import (
    DISTINCT,
    NEAR_BEST,
    TEST_NOISE,
    _capped,
    expected_seeds,
    methods_of,
    settings_of,
)

REFERENCE_DEFAULT = "ce"  # the plain baseline: the reference when the run has it


def choose_reference(results: pd.DataFrame, asked: str | None, recorded: str | None) -> str | None:
    """The reference method of a run's tables: ``asked`` (--reference), else ``recorded`` (the
    suite's `reference:` as DIR/suite.yaml keeps it), else "ce" when the run has it, else
    none. A named reference that is not a method of the run is an error naming the methods."""
    methods = methods_of(results)
    for name, where in ((asked, "--reference"), (recorded, "the suite's reference")):
        if name:
            if name not in methods:
                raise LtbenchError(
                    f"{where} {name!r} is not a method of this run; its methods: "
                    + ", ".join(methods)
                )
            return name
    return REFERENCE_DEFAULT if REFERENCE_DEFAULT in methods else None


class Judge:
    """Intervals and marks of one table; collects what its notes must say."""

    def __init__(self, comparer: Comparer, reference: str | None, labels: dict[str, str]):
        self.comparer = comparer
        self.reference = reference
        self.labels = labels  # metric column -> its name in the table ("top-1 err")
        self.near_best: dict[tuple[str, str], set[str]] = {}
        self.unsettled: list[str] = []  # columns whose best is not distinguishable
        self.kinds: set[str] = set()
        self.bootstrap_images: set[int] = set()
        self.missing: list[tuple[str, str]] = []  # (whose cell, why it has no interval)

    def _note_interval(self, iv: Interval | None) -> Interval | None:
        if iv is not None:
            self.kinds.add(iv.kind)
            if iv.kind == BOOTSTRAP:
                self.bootstrap_images.add(iv.n)
        return iv

    def settle(self, marks: dict[str, str], means: dict, setting: str, metric: str):
        """The column's best / second marks, kept only where the best is distinguishable from
        every second; records the methods indistinguishable from the best."""
        best = [m for m, k in marks.items() if k == BEST]
        second = [m for m, k in marks.items() if k and k != BEST]
        if len(best) != 1:
            self.near_best[(setting, metric)] = set()
            if len(best) > 1:
                self.unsettled.append(f"{setting} {self.labels[metric]} (tie)")
            return {} if len(best) > 1 else marks
        near = set()
        for m in means:
            if m == best[0]:
                continue
            iv = self._note_interval(self.comparer.interval(m, best[0], setting, metric))
            if iv is not None and not iv.distinguishable:
                near.add(m)
        self.near_best[(setting, metric)] = near
        if not second:
            return marks
        cmp = self.comparer
        if all(m not in near and cmp.interval(m, best[0], setting, metric) for m in second):
            return marks
        self.unsettled.append(f"{setting} {self.labels[metric]}")
        return {}

    def delta_text(self, method: str, setting: str, metric: str) -> str:
        """The Δ-vs-reference cell: "+1.23 [+0.40, +2.06] *", "reference", "-" or "n/a"."""
        ref = self.reference
        if method == ref:
            return "reference"
        if self.comparer.values(method, setting, metric).empty:
            return "-"
        if self.comparer.values(ref, setting, metric).empty:
            self.missing.append(("", f"{ref} has no finished seed on {setting}"))
            return "n/a"
        iv = self._note_interval(self.comparer.interval(method, ref, setting, metric))
        if iv is None:
            why = self._why_no_interval(method, setting, metric)
            self.missing.append((f"{method} on {setting}", why))
            return "n/a"
        text = iv.text()
        if iv.kind == BOOTSTRAP:
            text += f" {TEST_NOISE}"
        return text + (f" {DISTINCT}" if iv.distinguishable else "")

    def _why_no_interval(self, method: str, setting: str, metric: str) -> str:
        """Why a Δ cell has no interval: one seed against several, or one seed each on a metric
        that the test images cannot resample (ECE: not a mean over images), or, with several
        seeds, seeds that neither pair nor number two on each side."""
        seeds = [len(self.comparer.values(m, setting, metric)) for m in (method, self.reference)]
        if seeds == [1, 1]:
            return f"one seed each, and {self.labels[metric]} has no bootstrap over test images"
        if 1 in seeds:
            return "one seed against several"
        return "seeds that neither pair nor number two on each side"

    def rule_note(self) -> str:
        """The marking rule, for the table's first note."""
        return (
            f"Best per column: underlined bold, second best: bold, both only where the best is "
            f"distinguishable from the second (the {LEVEL_PCT} interval of their difference "
            f"excludes 0); {NEAR_BEST}: indistinguishable from the column's best (the interval "
            "of the difference includes 0)."
        )

    def notes(self, metrics: list[str], with_delta: bool) -> list[str]:
        """The table's notes on differences: intervals used, marks, seeds that would settle."""
        out = []
        if self.unsettled:
            out.append(
                "No best marked (best not distinguishable from the second): "
                + _capped(list(dict.fromkeys(self.unsettled)))
                + "."
            )
        if with_delta and self.reference:
            out.append(
                f"Δ vs {self.reference}: method − {self.reference} in points with its "
                f"{LEVEL_PCT} interval: a paired t-interval over seeds where both ran the same "
                "(seed, subset_seed) pairs, else a Welch t-interval; "
                f"{DISTINCT}: distinguishable from {self.reference} (the interval excludes 0). "
                f"Intervals here: {', '.join(sorted(self.kinds)) or 'none'}."
            )
        if BOOTSTRAP in self.kinds:
            images = ", ".join(str(n) for n in sorted(self.bootstrap_images))
            out.append(
                f"{TEST_NOISE} test-set noise only: one seed on each side, so the interval is a "
                f"paired bootstrap ({N_BOOT} resamples, percentile) over the {images} test "
                "images; it says nothing about the spread between training runs. Which images "
                "both methods got right is not recorded (result.json keeps the confusion "
                "matrix), so the least favourable pairing of the two confusion matrices is "
                "used: the interval is, if anything, too wide."
            )
        if self.missing:
            out.append("n/a: " + self.missing_note() + ".")
        out.append(self.power_note(metrics))
        return out

    def missing_note(self) -> str:
        """The n/a cells' reasons, each said once with the cells it applies to."""
        cells: dict[str, list[str]] = {}
        for who, why in dict.fromkeys(self.missing):
            cells.setdefault(why, [])
            if who:
                cells[why].append(who)
        return "; ".join(
            f"{_capped(who, sep=', ')}: {why}" if who else why for why, who in cells.items()
        )

    def power_note(self, metrics: list[str]) -> str:
        """Smallest detectable difference at the run's seeds; seeds needed for 1 point."""
        fin = self.comparer.fin
        n = expected_seeds(fin)
        test = "paired t-test"
        parts = []
        for metric in metrics:
            pairs = self._pairs(metric)
            sd, paired = self.comparer.pooled_sd(pairs, metric)
            if n < 2 or sd != sd:
                continue
            test = PAIRED + "-test" if paired else "Welch t-test"
            need = seeds_needed(1.0, sd, paired)
            parts.append(
                f"{self.labels[metric]}: {detectable_difference(sd, n, paired):.2f} points "
                f"({test}; pooled standard deviation of one seed's difference {sd:.2f}); "
                f"1 point needs {need if need else f'more than {1000}'} seeds per method"
            )
        if not parts:
            return (
                "Smallest detectable difference: not estimable from one seed per cell (no "
                "spread between training runs to measure); run at least 2 seeds."
            )
        return (
            f"Smallest difference this run detects with its {n} seeds, at {POWER:.0%} power and "
            f"two-sided α = {ALPHA:.2f}: " + "; ".join(parts) + "."
        )

    def _pairs(self, metric: str) -> list[tuple[str, str, str]]:
        """The comparisons whose spread measures the table's noise: every method against the
        reference, or against the first method when there is none."""
        fin = self.comparer.fin
        methods = methods_of(fin)
        other = self.reference or (methods[0] if methods else None)
        return [(m, other, s.label) for s in settings_of(fin) for m in methods if m != other]


LEVEL_PCT = "95 %"


def delta_table(
    judge: Judge, metrics: list[tuple[str, str]], title: str, anchor: str
) -> Table | None:
    """Δ vs the reference with intervals, one column per (setting, metric); None without a
    reference."""
    if not judge.reference:
        return None
    fin = judge.comparer.fin
    settings = settings_of(fin)
    columns = [Column("method")]
    for s in settings:
        columns += [Column(label, s.label) for _, label in metrics]
    rows = []
    for meth in methods_of(judge.comparer.fin):
        row = [Cell(meth)]
        for s in settings:
            row += [Cell(judge.delta_text(meth, s.label, m)) for m, _ in metrics]
        rows.append(row)
    notes = judge.notes([m for m, _ in metrics], with_delta=True)
    return Table(title, columns, rows, notes, anchor=anchor)
