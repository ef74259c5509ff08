"""`ltbench doctor --self-test`: a tiny run of every code path this machine supports, each
compared with its reference path.

Every run is the same tiny training (synthetic-lt, 40 images per class before the long-tailed
draw at rho = 10, an eighth-width ResNet-32, 2 epochs of 6 steps, lr 0.05) through the engine's
public functions (`train`, `train_pack`) or the runner's command layer (`ltbench run`), in a
temporary folder inside `--out` that is removed afterwards. Agreement is measured on what a
run records: the per-epoch training loss (the largest relative difference over the epochs)
and the test top-1 error (the difference in points).

Two kinds of comparison:

* Same computation, another path (a pack of 3 against its members alone, 2 data-parallel
  workers against one, CUDA graphs against the eager step, the first stage of a two-stage
  method against the same run alone, Ray Tune trials against `train`): computed in float64
  (`LTBENCH_FLOAT64`, the engine's switch for exactly these checks, as in tests/test_pack.py
  and tests/test_distributed.py), against the float64 run alone; `EXACT_TOLERANCE`: 1e-6
  relative on the losses, 0.5 points on the top-1 error. In float32 these runs cannot be held
  that close: on this tiny network a rounding difference of 1e-7 in the first step grows to
  about 1e-3 - 1e-2 in the losses within 12 steps (2 float32 workers against one: 5e-3), so a
  float32 comparison could not tell a bug from rounding. A path that computes something else
  misses by far: a pack member whose update is dropped differs by about 0.5 relative.
* Precision: the float32 run against the float64 run (`FLOAT32_TOLERANCE`: 5e-2 relative, 10
  points; measured on CPU: 5e-3 and 3.8 points, the growth above), and bf16 autocast against
  the float32 run (`AMP_TOLERANCE`: 1e-1 relative, 10 points; measured on CPU: 1.1e-2, 0.2).
  These show that the device's float32 and bf16 kernels train this network as float64 does,
  to the accuracy such short runs allow; the top-1 tolerance is wide because a 2-epoch
  network is near chance and its errors move with the smallest change.

With `--address`, the Ray Tune trials run on the cluster's workers, which do not see the
float64 switch: they are held to `FLOAT32_TOLERANCE`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ltbench.engine.config import TrainConfig
from ltbench.engine.step import FLOAT64_ENV
from ltbench.errors import LtbenchError

TINY: dict[str, Any] = dict(
    dataset="synthetic-lt",
    n_max=40,
    imb_factor=0.1,
    width=0.125,
    batch_size=32,
    epochs=2,
    warmup_epochs=0,
    lr=0.05,
    eval_every=2,
    amp=False,
    num_workers=0,
    loss="ce",
)
SEEDS = (0, 1, 2)  # the pack's members; seed 0 is the reference of every other path


@dataclass(frozen=True)
class Tolerance:
    loss_rel: float  # largest relative difference of a per-epoch training loss
    top1_points: float  # difference of the test top-1 error, in points

    def describe(self) -> str:
        return f"loss {self.loss_rel:g} rel, top-1 {self.top1_points:g} pt"


EXACT_TOLERANCE = Tolerance(1e-6, 0.5)
FLOAT32_TOLERANCE = Tolerance(5e-2, 10.0)
AMP_TOLERANCE = Tolerance(1e-1, 10.0)


@dataclass(frozen=True)
class Row:
    """One line of the table: a path, its wall time, how it compares, the verdict."""

    path: str
    seconds: float | None
    agreement: str
    verdict: str  # PASS, FAIL or SKIP


@dataclass(frozen=True)
class Run:
    """What a finished run recorded: per-epoch training losses and the test top-1 error."""

    losses: list[float]
    top1: float

    @classmethod
    def read(cls, run_dir: Path) -> Run:
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        result = json.loads((run_dir / "result.json").read_text())
        return cls([r["train_loss"] for r in rows], float(result["top1_error"]))


def compare(run: Run, ref: Run, tol: Tolerance, what: str = "") -> tuple[str, bool]:
    """(agreement text, within tolerance) of `run` against its reference `ref`."""
    if len(run.losses) != len(ref.losses):
        return f"{what}{len(run.losses)} epochs recorded, reference {len(ref.losses)}", False
    values = [*run.losses, *ref.losses, run.top1, ref.top1]
    if not all(math.isfinite(v) for v in values):
        return f"{what}a loss or the top-1 error is not finite: {run} vs {ref}", False
    rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(run.losses, ref.losses, strict=True))
    points = abs(run.top1 - ref.top1)
    ok = rel <= tol.loss_rel and points <= tol.top1_points
    return f"{what}loss {rel:.1e} rel, top-1 {points:.2f} pt (tol {tol.describe()})", ok


class SelfTest:
    """The runs of one self-test, in `root`; the reference runs are trained once, on demand."""

    def __init__(self, device: torch.device, root: Path, address: str | None = None):
        self.device, self.root, self.address = device, root, address
        self._runs: dict[str, Run] = {}

    def cfg(self, seed: int = 0, **kw) -> TrainConfig:
        return TrainConfig(**{**TINY, "device": self.device.type, "seed": seed, **kw})

    def train(self, name: str, cfg: TrainConfig) -> Run:
        from ltbench.engine.loop import train

        train(cfg, self.root / name, progress=False)
        return Run.read(self.root / name)

    def reference(self, seed: int = 0) -> Run:
        """The float64 run alone (trained once): the reference of every path."""
        name = f"reference-{seed}"
        if name not in self._runs:
            with float64():
                self._runs[name] = self.train(name, self.cfg(seed))
        return self._runs[name]

    def float32(self) -> Run:
        """The float32 run alone on the device (trained once): the reference of amp."""
        if "float32" not in self._runs:
            self._runs["float32"] = self.train("float32", self.cfg(0))
        return self._runs["float32"]

    # -- the paths: each returns (agreement, ok), or raises Skip ---------------------------------

    def path_solo(self) -> tuple[str, bool]:
        return compare(self.float32(), self.reference(0), FLOAT32_TOLERANCE, "float32 vs 64: ")

    def path_amp(self) -> tuple[str, bool]:
        amp = self.train("amp", self.cfg(0, amp=True))
        return compare(amp, self.float32(), AMP_TOLERANCE, "bf16 vs float32: ")

    def path_pack(self) -> tuple[str, bool]:
        from ltbench.engine.fuse import check_fusion
        from ltbench.engine.pack import train_pack

        refs = {s: self.reference(s) for s in SEEDS}
        dirs = [self.root / f"pack-{s}" for s in SEEDS]
        with float64():
            outcome = train_pack([self.cfg(s) for s in SEEDS], dirs, progress=False)
        texts, ok = [], True
        for s, d, result in zip(SEEDS, dirs, outcome, strict=True):
            if isinstance(result, LtbenchError):
                texts.append(f"seed {s} failed: {result}")
                ok = False
                continue
            text, good = compare(Run.read(d), refs[s], EXACT_TOLERANCE)
            ok = ok and good
            texts.append(f"seed {s} " + ("ok" if good else f"DIFFERS: {text}"))
        fusion = check_fusion("auto", self.device)
        return f"{fusion} pack of {len(SEEDS)} vs alone: {'; '.join(texts)}", ok

    def path_cuda_graphs(self) -> tuple[str, bool]:
        if self.device.type != "cuda":
            raise Skip("no CUDA device: CUDA graphs need one")
        ref = self.reference(0)
        with float64():
            graphs = self.train("cuda-graphs", self.cfg(0, cuda_graphs=True))
        return compare(graphs, ref, EXACT_TOLERANCE, "graphs vs eager: ")

    def path_data_parallel(self) -> tuple[str, bool]:
        if self.device.type == "cuda":
            if torch.cuda.device_count() < 2:
                raise Skip("one GPU: NCCL data-parallel needs two")
            backend = "nccl"
        else:
            backend = "gloo"
        ref, out = self.reference(0), self.root / "data-parallel"
        with float64():
            run_ranks(2, backend, self.cfg(0), out)
        workers = json.loads((out / "result.json").read_text()).get("env", {}).get("workers")
        if workers != "2":
            return f"result.json says {workers} workers, not 2", False
        text, ok = compare(Run.read(out), ref, EXACT_TOLERANCE)
        return f"2 workers ({backend}) vs 1: {text}", ok

    def path_two_stage(self) -> tuple[str, bool]:
        from ltbench.engine.loop import train

        ref, out = self.reference(0), self.root / "two-stage"
        with float64():
            result = train(self.cfg(0, loss="crt", stage2={"epochs": 1}), out, progress=False)
        stage1 = Path(result["stage1_dir"])
        text, ok = compare(Run.read(stage1), ref, EXACT_TOLERANCE, "stage 1 vs ce alone: ")
        stage2 = result.get("stages", {}).get("stage2", {}).get("top1_error")
        if stage2 is None or stage2 != stage2:  # NaN
            return f"crt stage 2 recorded no top-1 error ({stage2})", False
        return f"crt {text}; stage 2 top-1 error {stage2:.1f}", ok

    def path_ray_tune(self) -> tuple[str, bool]:
        from ltbench.doctor.tune import run_tiny_suite

        gpus = 0.5 if self.device.type == "cuda" else 0.0
        refs = {s: self.reference(s) for s in SEEDS[:2]}
        with float64():  # a Ray started here passes it to its workers; a cluster's do not see it
            dirs = run_tiny_suite(
                self.root / "ray-tune", TINY, SEEDS[:2], gpus, self.address, self.device.type
            )
        tol = EXACT_TOLERANCE if self.address is None else FLOAT32_TOLERANCE
        texts, ok = [], True
        for seed, trial in dirs.items():
            text, good = compare(Run.read(trial), refs[seed], tol)
            ok = ok and good
            texts.append(f"seed {seed} " + ("ok" if good else f"DIFFERS: {text}"))
        flag = f"--gpus-per-trial {gpus:g}"
        return f"2 trials ({flag}) vs train: {'; '.join(texts)}", ok


@contextmanager
def float64():
    """Compute in float64 (the engine's test-only switch, `LTBENCH_FLOAT64`) inside; processes
    started inside (data-parallel workers, a Ray started here) inherit it."""
    saved = os.environ.get(FLOAT64_ENV)
    os.environ[FLOAT64_ENV] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[FLOAT64_ENV]
        else:
            os.environ[FLOAT64_ENV] = saved


class Skip(Exception):
    """A path this machine does not support; the message is the table's one-line reason."""


def run_path(test: SelfTest, name: str) -> Row:
    """Run one path and turn its outcome into a table row (an error is a FAIL naming it)."""
    method: Callable[[], tuple[str, bool]] = getattr(test, "path_" + name.replace("-", "_"))
    start = time.perf_counter()
    try:
        agreement, ok = method()
    except Skip as exc:
        return Row(name, None, f"skipped: {exc}", "SKIP")
    except (LtbenchError, RuntimeError, OSError, ValueError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        agreement, ok = f"error: {type(exc).__name__}: {first}", False
    return Row(name, time.perf_counter() - start, agreement, "PASS" if ok else "FAIL")


def self_test(
    device: torch.device,
    out: Path,
    paths: tuple[str, ...],
    address: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[Row]:
    """Every path in `paths`, in order, trained in a temporary folder inside `out`."""
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ltbench-doctor-", dir=out))
    rows = []
    try:
        test = SelfTest(device, root, address)
        for name in paths:
            echo(f"self-test: {name} ...")
            rows.append(run_path(test, name))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def format_table(rows: list[Row]) -> str:
    """The table: path, time, agreement, verdict."""
    width = max(len(r.path) for r in rows)
    lines = [f"{'path':<{width}}  {'time':>6}  verdict  agreement"]
    for r in rows:
        seconds = "-" if r.seconds is None else f"{r.seconds:5.1f}s"
        lines.append(f"{r.path:<{width}}  {seconds:>6}  {r.verdict:<7}  {r.agreement}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Data parallel: `world` processes of the engine's `train`, as Ray Train's workers would run it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, backend: str, cfg: dict, out: str) -> None:
    import torch.distributed as dist

    from ltbench.engine.loop import train

    warnings.simplefilter("ignore", FutureWarning)  # torch's notes on its own collectives
    if backend == "nccl":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        train(TrainConfig(**cfg), out, progress=False)
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, backend: str, cfg: TrainConfig, out: Path) -> None:
    """`train(cfg, out)` on `world` processes joined by `backend` (gloo or NCCL)."""
    import torch.multiprocessing as mp

    try:
        mp.start_processes(
            _rank_main,
            args=(world, _free_port(), backend, cfg.to_dict(), str(out)),
            nprocs=world,
            join=True,
            start_method="spawn",
        )
    except mp.ProcessRaisedException as exc:
        last = str(exc).strip().splitlines()[-1]
        raise LtbenchError(f"a data-parallel worker failed: {last}") from None
