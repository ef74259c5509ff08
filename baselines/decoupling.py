"""Decoupling (Kang et al., ICLR 2020): classifier re-training `crt` and learnable weight
scaling `lws`; the third form, τ-norm, is the post-hoc rule `tau-norm` on a CE run
(`ltbench eval --rules tau-norm`, a suite's `posthoc:`), reported as the method label
`tau-norm` (reports/paper_numbers.yaml).

Stage 1 trains the whole network with plain CE; stage 2 freezes the backbone's weights, draws a
fresh linear classifier and trains it with CE under class-balanced sampling, on a cosine
schedule. BatchNorm statistics follow the stage-2 data: the official code puts every network in
train mode in stage 2 (classifier-balancing `run_networks.py:248-249`). The stages are declared
as data (`ltbench.sdk.stages.two_stage_spec`); the engine runs them.

LWS keeps the stage-1 classifier (weights and bias) fixed and learns only a per-class scale f_j
of its scores, `z_j = f_j (w_j · x + b_j)`, f initialised to 1, under class-balanced sampling
with the backbone frozen (`trainable="class-scale"`).

The official settings (ImageNet-LT, iNaturalist 2018) and the unofficial CIFAR ones
(BagofTricks-LT; the official code has no CIFAR config) are the `crt` and `lws` rows of
`recipes.yaml`.
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

LWS_RECIPES = load_recipes(Path(__file__).with_name("recipes.yaml"), "lws")

LWS = two_stage_spec(
    "lws",
    "ce",
    head="linear",
    description="learnable weight scaling: CE, then only a per-class scale, class-balanced",
    paper=PAPER,
    recipes=LWS_RECIPES,
    stage2_trainable="class-scale",
    stage1_mixup_alpha=0.0,
    stage2_lr_factor=1.0,
    stage2_shift_bn=True,
    stage2_lws=True,
    stage2_reinit=False,
)
