"""Evaluation metrics: accumulate on the device, compute at the end with pure functions.

`Evaluator` keeps a confusion matrix and per-bin confidence sums as tensors on the model's
device (no host synchronisation while it runs); `compute()` turns them into the numbers the
paper reports. The pure functions take numpy arrays so a test can check them by hand.
All accuracies, errors and the ECE are in percent.

- many / medium / few: classes with more than 100, 20 to 100, fewer than 20 training images
  (the thresholds of the paper's datasets: a dataset's recipe or a run may set others,
  `many_shot` and `few_shot`, checked by `ltbench.sdk.datasets.check_shot_thresholds`). A
  group without a class has no accuracy (None in result.json, "–" in the reports);
  `many_classes` / `medium_classes` / `few_classes` count the classes of each group.
- worst class: the largest per-class test error (`worst_class_error`) and its class
  (`worst_class`; the first such class on a tie), classes without a test image left out.
- head / mid / tail: the paper's split (Figs. 6, 7): classes sorted by training count, most
  frequent first, cut into 10 groups (one class each on CIFAR-10, ten on CIFAR-100); groups
  1-3 are head, 4-7 mid, 8-10 tail. With fewer than 10 classes the split is by rank: the first
  30% head, the next 40% mid, the rest tail.
- ECE: 15 equal-width confidence bins, sum over bins of |accuracy - confidence| weighted by the
  bin's share of samples (the measure MiSLAS reports).
- balanced error: 100 minus the mean over classes of the per-class accuracy, classes without an
  evaluated image left out. On a balanced set it equals top1_error (the trace of the confusion
  matrix over its total); on the long-tailed validation split it does not, and it is the
  validation number that estimates the (balanced) test error: `validation_metrics`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ltbench.sdk.datasets import FEW_SHOT, MANY_SHOT  # noqa: F401  (the defaults, re-exported)

N_GROUPS = 10
ECE_BINS = 15


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Accuracy (percent) of each true class from a confusion matrix (rows: true class)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * np.diag(confusion) / totals, np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def shot_groups(
    train_counts: np.ndarray, many_shot: int = MANY_SHOT, few_shot: int = FEW_SHOT
) -> dict[str, np.ndarray]:
    """Boolean masks of the many-, medium- and few-shot classes by training count."""
    n = np.asarray(train_counts)
    return {
        "many": n > many_shot,
        "medium": (n >= few_shot) & (n <= many_shot),
        "few": n < few_shot,
    }


def shot_accuracies(
    class_acc: np.ndarray,
    train_counts: np.ndarray,
    many_shot: int = MANY_SHOT,
    few_shot: int = FEW_SHOT,
) -> dict[str, float]:
    """Mean per-class accuracy over many-, medium- and few-shot classes (NaN if none)."""
    acc = np.asarray(class_acc, dtype=np.float64)
    groups = shot_groups(train_counts, many_shot, few_shot)
    return {f"{g}_acc": _nanmean(acc[mask]) for g, mask in groups.items()}


def shot_class_counts(
    train_counts: np.ndarray, many_shot: int = MANY_SHOT, few_shot: int = FEW_SHOT
) -> dict[str, int]:
    """The number of classes in each group: `many_classes`, `medium_classes`, `few_classes`."""
    groups = shot_groups(train_counts, many_shot, few_shot)
    return {f"{g}_classes": int(mask.sum()) for g, mask in groups.items()}


def worst_class(class_acc: np.ndarray) -> tuple[float, int | None]:
    """(error in percent, class index) of the class with the largest test error; the first
    such class on a tie; classes without a test image (NaN) left out; (NaN, None) if none."""
    err = 100.0 - np.asarray(class_acc, dtype=np.float64)
    if not np.any(~np.isnan(err)):
        return math.nan, None
    c = int(np.nanargmax(err))
    return float(err[c]), c


def frequency_groups(train_counts: np.ndarray, n_groups: int = N_GROUPS) -> list[np.ndarray]:
    """Class indices in `n_groups` groups by training count, most frequent group first.

    Ties keep class order (a stable sort), so the split is deterministic.
    """
    counts = np.asarray(train_counts)
    order = np.argsort(-counts, kind="stable")
    return [g for g in np.array_split(order, min(n_groups, len(order)))]


def head_mid_tail_parts(train_counts: np.ndarray) -> dict[str, np.ndarray]:
    """Class indices of the paper's Head / Mid / Tail parts."""
    counts = np.asarray(train_counts)
    c = len(counts)
    if c >= N_GROUPS:
        groups = frequency_groups(counts)
        return {
            "head": np.concatenate(groups[0:3]),
            "mid": np.concatenate(groups[3:7]),
            "tail": np.concatenate(groups[7:10]),
        }
    order = np.argsort(-counts, kind="stable")
    rank = np.arange(c) / c
    return {
        "head": order[rank < 0.3],
        "mid": order[(rank >= 0.3) & (rank < 0.7)],
        "tail": order[rank >= 0.7],
    }


def head_mid_tail_errors(class_acc: np.ndarray, train_counts: np.ndarray) -> dict[str, float]:
    """Mean per-class error (percent) of the Head / Mid / Tail parts."""
    err = 100.0 - np.asarray(class_acc, dtype=np.float64)
    return {
        f"{part}_error": _nanmean(err[idx])
        for part, idx in head_mid_tail_parts(train_counts).items()
    }


