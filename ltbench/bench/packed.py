"""`ltbench bench train --pack K`: K runs of ltbench's loop as one pack (`ltbench.engine.pack`).

The pack's side of the training benchmark (`ltbench.bench.train`): K runs of the benchmark's
recipe with seeds 0..K-1 on the same images, one epoch at a time through the pack's own step
(`ltbench.engine.pack_step`), fused as `fusion` says (`ltbench.engine.fuse.check_fusion`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch


@dataclass
class PackedRun:
    """K runs (seeds 0..K-1) of one batch size as one fused network, on the same images."""

    device: torch.device
    amp: bool
    members: list
    step_model: Any
    optimizer: Any
    join: Any  # the members' batches -> the packed network's input

    def epoch(self, epoch: int) -> int:
        """Train one epoch of the pack as `train_pack` does; the images of all K runs."""
        from ltbench.engine.pack_step import member_batches, pack_epoch_steps, start_epoch

        start_epoch(self.members, 0, self.device)  # the loss schedule stays at epoch 0
        stats = pack_epoch_steps(
            self.step_model,
            self.members,
            self.members,
            self.optimizer,
            member_batches([m.loaders for m in self.members], epoch),
            self.join,
            self.amp,
            self.device,
        )
        stats.first_bad_step.tolist()  # the end-of-epoch read of train_pack
        return int(stats.seen) * len(self.members)


def packed_run(cfg, data, device: torch.device, pack: int, fusion: str = "auto") -> PackedRun:
    """Build the pack: members with seeds 0..pack-1 and the shared recipe of `cfg`."""
    from ltbench.bench.inputs import NUM_CLASSES, bench_bundle
    from ltbench.engine.pack_step import Member, build_pack
    from ltbench.engine.stages import plan_stages
    from ltbench.engine.step import make_loaders, step_options

    bundle = bench_bundle(data)
    amp, channels_last = step_options(cfg, device)
    members = []
    for seed in range(pack):
        member_cfg = replace(cfg, seed=seed)
        stage = plan_stages(member_cfg)[0]
        loader = make_loaders(bundle, member_cfg, device).train
        members.append(Member(member_cfg, stage, Path("."), loaders=loader, bundle=bundle))
    _, _, step_model, optimizer, join = build_pack(
        members, NUM_CLASSES, device, channels_last, fusion
    )
    return PackedRun(device, amp, members, step_model, optimizer, join)
