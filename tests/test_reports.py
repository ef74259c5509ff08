"""Reports: a realistic fake suite directory -> report.md, report.pdf and figures.

The fake suite follows docs/DESIGN.md ("Suite output directory"): 5 methods x 2 datasets
(synthetic-lt with 10 classes, cifar100-lt with 100) x rho 100/50 x 3 seeds, one failed and one
missing trial, metrics.jsonl per trial; a sweep directory has a 3 x 4 m_max/s_base grid. The
expected numbers are recomputed here with pandas, independently of reports.tables.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ltbench.errors import LtbenchError
from ltbench.schema import RESULTS_COLUMNS
from reports import build_report

METHODS = {"ce": 0.0, "focal": -0.6, "ldam-drw": -5.0, "kps": -6.5, "kps-ga": -7.5}
DATASETS = {"synthetic-lt": 10, "cifar100-lt": 100}
RHOS = (100, 50)
SEEDS = (0, 1, 2)
FAILED = ("kps", "cifar100-lt", 50, 2)  # (method, dataset, rho, seed)
MISSING = ("kps-ga", "synthetic-lt", 50, 1)
EPOCHS = 6


def _class_counts(n_classes: int, rho: int, n_max: int) -> np.ndarray:
    return np.array([int(n_max * rho ** (-i / (n_classes - 1))) for i in range(n_classes)])


def _trial_metrics(acc: np.ndarray, counts: np.ndarray) -> dict:
    """many/medium/few and head/mid/tail as DESIGN.md defines them (percent)."""

    def mean_or_nan(x):
        return float(np.mean(x)) if len(x) else math.nan

    order = np.argsort(-counts, kind="stable")
    groups = np.array_split(order, 10)
    err = 100.0 - acc
    parts = [np.concatenate(groups[a:b]) for a, b in ((0, 3), (3, 7), (7, 10))]
    return {
        "top1_error": float(100.0 - acc.mean()),
        "many_acc": mean_or_nan(acc[counts > 100]),
        "medium_acc": mean_or_nan(acc[(counts >= 20) & (counts <= 100)]),
        "few_acc": mean_or_nan(acc[counts < 20]),
        "head_error": float(err[parts[0]].mean()),
        "mid_error": float(err[parts[1]].mean()),
        "tail_error": float(err[parts[2]].mean()),
    }


def make_fake_suite(root: Path, datasets: dict | None = None) -> Path:
    """Write a suite output directory (results.csv, per_class.csv, suite.yaml, trials/)."""
    rng = np.random.default_rng(1234)
    rows, pc_rows = [], []
    for dataset, n_classes in (datasets or DATASETS).items():
        n_max = 500
        base = 20.0 if n_classes == 10 else 55.0
        for rho in RHOS:
            counts = _class_counts(n_classes, rho, n_max)
            for method, shift in METHODS.items():
                for seed in SEEDS:
                    trial = f"{method}__{dataset}__rho{rho}__s{seed}"
                    key = (method, dataset, rho, seed)
                    row = dict.fromkeys(RESULTS_COLUMNS, math.nan)
                    row.update(
                        trial=trial,
                        method=method,
                        params=json.dumps({}),
                        dataset=dataset,
                        imb_factor=1 / rho,
                        rho=rho,
                        seed=seed,
                        subset_seed=0,
                        epochs=EPOCHS,
                        error="",
                        label=method,
                        setup="none",
                        precision="float32",
                        full_schedule=True,
                        rule="raw",
                    )
                    if key == FAILED:
                        row.update(status="failed", error="RuntimeError: CUDA out of memory")
                        rows.append(row)
                        continue
                    if key == MISSING:
                        row.update(status="missing")
                        rows.append(row)
                        continue
                    # tail classes are worse; the loss shifts the level; the seed adds noise
                    level = base + shift + (5.0 if rho == 100 else 0.0)
                    trend = np.linspace(-25, 25, n_classes)
                    err = np.clip(level + trend + rng.normal(0, 3, n_classes), 0, 100)
                    acc = 100.0 - err
                    metrics = _trial_metrics(acc, counts)
                    row.update(
                        metrics,
                        ece=float(rng.uniform(2, 15)),
                        wall_seconds=float(rng.uniform(10, 20)),
                        status="finished",
                    )
                    rows.append(row)
                    for c in range(n_classes):
                        pc_rows.append(
                            dict(
                                trial=trial,
                                method=method,
                                dataset=dataset,
                                rho=rho,
                                seed=seed,
                                **{"class": c},
                                class_name=f"c{c}",
                                count=int(counts[c]),
                                accuracy=float(acc[c]),
                            )
                        )
                    tdir = root / "trials" / trial
                    tdir.mkdir(parents=True)
                    with open(tdir / "metrics.jsonl", "w") as f:
                        for e in range(1, EPOCHS + 1):
                            rec = {
                                "epoch": e,
                                "lr": 0.1,
                                "train_loss": 2.5 / e + rng.uniform(0, 0.05),
                                "train_acc": 100 - 60 / e,
                                "test_top1_error": metrics["top1_error"] + 30 / e,
                                "epoch_seconds": 1.0,
                            }
                            f.write(json.dumps(rec) + "\n")
                    result = {
                        "method": method,
                        "status": "finished",
                        **metrics,
                        "env": {
                            "ltbench": "0.1.0",
                            "git_commit": "abc123def456",
                            "torch": "2.5.0",
                            "device": "NVIDIA H100 80GB HBM3",
                            "python": "3.11.7",
                            "platform": "Linux-6.1-x86_64",
                        },
                    }
                    (tdir / "result.json").write_text(json.dumps(result))
    pd.DataFrame(rows, columns=RESULTS_COLUMNS).to_csv(root / "results.csv", index=False)
    pd.DataFrame(pc_rows).to_csv(root / "per_class.csv", index=False)
    (root / "suite.yaml").write_text(yaml.safe_dump({"name": "fake-suite", "seeds": list(SEEDS)}))
    return root


def make_fake_sweep(root: Path) -> Path:
    """A sweep directory: a 3 x 4 grid of m_max x s_base for kps-ga on cifar10-lt, one seed.

    Two points were stopped early by ASHA (missing in results.csv, stopped in sweep.csv) and
    one failed. The balanced validation error is a bowl around (0.4, 15); the instance-weighted
    one prefers small m_max (the head classes); the test error follows the balanced one with a
    little noise. Finished points have per_class.csv rows and a result.json with the
    validation split's per-class numbers.
    """
    rng = np.random.default_rng(7)
    pts = [(m, s) for m in (0.3, 0.4, 0.5) for s in (10, 15, 20, 25)]
    status = {3: "stopped", 7: "stopped", 11: "failed"}
    counts = _class_counts(10, 100, 500)
    val_counts = [50, 30, 18, 11, 6, 5, 5, 5, 1, 1]
    res, sw, pc_rows = [], [], []
    for i, (m, s) in enumerate(pts):
        st = status.get(i, "finished")
        val = 20 + 30 * (m - 0.4) ** 2 + 0.01 * (s - 15) ** 2
        head_heavy = 5 + 15 * m + 0.02 * s
        test = val + 1 + rng.normal(0, 0.2)
        row = dict.fromkeys(RESULTS_COLUMNS, math.nan)
        row.update(
            trial=f"point_{i}",
            method="kps-ga",
            params=json.dumps({"m_max": m, "s_base": s}),
            dataset="cifar10-lt",
            imb_factor=0.01,
            rho=100,
            seed=0,
            subset_seed=0,
            epochs=EPOCHS,
            status={"stopped": "missing"}.get(st, st),
            error={"stopped": "stopped early by ASHA", "failed": "ValueError: nan loss"}.get(
                st, ""
            ),
        )
        if st == "finished":
            row.update(
                top1_error=test,
                many_acc=90.0,
                head_error=10.0,
                ece=3.0,
                val_balanced_error=val,
                val_top1_error=head_heavy,
            )
            trend = np.linspace(-15, 15, 10)
            acc = 100.0 - (test + trend)
            val_acc = 100.0 - (val + trend + rng.normal(0, 3, 10))
            for c in range(10):
                pc_rows.append(
                    dict(
                        trial=f"point_{i}",
                        method="kps-ga",
                        dataset="cifar10-lt",
                        rho=100,
                        seed=0,
                        **{"class": c},
                        class_name=f"class{c}",
                        count=int(counts[c]),
                        accuracy=float(acc[c]),
                    )
                )
            tdir = root / "trials" / f"point_{i}"
            tdir.mkdir(parents=True)
            result = {
                "top1_error": test,
                "val_balanced_error": val,
                "val_top1_error": head_heavy,
                "val_per_class_accuracy": [float(a) for a in val_acc],
                "val_class_counts": val_counts,
                "val_min_per_class": 5,
                "val_classes_below_minimum": [8, 9],
                "val_classes_without_images": [],
            }
            (tdir / "result.json").write_text(json.dumps(result))
        res.append(row)
        known = st != "failed"
        sw.append(
            dict(
                trial=f"point_{i}",
                m_max=m,
                s_base=s,
                val_balanced_error=val + (3 if st == "stopped" else 0) if known else math.nan,
                val_top1_error=head_heavy if known else math.nan,
                test_top1_error=test if known else math.nan,
                epochs=EPOCHS if st == "finished" else 2,
                status=st,
            )
        )
    pd.DataFrame(res, columns=RESULTS_COLUMNS).to_csv(root / "results.csv", index=False)
    pd.DataFrame(pc_rows).to_csv(root / "per_class.csv", index=False)
    pd.DataFrame(sw).to_csv(root / "sweep.csv", index=False)
    (root / "suite.yaml").write_text(yaml.safe_dump({"name": "kps-search"}))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_fake_suite(tmp_path_factory.mktemp("suite"))
    paths = build_report(root)
    return root, paths


def _strip(cell: str) -> tuple[str, str]:
    """(plain text, mark) of a markdown cell."""
    cell = cell.strip()
    if cell.startswith("<u>**") and cell.endswith("**</u>"):
        return cell[5:-6], "best"
    if cell.startswith("**") and cell.endswith("**"):
        return cell[2:-2], "second"
    return cell, ""


def _md_table(md: str, heading_start: str) -> pd.DataFrame:
    """Parse the markdown table under the first heading starting with ``heading_start``."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_start))
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            body.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif body:
            break
    header, rows = body[0], body[2:]
    return pd.DataFrame(rows, columns=header)


