"""Decoupling (Kang et al., ICLR 2020): classifier re-training, `crt`.

Stage 1 trains the whole network with plain CE; stage 2 freezes the backbone's weights, draws a
fresh linear classifier and trains it with CE under class-balanced sampling, on a cosine
schedule. BatchNorm statistics follow the stage-2 data: the official code puts every network in
train mode in stage 2 (classifier-balancing `run_networks.py:248-249`). The stages are declared
as data (`ltbench.sdk.stages.two_stage_spec`); the engine runs them.

The official settings (ImageNet-LT, iNaturalist 2018) and the unofficial CIFAR ones
(BagofTricks-LT; the official code has no CIFAR config) are the `crt` rows of `recipes.yaml`.
"""

from __future__ import annotations

from pathlib import Path

from ltbench.sdk.recipes import load_recipes
from ltbench.sdk.stages import two_stage_spec

PAPER = (
    "Kang et al., Decoupling Representation and Classifier for Long-Tailed Recognition, ICLR 2020"
)
RECIPES = load_recipes(Path(__file__).with_name("recipes.yaml"), "crt")

CRT = two_stage_spec(
    "crt",
    "ce",
    head="linear",
    description="classifier re-training: CE, then a fresh classifier, class-balanced, frozen net",
    paper=PAPER,
    recipes=RECIPES,
    stage1_mixup_alpha=0.0,
    stage2_lr_factor=1.0,
    stage2_shift_bn=True,
    stage2_lws=False,
    stage2_reinit=True,
)
