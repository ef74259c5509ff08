"""TensorBoard curves: the event files of a run hold exactly metrics.jsonl's numbers, are
replaced with the run, and a failing writer never stops a run."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest

from ltbench.engine import curves
from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import train
from ltbench.runfiles import TENSORBOARD_PREFIX, TENSORBOARD_SUFFIX

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

TINY = dict(dataset="synthetic-lt", n_max=60, imb_factor=0.1, width=0.25, batch_size=64)


def _events(run_dir):
    return sorted(run_dir.glob(f"{TENSORBOARD_PREFIX}*{TENSORBOARD_SUFFIX}"))


def _scalars(run_dir) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard reads from the run's folder: {tag: {step: value}}."""
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_event_files_hold_the_numbers_of_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(epochs=2, val_fraction=0.2, device="cpu", **TINY), run)
    assert len(_events(run)) == 1
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logged = _scalars(run)
    expected = {}
    for line in lines:
        for key, value in line.items():
            if key != "epoch" and isinstance(value, int | float) and value is not None:
                expected.setdefault(curves.scalar_tag(key), {})[line["epoch"]] = value
    assert set(logged) == set(expected)
    for tag in ("train/train_loss", "schedule/lr", "test/test_top1_error"):
        assert tag in logged
    assert "val/val_balanced_error" in logged and "test/test_few_acc" in logged
    for tag, steps in expected.items():
        assert logged[tag] == pytest.approx(steps, rel=1e-6), tag


def test_overwrite_replaces_the_curves(tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(epochs=1, device="cpu", **TINY), run)
    train(TrainConfig(epochs=1, lr=0.01, device="cpu", **TINY), run, overwrite=True)
    assert len(_events(run)) == 1
    assert _scalars(run)["schedule/lr"] == pytest.approx({1: 0.01})


def test_a_failing_writer_warns_once_and_the_run_finishes(tmp_path, monkeypatch):
    import tensorboardX

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tensorboardX, "SummaryWriter", broken)
    monkeypatch.setattr(curves, "_failed", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(TrainConfig(epochs=2, device="cpu", **TINY), tmp_path / "run")
    said = [w for w in caught if "TensorBoard curves are not written" in str(w.message)]
    assert len(said) == 1 and "disk full" in str(said[0].message)
    assert result["epochs"] == 2 and (tmp_path / "run" / "result.json").is_file()
    assert not _events(tmp_path / "run")


class _CrashAfterTwo:
    """Keeps epoch 1's checkpoint aside and stops after epoch 2, like a process killed between
    epoch 2's metrics line and its checkpoint (the resumed run redoes epoch 2)."""

    def __init__(self, run):
        self.run = run

    def on_epoch_end(self, epoch, metrics, checkpoint):
        if epoch == 1:
            shutil.copy(checkpoint, self.run / "epoch1.pt")
        if epoch == 2:
            raise KeyboardInterrupt


def test_a_resumed_run_replaces_the_epochs_it_redoes(tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(epochs=3, device="cpu", **TINY)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, hooks=_CrashAfterTwo(run))
    (run / "epoch1.pt").replace(run / "checkpoint.pt")
    train(cfg, run, resume=True)
    assert len(_events(run)) == 2  # one file per process
    acc = event_accumulator.EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("test/test_top1_error")]
    assert steps == [1, 2, 3]  # epoch 2 once: the first process's epoch 2 purged
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("train/train_loss")] == pytest.approx(
        [line["train_loss"] for line in lines], rel=1e-6
    )
