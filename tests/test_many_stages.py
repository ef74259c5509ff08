"""A method of three stages: the engine runs any number (the SDK's "one or more stages").

Stage 1 trains the whole network (a cached run of CE), stage 2 re-trains the classifier on the
frozen backbone with class-balanced batches, stage 3 learns a per-class scale (LWS). The run's
folder holds every stage's epochs, its result every stage's record; a run interrupted in stage
3 resumes past the finished stage 2 to the numbers of the uninterrupted run.
"""

from __future__ import annotations

import json

import pytest
import torch

from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import train
from ltbench.engine.record import CLOCK_KEYS
from ltbench.sdk.registry import _REGISTRY, LossSpec, get_spec, load_entry_points, register
from ltbench.sdk.stages import Stage


def three_stages(params, run):
    common = dict(loss="ce", lr=run.lr, batch_size=run.batch_size, weight_decay=run.weight_decay)
    return [
        Stage("stage1", epochs=run.epochs, **common),
        Stage("retrain", epochs=1, sampler="class-balanced", trainable="classifier", **common),
        Stage("scale", epochs=2, trainable="class-scale", class_scale=True, **common),
    ]


SPEC = LossSpec(
    name="test-three-stage",
    factory=lambda counts: get_spec("ce").factory(counts),
    head="linear",
    kind="method",
    stages=three_stages,
)
TINY = dict(
    dataset="synthetic-lt", loss=SPEC.name, n_max=60, imb_factor=0.1, width=0.125, epochs=2,
    batch_size=32, eval_every=1, device="cpu", amp=False,
)  # fmt: skip


@pytest.fixture
def registered():
    load_entry_points()  # the installed losses first: restored as they were afterwards
    before = dict(_REGISTRY)
    register(SPEC)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(before)


def lines(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_three_stages_run_one_after_the_other(registered, tmp_path):
    result = train(TrainConfig(**TINY), tmp_path / "run", progress=False)
    assert list(result["stages"]) == ["stage1", "retrain", "scale"]
    assert result["epochs"] == 2 + 1 + 2
    assert [s["name"] for s in result["stage_plan"]] == ["stage1", "retrain", "scale"]
    rows = lines(tmp_path / "run")
    assert [(r["epoch"], r["stage"]) for r in rows] == [
        (1, "stage1"), (2, "stage1"), (3, "retrain"), (4, "scale"), (5, "scale"),
    ]  # fmt: skip
    assert result["stages"]["retrain"]["epochs"] == 1
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["stage"] == "scale" and state["stage_epoch"] == 2
    scale = state["model"]["class_scale"]
    assert not torch.equal(scale, torch.ones_like(scale))  # stage 3 learnt its scale
    # stage 3 started from stage 2's classifier: stage 3 trains the scale only, so the
    # classifier of the final network is the one stage 2 left
    assert result["stages"]["retrain"]["top1_error"] != result["stages"]["stage1"]["top1_error"]


def test_a_run_interrupted_in_stage_three_resumes_to_the_same_numbers(
    registered, tmp_path, monkeypatch
):
    import ltbench.engine.record as record

    whole = train(TrainConfig(**TINY), tmp_path / "whole", progress=False)
    real = record.append_row

    def stop_at_epoch_five(path, row):
        if row["epoch"] == 5:
            raise KeyboardInterrupt
        real(path, row)

    monkeypatch.setattr(record, "append_row", stop_at_epoch_five)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY), tmp_path / "cut", progress=False)
    monkeypatch.setattr(record, "append_row", real)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["stage"] == "scale" and list(state["done_stages"]) == ["retrain"]
    resumed = train(TrainConfig(**TINY), tmp_path / "cut", resume=True, progress=False)
    for key in ("top1_error", "confusion_matrix", "per_class_accuracy"):
        assert resumed[key] == whole[key]
        assert resumed["stages"]["retrain"][key] == whole["stages"]["retrain"][key]
    drop = CLOCK_KEYS
    assert [{k: v for k, v in r.items() if k not in drop} for r in lines(tmp_path / "cut")] == [
        {k: v for k, v in r.items() if k not in drop} for r in lines(tmp_path / "whole")
    ]
