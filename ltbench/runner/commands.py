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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltbench.engine.locks import check_out_dir
from ltbench.errors import Interrupted, LtbenchError
from ltbench.runner import ray_adapter
from ltbench.runner.cluster import ClusterOptions, check_address, check_cluster
from ltbench.runner.outdir import (
    check_not_a_train_run,
    check_run_dir,
    check_same_suite,
    check_sweep_dir,
    default_out,
    driver_hold,
    end_leftovers,
    write_suite_report,
    write_suite_yaml,
)
from ltbench.runner.packs import check_pack_size, plan_packs
from ltbench.runner.progress import Progress
from ltbench.runner.results import best_line, finished_keys, write_results, write_sweep
from ltbench.runner.suite import Suite, apply_overrides, check_methods, expand, load_suite
from ltbench.runner.tracking import MLflow, tracking_uri
from ltbench.runner.trials import (
    TrialSpec,
    check_trials,
    format_rho,
    gather_trial_specs,
    point_spec,
    save_trials,
)
from ltbench.schema import (
    FAILED,
    MISSING,
    RESULT_FILE,
    RESULTS_FILE,
    SEARCH_METRIC,
    SWEEP_FILE,
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
    mlflow: str | None = None  # `--mlflow`: the tracking URI (ltbench.runner.tracking); None: off

    @property
    def out_dir(self) -> Path:
        return Path(self.out or default_out(self.suite, self.preset)).resolve()


@dataclass(frozen=True)
class RunRequest(Request):
    seeds: int | None = None  # run seeds 0..N-1; None: the suite's (or the preset's count)
    resume: bool = False
    extra_methods: tuple[str, ...] = ()  # `--with`: methods added to the suite for this run
    pack: int | None = None  # `--pack`: trials per pack; None: the suite's


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
            workers_per_trial=getattr(args, "workers_per_trial", None),
        ),
        "formats": _report_formats(args.report),
    }
    req: RunRequest | SweepRequest
    if command == "run":
        req = RunRequest(
            **common,
            seeds=args.seeds,
            resume=bool(args.resume),
            extra_methods=tuple(getattr(args, "extra_methods", None) or ()),
            pack=getattr(args, "pack", None),
        )
    elif command == "sweep":
        if args.num_samples is not None and args.num_samples < 1:
            raise LtbenchError(f"--num-samples must be >= 1, got {args.num_samples}")
        req = SweepRequest(**common, num_samples=args.num_samples)
    else:
        raise ValueError(f"unknown command {command!r}")
    uri = tracking_uri(getattr(args, "mlflow", None), req.out_dir)
    return dataclasses.replace(req, mlflow=uri) if uri else req


def _mlflow(req: Request, suite: Suite, out_dir: Path) -> MLflow | None:
    """Where `--mlflow` logs the trials (experiment: the suite's name); None without it."""
    return MLflow(req.mlflow, suite.name, out_dir) if req.mlflow else None


# ----------------------------------------------------------------------------------------------
# The plan: every check before a file is written or Ray starts


@dataclass(frozen=True)
class Plan:
    """A checked command: its request, the suite with the preset's overrides, and the trials
    (a sweep: its one base trial)."""

    req: RunRequest | SweepRequest
    suite: Suite
    overrides: dict[str, Any]
    trials: list[TrialSpec]


