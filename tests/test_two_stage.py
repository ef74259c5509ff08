"""Two-stage methods (crt, mislas, mislas-kps) end to end on tiny synthetic-lt runs.

At this size (4 stage-1 epochs on ~1000 images) the backbone has learned the largest classes
only; the tests check what stage 2 must do on it: the backbone is untouched, the classifier
moves, its decisions change, class-balanced re-training gives the tail classes more probability,
and a shared stage 1 is trained once. (With 2 stage-1 epochs on ~340 images the backbone was
near chance and one MiSLAS stage 2 drove a class scale to -7e4: the tail test measured luck.)
"""

import json
import threading
import time

import pytest
import torch

from ltbench.data import load_dataset, make_loader
from ltbench.engine.config import TrainConfig, resolve
from ltbench.engine.locks import hold
from ltbench.engine.loop import train
from ltbench.engine.models import build_model
from ltbench.engine.stages import StageModel, plan_stages
from ltbench.errors import LtbenchError
from ltbench.sdk.registry import get_spec, list_losses

STAGE1_EPOCHS = 4
TINY = dict(
    dataset="synthetic-lt",
    n_max=300,
    imb_factor=0.05,
    width=0.25,
    batch_size=64,
    epochs=STAGE1_EPOCHS,
    eval_every=100,
)
METHODS = ("mislas", "mislas-kps", "crt")


def tiny(loss, **params) -> TrainConfig:
    return TrainConfig(loss=loss, loss_params=params, **TINY)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """mislas (2 stage-2 epochs), then mislas-kps sharing its stage 1, then crt."""
    root = tmp_path_factory.mktemp("two-stage")
    out, stamps = {}, {}
    out["mislas"] = train(tiny("mislas", stage2_epochs=2), root / "mislas", progress=False)
    stage1 = root / "_stage1"
    stamps["before"] = {p.name: p.stat().st_mtime_ns for p in stage1.glob("*/*")}
    out["mislas-kps"] = train(tiny("mislas-kps"), root / "mislas-kps", progress=False)
    stamps["after"] = {p.name: p.stat().st_mtime_ns for p in stage1.glob("*/*")}
    out["crt"] = train(tiny("crt"), root / "crt", progress=False)
    return root, out, stamps


def test_registered_as_two_stage_methods():
    assert set(METHODS) <= set(list_losses(kind="two-stage"))
    assert not set(METHODS) & set(list_losses(kind="loss"))
    assert get_spec("mislas-kps").head == "cosine" and get_spec("mislas").head == "linear"


def test_settings_resolve_flat_with_dataset_defaults_and_scaled_epochs():
    cfg = resolve(TrainConfig(dataset="cifar100-lt", loss="mislas"))
    p = cfg.loss_params
    assert (p["smooth_head"], p["smooth_tail"]) == (0.4, 0.1)  # MiSLAS's CIFAR-100 setting
    assert p["stage2_epochs"] == 10
    stage1, stage2 = plan_stages(cfg)
    # MiSLAS's official CIFAR-100 rho-100 config (baselines/recipes.yaml; tests/test_recipes.py)
    assert stage2.epochs == 10 and stage2.lr == 0.1 and stage2.batch_size == 128
    assert stage2.loss == "las" and stage2.loss_params["smooth_head"] == 0.4
    assert (
        resolve(TrainConfig(dataset="cifar10-lt", loss="mislas")).loss_params["smooth_head"] == 0.3
    )
    short = resolve(TrainConfig(dataset="cifar10-lt", loss="mislas", epochs=100))
    assert short.loss_params["stage2_epochs"] == 5  # scaled like the other milestones
    alias = resolve(TrainConfig(loss="crt", stage2={"epochs": 3, "lr": 0.05}))
    assert alias.loss_params["stage2_epochs"] == 3 and alias.loss_params["stage2_lr"] == 0.05
    assert plan_stages(alias)[1].lr == 0.05
    s1, s2 = plan_stages(resolve(TrainConfig(loss="mislas")))
    assert s1.loss == "ce" and s1.mixup_alpha == 1.0 and s2.class_scale
    # synthetic-lt follows MiSLAS's cifar10-lt rows: at rho 100 shift_bn is off
    assert (s2.trainable, s2.batchnorm, s2.classifier, s2.sampler, s2.schedule) == (
        "classifier",
        "frozen",
        "keep",
        "class-balanced",
        "cosine",
    )
    c1, c2 = plan_stages(resolve(TrainConfig(loss="crt")))
    # the official cRT puts every network in train mode in stage 2: BN follows the data
    assert c1.mixup_alpha == 0.0 and (c2.batchnorm, c2.classifier) == ("train", "reinit")


