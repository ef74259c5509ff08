"""Training strategies that compose with any loss plugin: mixup (Zhang et al. 2018).

    lam ~ Beta(alpha, alpha)                    (alpha = 1.0 by default; 0 disables mixing)
    x~  = lam * x + (1 - lam) * x[perm]         perm: a random permutation of the batch
    L   = lam * L(out, y) + (1 - lam) * L(out, y[perm])

Every draw comes from the generator handed in, so runs are reproducible:
- a `torch.Generator` (or None: torch's global RNG): the permutation and lam are drawn on the
  generator's device with torch ops only (no host synchronisation); lam is a 0-dim tensor;
- a `numpy.random.Generator`: drawn on the host; lam is a Python float.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ltbench.sdk.loss_utils import check_non_negative

# Candidates per Gamma draw in the vectorised Marsaglia-Tsang sampler: each is accepted with
# probability > 0.95, so all 32 being rejected has probability < 1e-41.
_GAMMA_CANDIDATES = 32


def _log_standard_gamma(alpha: float, n: int, generator, device) -> torch.Tensor:
    """log of `n` Gamma(alpha, 1) draws (Marsaglia & Tsang 2000), torch ops only."""
    dtype = torch.float32 if device.type == "mps" else torch.float64
    shape = alpha + 1.0 if alpha < 1 else alpha  # boost small shapes, corrected below
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    x = torch.randn((n, _GAMMA_CANDIDATES), generator=generator, device=device, dtype=dtype)
    u = torch.rand((n, _GAMMA_CANDIDATES), generator=generator, device=device, dtype=dtype)
    v = (1.0 + c * x) ** 3
    log_v = torch.log(v.clamp_min(torch.finfo(dtype).tiny))
    accept = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * log_v)
    first = accept.to(torch.uint8).argmax(dim=1, keepdim=True)  # first accepted candidate
    log_g = math.log(d) + log_v.gather(1, first).squeeze(1)
    if alpha < 1:
        w = torch.rand(n, generator=generator, device=device, dtype=dtype)
        log_g = log_g + torch.log(w.clamp_min(torch.finfo(dtype).tiny)) / alpha
    return log_g


def sample_beta(alpha: float, generator=None, device=None) -> torch.Tensor:
    """One draw of Beta(alpha, alpha) as a 0-dim tensor, from a torch generator (or global RNG)."""
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    log_g = _log_standard_gamma(alpha, 2, generator, torch.device(device))
    return torch.sigmoid(log_g[0] - log_g[1])  # X / (X + Y), stable for tiny alpha


class Mixup:
    """Mixup with `lam ~ Beta(alpha, alpha)`; `mix` draws, `loss` combines."""

    def __init__(self, alpha: float = 1.0):
        self.alpha = check_non_negative("alpha", alpha)

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha})"

    def mix(self, x: torch.Tensor, y: torch.Tensor, generator=None):
        """Mix a batch with a shuffled copy of itself: `(x_mixed, y_a, y_b, lam)`."""
        batch = x.shape[0]
        if isinstance(generator, np.random.Generator):
            lam = float(generator.beta(self.alpha, self.alpha)) if self.alpha > 0 else 1.0
            perm = torch.as_tensor(generator.permutation(batch), device=x.device)
        else:
            device = generator.device if generator is not None else x.device
            if self.alpha > 0:
                lam = sample_beta(self.alpha, generator, device)
            else:
                lam = torch.ones((), device=device, dtype=torch.float64)
            perm = torch.randperm(batch, generator=generator, device=device)
            lam, perm = lam.to(x.device, x.dtype), perm.to(x.device)
        x_mixed = lam * x + (1 - lam) * x[perm]
        return x_mixed, y, y[perm], lam

    @staticmethod
    def loss(loss_fn, scores, y_a, y_b, lam):
        """`lam * L(scores, y_a) + (1 - lam) * L(scores, y_b)` for any loss callable."""
        return mixup_loss(loss_fn, scores, y_a, y_b, lam)


def mixup_loss(loss_fn, scores, y_a, y_b, lam):
    """`lam * L(scores, y_a) + (1 - lam) * L(scores, y_b)`."""
    loss_a = loss_fn(scores, y_a)
    loss_b = loss_fn(scores, y_b)
    if isinstance(lam, torch.Tensor):
        lam = lam.to(loss_a.dtype)
    return lam * loss_a + (1 - lam) * loss_b


class MixupLoss(nn.Module):
    """A loss plugin wrapped for mixed batches; keeps the plugin's `head` and `set_epoch`.

    `forward(scores, y_a, y_b=None, lam=1.0)`: with `y_b` None it is the plain loss.
    """

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    @property
    def head(self) -> str:
        """The head of the wrapped loss."""
        return self.loss.head

    @property
    def loss_name(self) -> str | None:
        """The registry name of the wrapped loss, if any."""
        return getattr(self.loss, "loss_name", None)

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch on to the wrapped loss (its GA / DRW schedule)."""
        self.loss.set_epoch(epoch)

    def forward(self, scores, y_a, y_b=None, lam=1.0):
        if y_b is None:
            return self.loss(scores, y_a)
        return mixup_loss(self.loss, scores, y_a, y_b, lam)
