"""Loss plugins: reference fixtures, KPS constants, the plugin contract, identities, errors."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

import ltbench
from losses.kps import kps_constants
from ltbench.engine.mixup import Mixup, MixupLoss, _log_standard_gamma, mixup_loss, sample_beta
from ltbench.errors import LtbenchError
from ltbench.sdk.loss_utils import (
    effective_number_weights,
    margin_cross_entropy,
    margin_cross_entropy_reference,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "losses.json"
OUR_LOSSES = [
    "ce", "focal", "cb-focal", "ldam", "ldam-drw", "la", "cosface", "arcface", "eql",
    "kps", "kps-ga", "kps-drw", "las",
]  # fmt: skip


def _fixture_cases():
    if not FIXTURES.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"fixtures absent: {FIXTURES}"))]
    data = json.loads(FIXTURES.read_text())
    return [pytest.param(case, id=case["id"]) for case in data["losses"]]


def _tolerance():
    if not FIXTURES.exists():
        return {"rtol": 1e-6, "atol": 1e-8}
    tol = json.loads(FIXTURES.read_text())["tolerance"]
    return {"rtol": tol["rtol"], "atol": tol["atol"]}


TOL = _tolerance()


def _scores(batch, classes, head, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand((batch, classes), generator=gen, dtype=dtype) * 2 - 1
    return (u * 0.9 if head == "cosine" else u * 5).requires_grad_()


def _targets(batch, classes, seed=1):
    return torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(seed))


def _loss_and_grad(plugin, scores, targets):
    loss = plugin(scores, targets)
    (grad,) = torch.autograd.grad(loss, scores)
    return loss, grad


# ---------------------------------------------------------------------------------------------
# Reference values (shared/fixtures/losses.json), float64


@pytest.mark.parametrize("case", _fixture_cases())
def test_fixture_value_and_gradient(case):
    plugin = ltbench.build_loss(case["loss"], case["cls_num_list"], **case["params"])
    assert plugin.head == case["head"]
    plugin.set_epoch(case["epoch"])
    scores = torch.tensor(case["scores"], dtype=torch.float64, requires_grad=True)
    loss, grad = _loss_and_grad(plugin, scores, torch.tensor(case["targets"]))
    assert loss.dtype == torch.float64
    np.testing.assert_allclose(loss.item(), case["loss_value"], **TOL)
    np.testing.assert_allclose(grad.numpy(), np.array(case["grad"]), **TOL)


def test_fixtures_cover_both_sides_of_every_switch():
    if not FIXTURES.exists():
        pytest.skip(f"fixtures absent: {FIXTURES}")
    cases = json.loads(FIXTURES.read_text())["losses"]
    for name, key in (("kps-ga", "ga_epoch"), ("kps-drw", "drw_epoch"), ("ldam-drw", "drw_epoch")):
        sides = {c["epoch"] >= c["params"][key] for c in cases if c["loss"] == name}
        assert sides == {False, True}, name


def test_fixture_survives_module_float_cast():
    """`.float()` on a plugin must not round its float64 constants."""
    if not FIXTURES.exists():
        pytest.skip(f"fixtures absent: {FIXTURES}")
    case = next(c for c in json.loads(FIXTURES.read_text())["losses"] if c["loss"] == "kps-ga")
    plugin = ltbench.build_loss("kps-ga", case["cls_num_list"], **case["params"]).float()
    plugin.set_epoch(case["epoch"])
    assert plugin.radius.dtype == torch.float64
    scores = torch.tensor(case["scores"], dtype=torch.float64, requires_grad=True)
    loss, _ = _loss_and_grad(plugin, scores, torch.tensor(case["targets"]))
    np.testing.assert_allclose(loss.item(), case["loss_value"], **TOL)


# ---------------------------------------------------------------------------------------------
# KPS constants (Eqs. 26-30) for any class order


def _kps_reference(counts, n_base, m_max, s_base):
    """Independent element-wise computation of METHODS.md's formula."""
    counts = [float(c) for c in counts]
    n_min = min(counts)
    r_prime = [math.log(c * n_base / n_min) for c in counts]
    r = [v / min(r_prime) for v in r_prime]
    m_prime = [max(r) + 1 - v for v in r]
    m = [v * m_max / max(m_prime) for v in m_prime]
    s = [s_base * v for v in m_prime]
    return np.array(r), np.array(m), np.array(s)