def _expected(root: Path, metric: str) -> pd.DataFrame:
    df = pd.read_csv(root / "results.csv")
    fin = df[df["status"] == "finished"]
    return fin.groupby(["method", "dataset", "rho"])[metric].agg(["mean", "std", "count"])


def test_files_are_written(built):
    root, paths = built
    assert set(paths) == {"md", "pdf"}
    assert paths["md"] == root / "report.md" and paths["md"].stat().st_size > 1000
    assert paths["pdf"] == root / "report.pdf" and paths["pdf"].stat().st_size > 10000
    figs = sorted(p.name for p in (root / "figures").glob("*.png"))
    assert figs == sorted(
        [f"per_class_synthetic-lt_rho{r}.png" for r in RHOS]
        + [f"per_group_cifar100-lt_rho{r}.png" for r in RHOS]
        + [f"curves_{d}_rho{r}.png" for d in DATASETS for r in RHOS]
    )
    md = paths["md"].read_text()
    for name in figs:  # every figure is referenced from the markdown
        assert f"(figures/{name})" in md


def _reference_interval(root: Path, a: str, b: str, dataset: str, rho: int, metric: str):
    """a − b with its 95 % interval straight from results.csv and scipy.stats: paired t where
    both ran the same seeds (each once), else Welch t."""
    from scipy import stats

    df = pd.read_csv(root / "results.csv")
    fin = df[(df["status"] == "finished") & (df["dataset"] == dataset) & (df["rho"] == rho)]
    va = fin[fin["method"] == a].set_index("seed")[metric]
    vb = fin[fin["method"] == b].set_index("seed")[metric]
    if set(va.index) == set(vb.index):
        d = va - vb.loc[va.index]
        ci = stats.ttest_rel(va, vb.loc[va.index]).confidence_interval(0.95)
        return float(d.mean()), float(ci.low), float(ci.high)
    ci = stats.ttest_ind(va, vb, equal_var=False).confidence_interval(0.95)
    return float(va.mean() - vb.mean()), float(ci.low), float(ci.high)


