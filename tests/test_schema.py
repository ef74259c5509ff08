"""The results-file contract (ltbench.schema), trial specs, progress lines, and import hygiene.

No Ray and no training here: the report builds run in a subprocess so that the modules they
import can be checked.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_reports import make_fake_suite

from ltbench.runner.progress import Progress
from ltbench.runner.suite import expand, load_suite
from ltbench.runner.trials import TrialSpec, first_difference, load_trials, point_spec, rho_of
from ltbench.schema import (
    RESULTS_COLUMNS,
    SEARCH_METRIC,
    SWEEP_FIXED_COLUMNS,
    read_metrics,
    select_best,
    sweep_columns,
    sweep_params,
    trial_state,
)
from reports import build_report

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )


# ----------------------------------------------------------------------------------------------
# Import hygiene


def test_schema_imports_only_the_standard_library():
    proc = run_python(
        "import sys, ltbench.schema\n"
        "bad = [m for m in ('pandas', 'yaml', 'numpy', 'torch', 'ray') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    assert proc.returncode == 0, proc.stderr


def test_reports_build_without_torch_ray_or_the_engine(tmp_path):
    root = make_fake_suite(tmp_path / "suite", datasets={"synthetic-lt": 10})
    proc = run_python(
        "import sys\n"
        "import reports\n"
        "from reports import build_report\n"
        f"build_report({str(root)!r}, formats='md')\n"
        "heavy = ('torch', 'ray', 'ltbench.engine', 'ltbench.data', 'ltbench.runner')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert (root / "report.md").is_file()


def test_command_layer_does_not_import_ray():
    proc = run_python(
        "import sys\n"
        "import ltbench.runner.commands, ltbench.runner.ray_adapter, ltbench.cli\n"
        "assert 'ray' not in sys.modules\n"
    )
    assert proc.returncode == 0, proc.stderr


def test_only_the_adapters_import_ray_and_only_commands_reads_the_namespace():
    """Ray Tune lives in ray_adapter.py, Ray Train (data-parallel trials) in ray_train.py."""
    imports_ray = re.compile(r"^\s*(from ray[ .]|import ray\b)", re.M)
    adapters = {"ray_adapter.py", "ray_train.py"}
    for path in [*(ROOT / "ltbench").rglob("*.py"), *(ROOT / "reports").rglob("*.py")]:
        text = path.read_text()
        if not (path.parent.name == "runner" and path.name in adapters):
            assert not imports_ray.search(text), path
        if path.parent.name == "runner" and path.name not in ("args.py", "commands.py"):
            assert "Namespace" not in text and "argparse" not in text, path


# ----------------------------------------------------------------------------------------------
# The contract


def test_sweep_columns_follow_the_searched_parameters():
    assert sweep_columns(["m", "s"]) == [
        "trial",
        "m",
        "s",
        "val_balanced_error",
        "val_top1_error",
        "test_top1_error",
        "epochs",
        "status",
    ]
    assert sweep_columns(["tau"]) == ["trial", "tau", *SWEEP_FIXED_COLUMNS[1:]]
    assert sweep_params({"search": {"params": ["b", "a"]}}, ["trial", "a", "b"]) == ["b", "a"]
    assert sweep_params({}, sweep_columns(["gamma", "beta"])) == ["gamma", "beta"]
    assert "params" in RESULTS_COLUMNS and RESULTS_COLUMNS[0] == "trial"
    assert SEARCH_METRIC == "val_balanced_error" and "val_balanced_error" in RESULTS_COLUMNS


def test_select_best_reads_only_status_and_the_selection_metric():
    sweep = pd.DataFrame(
        {
            "trial": ["a", "b", "c", "d", "e"],
            "val_balanced_error": [30.0, 20.0, 10.0, math.nan, 20.0],
            "val_top1_error": [5.0, 50.0, 60.0, 1.0, 50.0],
            "test_top1_error": [1.0, 2.0, 3.0, 0.0, 2.0],
            "status": ["finished", "finished", "stopped", "finished", "finished"],
        }
    )
    assert select_best(sweep)["trial"] == "b"  # c stopped early; ties: the first row
    poisoned = sweep.assign(test_top1_error=[99.0, math.nan, -5.0, 0.0, 1e9])
    poisoned = poisoned.drop(columns="val_top1_error")
    assert select_best(poisoned)["trial"] == "b"
    assert select_best(sweep, "val_top1_error")["trial"] == "d"  # the head-heavy number
    assert select_best(sweep.assign(status="failed")) is None
    assert select_best(sweep.drop(columns="val_balanced_error")) is None


def test_readers_and_trial_state(tmp_path):
    tdir = tmp_path / "trials" / "k"
    tdir.mkdir(parents=True)
    assert trial_state(tmp_path, "k") == ("missing", None, "")
    (tdir / "error.txt").write_text("boom\n  bad\n")
    assert trial_state(tmp_path, "k") == ("failed", None, "boom bad")
    (tdir / "result.json").write_text('{"top1_error": 3.0}')
    assert trial_state(tmp_path, "k")[:2] == ("finished", {"top1_error": 3.0})
    (tdir / "metrics.jsonl").write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epo')
    assert read_metrics(tdir / "metrics.jsonl") == [{"epoch": 1}, {"epoch": 2}]
    assert read_metrics(tdir / "absent.jsonl") == []


# ----------------------------------------------------------------------------------------------
# Trial specs: one copy of each setting


OLD_FORMAT = {
    "key": "la1_synthetic-lt_rho100_seed1",
    "method": "la1",
    "loss": "la",
    "params": {"tau": 1.0},
    "mixup_alpha": 0.0,
    "dataset": "synthetic-lt",
    "rho": 100.0,
    "seed": 1,
    "subset_seed": 0,
}


def test_trial_spec_derives_its_settings_from_the_config(tmp_path):
    t = expand(load_suite("mixup"))[-1]
    assert set(t.to_dict()) == {"key", "method", "config"}
    assert t.loss == t.config["loss"] == "kps-ga"
    assert t.params == t.config["loss_params"] and t.params is not t.config["loss_params"]
    assert t.mixup_alpha == 1.0 and t.dataset == "cifar100-lt"
    assert (t.rho, t.seed, t.subset_seed) == (50.0, 2, 0)
    with pytest.raises(AttributeError):
        t.rho = 10.0  # read-only
    assert [rho_of(1 / r) for r in (100, 50, 3, 12.5, 7)] == [100, 50, 3, 12.5, 7]
    assert math.isnan(rho_of(None))


def test_trials_json_of_the_old_format_still_loads(tmp_path):
    new = expand(load_suite("ablation"))[0]
    config = {**new.config, "loss": "la", "loss_params": {"tau": 1.0}, "seed": 1}
    config.update(dataset="synthetic-lt", imb_factor=0.01)
    (tmp_path / "trials.json").write_text(
        json.dumps({OLD_FORMAT["key"]: {**OLD_FORMAT, "config": config}})
    )
    spec = load_trials(tmp_path)[OLD_FORMAT["key"]]
    assert (spec.key, spec.method, spec.loss, spec.params) == (
        OLD_FORMAT["key"],
        "la1",
        "la",
        {"tau": 1.0},
    )
    assert (spec.dataset, spec.rho, spec.seed, spec.subset_seed) == ("synthetic-lt", 100, 1, 0)
    assert first_difference(spec, TrialSpec.from_dict(spec.to_dict())) is None


def test_point_spec_puts_the_point_into_the_loss_params():
    base = expand(load_suite("kps-search"))[0]
    spec = point_spec(base, "kps-ga_00003", {"s_base": 12})
    assert spec.key == "kps-ga_00003" and spec.method == "kps-ga (s_base=12)"
    assert spec.params == {**base.params, "s_base": 12}
    assert spec.config["loss_params"] == spec.params and base.params.get("s_base") != 12


# ----------------------------------------------------------------------------------------------
# Progress lines, without Ray


def test_progress_lines_and_status():
    lines: list[str] = []
    now = [0.0]
    p = Progress(
        3,
        "/nonexistent",
        describe=lambda key: f"described {key}",
        every=30,
        clock=lambda: now[0],
        write=lines.append,
    )
    p.started("t1")
    p.started("t2")
    p.reported()
    assert lines == []
    now[0] = 31.0
    p.reported()
    assert lines == [
        "trials: done 0 / running 2 / failed 0 / pending 1; best top-1 error -",
    ]
    p.completed("t1", "a", {}, {"finished": True, "top1_error": 12.5, "wall_seconds": 4})
    assert lines[-2] == "[1/3] finished a: top-1 error 12.50% (4 s)"
    assert lines[-1].endswith("pending 1; best top-1 error 12.50% (described a)")
    p.completed("t2", "b", {"tau": 0.5}, {"training_iteration": 1, "val_balanced_error": 40.0})
    assert lines[-2] == (
        "[2/3] stopped early b (tau=0.5) after 1 epoch(s), balanced val error 40.00%"
    )
    p.errored("t3", None, {}, lambda: "Traceback\n  ...\nValueError: nan loss\n")
    assert lines[-2] == "[3/3] FAILED t3: ValueError: nan loss"
    assert lines[-1].startswith("trials: done 2 / running 0 / failed 1 / pending 0")


# ----------------------------------------------------------------------------------------------
# Sweep reports over other parameters than the KPS ones


def make_sweep_dir(root: Path, params: dict[str, list], record: bool) -> Path:
    """A sweep directory over `params` (a grid); suite.yaml records them when `record`."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(params)
    grid = np.array(np.meshgrid(*params.values(), indexing="ij")).reshape(len(names), -1).T
    res, sw = [], []
    for i, values in enumerate(grid):
        point = dict(zip(names, values.tolist(), strict=True))
        val = 20 + sum((v - 1) ** 2 for v in point.values())
        row = dict.fromkeys(RESULTS_COLUMNS, math.nan)
        row.update(
            trial=f"p{i}",
            method="la",
            params=json.dumps(point),
            dataset="synthetic-lt",
            rho=100,
            seed=0,
            subset_seed=0,
            status="finished",
            error="",
            top1_error=val + 1,
        )
        res.append(row)
        sw.append({"trial": f"p{i}", **point, "val_top1_error": val, "test_top1_error": val + 1})
        sw[-1].update(epochs=4, status="finished")
    pd.DataFrame(res, columns=RESULTS_COLUMNS).to_csv(root / "results.csv", index=False)
    pd.DataFrame(sw, columns=sweep_columns(names)).to_csv(root / "sweep.csv", index=False)
    suite = {"name": "other-search"}
    if record:
        suite["search"] = {"params": names, "num_samples": len(grid)}
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    return root


