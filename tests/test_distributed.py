"""One run over several processes (`ltbench.engine.distributed`), on CPU with gloo.

The processes are started here with `torch.multiprocessing` (the runner starts them with Ray
Train; the engine does not know who did). The equivalence runs compute in float64
(`LTBENCH_FLOAT64`, the test-only switch of `ltbench.engine.step`) with synchronised
BatchNorm, so a 2-process run and the 1-process run with the same global batch differ only in
the order of their sums: the final predictions are equal, and the per-epoch training losses
agree to 1e-6 relative, the resolution of their float32 sums on the device (the networks
themselves agree to about 1e-11 after a few steps; a large learning rate on these tiny batches
amplifies such differences, so the runs use lr 0.01).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from ltbench.data.batches import TensorBatches, TensorData, rank_share
from ltbench.engine.config import TrainConfig
from ltbench.errors import LtbenchError
from ltbench.runfiles import TENSORBOARD_SUFFIX

LOSS_TOLERANCE = 1e-6  # relative, per-epoch train_loss (summed in float32), 1 process against 2


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        abs(x - y) <= LOSS_TOLERANCE * abs(x) for x, y in zip(a, b, strict=True)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Kill:
    """Hooks that end the process (like a kill) after epoch `after` was checkpointed."""

    def __init__(self, after: int):
        self.after = after

    def on_epoch_end(self, epoch, metrics, checkpoint):
        if epoch == self.after:
            os._exit(3)


def _rank_main(rank, world, port, cfg_dict, out, kill_after, resume):
    import torch.distributed as dist

    from ltbench.engine.loop import train

    torch.set_num_threads(1)
    os.environ["LTBENCH_FLOAT64"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        hooks = _Kill(kill_after) if kill_after else None
        train(TrainConfig(**cfg_dict), out, hooks, resume=resume, progress=False)
    finally:
        dist.destroy_process_group()


def run_ranks(world, cfg, out, *, kill_after=0, resume=False):
    """`train(cfg, out)` on `world` gloo processes."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _rank_main,
        args=(world, _free_port(), cfg.to_dict(), str(out), kill_after, resume),
        nprocs=world,
        join=True,
        start_method="spawn",
    )


def run_single(cfg, out, monkeypatch):
    from ltbench.engine.loop import train

    monkeypatch.setenv("LTBENCH_FLOAT64", "1")
    return train(cfg, out, progress=False)


def tiny(**kw) -> TrainConfig:
    base = dict(
        dataset="synthetic-lt",
        n_max=40,
        imb_factor=0.1,
        width=0.25,
        epochs=2,
        batch_size=32,
        warmup_epochs=0,
        lr=0.01,
        device="cpu",
        amp=False,
        channels_last=False,
        num_workers=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows]


def _predictions(run: Path, cfg: TrainConfig) -> torch.Tensor:
    """Test-set predictions of the network saved in `run` (float64)."""
    from ltbench.engine.config import resolve
    from ltbench.engine.models import build_model
    from ltbench.engine.step import load_run_data
    from ltbench.sdk.registry import get_spec

    cfg = resolve(cfg)
    bundle = load_run_data(cfg)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    head = get_spec(cfg.loss).head
    model = build_model(cfg.model, bundle.num_classes, head=head, width=cfg.width)
    model = model.double()
    model.load_state_dict(state["model"])
    model.eval()
    batches = TensorBatches(bundle.test, 256, train=False, mean=bundle.mean, std=bundle.std)
    with torch.no_grad():
        return torch.cat([model(x.double()).argmax(1) for x, _ in batches])


# ----------------------------------------------------------------------------------------------
# The shares of a batch


