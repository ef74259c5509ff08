"""Reliability, second pass (issue 25): nothing lost, nothing mislabelled, nothing that runs away.

Each test reproduces one finding of the second round of faults tried as a user would (it failed
on the code before the fix) and checks the behaviour that replaced it: the result kept or a
one-line refusal naming the flag that allows it, the right labels, one suite per folder, bounded
inputs and messages, no traceback, no empty folder or stray lock file after a refusal.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest

from ltbench.cli import main
from ltbench.engine.locks import LOCK_FILE, OWNER_FILE, hold

TRAIN = [
    "train",
    "--dataset",
    "synthetic-lt",
    "--epochs",
    "1",
    "--n-max",
    "30",
    "--imb-factor",
    "0.1",
    "--width",
    "0.25",
    "--val-fraction",
    "0.2",
]


def one_line_error(capsys) -> str:
    """The stderr of a refused command: exactly one line, `ltbench: error: ...`."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ltbench: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished 1-epoch synthetic run with a validation split (trained once per module)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(finished_run, dest)
    (dest / OWNER_FILE).unlink(missing_ok=True)
    return dest


# ----------------------------------------------------------------------------------------------
# Finding 1: a finished run loses data


def test_resume_on_a_finished_run_leaves_its_record_untouched(run_copy, capsys):
    assert main(["eval", str(run_copy), "--rules", "raw"]) == 0
    before = (run_copy / "result.json").read_bytes()
    assert "posthoc" in json.loads(before)
    capsys.readouterr()
    assert main([*TRAIN, "--out", str(run_copy), "--resume"]) == 2
    line = one_line_error(capsys)
    assert "finished run" in line and "--overwrite" in line and "nothing was changed" in line
    assert (run_copy / "result.json").read_bytes() == before


def test_a_second_eval_adds_its_rules_and_keeps_the_earlier_ones(run_copy, capsys):
    assert main(["eval", str(run_copy), "--rules", "raw,logit-adjust"]) == 0
    first = json.loads((run_copy / "result.json").read_text())["posthoc"]
    assert main(["eval", str(run_copy), "--rules", "tau-norm", "--tau-grid", "0:1:0.5"]) == 0
    block = json.loads((run_copy / "result.json").read_text())["posthoc"]
    assert list(block["rules"]) == ["raw", "logit-adjust", "tau-norm"]
    assert block["tau_grid"] == [0.0, 0.5, 1.0]  # the latest evaluation's settings
    # the kept rules were chosen on the default grid: each says so beside its numbers
    for rule in ("raw", "logit-adjust"):
        kept = block["rules"][rule]
        assert kept["tau_grid"] == first["tau_grid"] and len(kept["tau_grid"]) == 21
        assert kept["top1_error"] == first["rules"][rule]["top1_error"]
    assert "tau_grid" not in block["rules"]["tau-norm"]
    # redoing a rule replaces that rule only
    assert main(["eval", str(run_copy), "--rules", "raw", "--tau-grid", "0:1:0.5"]) == 0
    again = json.loads((run_copy / "result.json").read_text())["posthoc"]["rules"]
    assert list(again) == ["logit-adjust", "tau-norm", "raw"]
    assert "tau_grid" not in again["raw"]


