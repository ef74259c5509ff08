"""Stages of a run: planning them from the method's spec, and what a later stage builds.

`plan_stages(cfg)` turns a resolved configuration into its list of `ltbench.sdk.stages.Stage`
records: one stage for a plain loss, the method's own list for a multi-stage method (its spec's
`stages` function). The engine runs any number of stages; in a run of several the first is a
plain stage (every weight trained, instance sampling, the step schedule, no hooks): it is an
ordinary run of its loss, kept in a cache shared by every trial that needs the same one, and
each later stage is trained in the run's folder from the network of the stage before.

The stage-1 cache: `<cache>/<loss>-<dataset>-seed<seed>-<hash>/`, where `<hash>` digests the
stage-1 configuration without the settings that leave its numbers alone (`RUNTIME_KEYS`). The
cache is the `cache_dir` given to `train`, else `$LTBENCH_STAGE1_CACHE`, else
`<out_dir>/../_stage1` (for a suite, DIR/trials/_stage1). A stage 1 is finished when its
`result.json` exists; its folder's lock (`ltbench.engine.locks`) makes concurrent trials wait
for the one that trains it, then reuse it; an interrupted stage 1 is resumed from its checkpoint.

A later stage starts from the previous stage's network (`StageModel`): its backbone, frozen when
`trainable="classifier"` (no gradient, not given to the optimizer; BatchNorm statistics follow
the data only with `batchnorm="train"`), and its classifier (`stage_classifier`): kept, converted
to the stage loss's head, or drawn afresh; `class_scale` adds a learnable per-class scale (LWS).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.engine.config import TrainConfig, resolve, runtime_keys
from ltbench.engine.locks import hold
from ltbench.engine.models import CosineClassifier, build_head, check_model
from ltbench.errors import LtbenchError
from ltbench.runfiles import RESULT_FILE, STAGE_CACHE_DIR
from ltbench.sdk.registry import build_loss, get_spec, resolve_params
from ltbench.sdk.stages import RunSettings, Stage, single_stage

CACHE_ENV = "LTBENCH_STAGE1_CACHE"


# ----------------------------------------------------------------------------------------------
# Planning


def run_settings(cfg: TrainConfig) -> RunSettings:
    """What a method's `stages` function may read of a resolved run."""
    from ltbench.data.registry import dataset_recipe

    return RunSettings(
        epochs=cfg.epochs,
        paper_epochs=dataset_recipe(cfg.dataset, cfg.data_root).epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        weight_decay=cfg.weight_decay,
        mixup_alpha=cfg.mixup_alpha,
        dataset=cfg.dataset,
        imb_factor=cfg.imb_factor,
    )