UNSORTED = [37, 500, 2, 1200, 2, 90, 7, 640, 15, 1]


def test_kps_constants_unsorted_match_formula():
    r, m, s = kps_constants(UNSORTED, n_base=50.0, m_max=0.35, s_base=15.0)
    r_ref, m_ref, s_ref = _kps_reference(UNSORTED, 50.0, 0.35, 15.0)
    np.testing.assert_allclose(r, r_ref, rtol=1e-12)
    np.testing.assert_allclose(m, m_ref, rtol=1e-12)
    np.testing.assert_allclose(s, s_ref, rtol=1e-12)
    rarest, commonest = int(np.argmin(UNSORTED)), int(np.argmax(UNSORTED))
    assert r[rarest] == pytest.approx(1.0) and m[rarest] == pytest.approx(0.35)
    assert s[commonest] == pytest.approx(15.0)
    # the plugin keeps the same numbers as buffers
    plugin = ltbench.build_loss("kps-ga", UNSORTED, m_max=0.35)
    np.testing.assert_allclose(plugin.radius.numpy(), r_ref, rtol=1e-12)
    np.testing.assert_allclose(plugin.margins.numpy(), m_ref, rtol=1e-12)
    np.testing.assert_allclose(plugin.scales.numpy(), s_ref, rtol=1e-12)


def test_kps_constants_follow_a_permutation_of_classes():
    perm = np.random.default_rng(0).permutation(len(UNSORTED))
    base = kps_constants(UNSORTED, 50.0, 0.5, 15.0)
    permuted = kps_constants([UNSORTED[i] for i in perm], 50.0, 0.5, 15.0)
    for a, b in zip(base, permuted, strict=True):
        np.testing.assert_allclose(b, a[perm], rtol=1e-12)


def test_kps_loss_follows_a_permutation_of_classes():
    perm = torch.from_numpy(np.random.default_rng(1).permutation(len(UNSORTED)))
    inverse = torch.argsort(perm)
    scores, targets = _scores(6, len(UNSORTED), "cosine"), _targets(6, len(UNSORTED))
    for name in ("kps", "kps-ga", "kps-drw"):
        plain = ltbench.build_loss(name, UNSORTED)
        shuffled = ltbench.build_loss(name, [UNSORTED[i] for i in perm.tolist()])
        for p in (plain, shuffled):
            p.set_epoch(1000)
        expected = plain(scores, targets)
        got = shuffled(scores[:, perm], inverse[targets])
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_kps_family_on_unsorted_counts_matches_plain_formula():
    """Eq. 15 / Eq. 25 / DRW written out with torch's cross-entropy, for an unsorted list."""
    r, m, s = (torch.from_numpy(a) for a in _kps_reference(UNSORTED, 50.0, 0.5, 15.0))
    scores, targets = _scores(12, len(UNSORTED), "cosine"), _targets(12, len(UNSORTED))
    margin = torch.zeros_like(scores).scatter(1, targets[:, None], m[targets][:, None])
    base = 15.0 * (r * scores - margin)
    ga = s[targets][:, None] * (r * scores - margin)
    w = torch.from_numpy(effective_number_weights(UNSORTED, 0.9999))
    expected = {
        "kps": torch.nn.functional.cross_entropy(base, targets),
        "kps-ga": torch.nn.functional.cross_entropy(ga, targets),
        "kps-drw": torch.nn.functional.cross_entropy(base, targets, weight=w),
    }
    for name, value in expected.items():
        plugin = ltbench.build_loss(name, UNSORTED)
        plugin.set_epoch(10_000)
        torch.testing.assert_close(plugin(scores, targets), value, rtol=1e-12, atol=1e-12)