def test_top1_table_matches_csv(built):
    """Means, deviations and daggers as results.csv gives them; the Δ vs ce column and the
    marks from intervals recomputed here with scipy: the best is marked only where its
    interval against the second excludes 0, ≈ where a method's interval against the best
    includes 0, * where the interval against ce excludes 0."""
    root, paths = built
    md = paths["md"].read_text()
    table = _md_table(md, "### Table 1: Top-1 error").set_index("method")
    exp = _expected(root, "top1_error")
    assert list(table.index) == list(METHODS)
    marked = unmarked = 0
    for dataset in DATASETS:
        for rho in RHOS:
            col = f"{dataset} ρ={rho}: top-1 err"
            j = list(table.columns).index(col) + 1  # the Δ column's label repeats per setting
            assert table.columns[j] == "Δ vs ce [95% CI]"
            means, near = {}, {}
            for method in METHODS:
                text, _ = _strip(table.loc[method, col])
                m = re.fullmatch(r"([\d.]+) ± ([\d.]+)(†?)( ≈)?", text)
                assert m, text
                e = exp.loc[(method, dataset, rho)]
                assert float(m.group(1)) == pytest.approx(round(e["mean"], 2), abs=0.006)
                assert float(m.group(2)) == pytest.approx(round(e["std"], 2), abs=0.006)
                assert (m.group(3) == "†") == (e["count"] < len(SEEDS))
                means[method], near[method] = round(e["mean"], 2), bool(m.group(4))
                cell = table.iloc[list(table.index).index(method), j]
                if method == "ce":
                    assert cell == "reference"
                    continue
                d, lo, hi = _reference_interval(root, method, "ce", dataset, rho, "top1_error")
                m = re.fullmatch(r"([+-][\d.]+) \[([+-][\d.]+), ([+-][\d.]+)\]( \*)?", cell)
                assert m, cell
                got = [float(m.group(i)) for i in (1, 2, 3)]
                assert got == pytest.approx([d, lo, hi], abs=0.006)
                assert bool(m.group(4)) == (lo > 0 or hi < 0)
            ranked = sorted(means, key=means.get)
            best = ranked[0]
            for method in ranked[1:]:
                _, lo, hi = _reference_interval(root, method, best, dataset, rho, "top1_error")
                assert near[method] == (lo <= 0 <= hi), (col, method)
            _, lo, hi = _reference_interval(root, ranked[1], best, dataset, rho, "top1_error")
            if lo > 0:
                marked += 1
                assert _strip(table.loc[best, col])[1] == "best"
                assert _strip(table.loc[ranked[1], col])[1] == "second"
                assert all(_strip(table.loc[m, col])[1] == "" for m in ranked[2:])
            else:
                unmarked += 1
                assert all(_strip(table.loc[m, col])[1] == "" for m in ranked), col
                assert f"{col.replace(': ', ' ')}" in md  # listed as "no best marked"
    assert marked and unmarked  # the fixture exercises both cases


