"""Suites and sweeps on Ray Tune, end to end on tiny settings.

Ray starts once per session (`ray_session` in conftest.py) and only for the tests that need it.
The tests that train for real use synthetic-lt with 1-2 epochs, <= 50 images per class and a
quarter-width model; `slow` tests start their own Ray (a subprocess killed half-way, a head
started with `ray start`).
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ltbench.cli import main
from ltbench.runner.args import add_run_args
from ltbench.schema import RESULTS_COLUMNS, sweep_columns

TINY = """
description: tiny suite for the tests
methods:
  - loss: ce
  - loss: kps-ga
datasets: [synthetic-lt]
rhos: [10]
seeds: [0, 1]
config: {epochs: 2, n_max: 30, width: 0.25, eval_every: 1}
"""

SWEEP = """
description: tiny search for the tests
methods: [kps-ga]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 2, n_max: 50, width: 0.25, val_fraction: 0.2}
search:
  space:
    m_max: {type: float, low: 0.1, high: 0.8}
    s_base: {type: int, low: 5, high: 40}
  num_samples: 3
  grace_fraction: 0.5
  reduction_factor: 2
"""


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`ltbench ARGV` in this process; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_report() -> bool:
    try:
        from reports import build_report  # noqa: F401
    except ImportError:
        return False
    return True


def snapshot(paths) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


# ----------------------------------------------------------------------------------------------
# Errors found before Ray starts


def test_unreachable_address_is_a_quick_one_line_error(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    start = time.monotonic()
    rc, out, err = run_cli(
        ["run", "--suite", suite, "--out", tmp_path / "o", "--address", f"127.0.0.1:{free_port()}"]
    )
    assert rc == 2
    assert err.startswith("ltbench: error: cannot reach a Ray cluster at 127.0.0.1:")
    assert err.count("\n") == 1
    assert time.monotonic() - start < 15


def test_existing_results_need_resume(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    (out_dir / "trials.json").write_text("{}")
    rc, _, err = run_cli(["run", "--suite", suite, "--out", out_dir])
    assert rc == 2
    assert "already holds suite results; pass --resume" in err and err.count("\n") == 1


def test_unknown_suite_and_wrong_command(tmp_path):
    rc, _, err = run_cli(["run", "--suite", "nope", "--out", tmp_path / "o"])
    assert rc == 2 and "unknown suite 'nope'; known suites:" in err
    rc, _, err = run_cli(["run", "--suite", "kps-search", "--out", tmp_path / "o"])
    assert rc == 2 and "ltbench sweep" in err
    rc, _, err = run_cli(["sweep", "--suite", "ablation", "--out", tmp_path / "o"])
    assert rc == 2 and "has no search block" in err
    rc, _, err = run_cli(["sweep", "--suite", "kps-search", "--rho", "100,50"])
    assert rc == 2 and "a sweep searches one" in err


def test_share_resources():
    from ltbench.errors import LtbenchError
    from ltbench.runner.ray_adapter import share_resources

    assert share_resources(2, 0, 2, None, None) == {"cpu": 1.0, "gpu": 0.0}
    assert share_resources(16, 1, 16, None, None) == {"cpu": 16.0, "gpu": 1.0}
    assert share_resources(16, 1, 16, None, 0.25) == {"cpu": 4.0, "gpu": 0.25}
    assert share_resources(16, 2, 8, 2, 0.5) == {"cpu": 2.0, "gpu": 0.5}
    with pytest.raises(LtbenchError, match="has none"):
        share_resources(2, 0, 2, None, 0.25)
    with pytest.raises(LtbenchError, match=r"must be in \[0, 1\].*or a whole number"):
        share_resources(16, 4, 16, None, 1.5)
    # a whole G > 1: G data-parallel workers of one GPU each; the share is per worker
    assert share_resources(16, 4, 16, None, 2) == {"cpu": 4.0, "gpu": 1.0}
    with pytest.raises(LtbenchError, match="more than any node"):
        share_resources(4, 0, 2, 3, None)


def test_run_trial_device_from_resources_and_no_retraining(tmp_path):
    """Ray-free: the trial's device follows its GPU share; a finished trial is only reported."""
    from ltbench.runner.suite import expand, load_suite
    from ltbench.runner.trials import save_trials
    from ltbench.runner.worker import run_trial

    suite = tmp_path / "s.yaml"
    suite.write_text(TINY)
    spec = expand(load_suite(str(suite)))[0]
    save_trials(tmp_path, [spec])
    seen, reports = [], []

    def fake_train(cfg, out_dir, hooks=None, **kw):
        seen.append((cfg.device, kw))
        hooks.on_epoch_end(1, {"epoch": 1, "train_loss": 1.0}, Path(out_dir) / "checkpoint.pt")
        hooks.on_epoch_end(2, {"epoch": 2, "train_loss": 0.5}, Path(out_dir) / "checkpoint.pt")
        result = {"top1_error": 12.5, "epochs": 2, "wall_seconds": 1.0}
        (Path(out_dir) / "result.json").write_text(json.dumps(result))
        return result

    run_trial(spec, tmp_path, {"cpu": 1, "gpu": 0.25}, reports.append, fake_train)
    assert seen == [("cuda", {"resume": True, "progress": False})]
    # the last epoch is reported once, after train() returned (never cut off by a scheduler)
    assert [r.get("epoch") for r in reports] == [1, None]
    assert reports[-1]["top1_error"] == 12.5 and reports[-1]["finished"]
    run_trial(spec, tmp_path, {"cpu": 1, "gpu": 0}, reports.append, fake_train)
    assert len(seen) == 1 and reports[-1]["top1_error"] == 12.5