def test_kps_equal_counts_is_well_defined():
    r, m, s = kps_constants([5, 5, 5], n_base=50.0, m_max=0.5, s_base=15.0)
    np.testing.assert_array_equal(r, 1.0)
    np.testing.assert_array_equal(m, 0.5)
    np.testing.assert_array_equal(s, 15.0)


# ---------------------------------------------------------------------------------------------
# The fused margin cross-entropy against plain autograd


def test_margin_cross_entropy_matches_autograd():
    x, t = _scores(7, 11, "cosine"), _targets(7, 11)
    gen = torch.Generator().manual_seed(3)
    col = torch.rand(11, generator=gen, dtype=torch.float64) + 1
    row = torch.rand(7, generator=gen, dtype=torch.float64) * 20 + 5
    off = torch.rand(7, generator=gen, dtype=torch.float64)
    coef = torch.rand(7, generator=gen, dtype=torch.float64)
    for kwargs in (
        {},
        {"col_scale": 30.0, "target_offset": 10.5},
        {"col_scale": col, "row_scale": row, "target_offset": off, "coef": coef},
    ):
        loss, grad = _loss_and_grad(partial(margin_cross_entropy, **kwargs), x, t)
        ref, ref_grad = _loss_and_grad(partial(margin_cross_entropy_reference, **kwargs), x, t)
        torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda s: margin_cross_entropy(s, t, col, row, off * row, coef),
        (x.detach().clone().requires_grad_(),),
    )


def test_margin_cross_entropy_float32_underflow_is_harmless():
    """Huge scaled logits (exp far below float32's range) stay exact to float32 precision."""
    x = _scores(16, 300, "cosine", dtype=torch.float32)
    t = _targets(16, 300)
    col = torch.linspace(1.0, 3.0, 300)
    row = torch.full((16,), 60.0)
    loss, grad = _loss_and_grad(lambda s, y: margin_cross_entropy(s, y, col, row, 5.0), x, t)
    x64 = x.detach().double().requires_grad_()
    ref, ref_grad = _loss_and_grad(
        lambda s, y: margin_cross_entropy_reference(s, y, col.double(), row.double(), 5.0), x64, t
    )
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# The plugin contract, for every registered loss

C_BIG = 8142
COUNTS_BIG = [1, 2] + [max(2, int(1000 * 0.002 ** (i / (C_BIG - 3)))) for i in range(C_BIG - 2)]
COUNTS_SMALL = [3, 1, 40, 2, 7, 500, 2, 90]


@pytest.fixture(scope="module")
def big_plugins():
    return {name: ltbench.build_loss(name, COUNTS_BIG) for name in ltbench.list_losses(kind="loss")}


def test_all_paper_losses_are_registered():
    assert set(OUR_LOSSES) <= set(ltbench.list_losses())


