"""Learning-rate schedules and milestone scaling: the one place that moves epochs around.

A dataset's recipe (paper Table 2) states its warm-up and learning-rate decay epochs for its own
schedule length; loss plugins state their epoch parameters (`ga_epoch`, `drw_epoch`) for the
paper's 200-epoch CIFAR schedule, and two-stage methods the length of their later stages at the
dataset's paper schedule. When a run has another length, every milestone the user did not set
is placed here:

- warm-up and decay epochs scale with epochs / recipe epochs (a warm-up keeps at least one
  epoch), then are kept distinct, ordered and inside the run (`spread`);
- a loss parameter anchored to `lr-decay` (DRW: "re-weight from the first decay on") moves to
  the run's matching decay epoch, so decay and re-weighting keep their order on every dataset;
- one anchored to `fraction` (GA) stays at the same fraction of the run as in the reference;
- one anchored to `length` (a stage's epochs) scales with epochs / recipe epochs, at least 1.

A plugin names the anchor of each epoch parameter in `LossSpec.milestones`; parameters it does
not name follow their suffix: `*_epoch` is a `fraction`, `*_epochs` a `length`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ltbench.errors import LtbenchError
from ltbench.sdk.registry import MILESTONE_ANCHORS as ANCHORS  # noqa: F401 (one list)

# The schedule that loss plugins' epoch defaults refer to: the paper's CIFAR recipe.
REFERENCE_EPOCHS = 200
REFERENCE_DECAYS = (160, 180)


def scaled(epoch: float, factor: float) -> int:
    """`epoch * factor` rounded to the nearest epoch (Python's round: halves to even)."""
    return int(round(epoch * factor))


def spread(milestones: Sequence[int], epochs: int) -> list[int]:
    """Scaled milestones kept distinct and ordered.

    A list that is already strictly increasing is kept as it is. Milestones that collided
    (at 6 epochs 24 and 27 of 30 both become 5, which would drop the rate twice at once) are
    pushed apart, then pulled back inside the run (1..epochs-1) when it has room for all of
    them; in a run too short for that, the ones that end past its last epoch never apply.
    """
    out = [int(m) for m in milestones]
    if all(b > a for a, b in zip(out, out[1:], strict=False)):
        return out
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    if out[-1] > epochs - 1 and len(out) <= epochs - 1:
        out[-1] = epochs - 1
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - 1)
    return out


def run_milestones(
    epochs: int, recipe_epochs: int, recipe_warmup: int, recipe_decays: Sequence[int]
) -> tuple[int, list[int]]:
    """(warm-up epochs, decay epochs) of a run of `epochs` on a recipe of `recipe_epochs`."""
    factor = epochs / recipe_epochs
    warmup = max(1, scaled(recipe_warmup, factor)) if recipe_warmup else 0
    if epochs == recipe_epochs:
        return warmup, list(recipe_decays)
    return min(warmup, epochs), spread([scaled(e, factor) for e in recipe_decays], epochs)


def check_decays(decays: Sequence[int], epochs: int) -> list[int]:
    """User-given decay epochs: integers >= 1, strictly increasing (one past the run's end
    never applies)."""
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in decays):
        raise LtbenchError(f"lr_decay_epochs must be a list of integers, got {list(decays)!r}")
    out = [int(e) for e in decays]
    for a, b in zip(out, out[1:], strict=False):
        if b <= a:
            raise LtbenchError(
                f"lr_decay_epochs {out} must be strictly increasing (two equal milestones "
                "would drop the learning rate twice at once)"
            )
    for e in out:
        if e < 1:
            raise LtbenchError(f"lr_decay_epochs {out}: epoch {e} must be >= 1")
    return out


def anchor_of(name: str, milestones: Mapping[str, str]) -> str | None:
    """How the epoch parameter `name` follows the run's length (None: it is no milestone)."""
    if name in milestones:
        return milestones[name]
    if name.endswith("_epoch"):
        return "fraction"
    if name.endswith("_epochs"):
        return "length"
    return None


def place_param(
    name: str,
    value: Any,
    anchor: str,
    *,
    epochs: int,
    recipe_epochs: int,
    decays: Sequence[int],
) -> Any:
    """Where a loss's epoch parameter (default `value`, for the reference schedule) goes in a
    run of `epochs` whose learning rate decays at `decays`."""
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    if anchor == "length":
        if epochs == recipe_epochs:
            return value
        return max(1, scaled(value, epochs / recipe_epochs))
    if anchor == "lr-decay" and value in REFERENCE_DECAYS and decays:
        index = min(REFERENCE_DECAYS.index(value), len(decays) - 1)
        return int(decays[index])
    if epochs == REFERENCE_EPOCHS:
        return value
    return scaled(value, epochs / REFERENCE_EPOCHS)


def step_learning_rate(
    base: float, epoch: int, warmup: int, decays: Sequence[int], factor: float
) -> float:
    """Learning rate of 0-based `epoch`: linear warm-up to `base` (epoch e < warmup uses
    base * (e + 1) / warmup, the public CIFAR-LT recipe), then times `factor` per decay."""
    if epoch < warmup:
        return base * (epoch + 1) / warmup
    drops = sum(epoch >= m for m in decays)
    return base * factor**drops


def cosine_learning_rate(base: float, epoch: int, epochs: int) -> float:
    """`base * (1 + cos(pi * epoch / epochs)) / 2` for 0-based `epoch`, set once per epoch."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def stage_learning_rate(cfg, stage, epoch: int) -> float:
    """The learning rate of 0-based `epoch` of `stage` (a `Stage`) of the resolved run `cfg`:
    the stage's cosine schedule, or the run's step schedule at the stage's base rate (and its
    own decay factor, where it has one)."""
    if stage.schedule == "cosine":
        return cosine_learning_rate(stage.lr, epoch, stage.epochs)
    factor = cfg.lr_decay_factor if stage.lr_decay_factor is None else stage.lr_decay_factor
    return step_learning_rate(stage.lr, epoch, cfg.warmup_epochs, cfg.lr_decay_epochs, factor)
