"""The output directory of a suite or a sweep: what may already be in it, the driver's hold on
it, suite.yaml and the report. Ray-free.

The driver of `ltbench run` / `ltbench sweep` holds DIR's lock (`ltbench.engine.locks`) for its
whole life: a second driver on the same DIR, even with `--resume`, is refused with the holder's
PID. A DIR that the driver created and left without a single file of its own (Ray refused the
resources, Ctrl-C before the first trial) is removed again. The Ray processes that a killed
driver of DIR left are ended by the next `run` or `sweep` into DIR (`end_leftovers`), whether
its own checks then pass or not.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ltbench.engine.locks import LOCK_FILE, hold
from ltbench.errors import LtbenchError
from ltbench.runner import orphans
from ltbench.runner.suite import Suite
from ltbench.runner.trials import TrialSpec, first_difference, load_trials
from ltbench.schema import RESULTS_FILE, SUITE_FILE, SWEEP_FILE, TRIALS_DIR, TRIALS_FILE


def default_out(suite: str, preset: str) -> Path:
    """runs/<suite> for the paper preset, runs/<suite>-<preset> otherwise."""
    stem = Path(suite).stem if suite.endswith((".yaml", ".yml")) else suite
    return Path("runs") / (stem if preset == "paper" else f"{stem}-{preset}")


def has_results(out_dir: Path) -> bool:
    """DIR holds the trial list, a results file or a trial folder of an earlier command."""
    if not out_dir.is_dir():
        return False
    if any((out_dir / name).exists() for name in (TRIALS_FILE, RESULTS_FILE, SWEEP_FILE)):
        return True
    trials = out_dir / TRIALS_DIR
    return trials.is_dir() and any(trials.iterdir())


def check_run_dir(out_dir: Path, trials: list[TrialSpec], resume: bool) -> dict[str, TrialSpec]:
    """Check DIR against the plan (a resume must plan the same trials); every trial in DIR.
    Reads only."""
    saved = load_trials(out_dir) if out_dir.is_dir() else {}
    if has_results(out_dir) and not resume:
        raise LtbenchError(
            f"{out_dir} already holds suite results; pass --resume to continue it or choose "
            "another --out"
        )
    for t in trials:
        old = saved.get(t.key)
        diff = first_difference(old, t) if old is not None else None
        if diff:
            raise LtbenchError(
                f"cannot resume {out_dir}: trial {t.key} was planned with other settings "
                f"({diff}); pass the same --suite/--preset/--dataset options or another --out"
            )
    return {**saved, **{t.key: t for t in trials}}


def check_not_a_train_run(out_dir: Path, flag: str = "--out") -> None:
    """DIR is not the folder of an `ltbench train` run (its config.yaml, checkpoint.pt, ...):
    a suite's, a sweep's or `collect`'s files would be mixed into it. Reads only."""
    from ltbench.engine.checkpoint import RUN_FILES

    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    if found:
        raise LtbenchError(
            f"{flag} {out_dir} holds an `ltbench train` run ({', '.join(found)}); give a new or "
            "empty folder (to gather train runs: ltbench collect NEW_FOLDER RUN ...)"
        )


def check_same_suite(out_dir: Path, suite: Suite) -> None:
    """One suite per DIR: a resumed DIR holds the results of `suite` (the name its suite.yaml
    records), not of another suite or of a sweep. Reads only."""
    recorded: Any = None
    try:
        recorded = yaml.safe_load((out_dir / SUITE_FILE).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        pass  # no suite.yaml yet (the first run was stopped before it), or not readable
    if (out_dir / SWEEP_FILE).exists() or (isinstance(recorded, dict) and "search" in recorded):
        raise LtbenchError(
            f"{out_dir} holds a sweep's results; `ltbench run --resume` continues a suite only: "
            "choose another --out"
        )
    name = recorded.get("name") if isinstance(recorded, dict) else None
    if isinstance(name, str) and name != suite.name:
        raise LtbenchError(
            f"{out_dir} holds the results of suite {name[:80]!r}, not {suite.name[:80]!r}: "
            f"resume it with --suite {str(recorded.get('source') or name)[:200]}, or choose "
            "another --out for this suite"
        )


def check_sweep_dir(out_dir: Path) -> None:
    """A sweep starts in a new or empty DIR (it cannot be resumed). Reads only."""
    if has_results(out_dir):
        raise LtbenchError(
            f"{out_dir} already holds results (a sweep does not resume after a crash or an "
            "interrupt; its points so far stay there); choose another --out"
        )


def end_leftovers(out_dir: Path) -> None:
    """End the Ray processes that a killed driver of DIR left (`ltbench.runner.orphans`; nothing
    while that driver lives)."""
    driver, ended = orphans.end_orphans(out_dir)
    if ended:
        print(
            f"ended {len(ended)} Ray process(es) left in {out_dir} by the killed driver "
            f"(PID {driver})",
            flush=True,
        )


@contextmanager
def driver_hold(out_dir: Path) -> Iterator[Path]:
    """Hold DIR for a driver (see the module docstring)."""
    new = [d for d in (out_dir, *out_dir.parents) if not os.path.lexists(d)]
    try:
        with hold(out_dir):
            yield out_dir
    finally:
        if new and out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= {LOCK_FILE}:
            (out_dir / LOCK_FILE).unlink(missing_ok=True)
            for folder in new:  # DIR, then the parents it needed, while they are empty
                try:
                    folder.rmdir()
                except OSError:
                    break


def write_suite_yaml(
    out_dir: Path,
    suite: Suite,
    preset: str,
    overrides: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """DIR/suite.yaml: the resolved suite; a resumed run keeps the first run's `created`."""
    path = out_dir / SUITE_FILE
    now = _dt.datetime.now().isoformat(timespec="seconds")
    created = now
    if path.is_file():
        try:
            created = (yaml.safe_load(path.read_text()) or {}).get("created", now)
        except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
            created = now
    data = {
        "name": suite.name,
        "description": suite.description,
        "source": suite.source,
        "preset": preset,
        "preset_overrides": overrides,
        "created": created,
        "updated": now,
        "hostname": platform.node(),
        **(extra or {}),
        "suite": suite.to_dict(),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)


def write_suite_report(out_dir: Path, formats: tuple[str, ...]) -> None:
    """The report of DIR in `formats` (none for ()), its paths printed."""
    if not formats:
        return
    try:
        from reports import build_report as build
    except ImportError:
        print("report: skipped (reports.build_report is not available)", flush=True)
        return
    paths = build(out_dir, formats=formats)
    for kind, path in paths.items():
        print(f"report ({kind}): {path}", flush=True)
