"""One run over several processes: data parallel with `torch.distributed` (no Ray here).

Whoever starts the processes (the Ray Train adapter of the runner, or a test with
`torch.multiprocessing`) initialises the default process group first; the engine then reads
the rank and the number of processes (`ranks()`) and runs the same loop on every rank:

* Data: every rank computes the same global sample sequence of an epoch (the (seed, epoch)
  order of `ltbench.data.batches`: instance, class-balanced, any stage's sampler) and the same
  augmentation draws, cuts each global batch of the recipe's size into `world` contiguous
  shares (`ltbench.data.batches.rank_share`) and trains on its own. The shares of a batch are
  disjoint and together are the batch a single process would train on. A last batch smaller
  than `world` is dropped in training (at most world - 1 images per epoch), since a rank
  without an image cannot take part in the gradient exchange; evaluation keeps every image.
* Gradients: `DistributedDataParallel` averages them over ranks; each rank's mean loss is
  scaled by `n_rank * world / n_batch` (`loss_scale`), so the average is the gradient of the
  mean over the global batch even when the shares differ in size (a per-sample mean loss, as
  every plugin's plain loss is; a loss normalised by its class weights, as in a DRW phase, is
  normalised over each rank's share instead, as in other DDP code).
* BatchNorm is synchronised: its batch statistics are those of the whole global batch
  (`torch.nn.SyncBatchNorm` on CUDA, `GlobalBatchNorm` on CPU, where torch has none), so a
  trial's numbers do not depend on how many processes run it: the recipe's batch statistics
  are those of its global batch, the worker count is a runtime setting (a run may resume on
  another count), and a 2-worker run reproduces the 1-worker run. The price is one exchange
  of per-channel statistics per BatchNorm layer and step.
* Every rank builds its loss plugin from the same full training set, so the class counts (and
  GA / DRW schedules, which follow the epoch) are the same everywhere; mixup draws lambda from
  the same (seed, epoch) generator on every rank and pairs images within a rank's share.
* Metrics: the training sums and the evaluation counts (confusion matrix, calibration bins) are
  summed over ranks (`sum_over_ranks`) before anything is computed from them.
* Files: rank 0 alone holds the output folder's lock, writes config.yaml, metrics.jsonl,
  checkpoint.pt and result.json (`is_main`); the others wait for it at `hold_all`'s barriers
  and read the checkpoint it wrote when resuming.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ltbench.errors import LtbenchError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: `rank` in 0..world-1."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def ranks() -> Ranks:
    """The rank and size of the default process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def check_batch(batch_size: int, world: int, what: str = "batch_size") -> int:
    """The per-rank batch of a global batch: it must split evenly over the ranks."""
    if batch_size % world:
        raise LtbenchError(
            f"{what} {batch_size} does not split over {world} workers; give a {what} "
            f"divisible by {world} or another number of workers"
        )
    return batch_size // world


# ----------------------------------------------------------------------------------------------
# Collectives (no-ops in a single process)


def sum_over_ranks(*tensors: torch.Tensor) -> None:
    """Sum each tensor over ranks, in place."""
    if ranks().parallel:
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def loss_scale(n_local: int, device: torch.device) -> torch.Tensor | None:
    """`n_local * world / n_batch` for this step (see the module notes); None in one process."""
    r = ranks()
    if not r.parallel:
        return None
    total = torch.tensor(float(n_local), device=device, dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (n_local * r.world) / total


def first_bad(step: torch.Tensor) -> torch.Tensor:
    """The smallest non-negative step index over ranks (-1 where every rank has -1)."""
    if not ranks().parallel:
        return step
    big = torch.iinfo(torch.long).max
    value = torch.where(step < 0, torch.full_like(step, big), step).clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return torch.where(value == big, torch.full_like(value, -1), value)


def agree(value: Any) -> Any:
    """Rank 0's `value` on every rank (a decision taken where the files are)."""
    if not ranks().parallel:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if ranks().parallel:
        dist.barrier()


@contextmanager
def hold_all(
    folder: Path, hold, *, wait: bool = False, first: Callable[[], None] | None = None
) -> Iterator[Path]:
    """`hold(folder)` (the folder's lock) for the block, taken by rank 0 only; `first` runs on
    rank 0 inside it before the other ranks enter. An error there reaches every rank as the
    same one-line `LtbenchError`, so no rank waits for a rank that gave up."""
    r = ranks()
    if not r.parallel:
        with hold(folder, wait=wait) as held:
            if first is not None:
                first()
            yield held
        return
    if not r.is_main:
        error = agree(None)
        if error is not None:
            raise LtbenchError(error)
        yield folder
        barrier()
        return
    with hold(folder, wait=wait) as held:  # rank 0
        try:
            if first is not None:
                first()
        except LtbenchError as exc:
            agree(str(exc))
            raise
        agree(None)
        yield held
        barrier()  # the others are done with the folder before its lock is released


# ----------------------------------------------------------------------------------------------
# The model: synchronised BatchNorm, DistributedDataParallel


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch over all ranks.

    Two exchanges per call (the sum, then the centred sum of squares: the exact two-pass
    variance), through `torch.distributed.nn`'s all-reduce, whose backward pass sums the
    gradients over ranks, so the gradient is that of the global batch. The running statistics
    move as BatchNorm2d's would over the global batch. Eval mode is BatchNorm2d's own. Its
    state-dict keys are BatchNorm2d's, so checkpoints load into the plain network.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and ranks().parallel):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x if x.dtype == torch.float64 else x.float()
        dims = (0, 2, 3)
        count = torch.tensor(
            float(xf.numel() // xf.shape[1]), device=xf.device, dtype=xf.dtype
        ).reshape(1)
        totals = all_reduce(torch.cat([xf.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var.detach() * (n / (n - 1)) if float(n) > 1 else var.detach()
                self.running_mean.mul_(1 - m).add_(
                    mean.detach().to(self.running_mean.dtype), alpha=m
                )
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def _to_global_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            device=module.weight.device if module.affine else None,
            dtype=module.weight.dtype if module.affine else None,
        )
        out.load_state_dict(module.state_dict())
        if module.affine:
            out.weight.requires_grad_(module.weight.requires_grad)
            out.bias.requires_grad_(module.bias.requires_grad)
        out.train(module.training)
        return out
    for name, child in module.named_children():
        setattr(module, name, _to_global_bn(child))
    return module


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with every BatchNorm synchronised over ranks (unchanged in one process)."""
    if not ranks().parallel:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model)


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the training step calls: `model` wrapped in DistributedDataParallel when
    there are several ranks. BatchNorm buffers are equal on every rank already (synchronised
    statistics), so they are not broadcast at each step."""
    if not ranks().parallel:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = None
    if device.type == "cuda":
        ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(
        model,
        device_ids=ids,
        broadcast_buffers=False,
    )
