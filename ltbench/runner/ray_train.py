"""Ray Train for a data-parallel trial: the second and last module of ltbench that imports Ray.

A trial with `workers` > 1 runs inside its Tune trial (`ltbench.runner.ray_adapter`) as a
`ray.train.torch.TorchTrainer`: Ray Train places the worker group (one placement group, on one
node or several), sets up the `torch.distributed` process group (NCCL on GPUs, gloo on CPUs)
and runs `_worker_loop` on every worker, which calls the engine's `train` exactly as a
single-process trial does; the engine does the rest with `torch.distributed` alone
(`ltbench.engine.distributed`). Ray Train was chosen over launching `torch.distributed`
processes by hand because it already does what a cluster needs: it finds room for the whole
group across nodes, gives each worker its GPU, sets the rendezvous address, and ends every
worker when one fails, so that the Tune trial fails and is retried (`--max-failures`) from the
trial's checkpoint like any other.

Every worker reports each epoch with `ray.train.report` (Ray Train needs all of them to);
`TuneReportCallback` passes rank 0's report on to Tune, so ASHA and the progress lines see a
data-parallel trial as any other. Ray Train's own checkpoints and retries are not used: the
engine's `checkpoint.pt` is the one checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ltbench.engine.config import TrainConfig
from ltbench.errors import LtbenchError, one_line
from ltbench.runner.cluster import TRIAL_DRIVER_CPU
from ltbench.runner.trials import TrialSpec
from ltbench.schema import RESULT_FILE, read_result


def _worker_loop(config: dict[str, Any]) -> None:
    """One worker of a data-parallel trial (runs in a Ray Train worker process)."""
    import ray.train
    import torch

    from ltbench.engine.loop import train
    from ltbench.runner.hooks import TuneHooks

    torch.set_num_threads(config["threads"])
    cfg = TrainConfig.from_dict(config["cfg"], source="trial")
    hooks = TuneHooks(ray.train.report, config["last_epoch"])
    train(cfg, Path(config["tdir"]), hooks, resume=True, progress=False)


def data_parallel_train_fn(workers: int, resources: dict[str, float], storage: Path):
    """A `train_fn` for `ltbench.runner.worker.run_trial` that trains the trial on `workers`
    Ray Train workers of `resources` ({"cpu", "gpu"}) each; Ray Train keeps its own records
    under `storage`."""

    def train_fn(cfg: TrainConfig, tdir: Path, hooks, resume=True, progress=False):
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        use_gpu = resources.get("gpu", 0) > 0
        per_worker = {"CPU": resources["cpu"]}
        if use_gpu:
            per_worker["GPU"] = resources["gpu"]
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={
                "cfg": cfg.to_dict(),
                "tdir": str(tdir),
                "last_epoch": hooks.last_epoch,
                "threads": max(int(resources["cpu"]), 1),
            },
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker
            ),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(
                name=Path(tdir).name,
                storage_path=str(Path(storage).resolve()),
                callbacks=[TuneReportCallback()],
                failure_config=FailureConfig(max_failures=0),  # Tune retries the trial
            ),
        )
        try:
            trainer.fit()
        except Exception as exc:
            raise LtbenchError(_worker_error(exc)) from None
        result = read_result(Path(tdir) / RESULT_FILE)
        if result is None:
            raise LtbenchError(f"the workers ended without writing {Path(tdir) / RESULT_FILE}")
        return result

    return train_fn


def _worker_error(exc: BaseException) -> str:
    """The first worker error of a failed TorchTrainer run, as one line."""
    errors = getattr(exc, "worker_failures", None) or {}
    inner = next(iter(errors.values()), None) if isinstance(errors, dict) else None
    cause = inner or exc.__cause__ or exc
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(cause).__name__
    return f"data-parallel workers failed: {one_line(LtbenchError(text))}"


def trial_resources(resources: dict[str, float], workers_of: dict[str, int]):
    """What Tune reserves for a trial: `resources`, or for a data-parallel trial only its own
    process's share (its workers are Ray Train's placement group)."""
    driver = driver_resources()
    if all(n == 1 for n in workers_of.values()):
        return resources

    def of(config: dict[str, Any]) -> dict[str, float]:
        return driver if workers_of.get(config.get("key"), 1) > 1 else resources

    return of


def trial_train_fn(spec: TrialSpec, out_dir: str, resources: dict[str, float], train_fn):
    """The trial's `train_fn`: the given one, or Ray Train's workers for a data-parallel
    trial (a test's `train_fn` stands for the whole training, workers included)."""
    if spec.workers <= 1 or train_fn is not None:
        return train_fn
    return data_parallel_train_fn(spec.workers, resources, Path(out_dir) / "ray" / "train")


def driver_resources() -> dict[str, float]:
    """What Tune reserves for a data-parallel trial's own process."""
    return {"cpu": TRIAL_DRIVER_CPU, "gpu": 0.0}
