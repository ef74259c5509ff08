"""The recipes of ltbench's datasets: the paper's Table 2 (CIFAR, ImageNet-LT, iNaturalist), and
the default recipe of data without a paper recipe, chosen by image size.

Data with no paper recipe (the generic `image-folder` and `split-files` kinds, and a plugin
that asks for it) gets the recipe of the paper's datasets whose images are alike:

- small images (at most SMALL_IMAGE_SIDE = 64 pixels on the longer side, CIFAR-like): CIFAR's
  recipe, ResNet-32 at the images' own size, 200 epochs, batch 64, lr 0.1 with 5 warm-up
  epochs and decays at 160 and 180, weight decay 2e-4;
- larger images: ImageNet-LT's, ResNet-50 on 224-pixel crops, 180 epochs, batch 128, lr 0.1,
  decays at 120 and 160, weight decay 1e-4.

Both use the data as it is (imb_factor 1); `--imb-factor` draws it long-tailed. Every value
can be set on the command line or in a suite as on any dataset; `ltbench train` prints the
recipe it chose (`Recipe.note`). Importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses

from ltbench.sdk.datasets import Recipe

CIFAR_RECIPE = Recipe(
    model="resnet32",
    batch_size=64,
    lr=0.1,
    weight_decay=2e-4,
    warmup_epochs=5,
    epochs=200,
    lr_decay_epochs=(160, 180),
    lr_decay_factor=0.01,
    imb_factor=0.01,
)
IMAGENET_RECIPE = Recipe(
    model="resnet50",
    batch_size=128,
    lr=0.1,
    weight_decay=1e-4,
    warmup_epochs=0,
    epochs=180,
    lr_decay_epochs=(120, 160),
    lr_decay_factor=0.1,
    imb_factor=1.0,  # already long-tailed: no further subsampling
)

SMALL_IMAGE_SIDE = 64  # pixels, the longer side: at most this, CIFAR's recipe


def recipe_for_images(size: tuple[int, int]) -> Recipe:
    """The default recipe for images of `size` (width, height), with a note saying so."""
    width, height = size
    small = max(width, height) <= SMALL_IMAGE_SIDE
    base = dataclasses.replace(CIFAR_RECIPE, imb_factor=1.0) if small else IMAGENET_RECIPE
    how = "CIFAR's recipe at the images' size" if small else "ImageNet-LT's, 224-pixel crops"
    note = (
        f"no paper recipe: {width}x{height} images, ltbench's default for "
        f"{'small' if small else 'large'} images ({how}): {base.model}, {base.epochs} epochs, "
        f"batch {base.batch_size}, lr {base.lr:g}, decays at "
        f"{','.join(map(str, base.lr_decay_epochs))}, weight decay {base.weight_decay:g}, "
        "the data as it is; flags and suite settings replace any of these (docs/DATASETS.md)"
    )
    return dataclasses.replace(base, note=note)


def recipe_for_images_default() -> Recipe:
    """What `ltbench list` shows for a generic kind before its data is seen: the small-image
    default (the recipe a run uses follows its images' size)."""
    recipe = recipe_for_images((SMALL_IMAGE_SIDE, SMALL_IMAGE_SIDE))
    return dataclasses.replace(recipe, note="by image size (docs/DATASETS.md)")