def plan_command(args: argparse.Namespace, command: str) -> Plan:
    """Everything `ltbench run` / `ltbench sweep` checks before it writes a file or starts Ray:
    the flags, the cluster options, the suite and every trial (configuration resolved, stages
    planned, data files found), the output folder and what it holds. Ray-free, writes nothing;
    a bad input is a one-line `LtbenchError`. Only the Ray processes that a killed driver of
    the same DIR left are ended first, whatever the checks decide (`end_leftovers`)."""
    req = request_from_args(args, command)
    end_leftovers(req.out_dir)
    check_cluster(req.cluster, os.environ.get("RAY_ADDRESS"))
    if req.cluster.address:
        check_address(req.cluster.address)
    if isinstance(req, RunRequest):
        suite, overrides, trials = plan_suite(req)
    else:
        suite, overrides, base = plan_sweep(req)
        trials = [base]
    out_dir = check_out_dir(req.out_dir)
    check_not_a_train_run(out_dir)
    if isinstance(req, RunRequest):
        check_run_dir(out_dir, trials, req.resume)
        if req.resume:
            check_same_suite(out_dir, suite)
    else:
        check_sweep_dir(out_dir)
    return Plan(req, suite, overrides, trials)


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
        extra_methods=req.extra_methods,
        workers=req.cluster.trial_workers(),
    )
    if req.pack is not None:
        suite = dataclasses.replace(suite, pack=check_pack_size(req.pack, "--pack"))
    check_methods(suite)
    trials = expand(suite, overrides)
    check_trials(trials)
    return suite, overrides, trials


def run_suite(planned: Plan, train_fn=None) -> int:
    """Every trial of a planned suite on Ray Tune; 1 if a trial failed or is left, else 0."""
    req, suite, trials = planned.req, planned.suite, planned.trials
    out_dir = req.out_dir
    with driver_hold(out_dir):
        every = check_run_dir(out_dir, trials, req.resume)  # again, now that DIR is ours
        keys = [t.key for t in trials]
        done = finished_keys(out_dir, every)
        pending = [k for k in keys if k not in done]
        print(
            f"suite {suite.name}: {len(keys)} trials ({len(keys) - len(pending)} already "
            f"finished) -> {out_dir}",
            flush=True,
        )

        def write_plan() -> None:
            write_suite_yaml(out_dir, suite, req.preset, planned.overrides)
            save_trials(out_dir, list(every.values()))

        units, packs = pending, None
        if pending and suite.pack > 1:
            plan = plan_packs([every[k] for k in pending], suite.pack)
            units, packs = list(plan.units), plan.packs
            for line in plan.describe(suite.pack):
                print(line, flush=True)

        interrupted = False
        if not pending:
            write_plan()
        else:
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
                spread = sorted({every[k].workers for k in pending} - {1})
                note = f" (per worker of the trials on {', '.join(map(str, spread))} workers)"
                print(
                    f"resources per trial: {resources['cpu']:g} CPU, {resources['gpu']:g} GPU"
                    + (note if spread else ""),
                    flush=True,
                )
                write_plan()  # only once Ray took the resources: a refusal writes nothing

            try:
                ray_adapter.run_suite_trials(
                    out_dir,
                    suite.name,
                    units,
                    req.cluster,
                    progress,
                    on_start=announce,
                    train_fn=train_fn,
                    packs=packs,
                    workers={k: every[k].workers for k in pending if k in every},
                    mlflow=_mlflow(req, suite, out_dir),
                )
            except KeyboardInterrupt:
                interrupted = True
            interrupted = interrupted or progress.interrupted
        hint = f"continue with the same command plus --resume --out {out_dir}"
        if interrupted and not (out_dir / TRIALS_FILE).is_file():
            raise Interrupted("no trial had started")

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
        if interrupted:
            raise Interrupted(hint)
        if len(missing):
            print(f"  {len(missing)} trial(s) did not finish; {hint}", flush=True)
        write_suite_report(out_dir, req.formats)
    return 1 if len(failed) or len(missing) else 0


def run_suite_command(args: argparse.Namespace, train_fn=None) -> int:
    """`ltbench run`: every trial of a suite on Ray Tune; exit 1 if a trial failed or is left."""
    return run_suite(plan_command(args, "run"), train_fn)


# ----------------------------------------------------------------------------------------------
# ltbench sweep


