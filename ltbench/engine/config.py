"""Training configuration: one flat dataclass, the paper's per-dataset defaults, validation.

Defaults follow the paper's Table 2 (see METHODS.md). A field left as `None` takes the dataset's
default; the resolved configuration (no `None` left where a default exists) is what a run saves
in `config.yaml` and what a resumed run must match.

The recipe of each dataset lives in the data registry (`ltbench.data.registry`), the paper's
per-dataset loss values in the loss plugins (`LossSpec.dataset_defaults`), and the rules that
place milestones in a run of another length in `ltbench.engine.schedule`; `resolve` applies
them, each from its one place.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ltbench.data.longtail import check_imb_factor, check_profile, check_val_fraction
from ltbench.data.registry import dataset_recipe
from ltbench.engine.schedule import anchor_of, check_decays, place_param, run_milestones
from ltbench.errors import LtbenchError
from ltbench.sdk.datasets import check_shot_thresholds
from ltbench.sdk.stages import STAGE2_PREFIX

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Everything one training run needs. `None` means "the dataset's paper default"."""

    # data
    dataset: str = "synthetic-lt"
    data_root: str | None = None
    download: bool = False
    imb_factor: float | None = None  # 1/rho, in (0, 1]
    profile: str = "exp"  # "exp" or "step"
    subset_seed: int = 0  # seed of the long-tailed draw (the standard draw is 0)
    n_max: int | None = None  # images per class before the long-tailed draw (None: all)
    # a draw file (`ltbench draw`): train on exactly its subsets instead of drawing them
    draw: str | None = None
    val_fraction: float = 0.0  # held out of the training data for model selection
    # the many / medium / few-shot groups: more than many_shot training images, fewer than
    # few_shot, the rest (None: the dataset recipe's, 100 and 20 on the paper's datasets)
    many_shot: int | None = None
    few_shot: int | None = None
    # method
    loss: str = "ce"
    loss_params: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None  # a named variant of the method (None: the paper's text)
    mixup_alpha: float = 0.0  # 0 disables mixup
    # model
    model: str | None = None
    width: float | None = None
    # optimisation (SGD, momentum 0.9)
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    nesterov: bool | None = None  # Nesterov momentum; None: the method's recipe (else off)
    warmup_epochs: int | None = None
    lr_decay_epochs: list[int] | None = None
    lr_decay_factor: float | None = None
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None  # bf16 autocast; None: on where bf16 is fast (CUDA, AMX CPUs)
    channels_last: bool | None = None  # None: on (faster convolutions on CUDA and CPU)
    compile: bool = False
    cuda_graphs: bool = False  # CUDA only; unmeasured, off by default (step.step_module)
    num_workers: int = 4  # DataLoader workers for file-based datasets
    eval_every: int = 1  # test-set evaluation period, in epochs (the last epoch always)
    keep_best_val: bool = False  # also keep the best-on-validation epoch's checkpoint
    # Extra settings of a two-stage method (stage-2 epochs, ...), validated by that method.
    stage2: dict[str, Any] = field(default_factory=dict)

    @property
    def rho(self) -> float:
        """The imbalance ratio max(n)/min(n) the run asked for."""
        return 1.0 / self.imb_factor if self.imb_factor else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples), as saved in config.yaml."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict, naming the source and the key on an unknown key or a wrong type."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names, key=str)
        if unknown:
            raise LtbenchError(
                f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(names))}"
            )
        cfg = cls(**data)
        check_types(cfg, source)
        return cfg


_TYPES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "dict": (dict,),
    "list": (list, tuple),
}


