"""BBN: Bilateral-Branch Network with cumulative learning (Zhou et al., CVPR 2020), `bbn`.

Two branches share the network up to its last residual block; each branch has its own copy of
that block (the paper: "share all the weights except for the last residual block"). The
conventional branch sees batches of the uniform (instance) sampler, the re-balancing branch
batches of the reversed sampler (class j drawn with probability ∝ 1 / n_j;
`ltbench.data.batches.reversed_class_probabilities`). With the epoch T (0-based) of a run of
E epochs:

    α = 1 - (T / D)^2                                       (cumulative learning, parabolic)
    z = W 2 [α f_c ; (1 - α) f_r] + b                        (one linear classifier over both)
    L = α CE(z, y_c) + (1 - α) CE(z, y_r)

so the network learns the universal features first and turns to the tail classes later. Two
details follow the official code (Megvii-Nanjing/BBN@7992e908, `lib/core/combiner.py`), where it
differs from the paper's T_max (docs/RECIPES.md):

- the divisor D is E, except for the official 90- and 180-epoch schedules, where it is 100 and
  200 (`combiner.py:16-19`): a 180-epoch run (ImageNet-LT, iNaturalist) ends at α = 0.199, not
  at 0.011;
- the mixed feature is doubled (`2 * cat(l * f_a, (1 - l) * f_b)`, `combiner.py:56`), which is
  what makes training agree with the test, where the official network concatenates both
  branches' features unscaled (`lib/backbone/resnet_cifar.py:208-210`): `z = W [f_c ; f_r] + b`
  = `W 2 [0.5 f_c ; 0.5 f_r] + b`, which the network's `forward` (and `backbone` + `classifier`
  for `ltbench eval`) computes.

The classifier keeps PyTorch's default initialisation, as the official `nn.Linear` does.
`alpha_schedule` gives the paper's other decays for ablations (`linear`: 1 - T / D;
`cosine`: cos(π T / (2 D))).

The method brings its own network (`Stage.model`), step (`Stage.step`) and second batch stream
(`Stage.extra_samplers = ("reversed",)`); the engine runs them without naming BBN. The run's
schedule is the dataset's (the paper's Table 2 recipe); BBN's own CIFAR schedule (batch 128,
decays at epochs 120 and 160) is not applied (docs/RECIPES.md).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import LtbenchError
from ltbench.sdk.loss_utils import LossPlugin, check_choice
from ltbench.sdk.registry import LossSpec
from ltbench.sdk.stages import Stage

PAPER = (
    "Zhou et al., BBN: Bilateral-Branch Network with Cumulative Learning for Long-Tailed "
    "Visual Recognition, CVPR 2020"
)
SCHEDULES = ("parabolic", "linear", "cosine")
TEST_ALPHA = 0.5
FEATURE_SCALE = 2.0  # combiner.py:56 `2 * torch.cat(...)`; at test `cat(f_c, f_r)`, the same

# --- pure functions ---------------------------------------------------------------------------


def alpha_divisor(epochs: int) -> int:
    """D of α = 1 - (T / D)^2: the run's epochs, but 100 for 90 and 200 for 180, as the
    official combiner sets `div_epoch` (`100 * (epochs // 100 + 1)` for 90 and 180)."""
    return 100 * (epochs // 100 + 1) if epochs in (90, 180) else epochs


def cumulative_alpha(epoch: int, epochs: int, schedule: str = "parabolic") -> float:
    """α of 0-based `epoch` of `epochs`: 1 at the first epoch, decaying towards 0."""
    t = epoch / alpha_divisor(epochs)
    if schedule == "parabolic":
        return 1.0 - t**2
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return math.cos(0.5 * math.pi * t)
    raise LtbenchError(f"alpha_schedule={schedule!r} is invalid; allowed: {', '.join(SCHEDULES)}")


# --- the loss: CE with the cumulative-learning schedule ---------------------------------------


class BBNLoss(LossPlugin):
    """Softmax cross-entropy; `alpha(epoch, epochs)` is the cumulative-learning weight."""

    head = "linear"

    def __init__(self, cls_num_list, alpha_schedule: str):
        super().__init__(cls_num_list)
        self.alpha_schedule = check_choice("alpha_schedule", alpha_schedule, SCHEDULES)

    def alpha(self, epoch: int, epochs: int) -> float:
        """α of 0-based `epoch` of a stage of `epochs` epochs."""
        return cumulative_alpha(epoch, epochs, self.alpha_schedule)

    def compute(self, x, targets):
        return F.cross_entropy(x, targets)

    def extra_repr(self):
        return f"{super().extra_repr()}, alpha_schedule={self.alpha_schedule}"


# --- the network: a shared trunk, two copies of the last residual block -----------------------


class BranchSwitch(nn.Module):
    """The two copies of the last residual block; `mode` says which one(s) run."""

    def __init__(self, conventional: nn.Module, rebalancing: nn.Module):
        super().__init__()
        self.conventional = conventional
        self.rebalancing = rebalancing
        self.mode = "both"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "conventional":
            return self.conventional(x)
        if self.mode == "rebalancing":
            return self.rebalancing(x)
        # both branches on the same images, stacked along the batch: the backbone's pooling
        # and flattening act per image, so its output splits back into (f_c, f_r)
        return torch.cat([self.conventional(x), self.rebalancing(x)], dim=0)


def _last_stage_name(backbone: nn.Module) -> str:
    names = [n for n, m in backbone.named_children() if re.fullmatch(r"layer\d+", n)]
    stages = [n for n in names if isinstance(getattr(backbone, n), nn.Sequential)]
    if not stages:
        raise LtbenchError(
            "bbn needs a backbone built of residual stages layer1 ... layerK "
            f"(got {type(backbone).__name__})"
        )
    return max(stages, key=lambda n: int(n[5:]))


class BBNFeatures(nn.Module):
    """The backbone with the branch switch in place of its last residual block.

    `forward(x)`: the test-time feature `2 [α f_c ; (1 - α) f_r]` with α = 0.5 (that is,
    `[f_c ; f_r]`), both branches on `x`; `branch(x, which)`: one branch's feature
    ("conventional" or "rebalancing").
    """

    def __init__(self, net: nn.Module, stage_name: str):
        super().__init__()
        self.net = net
        self.stage_name = stage_name

    @property
    def switch(self) -> BranchSwitch:
        return getattr(self.net, self.stage_name)[-1]

    def branch(self, x: torch.Tensor, which: str) -> torch.Tensor:
        self.switch.mode = which
        try:
            return self.net(x)
        finally:
            self.switch.mode = "both"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.switch.mode = "both"
        f_c, f_r = self.net(x).chunk(2, dim=0)
        return FEATURE_SCALE * torch.cat([TEST_ALPHA * f_c, (1.0 - TEST_ALPHA) * f_r], dim=1)


class BBNNet(nn.Module):
    """`backbone` (`BBNFeatures`) and one linear `classifier` over the two branches' features."""

    def __init__(self, first: nn.Module, second: nn.Module, num_classes: int):
        super().__init__()
        net = first.backbone
        name = _last_stage_name(net)
        stage, other = getattr(net, name), getattr(second.backbone, name)
        switch = BranchSwitch(stage[-1], other[-1])  # two independently initialised blocks
        setattr(net, name, nn.Sequential(*list(stage)[:-1], switch))
        self.backbone = BBNFeatures(net, name)
        self.feature_dim = 2 * int(first.feature_dim)
        self.classifier = nn.Linear(self.feature_dim, num_classes)  # PyTorch's default init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def mixed(self, x_c: torch.Tensor, x_r: torch.Tensor, alpha: float) -> torch.Tensor:
        """Training scores `W 2 [α f_c(x_c) ; (1 - α) f_r(x_r)] + b`."""
        f_c = self.backbone.branch(x_c, "conventional")
        f_r = self.backbone.branch(x_r, "rebalancing")
        mixed = FEATURE_SCALE * torch.cat([alpha * f_c, (1.0 - alpha) * f_r], dim=1)
        return self.classifier(mixed)


