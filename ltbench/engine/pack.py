"""Packed runs: up to K runs that share their data and schedule, trained as one fused network.

A small network (ResNet-32: 0.46M parameters) leaves a GPU launch-bound; K of them side by side
in one network do K runs' work per kernel launch (HFTA, Wang et al., MLSys 2021). The fusion:

- every convolution of the K members becomes one grouped convolution (member k's channels are
  its own groups), every BatchNorm one BatchNorm over K x C channels (its statistics stay per
  member: a channel sees only its own member's batch), the classifier one batched head;
- the input is the K members' own batches side by side along the channels: each member keeps
  its own data order, augmentation draws and mixup draws (from its seed, as alone);
- the loss is the sum of the members' losses, so each member's gradient is the one it would
  get alone; SGD's momentum and weight decay are elementwise, so one optimizer over the packed
  tensors updates each member as its own optimizer would. Every member keeps its own loss
  plugin and parameters, and its GA / DRW schedule (`set_epoch`); draws a loss makes from
  torch's global generator come from the member's own stream (its state is swapped in).

That is the `grouped` fusion, the one for CUDA. On CPU a grouped convolution is slower than
its groups one after another (measured in BENCHMARKS.md), so there the default is `serial`: the
members' networks stay apart and run in turn within each step (`MemberNets`); the step is still
one summed loss, one backward and one SGD update, and everything else below holds for both.

Each member's initial weights are its solo run's (built with its seed, then copied in), and
its folder gets exactly the files of a solo run (`ltbench.engine.loop`): config.yaml,
metrics.jsonl, a checkpoint.pt in the solo layout (so a member can be resumed alone, and a
pack is resumed from its members' checkpoints) and result.json, with `pack` added (its size
and its members' folders). A member whose loss goes NaN or infinite fails with the solo run's
error at the end of that epoch; its weights are zeroed and it leaves the summed loss, and the
others go on. `epoch_seconds` and `wall_seconds` of a member are the pack's (the time it
waited), not a share of it.

What may differ between members: seed, loss and its parameters, mixup alpha (and the settings
that leave the numbers alone, e.g. `num_workers`). Everything else must be equal
(`pack_mismatch`). A method with its own stages, network or step is not packed
(`solo_reason`).
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.engine.checkpoint import (
    append_row,
    environment,
    load_checkpoint,
    prepare_out_dir,
    read_rows,
    save_checkpoint,
    write_json,
    write_rows,
)
from ltbench.engine.config import RUNTIME_KEYS, TrainConfig, save_yaml
from ltbench.engine.identity import precision_name
from ltbench.engine.locks import check_out_dir, hold
from ltbench.engine.metrics import Evaluator, validation_metrics
from ltbench.engine.models import CosineClassifier
from ltbench.errors import LtbenchError, os_error_message
from ltbench.sdk.stages import Stage

# What the members of a pack may differ in (all else, but the runtime settings, must be equal).
MEMBER_KEYS = frozenset({"seed", "loss", "loss_params", "mixup_alpha", "stage2"})


# ----------------------------------------------------------------------------------------------
# Which runs can share a pack


def solo_reason(cfg: TrainConfig, stages: Sequence[Stage]) -> str | None:
    """Why the resolved run `cfg` with its planned `stages` cannot be packed; None if it can."""
    if len(stages) != 1:
        return f"{cfg.loss} has {len(stages)} stages"
    stage = stages[0]
    if stage.model is not None or stage.step is not None or stage.extra_samplers:
        return f"{cfg.loss} brings its own network, step or samplers"
    if stage.sampler != "instance" or stage.trainable != "all" or stage.class_scale:
        return f"{cfg.loss} trains with its own sampler or weights"
    return None


def pack_signature(cfg: TrainConfig) -> tuple:
    """The settings the members of one pack share (a resolved configuration's, as a key)."""
    data = cfg.to_dict()
    return tuple(
        (k, repr(v)) for k, v in data.items() if k not in MEMBER_KEYS and k not in RUNTIME_KEYS
    ) + tuple((k, repr(data[k])) for k in ("device", "amp", "compile", "cuda_graphs"))


def pack_mismatch(first: TrainConfig, other: TrainConfig) -> str | None:
    """The first shared setting two resolved runs disagree on, as text; None if they may pack."""
    a, b = dict(pack_signature(first)), dict(pack_signature(other))
    for key in a:
        if a[key] != b.get(key):
            return f"{key} is {a[key]} in one and {b.get(key)} in the other"
    return None


# ----------------------------------------------------------------------------------------------
# The fused network


class PackedLinear(nn.Module):
    """K linear heads: features (B, K*F) -> scores (B, K, C). `weight` is the members' weights
    stacked along dim 0 (K*C, F), `bias` (K*C,), so a member's slice is its own head's."""

    def __init__(self, in_features: int, num_classes: int, members: int, bias: bool = True):
        super().__init__()
        self.members, self.in_features, self.num_classes = members, in_features, num_classes
        self.weight = nn.Parameter(torch.empty(members * num_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(members * num_classes)) if bias else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        k, c, f = self.members, self.num_classes, self.in_features
        x = features.reshape(features.shape[0], k, f)
        out = torch.einsum("bkf,kcf->bkc", x, self.weight.view(k, c, f).to(x.dtype))
        return out if self.bias is None else out + self.bias.view(k, c).to(out.dtype)


class PackedCosine(nn.Module):
    """K cosine heads (`CosineClassifier`, member by member): (B, K*F) -> cosines (B, K, C)."""

    def __init__(self, in_features: int, num_classes: int, members: int, eps: float):
        super().__init__()
        self.members, self.in_features, self.num_classes, self.eps = (
            members,
            in_features,
            num_classes,
            eps,
        )
        self.weight = nn.Parameter(torch.empty(members * num_classes, in_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        k, c, f = self.members, self.num_classes, self.in_features
        with torch.autocast(device_type=features.device.type, enabled=False):
            dtype = torch.promote_types(features.dtype, torch.float32)
            x = F.normalize(features.reshape(-1, k, f).to(dtype), dim=2, eps=self.eps)
            w = F.normalize(self.weight.view(k, c, f).to(dtype), dim=2, eps=self.eps)
            return torch.einsum("bkf,kcf->bkc", x, w).clamp(-1.0, 1.0)


def _stack_scores(scores: list[torch.Tensor]) -> torch.Tensor:
    """Per-member scores (B, C) -> (B, K, C), in the widest of their dtypes."""
    dtype = scores[0].dtype
    for s in scores[1:]:
        dtype = torch.promote_types(dtype, s.dtype)
    return torch.stack([s.to(dtype) for s in scores], dim=1)


class MemberHeads(nn.Module):
    """The members' own heads, for a pack whose heads differ in kind (linear and cosine):
    (B, K*F) -> (B, K, C), each member's scores from its own head (in the wider dtype of the
    two under autocast: a cosine head's scores are float32)."""

    def __init__(self, heads: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.reshape(features.shape[0], len(self.members), -1)
        return _stack_scores([head(x[:, k]) for k, head in enumerate(self.members)])


class MemberNets(nn.Module):
    """The `serial` pack: the members' networks kept apart, each run on its own batch in turn
    ([K batches] -> (B, K, C)); the step is still one loss sum, one backward and one SGD step.
    On CPU a grouped convolution is slower than its groups one after another (BENCHMARKS.md),
    so there the pack saves only the per-step work around the networks."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(nets)

    def forward(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        return _stack_scores([net(x) for net, x in zip(self.members, images, strict=True)])


HEAD_TYPES = (nn.Linear, CosineClassifier)


def _pack_module(modules: list[nn.Module]) -> nn.Module:
    """The fused twin of K modules of the same structure (weights not copied yet)."""
    first, k = modules[0], len(modules)
    # by name: torchvision's networks are of a class made anew for each (models.py)
    if len({type(m).__qualname__ for m in modules}) > 1 or (
        isinstance(first, nn.Linear) and len({m.bias is None for m in modules}) > 1
    ):
        if all(isinstance(m, HEAD_TYPES) for m in modules):
            return MemberHeads([copy.deepcopy(m) for m in modules])
        raise LtbenchError("the networks of a pack must have the same layers")
    if isinstance(first, nn.Conv2d):
        return nn.Conv2d(
            first.in_channels * k,
            first.out_channels * k,
            first.kernel_size,
            stride=first.stride,
            padding=first.padding,
            dilation=first.dilation,
            groups=first.groups * k,
            bias=first.bias is not None,
            padding_mode=first.padding_mode,
        )
    if isinstance(first, nn.BatchNorm2d):
        return nn.BatchNorm2d(
            first.num_features * k,
            eps=first.eps,
            momentum=first.momentum,
            affine=first.affine,
            track_running_stats=first.track_running_stats,
        )
    if isinstance(first, nn.Linear):
        return PackedLinear(first.in_features, first.out_features, k, first.bias is not None)
    if isinstance(first, CosineClassifier):
        return PackedCosine(first.in_features, first.num_classes, k, first.eps)
    if any(True for _ in first.parameters(recurse=False)) or any(
        True for _ in first.buffers(recurse=False)
    ):
        raise LtbenchError(f"a {type(first).__name__} layer cannot be packed")
    packed = copy.copy(first)  # the module's settings; its children are replaced below
    packed._parameters, packed._buffers = OrderedDict(), OrderedDict()
    packed._modules = OrderedDict(
        (name, _pack_module([m._modules[name] for m in modules])) for name in first._modules
    )
    if hasattr(first, "members"):  # a block whose channel-mixing steps go member by member
        packed.members = k
    return packed


class PackLayout:
    """Where each member's tensors are in the packed network: a fused tensor holds member k's
    slice k of K along dim 0 (`chunk`); a `MemberHeads` or `MemberNets` holds member k's
    module whole (`<path>.members.<k>.<name>` is the member's `<path>.<name>`). Maps
    state dicts and SGD state dicts both ways (members keep the solo layout and order)."""

    def __init__(self, packed: nn.Module, members: int):
        self.members = members
        self.prefixes = [
            f"{name}.members." if name else "members."
            for name, module in packed.named_modules()
            if isinstance(module, MemberHeads | MemberNets)
        ]
        self.names = [name for name, _ in packed.named_parameters()]
        # member k's parameters in its solo order: (solo name, packed position)
        self.params = [
            [
                (solo, j)
                for j, name in enumerate(self.names)
                for owner, solo in [self.owner(name)]
                if owner in (None, k)
            ]
            for k in range(members)
        ]

    def owner(self, key: str) -> tuple[int | None, str]:
        """(the member that alone owns `key`, or None for a fused tensor; its solo name)."""
        for prefix in self.prefixes:
            if key.startswith(prefix):
                k, rest = key[len(prefix) :].split(".", 1)
                return int(k), prefix[: -len("members.")] + rest
        return None, key

    def _slice(self, tensor: torch.Tensor, k: int) -> torch.Tensor:
        return tensor.chunk(self.members)[k] if tensor.dim() else tensor

    def pack_state(self, keys: Sequence[str], states: Sequence[dict]) -> dict[str, torch.Tensor]:
        """The packed network's state (its `keys`) from the members' state dicts."""
        out = {}
        for key in keys:
            owner, solo = self.owner(key)
            if owner is not None:
                out[key] = states[owner][solo]
            elif states[0][solo].dim():
                out[key] = torch.cat([s[solo] for s in states])
            else:
                out[key] = states[0][solo]
        return out

    def member_state(self, state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """Member k's state dict (the solo keys and shapes) from the packed network's."""
        out = {}
        for key, tensor in state.items():
            owner, solo = self.owner(key)
            if owner is None:
                out[solo] = self._slice(tensor, k).detach().clone()
            elif owner == k:
                out[solo] = tensor.detach().clone()
        return out

    def pack_optimizer(self, states: Sequence[dict]) -> dict:
        """The packed SGD state dict from the members' (solo parameter order)."""
        index = [{solo: i for i, (solo, _) in enumerate(p)} for p in self.params]
        merged: dict[str, Any] = {"state": {}}
        for j, name in enumerate(self.names):
            owner, solo = self.owner(name)
            if owner is not None:
                entry = states[owner]["state"].get(index[owner][solo])
            else:
                parts = [s["state"].get(index[k][solo]) for k, s in enumerate(states)]
                entry = None if any(p is None for p in parts) else {}
                for field_name, value in (parts[0] or {}).items() if entry is not None else ():
                    fused = isinstance(value, torch.Tensor) and value.dim()
                    entry[field_name] = (
                        torch.cat([p[field_name] for p in parts]) if fused else value
                    )
            if entry is not None:
                merged["state"][j] = dict(entry)
        group = dict(states[0]["param_groups"][0])
        group["params"] = list(range(len(self.names)))
        merged["param_groups"] = [group]
        return merged

    def member_optimizer(self, state: dict, k: int) -> dict:
        """Member k's SGD state dict (its solo parameter order) from the packed optimizer's."""
        out: dict[str, Any] = {"state": {}}
        for i, (_, j) in enumerate(self.params[k]):
            entry = state["state"].get(j)
            if entry is None:
                continue
            fused = self.owner(self.names[j])[0] is None
            out["state"][i] = {
                name: (
                    self._slice(v, k).clone()
                    if fused and isinstance(v, torch.Tensor)
                    else (v.clone() if isinstance(v, torch.Tensor) else v)
                )
                for name, v in entry.items()
            }
        group = copy.deepcopy(state["param_groups"][0])
        group["params"] = list(range(len(self.params[k])))
        out["param_groups"] = [group]
        return out


FUSIONS = ("auto", "grouped", "serial")


def check_fusion(fusion: str, device: torch.device) -> str:
    """The fusion a pack uses: `grouped` (one network of grouped convolutions) or `serial`
    (`MemberNets`); `auto` is grouped on CUDA and serial on CPU."""
    if fusion not in FUSIONS:
        raise LtbenchError(f"unknown pack fusion {fusion!r}; allowed: {', '.join(FUSIONS)}")
    if fusion == "auto":
        return "grouped" if device.type == "cuda" else "serial"
    return fusion


def pack_models(models: Sequence[nn.Module], fusion: str = "grouped"):
    """One network computing `models` side by side, with copies of their weights, and its
    layout: `(packed, layout)`. `grouped` takes the members' images side by side along the
    channels (B, K*3, H, W); `serial` takes the list of their batches. Both give (B, K, C)."""
    if fusion == "serial":
        packed = MemberNets([copy.deepcopy(m) for m in models])
    else:
        packed = _pack_module(list(models))
    packed = packed.to(next(models[0].parameters()).dtype)
    layout = PackLayout(packed, len(models))
    keys = list(packed.state_dict())
    packed.load_state_dict(layout.pack_state(keys, [m.state_dict() for m in models]))
    return packed, layout


# ----------------------------------------------------------------------------------------------
# One member's state in the loop


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


# ----------------------------------------------------------------------------------------------
# Training a pack


def train_pack(
    cfgs: Sequence[TrainConfig],
    out_dirs: Sequence[str | Path],
    hooks: Sequence[Any] | None = None,
    *,
    resume: bool = True,
    progress: bool | None = None,
    fusion: str = "auto",
) -> list[dict[str, Any] | LtbenchError]:
    """Train the runs `cfgs` into `out_dirs` as one pack; each member's result (also in its
    result.json) or the `LtbenchError` it failed with, in order.

    `hooks[k]` (or None) hears member k's epochs like `train`'s hooks. A member that has its
    result.json already is not trained again (its stored result is returned); with `resume`
    the others continue from their own checkpoint.pt, members at different epochs in turn.
    Every input is checked before anything is written; the pack holds every member's lock.
    `fusion`: how the networks are fused (`check_fusion`; recorded in result.json's `pack`).
    """
    import json

    from ltbench.engine.stages import check_run

    if not cfgs or len(cfgs) != len(out_dirs):
        raise LtbenchError("a pack needs one output folder per run, and at least one run")
    members = []
    for cfg, out in zip(cfgs, out_dirs, strict=True):
        cfg, stages = check_run(cfg)
        reason = solo_reason(cfg, stages)
        if reason is not None:
            raise LtbenchError(f"cannot pack {cfg.loss!r}: {reason}; run it alone")
        if members:
            mismatch = pack_mismatch(members[0].cfg, cfg)
            if mismatch:
                raise LtbenchError(f"these runs cannot share a pack: {mismatch}")
        members.append(Member(cfg, stages[0], check_out_dir(out)))
    from ltbench.engine.step import pick_device

    check_fusion(fusion, pick_device(members[0].cfg.device))
    if len({m.out_dir for m in members}) != len(members):
        raise LtbenchError("two runs of a pack have the same output folder")
    hooks = list(hooks) if hooks is not None else [None] * len(members)
    try:
        with ExitStack() as stack:
            for m in members:
                stack.enter_context(hold(m.out_dir))
            todo = []
            for m in members:
                done = m.out_dir / "result.json"
                if done.exists() and resume:
                    m.result = json.loads(done.read_text())
                    continue
                prepare_out_dir(m.out_dir, resume=resume, overwrite=False)
                ckpt = m.out_dir / "checkpoint.pt"
                if resume and ckpt.exists():
                    m.state = load_checkpoint(ckpt, m.cfg)
                    m.start = int(m.state.get("stage_epoch", m.state["epoch"]))
                todo.append(m)
            for start in sorted({m.start for m in todo}):
                group = [m for m in todo if m.start == start]
                _train_group(group, [hooks[members.index(m)] for m in group], progress, fusion)
    except OSError as exc:
        if exc.filename is None:
            raise
        raise LtbenchError(os_error_message(exc, members[0].out_dir)) from exc
    return [m.result if m.error is None else m.error for m in members]


def _load_data(members: list[Member], device: torch.device) -> None:
    """Each member's bundle and loaders; one bundle for members whose data is the same (the
    validation hold-out is drawn with the run's seed, so only then does it differ)."""
    from ltbench.engine.step import load_run_data, make_loaders

    bundles: dict[Any, Any] = {}
    for m in members:
        key = m.cfg.seed if m.cfg.val_fraction > 0 else None
        if key not in bundles:
            bundles[key] = load_run_data(m.cfg)
        m.bundle = bundles[key]
        counts = list(m.bundle.cls_num_list)
        if min(counts) < 1:
            empty = counts.index(min(counts))
            raise LtbenchError(
                f"the long-tailed training set leaves class {empty} "
                f"({m.bundle.class_names[empty]}) without images (imb_factor="
                f"{m.cfg.imb_factor:g}, n_max={m.cfg.n_max}); use a larger n_max or imb_factor"
            )
        m.loaders = make_loaders(
            m.bundle, m.cfg, device, batch_size=m.stage.batch_size, sampling=m.stage.sampler
        )


def _train_group(
    members: list[Member], hooks: list, progress: bool | None, fusion: str = "auto"
) -> None:
    """Train members that are all at the same epoch as one fused network, to the end."""
    from ltbench.engine.loop import build_result, stage_learning_rate, validation_split_record
    from ltbench.engine.step import pick_device, step_options

    start_time = time.perf_counter()
    lead = members[0]
    cfg0, stage0, start = lead.cfg, lead.stage, lead.start
    k_all = len(members)
    device = pick_device(cfg0.device)
    amp, channels_last = step_options(cfg0, device)
    _load_data(members, device)
    num_classes = lead.bundle.num_classes

    model, layout, step_model, optimizer, joined = build_pack(
        members, num_classes, device, channels_last, fusion
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()

    def fused(split: str, epoch: int):
        return member_batches([getattr(m.loaders, split) for m in members], epoch)

    @torch.no_grad()
    def assess(split: str, alive: list[Member]) -> dict[int, dict[str, Any]]:
        model.eval()
        evaluators = [Evaluator(num_classes, device) for _ in members]
        for images, labels in fused(split, 0):
            with autocast:
                scores = step_model(joined(images))
            scores = scores.float()
            for k, m in enumerate(members):
                if m in alive:
                    to_logits = getattr(m.plugin, "eval_logits", None)
                    s = scores[:, k]
                    evaluators[k].update(to_logits(s) if to_logits else s, labels[k])
        counts = {k: list(m.bundle.cls_num_list) for k, m in enumerate(members)}
        return {k: evaluators[k].compute(counts[k]) for k, m in enumerate(members) if m in alive}

    # -- resume: each member's metrics lines up to its checkpoint ------------------------------
    for m in members:
        m.history = [r for r in read_rows(m.out_dir / "metrics.jsonl") if r["epoch"] <= start]
        write_rows(m.out_dir / "metrics.jsonl", m.history)
        save_yaml(m.cfg, m.out_dir / "config.yaml")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=stage0.epochs, initial=start, desc=f"pack of {k_all}", unit="epoch")
    alive = list(members)
    for epoch in range(start, stage0.epochs):
        tick = time.perf_counter()
        lr = stage_learning_rate(cfg0, stage0, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start_epoch(members, epoch, device)
        stats = fit_pack_epoch(
            step_model, members, alive, optimizer, fused("train", epoch), joined, autocast, device
        )
        bad_steps = stats["first_bad_step"].tolist()
        seen = max(int(stats["seen"]), 1)
        loss_sum, correct = stats["loss_sum"].tolist(), stats["correct"].tolist()
        for k, m in enumerate(members):
            if m in alive and bad_steps[k] >= 0:
                m.error = LtbenchError(
                    f"the loss became NaN or infinite at epoch {epoch + 1}, step "
                    f"{bad_steps[k] + 1}; try a lower learning rate (lr={lr:g}) or check the "
                    "loss parameters"
                )
                alive.remove(m)
                _silence(model, optimizer, layout, k)
        if not alive:
            break
        rows = {}
        for k, m in enumerate(members):
            if m in alive:
                rows[k] = {
                    "epoch": epoch + 1,
                    "lr": lr * stage0.lr_factor,
                    "train_loss": loss_sum[k] / seen,
                    "train_acc": 100.0 * correct[k] / seen,
                }
        if epoch + 1 == stage0.epochs or (epoch + 1) % cfg0.eval_every == 0:
            for k, record in assess("test", alive).items():
                rows[k]["test_top1_error"] = record["top1_error"]
        if lead.loaders.val is not None:
            for k, record in assess("val", alive).items():
                rows[k].update(validation_metrics(record["confusion_matrix"]))
                del rows[k]["val_classes_without_images"]
        seconds = time.perf_counter() - tick
        packed_state = model.state_dict()
        optimizer_state = optimizer.state_dict()
        for k, row in rows.items():
            m = members[k]
            row["epoch_seconds"] = seconds
            m.history.append(row)
            state = {
                "config": m.cfg.to_dict(),
                "epoch": epoch + 1,
                "stage": m.stage.name,
                "stage_epoch": epoch + 1,
                "model": layout.member_state(packed_state, k),
                "optimizer": layout.member_optimizer(optimizer_state, k),
            }
            append_row(m.out_dir / "metrics.jsonl", row)
            save_checkpoint(m.out_dir / "checkpoint.pt", state)
            if hooks[k] is not None:
                hooks[k].on_epoch_end(row["epoch"], row, m.out_dir / "checkpoint.pt")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not alive:
        return

    # -- final metrics of the members still alive -----------------------------------------------
    finals = assess("test", alive)
    vals = assess("val", alive) if lead.loaders.val is not None else {}
    elapsed = time.perf_counter() - start_time
    for k, m in enumerate(members):
        if m not in alive:
            continue
        result = build_result(m.cfg, m.bundle, finals[k], m.history)
        if k in vals:
            result.update(validation_metrics(vals[k]["confusion_matrix"]))
            result.update(validation_split_record(m.bundle))
        result["wall_seconds"] = elapsed + sum(
            r.get("epoch_seconds", 0.0) for r in m.history[:start]
        )
        result["env"] = environment(device, amp=amp, channels_last=channels_last)
        result["precision"] = precision_name(amp)
        result["stage_plan"] = [m.stage.describe()]
        result["pack"] = {
            "size": k_all,
            "fusion": check_fusion(fusion, device),
            "members": [x.out_dir.name for x in members],
        }
        write_json(m.out_dir / "result.json", result)
        m.result = result


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
    from ltbench.engine.models import build_model
    from ltbench.engine.step import sgd, step_module
    from ltbench.sdk.registry import build_loss

    solos = []
    for m in members:
        torch.manual_seed(m.cfg.seed)
        counts = list(m.bundle.cls_num_list)
        m.plugin = build_loss(m.stage.loss, counts, **m.stage.loss_params).to(device)
        net = build_model(m.cfg.model, num_classes, head=m.plugin.head, width=m.cfg.width)
        if m.state is not None:
            net.load_state_dict(m.state["model"])
        solos.append(net)
        m.mixup = Mixup(m.stage.mixup_alpha) if m.stage.mixup_alpha > 0 else None
    fusion = check_fusion(fusion, device)
    model, layout = pack_models(solos, fusion)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    lead = members[0]
    step_model = step_module(model, lead.cfg, device)
    optimizer = sgd(
        model.parameters(),
        device,
        lr=lead.stage.lr,
        momentum=lead.cfg.momentum,
        weight_decay=lead.stage.weight_decay,
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


def fit_pack_epoch(model, members, alive, optimizer, batches, join, autocast, device):
    """One epoch of the pack: per step, each member's batch (mixed with its own draws where it
    has mixup), one forward, each member's loss, the sum of the living members' losses,
    backward, SGD. No host synchronisation inside: the sums stay on the device."""
    k_all = len(members)
    loss_sum = torch.zeros(k_all, device=device)
    correct = torch.zeros(k_all, device=device, dtype=torch.long)
    seen = torch.zeros((), device=device, dtype=torch.long)
    first_bad = torch.full((k_all,), -1, device=device, dtype=torch.long)
    living = [m in alive for m in members]
    model.train()
    for index, (images, labels) in enumerate(batches):
        with autocast:
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
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        with torch.no_grad():
            values = torch.stack([loss.detach().float() for loss in losses])
            bad = ~torch.isfinite(values) & (first_bad < 0)
            first_bad = torch.where(bad, torch.full_like(first_bad, index), first_bad)
            batch = labels[0].shape[0]
            loss_sum += values * batch
            predicted = scores.detach().argmax(dim=2)  # (B, K)
            correct += (predicted == torch.stack(labels, dim=1)).sum(dim=0)
            seen += batch
    return {"loss_sum": loss_sum, "correct": correct, "seen": seen, "first_bad_step": first_bad}


@torch.no_grad()
def _silence(model: nn.Module, optimizer, layout: PackLayout, k: int) -> None:
    """Zero member k's weights, statistics and momentum: it leaves the pack's sums and its
    forward stays finite (its outputs no longer matter)."""
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    moments = {name: optimizer.state.get(p, {}) for name, p in model.named_parameters()}
    for name, tensor in tensors.items():
        owner, _ = layout.owner(name)
        if owner == k or (owner is None and tensor.dim()):
            targets = [tensor] + [
                v for v in moments.get(name, {}).values() if isinstance(v, torch.Tensor)
            ]
            for t in targets:
                (t if owner == k else t.chunk(layout.members)[k]).zero_()
