"""The one builder of a stage's network: used by the training loop, the pack, post-hoc
evaluation and the benchmarks, so a new `Stage` field that shapes the network is read here only.

The first stage builds the standard network of the run (`ltbench.engine.models.build_model`)
with the head its loss asks for, or the method's own (`Stage.model`). A later stage starts from
the earlier stage's network (`StageModel`, see `ltbench.engine.stages`): its backbone, frozen or
not, and its classifier kept, converted or drawn afresh (`Stage.classifier`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ltbench.engine.config import TrainConfig
from ltbench.engine.models import build_model
from ltbench.engine.stages import StageModel, stage_classifier
from ltbench.sdk.stages import Stage


def build_network(
    cfg: TrainConfig,
    stage: Stage,
    num_classes: int,
    head: str,
    *,
    earlier: nn.Module | None = None,
) -> nn.Module:
    """The network `stage` of the resolved run `cfg` trains, on the CPU, for a loss that wants
    `head`. `earlier`: the network of the stage before (None for a first stage); its classifier
    is replaced after torch is seeded with the run's seed (a fresh head draws from it)."""
    if earlier is None:
        if stage.model is not None:
            return stage.model(_standard(cfg, num_classes), num_classes, head)
        return build_model(cfg.model, num_classes, head=head, width=cfg.width)
    torch.manual_seed(cfg.seed)
    classifier = stage_classifier(earlier.classifier, head, reinit=stage.classifier == "reinit")
    return StageModel(
        earlier.backbone,
        classifier,
        num_classes,
        frozen=stage.trainable in ("classifier", "class-scale"),
        bn_follows_data=stage.batchnorm == "train",
        class_scale=stage.class_scale,
        frozen_classifier=stage.trainable == "class-scale",
    )


def build_stages_network(
    cfg: TrainConfig,
    stages: list[Stage],
    num_classes: int,
    heads: list[str],
    earlier_weights: dict[str, Any] | None = None,
) -> nn.Module:
    """The network of the last of `stages` (`heads`: each stage's loss head), each stage built
    on the one before; `earlier_weights` (the state of the stage before the last) are loaded
    into the stage before the last. Without weights it is the last stage's architecture,
    ready for a checkpoint's state (post-hoc evaluation)."""
    net = None
    for k, stage in enumerate(stages):
        net = build_network(cfg, stage, num_classes, heads[k], earlier=net)
        if k == len(stages) - 2 and earlier_weights is not None:
            net.load_state_dict(earlier_weights)
    return net


def _standard(cfg: TrainConfig, num_classes: int):
    def standard(head: str) -> nn.Module:
        return build_model(cfg.model, num_classes, head=head, width=cfg.width)

    return standard
