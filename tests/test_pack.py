"""Packed runs (`ltbench.engine.pack`): in float64, every member of a pack reproduces the run
trained alone (per-epoch training loss within a relative 1e-6, the same final predictions),
with mixed methods in one pack, across an interruption, and beside a member that goes NaN."""

import json

import pytest
import torch

from ltbench.engine.config import TrainConfig
from ltbench.engine.fuse import check_fusion, pack_models
from ltbench.engine.loop import train
from ltbench.engine.models import build_model
from ltbench.engine.pack import train_pack
from ltbench.engine.step import FLOAT64_ENV
from ltbench.errors import LtbenchError
from ltbench.sdk.registry import _REGISTRY, LossSpec, register

TINY = dict(
    dataset="synthetic-lt",
    n_max=40,
    imb_factor=0.1,
    width=0.125,
    batch_size=32,
    epochs=2,
    eval_every=2,
    amp=False,
    device="cpu",
)
# CE, LDAM-DRW (DRW switches at epoch 1 of 2), KPS-GA (cosine head, GA schedule), CE + mixup
MIXED = [
    dict(loss="ce", seed=0),
    dict(loss="ldam-drw", seed=1),
    dict(loss="kps-ga", seed=2),
    dict(loss="ce", seed=3, mixup_alpha=1.0),
]


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


@pytest.fixture(scope="module")
def float64():
    """Train in float64: `LTBENCH_FLOAT64`, the one test-only switch (`ltbench.engine.step`),
    which the solo loop, the pack and the data-parallel workers all read."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FLOAT64_ENV, "1")
        yield


@pytest.fixture(scope="module")
def solo(float64, tmp_path_factory):
    """The MIXED runs trained alone, in float64: {index: (train losses, result)}."""
    root = tmp_path_factory.mktemp("solo")
    out = {}
    for k, kw in enumerate(MIXED):
        result = train(tiny(**kw), root / f"s{k}")
        out[k] = (_losses(root / f"s{k}"), result)
    return out


def _losses(run) -> list[float]:
    rows = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in rows]


def _same_run(pack_dir, pack_result, solo_run):
    losses, result = solo_run
    assert _losses(pack_dir) == pytest.approx(losses, rel=1e-6)
    assert pack_result["confusion_matrix"] == result["confusion_matrix"]  # same predictions
    assert pack_result["per_class_accuracy"] == result["per_class_accuracy"]
    assert pack_result["top1_error"] == result["top1_error"]


@pytest.mark.parametrize("fusion", ["grouped", pytest.param("serial", marks=pytest.mark.slow)])
def test_every_member_of_a_mixed_pack_matches_its_solo_run(fusion, solo, tmp_path):
    dirs = [tmp_path / f"p{k}" for k in range(len(MIXED))]
    results = train_pack([tiny(**kw) for kw in MIXED], dirs, fusion=fusion)
    for k, result in enumerate(results):
        _same_run(dirs[k], result, solo[k])
        saved = json.loads((dirs[k] / "result.json").read_text())
        assert saved["pack"] == {
            "size": 4,
            "fusion": fusion,
            "members": ["p0", "p1", "p2", "p3"],
        }
        assert saved["method"] == solo[k][1]["method"]
        assert {p.name for p in dirs[k].iterdir()} >= {
            "config.yaml",
            "metrics.jsonl",
            "checkpoint.pt",
            "result.json",
        }


class _StopAfterFirstEpoch:
    def on_epoch_end(self, epoch, metrics, checkpoint):
        if epoch == 1:
            raise KeyboardInterrupt


def test_an_interrupted_pack_resumes_to_the_same_results(solo, tmp_path):
    """Stopped in the middle of writing the members' epoch-1 files (members 0 and 1 have their
    checkpoint, 2 and 3 do not), the resumed pack trains them in two groups and every member
    still ends exactly as alone; a member's checkpoint is a solo checkpoint."""
    dirs = [tmp_path / f"p{k}" for k in range(len(MIXED))]
    cfgs = [tiny(**kw) for kw in MIXED]
    hooks = [None, _StopAfterFirstEpoch(), None, None]
    with pytest.raises(KeyboardInterrupt):
        train_pack(cfgs, dirs, hooks, fusion="grouped")
    assert [(d / "checkpoint.pt").exists() for d in dirs] == [True, True, False, False]
    assert not any((d / "result.json").exists() for d in dirs)
    results = train_pack(cfgs, dirs, fusion="grouped")
    for k in range(len(MIXED)):
        _same_run(dirs[k], results[k], solo[k])


