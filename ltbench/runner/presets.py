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
    # Sized by measurement (BENCHMARKS.md, "The offline demo"): on synthetic-lt (16 x 16 images,
    # 1000 per class before the long-tailed draw) a half-width ResNet-32 trained for 24 epochs
    # learns every class of the balanced set, plain CE shows the long tail, and the spread over
    # seeds stays within a few points. Shorter schedules and a quarter-width network spread
    # KPS-DRW and KPS-GA by 3-6.5 points over four seeds at rho = 100 (18 epochs; width 0.25);
    # the demo's wall time is in BENCHMARKS.md.
    "smoke": Preset(
        "a few minutes on 2 CPU cores: 24 epochs, <= 1000 images per class, half-width model",
        {"epochs": 24, "n_max": 1000, "width": 0.5, "batch_size": 64, "eval_every": 4},
        seeds=2,
        num_samples=4,
        grace_fraction=0.25,  # 6 of 24 epochs: a tenth would judge points after one epoch
    ),
}
DEFAULT_PRESET = "paper"
