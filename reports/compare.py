"""Which differences are real: one method against another (the reference, the best) on one
setting and metric, from the seeds in results.csv or, with one seed each, from the test images.

The rule (docs/DESIGN.md, "Differences and their uncertainty"):

* seeds pair when both methods ran the same (seed, subset_seed) pairs, each once: the paired
  t-interval of the per-seed differences;
* otherwise, with >= 2 seeds on each side: the Welch t-interval;
* one seed on each side: a paired bootstrap over the test images, which measures test-set
  noise only (not the spread between training runs). The per-image pairing of the two
  methods' outcomes is not recorded (result.json keeps the confusion matrix), so the pairing
  within each class is the least favourable one the two confusion matrices allow
  (``reports.stats.least_favourable_pairs``): the interval is, if anything, too wide.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ltbench.schema import RESULT_FILE, read_result, trial_dir
from reports.stats import (
    PAIRED,
    Interval,
    bootstrap_interval,
    least_favourable_pairs,
    paired_interval,
    welch_interval,
)
from reports.tables import with_setting

PAIR_KEYS = ["seed", "subset_seed"]
# the default group thresholds (a row records its own: many_shot, few_shot), as
# ltbench.engine.metrics (a test checks)
MANY_SHOT, FEW_SHOT, N_GROUPS = 100, 20, 10
ACCURACY_METRICS = ("many_acc", "medium_acc", "few_acc")
PART_METRICS = ("head_error", "mid_error", "tail_error")


def head_mid_tail_parts(train_counts) -> dict[str, np.ndarray]:
    """Class indices of Head / Mid / Tail, the rule of ltbench.engine.metrics (which reports
    may not import): 10 groups by training count, 3 / 4 / 3 of them; fewer than 10 classes:
    the first 30 %, the next 40 %, the rest of the classes by count."""
    counts = np.asarray(train_counts)
    order = np.argsort(-counts, kind="stable")
    c = len(counts)
    if c >= N_GROUPS:
        groups = np.array_split(order, N_GROUPS)
        return {
            "head": np.concatenate(groups[0:3]),
            "mid": np.concatenate(groups[3:7]),
            "tail": np.concatenate(groups[7:10]),
        }
    rank = np.arange(c) / c
    return {
        "head": order[rank < 0.3],
        "mid": order[(rank >= 0.3) & (rank < 0.7)],
        "tail": order[rank >= 0.7],
    }


def class_weights(
    metric: str, train_counts, test_totals, shots: tuple[int, int] = (MANY_SHOT, FEW_SHOT)
) -> tuple[np.ndarray, float] | None:
    """Per-class weights w_c and a sign such that sign x sum_c w_c e_c / sum_c w_c n_c (e_c:
    errors of class c) is the metric: the top-1 error weighs every image alike; a group's
    error or accuracy is the mean of its classes' (w_c = 1/n_c on the group). None for a
    metric the test images do not decompose into (ECE, the worst class). ``shots``: the
    (many_shot, few_shot) thresholds of the many / medium / few groups."""
    counts = np.asarray(train_counts, dtype=float)
    totals = np.asarray(test_totals, dtype=float)
    per_class = np.where(totals > 0, 1.0 / np.maximum(totals, 1), 0.0)
    if metric == "top1_error":
        return np.ones(len(totals)), 1.0
    if metric in PART_METRICS:
        member = np.zeros(len(totals), dtype=bool)
        member[head_mid_tail_parts(counts)[metric.removesuffix("_error")]] = True
        return per_class * member, 1.0
    if metric in ACCURACY_METRICS:
        many, few = shots
        member = {
            "many_acc": counts > many,
            "medium_acc": (counts >= few) & (counts <= many),
            "few_acc": counts < few,
        }[metric]
        return per_class * member, -1.0
    return None


class Comparer:
    """Intervals of differences between methods of one run (results.csv, per_class.csv and,
    for one seed, the trials' result.json for the test images per class)."""

    def __init__(self, results: pd.DataFrame, per_class: pd.DataFrame | None, run_dir=None):
        self.fin = with_setting(results[results["status"] == "finished"])
        self.per_class = per_class
        self.run_dir = run_dir
        self._totals: dict[str, np.ndarray | None] = {}
        self._cache: dict[tuple, Interval | None] = {}

    def values(self, method: str, setting: str, metric: str) -> pd.DataFrame:
        """The finished seeds of a cell: trial, seed, subset_seed and the metric as `value`."""
        rows = self.fin[(self.fin["method"] == method) & (self.fin["setting"] == setting)]
        out = rows[["trial", *PAIR_KEYS]].copy()
        out["value"] = pd.to_numeric(rows[metric], errors="coerce")
        return out.dropna(subset=["value"])

    def interval(self, method: str, other: str, setting: str, metric: str) -> Interval | None:
        """metric(method) - metric(other) on ``setting`` with its 95 % interval; None when
        neither seeds nor test images allow one (e.g. one seed against several)."""
        key = (method, other, setting, metric)
        if key not in self._cache:
            self._cache[key] = self._interval(method, other, setting, metric)
        return self._cache[key]

    def _interval(self, method, other, setting, metric) -> Interval | None:
        a = self.values(method, setting, metric)
        b = self.values(other, setting, metric)
        if a.empty or b.empty:
            return None
        if len(a) == 1 and len(b) == 1:
            return self._bootstrap(a.iloc[0], b.iloc[0], method, other, metric)
        unique = not a.duplicated(PAIR_KEYS).any() and not b.duplicated(PAIR_KEYS).any()
        pairs = a.merge(b, on=PAIR_KEYS, suffixes=("_a", "_b"))
        if unique and len(pairs) >= 2 and len(pairs) == len(a) == len(b):
            return paired_interval(pairs["value_a"], pairs["value_b"])
        if len(a) >= 2 and len(b) >= 2:
            return welch_interval(a["value"], b["value"])
        return None

    def _class_rows(self, trial: str, method: str) -> pd.DataFrame | None:
        if self.per_class is None:
            return None
        pc = self.per_class
        rows = pc[(pc["trial"] == trial) & (pc["method"] == method)]
        return rows.sort_values("class", kind="stable") if len(rows) else None

    def shot_thresholds(self, trial: str) -> tuple[int, int]:
        """(many_shot, few_shot) a trial's row records (the defaults where it records none)."""
        rows = self.fin[self.fin["trial"] == trial]
        out = []
        for column, default in (("many_shot", MANY_SHOT), ("few_shot", FEW_SHOT)):
            values = pd.to_numeric(rows.get(column, pd.Series(dtype=float)), errors="coerce")
            values = values.dropna()
            out.append(int(values.iloc[0]) if len(values) else default)
        return out[0], out[1]

    def test_totals(self, trial: str) -> np.ndarray | None:
        """Test images per class of a trial: the row sums of result.json's confusion matrix."""
        if trial not in self._totals:
            totals = None
            if self.run_dir is not None:
                result = read_result(trial_dir(self.run_dir, trial) / RESULT_FILE) or {}
                cm = result.get("confusion_matrix")
                if cm:
                    totals = np.asarray(cm, dtype=float).sum(axis=1)
            self._totals[trial] = totals
        return self._totals[trial]

    def _bootstrap(self, ra, rb, method, other, metric) -> Interval | None:
        ca, cb = self._class_rows(ra["trial"], method), self._class_rows(rb["trial"], other)
        ta, tb = self.test_totals(ra["trial"]), self.test_totals(rb["trial"])
        if ca is None or cb is None or ta is None or tb is None:
            return None
        if not (len(ca) == len(cb) == len(ta) == len(tb)) or not np.array_equal(ta, tb):
            return None  # not the same test set
        shots = {self.shot_thresholds(ra["trial"]), self.shot_thresholds(rb["trial"])}
        if len(shots) != 1:
            return None  # groups cut at other thresholds: not the same metric
        counts = pd.to_numeric(ca["count"], errors="coerce")
        weights = class_weights(metric, counts, ta, shots.pop())
        if weights is None:
            return None
        w_class, sign = weights
        acc_a = pd.to_numeric(ca["accuracy"], errors="coerce").to_numpy()
        acc_b = pd.to_numeric(cb["accuracy"], errors="coerce").to_numpy()
        known = ~(np.isnan(acc_a) | np.isnan(acc_b))
        w_class = np.where(known, w_class, 0.0)
        wrong_a = np.rint(ta - np.nan_to_num(acc_a) * ta / 100.0)
        wrong_b = np.rint(tb - np.nan_to_num(acc_b) * tb / 100.0)
        d, cls = least_favourable_pairs(wrong_a, wrong_b, ta)
        if not (w_class[cls] > 0).any():
            return None
        iv = bootstrap_interval(d, w_class[cls])
        if sign < 0:
            iv = Interval(-iv.delta, -iv.high, -iv.low, iv.kind, iv.n)
        return iv

    def pooled_sd(self, pairs, metric: str) -> tuple[float, bool]:
        """The standard deviation of one seed's difference, pooled over (method, other, setting)
        ``pairs``: of the paired differences where every comparison pairs (returned paired=True),
        else sqrt(2) x the pooled within-cell seed standard deviation. NaN when no cell has two
        seeds."""
        paired_ss, paired_df, all_paired = 0.0, 0, True
        cells: dict[tuple[str, str], pd.Series] = {}
        for method, other, setting in pairs:
            a = self.values(method, setting, metric)
            b = self.values(other, setting, metric)
            cells[(method, setting)], cells[(other, setting)] = a["value"], b["value"]
            iv = self.interval(method, other, setting, metric)
            if iv is None or iv.kind != PAIRED:
                all_paired = False
                continue
            d = a.merge(b, on=PAIR_KEYS)
            diff = d["value_x"] - d["value_y"]
            paired_ss += float(((diff - diff.mean()) ** 2).sum())
            paired_df += len(diff) - 1
        if all_paired and paired_df > 0:
            return math.sqrt(paired_ss / paired_df), True
        ss = sum(float(((v - v.mean()) ** 2).sum()) for v in cells.values() if len(v) >= 2)
        df = sum(len(v) - 1 for v in cells.values() if len(v) >= 2)
        return (math.sqrt(2.0 * ss / df), False) if df > 0 else (math.nan, False)
