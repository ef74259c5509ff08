"""The loaders of the datasets held in arrays: `_load_synthetic`, `_load_cifar` (torchvision
pickles or image folders), and `in_memory_bundle`, which draws the long-tailed subset of any
pool of arrays (the generic kinds' small images too: `ltbench.data.kinds`).

Each takes the `LoadRequest` of `load_dataset` (the common settings, checked there already) and
its own keyword options, and returns a `DatasetBundle` (`in_memory_bundle` builds one from
arrays, for the built-in loaders and for a plugin's). torch and the file readers are imported
when a loader runs, so that the registry (and the configuration, which reads it) stays light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltbench.data import synthetic
from ltbench.data.bundle import CIFAR_MEAN, CIFAR_STD, DatasetBundle
from ltbench.data.draws import meta_source_of
from ltbench.data.longtail import (
    class_counts,
    draw_outside,
    first_per_class,
    long_tailed_indices,
    split_validation,
)
from ltbench.errors import LtbenchError


def in_memory_bundle(
    request,
    class_names,
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    mean,
    std,
    ids=None,
    val_set=None,
    pool_n_max: int | None = None,
) -> DatasetBundle:
    """The bundle of a dataset held in arrays: the long-tailed subset (`request.imb_factor`,
    `profile`, `subset_seed`) and the validation hold-out (`val_fraction`, `val_seed`) of a
    training pool. Images are uint8 arrays (N, 3, H, W), labels int64 (N,); `mean` and
    `std` normalise the channels. `request` is the loader's `ltbench.sdk.datasets.LoadRequest`;
    its `extra_per_class` images per class are drawn from the images the long-tailed draw left
    out (`longtail.draw_outside`), into `bundle.extra`.

    `ids`: each pool image's identity (`ltbench.data.draws`; default `<class>/<index>`).
    `val_set`: (images, labels, ids, source) of a validation split of its own, used instead of
    a hold-out when the run asks for validation. `pool_n_max`: the n_max of the long-tailed
    counts (default: pool size // classes, CIFAR's 5000). With `request.draw`, the subsets are
    the draw file's, in its order, and nothing is drawn."""
    import torch

    from ltbench.data.batches import TensorData

    num_classes = len(class_names)
    if ids is None:
        ids = [f"{class_names[int(y)]}/{i}" for i, y in enumerate(train_y)]
    pool = TensorData(torch.from_numpy(train_x), torch.from_numpy(train_y), ids)
    extra, from_draw, val = None, (), None
    if request.draw is not None:
        train, val, extra = _subsets_of_draw(request, pool, val_set)
    else:
        kept, _ = long_tailed_indices(
            train_y, request.imb_factor, request.subset_seed, request.profile, n_max=pool_n_max
        )
        if request.extra_per_class > 0:  # before the validation hold-out, which `kept` feeds
            kept, chosen, from_draw = draw_outside(
                train_y, kept, request.extra_per_class, request.val_seed
            )
            extra = pool.subset(chosen)
        train = pool.subset(kept)
        if val_set is not None:  # the kind found one: asked for, or named by val_split
            val = TensorData(*(torch.from_numpy(a) for a in val_set[:2]), val_set[2])
        elif request.val_fraction > 0:
            train_pos, val_pos = split_validation(
                train.labels, request.val_fraction, request.val_seed
            )
            train, val = train.subset(train_pos), train.subset(val_pos)
    test = TensorData(torch.from_numpy(np.ascontiguousarray(test_x)), torch.from_numpy(test_y))
    val_source = "" if val is None else (val_set[3] if val_set is not None else "holdout")
    return DatasetBundle(
        name=request.name,
        num_classes=num_classes,
        class_names=list(class_names),
        cls_num_list=class_counts(train.labels, num_classes),
        train=train,
        val=val,
        test=test,
        image_size=int(train_x.shape[-1]),
        in_memory=True,
        mean=tuple(mean),
        std=tuple(std),
        imb_factor=request.imb_factor,
        profile=request.profile,
        val_source=val_source,
        extra=extra,
        extra_from_draw=tuple(from_draw),
        extra_source=meta_source_of(request.draw) if request.draw and extra is not None else "",
    )


def _subsets_of_draw(request, pool, val_set):
    """(train, val, extra) of a draw file (`request.draw`) on images in memory; a validation
    split of the dataset's own (`val_set`, arrays) where it has one."""
    import torch

    from ltbench.data.batches import TensorData
    from ltbench.data.draws import subsets_of_draw

    own = None
    if val_set is not None and request.draw.ids("val") is not None:
        own = TensorData(*(torch.from_numpy(a) for a in val_set[:2]), val_set[2])
    return subsets_of_draw(request.draw, pool, own, meta_per_class=request.extra_per_class)


def _load_synthetic(request, n_test_max=None) -> DatasetBundle:
    n_train = request.n_max or synthetic.DEFAULT_TRAIN_PER_CLASS
    n_test = n_test_max or synthetic.DEFAULT_TEST_PER_CLASS
    train_x, train_y = synthetic.generate("train", n_train)
    test_x, test_y = synthetic.generate("test", n_test)
    return in_memory_bundle(
        request, synthetic.CLASS_NAMES, train_x, train_y, test_x, test_y,
        mean=synthetic.MEAN, std=synthetic.STD,
    )  # fmt: skip


_CIFAR = {
    "cifar10-lt": ("CIFAR10", "cifar-10-batches-py", 10),
    "cifar100-lt": ("CIFAR100", "cifar-100-python", 100),
}

# CIFAR's class names in label order (the order of torchvision's `classes`, which is sorted):
# the names an image-folder copy must use, so that sorted folder names give CIFAR's labels.
CIFAR_CLASSES = {
    "cifar10-lt": ("airplane automobile bird cat deer dog frog horse ship truck".split()),
    "cifar100-lt": (
        "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
        "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach "
        "couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster "
        "house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree "
        "motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear "
        "pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket "
        "rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar "
        "sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip "
        "turtle wardrobe whale willow_tree wolf woman worm"
    ).split(),
}


def _load_cifar(request, n_test_max=None, cache_dir=None) -> DatasetBundle:
    from ltbench.data.files import load_image_folder, read_image_folder

    name, root, download, n_max = request.name, request.root, request.download, request.n_max

    tv_class = _CIFAR[name][0]
    source = _check_cifar(name, root=root, download=download)
    root = Path(root).expanduser()
    if source == "folders":
        class_names, train_x, train_y, ids = read_image_folder(root / "train", n_max, cache_dir)
        _, test_x, test_y = load_image_folder(root / "test", n_test_max, cache_dir)
    else:
        import torchvision

        try:
            tv_train = getattr(torchvision.datasets, tv_class)(root, train=True, download=download)
            tv_test = getattr(torchvision.datasets, tv_class)(root, train=False, download=download)
        except RuntimeError as exc:  # torchvision: missing or corrupt files
            raise LtbenchError(f"{name}: cannot read CIFAR under {root}: {exc}") from None
        class_names = list(tv_train.classes)
        train_y_all = np.asarray(tv_train.targets, dtype=np.int64)
        test_y_all = np.asarray(tv_test.targets, dtype=np.int64)
        keep = first_per_class(train_y_all, n_max)
        keep_test = first_per_class(test_y_all, n_test_max)
        train_x = np.ascontiguousarray(tv_train.data[keep].transpose(0, 3, 1, 2))
        test_x = np.ascontiguousarray(tv_test.data[keep_test].transpose(0, 3, 1, 2))
        train_y, test_y = train_y_all[keep], test_y_all[keep_test]
        # an image's identity: its index in torchvision's training set
        ids = [f"{class_names[int(y)]}/{k}" for k, y in zip(keep, train_y, strict=True)]
    return in_memory_bundle(
        request,
        class_names,
        train_x,
        train_y,
        test_x,
        test_y,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        ids=ids,
    )


def _check_cifar(name, *, root, download, **_) -> str:
    """Where CIFAR is read from under `root`: "folders" (train/ and test/ with one folder per
    class) or "pickles" (torchvision's files, or download them); a one-line error if neither.
    Lists folders only: no image is read."""
    _, pickle_dir, num_classes = _CIFAR[name]
    if root is None:
        raise LtbenchError(f"dataset {name!r} needs its folder: pass --data-root DIR")
    root = Path(root).expanduser()
    folder = root / "train", root / "test"
    if folder[0].is_dir() and folder[1].is_dir():
        for split_dir in folder:
            found = [p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if len(found) != num_classes:
                raise LtbenchError(
                    f"{name}: {split_dir} has {len(found)} class folders, expected {num_classes}"
                )
        from ltbench.data.files import check_class_names, check_same_classes

        check_same_classes(*folder)
        check_class_names(folder[0], CIFAR_CLASSES[name], f"{name}'s")
        return "folders"
    if (root / pickle_dir).is_dir() or download:
        return "pickles"
    raise LtbenchError(
        f"{name}: no CIFAR data under {root}: expected {root / pickle_dir} (torchvision "
        f"pickles) or {root}/train/<class>/ and {root}/test/<class>/ image folders; "
        "download=True fetches the pickles"
    )