# ----------------------------------------------------------------------------------------------
# A real suite: 2 methods x 1 rho x 2 seeds, then a resume after losing two trials


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    suite = root / "tiny.yaml"
    suite.write_text(TINY)
    out_dir = root / "out"
    rc, out, err = run_cli(["run", "--suite", suite, "--out", out_dir, "--max-failures", "0"])
    return suite, out_dir, rc, out, err


def test_suite_end_to_end(tiny_run):
    _, out_dir, rc, out, err = tiny_run
    assert rc == 0, err
    results = pd.read_csv(out_dir / "results.csv", keep_default_na=False)
    assert list(results.columns) == RESULTS_COLUMNS
    assert sorted(results["trial"]) == [
        "ce_synthetic-lt_rho10_seed0",
        "ce_synthetic-lt_rho10_seed1",
        "kps-ga_synthetic-lt_rho10_seed0",
        "kps-ga_synthetic-lt_rho10_seed1",
    ]
    assert set(results["status"]) == {"finished"}
    assert (results["epochs"] == 2).all() and (results["rho"] == 10).all()
    assert results["top1_error"].between(0, 100).all()
    per_class = pd.read_csv(out_dir / "per_class.csv")
    assert len(per_class) == 4 * 10
    for key in results["trial"]:
        tdir = out_dir / "trials" / key
        assert {"config.yaml", "metrics.jsonl", "checkpoint.pt", "result.json"} <= {
            p.name for p in tdir.iterdir()
        }
    assert (out_dir / "suite.yaml").is_file() and (out_dir / "trials.json").is_file()
    assert any((out_dir / "ray").iterdir())
    assert out.count("] finished ") == 4
    assert "trials: done 4 / running 0 / failed 0 / pending 0; best top-1 error" in out
    if have_report():
        assert (out_dir / "report.md").is_file()


