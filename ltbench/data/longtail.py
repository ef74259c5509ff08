"""The long-tailed construction: target counts per class, the subset itself, the validation
hold-out, class counts, and the checks of the values that steer them.

`check_imb_factor`, `check_profile` and `check_val_fraction` are the only checks of these values
in ltbench: the dataset loaders and the training configuration both call them, so the allowed
ranges and the error messages are stated once. This module needs numpy only (no torch), so the
configuration can import it cheaply; torch tensors are accepted wherever labels are.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ltbench.errors import LtbenchError

PROFILES = ("exp", "step")


# --------------------------------------------------------------------------- value checks


def check_imb_factor(imb_factor: Any) -> float:
    """`imb_factor` (= 1/rho) as a float, or a one-line error if it is outside (0, 1]."""
    try:
        value = float(imb_factor)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise LtbenchError(
            f"imbalance factor {imb_factor!r} is outside (0, 1]; it is 1/rho, e.g. 0.01 for rho=100"
        )
    return value


def check_profile(profile: Any) -> str:
    """`profile` itself, or a one-line error naming the known profiles."""
    if profile not in PROFILES:
        raise LtbenchError(f"unknown imbalance profile {profile!r}; known: {', '.join(PROFILES)}")
    return profile


def check_val_fraction(val_fraction: Any) -> float:
    """`val_fraction` as a float, or a one-line error if it is outside [0, 1)."""
    try:
        value = float(val_fraction)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value < 1.0:
        raise LtbenchError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    return value


# --------------------------------------------------------------------------- construction


def _as_numpy(labels: Any, dtype=None) -> np.ndarray:
    """Labels (a sequence, a numpy array or a torch tensor on any device) as a numpy array."""
    torch = sys.modules.get("torch")  # a tensor exists only if torch is imported already
    if torch is not None and isinstance(labels, torch.Tensor):
        labels = labels.cpu()
    return np.asarray(labels, dtype=dtype)


def long_tailed_counts(num_classes: int, n_max: int, imb_factor: float, profile: str = "exp"):
    """Target images per class: `int(n_max * imb_factor ** (i / (C - 1)))` for class i (exp), or
    n_max for the first C // 2 classes and `int(n_max * imb_factor)` for the rest (step)."""
    imb_factor = check_imb_factor(imb_factor)
    check_profile(profile)
    if profile == "exp":
        if num_classes == 1:
            return [int(n_max)]
        return [int(n_max * imb_factor ** (i / (num_classes - 1))) for i in range(num_classes)]
    return [n_max if i < num_classes // 2 else int(n_max * imb_factor) for i in range(num_classes)]


def long_tailed_indices(
    labels: Sequence[int] | np.ndarray | Any,
    imb_factor: float,
    seed: int,
    profile: str = "exp",
    n_max: int | None = None,
) -> tuple[list[int], list[int]]:
    """Pick a long-tailed subset of a (balanced) training set, as Cui et al. and LDAM-DRW do.

    C = max label + 1 and n_max = len(labels) // C unless given (a pool whose classes differ in
    size gives its largest class's count); the target counts are `long_tailed_counts`.
    numpy's global generator is seeded once with `seed`; then, class by class in label order,
    the class's indices are shuffled and the first n_i kept. Returns the kept indices (grouped
    by class, in class order) and the number kept per class (fewer than n_i only if a class has
    fewer images). The caller's numpy global random state is restored afterwards.
    """
    imb_factor = check_imb_factor(imb_factor)
    check_profile(profile)
    labels = _as_numpy(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise LtbenchError("long_tailed_indices needs a non-empty 1-D list of labels")
    if labels.min() < 0:
        raise LtbenchError(f"labels must be >= 0, got {int(labels.min())}")
    num_classes = int(labels.max()) + 1
    if n_max is None:
        n_max = len(labels) // num_classes
    targets = long_tailed_counts(num_classes, n_max, imb_factor, profile)

    saved = np.random.get_state()
    try:
        # the global generator on purpose: this is the exact draw of the reference construction
        np.random.seed(seed)
        kept: list[int] = []
        counts: list[int] = []
        for cls, n_cls in enumerate(targets):
            idx = np.where(labels == cls)[0]
            np.random.shuffle(idx)
            chosen = idx[:n_cls]
            kept.extend(int(i) for i in chosen)
            counts.append(len(chosen))
    finally:
        np.random.set_state(saved)
    return kept, counts


def first_per_class(labels: Sequence[int] | np.ndarray | Any, n_max: int | None) -> np.ndarray:
    """Positions of the first `n_max` images of each class (all with None), in their original
    order: the `n_max` cut made before a long-tailed draw."""
    labels = _as_numpy(labels)
    if n_max is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        keep[np.where(labels == cls)[0][:n_max]] = True
    return np.where(keep)[0]


# A class with at least 2 * VAL_MIN_PER_CLASS images gives at least this many to validation.
VAL_MIN_PER_CLASS = 5


def validation_count(n: int, val_fraction: float) -> int:
    """How many of a class's `n` images `split_validation` holds out (the rule, stated once).

    round(val_fraction * n), raised to VAL_MIN_PER_CLASS when the class has at least twice that
    many images (so training keeps at least as many as validation gets). A smaller class gives
    round(val_fraction * n) but at least 1 and at most n - 1; a class with a single image keeps
    it for training. Classes where round(val_fraction * n) >= VAL_MIN_PER_CLASS already are
    unchanged by the minimum (CIFAR-10-LT at rho = 100 and val_fraction = 0.1: 500 ... 5).
    """
    if val_fraction <= 0 or n < 2:
        return 0
    wanted = int(round(val_fraction * n))
    if n >= 2 * VAL_MIN_PER_CLASS:
        return max(wanted, VAL_MIN_PER_CLASS)
    return min(max(1, wanted), n - 1)


def split_validation(
    labels: Sequence[int] | np.ndarray | Any, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Hold out part of each class's images: returns (train positions, val positions).

    Class by class, `validation_count(n, val_fraction)` images go to validation: the first ones
    of a permutation of the class's positions drawn from `default_rng(seed)` (one permutation
    per class, in class order, whatever the count), so the draw is deterministic and a class's
    held-out images do not depend on the other classes' counts.
    """
    check_val_fraction(val_fraction)
    labels = _as_numpy(labels)
    rng = np.random.default_rng(seed)
    train_pos: list[int] = []
    val_pos: list[int] = []
    for cls in range(int(labels.max()) + 1 if labels.size else 0):
        idx = np.where(labels == cls)[0]
        n_val = validation_count(len(idx), val_fraction)
        held = set(rng.permutation(idx)[:n_val].tolist())
        for i in idx.tolist():
            (val_pos if i in held else train_pos).append(i)
    return sorted(train_pos), sorted(val_pos)


def meta_count(n: int, per_class: int) -> int:
    """How many of a class's `n` training images `split_meta` holds out for a meta set:
    `per_class`, but at most n // 2 (a class keeps at least half of its images for training;
    a class with one image gives none)."""
    return max(0, min(int(per_class), n // 2))


def split_meta(
    labels: Sequence[int] | np.ndarray | Any, per_class: int, seed: int
) -> tuple[list[int], list[int]]:
    """Hold out a small class-balanced meta set: returns (train positions, meta positions).

    Class by class, `meta_count(n, per_class)` images: the first ones of a permutation of the
    class's positions drawn from `default_rng(seed)` (the draw of `split_validation`, with its
    own seed, so the meta set is disjoint from validation and test by construction: it is taken
    from the training positions that remain after the validation hold-out).
    """
    labels = _as_numpy(labels)
    rng = np.random.default_rng(seed)
    train_pos: list[int] = []
    meta_pos: list[int] = []
    for cls in range(int(labels.max()) + 1 if labels.size else 0):
        idx = np.where(labels == cls)[0]
        held = set(rng.permutation(idx)[: meta_count(len(idx), per_class)].tolist())
        for i in idx.tolist():
            (meta_pos if i in held else train_pos).append(i)
    return sorted(train_pos), sorted(meta_pos)


# Seed offset of the draws of a meta set (`split_meta`, `draw_outside`), so that they differ
# from the validation draw made with the same run seed.
META_SEED_OFFSET = 7919


def draw_outside(
    labels: Sequence[int] | np.ndarray | Any, kept: Sequence[int], per_class: int, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """A meta set of `per_class` images per class from outside a long-tailed draw `kept`, as
    Jamal et al.'s code takes its 10 per class (`abdullahjamal/Longtail_DA` C-LT/data_utils.py
    `build_dataset`: before the draw, so that the training subset never holds them).

    Class by class, from a permutation (`default_rng(seed + META_SEED_OFFSET)`) of the class's
    positions that `kept` left out. A class the draw used up (CIFAR's head class keeps all its
    images) gives the rest from its drawn positions, at most half of them (`meta_count`): the
    official code's head class also trains on 10 fewer (4990). Returns (the drawn positions
    that remain, in `kept`'s order; the meta positions, sorted; how many of each class's meta
    images came from the draw).
    """
    labels = _as_numpy(labels)
    kept_arr = np.asarray(kept, dtype=np.int64)
    left = np.ones(len(labels), dtype=bool)
    left[kept_arr] = False
    rng = np.random.default_rng(seed + META_SEED_OFFSET)
    chosen: list[int] = []
    from_draw: list[int] = []
    for cls in range(int(labels.max()) + 1 if labels.size else 0):
        outside = rng.permutation(np.where(left & (labels == cls))[0])[: int(per_class)]
        inside = kept_arr[labels[kept_arr] == cls]
        short = meta_count(len(inside), int(per_class) - len(outside))
        chosen.extend(outside.tolist() + rng.permutation(inside)[:short].tolist())
        from_draw.append(short)
    taken = set(chosen)
    return [int(i) for i in kept_arr if int(i) not in taken], sorted(chosen), from_draw


def classes_short_of_minimum(val_counts: Sequence[int]) -> list[int]:
    """The classes with fewer than VAL_MIN_PER_CLASS validation images (their error is noisy)."""
    return [c for c, n in enumerate(val_counts) if n < VAL_MIN_PER_CLASS]


def class_counts(labels: Sequence[int] | np.ndarray | Any, num_classes: int) -> list[int]:
    """Images per class, in class order."""
    return np.bincount(_as_numpy(labels, dtype=np.int64), minlength=num_classes).tolist()
