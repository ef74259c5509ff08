"""The `search` block of a sweep suite (`ltbench sweep`), checked key by key when it is loaded,
and the value checks that the suite loader (`ltbench.runner.suite`) shares.

    search:
      type: optuna                                # optuna (default; random without Optuna)
      space:                                      # loss parameters, searched in this order
        tau: {type: float, low: 0.5, high: 2.0}   # type float or int; bounds are inclusive
      num_samples: 30
      grace_fraction: 0.1                         # share of the epochs before ASHA may stop
      reduction_factor: 3

A grid search (`type: grid`) runs every combination of its values once, with no early stopping
(ASHA would leave holes in the table it is for), so it takes no num_samples, grace_fraction or
reduction_factor; each parameter lists its values or spaces `steps` values evenly from low to
high (both included):

    search:
      type: grid
      space:
        m_max: {type: float, values: [0.3, 0.4, 0.5, 0.6]}
        s_base: {type: int, low: 10, high: 30, steps: 3}    # 10, 20, 30

Either way the points are scored on the balanced validation error (`ltbench.schema.
SEARCH_METRIC`): Optuna and ASHA steer on it and the sweep selects on it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ltbench.errors import LtbenchError
from ltbench.schema import SEARCH_METRIC

SEARCH_KEYS = ("space", "num_samples", "grace_fraction", "reduction_factor", "type")
SEARCH_TYPES = ("optuna", "grid")
GRID_ONLY_KEYS = ("values", "steps")
MAX_GRID_POINTS = 10_000  # points of a grid search (each one a whole training run)
SPACE_KEYS = ("type", "low", "high", *GRID_ONLY_KEYS)
SPACE_TYPES = ("float", "int")


# ----------------------------------------------------------------------------------------------
# Value checks (shared with the suite loader)


def type_name(value: Any) -> str:
    return type(value).__name__


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_keys(data: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise LtbenchError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")


# ----------------------------------------------------------------------------------------------
# The search block


@dataclass(frozen=True)
class SearchSpace:
    """The `search` block of a sweep suite.

    `type` "optuna": `space` holds {type, low, high} per parameter, `num_samples` points are
    drawn and ASHA stops poor ones early. `type` "grid": `space` holds {type, values} per
    parameter (low/high/steps expanded when loaded) and every combination runs to the end.
    """

    space: dict[str, dict[str, Any]]
    num_samples: int = 20
    grace_fraction: float = 0.1
    reduction_factor: float = 3
    type: str = "optuna"

    @property
    def params(self) -> list[str]:
        """The searched parameter names, in the order the suite lists them."""
        return list(self.space)

    @property
    def is_grid(self) -> bool:
        return self.type == "grid"

    @property
    def grid_size(self) -> int:
        """The number of points of a grid (every combination of the values)."""
        return math.prod(len(dim["values"]) for dim in self.space.values())

    def with_num_samples(self, num_samples: int, suite: str) -> SearchSpace:
        """The search with another number of points (`--num-samples`); a grid has its own."""
        if self.is_grid:
            raise LtbenchError(
                f"suite {suite!r} is a grid search of {self.grid_size} points, each run once; "
                "--num-samples applies to type optuna"
            )
        return dataclasses.replace(self, num_samples=num_samples)

    def strategy(self, grace_period: int) -> str:
        """How the points are run and chosen, for the sweep's first line."""
        if self.is_grid:
            return f"every point to the end, selected on {SEARCH_METRIC}"
        return f"ASHA on {SEARCH_METRIC}, grace {grace_period}"

    def record(self, max_t: int, grace_period: int) -> dict[str, Any]:
        """What DIR/suite.yaml records of the search (`search.params` names the columns)."""
        out = {
            "type": self.type,
            "params": self.params,
            "num_samples": self.num_samples,
            "metric": SEARCH_METRIC,
            "mode": "min",
            "scheduler": "none" if self.is_grid else "ASHA",
            "max_t": max_t,
        }
        if not self.is_grid:
            out.update(grace_period=grace_period, reduction_factor=self.reduction_factor)
        return out


