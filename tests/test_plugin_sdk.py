"""A new method from another package: one plugin file, its entry point, one suite YAML.

The plugin declares a per-dataset default and two searchable parameters; nothing in ltbench
changes. A real (tiny) `ltbench sweep` on Ray Tune trains it and the report draws the search
over its two parameters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

PLUGIN = """
    '''A cross-entropy with a temperature and a logit offset per class frequency.'''
    import torch
    import torch.nn.functional as F

    from ltbench.sdk.loss_utils import LossPlugin, check_positive
    from ltbench.sdk.registry import LossSpec


    class TempCE(LossPlugin):
        head = "linear"

        def __init__(self, cls_num_list, t, a, b):
            super().__init__(cls_num_list)
            self.t, self.a, self.b = check_positive("t", t), float(a), int(b)

        def compute(self, x, targets):
            prior = torch.log(self.cls_num / self.cls_num.sum()).to(x.dtype)
            return F.cross_entropy(x / self.t + self.a * prior + 0.0 * self.b, targets)


    def build(cls_num_list, t, a, b):
        return TempCE(cls_num_list, t, a, b)


    SPEC = LossSpec(
        name="thirdparty-temp-ce",
        factory=build,
        head="linear",
        defaults={"t": 1.0, "a": 0.0, "b": 1},
        dataset_defaults={"synthetic-lt": {"t": 1.5}},
    )
"""

SUITE = """
description: a search of the third-party loss's two parameters
methods: [thirdparty-temp-ce]
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 2, n_max: 40, width: 0.125, batch_size: 64, val_fraction: 0.2, eval_every: 2}
search:
  space:
    a: {type: float, low: 0.0, high: 1.0}
    b: {type: int, low: 1, high: 3}
  num_samples: 4
  grace_fraction: 1.0
  reduction_factor: 2
"""


@pytest.mark.ray
def test_a_new_plugin_is_trained_searched_and_reported(tmp_path):
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "ltb_thirdparty_tempce.py").write_text(textwrap.dedent(PLUGIN))
    dist = pkg / "ltb_thirdparty_tempce-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ltb-thirdparty-tempce\n")
    (dist / "entry_points.txt").write_text(
        "[ltbench.losses]\nthirdparty-temp-ce = ltb_thirdparty_tempce:SPEC\n"
    )
    suite = tmp_path / "tempce-search.yaml"
    suite.write_text(SUITE)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "ltbench.cli", "sweep", "--suite", str(suite), "--out", str(out)]
        + ["--report", "md"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    sweep = pd.read_csv(out / "sweep.csv")
    assert list(sweep.columns)[:3] == ["trial", "a", "b"] and len(sweep) == 4
    assert sweep["b"].between(1, 3).all() and sweep["a"].between(0.0, 1.0).all()
    finished = sweep[sweep["status"] == "finished"]
    assert len(finished) >= 1
    trial = Path(out / "trials" / finished["trial"].iloc[0])
    result = json.loads((trial / "result.json").read_text())
    assert result["loss"] == "thirdparty-temp-ce"
    assert result["loss_params"]["t"] == 1.5  # the plugin's own per-dataset default
    report = (out / "report.md").read_text()
    # the points of a random search form no grid: a scatter of every point, no heat map
    assert "sweep_points.png" in report and (out / "figures" / "sweep_points.png").is_file()
    assert "val_balanced_error" in sweep.columns
