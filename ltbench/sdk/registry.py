"""The loss registry: one frozen record per loss, one factory, plugins from entry points.

Every loss ltbench knows is a `LossSpec`. Our own losses and any third-party package register
the same way: a module-level `SPEC` (or a list of specs) named by an entry point in the group
`ltbench.losses` (the mechanism every extension point shares: `ltbench.sdk.plugins`). Entry
points are loaded once, on first use; a broken plugin is skipped with a warning naming it, and
an unknown name is answered with the list of known ones.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ltbench.errors import LtbenchError
from ltbench.sdk.plugins import Registry

ENTRY_POINT_GROUP = "ltbench.losses"
HEADS = ("linear", "cosine")
MILESTONE_ANCHORS = ("fraction", "lr-decay", "length")
# The run settings a variant may set (TrainConfig fields of the optimisation, none of them an
# epoch: epoch settings follow the run's length by the milestone rules, which know only the
# dataset recipe).
VARIANT_SCHEDULE_KEYS = ("batch_size", "lr", "weight_decay", "lr_decay_factor")
# The run settings a method's own recipe may set on a dataset (`LossSpec.schedule`): a
# variant's, Nesterov momentum, and the warm-up (taken as given, whatever the run's length).
OWN_SCHEDULE_KEYS = (*VARIANT_SCHEDULE_KEYS, "warmup_epochs", "nesterov")
VARIANT_MARK = "@"  # the method label of a variant: `<loss>@<variant>`
VARIANT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class Variant:
    """A named set of a method's settings that are not the paper's text.

    The paper's text is a method's default; a variant is what someone else ran under the same
    name, e.g. the authors' public training script (`authors-script`). It is chosen per run
    (`ltbench train --variant`, a suite method's `variant:`), and the method label carries it
    (`kps-ga@authors-script`), so a report never shows the paper's number beside it.

    `params`: loss parameters, used in place of the paper's defaults (a parameter the user sets
    still wins); `schedule`: run settings (`VARIANT_SCHEDULE_KEYS`) used in place of the
    dataset recipe's where the user left them unset; `source`: where the values come from
    (repository@commit: file:line); `datasets`: the datasets it was written for (empty: any).
    """

    description: str
    source: str
    params: Mapping[str, Any] = field(default_factory=dict)
    schedule: Mapping[str, Any] = field(default_factory=dict)
    datasets: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "schedule", MappingProxyType(dict(self.schedule)))
        object.__setattr__(self, "datasets", tuple(self.datasets))
        bad = sorted(set(self.schedule) - set(VARIANT_SCHEDULE_KEYS))
        if bad:
            raise ValueError(
                f"variant schedule keys must be among {VARIANT_SCHEDULE_KEYS}, got {bad}"
            )


@dataclass(frozen=True)
class LossSpec:
    """What the registry knows about one loss.

    `factory(cls_num_list, **params)` builds the plugin module; `defaults` are the paper's
    defaults and the only place they live; `head` is the classifier the loss expects.
    `kind` is "loss" for a plain loss, "two-stage" for a two-stage method.
    `stages`, when set, makes the method multi-stage: `stages(params, run) -> [Stage, ...]`
    (see `ltbench.sdk.stages`); without it the engine trains the loss as one stage.
    `uses` names registered losses whose parameters the method takes flat, next to its own
    `defaults` (a two-stage method's stage-2 loss); they are looked up when first needed.
    `milestones` says how each epoch parameter follows a run of another length: "lr-decay"
    (moves to the run's matching learning-rate decay, DRW), "fraction" (the same share of the
    run, GA) or "length" (a stage's epochs); see `ltbench.engine.schedule`.
    `dataset_defaults` are the paper's values that differ by dataset, `{dataset: {param:
    value}}` (KPS's m_max on ImageNet-LT); they replace `defaults` on that dataset.
    `recipe`, when set, is `recipe(dataset, imb_factor) -> {param: value}`: the method's
    official settings on that dataset and imbalance (a `ltbench.sdk.recipes.RecipeTable` read
    from the plugin's table); they replace `defaults` and `dataset_defaults`.
    `variants` are named settings other than the paper's text (`Variant`), `{name: Variant}`;
    a run uses one only when asked.
    `schedule` is the method's own recipe of run settings where its official code trains
    differently from the dataset recipe, `{dataset: {key: value}}` (keys `OWN_SCHEDULE_KEYS`;
    the meta-learning methods' batch 100, weight decay 5e-4, Nesterov, no warm-up on CIFAR);
    it is the method's default there (its label stays the method's name), used where the user
    and a variant left the setting unset.
    """

    name: str
    factory: Callable[..., Any]
    head: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: str = ""
    kind: str = "loss"
    stages: Callable[..., Any] | None = None
    uses: tuple[str, ...] = ()
    milestones: Mapping[str, str] = field(default_factory=dict)
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    recipe: Callable[[str, float | None], Mapping[str, Any]] | None = None
    variants: Mapping[str, Variant] = field(default_factory=dict)
    schedule: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"loss {self.name!r}: head must be one of {HEADS}, got {self.head!r}")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "milestones", MappingProxyType(dict(self.milestones)))
        per_dataset = {d: MappingProxyType(dict(v)) for d, v in self.dataset_defaults.items()}
        object.__setattr__(self, "dataset_defaults", MappingProxyType(per_dataset))
        for dataset, values in per_dataset.items():
            unknown = sorted(set(values) - set(self.defaults))
            if unknown and not self.uses:
                raise ValueError(
                    f"loss {self.name!r}: dataset_defaults[{dataset!r}] names unknown "
                    f"parameters {unknown}"
                )
        object.__setattr__(self, "variants", MappingProxyType(dict(self.variants)))
        for vname, variant in self.variants.items():
            unknown = sorted(set(variant.params) - set(self.defaults))
            if not VARIANT_NAME_RE.match(vname) or (unknown and not self.uses):
                raise ValueError(
                    f"loss {self.name!r}: variant {vname!r} needs a name of lower-case letters, "
                    f"digits and '-', and known parameters (unknown: {unknown})"
                )
        own = {d: MappingProxyType(dict(v)) for d, v in self.schedule.items()}
        object.__setattr__(self, "schedule", MappingProxyType(own))
        for dataset, values in own.items():
            unknown = sorted(set(values) - set(OWN_SCHEDULE_KEYS))
            if unknown:
                raise ValueError(
                    f"loss {self.name!r}: schedule[{dataset!r}] keys must be among "
                    f"{OWN_SCHEDULE_KEYS}, got {unknown}"
                )
        bad = {k: v for k, v in self.milestones.items() if v not in MILESTONE_ANCHORS}
        if bad:
            raise ValueError(
                f"loss {self.name!r}: milestone anchors must be one of {MILESTONE_ANCHORS}, "
                f"got {bad}"
            )


LOSSES: Registry[LossSpec] = Registry("loss", "losses", ENTRY_POINT_GROUP, LossSpec)
_REGISTRY = LOSSES.specs  # the registered specs by name (tests save and restore it)


def register(spec: LossSpec) -> LossSpec:
    """Add a spec; a second spec under the same name is an error, not a silent override."""
    return LOSSES.register(spec)


def load_entry_points(force: bool = False) -> None:
    """Import every plugin of the `ltbench.losses` group once; skip a broken one with a warning."""
    LOSSES.load_entry_points(force)


def get_spec(name: str) -> LossSpec:
    """The spec registered under `name`, or a one-line error listing the known names."""
    return LOSSES.get(name)


def all_defaults(spec: LossSpec) -> dict[str, Any]:
    """Every parameter a spec takes with its default: its own, then those of the losses it
    `uses` (a method's own setting wins over a used loss's parameter of the same name)."""
    out = dict(spec.defaults)
    for used in spec.uses:
        for key, value in get_spec(used).defaults.items():
            out.setdefault(key, value)
    return out


def all_defaults_for(
    spec: LossSpec, dataset: str, imb_factor: float | None = None
) -> dict[str, Any]:
    """`all_defaults` with the per-dataset values of `dataset` (the spec's own win), then the
    values of the spec's `recipe` for `dataset` at `imb_factor`."""
    out = all_defaults(spec)
    for used in spec.uses:
        out.update(get_spec(used).dataset_defaults.get(dataset, {}))
    out.update(spec.dataset_defaults.get(dataset, {}))
    if spec.recipe is not None:
        values = dict(spec.recipe(dataset, imb_factor))
        unknown = sorted(set(values) - set(out))
        if unknown:
            raise LtbenchError(
                f"loss {spec.name!r}: its recipe for {dataset} names unknown settings {unknown}"
            )
        out.update(values)
    return out


def own_schedule(spec: LossSpec, dataset: str) -> Mapping[str, Any]:
    """The method's own run settings on `dataset` (`LossSpec.schedule`; empty: the recipe's)."""
    return spec.schedule.get(dataset, {})


def get_variant(spec: LossSpec, name: str, dataset: str | None = None) -> Variant:
    """The variant `name` of `spec`, checked against `dataset`; one-line errors listing what
    is allowed."""
    variant = spec.variants.get(name)
    if variant is None:
        known = ", ".join(sorted(spec.variants)) or "none"
        raise LtbenchError(
            f"loss {spec.name!r} has no variant {name!r}; its variants: {known} "
            "(leave the variant unset for the paper's text)"
        )
    if dataset is not None and variant.datasets and dataset not in variant.datasets:
        raise LtbenchError(
            f"variant {name!r} of {spec.name!r} was written for {', '.join(variant.datasets)}; "
            f"got dataset {dataset!r}"
        )
    return variant


def list_losses(pattern: str = "*", kind: str | None = None) -> dict[str, dict[str, Any]]:
    """Registered names matching a shell-style wildcard, each with its default parameters."""
    load_entry_points()
    return {
        name: all_defaults(spec)
        for name, spec in sorted(_REGISTRY.items())
        if fnmatch.fnmatchcase(name, pattern) and (kind is None or spec.kind == kind)
    }


def resolve_params(name: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The spec's defaults overridden by `params`; `None` values keep the default.

    An unknown parameter is an error naming the allowed ones.
    """
    defaults = all_defaults(get_spec(name))
    params = {k: v for k, v in (params or {}).items() if v is not None}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise LtbenchError(
            f"loss {name!r} has no parameter {unknown[0]!r}; allowed parameters: {allowed}"
        )
    return {**defaults, **params}


def build_loss(name: str, cls_num_list: Iterable[int], **params: Any):
    """Build the loss plugin `name` for a training set with per-class counts `cls_num_list`."""
    spec = get_spec(name)
    resolved = resolve_params(name, params)
    counts = validate_class_counts(cls_num_list)
    try:
        plugin = spec.factory(counts, **resolved)
    except LtbenchError as exc:  # a parameter check: say which loss it was
        raise LtbenchError(f"loss {name!r}: {exc}") from None
    if getattr(plugin, "head", spec.head) != spec.head:
        raise TypeError(f"loss {name!r}: plugin head disagrees with its spec")
    plugin.head = spec.head
    plugin.loss_name = name
    return plugin


def validate_class_counts(cls_num_list: Iterable[int]) -> list[int]:
    """Class counts must be positive integers, one per class."""
    counts = list(cls_num_list)
    if not counts:
        raise LtbenchError("class counts are empty; give one positive integer per class")
    for i, n in enumerate(counts):
        if isinstance(n, bool) or not float(n).is_integer() or n < 1:
            raise LtbenchError(
                f"class count {n!r} of class {i} is invalid; counts must be positive integers"
            )
    return [int(n) for n in counts]


def factory_parameters(factory: Callable[..., Any]) -> list[str]:
    """Keyword parameters a factory accepts (used by tests to check specs against factories)."""
    import inspect

    sig = inspect.signature(factory)
    return [p for p in list(sig.parameters)[1:]]
