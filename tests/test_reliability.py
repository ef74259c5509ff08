"""Reliability: bad inputs, two writers on one folder, interrupts and a killed driver.

Every error a user can cause ends in one line, `ltbench: error: ...`, exit status 2, naming the
value and what is allowed (for data: the file). Refused before the run starts, the file system
is left as it was (a corrupt image found before the run's first file included); found mid-run
(an unwritable folder), the partial folder is
kept and resumes. The table below is the list of cases; the property-based test feeds random
suites and command lines to the planning step (no Ray, no training).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltbench.cli import build_parser, main
from ltbench.engine.checkpoint import CHECKPOINT_FORMAT
from ltbench.engine.config import TrainConfig, resolve
from ltbench.engine.locks import OWNER_FILE
from ltbench.errors import LtbenchError
from ltbench.runner import ray_adapter
from ltbench.runner.commands import plan_command
from ltbench.runner.orphans import SESSION_FILE

ROOT = Path(__file__).resolve().parents[1]
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
]
SUITE = """
methods: [{loss: la, params: {tau: TAU}}]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 1, n_max: 30, width: 0.25}
"""
SWEEP = """
methods: [la]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 1, n_max: 30, width: 0.25, val_fraction: 0.2}
search:
  space: {tau: {type: float, low: LOW, high: 2.0}}
  num_samples: 2
"""


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def subprocess_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def default_sigint() -> None:
    """In a child: Ctrl-C's default (a shell may start the tests with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# ----------------------------------------------------------------------------------------------
# Setting up the cases: each returns the command line (after `ltbench`)


CIFAR10_NAMES = "airplane automobile bird cat deer dog frog horse ship truck".split()


def _image_tree(root: Path, corrupt: bool) -> None:
    """A CIFAR-10-like image folder, 2 training and 1 test image per class, one JPEG cut short."""
    from PIL import Image

    for split, n in (("train", 2), ("test", 1)):
        for c in range(10):
            folder = root / split / CIFAR10_NAMES[c]
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (c * 20, i * 40, 9)).save(folder / f"{i}.jpg")
    bad = root / "train" / "cat" / "1.jpg"
    if corrupt:
        bad.write_bytes(bad.read_bytes()[:200])


def case_corrupt_jpeg(tmp: Path) -> list[str]:
    _image_tree(tmp / "img", corrupt=True)
    data = ["--dataset", "cifar10-lt", "--data-root", str(tmp / "img"), "--imb-factor", "1"]
    return ["train", *data, "--epochs", "1", "--width", "0.25", "--out", str(tmp / "o")]


def case_split_file(tmp: Path) -> list[str]:
    (tmp / "inet").mkdir()
    (tmp / "inet" / "ImageNet_LT_train.txt").write_text("train/a.jpg 0\ntrain/b.jpg zero\n")
    (tmp / "inet" / "ImageNet_LT_test.txt").write_text("val/a.jpg 0\n")
    return ["train", "--dataset", "imagenet-lt", "--data-root", str(tmp / "inet"), "--out",
            str(tmp / "o")]  # fmt: skip


def case_checkpoint_without_config(tmp: Path) -> list[str]:
    torch.save({"format": CHECKPOINT_FORMAT, "model": {}}, tmp / "bad.pt")
    return [*TRAIN, "--resume", str(tmp / "bad.pt"), "--out", str(tmp / "o")]


def case_checkpoint_not_one(tmp: Path) -> list[str]:
    (tmp / "junk.pt").write_bytes(b"\x80\x04 not a checkpoint")
    return [*TRAIN, "--resume", str(tmp / "junk.pt"), "--out", str(tmp / "o")]


def case_out_is_a_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return [*TRAIN, "--out", str(tmp / "afile")]


def case_out_under_a_file(tmp: Path) -> list[str]:
    (tmp / "afile").write_text("x")
    return [*TRAIN, "--out", str(tmp / "afile" / "run")]


def case_out_read_only(tmp: Path) -> list[str]:
    (tmp / "ro").mkdir()
    make_read_only(tmp / "ro")
    return [*TRAIN, "--out", str(tmp / "ro" / "run")]


def case_suite_bad_loss_parameter(tmp: Path) -> list[str]:
    (tmp / "s.yaml").write_text(SUITE.replace("TAU", "-1.0"))
    return ["run", "--suite", str(tmp / "s.yaml"), "--out", str(tmp / "o")]


