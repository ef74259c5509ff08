"""Suite YAML: loading, validation messages, presets, expansion; results.py collection.

No Ray here: everything in this file runs in well under a second per test.
"""

import argparse
import json
import math

import pandas as pd
import pytest

from ltbench.errors import LtbenchError
from ltbench.runner.args import add_run_args, add_sweep_args
from ltbench.runner.presets import PRESETS
from ltbench.runner.results import results_frames, write_results, write_sweep
from ltbench.runner.suite import (
    apply_overrides,
    check_methods,
    expand,
    list_suites,
    load_suite,
)
from ltbench.runner.trials import check_trials, first_difference, load_trials, save_trials
from ltbench.schema import PER_CLASS_COLUMNS, RESULTS_COLUMNS, sweep_columns

SHIPPED = {
    "ablation": 3,
    "comparison": 12,
    "comparison-large": 12,
    "mixup": 2,
    "mislas": 2,
    "kps-search": 1,
    "kps-grid": 1,
}


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
methods: [ce]
datasets: [synthetic-lt]
rhos: [100]
seeds: [0]
"""


# ----------------------------------------------------------------------------------------------
# shipped suites


def test_shipped_suites_are_listed_with_descriptions():
    suites = list_suites()
    assert set(SHIPPED) <= set(suites)
    for name in SHIPPED:
        assert suites[name] and not suites[name].startswith("(invalid")


@pytest.mark.parametrize("name,n_methods", SHIPPED.items())
def test_shipped_suite_expansion_counts(name, n_methods):
    suite = load_suite(name)
    assert len(suite.methods) == n_methods
    trials = expand(suite)
    per_method = len(suite.datasets) * len(suite.rhos) * len(suite.seeds)
    assert len(trials) == n_methods * per_method
    assert len({t.key for t in trials}) == len(trials)
    if name == "comparison-large":  # Table 4: the two large sets as published, one seed
        assert suite.datasets == ["imagenet-lt", "inat2018"]
        assert suite.rhos == [1.0] and suite.seeds == [0]
    elif name not in ("kps-search", "kps-grid"):
        assert suite.datasets == ["cifar10-lt", "cifar100-lt"]
        assert suite.rhos == [100.0, 50.0]
        assert suite.seeds == [0, 1, 2]
        assert len(trials) == n_methods * 12


def test_paper_suites_use_registered_methods(tmp_path):
    for folder in ("cifar-10-batches-py", "cifar-100-python"):  # what check_files looks for
        (tmp_path / folder).mkdir()
    for name in ("ablation", "comparison", "mixup"):
        suite = load_suite(name)
        check_methods(suite)
        with pytest.raises(LtbenchError, match="needs its files: pass --data-root"):
            check_trials(expand(suite))
        suite, overrides = apply_overrides(suite, data_root=tmp_path)
        trials = expand(suite, overrides)
        check_trials(trials)
        assert trials[0].config["data_root"] == str(tmp_path.resolve())


def test_mixup_suite_labels_and_alpha():
    suite = load_suite("mixup")
    by_name = {m.name: m for m in suite.methods}
    assert by_name["kps-ga"].mixup_alpha == 0.0
    assert by_name["kps-ga+mixup"].loss == "kps-ga"
    assert by_name["kps-ga+mixup"].mixup_alpha == 1.0
    keys = [t.key for t in expand(suite)]
    assert "kps-ga+mixup_cifar10-lt_rho100_seed0" in keys
    mixed = [t for t in expand(suite) if t.method == "kps-ga+mixup"]
    assert all(t.config["mixup_alpha"] == 1.0 for t in mixed)


def test_trial_config_is_the_axes_and_the_paper_defaults():
    t = expand(load_suite("ablation"))[0]
    assert t.key == "kps_cifar10-lt_rho100_seed0"
    cfg = t.train_config()
    assert (cfg.dataset, cfg.loss, cfg.seed, cfg.subset_seed) == ("cifar10-lt", "kps", 0, 0)
    assert cfg.imb_factor == pytest.approx(0.01)
    assert cfg.epochs is None  # None: the paper's schedule for the dataset


# ----------------------------------------------------------------------------------------------
# validation messages


def test_unknown_suite_lists_known_ones():
    with pytest.raises(LtbenchError, match="unknown suite 'nope'; known suites: .*ablation"):
        load_suite("nope")


def test_missing_suite_file(tmp_path):
    with pytest.raises(LtbenchError, match="does not exist"):
        load_suite(str(tmp_path / "absent.yaml"))


def test_unknown_top_level_key_names_file_and_key(tmp_path):
    path = write(tmp_path, MINIMAL + "method: [ce]\n")
    with pytest.raises(LtbenchError) as info:
        load_suite(str(path))
    msg = str(info.value)
    assert str(path) in msg and "'method'" in msg and "allowed keys: description, methods" in msg
    assert "\n" not in msg


def test_unknown_method_key(tmp_path):
    path = write(tmp_path, MINIMAL.replace("[ce]", "[{loss: ce, parms: {}}]"))
    with pytest.raises(
        LtbenchError,
        match=r"methods\[0\]: unknown key 'parms'; allowed keys: "
        r"name, loss, params",
    ):
        load_suite(str(path))


@pytest.mark.parametrize(
    "old,new,match",
    [
        ("rhos: [100]", "rhos: 100", r"rhos must be a non-empty list of imbalance ratios"),
        ("rhos: [100]", "rhos: [abc]", r"rhos must be a list of .* got item 'abc' \(str\)"),
        ("seeds: [0]", "seeds: [0.5]", r"seeds must be a list of integers >= 0"),
        ("seeds: [0]", "seeds: [1, 1]", r"seeds lists a value twice"),
        ("[ce]", "[{loss: ce, mixup_alpha: yes}]", r"mixup_alpha must be a number >= 0"),
        ("[ce]", "[{loss: ce, name: 'a b'}]", r"name must be a label"),
        ("[ce]", "[{loss: 3}]", r"loss must be a registered loss name"),
        ("[ce]", "[ce, ce]", r"two methods are labelled 'ce'"),
        ("[ce]", "[{loss: ce, params: [1]}]", r"params must be a mapping"),
    ],
)
def test_wrong_types_name_file_key_and_allowed(tmp_path, old, new, match):
    path = write(tmp_path, MINIMAL.replace(old, new))
    with pytest.raises(LtbenchError, match=match) as info:
        load_suite(str(path))
    assert str(path) in str(info.value)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, MINIMAL.replace("seeds: [0]\n", ""))
    with pytest.raises(LtbenchError, match="missing required key 'seeds'"):
        load_suite(str(path))


def test_invalid_yaml(tmp_path):
    path = write(tmp_path, "methods: [ce\n")
    with pytest.raises(LtbenchError, match="not valid YAML"):
        load_suite(str(path))


def test_unknown_dataset_lists_known(tmp_path):
    path = write(tmp_path, MINIMAL.replace("synthetic-lt", "mnist-lt"))
    with pytest.raises(
        LtbenchError, match="unknown dataset 'mnist-lt'; known datasets: .*cifar10-lt"
    ):
        load_suite(str(path))


def test_unknown_method_is_checked_at_run_time_with_known_list(tmp_path):
    path = write(tmp_path, MINIMAL.replace("[ce]", "[not-a-loss]"))
    suite = load_suite(str(path))  # loads: plugins may be installed later
    with pytest.raises(LtbenchError, match="unknown loss 'not-a-loss'; known losses: .*ce"):
        check_methods(suite)


def test_mislas_suite_loads_before_its_methods_exist():
    suite = load_suite("mislas")
    assert [m.loss for m in suite.methods] == ["mislas", "mislas-kps"]


@pytest.mark.parametrize(
    "block,match",
    [
        ("{epoch: 3}", r"config: unknown key 'epoch'; allowed keys: .*epochs"),
        ("{epochs: ten}", r"config: epochs must be int"),
        ("{dataset: cifar10-lt}", r"key 'dataset' is set by the suite's datasets"),
        ("{loss_params: {}}", r"key 'loss_params' is set by the suite's methods\[\].params"),
    ],
)
def test_config_block_validation(tmp_path, block, match):
    path = write(tmp_path, MINIMAL + f"config: {block}\n")
    with pytest.raises(LtbenchError, match=match):
        load_suite(str(path))


@pytest.mark.parametrize(
    "block,match",
    [
        ("{space: {m_max: {type: float, low: 0.1}}}", r"high must be a finite float"),
        ("{space: {s_base: {type: int, low: 5.5, high: 40}}}", r"low must be a finite int"),
        ("{space: {m_max: {type: log, low: 0.1, high: 1}}}", r"type must be one of float, int"),
        ("{space: {m_max: {type: float, low: 1, high: 0.1}}}", r"low must be < high"),
        (
            "{space: {m_max: {type: float, low: 0.1, high: 1}}, samples: 3}",
            r"search: unknown key 'samples'; allowed keys: space, num_samples",
        ),
        (
            "{space: {m_max: {type: float, low: 0.1, high: 1}}, num_samples: 0}",
            r"num_samples must be an integer >= 1",
        ),
    ],
)
def test_search_block_validation(tmp_path, block, match):
    path = write(tmp_path, MINIMAL + f"search: {block}\n")
    with pytest.raises(LtbenchError, match=match):
        load_suite(str(path))


GRID = "{type: grid, space: {m_max: %s, s_base: {type: int, values: [10, 15]}}%s}"


@pytest.mark.parametrize(
    "block,match",
    [
        ("{type: bayes, space: {m: {type: float, low: 0, high: 1}}}", r"type must be one of"),
        (
            "{space: {m: {type: float, values: [0.1, 0.2]}}}",
            r"space: m: values needs a grid search \(search: type: grid\)",
        ),
        (GRID % ("{type: float, values: []}", ""), r"values must be a non-empty list of floats"),
        (GRID % ("{type: float, values: [0.1, 0.1]}", ""), r"the grid's values repeat"),
        (GRID % ("{type: float, low: 0.1, high: 0.5}", ""), r"needs values: \[...\] or low"),
        (GRID % ("{type: float, values: [0.1], low: 0.1}", ""), r"not both"),
        (GRID % ("{type: float, values: [0.1]}", ", num_samples: 3"), r"no ASHA\); num_samples"),
        (GRID % ("{type: float, values: [0.1]}", ", grace_fraction: 0.5"), r"grace_fraction"),
    ],
)
def test_grid_search_block_validation(tmp_path, block, match):
    path = write(tmp_path, MINIMAL + f"search: {block}\n")
    with pytest.raises(LtbenchError, match=match):
        load_suite(str(path))


def test_grid_search_values_steps_and_presets(tmp_path):
    block = GRID % ("{type: float, low: 0.3, high: 0.6, steps: 4}", "")
    suite = load_suite(str(write(tmp_path, MINIMAL + f"search: {block}\n")))
    assert suite.search.is_grid and suite.search.type == "grid"
    assert suite.search.space["m_max"] == {"type": "float", "values": [0.3, 0.4, 0.5, 0.6]}
    assert suite.search.space["s_base"]["values"] == [10, 15]
    assert suite.search.grid_size == suite.search.num_samples == 8
    steps = "{type: int, low: 10, high: 30, steps: 3}"
    block = f"{{type: grid, space: {{s_base: {steps}}}}}"
    suite = load_suite(str(write(tmp_path, MINIMAL + f"search: {block}\n", "b.yaml")))
    assert suite.search.space["s_base"]["values"] == [10, 20, 30]
    # the shipped grid: 4 x 3 points, and a preset does not thin it out
    grid, _ = apply_overrides(load_suite("kps-grid"), datasets=["synthetic-lt"], preset="smoke")
    assert grid.search.is_grid and grid.search.num_samples == 12
    assert grid.search.params == ["m_max", "s_base"]
    assert grid.config["val_fraction"] > 0
    assert not load_suite("kps-search").search.is_grid


# ----------------------------------------------------------------------------------------------
# presets and overrides


def test_presets():
    assert PRESETS["paper"].overrides == {"amp": False}  # float32 until bf16 is measured
    smoke = PRESETS["smoke"].overrides
    assert {"epochs", "n_max", "width"} <= set(smoke)
    suite, overrides = apply_overrides(
        load_suite("ablation"), datasets=["synthetic-lt"], preset="smoke"
    )
    trials = expand(suite, overrides)
    assert len(trials) == 3 * 2 * 2  # smoke: 2 seeds
    cfg = trials[0].train_config()
    assert cfg.dataset == "synthetic-lt"
    assert (cfg.epochs, cfg.n_max, cfg.width) == (smoke["epochs"], smoke["n_max"], smoke["width"])
    check_trials(trials)


def test_seed_and_rho_overrides_and_unknown_preset():
    suite, _ = apply_overrides(load_suite("ablation"), seeds=1, rhos=[10.0])
    assert suite.seeds == [0] and suite.rhos == [10.0]
    with pytest.raises(LtbenchError, match="unknown preset 'fast'; known presets: paper, smoke"):
        apply_overrides(load_suite("ablation"), preset="fast")
    with pytest.raises(LtbenchError, match="unknown dataset 'x'"):
        apply_overrides(load_suite("ablation"), datasets=["x"])


def test_layering_suite_method_preset_axes(tmp_path):
    path = write(
        tmp_path,
        """
