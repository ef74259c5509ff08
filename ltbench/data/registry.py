"""The dataset registry's front: ltbench's own datasets, `get_dataset_spec` and `load_dataset`.

The spec (`DatasetSpec`, `Recipe`) and the registry are the SDK's (`ltbench.sdk.datasets`): a
third-party package registers a dataset through the entry-point group `ltbench.datasets` as
ltbench's own are (`BUILT_IN`, entry point `built-in`). The training configuration fills its
defaults from `dataset_recipe(name, root)` (the spec's recipe, or for data without a paper
recipe the default by image size, `ltbench.data.recipes`). The generic kinds `image-folder`
and `split-files` (`ltbench.data.kinds`) take any data with any classes; ImageNet-LT and
iNaturalist 2018 are split-file instances. Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping
from typing import Any

from ltbench.data.bundle import DatasetBundle
from ltbench.data.kinds import ImageFolder, SplitFiles
from ltbench.data.loaders import _check_cifar, _load_cifar, _load_synthetic
from ltbench.data.longtail import check_imb_factor, check_profile, check_val_fraction
from ltbench.data.recipes import CIFAR_RECIPE, IMAGENET_RECIPE, recipe_for_images_default
from ltbench.errors import LtbenchError
from ltbench.sdk.datasets import DATASETS as _REGISTRY
from ltbench.sdk.datasets import (  # noqa: F401 (re-exported)
    DatasetSpec,
    LoadRequest,
    Recipe,
    dataset_recipe,
)

IMAGENET_LT = SplitFiles(
    "ImageNet_LT_train.txt",
    "ImageNet_LT_test.txt",
    # the official validation list, balanced (20 images per class, disjoint from the training
    # and test files): the validation split when ROOT holds it and validation is asked for
    "ImageNet_LT_val.txt",
    published=True,
    image_size=224,
)
# iNaturalist's val file is its test set, so it has no validation list of its own
INAT2018 = SplitFiles(
    "iNaturalist18_train.txt", "iNaturalist18_val.txt", None, published=True, image_size=224
)
SPLIT_FILES = SplitFiles()  # the generic kind: train.txt, test.txt, val.txt
IMAGE_FOLDER = ImageFolder()

# ltbench's own datasets: registered through the entry point `built-in` of the group
# `ltbench.datasets` (pyproject.toml), like any third-party dataset.
BUILT_IN = [
    DatasetSpec(
        name="synthetic-lt",
        loader=_load_synthetic,
        num_classes=10,
        in_memory=True,
        description="procedural 10-class 16x16 coloured shapes and textures; built in",
        # CIFAR's recipe on a shorter schedule, a half-width network and half CIFAR's
        # learning rate: the settings whose seed spread BENCHMARKS.md records
        recipe=dataclasses.replace(
            CIFAR_RECIPE,
            epochs=30,
            lr_decay_epochs=(24, 27),
            width=0.5,
            lr=0.05,
        ),
        built_in=True,
    ),
    DatasetSpec(
        name="cifar10-lt",
        loader=_load_cifar,
        num_classes=10,
        in_memory=True,
        description="CIFAR-10, long-tailed subset",
        recipe=CIFAR_RECIPE,
        check=_check_cifar,
    ),
    DatasetSpec(
        name="cifar100-lt",
        loader=_load_cifar,
        num_classes=100,
        in_memory=True,
        description="CIFAR-100, long-tailed subset",
        recipe=CIFAR_RECIPE,
        check=_check_cifar,
    ),
    DatasetSpec(
        name="imagenet-lt",
        loader=IMAGENET_LT,
        num_classes=1000,
        in_memory=False,
        description="ImageNet-LT (Liu et al. 2019) from its split files",
        recipe=IMAGENET_RECIPE,
        check=IMAGENET_LT.check,
    ),
    DatasetSpec(
        name="inat2018",
        loader=INAT2018,
        num_classes=8142,
        in_memory=False,
        description="iNaturalist 2018 from its split files (val used as the test set)",
        recipe=dataclasses.replace(IMAGENET_RECIPE, batch_size=512, lr=0.2),
        check=INAT2018.check,
    ),
    DatasetSpec(
        name="image-folder",
        loader=IMAGE_FOLDER,
        num_classes=0,
        in_memory=False,
        description="your images: ROOT/train/<class>/, ROOT/test/<class>/ (and val/); any classes",
        recipe=recipe_for_images_default(),
        check=IMAGE_FOLDER.check,
        recipe_for=IMAGE_FOLDER.recipe_for,
    ),
    DatasetSpec(
        name="split-files",
        loader=SPLIT_FILES,
        num_classes=0,
        in_memory=False,
        description="your images listed in ROOT/train.txt, test.txt (and val.txt): 'path label'",
        recipe=recipe_for_images_default(),
        check=SPLIT_FILES.check,
        recipe_for=SPLIT_FILES.recipe_for,
    ),
]
DATASETS: Mapping[str, DatasetSpec] = _REGISTRY.view()  # every registered dataset, read-only


def list_datasets() -> list[str]:
    """Names accepted by `load_dataset`."""
    return _REGISTRY.names()


def get_dataset_spec(name: str) -> DatasetSpec:
    """The registry record for `name`, or a one-line error listing the known names."""
    return _REGISTRY.get(name)


def check_files(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    imb_factor: float = 1.0,
    n_max: int | None = None,
    download: bool = False,
    val_fraction: float = 0.0,
    **options: Any,
) -> None:
    """What can be checked of dataset `name`'s files before a run writes anything: its folder,
    its layout and its split files (read, not a single image opened); one-line errors."""
    spec = get_dataset_spec(name)
    if spec.check is not None:
        spec.check(
            name,
            root=root,
            imb_factor=check_imb_factor(imb_factor),
            n_max=_check_n("n_max", n_max),
            download=bool(download),
            val_fraction=check_val_fraction(val_fraction),
            **options,
        )


def _check_n(name: str, value: int | None) -> int | None:
    if value is not None and int(value) < 1:
        raise LtbenchError(f"{name} must be at least 1, got {value!r}")
    return None if value is None else int(value)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    imb_factor: float,
    profile: str = "exp",
    subset_seed: int = 0,
    download: bool = False,
    n_max: int | None = None,
    val_fraction: float = 0.0,
    val_seed: int = 0,
    extra_per_class: int = 0,
    draw: str | os.PathLike | None = None,
    **options: Any,
) -> DatasetBundle:
    """Load dataset `name` as a long-tailed training set plus its balanced test set.

    imb_factor: 1/rho in (0, 1] (0.01 for rho=100). CIFAR and synthetic-lt are subsampled with
        `long_tailed_indices(labels, imb_factor, subset_seed, profile)`; ImageNet-LT and
        iNaturalist are long-tailed as published and require imb_factor=1.
    n_max: images per class taken before the long-tailed construction (the first n_max of each
        class), to make small runs fast; synthetic-lt draws this many per class (default 500).
    val_fraction: share of each class's long-tailed training images held out as a validation
        split, drawn with `val_seed` (`longtail.validation_count`: at least VAL_MIN_PER_CLASS
        per class with twice that many images, else at least one per class with two or more).
        On ImageNet-LT, a ROOT/ImageNet_LT_val.txt (the official balanced split) is used
        instead of a hold-out when present.
    extra_per_class: images per class to draw from outside the long-tailed subset into
        `bundle.extra` (a meta set), where the dataset's training pool has them (CIFAR,
        synthetic-lt); a dataset published long-tailed leaves `extra` None.
    draw: a draw file (`ltbench.data.draws`, written by `ltbench draw`): its training,
        validation and meta subsets are taken as they are, in its order, instead of drawn; it
        must be a draw of this dataset with the same imb_factor, profile, subset_seed, n_max
        and val_fraction.
    download: fetch CIFAR with torchvision (opt-in; never done otherwise).
    options: `n_test_max` (synthetic, CIFAR: images per class in the test set), `cache_dir`
        (CIFAR image folders; False disables the cache), `train_split`, `test_split`,
        `val_split`, `image_root`, `image_size` (split-file datasets).
    """
    spec = get_dataset_spec(name)
    imb_factor = check_imb_factor(imb_factor)
    check_profile(profile)
    val_fraction = check_val_fraction(val_fraction)
    n_max = _check_n("n_max", n_max)
    if "n_test_max" in options:
        options["n_test_max"] = _check_n("n_test_max", options["n_test_max"])
    accepted = set(list(inspect.signature(spec.loader).parameters)[1:])  # after the request
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise LtbenchError(
            f"dataset {name!r} has no option {unknown[0]!r}; its options: "
            f"{', '.join(sorted(accepted)) or 'none'}"
        )
    drawn = None
    if draw is not None:
        from ltbench.data.draws import check_draw_settings, read_draw

        drawn = read_draw(draw)
        settings = {"imb_factor": imb_factor, "profile": profile, "subset_seed": int(subset_seed)}
        settings.update(n_max=n_max, val_fraction=val_fraction)
        check_draw_settings(drawn, name, settings)
    request = LoadRequest(
        name=name,
        root=root,
        imb_factor=imb_factor,
        profile=profile,
        subset_seed=int(subset_seed),
        download=bool(download),
        n_max=n_max,
        val_fraction=val_fraction,
        val_seed=int(val_seed),
        extra_per_class=int(extra_per_class),
        draw=drawn,
    )
    return spec.loader(request, **options)
