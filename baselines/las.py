"""Label-aware smoothing `las` (MiSLAS, Zhong et al. 2021), linear head.

Per-class smoothing factor, from smooth_tail (rarest class) to smooth_head (most frequent):

    ramp_j = (n_j - n_min) / (n_max - n_min)
    concave: eps_j = smooth_tail + (smooth_head - smooth_tail) * sin(ramp_j * π / 2)
    linear:  eps_j = smooth_tail + (smooth_head - smooth_tail) * ramp_j

    L = mean_i (1 - eps_{y_i}) * (-log p_{i,y_i}) + eps_{y_i} * mean_j(-log p_ij)

Defaults smooth_head = 0.3, smooth_tail = 0.0, shape = "concave" (MiSLAS's CIFAR-100 setting is
0.4 / 0.1). With equal class counts the ramp is 0/0; every class is then as frequent as the most
frequent one, so all get smooth_head.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.sdk.loss_utils import LossPlugin, check_choice, check_fraction
from ltbench.sdk.registry import LossSpec

SHAPES = ("concave", "linear")

# --- pure functions ---------------------------------------------------------------------------


def smoothing_factors(cls_num_list, smooth_head: float, smooth_tail: float, shape: str):
    """`eps_j` per class (float64)."""
    n = np.asarray(cls_num_list, dtype=np.float64)
    span = n.max() - n.min()
    if span == 0:
        return np.full(n.shape, smooth_head)
    ramp = (n - n.min()) / span
    if shape == "concave":
        ramp = np.sin(ramp * np.pi / 2)
    return smooth_tail + (smooth_head - smooth_tail) * ramp


def label_aware_smoothing_loss(logits, targets, eps_y):
    """Mean of `(1 - eps_y) * NLL + eps_y * mean_j(-log p_j)`."""
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
    uniform = -log_p.mean(dim=1)
    return ((1 - eps_y) * nll + eps_y * uniform).mean()


# --- module -----------------------------------------------------------------------------------


class LabelAwareSmoothingLoss(LossPlugin):
    """Cross-entropy with a per-class label-smoothing factor (a buffer built once)."""

    head = "linear"

    def __init__(self, cls_num_list, smooth_head: float, smooth_tail: float, shape: str):
        super().__init__(cls_num_list)
        self.smooth_head = check_fraction("smooth_head", smooth_head)
        self.smooth_tail = check_fraction("smooth_tail", smooth_tail)
        self.shape = check_choice("shape", shape, SHAPES)
        eps = smoothing_factors(cls_num_list, self.smooth_head, self.smooth_tail, self.shape)
        self.register_buffer("smoothing", torch.as_tensor(eps), persistent=False)

    def compute(self, x, targets):
        return label_aware_smoothing_loss(x, targets, self.const("smoothing", x)[targets])

    def extra_repr(self):
        return (
            f"{super().extra_repr()}, smooth_head={self.smooth_head}, "
            f"smooth_tail={self.smooth_tail}, shape={self.shape!r}"
        )


# --- registration -----------------------------------------------------------------------------


def build_las(cls_num_list, smooth_head, smooth_tail, shape):
    """Factory of `las`."""
    return LabelAwareSmoothingLoss(
        cls_num_list, smooth_head=smooth_head, smooth_tail=smooth_tail, shape=shape
    )


SPEC = LossSpec(
    name="las",
    factory=build_las,
    head="linear",
    defaults={"smooth_head": 0.3, "smooth_tail": 0.0, "shape": "concave"},
    dataset_defaults={"cifar100-lt": {"smooth_head": 0.4, "smooth_tail": 0.1}},  # MiSLAS's
    description="label-aware smoothing (MiSLAS)",
    paper="Zhong et al., Improving Calibration for Long-Tailed Recognition, CVPR 2021",
)
