"""House style: the code passes ruff's lint and format checks (ruff is in the test extra)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["ltbench", "losses", "baselines", "reports", "sweeps", "tests"]


def _ruff(*args):
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, *args, *PACKAGES], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("check", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff(check):
    if shutil.which("ruff") is None:
        pytest.importorskip("ruff")
    done = _ruff(*check)
    assert done.returncode == 0, done.stdout + done.stderr
