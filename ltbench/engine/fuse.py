"""The fused network of a pack (`ltbench.engine.pack`): K networks of the same structure as one.

`grouped` (HFTA's fusion, Wang et al., MLSys 2021; the one for CUDA): every convolution of the
K members becomes one grouped convolution (member k's channels are its own groups), every
BatchNorm one BatchNorm over K x C channels (its statistics stay per member: a channel sees only
its own member's batch), the classifier one batched head (`PackedLinear`, `PackedCosine`), or
the members' own heads when linear and cosine heads mix (`MemberHeads`). Its input is the K
members' batches side by side along the channels (B, K*3, H, W). Any block whose forward mixes
channels must do it member by member: the CIFAR ResNet's zero-padded shortcut does (its
`members`); torchvision's ResNets mix none.

`serial` (the default on CPU, where a grouped convolution is slower than its groups one after
another: BENCHMARKS.md): the members' networks stay apart and run in turn (`MemberNets`) on the
list of their batches.

Both give scores (B, K, C). `PackLayout` says where each member's tensors are: a fused tensor
holds member k's slice k of K along dim 0, a per-member module holds it whole; it maps state
dicts and SGD state dicts both ways, members keeping the solo keys, shapes and order.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.engine.models import CosineClassifier
from ltbench.errors import LtbenchError


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


@torch.no_grad()
def silence(model: nn.Module, optimizer, layout: PackLayout, k: int) -> None:
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
