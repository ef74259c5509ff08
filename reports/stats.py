"""The statistics behind "is this difference real": intervals of a difference, the bootstrap
over test images, and the power of a t-test. Every number comes from ``scipy.stats``; the
formulas are written out in docs/DESIGN.md ("Differences and their uncertainty").

All differences are "method minus other" in the metric's own unit (percentage points).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

LEVEL = 0.95  # confidence level of every interval
ALPHA = 1.0 - LEVEL  # two-sided test level of the power calculations
POWER = 0.80  # power at which a difference counts as detectable
N_BOOT = 2000  # bootstrap resamples
BOOT_SEED = 0  # the bootstrap's generator seed: a report is reproducible
MAX_SEEDS = 1000  # seeds_needed gives up above this

PAIRED = "paired t"
WELCH = "Welch t"
BOOTSTRAP = "bootstrap"


@dataclass(frozen=True)
class Interval:
    """A difference with its 95 % interval. ``kind``: PAIRED, WELCH or BOOTSTRAP; ``n``: the
    seeds (pairs, or the smaller group for Welch) or, for the bootstrap, the test images."""

    delta: float
    low: float
    high: float
    kind: str
    n: int

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0: the difference is distinguishable from none."""
        return bool(self.low > 0 or self.high < 0)

    def text(self) -> str:
        """E.g. "-1.23 [-2.10, -0.36]"."""
        return f"{self.delta:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def _quiet(fn, *args, **kwargs):
    """scipy warns on data with (nearly) no spread; such data are legal here (a constant
    difference has the degenerate interval [d, d])."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def paired_interval(a, b) -> Interval:
    """Mean of a - b over paired seeds, with the t-interval of ``scipy.stats.ttest_rel``.
    Needs at least two pairs."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired interval needs >= 2 pairs, got {len(a)} and {len(b)}")
    d = a - b
    if np.ptp(d) <= 1e-9 * max(1.0, float(np.abs(d).max())):
        mean = float(d.mean())  # a constant difference: the interval is that difference
        return Interval(mean, mean, mean, PAIRED, len(d))
    ci = _quiet(stats.ttest_rel, a, b).confidence_interval(LEVEL)
    return Interval(float(d.mean()), float(ci.low), float(ci.high), PAIRED, len(d))


