"""The loader of each dataset in the registry: `_load_synthetic`, `_load_cifar` (torchvision
pickles or image folders) and `_load_split_files` (ImageNet-LT, iNaturalist 2018).

Each takes the `LoadRequest` of `load_dataset` (the common settings, checked there already) and
its own keyword options, and returns a `DatasetBundle` (`in_memory_bundle` builds one from
arrays, for the built-in loaders and for a plugin's). torch and the file readers are imported
when a loader runs, so that the registry (and the configuration, which reads it) stays light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ltbench.data import synthetic
from ltbench.data.bundle import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, DatasetBundle
from ltbench.data.longtail import (
    class_counts,
    draw_outside,
    long_tailed_indices,
    split_validation,
)
from ltbench.errors import LtbenchError


def _first_per_class(labels: np.ndarray, n_max: int | None) -> np.ndarray:
    """Positions of the first `n_max` images of each class, in their original order."""
    if n_max is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        keep[np.where(labels == cls)[0][:n_max]] = True
    return np.where(keep)[0]


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
) -> DatasetBundle:
    """The bundle of a dataset held in arrays: the long-tailed subset (`request.imb_factor`,
    `profile`, `subset_seed`) and the validation hold-out (`val_fraction`, `val_seed`) of a
    balanced training set. Images are uint8 arrays (N, 3, H, W), labels int64 (N,); `mean` and
    `std` normalise the channels. `request` is the loader's `ltbench.sdk.datasets.LoadRequest`;
    its `extra_per_class` images per class are drawn from the images the long-tailed draw left
    out (`longtail.draw_outside`), into `bundle.extra`."""
    import torch

    from ltbench.data.batches import TensorData

    name, imb_factor, profile = request.name, request.imb_factor, request.profile
    subset_seed, val_fraction, val_seed = (
        request.subset_seed,
        request.val_fraction,
        request.val_seed,
    )

    num_classes = len(class_names)
    kept, _ = long_tailed_indices(train_y, imb_factor, subset_seed, profile)
    extra, from_draw = None, ()
    if request.extra_per_class > 0:  # before the validation hold-out, which `kept` feeds
        kept, chosen, from_draw = draw_outside(train_y, kept, request.extra_per_class, val_seed)
        extra = TensorData(torch.from_numpy(train_x[chosen]), torch.from_numpy(train_y[chosen]))
    train = TensorData(torch.from_numpy(train_x[kept]), torch.from_numpy(train_y[kept]))
    val = None
    if val_fraction > 0:
        train_pos, val_pos = split_validation(train.labels, val_fraction, val_seed)
        train, val = train.subset(train_pos), train.subset(val_pos)
    test = TensorData(torch.from_numpy(np.ascontiguousarray(test_x)), torch.from_numpy(test_y))
    return DatasetBundle(
        name=name,
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
        imb_factor=imb_factor,
        profile=profile,
        val_source="holdout" if val is not None else "",
        extra=extra,
        extra_from_draw=tuple(from_draw),
    )


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
    from ltbench.data.files import load_image_folder

    name, root, download, n_max = request.name, request.root, request.download, request.n_max

    tv_class = _CIFAR[name][0]
    source = _check_cifar(name, root=root, download=download)
    root = Path(root).expanduser()
    if source == "folders":
        folder = root / "train", root / "test"
        splits = [
            load_image_folder(split_dir, limit, cache_dir)
            for split_dir, limit in zip(folder, (n_max, n_test_max), strict=True)
        ]
        (class_names, train_x, train_y), (_, test_x, test_y) = splits
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
        keep = _first_per_class(train_y_all, n_max)
        keep_test = _first_per_class(test_y_all, n_test_max)
        train_x = np.ascontiguousarray(tv_train.data[keep].transpose(0, 3, 1, 2))
        test_x = np.ascontiguousarray(tv_test.data[keep_test].transpose(0, 3, 1, 2))
        train_y, test_y = train_y_all[keep], test_y_all[keep_test]
    return in_memory_bundle(
        request, class_names, train_x, train_y, test_x, test_y, mean=CIFAR_MEAN, std=CIFAR_STD
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


_SPLIT_FILES = {
    "imagenet-lt": ("ImageNet_LT_train.txt", "ImageNet_LT_test.txt"),
    "inat2018": ("iNaturalist18_train.txt", "iNaturalist18_val.txt"),
}
# The official validation split, balanced (ImageNet-LT: 20 images per class, disjoint from the
# training and test files). With val_fraction > 0 it is the validation split when ROOT holds it,
# and no training image is held out; iNaturalist's val file is its test set, so it has none.
_VAL_FILES = {"imagenet-lt": "ImageNet_LT_val.txt"}


def _resolve_split(root: Path, given, default: str, what: str, name: str) -> Path:
    path = Path(given).expanduser() if given is not None else Path(default)
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise LtbenchError(f"{name}: {what} split file not found: {path}")
    return path


def _split_paths(
    name,
    *,
    root,
    imb_factor,
    n_max,
    download,
    val_fraction,
    train_split=None,
    test_split=None,
    val_split=None,
) -> tuple[Path, Path, Path]:
    """(root, train split file, test split file) of a split-file dataset, after the checks of
    its settings and that the files exist."""
    if imb_factor != 1.0:
        raise LtbenchError(
            f"{name} is long-tailed already and is used as published: imb_factor must be 1, "
            f"got {imb_factor!r}"
        )
    if n_max is not None:
        raise LtbenchError(f"{name}: n_max is not supported (the split files fix the images)")
    if download:
        raise LtbenchError(f"{name} cannot be downloaded by ltbench; point root at a local copy")
    if root is None:
        raise LtbenchError(f"dataset {name!r} needs its folder: pass --data-root DIR")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LtbenchError(f"{name}: root folder not found: {root}")
    if val_split is not None and val_fraction > 0:
        raise LtbenchError(f"{name}: give val_split or val_fraction, not both")
    train_file, test_file = _SPLIT_FILES[name]
    train_path = _resolve_split(root, train_split, train_file, "train", name)
    test_path = _resolve_split(root, test_split, test_file, "test", name)
    return root, train_path, test_path


def _check_split_files(name, *, image_root=None, image_size=224, **settings) -> None:
    """The checks of `_split_paths`, and every line of the split files read (no image opened)."""
    from ltbench.data.files import read_split_file

    root, train_path, test_path = _split_paths(name, **settings)
    read_split_file(train_path)
    read_split_file(test_path)
    if settings.get("val_split") is not None:
        read_split_file(_resolve_split(root, settings["val_split"], "", "val", name))


def _load_split_files(
    request,
    train_split=None,
    test_split=None,
    val_split=None,
    image_root=None,
    image_size=224,
) -> DatasetBundle:
    from ltbench.data.files import SplitFileDataset, imagenet_transform

    name, root, imb_factor, n_max = request.name, request.root, request.imb_factor, request.n_max
    download, val_fraction, val_seed = request.download, request.val_fraction, request.val_seed
    profile = request.profile

    root, train_path, test_path = _split_paths(
        name,
        root=root,
        imb_factor=imb_factor,
        n_max=n_max,
        download=download,
        val_fraction=val_fraction,
        train_split=train_split,
        test_split=test_split,
        val_split=val_split,
    )
    image_root = Path(image_root).expanduser() if image_root is not None else root

    train_tf, eval_tf = imagenet_transform(True, image_size), imagenet_transform(False, image_size)
    train = SplitFileDataset.from_split_file(image_root, train_path, train_tf)
    test = SplitFileDataset.from_split_file(image_root, test_path, eval_tf)
    first = image_root / train.paths[0]
    if not first.is_file():
        raise LtbenchError(
            f"{name}: image {first} (first entry of {train_path}) not found; is image_root right?"
        )
    val, val_source = None, ""
    official = root / _VAL_FILES[name] if name in _VAL_FILES else None
    if val_split is None and val_fraction > 0 and official is not None and official.is_file():
        val_split = official
    if val_split is not None:
        val_path = _resolve_split(root, val_split, "", "val", name)
        val = SplitFileDataset.from_split_file(image_root, val_path, eval_tf)
        val_source = str(val_path)
    elif val_fraction > 0:
        train_pos, val_pos = split_validation(train.labels, val_fraction, val_seed)
        train, val = train.subset(train_pos), train.subset(val_pos, transform=eval_tf)
        val_source = "holdout"
    num_classes = int(train.labels.max()) + 1
    for split_name, ds in (("test", test), ("val", val)):
        if ds is not None and int(ds.labels.max()) >= num_classes:
            raise LtbenchError(
                f"{name}: {split_name} split has label {int(ds.labels.max())}, "
                f"but the train split only {num_classes} classes"
            )
    # split files carry no class names; the folder holding a class's first image is the best
    # available (a WordNet id on ImageNet, a category id on iNaturalist)
    class_names = [str(c) for c in range(num_classes)]
    named = set()
    for rel, label in zip(train.paths, train.labels.tolist(), strict=True):
        if label not in named:
            named.add(label)
            parent = Path(rel).parent.name
            class_names[label] = parent or str(label)
    return DatasetBundle(
        name=name,
        num_classes=num_classes,
        class_names=class_names,
        cls_num_list=class_counts(train.labels, num_classes),
        train=train,
        val=val,
        test=test,
        image_size=image_size,
        in_memory=False,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        imb_factor=1.0,
        profile=profile,
        val_source=val_source,
    )