def test_rank_shares_are_disjoint_and_make_up_the_batch():
    for n in (1, 7, 32, 33):
        for world in (1, 2, 3, 4):
            parts = [rank_share(n, r, world) for r in range(world)]
            assert parts[0].start == 0 and parts[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("sampling", ["instance", "class-balanced"])
def test_two_ranks_see_the_single_process_batches_split_in_two(sampling):
    torch.manual_seed(0)
    data = TensorData(
        torch.randint(0, 255, (75, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 5, (75,))
    )

    def batches(rank, world):
        it = TensorBatches(data, 16, train=True, seed=3, sampling=sampling, rank=rank, world=world)
        it.set_epoch(2)
        return list(it)

    whole = batches(0, 1)
    shares = [batches(r, 2) for r in range(2)]
    # 75 = 4 x 16 + 11: five global batches; the last (11 >= 2 images) is kept and split 6 / 5
    assert len(whole) == len(shares[0]) == len(shares[1]) == 5
    for b, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([shares[0][b][0], shares[1][b][0]]), x)
        assert torch.equal(torch.cat([shares[0][b][1], shares[1][b][1]]), y)
    # a last batch smaller than the ranks is dropped in training (one image over 2 ranks)
    last = TensorBatches(data.subset(range(33)), 16, train=True, rank=1, world=2)
    assert len(last) == 2 and len(TensorBatches(data.subset(range(33)), 16, train=True)) == 3


def test_a_global_batch_that_does_not_split_is_refused():
    from ltbench.engine.distributed import check_batch

    assert check_batch(512, 8) == 64
    with pytest.raises(LtbenchError, match="batch_size 30 does not split over 4 workers"):
        check_batch(30, 4)


# ----------------------------------------------------------------------------------------------
# Two processes against one


@pytest.mark.parametrize(
    "loss, extra",
    [
        ("kps-ga", {}),  # GA moves the margins with the epoch; instance sampling
        pytest.param(  # stage 1 in the cache, class-balanced stage 2 on a frozen backbone
            "crt", {"epochs": 1, "stage2": {"epochs": 2}}, marks=pytest.mark.slow
        ),
    ],
)
def test_two_workers_match_one_worker_with_the_same_global_batch(
    tmp_path, monkeypatch, loss, extra
):
    cfg = tiny(loss=loss, **extra)
    one = run_single(cfg, tmp_path / "one" / "run", monkeypatch)
    run_ranks(2, cfg, tmp_path / "two" / "run")
    two = json.loads((tmp_path / "two" / "run" / "result.json").read_text())

    l1, l2 = _losses(tmp_path / "one" / "run"), _losses(tmp_path / "two" / "run")
    assert len(l1) == one["epochs"] and close(l1, l2), (l1, l2)
    assert two["confusion_matrix"] == one["confusion_matrix"]
    assert two["top1_error"] == one["top1_error"]
    assert two["env"]["workers"] == "2" and one["env"]["workers"] == "1"
    assert torch.equal(
        _predictions(tmp_path / "one" / "run", cfg), _predictions(tmp_path / "two" / "run", cfg)
    )
    # rank 0 alone wrote the run's files, once: one line per epoch, one TensorBoard event
    # file (rank 1 opens no writer), no leftovers
    names = sorted(p.name for p in (tmp_path / "two" / "run").iterdir())
    events = [n for n in names if n.endswith(TENSORBOARD_SUFFIX)]
    assert len(events) == 1, names
    assert sorted(set(names) - set(events)) == sorted(
        [".ltbench.lock", "checkpoint.pt", "config.yaml", "metrics.jsonl", "result.json"]
    )


@pytest.mark.slow
def test_a_killed_two_worker_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    cfg = tiny(loss="ce", epochs=3)
    full = run_single(cfg, tmp_path / "full", monkeypatch)
    with pytest.raises(Exception, match="exit code 3|exited with exit code"):
        run_ranks(2, cfg, tmp_path / "cut", kill_after=2)
    cut = tmp_path / "cut"
    assert not (cut / "result.json").exists()
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["epoch"] == 2
    run_ranks(2, cfg, cut, resume=True)
    resumed = json.loads((cut / "result.json").read_text())
    assert resumed["confusion_matrix"] == full["confusion_matrix"]
    l_full, l_cut = _losses(tmp_path / "full"), _losses(cut)
    assert len(l_cut) == 3 and close(l_full, l_cut), (l_full, l_cut)


# ----------------------------------------------------------------------------------------------
# Suites: workers_per_trial, planning, and a mixed suite through Ray Tune + Ray Train

MIXED = """
description: one trial on one worker, the same trial on two
methods:
  - loss: ce
  - {loss: ce, name: ce-ddp, workers_per_trial: 2}
datasets: [synthetic-lt]
rhos: [10]
seeds: [0]
config: {epochs: 2, n_max: 40, width: 0.25, batch_size: 32, warmup_epochs: 0, lr: 0.01,
         amp: false, channels_last: false, num_workers: 0}
"""


def test_workers_per_trial_from_the_suite_the_method_and_the_flag(tmp_path):
    from ltbench.runner.suite import apply_overrides, expand, load_suite
    from ltbench.runner.trials import TrialSpec, check_trials

    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED.replace("rhos: [10]", "rhos: [10]\nworkers_per_trial: {synthetic-lt: 4}"))
    suite = load_suite(path)
    trials = expand(suite)
    assert [(t.key.split("_")[0], t.workers) for t in trials] == [("ce", 4), ("ce-ddp", 2)]
    assert TrialSpec.from_dict(trials[1].to_dict()).workers == 2
    check_trials(trials)  # 32 splits over 4 and over 2
    flagged, _ = apply_overrides(suite, workers=8)
    assert {t.workers for t in expand(flagged)} == {8}
    with pytest.raises(LtbenchError, match="batch_size 32 does not split over 3 workers"):
        check_trials(expand(apply_overrides(suite, workers=3)[0]))
    path.write_text(MIXED.replace("rhos: [10]", "rhos: [10]\nworkers_per_trial: 0"))
    with pytest.raises(LtbenchError, match="workers_per_trial must be an integer >= 1"):
        load_suite(path)


