"""The paper's remaining rows: BBN, meta-learning (meta-ce / meta-focal / meta-ldam) and
Decoupling (cRT, LWS, τ-norm): their formulas against hand computations, and short runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from baselines.bbn import BBNNet, bbn_network, cumulative_alpha
from baselines.meta import meta_weights
from ltbench.data.batches import epoch_order, reversed_class_probabilities
from ltbench.data.longtail import (
    draw_outside,
    long_tailed_indices,
    meta_count,
    split_meta,
    validation_count,
)
from ltbench.engine.config import TrainConfig, resolve
from ltbench.engine.loop import train
from ltbench.engine.models import build_model
from ltbench.engine.posthoc import load_finished_run, rule_logits, split_features
from ltbench.errors import LtbenchError
from ltbench.sdk.registry import build_loss, list_losses

NEW = ("bbn", "meta-ce", "meta-focal", "meta-ldam", "lws")
TINY = dict(dataset="synthetic-lt", n_max=100, imb_factor=0.1, width=0.25, batch_size=64,
            eval_every=100, device="cpu")  # fmt: skip


# ----------------------------------------------------------------------------------------------
# BBN


def test_cumulative_learning_alpha_schedule():
    epochs = 200
    alphas = [cumulative_alpha(t, epochs) for t in range(epochs)]
    assert alphas == [1.0 - (t / epochs) ** 2 for t in range(epochs)]
    assert alphas[0] == 1.0 and alphas[100] == 0.75 and alphas[-1] == pytest.approx(0.009975)
    assert all(a > b for a, b in zip(alphas, alphas[1:], strict=False))  # strictly decreasing
    assert cumulative_alpha(50, 200, "linear") == 0.75
    assert cumulative_alpha(100, 200, "cosine") == pytest.approx(math.cos(math.pi / 4))
    with pytest.raises(LtbenchError, match="alpha_schedule='step' is invalid"):
        cumulative_alpha(0, 10, "step")


@pytest.mark.parametrize(
    "epochs, divisor, last_alpha",
    [
        # Megvii-Nanjing/BBN@7992e908 lib/core/combiner.py:16-19 and :48, written out:
        # div_epoch = 100 * (E // 100 + 1) for E in {90, 180}, else E; l = 1 - ((e-1)/div)^2
        (180, 200, 1 - (179 / 200) ** 2),  # 0.199: ImageNet-LT's and iNaturalist's 180 epochs
        (90, 100, 1 - (89 / 100) ** 2),
        (200, 200, 1 - (199 / 200) ** 2),  # CIFAR: 0.00998
        (40, 40, 1 - (39 / 40) ** 2),
    ],
)
def test_bbn_alpha_at_the_last_epoch_is_the_official_combiners(epochs, divisor, last_alpha):
    assert cumulative_alpha(epochs - 1, epochs) == pytest.approx(last_alpha, rel=1e-12)
    assert cumulative_alpha(epochs // 2, epochs) == pytest.approx(1 - (epochs // 2 / divisor) ** 2)


def test_reversed_sampler_class_probabilities():
    counts = [500, 50, 5]
    p = reversed_class_probabilities(counts)
    inv = np.array([1 / 500, 1 / 50, 1 / 5])
    np.testing.assert_allclose(p, inv / inv.sum(), rtol=0, atol=1e-15)
    assert p.sum() == pytest.approx(1.0)
    labels = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([epoch_order(labels, g, True, "reversed") for _ in range(40)])
    freq = torch.bincount(labels[draws], minlength=3).double() / len(draws)
    np.testing.assert_allclose(freq.numpy(), p, atol=0.01)  # 22,200 draws: sd <= 0.0035


@pytest.mark.parametrize("model", ["resnet32", "resnet50"])
def test_bbn_network_shares_all_but_the_last_block(model):
    torch.manual_seed(0)
    width = 0.25 if model == "resnet32" else 0.125
    net = bbn_network(lambda head: build_model(model, 5, head, width), 5, "linear")
    assert isinstance(net, BBNNet)
    switch = net.backbone.switch
    a = dict(switch.conventional.named_parameters())
    b = dict(switch.rebalancing.named_parameters())
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)
    stage = getattr(net.backbone.net, "layer3" if model == "resnet32" else "layer4")
    standard = build_model(model, 5, "linear", width)
    last = getattr(standard.backbone, "layer3" if model == "resnet32" else "layer4")
    assert len(stage) == len(last)  # the last block is replaced by the two-branch switch
    net.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f_c = net.backbone.branch(x, "conventional")
        f_r = net.backbone.branch(x, "rebalancing")
        # the official network: at test W [f_c ; f_r] + b (resnet_cifar.py:208-210), in training
        # W 2 [α f_c ; (1 - α) f_r] + b (combiner.py:56)
        expected = net.classifier(torch.cat([f_c, f_r], dim=1))
        torch.testing.assert_close(net(x), expected)
        mixed = net.mixed(x, x, 0.3)
        official = net.classifier(2 * torch.cat([0.3 * f_c, 0.7 * f_r], 1))
        torch.testing.assert_close(mixed, official)
        torch.testing.assert_close(net.mixed(x, x, 0.5), expected)  # training agrees with test
    with pytest.raises(LtbenchError, match="linear classifier"):
        bbn_network(lambda head: build_model(model, 5, head, width), 5, "cosine")


# ----------------------------------------------------------------------------------------------
# Meta-learning


def test_meta_set_is_held_out_per_class():
    labels = np.repeat(np.arange(4), [30, 10, 2, 1])
    assert [meta_count(n, 10) for n in (30, 10, 2, 1)] == [10, 5, 1, 0]
    train_pos, meta_pos = split_meta(labels, 10, seed=3)
    assert sorted(train_pos + meta_pos) == list(range(len(labels)))
    assert np.bincount(labels[meta_pos], minlength=4).tolist() == [10, 5, 1, 0]
    assert split_meta(labels, 10, seed=3) == (train_pos, meta_pos)  # deterministic


def test_an_outside_meta_set_is_disjoint_and_leaves_the_draw_alone():
    """Jamal et al.'s code (Longtail_DA C-LT/data_utils.py, main.py: `num_meta` = 10) takes 10
    images per class that the long-tailed subset never holds; its head class trains on 10
    fewer (img_max 4990 of 5000), the only class whose images the draw uses up."""
    labels = np.repeat(np.arange(5), 100)
    kept, counts = long_tailed_indices(labels, 0.01, seed=0)
    assert counts[0] == 100  # the draw keeps every image of the head class
    rest, chosen, from_draw = draw_outside(labels, kept, 10, seed=4)
    assert not set(chosen) & set(rest)
    assert np.bincount(labels[chosen], minlength=5).tolist() == [10] * 5
    assert from_draw == [10, 0, 0, 0, 0]
    # every other class keeps its drawn images; the head class gives its 10 from the draw
    assert [i for i in kept if labels[i] > 0] == [i for i in rest if labels[i] > 0]
    assert np.bincount(labels[rest], minlength=5).tolist() == [90, *counts[1:]]
    assert draw_outside(labels, kept, 10, seed=4) == (rest, chosen, from_draw)
    assert draw_outside(labels, kept, 10, seed=5)[1] != chosen


def test_a_meta_run_trains_on_the_same_subset_as_everyone_else(tmp_path):
    """The meta set comes from outside the long-tailed draw where the pool has images to spare:
    the training counts of meta-ce equal those of plain CE, and the meta set has 10 per class."""
    from ltbench.data import load_dataset

    common = dict(epochs=1, val_fraction=0.1, **TINY)
    ce = train(TrainConfig(loss="ce", **common), tmp_path / "ce", progress=False)
    meta = train(TrainConfig(loss="meta-ce", **common), tmp_path / "meta", progress=False)
    assert meta["class_counts"][1:] == ce["class_counts"][1:]
    # the head class (all 100 drawn) gives its 10 from the draw, before the validation hold-out
    assert ce["class_counts"][0] == 100 - validation_count(100, 0.1)
    assert meta["class_counts"][0] == 90 - validation_count(90, 0.1)
    assert meta["meta_set"]["class_counts"] == [10] * 10
    assert meta["meta_set"]["from_the_draw"] == [10] + [0] * 9
    assert meta["meta_set"]["source"] == "extra images outside the long-tailed draw"
    # by image: no meta image is a training or validation image
    kw = dict(imb_factor=0.1, n_max=100, val_fraction=0.1, val_seed=0, extra_per_class=10)
    bundle = load_dataset("synthetic-lt", **kw)
    seen = {bytes(x.numpy()) for split in (bundle.train, bundle.val) for x in split.images}
    assert not any(bytes(x.numpy()) in seen for x in bundle.extra.images)
    assert len(bundle.extra) == 100 and bundle.extra_from_draw == (10,) + (0,) * 9


@pytest.mark.parametrize("dataset", ["cifar10-lt", "cifar100-lt"])
def test_the_meta_recipe_is_the_official_scripts(dataset):
    """abdullahjamal/Longtail_DA@0193518 C-LT/main.py: batch 100 (l. 25), lr 0.1 (l. 35),
    momentum 0.9 Nesterov (l. 37-38), weight decay 5e-4 (l. 39), 200 epochs (l. 33), lr x0.01
    at 160 and 180 with no warm-up (l. 445-451), meta phase from epoch 160 (l. 172), 10 meta
    images per class (l. 28). A setting the user gives still wins."""
    from ltbench.engine.step import sgd

    for loss in ("meta-ce", "meta-focal", "meta-ldam"):
        cfg = resolve(TrainConfig(loss=loss, dataset=dataset))
        got = (cfg.batch_size, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay, cfg.epochs)
        assert got == (100, 0.1, 0.9, True, 5e-4, 200)
        schedule = (cfg.warmup_epochs, cfg.lr_decay_epochs, cfg.lr_decay_factor)
        assert schedule == (0, [160, 180], 0.01)
        assert cfg.loss_params["meta_start"] == 160 and cfg.loss_params["meta_per_class"] == 10
    optimizer = sgd([torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"), cfg, lr=0.1,
                    weight_decay=cfg.weight_decay)  # fmt: skip
    assert optimizer.param_groups[0]["nesterov"] is True
    mine = resolve(TrainConfig(loss="meta-ce", dataset=dataset, batch_size=64, nesterov=False))
    assert (mine.batch_size, mine.nesterov, mine.weight_decay) == (64, False, 5e-4)
    plain = resolve(TrainConfig(loss="ce", dataset=dataset))  # other methods keep the recipe's
    assert (plain.nesterov, plain.warmup_epochs, plain.weight_decay) == (False, 5, 2e-4)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_meta_step_weights_match_a_hand_computation():
    """A linear softmax model: the lookahead gradients written out by hand (float64)."""
    rng = np.random.default_rng(0)
    d, c, b, m = 4, 3, 6, 5
    counts = [40, 8, 2]
    lr, eps_step, beta = 0.5, 0.01, 0.99
    x, y = rng.normal(size=(b, d)), np.array([0, 1, 2, 0, 1, 2])
    xm, ym = rng.normal(size=(m, d)), np.array([0, 1, 2, 2, 1])
    w0, b0 = rng.normal(size=(c, d)), rng.normal(size=c)

    # by hand: class-balanced weights, one SGD step on the weighted sum, meta gradient
    cb = (1 - beta) / (1 - beta ** np.array(counts, dtype=float))
    cb = cb * c / cb.sum()
    r = _softmax(x @ w0.T + b0) - np.eye(c)[y]  # d l_i / d z_i
    w1 = w0 - lr * (cb[y][:, None] * r).T @ x
    b1 = b0 - lr * (cb[y][:, None] * r).sum(0)
    rm = (_softmax(xm @ w1.T + b1) - np.eye(c)[ym]) / m  # d L_meta / d z_k
    gw, gb = rm.T @ xm, rm.sum(0)
    grad_eps = -lr * (np.einsum("cd,ic,id->i", gw, r, x) + r @ gb)
    expected = cb[y] - eps_step * grad_eps

    model = nn.Linear(d, c).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w0))
        model.bias.copy_(torch.from_numpy(b0))
    plugin = build_loss("meta-ce", counts, beta=beta, eps_step=eps_step)
    got = meta_weights(
        model, plugin, torch.from_numpy(x), torch.from_numpy(y),
        torch.from_numpy(xm), torch.from_numpy(ym), lr,
    )  # fmt: skip
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(expected, cb[y])  # the meta step moves the weights
    torch.testing.assert_close(model.weight.detach(), torch.from_numpy(w0))  # θ itself unmoved


def test_meta_lookahead_leaves_batchnorm_statistics_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plugin = build_loss("meta-focal", [20, 5, 2])
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    w = meta_weights(model, plugin, x, y, torch.randn(6, 4), torch.randint(0, 3, (6,)), 0.1)
    assert w.shape == (8,) and torch.isfinite(w).all()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", ["meta-ce", "meta-focal", "meta-ldam"])
def test_meta_losses_are_their_base_losses_before_the_meta_phase(name):
    base = {"meta-ce": "ce", "meta-focal": "focal", "meta-ldam": "ldam"}[name]
    counts = [50, 10, 3]
    torch.manual_seed(1)
    scores = torch.rand(7, 3, dtype=torch.float64) * 2 - 1
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    meta, plain = build_loss(name, counts), build_loss(base, counts)
    assert meta.head == plain.head
    torch.testing.assert_close(meta(scores, y), plain(scores, y))


@pytest.mark.parametrize(
    "params, message",
    [
        ({"meta_per_class": 0}, "meta_per_class must be an integer >= 1, got 0"),
        ({"eps_step": -1.0}, "eps_step"),
        ({"beta": 1.5}, "beta"),
        ({"gamma": 1.0}, "has no parameter 'gamma'"),
    ],
)
def test_meta_parameters_are_checked(params, message, tmp_path):
    cfg = TrainConfig(loss="meta-ce", loss_params=params, epochs=1, **TINY)
    with pytest.raises(LtbenchError, match=message):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------
# Decoupling: LWS and τ-norm


def test_lws_learns_only_the_class_scales(tmp_path):
    cfg = TrainConfig(loss="lws", epochs=2, loss_params={"stage2_epochs": 2}, **TINY)
    result = train(cfg, tmp_path / "lws", progress=False, cache_dir=tmp_path / "cache")
    first = torch.load(f"{result['stage1_dir']}/checkpoint.pt", weights_only=True)["model"]
    final = torch.load(tmp_path / "lws" / "checkpoint.pt", weights_only=True)["model"]
    for key in ("classifier.weight", "classifier.bias", "backbone.conv1.weight"):
        assert torch.equal(final[key], first[key]), key
    assert not torch.equal(final["class_scale"], torch.ones_like(final["class_scale"]))
    assert result["stage_plan"][1]["trainable"] == "class-scale"


def test_tau_norm_rule_scales_each_classifier_row(tmp_path):
    train(TrainConfig(loss="ce", epochs=1, val_fraction=0.2, **TINY), tmp_path / "ce")
    run = load_finished_run(tmp_path / "ce", "cpu")
    feats = split_features(run, "test").features
    w = run.model.classifier.weight.detach()
    assert run.model.classifier.bias.detach().abs().sum() > 0  # a bias to drop
    for tau in (0.0, 0.5, 1.0, 2.0):
        # the official tau_norm.py drops the linear bias (issue 23), so no "+ b" here
        expected = feats @ (w / w.norm(dim=1, keepdim=True) ** tau).T
        torch.testing.assert_close(rule_logits(run, "tau-norm", feats, tau), expected)


# ----------------------------------------------------------------------------------------------
# Registry and short runs


def test_new_methods_are_registered():
    listed = list_losses()
    assert set(NEW) <= set(listed)
    assert listed["meta-ldam"]["meta_per_class"] == 10 and listed["bbn"] == {
        "alpha_schedule": "parabolic"
    }


@pytest.mark.parametrize("name", NEW)
def test_each_new_method_runs_and_records_itself(name, tmp_path):
    params = {"stage2_epochs": 1} if name == "lws" else {}
    if name.startswith("meta-"):
        params = {"meta_start": 1}  # the meta step runs in the second epoch
    cfg = TrainConfig(loss=name, epochs=2, loss_params=params, val_fraction=0.1, **TINY)
    result = train(cfg, tmp_path / name, progress=False, cache_dir=tmp_path / "cache")
    assert result["status"] == "finished" and math.isfinite(result["top1_error"])
    saved = json.loads((tmp_path / name / "result.json").read_text())
    if name.startswith("meta-"):
        meta = saved["meta_set"]
        assert meta["per_class"] == 10 and meta["size"] == sum(meta["class_counts"]) > 0
        # the meta images are not trained on: the recorded training counts exclude them
        assert all(n >= 1 for n in saved["class_counts"])
    if name == "bbn":
        assert saved["stage_plan"][0]["extra_samplers"] == ["reversed"]
        run = load_finished_run(tmp_path / name, "cpu")  # `ltbench eval` rebuilds the network
        assert run.model.classifier.in_features == 2 * 16  # two branches of 64 * 0.25 channels


LEARN = dict(dataset="synthetic-lt", n_max=300, imb_factor=0.1, width=0.25, batch_size=64,
             epochs=12, warmup_epochs=1, eval_every=100, device="cpu")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_each_new_method_learns_on_synthetic_lt(name, tmp_path):
    """12 epochs on ~1,200 images (rho = 10): at least 10 points below chance (90% error)."""
    params = {"stage2_epochs": 2} if name == "lws" else {}
    cfg = TrainConfig(loss=name, loss_params=params, **LEARN)
    result = train(cfg, tmp_path / name, progress=False, cache_dir=tmp_path / "cache")
    assert result["top1_error"] <= 80.0, result["top1_error"]