def test_two_evals_at_once_never_lose_a_rule_that_exited_0(run_copy, capsys):
    """Two `eval`s started together: each that exits 0 has its rules in result.json (the other
    is refused, exit 2, naming the holder; before, both exited 0 and the last writer won)."""
    codes: dict[str, int] = {}
    start = threading.Barrier(2)

    def evaluate(rule: str) -> None:
        start.wait()
        codes[rule] = main(["eval", str(run_copy), "--rules", rule, "--device", "cpu"])

    threads = [threading.Thread(target=evaluate, args=(r,)) for r in ("raw", "tau-norm")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rules = json.loads((run_copy / "result.json").read_text())["posthoc"]["rules"]
    assert sorted(codes.values()) in ([0, 0], [0, 2])
    assert {r for r, code in codes.items() if code == 0} <= set(rules)
    err = capsys.readouterr().err
    if 2 in codes.values():
        assert "is in use by another ltbench process" in err
    assert "Traceback" not in err


def test_eval_is_refused_while_another_process_holds_the_run(run_copy, capsys):
    held, release = threading.Event(), threading.Event()

    def holder_thread():
        with hold(run_copy):
            held.set()
            release.wait(60)

    holder = threading.Thread(target=holder_thread)
    holder.start()
    try:
        assert held.wait(30)
        before = (run_copy / "result.json").read_bytes()
        assert main(["eval", str(run_copy), "--rules", "raw"]) == 2
        assert "is in use by another ltbench process" in one_line_error(capsys)
        assert (run_copy / "result.json").read_bytes() == before
    finally:
        release.set()
        holder.join()


def test_eval_on_a_suites_trial_reaches_the_suites_table_and_report(run_copy, tmp_path, capsys):
    suite = tmp_path / "suite"
    assert main(["collect", str(suite), str(run_copy)]) == 0
    trial = suite / "trials" / run_copy.name
    shutil.copy2(run_copy / "checkpoint.pt", trial / "checkpoint.pt")
    assert list(pd.read_csv(suite / "results.csv")["rule"]) == ["raw"]
    capsys.readouterr()
    assert main(["eval", str(trial), "--rules", "logit-adjust"]) == 0
    assert "results.csv" in capsys.readouterr().out
    table = pd.read_csv(suite / "results.csv")
    assert list(table["rule"]) == ["raw", "logit-adjust"]
    posthoc = json.loads((trial / "result.json").read_text())["posthoc"]["rules"]
    assert table["top1_error"].iloc[1] == pytest.approx(posthoc["logit-adjust"]["top1_error"])
    assert main(["report", str(suite), "--format", "md"]) == 0
    report = (suite / "report.md").read_text()
    assert "[logit-adjust]" in report
    assert not (suite / OWNER_FILE).exists() and (suite / LOCK_FILE).exists()


# ----------------------------------------------------------------------------------------------
# Finding 2: wrong labels with exit status 0

CIFAR10 = "airplane automobile bird cat deer dog frog horse ship truck".split()


def _cifar_folders(root: Path, train_names, test_names) -> None:
    """An image-folder copy of CIFAR-10: one 32x32 PNG per class and split, its red channel
    the class's position in `names` (so a label can be checked against the pixels)."""
    from PIL import Image

    for split, names in (("train", train_names), ("test", test_names)):
        for c, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), (c * 20, i, 0)).save(folder / f"{i}.png")


def _load(root: Path):
    from ltbench.data import load_dataset

    return load_dataset("cifar10-lt", root=root, imb_factor=1.0, cache_dir=False)


def test_test_class_folders_named_unlike_train_are_refused_by_name(tmp_path):
    from ltbench.errors import LtbenchError

    # the test copy spells one class differently: sorted positions would shift every class
    # from 'automobile' on by one (a 'car' folder sorts between 'bird' and 'cat')
    test_names = ["car" if n == "automobile" else n for n in CIFAR10]
    _cifar_folders(tmp_path, CIFAR10, test_names)
    with pytest.raises(LtbenchError) as err:
        _load(tmp_path)
    text = str(err.value)
    assert "\n" not in text
    assert f"only in {tmp_path / 'train'}: 'automobile'" in text
    assert f"only in {tmp_path / 'test'}: 'car'" in text


def test_train_refuses_mismatched_test_folders_in_one_line(tmp_path, capsys):
    test_names = ["car" if n == "automobile" else n for n in CIFAR10]
    _cifar_folders(tmp_path / "img", CIFAR10, test_names)
    data = ["--dataset", "cifar10-lt", "--data-root", str(tmp_path / "img"), "--imb-factor", "1"]
    out = tmp_path / "out"
    assert main(["train", *data, "--epochs", "1", "--width", "0.25", "--out", str(out)]) == 2
    assert "'car'" in one_line_error(capsys)
    assert not out.exists()


