"""Packs in a suite (`pack: K`, `ltbench run --pack K`): the plan, and a real Ray Tune run whose
packed trials leave the same folders and results.csv as unpacked ones."""

import contextlib
import io
import json

import pandas as pd
import pytest

from ltbench.cli import main
from ltbench.errors import LtbenchError
from ltbench.runner.packs import plan_packs
from ltbench.runner.suite import expand, load_suite
from ltbench.schema import RESULTS_COLUMNS

PACKED = """
description: a packed suite for the tests
methods:
  - loss: ce
  - loss: ldam-drw
  - loss: kps-ga
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 2, n_max: 30, width: 0.25, eval_every: 2}
pack: 3
"""

KEYS = [
    "ce_synthetic-lt_rho10_seed0",
    "ldam-drw_synthetic-lt_rho10_seed0",
    "kps-ga_synthetic-lt_rho10_seed0",
]


def run_cli(argv):
    """`ltbench ARGV` in this process; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _suite(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_plan_groups_what_shares_data_and_schedule_and_says_who_runs_alone(tmp_path):
    text = PACKED.replace("- loss: kps-ga", "- loss: kps-ga\n  - loss: crt").replace(
        "seeds: [0]", "seeds: [0, 1]"
    )
    text = text.replace("  - loss: ce\n", "  - loss: ce\n  - {loss: la, config: {lr: 0.02}}\n")
    suite = load_suite(_suite(tmp_path, text))
    plan = plan_packs(expand(suite), 4)
    sizes = {name: len(keys) for name, keys in plan.units.items()}
    # ce, ldam-drw and kps-ga (2 seeds each) share a schedule: packs of 4 and 2; la's lr
    # differs, so its 2 trials pack apart; crt has two stages and runs alone
    assert sorted(sizes.values()) == [1, 1, 2, 2, 4]
    assert plan.units["ce_synthetic-lt_rho10_seed0+3"] == [
        "ce_synthetic-lt_rho10_seed0",
        "ce_synthetic-lt_rho10_seed1",
        "ldam-drw_synthetic-lt_rho10_seed0",
        "ldam-drw_synthetic-lt_rho10_seed1",
    ]
    assert plan.alone == {
        "crt_synthetic-lt_rho10_seed0": "crt has 2 stages",
        "crt_synthetic-lt_rho10_seed1": "crt has 2 stages",
    }
    lines = plan.describe(4)
    assert lines[0] == "packs of up to 4: 8 trials in 3 pack(s) (4, 2, 2 runs), 2 trial(s) alone"
    assert lines[1].startswith("  alone (crt has 2 stages): crt_synthetic-lt_rho10_seed0")
    assert all(len(keys) == 1 for keys in plan_packs(expand(suite), 1).units.values())


def test_a_data_parallel_trial_runs_alone_and_the_plan_says_why(tmp_path):
    text = PACKED.replace("- loss: kps-ga", "- {loss: kps-ga, workers_per_trial: 2}")
    plan = plan_packs(expand(load_suite(_suite(tmp_path, text))), 3)
    assert plan.units[KEYS[2]] == [KEYS[2]] and plan.packs == {f"{KEYS[0]}+1": KEYS[:2]}
    assert plan.alone == {KEYS[2]: "data-parallel on 2 workers"}
    assert plan.describe(3)[1] == f"  alone (data-parallel on 2 workers): {KEYS[2]}"


def test_a_method_with_a_meta_set_runs_alone(tmp_path):
    import dataclasses

    from ltbench.engine.pack import solo_reason
    from ltbench.engine.stages import check_run

    for t in expand(load_suite(_suite(tmp_path, PACKED))):
        cfg, stages = check_run(t.train_config(), files=False)
        assert solo_reason(cfg, stages) is None  # ce, ldam-drw, kps-ga: one plain stage
        meta = [dataclasses.replace(stages[0], meta_per_class=2)]
        assert solo_reason(cfg, meta) == f"{cfg.loss} holds out a meta set"


def test_bad_pack_sizes_are_one_line_errors(tmp_path):
    with pytest.raises(LtbenchError, match=r"suite.yaml: pack must be an integer >= 1.*got 0"):
        load_suite(_suite(tmp_path, PACKED.replace("pack: 3", "pack: 0")))
    rc, _, err = run_cli(["run", "--suite", _suite(tmp_path, PACKED), "--pack", "-1"])
    assert rc == 2 and "--pack must be an integer >= 1" in err


def _metrics(out_dir, key):
    result = json.loads((out_dir / "trials" / key / "result.json").read_text())
    rows = (out_dir / "trials" / key / "metrics.jsonl").read_text().splitlines()
    return result, [json.loads(r)["train_loss"] for r in rows]


def test_a_packed_suite_gives_the_unpacked_folders_and_results(ray_session, tmp_path):
    suite = _suite(tmp_path, PACKED)
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    rc, out, err = run_cli(["run", "--suite", suite, "--out", packed, "--report", "none"])
    assert rc == 0, err
    assert "packs of up to 3: 3 trials in 1 pack(s) (3 runs), 0 trial(s) alone" in out
    assert out.count("] finished ") == 3
    assert "trials: done 3 / running 0 / failed 0 / pending 0" in out
    rc, out, err = run_cli(
        ["run", "--suite", suite, "--out", alone, "--pack", "1", "--report", "none"]
    )
    assert rc == 0, err
    assert "packs of" not in out

    a = pd.read_csv(packed / "results.csv", keep_default_na=False)
    b = pd.read_csv(alone / "results.csv", keep_default_na=False)
    assert list(a.columns) == list(b.columns) == RESULTS_COLUMNS
    assert sorted(a["trial"]) == sorted(b["trial"]) == sorted(KEYS)
    assert set(a["status"]) == {"finished"}
    for key in KEYS:
        assert {p.name for p in (packed / "trials" / key).iterdir()} >= {
            "config.yaml",
            "metrics.jsonl",
            "checkpoint.pt",
            "result.json",
        }
        (res_a, loss_a), (res_b, loss_b) = _metrics(packed, key), _metrics(alone, key)
        assert res_a["pack"]["size"] == 3 and res_a["pack"]["fusion"] == "serial"
        assert "pack" not in res_b
        # on CPU the pack runs its members in turn: the numbers of the runs alone
        assert loss_a == pytest.approx(loss_b, rel=1e-6)
        assert res_a["confusion_matrix"] == res_b["confusion_matrix"]

    # resume: one trial lost its result (its checkpoint is at the end), one never started
    (packed / "trials" / KEYS[0] / "result.json").unlink()
    for f in (packed / "trials" / KEYS[2]).iterdir():
        f.unlink()
    rc, out, err = run_cli(
        ["run", "--suite", suite, "--out", packed, "--resume", "--report", "none"]
    )
    assert rc == 0, err
    assert "3 trials (1 already finished)" in out
    assert "packs of up to 3: 2 trials in 1 pack(s) (2 runs)" in out
    for key in (KEYS[0], KEYS[2]):
        (res_a, loss_a), (res_b, loss_b) = _metrics(packed, key), _metrics(alone, key)
        assert loss_a == pytest.approx(loss_b, rel=1e-6)
        assert res_a["confusion_matrix"] == res_b["confusion_matrix"]
