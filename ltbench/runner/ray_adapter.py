"""Suites and hyper-parameter searches on Ray Tune: the only module of ltbench that imports Ray.

`ltbench run` turns a suite (`ltbench.runner.suite`) into one Tune trial per (method, dataset, rho,
seed[, subset seed]); `ltbench sweep` searches a method's parameters with Optuna (random search
without it) and stops poor points early with ASHA on the validation error.

The suite directory, not Ray's experiment state, is the source of truth (docs/DESIGN.md):

* `DIR/trials.json` lists every planned trial; Tune's parameter space is only a grid over the
  trial keys, and the trainable looks up its spec there.
* Each trial trains with `ltbench.engine.loop.train(cfg, DIR/trials/<key>, resume=True)`, which writes
  a checkpoint every epoch. A retry after a failure (`--max-failures`) or a `--resume` after a
  crash continues from that checkpoint; Tune checkpoints are not used.
* A trial whose `result.json` exists is never trained again: `--resume` leaves it out, and the
  trainable itself reports the stored result if Tune relaunches it.
* On a multi-node cluster, DIR must be on a filesystem every node can write (NFS, ...), and
  ltbench must be installed in the same environment on every node.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import signal
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ltbench.errors import LtbenchError
from ltbench.runner.results import (
    ERROR_FILE,
    finished_keys,
    read_result,
    trial_dir,
    trial_state,
    write_results,
    write_sweep,
)
from ltbench.runner.suite import (
    TrialSpec,
    apply_overrides,
    check_methods,
    check_trials,
    default_out,
    expand,
    first_difference,
    format_rho,
    load_suite,
    load_trials,
    save_trials,
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
SEARCH_METRIC = "val_top1_error"
PROBE_TIMEOUT_S = 5.0
STATUS_EVERY_S = 30.0


def _set_env() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


# ----------------------------------------------------------------------------------------------
# Connecting to Ray


def check_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """A quick TCP probe of host:port, so an unreachable cluster is a one-line error."""
    if address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        raise LtbenchError(
            f"--address {address}: Ray Client addresses (ray://) are not supported; run ltbench "
            "on a node of the cluster and pass the head's host:port"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LtbenchError(f"--address {address!r}: expected host:port, e.g. 10.0.0.1:6379")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise LtbenchError(
            f"cannot reach a Ray cluster at {address} ({reason}); start one with "
            "`ray start --head --port=PORT` or check the address"
        ) from None


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
def ray_session(address: str | None):
    """Ray for the duration of a command; shut down only if this command started it."""
    started = connect(address)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def plan_resources(cpus: float | None, gpus: float | None) -> dict[str, float]:
    """Per-trial resources on the connected cluster (see `share_resources`)."""
    import ray

    total = ray.cluster_resources()
    node_cpu = max(
        (n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")),
        default=total.get("CPU", 0.0),
    )
    return share_resources(total.get("CPU", 0.0), total.get("GPU", 0.0), node_cpu, cpus, gpus)


def share_resources(
    total_cpu: float, total_gpu: float, node_cpu: float, cpus: float | None, gpus: float | None
) -> dict[str, float]:
    """Per-trial {"cpu", "gpu"}: by default every CPU and GPU of the cluster is used.

    Without GPUs a trial takes one CPU (2 cores: 2 trials at once). With GPUs a trial takes one
    GPU, or the given fraction (0.25 packs 4 trials per GPU), and an even share of the CPUs.
    A request the cluster can never meet is an error here rather than a trial stuck pending.
    """
    if gpus is None:
        gpus = 1.0 if total_gpu >= 1 else 0.0
    if not 0 <= gpus <= 1:
        raise LtbenchError(
            f"--gpus-per-trial must be in [0, 1] (a trial trains on one device), got {gpus:g}"
        )
    if gpus > 0 and total_gpu == 0:
        raise LtbenchError(
            f"--gpus-per-trial {gpus:g} asks for GPUs but the Ray cluster has none; "
            "pass --gpus-per-trial 0"
        )
    if cpus is None:
        if gpus > 0:
            slots = max(math.floor(total_gpu / gpus + 1e-9), 1)
            cpus = float(max(math.floor(total_cpu / slots), 1))
        else:
            cpus = 1.0
    if cpus <= 0:
        raise LtbenchError(f"--cpus-per-trial must be > 0, got {cpus:g}")
    if cpus > node_cpu:
        raise LtbenchError(
            f"--cpus-per-trial {cpus:g} is more than any node of the cluster has ({node_cpu:g})"
        )
    return {"cpu": float(cpus), "gpu": float(gpus)}


# ----------------------------------------------------------------------------------------------
# The trial: train one spec in its directory, reporting every epoch to Tune


class _TuneHooks:
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


def _final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    out = {
        "top1_error": result.get("top1_error"),
        "epochs": result.get("epochs"),
        "wall_seconds": result.get("wall_seconds"),
        "finished": True,
    }
    if result.get("val_top1_error") is not None:
        out[SEARCH_METRIC] = result["val_top1_error"]
    return {k: v for k, v in out.items() if v is not None}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, LtbenchError):
        return text or "error"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_trial(
    spec: TrialSpec, out_dir: str | Path, resources: dict[str, float], report, train_fn=None
) -> dict[str, Any]:
    """Train one trial into DIR/trials/<key> (or report its stored result); Ray-free."""
    tdir = trial_dir(Path(out_dir), spec.key)
    stored = read_result(tdir / "result.json")
    if stored is not None:  # finished earlier: never train or overwrite it again
        report(_final_metrics(stored))
        return stored
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / ERROR_FILE).unlink(missing_ok=True)
    if train_fn is None:
        from ltbench.engine.loop import train as train_fn
    import torch

    from ltbench.engine.config import resolve

    # Ray sets OMP_NUM_THREADS=1 for trials with < 2 CPUs; use the CPUs the trial holds.
    torch.set_num_threads(max(int(resources.get("cpu", 1)), 1))
    cfg = spec.train_config()
    # The device follows the trial's resources, never torch.cuda.is_available(): on a GPU node
    # a CPU-only trial may still see the GPUs.
    cfg.device = "cuda" if resources.get("gpu", 0) > 0 else "cpu"
    cfg.num_workers = min(cfg.num_workers, max(int(resources.get("cpu", 1)) - 1, 0))
    try:
        epochs = resolve(cfg).epochs
        hooks = _TuneHooks(report, epochs)
        result = train_fn(cfg, tdir, hooks=hooks, resume=True, progress=False)
    except Exception as exc:
        (tdir / ERROR_FILE).write_text(_one_line(exc) + "\n")
        raise
    report(_final_metrics(result))
    return result


def _suite_trainable(
    config: dict[str, Any], *, out_dir: str, resources: dict[str, float], train_fn=None
) -> None:
    from ray import tune

    spec = load_trials(Path(out_dir))[config["key"]]
    run_trial(spec, out_dir, resources, tune.report, train_fn)


def _sweep_key(method: str, trial_id: str) -> str:
    return f"{method}_{trial_id.rsplit('_', 1)[-1]}"


def _sweep_spec(base: TrialSpec, key: str, point: dict[str, Any]) -> TrialSpec:
    params = {**base.params, **point}
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
    )
    config = {**base.config, "loss_params": dict(params)}
    return TrialSpec(
        key,
        f"{base.method} ({shown})",
        base.loss,
        params,
        base.mixup_alpha,
        base.dataset,
        base.rho,
        base.seed,
        base.subset_seed,
        config,
    )


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
    point = {
        k: int(config[k]) if dim["type"] == "int" else float(config[k]) for k, dim in space.items()
    }
    key = _sweep_key(base_spec.method, tune.get_context().get_trial_id())
    spec = _sweep_spec(base_spec, key, point)
    tdir = trial_dir(Path(out_dir), key)
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "trial.json").write_text(json.dumps(spec.to_dict(), indent=1))
    run_trial(spec, out_dir, resources, tune.report, train_fn)


def _trial_dirname(trial) -> str:
    return str(trial.config.get("key", trial.trial_id))


# ----------------------------------------------------------------------------------------------
# Live progress: a line per finished or failed trial, and a periodic status line


def _make_progress(
    total: int,
    done: int,
    failed: int,
    best: tuple[float, str] | None,
    out_dir: str,
    key_of=lambda trial: trial.config.get("key"),
    best_metric: str = "top1_error",
    every: float = STATUS_EVERY_S,
):
    """The progress callback; `best` ranks finished trials by `best_metric` (lower is better)."""
    best_label = "top-1 error" if best_metric == "top1_error" else "validation error"
    from ray import tune

    class Progress(tune.Callback):
        """Prints to stdout from the driver; Ray's own console output is turned down."""

        def __init__(self):
            self.total, self.done, self.failed, self.best = total, done, failed, best
            self.running: set[str] = set()
            self.last_status = time.monotonic()

        def _name(self, trial) -> str:
            key = key_of(trial) or trial.trial_id
            point = {k: v for k, v in trial.config.items() if k != "key"}
            if not point:
                return key
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items()
            )
            return f"{key} ({shown})"

        def _status(self) -> None:
            pending = max(self.total - self.done - self.failed - len(self.running), 0)
            best = f"{self.best[0]:.2f}% ({self.best[1]})" if self.best else "-"
            print(
                f"trials: done {self.done} / running {len(self.running)} / failed "
                f"{self.failed} / pending {pending}; best {best_label} {best}",
                flush=True,
            )
            self.last_status = time.monotonic()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if time.monotonic() - self.last_status >= every:
                self._status()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            self.done += 1
            result = trial.last_result or {}
            err = result.get("top1_error")
            name = self._name(trial)
            if result.get("finished") and err is not None:
                desc = name
                key = trial.config.get("key")
                if key:
                    spec = load_trials(Path(out_dir)).get(key)
                    if spec is not None:
                        desc = f"{spec.method}, {spec.dataset}, rho {format_rho(spec.rho)}"
                score = result.get(best_metric)
                if score is not None and (self.best is None or score < self.best[0]):
                    self.best = (score, desc)
                secs = result.get("wall_seconds")
                took = f" ({secs:.0f} s)" if secs is not None else ""
                print(
                    f"[{self.done + self.failed}/{self.total}] finished {name}: top-1 error "
                    f"{err:.2f}%{took}",
                    flush=True,
                )
            else:
                epochs = result.get("training_iteration", 0)
                val = result.get(SEARCH_METRIC)
                shown = f", val error {val:.2f}%" if val is not None else ""
                print(
                    f"[{self.done + self.failed}/{self.total}] stopped early {name} after "
                    f"{epochs} epoch(s){shown}",
                    flush=True,
                )
            self._status()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.running.discard(trial.trial_id)
            self.failed += 1
            key = key_of(trial)
            message = trial_state(Path(out_dir), key)[2] if key else ""
            if not message:
                try:
                    text = trial.get_error() or ""
                except Exception:  # the message is a courtesy; never let it break the run
                    text = ""
                lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
                message = lines[-1] if lines else "see the Ray logs"
            print(
                f"[{self.done + self.failed}/{self.total}] FAILED {self._name(trial)}: {message}",
                flush=True,
            )
            self._status()

        def on_experiment_end(self, trials, **info):
            if time.monotonic() - self.last_status > 1.0:
                self._status()

    return Progress()


