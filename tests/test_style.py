"""House style: the code passes ruff's lint and format checks (ruff is in the test extra)."""

import argparse
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


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    found = []
    for action in parser._actions:  # argparse has no public walk over a parser's arguments
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _undocumented(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            if not action.help:
                found.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return found


def test_every_command_line_argument_says_what_it_does():
    """`ltbench <command> --help` explains every argument and option (a bare `--seed SEED`
    leaves a user guessing what it seeds and what the default is)."""
    from ltbench.cli import build_parser

    assert _undocumented(build_parser(), "ltbench") == []
