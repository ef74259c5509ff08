"""Networks: ResNet-32 for CIFAR, ResNet-50 and ResNeXt-50 for ImageNet-LT / iNaturalist.

Every model built here is an `LtModel`: `model.backbone` maps images to a feature vector and
`model.classifier` maps features to class scores, so a two-stage method can freeze the backbone
and re-train (or replace) the classifier. Two heads:

- `linear`: an `nn.Linear` with bias; outputs logits.
- `cosine`: features and class weights both L2-normalised; outputs cosines in [-1, 1] with no
  scale (the loss applies its own scale `s`).

`width` scales every channel count (1.0 is the published network; smoke runs use e.g. 0.25).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ltbench.errors import LtbenchError

HEADS = ("linear", "cosine")


# --------------------------------------------------------------------------- heads


class CosineClassifier(nn.Module):
    """Cosine similarity between the L2-normalised feature and each L2-normalised class weight.

    Computed in float32 (float64 for float64 features) even under autocast: the normalisation
    must not lose precision, and the result is clamped so that bf16 rounding can never push a
    cosine outside [-1, 1].
    """

    def __init__(self, in_features: int, num_classes: int, eps: float = 1e-8):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_normal_(self.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            dtype = torch.promote_types(features.dtype, torch.float32)
            x = F.normalize(features.to(dtype), dim=1, eps=self.eps)
            w = F.normalize(self.weight.to(dtype), dim=1, eps=self.eps)
            return (x @ w.t()).clamp(-1.0, 1.0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}"


def build_head(
    head: str, in_features: int, num_classes: int, *, torch_default: bool = False
) -> nn.Module:
    """A fresh classifier of kind `head` ("linear" or "cosine"). A linear head is initialised
    as the LDAM-DRW / KPS code does (Kaiming-normal weights, zero bias), or with
    `torch_default` as `nn.Linear` comes (uniform in ±1/sqrt(in_features), bias too): the
    re-initialised classifier of classifier-balancing's cRT (`DotProductClassifier.py:25`)."""
    if head == "linear":
        layer = nn.Linear(in_features, num_classes)
        if not torch_default:
            nn.init.kaiming_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        return layer
    if head == "cosine":
        return CosineClassifier(in_features, num_classes)
    raise LtbenchError(f"unknown head {head!r}; known heads: {', '.join(HEADS)}")


class LtModel(nn.Module):
    """`forward(x) = classifier(backbone(x))`; `feature_dim` is the backbone's output size."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, head: str):
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = head
        self.classifier = build_head(head, feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


# --------------------------------------------------------------------------- ResNet-32


class _BasicBlockA(nn.Module):
    """The CIFAR basic block with the parameter-free "option A" shortcut of He et al. (2016):
    stride-2 subsampling and zero-padded extra channels when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride
        extra = planes - in_planes
        self.pad = (extra // 2, extra - extra // 2)

    # A pack of K networks (`ltbench.engine.pack`) keeps each member's channels together, so
    # its blocks add the zero channels member by member.
    members = 1

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad != (0, 0):
            if self.members == 1:
                x = F.pad(x, (0, 0, 0, 0, *self.pad))
            else:
                b, c, h, w = x.shape
                x = x.reshape(b, self.members, c // self.members, h, w)
                x = F.pad(x, (0, 0, 0, 0, *self.pad)).reshape(b, -1, h, w)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet backbone (6n+2 layers): 3 stages of `blocks` basic blocks, then global
    average pooling. `widths` are the stage channel counts (16, 32, 64 in the paper)."""

    def __init__(self, blocks: int, widths: tuple[int, int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = [], widths[0]
        for i, planes in enumerate(widths):
            layers = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(_BasicBlockA(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.out_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # fan-in Kaiming normal, as in the LDAM-DRW / KPS reference code
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _resnet32(width: float) -> tuple[nn.Module, int]:
    backbone = CifarResNet(5, tuple(_scaled(c, width) for c in (16, 32, 64)))
    return backbone, backbone.out_features


# --------------------------------------------------------------------------- torchvision nets


def _torchvision_resnet(width: float, **kwargs) -> tuple[nn.Module, int]:
    """A torchvision ResNet (weights=None) with its fc removed, channels scaled by `width`.

    torchvision hard-codes the stage widths (64, 128, 256, 512); a subclass scales them where the
    stages are made, and swaps in a stem of matching width before the first stage is built.
    """
    from torchvision.models.resnet import Bottleneck, ResNet

    class _ScaledResNet(ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
            if not hasattr(self, "layer1") and self.inplanes == 64 and width != 1.0:
                stem = _scaled(64, width)
                self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
                self.bn1 = self._norm_layer(stem)
                self.inplanes = stem
            return super()._make_layer(block, _scaled(planes, width), blocks, stride, dilate)

    # the ResNet constructor's own init loop runs after all stages exist, so it covers the
    # replaced stem too (Kaiming normal, fan_out, for every convolution)
    net = _ScaledResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
    feature_dim = _scaled(512, width) * Bottleneck.expansion
    net.fc = nn.Identity()
    return net, feature_dim


def _resnet50(width: float) -> tuple[nn.Module, int]:
    return _torchvision_resnet(width)


def _resnext50(width: float) -> tuple[nn.Module, int]:
    if _scaled(64, width) * 4 // 64 < 1:  # each of the 32 groups needs at least one channel
        raise LtbenchError(f"resnext50 needs width >= 0.25, got {width!r}")
    return _torchvision_resnet(width, groups=32, width_per_group=4)


_MODELS: dict[str, Callable[[float], tuple[nn.Module, int]]] = {
    "resnet32": _resnet32,
    "resnet50": _resnet50,
    "resnext50": _resnext50,
}


def list_models() -> list[str]:
    """Names accepted by `build_model`."""
    return list(_MODELS)


def check_model(name: str, width: float = 1.0) -> None:
    """A known model name and a width it can be built at (one-line errors), building nothing."""
    if name not in _MODELS:
        raise LtbenchError(f"unknown model {name!r}; known models: {', '.join(_MODELS)}")
    if not width > 0:
        raise LtbenchError(f"model width must be > 0, got {width!r}")
    if name == "resnext50" and _scaled(64, width) * 4 // 64 < 1:
        raise LtbenchError(f"resnext50 needs width >= 0.25, got {width!r}")


def build_model(name: str, num_classes: int, head: str = "linear", width: float = 1.0) -> LtModel:
    """Build network `name` with a `head` ("linear" or "cosine") over `num_classes` classes.

    `resnet32`: CIFAR ResNet-32 (16/32/64 channels, option-A shortcuts, ~0.46M parameters).
    `resnet50`, `resnext50`: torchvision's ResNet-50 / ResNeXt-50 32x4d, randomly initialised.
    """
    check_model(name, width)
    if head not in HEADS:
        raise LtbenchError(f"unknown head {head!r}; known heads: {', '.join(HEADS)}")
    if int(num_classes) < 1:
        raise LtbenchError(f"num_classes must be at least 1, got {num_classes!r}")
    backbone, feature_dim = _MODELS[name](float(width))
    return LtModel(backbone, feature_dim, int(num_classes), head)