def _grid_values(dim: dict[str, Any], pat: str) -> list[int | float]:
    """A grid dimension's values: its `values`, or `steps` values from low to high."""
    check = is_int if dim["type"] == "int" else is_number
    if "values" in dim:
        if "low" in dim or "high" in dim or "steps" in dim:
            raise LtbenchError(f"{pat}: give values, or low, high and steps, not both")
        values = dim["values"]
        if not isinstance(values, list) or not values or not all(check(v) for v in values):
            raise LtbenchError(f"{pat}: values must be a non-empty list of {dim['type']}s")
    else:
        steps = dim.get("steps")
        if not is_int(steps) or not 2 <= steps <= MAX_GRID_POINTS:
            raise LtbenchError(
                f"{pat}: a grid dimension needs values: [...] or low, high and steps (an "
                f"integer from 2 to {MAX_GRID_POINTS}), got steps={str(steps)[:40]}"
            )
        low, high = dim["low"], dim["high"]
        values = [low + (high - low) * i / (steps - 1) for i in range(steps)]
        if dim["type"] == "int":
            values = [int(round(v)) for v in values]
        else:
            values = [float(f"{v:.12g}") for v in values]  # 0.30000000000000004 -> 0.3
    if len(set(values)) != len(values):
        raise LtbenchError(f"{pat}: the grid's values repeat: {values!r}")
    return [int(v) if dim["type"] == "int" else float(v) for v in values]


def _parse_dimension(dim: Any, pat: str, grid: bool) -> dict[str, Any]:
    """One checked dimension of a search space (`pat` names it in errors)."""
    if not isinstance(dim, dict):
        raise LtbenchError(f"{pat} must be a mapping with keys {', '.join(SPACE_KEYS)}")
    check_keys(dim, SPACE_KEYS, pat)
    if dim.get("type") not in SPACE_TYPES:
        raise LtbenchError(
            f"{pat}: type must be one of {', '.join(SPACE_TYPES)}, got {dim.get('type')!r}"
        )
    extra = [k for k in GRID_ONLY_KEYS if k in dim]
    if extra and not grid:
        raise LtbenchError(f"{pat}: {extra[0]} needs a grid search (search: type: grid)")
    check = is_int if dim["type"] == "int" else is_number
    if not (grid and "values" in dim):
        for bound in ("low", "high"):
            if not check(dim.get(bound)) or not math.isfinite(dim[bound]):
                raise LtbenchError(
                    f"{pat}: {bound} must be a finite {dim['type']}, got {str(dim.get(bound))[:40]}"
                )
        if not dim["low"] < dim["high"]:
            raise LtbenchError(f"{pat}: low must be < high, got {dim['low']!r}..{dim['high']!r}")
    if grid:
        return {"type": dim["type"], "values": _grid_values(dim, pat)}
    return dict(dim)


def parse_search(block: Any, where: str) -> SearchSpace:
    """The checked `search` block of the suite file `where`; one-line errors."""
    at = f"{where}: search"
    if not isinstance(block, dict):
        raise LtbenchError(f"{at} must be a mapping with keys {', '.join(SEARCH_KEYS)}")
    check_keys(block, SEARCH_KEYS, at)
    kind = block.get("type", "optuna")
    if kind not in SEARCH_TYPES:
        raise LtbenchError(f"{at}: type must be one of {', '.join(SEARCH_TYPES)}, got {kind!r}")
    grid = kind == "grid"
    space = block.get("space")
    if not isinstance(space, dict) or not space:
        raise LtbenchError(f"{at}: space must map parameter names to {{type, low, high}}")
    out_space = {
        pname: _parse_dimension(dim, f"{at}: space: {pname}", grid) for pname, dim in space.items()
    }
    if grid:
        for key in ("num_samples", "grace_fraction", "reduction_factor"):
            if key in block:
                raise LtbenchError(
                    f"{at}: a grid search runs every point once, to the end (no ASHA); "
                    f"{key} belongs to type optuna"
                )
        out = SearchSpace(out_space, type="grid")
        if out.grid_size > MAX_GRID_POINTS:
            raise LtbenchError(
                f"{at}: the grid has {out.grid_size:.3g} points; at most {MAX_GRID_POINTS} "
                "(fewer values per parameter)"
            )
        return dataclasses.replace(out, num_samples=out.grid_size)
    out = SearchSpace(out_space)
    num = block.get("num_samples", out.num_samples)
    if not is_int(num) or num < 1:
        raise LtbenchError(f"{at}: num_samples must be an integer >= 1, got {num!r}")
    grace = block.get("grace_fraction", out.grace_fraction)
    if not is_number(grace) or not 0 < grace <= 1:
        raise LtbenchError(f"{at}: grace_fraction must be a number in (0, 1], got {grace!r}")
    rf = block.get("reduction_factor", out.reduction_factor)
    if not is_number(rf) or rf < 2:
        raise LtbenchError(f"{at}: reduction_factor must be a number >= 2, got {rf!r}")
    return SearchSpace(out.space, num, float(grace), rf)