def welch_interval(a, b) -> Interval:
    """Mean(a) - mean(b) of unpaired seeds, with the Welch t-interval of
    ``scipy.stats.ttest_ind(equal_var=False)``. Needs at least two values on each side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a Welch interval needs >= 2 values a side, got {len(a)} and {len(b)}")
    delta = float(a.mean() - b.mean())
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Interval(delta, delta, delta, WELCH, min(len(a), len(b)))
    ci = _quiet(stats.ttest_ind, a, b, equal_var=False).confidence_interval(LEVEL)
    return Interval(delta, float(ci.low), float(ci.high), WELCH, min(len(a), len(b)))


def least_favourable_pairs(wrong_a, wrong_b, totals) -> tuple[np.ndarray, np.ndarray]:
    """Per-image differences (error of a minus error of b: +1, -1 or 0) and their class,
    built from per-class error counts when the per-image pairing is not recorded.

    Within a class of n images with e_a and e_b errors, q = min(e_b, n - e_a) images are
    wrong for b only and p = q + e_a - e_b for a only: the most discordant pairing the counts
    allow, which gives the paired difference its largest variance (so the widest interval).
    Returns (d, class index) arrays of length sum(totals).
    """
    d_parts, cls_parts = [], []
    for c, (ea, eb, n) in enumerate(zip(wrong_a, wrong_b, totals, strict=True)):
        ea, eb, n = int(ea), int(eb), int(n)
        if n <= 0:
            continue
        q = min(eb, n - ea)
        p = q + ea - eb
        d_parts.append(np.repeat([1.0, -1.0, 0.0], [p, q, n - p - q]))
        cls_parts.append(np.full(n, c))
    if not d_parts:
        return np.zeros(0), np.zeros(0, dtype=int)
    return np.concatenate(d_parts), np.concatenate(cls_parts)


def bootstrap_interval(d, weights) -> Interval:
    """Weighted mean of the per-image differences ``d`` (x 100: percentage points) with a
    paired percentile bootstrap interval: N images drawn with replacement, each carrying both
    methods' outcomes, N_BOOT times. ``weights`` per image make the statistic the report's
    metric: 1 for the instance-weighted top-1 error, 1/n_c on a group's classes for a
    per-class mean.

    The statistic depends on a resample only through how often each distinct (d, weight)
    image kind was drawn, so a resample is drawn as those counts, a multinomial over the kinds
    (``scipy.stats.multinomial``): the same distribution as ``scipy.stats.bootstrap``'s
    resampling of the images, at a cost that does not grow with N (50,000 ImageNet-LT test
    images: milliseconds, not seconds)."""
    d, w = np.asarray(d, dtype=float), np.asarray(weights, dtype=float)
    keep = w > 0
    d, w = d[keep], w[keep]
    if len(d) == 0:
        raise ValueError("no test image to resample")
    delta = float(100.0 * (d * w).sum() / w.sum())
    if np.ptp(d) == 0:
        return Interval(delta, delta, delta, BOOTSTRAP, len(d))
    kinds, counts = np.unique(np.stack([d, w], axis=1), axis=0, return_counts=True)
    draws = stats.multinomial.rvs(
        len(d), counts / counts.sum(), size=N_BOOT, random_state=np.random.default_rng(BOOT_SEED)
    ).astype(float)
    total = draws @ kinds[:, 1]
    boot = 100.0 * (draws @ (kinds[:, 0] * kinds[:, 1]))[total > 0] / total[total > 0]
    low, high = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(delta, float(low), float(high), BOOTSTRAP, len(d))


def power(delta: float, sd_diff: float, n: int, paired: bool) -> float:
    """Probability that a two-sided t-test at level ALPHA finds a true difference ``delta``
    with ``n`` seeds per method, when one seed's difference has standard deviation
    ``sd_diff`` (paired: of the paired differences; unpaired: sqrt(2) x a method's seed
    standard deviation). The statistic follows a noncentral t (``scipy.stats.nct``) with
    df = n - 1 (paired) or 2(n - 1) (Welch, equal spreads) and noncentrality delta sqrt(n)/sd."""
    if n < 2:
        return math.nan
    df = n - 1 if paired else 2 * (n - 1)
    crit = stats.t.ppf(1 - ALPHA / 2, df)
    if sd_diff <= 0:
        return 1.0 if delta != 0 else ALPHA
    nc = abs(delta) * math.sqrt(n) / sd_diff
    lower = stats.nct.cdf(-crit, df, nc)  # the wrong-sign tail: tiny, NaN where it underflows
    return float(stats.nct.sf(crit, df, nc) + (0.0 if math.isnan(lower) else lower))


def detectable_difference(sd_diff: float, n: int, paired: bool) -> float:
    """The smallest difference (points) detected with probability POWER at level ALPHA with
    ``n`` seeds (``power`` = POWER solved by ``scipy.optimize.brentq``); NaN below 2 seeds."""
    if n < 2 or not math.isfinite(sd_diff):
        return math.nan
    if sd_diff <= 0:
        return 0.0
    hi = sd_diff
    while power(hi, sd_diff, n, paired) < POWER:
        hi *= 2
    return float(optimize.brentq(lambda x: power(x, sd_diff, n, paired) - POWER, 0.0, hi))


def seeds_needed(delta: float, sd_diff: float, paired: bool) -> int | None:
    """The fewest seeds per method (>= 2) at which ``power`` reaches POWER for ``delta``;
    None when more than MAX_SEEDS would be needed or the spread is unknown."""
    if not math.isfinite(sd_diff):
        return None
    for n in range(2, MAX_SEEDS + 1):
        if power(delta, sd_diff, n, paired) >= POWER:
            return n
    return None
