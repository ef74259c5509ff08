"""Softmax equalization loss `eql` (Tan et al. 2020), linear head, lambda_ = 3e-3, gamma = 0.9.

A non-target class j whose training frequency `f_j = n_j / N` is below `lambda_` is dropped
from the softmax denominator of a sample when a Bernoulli(gamma) draw is 1:

    w_ij = 1 - beta_ij * [f_j < lambda_] * (1 - t_ij),     beta_ij ~ Bernoulli(gamma)
    L = mean_i -log( exp(z_{i,y_i}) / sum_j w_ij exp(z_ij) )

One draw per (sample, class), from torch's global RNG (so `torch.manual_seed` makes it
reproducible). gamma = 1 always drops and gamma = 0 never does; neither draws. The target class
is never dropped, so the denominator is never empty.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.sdk.loss_utils import LossPlugin, check_non_negative, check_probability
from ltbench.sdk.registry import LossSpec

# --- pure functions ---------------------------------------------------------------------------


def rare_class_mask(cls_num_list, lambda_: float) -> np.ndarray:
    """`[n_j / N < lambda_]` per class (bool)."""
    n = np.asarray(cls_num_list, dtype=np.float64)
    return n / n.sum() < lambda_


def equalization_loss(logits, targets, rare, gamma: float):
    """Mean softmax EQL; `rare` is the per-class bool mask `[f_j < lambda_]`.

    Dropped entries become -inf logits; the target entry is put back afterwards, so a rare
    target class stays in its own sample's denominator. Dense masks: on ImageNet-LT and
    iNaturalist almost every class is rare at lambda_ = 3e-3.
    """
    if gamma == 0:
        return F.cross_entropy(logits, targets)
    if gamma >= 1:
        drop = rare.unsqueeze(0)
    else:
        drop = (torch.rand(logits.shape, device=logits.device) < gamma) & rare
    rows = torch.arange(logits.shape[0], device=logits.device)
    z = logits.masked_fill(drop, float("-inf"))
    z = z.index_put((rows, targets), logits[rows, targets])
    return F.cross_entropy(z, targets)


# --- module -----------------------------------------------------------------------------------


class EqualizationLoss(LossPlugin):
    """Softmax EQL; the rare-class mask is a buffer built once."""

    head = "linear"

    def __init__(self, cls_num_list, lambda_: float, gamma: float):
        super().__init__(cls_num_list)
        self.lambda_ = check_non_negative("lambda_", lambda_)
        self.gamma = check_probability("gamma", gamma)
        rare = torch.as_tensor(rare_class_mask(cls_num_list, self.lambda_))
        self.register_buffer("rare", rare, persistent=False)
        self.any_rare = bool(rare.any())

    def compute(self, x, targets):
        if not self.any_rare:
            return F.cross_entropy(x, targets)
        return equalization_loss(x, targets, self.rare.to(x.device), self.gamma)

    def extra_repr(self):
        return f"{super().extra_repr()}, lambda_={self.lambda_}, gamma={self.gamma}"


# --- registration -----------------------------------------------------------------------------


def build_eql(cls_num_list, lambda_, gamma):
    """Factory of `eql`."""
    return EqualizationLoss(cls_num_list, lambda_=lambda_, gamma=gamma)


SPEC = LossSpec(
    name="eql",
    factory=build_eql,
    head="linear",
    defaults={"lambda_": 3e-3, "gamma": 0.9},
    description="softmax equalization loss",
    paper="Tan et al., Equalization Loss for Long-Tailed Object Recognition, CVPR 2020",
)
