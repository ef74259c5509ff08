"""Stages as data: how a method says it is trained, without the engine knowing its name.

A run is one or more stages. A plain loss (`ce`, `kps-ga`, ...) declares nothing: the engine
trains it as one `Stage()` over the whole schedule. A multi-stage method's `LossSpec` carries a
`stages` function: given the method's resolved parameters and the run's settings (`RunSettings`)
it returns its list of `Stage` records, and the engine runs them in order, each from the
previous stage's weights. Every field of a stage is data the one training loop understands:

    name           "main", "stage1", "stage2", ... (tags metrics.jsonl lines, keys result.json)
    loss           a registered single-stage loss, found by name through the registry
    loss_params    its parameters (its defaults for the ones left out)
    epochs         length of the stage
    schedule       "step": the run's warm-up and decay milestones; "cosine": per epoch from
                   `lr` down to 0 (MiSLAS's and cRT's classifier schedule)
    lr, lr_factor  the stage's learning rate; the classifier trains at lr * lr_factor (a
                   learnable class scale, when there is one, at lr)
    lr_decay_factor  "step" schedule: the factor of each decay (None: the run's)
    batch_size, weight_decay
    sampler        "instance", "class-balanced" or "reversed" (class j drawn with probability
                   ∝ 1 / n_j, BBN's re-balancing branch)
    trainable      "all", or "classifier": the backbone is frozen (no gradient, not optimised),
                   or "class-scale": the classifier is frozen too and only the per-class scale
                   (`class_scale`) learns (LWS)
    batchnorm      "train": BatchNorm statistics follow this stage's data (also when the
                   backbone is frozen: MiSLAS's "shift learning"); "frozen": eval mode
    classifier     "keep" the previous stage's classifier (converted when the head kind
                   changes) or "reinit" a fresh one
    class_scale    learn a per-class scale of the scores (LWS), initialised to 1
    mixup_alpha    mixup in this stage (0: off)
    extra_samplers further batch streams of the training split, one per sampler named here,
                   drawn alongside the main one and handed to the stage's `step` (BBN's
                   reversed sampler)
    meta_per_class a small class-balanced meta set held out of the training split (that many
                   images per class, at most n_j // 2; `ltbench.data.longtail.split_meta`),
                   never trained on; the step draws its batches (`ctx.meta()`) (Jamal et al.)
    model, step    optional hooks of the method (see `ModelHook` and `StepHook`): a model
                   builder and a training step that replace the engine's own, for methods such
                   as BBN (two branches, two samplers) or meta re-weighting (a meta step)

`two_stage_spec` builds the spec of a "train everything, then re-train the classifier" method
(cRT, MiSLAS, ...) from a handful of flat settings, so such a plugin is a few lines of data;
`recipes=` gives it its official settings per (dataset, rho) (`ltbench.sdk.recipes`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ltbench.errors import LtbenchError
from ltbench.sdk.registry import LossSpec, get_spec

SCHEDULES = ("step", "cosine")
SAMPLERS = ("instance", "class-balanced", "reversed")
TRAINABLE = ("all", "classifier", "class-scale")
BATCHNORM = ("train", "frozen")
CLASSIFIER = ("keep", "reinit")


class ModelHook(Protocol):
    """`hook(backbone_builder, num_classes, head) -> nn.Module`: a method's own network."""

    def __call__(self, build_backbone: Callable[[], Any], num_classes: int, head: str) -> Any: ...


class StepHook(Protocol):
    """`hook(ctx, images, labels) -> (loss, scores)`: one training step's forward and loss.

    `ctx` gives the model, the loss plugin, the epoch (0-based within the stage), the stage's
    length, the learning rate of this step, the mixup helper, the step's generator, the
    batches of the extra samplers (`ctx.extra`) and a function drawing a meta batch
    (`ctx.meta()`, with `Stage.meta_per_class`); the engine does the backward pass, the
    optimizer step and the bookkeeping.
    """

    def __call__(self, ctx: Any, images: Any, labels: Any) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class RunSettings:
    """What a `stages` function may read of the run: its schedule and its data."""

    epochs: int
    paper_epochs: int  # the dataset's paper schedule (stage lengths scale with epochs / this)
    lr: float
    batch_size: int
    weight_decay: float
    mixup_alpha: float
    dataset: str
    imb_factor: float


