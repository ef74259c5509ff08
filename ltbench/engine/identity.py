"""What a run is, from everything that defines it: its label, its precision, its schedule.

A label that only names the loss can lie: plain `kps` with mixup is not the paper's "KPS w.
mixup" (that is KPS-GA with mixup), and `kps-ga` with m_max = 0.3 is not the paper's KPS-GA.
`method_label(cfg)` is built from the resolved configuration alone:

    <loss>[@<variant>][+mixup | +mixup(α=A)][ (<param>=<value>, ...)]

where the parameters listed are those that differ from the method's defaults on this dataset,
rho and run length (its paper values, its recipe, its variant, its milestones placed for the
run), and mixup is named with its alpha unless alpha = 1. A variant (`authors-script`) is named
after `@`: it is not the paper's text, so no paper number stands beside it. A multi-stage
method's stages are its parameters, so they are in the label too. The reports look a paper
number up by this label only.

`setup_deviations(cfg)` lists how the run's setup differs from the dataset's paper recipe
(network, width, batch size, learning rate, weight decay, images per class, validation
hold-out, profile, subset, schedule); a paper number stands beside a run only when the list is
empty. `full_schedule(cfg)`: the run's epochs, warm-up and decays are the recipe's and no
epoch parameter of the loss was moved. `precision_name(amp)`: "bf16-autocast" or "float32"
(TF32 convolutions are allowed on CUDA: torch's default `torch.backends.cudnn.allow_tf32 =
True` is left alone).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ltbench.data.registry import dataset_recipe
from ltbench.engine.config import TrainConfig, resolve
from ltbench.engine.schedule import anchor_of
from ltbench.sdk.registry import VARIANT_MARK, get_spec, get_variant

BF16 = "bf16-autocast"
FLOAT32 = "float32"
PAPER_MOMENTUM = 0.9


def precision_name(amp: bool) -> str:
    """The numeric precision of a run's forward and backward passes."""
    return BF16 if amp else FLOAT32


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def changed_params(cfg: TrainConfig) -> dict[str, Any]:
    """The loss parameters of the resolved `cfg` that differ from the method's defaults on its
    dataset, rho and run length."""
    base = resolve(dataclasses.replace(cfg, loss_params={}, stage2={}))
    return {k: v for k, v in cfg.loss_params.items() if base.loss_params.get(k) != v}


def method_label(cfg: TrainConfig) -> str:
    """`<loss>[@variant][+mixup[(α=A)]][ (param=value, ...)]` of a resolved configuration."""
    label = cfg.loss if cfg.variant is None else f"{cfg.loss}{VARIANT_MARK}{cfg.variant}"
    if cfg.mixup_alpha > 0:
        label += "+mixup" if cfg.mixup_alpha == 1.0 else f"+mixup(α={cfg.mixup_alpha:g})"
    changed = changed_params(cfg)
    if changed:
        label += " (" + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(changed.items())) + ")"
    return label


def variant_of(cfg: TrainConfig):
    """The run's `Variant` (None: the paper's text)."""
    if cfg.variant is None:
        return None
    spec = get_spec(cfg.loss)
    return get_variant(spec, cfg.variant)


def reference_value(cfg: TrainConfig, name: str) -> Any:
    """The value of run setting `name` in the schedule the run claims: the dataset recipe's,
    or its variant's where the variant sets it."""
    variant = variant_of(cfg)
    if variant is not None and name in variant.schedule:
        return variant.schedule[name]
    return getattr(dataset_recipe(cfg.dataset, cfg.data_root), name)


def full_schedule(cfg: TrainConfig) -> bool:
    """Whether the run is the full schedule of the dataset recipe (of its variant, where the
    variant sets one of them): epochs, warm-up, decays and their factor, with every epoch
    parameter of the loss where the method puts it."""
    d = dataset_recipe(cfg.dataset, cfg.data_root)
    same = (
        cfg.epochs == d.epochs
        and cfg.warmup_epochs == d.warmup_epochs
        and list(cfg.lr_decay_epochs) == list(d.lr_decay_epochs)
        and math.isclose(cfg.lr_decay_factor, reference_value(cfg, "lr_decay_factor"))
    )
    milestones = get_spec(cfg.loss).milestones
    return same and not any(anchor_of(k, milestones) for k in changed_params(cfg))


def setup_deviations(cfg: TrainConfig) -> list[str]:
    """How the run's setup differs from its dataset's paper recipe ([] when it does not)."""
    d = dataset_recipe(cfg.dataset, cfg.data_root)
    out = []
    variant = variant_of(cfg)
    if variant is not None:
        out.append(f"variant {cfg.variant}: {variant.description} (not the paper's text)")
    for name, paper in (
        ("model", d.model),
        ("width", d.width),
        ("batch_size", reference_value(cfg, "batch_size")),
        ("lr", reference_value(cfg, "lr")),
        ("weight_decay", reference_value(cfg, "weight_decay")),
        ("momentum", PAPER_MOMENTUM),
    ):
        value = getattr(cfg, name)
        if value != paper:
            out.append(f"{name}={_fmt(value)} (paper {_fmt(paper)})")
    if cfg.n_max is not None:
        out.append(f"n_max={cfg.n_max} (paper: every image)")
    if cfg.val_fraction:
        out.append(f"val_fraction={cfg.val_fraction:g} (paper: no hold-out)")
    if cfg.profile != "exp":
        out.append(f"profile={cfg.profile} (paper exp)")
    if cfg.subset_seed != 0:
        out.append(f"subset_seed={cfg.subset_seed} (paper: the standard draw 0)")
    if not full_schedule(cfg):
        out.append(
            f"schedule: {cfg.epochs} epochs, decays {list(cfg.lr_decay_epochs)} "
            f"(paper {d.epochs}, {list(d.lr_decay_epochs)})"
        )
    return out


def identity(cfg: TrainConfig) -> dict[str, Any]:
    """The result.json fields that say what the run is (`method`, `full_schedule`,
    `setup_deviations`)."""
    return {
        "method": method_label(cfg),
        "full_schedule": full_schedule(cfg),
        "setup_deviations": setup_deviations(cfg),
    }
