"""Decoupling (Kang et al., ICLR 2020): classifier re-training, `crt`.

Stage 1 trains the whole network with plain CE; stage 2 freezes the backbone (BatchNorm
included), draws a fresh linear classifier and trains it with CE under class-balanced sampling,
on a cosine schedule. The stages are declared as data (`ltbench.sdk.stages.two_stage_spec`);
the engine runs them.
"""

from __future__ import annotations

from ltbench.sdk.stages import two_stage_spec

PAPER = (
    "Kang et al., Decoupling Representation and Classifier for Long-Tailed Recognition, ICLR 2020"
)

CRT = two_stage_spec(
    "crt",
    "ce",
    head="linear",
    description="classifier re-training: CE, then a fresh classifier, class-balanced, frozen net",
    paper=PAPER,
    stage1_mixup_alpha=0.0,
    stage2_lr_factor=1.0,
    stage2_shift_bn=False,
    stage2_lws=False,
    stage2_reinit=True,
)
