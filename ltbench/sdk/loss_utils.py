"""Pieces shared by the loss plugins: validation, the plugin base class, DRW, a fused margin CE.

- Parameter checks (`check_positive`, `check_fraction`, ...) raise a one-line `LtbenchError`
  naming the parameter, the value and what is allowed; `build_loss` prefixes the loss name.
- `effective_number_weights`: the class-balanced weights of Cui et al. 2019,
  `w_j = (1 - beta) / (1 - beta^n_j)` normalised so that `sum_j w_j = C`.
- `DeferredReweighting`: deferred re-weighting (DRW) as a component, a class-weight schedule that
  any loss can hold: no weights before `drw_epoch`, the given weights from `drw_epoch` on. A loss
  holding one reduces with the weighted mean `sum_i w_{y_i} l_i / sum_i w_{y_i}` (the reduction
  of `F.cross_entropy(weight=...)`, which the reference fixtures use).
- `LossPlugin`: the base `nn.Module`: `head`, `set_epoch`, input checks, the compute dtype
  (float64 stays float64, everything else is computed in float32 with autocast off) and the
  per-class constants, kept as float64 buffers and cast once per (device, dtype).
- `margin_cross_entropy`: one fused pass for every loss of the form
  `CE(row_b * col_j * x_bj - offset_b [j = y_b])` (KPS, KPS-GA, LDAM, CosFace), with a
  hand-written backward.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ltbench.errors import LtbenchError

# ---------------------------------------------------------------------------------------------
# Parameter validation (called by the plugins' constructors)
# ---------------------------------------------------------------------------------------------


def _real(name: str, value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be {what}")
    value = float(value)
    if not math.isfinite(value):
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be {what}")
    return value


def check_positive(name: str, value) -> float:
    """A finite number > 0."""
    value_f = _real(name, value, "a number > 0")
    if value_f <= 0:
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be a number > 0")
    return value_f


def check_non_negative(name: str, value) -> float:
    """A finite number >= 0."""
    value_f = _real(name, value, "a number >= 0")
    if value_f < 0:
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be a number >= 0")
    return value_f


def check_fraction(name: str, value) -> float:
    """A number in [0, 1) (beta, label-smoothing factors)."""
    value_f = _real(name, value, "a number in [0, 1)")
    if not 0 <= value_f < 1:
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be a number in [0, 1)")
    return value_f


def check_probability(name: str, value) -> float:
    """A number in [0, 1]."""
    value_f = _real(name, value, "a number in [0, 1]")
    if not 0 <= value_f <= 1:
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be a number in [0, 1]")
    return value_f


def check_epoch(name: str, value) -> int:
    """A non-negative integer epoch (0-based)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be an integer >= 0")
    return int(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """One of a fixed set of strings."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise LtbenchError(f"{name}={value!r} is invalid; {name} must be one of {allowed}")
    return value


# ---------------------------------------------------------------------------------------------
# Per-class constants
# ---------------------------------------------------------------------------------------------


def effective_number_weights(cls_num_list: Sequence[int], beta: float) -> np.ndarray:
    """Class-balanced weights `(1 - beta) / (1 - beta^n_j)`, normalised to sum to C (float64)."""
    n = np.asarray(cls_num_list, dtype=np.float64)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return w * (len(n) / w.sum())


# ---------------------------------------------------------------------------------------------
# Modules: constants that keep float64, the DRW component, the plugin base class
# ---------------------------------------------------------------------------------------------


class _ConstantsModule(nn.Module):
    """A module whose buffers are exact per-class constants.

    Buffers follow `.to(device)` but keep their own dtype (float64), so `.float()` or `.half()`
    on a parent never rounds them; `const(name, like)` hands out a copy cast to the compute
    dtype and device, made once and cached.
    """

    def __init__(self):
        super().__init__()
        self._cast_cache: dict[tuple, torch.Tensor] = {}

    def _apply(self, fn, recurse=True):
        dtypes = {name: buf.dtype for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, dtype in dtypes.items():
            buf = self._buffers[name]
            if buf is not None and buf.dtype != dtype:
                self._buffers[name] = buf.to(dtype)
        self._cast_cache.clear()
        return self

    def const(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Buffer `name` on `like`'s device in `like`'s dtype (cached)."""
        key = (name, like.device, like.dtype)
        cached = self._cast_cache.get(key)
        if cached is None:
            cached = getattr(self, name).to(device=like.device, dtype=like.dtype)
            self._cast_cache[key] = cached
        return cached


class DeferredReweighting(_ConstantsModule):
    """DRW: class weights switched on at `drw_epoch` (0-based), none before.

    A component, not a loss: a plugin holds one and asks `weights(like)` at every forward.
    """

    def __init__(self, class_weights, drw_epoch: int):
        super().__init__()
        self.drw_epoch = check_epoch("drw_epoch", drw_epoch)
        w = torch.as_tensor(np.asarray(class_weights, dtype=np.float64))
        self.register_buffer("class_weights", w, persistent=False)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Remember the epoch; weights apply from `drw_epoch` on."""
        self.epoch = epoch

    @property
    def active(self) -> bool:
        """Whether the weights apply at the current epoch."""
        return self.epoch >= self.drw_epoch

    def weights(self, like: torch.Tensor) -> torch.Tensor | None:
        """The class weights in `like`'s dtype/device, or None before `drw_epoch`."""
        return self.const("class_weights", like) if self.active else None

    def extra_repr(self) -> str:
        return f"drw_epoch={self.drw_epoch}"


def sample_coefficients(
    targets: torch.Tensor, class_weights: torch.Tensor | None, like: torch.Tensor
) -> torch.Tensor:
    """Per-sample reduction coefficients: `1/B` (mean) or `w_{y_i} / sum_k w_{y_k}`."""
    if class_weights is None:
        return torch.full(
            targets.shape, 1.0 / targets.numel(), dtype=like.dtype, device=like.device
        )
    w = class_weights[targets]
    return w / w.sum()


def reduce_loss(per_sample: torch.Tensor, targets, class_weights: torch.Tensor | None):
    """Mean, or the class-weighted mean `sum w_{y_i} l_i / sum w_{y_i}`."""
    if class_weights is None:
        return per_sample.mean()
    w = class_weights[targets]
    return (w * per_sample).sum() / w.sum()


class LossPlugin(_ConstantsModule):
    """Base class of every ltbench loss: `plugin(scores, targets) -> mean loss`.

    Subclasses implement `compute(x, targets)` on checked inputs: `x` is float32 or float64 and
    autocast is off. `set_epoch(epoch)` (0-based) is passed on to every child that has one (the
    DRW component) and to `on_epoch`, which scheduled losses (GA) override.
    """

    head = "linear"
    # Scores times this are the logits behind the reported confidences (ECE). Cosine-head
    # losses set it to their scale s (s_base for KPS); one number for every class, so the
    # predicted class stays the argmax of the raw scores.
    logit_scale = 1.0

    def __init__(self, cls_num_list: Sequence[int]):
        super().__init__()
        self.num_classes = len(cls_num_list)
        counts = torch.as_tensor(np.asarray(cls_num_list, dtype=np.float64))
        self.register_buffer("cls_num", counts, persistent=False)
        self.epoch = 0
        self._range_checked_on: set[torch.device] = set()

    # -- schedule ------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Switch scheduled behaviour (GA, DRW) for `epoch` (0-based)."""
        epoch = check_epoch("epoch", epoch)
        self.epoch = epoch
        for child in self.children():
            if hasattr(child, "set_epoch"):
                child.set_epoch(epoch)

    def eval_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """The logits whose softmax gives the model's confidences at evaluation."""
        return scores * self.logit_scale

    def train_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """The logits the loss trains with, without its target margins (no label is known at
        test time): `scores * logit_scale` unless the loss scales or shifts classes (KPS:
        `s_base * r_j * cos`; LA: `z_j + tau log pi_j`). The post-hoc rule `train-logits`
        predicts their argmax (`ltbench eval`)."""
        return scores * self.logit_scale

    # -- forward -------------------------------------------------------------------------------

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x, t = self._check_inputs(scores, targets)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.compute(x, t)
        return self.compute(x, t)

    def compute(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_inputs(self, scores, targets):
        if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise LtbenchError(f"scores must be a 2-D tensor (batch, classes), got {shape}")
        if scores.shape[1] != self.num_classes:
            raise LtbenchError(
                f"scores have {scores.shape[1]} classes but the loss was built for "
                f"{self.num_classes} class counts; they must match"
            )
        if not scores.is_floating_point():
            raise LtbenchError(f"scores must be a floating-point tensor, got {scores.dtype}")
        if (
            not isinstance(targets, torch.Tensor)
            or targets.dim() != 1
            or targets.shape[0] != scores.shape[0]
            or targets.is_floating_point()
            or targets.dtype == torch.bool
        ):
            got = (
                f"{targets.dtype} of shape {tuple(targets.shape)}"
                if isinstance(targets, torch.Tensor)
                else type(targets).__name__
            )
            raise LtbenchError(
                f"targets must be class indices, an integer tensor of shape ({scores.shape[0]},);"
                f" got {got}"
            )
        if targets.numel() and self._should_check_range(targets):
            lo, hi = (int(v) for v in torch.aminmax(targets))
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise LtbenchError(
                    f"target class {bad} is out of range; targets must be in "
                    f"[0, {self.num_classes - 1}]"
                )
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()  # bf16 / fp16: compute the loss in float32
        return scores, targets.long()

    def _should_check_range(self, targets: torch.Tensor) -> bool:
        # Reading the range back costs a host synchronisation on an accelerator, so there only
        # the first batch per device is checked (later out-of-range targets still fail inside
        # the indexing kernels); host tensors are checked on every call.
        if targets.device.type == "cpu":
            return True
        if targets.device in self._range_checked_on:
            return False
        self._range_checked_on.add(targets.device)
        return True

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, head={self.head!r}"


# ---------------------------------------------------------------------------------------------
# Fused margin cross-entropy
# ---------------------------------------------------------------------------------------------

# exp() of arguments below about -87 (float32) gives subnormals, which the CPU computes tens of
# times slower; entries that far below the row maximum contribute < 1e-26 of the softmax mass,
# so their shifted logit is floored here (float64 is not affected in practice).
_EXP_FLOOR = {torch.float32: -60.0, torch.float64: -600.0}


class _MarginCrossEntropy(torch.autograd.Function):
    """Loss `sum_b coef_b * CE_b(z)` with `z_bj = row_b * col_j * x_bj - offset_b [j = y_b]`.

    Works on `u = z / row` (row > 0): the row maximum of z is `row * max(u)`, so the shift and
    the row scale are applied together in one pass, `row * (u - max(u))`.
    """

    @staticmethod
    def forward(ctx, x, targets, col, row, offset, coef):
        rows = torch.arange(x.shape[0], device=x.device)
        u = x * col if col is not None else x.clone()
        u_y = u[rows, targets]
        if row is None:
            z_y = u_y - offset
            u[rows, targets] = z_y
            u_max = u.amax(dim=1, keepdim=True)
            z_max = u_max.squeeze(1)
            u.sub_(u_max)
        else:
            z_y = row * u_y - offset
            u[rows, targets] = z_y / row
            u_max = u.amax(dim=1, keepdim=True)
            z_max = row * u_max.squeeze(1)
            torch.addcmul(-z_max.unsqueeze(1), u, row.unsqueeze(1), out=u)
        # u now holds z - max(z); it becomes the unnormalised softmax, kept for backward
        u.clamp_min_(_EXP_FLOOR.get(x.dtype, -60.0)).exp_()
        sum_exp = u.sum(dim=1)
        lse = z_max + sum_exp.log()
        ctx.save_for_backward(u, sum_exp, targets, col, row, coef)
        return (coef * (lse - z_y)).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        e, sum_exp, targets, col, row, coef = ctx.saved_tensors
        rows = torch.arange(e.shape[0], device=e.device)
        k = coef * grad_out
        if row is not None:
            k = k * row
        # d loss / d z = coef * (softmax - onehot); then the chain rule through row and col
        grad = e * (k / sum_exp).unsqueeze(1)
        grad[rows, targets] -= k
        if col is not None:
            grad.mul_(col)
        return grad, None, None, None, None, None


def margin_cross_entropy(
    x: torch.Tensor,
    targets: torch.Tensor,
    col_scale: torch.Tensor | float | None = None,
    row_scale: torch.Tensor | None = None,
    target_offset: torch.Tensor | float = 0.0,
    coef: torch.Tensor | None = None,
) -> torch.Tensor:
    """`sum_b coef_b * CE(z_b, y_b)` with `z_bj = row_b * col_j * x_bj - offset_b [j = y_b]`.

    `col_scale` is a per-class vector (C) or a number, `row_scale` a positive per-sample vector (B),
    `target_offset` the amount subtracted from the target logit after scaling (B or a number),
    `coef` the reduction coefficients (B; default 1/B, the mean). One pass over the B x C scores
    forward and back, with the target column handled by indexing (no one-hot).
    """
    if isinstance(col_scale, numbers.Real):
        col_scale = torch.tensor(float(col_scale), dtype=x.dtype, device=x.device)
    if not isinstance(target_offset, torch.Tensor):
        target_offset = torch.tensor(float(target_offset), dtype=x.dtype, device=x.device)
    if coef is None:
        coef = sample_coefficients(targets, None, x)
    return _MarginCrossEntropy.apply(x, targets, col_scale, row_scale, target_offset, coef)


def margin_cross_entropy_reference(
    x, targets, col_scale=None, row_scale=None, target_offset=0.0, coef=None
):
    """The same loss through plain autograd (tests compare the fused version with it)."""
    z = x if col_scale is None else x * col_scale
    if row_scale is not None:
        z = z * row_scale.unsqueeze(1)
    offset = torch.as_tensor(target_offset, dtype=x.dtype, device=x.device).expand(x.shape[0])
    z = z.scatter_add(1, targets.unsqueeze(1), -offset.unsqueeze(1))
    per_sample = torch.nn.functional.cross_entropy(z, targets, reduction="none")
    if coef is None:
        return per_sample.mean()
    return (coef * per_sample).sum()
