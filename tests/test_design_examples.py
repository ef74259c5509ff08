"""docs/DESIGN.md, "How to add a loss, a dataset, a post-hoc rule, a stage behaviour": every
worked example there runs as written (in a temporary folder; the registries restored after)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ltbench.sdk.datasets import DATASETS
from ltbench.sdk.posthoc import RULES
from ltbench.sdk.registry import LOSSES

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md"
SECTION = "## How to add a loss, a dataset, a post-hoc rule, a stage behaviour"
NAMES = ["loss", "dataset", "post-hoc rule", "stage behaviour"]


def examples() -> list[str]:
    text = DESIGN.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_one_example_per_extension_point():
    assert len(examples()) == len(NAMES)


@pytest.fixture
def registries():
    saved = []
    for registry in (DATASETS, RULES, LOSSES):
        registry.load_entry_points()
        saved.append((registry, dict(registry.specs)))
    yield
    for registry, specs in saved:
        registry.specs.clear()
        registry.specs.update(specs)


@pytest.mark.parametrize("index", range(len(NAMES)), ids=NAMES)
def test_the_example_runs(index, registries, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = examples()[index]
    exec(compile(code, f"DESIGN.md example: {NAMES[index]}", "exec"), {"__name__": "example"})
