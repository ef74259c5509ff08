"""The self-test's Ray Tune path: a tiny suite through `ltbench run`'s own command layer
(plan, Ray Tune, results), so the trials run exactly as a user's would."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import yaml

from ltbench.errors import LtbenchError

AXES = ("dataset", "imb_factor", "loss", "seed")  # the suite's axes, not its `config`


def run_tiny_suite(
    out: Path, tiny: dict[str, Any], seeds, gpus_per_trial: float, address: str | None, device: str
) -> dict[int, Path]:
    """Run `tiny` (a TrainConfig's settings) for `seeds` as a suite on Ray Tune with
    `--gpus-per-trial gpus_per_trial`; {seed: its trial folder}."""
    from ltbench.runner.args import add_run_args
    from ltbench.runner.commands import run_suite_command

    out.mkdir(parents=True)
    suite = {
        "description": "ltbench doctor's tiny suite",
        "methods": [tiny["loss"]],
        "datasets": [tiny["dataset"]],
        "rhos": [round(1 / tiny["imb_factor"])],
        "seeds": list(seeds),
        "config": {**{k: v for k, v in tiny.items() if k not in AXES}, "device": device},
    }
    (out / "suite.yaml").write_text(yaml.safe_dump(suite))
    parser = argparse.ArgumentParser()
    add_run_args(parser)
    argv = ["--suite", str(out / "suite.yaml"), "--out", str(out / "run"), "--report", "none"]
    argv += ["--gpus-per-trial", f"{gpus_per_trial:g}"]
    if address:
        argv += ["--address", address]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        rc = run_suite_command(parser.parse_args(argv))
    if rc != 0:
        lines = log.getvalue().strip().splitlines()
        raise LtbenchError(f"the suite did not finish (exit {rc}): {lines[-1] if lines else ''}")
    trials = {}
    for result in sorted((out / "run" / "trials").glob("*/result.json")):
        trials[int(json.loads(result.read_text())["seed"])] = result.parent
    if sorted(trials) != sorted(seeds):
        raise LtbenchError(f"the suite's trials have seeds {sorted(trials)}, not {list(seeds)}")
    return trials
