"""Meta-learned sample weights on class-balanced losses (Jamal et al., CVPR 2020):
`meta-ce`, `meta-focal`, `meta-ldam` (the paper's rows "Meta-learning" with CE, focal, LDAM).

The loss of a training batch weights each image by its class-balanced weight plus a per-image
correction ε_i learnt by a meta step (the paper's Algorithm 1, as in `abdullahjamal/Longtail_DA`):

    w_j   = (1 - β) / (1 - β^{n_j}), normalised to sum to C              (β = 0.9999)
    L(θ, ε) = Σ_i (w_{y_i} + ε_i) ℓ_i(θ)                                 (ε = 0)
    θ'(ε) = θ - η ∇_θ L(θ, ε)                                           (one-step lookahead,
                                                                          η the current lr)
    g_i   = ∂/∂ε_i [ mean over a meta batch of ℓ(θ'(ε)) ]  at ε = 0
          = -η ∇_θ ℓ_meta(θ') · ∇_θ ℓ_i(θ)
    v_i   = w_{y_i} - eps_step g_i                                       (eps_step = 0.01)
    loss  = mean_i v_i ℓ_i(θ)                                            (v_i held constant)

ℓ is the base loss per image: CE, softmax focal (γ) or LDAM (per-class margins
m_j ∝ n_j^(-1/4), largest max_m, scale s, on a cosine head). The meta batch (the run's batch
size) is drawn from a small balanced **meta set**: `meta_per_class` images per class (10, the
official CIFAR value), never trained on and never the test set. As the official code draws it
where the dataset has images to spare (CIFAR): from the training images the long-tailed draw
left out (`ltbench.data.longtail.draw_outside`; the head class, which the draw uses up, gives
its 10 from the draw, as the official head trains on 4990); else out of the dataset's own
validation list (ImageNet-LT), else held out of the training split
(`ltbench.engine.step.hold_out_meta`). result.json records it under `meta_set`.

On CIFAR the run settings are the official script's (`OFFICIAL_CIFAR_RUN`: batch 100, weight
decay 5e-4, Nesterov momentum, no warm-up), as the method's recipe.

Before `meta_start` (160 of 200 epochs in the official CIFAR code; it follows the run's first
lr decay like DRW) the loss is the plain mean base loss; the meta step runs from then on. The
lookahead runs with `torch.func.functional_call` on copies of the BatchNorm buffers, so it
leaves the network's statistics alone; its inner loss is a sum over the batch, as in the
official code.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ltbench.errors import LtbenchError
from ltbench.sdk.loss_utils import (
    LossPlugin,
    check_epoch,
    check_fraction,
    check_non_negative,
    check_positive,
    effective_number_weights,
)
from ltbench.sdk.registry import LossSpec
from ltbench.sdk.stages import Stage

PAPER = (
    "Jamal et al., Rethinking Class-Balanced Methods for Long-Tailed Visual Recognition from a "
    "Domain Adaptation Perspective, CVPR 2020"
)
BASES = ("ce", "focal", "ldam")
META_DEFAULTS = {"beta": 0.9999, "meta_start": 160, "eps_step": 0.01, "meta_per_class": 10}
# The run settings of the official CIFAR script where they differ from the CIFAR recipe
# (abdullahjamal/Longtail_DA@0193518 C-LT/main.py:25 batch 100, :38 Nesterov, :39 weight decay
# 5e-4, :445-451 no warm-up; lr 0.1 and the x0.01 decays are the recipe's): the methods' recipe
# there, since that script produced the quoted numbers (docs/RECIPES.md).
OFFICIAL_CIFAR_RUN = {"batch_size": 100, "weight_decay": 5e-4, "nesterov": True, "warmup_epochs": 0}

# --- pure functions: the base losses per image ------------------------------------------------


def ce_per_sample(logits, targets):
    """`-log softmax(z)_y` per image."""
    return F.cross_entropy(logits, targets, reduction="none")


def focal_per_sample(logits, targets, gamma: float):
    """`-(1 - p_y)^γ log p_y` per image (1 - p_y floored at the smallest normal number)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(logits.dtype).tiny)
    return -(one_minus_p**gamma) * log_p


def ldam_per_sample(cosines, targets, margins, s: float):
    """`CE(s (cos θ - m_y [j = y]))` per image."""
    offset = torch.zeros_like(cosines).scatter(1, targets.unsqueeze(1), margins[targets, None])
    return F.cross_entropy(s * (cosines - offset), targets, reduction="none")


def ldam_margins(cls_num_list, max_m: float) -> np.ndarray:
    """`m_j ∝ n_j^(-1/4)`, the largest `max_m` (float64)."""
    m = np.asarray(cls_num_list, dtype=np.float64) ** -0.25
    return m * (max_m / m.max())


