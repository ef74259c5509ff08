"""The three epoch protocols of a run (final, best-on-validation, best-on-test) and the KPS
variant of the authors' public script (issue 22).

The script's values are written out here from Keke921/KPSLoss@1418f18f `cifar_train.py` and
`losses.py`, not read back from ltbench's tables.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch.nn.functional as F

from losses.kps import kps_constants
from ltbench.cli import main
from ltbench.data.longtail import long_tailed_counts
from ltbench.engine import loop
from ltbench.engine.config import TrainConfig, resolve
from ltbench.engine.identity import identity
from ltbench.engine.loop import learning_rate, train
from ltbench.engine.protocols import (
    BEST_ON_TEST,
    BEST_ON_VALIDATION,
    BEST_VAL_CHECKPOINT,
    FINAL,
    due_for_test,
    epoch_protocols,
)
from ltbench.errors import LtbenchError
from ltbench.runner.suite import expand, load_suite
from ltbench.sdk.loss_utils import LossPlugin
from ltbench.sdk.registry import _REGISTRY, LossSpec, register
from reports.labels import paper_match
from reports.paper import load_paper_numbers

# --- the authors' script, written out -----------------------------------------------------------

SCRIPT_M_MAX = 0.2  # cifar_train.py:258  KPSLoss(cls_num_list, max_m=0.2, s=15, ...)
SCRIPT_S = 15.0
SCRIPT_N_BASE = 50.0  # losses.py:63  s_list * (50 / s_list.min())
SCRIPT_GA_EPOCH = 120  # cifar_train.py:243  weighted = epoch >= 120 (0-based)
SCRIPT_DRW_EPOCH = 160  # cifar_train.py:234  idx = epoch // 160
SCRIPT_S_CLAMP = 50.0  # losses.py:93  torch.clamp(batch_s, self.s, 50)


def script_lr(epoch0: int, base: float = 0.1) -> float:
    """cifar_train.py:421-433 `adjust_learning_rate`, for a 0-based epoch."""
    epoch = epoch0 + 1
    if epoch <= 5:
        return base * epoch / 5
    if epoch > 180:
        return base * 0.01
    if epoch > 160:
        return base * 0.1
    return base


def script_constants(counts):
    """losses.py:62-70 on classes sorted by count (descending): r, then m and the GA scale by
    reversing r (`torch.flip`), the scale clamped to [s, 50]."""
    n = np.asarray(counts, dtype=np.float64)
    r = np.log(n * (SCRIPT_N_BASE / n.min()))
    r = r / r.min()
    m = np.flip(r) * (SCRIPT_M_MAX / np.flip(r).max())
    s = np.clip(np.flip(r) * SCRIPT_S, SCRIPT_S, SCRIPT_S_CLAMP)
    unclamped = np.flip(r) * SCRIPT_S
    return r, m, s, unclamped


@pytest.mark.parametrize("loss", ["kps", "kps-ga", "kps-drw"])
@pytest.mark.parametrize("dataset", ["cifar10-lt", "cifar100-lt"])
def test_authors_variant_resolves_to_the_script(loss, dataset):
    cfg = resolve(
        TrainConfig(dataset=dataset, loss=loss, variant="authors-script", imb_factor=0.01)
    )
    assert cfg.loss_params["m_max"] == SCRIPT_M_MAX
    assert cfg.loss_params["s_base"] == SCRIPT_S
    assert cfg.loss_params["n_base"] == SCRIPT_N_BASE
    if loss == "kps-ga":
        assert cfg.loss_params["ga_epoch"] == SCRIPT_GA_EPOCH
    if loss == "kps-drw":
        assert cfg.loss_params["drw_epoch"] == SCRIPT_DRW_EPOCH
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == (200, 64, 0.1, 2e-4)
    for e in range(200):
        assert learning_rate(cfg, e) == pytest.approx(script_lr(e)), e
    # the paper's text stays the default: 0.1 -> 0.001 -> 0.00001
    text = resolve(TrainConfig(dataset=dataset, loss=loss, imb_factor=0.01))
    assert text.loss_params["m_max"] == 0.5
    assert learning_rate(text, 170) == pytest.approx(0.001)
    assert learning_rate(text, 190) == pytest.approx(0.00001)


def test_authors_variant_is_labelled_and_never_gets_the_papers_number():
    cfg = resolve(TrainConfig(dataset="cifar10-lt", loss="kps-ga", variant="authors-script"))
    ident = identity(cfg)
    assert ident["method"] == "kps-ga@authors-script"
    assert ident["full_schedule"] is True  # the script's own 200 epochs
    assert any("authors-script" in d for d in ident["setup_deviations"])
    text = identity(resolve(TrainConfig(dataset="cifar10-lt", loss="kps-ga")))
    assert text == {"method": "kps-ga", "full_schedule": True, "setup_deviations": []}

    paper = load_paper_numbers()
    setting = pd.Series({"dataset": "cifar10-lt", "rho": 100.0})

    def rows(label, setup):
        return pd.DataFrame([{"label": label, "setup": setup, "rule": "raw"}])

    pv, cell, _ = paper_match(rows("kps-ga", "none"), paper, setting)
    assert pv is not None and pv.value == pytest.approx(18.77)
    setup = "; ".join(ident["setup_deviations"])
    pv, cell, note = paper_match(rows(ident["method"], setup), paper, setting)
    assert pv is None and cell == "no paper row" and "kps-ga@authors-script" in note


# How far reversing r (the script) is from Eq. (28) (ltbench), as the largest relative
# difference in any class's margin and GA scale, measured on ltbench's draws (docs/RECIPES.md):
# CIFAR-100's tail has runs of equal counts (5, 5, 5, 5 at rho = 100), which the reversal maps to
# different classes' values.
FLIP_DIFFERENCE = {
    (10, 100): 0.0011,
    (10, 50): 0.0007,
    (10, 10): 0.0003,
    (100, 100): 0.0362,
    (100, 50): 0.0202,
    (100, 10): 0.0043,
}


@pytest.mark.parametrize("classes, rho", sorted(FLIP_DIFFERENCE))
def test_the_scripts_clamp_never_binds_and_its_flip_is_near_eq28_on_cifar(classes, rho):
    """The two differences of the script's loss that the variant does not copy: on CIFAR's
    draws at s = 15 the clamp of s_y to [15, 50] never binds (the largest s_y is 32.7), and
    reversing r gives Eq. (28)'s margins and scales up to the rounding of the counts."""
    counts = long_tailed_counts(classes, 5000 if classes == 10 else 500, 1.0 / rho, "exp")
    r, m, s, unclamped = script_constants(counts)
    assert np.array_equal(s, unclamped) and unclamped.max() < SCRIPT_S_CLAMP
    ours = kps_constants(counts, SCRIPT_N_BASE, SCRIPT_M_MAX, SCRIPT_S)
    np.testing.assert_allclose(ours.radius, r, rtol=1e-12)
    for mine, theirs in ((ours.margin, m), (ours.scale, s)):
        assert np.max(np.abs(mine / theirs - 1)) == pytest.approx(
            FLIP_DIFFERENCE[classes, rho], abs=5e-5
        )


