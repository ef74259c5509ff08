"""Packs of a suite (`pack: K`, `ltbench run --pack K`): which pending trials train together.

Ray-free planning. Trials that share everything but their seed, method and mixup (the shared
settings are the engine's `pack_signature`) are grouped, in suite order, into packs of up to K;
each pack is one Tune trial (`ltbench.runner.ray_adapter`) that trains its members with
`ltbench.engine.pack.train_pack` into their own folders DIR/trials/<key>, so results.csv,
`--resume` and the reports see the same trials as without packing. A method the engine cannot
pack (several stages, its own network or step) trains alone, and so does a data-parallel
trial (`workers_per_trial` > 1); the plan says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ltbench.errors import LtbenchError
from ltbench.runner.trials import TrialSpec


@dataclass(frozen=True)
class PackPlan:
    """The Tune units of a suite: `units` maps each unit's name to its trial keys (one key: a
    trial alone); `alone` gives the reason of each trial that cannot be packed."""

    units: dict[str, list[str]]
    alone: dict[str, str] = field(default_factory=dict)

    @property
    def packs(self) -> dict[str, list[str]]:
        """The units of more than one trial."""
        return {name: keys for name, keys in self.units.items() if len(keys) > 1}

    def describe(self, size: int) -> list[str]:
        """The plan's lines for the driver's output."""
        packs = self.packs
        packed = sum(len(keys) for keys in packs.values())
        lines = [
            f"packs of up to {size}: {packed} trials in {len(packs)} pack(s) "
            f"({', '.join(str(len(k)) for k in packs.values()) or 'none'} runs), "
            f"{len(self.units) - len(packs)} trial(s) alone"
        ]
        reasons: dict[str, list[str]] = {}
        for key, why in self.alone.items():
            reasons.setdefault(why, []).append(key)
        for why, keys in reasons.items():
            lines.append(f"  alone ({why}): {', '.join(keys)}")
        return lines


def check_pack_size(value, where: str) -> int:
    """A pack size: an integer >= 1 (1: no packing)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LtbenchError(f"{where} must be an integer >= 1 (1: every trial alone), got {value!r}")
    return value


def unit_name(keys: list[str]) -> str:
    """A pack's name in Tune: its first trial's key and how many more it holds."""
    return keys[0] if len(keys) == 1 else f"{keys[0]}+{len(keys) - 1}"


def plan_packs(trials: list[TrialSpec], size: int) -> PackPlan:
    """Group `trials` (in their order) into packs of up to `size` that the engine can fuse."""
    from ltbench.engine.pack import pack_signature, solo_reason
    from ltbench.engine.stages import check_run

    size = check_pack_size(size, "pack")
    groups: dict[tuple, list[str]] = {}
    alone: dict[str, str] = {}
    order: list[tuple] = []
    for t in trials:
        cfg, stages = check_run(t.train_config(), files=False)
        why = None
        if size > 1 and t.workers > 1:  # Ray Train's worker group; a pack is one process
            why = f"data-parallel on {t.workers} workers"
        elif size > 1:
            why = solo_reason(cfg, stages)
        if why is not None:
            alone[t.key] = why
            order.append(("alone", t.key))
            continue
        signature = pack_signature(cfg)
        if signature not in groups:
            groups[signature] = []
            order.append(signature)
        groups[signature].append(t.key)
    units: dict[str, list[str]] = {}
    for entry in order:
        if entry[0] == "alone":
            units[entry[1]] = [entry[1]]
            continue
        keys = groups[entry]
        for start in range(0, len(keys), size):
            chunk = keys[start : start + size]
            units[unit_name(chunk)] = chunk
    return PackPlan(units, alone)
