"""Which images a run trained on: the identity of each image, the fingerprint of a subset, and
draw files that carry a draw from one machine to another.

An image's identity is a string that names it within its dataset's training pool, whatever the
pixels: the path relative to the dataset's folder for files (`train/cat/0042.jpg`, ImageNet-LT's
`train/n01440764/n01440764_190.JPEG`), `<class>/<index in the source's training set>` for a
dataset read from arrays (CIFAR's torchvision pickles, synthetic-lt). Identities are comparable
between runs that read the same source: the image-folder copy of CIFAR and its pickles name
their images differently, so their fingerprints differ even where the draw is the same images
(docs/DATASETS.md).

The fingerprint of a subset is the SHA-256 of its identities, sorted, one per line (UTF-8, `\\n`
between them): two runs with the same fingerprint trained on the same images, in whatever order.
result.json records one for the training, validation and meta subsets (`fingerprints`).

A draw file (`ltbench draw RUN --out FILE`, JSON) holds the training, validation and meta
subsets of a run in the run's own order, with the settings that drew them and their
fingerprints; `ltbench train --draw FILE` trains on exactly those images: the same tensors in
the same order, so a run with the same seed reproduces the first bit for bit. This module needs
no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltbench.errors import LtbenchError

DRAW_FORMAT = "ltbench-draw/1"
SUBSETS = ("train", "val", "meta")
# the data settings a draw was made with: a run on the draw must ask for the same ones, so
# that its record (rho, profile, ...) says what the images are
DRAW_SETTINGS = ("imb_factor", "profile", "subset_seed", "n_max", "val_fraction")
# result.json `meta_set.source` of a meta set a draw file gave (then the file and, where the
# file says it, how the run that wrote it drew it)
META_FROM_DRAW = "the meta set of the draw file"


def fingerprint(ids: Sequence[str] | None) -> str | None:
    """SHA-256 (hex) of the identities, sorted, joined by newlines; None for no subset."""
    if ids is None:
        return None
    text = "\n".join(sorted(str(i) for i in ids))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def subset_ids(split: Any) -> list[str] | None:
    """The identities of a split's images in its order (None: no split, or none recorded)."""
    if split is None:
        return None
    ids = getattr(split, "ids", None)
    return None if ids is None else [str(i) for i in ids]


def short(digest: str | None, n: int = 12) -> str:
    """The first `n` hex digits of a fingerprint ("" for None): what tables show."""
    return digest[:n] if digest else ""


@dataclass(frozen=True)
class Draw:
    """A draw read from a file: the subsets' identities in their run's order."""

    path: str
    dataset: str
    settings: dict[str, Any]
    subsets: dict[str, list[str] | None] = field(default_factory=dict)
    meta_source: str = ""  # how the run that wrote the file drew its meta set

    def ids(self, subset: str) -> list[str] | None:
        return self.subsets.get(subset)


def meta_source_of(draw: Draw) -> str:
    """result.json's `meta_set.source` of a meta set taken from `draw`."""
    how = f" (drawn there as {draw.meta_source})" if draw.meta_source else ""
    return f"{META_FROM_DRAW} {draw.path}{how}"


