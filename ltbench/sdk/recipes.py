"""Official recipes as data: a method's settings per (dataset, rho), each row citing its source.

A method whose published settings depend on the dataset and the imbalance ratio (MiSLAS's
stage-2 learning-rate factor is 0.5 on CIFAR-10-LT at rho 100 and 0.2 at rho 50) keeps them in a
table, one row per (dataset, rho), read by its plugin (`load_recipes`). The table is a callable
`recipe(dataset, imb_factor) -> {setting: value}` that the plugin's `LossSpec.recipe` holds; the
configuration (`ltbench.engine.config.resolve`) takes those values for every setting the user
did not set, above the spec's `defaults` and `dataset_defaults`. Epoch settings among them
(`stage2_epochs`) are stated for the dataset's paper schedule and follow a run of another
length like every other milestone.

Choosing a row:

- rows of the run's dataset; a dataset without rows may borrow another's (`fallback`: synthetic-lt
  follows cifar10-lt); a dataset with neither gets no values (the spec's defaults apply);
- a row with `rho: null` holds for every rho (ImageNet-LT, iNaturalist: long-tailed as published);
- otherwise the row whose rho is nearest the run's on a log scale (MiSLAS has CIFAR configs for
  rho 100, 50 and 10 only: rho 200 takes the rho-100 row); a tie takes the larger rho.

`RecipeOf(name)` is the recipe of another registered method, found through the registry when
first used (plugins never import each other): `mislas-kps` follows `mislas`'s table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ltbench.errors import LtbenchError


@dataclass(frozen=True)
class RecipeRow:
    """One row: the settings of a method on `dataset` at `rho` (None: any rho) and their source."""

    dataset: str
    rho: float | None
    source: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    def __post_init__(self):
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))


class RecipeTable:
    """The rows of one method; `table(dataset, imb_factor)` is the settings of the chosen row."""

    def __init__(
        self,
        method: str,
        rows: Iterable[RecipeRow],
        fallback: Mapping[str, str] | None = None,
    ):
        self.method = method
        self.rows = tuple(rows)
        self.fallback = dict(fallback or {})

    def row(self, dataset: str, imb_factor: float | None) -> RecipeRow | None:
        """The row that holds for a run on `dataset` at `imb_factor` (None: no row)."""
        rows = [r for r in self.rows if r.dataset == dataset]
        if not rows and dataset in self.fallback:
            rows = [r for r in self.rows if r.dataset == self.fallback[dataset]]
        if not rows:
            return None
        anyrho = [r for r in rows if r.rho is None]
        if anyrho:
            return anyrho[0]
        if not imb_factor:
            return max(rows, key=lambda r: r.rho)
        rho = 1.0 / imb_factor
        return min(rows, key=lambda r: (abs(math.log(r.rho / rho)), -r.rho))

    def __call__(self, dataset: str, imb_factor: float | None) -> dict[str, Any]:
        row = self.row(dataset, imb_factor)
        return {} if row is None else dict(row.settings)

    def __repr__(self) -> str:
        return f"RecipeTable({self.method!r}, {len(self.rows)} rows)"


def load_recipes(path: str | Path, method: str) -> RecipeTable:
    """The table of `method` in the recipe file `path` (layout: see baselines/recipes.yaml)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LtbenchError(f"cannot read recipes {path}: {exc}") from None
    body = (data or {}).get("methods", {}).get(method)
    if not isinstance(body, dict):
        raise LtbenchError(f"recipes {path}: no table for method {method!r}")
    rows = []
    for i, raw in enumerate(body.get("rows") or []):
        try:
            rho = raw.get("rho")
            rows.append(
                RecipeRow(
                    dataset=str(raw["dataset"]),
                    rho=None if rho is None else float(rho),
                    source=str(raw["source"]),
                    settings=dict(raw.get("settings") or {}),
                    note=str(raw.get("note") or ""),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise LtbenchError(
                f"recipes {path}: {method} row {i} needs dataset, rho, source, settings"
            ) from None
    return RecipeTable(method, rows, body.get("fallback") or {})


class RecipeOf:
    """The recipe of the registered method `name`, less the settings named in `drop`."""

    def __init__(self, name: str, drop: Iterable[str] = ()):
        self.name = name
        self.drop = tuple(drop)

    def table(self) -> RecipeTable | None:
        from ltbench.sdk.registry import get_spec

        return get_spec(self.name).recipe

    def row(self, dataset: str, imb_factor: float | None) -> RecipeRow | None:
        table = self.table()
        return None if table is None else table.row(dataset, imb_factor)

    def __call__(self, dataset: str, imb_factor: float | None) -> dict[str, Any]:
        table = self.table()
        values = {} if table is None else table(dataset, imb_factor)
        return {k: v for k, v in values.items() if k not in self.drop}

    def __repr__(self) -> str:
        return f"RecipeOf({self.name!r})"