def check_types(cfg: TrainConfig, source: str = "config") -> None:
    """Every field holds a value of its declared type (or None where None is allowed)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        kinds = [k.strip() for k in str(f.type).replace("[", " ").split("|")]
        allowed: tuple[type, ...] = ()
        for k in kinds:
            base = k.split()[0] if k else k
            allowed += _TYPES.get(base, ())
        if value is None and "None" in kinds:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            want = " or ".join(k.split()[0] for k in kinds if k)
            raise LtbenchError(
                f"{source}: {f.name} must be {want}, got {value!r} ({type(value).__name__})"
            )


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill every `None` with the dataset's paper default and check every value.

    Returns a new config; raises `LtbenchError` with a one-line message on a bad value.
    """
    from ltbench.sdk.registry import (
        all_defaults,
        all_defaults_for,
        get_spec,
        get_variant,
        own_schedule,
        resolve_params,
    )

    check_types(cfg)
    d = dataset_recipe(cfg.dataset, cfg.data_root)
    spec = get_spec(cfg.loss)
    variant = get_variant(spec, cfg.variant, cfg.dataset) if cfg.variant is not None else None
    # run settings the user left unset: a variant's, then the method's own on this dataset
    # (its official code's, e.g. the meta-learning recipe), then the dataset recipe's below
    for own in (variant.schedule if variant is not None else {}, own_schedule(spec, cfg.dataset)):
        unset = {k: v for k, v in own.items() if getattr(cfg, k) is None}
        cfg = dataclasses.replace(cfg, **unset)
    out = dataclasses.replace(cfg, loss_params=dict(cfg.loss_params), stage2=dict(cfg.stage2))

    def pick(name: str, default: Any) -> Any:
        value = getattr(cfg, name)
        return default if value is None else value

    out.imb_factor = check_imb_factor(pick("imb_factor", d.imb_factor))
    check_profile(out.profile)
    check_val_fraction(out.val_fraction)  # kept as given: the saved config must not change
    out.many_shot, out.few_shot = check_shot_thresholds(
        pick("many_shot", d.many_shot), pick("few_shot", d.few_shot)
    )
    if not 0 <= out.mixup_alpha < math.inf:
        raise LtbenchError(f"mixup alpha {out.mixup_alpha!r} must be >= 0 (0 disables mixup)")
    if out.device not in DEVICES:
        raise LtbenchError(f"unknown device {out.device!r}; allowed: {', '.join(DEVICES)}")
    if out.cuda_graphs and out.device == "cpu":
        raise LtbenchError("cuda_graphs needs a CUDA device; this run is on cpu")

    out.model = pick("model", d.model)
    out.width = float(pick("width", d.width))
    out.epochs = int(pick("epochs", d.epochs))
    out.batch_size = int(pick("batch_size", d.batch_size))
    out.lr = float(pick("lr", d.lr))
    out.weight_decay = float(pick("weight_decay", d.weight_decay))
    out.lr_decay_factor = float(pick("lr_decay_factor", d.lr_decay_factor))
    out.nesterov = bool(pick("nesterov", False))
    check_numbers(out)

    # Milestones the user did not set follow the paper's schedule, placed for the run's length
    # (one set of rules for every milestone: ltbench.engine.schedule).
    warmup, decays = run_milestones(out.epochs, d.epochs, d.warmup_epochs, d.lr_decay_epochs)
    out.warmup_epochs = int(pick("warmup_epochs", warmup))
    if out.warmup_epochs < 0:
        raise LtbenchError(f"warmup_epochs must be >= 0, got {out.warmup_epochs!r}")
    if cfg.lr_decay_epochs is None:
        out.lr_decay_epochs = decays
    else:
        out.lr_decay_epochs = check_decays(cfg.lr_decay_epochs, out.epochs)

    given = dict(cfg.loss_params)
    for key, value in cfg.stage2.items():  # `stage2: {epochs: 5}` is `stage2_epochs: 5`
        name = STAGE2_PREFIX + str(key)
        if name not in spec.defaults:
            allowed = sorted(
                k[len(STAGE2_PREFIX) :] for k in spec.defaults if k.startswith(STAGE2_PREFIX)
            )
            raise LtbenchError(
                f"loss {out.loss!r}: unknown stage2 setting {key!r}; allowed: "
                f"{', '.join(allowed) or 'none (a single-stage loss)'}"
            )
        given[name] = value
    out.stage2 = {}
    params: dict[str, Any] = {}
    # the paper's values on this dataset, and the method's recipe on this dataset and rho
    per_dataset = all_defaults_for(spec, out.dataset, out.imb_factor)
    if variant is not None:  # the variant's values stand in for the paper's
        per_dataset.update(variant.params)
    for key, value in all_defaults(spec).items():
        if key in given:
            continue
        anchor = anchor_of(key, spec.milestones)
        if per_dataset[key] != value:
            value = params[key] = per_dataset[key]
        if anchor is not None:
            params[key] = place_param(
                key,
                value,
                anchor,
                epochs=out.epochs,
                recipe_epochs=d.epochs,
                decays=out.lr_decay_epochs,
            )
    params.update(given)
    out.loss_params = resolve_params(out.loss, params)
    return out


# What `check_numbers` allows of each number of a resolved configuration (all must be finite).
_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("epochs", lambda v: v >= 1, "an integer >= 1"),
    ("batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("lr", lambda v: v > 0, "a finite number > 0"),
    ("width", lambda v: v > 0, "a finite number > 0"),
    ("weight_decay", lambda v: v >= 0, "a finite number >= 0"),
    ("momentum", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("lr_decay_factor", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("seed", lambda v: v >= 0, "an integer >= 0"),
    ("subset_seed", lambda v: v >= 0, "an integer >= 0 (0: the standard draw)"),
    ("num_workers", lambda v: v >= 0, "an integer >= 0"),
    ("eval_every", lambda v: v >= 1, "an integer >= 1 (test every N epochs)"),
    ("n_max", lambda v: v is None or v >= 1, "an integer >= 1 (unset: every image)"),
)


def check_numbers(cfg: TrainConfig) -> None:
    """Every number of a resolved configuration is finite and in its range (one-line errors)."""
    for name, allowed, what in _RANGES:
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and allowed(value)):
            raise LtbenchError(f"{name} must be {what}, got {value!r}")


# Settings that do not change the network a run trains: a resumed run may change them (the
# group thresholds only regroup the classes of the evaluation).
RUNTIME_KEYS = frozenset(
    {
        "device",
        "amp",
        "channels_last",
        "compile",
        "cuda_graphs",
        "num_workers",
        "eval_every",
        "keep_best_val",
        "data_root",
        "download",
        "many_shot",
        "few_shot",
    }
)


def runtime_keys(dataset: str) -> frozenset[str]:
    """`RUNTIME_KEYS` of a run on `dataset`: without data_root where the dataset is whatever its
    folder holds (data without a paper recipe: the generic kinds), so that runs on two folders
    never share a stage-1 cache, a pack or a checkpoint."""
    from ltbench.data.registry import DATASETS

    spec = DATASETS.get(dataset)
    if spec is not None and spec.recipe_for is not None:
        return RUNTIME_KEYS - {"data_root"}
    return RUNTIME_KEYS


def save_yaml(cfg: TrainConfig, path: Path) -> None:
    """Write the resolved configuration as YAML."""
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def load_yaml(path: Path) -> TrainConfig:
    """Read a configuration written by `save_yaml` (safe_load: no code is executed)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise LtbenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise LtbenchError(f"{path}: not a YAML text file") from None
    except OSError as exc:
        raise LtbenchError(
            f"cannot read configuration file {path}: {exc.strerror or exc}; give a YAML file "
            "of TrainConfig keys"
        ) from None
    if not isinstance(data, dict):
        raise LtbenchError(f"{path}: expected a mapping of configuration keys")
    return TrainConfig.from_dict(data, source=str(path))
