"""Datasets as plugins: a `DatasetSpec` per dataset, registered by name (entry-point group
`ltbench.datasets`, the mechanism of `ltbench.sdk.plugins`).

A spec holds everything ltbench knows about a dataset: its loader, number of classes, whether it
is held in memory, whether it is built in (needs no data_root), and the paper's Table 2 recipe
for it (`Recipe`: model, schedule, optimiser settings, default imbalance); a run's configuration
fills its defaults from the recipe. ltbench's own datasets (ltbench.data.registry) and a
third-party package's register the same way, e.g.

    [project.entry-points."ltbench.datasets"]
    my-data = "my_package.data:SPEC"

The loader is `loader(request: LoadRequest, **options) -> DatasetBundle`: the request carries
the settings every dataset takes (checked already), `options` the dataset's own keyword options
(named in its signature; `load_dataset` refuses others). It returns the long-tailed training
split, the validation split and the test split as a `ltbench.data.DatasetBundle`;
`ltbench.data.in_memory_bundle` builds one from a balanced training set held in arrays (the
long-tailed draw and the validation hold-out done as for the built-in datasets). `check`, when
given, is `check(name, root=, imb_factor=, n_max=, download=, val_fraction=, **options)`: the
cheap checks of the files before a run writes anything (one-line `LtbenchError`s).
Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ltbench.errors import LtbenchError
from ltbench.sdk.plugins import Registry

ENTRY_POINT_GROUP = "ltbench.datasets"

# The many / medium / few-shot groups of the paper's tables: more than MANY_SHOT training images,
# MANY_SHOT down to FEW_SHOT, fewer than FEW_SHOT. A dataset's recipe may set its own thresholds
# (`Recipe.many_shot`, `Recipe.few_shot`), a run its own (`TrainConfig`).
MANY_SHOT = 100
FEW_SHOT = 20


def check_shot_thresholds(many_shot, few_shot) -> tuple[int, int]:
    """The one check of the many / few-shot thresholds: whole numbers, 1 <= few_shot <=
    many_shot + 1 (equal to many_shot + 1: no medium group). Returns them as ints."""
    for name, value in (("many_shot", many_shot), ("few_shot", few_shot)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LtbenchError(
                f"{name} must be a whole number >= 1 (training images per class), got {value!r}"
            )
    if few_shot > many_shot + 1:
        raise LtbenchError(
            f"few_shot ({few_shot}) must be at most many_shot + 1 ({many_shot + 1}): a class "
            f"with more than many_shot images is many-shot, one with fewer than few_shot few-shot"
        )
    return int(many_shot), int(few_shot)


@dataclass(frozen=True)
class Recipe:
    """The paper's recipe for one dataset (Table 2), and the thresholds of its many / medium /
    few-shot groups. Loss parameters whose paper value depends on the dataset (KPS's m_max) are
    declared by their plugins, not here."""

    model: str
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    epochs: int
    lr_decay_epochs: tuple[int, ...]
    lr_decay_factor: float
    imb_factor: float
    width: float = 1.0
    many_shot: int = MANY_SHOT  # more training images than this: a many-shot class
    few_shot: int = FEW_SHOT  # fewer than this: a few-shot class (the rest: medium)
    note: str = ""  # where the recipe comes from, when not from a paper (printed by a run)


@dataclass(frozen=True)
class LoadRequest:
    """The settings every dataset's loader receives (checked by `load_dataset`)."""

    name: str
    root: Any  # the dataset's folder (str or path), None for a built-in dataset
    imb_factor: float  # 1/rho in (0, 1]
    profile: str  # "exp" or "step"
    subset_seed: int  # the seed of the long-tailed draw
    download: bool
    n_max: int | None  # images per class before the long-tailed draw (None: all)
    val_fraction: float  # share of each class held out for validation
    val_seed: int  # the seed of the validation hold-out (the run's seed)
    # images per class wanted from the training pool *outside* the long-tailed draw (a meta
    # set: Jamal et al. take 10 per class before their draw); 0: none. A loader that has no
    # such pool (a dataset published long-tailed) ignores it and leaves `bundle.extra` None.
    extra_per_class: int = 0
    # a draw file's subsets (`ltbench.data.draws.Draw`), checked against the settings above:
    # the loader takes its images, in its order, instead of drawing (None: draw as usual)
    draw: Any = None


@dataclass(frozen=True)
class DatasetSpec:
    """What the dataset registry knows about one dataset."""

    name: str
    loader: Callable[..., Any]  # loader(request: LoadRequest, **options) -> DatasetBundle
    num_classes: int  # 0: read from the data (the generic kinds)
    in_memory: bool
    description: str
    recipe: Recipe
    built_in: bool = False  # drawn by ltbench itself: needs no data_root
    # check(name, root=, imb_factor=, n_max=, download=, val_fraction=, **options): the cheap
    # checks of the files before a run writes anything (folders and split files; no image read)
    check: Callable[..., Any] | None = None
    # recipe_for(root) -> Recipe: the recipe for the data under `root`, for a dataset that has
    # no paper recipe (the generic kinds: by image size); None: `recipe` everywhere
    recipe_for: Callable[..., Recipe] | None = None


DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", "datasets", ENTRY_POINT_GROUP, DatasetSpec, sort_known=False
)


def dataset_recipe(name: str, root=None) -> Recipe:
    """The recipe of dataset `name` for the data under `root`: the spec's `recipe_for(root)`
    where it has one (data without a paper recipe), else its recipe. The one place that
    chooses; configuration, labels and reports all ask here."""
    spec = DATASETS.get(name)
    return spec.recipe_for(root) if spec.recipe_for is not None else spec.recipe


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset at run time (a name registered twice is an error)."""
    return DATASETS.register(spec)
