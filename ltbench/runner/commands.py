"""`ltbench run` and `ltbench sweep`: plan, prepare the output directory, execute, collect, report.

Ray-free: `request_from_args` is the one function that reads the parsed flags
(`ltbench.runner.args`); it returns a validated `RunRequest` or `SweepRequest`. The commands
plan the trials from the suite (`ltbench.runner.suite`), write DIR/suite.yaml and the trial
list, hand plain data to the Ray adapter (`ltbench.runner.ray_adapter`) to execute, then write
results.csv / sweep.csv (`ltbench.runner.results`) and the report (`reports`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ltbench.errors import LtbenchError
from ltbench.runner import ray_adapter
from ltbench.runner.cluster import ClusterOptions, check_address
from ltbench.runner.progress import Progress
from ltbench.runner.results import best_line, finished_keys, write_results, write_sweep
from ltbench.runner.suite import Suite, apply_overrides, check_methods, expand, load_suite
from ltbench.runner.trials import (
    TrialSpec,
    check_trials,
    first_difference,
    format_rho,
    gather_trial_specs,
    load_trials,
    save_trials,
)
from ltbench.schema import (
    FAILED,
    MISSING,
    RESULT_FILE,
    RESULTS_FILE,
    SEARCH_METRIC,
    SUITE_FILE,
    SWEEP_FILE,
    TRIALS_DIR,
    TRIALS_FILE,
    read_result,
    trial_dir,
    trial_state,
)

REPORT_FORMATS = ("md", "pdf")

# ----------------------------------------------------------------------------------------------
# The request: the parsed flags, read once and checked


@dataclass(frozen=True)
class Request:
    """What `ltbench run` or `ltbench sweep` was asked to do (the flags, validated)."""

    suite: str  # a suite name from sweeps/ or a path to a YAML file
    datasets: list[str] | None  # None: the suite's
    rhos: list[float] | None  # None: the suite's
    preset: str
    data_root: Path | None
    download: bool
    out: Path | None  # None: default_out(suite, preset)
    cluster: ClusterOptions
    formats: tuple[str, ...]  # report formats, () for none

    @property
    def out_dir(self) -> Path:
        return Path(self.out or default_out(self.suite, self.preset)).resolve()


@dataclass(frozen=True)
class RunRequest(Request):
    seeds: int | None = None  # run seeds 0..N-1; None: the suite's (or the preset's count)
    resume: bool = False


@dataclass(frozen=True)
class SweepRequest(Request):
    num_samples: int | None = None  # None: the suite's (or the preset's)


def _report_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in str(text).split(",") if f.strip())
    if formats == ("none",):
        return ()
    bad = [f for f in formats if f not in REPORT_FORMATS]
    if bad or not formats:
        raise LtbenchError(f"--report {text!r}: expected md, pdf, md,pdf or none")
    return formats


def request_from_args(args: argparse.Namespace, command: str) -> RunRequest | SweepRequest:
    """The flags of `ltbench <command>` ("run" or "sweep") as a checked request."""
    if args.max_failures < 0:
        raise LtbenchError(f"--max-failures must be >= 0, got {args.max_failures}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise LtbenchError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    common: dict[str, Any] = {
        "suite": str(args.suite),
        "datasets": args.dataset,
        "rhos": args.rho,
        "preset": args.preset,
        "data_root": args.data_root,
        "download": bool(args.download),
        "out": args.out,
        "cluster": ClusterOptions(
            address=args.address,
            cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial,
            max_concurrent=args.max_concurrent,
            max_failures=args.max_failures,
        ),
        "formats": _report_formats(args.report),
    }
    if command == "run":
        return RunRequest(**common, seeds=args.seeds, resume=bool(args.resume))
    if command != "sweep":
        raise ValueError(f"unknown command {command!r}")
    if args.num_samples is not None and args.num_samples < 1:
        raise LtbenchError(f"--num-samples must be >= 1, got {args.num_samples}")
    return SweepRequest(**common, num_samples=args.num_samples)


# ----------------------------------------------------------------------------------------------
# The output directory


def default_out(suite: str, preset: str) -> Path:
    """runs/<suite> for the paper preset, runs/<suite>-<preset> otherwise."""
    stem = Path(suite).stem if suite.endswith((".yaml", ".yml")) else suite
    return Path("runs") / (stem if preset == "paper" else f"{stem}-{preset}")


def _has_results(out_dir: Path) -> bool:
    if not out_dir.exists():
        return False
    if any((out_dir / name).exists() for name in (TRIALS_FILE, RESULTS_FILE, SWEEP_FILE)):
        return True
    trials = out_dir / TRIALS_DIR
    return trials.is_dir() and any(trials.iterdir())


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
        except (yaml.YAMLError, AttributeError):
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


def _build_report(out_dir: Path, formats: tuple[str, ...]) -> None:
    if not formats:
        return
    try:
        from reports import build_report
    except ImportError:
        print("report: skipped (reports.build_report is not available)", flush=True)
        return
    paths = build_report(out_dir, formats=formats)
    for kind, path in paths.items():
        print(f"report ({kind}): {path}", flush=True)


# ----------------------------------------------------------------------------------------------
# ltbench run


def plan_suite(req: RunRequest) -> tuple[Suite, dict[str, Any], list[TrialSpec]]:
    """Load, override, expand and check a suite (no Ray); returns (suite, preset, trials)."""
    suite = load_suite(req.suite)
    if suite.search is not None:
        raise LtbenchError(
            f"suite {suite.name!r} is a search ({suite.source} has a search block); "
            f"run it with `ltbench sweep --suite {req.suite}`"
        )
    suite, overrides = apply_overrides(
        suite,
        datasets=req.datasets,
        rhos=req.rhos,
        seeds=req.seeds,
        preset=req.preset,
        data_root=req.data_root,
        download=req.download,
    )
    check_methods(suite)
    trials = expand(suite, overrides)
    check_trials(trials)
    return suite, overrides, trials


def _prepare_run_dir(req: RunRequest, trials: list[TrialSpec]) -> dict[str, TrialSpec]:
    """Check DIR against the plan (a resume must plan the same trials); every trial in DIR."""
    out_dir = req.out_dir
    saved = load_trials(out_dir) if out_dir.exists() else {}
    if _has_results(out_dir) and not req.resume:
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


def run_suite(req: RunRequest, train_fn=None) -> int:
    """Every trial of a suite on Ray Tune; 1 if a trial failed or is left, else 0."""
    if req.cluster.address:
        check_address(req.cluster.address)
    suite, overrides, trials = plan_suite(req)
    out_dir = req.out_dir
    every = _prepare_run_dir(req, trials)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_suite_yaml(out_dir, suite, req.preset, overrides)
    save_trials(out_dir, list(every.values()))

    keys = [t.key for t in trials]
    done = finished_keys(out_dir, every)
    pending = [k for k in keys if k not in done]
    print(
        f"suite {suite.name}: {len(keys)} trials ({len(keys) - len(pending)} already "
        f"finished) -> {out_dir}",
        flush=True,
    )
    if pending:
        best = None
        for k in done:
            err = read_result(trial_dir(out_dir, k) / RESULT_FILE).get("top1_error")
            if err is not None and (best is None or err < best[0]):
                best = (err, every[k].describe())
        progress = Progress(
            len(keys),
            out_dir,
            done=len(keys) - len(pending),
            best=best,
            describe=lambda key: every[key].describe() if key in every else None,
        )

        def announce(resources: dict[str, float]) -> None:
            print(
                f"resources per trial: {resources['cpu']:g} CPU, {resources['gpu']:g} GPU",
                flush=True,
            )

        ray_adapter.run_suite_trials(
            out_dir,
            suite.name,
            pending,
            req.cluster,
            progress,
            on_start=announce,
            train_fn=train_fn,
        )

    results, _ = write_results(out_dir)
    mine = results[results["trial"].isin(keys)]
    failed = mine[mine["status"] == FAILED]
    missing = mine[mine["status"] == MISSING]
    print(
        f"results: {out_dir / RESULTS_FILE} ({len(mine) - len(failed) - len(missing)} "
        f"finished, {len(failed)} failed, {len(missing)} missing)",
        flush=True,
    )
    for row in failed.itertuples():
        print(f"  failed {row.trial}: {row.error}", flush=True)
    if len(missing):
        print(
            f"  {len(missing)} trial(s) did not finish; continue with the same command plus "
            f"--resume --out {out_dir}",
            flush=True,
        )
    _build_report(out_dir, req.formats)
    return 1 if len(failed) or len(missing) else 0


def run_suite_command(args: argparse.Namespace, train_fn=None) -> int:
    """`ltbench run`: every trial of a suite on Ray Tune; exit 1 if a trial failed or is left."""
    return run_suite(request_from_args(args, "run"), train_fn)


# ----------------------------------------------------------------------------------------------
# ltbench sweep


def plan_sweep(req: SweepRequest) -> tuple[Suite, dict[str, Any], TrialSpec]:
    """Load and check a search suite (no Ray); returns (suite, preset overrides, base trial)."""
    from ltbench.engine.config import resolve
    from ltbench.sdk.registry import get_spec

    suite = load_suite(req.suite)
    if suite.search is None:
        raise LtbenchError(
            f"suite {suite.name!r} has no search block ({suite.source}); `ltbench sweep` needs "
            "one, see sweeps/kps-search.yaml"
        )
    suite, overrides = apply_overrides(
        suite,
        datasets=req.datasets,
        rhos=req.rhos,
        preset=req.preset,
        preset_seeds=False,
        data_root=req.data_root,
        download=req.download,
    )
    if req.num_samples is not None:
        suite = dataclasses.replace(
            suite, search=suite.search.with_num_samples(req.num_samples, suite.name)
        )
    check_methods(suite)
    trials = expand(suite, overrides)
    if len(trials) != 1:
        raise LtbenchError(
            f"a sweep searches one (method, dataset, rho, seed); suite {suite.name!r} gives "
            f"{len(trials)} combinations: choose one with --dataset and --rho"
        )
    check_trials(trials)
    base = trials[0]
    allowed = get_spec(base.loss).defaults
    for name in suite.search.params:
        if name not in allowed:
            raise LtbenchError(
                f"{suite.source}: search space: loss {base.loss!r} has no parameter {name!r}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
    try:
        cfg = resolve(base.train_config())
    except LtbenchError as exc:
        raise LtbenchError(f"trial {base.key}: {exc}") from None
    if cfg.val_fraction <= 0:
        raise LtbenchError(
            f"{suite.source}: a sweep selects on a validation split; set config: "
            "{val_fraction: 0.1} (or another share in (0, 1))"
        )
    return suite, overrides, base


def run_sweep(req: SweepRequest, train_fn=None) -> int:
    """Search the suite's space, select on the balanced validation error, write sweep.csv; 0 if
    one finished and none failed. The selected point is not retrained on train + validation."""
    from ltbench.engine.config import resolve

    if req.cluster.address:
        check_address(req.cluster.address)
    suite, overrides, base = plan_sweep(req)
    search = suite.search
    params = search.params
    out_dir = req.out_dir
    if _has_results(out_dir):
        raise LtbenchError(f"{out_dir} already holds results; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = resolve(base.train_config()).epochs
    plan = ray_adapter.SearchPlan(
        space=search.space,
        num_samples=search.num_samples,
        max_t=epochs,
        grace_period=min(max(round(search.grace_fraction * epochs), 1), epochs),
        reduction_factor=search.reduction_factor,
        kind=search.type,
    )
    recorded = search.record(plan.max_t, plan.grace_period)
    write_suite_yaml(out_dir, suite, req.preset, overrides, {"search": recorded})

    def announce(kind: str) -> None:
        print(
            f"sweep {suite.name}: {plan.num_samples} points of {', '.join(params)} ({kind} "
            f"search, {search.strategy(plan.grace_period)}, {epochs} epochs) on "
            f"{base.dataset} rho {format_rho(base.rho)} -> {out_dir}",
            flush=True,
        )

    progress = Progress(plan.num_samples, out_dir, best_metric=SEARCH_METRIC)
    ray_adapter.run_search(
        out_dir, suite.name, base, plan, req.cluster, progress, on_start=announce, train_fn=train_fn
    )

    # Every trial wrote its spec into its directory; gather them into trials.json.
    specs = gather_trial_specs(out_dir)
    save_trials(out_dir, specs)
    stopped = set()  # a grid stops nothing early: its unfinished points are missing
    if not search.is_grid:
        stopped = {s.key for s in specs if trial_state(out_dir, s.key)[0] == MISSING}
    sweep = write_sweep(out_dir, params, stopped)
    notes = {
        k: f"stopped early by ASHA after {n} epoch(s)"
        for k, n in zip(sweep["trial"], sweep["epochs"], strict=True)
        if k in stopped
    }
    write_results(out_dir, notes)
    print(
        f"sweep: {out_dir / SWEEP_FILE} ({len(sweep)} points: "
        + ", ".join(f"{n} {s}" for s, n in sweep["status"].value_counts().items())
        + ")",
        flush=True,
    )
    best = best_line(sweep, params)  # selected on the balanced validation error alone
    print(best or "best: no trial finished", flush=True)
    _build_report(out_dir, req.formats)
    failed = (sweep["status"] == FAILED).sum()
    return 1 if failed or best is None else 0


def sweep_command(args: argparse.Namespace, train_fn=None) -> int:
    """`ltbench sweep`: search the suite's space, select on the balanced validation error."""
    return run_sweep(request_from_args(args, "sweep"), train_fn)