def test_variant_errors_are_one_line():
    with pytest.raises(LtbenchError, match=r"loss 'ce' has no variant 'authors-script'"):
        resolve(TrainConfig(loss="ce", variant="authors-script"))
    with pytest.raises(LtbenchError, match=r"written for cifar10-lt.*got dataset 'imagenet-lt'"):
        resolve(TrainConfig(loss="kps", variant="authors-script", dataset="imagenet-lt"))


def test_suite_method_variant_expands_to_labelled_trials(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(
        "methods:\n  - loss: kps-ga\n  - {loss: kps-ga, variant: authors-script}\n"
        "datasets: [cifar10-lt]\nrhos: [100]\nseeds: [0]\n"
    )
    suite = load_suite(path)
    trials = expand(suite)
    assert [t.method for t in trials] == ["kps-ga", "kps-ga@authors-script"]
    assert trials[1].config["variant"] == "authors-script"
    assert trials[0].config["variant"] is None
    cfg = resolve(trials[1].train_config())
    assert (cfg.loss_params["m_max"], cfg.lr_decay_factor) == (SCRIPT_M_MAX, 0.1)


# --- the epoch protocols ------------------------------------------------------------------------


def test_epoch_protocols_pick_their_epochs():
    history = [
        {"epoch": 1, "val_balanced_error": 50.0, "test_top1_error": 60.0},
        {"epoch": 2, "val_balanced_error": 40.0, "test_top1_error": 45.0},
        {"epoch": 3, "val_balanced_error": 41.0},
        {"epoch": 4, "val_balanced_error": 40.0, "test_top1_error": 30.0},  # a tie: epoch 2 wins
        {"epoch": 5, "val_balanced_error": 45.0, "test_top1_error": 50.0},
    ]
    out = epoch_protocols(history, 50.0)
    p = out["epoch_protocols"]
    assert p[FINAL] == {"epoch": 5, "test_top1_error": 50.0}
    assert p[BEST_ON_VALIDATION]["epoch"] == 2 and p[BEST_ON_VALIDATION]["test_top1_error"] == 45
    assert p[BEST_ON_TEST]["epoch"] == 4 and "published" in p[BEST_ON_TEST]["use"]
    assert out["evaluated_epochs"] == {"test": [1, 2, 4, 5], "validation": [1, 2, 3, 4, 5]}
    no_val = epoch_protocols([{"epoch": 1, "test_top1_error": 9.0}], 9.0)["epoch_protocols"]
    assert no_val[BEST_ON_VALIDATION]["epoch"] is None
    assert "no validation split" in no_val[BEST_ON_VALIDATION]["reason"]
    # a two-stage run: only its last stage's epochs are candidates
    staged = [{**r, "stage": "stage1"} for r in history] + [
        {"epoch": 6, "stage": "stage2", "val_balanced_error": 44.0, "test_top1_error": 48.0}
    ]
    assert epoch_protocols(staged, 48.0)["epoch_protocols"][BEST_ON_TEST]["epoch"] == 6


def test_test_set_is_evaluated_at_each_new_validation_minimum():
    history = [{"epoch": 1, "val_balanced_error": 50.0}]
    assert due_for_test(2, 10, 5, {"epoch": 2, "val_balanced_error": 49.0}, history)
    assert not due_for_test(2, 10, 5, {"epoch": 2, "val_balanced_error": 50.0}, history)
    assert due_for_test(5, 10, 5, {"epoch": 5}, history) and due_for_test(
        10, 10, 7, {"epoch": 10}, []
    )


class _WrongAtTheEnd(LossPlugin):
    """Cross-entropy, except in the last epoch, which trains towards the next class: the final
    model is worse than an earlier one by construction."""

    def __init__(self, cls_num_list, wrong_from):
        super().__init__(cls_num_list)
        self.wrong_from = wrong_from

    def compute(self, x, targets):
        if self.epoch >= self.wrong_from:
            targets = (targets + 1) % self.num_classes
        return F.cross_entropy(x, targets)


WRONG = "test-wrong-at-the-end"
# Five epochs at a constant learning rate (no warm-up, no decay) learn something; the fifth
# trains towards the next class (about 75 % error after epoch 4, 90 % after epoch 5).
TINY = dict(
    dataset="synthetic-lt",
    n_max=150,
    imb_factor=0.5,
    width=0.25,
    batch_size=32,
    epochs=5,
    warmup_epochs=0,
    lr_decay_factor=1.0,
    val_fraction=0.2,
)


def _register_wrong():
    if WRONG not in _REGISTRY:
        register(LossSpec(WRONG, _WrongAtTheEnd, "linear", defaults={"wrong_from": 4}))


def _poison_test_labels(monkeypatch):
    real = loop.load_run_data

    def poisoned(cfg, **kw):
        bundle = real(cfg, **kw)
        bundle.test.labels = (bundle.test.labels + 3) % bundle.num_classes
        return bundle

    monkeypatch.setattr(loop, "load_run_data", poisoned)


def test_three_protocols_on_a_tiny_run_and_best_on_val_never_reads_test_labels(
    tmp_path, monkeypatch
):
    _register_wrong()
    cfg = TrainConfig(**TINY, loss=WRONG, eval_every=3, keep_best_val=True)
    clean = train(cfg, tmp_path / "clean")
    p = clean["epoch_protocols"]
    assert p[FINAL]["epoch"] == 5 and p[FINAL]["test_top1_error"] == clean["top1_error"]
    assert p[BEST_ON_TEST]["epoch"] < 5  # the last epoch un-learns by construction
    assert p[BEST_ON_TEST]["test_top1_error"] < clean["top1_error"]
    assert clean["best_epoch_selected_on_test"] == p[BEST_ON_TEST]["epoch"]
    rows = [json.loads(x) for x in (tmp_path / "clean" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_balanced_error"] for r in rows]
    chosen = p[BEST_ON_VALIDATION]["epoch"]
    assert chosen == 1 + vals.index(min(vals))  # exact over every epoch, not only tested ones
    assert "test_top1_error" in rows[chosen - 1]
    assert clean["evaluated_epochs"]["validation"] == [1, 2, 3, 4, 5]
    assert {3, 5, chosen} <= set(clean["evaluated_epochs"]["test"])
    assert (tmp_path / "clean" / BEST_VAL_CHECKPOINT).is_file()

    _poison_test_labels(monkeypatch)
    poisoned = train(cfg, tmp_path / "poisoned")
    q = poisoned["epoch_protocols"]
    assert poisoned["top1_error"] != clean["top1_error"]  # the poison reached the test set
    assert q[BEST_ON_VALIDATION]["epoch"] == chosen
    assert (
        q[BEST_ON_VALIDATION]["val_balanced_error"] == p[BEST_ON_VALIDATION]["val_balanced_error"]
    )
    assert poisoned["evaluated_epochs"] == clean["evaluated_epochs"]


def test_protocol_columns_reach_results_csv(tmp_path):
    from ltbench.runner.gather import collect_runs

    run = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic-lt", "--n-max", "60", "--imb-factor", "0.1"]
    argv += ["--width", "0.25", "--epochs", "2", "--loss", "ce", "--val-fraction", "0.2"]
    assert main([*argv, "--out", str(run)]) == 0
    collect_runs(tmp_path / "record", [run])
    table = pd.read_csv(tmp_path / "record" / "results.csv")
    row = table.iloc[0]
    result = json.loads((run / "result.json").read_text())
    p = result["epoch_protocols"]
    assert row["epoch_best_on_val"] == p[BEST_ON_VALIDATION]["epoch"]
    assert row["test_error_best_on_val"] == pytest.approx(p[BEST_ON_VALIDATION]["test_top1_error"])
    assert row["test_error_best_on_test"] == pytest.approx(p[BEST_ON_TEST]["test_top1_error"])
    assert not math.isnan(row["epoch_best_on_test"])
    from reports import build_report

    md = build_report(tmp_path / "record", formats=("md",))["md"].read_text()
    assert "Which epoch: final, best on validation, best on test" in md
    on_val = f"{p[BEST_ON_VALIDATION]['test_top1_error']:.2f} (ep. {row['epoch_best_on_val']})"
    assert on_val in md


def _rows(**kw):
    base = {
        "trial": "t",
        "method": "kps-ga",
        "dataset": "cifar10-lt",
        "rho": 100.0,
        "seed": 0,
        "status": "finished",
        "rule": "raw",
        "label": "kps-ga",
        "setup": "none",
        "top1_error": 20.0,
        "test_error_best_on_val": 19.5,
        "epoch_best_on_val": 196,
        "test_error_best_on_test": 18.9,
        "epoch_best_on_test": 182,
    }
    return pd.DataFrame([{**base, **kw}])


def test_report_shows_best_on_test_only_beside_the_papers_number():
    from reports.protocols import protocol_table

    paper = load_paper_numbers()
    text = protocol_table(_rows(), paper)
    cells = [c.text for c in text.rows[0]]
    assert cells == ["kps-ga", "20.00", "19.50 (ep. 196)", "18.90 (ep. 182)", "18.77"]
    script = _rows(method="kps-ga@authors-script", label="kps-ga@authors-script")
    cells = [c.text for c in protocol_table(script, paper).rows[0]]
    assert cells[3:] == ["-", "-"]  # no published number, so no best-on-test either
    assert all(not c.mark for c in protocol_table(_rows(), paper).rows[0])
    no_val = _rows(label="x", test_error_best_on_val=math.nan, epoch_best_on_val=math.nan)
    assert protocol_table(no_val, paper) is None  # nothing beyond the final epoch to show