def bbn_network(build_standard, num_classes: int, head: str) -> BBNNet:
    """The model hook: two of the run's standard networks make one BBN (the second gives the
    re-balancing branch's block; the rest of it is dropped)."""
    if head != "linear":
        raise LtbenchError(f"bbn trains a linear classifier, not a {head!r} head")
    return BBNNet(build_standard(head), build_standard(head), num_classes)


def bbn_step(ctx, images: torch.Tensor, labels: torch.Tensor):
    """The step hook: one batch of each sampler, α-mixed features and losses."""
    (rev_images, rev_labels) = ctx.extra[0]
    alpha = ctx.loss_fn.alpha(ctx.epoch, ctx.epochs)
    scores = ctx.model.mixed(images, rev_images, alpha)
    loss = alpha * ctx.loss_fn(scores, labels) + (1.0 - alpha) * ctx.loss_fn(scores, rev_labels)
    return loss, scores


# --- registration -----------------------------------------------------------------------------


def build_bbn(cls_num_list, alpha_schedule):
    """Factory of `bbn`: the loss its step uses (CE and the α schedule)."""
    return BBNLoss(cls_num_list, alpha_schedule=alpha_schedule)


def bbn_stages(params, run) -> list[Stage]:
    """One stage over the whole schedule with BBN's network, step and reversed sampler."""
    if run.mixup_alpha != 0:
        raise LtbenchError(f"mixup_alpha={run.mixup_alpha!r}: bbn does not take mixup")
    check_choice("alpha_schedule", params["alpha_schedule"], SCHEDULES)
    return [
        Stage(
            "main",
            loss="bbn",
            loss_params=params,
            epochs=run.epochs,
            lr=run.lr,
            batch_size=run.batch_size,
            weight_decay=run.weight_decay,
            extra_samplers=("reversed",),
            model=bbn_network,
            step=bbn_step,
        )
    ]


SPEC = LossSpec(
    name="bbn",
    factory=build_bbn,
    head="linear",
    defaults={"alpha_schedule": "parabolic"},
    description="BBN: shared trunk, uniform and reversed-sampling branches, cumulative learning",
    paper=PAPER,
    kind="method",
    stages=bbn_stages,
)