def plan_sweep(req: SweepRequest) -> tuple[Suite, dict[str, Any], TrialSpec]:
    """Load and check a search suite (no Ray); returns (suite, preset overrides, base trial)."""
    from ltbench.engine.config import resolve
    from ltbench.engine.stages import plan_stages
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
        workers=req.cluster.trial_workers(),
    )
    if req.num_samples is not None:
        suite = dataclasses.replace(
            suite, search=suite.search.with_num_samples(req.num_samples, suite.name)
        )
    if suite.pack > 1:
        raise LtbenchError(
            f"{suite.source}: pack: {suite.pack} is for `ltbench run`; a sweep trains its points "
            "alone (remove pack)"
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
    for name, dim in suite.search.space.items():  # the loss must take each end of the space
        for value in (dim.get("low"), dim.get("high"), *dim.get("values", ())):
            if value is not None:
                try:
                    plan_stages(resolve(point_spec(base, base.key, {name: value}).train_config()))
                except LtbenchError as exc:
                    raise LtbenchError(
                        f"{suite.source}: search space: {name}={value!r}: {exc}"
                    ) from None
    return suite, overrides, base


def run_sweep(planned: Plan, train_fn=None) -> int:
    """Search the planned suite's space, select on the balanced validation error, write
    sweep.csv; 0 if one finished and none failed. The selected point is not retrained on
    train + validation."""
    from ltbench.engine.config import resolve

    req, suite, base = planned.req, planned.suite, planned.trials[0]
    search = suite.search
    params = search.params
    out_dir = req.out_dir
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

    def announce(kind: str) -> None:
        write_suite_yaml(out_dir, suite, req.preset, planned.overrides, {"search": recorded})
        print(
            f"sweep {suite.name}: {plan.num_samples} points of {', '.join(params)} ({kind} "
            f"search, {search.strategy(plan.grace_period)}, {epochs} epochs) on "
            f"{base.dataset} rho {format_rho(base.rho)} -> {out_dir}",
            flush=True,
        )

    with driver_hold(out_dir):
        check_sweep_dir(out_dir)  # again, now that DIR is ours
        progress = Progress(plan.num_samples, out_dir, best_metric=SEARCH_METRIC)
        interrupted = False
        try:
            ray_adapter.run_search(
                out_dir,
                suite.name,
                base,
                plan,
                req.cluster,
                progress,
                on_start=announce,
                train_fn=train_fn,
                mlflow=_mlflow(req, suite, out_dir),
            )
        except KeyboardInterrupt:
            interrupted = True
        interrupted = interrupted or progress.interrupted

        # Every trial wrote its spec into its directory; gather them into trials.json.
        specs = gather_trial_specs(out_dir)
        if interrupted and not specs:
            raise Interrupted("no point had started")
        save_trials(out_dir, specs)
        # Stopped early: a point that Tune ended before any interrupt without a result (a grid
        # stops nothing early). A point cut off by Ctrl-C / SIGTERM is missing, and says so.
        unfinished = {s.key for s in specs if trial_state(out_dir, s.key)[0] == MISSING}
        stopped = set() if search.is_grid else unfinished & progress.ended_keys
        sweep = write_sweep(out_dir, params, stopped)
        notes = {
            k: f"stopped early by ASHA after {n} epoch(s)"
            for k, n in zip(sweep["trial"], sweep["epochs"], strict=True)
            if k in stopped
        }
        if interrupted:
            cut = "interrupted (Ctrl-C or SIGTERM) before it finished; a sweep does not resume"
            notes.update({k: cut for k in unfinished - stopped})
        write_results(out_dir, notes)
        print(
            f"sweep: {out_dir / SWEEP_FILE} ({len(sweep)} points: "
            + ", ".join(f"{n} {s}" for s, n in sweep["status"].value_counts().items())
            + ")",
            flush=True,
        )
        if interrupted:
            raise Interrupted(
                f"a sweep does not resume: the points tried so far are in {out_dir / SWEEP_FILE}; "
                "to search again, start the sweep with another --out"
            )
        best = best_line(sweep, params)  # selected on the balanced validation error alone
        print(best or "best: no trial finished", flush=True)
        write_suite_report(out_dir, req.formats)
    failed = (sweep["status"] == FAILED).sum()
    return 1 if failed or best is None else 0


def sweep_command(args: argparse.Namespace, train_fn=None) -> int:
    """`ltbench sweep`: search the suite's space, select on the balanced validation error."""
    return run_sweep(plan_command(args, "sweep"), train_fn)
