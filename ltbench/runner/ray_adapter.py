"""Ray Tune for suites and sweeps: with `ray_train` (Ray Train), the only modules importing Ray.

It receives plain data (the suite directory, trial keys or a base trial and a search space,
cluster options and a `Progress` to feed) and leaves its results in the suite directory;
the command layer (`ltbench.runner.commands`) plans before and collects after. Ray is imported
inside the functions, so importing this module is cheap.

`run_suite_trials` runs one Tune trial per planned trial key; `run_search` searches a method's
parameters with Optuna (random search without it) and stops poor points early with ASHA on the
balanced validation error (`ltbench.schema.SEARCH_METRIC`), or runs every point of a grid
(`tune.grid_search`, no early stopping). The suite directory, not Ray's experiment state, is
the source of truth (docs/DESIGN.md):

* `DIR/trials.json` lists every planned trial; Tune's parameter space is only a grid over the
  trial keys, and the trainable looks up its spec there.
* Each trial trains with `ltbench.engine.loop.train(cfg, DIR/trials/<key>, resume=True)`, which
  writes a checkpoint every epoch. A retry after a failure (`--max-failures`) or a `--resume`
  after a crash continues from that checkpoint; Tune checkpoints are not used.
* A trial whose `result.json` exists is never trained again: `--resume` leaves it out, and the
  trainable itself reports the stored result if Tune relaunches it.
* On a multi-node cluster, DIR must be on a filesystem every node can write (NFS, ...), and
  ltbench must be installed in the same environment on every node.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltbench.errors import LtbenchError
from ltbench.runner import orphans
from ltbench.runner.cluster import ClusterOptions, check_address, check_workers, share_resources
from ltbench.runner.progress import Progress, sigterm_as_interrupt
from ltbench.runner.ray_train import driver_resources, trial_resources, trial_train_fn
from ltbench.runner.tracking import MLflow, spec_params, tracking_environment, trial_params
from ltbench.runner.trials import TrialSpec, load_trials, point_spec, save_trial_spec
from ltbench.runner.worker import run_trial, run_unit
from ltbench.schema import (
    ERROR_FILE,
    SEARCH_METRIC,
    TRIAL_SPEC_FILE,
    trial_dir,
    trial_state,
)

# Set before Ray starts; trial processes inherit them (and get them through the runtime
# environment on an existing cluster).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AIR_NEW_OUTPUT": "0",  # legacy console output: quiet with verbose=0
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials keep the driver's working directory
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "1",  # a CPU-only trial does not see the GPUs
}


@dataclass(frozen=True)
class SearchPlan:
    """A sweep for `run_search`: the space, the number of points and ASHA's settings.

    `kind` "optuna": `space` is {name: {type: float|int, low, high}} (bounds inclusive), and
    ASHA stops poor points. "grid": `space` is {name: {type, values}}, every combination runs
    once to the end (`num_samples` is their number; the ASHA settings are unused).
    """

    space: dict[str, dict[str, Any]]
    num_samples: int
    max_t: int  # epochs of a trial that is not stopped
    grace_period: int  # epochs before ASHA may stop a trial
    reduction_factor: float
    seed: int = 0
    kind: str = "optuna"


def _set_env() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


# ----------------------------------------------------------------------------------------------
# Connecting to Ray


def connect(address: str | None) -> bool:
    """Join `address`, or start Ray on this machine; True if this call started Ray."""
    _set_env()
    if address:
        check_address(address)
    import ray

    if ray.is_initialized():  # e.g. a test session's cluster: use it, leave it running
        return False
    if address:
        try:
            ray.init(
                address=address,
                log_to_driver=False,
                logging_level="ERROR",
                runtime_env={"env_vars": dict(RAY_ENV)},
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LtbenchError(f"cannot join the Ray cluster at {address}: {first}") from None
        return True
    if os.environ.get("RAY_ADDRESS"):
        ray.init(
            log_to_driver=False, logging_level="ERROR", runtime_env={"env_vars": dict(RAY_ENV)}
        )
        return True
    ray.init(
        address="local",
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        object_store_memory=512 * 1024**2,
    )
    return True


@contextmanager
def ray_session(address: str | None, out_dir: Path | None = None):
    """Ray for the duration of a command; shut down only if this command started it. A Ray
    started on this machine is recorded in DIR (`ltbench.runner.orphans`) until it is shut down,
    so that the next driver can end what a killed one left."""
    started = connect(address)
    import ray

    if started and out_dir is not None and not address and not os.environ.get("RAY_ADDRESS"):
        node = getattr(ray._private.worker, "_global_node", None)  # no public API for it
        orphans.record(out_dir, node.get_session_dir_path() if node is not None else None)
    try:
        yield
    finally:
        if started:
            ray.shutdown()
            if out_dir is not None:
                orphans.forget(out_dir)


def cluster_resources(address: str) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The resources of the Ray cluster at `address` (`ltbench doctor --address`): its totals
    and each living node's, as Ray counts them."""
    import ray

    with ray_session(address):
        total = dict(ray.cluster_resources())
        nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    return total, nodes


