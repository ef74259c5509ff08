"""The paper's reported top-1 errors (Tables 3-7), read from ``paper_numbers.yaml``.

The YAML file documents its own layout; this module turns it into lookups keyed by the
ltbench method label, dataset and rho, and checks that a method listed in several tables
carries the same number in each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from ltbench.errors import LtbenchError

PAPER_FILE = Path(__file__).with_name("paper_numbers.yaml")

# Datasets that come long-tailed: the paper has one setting each, whatever rho a run records.
NATURAL_LT = ("imagenet-lt", "inat2018")

# Column order of the paper reference table: (dataset, rho).
PAPER_SETTINGS = (
    ("cifar10-lt", 100.0),
    ("cifar10-lt", 50.0),
    ("cifar100-lt", 100.0),
    ("cifar100-lt", 50.0),
    ("imagenet-lt", None),
    ("inat2018", None),
)


@dataclass(frozen=True)
class PaperValue:
    """One reported number: ``value`` is None where the paper prints "-"."""

    value: float | None
    table: str


@dataclass
class PaperNumbers:
    """Lookups into the paper's tables by ltbench method label, dataset and rho."""

    methods: dict[str, str]
    paper_only: list[str]
    aliases: dict[str, str]
    tables: dict[str, dict]
    _index: dict[tuple[str, str, float | None], PaperValue] = field(default_factory=dict)

    def canonical(self, method: str) -> str:
        """The label this file uses for a suite's method label."""
        return self.aliases.get(method, method)

    def lookup(self, method: str, dataset: str, rho: float | None) -> PaperValue | None:
        """The paper's number for this setting, or None when no table has the setting."""
        key = (self.canonical(method), dataset, _rho_key(dataset, rho))
        return self._index.get(key)

    def paper_name(self, method: str) -> str:
        """The paper's row name for a method label (the label itself when unknown)."""
        return self.methods.get(self.canonical(method), method)

    def table_title(self, table: str) -> str:
        """The caption of one of the paper's tables."""
        return self.tables[table].get("title", table)


def _rho_key(dataset: str, rho) -> float | None:
    if dataset in NATURAL_LT or rho is None:
        return None
    rho = float(rho)
    return None if math.isnan(rho) else rho


def _build_index(tables: dict) -> dict:
    index: dict[tuple[str, str, float | None], PaperValue] = {}
    for table, body in tables.items():
        for method, per_dataset in (body.get("values") or {}).items():
            for dataset, per_rho in per_dataset.items():
                for rho, value in per_rho.items():
                    key = (method, dataset, _rho_key(dataset, rho))
                    value = None if value is None else float(value)
                    old = index.get(key)
                    if old is not None and old.value != value:
                        raise LtbenchError(
                            f"paper_numbers.yaml: {method} on {dataset} rho={rho} is "
                            f"{old.value} in {old.table} but {value} in {table}"
                        )
                    if old is None:
                        index[key] = PaperValue(value, table)
    return index


def load_paper_numbers(path: str | Path | None = None) -> PaperNumbers:
    """Read and index a paper-numbers YAML file (default: the one shipped with reports)."""
    return _load(str(path or PAPER_FILE))


@lru_cache(maxsize=4)
def _load(path: str) -> PaperNumbers:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LtbenchError(f"cannot read paper numbers {path}: {exc}") from None
    tables = raw.get("tables") or {}
    return PaperNumbers(
        methods=dict(raw.get("methods") or {}),
        paper_only=list(raw.get("paper_only") or []),
        aliases=dict(raw.get("aliases") or {}),
        tables=tables,
        _index=_build_index(tables),
    )


def reference_rows(paper: PaperNumbers) -> list[tuple[str, str, list[PaperValue | None]]]:
    """Every method of the paper with its numbers over ``PAPER_SETTINGS``.

    Rows are (method key, paper name, values), in the order of ``methods`` in the YAML file;
    keys listed in ``paper_only`` are not ltbench methods.
    """
    rows = []
    for method, name in paper.methods.items():
        values = [paper.lookup(method, d, r) for d, r in PAPER_SETTINGS]
        if all(v is None for v in values):
            continue
        rows.append((method, name, values))
    return rows
