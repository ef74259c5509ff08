"""MiSLAS (Zhong et al., CVPR 2021), `mislas`.

Stage 1 trains the whole network with CE and mixup. Stage 2 continues the stage-1 classifier on
a frozen backbone under class-balanced sampling with label-aware smoothing (`las`), lets the
BatchNorm statistics follow the stage-2 data ("shift learning") where the official config does,
and learns a per-class scale of the scores (LWS). The stage-2 loss's parameters (`smooth_head`,
`smooth_tail`, `shape`) are the method's too.

The official settings per dataset and rho (stage-1 batch size, weight decay and mixup alpha,
stage-2 lr factor, shift_bn, smoothing, ...) are the `mislas` rows of `recipes.yaml`, each
citing its config file in dvlab-research/MiSLAS; docs/RECIPES.md lists what is not followed.
"""

from __future__ import annotations

from pathlib import Path

from ltbench.sdk.recipes import load_recipes
from ltbench.sdk.stages import two_stage_spec

PAPER = "Zhong et al., Improving Calibration for Long-Tailed Recognition, CVPR 2021"
RECIPES = load_recipes(Path(__file__).with_name("recipes.yaml"), "mislas")

MISLAS = two_stage_spec(
    "mislas",
    "las",
    head="linear",
    description="MiSLAS: mixup stage 1; class-balanced LAS, shifted BN and LWS in stage 2",
    paper=PAPER,
    recipes=RECIPES,
)
