"""Logit-adjusted loss `la` (Menon et al. 2021), linear head, tau = 1.0:

    L = CE( z_j + tau * log(n_j / N) ),      N = sum_k n_k

With equal class counts the adjustment is the same constant for every class and `la` equals `ce`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.sdk.loss_utils import LossPlugin, check_positive
from ltbench.sdk.registry import LossSpec

# --- pure functions ---------------------------------------------------------------------------


def logit_adjustments(cls_num_list, tau: float) -> np.ndarray:
    """`tau * log(n_j / N)` per class (float64)."""
    n = np.asarray(cls_num_list, dtype=np.float64)
    return tau * np.log(n / n.sum())


# --- module -----------------------------------------------------------------------------------


class LogitAdjustedLoss(LossPlugin):
    """Cross-entropy on logits shifted by the log class prior."""

    head = "linear"

    def __init__(self, cls_num_list, tau: float):
        super().__init__(cls_num_list)
        self.tau = check_positive("tau", tau)
        adjust = torch.as_tensor(logit_adjustments(cls_num_list, self.tau))
        self.register_buffer("adjustments", adjust, persistent=False)

    def train_logits(self, scores):
        """`z_j + tau log(n_j / N)`: the logits the cross-entropy sees in training."""
        return scores + self.const("adjustments", scores)

    def compute(self, x, targets):
        return F.cross_entropy(x + self.const("adjustments", x), targets)

    def extra_repr(self):
        return f"{super().extra_repr()}, tau={self.tau}"


# --- registration -----------------------------------------------------------------------------


def build_la(cls_num_list, tau):
    """Factory of `la`."""
    return LogitAdjustedLoss(cls_num_list, tau=tau)


SPEC = LossSpec(
    name="la",
    factory=build_la,
    head="linear",
    defaults={"tau": 1.0},
    description="logit-adjusted cross-entropy",
    paper="Menon et al., Long-Tail Learning via Logit Adjustment, ICLR 2021",
)
