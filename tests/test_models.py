"""Tests for ltbench.engine.models: shapes, heads, parameter counts, backbone and classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ltbench.engine.models import CosineClassifier, build_model, list_models
from ltbench.errors import LtbenchError

pytestmark = pytest.mark.usefixtures("one_thread")


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_list_models():
    assert list_models() == ["resnet32", "resnet50", "resnext50"]


@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_resnet32_shapes_and_split(head):
    torch.manual_seed(0)
    model = build_model("resnet32", 10, head=head)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    features = model.backbone(x)
    assert features.shape == (4, 64) and model.feature_dim == 64
    assert torch.allclose(model.classifier(features), out)
    assert model.head == head
    if head == "cosine":
        assert out.abs().max() <= 1.0
        # the cosine is scale-free: the same for scaled features and scaled weights
        assert torch.allclose(model.classifier(features * 7.0), out, atol=1e-6)
    else:
        assert isinstance(model.classifier, nn.Linear) and model.classifier.bias is not None


def test_resnet32_parameter_count():
    model = build_model("resnet32", 10)
    # 0.46M as in He et al. (2016); 464,154 with a 10-class linear head
    assert _n_params(model) == 464_154
    assert _n_params(model.classifier) == 64 * 10 + 10
    assert _n_params(build_model("resnet32", 100)) == 464_154 + 90 * 65


def test_width_scales_channels():
    small = build_model("resnet32", 10, width=0.25)
    assert small.feature_dim == 16
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert _n_params(small) < _n_params(build_model("resnet32", 10)) / 10


def test_resnet32_option_a_shortcut_has_no_parameters():
    model = build_model("resnet32", 10)
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 5 * 2  # stem + two per basic block, none in shortcuts
    assert all(m.kernel_size == (3, 3) for m in convs)


def test_frozen_backbone_trains_only_classifier():
    model = build_model("resnet32", 5, head="cosine", width=0.25)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model(torch.randn(3, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.classifier.weight.grad is not None


@pytest.mark.parametrize("name", ["resnet50", "resnext50"])
def test_imagenet_models_small(name):
    model = build_model(name, 7, head="cosine", width=0.25).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7) and out.abs().max() <= 1.0
    assert model.feature_dim == 512  # 128 * 4 at width 0.25


def test_full_width_matches_torchvision():
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):  # no memory, no init cost: only the architecture is compared
        ours = build_model("resnet50", 1000), build_model("resnext50", 1000)
        refs = torchvision.models.resnet50(), torchvision.models.resnext50_32x4d()
    for model, reference in zip(ours, refs, strict=True):
        assert model.feature_dim == 2048
        assert _n_params(model) == _n_params(reference)
        shapes = [p.shape for p in model.parameters()]
        assert shapes == [p.shape for p in reference.parameters()]


def test_cosine_head_edge_cases():
    head = CosineClassifier(8, 3)
    zero = head(torch.zeros(2, 8))
    assert torch.isfinite(zero).all() and torch.equal(zero, torch.zeros(2, 3))
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 8))
    x = torch.eye(3, 8) * 1e4
    assert torch.allclose(head(x), torch.eye(3), atol=1e-6)
    assert torch.allclose(head(-x), -torch.eye(3), atol=1e-6)
    feats = torch.zeros(2, 8, requires_grad=True)
    head(feats).sum().backward()
    assert torch.isfinite(feats.grad).all()


def test_cosine_head_under_bf16_autocast():
    model = build_model("resnet32", 10, head="cosine", width=0.25)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(3, 3, 32, 32))
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


def test_errors():
    with pytest.raises(
        LtbenchError, match="unknown model 'vgg16'; known models: resnet32, resnet50"
    ):
        build_model("vgg16", 10)
    with pytest.raises(LtbenchError, match="unknown head 'arc'; known heads: linear, cosine"):
        build_model("resnet32", 10, head="arc")
    with pytest.raises(LtbenchError, match="width must be > 0"):
        build_model("resnet32", 10, width=0)
    with pytest.raises(LtbenchError, match="resnext50 needs width >= 0.25"):
        build_model("resnext50", 10, width=0.1)
