"""The `train` hooks of a trial: what a trial process (`ltbench.runner.worker`) and a
data-parallel trial's workers (`ltbench.runner.ray_train`) report to Tune after each epoch.
Its own module, so that neither of the two imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TuneHooks:
    """`train` hooks: report each epoch's scalars to Tune (ASHA and the progress lines).

    The last epoch is not reported here: the report after `train` returns stands for it, so a
    scheduler that stops the trial at its last report cannot cut off the final evaluation and
    `result.json`.
    """

    def __init__(self, report, last_epoch: int):
        self.report = report
        self.last_epoch = last_epoch

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], checkpoint: Path) -> None:
        if epoch < self.last_epoch:
            self.report({k: v for k, v in metrics.items() if isinstance(v, int | float)})