def plan_stages(cfg: TrainConfig) -> list[Stage]:
    """The checked stages of a resolved run (one-line errors name the method's setting).

    Every stage's loss is built once with stand-in class counts, so that a parameter its plugin
    refuses fails here, before the run writes anything, and not after the data is loaded.
    """
    spec = get_spec(cfg.loss)
    run = run_settings(cfg)
    check_model(cfg.model, cfg.width)
    if spec.stages is None:
        stages = single_stage(cfg.loss, cfg.loss_params, run)
        _probe_loss(cfg, stages[0], "")
        return stages
    try:
        stages = list(spec.stages(dict(cfg.loss_params), run))
    except LtbenchError as exc:
        raise LtbenchError(f"loss {cfg.loss!r}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # a setting of the wrong kind
        raise LtbenchError(
            f"loss {cfg.loss!r}: settings {dict(cfg.loss_params)} refused "
            f"({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from None
    if not stages:
        raise LtbenchError(f"loss {cfg.loss!r} declares no stage; a method runs one or more")
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise LtbenchError(f"loss {cfg.loss!r}: its stages need distinct names, got {names}")
    for index, stage in enumerate(stages):
        # a one-stage method with its own step may train with its own plugin (its factory)
        own = len(stages) == 1 and stage.loss == cfg.loss
        where = f"loss {cfg.loss!r}" + ("" if own else f": stage {index + 1}")
        prefix = "" if own else f"{where}: "  # the plugin's own errors name the loss already
        if get_spec(stage.loss).stages is not None and not own:
            raise LtbenchError(f"{where}: {stage.loss!r} is itself multi-stage")
        if stage.epochs < 1:
            raise LtbenchError(f"{where}: epochs must be >= 1, got {stage.epochs}")
        if index == 0 and len(stages) > 1 and not is_plain(stage):
            raise LtbenchError(f"{where}: a first stage that is cached must be a plain stage")
        try:
            resolve_params(stage.loss, stage.loss_params)
        except LtbenchError as exc:
            raise LtbenchError(f"{prefix}{exc}") from None
        _probe_loss(cfg, stage, prefix)
        if stage.trainable == "class-scale" and index == 0:
            raise LtbenchError(f"{where}: trainable='class-scale' needs a previous stage")
    if len(stages) > 1:
        try:
            resolve(stage_config(cfg, stages[0]))
        except LtbenchError as exc:
            raise LtbenchError(f"loss {cfg.loss!r}: stage 1: {exc}") from None
    return stages


def _probe_loss(cfg: TrainConfig, stage: Stage, where: str) -> None:
    """Build `stage`'s loss for a long-tailed stand-in of the dataset's classes."""
    from ltbench.data.longtail import long_tailed_counts
    from ltbench.data.registry import get_dataset_spec

    classes = get_dataset_spec(cfg.dataset).num_classes or 10  # 0: known from the data only
    counts = [max(n, 1) for n in long_tailed_counts(classes, 500, cfg.imb_factor, cfg.profile)]
    try:
        build_loss(stage.loss, counts, **stage.loss_params)
    except LtbenchError as exc:
        raise LtbenchError(f"{where}{exc}") from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # a plugin's own check of a value
        raise LtbenchError(
            f"{where}loss {stage.loss!r}: parameters {dict(stage.loss_params)} refused "
            f"({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from None


def is_plain(stage: Stage) -> bool:
    """A stage an ordinary single-stage run can stand for."""
    return (
        stage.schedule == "step"
        and stage.sampler == "instance"
        and stage.trainable == "all"
        and stage.batchnorm == "train"
        and stage.lr_factor == 1.0
        and not stage.class_scale
        and stage.model is None
        and stage.step is None
        and not stage.extra_samplers
        and not stage.meta_per_class
    )


def stage_config(cfg: TrainConfig, stage: Stage) -> TrainConfig:
    """The configuration of an ordinary run of a plain `stage` of `cfg` (its cache entry)."""
    return dataclasses.replace(
        cfg,
        loss=stage.loss,
        loss_params=dict(stage.loss_params),
        mixup_alpha=stage.mixup_alpha,
        epochs=stage.epochs,
        lr=stage.lr,
        batch_size=stage.batch_size,
        weight_decay=stage.weight_decay,
        lr_decay_factor=(
            cfg.lr_decay_factor if stage.lr_decay_factor is None else stage.lr_decay_factor
        ),
        stage2={},
    )


# ----------------------------------------------------------------------------------------------
# The stage-1 cache


def stage1_key(cfg1: TrainConfig) -> str:
    """Digest of a resolved stage-1 config, without the settings that leave its numbers alone."""
    skip = runtime_keys(cfg1.dataset)
    # a setting added later leaves the keys of the caches written before it alone while unset
    kept = {
        k: v for k, v in cfg1.to_dict().items() if k not in skip and not (k == "draw" and v is None)
    }
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def stage1_dir(cfg1: TrainConfig, out_dir: Path, cache_dir: str | Path | None = None) -> Path:
    """The cache folder of a stage-1 run (see the module docstring for where the cache is)."""
    cache = (
        cache_dir or os.environ.get(CACHE_ENV) or Path(out_dir).resolve().parent / STAGE_CACHE_DIR
    )
    return Path(cache) / f"{cfg1.loss}-{cfg1.dataset}-seed{cfg1.seed}-{stage1_key(cfg1)[:16]}"


def ensure_stage1(run_dir: Path, train_it) -> dict:
    """The stored result of the stage-1 run in `run_dir`, after `train_it()` trained (or
    finished) it when it was not done; concurrent callers wait for the one training it. In a
    run over several processes, process 0 waits and decides, and all of them train it."""
    from ltbench.engine import distributed

    with distributed.hold_all(run_dir, hold, wait=True):
        done = run_dir / RESULT_FILE
        if not distributed.agree(done.exists()):
            train_it()
        distributed.barrier()  # process 0 wrote result.json
        return json.loads(done.read_text())


# ----------------------------------------------------------------------------------------------
# The network of a later stage


class StageModel(nn.Module):
    """`scores = classifier(backbone(x)) * class_scale`, the backbone frozen or not.

    `frozen_classifier` (LWS, `trainable="class-scale"`): the classifier keeps its weights too
    and only the class scale learns.

    With a frozen backbone it runs without autograd; its BatchNorm layers follow the model's
    train/eval mode when `bn_follows_data` (their running statistics move to this stage's data),
    else the backbone stays in eval mode throughout. `class_scale` (LWS) is None when not
    learnt. The state-dict keys `backbone.*` and `classifier.*` are those of an `LtModel`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        num_classes: int,
        *,
        frozen: bool,
        bn_follows_data: bool,
        class_scale: bool,
        frozen_classifier: bool = False,
    ):
        super().__init__()
        self.frozen = frozen
        self.frozen_classifier = frozen_classifier
        self.backbone = backbone.requires_grad_(not frozen)
        self.classifier = classifier.requires_grad_(not frozen_classifier)
        self.bn_follows_data = bn_follows_data
        scale = nn.Parameter(torch.ones(num_classes)) if class_scale else None
        self.register_parameter("class_scale", scale)

    def train(self, mode: bool = True) -> StageModel:
        super().train(mode)
        if not self.bn_follows_data:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                features = self.backbone(x)
        else:
            features = self.backbone(x)
        scores = self.classifier(features)
        return scores if self.class_scale is None else scores * self.class_scale

    def param_groups(self, lr_factor: float) -> list[dict]:
        """Optimizer groups: the trained weights at lr * lr_factor (the classifier; the backbone
        too when it is not frozen, at lr), the class scale at lr."""
        groups = []
        if not self.frozen:
            groups.append({"params": list(self.backbone.parameters()), "lr_factor": 1.0})
        if not self.frozen_classifier:
            groups.append({"params": list(self.classifier.parameters()), "lr_factor": lr_factor})
        if self.class_scale is not None:
            groups.append({"params": [self.class_scale], "lr_factor": 1.0})
        return groups


def stage_classifier(previous: nn.Module, head: str, *, reinit: bool) -> nn.Module:
    """The classifier a later stage starts from, for a loss that wants `head`.

    `reinit`: a freshly initialised head (draws from torch's global RNG), a linear one with
    PyTorch's default initialisation as cRT's official classifier (`build_head`). Otherwise a
    copy of the previous classifier when the head kinds agree; across kinds, each class keeps
    the direction of its previous weight: a cosine head takes the L2-normalised rows, a linear
    head the normalised rows and a zero bias (a previous linear bias is dropped either way).
    """
    num_classes, in_features = previous.weight.shape
    if reinit:
        return build_head(head, in_features, num_classes, torch_default=True)
    if isinstance(previous, CosineClassifier) == (head == "cosine"):
        return copy.deepcopy(previous)
    fresh = build_head(head, in_features, num_classes)
    with torch.no_grad():
        fresh.weight.copy_(F.normalize(previous.weight.detach().float(), dim=1))
        if getattr(fresh, "bias", None) is not None:
            fresh.bias.zero_()
    return fresh


def check_run(cfg: TrainConfig, *, files: bool = True) -> tuple[TrainConfig, list]:
    """A run's resolved configuration and its checked stages, and (with `files`) its data files
    found: everything a run checks before it writes anything."""
    from ltbench.data.registry import check_files

    cfg = resolve(cfg)
    stages = plan_stages(cfg)
    if files:
        check_files(
            cfg.dataset,
            root=cfg.data_root,
            imb_factor=cfg.imb_factor,
            n_max=cfg.n_max,
            download=cfg.download,
            val_fraction=cfg.val_fraction,
        )
    return cfg, stages
