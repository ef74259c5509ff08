"""Fixed-margin cosine losses: CosFace and ArcFace (cosine head).

cosface (Wang et al. 2018; s = 30, m = 0.35):

    L = CE( s * (cos θ_j - m [j = y]) )

arcface (Deng et al. 2019; s = 30, m = 0.5): the target cosine becomes `cos(θ_y + m)`, written
as `cos θ_y cos m - sin θ_y sin m` with `sin θ_y = sqrt(1 - cos² θ_y)`; where
`cos θ_y <= cos(π - m)` (θ_y + m would pass π) it is replaced by `cos θ_y - m sin m`, and

    L = CE( s * scores ).

`1 - cos²` is floored at 1e-12 before the square root so that cosines of exactly ±1 give a
finite gradient (the exact derivative is infinite there); the value changes by at most 1e-6·sin m
and only within 5e-13 of ±1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ltbench.errors import LtbenchError
from ltbench.sdk.loss_utils import LossPlugin, check_positive, margin_cross_entropy
from ltbench.sdk.registry import LossSpec

_SIN2_FLOOR = 1e-12

# --- pure functions ---------------------------------------------------------------------------


def arcface_target_cosine(cos_y: torch.Tensor, m: float) -> torch.Tensor:
    """`cos(θ_y + m)` where θ_y + m <= π, else the linear fallback `cos θ_y - m sin m`."""
    sin_y = torch.sqrt((1.0 - cos_y * cos_y).clamp_min(_SIN2_FLOOR))
    shifted = cos_y * math.cos(m) - sin_y * math.sin(m)
    fallback = cos_y - m * math.sin(m)
    return torch.where(cos_y > math.cos(math.pi - m), shifted, fallback)


def arcface_loss(cosines, targets, s: float, m: float):
    """Mean ArcFace loss; only the B target cosines are transformed (gather / scatter)."""
    idx = targets.unsqueeze(1)
    phi = arcface_target_cosine(cosines.gather(1, idx), m)
    return F.cross_entropy(s * cosines.scatter(1, idx, phi), targets)


# --- modules ----------------------------------------------------------------------------------


class CosFaceLoss(LossPlugin):
    """Additive cosine margin `m` on the target, scale `s`."""

    head = "cosine"

    def __init__(self, cls_num_list, s: float, m: float):
        super().__init__(cls_num_list)
        self.s = self.logit_scale = check_positive("s", s)
        self.m = check_positive("m", m)

    def compute(self, x, targets):
        return margin_cross_entropy(x, targets, col_scale=self.s, target_offset=self.s * self.m)

    def extra_repr(self):
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"


class ArcFaceLoss(LossPlugin):
    """Additive angular margin `m` on the target, scale `s`."""

    head = "cosine"

    def __init__(self, cls_num_list, s: float, m: float):
        super().__init__(cls_num_list)
        self.s = self.logit_scale = check_positive("s", s)
        self.m = check_positive("m", m)
        if self.m >= math.pi:
            raise LtbenchError(f"m={m!r} is invalid; m must be a number in (0, π) radians")

    def compute(self, x, targets):
        return arcface_loss(x, targets, self.s, self.m)

    def extra_repr(self):
        return f"{super().extra_repr()}, s={self.s}, m={self.m}"


# --- registrations ----------------------------------------------------------------------------


def build_cosface(cls_num_list, s, m):
    """Factory of `cosface`."""
    return CosFaceLoss(cls_num_list, s=s, m=m)


def build_arcface(cls_num_list, s, m):
    """Factory of `arcface`."""
    return ArcFaceLoss(cls_num_list, s=s, m=m)


COSFACE = LossSpec(
    name="cosface",
    factory=build_cosface,
    head="cosine",
    defaults={"s": 30.0, "m": 0.35},
    description="large margin cosine loss",
    paper="Wang et al., CosFace: Large Margin Cosine Loss for Deep Face Recognition, CVPR 2018",
)
ARCFACE = LossSpec(
    name="arcface",
    factory=build_arcface,
    head="cosine",
    defaults={"s": 30.0, "m": 0.5},
    description="additive angular margin loss",
    paper="Deng et al., ArcFace: Additive Angular Margin Loss for Deep Face Recognition, CVPR 2019",
)
