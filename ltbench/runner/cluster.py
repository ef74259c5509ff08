"""Ray-free cluster checks: the options of a run, the address probe, the per-trial share.

`ltbench.runner.commands` probes `--address` before anything else (a one-line error for an
unreachable cluster); `ltbench.runner.ray_adapter` shares the connected cluster's CPUs and
GPUs among the trials with `share_resources`.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

from ltbench.errors import LtbenchError

PROBE_TIMEOUT_S = 5.0
# The CPU a data-parallel trial's own process holds while its workers train (Ray Train starts
# and watches them from there; Tune needs a non-empty request).
TRIAL_DRIVER_CPU = 0.01


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how trials run: the cluster to join (None: start Ray here), per-trial
    resources (None: `share_resources`' defaults), concurrency and retries."""

    address: str | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    max_failures: int = 0
    workers_per_trial: int | None = None  # None: the suite's (1 unless it says otherwise)

    def trial_workers(self) -> int | None:
        """Workers of every trial asked for on the command line: `--workers-per-trial`, or
        `--gpus-per-trial G` with G > 1 (G workers of one GPU each); None: the suite's."""
        if self.gpus_per_trial is not None and self.gpus_per_trial > 1:
            return int(self.gpus_per_trial)
        return self.workers_per_trial


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


def local_cpus() -> int:
    """The CPUs this process may use (its affinity), as a Ray started here would count at most."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _check_shares(cpus: float | None, gpus: float | None) -> None:
    if gpus is not None and not (0 <= gpus <= 1 or (gpus > 1 and float(gpus).is_integer())):
        raise LtbenchError(
            f"--gpus-per-trial must be in [0, 1] (one device per trial, fractions pack trials) "
            f"or a whole number of GPUs > 1 (data-parallel workers), got {gpus:g}"
        )
    if cpus is not None and not 0 < cpus < math.inf:
        raise LtbenchError(f"--cpus-per-trial must be a number > 0, got {cpus:g}")


def check_cluster(options: ClusterOptions, ray_address_env: str | None = None) -> None:
    """The per-trial resources, checked before Ray starts: in range, and, when ltbench starts
    Ray on this machine, no more CPUs per trial than the machine has (one-line errors)."""
    _check_shares(options.cpus_per_trial, options.gpus_per_trial)
    workers = options.workers_per_trial
    if workers is not None and workers < 1:
        raise LtbenchError(f"--workers-per-trial must be an integer >= 1, got {workers}")
    gpus = options.gpus_per_trial
    if workers is not None and gpus is not None and gpus > 1 and workers != int(gpus):
        raise LtbenchError(
            f"--gpus-per-trial {gpus:g} means {int(gpus)} workers of one GPU each, but "
            f"--workers-per-trial is {workers}; give one of them"
        )
    cpus = options.cpus_per_trial
    if options.address is None and not ray_address_env and cpus is not None:
        here = local_cpus()
        if cpus > here:
            raise LtbenchError(
                f"--cpus-per-trial {cpus:g} is more than this machine has ({here}); give at "
                f"most {here}, or --address of a cluster with larger nodes"
            )


def share_resources(
    total_cpu: float, total_gpu: float, node_cpu: float, cpus: float | None, gpus: float | None
) -> dict[str, float]:
    """Per-trial {"cpu", "gpu"}: by default every CPU and GPU of the cluster is used.

    Without GPUs a trial takes one CPU (2 cores: 2 trials at once). With GPUs a trial takes one
    GPU, or the given fraction (0.25 packs 4 trials per GPU), and an even share of the CPUs.
    A request the cluster can never meet is an error here rather than a trial stuck pending.
    """
    _check_shares(cpus, gpus)
    if gpus is not None and gpus > 1:  # G workers of one GPU each (a data-parallel trial)
        gpus = 1.0
    if gpus is None:
        gpus = 1.0 if total_gpu >= 1 else 0.0
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
    if cpus > node_cpu:
        raise LtbenchError(
            f"--cpus-per-trial {cpus:g} is more than any node of the cluster has ({node_cpu:g})"
        )
    return {"cpu": float(cpus), "gpu": float(gpus)}


def check_workers(
    workers: list[int], resources: dict[str, float], total_cpu: float, total_gpu: float
) -> None:
    """Every data-parallel trial fits the cluster at all: its `n` workers of `resources` each
    plus its own process (`TRIAL_DRIVER_CPU`); otherwise a one-line error instead of a trial
    that waits forever."""
    for n in sorted(set(w for w in workers if w > 1)):
        cpu = n * resources["cpu"] + TRIAL_DRIVER_CPU
        gpu = n * resources["gpu"]
        if cpu > total_cpu + 1e-9 or gpu > total_gpu + 1e-9:
            raise LtbenchError(
                f"a trial of {n} workers needs {cpu:g} CPUs and {gpu:g} GPUs ({resources['cpu']:g}"
                f" CPU, {resources['gpu']:g} GPU per worker, {TRIAL_DRIVER_CPU:g} CPU for the "
                f"trial) but the Ray cluster has {total_cpu:g} CPUs and {total_gpu:g} GPUs; "
                "lower --cpus-per-trial or the workers per trial"
            )