@pytest.mark.parametrize("cfg, message", [
    (TrainConfig(loss="mislas", stage2={"epoch": 3}), "unknown stage2 setting 'epoch'"),
    (TrainConfig(loss="mislas", mixup_alpha=1.0), "stage1_mixup_alpha"),
    (TrainConfig(loss="mislas", loss_params={"stage1_loss": "crt"}), "single-stage loss"),
    (TrainConfig(loss="mislas", loss_params={"stage2_sampling": "x"}), "stage2_sampling"),
    (TrainConfig(loss="crt", loss_params={"stage2_epochs": 0}), "stage2_epochs=0"),
    (TrainConfig(loss="crt", loss_params={"stage1_params": {"gamma": 1}}), "stage 1: .*gamma"),
])  # fmt: skip
def test_bad_settings_are_one_line_errors(cfg, message):
    with pytest.raises(LtbenchError, match=message):
        plan_stages(resolve(cfg))


def test_result_reports_both_stages(runs):
    root, out, _ = runs
    for name in METHODS:
        saved = json.loads((root / name / "result.json").read_text())
        s1, s2 = saved["stages"]["stage1"], saved["stages"]["stage2"]
        assert saved["method"].startswith(name) and s2["method"] == saved["method"]
        assert saved["top1_error"] == s2["top1_error"] == pytest.approx(out[name]["top1_error"])
        assert s1["epochs"] == STAGE1_EPOCHS and saved["epochs"] == STAGE1_EPOCHS + s2["epochs"]
        assert s1["loss"] == "ce" and s1["mixup_alpha"] == (0.0 if name == "crt" else 1.0)
        for key in ("tail_error", "few_acc", "per_class_accuracy", "ece", "confusion_matrix"):
            assert key in s1 and key in s2
        assert s2["per_class_accuracy"] != s1["per_class_accuracy"]  # decisions changed
        lines = rows(root / name / "metrics.jsonl")
        assert [r["epoch"] for r in lines] == list(range(1, saved["epochs"] + 1))
        assert [r["stage"] for r in lines] == ["stage1"] * STAGE1_EPOCHS + ["stage2"] * s2["epochs"]


def test_stage1_is_trained_once_and_shared(runs):
    root, out, stamps = runs
    assert out["mislas"]["stage1_dir"] == out["mislas-kps"]["stage1_dir"]
    assert out["crt"]["stage1_dir"] != out["mislas"]["stage1_dir"]  # no mixup: another stage 1
    assert stamps["before"] and stamps["before"] == stamps["after"]  # nothing rewritten
    assert len([p for p in (root / "_stage1").iterdir() if p.is_dir()]) == 2
    shared = json.loads((root / "mislas" / "result.json").read_text())["stages"]["stage1"]
    again = json.loads((root / "mislas-kps" / "result.json").read_text())["stages"]["stage1"]
    assert shared == again


def _states(root, name, out):
    first = torch.load(f"{out[name]['stage1_dir']}/checkpoint.pt", weights_only=True)["model"]
    final = torch.load(root / name / "checkpoint.pt", weights_only=True)["model"]
    return first, final


@pytest.mark.parametrize("name", METHODS)
def test_backbone_frozen_and_classifier_retrained(runs, name):
    root, out, _ = runs
    first, final = _states(root, name, out)
    net = build_model("resnet32", 10, width=0.25)
    weights = {k for k, _ in net.named_parameters() if k.startswith("backbone.")}
    stats = {k for k in first if k.startswith("backbone.")} - weights
    for key in weights:
        assert torch.equal(first[key], final[key]), key
    moved = [k for k in stats if "running" in k and not torch.equal(first[k], final[k])]
    # BN statistics follow the stage-2 data where the recipe says so (synthetic-lt takes the
    # cifar10-lt rows: MiSLAS keeps them there, cRT moves them)
    cfg = resolve(tiny(name))
    assert bool(moved) == (plan_stages(cfg)[1].batchnorm == "train")
    assert not torch.equal(first["classifier.weight"], final["classifier.weight"])
    assert ("class_scale" in final) == (name != "crt")
    if name == "mislas-kps":  # a cosine head, started from the normalised stage-1 weights
        assert "classifier.bias" not in final


