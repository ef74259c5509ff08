"""The two generic kinds of dataset: split files and image folders, with any number of classes.

- `SplitFiles`: `relative/path label` lines for train, test and (optionally) val, with the
  images under the dataset's folder (or `image_root`). ImageNet-LT and iNaturalist 2018 are
  instances with their published file names (`published=True`: long-tailed as published, used
  as they are); the generic `split-files` dataset reads `train.txt`, `test.txt`, `val.txt`.
- `ImageFolder`: `train/<class>/<image>`, `test/<class>/<image>`, optionally `val/<class>/...`;
  labels follow the sorted class names.

A generic dataset is used as it is (imb_factor 1, its own imbalance) or drawn long-tailed with
`--imb-factor` (the largest class's count as n_max, classes in label order: the head is the
first class). Small images (at most `SMALL_IMAGE_SIDE` pixels a side, read from the first
training image's header) are decoded into memory at their size, as CIFAR is; larger ones are
read from disk with the ImageNet pipeline (`image_size` crops, 224 by default). With a
validation fraction, a dataset's own validation split (val.txt, val/) is used where present,
else images are held out of the training split. The default recipe of data without a paper
recipe follows the image size too (`ltbench.data.recipes.recipe_for_images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ltbench.data.bundle import IMAGENET_MEAN, IMAGENET_STD, DatasetBundle
from ltbench.data.draws import meta_source_of, subsets_of_draw
from ltbench.data.longtail import (
    class_counts,
    first_per_class,
    long_tailed_indices,
    split_validation,
)
from ltbench.data.recipes import SMALL_IMAGE_SIDE, recipe_for_images
from ltbench.errors import LtbenchError

DEFAULT_IMAGE_SIZE = 224


def _need_root(name: str, root) -> Path:
    if root is None:
        raise LtbenchError(f"dataset {name!r} needs its folder: pass --data-root DIR")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise LtbenchError(f"{name}: root folder not found: {path}")
    return path


def _resolve(root: Path, given, default: str | None, what: str, name: str) -> Path:
    path = Path(given).expanduser() if given is not None else Path(str(default))
    if not path.is_absolute():
        path = root / path
    if not path.is_file():
        raise LtbenchError(f"{name}: {what} split file not found: {path}")
    return path


@dataclass(frozen=True)
class Pools:
    """What a generic kind found on disk: the training pool, the test split and the dataset's
    own validation split (None without one), as `SplitFileDataset`s without transforms."""

    train: Any
    test: Any
    val: Any | None
    val_source: str
    class_names: list[str]


def build_bundle(request, pools: Pools, *, image_size: int | None, published: bool, cache_dir=None):
    """The bundle of a generic kind: in memory for small images (`image_size` None and the first
    image at most SMALL_IMAGE_SIDE a side; decoded through the cache in `cache_dir`, False:
    none), else read from disk with `image_size` crops. `pools.val`, where the kind found one
    (asked for by val_fraction > 0, or named by `val_split`), is the validation split."""
    if image_size is None and max(_image_side(pools.train)) <= SMALL_IMAGE_SIDE:
        return _memory_bundle(request, pools, cache_dir)
    return _file_bundle(request, pools, image_size or DEFAULT_IMAGE_SIZE, published)


def _image_side(ds) -> tuple[int, int]:
    from ltbench.data.files import image_size

    return image_size(ds.image_root / ds.paths[0])


def _decode(ds, name: str, cache_dir) -> np.ndarray:
    from ltbench.data.files import decode_images

    files = [ds.image_root / p for p in ds.paths]
    stamps = sorted({str(f.parent) for f in files})
    key = [str(ds.image_root), ds.paths] + [Path(d).stat().st_mtime_ns for d in stamps]
    return decode_images(files, f"{name}-{len(files)}", key, cache_dir)


def _memory_bundle(request, pools: Pools, cache_dir=None) -> DatasetBundle:
    from ltbench.data.loaders import in_memory_bundle

    keep = first_per_class(pools.train.labels.numpy(), request.n_max)
    train = pools.train.subset(keep)
    labels = train.labels.numpy()
    val_set = None
    if pools.val is not None:
        val_set = (
            _decode(pools.val, request.name, cache_dir),
            pools.val.labels.numpy(),
            list(pools.val.paths),
            pools.val_source,
        )
    return in_memory_bundle(
        request,
        pools.class_names,
        _decode(train, request.name, cache_dir),
        labels,
        _decode(pools.test, request.name, cache_dir),
        pools.test.labels.numpy(),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        ids=list(train.paths),
        val_set=val_set,
        pool_n_max=int(np.bincount(labels).max()),
    )


def _file_bundle(request, pools: Pools, image_size: int, published: bool) -> DatasetBundle:
    from ltbench.data.files import imagenet_transform

    train_tf, eval_tf = imagenet_transform(True, image_size), imagenet_transform(False, image_size)
    pool = pools.train.subset(first_per_class(pools.train.labels.numpy(), request.n_max))
    pool.transform = train_tf
    own_val = pools.val.subset(range(len(pools.val)), eval_tf) if pools.val is not None else None
    val, val_source, meta = None, "", None
    if request.draw is not None:
        train, val, meta = subsets_of_draw(
            request.draw,
            pool,
            own_val,
            meta_per_class=request.extra_per_class,
            val_transform=eval_tf,
        )
        val_source = "" if val is None else (pools.val_source if own_val else "holdout")
    else:
        train = pool
        if not published:  # drawn long-tailed (imb_factor < 1) or kept whole, class by class
            labels = pool.labels.numpy()
            n_max = int(np.bincount(labels).max())
            kept, _ = long_tailed_indices(
                labels, request.imb_factor, request.subset_seed, request.profile, n_max=n_max
            )
            train = pool.subset(kept)
        if own_val is not None:
            val, val_source = own_val, pools.val_source
        elif request.val_fraction > 0:
            train_pos, val_pos = split_validation(
                train.labels, request.val_fraction, request.val_seed
            )
            train, val = train.subset(train_pos), train.subset(val_pos, transform=eval_tf)
            val_source = "holdout"
    test = pools.test.subset(range(len(pools.test)), eval_tf)
    num_classes = len(pools.class_names)
    return DatasetBundle(
        name=request.name,
        num_classes=num_classes,
        class_names=list(pools.class_names),
        cls_num_list=class_counts(train.labels, num_classes),
        train=train,
        val=val,
        test=test,
        image_size=image_size,
        in_memory=False,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        imb_factor=request.imb_factor,
        profile=request.profile,
        val_source=val_source,
        extra=meta,
        extra_source=meta_source_of(request.draw) if meta is not None else "",
    )


def _check_labels(name: str, num_classes: int, splits) -> None:
    for split_name, ds in splits:
        if ds is not None and len(ds) and int(ds.labels.max()) >= num_classes:
            raise LtbenchError(
                f"{name}: {split_name} split has label {int(ds.labels.max())}, "
                f"but the train split only {num_classes} classes"
            )


def _check_draw_settings(name, imb_factor, n_max, download, published) -> None:
    if published and imb_factor != 1.0:
        raise LtbenchError(
            f"{name} is long-tailed already and is used as published: imb_factor must be 1, "
            f"got {imb_factor!r}"
        )
    if published and n_max is not None:
        raise LtbenchError(f"{name}: n_max is not supported (the split files fix the images)")
    if download:
        raise LtbenchError(f"{name} cannot be downloaded by ltbench; point root at a local copy")


@dataclass(frozen=True)
class SplitFiles:
    """A split-file dataset's loader, checks and default recipe (an instance per dataset).

    train_file / test_file / val_file: the split files' names under the dataset's folder
    (val_file None: the dataset has no validation list; the options `train_split`,
    `test_split`, `val_split` name others). published: long-tailed as published (imb_factor
    must be 1, no n_max, the file order kept). image_size: the crop side of the ImageNet
    pipeline (None: by the images' size, small ones held in memory)."""

    train_file: str = "train.txt"
    test_file: str = "test.txt"
    val_file: str | None = "val.txt"
    published: bool = False
    image_size: int | None = None

    def paths(
        self, name, *, root, imb_factor, n_max, download, val_fraction,
        train_split=None, test_split=None, val_split=None,
    ) -> tuple[Path, Path, Path, Path | None]:  # fmt: skip
        """(root, train, test and validation split files) after the checks of the settings
        and that the files exist; the validation file only with val_fraction > 0."""
        _check_draw_settings(name, imb_factor, n_max, download, self.published)
        root = _need_root(name, root)
        if val_split is not None and val_fraction > 0:
            raise LtbenchError(f"{name}: give val_split or val_fraction, not both")
        train = _resolve(root, train_split, self.train_file, "train", name)
        test = _resolve(root, test_split, self.test_file, "test", name)
        val = None
        if val_split is not None:
            val = _resolve(root, val_split, None, "val", name)
        elif val_fraction > 0 and self.val_file and (root / self.val_file).is_file():
            val = root / self.val_file
        return root, train, test, val

    def check(self, name, *, image_root=None, image_size=None, **settings) -> None:
        """The checks of `paths`, and every line of the split files read (no image opened)."""
        from ltbench.data.files import read_split_file

        for path in self.paths(name, **settings)[1:]:
            if path is not None:
                read_split_file(path)

    def recipe_for(self, root, image_root=None):
        """The default recipe for this dataset's images (generic instances only)."""
        from ltbench.data.files import image_size, read_split_file

        root = _need_root("split-files", root)
        first = read_split_file(_resolve(root, None, self.train_file, "train", "split-files"))[0]
        base = Path(image_root).expanduser() if image_root is not None else root
        return recipe_for_images(image_size(base / first[0]))

    def __call__(
        self, request, train_split=None, test_split=None, val_split=None,
        image_root=None, image_size=None, cache_dir=None,
    ) -> DatasetBundle:  # fmt: skip
        from ltbench.data.files import SplitFileDataset

        name = request.name
        root, train_path, test_path, val_path = self.paths(
            name, root=request.root, imb_factor=request.imb_factor, n_max=request.n_max,
            download=request.download, val_fraction=request.val_fraction,
            train_split=train_split, test_split=test_split, val_split=val_split,
        )  # fmt: skip
        base = Path(image_root).expanduser() if image_root is not None else root
        train = SplitFileDataset.from_split_file(base, train_path)
        first = base / train.paths[0]
        if not first.is_file():
            raise LtbenchError(
                f"{name}: image {first} (first entry of {train_path}) not found; "
                "is image_root right?"
            )
        test = SplitFileDataset.from_split_file(base, test_path)
        val = SplitFileDataset.from_split_file(base, val_path) if val_path else None
        num_classes = int(train.labels.max()) + 1
        _check_labels(name, num_classes, (("test", test), ("val", val)))
        pools = Pools(train, test, val, str(val_path or ""), _split_class_names(train, num_classes))
        size = image_size if image_size is not None else self.image_size
        return build_bundle(
            request, pools, image_size=size, published=self.published, cache_dir=cache_dir
        )


def _split_class_names(train, num_classes: int) -> list[str]:
    """Split files carry no class names; the folder holding a class's first image is the best
    available (a WordNet id on ImageNet, a category id on iNaturalist), else the label."""
    names = [str(c) for c in range(num_classes)]
    named: set[int] = set()
    for rel, label in zip(train.paths, train.labels.tolist(), strict=True):
        if label not in named:
            named.add(label)
            names[label] = Path(rel).parent.name or str(label)
    return names


@dataclass(frozen=True)
class ImageFolder:
    """The image-folder kind's loader, checks and default recipe: `train/<class>/<image>`,
    `test/<class>/<image>`, optionally `val/<class>/<image>`, labels by sorted class name."""

    def folders(self, name, *, root, imb_factor, n_max, download, val_fraction, **_):
        """(train, test, val or None) folders after the checks: they exist, hold images and
        the same class folders."""
        from ltbench.data.files import check_same_classes

        _check_draw_settings(name, imb_factor, n_max, download, False)
        root = _need_root(name, root)
        train, test, val = root / "train", root / "test", root / "val"
        for folder in (train, test):
            if not folder.is_dir():
                raise LtbenchError(
                    f"{name}: {folder} not found; expected {root}/train/<class>/<image> and "
                    f"{root}/test/<class>/<image> (and optionally {root}/val/<class>/<image>)"
                )
        check_same_classes(train, test)
        if val.is_dir() and val_fraction > 0:
            check_same_classes(train, val)
            return train, test, val
        return train, test, None

    def check(self, name, *, image_size=None, **settings) -> None:
        self.folders(name, **settings)

    def recipe_for(self, root, image_root=None):
        from ltbench.data.files import image_size

        return recipe_for_images(image_size(_listed(_need_root("image-folder", root) / "train")[0]))

    def __call__(self, request, image_size=None, cache_dir=None) -> DatasetBundle:
        from ltbench.data.files import SplitFileDataset

        train_dir, test_dir, val_dir = self.folders(
            request.name, root=request.root, imb_factor=request.imb_factor,
            n_max=request.n_max, download=request.download, val_fraction=request.val_fraction,
        )  # fmt: skip
        classes = sorted(p.name for p in train_dir.iterdir() if _is_class(p))
        label = {c: i for i, c in enumerate(classes)}

        def split(folder: Path):  # paths (and so identities) relative to the dataset's folder
            files = _listed(folder)
            rel = [f"{folder.name}/{f.parent.name}/{f.name}" for f in files]
            return SplitFileDataset(folder.parent, rel, [label[f.parent.name] for f in files])

        val = split(val_dir) if val_dir is not None else None
        pools = Pools(split(train_dir), split(test_dir), val, str(val_dir or ""), classes)
        return build_bundle(
            request, pools, image_size=image_size, published=False, cache_dir=cache_dir
        )


def _is_class(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _listed(folder: Path) -> list[Path]:
    """The images of `folder/<class>/`, classes by name, files by name; one-line error if none."""
    from ltbench.data.files import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise LtbenchError(
            f"{folder} not found; expected {folder}/<class>/<image> (docs/DATASETS.md)"
        )
    files = [
        f
        for c in sorted(p for p in folder.iterdir() if _is_class(p))
        for f in sorted(c.iterdir())
        if f.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise LtbenchError(f"no images found under {folder} (expected {folder}/<class>/*.jpg)")
    return files