def test_one_parameter_sweep_report_draws_a_curve(tmp_path):
    root = make_sweep_dir(tmp_path / "one", {"tau": [0.5, 1.0, 1.5, 2.0]}, record=True)
    md = build_report(root, formats="md")["md"].read_text()
    assert (root / "figures" / "sweep_curve.png").is_file()
    assert "](figures/sweep_curve.png)" in md and "against tau" in md
    assert "| tau " in md


def test_three_parameter_sweep_report_maps_the_first_two(tmp_path):
    params = {"gamma": [0.5, 1.0], "beta": [1.0, 2.0], "alpha": [0.0, 1.0, 2.0]}
    root = make_sweep_dir(tmp_path / "three", params, record=True)
    md = build_report(root, formats="md")["md"].read_text()
    assert (root / "figures" / "sweep_heatmap.png").is_file()
    assert "over gamma x beta" in md
    assert "searched 3 parameters (gamma, beta, alpha); the map shows the first two" in md
    header = next(line for line in md.splitlines() if line.startswith("| trial "))
    assert [c.strip() for c in header.strip("|").split("|")][:4] == [
        "trial",
        "gamma",
        "beta",
        "alpha",
    ]


def test_sweep_params_recorded_in_suite_yaml_must_have_columns(tmp_path):
    from ltbench.errors import LtbenchError

    root = make_sweep_dir(tmp_path / "bad", {"tau": [0.5, 1.0]}, record=True)
    (root / "suite.yaml").write_text(yaml.safe_dump({"search": {"params": ["tau", "gamma"]}}))
    with pytest.raises(LtbenchError, match="lacks column.*gamma"):
        build_report(root, formats="md")
