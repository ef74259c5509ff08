"""Presets: the one place that says what `--preset smoke` and `--preset paper` mean.

A preset is a set of TrainConfig overrides applied to every trial of a suite (above the suite's
and the method's `config`, below the axis values), plus defaults for the seed count and, for
sweeps, the number of points and ASHA's grace period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """TrainConfig overrides applied to every trial, plus the default number of seeds."""

    description: str
    overrides: dict[str, Any]
    seeds: int | None = None  # None: the suite's own seeds
    num_samples: int | None = None  # sweeps: None keeps the suite's search.num_samples
    grace_fraction: float | None = None  # sweeps: None keeps the suite's search.grace_fraction


PRESETS: dict[str, Preset] = {
    # The paper's Table 2 schedule: TrainConfig's defaults, resolved per dataset, in float32
    # (no bf16 autocast) until a measured comparison shows bf16 within the seed spread; TF32
    # convolutions stay allowed on CUDA (torch's default, cudnn.allow_tf32 = True).
    "paper": Preset("the paper's schedule (Table 2) and image counts, float32", {"amp": False}),
    # Sized by measurement (BENCHMARKS.md): one synthetic-lt trial at rho=100 takes ~45 s of
    # CPU (ResNet-32 at 1/4 width, 1 thread, 500 images per class before the long-tailed draw)
    # and learns (top-1 error ~60-70% against 90% for chance); with 200 images per class some
    # seeds stayed at chance. The ablation suite (3 methods x 2 rho x 2 seeds = 12 trials) fits
    # in the few minutes the preset promises on 2 CPU cores, Ray start-up and report included.
    "smoke": Preset(
        "a few minutes on 2 CPU cores: 12 epochs, <= 500 images per class, 1/4-width model",
        {"epochs": 12, "n_max": 500, "width": 0.25, "batch_size": 64, "eval_every": 4},
        seeds=2,
        num_samples=4,
        grace_fraction=0.25,  # 3 of 12 epochs: a tenth would judge points after one epoch
    ),
}
DEFAULT_PRESET = "paper"