# ----------------------------------------------------------------------------------------------
# Running a Tuner with our settings


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops the run like Ctrl-C (Tune saves its state, we write the results)."""
    if hasattr(signal, "SIGTERM") and _is_main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
    else:
        yield


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _fit(
    trainable,
    param_space,
    *,
    out_dir: Path,
    name: str,
    resources: dict[str, float],
    max_failures: int,
    max_concurrent: int | None,
    callback,
    tune_config: dict[str, Any],
):
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            reuse_actors=False,
            trial_dirname_creator=_trial_dirname,
            **tune_config,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str((out_dir / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[callback],
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
        with _sigterm_as_interrupt():
            grid = tuner.fit()
    finally:
        tune_logger.setLevel(level)
    return grid


def _record_tune_errors(grid, out_dir: Path, key_of) -> None:
    """Write error.txt for trials that failed before our trainable could (e.g. an import)."""
    for result in grid:
        if result.error is None:
            continue
        key = key_of(result)
        if not key:
            continue
        status, _, _ = trial_state(out_dir, key)
        if status != "missing":
            continue
        lines = [ln.strip() for ln in str(result.error).splitlines() if ln.strip()]
        tdir = trial_dir(out_dir, key)
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / ERROR_FILE).write_text((lines[-1] if lines else type(result.error).__name__) + "\n")


def _experiment_name(prefix: str) -> str:
    return f"{prefix}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _write_suite_yaml(
    out_dir: Path,
    suite,
    preset: str,
    overrides: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """DIR/suite.yaml: the resolved suite; a resumed run keeps the first run's `created`."""
    path = out_dir / "suite.yaml"
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


