"""Metrics against hand-computed values and an independent numpy reference."""

import math

import numpy as np
import pytest
import torch

from ltbench.engine import metrics


def test_per_class_and_top1_from_confusion():
    cm = np.array([[8, 2, 0], [1, 3, 0], [0, 5, 5]])
    out = metrics.summarize(cm, train_counts=[500, 50, 5])
    np.testing.assert_allclose(out["per_class_accuracy"], [80.0, 75.0, 50.0])
    assert out["top1_acc"] == pytest.approx(100 * 16 / 24)
    assert out["top1_error"] == pytest.approx(100 - 100 * 16 / 24)
    # many: >100 images, medium: 20..100, few: <20
    assert out["many_acc"] == pytest.approx(80.0)
    assert out["medium_acc"] == pytest.approx(75.0)
    assert out["few_acc"] == pytest.approx(50.0)


def test_shot_groups_boundaries_and_empty_group():
    acc = np.array([10.0, 20.0, 30.0, 40.0])
    out = metrics.shot_accuracies(acc, [101, 100, 20, 19])
    assert out["many_acc"] == 10.0
    assert out["medium_acc"] == 25.0  # 100 and 20 are both medium
    assert out["few_acc"] == 40.0
    assert math.isnan(metrics.shot_accuracies(acc, [5, 5, 5, 5])["many_acc"])


def test_head_mid_tail_cifar10_is_3_4_3_by_count_not_index():
    counts = np.array([5, 5000, 50, 2997, 1796, 1077, 645, 387, 232, 139])  # unsorted
    acc = np.arange(10, dtype=float) * 10
    parts = metrics.head_mid_tail_parts(counts)
    assert sorted(parts["head"]) == [1, 3, 4]
    assert sorted(parts["tail"]) == [0, 2, 9]
    errs = metrics.head_mid_tail_errors(acc, counts)
    assert errs["head_error"] == pytest.approx(100 - np.mean([10, 30, 40]))
    assert errs["mid_error"] == pytest.approx(100 - np.mean([50, 60, 70, 80]))


def test_head_mid_tail_cifar100_uses_groups_of_ten():
    counts = np.arange(100, 0, -1) * 5
    parts = metrics.head_mid_tail_parts(counts)
    assert sorted(parts["head"]) == list(range(30))
    assert sorted(parts["mid"]) == list(range(30, 70))
    assert sorted(parts["tail"]) == list(range(70, 100))


def test_ece_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.05, 1.0, size=1000)
    correct = rng.uniform(size=1000) < conf**2
    bins = np.linspace(0, 1, 16)
    expected = 0.0
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            expected += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    assert metrics.ece_from_predictions(conf, correct) == pytest.approx(100 * expected)


def test_evaluator_accumulates_like_numpy():
    torch.manual_seed(0)
    logits = torch.randn(200, 7) * 3
    targets = torch.randint(0, 7, (200,))
    ev = metrics.Evaluator(7)
    for chunk in range(0, 200, 64):
        ev.update(logits[chunk : chunk + 64], targets[chunk : chunk + 64])
    out = ev.compute(train_counts=[300, 150, 90, 40, 20, 10, 3])
    probs = torch.softmax(logits, 1).numpy()
    pred = probs.argmax(1)
    cm = np.zeros((7, 7), int)
    np.add.at(cm, (targets.numpy(), pred), 1)
    assert out["confusion_matrix"] == cm.tolist()
    assert out["ece"] == pytest.approx(
        metrics.ece_from_predictions(probs.max(1), pred == targets.numpy()), rel=1e-9
    )


def test_validation_metrics_balanced_against_instance_weighted():
    # a long-tailed validation split: the head class dominates the instance-weighted error
    cm = np.array([[90, 10, 0, 0], [4, 1, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]])
    out = metrics.validation_metrics(cm)
    assert out["val_top1_error"] == pytest.approx(100 - 100 * 91 / 107)
    assert out["val_per_class_accuracy"] == [90.0, 20.0, 0.0, None]
    assert out["val_classes_without_images"] == [3]  # left out of the mean, and listed
    assert out["val_balanced_error"] == pytest.approx(100 - (90 + 20 + 0) / 3)
    # on a balanced set both numbers agree (the test set's top1_error is the balanced error)
    even = np.array([[8, 2], [5, 5]])
    both = metrics.validation_metrics(even)
    assert both["val_balanced_error"] == pytest.approx(both["val_top1_error"])
    assert metrics.summarize(even, [10, 10])["top1_error"] == pytest.approx(
        both["val_balanced_error"]
    )
    assert math.isnan(metrics.balanced_error(np.array([math.nan, math.nan])))
