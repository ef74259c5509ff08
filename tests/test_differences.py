"""Which differences are real (issue 27): intervals, marks and power on constructed results.

Every expected number here comes from an independent source: the construction itself (a
constant 2-point difference), the binomial law of false positives, the normal approximation
of a bootstrap, or the textbook large-sample formula of a t-test's power.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from ltbench.errors import LtbenchError
from ltbench.schema import RESULTS_COLUMNS
from reports import build_report
from reports.compare import Comparer, head_mid_tail_parts
from reports.judge import Judge, choose_reference
from reports.markdown import table_markdown
from reports.stats import (
    ALPHA,
    BOOTSTRAP,
    PAIRED,
    POWER,
    WELCH,
    bootstrap_interval,
    detectable_difference,
    least_favourable_pairs,
    power,
    seeds_needed,
)
from reports.tables import metric_table


def _results(values: dict[str, list[float]], seeds=None, subset_seeds=None) -> pd.DataFrame:
    """Finished cifar10-lt rho-100 rows: one per (method, seed) with that top-1 error."""
    rows = []
    for method, errs in values.items():
        for i, e in enumerate(errs):
            rows.append(
                {
                    "trial": f"{method}__s{i}",
                    "method": method,
                    "dataset": "cifar10-lt",
                    "rho": 100.0,
                    "seed": (seeds or {}).get(method, list(range(len(errs))))[i],
                    "subset_seed": (subset_seeds or {}).get(method, [0] * len(errs))[i],
                    "status": "finished",
                    "top1_error": e,
                }
            )
    return pd.DataFrame(rows)


def _table(results, reference="ce", per_class=None, run_dir=None):
    comparer = Comparer(results, per_class, run_dir)
    judge = Judge(comparer, reference, {"top1_error": "err"})
    return metric_table(results, [("top1_error", "err")], "t", False, "top1", judge=judge)


def _cells(table) -> dict[str, list[str]]:
    return {row[0].text: [c.text for c in row[1:]] for row in table.rows}


SETTING = "cifar10-lt ρ=100"


def test_a_constant_two_point_difference_is_distinguishable():
    rng = np.random.default_rng(0)
    base = 30 + rng.normal(0, 1.5, 5)  # the seed moves both methods alike
    results = _results({"ce": list(base), "kps": list(base - 2.0)})
    iv = Comparer(results, None).interval("kps", "ce", SETTING, "top1_error")
    assert iv.kind == PAIRED and iv.n == 5
    assert (iv.delta, iv.low, iv.high) == pytest.approx((-2.0, -2.0, -2.0))
    assert iv.distinguishable
    cells = _cells(_table(results))
    assert cells["kps"][1] == "-2.00 [-2.00, -2.00] *"
    assert cells["ce"][1] == "reference"
    md = table_markdown(_table(results))
    assert "<u>**" in md  # the best is distinguishable from the second, so it is bold


def test_same_distribution_false_positive_rate_over_200_draws():
    """Two methods drawn from one distribution (3 seeds each): a 95 % interval excludes 0 in
    5 % of draws. Over 200 draws the count of "distinguishable" is Binomial(200, 0.05): mean
    10; we accept 2..21, outside of which a correct test lands with probability < 0.2 %
    (so a too-eager test, or one that never fires, fails)."""
    lo, hi = sps.binom.ppf(0.001, 200, ALPHA), sps.binom.ppf(0.999, 200, ALPHA)
    assert (lo, hi) == (2, 21)
    rng = np.random.default_rng(2027)
    for kind, seeds in ((PAIRED, None), (WELCH, {"kps": [10, 11, 12]})):
        hits = 0
        for _ in range(200):
            draws = rng.normal(30, 1.0, (2, 3))
            results = _results({"ce": list(draws[0]), "kps": list(draws[1])}, seeds=seeds)
            iv = Comparer(results, None).interval("kps", "ce", SETTING, "top1_error")
            assert iv.kind == kind
            hits += iv.distinguishable
        assert lo <= hits <= hi, (kind, hits)


def test_seeds_pair_only_on_the_same_seed_and_subset():
    errs = {"ce": [30.0, 31.0, 29.5], "kps": [28.0, 29.5, 28.1]}
    paired = Comparer(_results(errs), None).interval("kps", "ce", SETTING, "top1_error")
    other_subset = _results(errs, subset_seeds={"kps": [1, 1, 1]})
    welch = Comparer(other_subset, None).interval("kps", "ce", SETTING, "top1_error")
    assert paired.kind == PAIRED and welch.kind == WELCH
    ref = sps.ttest_ind(errs["kps"], errs["ce"], equal_var=False).confidence_interval(0.95)
    assert (welch.low, welch.high) == pytest.approx((ref.low, ref.high))
    ref = sps.ttest_rel(errs["kps"], errs["ce"]).confidence_interval(0.95)
    assert (paired.low, paired.high) == pytest.approx((ref.low, ref.high))


def _one_seed_run(root: Path, n_per_class=100, acc=None) -> Path:
    """A run directory with one seed of ce and kps on a 10-class balanced test set."""
    acc = acc or {"ce": [90, 85, 80, 75, 70, 60, 50, 40, 30, 20], "kps": [88] * 10}
    counts = [500, 300, 200, 120, 80, 50, 30, 20, 10, 5]
    rows, pc = [], []
    for method, a in acc.items():
        trial = f"{method}__s0"
        row = dict.fromkeys(RESULTS_COLUMNS, math.nan)
        correct = np.rint(np.asarray(a) * n_per_class / 100).astype(int)
        row.update(
            trial=trial,
            method=method,
            params="{}",
            dataset="cifar10-lt",
            imb_factor=0.01,
            rho=100,
            seed=0,
            subset_seed=0,
            status="finished",
            error="",
            rule="raw",
            top1_error=100 - 100 * correct.sum() / (10 * n_per_class),
        )
        rows.append(row)
        for c in range(10):
            pc.append(
                {"trial": trial, "method": method, "dataset": "cifar10-lt", "rho": 100,
                 "seed": 0, "class": c, "class_name": str(c), "count": counts[c],
                 "accuracy": 100 * correct[c] / n_per_class, "rule": "raw"}
            )  # fmt: skip
        cm = np.zeros((10, 10), dtype=int)
        for c in range(10):
            cm[c, c] = correct[c]
            cm[c, (c + 1) % 10] = n_per_class - correct[c]
        tdir = root / "trials" / trial
        tdir.mkdir(parents=True)
        (tdir / "result.json").write_text(json.dumps({"confusion_matrix": cm.tolist()}))
    pd.DataFrame(rows, columns=RESULTS_COLUMNS).to_csv(root / "results.csv", index=False)
    pd.DataFrame(pc).to_csv(root / "per_class.csv", index=False)
    (root / "suite.yaml").write_text(yaml.safe_dump({"name": "one-seed"}))
    return root


def test_one_seed_uses_the_bootstrap_over_test_images_and_says_so(tmp_path):
    root = _one_seed_run(tmp_path / "run")
    md = build_report(root, formats="md")["md"].read_text()
    assert "test-set noise only" in md and "1000 test images" in md
    line = next(x for x in md.splitlines() if x.startswith("| kps"))
    assert "‡" in line
    from reports.collect import load_run

    data = load_run(root)
    iv = Comparer(data.results, data.per_class, root).interval("kps", "ce", SETTING, "top1_error")
    assert iv.kind == BOOTSTRAP and iv.n == 1000
    # the point estimate is the measured difference; the interval is close to the normal
    # approximation of the least favourable pairing (per-image variance of d over N images)
    ce, kps = data.results.set_index("method")["top1_error"][["ce", "kps"]]
    assert iv.delta == pytest.approx(kps - ce)
    ce_acc = [90, 85, 80, 75, 70, 60, 50, 40, 30, 20]
    wrong = {"ce": 100 - np.asarray(ce_acc), "kps": 100 - np.asarray([88] * 10)}
    d, _ = least_favourable_pairs(wrong["kps"], wrong["ce"], [100] * 10)
    se = 100 * d.std() / math.sqrt(len(d))
    assert iv.low == pytest.approx(iv.delta - 1.96 * se, abs=0.35)
    assert iv.high == pytest.approx(iv.delta + 1.96 * se, abs=0.35)
    # and the bootstrap's note replaces the seed-based power statement
    assert "not estimable from one seed" in md


def test_least_favourable_pairing_keeps_the_counts_and_maximises_disagreement():
    wrong_a, wrong_b, n = [3, 10, 0, 7], [5, 2, 0, 7], [10, 10, 4, 8]
    d, cls = least_favourable_pairs(wrong_a, wrong_b, n)
    for c in range(4):
        dc = d[cls == c]
        assert len(dc) == n[c]
        assert dc.sum() == wrong_a[c] - wrong_b[c]  # each method keeps its error count
        discordant = int((dc != 0).sum())
        most = min(wrong_a[c] + wrong_b[c], 2 * n[c] - wrong_a[c] - wrong_b[c])
        assert discordant == most
    # more disagreement, wider interval: against a pairing with the fewest discordant images
    tight = np.concatenate([np.repeat([1.0, 0.0], [k, m - k]) for k, m in ((2, 40), (0, 40))])
    wide, _ = least_favourable_pairs([12, 10], [10, 10], [40, 40])
    w = np.ones(80)
    a, b = bootstrap_interval(tight, w), bootstrap_interval(wide, w)
    assert a.delta == b.delta and (b.high - b.low) > (a.high - a.low)


def test_minimum_detectable_difference_shrinks_as_seeds_grow():
    for paired in (True, False):
        mdd = [detectable_difference(1.0, n, paired) for n in range(2, 31)]
        assert all(x > y for x, y in zip(mdd, mdd[1:], strict=False)), paired
    # large samples: (z_{1-α/2} + z_{power}) sd / sqrt(n)
    z = sps.norm.ppf(1 - ALPHA / 2) + sps.norm.ppf(POWER)
    assert detectable_difference(1.0, 400, True) == pytest.approx(z / 20, rel=0.01)
    assert power(detectable_difference(0.8, 5, True), 0.8, 5, True) == pytest.approx(POWER)
    n = seeds_needed(1.0, 1.2, True)
    assert power(1.0, 1.2, n, True) >= POWER > power(1.0, 1.2, n - 1, True)
    # the report's note says the same: more seeds, a smaller detectable difference
    rng = np.random.default_rng(5)

    def note(k):
        noise = rng.normal(0, 1.0, (2, k))
        results = _results({"ce": list(30 + noise[0]), "kps": list(29 + noise[1])})
        comparer = Comparer(results, None)
        sd, paired = comparer.pooled_sd([("kps", "ce", SETTING)], "top1_error")
        text = Judge(comparer, "ce", {"top1_error": "err"}).power_note(["top1_error"])
        assert f"{detectable_difference(sd, k, paired):.2f} points" in text
        return detectable_difference(sd, k, paired)

    assert note(3) > note(10) > note(40)


def test_best_is_bold_only_when_distinguishable_from_the_second():
    results = _results({"ce": [30.0, 32.0, 31.0], "la": [29.0, 33.0, 30.5], "kps": [20, 21, 22]})
    table = _table(results)
    marks = {row[0].text: row[1].mark for row in table.rows}
    assert marks == {"ce": "", "la": "second", "kps": "best"}
    close = _results({"ce": [30.0, 32.0, 31.0], "la": [29.0, 33.0, 30.5], "kps": [29.5, 31, 31.5]})
    table = _table(close)
    assert all(row[1].mark == "" for row in table.rows)
    cells = _cells(table)
    assert cells["ce"][0].endswith("≈") and cells["la"][0].endswith("≈")
    assert not cells["kps"][0].endswith("≈")  # the best itself
    assert "No best marked" in " ".join(table.notes)


def test_reference_choice_and_errors(tmp_path):
    results = _results({"la": [30.0, 31.0], "ce": [31.0, 32.0]})
    assert choose_reference(results, None, None) == "ce"
    assert choose_reference(results, None, "la") == "la"
    assert choose_reference(results, "ce", "la") == "ce"
    assert choose_reference(_results({"la": [1.0], "kps": [2.0]}), None, None) is None
    with pytest.raises(LtbenchError, match=r"--reference 'cee' is not a method.*la, ce") as e:
        choose_reference(results, "cee", None)
    assert "\n" not in str(e.value)
    # the report takes --reference, else what the run recorded
    root = _one_seed_run(tmp_path / "run")
    md = build_report(root, formats="md", reference="kps")["md"].read_text()
    assert "Δ vs kps [95% CI]" in md
    suite = yaml.safe_load((root / "suite.yaml").read_text())
    suite["suite"] = {"reference": "kps"}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    assert "Δ vs kps [95% CI]" in build_report(root, formats="md")["md"].read_text()
    # the command line: a one-line error and exit status 2
    from ltbench.cli import main

    assert main(["report", str(root), "--format", "md", "--reference", "focal"]) == 2
    assert main(["report", str(root), "--format", "md", "--reference", "ce"]) == 0
    assert "Δ vs ce [95% CI]" in (root / "report.md").read_text()


def test_suite_reference_key_is_checked(tmp_path):
    from ltbench.runner.suite import load_suite

    text = "methods: [{loss: ce}, {loss: kps}]\ndatasets: [cifar10-lt]\nrhos: [100]\nseeds: [0]\n"
    (tmp_path / "ok.yaml").write_text(text + "reference: ce\n")
    assert load_suite(tmp_path / "ok.yaml").reference == "ce"
    (tmp_path / "bad.yaml").write_text(text + "reference: la\n")
    with pytest.raises(LtbenchError, match=r"reference 'la' is not a method.*ce, kps"):
        load_suite(tmp_path / "bad.yaml")


def test_head_mid_tail_parts_are_the_engines():
    from ltbench.engine.metrics import head_mid_tail_parts as engine_parts

    rng = np.random.default_rng(1)
    for c in (3, 7, 10, 37, 100):
        counts = rng.integers(1, 500, c)
        ours, theirs = head_mid_tail_parts(counts), engine_parts(counts)
        for part in ("head", "mid", "tail"):
            assert sorted(ours[part]) == sorted(theirs[part])


def test_search_points_within_noise_of_the_selected_one(tmp_path):
    """A point 0.2 points worse on 10 x 50 validation images is within noise of the selected
    one; a point 15 points worse is not; a point without per-class numbers is left out."""
    from reports.search import within_noise

    base = np.array([90, 88, 86, 84, 82, 80, 78, 76, 74, 72], dtype=float)
    points = {"p0": base, "p1": base - np.r_[2, [0] * 9], "p2": base - 15, "p3": None}
    rows = []
    for trial, acc in points.items():
        tdir = tmp_path / "trials" / trial
        tdir.mkdir(parents=True)
        record = {} if acc is None else {"val_per_class_accuracy": list(acc)}
        record["val_class_counts"] = [50] * 10
        (tdir / "result.json").write_text(json.dumps(record))
        err = 100 - (base if acc is None else acc).mean() + (30 if acc is None else 0)
        rows.append({"trial": trial, "val_balanced_error": err, "status": "finished"})
    noise = within_noise(tmp_path, pd.DataFrame(rows))
    assert noise == {"p1": True, "p2": False}


def test_bootstrap_matches_scipy_bootstrap():
    """The count-based resampling gives scipy.stats.bootstrap's paired percentile interval
    (up to Monte-Carlo error: 2000 resamples, bounds within 0.5 of a point at N = 400)."""
    rng = np.random.default_rng(3)
    d = rng.choice([-1.0, 0.0, 1.0], 400, p=[0.15, 0.6, 0.25])
    w = rng.choice([1 / 20, 1 / 40], 400)
    ours = bootstrap_interval(d, w)

    def stat(dd, ww, axis=-1):
        return 100 * (dd * ww).sum(axis=axis) / ww.sum(axis=axis)

    ref = sps.bootstrap(
        (d, w), stat, paired=True, vectorized=True, n_resamples=20000, method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval  # fmt: skip
    assert ours.delta == pytest.approx(stat(d, w))
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), abs=0.5)


def test_a_delta_without_an_interval_says_why():
    """One seed each on a metric the test images cannot resample (ECE), one seed against
    several: each n/a cell's note gives its own reason."""
    one_each = _results({"ce": [20.0], "kps": [15.0]}).rename(columns={"top1_error": "ece"})
    judge = Judge(Comparer(one_each, None), "ce", {"ece": "ECE"})
    assert judge.delta_text("kps", SETTING, "ece") == "n/a"
    assert judge.missing_note() == (
        f"kps on {SETTING}: one seed each, and ECE has no bootstrap over test images"
    )
    several = _results({"ce": [30.0, 31.0, 29.5], "kps": [28.0]})
    judge = Judge(Comparer(several, None), "ce", {"top1_error": "err"})
    assert judge.delta_text("kps", SETTING, "top1_error") == "n/a"
    assert judge.missing_note() == f"kps on {SETTING}: one seed against several"
    # one reason for several cells is said once, with the cells it applies to
    three = _results({"ce": [20.0], "kps": [15.0], "la": [16.0]}).rename(
        columns={"top1_error": "ece"}
    )
    judge = Judge(Comparer(three, None), "ce", {"ece": "ECE"})
    assert [judge.delta_text(m, SETTING, "ece") for m in ("kps", "la")] == ["n/a", "n/a"]
    assert judge.missing_note() == (
        f"kps on {SETTING}, la on {SETTING}: one seed each, and ECE has no bootstrap over test "
        "images"
    )