def test_paper_columns(built, tmp_path):
    root, paths = built
    md = paths["md"].read_text()
    table = _md_table(md, "### Table 1: Top-1 error").set_index("method")
    cols = list(table.columns)
    # the paper column right after cifar100-lt rho=100: CE is 63.32 in Table 3
    i = cols.index("cifar100-lt ρ=100: top-1 err")
    assert cols[i + 1 : i + 4] == ["Δ vs ce [95% CI]", "paper", "Δ"]
    assert table.iloc[list(table.index).index("ce"), i + 2] == "63.32"
    measured = float(_strip(table.loc["ce", cols[i]])[0].split(" ± ")[0])
    delta = float(table.iloc[list(table.index).index("ce"), i + 3])
    exp = _expected(root, "top1_error").loc[("ce", "cifar100-lt", 100), "mean"]
    assert delta == pytest.approx(exp - 63.32, abs=0.006)
    assert measured == pytest.approx(exp, abs=0.006)
    # synthetic-lt has no paper number
    j = cols.index("synthetic-lt ρ=100: top-1 err")
    assert set(table.iloc[:, j + 2]) == {"-"} and set(table.iloc[:, j + 3]) == {"-"}
    # the reference table comes from paper_numbers.yaml: CE on CIFAR-10-LT rho=100 is 29.64
    ref = _md_table(md, "### Paper reference numbers").set_index("ltbench")
    assert ref.loc["ce", "cifar10-lt: ρ=100"] == "29.64"
    assert ref.loc["kps-ga", "inat2018: ResNet-50"] == "29.65"
    assert "BBN" in set(ref["paper's method"])


