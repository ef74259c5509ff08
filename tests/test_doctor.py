"""`ltbench doctor`: the environment screen, the CPU self-test end to end (every path this
machine supports against its reference), a broken pack caught by name, and the environment
summary that result.json and the report's title page carry."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ltbench.engine.pack
from ltbench.cli import main
from ltbench.engine.checkpoint import environment_summary
from ltbench.engine.identity import precision_name
from ltbench.engine.step import fast_bf16


def run_cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def fake_cifar10(root: Path) -> Path:
    """A CIFAR-10 image-folder layout: train/ and test/, the 10 class folders (named as the
    dataset's classes, which the file check asks for) of 2 and 1 files."""
    from ltbench.data.loaders import CIFAR_CLASSES

    for split, n in (("train", 2), ("test", 1)):
        for name in CIFAR_CLASSES["cifar10-lt"]:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                (folder / f"{i}.png").write_bytes(b"not read")
    return root


def table_rows(text: str) -> dict[str, tuple[str, str]]:
    """{path: (verdict, agreement)} of the self-test table in `text`."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(\S+)\s+(\d+\.\ds|-)\s+(PASS|FAIL|SKIP)\s+(.*)$", line)
        if m:
            rows[m.group(1)] = (m.group(3), m.group(4))
    return rows


def test_the_environment_screen(tmp_path):
    root = fake_cifar10(tmp_path / "cifar")
    rc, out, err = run_cli(
        ["doctor", "--device", "cpu", "--data-root", root, "--data-root", tmp_path / "none"]
        + ["--out", tmp_path / "runs" / "new"]
    )
    assert rc == 0 and err == ""
    amp = fast_bf16(torch.device("cpu"))
    assert out.splitlines()[0] == (
        f"ltbench doctor: {environment_summary(torch.device('cpu'), amp=amp)}"
    )
    assert f"torch         {torch.__version__}" in out
    # a CIFAR image-folder copy is also an `image-folder` dataset (any classes)
    held = "cifar10-lt, image-folder (train/: 10 classes, 20 files, test/: 10 classes, 10 files)"
    assert f"{root}: {held}" in out
    assert f"{tmp_path / 'none'}: not a folder" in out
    assert f"at {tmp_path}" in out  # the nearest folder of --out that exists
    assert f"`ltbench train`: {precision_name(amp)}; `ltbench run --preset paper`: float32" in out
    assert "pack fusion   serial" in out
    cpus = len(os.sched_getaffinity(0))  # without GPUs a trial takes one CPU (DESIGN.md)
    assert f"trials        {cpus} side by side (1 CPU, 0 GPU each" in out


def test_an_unknown_path_is_a_one_line_error(tmp_path):
    rc, out, err = run_cli(["doctor", "--self-test", "--paths", "pack,warp", "--out", tmp_path])
    assert rc == 2
    assert err.startswith("ltbench: error: --paths 'pack,warp': unknown path; allowed: solo,")
    assert err.count("\n") == 1


@pytest.mark.ray
def test_the_cpu_self_test_passes_every_path_it_supports(tmp_path):
    """The whole self-test as a user runs it (a fresh process): every path but CUDA graphs
    runs and agrees with its reference; CUDA graphs are skipped with their reason; the
    temporary runs are removed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", "doctor", "--self-test", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    rows = table_rows(done.stdout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert set(rows) == {
        "solo", "amp", "pack", "cuda-graphs", "data-parallel", "two-stage", "ray-tune"
    }  # fmt: skip
    assert rows["cuda-graphs"] == ("SKIP", "skipped: no CUDA device: CUDA graphs need one")
    for path in ("solo", "amp", "pack", "data-parallel", "two-stage", "ray-tune"):
        assert rows[path][0] == "PASS", rows[path]
    assert rows["data-parallel"][1].startswith("2 workers (gloo) vs 1: loss ")
    assert rows["pack"][1] == "serial pack of 3 vs alone: seed 0 ok; seed 1 ok; seed 2 ok"
    assert "self-test: every path passed" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_pack_that_drops_a_member_update_fails_the_self_test(tmp_path, monkeypatch):
    """A pack whose member 1 is left out of the summed loss (so its weights never move) fails
    the self-test's pack path, which names the member; exit status 1."""
    real = ltbench.engine.pack.pack_epoch_steps

    def dropping(model, members, alive, *args, **kwargs):
        return real(model, members, [m for m in alive if m is not members[1]], *args, **kwargs)

    monkeypatch.setattr(ltbench.engine.pack, "pack_epoch_steps", dropping)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    rc, out, _ = run_cli(["doctor", "--device", "cpu", "--self-test", "--paths", "pack"]
                         + ["--out", tmp_path])  # fmt: skip
    rows = table_rows(out)
    assert rc == 1
    verdict, agreement = rows["pack"]
    assert verdict == "FAIL"
    assert agreement.startswith("serial pack of 3 vs alone: seed 0 ok; seed 1 DIFFERS: loss ")
    assert agreement.endswith("seed 2 ok")
    assert out.rstrip().endswith("self-test: FAILED: pack")