@dataclass(frozen=True)
class Stage:
    """One stage of a run (see the module docstring for every field)."""

    name: str = "main"
    loss: str = ""
    loss_params: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 1
    schedule: str = "step"
    lr: float = 0.1
    lr_factor: float = 1.0
    lr_decay_factor: float | None = None
    batch_size: int = 64
    weight_decay: float = 0.0
    sampler: str = "instance"
    trainable: str = "all"
    batchnorm: str = "train"
    classifier: str = "keep"
    class_scale: bool = False
    mixup_alpha: float = 0.0
    extra_samplers: tuple[str, ...] = ()
    meta_per_class: int = 0
    model: ModelHook | None = None
    step: StepHook | None = None

    def __post_init__(self):
        for name, allowed in (
            ("schedule", SCHEDULES),
            ("sampler", SAMPLERS),
            ("trainable", TRAINABLE),
            ("batchnorm", BATCHNORM),
            ("classifier", CLASSIFIER),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise LtbenchError(
                    f"stage {self.name!r}: {name}={value!r} is invalid; allowed: "
                    f"{', '.join(allowed)}"
                )
        for sampler in self.extra_samplers:
            if sampler not in SAMPLERS:
                raise LtbenchError(
                    f"stage {self.name!r}: extra sampler {sampler!r} is invalid; allowed: "
                    f"{', '.join(SAMPLERS)}"
                )
        if self.trainable == "class-scale" and not self.class_scale:
            raise LtbenchError(
                f"stage {self.name!r}: trainable='class-scale' needs class_scale=True"
            )
        meta = self.meta_per_class
        if isinstance(meta, bool) or not isinstance(meta, int) or meta < 0:
            raise LtbenchError(
                f"stage {self.name!r}: meta_per_class={meta!r} is invalid; it must be an "
                "integer >= 0"
            )
        object.__setattr__(self, "loss_params", dict(self.loss_params))
        object.__setattr__(self, "extra_samplers", tuple(self.extra_samplers))

    def describe(self) -> dict[str, Any]:
        """The stage as plain data (hooks by name), as recorded in result.json."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra_samplers":
                value = list(value)
            if f.name in ("model", "step"):
                value = None if value is None else getattr(value, "__qualname__", repr(value))
            out[f.name] = value
        return out


def single_stage(loss: str, params: Mapping[str, Any], run: RunSettings) -> list[Stage]:
    """The one stage of a plain loss: the whole schedule, every weight trained."""
    return [
        Stage(
            "main",
            loss=loss,
            loss_params=params,
            epochs=run.epochs,
            lr=run.lr,
            batch_size=run.batch_size,
            weight_decay=run.weight_decay,
            mixup_alpha=run.mixup_alpha,
        )
    ]


# ----------------------------------------------------------------------------------------------
# Two-stage methods: train the whole network, then re-train its classifier on a frozen backbone

# The flat settings of every two-stage method (`-p stage2_epochs=5`, suite `params:`). `None`
# takes the run's value; `stage2_epochs` is the stage's length at the dataset's paper schedule
# and, like every milestone the user did not set, scales with the run's length. A method's
# recipe table (`recipes=`) sets them per (dataset, rho) where its authors published them.
# Stage 1 always runs the run's epochs on its step schedule (warm-up, decay epochs); its batch
# size, weight decay, learning rate and decay factor may differ from the run's.
TWO_STAGE_SETTINGS: dict[str, Any] = {
    "stage1_loss": "ce",
    "stage1_params": {},
    "stage1_mixup_alpha": 1.0,
    "stage1_batch_size": None,
    "stage1_weight_decay": None,
    "stage1_lr": None,
    "stage1_lr_decay_factor": None,
    "stage2_epochs": 10,
    "stage2_lr": None,
    "stage2_lr_factor": 0.5,
    "stage2_batch_size": None,
    "stage2_weight_decay": None,
    "stage2_sampling": "class-balanced",
    "stage2_shift_bn": True,
    "stage2_lws": True,
    "stage2_reinit": False,
}
STAGE2_PREFIX = "stage2_"


def _number(name: str, value, *, integer: bool = False, minimum: float = 0.0, strict=True):
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        what = "an integer" if integer else "a number"
        raise LtbenchError(
            f"{name}={value!r} is invalid; {name} must be {what} "
            f"{'>' if strict else '>='} {minimum:g}"
        )
    return int(value) if integer else float(value)


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise LtbenchError(f"{name} must be true or false, got {value!r}")
    return value


class TwoStagePlan:
    """The `stages` function of a two-stage method whose stage 2 trains with `stage2_loss`."""

    def __init__(self, stage2_loss: str, stage2_trainable: str = "classifier"):
        self.stage2_loss = stage2_loss
        self.stage2_trainable = stage2_trainable

    def __call__(self, p: Mapping[str, Any], run: RunSettings) -> list[Stage]:
        if run.mixup_alpha != 0:
            raise LtbenchError(
                f"mixup_alpha={run.mixup_alpha!r}: a two-stage method sets stage 1's mixup "
                "with the parameter stage1_mixup_alpha; leave mixup_alpha at 0"
            )
        stage1_loss = str(p["stage1_loss"])
        if get_spec(stage1_loss).stages is not None:
            raise LtbenchError(
                f"stage1_loss={stage1_loss!r} is itself a multi-stage method; "
                "stage 1 needs a single-stage loss"
            )
        if not isinstance(p["stage1_params"], dict):
            raise LtbenchError(f"stage1_params must be a mapping, got {p['stage1_params']!r}")
        if p["stage2_sampling"] not in SAMPLERS:
            raise LtbenchError(
                f"stage2_sampling={p['stage2_sampling']!r} is invalid; allowed: "
                f"{', '.join(SAMPLERS)}"
            )
        loss2 = get_spec(self.stage2_loss)

        def run_value(name: str, value):
            return value if p[name] is None else p[name]

        return [
            Stage(
                "stage1",
                loss=stage1_loss,
                loss_params=dict(p["stage1_params"]),
                epochs=run.epochs,
                lr=_number("stage1_lr", run_value("stage1_lr", run.lr)),
                lr_decay_factor=(
                    None
                    if p["stage1_lr_decay_factor"] is None
                    else _number("stage1_lr_decay_factor", p["stage1_lr_decay_factor"])
                ),
                batch_size=_number(
                    "stage1_batch_size",
                    run_value("stage1_batch_size", run.batch_size),
                    integer=True,
                ),
                weight_decay=_number(
                    "stage1_weight_decay",
                    run_value("stage1_weight_decay", run.weight_decay),
                    strict=False,
                ),
                mixup_alpha=_number("stage1_mixup_alpha", p["stage1_mixup_alpha"], strict=False),
            ),
            Stage(
                "stage2",
                loss=self.stage2_loss,
                loss_params={k: p[k] for k in loss2.defaults},
                epochs=_number("stage2_epochs", p["stage2_epochs"], integer=True),
                schedule="cosine",
                lr=_number("stage2_lr", run_value("stage2_lr", run.lr)),
                lr_factor=_number("stage2_lr_factor", p["stage2_lr_factor"]),
                batch_size=_number(
                    "stage2_batch_size",
                    run_value("stage2_batch_size", run.batch_size),
                    integer=True,
                ),
                weight_decay=_number(
                    "stage2_weight_decay",
                    run_value("stage2_weight_decay", run.weight_decay),
                    strict=False,
                ),
                sampler=p["stage2_sampling"],
                trainable=self.stage2_trainable,
                batchnorm="train" if _flag("stage2_shift_bn", p["stage2_shift_bn"]) else "frozen",
                classifier="reinit" if _flag("stage2_reinit", p["stage2_reinit"]) else "keep",
                class_scale=_flag("stage2_lws", p["stage2_lws"]),
            ),
        ]


class Stage2LossFactory:
    """`factory(cls_num_list, **settings)` of a two-stage spec: builds its stage-2 loss."""

    def __init__(self, stage2_loss: str):
        self.stage2_loss = stage2_loss

    def __call__(self, cls_num_list: Sequence[int], **settings):
        from ltbench.sdk.registry import build_loss

        own = get_spec(self.stage2_loss).defaults
        return build_loss(self.stage2_loss, cls_num_list, **{k: settings[k] for k in own})


def two_stage_spec(
    name: str,
    stage2_loss: str,
    *,
    head: str,
    description: str,
    paper: str,
    recipes: Callable[[str, float | None], Mapping[str, Any]] | None = None,
    stage2_trainable: str = "classifier",
    **settings: Any,
) -> LossSpec:
    """The spec of a two-stage method re-training its classifier with `stage2_loss`.

    `settings` change `TWO_STAGE_SETTINGS`; the stage-2 loss's own parameters join them flat
    (found through the registry when the method is used, so the plugin imports no other
    plugin). `head` is the stage-2 loss's head. `recipes(dataset, imb_factor)` gives the
    official values per (dataset, rho) (a `ltbench.sdk.recipes.RecipeTable`); they replace the
    defaults for every setting the user did not set. `stage2_trainable="class-scale"` freezes
    the stage-2 classifier too, so that only the per-class scale learns (LWS).
    """
    if stage2_trainable not in TRAINABLE[1:]:
        raise ValueError(f"two-stage method {name!r}: stage2_trainable={stage2_trainable!r}")
    unknown = sorted(set(settings) - set(TWO_STAGE_SETTINGS))
    if unknown:
        raise ValueError(f"two-stage method {name!r}: unknown settings {unknown}")
    return LossSpec(
        name=name,
        factory=Stage2LossFactory(stage2_loss),
        head=head,
        defaults={**TWO_STAGE_SETTINGS, **settings},
        description=description,
        paper=paper,
        kind="two-stage",
        stages=TwoStagePlan(stage2_loss, stage2_trainable),
        uses=(stage2_loss,),
        milestones={"stage2_epochs": "length"},
        recipe=recipes,
    )