def test_paper_numbers_yaml():
    from reports.paper import load_paper_numbers

    paper = load_paper_numbers()
    assert paper.lookup("ce", "cifar10-lt", 100).value == 29.64
    assert paper.lookup("ce", "cifar10-lt", 100.0).table == "table3"
    assert paper.lookup("kps", "cifar100-lt", 50).value == 50.92
    assert paper.lookup("kps-ga+mixup", "cifar100-lt", 50).value == 49.45
    assert paper.lookup("kps+mixup", "cifar100-lt", 50) is None  # plain KPS + mixup: no row
    assert paper.lookup("mislas-kps", "imagenet-lt", 1.0).value == 47.74  # rho ignored
    assert paper.lookup("la", "cifar10-lt", 50).value is None  # "-" in the paper
    assert paper.lookup("ce", "synthetic-lt", 100) is None


def test_other_tables_and_warnings(built):
    root, paths = built
    md = paths["md"].read_text()
    # the warning section comes before the results and names the failed and missing trials
    warn = md.index("## Warnings: incomplete run")
    assert warn < md.index("## Results")
    section = md[warn : md.index("## Results")]
    assert "of 60 trials, 1 failed and 1 missing" in section
    assert "kps__cifar100-lt__rho50__s2" in section and "CUDA out of memory" in section
    assert "kps-ga__synthetic-lt__rho50__s1" in section and "missing" in section
    assert "n=2 of 3 seeds" in md
    shots = _md_table(md, "### Table 2: Many").set_index("method")
    exp = _expected(root, "many_acc").loc[("ce", "cifar100-lt", 50), "mean"]
    text = _strip(shots.loc["ce", "cifar100-lt ρ=50: many"])[0]
    assert float(text.split(" ± ")[0]) == pytest.approx(exp, abs=0.006)
    parts = _md_table(md, "### Table 3: Head").set_index("method")
    j = list(parts.columns).index("synthetic-lt ρ=100: head")
    assert list(parts.columns[j + 1 : j + 3]) == ["mid", "tail"]
    text = _strip(parts.iloc[list(parts.index).index("kps"), j + 2])[0]
    exp = _expected(root, "tail_error").loc[("kps", "synthetic-lt", 100), "mean"]
    assert float(text.split(" ± ")[0]) == pytest.approx(exp, abs=0.006)
    assert "### Table 5: Expected calibration error" in md


def _page_pngs(pdf: Path, out: Path) -> list[Path]:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: cannot render the PDF")
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(out / "page")], check=True)
    return sorted(out.glob("page*.png"))


def _ink(path: Path) -> float:
    from PIL import Image

    a = np.asarray(Image.open(path).convert("L"))
    return float((a < 235).mean())


def test_pdf_pages(built, tmp_path):
    root, paths = built
    pages = _page_pngs(paths["pdf"], tmp_path)
    # title 1 + warnings 1 + top-1 2, many/medium/few 2, head/mid/tail 2, its Δ vs ce 2, ECE 2
    # (two settings per page: the Δ columns take room) + figures (4 per-class/group, 4
    # curves) + paper reference 1
    assert len(pages) == 1 + 1 + 2 + 2 + 2 + 2 + 2 + 8 + 1
    for page in pages:
        assert _ink(page) > 0.004, f"{page.name} looks blank"


def test_figures_not_blank(built):
    root, _ = built
    for png in (root / "figures").glob("*.png"):
        assert _ink(png) > 0.02, png.name


def test_out_prefix_and_md_only(tmp_path):
    root = make_fake_suite(tmp_path / "suite", datasets={"synthetic-lt": 10})
    paths = build_report(root, formats="md", out=tmp_path / "elsewhere" / "c10.md")
    assert paths == {"md": tmp_path / "elsewhere" / "c10.md"}
    assert (tmp_path / "elsewhere" / "figures" / "per_class_synthetic-lt_rho100.png").is_file()
    assert not (tmp_path / "elsewhere" / "figures" / "sweep_heatmap.png").exists()
    assert "](figures/per_class_synthetic-lt_rho100.png)" in paths["md"].read_text()
    paths = build_report(root, formats=["md"], out=tmp_path / "newdir")
    assert paths == {"md": tmp_path / "newdir" / "report.md"}
    with pytest.raises(LtbenchError, match="unknown report format 'html'"):
        build_report(root, formats=("md", "html"))


SWEEP_FIGURES = ("sweep_points", "sweep_heatmap", "sweep_val_vs_test", "sweep_selected")