@pytest.mark.parametrize("name", list(ltbench.list_losses(kind="loss")))
def test_plugin_contract(name):
    spec_head = ltbench.sdk.registry.get_spec(name).head
    plugin = ltbench.build_loss(name, COUNTS_SMALL)
    assert plugin.head == spec_head in ("linear", "cosine")
    classes = len(COUNTS_SMALL)
    targets = torch.tensor([0, 1, 3, 6, 5, 2, 7, 4])
    batch = len(targets)
    for epoch in (0, 10_000):  # before and after every schedule switch
        plugin.set_epoch(epoch)
        for dtype in (torch.float32, torch.float64):
            scores = _scores(batch, classes, spec_head, dtype=dtype)
            loss, grad = _loss_and_grad(plugin, scores, targets)
            assert loss.dtype == dtype and loss.dim() == 0
            assert torch.isfinite(loss) and torch.isfinite(grad).all()
        # bf16 autocast on CPU: the loss is computed in float32 and stays finite
        scores = _scores(batch, classes, spec_head, dtype=torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = scores.to(torch.bfloat16)
            loss = plugin(low, targets)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert torch.isfinite(scores.grad).all()
        # cosines of exactly +-1, the target at +1 and at -1
        for fill in (1.0, -1.0):
            edge = torch.full((batch, classes), -fill, dtype=torch.float64)
            edge[torch.arange(batch), targets] = fill
            edge.requires_grad_()
            loss, grad = _loss_and_grad(plugin, edge, targets)
            assert torch.isfinite(loss) and torch.isfinite(grad).all(), (epoch, fill)


@pytest.mark.parametrize("name", list(ltbench.list_losses(kind="loss")))
def test_plugin_many_classes_with_tiny_counts(name, big_plugins):
    plugin = big_plugins[name]
    head = ltbench.sdk.registry.get_spec(name).head
    targets = torch.tensor([0, 1, 2, C_BIG - 1])
    for epoch in (0, 10_000):
        plugin.set_epoch(epoch)
        scores = _scores(4, C_BIG, head, dtype=torch.float32)
        loss, grad = _loss_and_grad(plugin, scores, targets)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = plugin(scores.to(torch.bfloat16), targets)
        assert torch.isfinite(loss)


def test_float32_and_float64_agree():
    targets = _targets(32, len(COUNTS_SMALL))
    for name in OUR_LOSSES:
        plugin = ltbench.build_loss(name, COUNTS_SMALL, **({"gamma": 1.0} if name == "eql" else {}))
        plugin.set_epoch(10_000)
        head = plugin.head
        x64 = _scores(32, len(COUNTS_SMALL), head)
        x32 = x64.detach().float().requires_grad_()
        l64, g64 = _loss_and_grad(plugin, x64, targets)
        l32, g32 = _loss_and_grad(plugin, x32, targets)
        torch.testing.assert_close(l32.double(), l64, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-6, msg=name)


def test_set_epoch_switches_ga_and_drw_at_their_epochs():
    scores, targets = _scores(8, len(COUNTS_SMALL), "cosine"), _targets(8, len(COUNTS_SMALL))
    for name, key in (("kps-ga", "ga_epoch"), ("kps-drw", "drw_epoch"), ("ldam-drw", "drw_epoch")):
        plugin = ltbench.build_loss(name, COUNTS_SMALL, **{key: 3})
        values = []
        for epoch in (0, 2, 3, 50):
            plugin.set_epoch(epoch)
            values.append(plugin(scores, targets).item())
        assert values[0] == values[1] != values[2] == values[3], name
        plugin.set_epoch(0)  # and back
        assert plugin(scores, targets).item() == values[0]


def test_set_epoch_rejects_bad_epochs():
    plugin = ltbench.build_loss("kps-ga", COUNTS_SMALL)
    for bad in (-1, 1.5, "3"):
        with pytest.raises(LtbenchError, match="epoch"):
            plugin.set_epoch(bad)


# ---------------------------------------------------------------------------------------------
# Identities


EQUAL = [25] * 6


def test_la_equals_ce_for_equal_counts():
    scores, targets = _scores(9, 6, "linear"), _targets(9, 6)
    ce = ltbench.build_loss("ce", EQUAL)
    for tau in (1.0, 2.5):
        la = ltbench.build_loss("la", EQUAL, tau=tau)
        torch.testing.assert_close(la(scores, targets), ce(scores, targets), rtol=1e-12, atol=0)


def test_kps_equals_cosface_for_equal_counts():
    """With equal counts r = 1 and m = m_max for every class (s_y = s_base for GA), so
    KPS, KPS-GA after ga_epoch and KPS-DRW after drw_epoch all equal CosFace(s_base, m_max).
    With unequal counts they differ."""
    scores, targets = _scores(9, 6, "cosine"), _targets(9, 6)
    cosface = ltbench.build_loss("cosface", EQUAL, s=12.0, m=0.4)
    expected = cosface(scores, targets)
    for name in ("kps", "kps-ga", "kps-drw"):
        kps = ltbench.build_loss(name, EQUAL, s_base=12.0, m_max=0.4)
        kps.set_epoch(10_000)
        torch.testing.assert_close(kps(scores, targets), expected, rtol=1e-12, atol=0)
    unequal = ltbench.build_loss("kps", [25, 25, 25, 25, 25, 26], s_base=12.0, m_max=0.4)
    assert not torch.allclose(unequal(scores, targets), expected)


def test_ldam_equals_cosface_for_equal_counts():
    scores, targets = _scores(9, 6, "cosine"), _targets(9, 6)
    ldam = ltbench.build_loss("ldam", EQUAL, s=20.0, max_m=0.3)
    cosface = ltbench.build_loss("cosface", EQUAL, s=20.0, m=0.3)
    torch.testing.assert_close(ldam(scores, targets), cosface(scores, targets), rtol=1e-12, atol=0)


def test_eql_without_rare_classes_or_draws_equals_ce():
    scores, targets = _scores(9, len(COUNTS_SMALL), "linear"), _targets(9, len(COUNTS_SMALL))
    ce = ltbench.build_loss("ce", COUNTS_SMALL)(scores, targets)
    for params in ({"gamma": 0.0}, {"lambda_": 0.0}):
        eql = ltbench.build_loss("eql", COUNTS_SMALL, **params)
        torch.testing.assert_close(eql(scores, targets), ce, rtol=1e-12, atol=0)


def test_eql_draws_come_from_torch_rng():
    scores, targets = _scores(64, len(COUNTS_SMALL), "linear"), _targets(64, len(COUNTS_SMALL))
    eql = ltbench.build_loss("eql", COUNTS_SMALL, lambda_=0.01, gamma=0.5)
    torch.manual_seed(7)
    first = eql(scores, targets)
    torch.manual_seed(7)
    assert eql(scores, targets).item() == first.item()
    always = ltbench.build_loss("eql", COUNTS_SMALL, lambda_=0.01, gamma=1.0)(scores, targets)
    never = ltbench.build_loss("ce", COUNTS_SMALL)(scores, targets)
    assert always.item() < first.item() < never.item()


def test_las_smoothing_factors():
    plugin = ltbench.build_loss("las", [10, 100, 55], smooth_head=0.4, smooth_tail=0.1)
    np.testing.assert_allclose(
        plugin.smoothing.numpy(), [0.1, 0.4, 0.1 + 0.3 * math.sin(math.pi / 4)], rtol=1e-12
    )
    linear = ltbench.build_loss(
        "las", [10, 100, 55], smooth_head=0.4, smooth_tail=0.1, shape="linear"
    )
    np.testing.assert_allclose(linear.smoothing.numpy(), [0.1, 0.4, 0.25], rtol=1e-12)
    equal = ltbench.build_loss("las", [5, 5], smooth_head=0.4, smooth_tail=0.1)
    np.testing.assert_allclose(equal.smoothing.numpy(), [0.4, 0.4])


def test_drw_weights_are_normalised_effective_numbers():
    w = effective_number_weights([5000, 50, 1], 0.9999)
    assert w.sum() == pytest.approx(3.0)
    raw = [(1 - 0.9999) / (1 - 0.9999**n) for n in (5000, 50, 1)]
    np.testing.assert_allclose(w, np.array(raw) * 3 / sum(raw), rtol=1e-12)
    np.testing.assert_allclose(effective_number_weights([4, 9], 0.0), [1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Mixup


def test_mixup_with_lam_one_equals_plain_loss():
    plugin = ltbench.build_loss("kps-ga", COUNTS_SMALL)
    scores, targets = _scores(8, len(COUNTS_SMALL), "cosine"), _targets(8, len(COUNTS_SMALL))
    shuffled = targets.flip(0)
    plain = plugin(scores, targets)
    torch.testing.assert_close(mixup_loss(plugin, scores, targets, shuffled, 1.0), plain)
    wrapped = MixupLoss(plugin)
    one = torch.ones((), dtype=torch.float64)
    torch.testing.assert_close(wrapped(scores, targets, shuffled, one), plain)
    torch.testing.assert_close(wrapped(scores, targets), plain)
    half = wrapped(scores, targets, shuffled, 0.5)
    torch.testing.assert_close(half, 0.5 * plain + 0.5 * plugin(scores, shuffled))


def test_mixup_loss_keeps_head_and_schedule():
    plugin = ltbench.build_loss("kps-ga", COUNTS_SMALL, ga_epoch=2)
    wrapped = MixupLoss(plugin)
    assert wrapped.head == "cosine" and wrapped.loss_name == "kps-ga"
    wrapped.set_epoch(5)
    assert plugin.epoch == 5 and plugin.ga_active


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_mixup_mix_is_seeded_and_mixes_a_permutation(kind):
    x = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    y = torch.arange(6)

    def gen():
        if kind == "torch":
            return torch.Generator().manual_seed(11)
        return np.random.default_rng(11)

    mixup = Mixup(0.4)
    x1, ya, yb, lam = mixup.mix(x, y, gen())
    x2, _, yb2, lam2 = mixup.mix(x, y, gen())
    assert torch.equal(x1, x2) and torch.equal(yb, yb2) and float(lam) == float(lam2)
    assert torch.equal(ya, y) and sorted(yb.tolist()) == y.tolist()
    lam = float(lam)
    assert 0.0 <= lam <= 1.0
    torch.testing.assert_close(x1, lam * x + (1 - lam) * x[yb])


def test_mixup_alpha_zero_is_identity_and_negative_is_an_error():
    x, y = torch.randn(5, 3), torch.arange(5)
    x_mixed, _, _, lam = Mixup(0.0).mix(x, y, torch.Generator().manual_seed(0))
    assert float(lam) == 1.0 and torch.equal(x_mixed, x)
    with pytest.raises(LtbenchError, match=r"alpha=-1\.0 is invalid.*>= 0"):
        Mixup(-1.0)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_gamma_and_beta_sampler_moments(alpha):
    gen = torch.Generator().manual_seed(5)
    g = _log_standard_gamma(alpha, 20_000, gen, torch.device("cpu")).exp()
    assert g.mean().item() == pytest.approx(alpha, rel=0.05)
    assert g.var().item() == pytest.approx(alpha, rel=0.1)
    lam = torch.stack([sample_beta(alpha, gen) for _ in range(300)])
    assert ((lam >= 0) & (lam <= 1)).all()
    assert lam.mean().item() == pytest.approx(0.5, abs=0.06)


# ---------------------------------------------------------------------------------------------
# Validation: parameters at build time, inputs at forward time


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("kps", {"m_max": 0}, r"m_max=0 is invalid; m_max must be a number > 0"),
        ("kps", {"m_max": -0.5}, r"m_max=-0\.5 is invalid"),
        ("kps", {"s_base": 0.0}, r"s_base=0\.0 is invalid; s_base must be a number > 0"),
        ("kps", {"n_base": -3}, r"n_base=-3 is invalid"),
        ("kps", {"n_base": 1.0}, r"n_base=1\.0 is invalid; n_base must be a number > 1"),
        ("kps", {"m_max": float("nan")}, r"m_max=nan is invalid"),
        ("kps", {"s_base": "15"}, r"s_base='15' is invalid; s_base must be a number > 0"),
        ("kps-ga", {"ga_epoch": -1}, r"ga_epoch=-1 is invalid; ga_epoch must be an integer >= 0"),
        ("kps-ga", {"ga_epoch": 1.5}, r"ga_epoch=1\.5 is invalid"),
        ("kps-drw", {"drw_epoch": True}, r"drw_epoch=True is invalid"),
        ("kps-drw", {"beta": 1.0}, r"beta=1\.0 is invalid; beta must be a number in \[0, 1\)"),
        ("ldam-drw", {"beta": -0.1}, r"beta=-0\.1 is invalid"),
        ("ldam-drw", {"drw_epoch": -2}, r"drw_epoch=-2 is invalid"),
        ("ldam", {"max_m": 0}, r"max_m=0 is invalid; max_m must be a number > 0"),
        ("ldam", {"s": -30}, r"s=-30 is invalid; s must be a number > 0"),
        ("cosface", {"m": 0}, r"m=0 is invalid; m must be a number > 0"),
        ("arcface", {"s": 0}, r"s=0 is invalid"),
        ("arcface", {"m": 4.0}, r"m=4\.0 is invalid; m must be a number in \(0, π\)"),
        ("la", {"tau": 0}, r"tau=0 is invalid; tau must be a number > 0"),
        ("focal", {"gamma": -1}, r"gamma=-1 is invalid; gamma must be a number >= 0"),
        ("cb-focal", {"beta": 1.5}, r"beta=1\.5 is invalid"),
        ("cb-focal", {"gamma": -0.5}, r"gamma=-0\.5 is invalid"),
        ("eql", {"gamma": 1.5}, r"gamma=1\.5 is invalid; gamma must be a number in \[0, 1\]"),
        ("eql", {"lambda_": -1e-3}, r"lambda_=-0\.001 is invalid"),
        ("las", {"smooth_head": 1.0}, r"smooth_head=1\.0 is invalid; .* in \[0, 1\)"),
        ("las", {"smooth_tail": -0.1}, r"smooth_tail=-0\.1 is invalid"),
        ("las", {"shape": "convex"}, r"shape='convex' is invalid; .* 'concave', 'linear'"),
        ("kps", {"margin": 0.5}, r"no parameter 'margin'; allowed parameters: m_max, n_base"),
    ],
)
def test_bad_parameters_are_one_line_errors(name, params, match):
    with pytest.raises(LtbenchError, match=match) as info:
        ltbench.build_loss(name, COUNTS_SMALL, **params)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"loss {name!r}")


