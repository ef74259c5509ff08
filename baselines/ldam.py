"""LDAM and LDAM-DRW (Cao et al. 2019), cosine head.

Per-class margins, largest for the rarest class:

    m_j = max_m * n_j^(-1/4) / max_k n_k^(-1/4)

    L = CE( s * (cos θ_j - m_y [j = y]) )          (max_m = 0.5, s = 30)

`ldam-drw` is `ldam` with deferred re-weighting: from `drw_epoch` (160) on, the cross-entropy is
weighted per class by the effective-number weights `(1 - beta) / (1 - beta^n_j)` (beta = 0.9999)
normalised to sum to C, reduced as `sum_i w_{y_i} l_i / sum_i w_{y_i}`.
"""

from __future__ import annotations

import numpy as np
import torch

from ltbench.sdk.loss_utils import (
    DeferredReweighting,
    LossPlugin,
    check_epoch,
    check_fraction,
    check_positive,
    effective_number_weights,
    margin_cross_entropy,
    sample_coefficients,
)
from ltbench.sdk.registry import LossSpec

# --- pure functions ---------------------------------------------------------------------------


def ldam_margins(cls_num_list, max_m: float) -> np.ndarray:
    """`m_j ∝ n_j^(-1/4)`, scaled so that the largest margin is `max_m` (float64)."""
    n = np.asarray(cls_num_list, dtype=np.float64)
    m = n**-0.25
    return m * (max_m / m.max())


# --- module -----------------------------------------------------------------------------------


class LDAMLoss(LossPlugin):
    """LDAM on cosines; optionally holds a `DeferredReweighting` component (LDAM-DRW)."""

    head = "cosine"

    def __init__(self, cls_num_list, max_m: float, s: float, reweight=None):
        super().__init__(cls_num_list)
        self.max_m = check_positive("max_m", max_m)
        self.s = self.logit_scale = check_positive("s", s)
        margins = torch.as_tensor(ldam_margins(cls_num_list, self.max_m))
        self.register_buffer("margins", margins, persistent=False)
        # s * m_j, the amount taken off the scaled target logit
        self.register_buffer("scaled_margins", self.s * margins, persistent=False)
        self.reweight = reweight

    def compute(self, x, targets):
        weights = self.reweight.weights(x) if self.reweight is not None else None
        return margin_cross_entropy(
            x,
            targets,
            col_scale=self.s,
            target_offset=self.const("scaled_margins", x)[targets],
            coef=sample_coefficients(targets, weights, x),
        )

    def extra_repr(self):
        return f"{super().extra_repr()}, max_m={self.max_m}, s={self.s}"


# --- registrations ----------------------------------------------------------------------------


def build_ldam(cls_num_list, max_m, s):
    """Factory of `ldam`."""
    return LDAMLoss(cls_num_list, max_m=max_m, s=s)


def build_ldam_drw(cls_num_list, max_m, s, drw_epoch, beta):
    """Factory of `ldam-drw`: `ldam` plus the DRW weight schedule."""
    beta = check_fraction("beta", beta)
    reweight = DeferredReweighting(
        effective_number_weights(cls_num_list, beta), check_epoch("drw_epoch", drw_epoch)
    )
    return LDAMLoss(cls_num_list, max_m=max_m, s=s, reweight=reweight)


LDAM = LossSpec(
    name="ldam",
    factory=build_ldam,
    head="cosine",
    defaults={"max_m": 0.5, "s": 30.0},
    description="label-distribution-aware margin loss",
    paper="Cao et al., Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss, "
    "NeurIPS 2019",
)
LDAM_DRW = LossSpec(
    name="ldam-drw",
    factory=build_ldam_drw,
    head="cosine",
    defaults={"max_m": 0.5, "s": 30.0, "drw_epoch": 160, "beta": 0.9999},
    milestones={"drw_epoch": "lr-decay"},  # re-weight from the first lr decay on
    description="LDAM with deferred re-weighting (effective-number weights)",
    paper=LDAM.paper,
)