def case_sweep_bad_space(tmp: Path) -> list[str]:
    (tmp / "s.yaml").write_text(SWEEP.replace("LOW", "-0.5"))
    return ["sweep", "--suite", str(tmp / "s.yaml"), "--out", str(tmp / "o")]


def case_cpus_per_trial(tmp: Path) -> list[str]:
    (tmp / "s.yaml").write_text(SUITE.replace("TAU", "1.0"))
    return ["run", "--suite", str(tmp / "s.yaml"), "--out", str(tmp / "o"), "--cpus-per-trial",
            "4096"]  # fmt: skip


def case_binary_results(tmp: Path) -> list[str]:
    (tmp / "runs").mkdir()
    (tmp / "runs" / "results.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    return ["report", str(tmp / "runs"), "--format", "md"]


def make_read_only(folder: Path) -> None:
    """A folder this process cannot write in: chmod for a user, `chattr +i` for root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        return
    probe.unlink()
    pytest.skip(f"running as root and cannot make a folder read-only ({done.stderr!r})")


def undo_read_only(root: Path) -> None:
    for folder in root.rglob("ro"):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


T = TRAIN  # `--out <tmp>/o` is appended by the test to the command lines given as lists
# (id, command line or the case that writes its files and returns it, message (regex), whether
# it is found before the run starts: then nothing may be written)
CASES = [
    (
        "imb-factor-abc",
        [*T, "--imb-factor", "abc"],
        r"argument --imb-factor: invalid float value: 'abc'",
        True,
    ),
    (
        "lr-decay-epochs",
        [*T, "--lr-decay-epochs", "a,b"],
        r"argument --lr-decay-epochs: expected comma-separated epochs",
        True,
    ),
    (
        "param-yaml",
        [*T, "-p", "tau=[1"],
        r"argument --param/-p: 'tau=\[1': the value is not valid YAML",
        True,
    ),
    (
        "lr-inf",
        [*T, "--lr", "inf"],
        r"lr must be a finite number > 0, got inf$",
        True,
    ),
    (
        "lr-nan",
        [*T, "--lr", "nan"],
        r"lr must be a finite number > 0, got nan$",
        True,
    ),
    (
        "weight-decay",
        [*T, "--weight-decay", "-1"],
        r"weight_decay must be a finite number >= 0, got -1\.0$",
        True,
    ),
    (
        "eval-every-0",
        [*T, "--eval-every", "0"],
        r"eval_every must be an integer >= 1 \(test every N epochs\),"
        r" got 0$",
        True,
    ),
    (
        "subset-seed",
        [*T, "--subset-seed", "-1"],
        r"subset_seed must be an integer >= 0 \(0: the standard"
        r" draw\), got -1$",
        True,
    ),
    (
        "seed",
        [*T, "--seed", "-1"],
        r"seed must be an integer >= 0, got -1$",
        True,
    ),
    (
        "num-workers",
        [*T, "--num-workers", "-1"],
        r"num_workers must be an integer >= 0, got -1$",
        True,
    ),
    (
        "n-max",
        [*T, "--n-max", "0"],
        r"n_max must be an integer >= 1 \(unset: every image\), got 0$",
        True,
    ),
    (
        "config-missing",
        [*T, "--config", "missing.yaml"],
        r"cannot read configuration file missing\.yaml: No such file"
        r" or directory",
        True,
    ),
    (
        "model",
        [*T, "--model", "vgg"],
        r"unknown model 'vgg'; known models: resnet32, resnet50,"
        r" resnext50$",
        True,
    ),
    (
        "loss-param",
        [*T, "--loss", "la", "-p", "tau=-1"],
        r"loss 'la': tau=-1 is invalid; tau must be a number > 0$",
        True,
    ),
    (
        "data-root",
        [*T, "--dataset", "cifar10-lt", "--data-root", "/nowhere"],
        r"cifar10-lt: no CIFAR data under /nowhere: expected",
        True,
    ),
    (
        "split-file",
        case_split_file,
        r"ImageNet_LT_train\.txt:2: expected 'relative/path label',"
        r" got 'train/b\.jpg zero'$",
        True,
    ),
    (
        "checkpoint-no-config",
        case_checkpoint_without_config,
        r"checkpoint .*bad\.pt is incomplete \(no 'config'\)",
        True,
    ),
    (
        "checkpoint-junk",
        case_checkpoint_not_one,
        r"checkpoint .*junk\.pt is corrupted or not a checkpoint",
        True,
    ),
    (
        "out-is-a-file",
        case_out_is_a_file,
        r"--out .*afile is a file, not a folder; give a folder path$",
        True,
    ),
    (
        "out-under-a-file",
        case_out_under_a_file,
        r"--out .*afile/run: .*afile is a file, so no folder can be"
        r" made under it",
        True,
    ),
    (
        "out-read-only",
        case_out_read_only,
        r"--out .*ro/run: cannot write in .*ro \(read-only or no"
        r" permission\)",
        True,
    ),
    (
        "suite-loss-param",
        case_suite_bad_loss_parameter,
        r"trial la_synthetic-lt_rho10_seed0: loss 'la': tau=-1\.0 is"
        r" invalid; tau must be a number > 0$",
        True,
    ),
    (
        "sweep-space",
        case_sweep_bad_space,
        r"search space: tau=-0\.5: loss 'la': tau=-0\.5 is invalid",
        True,
    ),
    (
        "cpus-per-trial",
        case_cpus_per_trial,
        r"--cpus-per-trial 4096 is more than this machine has \(\d+\)",
        True,
    ),
    (
        "binary-results",
        case_binary_results,
        r"cannot read .*results\.csv: not a UTF-8 text CSV file$",
        True,
    ),
    (
        "corrupt-jpeg",
        case_corrupt_jpeg,
        r"cannot read image .*cat/1\.jpg: .*; replace or remove"
        r" the file$",
        True,  # found before the first file of the run: no folder, no lock file left
    ),
]


@pytest.fixture
def no_ray(monkeypatch):
    """Starting Ray fails the test: every refusal must come before it."""

    def refuse(address):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray_adapter, "connect", refuse)


@pytest.mark.parametrize("name, argv, message, before", CASES, ids=[c[0] for c in CASES])
def test_every_user_error_is_one_line(
    name, argv, message, before, tmp_path, capsys, monkeypatch, no_ray
):
    import re

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path / "cache"))
    try:
        argv = argv(tmp_path) if callable(argv) else [*argv, "--out", str(tmp_path / "o")]
        before_files = files_under(tmp_path)
        capsys.readouterr()
        with warnings.catch_warnings(record=True) as caught:  # they would print a second line
            warnings.simplefilter("always", UserWarning)
            code = main(argv)
        err = capsys.readouterr().err
        assert not [w for w in caught if issubclass(w.category, UserWarning)], caught
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("ltbench: error: "), err
        assert re.search(message, err.strip()), err
        if before:
            assert files_under(tmp_path) == before_files  # nothing written, no folder made
        else:  # found mid-run: the partial folder stays, unfinished
            assert (tmp_path / "o").is_dir() and not (tmp_path / "o" / "result.json").exists()
    finally:
        undo_read_only(tmp_path)


def test_cpus_refused_then_the_plain_rerun_is_planned(tmp_path, capsys, no_ray):
    argv = case_cpus_per_trial(tmp_path)
    assert main(argv) == 2 and not (tmp_path / "o").exists()
    args = build_parser().parse_args(argv[:-2])
    plan = plan_command(args, "run")  # nothing was left that refuses the rerun
    assert [t.key for t in plan.trials] == ["la_synthetic-lt_rho10_seed0"]


def test_corrupt_image_run_resumes_once_the_file_is_replaced(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LTBENCH_CACHE", str(tmp_path / "cache"))
    argv = case_corrupt_jpeg(tmp_path)
    assert main(argv) == 2
    _image_tree(tmp_path / "fixed", corrupt=False)
    shutil.copy(tmp_path / "fixed/train/cat/1.jpg", tmp_path / "img/train/cat/1.jpg")
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "result.json").is_file()


def test_unwritable_mid_run_then_resume(tmp_path, capsys, monkeypatch):
    """The folder becomes unwritable after the first epoch: one line naming the file; the run
    resumes from its last checkpoint (test_train.py: a resumed run matches an uninterrupted one)."""
    import ltbench.engine.record as record  # the one writer of a run's epoch lines

    real, calls = record.append_row, []

    def failing(path, row):
        calls.append(row["epoch"])
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, row)

    argv = [*TRAIN[:4], "2", *TRAIN[5:], "--eval-every", "9", "--out", str(tmp_path / "cut")]
    monkeypatch.setattr(record, "append_row", failing)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"cannot write {tmp_path / 'cut' / 'metrics.jsonl'}: Permission denied; the run so " \
        f"far is kept in {tmp_path / 'cut'}: continue it with --resume" in err  # fmt: skip
    monkeypatch.setattr(record, "append_row", real)
    assert main([*argv, "--resume"]) == 0  # epoch 2 again, from the epoch-1 checkpoint
    assert json.loads((tmp_path / "cut" / "result.json").read_text())["epochs"] == 2
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_ctrl_c_in_train_exits_130_with_the_resume_hint(tmp_path, capsys, monkeypatch):
    import ltbench.engine.record as record

    def interrupt(path, row):
        raise KeyboardInterrupt

    monkeypatch.setattr(record, "append_row", interrupt)
    assert main([*TRAIN, "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert err == (
        f"ltbench: interrupted; the run so far is in {tmp_path / 'o'}: continue it with the same "
        "command plus --resume\n"
    )


def test_six_epochs_on_synthetic_lt_have_two_distinct_decays():
    cfg = resolve(TrainConfig(dataset="synthetic-lt", epochs=6))
    assert cfg.lr_decay_epochs == sorted(set(cfg.lr_decay_epochs)) and len(cfg.lr_decay_epochs) == 2
    assert cfg.lr_decay_epochs == [4, 5]


# ----------------------------------------------------------------------------------------------
# Two writers on one folder


def test_second_writer_is_refused_with_the_holders_pid(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TRAIN[:4], "4", *TRAIN[5:], "--eval-every", "9", "--out", str(out)]
    slow_epochs = (  # each epoch of the first writer lasts at least a second, on any machine
        "import time, ltbench.engine.record as record\n"
        "append = record.append_row\n"
        "record.append_row = lambda path, row: (append(path, row), time.sleep(1))\n"
        "from ltbench.cli import main\n"
        f"raise SystemExit(main({argv!r}))\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", slow_epochs],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / OWNER_FILE).is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        code = main([*TRAIN, "--seed", "7", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert err.startswith(f"ltbench: error: {out} is in use by another ltbench process ")
        assert f"(PID {first.pid} on " in err
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0
    assert json.loads((out / "result.json").read_text())["seed"] == 0
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert not (out / OWNER_FILE).exists()  # released; the lock file itself stays, empty


def test_a_killed_holder_never_blocks_the_next(tmp_path):
    """kill -9 leaves the lock file and a stale PID file; the system released the lock itself."""
    from ltbench.engine.locks import hold, holder

    folder = tmp_path / "run"
    code = f"import time\nfrom ltbench.engine.locks import hold\nwith hold({str(folder)!r}):\n"
    killed = subprocess.Popen(
        [sys.executable, "-c", code + "    print('held', flush=True)\n    time.sleep(60)\n"],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert killed.stdout.readline().strip() == "held"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert holder(folder).startswith(f"PID {killed.pid} ")  # stale: information only
    with hold(folder):
        assert holder(folder).startswith(f"PID {os.getpid()} ")


def test_a_second_driver_is_refused_while_the_first_holds_the_folder(tmp_path, capsys, no_ray):
    """`ltbench run --resume` while a driver holds DIR (here a process holding its lock)."""
    (tmp_path / "s.yaml").write_text(SUITE.replace("TAU", "1.0"))
    out = tmp_path / "o"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom ltbench.engine.locks import hold\n"
         f"with hold({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        env=subprocess_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["run", "--suite", str(tmp_path / "s.yaml"), "--out", str(out), "--resume"])
        err = capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and err.count("\n") == 1
    assert f"{out} is in use by another ltbench process (PID {holder.pid} on " in err
    assert {p.name for p in out.iterdir()} <= {".ltbench.lock", OWNER_FILE}  # nothing written


# ----------------------------------------------------------------------------------------------
# Random suites and command lines through the planning step


BAD = ["x", None, -1, 0, 1.5, float("nan"), float("inf"), [], {}, True]
# Values each key may take, the good ones several times so that many suites plan.
CONFIG_VALUES = {
    "epochs": [1, 1, 2, 10**6],
    "lr": [0.1, 0.1, 1e-12, 10.0],
    "width": [0.25, 0.25, 1e-3],
    "n_max": [30, 30, 1],
    "eval_every": [1, 3],
    "num_workers": [0, 2],
    "weight_decay": [0.0, 5e-4],
    "momentum": [0.9, 0.0, 1.0],
    "lr_decay_epochs": [[1], [2, 1], [0], [1, 1], ["a"]],
    "lr_decay_factor": [0.1, 1.0, 2.0],
    "warmup_epochs": [0, 1],
    "val_fraction": [0.2, 0.0, 0.99, 1.0],
    "batch_size": [64, 1],
    "model": ["resnet32", "resnext50", "vgg"],
    "profile": ["exp", "step", "linear"],
    "stage2": [{}, {"epochs": 1}, {"epochs": "x"}, {"bogus": 1}],
    "mixup_alpha": [0.0, 0.5],
    "seed": [0],
    "bogus": [1],
}
PARAMS = {
    "tau": [1.0, 0.5, 1e9],
    "m_max": [0.5, 0.1, 2.0],
    "gamma": [1.0, 0.0],
    "stage2_epochs": [1, 0, 10**6],
    "ga_epoch": [0, 1, 10**6],
    "x": [1],
}
LOSSES = ["ce", "la", "kps", "kps-ga", "kps-drw", "focal", "ldam-drw", "crt", "mislas", "nope"]


def _values(good: list) -> st.SearchStrategy:
    return st.sampled_from(good * 3 + BAD)


METHOD = st.one_of(
    st.sampled_from(LOSSES),
    st.fixed_dictionaries(
        {"loss": st.sampled_from(LOSSES)},
        optional={
            "params": st.dictionaries(
                st.sampled_from(list(PARAMS)),
                st.sampled_from(list(PARAMS)).flatmap(lambda k: _values(PARAMS[k])),
                max_size=2,
            ),
            "mixup_alpha": _values([0.0, 1.0]),
            "name": st.sampled_from(["m1", "m 2", ""]),
        },
    ),
)
MUTATIONS = st.one_of(
    st.tuples(st.just("methods"), st.lists(METHOD, max_size=2)),
    st.tuples(st.just("datasets"), st.lists(_values(["synthetic-lt", "cifar10-lt"]), max_size=2)),
    st.tuples(st.just("rhos"), st.lists(_values([10, 100, 1]), max_size=2)),
    st.tuples(st.just("seeds"), st.lists(_values([0, 1]), max_size=2)),
    st.tuples(st.just("subset_seeds"), st.lists(_values([0, 1]), max_size=2)),
    st.tuples(st.just("bogus"), _values([1])),
    st.tuples(st.just("search.num_samples"), _values([2])),
    st.tuples(st.just("search.space.tau.low"), _values([0.5, 0.1])),
    st.tuples(st.just("search.space.tau.type"), st.sampled_from(["float", "int", "str"])),
    st.tuples(st.just("search.space.gamma"), st.just({"type": "float", "low": 0.1, "high": 1})),
    st.sampled_from(list(CONFIG_VALUES)).flatmap(
        lambda k: st.tuples(st.just(f"config.{k}"), _values(CONFIG_VALUES[k]))
    ),
)
BASE = {
    "methods": ["la"],
    "datasets": ["synthetic-lt"],
    "rhos": [10],
    "seeds": [0],
    "config": {"epochs": 1, "n_max": 30, "width": 0.25, "val_fraction": 0.2},
}
SEARCH = {"space": {"tau": {"type": "float", "low": 0.5, "high": 2.0}}, "num_samples": 2}
FLAGS = st.lists(
    st.one_of(
        st.tuples(st.just("--seeds"), st.sampled_from(["1", "2", "0", "-1", "x"])),
        st.tuples(st.just("--rho"), st.sampled_from(["100", "10,5", "0.5", "nan", "inf", "a"])),
        st.tuples(st.just("--preset"), st.sampled_from(["smoke", "paper", "fast"])),
        st.tuples(st.just("--dataset"), st.sampled_from(["synthetic-lt", "cifar10-lt", "x"])),
        st.tuples(st.just("--cpus-per-trial"), st.sampled_from(["1", "0", "-2", "4096", "nan"])),
        st.tuples(st.just("--gpus-per-trial"), st.sampled_from(["0", "0.5", "2", "nan"])),
        st.tuples(st.just("--max-concurrent"), st.sampled_from(["1", "0", "x"])),
        st.tuples(st.just("--max-failures"), st.sampled_from(["0", "-1"])),
        st.tuples(st.just("--report"), st.sampled_from(["md", "none", "html", ""])),
        st.tuples(st.just("--num-samples"), st.sampled_from(["1", "0", "3"])),
        st.tuples(st.just("--address"), st.sampled_from(["local", "nohostport", "ray://h:1"])),
        st.tuples(st.just("--data-root"), st.sampled_from(["data", "/nowhere"])),
        st.tuples(st.just("--resume")),
        st.tuples(st.just("--bogus")),
    ),
    max_size=3,
)
OUTCOMES: dict[str, int] = {}


def _suite_text(command: str, mutations: list, raw) -> bytes:
    """A valid suite with a few keys changed (or, now and then, arbitrary text or bytes)."""
    if raw is not None:
        return raw if isinstance(raw, bytes) else raw.encode()
    suite = json.loads(json.dumps(BASE))
    if command == "sweep":
        suite["search"] = json.loads(json.dumps(SEARCH))
    for path, value in mutations:
        *parents, last = path.split(".")
        node = suite
        for key in parents:
            node = node.setdefault(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[last] = value
    return yaml.safe_dump(suite).encode()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(["run", "sweep"]),
    mutations=st.lists(MUTATIONS, max_size=3),
    raw=st.one_of(st.none(), st.none(), st.none(), st.text(max_size=30), st.binary(max_size=30)),
    flags=FLAGS,
    out=st.sampled_from(["o", "o", "afile", "afile/o", "a/b/c"]),
)
def test_random_suites_and_flags_plan_or_fail_in_one_line(
    command, mutations, raw, flags, out, tmp_path_factory
):
    root = tmp_path_factory.mktemp("prop")
    (root / "afile").write_text("x")
    path = root / "s.yaml"
    path.write_bytes(_suite_text(command, mutations, raw))
    argv = [command, "--suite", str(path), "--out", str(root / out)]
    argv += [part for flag in flags for part in flag]
    before = files_under(root)
    err = io.StringIO()
    outcome = "argparse"
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2
            text = err.getvalue()
            assert text.startswith("ltbench: error: ") and text.count("\n") == 1, text
            args = None
    if args is not None:
        try:
            plan_command(args, command)
            outcome = "planned"
        except LtbenchError as exc:
            assert "\n" not in str(exc) and str(exc), repr(exc)
            outcome = "refused"
    assert files_under(root) == before
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1


def test_the_random_inputs_reached_every_outcome():
    """Runs after the property test (file order): some inputs planned, some were refused."""
    if not OUTCOMES:
        pytest.skip("the property-based test did not run")
    assert OUTCOMES.get("planned", 0) >= 10 and OUTCOMES.get("refused", 0) >= 10, OUTCOMES


# ----------------------------------------------------------------------------------------------
# kill -9 of the driver: the next run ends the Ray processes it left


def _live_processes_naming(session_dir: str) -> list[int]:
    """Live (not zombie) processes whose command line or open files name `session_dir`."""
    from ltbench.runner.orphans import _alive, _names_session

    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _alive(int(p.name)) and _names_session(int(p.name), session_dir)
    ]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finding processes needs Linux /proc")
def test_kill_9_of_the_driver_then_the_next_run_leaves_no_orphan(ray_session, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE.replace("TAU", "1.0").replace("epochs: 1", "epochs: 30"))
    out = tmp_path / "o"
    driver = subprocess.Popen(
        [sys.executable, "-m", "ltbench.cli", "run", "--suite", str(suite), "--out", str(out),
         "--report", "none"],
        env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    trial = out / "trials" / "la_synthetic-lt_rho10_seed0"
    try:
        deadline = time.monotonic() + 150
        while not (trial / OWNER_FILE).is_file():  # Ray is up and the trial trains
            assert driver.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        record = json.loads((out / SESSION_FILE).read_text())
        assert record["driver_pid"] == driver.pid
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        time.sleep(2)
        left = _live_processes_naming(record["session_dir"])
        assert left, "kill -9 left no Ray process: nothing to test"

        # The next `ltbench run` into DIR ends them, even the plain one that is then refused.
        argv = ["run", "--suite", str(suite), "--out", str(out), "--report", "none"]
        out_text, err_text = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
            code = main(argv)
        assert code == 2 and "pass --resume" in err_text.getvalue()
        assert f"Ray process(es) left in {out} by the killed driver (PID {driver.pid})" in (
            out_text.getvalue()
        )
        assert _live_processes_naming(record["session_dir"]) == []
        assert not (out / SESSION_FILE).exists()
        with contextlib.redirect_stdout(out_text), contextlib.redirect_stderr(err_text):
            code = main([*argv, "--resume"])
        assert code == 0, out_text.getvalue() + err_text.getvalue()
        assert json.loads((trial / "result.json").read_text())["epochs"] == 30
    finally:
        if driver.poll() is None:
            driver.kill()
