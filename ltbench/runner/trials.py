"""Trial specs: one training run of a suite, its key, and the trial list saved in DIR.

A `TrialSpec` is a key (the trial's directory name), a method label and a TrainConfig dict;
everything else (loss, parameters, dataset, rho, seeds) is read from that dict, so there is one
copy of each setting. `DIR/trials.json` holds every planned trial (the trainable reads it,
`--resume` compares with it); a sweep's trials each write their own `trial.json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltbench.engine.config import TrainConfig
from ltbench.errors import LtbenchError
from ltbench.schema import TRIAL_SPEC_FILE, TRIALS_DIR, TRIALS_FILE


def format_rho(rho: float) -> str:
    """100.0 -> '100', 12.5 -> '12.5'."""
    return f"{rho:g}"


def rho_of(imb_factor: float | None) -> float:
    """rho = 1/imb_factor, rounded to 12 significant digits (1/(1/3) gives 3.0, not 2.99..)."""
    if not imb_factor:
        return math.nan
    return float(f"{1.0 / imb_factor:.12g}")


def format_point(point: dict[str, Any]) -> str:
    """A searched point as text: `m=0.3142, s=12` (floats to 4 significant digits)."""
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
    )


def trial_key(method: str, dataset: str, rho: float, seed: int, subset_seed: int | None) -> str:
    """The trial's directory name under DIR/trials, e.g. `kps-ga_cifar10-lt_rho100_seed0`."""
    key = f"{method}_{dataset}_rho{format_rho(rho)}_seed{seed}"
    return key if subset_seed is None else f"{key}_subset{subset_seed}"


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its key, its method label and its TrainConfig dict (None: paper default).

    The loss, its parameters, the dataset, rho and the seeds are read-only views of `config`.
    """

    key: str
    method: str
    config: dict[str, Any]
    posthoc: tuple[str, ...] = ()  # post-hoc rules evaluated after training (suite `posthoc:`)
    # data-parallel processes that train it (suite `workers_per_trial`); the numbers do not
    # depend on it (ltbench.engine.distributed), so a resumed suite may change it
    workers: int = 1

    @property
    def loss(self) -> str:
        return self.config["loss"]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.config.get("loss_params") or {})

    @property
    def mixup_alpha(self) -> float:
        return float(self.config.get("mixup_alpha") or 0.0)

    @property
    def dataset(self) -> str:
        return self.config["dataset"]

    @property
    def rho(self) -> float:
        return rho_of(self.config.get("imb_factor"))

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def subset_seed(self) -> int:
        return self.config.get("subset_seed") or 0

    def train_config(self) -> TrainConfig:
        """The TrainConfig of this trial (unresolved: `None` still means the paper default)."""
        return TrainConfig.from_dict(dict(self.config), source=f"trial {self.key}")

    def describe(self) -> str:
        """`method, dataset, rho R`, as the progress lines name a trial."""
        return f"{self.method}, {self.dataset}, rho {format_rho(self.rho)}"

    def to_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "method": self.method, "config": dict(self.config)}
        if self.posthoc:
            out["posthoc"] = list(self.posthoc)
        if self.workers != 1:
            out["workers"] = self.workers
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        """Read a spec; the copies of config values that older files also held are ignored."""
        posthoc = tuple(str(r) for r in data.get("posthoc") or ())
        workers = int(data.get("workers") or 1)
        return cls(str(data["key"]), str(data["method"]), dict(data["config"]), posthoc, workers)


def point_spec(base: TrialSpec, key: str, point: dict[str, Any]) -> TrialSpec:
    """A sweep trial: `base` with the searched `point` among its loss parameters."""
    config = {**base.config, "loss_params": {**base.params, **point}}
    label = f"{base.method} ({format_point(point)})"
    return TrialSpec(key, label, config, base.posthoc, base.workers)


def check_trials(trials: list[TrialSpec]) -> None:
    """Check every trial now, so that a bad value fails before anything is written or Ray
    starts: its configuration resolved, its stages planned (each stage's loss built once with
    its parameters) and its data files found (`ltbench.data.registry.check_files`)."""
    from ltbench.data.registry import get_dataset_spec
    from ltbench.engine.distributed import check_batch
    from ltbench.engine.stages import check_run

    seen: set[tuple] = set()
    for t in trials:
        if not get_dataset_spec(t.dataset).built_in and not t.config.get("data_root"):
            raise LtbenchError(
                f"dataset {t.dataset!r} needs its files: pass --data-root DIR (or set "
                "config: {data_root: DIR} in the suite), or use --dataset synthetic-lt"
            )
        try:
            cfg, stages = check_run(t.train_config(), files=False)
            for stage in stages:  # the recipe's global batch, split over the trial's workers
                what = "batch_size" if stage is stages[0] else f"{stage.name} batch_size"
                check_batch(stage.batch_size, t.workers, what)
            files = (cfg.dataset, cfg.data_root, cfg.imb_factor, cfg.n_max, cfg.download)
            if files + (cfg.val_fraction,) not in seen:  # shared files: checked once
                seen.add(files + (cfg.val_fraction,))
                check_run(cfg)
        except LtbenchError as exc:
            raise LtbenchError(f"trial {t.key}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# The trial list saved in DIR


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_spec_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 text
        raise LtbenchError(f"cannot read {path}: {' '.join(str(exc).split())}") from None


def _spec(data: Any, path: Path) -> TrialSpec:
    try:
        return TrialSpec.from_dict(data)
    except (KeyError, TypeError, ValueError):
        raise LtbenchError(f"cannot read {path}: not a trial spec (key, method, config)") from None


def save_trials(out_dir: Path, trials: list[TrialSpec]) -> None:
    """Write DIR/trials.json atomically: {key: spec}."""
    text = json.dumps({t.key: t.to_dict() for t in trials}, indent=1)
    _write_atomic(Path(out_dir) / TRIALS_FILE, text)


def load_trials(out_dir: Path) -> dict[str, TrialSpec]:
    """Read DIR/trials.json; {} when there is none. Reads the older, longer format too."""
    path = Path(out_dir) / TRIALS_FILE
    if not path.is_file():
        return {}
    data = _read_spec_file(path)
    if not isinstance(data, dict):
        raise LtbenchError(f"cannot read {path}: expected a mapping of trial keys")
    return {k: _spec(v, path) for k, v in data.items()}


def save_trial_spec(trial_dir: Path, spec: TrialSpec) -> None:
    """Write <trial dir>/trial.json (a sweep trial records its own spec)."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / TRIAL_SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=1))


def gather_trial_specs(out_dir: Path) -> list[TrialSpec]:
    """The specs of DIR/trials/*/trial.json, in key order."""
    paths = sorted((Path(out_dir) / TRIALS_DIR).glob(f"*/{TRIAL_SPEC_FILE}"))
    return [_spec(_read_spec_file(p), p) for p in paths]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def first_difference(old: TrialSpec, new: TrialSpec) -> str | None:
    """The first setting two specs of the same key disagree on, as text; None if equal.

    Settings that do not change a run's numbers (device, workers, evaluation period, ...) may
    differ: a resumed suite can move to other hardware.
    """
    from ltbench.engine.config import runtime_keys

    for name in ("key", "method"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            return f"{name} is {a!r} there, {b!r} now"
    skip = runtime_keys(str(new.config.get("dataset")))
    for name in sorted(set(old.config) | set(new.config)):
        if name in skip:
            continue
        x, y = old.config.get(name), new.config.get(name)
        if x != y and not (_is_number(x) and _is_number(y) and math.isclose(x, y)):
            return f"{name} is {x!r} there, {y!r} now"
    return None