def _tail_probability(state, head, lws, bundle, loader):
    net = build_model("resnet32", bundle.num_classes, head=head, width=0.25)
    model = (
        StageModel(
            net.backbone,
            net.classifier,
            bundle.num_classes,
            frozen=True,
            bn_follows_data=True,
            class_scale=lws,
        )
        if lws is not None
        else net
    )
    model.load_state_dict(state)
    model.eval()
    tail = torch.argsort(torch.tensor(bundle.cls_num_list))[:3]
    with torch.no_grad():
        # every 4th test image (the split is in class order): 75 of each class, 4x faster
        probs = torch.cat([model(x[::4]).softmax(dim=1) for x, _ in loader])
    return float(probs[:, tail].sum(dim=1).mean())


@pytest.fixture(scope="module")
def test_data():
    bundle = load_dataset("synthetic-lt", n_max=TINY["n_max"], imb_factor=TINY["imb_factor"])
    return bundle, make_loader(bundle, "test", 500)


@pytest.mark.parametrize("name", ["mislas", "crt"])
def test_class_balanced_stage2_gives_the_tail_more_probability(runs, test_data, name):
    root, out, _ = runs
    first, final = _states(root, name, out)
    bundle, loader = test_data
    before = _tail_probability(first, "linear", None, bundle, loader)
    after = _tail_probability(final, "linear", name == "mislas", bundle, loader)
    assert after > before + 0.05, (before, after)


class _Crash:
    def __init__(self, after):
        self.after, self.heard = after, []

    def on_epoch_end(self, epoch, metrics, checkpoint):
        self.heard.append(epoch)
        if epoch == self.after:
            raise KeyboardInterrupt


def test_crash_in_stage2_resumes_stage2_only(runs):
    root, out, _ = runs
    cfg = tiny("mislas", stage2_epochs=2)
    first_s2 = STAGE1_EPOCHS + 1
    crash = _Crash(after=first_s2)  # after the first of the two stage-2 epochs
    with pytest.raises(KeyboardInterrupt):
        train(cfg, root / "cut", hooks=crash, progress=False)
    assert crash.heard == [first_s2]  # stage 1 came from the cache: no stage-1 epochs to hear
    assert not (root / "cut" / "result.json").exists()
    with pytest.raises(LtbenchError, match="unfinished run"):
        train(cfg, root / "cut", progress=False)
    resumed = train(cfg, root / "cut", hooks=crash, resume=True, progress=False)
    assert crash.heard == [first_s2, first_s2 + 1]
    assert resumed["confusion_matrix"] == out["mislas"]["confusion_matrix"]
    assert resumed["stage1_dir"] == out["mislas"]["stage1_dir"]
    assert [r["epoch"] for r in rows(root / "cut" / "metrics.jsonl")] == list(
        range(1, first_s2 + 2)
    )
    a = torch.load(root / "cut" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(root / "mislas" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_stage1_lock_makes_a_second_holder_wait(tmp_path):
    """The stage-1 cache waits on its folder's lock (ltbench.engine.locks), here from a thread."""
    folder = tmp_path / "stage1"
    got = threading.Event()

    def second():
        with hold(folder, wait=True):
            got.set()

    with hold(folder):
        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(0.2)
        assert not got.is_set()
    worker.join(timeout=5)
    assert got.is_set()


def test_a_reinitialised_classifier_starts_as_crts_official_one():
    """classifier-balancing@f162ade models/DotProductClassifier.py:25: cRT's stage 2 builds a
    fresh `nn.Linear` (PyTorch's default: weights and bias uniform in ±1/sqrt(d)); a kept
    classifier is the previous one; a first-stage linear head is LDAM-DRW's Kaiming-normal."""
    from ltbench.engine.models import build_head
    from ltbench.engine.stages import stage_classifier

    d, c = 256, 100
    torch.manual_seed(0)
    previous = build_head("linear", d, c)
    assert previous.bias.abs().max() == 0 and previous.weight.abs().max() > 1.5 / d**0.5
    fresh = stage_classifier(previous, "linear", reinit=True)
    bound = 1 / d**0.5
    assert fresh.weight.abs().max() <= bound and fresh.bias.abs().max() <= bound
    assert fresh.bias.abs().min() > 0 and fresh.weight.std() < 0.7 * previous.weight.std()
    kept = stage_classifier(previous, "linear", reinit=False)
    assert torch.equal(kept.weight, previous.weight) and kept is not previous
