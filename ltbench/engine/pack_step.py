"""The step of a pack (`ltbench.engine.pack`): its members, their draws and one epoch.

A member is built as its solo run builds it (loss plugin and network from its seed, or from its
checkpoint); the pack is one network over them (`ltbench.engine.fuse`) with one SGD. Per step,
each member's batch comes from its own loader (its order and augmentation) and is mixed with its
own generator where it has mixup; one forward gives every member's scores; each member's loss
runs with its own stream of torch's global generator swapped in (what a loss like EQL draws
from); the living members' losses are summed, so each member's gradient is the one it would get
alone, and one backward and one SGD update (momentum and weight decay are elementwise) follow.
`ltbench bench train --pack K` times the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltbench.engine.config import TrainConfig
from ltbench.engine.fuse import check_fusion, pack_models
from ltbench.errors import LtbenchError
from ltbench.sdk.stages import Stage


class _Draws:
    """A member's stream of torch's global generator (what a loss like EQL draws from): a run
    alone seeds it at every epoch; in a pack its state is swapped in around the member's loss."""

    def __init__(self, seed: int, device: torch.device):
        self.device = device
        self.cpu = torch.Generator().manual_seed(seed).get_state()
        self.dev = (
            torch.Generator(device).manual_seed(seed).get_state() if device.type == "cuda" else None
        )

    def __enter__(self):
        torch.set_rng_state(self.cpu)
        if self.dev is not None:
            torch.cuda.set_rng_state(self.dev, self.device)

    def __exit__(self, *exc):
        self.cpu = torch.get_rng_state()
        if self.dev is not None:
            self.dev = torch.cuda.get_rng_state(self.device)


@dataclass
class Member:
    """One run of a pack: its configuration, folder, data, loss and records."""

    cfg: TrainConfig
    stage: Stage
    out_dir: Path
    start: int = 0  # epochs done before this process
    state: dict | None = None  # its checkpoint, when resumed
    bundle: Any = None
    loaders: Any = None
    plugin: Any = None
    mixup: Any = None
    history: list = field(default_factory=list)
    error: LtbenchError | None = None
    result: dict | None = None
    generator: torch.Generator | None = None
    draws: _Draws | None = None


def build_pack(
    members: list[Member],
    num_classes: int,
    device: torch.device,
    channels_last: bool,
    fusion: str = "auto",
):
    """Each member's loss plugin and network built as its solo run builds them (from its seed,
    or its checkpoint), then the packed network (`fusion`, see `check_fusion`), the module the
    step calls (compiled with `compile`), one SGD over it, and the function that turns the
    members' batches into the network's input: `(model, layout, step_model, optimizer, join)`."""
    from ltbench.engine.mixup import Mixup
    from ltbench.engine.network import build_network
    from ltbench.engine.step import float64_for_tests, sgd, step_module
    from ltbench.sdk.registry import build_loss

    solos = []
    for m in members:
        torch.manual_seed(m.cfg.seed)
        counts = list(m.bundle.cls_num_list)
        m.plugin = build_loss(m.stage.loss, counts, **m.stage.loss_params).to(device)
        net = build_network(m.cfg, m.stage, num_classes, m.plugin.head)
        if m.state is not None:
            net.load_state_dict(m.state["model"])
        solos.append(net)
        m.mixup = Mixup(m.stage.mixup_alpha) if m.stage.mixup_alpha > 0 else None
    fusion = check_fusion(fusion, device)
    model, layout = pack_models(solos, fusion)
    model = model.to(device)
    if float64_for_tests():  # as a solo run (`ltbench.engine.loop`)
        model = model.double()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    lead = members[0]
    step_model = step_module(model, lead.cfg, device)
    optimizer = sgd(
        model.parameters(), device, lead.cfg, lr=lead.stage.lr, weight_decay=lead.stage.weight_decay
    )
    if lead.state is not None:
        optimizer.load_state_dict(layout.pack_optimizer([m.state["optimizer"] for m in members]))
    if fusion == "serial":
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def join(images):
            return [x.contiguous(memory_format=fmt) for x in images]
    else:

        def join(images):
            return side_by_side(images, channels_last)

    return model, layout, step_model, optimizer, join


def start_epoch(members: list[Member], epoch: int, device: torch.device) -> None:
    """Each member's schedule (`set_epoch`) and its draws of `epoch`, seeded as alone."""
    from ltbench.engine.step import epoch_seed

    for m in members:
        m.plugin.set_epoch(epoch)
        draw = epoch_seed(m.cfg.seed, epoch)
        m.generator = torch.Generator(device=device).manual_seed(draw)
        m.draws = _Draws(draw, device)


def member_batches(loaders: Sequence[Any], epoch: int):
    """The members' batches of one epoch, step by step: ([images], [labels])."""
    from ltbench.engine.step import epoch_batches

    streams = [epoch_batches(x, epoch, False) for x in loaders]
    for pairs in zip(*streams, strict=True):
        yield [p[0] for p in pairs], [p[1] for p in pairs]


def side_by_side(images: Sequence[torch.Tensor], channels_last: bool) -> torch.Tensor:
    """The members' images along the channels: (B, K*3, H, W), the pack's input."""
    joined = torch.cat(list(images), dim=1)
    return joined.contiguous(memory_format=torch.channels_last) if channels_last else joined


def pack_epoch_steps(model, members, alive, optimizer, batches, join, amp, device):
    """One epoch of the pack through the one epoch loop (`ltbench.engine.step.sgd_epoch`): per
    step, each member's batch (mixed with its own draws where it has mixup), one forward, each
    member's loss, the sum of the living members' losses, backward, SGD. The sums stay on the
    device, one per member."""
    from ltbench.engine.step import sgd_epoch

    k_all = len(members)
    living = [m in alive for m in members]

    def forward(index: int, batch):
        images, labels = batch
        mixed: list[Any] = [None] * k_all
        for k, m in enumerate(members):
            if m.mixup is not None:
                images[k], y_a, y_b, lam = m.mixup.mix(images[k], labels[k], m.generator)
                mixed[k] = (y_a, y_b, lam)
        scores = model(join(images))
        losses = []
        for k, m in enumerate(members):
            with m.draws:
                s = scores[:, k]
                if mixed[k] is not None:
                    losses.append(m.mixup.loss(m.plugin, s, *mixed[k]))
                else:
                    losses.append(m.plugin(s, labels[k]))
        total = sum(loss for loss, keep in zip(losses, living, strict=True) if keep)
        return total, losses, scores, labels

    return sgd_epoch(model, batches, forward, _hits, optimizer, device, amp=amp, runs=k_all)


def _hits(scores: torch.Tensor, labels: list[torch.Tensor]) -> torch.Tensor:
    predicted = scores.detach().argmax(dim=2)  # (B, K)
    return (predicted == torch.stack(labels, dim=1)).sum(dim=0)
