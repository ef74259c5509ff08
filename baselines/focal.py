"""Focal losses: `focal` (softmax form) and `cb-focal` (class-balanced, sigmoid form).

focal (Lin et al. 2017), linear head, gamma = 1.0:

    L = mean_i  -(1 - p_{i,y_i})^gamma * log p_{i,y_i},      p = softmax(z)

with the gradient flowing through the modulating factor too.

cb-focal (Cui et al. 2019), linear head, beta = 0.9999, gamma = 1.0. Class-balanced weights
`w_j = (1 - beta) / (1 - beta^n_j)` normalised to `sum_j w_j = C`; with one-hot targets t:

    L = (1/B) sum_{i,j} w_{y_i} * exp(-gamma t_ij z_ij - gamma log(1 + exp(-z_ij)))
                        * BCEWithLogits(z_ij, t_ij)

(the modulating factor is `(1 - p_t)^gamma` of the sigmoid written in log space, as in the
paper's public code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ltbench.sdk.loss_utils import (
    LossPlugin,
    check_fraction,
    check_non_negative,
    effective_number_weights,
)
from ltbench.sdk.registry import LossSpec

# --- pure functions ---------------------------------------------------------------------------


def softmax_focal_loss(logits, targets, gamma: float):
    """Mean softmax focal loss; `1 - p_y` is floored at the smallest normal number so that
    `(1 - p_y)^gamma` has a finite gradient when `p_y` rounds to exactly 1."""
    log_p = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(logits.dtype).tiny)
    return (-(one_minus_p**gamma) * log_p).mean()


def sigmoid_cb_focal_loss(logits, targets, sample_weights, gamma: float):
    """Class-balanced sigmoid focal loss, summed over classes, divided by the batch size.

    Per element, with BCE(z, 0) = softplus(z) and BCE(z, 1) = softplus(-z), the modulating
    factor is exp(-gamma softplus(-z)) for a negative and exp(-gamma softplus(z)) for the
    target. The dense pass treats every class as a negative, using
    softplus(-z) = softplus(z) - z inside the factor (where rounding only nudges a factor near
    1); the B target entries are computed directly and put in by scatter (no one-hot matrix).
    """
    idx = targets.unsqueeze(1)
    sp = F.softplus(logits)
    per_elem = torch.exp(-gamma * (sp - logits)) * sp
    z_y = logits.gather(1, idx)
    target_term = torch.exp(-gamma * sp.gather(1, idx)) * F.softplus(-z_y)
    per_sample = per_elem.scatter(1, idx, target_term).sum(dim=1)
    return (sample_weights * per_sample).sum() / logits.shape[0]


# --- modules ----------------------------------------------------------------------------------


class FocalLoss(LossPlugin):
    """Softmax focal loss (linear head)."""

    head = "linear"

    def __init__(self, cls_num_list, gamma: float):
        super().__init__(cls_num_list)
        self.gamma = check_non_negative("gamma", gamma)

    def compute(self, x, targets):
        return softmax_focal_loss(x, targets, self.gamma)

    def extra_repr(self):
        return f"{super().extra_repr()}, gamma={self.gamma}"


class ClassBalancedFocalLoss(LossPlugin):
    """Class-balanced sigmoid focal loss (linear head); weights are a buffer built once."""

    head = "linear"

    def __init__(self, cls_num_list, beta: float, gamma: float):
        super().__init__(cls_num_list)
        self.beta = check_fraction("beta", beta)
        self.gamma = check_non_negative("gamma", gamma)
        w = torch.as_tensor(effective_number_weights(cls_num_list, self.beta))
        self.register_buffer("class_weights", w, persistent=False)

    def compute(self, x, targets):
        w = self.const("class_weights", x)[targets]
        return sigmoid_cb_focal_loss(x, targets, w, self.gamma)

    def extra_repr(self):
        return f"{super().extra_repr()}, beta={self.beta}, gamma={self.gamma}"


# --- registrations ----------------------------------------------------------------------------


def build_focal(cls_num_list, gamma):
    """Factory of `focal`."""
    return FocalLoss(cls_num_list, gamma=gamma)


def build_cb_focal(cls_num_list, beta, gamma):
    """Factory of `cb-focal`."""
    return ClassBalancedFocalLoss(cls_num_list, beta=beta, gamma=gamma)


FOCAL = LossSpec(
    name="focal",
    factory=build_focal,
    head="linear",
    defaults={"gamma": 1.0},
    description="softmax focal loss",
    paper="Lin et al., Focal Loss for Dense Object Detection, ICCV 2017",
)
CB_FOCAL = LossSpec(
    name="cb-focal",
    factory=build_cb_focal,
    head="linear",
    defaults={"beta": 0.9999, "gamma": 1.0},
    description="class-balanced sigmoid focal loss (effective-number weights)",
    paper="Cui et al., Class-Balanced Loss Based on Effective Number of Samples, CVPR 2019",
)