def test_sweep_report(tmp_path):
    root = make_fake_sweep(tmp_path)
    paths = build_report(root)
    md = paths["md"].read_text()
    for name in SWEEP_FIGURES:
        assert _ink(root / "figures" / f"{name}.png") > 0.05, name
        assert f"](figures/{name}.png)" in md
    assert "### Table 1: Top-1 error" not in md  # search points are not averaged as seeds
    sweep = _md_table(md, "### Table 1: Sweep").reset_index(drop=True)
    assert (sweep.loc[0, "m_max"], sweep.loc[0, "s_base"]) == ("0.4", "15")
    assert _strip(sweep.loc[0, "val balanced err"])[1] == "best"
    assert _strip(sweep.loc[0, "val top-1 err (inst.)"])[1] == ""
    assert len(sweep) == 9  # 12 points, 2 stopped, 1 failed
    # ranked by the balanced validation error, not by the head-heavy one nor the test error
    ranked = [float(_strip(v)[0].removesuffix(" ≈")) for v in sweep["val balanced err"]]
    assert ranked == sorted(ranked)
    near = sum(v.endswith(" ≈") for v in sweep["val balanced err"])
    assert f"within noise of the selected point ({near} of 8 other finished points)" in md
    sw = pd.read_csv(root / "sweep.csv")
    fin = sw[sw["status"] == "finished"]
    rho = fin["val_balanced_error"].rank().corr(fin["test_top1_error"].rank())
    assert f"balanced validation error {rho:+.2f}" in md
    chosen = _md_table(md, "### Table 2: Sweep: the selected point").set_index("selected point")
    assert chosen.loc["balanced validation error", "value"] == "20.00"
    assert chosen.loc["test top-1 error", "value"] == f"{fin.loc[5, 'test_top1_error']:.2f}"
    grid = _md_table(md, "### Table 3: Grid: test top-1 error").set_index("m_max")
    assert list(grid.columns) == [f"s_base={s}" for s in (10, 15, 20, 25)]
    assert _strip(grid.loc["0.4", "s_base=15"])[1] == "best"
    assert grid.loc["0.5", "s_base=25"] == "failed"
    assert grid.loc["0.3", "s_base=25"] == "stopped"
    assert "### Table 4: Grid: balanced validation error" in md
    assert "not retrained on training + validation" in md
    assert "2 class(es) have fewer than 5 validation images" in md
    section = md[md.index("## Warnings") : md.index("## Results")]
    assert "1 failed and 2 stopped" in section
    assert "point_11" in section and "nan loss" in section
    assert "point_3" not in section  # stopped early: expected, not a problem
    pages = _page_pngs(paths["pdf"], tmp_path)
    # title, warnings, 4 tables, 4 figures, paper reference
    assert len(pages) == 11
    for page in pages:
        assert _ink(page) > 0.004, f"{page.name} looks blank"


def test_sweep_report_of_an_older_sweep_without_the_balanced_error(tmp_path):
    """An older sweep.csv (no val_balanced_error) and results.csv (no validation columns) still
    report: ranked by the instance-weighted validation error, with a warning saying so."""
    root = make_fake_sweep(tmp_path)
    sw = pd.read_csv(root / "sweep.csv").drop(columns="val_balanced_error")
    sw.to_csv(root / "sweep.csv", index=False)
    res = pd.read_csv(root / "results.csv").drop(columns=["val_balanced_error", "val_top1_error"])
    res.to_csv(root / "results.csv", index=False)
    md = build_report(root, formats="md")["md"].read_text()
    assert "ranked by the instance-weighted validation error" in md
    sweep = _md_table(md, "### Table 1: Sweep").reset_index(drop=True)
    assert _strip(sweep.loc[0, "val top-1 err (inst.)"])[1] == "best"
    assert sweep.loc[0, "m_max"] == "0.3"  # the head-heavy number prefers a small margin


def test_sweep_selection_ignores_poisoned_test_numbers(tmp_path):
    """The report's selected point does not move when every test number is garbage."""
    clean = make_fake_sweep(tmp_path / "clean")
    poisoned = make_fake_sweep(tmp_path / "poisoned")
    rng = np.random.default_rng(99)
    sw = pd.read_csv(poisoned / "sweep.csv")
    sw["test_top1_error"] = rng.uniform(0, 100, len(sw))
    sw.to_csv(poisoned / "sweep.csv", index=False)
    pc = pd.read_csv(poisoned / "per_class.csv")
    pc["accuracy"] = rng.uniform(0, 100, len(pc))
    pc.to_csv(poisoned / "per_class.csv", index=False)
    picks = []
    for root in (clean, poisoned):
        md = build_report(root, formats="md")["md"].read_text()
        chosen = _md_table(md, "### Table 2: Sweep: the selected point").set_index("selected point")
        picks.append((chosen.loc["m_max", "value"], chosen.loc["s_base", "value"]))
    assert picks[0] == picks[1] == ("0.4", "15")


