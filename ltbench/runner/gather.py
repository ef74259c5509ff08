"""`ltbench collect`: finished `ltbench train` runs gathered into a results folder.

Runs trained one by one (the reproduction record, a run on another machine) get the same table,
figures and report as a suite's trials: each run's `result.json`, `metrics.jsonl` and
`config.yaml` are copied to OUT/trials/<name>/ (the checkpoint stays where it is), OUT/trials.json
lists them with the configuration each one ran, and OUT/results.csv and OUT/per_class.csv are
written as `ltbench run` writes them. `ltbench report OUT` then reads OUT like any suite folder.
Every run is checked before anything is written; the runs themselves are only read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ltbench.errors import LtbenchError
from ltbench.runner.outdir import check_not_a_train_run, has_results
from ltbench.runner.results import write_results
from ltbench.runner.trials import TrialSpec, save_trials
from ltbench.schema import CONFIG_FILE, METRICS_FILE, RESULT_FILE, TRIALS_DIR, read_result

COPIED = (RESULT_FILE, METRICS_FILE, CONFIG_FILE)


def _read_run(run_dir: Path) -> tuple[dict, dict]:
    """(config, result) of a finished run folder; a one-line error naming what is missing."""
    if not run_dir.is_dir():
        raise LtbenchError(f"{run_dir} is not a folder (expected an `ltbench train --out` folder)")
    result = read_result(run_dir / RESULT_FILE)
    if result is None or result.get("status") != "finished":
        raise LtbenchError(
            f"{run_dir} has no finished {RESULT_FILE}: the run is not done (or not a run folder)"
        )
    try:
        config = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LtbenchError(f"cannot read {run_dir / CONFIG_FILE}: {exc}") from None
    if not isinstance(config, dict) or "loss" not in config:
        raise LtbenchError(f"{run_dir / CONFIG_FILE} is not a run configuration")
    return config, result


def collect_runs(out_dir: str | Path, run_dirs: list[str | Path]) -> list[TrialSpec]:
    """Gather finished runs into OUT (a new or empty folder); returns the trials written."""
    out_dir = Path(out_dir)
    if not run_dirs:
        raise LtbenchError("name at least one finished run folder to collect")
    runs = [Path(d) for d in run_dirs]
    names = [r.resolve().name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LtbenchError(
            f"two run folders are both named {twice[0]!r}; the folder name is the trial key"
        )
    if has_results(out_dir) or (out_dir.exists() and not out_dir.is_dir()):
        raise LtbenchError(f"{out_dir} already holds results; choose another OUT")
    check_not_a_train_run(out_dir, "OUT")
    read = [(name, run, *_read_run(run)) for name, run in zip(names, runs, strict=True)]

    trials = []
    for name, run, config, result in read:
        dest = out_dir / TRIALS_DIR / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in COPIED:
            if (run / file).is_file():
                shutil.copy2(run / file, dest / file)
        trials.append(TrialSpec(name, str(result.get("method") or config["loss"]), config))
    save_trials(out_dir, trials)
    write_results(out_dir)
    return trials
