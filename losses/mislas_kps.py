"""MiSLAS with the KPS loss in stage 2, `mislas-kps` (paper Table 7, "MiSLAS w. KPS").

`mislas` with KPS as the stage-2 loss. KPS needs a cosine head: the engine converts the stage-1
linear classifier, keeping each class's weight direction (L2-normalised rows, bias dropped), so
stage 2 starts from what stage 1 learnt. Its settings per dataset and rho follow `mislas`'s
recipe (found through the registry: this plugin imports no other), less the label-aware
smoothing, which KPS does not have.
"""

from __future__ import annotations

from ltbench.sdk.recipes import RecipeOf
from ltbench.sdk.stages import two_stage_spec

MISLAS_KPS = two_stage_spec(
    "mislas-kps",
    "kps",
    head="cosine",
    description="MiSLAS with the KPS loss (cosine head from stage 1's weights) in stage 2",
    paper="Zhong et al., CVPR 2021; Li, Cheung, Hu, Key Point Sensitive Loss for Long-Tailed "
    "Visual Recognition, TPAMI 2023 (Table 7)",
    recipes=RecipeOf("mislas", drop=("smooth_head", "smooth_tail")),
)