@pytest.mark.parametrize(
    "counts, match",
    [
        ([10, 0, 3], r"class count 0 of class 1 is invalid; counts must be positive integers"),
        ([10, 2.5], r"class count 2\.5 of class 1"),
        ([], r"class counts are empty"),
    ],
)
def test_bad_class_counts(counts, match):
    with pytest.raises(LtbenchError, match=match):
        ltbench.build_loss("kps", counts)


def test_forward_checks_classes_and_targets():
    plugin = ltbench.build_loss("kps", COUNTS_SMALL)
    scores = _scores(3, len(COUNTS_SMALL), "cosine")
    with pytest.raises(LtbenchError, match=r"scores have 5 classes but the loss was built for 8"):
        plugin(scores[:, :5], torch.tensor([0, 1, 2]))
    with pytest.raises(LtbenchError, match=r"target class 8 is out of range; .* \[0, 7\]"):
        plugin(scores, torch.tensor([0, 8, 2]))
    with pytest.raises(LtbenchError, match=r"target class -1 is out of range"):
        plugin(scores, torch.tensor([0, -1, 2]))
    with pytest.raises(LtbenchError, match=r"targets must be class indices"):
        plugin(scores, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(LtbenchError, match=r"targets must be class indices.*shape \(3,\)"):
        plugin(scores, torch.tensor([0, 1]))
    with pytest.raises(LtbenchError, match=r"scores must be a 2-D tensor"):
        plugin(scores[0], torch.tensor([0]))
    # int32 targets are fine
    plugin(scores, torch.tensor([0, 1, 2], dtype=torch.int32))


# ---------------------------------------------------------------------------------------------
# The loss benchmark (a smoke run)


def test_bench_losses_smoke():
    from ltbench.bench.losses import bench_losses, format_bench, long_tailed_counts

    assert long_tailed_counts(5) == [1000, 211, 44, 9, 2]
    rows = bench_losses(sizes=((4, 6),), repeats=1, warmup=0, losses=["kps-ga", "la"])
    assert [r["loss"] for r in rows] == ["ce", "kps-ga", "la"]
    assert rows[0]["ratio"] == 1.0 and all(r["median_ms"] > 0 for r in rows)
    table = format_bench(rows)
    assert "kps-ga" in table and "B=4 C=6" in table and "x)" in table
    assert "min ms" in format_bench(rows, stat="min")


@pytest.mark.parametrize("name", sorted(ltbench.list_losses(kind="loss")))
def test_eval_logits_rescale_cosines_without_changing_the_prediction(name):
    counts = [500, 120, 40, 9, 3]
    plugin = ltbench.build_loss(name, counts)
    scores = torch.rand(6, 5) * 2 - 1
    logits = plugin.eval_logits(scores)
    assert torch.equal(logits.argmax(1), scores.argmax(1))
    if plugin.head == "cosine":
        assert logits.abs().max() > 2  # the loss's scale, not raw cosines in [-1, 1]
    else:
        assert torch.equal(logits, scores)
