"""`ltbench collect`: finished `ltbench train` runs become a folder that `ltbench report` reads."""

import json

import pandas as pd
import pytest

from ltbench.cli import main
from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import train

TINY = dict(
    dataset="synthetic-lt",
    n_max=60,
    imb_factor=0.1,
    width=0.25,
    batch_size=64,
    epochs=2,
    eval_every=100,
    val_fraction=0.2,
    device="cpu",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(TrainConfig(loss="ce", **TINY), root / "ce-2", progress=False)
    train(TrainConfig(loss="kps-ga", **TINY), root / "kps-ga-2", progress=False)
    assert main(["eval", str(root / "ce-2"), "--rules", "raw,logit-adjust"]) == 0
    return root


def test_collect_then_report(runs, tmp_path, capsys):
    out = tmp_path / "record"
    assert main(["collect", str(out), str(runs / "ce-2"), str(runs / "kps-ga-2")]) == 0
    results = pd.read_csv(out / "results.csv")
    # one row per run and one more for the post-hoc rule of the CE run
    assert sorted(zip(results["trial"], results["rule"], strict=True)) == [
        ("ce-2", "logit-adjust"),
        ("ce-2", "raw"),
        ("kps-ga-2", "raw"),
    ]
    for key in ("ce-2", "kps-ga-2"):
        saved = json.loads((runs / key / "result.json").read_text())
        row = results[(results["trial"] == key) & (results["rule"] == "raw")].iloc[0]
        assert row["top1_error"] == pytest.approx(saved["top1_error"])
        assert row["label"] == saved["method"] and row["status"] == "finished"
        assert not (out / "trials" / key / "checkpoint.pt").exists()  # the runs stay put
    per_class = pd.read_csv(out / "per_class.csv")
    assert len(per_class[per_class["rule"] == "raw"]) == 2 * 10
    assert main(["report", str(out), "--format", "md"]) == 0
    report = (out / "report.md").read_text()
    assert "kps-ga" in report and "logit-adjust" in report
    assert "| trials " in report and "2 (2 finished)" in report  # trials, not rule rows
    # ten classes: one bar group per class, the post-hoc rule as bars of its own
    assert [p.name for p in (out / "figures").glob("per_*.png")] == [
        "per_class_synthetic-lt_rho10.png"
    ]
    assert "ce [logit-adjust]" in report


def test_collect_refuses_unfinished_runs_and_used_folders(runs, tmp_path, capsys):
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.yaml").write_text("loss: ce\n")
    assert main(["collect", str(tmp_path / "a"), str(half)]) == 2
    assert "has no finished result.json" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # checked before anything was written

    assert main(["collect", str(tmp_path / "b"), str(runs / "ce-2")]) == 0
    assert main(["collect", str(tmp_path / "b"), str(runs / "kps-ga-2")]) == 2
    assert "already holds results" in capsys.readouterr().err
    kept = pd.read_csv(tmp_path / "b" / "results.csv")
    assert set(kept["trial"]) == {"ce-2"}  # nothing overwritten


def test_a_result_from_before_a_metric_existed_takes_it_from_the_raw_rule(runs, tmp_path):
    """A result.json written by an older ltbench lacks e.g. the worst class; `ltbench eval`'s
    raw rule measured it on the same final model, so the results table takes it from there,
    and never overrides a number the result has."""
    import shutil

    old = tmp_path / "old-ce"
    shutil.copytree(runs / "ce-2", old)
    saved = json.loads((old / "result.json").read_text())
    raw = saved["posthoc"]["rules"]["raw"]
    for key in ("worst_class_error", "worst_class", "many_shot"):
        saved.pop(key)
    saved["top1_error"] = raw["top1_error"] + 1.0  # the result's own number wins
    (old / "result.json").write_text(json.dumps(saved))
    assert main(["collect", str(tmp_path / "rec"), str(old)]) == 0
    results = pd.read_csv(tmp_path / "rec" / "results.csv")
    row = results[results["rule"] == "raw"].iloc[0]
    assert row["worst_class_error"] == pytest.approx(raw["worst_class_error"])
    assert row["worst_class"] == saved["class_names"][raw["worst_class"]]
    assert row["many_shot"] == raw["many_shot"]
    assert row["top1_error"] == pytest.approx(saved["top1_error"])
