"""The loss registry: specs, the factory, wildcards, entry points (ours and a third party's)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from importlib.metadata import entry_points

import pytest

import ltbench
from ltbench.errors import LtbenchError
from ltbench.sdk import registry
from ltbench.sdk.registry import LossSpec, factory_parameters, get_spec, load_entry_points

PAPER_LOSSES = {
    "ce", "focal", "cb-focal", "ldam", "ldam-drw", "la", "cosface", "arcface", "eql",
    "kps", "kps-ga", "kps-drw", "las",
}  # fmt: skip
COUNTS = [50, 5, 20, 1, 2]


def test_package_exports():
    assert ltbench.__version__ == "0.1.0"
    for name in ("build_loss", "list_losses", "LossSpec", "register"):
        assert name in ltbench.__all__ and hasattr(ltbench, name)


def test_import_is_light():
    """`import ltbench` must not import torch (the CLI starts fast)."""
    code = "import sys, ltbench; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_every_paper_loss_is_registered_with_defaults():
    listed = ltbench.list_losses()
    assert PAPER_LOSSES <= set(listed)
    assert listed["kps"] == {"m_max": 0.5, "s_base": 15.0, "n_base": 50.0}
    assert listed["kps-ga"]["ga_epoch"] == 120
    assert listed["kps-drw"]["drw_epoch"] == 160 and listed["kps-drw"]["beta"] == 0.9999
    assert listed["ldam-drw"] == {"max_m": 0.5, "s": 30.0, "drw_epoch": 160, "beta": 0.9999}
    assert listed["eql"] == {"lambda_": 3e-3, "gamma": 0.9}
    assert listed["las"] == {"smooth_head": 0.3, "smooth_tail": 0.0, "shape": "concave"}


def test_wildcards_and_kind():
    assert set(ltbench.list_losses("kps*")) >= {"kps", "kps-ga", "kps-drw"}
    assert set(ltbench.list_losses("*-drw")) >= {"kps-drw", "ldam-drw"}
    assert ltbench.list_losses("no-such-*") == {}
    assert PAPER_LOSSES <= set(ltbench.list_losses(kind="loss"))


@pytest.mark.parametrize("name", sorted(PAPER_LOSSES))
def test_spec_defaults_match_factory_and_head(name):
    spec = get_spec(name)
    assert sorted(factory_parameters(spec.factory)) == sorted(spec.defaults)
    plugin = ltbench.build_loss(name, COUNTS)
    assert plugin.head == spec.head and plugin.loss_name == name
    assert callable(plugin.set_epoch)


def test_our_entry_points_are_named_after_their_loss():
    ours = {ep.name: ep for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert PAPER_LOSSES <= set(ours)
    for name in PAPER_LOSSES:
        assert ours[name].load().name == name


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(LtbenchError, match=r"unknown loss 'kpss'; known losses: .*kps-ga"):
        ltbench.build_loss("kpss", COUNTS)


def test_unknown_parameter_names_the_allowed_ones():
    with pytest.raises(
        LtbenchError, match=r"loss 'kps-ga' has no parameter 'ga'; allowed parameters: ga_epoch"
    ):
        ltbench.build_loss("kps-ga", COUNTS, ga=3)


def test_none_keeps_the_default():
    plugin = ltbench.build_loss("kps-ga", COUNTS, ga_epoch=None, m_max=0.3)
    assert plugin.ga_epoch == 120 and plugin.m_max == 0.3


def test_duplicate_name_is_an_error():
    spec = get_spec("ce")
    clone = LossSpec(name="ce", factory=spec.factory, head="linear")
    with pytest.raises(LtbenchError, match="registered twice"):
        ltbench.register(clone)
    assert ltbench.register(spec) is spec  # the same record again is fine


def test_spec_is_frozen_and_checks_its_head():
    spec = get_spec("kps")
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.defaults["m_max"] = 1.0  # type: ignore[index]
    with pytest.raises(ValueError, match="head must be one of"):
        LossSpec(name="x", factory=lambda counts: None, head="softmax")


# ---------------------------------------------------------------------------------------------
# A plugin from another installed package


def _install_fake_dist(tmp_path, monkeypatch, module: str, body: str, entry: str):
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[ltbench.losses]\n{entry}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.fixture
def clean_registry():
    """Put the registry (and sys.modules) back as they were before the test."""
    load_entry_points()
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)
    for mod in [m for m in sys.modules if m.startswith("ltbench_thirdparty_")]:
        del sys.modules[mod]


def test_third_party_plugin_is_picked_up(clean_registry, tmp_path, monkeypatch):
    body = """
        import torch.nn.functional as F
        from ltbench.sdk.loss_utils import LossPlugin
        from ltbench.sdk.registry import LossSpec

        class Scaled(LossPlugin):
            head = "linear"

            def __init__(self, cls_num_list, scale):
                super().__init__(cls_num_list)
                self.scale = scale

            def compute(self, x, targets):
                return F.cross_entropy(self.scale * x, targets)

        def build(cls_num_list, scale):
            return Scaled(cls_num_list, scale)

        SPECS = [LossSpec(name="thirdparty-scaled-ce", factory=build, head="linear",
                          defaults={"scale": 2.0})]
    """
    _install_fake_dist(
        tmp_path, monkeypatch, "ltbench_thirdparty_ok", body,
        "scaled = ltbench_thirdparty_ok:SPECS",
    )  # fmt: skip
    load_entry_points(force=True)
    assert ltbench.list_losses("thirdparty-*") == {"thirdparty-scaled-ce": {"scale": 2.0}}
    assert get_spec("thirdparty-scaled-ce").factory.__module__ == "ltbench_thirdparty_ok"
    import torch

    plugin = ltbench.build_loss("thirdparty-scaled-ce", [3, 4, 5], scale=3.0)
    scores, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    expected = torch.nn.functional.cross_entropy(3.0 * scores, targets)
    torch.testing.assert_close(plugin(scores, targets), expected)


def test_broken_plugin_is_skipped_with_a_warning(clean_registry, tmp_path, monkeypatch):
    _install_fake_dist(
        tmp_path, monkeypatch, "ltbench_thirdparty_broken", "raise ImportError('no deps')\n",
        "broken = ltbench_thirdparty_broken:SPEC",
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_entry_points(force=True)
    assert any("skipping loss plugin 'broken'" in str(w.message) for w in caught)
    assert PAPER_LOSSES <= set(ltbench.list_losses())


def test_plugin_reusing_a_name_is_skipped(clean_registry, tmp_path, monkeypatch):
    body = """
        from ltbench.sdk.registry import LossSpec
        SPEC = LossSpec(name="kps", factory=lambda counts: None, head="cosine")
    """
    _install_fake_dist(
        tmp_path, monkeypatch, "ltbench_thirdparty_dup", body,
        "dup = ltbench_thirdparty_dup:SPEC",
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_entry_points(force=True)
    assert any("registered twice" in str(w.message) for w in caught)
    assert get_spec("kps").factory.__module__ == "losses.kps"


def test_registry_is_clean_after_the_plugin_tests():
    assert ltbench.list_losses("thirdparty-*") == {}
