"""Plain softmax cross-entropy (`ce`, linear head): `mean_i -log softmax(z_i)[y_i]`.

The reference every other loss is compared with, in accuracy and in speed.
"""

from __future__ import annotations

import torch.nn.functional as F

from ltbench.sdk.loss_utils import LossPlugin
from ltbench.sdk.registry import LossSpec


class CrossEntropyLoss(LossPlugin):
    """Softmax cross-entropy on logits, mean over the batch."""

    head = "linear"

    def compute(self, x, targets):
        return F.cross_entropy(x, targets)


def build_ce(cls_num_list):
    """`ce` takes no parameters; the class counts only fix the number of classes."""
    return CrossEntropyLoss(cls_num_list)


SPEC = LossSpec(
    name="ce",
    factory=build_ce,
    head="linear",
    defaults={},
    description="softmax cross-entropy",
    paper="",
)
