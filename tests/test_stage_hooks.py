"""A method with its own network and its own step, through the stage hooks: the loop runs it
without naming it (the mechanism BBN's two branches and a meta-learning step build on)."""

from __future__ import annotations

import json

import torch

from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import train
from ltbench.sdk.registry import _REGISTRY, LossSpec, get_spec, register
from ltbench.sdk.stages import Stage

CALLS = {"step": 0, "extra": 0, "model": 0}


class Scaled(torch.nn.Module):
    """The run's standard network with a learnable output temperature."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.temperature = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.inner(x) * self.temperature


def build_model(standard, num_classes, head):
    CALLS["model"] += 1
    return Scaled(standard(head))


def step(ctx, images, labels):
    CALLS["step"] += 1
    CALLS["extra"] += len(ctx.extra or [])
    (extra_images, extra_labels) = ctx.extra[0]
    scores = ctx.model(images)
    loss = ctx.loss_fn(scores, labels) + 0.5 * ctx.loss_fn(ctx.model(extra_images), extra_labels)
    return loss, scores


def stages(params, run):
    return [
        Stage(
            "main",
            loss="ce",
            epochs=run.epochs,
            lr=run.lr,
            batch_size=run.batch_size,
            weight_decay=run.weight_decay,
            extra_samplers=("class-balanced",),
            model=build_model,
            step=step,
        )
    ]


def test_a_method_brings_its_network_and_step(tmp_path):
    spec = LossSpec(
        name="test-hooked",
        factory=lambda counts: get_spec("ce").factory(counts),
        head="linear",
        kind="method",
        stages=stages,
    )
    before = dict(_REGISTRY)
    register(spec)
    try:
        cfg = TrainConfig(
            dataset="synthetic-lt", loss="test-hooked", n_max=60, imb_factor=0.1, width=0.25,
            epochs=2, batch_size=64, eval_every=2,
        )  # fmt: skip
        result = train(cfg, tmp_path / "run", progress=False)
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(before)
    steps_per_epoch = -(-sum(result["class_counts"]) // 64)
    assert CALLS["model"] == 1
    assert CALLS["step"] == 2 * steps_per_epoch and CALLS["extra"] == CALLS["step"]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert "temperature" in state and float(state["temperature"]) != 1.0  # it was trained
    plan = json.loads((tmp_path / "run" / "result.json").read_text())["stage_plan"]
    assert plan[0]["step"].endswith("step") and plan[0]["extra_samplers"] == ["class-balanced"]