def test_resume_runs_only_unfinished_trials(tiny_run):
    suite, out_dir, rc, _, _ = tiny_run
    assert rc == 0
    trials = out_dir / "trials"
    keep = [trials / "ce_synthetic-lt_rho10_seed0", trials / "kps-ga_synthetic-lt_rho10_seed1"]
    before = snapshot([d / name for d in keep for name in ("result.json", "metrics.jsonl")])
    # One trial never started; one was killed after its last checkpoint, before its result.
    shutil.rmtree(trials / "ce_synthetic-lt_rho10_seed1")
    (trials / "kps-ga_synthetic-lt_rho10_seed0" / "result.json").unlink()

    rc, _, err = run_cli(["run", "--suite", suite, "--out", out_dir])
    assert rc == 2 and "--resume" in err

    rc, out, err = run_cli(
        ["run", "--suite", suite, "--out", out_dir, "--resume", "--report", "none"]
    )
    assert rc == 0, err
    assert "4 trials (2 already finished)" in out
    assert out.count("] finished ") == 2
    assert snapshot(before) == before  # finished trials untouched
    results = pd.read_csv(out_dir / "results.csv")
    assert len(results) == 4 and set(results["status"]) == {"finished"}

    rc, out, _ = run_cli(
        ["run", "--suite", suite, "--out", out_dir, "--resume", "--report", "none"]
    )
    assert rc == 0 and "4 trials (4 already finished)" in out


# ----------------------------------------------------------------------------------------------
# Failures: a real invalid loss, and an injected failure that a retry fixes


def test_failing_trial_is_reported_and_others_finish(ray_session, tmp_path):
    # A bad loss parameter is refused before Ray starts (tests/test_reliability.py); a learning
    # rate that makes the loss NaN can only fail inside its trial, and fails it alone.
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        TINY.replace("- loss: kps-ga", "- {name: ce-nan, loss: ce, config: {lr: 1.0e+30}}")
        .replace("seeds: [0, 1]", "seeds: [0]")
        .replace("epochs: 2", "epochs: 1")
    )
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(
        ["run", "--suite", suite, "--out", out_dir, "--max-failures", "0", "--report", "none"]
    )
    assert rc == 1, err
    results = pd.read_csv(out_dir / "results.csv", keep_default_na=False).set_index("method")
    assert results.loc["ce", "status"] == "finished" and results.loc["ce", "error"] == ""
    assert results.loc["ce-nan", "status"] == "failed"
    assert "NaN or infinite" in results.loc["ce-nan", "error"]
    assert "FAILED ce-nan_synthetic-lt_rho10_seed0" in out
    assert "1 finished, 1 failed, 0 missing" in out


def flaky_train(cfg, out_dir, hooks=None, *, resume=False, progress=None, **_):
    """A stand-in for ltbench.engine.loop.train: seed 0 fails once, seed 1 always fails."""
    out_dir = Path(out_dir)
    marker = out_dir / "attempts"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if cfg.seed == 1 or attempts == 1:
        raise RuntimeError(f"injected failure (attempt {attempts})")
    hooks.on_epoch_end(1, {"epoch": 1, "test_top1_error": 50.0}, out_dir / "checkpoint.pt")
    result = {"top1_error": 50.0, "epochs": 1, "wall_seconds": 0.1, "device": cfg.device}
    (out_dir / "result.json").write_text(json.dumps(result))
    return result


