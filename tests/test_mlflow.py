"""`ltbench run --mlflow`: a tiny suite logged through Ray Tune's MLflowLoggerCallback, read
back with MLflow's own client; the flag's URI rules."""

from __future__ import annotations

import contextlib
import io
import json
import os

import pandas as pd
import pytest

from ltbench.cli import main
from ltbench.errors import LtbenchError
from ltbench.runner import tracking

SUITE = """
description: tiny suite logged to MLflow
methods:
  - loss: ce
  - loss: la
    params: {tau: 1.5}
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 2, n_max: 30, width: 0.25}
"""


def test_the_flag_gives_a_local_store_in_the_suite_folder_or_the_uri(tmp_path):
    pytest.importorskip("mlflow")
    assert tracking.tracking_uri(None, tmp_path) is None
    assert tracking.tracking_uri("", tmp_path) == (tmp_path.resolve() / "mlruns").as_uri()
    assert tracking.tracking_uri("http://tracker:5000", tmp_path) == "http://tracker:5000"
    assert tracking.tracking_uri("file:/srv/mlruns", tmp_path) == "file:/srv/mlruns"
    there = tmp_path / "store"
    assert tracking.tracking_uri(str(there), tmp_path) == there.resolve().as_uri()


def test_without_mlflow_installed_the_flag_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LtbenchError, match="--mlflow needs the mlflow package: pip install"):
        tracking.tracking_uri("", tmp_path)


@pytest.mark.ray
def test_a_suite_logs_each_trial_with_its_params_and_metrics(ray_session, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    suite = tmp_path / "tiny-mlflow.yaml"
    suite.write_text(SUITE)
    out_dir = tmp_path / "out"
    argv = ["run", "--suite", str(suite), "--out", str(out_dir), "--report", "md", "--mlflow"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0, err.getvalue()

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.tracking.MlflowClient((out_dir / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("tiny-mlflow")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    by_key = {run.data.params["key"]: run for run in runs}
    assert set(by_key) == {"ce_synthetic-lt_rho10_seed0", "la_synthetic-lt_rho10_seed0"}
    for key, run in by_key.items():
        tdir = out_dir / "trials" / key
        result = json.loads((tdir / "result.json").read_text())
        params = run.data.params
        assert params["method"] == key.split("_")[0] and params["dataset"] == "synthetic-lt"
        assert params["epochs"] == "2" and params["n_max"] == "30"
        assert run.info.status == "FINISHED"
        assert run.data.tags["ltbench.out_dir"] == str(out_dir.resolve())
        metrics = run.data.metrics
        assert metrics["top1_error"] == pytest.approx(result["top1_error"])
        assert metrics["worst_class_error"] == pytest.approx(result["worst_class_error"])
        first = json.loads((tdir / "metrics.jsonl").read_text().splitlines()[0])
        history = client.get_metric_history(run.info.run_id, "test_top1_error")
        assert [(h.step, h.value) for h in history] == [
            (1, pytest.approx(first["test_top1_error"]))
        ]
    assert by_key["la_synthetic-lt_rho10_seed0"].data.params["loss_params/tau"] == "1.5"

    results = pd.read_csv(out_dir / "results.csv")
    for row in results.itertuples():
        result = json.loads((out_dir / "trials" / row.trial / "result.json").read_text())
        assert row.worst_class == result["worst_class_name"]
        assert row.many_classes + row.medium_classes + row.few_classes == 10
    report = (out_dir / "report.md").read_text()
    assert "worst class" in report and "Classes in each group" in report
    assert "nan" not in report.lower()
    assert not os.environ.get("MLFLOW_TRACKING_URI")  # the logger left the process alone