def plan_resources(
    cpus: float | None, gpus: float | None, workers: list[int] = ()
) -> dict[str, float]:
    """Per-trial resources on the connected cluster (see `share_resources`); per worker for a
    data-parallel trial, each of whose `workers` must fit the cluster (`check_workers`)."""
    import ray

    total = ray.cluster_resources()
    node_cpu = max(
        (n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")),
        default=total.get("CPU", 0.0),
    )
    total_cpu, total_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    resources = share_resources(total_cpu, total_gpu, node_cpu, cpus, gpus)
    check_workers(list(workers), resources, total_cpu, total_gpu)
    return resources


# ----------------------------------------------------------------------------------------------
# The trainables: look up or build the trial's spec, then `run_trial` (ltbench.runner.worker)


def _suite_trainable(config: dict[str, Any], *, out_dir: str, **options) -> None:
    from ray import tune

    run_unit(config["key"], out_dir, report=tune.report, data_parallel=trial_train_fn, **options)


def _sweep_key(method: str, trial_id: str) -> str:
    return f"{method}_{trial_id.rsplit('_', 1)[-1]}"


def _point(config: dict[str, Any], space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The searched values of a Tune config, as the space's types."""
    return {
        k: int(config[k]) if dim["type"] == "int" else float(config[k]) for k, dim in space.items()
    }


def _sweep_trainable(
    config: dict[str, Any],
    *,
    out_dir: str,
    base: dict[str, Any],
    space: dict[str, dict[str, Any]],
    resources: dict[str, float],
    train_fn=None,
) -> None:
    from ray import tune

    base_spec = TrialSpec.from_dict(base)
    key = _sweep_key(base_spec.method, tune.get_context().get_trial_id())
    spec = point_spec(base_spec, key, _point(config, space))
    save_trial_spec(trial_dir(Path(out_dir), key), spec)
    train_fn = trial_train_fn(spec, out_dir, resources, train_fn)
    run_trial(spec, out_dir, resources, tune.report, train_fn)


def _trial_dirname(trial) -> str:
    return str(trial.config.get("key", trial.trial_id))


# ----------------------------------------------------------------------------------------------
# Progress: a Tune callback that forwards Tune's events to a `Progress` (ltbench.runner.progress)


def _tune_callback(progress: Progress, key_of: Callable[[Any], str | None], packs=None):
    from ray import tune

    def point(trial) -> dict[str, Any]:
        return {k: v for k, v in trial.config.items() if k != "key"}

    def members_ended(trial) -> bool:
        """A pack's end, told as its members' (`Progress.pack_ended`); False for a trial."""
        members = (packs or {}).get(key_of(trial) or "")
        if members:
            progress.pack_ended(trial.trial_id, members)
        return bool(members)

    class ForwardProgress(tune.Callback):
        """Runs in the driver; Ray's own console output is turned down."""

        def setup(self, **info):
            progress.begin()
            progress.watch_interrupts()  # Tune's SIGINT handler is in place by now

        def on_trial_start(self, iteration, trials, trial, **info):
            progress.started(trial.trial_id)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.reported()

        def on_trial_complete(self, iteration, trials, trial, **info):
            if members_ended(trial):
                return
            result = trial.last_result or {}
            progress.completed(trial.trial_id, key_of(trial), point(trial), result)

        def on_trial_error(self, iteration, trials, trial, **info):
            if members_ended(trial):
                return
            progress.errored(trial.trial_id, key_of(trial), point(trial), trial.get_error)

        def on_experiment_end(self, trials, **info):
            progress.ended()

    return ForwardProgress()


# ----------------------------------------------------------------------------------------------
# MLflow: Ray Tune's logger callback, with ltbench's parameters of each trial


def _mlflow_callbacks(mlflow: MLflow | None, params_of: Callable[[Any], dict[str, Any]]) -> list:
    """[the MLflow logger] with `--mlflow`, else []: one MLflow run per Tune trial, its
    parameters `params_of(trial)` beside Tune's config, its metrics every report (per epoch)."""
    if mlflow is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class LtbenchMLflow(MLflowLoggerCallback):
        """Ray's logger; a trial's run also gets the trial's ltbench settings as parameters."""

        def log_trial_start(self, trial):
            super().log_trial_start(trial)
            params = params_of(trial)
            if params:
                run_id = self._trial_runs[trial]
                self.mlflow_util.log_params(run_id=run_id, params_to_log=params)

    return [
        LtbenchMLflow(tracking_uri=mlflow.uri, experiment_name=mlflow.experiment, tags=mlflow.tags)
    ]


# ----------------------------------------------------------------------------------------------
# Running a Tuner with our settings


def _fit(
    trainable,
    param_space,
    *,
    out_dir: Path,
    name: str,
    resources,  # {"cpu", "gpu"}, or a function of the trial's config giving them
    cluster: ClusterOptions,
    callback,
    tune_config: dict[str, Any],
    more_callbacks: list | None = None,
):
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=cluster.max_concurrent,
            reuse_actors=False,
            trial_dirname_creator=_trial_dirname,
            **tune_config,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str((out_dir / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=cluster.max_failures),
            callbacks=[callback, *(more_callbacks or [])],
            verbose=0,
            log_to_file=True,  # trial stdout/stderr in DIR/ray/<name>/<trial>/
        ),
    )
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    # Tune logs every trial failure with its traceback; our progress lines say it in one line
    # and the traceback stays in DIR/ray/<experiment>/<trial>/error.txt.
    tune_logger.setLevel(logging.CRITICAL)
    try:
        with sigterm_as_interrupt():
            grid = tuner.fit()
    finally:
        tune_logger.setLevel(level)
    return grid


def _record_tune_errors(grid, out_dir: Path, key_of, packs: dict | None = None) -> None:
    """Write error.txt for trials that failed before our trainable could (e.g. an import);
    for a pack, into each of its members' folders."""
    for result in grid:
        unit = key_of(result) if result.error is not None else None
        for key in (packs or {}).get(unit, [unit]) if unit else ():
            if trial_state(out_dir, key)[0] == "missing":
                lines = [ln.strip() for ln in str(result.error).splitlines() if ln.strip()]
                tdir = trial_dir(out_dir, key)
                tdir.mkdir(parents=True, exist_ok=True)
                text = lines[-1] if lines else type(result.error).__name__
                (tdir / ERROR_FILE).write_text(text + "\n")


def _experiment_name(prefix: str) -> str:
    return f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------------------------
# The two entry points: a suite's trials, and a search


def run_suite_trials(
    out_dir: Path,
    name: str,
    keys: list[str],
    cluster: ClusterOptions,
    progress: Progress,
    *,
    on_start: Callable[[dict[str, float]], None] | None = None,
    train_fn=None,
    packs: dict[str, list[str]] | None = None,
    workers: dict[str, int] | None = None,
    mlflow: MLflow | None = None,
) -> None:
    """Train the trials `keys` of DIR/trials.json on Ray, one Tune trial each; `workers`
    gives the data-parallel trials' numbers of workers (absent: 1).

    `packs` maps a name among `keys` to the trial keys it trains as one pack (one Tune trial,
    `ltbench.runner.worker.run_pack`). `on_start(resources)` hears the per-trial resources once
    Ray is up. Every trial leaves result.json or error.txt in DIR/trials/<key> (or nothing, if
    interrupted). `mlflow`: log every Tune trial as an MLflow run.
    """
    from ray import tune

    with ray_session(cluster.address, out_dir), tracking_environment(mlflow):
        workers_of = {k: workers.get(k, 1) for k in keys} if workers else {}
        resources = plan_resources(
            cluster.cpus_per_trial, cluster.gpus_per_trial, list(workers_of.values())
        )
        if on_start is not None:
            on_start(resources)
        trainable = tune.with_parameters(
            _suite_trainable,
            out_dir=str(out_dir),
            resources=resources,
            train_fn=train_fn,
            packs=packs,
        )
        grid = _fit(
            trainable,
            {"key": tune.grid_search(list(keys))},
            out_dir=out_dir,
            name=_experiment_name(name),
            resources=trial_resources(resources, workers_of),
            cluster=cluster,
            callback=_tune_callback(progress, lambda trial: trial.config.get("key"), packs),
            tune_config={},
            more_callbacks=_mlflow_callbacks(
                mlflow,  # trials.json is written by `on_start`: read it once a trial starts
                lambda trial: trial_params(load_trials(out_dir), trial.config.get("key"), packs),
            ),
        )
        _record_tune_errors(grid, out_dir, lambda r: r.config.get("key"), packs)


def _search_algorithm(space: dict[str, dict[str, Any]], seed: int = 0, kind: str = "optuna"):
    from ray import tune

    if kind == "grid":  # Tune's default generator walks the grid; no searcher
        return (
            {name: tune.grid_search(list(dim["values"])) for name, dim in space.items()},
            None,
            "grid",
        )
    param_space = {}
    for name, dim in space.items():
        if dim["type"] == "int":  # randint's upper bound is exclusive; ours is inclusive
            param_space[name] = tune.randint(int(dim["low"]), int(dim["high"]) + 1)
        else:
            param_space[name] = tune.uniform(float(dim["low"]), float(dim["high"]))
    try:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        return param_space, OptunaSearch(seed=seed), "optuna"
    except ImportError:
        from ray.tune.search import BasicVariantGenerator

        return param_space, BasicVariantGenerator(random_state=seed), "random"


def run_search(
    out_dir: Path,
    name: str,
    base: TrialSpec,
    plan: SearchPlan,
    cluster: ClusterOptions,
    progress: Progress,
    *,
    on_start: Callable[[str], None] | None = None,
    train_fn=None,
    mlflow: MLflow | None = None,
) -> None:
    """Search `plan.space` around `base` on Ray, selecting on SEARCH_METRIC (lower is better):
    Optuna (or random) with ASHA, or every point of a grid without early stopping.

    `on_start(kind)` hears the search algorithm ("optuna", "random", "grid") once Ray is up. Every
    tried point leaves DIR/trials/<key>/trial.json (its spec) and result.json, error.txt or
    nothing (stopped early, or interrupted).
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    with ray_session(cluster.address, out_dir), tracking_environment(mlflow):
        resources = plan_resources(cluster.cpus_per_trial, cluster.gpus_per_trial, [base.workers])
        param_space, searcher, kind = _search_algorithm(plan.space, plan.seed, plan.kind)
        if on_start is not None:
            on_start(kind)
        trainable = tune.with_parameters(
            _sweep_trainable,
            out_dir=str(out_dir),
            base=base.to_dict(),
            space=plan.space,
            resources=resources,
            train_fn=train_fn,
        )
        tune_config: dict[str, Any] = {"metric": SEARCH_METRIC, "mode": "min"}
        if kind == "grid":
            tune_config["num_samples"] = 1  # once through the grid
        else:
            tune_config.update(
                search_alg=searcher,
                scheduler=ASHAScheduler(
                    time_attr="training_iteration",
                    max_t=plan.max_t,
                    grace_period=plan.grace_period,
                    reduction_factor=plan.reduction_factor,
                ),
                num_samples=plan.num_samples,
            )
        grid = _fit(
            trainable,
            param_space,
            out_dir=out_dir,
            name=_experiment_name(name),
            resources=driver_resources() if base.workers > 1 else resources,
            cluster=cluster,
            callback=_tune_callback(
                progress, lambda trial: _sweep_key(base.method, trial.trial_id)
            ),
            tune_config=tune_config,
            more_callbacks=_mlflow_callbacks(
                mlflow,
                lambda trial: (
                    {
                        k: v
                        for k, v in spec_params(base).items()
                        if k not in ("key", "loss_params") and k not in plan.space
                    }
                    | {"key": _sweep_key(base.method, trial.trial_id)}
                ),
            ),
        )

        def key_of(result) -> str:
            return _sweep_key(base.method, Path(result.path).name)

        for result in grid:  # a trial that failed before writing its spec still gets a row
            tdir = trial_dir(out_dir, key_of(result))
            if result.error is not None and not (tdir / TRIAL_SPEC_FILE).exists():
                point = {k: result.config[k] for k in plan.space if k in result.config}
                save_trial_spec(tdir, point_spec(base, key_of(result), point))
        _record_tune_errors(grid, out_dir, key_of)