def test_a_member_checkpoint_resumes_alone(solo, tmp_path):
    """A pack member's checkpoint.pt is in the solo layout: `train` continues it alone."""
    dirs = [tmp_path / f"p{k}" for k in range(2)]
    cfgs = [tiny(**kw) for kw in MIXED[:2]]
    with pytest.raises(KeyboardInterrupt):
        train_pack(cfgs, dirs, [None, _StopAfterFirstEpoch()], fusion="grouped")
    result = train(cfgs[1], dirs[1], resume=True)
    _same_run(dirs[1], result, solo[1])


class _NanFromEpoch2(torch.nn.Module):
    head = "linear"

    def __init__(self, counts):
        super().__init__()
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def forward(self, scores, targets):
        loss = torch.nn.functional.cross_entropy(scores, targets)
        return loss * float("nan") if self.epoch >= 1 else loss


def test_a_nan_member_fails_alone_and_its_mates_finish(solo, tmp_path):
    name = "test-pack-nan-from-epoch-2"
    if name not in _REGISTRY:
        register(LossSpec(name=name, factory=_NanFromEpoch2, head="linear", defaults={}))
    dirs = [tmp_path / f"p{k}" for k in range(3)]
    cfgs = [tiny(**MIXED[0]), tiny(loss=name, seed=5), tiny(**MIXED[1])]
    results = train_pack(cfgs, dirs, fusion="grouped")
    assert isinstance(results[1], LtbenchError)
    assert "NaN or infinite at epoch 2, step 1" in str(results[1])
    assert not (dirs[1] / "result.json").exists()
    assert [json.loads(x)["epoch"] for x in (dirs[1] / "metrics.jsonl").open()] == [1]
    _same_run(dirs[0], results[0], solo[0])
    _same_run(dirs[2], results[2], solo[1])


@pytest.mark.parametrize("model", ["resnet32", "resnet50", "resnext50"])
def test_a_packed_network_computes_its_members(model):
    """Forward of the fused network = each member's own forward (train mode: BatchNorm uses
    each member's own batch statistics), for every model ltbench builds."""
    torch.manual_seed(0)
    width = 0.25 if model == "resnext50" else 0.125
    heads = ["linear", "cosine", "linear"]
    nets = [build_model(model, 5, head=h, width=width).double() for h in heads]
    packed, layout = pack_models(nets, "grouped")
    images = [torch.randn(4, 3, 32, 32, dtype=torch.float64) for _ in nets]
    scores = packed(torch.cat(images, dim=1))
    for k, net in enumerate(nets):
        torch.testing.assert_close(scores[:, k], net(images[k]), rtol=1e-9, atol=1e-9)
        state = layout.member_state(packed.state_dict(), k)
        assert state.keys() == net.state_dict().keys()
        for key, value in net.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=1e-9, atol=1e-9)


def test_pack_refuses_what_it_cannot_fuse(tmp_path):
    with pytest.raises(LtbenchError, match="cannot pack 'crt'.*run it alone"):
        train_pack([tiny(loss="crt"), tiny(loss="ce")], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(LtbenchError, match="cannot share a pack: lr is"):
        train_pack([tiny(lr=0.1), tiny(lr=0.2)], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(LtbenchError, match="unknown pack fusion 'fast'; allowed: auto"):
        train_pack([tiny()], [tmp_path / "a"], fusion="fast")
    assert check_fusion("auto", torch.device("cpu")) == "serial"
    assert check_fusion("auto", torch.device("cuda")) == "grouped"
    assert not (tmp_path / "a").exists()
