"""Post-hoc decision rules (`ltbench eval`) on a tiny finished run."""

import json

import pytest
import torch

from ltbench.cli import main
from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import train
from ltbench.engine.posthoc import (
    evaluate_rules,
    load_finished_run,
    parse_grid,
    rule_logits,
    split_features,
    tuned_rules,
)
from ltbench.errors import LtbenchError
from ltbench.sdk.registry import build_loss

TAU_RULES = ("logit-adjust", "tau-norm")


def test_the_built_in_rules_whose_tau_is_tuned_are_logit_adjust_and_tau_norm():
    assert tuned_rules() == list(TAU_RULES)


TINY = dict(
    dataset="synthetic-lt",
    n_max=100,
    imb_factor=0.05,
    width=0.25,
    batch_size=64,
    epochs=3,
    eval_every=100,
    val_fraction=0.2,
    device="cpu",
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("posthoc") / "ce"
    train(TrainConfig(loss="ce", **TINY), out, progress=False)
    return out


def test_tau_zero_is_raw_exactly_and_tau_norm_drops_the_bias(run_dir):
    run = load_finished_run(run_dir, "cpu")
    test = split_features(run, "test")
    raw = rule_logits(run, "raw", test.features, None)
    assert torch.equal(rule_logits(run, "train-logits", test.features, None), raw)  # linear CE
    assert torch.equal(rule_logits(run, "logit-adjust", test.features, 0.0), raw)
    # the official tau_norm.py (classifier-balancing): W_j / ||W_j||^tau, no bias
    w = run.model.classifier.weight.detach().float()
    for tau in (0.0, 0.7):
        official = test.features @ (w / w.norm(dim=1, keepdim=True) ** tau).t()
        torch.testing.assert_close(rule_logits(run, "tau-norm", test.features, tau), official)
    bias = run.model.classifier.bias.detach().float()
    torch.testing.assert_close(rule_logits(run, "tau-norm", test.features, 0.0) + bias, raw)
    block = evaluate_rules(run, ["raw", "logit-adjust", "tau-norm"], grid=[0.0])
    assert block["rules"]["logit-adjust"]["tau"] == 0.0
    assert (
        block["rules"]["logit-adjust"]["per_class_accuracy"]
        == block["rules"]["raw"]["per_class_accuracy"]
    )
    # the trained model's own evaluation is the raw rule
    saved = json.loads((run_dir / "result.json").read_text())
    assert block["rules"]["raw"]["per_class_accuracy"] == pytest.approx(saved["per_class_accuracy"])


def test_rules_change_the_decisions(run_dir):
    block = evaluate_rules(load_finished_run(run_dir, "cpu"), list(TAU_RULES) + ["raw"], [1.0])
    raw = block["rules"]["raw"]["per_class_accuracy"]
    for rule in TAU_RULES:
        assert block["rules"][rule]["tau"] == 1.0
        assert block["rules"][rule]["per_class_accuracy"] != raw, rule
    assert block["selection_metric"] == "val_balanced_error"


def test_tau_is_never_chosen_on_the_test_set(run_dir):
    run = load_finished_run(run_dir, "cpu")
    clean = evaluate_rules(run, TAU_RULES)
    labels = run.bundle.test.labels
    run.bundle.test.labels = labels[
        torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    ]
    poisoned = evaluate_rules(run, TAU_RULES)
    for rule in TAU_RULES:
        assert poisoned["rules"][rule]["tau"] == clean["rules"][rule]["tau"]
        assert (
            poisoned["rules"][rule]["val_balanced_error_by_tau"]
            == clean["rules"][rule]["val_balanced_error_by_tau"]
        )
        # the poison did reach the test metrics
        assert poisoned["rules"][rule]["top1_error"] != clean["rules"][rule]["top1_error"]
    assert clean["tau_grid"] == pytest.approx([i / 10 for i in range(21)])


def test_eval_command_keeps_the_rest_of_result_json(run_dir, capsys):
    before = json.loads((run_dir / "result.json").read_text())
    assert main(["eval", str(run_dir), "--rules", "raw,tau-norm", "--tau-grid", "0:1:0.5",
                 "--device", "cpu"]) == 0  # fmt: skip
    after = json.loads((run_dir / "result.json").read_text())
    assert {k: v for k, v in after.items() if k != "posthoc"} == before
    assert set(after["posthoc"]["rules"]) == {"raw", "tau-norm"}
    assert after["posthoc"]["tau_grid"] == [0.0, 0.5, 1.0]
    assert "tau-norm" in capsys.readouterr().out
    assert main(["eval", str(run_dir / "nothing")]) == 2


def test_grid_and_train_logits():
    assert parse_grid("0:2:0.5") == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert parse_grid("1,0.5") == [1.0, 0.5]
    with pytest.raises(LtbenchError, match="tau"):
        parse_grid("-1,2")
    counts = [100, 30, 5]
    cos = torch.tensor([[0.2, 0.5, -0.1]])
    kps = build_loss("kps", counts)
    expected = kps.s_base * torch.as_tensor(kps.radius).float() * cos
    assert torch.allclose(kps.train_logits(cos), expected)
    ldam = build_loss("ldam", counts)
    assert torch.allclose(ldam.train_logits(cos), 30.0 * cos)
    la = build_loss("la", counts)
    prior = torch.log(torch.tensor(counts, dtype=torch.float64) / sum(counts)).float()
    assert torch.allclose(la.train_logits(cos), cos + prior)


def test_results_csv_gets_one_row_per_posthoc_rule(tmp_path):
    from ltbench.runner.results import results_frames
    from ltbench.runner.trials import TrialSpec, save_trials

    cfg = TrainConfig(loss="ce", dataset="synthetic-lt", imb_factor=0.05).to_dict()
    trial = TrialSpec("ce_t", "ce", cfg, ("logit-adjust",))
    save_trials(tmp_path, [trial])
    tdir = tmp_path / "trials" / "ce_t"
    tdir.mkdir(parents=True)
    metrics = {"top1_error": 50.0, "per_class_accuracy": [40.0, 60.0], "ece": 5.0}
    result = {
        "method": "ce", "setup_deviations": [], "full_schedule": True,
        "precision": "float32", "epochs": 30, **metrics,
        "class_counts": [10, 2], "class_names": ["a", "b"],
        "posthoc": {"precision": "float32", "rules": {
            "raw": {**metrics, "tau": None},
            "logit-adjust": {"top1_error": 45.0, "per_class_accuracy": [45.0, 65.0],
                             "ece": 4.0, "tau": 1.0},
        }},
    }  # fmt: skip
    (tdir / "result.json").write_text(json.dumps(result))
    results, per_class = results_frames(tmp_path)
    assert list(results["rule"]) == ["raw", "logit-adjust"]
    assert list(results["top1_error"]) == [50.0, 45.0]
    assert list(results["label"]) == ["ce", "ce"] and results["setup"][0] == "none"
    assert set(per_class["rule"]) == {"raw", "logit-adjust"} and len(per_class) == 4
    assert TrialSpec.from_dict(trial.to_dict()).posthoc == ("logit-adjust",)


def test_suite_posthoc_key(tmp_path):
    from ltbench.runner.suite import expand, load_suite

    path = tmp_path / "s.yaml"
    base = "methods: [ce]\ndatasets: [synthetic-lt]\nrhos: [10]\nseeds: [0]\n"
    path.write_text(base + "posthoc: [logit-adjust, tau-norm]\n")
    assert expand(load_suite(path))[0].posthoc == ("logit-adjust", "tau-norm")
    path.write_text(base + "posthoc: [bogus]\n")
    with pytest.raises(LtbenchError, match="unknown post-hoc rule 'bogus'"):
        load_suite(path)


@pytest.fixture(scope="module")
def run_without_val(tmp_path_factory):
    out = tmp_path_factory.mktemp("posthoc") / "ce-noval"
    train(TrainConfig(loss="ce", **{**TINY, "val_fraction": 0.0, "epochs": 1}), out, progress=False)
    return out


def test_a_tau_rule_without_validation_and_without_tau_is_refused(run_without_val, capsys):
    before = (run_without_val / "result.json").read_text()
    argv = ["eval", str(run_without_val), "--device", "cpu"]
    assert main([*argv, "--rules", "raw,tau-norm"]) == 2
    err = capsys.readouterr().err.strip()
    assert "rule 'tau-norm' needs tau" in err and "--tau" in err and "\n" not in err
    assert (run_without_val / "result.json").read_text() == before  # nothing written
    # the default set evaluates what it can and says what it skipped
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "logit-adjust  skipped" in out and "tau-norm      skipped" in out
    block = json.loads((run_without_val / "result.json").read_text())["posthoc"]
    assert set(block["rules"]) == {"raw", "train-logits"}
    assert set(block["skipped"]) == {"logit-adjust", "tau-norm"}


def test_a_fixed_tau_is_labelled_and_never_gets_the_papers_row(run_without_val, tmp_path):
    from ltbench.runner.gather import collect_runs

    argv = ["eval", str(run_without_val), "--device", "cpu", "--rules", "raw,tau-norm"]
    assert main([*argv, "--tau", "1"]) == 0
    block = json.loads((run_without_val / "result.json").read_text())["posthoc"]
    assert block["rules"]["tau-norm"]["tau_selected_on"] == "fixed by the user"
    assert block["selection_split"] is None and block["fixed_tau"] == 1.0
    collect_runs(tmp_path / "record", [run_without_val])
    import pandas as pd

    rules = list(pd.read_csv(tmp_path / "record" / "results.csv")["rule"])
    # eval adds rules: train-logits is there when the test above evaluated the default set first
    assert rules[0] == "raw" and "tau-norm (τ=1 fixed)" in rules and "tau-norm" not in rules
    assert set(rules) <= {"raw", "train-logits", "tau-norm (τ=1 fixed)"}
    assert main([*argv, "--tau", "-1"]) == 2


def test_a_suites_tau_rule_gets_a_validation_split(tmp_path):
    from ltbench.runner.suite import POSTHOC_VAL_FRACTION, expand, load_suite

    path = tmp_path / "s.yaml"
    base = "datasets: [synthetic-lt]\nrhos: [10]\nseeds: [0]\n"
    path.write_text(base + "methods: [{loss: ce, posthoc: [tau-norm]}, focal]\n")
    ce, focal = expand(load_suite(path))
    assert ce.config["val_fraction"] == POSTHOC_VAL_FRACTION == 0.1
    assert focal.config["val_fraction"] == 0.0  # no tau rule: the paper's setup stays
    path.write_text(base + "methods: [ce]\nposthoc: [logit-adjust]\nconfig: {val_fraction: 0.2}\n")
    assert expand(load_suite(path))[0].config["val_fraction"] == 0.2
    path.write_text(base + "methods: [ce]\nposthoc: [logit-adjust]\nconfig: {val_fraction: 0}\n")
    with pytest.raises(LtbenchError, match="'logit-adjust' chooses tau on a validation split"):
        expand(load_suite(path))
