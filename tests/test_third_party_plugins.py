"""A throw-away third-party package brings a dataset, a post-hoc rule and a three-stage method,
each through an entry point of its own metadata (a dist-info folder with entry_points.txt put on
sys.path, as pip would install it); ltbench lists each and runs each end to end."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from ltbench.cli import main
from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import train
from ltbench.engine.posthoc import load_finished_run, rule_logits, split_features
from ltbench.sdk.datasets import DATASETS
from ltbench.sdk.posthoc import RULES
from ltbench.sdk.registry import LOSSES

PACKAGE = "ltbench_thirdparty_kit"
MODULE = '''
import numpy as np

from ltbench.sdk.datasets import DatasetSpec, Recipe
from ltbench.sdk.posthoc import PosthocRule
from ltbench.sdk.registry import LossSpec, get_spec
from ltbench.sdk.stages import Stage

CLASSES = ["red", "green", "blue", "grey"]


def draw(per_class, seed):
    """Noisy 8x8 images, one colour per class."""
    rng = np.random.default_rng(seed)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [120, 120, 120]], np.float32)
    labels = np.repeat(np.arange(4, dtype=np.int64), per_class)
    noise = rng.normal(0.0, 50.0, size=(len(labels), 3, 8, 8)).astype(np.float32)
    images = np.clip(base[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return images, labels


def load(request, n_test_max=None):
    from ltbench.data import in_memory_bundle

    train_x, train_y = draw(request.n_max or 50, seed=1)
    test_x, test_y = draw(n_test_max or 20, seed=2)
    return in_memory_bundle(
        request, CLASSES, train_x, train_y, test_x, test_y, mean=(0.5,) * 3, std=(0.25,) * 3
    )


DATASET = DatasetSpec(
    name="kit-colours",
    loader=load,
    num_classes=4,
    in_memory=True,
    description="four noisy colours (a test package)",
    recipe=Recipe(
        model="resnet32", batch_size=32, lr=0.05, weight_decay=2e-4, warmup_epochs=0,
        epochs=2, lr_decay_epochs=(1,), lr_decay_factor=0.1, imb_factor=0.2, width=0.125,
    ),
    built_in=True,
)

RULE = PosthocRule(
    name="kit-prior-scaled",
    logits=lambda ctx, tau: ctx.eval_logits(ctx.scores()) - 0.5 * ctx.log_prior(),
    ece_logits="eval_logits - 0.5 log prior",
    description="the scores minus half the log prior",
)


def stages(params, run):
    common = dict(loss="ce", lr=run.lr, batch_size=run.batch_size, weight_decay=run.weight_decay)
    return [
        Stage("stage1", epochs=run.epochs, **common),
        Stage("retrain", epochs=1, sampler="class-balanced", trainable="classifier", **common),
        Stage("scale", epochs=1, trainable="class-scale", class_scale=True, **common),
    ]


METHOD = LossSpec(
    name="kit-three-stage",
    factory=lambda counts: get_spec("ce").factory(counts),
    head="linear",
    kind="method",
    stages=stages,
)
'''
ENTRY_POINTS = f"""
[ltbench.datasets]
colours = {PACKAGE}:DATASET

[ltbench.posthoc]
prior-scaled = {PACKAGE}:RULE

[ltbench.losses]
three-stage = {PACKAGE}:METHOD
"""


@pytest.fixture
def kit(tmp_path, monkeypatch):
    """The package installed into a folder on sys.path; every registry restored afterwards."""
    registries = (DATASETS, RULES, LOSSES)
    saved = []
    for registry in registries:  # as installed, before the package comes
        registry.load_entry_points()
        saved.append(dict(registry.specs))
    site = tmp_path / "site"
    site.mkdir()
    (site / f"{PACKAGE}.py").write_text(textwrap.dedent(MODULE))
    dist = site / f"{PACKAGE}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    for registry in registries:
        registry.load_entry_points(force=True)  # now with the package's entry points
    yield tmp_path
    for registry, specs in zip(registries, saved, strict=True):
        registry.specs.clear()
        registry.specs.update(specs)
    sys.modules.pop(PACKAGE, None)


TINY = dict(dataset="kit-colours", n_max=40, epochs=2, batch_size=32, device="cpu", amp=False)


def test_ltbench_list_shows_the_packages_dataset_rule_and_method(kit, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "kit-colours" in out and "kit-prior-scaled" in out and "kit-three-stage" in out


def test_the_packages_dataset_trains_end_to_end(kit):
    result = train(TrainConfig(loss="ce", **TINY), kit / "ce", progress=False)
    assert result["dataset"] == "kit-colours"
    assert result["class_names"] == ["red", "green", "blue", "grey"]
    # the recipe's imb_factor 0.2 on 40 per class: 40 ... 8 images
    assert result["class_counts"][0] == 40 and result["class_counts"][-1] == 8
    assert sum(sum(row) for row in result["confusion_matrix"]) == 4 * 20  # the test set


def test_the_packages_three_stage_method_runs_its_three_stages(kit):
    result = train(TrainConfig(loss="kit-three-stage", **TINY), kit / "three", progress=False)
    assert list(result["stages"]) == ["stage1", "retrain", "scale"]
    assert result["epochs"] == 2 + 1 + 1
    rows = [json.loads(x) for x in (kit / "three" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["stage1", "stage1", "retrain", "scale"]


def test_the_packages_post_hoc_rule_is_applied_by_ltbench_eval(kit, capsys):
    run_dir = kit / "ce"
    train(TrainConfig(loss="ce", **TINY), run_dir, progress=False)
    assert main(["eval", str(run_dir), "--rules", "raw,kit-prior-scaled", "--device", "cpu"]) == 0
    assert "kit-prior-scaled" in capsys.readouterr().out
    block = json.loads((run_dir / "result.json").read_text())["posthoc"]["rules"]
    assert block["kit-prior-scaled"]["ece_logits"] == "eval_logits - 0.5 log prior"
    # the rule's error, recomputed from its definition: raw logits minus half the log prior
    run = load_finished_run(run_dir, "cpu")
    test = split_features(run, "test")
    counts = torch.tensor(run.bundle.cls_num_list, dtype=torch.float64)
    prior = torch.log(counts / counts.sum()).float()
    logits = rule_logits(run, "raw", test.features, None) - 0.5 * prior
    wrong = int((logits.argmax(1) != test.labels).sum())
    error = 100.0 * wrong / test.labels.shape[0]
    assert block["kit-prior-scaled"]["top1_error"] == pytest.approx(error, abs=1e-9)