def expected_calibration_error(
    bin_counts: np.ndarray, bin_correct: np.ndarray, bin_confidence: np.ndarray
) -> float:
    """ECE (percent) from per-bin sample counts, correct counts and summed confidences."""
    counts = np.asarray(bin_counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return math.nan
    gap = np.abs(np.asarray(bin_correct, dtype=np.float64) - np.asarray(bin_confidence))
    return float(100.0 * gap.sum() / total)


def ece_from_predictions(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS):
    """ECE (percent) from per-sample confidences in [0, 1] and correctness flags."""
    confidence = np.asarray(confidence, dtype=np.float64)
    idx = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    right = np.bincount(idx, weights=np.asarray(correct, dtype=np.float64), minlength=bins)
    conf = np.bincount(idx, weights=confidence, minlength=bins)
    return expected_calibration_error(counts, right, conf)


def balanced_error(class_acc: np.ndarray) -> float:
    """100 minus the mean per-class accuracy (percent); NaN classes (no image) are left out."""
    return 100.0 - _nanmean(class_acc)


def validation_metrics(confusion: np.ndarray) -> dict:
    """The validation numbers of a run from the validation split's confusion matrix.

    `val_balanced_error` (the selection metric: the mean over classes of the per-class error,
    an estimate of the balanced test error), `val_top1_error` (instance-weighted: dominated by
    the head classes of a long-tailed split), `val_per_class_accuracy` (None for a class
    without a validation image) and `val_classes_without_images` (left out of the mean).
    """
    confusion = np.asarray(confusion)
    acc = per_class_accuracy(confusion)
    total = confusion.sum()
    top1_error = 100.0 - 100.0 * np.trace(confusion) / total if total else math.nan
    return {
        "val_balanced_error": balanced_error(acc),
        "val_top1_error": float(top1_error),
        "val_per_class_accuracy": [None if math.isnan(a) else float(a) for a in acc],
        "val_classes_without_images": [int(c) for c in np.where(np.isnan(acc))[0]],
    }


def _or_none(value: float) -> float | None:
    """A group's number, None where the group has no class with an image (JSON has no NaN)."""
    return None if math.isnan(value) else float(value)


def summarize(
    confusion: np.ndarray,
    train_counts,
    ece: float = math.nan,
    *,
    many_shot: int = MANY_SHOT,
    few_shot: int = FEW_SHOT,
) -> dict:
    """Every reported number from a confusion matrix and the training counts.

    A group without a class (many / medium / few, head / mid / tail) has None, not NaN.
    """
    confusion = np.asarray(confusion)
    acc = per_class_accuracy(confusion)
    total = confusion.sum()
    top1 = 100.0 * np.trace(confusion) / total if total else math.nan
    groups = {
        **shot_accuracies(acc, train_counts, many_shot, few_shot),
        **head_mid_tail_errors(acc, train_counts),
    }
    worst_error, worst = worst_class(acc)
    return {
        "top1_acc": float(top1),
        "top1_error": float(100.0 - top1),
        **{k: _or_none(v) for k, v in groups.items()},
        **shot_class_counts(train_counts, many_shot, few_shot),
        "many_shot": int(many_shot),
        "few_shot": int(few_shot),
        "worst_class_error": _or_none(worst_error),
        "worst_class": worst,
        "ece": float(ece),
        "per_class_accuracy": [float(a) for a in acc],
        "confusion_matrix": confusion.astype(int).tolist(),
    }


class Evaluator:
    """Accumulates predictions batch by batch on the device; `compute()` syncs once."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        c, dev = self.num_classes, self.device
        self.confusion = torch.zeros(c * c, dtype=torch.int64, device=dev)
        self.bin_counts = torch.zeros(ECE_BINS, dtype=torch.float64, device=dev)
        self.bin_correct = torch.zeros(ECE_BINS, dtype=torch.float64, device=dev)
        self.bin_confidence = torch.zeros(ECE_BINS, dtype=torch.float64, device=dev)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add a batch: `logits` are the scores the softmax of the loss sees."""
        probs = torch.softmax(logits.float(), dim=1)
        confidence, pred = probs.max(dim=1)
        c = self.num_classes
        self.confusion += torch.bincount(targets * c + pred, minlength=c * c)
        idx = (torch.ceil(confidence.double() * ECE_BINS).long() - 1).clamp_(0, ECE_BINS - 1)
        correct = (pred == targets).double()
        self.bin_counts.index_add_(0, idx, torch.ones_like(correct))
        self.bin_correct.index_add_(0, idx, correct)
        self.bin_confidence.index_add_(0, idx, confidence.double())

    def compute(self, train_counts, many_shot: int = MANY_SHOT, few_shot: int = FEW_SHOT) -> dict:
        """All metrics (see `summarize`), with the ECE of the accumulated confidences."""
        confusion = self.confusion.view(self.num_classes, self.num_classes).cpu().numpy()
        ece = expected_calibration_error(
            self.bin_counts.cpu().numpy(),
            self.bin_correct.cpu().numpy(),
            self.bin_confidence.cpu().numpy(),
        )
        return summarize(confusion, train_counts, ece, many_shot=many_shot, few_shot=few_shot)
