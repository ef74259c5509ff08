"""The inputs of `ltbench bench train` (`ltbench.bench.train`) and of its pack side
(`ltbench.bench.packed`): random CIFAR-shaped images and the dataset bundle around them. Both
sides import them from here, so neither imports the other's module back."""

from __future__ import annotations

import torch

NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
# CIFAR-10-LT at rho = 100: the class counts the loss is built for (its margins depend on them)
CLASS_COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
DATA_SEED = 0


def cifar_shaped_images(n: int, seed: int = DATA_SEED):
    """`n` random uint8 images (n, 3, 32, 32) with labels cycling over the 10 classes."""
    from ltbench.data import TensorData

    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *IMAGE_SHAPE), generator=gen, dtype=torch.uint8)
    return TensorData(images, torch.arange(n) % NUM_CLASSES)


def bench_bundle(data):
    """The benchmark's images as a dataset bundle (CIFAR-10-LT's class counts for the loss)."""
    from ltbench.data import CIFAR_MEAN, CIFAR_STD, DatasetBundle

    return DatasetBundle(
        name="bench",
        num_classes=NUM_CLASSES,
        class_names=[str(c) for c in range(NUM_CLASSES)],
        cls_num_list=list(CLASS_COUNTS),
        train=data,
        val=None,
        test=data,
        image_size=IMAGE_SHAPE[-1],
        in_memory=True,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    )