def _report_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in str(text).split(",") if f.strip())
    if formats == ("none",):
        return ()
    bad = [f for f in formats if f not in ("md", "pdf")]
    if bad or not formats:
        raise LtbenchError(f"--report {text!r}: expected md, pdf, md,pdf or none")
    return formats


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


def _has_results(out_dir: Path) -> bool:
    if not out_dir.exists():
        return False
    if any((out_dir / name).exists() for name in ("trials.json", "results.csv", "sweep.csv")):
        return True
    trials = out_dir / "trials"
    return trials.is_dir() and any(trials.iterdir())


# ----------------------------------------------------------------------------------------------
# ltbench run


def plan_suite(args: argparse.Namespace) -> tuple[Any, dict[str, Any], list[TrialSpec]]:
    """Load, override, expand and check a suite (no Ray); returns (suite, preset, trials)."""
    suite = load_suite(args.suite)
    if suite.search is not None:
        raise LtbenchError(
            f"suite {suite.name!r} is a search ({suite.source} has a search block); "
            f"run it with `ltbench sweep --suite {args.suite}`"
        )
    suite, overrides = apply_overrides(
        suite,
        datasets=args.dataset,
        rhos=args.rho,
        seeds=args.seeds,
        preset=args.preset,
        data_root=args.data_root,
        download=args.download,
    )
    check_methods(suite)
    trials = expand(suite, overrides)
    check_trials(trials)
    return suite, overrides, trials


