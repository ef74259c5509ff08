"""Long-tailed datasets, their subsets, and mini-batch loaders.

Datasets (`list_datasets()`, `load_dataset(name, ...)`):

- `synthetic-lt`: built in, drawn procedurally (see `ltbench.data.synthetic`); the offline default.
- `cifar10-lt`, `cifar100-lt`: CIFAR made long-tailed with `long_tailed_indices`; read from
  torchvision's python pickles or from an image-folder copy (`root/train/<class>/*.jpg`).
- `imagenet-lt`, `inat2018`: read from split files (`relative/path label` per line). They are
  long-tailed already, so no further subsampling is done and `imb_factor` must be 1.

CIFAR and synthetic-lt are held in memory as one uint8 tensor (N, 3, H, W) and an int64 label
tensor (`TensorData`); `TensorBatches` iterates shuffled, augmented mini-batches from them on any
device. ImageNet-LT and iNaturalist are `SplitFileDataset`s for a torch `DataLoader`
(`make_loader` wraps both cases behind one interface).

Modules, one job each:

- `longtail`: the long-tailed counts and subset, the validation hold-out, class counts, and the
  checks of imb_factor, profile and val_fraction (the only ones in ltbench).
- `registry`: one `DatasetSpec` per dataset (loader, classes, built in or not, the paper's
  `Recipe`), `get_dataset_spec`, `list_datasets`, `load_dataset`; `loaders` holds the loaders.
- `bundle`: `DatasetBundle`, what `load_dataset` returns, and the normalisation constants.
- `batches`: `TensorData`, the (seed, epoch) sample order, on-device crop and flip,
  `TensorBatches`, `DatasetBatches`, `make_loader`.
- `files`: split-file datasets, image folders (decoding and cache), the ImageNet transforms.
- `synthetic`: the procedural synthetic-lt images.

The names below are importable from `ltbench.data` itself. They are loaded on first use, so that
`ltbench.data.registry` and `ltbench.data.longtail` (which the configuration reads) can be
imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "longtail": (
        "PROFILES",
        "VAL_MIN_PER_CLASS",
        "check_imb_factor",
        "check_profile",
        "check_val_fraction",
        "class_counts",
        "classes_short_of_minimum",
        "long_tailed_counts",
        "long_tailed_indices",
        "split_validation",
        "validation_count",
    ),
    "registry": (
        "DATASETS",
        "DatasetSpec",
        "LoadRequest",
        "Recipe",
        "get_dataset_spec",
        "list_datasets",
        "load_dataset",
    ),
    "loaders": ("in_memory_bundle",),
    "bundle": ("CIFAR_MEAN", "CIFAR_STD", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetBundle"),
    "batches": (
        "SAMPLING_MODES",
        "DatasetBatches",
        "EpochSampler",
        "ShardedBatchSampler",
        "TensorBatches",
        "TensorData",
        "check_sampling",
        "class_balanced_weights",
        "crop_flip",
        "draw_crop_flip",
        "epoch_generator",
        "epoch_order",
        "make_loader",
        "normalize",
        "rank_share",
    ),
    "files": (
        "IMAGE_EXTENSIONS",
        "SplitFileDataset",
        "default_cache_dir",
        "imagenet_transform",
        "load_image_folder",
        "read_split_file",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
