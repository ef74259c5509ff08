"""The dataset registry (one spec per dataset, with its paper recipe), the package's re-exports,
and the value checks that the data package and the configuration share."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from ltbench import data
from ltbench.data.registry import DATASETS, DatasetSpec, Recipe, get_dataset_spec
from ltbench.engine.config import TrainConfig, resolve
from ltbench.errors import LtbenchError

RECIPE_FIELDS = {
    "model",
    "batch_size",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "epochs",
    "lr_decay_epochs",
    "lr_decay_factor",
    "imb_factor",
    "width",
    "many_shot",
    "few_shot",
    "note",
}


def test_every_dataset_has_a_recipe_and_only_synthetic_is_built_in():
    assert list(DATASETS) == data.list_datasets()
    for name, spec in DATASETS.items():
        assert isinstance(spec, DatasetSpec) and spec.name == name
        assert get_dataset_spec(name) is spec
        assert isinstance(spec.recipe, Recipe), name
        r = spec.recipe
        assert r.epochs >= 1 and r.batch_size >= 1 and r.lr > 0 and r.width > 0, name
        assert 0 < r.imb_factor <= 1 and 0 <= r.warmup_epochs < r.epochs, name
        assert all(0 < e < r.epochs for e in r.lr_decay_epochs), name
        # 0 classes: known from the data only (the generic kinds, whose recipe follows it)
        assert spec.num_classes >= 2 or spec.recipe_for is not None, name
        assert spec.description, name
        assert spec.built_in == (name == "synthetic-lt"), name


def test_recipes_are_frozen_data():
    assert {f.name for f in dataclasses.fields(Recipe)} == RECIPE_FIELDS
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["cifar10-lt"].recipe.epochs = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["cifar10-lt"]  # type: ignore[index]


def test_paper_recipes():
    cifar = DATASETS["cifar100-lt"].recipe
    assert (cifar.model, cifar.epochs, cifar.lr_decay_epochs, cifar.imb_factor) == (
        "resnet32",
        200,
        (160, 180),
        0.01,
    )
    synthetic = DATASETS["synthetic-lt"].recipe
    assert (synthetic.epochs, synthetic.lr_decay_epochs, synthetic.width) == (30, (24, 27), 0.5)
    inat = DATASETS["inat2018"].recipe
    assert (inat.model, inat.batch_size, inat.lr, inat.imb_factor) == ("resnet50", 512, 0.2, 1.0)
    # per-dataset loss values come from the plugins that own them
    paper = [d for d, spec in DATASETS.items() if spec.recipe_for is None]
    m_max = {d: resolve(TrainConfig(dataset=d, loss="kps")).loss_params["m_max"] for d in paper}
    assert m_max == {
        "synthetic-lt": 0.5,
        "cifar10-lt": 0.5,
        "cifar100-lt": 0.5,
        "imagenet-lt": 0.35,
        "inat2018": 0.3,
    }
    las = resolve(TrainConfig(dataset="cifar100-lt", loss="mislas")).loss_params
    assert (las["smooth_head"], las["smooth_tail"]) == (0.4, 0.1)


@pytest.mark.parametrize(
    "option, bad, match",
    [
        ("imb_factor", 1.5, r"imbalance factor 1\.5 is outside \(0, 1\]; it is 1/rho"),
        ("profile", "linear", r"unknown imbalance profile 'linear'; known: exp, step"),
        ("val_fraction", 1.0, r"val_fraction must be in \[0, 1\), got 1\.0"),
    ],
)
def test_config_and_loader_give_the_same_error(option, bad, match):
    """One check per value: resolve() and load_dataset() raise the same one-line message."""
    messages = []
    for call in (
        lambda: resolve(TrainConfig(**{option: bad})),
        lambda: data.load_dataset("synthetic-lt", **{"imb_factor": 0.5, option: bad}),
    ):
        with pytest.raises(LtbenchError, match=match) as info:
            call()
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "\n" not in messages[0]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "x", None])
def test_check_val_fraction(bad):
    with pytest.raises(LtbenchError, match=r"val_fraction must be in \[0, 1\)"):
        data.check_val_fraction(bad)
    assert data.check_val_fraction(0) == 0.0 and data.check_val_fraction(0.25) == 0.25


def test_unknown_dataset_comes_from_the_registry():
    with pytest.raises(LtbenchError, match="unknown dataset 'mnist-lt'; known datasets: synth"):
        get_dataset_spec("mnist-lt")
    with pytest.raises(LtbenchError, match="unknown dataset 'mnist-lt'; known datasets: synth"):
        resolve(TrainConfig(dataset="mnist-lt"))


def test_package_re_exports_every_public_name():
    for name in data.__all__:
        assert getattr(data, name) is not None, name
    assert set(data.__all__) <= set(dir(data))
    assert data.Recipe is Recipe and data.DATASETS is DATASETS
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope  # noqa: B018


def test_registry_and_config_import_without_torch():
    """The configuration (and the CLI's dataset list) reads the registry without loading torch."""
    code = (
        "import sys, ltbench.engine.config, ltbench.data.registry, ltbench.data.longtail; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