def test_retry_then_failure_with_stand_in_trainer(ray_session, tmp_path):
    from ray import cloudpickle

    from ltbench.runner.commands import run_suite_command

    # Trial processes cannot import this test module: ship flaky_train by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    suite = tmp_path / "s.yaml"
    suite.write_text(TINY.replace("  - loss: kps-ga\n", ""))
    p = argparse.ArgumentParser()
    add_run_args(p)
    args = p.parse_args(
        [
            "--suite",
            str(suite),
            "--out",
            str(tmp_path / "o"),
            "--max-failures",
            "1",
            "--report",
            "none",
        ]
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = run_suite_command(args, train_fn=flaky_train)
    assert rc == 1
    trials = tmp_path / "o" / "trials"
    ok, bad = trials / "ce_synthetic-lt_rho10_seed0", trials / "ce_synthetic-lt_rho10_seed1"
    assert (ok / "attempts").read_text() == "2" and (bad / "attempts").read_text() == "2"
    assert json.loads((ok / "result.json").read_text())["device"] == "cpu"
    results = pd.read_csv(tmp_path / "o" / "results.csv", keep_default_na=False)
    assert list(results["status"]) == ["finished", "failed"]
    assert results.loc[1, "error"] == "RuntimeError: injected failure (attempt 2)"


# ----------------------------------------------------------------------------------------------
# The sweep: Optuna (or random) search + ASHA on the validation error


def test_sweep_reports_best_point_and_writes_sweep_csv(ray_session, tmp_path):
    suite = tmp_path / "search.yaml"
    suite.write_text(SWEEP)
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(
        ["sweep", "--suite", suite, "--out", out_dir, "--num-samples", "3", "--report", "md"]
    )
    assert rc == 0, err
    sweep = pd.read_csv(out_dir / "sweep.csv")
    assert list(sweep.columns) == sweep_columns(["m_max", "s_base"]) and len(sweep) == 3
    assert set(sweep["status"]) <= {"finished", "stopped"}
    assert (sweep["status"] == "finished").any()
    assert sweep["m_max"].between(0.1, 0.8).all() and sweep["s_base"].between(5, 40).all()
    assert (sweep["s_base"] == sweep["s_base"].round()).all()
    assert "best (selected on balanced validation error): m_max=" in out and "test error" in out
    assert sweep.loc[sweep["status"] == "finished", "val_balanced_error"].between(0, 100).all()
    results = pd.read_csv(out_dir / "results.csv")
    assert len(results) == 3 and list(results.columns) == RESULTS_COLUMNS
    if have_report():
        assert (out_dir / "report.md").is_file()
    rc, _, err = run_cli(["sweep", "--suite", suite, "--out", out_dir])
    assert rc == 2 and "already holds results" in err


OTHER_SWEEP = """
description: a search of another loss's parameter, for the tests
methods: [la]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 2, n_max: 30, width: 0.25, val_fraction: 0.2}
search:
  space:
    tau: {type: float, low: 0.5, high: 2.0}
  num_samples: 3
  grace_fraction: 1.0
  reduction_factor: 2
"""


def tau_train(cfg, out_dir, hooks=None, *, resume=False, progress=None, **_):
    """A stand-in for ltbench.engine.loop.train: the error is a bowl around tau = 1."""
    out_dir = Path(out_dir)
    val = 20.0 + 10.0 * (cfg.loss_params["tau"] - 1.0) ** 2
    for epoch in (1, 2):
        metrics = {
            "epoch": epoch,
            "val_balanced_error": val + 2 - epoch,
            "val_top1_error": val - epoch,
            "test_top1_error": val,
        }
        with open(out_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        hooks.on_epoch_end(epoch, metrics, out_dir / "checkpoint.pt")
    result = {
        "top1_error": val + 1,
        "val_balanced_error": val,
        "val_top1_error": val - 2,
        "epochs": 2,
        "wall_seconds": 0.1,
    }
    (out_dir / "result.json").write_text(json.dumps(result))
    return result


def test_sweep_of_another_parameter_writes_its_column(ray_session, tmp_path):
    """sweep.csv, suite.yaml and the report follow the suite's space, not KPS's parameters."""
    from ray import cloudpickle

    from ltbench.runner.args import add_sweep_args
    from ltbench.runner.commands import sweep_command

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    suite = tmp_path / "tau.yaml"
    suite.write_text(OTHER_SWEEP)
    out_dir = tmp_path / "out"
    p = argparse.ArgumentParser()
    add_sweep_args(p)
    args = p.parse_args(["--suite", str(suite), "--out", str(out_dir), "--report", "md"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = sweep_command(args, train_fn=tau_train)
    assert rc == 0, out.getvalue()
    sweep = pd.read_csv(out_dir / "sweep.csv")
    assert list(sweep.columns) == sweep_columns(["tau"])
    assert list(sweep.columns) == [
        "trial",
        "tau",
        "val_balanced_error",
        "val_top1_error",
        "test_top1_error",
        "epochs",
        "status",
    ]
    assert len(sweep) == 3 and set(sweep["status"]) == {"finished"}
    assert sweep["tau"].between(0.5, 2.0).all()
    expected = 20.0 + 10.0 * (sweep["tau"] - 1.0) ** 2
    assert (sweep["val_balanced_error"] - expected).abs().max() < 1e-9
    assert (sweep["val_top1_error"] - expected + 2).abs().max() < 1e-9
    suite_yaml = yaml.safe_load((out_dir / "suite.yaml").read_text())
    assert suite_yaml["search"]["params"] == ["tau"]
    results = pd.read_csv(out_dir / "results.csv")
    assert list(results.columns) == RESULTS_COLUMNS
    assert all(set(json.loads(p)) == {"tau"} for p in results["params"])
    assert "best (selected on balanced validation error): tau=" in out.getvalue()
    trials = json.loads((out_dir / "trials.json").read_text())
    assert all(set(t) == {"key", "method", "config"} for t in trials.values())
    if have_report():
        md = (out_dir / "report.md").read_text()
        assert "](figures/sweep_curve.png)" in md and "against tau" in md


GRID_SWEEP = """
description: a 3 x 2 grid for the tests
methods: [kps-ga]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 2, n_max: 30, width: 0.25, val_fraction: 0.2}
search:
  type: grid
  space:
    m_max: {type: float, values: [0.2, 0.4, 0.6]}
    s_base: {type: int, low: 10, high: 20, steps: 2}
"""


def grid_train(cfg, out_dir, hooks=None, *, poison=False, resume=False, progress=None, **_):
    """A stand-in for train: the balanced validation error is a bowl around (0.4, 20); the
    instance-weighted one and the test error are elsewhere. `poison`: the test numbers are
    garbage (as if the test labels were scrambled); the selection must not move."""
    import random

    out_dir = Path(out_dir)
    m, s = cfg.loss_params["m_max"], cfg.loss_params["s_base"]
    val = 30.0 + 100.0 * (m - 0.4) ** 2 + 0.1 * (20 - s)
    head_heavy = 10.0 + 20.0 * m  # lowest at m_max = 0.2: a different "best"
    test = random.Random(f"{m}{s}").uniform(0, 100) if poison else val + 5.0
    for epoch in (1, 2):
        metrics = {
            "epoch": epoch,
            "val_balanced_error": val + 2 - epoch,
            "val_top1_error": head_heavy,
            "test_top1_error": test,
        }
        with open(out_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        hooks.on_epoch_end(epoch, metrics, out_dir / "checkpoint.pt")
    result = {
        "top1_error": test,
        "val_balanced_error": val,
        "val_top1_error": head_heavy,
        "per_class_accuracy": [100.0 - test] * 10,
        "epochs": 2,
        "wall_seconds": 0.1,
    }
    (out_dir / "result.json").write_text(json.dumps(result))
    return result


def test_grid_sweep_runs_every_point_and_ignores_the_test_set(ray_session, tmp_path):
    """A grid runs each of its points to the end (no ASHA) and selects on the balanced
    validation error; with the test numbers poisoned, the same point is chosen."""
    import functools

    from ray import cloudpickle

    from ltbench.runner.args import add_sweep_args
    from ltbench.runner.commands import sweep_command

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    suite = tmp_path / "grid.yaml"
    suite.write_text(GRID_SWEEP)
    chosen = []
    for poison in (False, True):
        out_dir = tmp_path / f"out-{poison}"
        p = argparse.ArgumentParser()
        add_sweep_args(p)
        args = p.parse_args(["--suite", str(suite), "--out", str(out_dir), "--report", "none"])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = sweep_command(args, train_fn=functools.partial(grid_train, poison=poison))
        assert rc == 0, out.getvalue()
        assert "6 points of m_max, s_base (grid search, every point to the end" in out.getvalue()
        sweep = pd.read_csv(out_dir / "sweep.csv")
        assert len(sweep) == 6 and set(sweep["status"]) == {"finished"}
        assert sorted(zip(sweep["m_max"], sweep["s_base"], strict=True)) == [
            (m, s) for m in (0.2, 0.4, 0.6) for s in (10, 20)
        ]
        assert (sweep["epochs"] == 2).all()
        recorded = yaml.safe_load((out_dir / "suite.yaml").read_text())["search"]
        assert recorded["type"] == "grid" and recorded["scheduler"] == "none"
        line = next(x for x in out.getvalue().splitlines() if x.startswith("best"))
        chosen.append((line.split(":")[1].strip(), sweep.sort_values("trial")))
    assert chosen[0][0] == chosen[1][0] == "m_max=0.4, s_base=20"
    clean, poisoned = chosen[0][1], chosen[1][1]
    cols = ["m_max", "s_base", "val_balanced_error", "val_top1_error"]
    pd.testing.assert_frame_equal(
        clean.sort_values(cols[:2])[cols].reset_index(drop=True),
        poisoned.sort_values(cols[:2])[cols].reset_index(drop=True),
    )
    assert not clean["test_top1_error"].equals(poisoned["test_top1_error"])
    rc, _, err = run_cli(["sweep", "--suite", suite, "--num-samples", "3", "--out", tmp_path / "x"])
    assert rc == 2 and "grid search of 6 points" in err


# ----------------------------------------------------------------------------------------------
# slow: a suite killed half-way by SIGINT, resumed; a real `ray start` head via --address


def _default_sigint() -> None:
    """In the child: Ctrl-C's default (a shell may start the tests with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_sigint_half_way_then_resume(ray_session, tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    out_dir = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "ltbench.cli",
        "run",
        "--suite",
        str(suite),
        "--out",
        str(out_dir),
        "--max-concurrent",
        "1",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(out_dir.glob("trials/*/result.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        log, _ = proc.communicate(timeout=120)
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, log
    assert "ltbench: interrupted; continue with the same command plus --resume --out" in log
    results = pd.read_csv(out_dir / "results.csv")
    finished = list(results.loc[results["status"] == "finished", "trial"])
    assert 1 <= len(finished) < 4
    before = snapshot([out_dir / "trials" / k / "result.json" for k in finished])

    rc, out, err = run_cli(
        ["run", "--suite", suite, "--out", out_dir, "--resume", "--report", "none"]
    )
    assert rc == 0, err
    assert f"({len(finished)} already finished)" in out
    assert snapshot(before) == before
    results = pd.read_csv(out_dir / "results.csv")
    assert set(results["status"]) == {"finished"}


def _ray_processes_under(temp_dir: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_address_joins_a_running_head(tmp_path):
    if not shutil.which("ray"):
        pytest.skip("the ray command is not installed")
    port = free_port()
    temp_dir = f"/tmp/ltbray-{uuid.uuid4().hex[:8]}"
    start = subprocess.run(
        [
            "ray",
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert start.returncode == 0, start.stderr
        suite = tmp_path / "tiny.yaml"
        suite.write_text(
            TINY.replace("seeds: [0, 1]", "seeds: [0]").replace("epochs: 2", "epochs: 1")
        )
        out_dir = tmp_path / "out"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "ltbench.cli",
                "run",
                "--suite",
                str(suite),
                "--out",
                str(out_dir),
                "--address",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results = pd.read_csv(out_dir / "results.csv")
        assert len(results) == 2 and set(results["status"]) == {"finished"}
    finally:
        # Stop only the head this test started (never `ray stop`: other Ray users may exist).
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _ray_processes_under(temp_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(2)
        shutil.rmtree(temp_dir, ignore_errors=True)