def test_missing_results_csv_is_one_line_error(tmp_path):
    with pytest.raises(LtbenchError, match="has no results.csv") as info:
        build_report(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_column_is_one_line_error(tmp_path):
    root = make_fake_suite(tmp_path / "s", datasets={"synthetic-lt": 10})
    df = pd.read_csv(root / "results.csv").drop(columns=["top1_error", "status"])
    df.to_csv(root / "results.csv", index=False)
    with pytest.raises(LtbenchError, match="lacks column.*top1_error, status") as info:
        build_report(root)
    assert "\n" not in str(info.value)


def test_single_seed_cell_and_scattered_sweep(tmp_path):
    from reports.markdown import table_markdown
    from reports.search_figures import sweep_figure
    from reports.tables import metric_table

    df = pd.DataFrame(
        {
            "method": ["ce", "ce", "la"],
            "dataset": ["cifar10-lt"] * 3,
            "rho": [100.0] * 3,
            "seed": [0, 1, 0],
            "status": ["finished"] * 3,
            "top1_error": [30.0, 32.0, 20.0],
        }
    )
    t = metric_table(df, [("top1_error", "err")], "t", False, "t")
    md = table_markdown(t)
    assert "<u>**20.00 ± -†**</u>" in md and "**31.00 ± 1.41**" in md
    assert "n=1 of 2 seeds" in md and "a single finished seed" in md

    rng = np.random.default_rng(0)
    sw = pd.DataFrame(
        {
            "trial": [f"t{i}" for i in range(60)],
            "m_max": rng.uniform(0.1, 0.8, 60),
            "s_base": rng.uniform(5, 40, 60),
            "val_balanced_error": rng.uniform(15, 40, 60),
            "val_top1_error": rng.uniform(15, 40, 60),
            "test_top1_error": rng.uniform(15, 40, 60),
            "epochs": 10,
            "status": ["finished"] * 50 + ["stopped"] * 9 + ["failed"],
        }
    )
    caption = sweep_figure(sw, tmp_path / "h.png")
    assert "50 finished points, 9 stopped early, 1 failed" in caption
    assert "ringed in red" in caption
    assert _ink(tmp_path / "h.png") > 0.05  # a scatter: less ink than a heat map
    from reports.search import grid_axes
    from reports.search_figures import heat_map

    assert grid_axes(sw, ["m_max", "s_base"]) is None  # scattered: no heat map
    assert heat_map(sw, ["m_max", "s_base"], "val_balanced_error", tmp_path / "x.png") is None


def _labelled_results(rows):
    """A results frame of finished cifar10-lt rho-100 rows: (method, label, setup, rule)."""
    out = []
    for i, (method, label, setup, rule) in enumerate(rows):
        row = dict.fromkeys(RESULTS_COLUMNS, math.nan)
        row.update(
            trial=f"t{i}", method=method, params="{}", dataset="cifar10-lt", imb_factor=0.01,
            rho=100.0, seed=0, subset_seed=0, top1_error=20.0 + i, epochs=200,
            status="finished", error="", label=label, setup=setup, precision="float32",
            full_schedule="True", rule=rule,
        )  # fmt: skip
        out.append(row)
    return pd.DataFrame(out, columns=RESULTS_COLUMNS)


def test_paper_number_only_for_the_paper_rows_configuration(tmp_path):
    from reports.collect import _normalise_results
    from reports.markdown import table_markdown
    from reports.paper import load_paper_numbers
    from reports.tables import metric_table

    results = _normalise_results(
        _labelled_results(
            [
                ("kps+mixup", "kps+mixup", "none", "raw"),  # plain KPS with mixup
                ("kps-ga-mix", "kps-ga+mixup", "none", "raw"),  # the paper's "KPS w. mixup"
                ("kps-ga", "kps-ga (m_max=0.3)", "none", "raw"),  # not the paper's parameters
                ("ce", "ce", "schedule: 12 epochs", "raw"),  # a shortened run
                ("ce", "ce", "none", "logit-adjust"),  # a post-hoc rule's row
            ]
        ).assign(label=lambda d: d["label"])
    )
    table = metric_table(
        results, [("top1_error", "err")], "t", False, "top1", paper=load_paper_numbers()
    )
    cells = {row[0].text: row[2].text for row in table.rows}
    assert cells["kps-ga-mix"] == "17.84"  # Table 6, KPS w. mixup, CIFAR-10-LT rho 100
    assert cells["kps+mixup"] == "no paper row"  # not KPS w. mixup
    assert cells["kps-ga"] == "no paper row"
    assert cells["ce"] == "setup differs"
    assert cells["ce [logit-adjust]"] == "post-hoc rule"
    md = table_markdown(table)
    assert "configuration kps+mixup is not a row of the paper" in md
    assert "Precision: float32." in md


def test_old_results_without_new_columns_are_readable(tmp_path):
    root = make_fake_suite(tmp_path / "old", datasets={"cifar100-lt": 100})
    df = pd.read_csv(root / "results.csv")
    df.drop(columns=["label", "setup", "precision", "full_schedule", "rule"]).to_csv(
        root / "results.csv", index=False
    )
    paths = build_report(root, formats="md")
    md = paths["md"].read_text()
    table = _md_table(md, "### Table 1: Top-1 error").set_index("method")
    i = list(table.columns).index("cifar100-lt ρ=100: top-1 err")
    assert table.iloc[0, i + 1] == "reference" and table.iloc[0, i + 2] == "config unknown"
    assert "| precision " in md and "unknown" in md


def test_per_group_errors_keep_post_hoc_rules_apart():
    """A trial's post-hoc rule rows (method `m [rule]`) are bars of their own, never averaged
    into the trained model's per-class error."""
    from reports.tables import per_group_errors

    rows = [
        {"trial": "t", "method": m, "dataset": "d", "rho": 10, "seed": 0, "class": c,
         "count": (10, 1)[c], "accuracy": acc[c], "rule": rule}
        for m, rule, acc in (("ce", "raw", (90, 80)), ("ce [tau-norm]", "tau-norm", (50, 40)))
        for c in range(2)
    ]  # fmt: skip
    g = per_group_errors(pd.DataFrame(rows), {"t"})
    assert g[["method", "group", "error"]].values.tolist() == [
        ["ce", 1, 10.0],
        ["ce", 2, 20.0],
        ["ce [tau-norm]", 1, 50.0],
        ["ce [tau-norm]", 2, 60.0],
    ]


def test_title_page_keys_do_not_run_into_their_values():
    """The run details on the title page: every key's printed box ends before its value's starts
    (the column was once measured at the body size, 9 pt, while the keys print at 10.5 pt)."""
    from types import SimpleNamespace

    from reports import pdf

    meta = [("suite", "ablation"), ("paper's full schedule", "no (shortened)"), ("trials", "16")]
    pages = []

    class Keep(pdf._Writer):
        def finish(self, fig):
            pages.append(fig)

    report = SimpleNamespace(meta=meta, warnings=[])
    pdf._title_page(Keep(None, ""), report, [("Table 1", 2), ("", 3)])
    fig = pages[0]
    renderer = fig.canvas.get_renderer()
    boxes = {t.get_text(): t.get_window_extent(renderer) for t in fig.texts}
    for key, value in meta[1:]:
        assert boxes[key].x1 < boxes[value].x0, (key, boxes[key].x1, boxes[value].x0)


def test_a_one_seed_method_gets_no_error_bars_and_the_caption_says_so():
    """A single seed has no spread: no zero-length error bars (they would read as sd 0)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure as MplFigure

    from reports.figures import _draw_bars, _group_stats, _spread_words

    rows = [
        {"method": m, "group": g, "error": 10.0 * g + seed, "trial": f"{m}{seed}"}
        for m, seeds in (("ce", [0]), ("kps", [0, 1]))
        for seed in seeds
        for g in (1, 2, 3)
    ]
    groups = pd.DataFrame(rows)
    ax = MplFigure().add_subplot()
    colours = {"ce": "grey", "kps": "blue"}
    _draw_bars(ax, _group_stats(groups), ["ce", "kps"], colours, 3)
    from matplotlib.container import BarContainer

    one, two = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert one.errorbar is None and two.errorbar is not None
    assert _spread_words(groups) == "error bars: std over seeds (none for a method with one seed)"
    single = groups[groups["trial"] != "kps1"]
    assert _spread_words(single).startswith("no error bars (one seed each")
    assert _spread_words(groups[groups["method"] == "kps"]) == "error bars: std over seeds"