def write_draw(
    path: str | os.PathLike,
    dataset: str,
    settings: dict[str, Any],
    subsets,
    meta_source: str = "",
) -> Path:
    """Write a draw file: `subsets` maps "train", "val", "meta" to identity lists (or None);
    `meta_source` says how the meta set was drawn. Refuses to overwrite an existing file (a
    draw someone shared is a record)."""
    path = Path(path).expanduser()
    if path.exists():
        raise LtbenchError(f"draw file {path} exists already; choose another --out")
    record = {
        "format": DRAW_FORMAT,
        "dataset": dataset,
        "settings": {k: settings.get(k) for k in DRAW_SETTINGS},
        "fingerprints": {k: fingerprint(subsets.get(k)) for k in SUBSETS},
        "meta_source": meta_source,
        **{k: subsets.get(k) for k in SUBSETS},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_draw(path: str | os.PathLike) -> Draw:
    """Read and check a draw file: its format, and that each subset's identities give the
    fingerprint the file records (a hand-edited or truncated file is refused)."""
    path = Path(path).expanduser()
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LtbenchError(f"cannot read draw file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LtbenchError(
            f"draw file {path} is not JSON (write one with `ltbench draw`)"
        ) from None
    if not isinstance(record, dict) or record.get("format") != DRAW_FORMAT:
        raise LtbenchError(f"{path} is not an ltbench draw file (format {DRAW_FORMAT!r})")
    subsets: dict[str, list[str] | None] = {}
    prints = record.get("fingerprints")
    if not isinstance(prints, dict):
        raise LtbenchError(f"draw file {path} has no fingerprints (write one with `ltbench draw`)")
    for name in SUBSETS:
        ids = record.get(name)
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            raise LtbenchError(f"draw file {path}: {name!r} must be a list of image identities")
        if fingerprint(ids) != prints.get(name):
            raise LtbenchError(
                f"draw file {path}: the {name} subset does not match its fingerprint "
                "(the file was changed after `ltbench draw` wrote it)"
            )
        subsets[name] = ids
    if not subsets["train"]:
        raise LtbenchError(f"draw file {path} has no training images")
    settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
    meta_source = str(record.get("meta_source") or "")
    return Draw(str(path), str(record.get("dataset")), dict(settings), subsets, meta_source)


def check_draw_settings(draw: Draw, dataset: str, settings: dict[str, Any]) -> None:
    """A run on `draw` is on the draw's dataset and asks for the data settings it was drawn
    with; a one-line error names the first that differs."""
    if draw.dataset != dataset:
        raise LtbenchError(
            f"draw file {draw.path} is a draw of {draw.dataset!r}, not of {dataset!r}"
        )
    for key in DRAW_SETTINGS:
        if key in draw.settings and draw.settings[key] != settings.get(key):
            raise LtbenchError(
                f"draw file {draw.path} was drawn with {key}={draw.settings[key]!r}; this run "
                f"asks for {key}={settings.get(key)!r}: pass the draw's value"
            )


def subsets_of_draw(draw: Draw, pool, own_val=None, *, meta_per_class: int, val_transform=None):
    """(train, val, meta) of a draw file: the images it names, in its order, out of `pool` (the
    dataset's training images, in memory or on disk: anything with `.ids` and
    `.subset(positions)`); validation out of the dataset's own split `own_val` where it has one,
    given `val_transform` where one is named (images read from disk); the meta set, asked for by
    the run (`meta_per_class` > 0), out of whichever of the two holds its images. A meta set of
    another size per class than the run asks for is refused: the run would silently train with
    the draw's."""
    where = f"draw file {draw.path}"

    def pick(source, subset: str, **options):
        return source.subset(positions(source.ids, draw.ids(subset), where), **options)

    val = meta = None
    if draw.ids("val") is not None:
        options = {} if val_transform is None else {"transform": val_transform}
        val = pick(pool if own_val is None else own_val, "val", **options)
    wanted = draw.ids("meta")
    if wanted is not None and meta_per_class > 0:
        in_pool = own_val is None or str(wanted[0]) in {str(i) for i in pool.ids}
        meta = pick(pool if in_pool else own_val, "meta")
        largest = max(Counter(meta.labels.tolist()).values(), default=0)
        if largest != meta_per_class:
            raise LtbenchError(
                f"{where}: its meta set holds {largest} images per class (its largest class), "
                f"this run asks for meta_per_class={meta_per_class}; pass -p "
                f"meta_per_class={largest} to replay it, or train without --draw"
            )
    return pick(pool, "train"), val, meta


def positions(pool_ids: Sequence[str], wanted: Sequence[str], where: str) -> list[int]:
    """The positions in the pool of each wanted identity, in the wanted order; a one-line error
    names the first identity the pool does not hold (another dataset copy, or other files)."""
    index = {str(i): p for p, i in enumerate(pool_ids)}
    missing = [i for i in wanted if i not in index]
    if missing:
        raise LtbenchError(
            f"{where}: {len(missing)} image(s) of the draw are not in this dataset, e.g. "
            f"{missing[0]!r}; is --data-root the copy the draw was made from?"
        )
    return [index[i] for i in wanted]