def test_result_json_and_the_report_name_the_machine(tmp_path):
    """result.json's env.summary is the doctor's first line for the run's device and
    precision, and the report's title page (built from the results files) shows it."""
    tiny = ["--dataset", "synthetic-lt", "--loss", "ce", "--epochs", "1", "--n-max", "20"]
    tiny += ["--width", "0.125", "--imb-factor", "0.1", "--device", "cpu", "--no-amp"]
    assert run_cli(["train", *tiny, "--out", tmp_path / "run"])[0] == 0
    env = json.loads((tmp_path / "run" / "result.json").read_text())["env"]
    expected = environment_summary(torch.device("cpu"), amp=False)
    assert env["summary"] == expected and expected.endswith(", float32")
    assert f"torch {torch.__version__}" in expected
    assert run_cli(["collect", tmp_path / "res", tmp_path / "run"])[0] == 0
    rc, _, err = run_cli(["report", tmp_path / "res", "--format", "md"])
    assert rc == 0, err
    report = next((tmp_path / "res").glob("*.md")).read_text()
    rows = re.findall(r"^\| machine\s+\| (.*?)\s+\|$", report, flags=re.MULTILINE)
    assert rows == [expected]


@pytest.mark.parametrize(
    "module, line",
    [
        ("ltbench/runner/commands.py", "import ltbench.doctor.report"),
        ("ltbench/engine/loop.py", "from ltbench.doctor import selftest"),
    ],
)
def test_the_doctor_sits_between_the_cli_and_the_runner(tmp_path, module, line):
    """The runner and the engine may not import the doctor (the layers contract)."""
    from test_architecture import PACKAGES, ROOT, lint_imports

    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # injected by the test\n")
    done = lint_imports(tmp_path)
    broken = [row for row in done.stdout.splitlines() if "BROKEN" in row]
    assert done.returncode != 0 and any("Layers: cli > doctor >" in r for r in broken)


@pytest.mark.ray
def test_with_an_address_the_screen_shows_the_cluster(ray_session, tmp_path):
    """`--address` reads the cluster's resources through the Ray adapter and shares them as
    `ltbench run --address` would: the test session's cluster has 2 CPUs and no GPU, so 2
    trials of one CPU run side by side."""
    total = ray_session.cluster_resources()
    rc, out, err = run_cli(["doctor", "--device", "cpu", "--address", "auto", "--out", tmp_path])
    assert rc == 0, err
    cpus = total.get("CPU", 0.0)
    assert f"ray cluster   auto: 1 node, {cpus:g} CPUs, {total.get('GPU', 0.0):g} GPUs" in out
    assert f"trials        {int(cpus)} side by side (1 CPU, 0 GPU each" in out


def test_the_comparison_of_two_runs():
    """The largest relative loss difference over the epochs and the top-1 difference decide;
    a NaN anywhere fails (a NaN would slip through a plain max())."""
    from ltbench.doctor.selftest import Run, Tolerance, compare

    tol = Tolerance(1e-3, 1.0)
    ref = Run([2.0, 1.0], 50.0)
    text, ok = compare(Run([2.0 * (1 + 5e-4), 1.0], 50.9), ref, tol)
    assert ok and text.startswith("loss 5.0e-04 rel, top-1 0.90 pt")
    assert not compare(Run([2.0, 1.0 * (1 + 2e-3)], 50.0), ref, tol)[1]  # the 2nd epoch
    assert not compare(Run([2.0, 1.0], 51.5), ref, tol)[1]
    assert not compare(Run([float("nan"), 1.0], 50.0), ref, tol)[1]
    assert not compare(Run([2.0, float("nan")], 50.0), ref, tol)[1]
    assert not compare(Run([2.0], 50.0), ref, tol)[1]  # an epoch missing
