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
