"""What `load_dataset` returns (`DatasetBundle`), and the per-channel normalisation constants.

No torch here: the splits a bundle holds are built by the loaders (`ltbench.data.loaders`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DatasetBundle:
    """Everything a training run needs to know about its data.

    `cls_num_list` counts the images actually trained on (after the long-tailed subset and the
    validation hold-out), in class order. `train`/`val`/`test` are `TensorData` when `in_memory`,
    else `SplitFileDataset`s; `val` is None without a validation split. The test split is never
    subsampled. `mean`/`std` are the per-channel normalisation constants. `val_source` says where
    the validation split came from: "" (none), "holdout" (held out of the training images by
    `split_validation`) or the split file read.
    """

    name: str
    num_classes: int
    class_names: list[str]
    cls_num_list: list[int]
    train: Any
    val: Any | None
    test: Any
    image_size: int
    in_memory: bool
    mean: tuple[float, float, float] = CIFAR_MEAN
    std: tuple[float, float, float] = CIFAR_STD
    imb_factor: float = 1.0
    profile: str = "exp"
    val_source: str = ""
