"""MiSLAS (Zhong et al., CVPR 2021), `mislas`.

Stage 1 trains the whole network with CE and mixup (alpha 1). Stage 2 continues the stage-1
classifier on a frozen backbone under class-balanced sampling with label-aware smoothing
(`las`), lets the BatchNorm statistics follow the stage-2 data ("shift learning") and learns a
per-class scale of the scores (LWS). The stage-2 loss's parameters (`smooth_head`,
`smooth_tail`, `shape`) are the method's too, with their per-dataset defaults.
"""

from __future__ import annotations

from ltbench.sdk.stages import two_stage_spec

PAPER = "Zhong et al., Improving Calibration for Long-Tailed Recognition, CVPR 2021"

MISLAS = two_stage_spec(
    "mislas",
    "las",
    head="linear",
    description="MiSLAS: mixup stage 1; class-balanced LAS, shifted BN and LWS in stage 2",
    paper=PAPER,
)