methods:
  - {loss: ce, config: {batch_size: 32, lr: 0.05}}
datasets: [synthetic-lt]
rhos: [100]
seeds: [0]
config: {epochs: 50, lr: 0.2, val_fraction: 0.1}
""",
    )
    suite, overrides = apply_overrides(load_suite(str(path)), preset="smoke")
    cfg = expand(suite, overrides)[0].train_config()
    assert cfg.val_fraction == 0.1  # suite
    assert cfg.lr == 0.05  # method beats suite
    assert cfg.epochs == PRESETS["smoke"].overrides["epochs"]  # preset beats suite
    assert cfg.batch_size == PRESETS["smoke"].overrides["batch_size"]


def test_subset_seeds_axis_tags_keys(tmp_path):
    path = write(tmp_path, MINIMAL + "subset_seeds: [0, 1]\n")
    trials = expand(load_suite(str(path)))
    assert [t.key for t in trials] == [
        "ce_synthetic-lt_rho100_seed0_subset0",
        "ce_synthetic-lt_rho100_seed0_subset1",
    ]
    assert [t.train_config().subset_seed for t in trials] == [0, 1]


def test_trials_file_round_trip_and_difference(tmp_path):
    trials = expand(load_suite("ablation"))
    save_trials(tmp_path, trials)
    loaded = load_trials(tmp_path)
    assert list(loaded) == [t.key for t in trials]
    assert first_difference(loaded[trials[0].key], trials[0]) is None
    suite, overrides = apply_overrides(load_suite("ablation"), preset="smoke")
    changed = expand(suite, overrides)[0]
    diff = first_difference(trials[0], changed)
    assert diff is not None and " there, " in diff and " now" in diff


def test_argparse_helpers():
    p = argparse.ArgumentParser()
    add_run_args(p)
    args = p.parse_args(
        [
            "--suite",
            "ablation",
            "--dataset",
            "synthetic-lt",
            "--preset",
            "smoke",
            "--gpus-per-trial",
            "0.25",
            "--resume",
        ]
    )
    assert args.dataset == ["synthetic-lt"] and args.gpus_per_trial == 0.25 and args.resume
    assert args.max_failures == 1
    p = argparse.ArgumentParser()
    add_sweep_args(p)
    args = p.parse_args(["--num-samples", "3"])
    assert args.suite == "kps-search" and args.num_samples == 3


# ----------------------------------------------------------------------------------------------
# results.py against a hand-made suite directory


def _result(top1, classes=3):
    return {
        "top1_error": top1,
        "top1_acc": 100 - top1,
        "many_acc": 90.0,
        "medium_acc": 50.0,
        "few_acc": math.nan,
        "head_error": 10.0,
        "mid_error": 40.0,
        "tail_error": 70.0,
        "ece": 3.0,
        "epochs": 2,
        "wall_seconds": 5.5,
        "val_top1_error": top1 + 1,
        "val_balanced_error": top1 + 2,
        "per_class_accuracy": [80.0, 50.0, 20.0][:classes],
        "class_counts": [100, 10, 1],
        "class_names": ["a", "b", "c"],
    }


def test_collect_results_from_trial_dirs(tmp_path):
    path = write(
        tmp_path,
        MINIMAL.replace("[ce]", "[ce, {name: la1, loss: la, params: {tau: 1.0}}]").replace(
            "[0]", "[0, 1]"
        ),
    )
    trials = expand(load_suite(str(path)))
    save_trials(tmp_path, trials)
    keys = [t.key for t in trials]
    tdir = tmp_path / "trials"
    (tdir / keys[0]).mkdir(parents=True)
    (tdir / keys[0] / "result.json").write_text(json.dumps(_result(30.0)))
    (tdir / keys[1]).mkdir()
    (tdir / keys[1] / "error.txt").write_text("loss 'la': tau must be\n a number > 0\n")
    (tdir / keys[2]).mkdir()
    (tdir / keys[2] / "result.json").write_text('{"top1_err')  # half-written: not finished

    results, per_class = write_results(tmp_path)
    assert list(results.columns) == RESULTS_COLUMNS
    assert list(per_class.columns) == PER_CLASS_COLUMNS
    assert list(results["status"]) == ["finished", "failed", "missing", "missing"]
    assert results.loc[0, "top1_error"] == 30.0 and results.loc[0, "wall_seconds"] == 5.5
    assert results.loc[0, "val_balanced_error"] == 32.0 and results.loc[0, "val_top1_error"] == 31
    assert math.isnan(results.loc[1, "val_balanced_error"])
    assert results.loc[1, "error"] == "loss 'la': tau must be a number > 0"
    assert results.loc[2, "error"] == "" and math.isnan(results.loc[2, "top1_error"])
    assert json.loads(results.loc[3, "params"]) == {"tau": 1.0}
    assert results.loc[3, "method"] == "la1"
    assert results.loc[0, "rho"] == 100 and results.loc[0, "imb_factor"] == pytest.approx(0.01)
    assert len(per_class) == 3 and list(per_class["count"]) == [100, 10, 1]
    assert list(per_class["class_name"]) == ["a", "b", "c"]

    on_disk = pd.read_csv(tmp_path / "results.csv", keep_default_na=False)
    assert list(on_disk.columns) == RESULTS_COLUMNS and len(on_disk) == 4
    assert (tmp_path / "per_class.csv").is_file()


def test_collect_needs_trials_json(tmp_path):
    with pytest.raises(LtbenchError, match="no trials.json"):
        results_frames(tmp_path)


def test_sweep_frame(tmp_path):
    base = expand(load_suite("kps-search"))[0]
    specs = []
    for i, (m, s) in enumerate([(0.2, 10), (0.5, 30), (0.7, 20)]):
        d = base.to_dict()
        d.update(key=f"kps-ga_{i:05d}")
        d["config"] = {**d["config"], "loss_params": {"m_max": m, "s_base": s}}
        specs.append(type(base).from_dict(d))
    save_trials(tmp_path, specs)
    t0 = tmp_path / "trials" / specs[0].key
    t0.mkdir(parents=True)
    (t0 / "result.json").write_text(json.dumps(_result(40.0)))
    t1 = tmp_path / "trials" / specs[1].key
    t1.mkdir()
    (t1 / "metrics.jsonl").write_text(
        '{"epoch": 1, "val_balanced_error": 75.0, "val_top1_error": 70.0, '
        '"test_top1_error": 71.0}\n{"epoch": 2'
    )
    sweep = write_sweep(tmp_path, ("m_max", "s_base"), stopped={specs[1].key})
    assert list(sweep.columns) == sweep_columns(["m_max", "s_base"])
    assert list(sweep.columns) == [
        "trial",
        "m_max",
        "s_base",
        "val_balanced_error",
        "val_top1_error",
        "test_top1_error",
        "epochs",
        "status",
    ]
    assert list(sweep["m_max"]) == [0.2, 0.5, 0.7]
    assert list(sweep["status"]) == ["finished", "stopped", "missing"]
    assert sweep.loc[0, "val_top1_error"] == 41.0 and sweep.loc[0, "test_top1_error"] == 40.0
    assert sweep.loc[1, "epochs"] == 1 and sweep.loc[1, "val_top1_error"] == 70.0
    assert sweep.loc[0, "val_balanced_error"] == 42.0 and sweep.loc[1, "val_balanced_error"] == 75
    assert math.isnan(sweep.loc[2, "val_balanced_error"])
    assert (tmp_path / "sweep.csv").is_file()


def test_with_adds_reference_methods_without_changing_the_suite():
    import argparse

    from ltbench.runner.args import add_run_args
    from ltbench.runner.commands import plan_suite, request_from_args

    p = argparse.ArgumentParser()
    add_run_args(p)
    base = ["--suite", "ablation", "--preset", "smoke", "--dataset", "synthetic-lt"]
    _, _, plain = plan_suite(request_from_args(p.parse_args(base), "run"))
    _, _, more = plan_suite(request_from_args(p.parse_args([*base, "--with", "ce,kps"]), "run"))
    assert sorted({t.method for t in plain}) == ["kps", "kps-drw", "kps-ga"]
    assert sorted({t.method for t in more}) == ["ce", "kps", "kps-drw", "kps-ga"]  # kps once
    assert len(more) == len(plain) * 4 // 3
    assert {t.key for t in plain} <= {t.key for t in more}  # the ablation's trials unchanged
    with pytest.raises(LtbenchError, match="--with: unknown loss 'nope'"):
        plan_suite(request_from_args(p.parse_args([*base, "--with", "nope"]), "run"))