def _check_counts(args: argparse.Namespace) -> None:
    if args.max_failures < 0:
        raise LtbenchError(f"--max-failures must be >= 0, got {args.max_failures}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise LtbenchError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")


def run_suite_command(args: argparse.Namespace, train_fn=None) -> int:
    """`ltbench run`: every trial of a suite on Ray Tune; exit 1 if a trial failed or is left."""
    _check_counts(args)
    formats = _report_formats(args.report)
    if args.address:
        check_address(args.address)
    suite, overrides, trials = plan_suite(args)
    out_dir = Path(args.out or default_out(args.suite, args.preset)).resolve()
    saved = load_trials(out_dir) if out_dir.exists() else {}
    if _has_results(out_dir) and not args.resume:
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
    every = {**saved, **{t.key: t for t in trials}}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_suite_yaml(out_dir, suite, args.preset, overrides)
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
            err = read_result(trial_dir(out_dir, k) / "result.json").get("top1_error")
            spec = every[k]
            if err is not None and (best is None or err < best[0]):
                best = (err, f"{spec.method}, {spec.dataset}, rho {format_rho(spec.rho)}")
        from ray import tune

        with ray_session(args.address):
            resources = plan_resources(args.cpus_per_trial, args.gpus_per_trial)
            print(
                f"resources per trial: {resources['cpu']:g} CPU, {resources['gpu']:g} GPU",
                flush=True,
            )
            trainable = tune.with_parameters(
                _suite_trainable, out_dir=str(out_dir), resources=resources, train_fn=train_fn
            )
            callback = _make_progress(len(keys), len(keys) - len(pending), 0, best, str(out_dir))
            grid = _fit(
                trainable,
                {"key": tune.grid_search(pending)},
                out_dir=out_dir,
                name=_experiment_name(suite.name),
                resources=resources,
                max_failures=args.max_failures,
                max_concurrent=args.max_concurrent,
                callback=callback,
                tune_config={},
            )
            _record_tune_errors(grid, out_dir, lambda r: r.config.get("key"))

    results, _ = write_results(out_dir)
    mine = results[results["trial"].isin(keys)]
    failed = mine[mine["status"] == "failed"]
    missing = mine[mine["status"] == "missing"]
    print(
        f"results: {out_dir / 'results.csv'} ({len(mine) - len(failed) - len(missing)} "
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
    _build_report(out_dir, formats)
    return 1 if len(failed) or len(missing) else 0


# ----------------------------------------------------------------------------------------------
# ltbench sweep


def plan_sweep(args: argparse.Namespace) -> tuple[Any, dict[str, Any], TrialSpec]:
    """Load and check a search suite (no Ray); returns (suite, preset overrides, base trial)."""
    from ltbench.engine.config import resolve
    from ltbench.sdk.registry import get_spec

    suite = load_suite(args.suite)
    if suite.search is None:
        raise LtbenchError(
            f"suite {suite.name!r} has no search block ({suite.source}); `ltbench sweep` needs "
            "one, see sweeps/kps-search.yaml"
        )
    suite, overrides = apply_overrides(
        suite,
        datasets=args.dataset,
        rhos=args.rho,
        preset=args.preset,
        preset_seeds=False,
        data_root=args.data_root,
        download=args.download,
    )
    if args.num_samples is not None:
        if args.num_samples < 1:
            raise LtbenchError(f"--num-samples must be >= 1, got {args.num_samples}")
        import dataclasses

        suite = dataclasses.replace(
            suite, search=dataclasses.replace(suite.search, num_samples=args.num_samples)
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
    for name in suite.search.space:
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


def _search_algorithm(space: dict[str, dict[str, Any]], seed: int = 0):
    from ray import tune

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


def sweep_command(args: argparse.Namespace, train_fn=None) -> int:
    """`ltbench sweep`: search the suite's space, select on validation error, write sweep.csv."""
    from ltbench.engine.config import resolve

    _check_counts(args)
    formats = _report_formats(args.report)
    if args.address:
        check_address(args.address)

    suite, overrides, base = plan_sweep(args)
    search = suite.search
    out_dir = Path(args.out or default_out(args.suite, args.preset)).resolve()
    if _has_results(out_dir):
        raise LtbenchError(f"{out_dir} already holds results; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = resolve(base.train_config()).epochs
    grace = min(max(round(search.grace_fraction * epochs), 1), epochs)
    _write_suite_yaml(
        out_dir,
        suite,
        args.preset,
        overrides,
        {
            "search": {
                "num_samples": search.num_samples,
                "metric": SEARCH_METRIC,
                "mode": "min",
                "scheduler": "ASHA",
                "grace_period": grace,
                "reduction_factor": search.reduction_factor,
                "max_t": epochs,
            }
        },
    )
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    with ray_session(args.address):
        resources = plan_resources(args.cpus_per_trial, args.gpus_per_trial)
        param_space, searcher, kind = _search_algorithm(search.space)
        print(
            f"sweep {suite.name}: {search.num_samples} points of "
            f"{', '.join(search.space)} ({kind} search, ASHA on {SEARCH_METRIC}, "
            f"{epochs} epochs, grace {grace}) on {base.dataset} rho {format_rho(base.rho)} "
            f"-> {out_dir}",
            flush=True,
        )
        trainable = tune.with_parameters(
            _sweep_trainable,
            out_dir=str(out_dir),
            base=base.to_dict(),
            space=search.space,
            resources=resources,
            train_fn=train_fn,
        )
        callback = _make_progress(
            search.num_samples,
            0,
            0,
            None,
            str(out_dir),
            key_of=lambda trial: _sweep_key(base.method, trial.trial_id),
            best_metric=SEARCH_METRIC,
        )
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=epochs,
            grace_period=grace,
            reduction_factor=search.reduction_factor,
        )
        grid = _fit(
            trainable,
            param_space,
            out_dir=out_dir,
            name=_experiment_name(suite.name),
            resources=resources,
            max_failures=args.max_failures,
            max_concurrent=args.max_concurrent,
            callback=callback,
            tune_config={
                "metric": SEARCH_METRIC,
                "mode": "min",
                "search_alg": searcher,
                "scheduler": scheduler,
                "num_samples": search.num_samples,
            },
        )

        def key_of(result) -> str:
            return _sweep_key(base.method, Path(result.path).name)

        for result in grid:  # a trial that failed before writing its spec still gets a row
            spec_path = trial_dir(out_dir, key_of(result)) / "trial.json"
            if result.error is not None and not spec_path.exists():
                point = {k: result.config[k] for k in search.space if k in result.config}
                spec_path.parent.mkdir(parents=True, exist_ok=True)
                spec = _sweep_spec(base, key_of(result), point)
                spec_path.write_text(json.dumps(spec.to_dict(), indent=1))
        _record_tune_errors(grid, out_dir, key_of)

    # Every trial wrote its spec into its directory; gather them into trials.json.
    specs = []
    for path in sorted((out_dir / "trials").glob("*/trial.json")):
        specs.append(TrialSpec.from_dict(json.loads(path.read_text())))
    save_trials(out_dir, specs)
    stopped = {s.key for s in specs if trial_state(out_dir, s.key)[0] == "missing"}
    sweep = write_sweep(out_dir, tuple(search.space), stopped)
    notes = {
        k: f"stopped early by ASHA after {n} epoch(s)"
        for k, n in zip(sweep["trial"], sweep["epochs"], strict=True)
        if k in stopped
    }
    write_results(out_dir, notes)
    print(
        f"sweep: {out_dir / 'sweep.csv'} ({len(sweep)} points: "
        + ", ".join(f"{n} {s}" for s, n in sweep["status"].value_counts().items())
        + ")",
        flush=True,
    )
    finished = sweep[sweep["status"] == "finished"].dropna(subset=["val_top1_error"])
    if len(finished):
        best = finished.loc[finished["val_top1_error"].idxmin()]
        point = ", ".join(
            f"{k}={best[k]:.4g}" if isinstance(best[k], float) else f"{k}={best[k]}"
            for k in search.space
        )
        print(
            f"best (selected on validation): {point}: validation error "
            f"{best['val_top1_error']:.2f}%, test error {best['test_top1_error']:.2f}% "
            f"(trial {best['trial']})",
            flush=True,
        )
    else:
        print("best: no trial finished", flush=True)
    _build_report(out_dir, formats)
    failed = (sweep["status"] == "failed").sum()
    return 1 if failed or not len(finished) else 0