def test_folder_names_that_are_not_cifars_are_refused(tmp_path):
    from ltbench.errors import LtbenchError

    # numbered folders: sorted as text, "10" would come before "2" in CIFAR-100; here the
    # names simply are not CIFAR's, so their order says nothing about CIFAR's labels
    names = [f"c{9 - i}" for i in range(10)]
    _cifar_folders(tmp_path, names, names)
    with pytest.raises(LtbenchError, match=r"class folders 'c0', 'c1', .* are not cifar10-lt's"):
        _load(tmp_path)


def test_cifar_folder_names_give_cifars_labels(tmp_path):
    _cifar_folders(tmp_path, CIFAR10, CIFAR10)
    b = _load(tmp_path)
    assert b.class_names == CIFAR10
    # the red channel is the position in CIFAR10's list: label = CIFAR's label of the folder
    assert (b.train.images[:, 0, 0, 0].long() == b.train.labels * 20).all()
    assert (b.test.images[:, 0, 0, 0].long() == b.test.labels * 20).all()


# ----------------------------------------------------------------------------------------------
# Finding 3: a run folder fed by two suites

SUITE = """
methods: [{loss: METHOD}]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 1, n_max: 30, width: 0.25}
"""


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray fails the test: every refusal must come before it."""
    from ltbench.runner import ray_adapter

    def refuse(address):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_adapter, "connect", refuse)


def _planned_folder(tmp_path: Path, suite_file: Path, out: Path, extra=None) -> None:
    """DIR as `ltbench run` leaves it after its trials were planned (suite.yaml, trials.json,
    results.csv), without Ray: the planning step and the writers the driver uses."""
    from ltbench.cli import build_parser
    from ltbench.runner.commands import plan_command
    from ltbench.runner.outdir import write_suite_yaml
    from ltbench.runner.results import write_results
    from ltbench.runner.trials import save_trials

    plan = plan_command(build_parser().parse_args(["run", "--suite", str(suite_file)]), "run")
    out.mkdir(parents=True)
    write_suite_yaml(out, plan.suite, "paper", plan.overrides, extra)
    save_trials(out, plan.trials)
    write_results(out)


def test_resume_with_another_suite_file_is_refused(tmp_path, capsys, no_ray):
    first, second = tmp_path / "ce-suite.yaml", tmp_path / "la-suite.yaml"
    first.write_text(SUITE.replace("METHOD", "ce"))
    second.write_text(SUITE.replace("METHOD", "la"))
    out = tmp_path / "o"
    _planned_folder(tmp_path, first, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["run", "--suite", str(second), "--out", str(out), "--resume"]) == 2
    line = one_line_error(capsys)
    assert "holds the results of suite 'ce-suite', not 'la-suite'" in line
    assert f"--suite {first}" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_run_resume_into_a_sweeps_folder_is_refused(tmp_path, capsys, no_ray):
    suite = tmp_path / "ce-suite.yaml"
    suite.write_text(SUITE.replace("METHOD", "ce"))
    out = tmp_path / "o"
    # a sweep of the same name wrote this folder (its suite.yaml records the search block)
    _planned_folder(tmp_path, suite, out, {"search": {"params": ["tau"]}})
    before = (out / "suite.yaml").read_bytes()
    capsys.readouterr()
    assert main(["run", "--suite", str(suite), "--out", str(out), "--resume"]) == 2
    assert "holds a sweep's results" in one_line_error(capsys)
    assert (out / "suite.yaml").read_bytes() == before


# ----------------------------------------------------------------------------------------------
# Finding 4: an interrupted sweep recorded as stopped by ASHA

SWEEP = """
methods: [la]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 4, n_max: 30, width: 0.25, val_fraction: 0.2}
search:
  space: {tau: {type: float, low: 0.5, high: 2.0}}
  num_samples: 3