def test_gpus_per_trial_above_one_means_workers_of_one_gpu():
    from ltbench.runner.cluster import ClusterOptions, check_cluster, check_workers

    assert ClusterOptions(gpus_per_trial=4).trial_workers() == 4
    assert ClusterOptions(gpus_per_trial=0.5, workers_per_trial=2).trial_workers() == 2
    with pytest.raises(LtbenchError, match="whole number of GPUs > 1"):
        check_cluster(ClusterOptions(gpus_per_trial=1.5))
    with pytest.raises(LtbenchError, match="means 4 workers of one GPU each"):
        check_cluster(ClusterOptions(gpus_per_trial=4, workers_per_trial=2))
    with pytest.raises(LtbenchError, match="a trial of 2 workers needs 2.01 CPUs"):
        check_workers([1, 2], {"cpu": 1.0, "gpu": 0.0}, 2.0, 0.0)
    check_workers([1, 2], {"cpu": 0.5, "gpu": 0.0}, 2.0, 0.0)


@pytest.mark.slow
def test_a_suite_mixes_one_worker_and_two_worker_trials_on_ray(ray_session, tmp_path):
    import pandas as pd

    from ltbench.cli import main

    suite = tmp_path / "mixed.yaml"
    suite.write_text(MIXED)
    out = tmp_path / "out"
    argv = ["run", "--suite", suite, "--out", out, "--cpus-per-trial", "0.5", "--report", "none"]
    assert main([str(a) for a in argv]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["status"]) == {"finished"} and len(results) == 2
    one = json.loads((out / "trials" / "ce_synthetic-lt_rho10_seed0" / "result.json").read_text())
    two = json.loads(
        (out / "trials" / "ce-ddp_synthetic-lt_rho10_seed0" / "result.json").read_text()
    )
    assert one["env"]["workers"] == "1" and two["env"]["workers"] == "2"
    # float32 here: the two runs agree to float32's rounding, not to the bit, and the rounding
    # differences of the summation order grow step by step (the exact agreement is the float64
    # test above): the first epoch within 1e-3, the second within 2e-2 (measured: 7e-3)
    l1 = _losses(out / "trials" / "ce_synthetic-lt_rho10_seed0")
    l2 = _losses(out / "trials" / "ce-ddp_synthetic-lt_rho10_seed0")
    assert len(l1) == len(l2) == 2
    assert abs(l1[0] - l2[0]) <= 1e-3 * abs(l1[0]), (l1, l2)
    assert abs(l1[1] - l2[1]) <= 2e-2 * abs(l1[1]), (l1, l2)
    assert (
        json.loads((out / "trials.json").read_text())["ce-ddp_synthetic-lt_rho10_seed0"]["workers"]
        == 2
    )
