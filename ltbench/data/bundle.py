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
# Random-crop padding of in-memory training images, as a fraction of the side: CIFAR's 4 pixels
# on 32 (Krizhevsky-style crop of the LDAM-DRW and KPS code). A 16 x 16 image gets 2 pixels, the
# same relative shift; 4 pixels would move a 16 x 16 shape by up to a quarter of the image.
CROP_PADDING_FRACTION = 1 / 8


@dataclass
class DatasetBundle:
    """Everything a training run needs to know about its data.

    `cls_num_list` counts the images actually trained on (after the long-tailed subset and the
    validation hold-out), in class order. `train`/`val`/`test` are `TensorData` when `in_memory`,
    else `SplitFileDataset`s; `val` is None without a validation split. The test split is never
    subsampled. `mean`/`std` are the per-channel normalisation constants. `val_source` says where
    the validation split came from: "" (none), "holdout" (held out of the training images by
    `split_validation`) or the split file read. `extra` holds the images asked for with
    `extra_per_class`, drawn from the training pool outside the long-tailed subset (so they
    are neither trained on nor in the validation split); None when none were asked for or the
    dataset has none to spare; `extra_from_draw` counts, per class, those of them that a class
    whose images the draw used up gave from its drawn images (CIFAR's head class).
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
    extra: Any | None = None
    extra_from_draw: tuple[int, ...] = ()
    extra_source: str = ""  # where `extra` came from when not drawn here (a draw file's meta set)

    @property
    def crop_padding(self) -> int:
        """Zero padding (pixels) of the training random crop: `CROP_PADDING_FRACTION` of the side,
        at least 1 (4 on CIFAR's 32 x 32, 2 on synthetic-lt's 16 x 16)."""
        return max(1, round(self.image_size * CROP_PADDING_FRACTION))
