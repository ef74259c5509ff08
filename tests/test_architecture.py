"""The architecture, kept by tools: the import contracts of pyproject.toml, the size of
functions, and no block of code copied by hand.

`lint-imports` must pass on the tree as it is, and must fail when one of the imports that the
layout forbids comes back (each case injects one import into a copy of the packages).

What hurts a maintainer is a long function, not a long module: a module of many short functions
with one job reads well at any length, while one function of 200 lines (a loop that builds,
resumes, trains and writes) does not. So the checks are on functions:

- no function body over FUNCTION_LINES (100) lines, docstring left out (the house's "about 100
  lines"; a docstring or help text is never cut to fit);
- ruff's size rules, thresholds in pyproject.toml: PLR0915 at most 60 statements (about what
  100 lines of this code hold, with its comments and wrapped calls), PLR0912 at most 16 branches
  and C901 a cyclomatic complexity of at most 16 (a flat chain of checks, one `if` per checked
  value, stays under it; nested loops of conditions do not);
- `duplicates` (on the developers' machines, not on CI: skipped where it is absent): no run of
  DUPLICATE_LINES (8) or more identical lines in two places of a package (same-shaped code with
  other names, like two dataclasses' field lists, is allowed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ltbench", "losses", "baselines", "reports", "sweeps")
FUNCTION_LINES = 100
DUPLICATE_LINES = 8
SIZED = ("ltbench", "losses", "baselines", "reports")  # the code that ships


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [exe, "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "broken" in done.stdout and " 0 broken" in done.stdout


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("ltbench/engine/loop.py", "import baselines.ce", "import no plugin"),
        ("ltbench/engine/stages.py", "import losses.kps", "import no plugin"),
        ("ltbench/engine/loop.py", "from ltbench.runner import results", "Layers"),
        ("ltbench/engine/step.py", "import ray", "Ray lives in one adapter"),
        ("reports/tables.py", "import torch", "Reports never import torch"),
        ("reports/collect.py", "import ltbench.engine.metrics", "Reports never import"),
        ("losses/kps.py", "import ltbench.engine.config", "Plugins depend on the plugin SDK"),
        ("baselines/mislas.py", "import losses.kps", "do not import each other"),
        ("ltbench/runner/suite.py", "import ray", "Ray lives in one adapter"),
        ("ltbench/data/registry.py", "import ltbench.engine.models", "Layers"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # injected by the test\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0, f"{module}: '{line}' went unnoticed"
    broken = [row for row in done.stdout.splitlines() if "BROKEN" in row]
    assert any(contract in row for row in broken), done.stdout[-2000:]


def long_functions(root: Path, limit: int) -> dict[str, int]:
    """{"path:function": lines} of the functions under `root` whose body, without its
    docstring, is longer than `limit` lines."""
    import ast

    out = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if ast.get_docstring(node) is not None:
                body = body[1:]
            if body:
                lines = body[-1].end_lineno - body[0].lineno + 1
                if lines > limit:
                    out[f"{path.relative_to(root.parent)}:{node.name}"] = lines
    return out


def test_no_function_is_over_about_100_lines():
    big = {}
    for name in SIZED:
        big.update(long_functions(ROOT / name, FUNCTION_LINES))
    assert not big, f"functions over {FUNCTION_LINES} lines (docstring left out): {big}"


def test_the_function_length_check_sees_a_long_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LINES + 1))
    (tmp_path / "pkg" / "m.py").write_text(f'def f():\n    """Doc."""\n{body}')
    assert long_functions(tmp_path / "pkg", FUNCTION_LINES) == {"pkg/m.py:f": FUNCTION_LINES + 1}


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_ruff_size_rules_hold_with_the_projects_thresholds():
    done = ruff("check", "--select", "C901,PLR0912,PLR0915", *SIZED)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_ruff_size_rules_catch_a_function_of_too_many_statements(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    (tmp_path / "m.py").write_text(f"def f():\n{body}    return x0\n")
    done = ruff("check", "--select", "C901,PLR0912,PLR0915", "m.py", cwd=tmp_path)
    assert done.returncode != 0 and "PLR0915" in done.stdout, done.stdout


def copied_blocks(package: Path) -> list[str]:
    """The rows of `duplicates` for `package` whose two places share identical lines."""
    done = subprocess.run(
        ["duplicates", "--repo", str(package), "--min-lines", str(DUPLICATE_LINES),
         "--most", "200", "--seconds", "120"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "incomplete:" not in done.stdout, done.stdout[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("D")]
    return [row for row in rows if " shape" not in row]


@pytest.mark.skipif(
    shutil.which("duplicates") is None,
    reason="the `duplicates` command is on the developers' machines only (not installed here)",
)
@pytest.mark.parametrize("package", SIZED)
def test_no_block_of_code_is_copied(package):
    copied = copied_blocks(ROOT / package)
    assert not copied, f"{package}: the same {DUPLICATE_LINES}+ lines in two places: {copied}"