"""


def test_an_interrupted_sweep_is_not_recorded_as_stopped_by_asha(tmp_path, capsys, monkeypatch):
    """Three points: one stopped early by ASHA (Tune ended it after 1 epoch), two cut off by a
    Ctrl-C after 2 epochs. Only the first is `stopped`; the others are missing, and say why.
    Ray is replaced by the events the driver hears from it (`ray_adapter.run_search`)."""
    from ltbench.runner import ray_adapter
    from ltbench.runner.trials import point_spec, save_trial_spec
    from ltbench.schema import trial_dir

    def fake_search(
        out_dir, name, base, plan, cluster, progress, *, on_start, train_fn, mlflow=None
    ):
        on_start("random")
        for i, (key, epochs) in enumerate([("la_00000", 1), ("la_00001", 2), ("la_00002", 2)]):
            folder = trial_dir(out_dir, key)
            save_trial_spec(folder, point_spec(base, key, {"tau": 0.5 + i / 2}))
            rows = [{"epoch": e + 1, "val_balanced_error": 80.0 - e} for e in range(epochs)]
            (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            if key == "la_00000":  # ASHA ended it: Tune reports the trial complete
                progress.completed(key, key, {"tau": 0.5}, {"training_iteration": 1})
        progress.interrupted = True  # then Ctrl-C: the other two never complete

    monkeypatch.setattr(ray_adapter, "run_search", fake_search)
    (tmp_path / "s.yaml").write_text(SWEEP)
    out = tmp_path / "o"
    code = main(["sweep", "--suite", str(tmp_path / "s.yaml"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130
    sweep = pd.read_csv(out / "sweep.csv").set_index("trial")
    assert sweep["status"].to_dict() == {
        "la_00000": "stopped",
        "la_00001": "missing",
        "la_00002": "missing",
    }
    results = pd.read_csv(out / "results.csv").set_index("trial")
    assert results.loc["la_00000", "error"] == "stopped early by ASHA after 1 epoch(s)"
    for key in ("la_00001", "la_00002"):
        assert "ASHA" not in results.loc[key, "error"]
        assert results.loc[key, "error"].startswith("interrupted (Ctrl-C or SIGTERM)")
    assert err.strip().splitlines() == [
        f"ltbench: interrupted; a sweep does not resume: the points tried so far are in "
        f"{out / 'sweep.csv'}; to search again, start the sweep with another --out"
    ]
    # and the folder is not taken for a new sweep: the refusal says that sweeps do not resume
    assert main(["sweep", "--suite", str(tmp_path / "s.yaml"), "--out", str(out)]) == 2
    assert "a sweep does not resume" in one_line_error(capsys)


# ----------------------------------------------------------------------------------------------
# Finding 5: a hand-edited results.csv gives wrong cells silently


@pytest.fixture
def collected(run_copy, tmp_path) -> Path:
    """A results folder of two seeds of one method (the same run collected twice)."""
    second = tmp_path / "run-seed1"
    shutil.copytree(run_copy, second)
    out = tmp_path / "table"
    assert main(["collect", str(out), str(run_copy), str(second)]) == 0
    table = pd.read_csv(out / "results.csv")
    table.loc[1, "seed"] = 1
    table.to_csv(out / "results.csv", index=False)
    assert main(["report", str(out), "--format", "md"]) == 0  # as written: a good table
    return out


def _edit(path: Path, edit) -> None:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(path, index=False)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.loc.__setitem__((1, "seed"), ""), r"line 3: the finished trial .* has seed"),
        (
            lambda t: t.loc.__setitem__((0, "top1_error"), "ninety"),
            r"line 2: top1_error is 'ninety', not a number",
        ),
        (
            lambda t: t.loc.__setitem__(2, t.loc[1]),
            r"trial 'run-seed1' \(rule raw\) is on lines 3, 4; a trial counts once",
        ),
    ],
    ids=["nan-seed", "word-in-number-column", "duplicated-row"],
)
def test_a_hand_edited_results_csv_is_refused_naming_the_line(collected, capsys, edit, message):
    import re

    _edit(collected / "results.csv", edit)
    (collected / "report.md").unlink()
    capsys.readouterr()
    assert main(["report", str(collected), "--format", "md"]) == 2
    assert re.search(message, one_line_error(capsys))
    assert not (collected / "report.md").exists()


# ----------------------------------------------------------------------------------------------
# Finding 6: runaway inputs (grids, YAML values, error messages)


@pytest.mark.parametrize(
    "grid, message",
    [
        ("0:1e9:1e-9", "has 1e+18 values; at most 10000"),
        ("nan:1:0.1", "START, STOP and STEP must be finite numbers"),
        ("0:inf:0.1", "START, STOP and STEP must be finite numbers"),
    ],
)
def test_tau_grids_are_bounded_and_finite(run_copy, capsys, grid, message):
    before = (run_copy / "result.json").read_bytes()
    capsys.readouterr()
    assert main(["eval", str(run_copy), "--tau-grid", grid]) == 2
    assert message in one_line_error(capsys)
    assert (run_copy / "result.json").read_bytes() == before


def _alias_bomb(levels: int) -> str:
    """A list of `levels` nested YAML aliases, each 9 copies of the one before: a few hundred
    bytes that stand for 9**levels strings."""
    items = ["&l0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    items += [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(items)}]"


def test_a_yaml_alias_bomb_in_a_suite_is_one_short_line(tmp_path, capsys, no_ray):
    suite = tmp_path / "bomb.yaml"
    suite.write_text(
        f"description: {_alias_bomb(8)}\nmethods: [ce]\ndatasets: [synthetic-lt]\n"
        "rhos: [10]\nseeds: [0]\n"
    )
    assert len(suite.read_bytes()) < 500
    assert main(["run", "--suite", str(suite), "--out", str(tmp_path / "o")]) == 2
    line = one_line_error(capsys)
    assert "more than 100000 values once its YAML aliases" in line and len(line) < 300
    assert not (tmp_path / "o").exists()


def test_a_yaml_alias_bomb_in_a_param_is_one_short_line(tmp_path, capsys):
    argv = [*TRAIN, "-p", f"x={_alias_bomb(8)}", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "-p x: more than 100000 values" in line and len(line) < 400


def test_a_long_message_is_cut_to_a_bounded_line():
    from ltbench.errors import MAX_MESSAGE, LtbenchError, one_line

    line = one_line(LtbenchError("value " + "x" * 10**6 + " end"))
    assert len(line) <= MAX_MESSAGE
    assert line.startswith("value xxx") and line.endswith("xxx end")
    assert "characters left out" in line


def test_grid_searches_are_bounded(tmp_path):
    from ltbench.errors import LtbenchError
    from ltbench.runner.search import parse_search

    with pytest.raises(LtbenchError, match="steps=1000000000"):
        parse_search(
            {
                "type": "grid",
                "space": {"tau": {"type": "float", "low": 0, "high": 1, "steps": 10**9}},
            },
            "s.yaml",
        )
    dims = {p: {"type": "float", "low": 0, "high": 1, "steps": 100} for p in ("a", "b", "c")}
    with pytest.raises(LtbenchError, match=r"the grid has 1e\+06 points; at most 10000"):
        parse_search({"type": "grid", "space": dims}, "s.yaml")


# ----------------------------------------------------------------------------------------------
# Finding 7: tracebacks


def test_eval_of_a_result_json_holding_a_list_is_one_line(run_copy, capsys):
    (run_copy / "result.json").write_text("[]")
    assert main(["eval", str(run_copy)]) == 2
    assert "holds a JSON list, not a run's record" in one_line_error(capsys)
    assert (run_copy / "result.json").read_text() == "[]"


@pytest.mark.parametrize("command", ["train", "run"])
def test_an_out_the_system_cannot_create_is_one_line(tmp_path, capsys, no_ray, command):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc")
    if command == "train":
        argv = [*TRAIN, "--out", "/proc/ltbench-test"]
    else:
        (tmp_path / "s.yaml").write_text(SUITE.replace("METHOD", "ce"))
        argv = ["run", "--suite", str(tmp_path / "s.yaml"), "--out", "/proc/ltbench-test"]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "cannot create the folder /proc/ltbench-test" in line
    assert "--resume" not in line  # nothing ran, so there is nothing to continue


# ----------------------------------------------------------------------------------------------
# Finding 8: unclear or wrong messages


@pytest.mark.parametrize(
    "text, value",
    [
        ("m_max=1e9", 1e9),
        ("m_max=1e+9", 1e9),
        ("s_base=1e1", 10.0),
        ("m_max=-2.5E-3", -2.5e-3),
        ("m_max=1.0e+9", 1e9),
        ("name=1e9x", "1e9x"),
        ("m_max=0.5", 0.5),
    ],
)
def test_exponent_numbers_in_params_are_numbers(text, value):
    from ltbench.cli import build_parser

    args = build_parser().parse_args([*TRAIN, "-p", text])
    assert args.param == [(text.split("=")[0], value)]
    assert type(args.param[0][1]) is type(value)


def test_a_nan_sweep_bound_says_it_is_not_finite(tmp_path):
    from ltbench.errors import LtbenchError
    from ltbench.runner.search import parse_search

    space = {"tau": {"type": "float", "low": float("nan"), "high": 2.0}}
    with pytest.raises(LtbenchError, match="low must be a finite float, got nan"):
        parse_search({"space": space}, "s.yaml")


def _start(argv: list[str], cwd: Path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    code = "import sys; from ltbench.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_train_like_ctrl_c(tmp_path, signame):
    import signal
    import time

    out = tmp_path / "o"
    proc = _start([*TRAIN[:3], "--epochs", "200", *TRAIN[5:], "--out", str(out)], tmp_path)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.pt").is_file():  # the first epoch is done
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        f"ltbench: interrupted by {signame}; the run so far is in {out}: continue it with the "
        "same command plus --resume"
    ]
    assert not (out / OWNER_FILE).exists()  # the PID file goes with the lock
    assert (out / "checkpoint.pt").is_file()


def test_list_into_a_closed_pipe_exits_quietly(tmp_path):
    """`ltbench list | head -3`: the reader is gone before ltbench writes (here from the start)."""
    proc = _start(["list"], tmp_path)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""


# ----------------------------------------------------------------------------------------------
# Finding 9: silent overrides and leftovers


def test_a_corrupt_image_leaves_no_empty_folder_or_lock_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path / "cache"))
    _cifar_folders(tmp_path / "img", CIFAR10, CIFAR10)
    bad = tmp_path / "img" / "train" / "cat" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])
    out = tmp_path / "runs" / "o"
    data = ["--dataset", "cifar10-lt", "--data-root", str(tmp_path / "img"), "--imb-factor", "1"]
    assert main(["train", *data, "--epochs", "1", "--width", "0.25", "--out", str(out)]) == 2
    assert "cannot read image" in one_line_error(capsys)
    assert not (tmp_path / "runs").exists()  # nor the parent it made


def test_a_folder_a_train_run_made_keeps_its_files_when_it_stops_later(run_copy, capsys):
    """The clean-up removes only what holds nothing but the lock: a started run stays."""
    (run_copy / "result.json").unlink()
    # another seed: the checkpoint belongs to another run, found once the folder is held
    assert main([*TRAIN, "--seed", "1", "--out", str(run_copy), "--resume"]) == 2
    assert "belongs to another run" in one_line_error(capsys)
    assert (run_copy / "checkpoint.pt").is_file()


@pytest.mark.parametrize("command", ["run", "collect"])
def test_run_and_collect_refuse_a_folder_that_holds_a_train_run(
    run_copy, tmp_path, capsys, no_ray, command
):
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    if command == "run":
        (tmp_path / "s.yaml").write_text(SUITE.replace("METHOD", "ce"))
        argv = ["run", "--suite", str(tmp_path / "s.yaml"), "--out", str(run_copy)]
    else:
        other = tmp_path / "other"
        shutil.copytree(run_copy, other)
        argv = ["collect", str(run_copy), str(other)]
    capsys.readouterr()
    assert main(argv) == 2
    assert "holds an `ltbench train` run (config.yaml" in one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before
    assert not (run_copy / "trials").exists()