def meta_weights(model, plugin, images, labels, meta_images, meta_labels, lr: float):
    """The weights v_i of one batch (see the module docstring): the class-balanced weight plus
    the one-step-lookahead correction, detached."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # the lookahead moves copies
    scores = functional_call(model, {**params, **buffers}, (images,))
    losses = plugin.per_sample(scores, labels)
    base = plugin.const("class_weights", losses)[labels]
    eps = torch.zeros_like(base, requires_grad=True)
    inner = (losses * (base + eps)).sum()
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    ahead = {n: p - lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
    meta_scores = functional_call(model, {**ahead, **buffers}, (meta_images,))
    meta_loss = plugin.per_sample(meta_scores, meta_labels).mean()
    (grad_eps,) = torch.autograd.grad(meta_loss, eps)
    return (base - plugin.eps_step * grad_eps).detach()


# --- module -----------------------------------------------------------------------------------


class MetaWeightedLoss(LossPlugin):
    """The base loss per image, its class-balanced weights and the meta step's settings.

    Called as a plain loss it is the unweighted mean base loss (the phase before
    `meta_start`); `meta_step` weights it.
    """

    def __init__(self, cls_num_list, base, beta, meta_start, eps_step, meta_per_class, **base_p):
        super().__init__(cls_num_list)
        self.base = base
        self.beta = check_fraction("beta", beta)
        self.meta_start = check_epoch("meta_start", meta_start)
        self.eps_step = check_non_negative("eps_step", eps_step)
        if isinstance(meta_per_class, bool) or not isinstance(meta_per_class, int):
            raise LtbenchError(f"meta_per_class must be an integer >= 1, got {meta_per_class!r}")
        if meta_per_class < 1:
            raise LtbenchError(f"meta_per_class must be an integer >= 1, got {meta_per_class!r}")
        self.meta_per_class = meta_per_class
        weights = torch.as_tensor(effective_number_weights(cls_num_list, self.beta))
        self.register_buffer("class_weights", weights, persistent=False)
        if base == "focal":
            self.gamma = check_non_negative("gamma", base_p["gamma"])
        elif base == "ldam":
            self.head = "cosine"
            self.max_m = check_positive("max_m", base_p["max_m"])
            self.s = self.logit_scale = check_positive("s", base_p["s"])
            margins = torch.as_tensor(ldam_margins(cls_num_list, self.max_m))
            self.register_buffer("margins", margins, persistent=False)

    def per_sample(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The base loss of each image (float32 or float64, autocast off)."""
        x, t = self._check_inputs(scores, targets)
        with torch.autocast(device_type=x.device.type, enabled=False):
            if self.base == "focal":
                return focal_per_sample(x, t, self.gamma)
            if self.base == "ldam":
                return ldam_per_sample(x, t, self.const("margins", x), self.s)
            return ce_per_sample(x, t)

    def compute(self, x, targets):
        return self.per_sample(x, targets).mean()

    def extra_repr(self):
        return f"{super().extra_repr()}, base={self.base}, meta_start={self.meta_start}"


def meta_step(ctx, images: torch.Tensor, labels: torch.Tensor):
    """The step hook: the plain base loss before `meta_start`, the meta-weighted one after."""
    plugin = ctx.loss_fn
    if ctx.epoch < plugin.meta_start:
        scores = ctx.model(images)
        return plugin(scores, labels), scores
    meta_images, meta_labels = ctx.meta()
    weights = meta_weights(ctx.model, plugin, images, labels, meta_images, meta_labels, ctx.lr)
    scores = ctx.model(images)
    return (plugin.per_sample(scores, labels) * weights).mean(), scores


# --- registrations ----------------------------------------------------------------------------


class MetaFactory:
    """`factory(cls_num_list, **params)` of one meta-* method."""

    def __init__(self, base: str):
        self.base = base

    def __call__(self, cls_num_list, **params):
        return MetaWeightedLoss(cls_num_list, self.base, **params)


class MetaStages:
    """`stages(params, run)` of one meta-* method: one stage with the meta step and meta set."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, params, run) -> list[Stage]:
        if run.mixup_alpha != 0:
            raise LtbenchError(f"mixup_alpha={run.mixup_alpha!r}: {self.name} does not take mixup")
        per_class = params["meta_per_class"]
        if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
            raise LtbenchError(f"meta_per_class must be an integer >= 1, got {per_class!r}")
        return [
            Stage(
                "main",
                loss=self.name,
                loss_params=params,
                epochs=run.epochs,
                lr=run.lr,
                batch_size=run.batch_size,
                weight_decay=run.weight_decay,
                meta_per_class=per_class,
                step=meta_step,
            )
        ]


def _spec(name: str, base: str, head: str, base_defaults: dict, what: str) -> LossSpec:
    return LossSpec(
        name=name,
        factory=MetaFactory(base),
        head=head,
        defaults={**base_defaults, **META_DEFAULTS},
        milestones={"meta_start": "lr-decay"},  # the meta phase starts at the first lr decay
        description=f"class-balanced {what} with meta-learned per-image weights (meta set)",
        paper=PAPER,
        kind="method",
        stages=MetaStages(name),
        schedule={dataset: OFFICIAL_CIFAR_RUN for dataset in ("cifar10-lt", "cifar100-lt")},
    )


META_CE = _spec("meta-ce", "ce", "linear", {}, "CE")
META_FOCAL = _spec("meta-focal", "focal", "linear", {"gamma": 1.0}, "focal loss")
META_LDAM = _spec("meta-ldam", "ldam", "cosine", {"max_m": 0.5, "s": 30.0}, "LDAM")
