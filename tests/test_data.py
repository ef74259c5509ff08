"""Tests for ltbench.data and ltbench.data.synthetic: long-tailed subsets, datasets, loaders."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ltbench import data
from ltbench.data import synthetic
from ltbench.errors import LtbenchError

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "losses.json"


pytestmark = pytest.mark.usefixtures("one_thread")


def _fixture_cases():
    if not FIXTURES.exists():
        return []
    return json.loads(FIXTURES.read_text())["long_tailed_subsets"]


def _reference_subset(labels, imb_factor, seed, profile):
    """The construction written out independently, with a private RandomState (same MT19937
    stream as numpy's global seed)."""
    labels = np.asarray(labels)
    c = labels.max() + 1
    n_max = len(labels) // c
    if profile == "exp":
        counts = [int(n_max * imb_factor ** (i / (c - 1))) for i in range(c)]
    else:
        counts = [n_max] * (c // 2) + [int(n_max * imb_factor)] * (c - c // 2)
    rs = np.random.RandomState(seed)
    out = []
    for cls in range(c):
        idx = np.flatnonzero(labels == cls)
        rs.shuffle(idx)
        out += idx[: counts[cls]].tolist()
    return out, counts


# --------------------------------------------------------------------------- long-tailed subsets


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared fixtures not present")
@pytest.mark.parametrize("case", _fixture_cases(), ids=lambda c: f"{c['profile']}-{c['seed']}")
def test_long_tailed_indices_matches_fixture(case):
    indices, counts = data.long_tailed_indices(
        case["labels"], case["imb_factor"], case["seed"], case["profile"]
    )
    assert indices == case["indices"]
    assert counts == case["counts"]


@pytest.mark.parametrize("profile", ["exp", "step"])
def test_long_tailed_indices_unsorted_labels_other_profile(profile):
    rng = np.random.default_rng(7)
    labels = rng.permutation(np.repeat(np.arange(7), 30))  # 7 classes, shuffled order
    indices, counts = data.long_tailed_indices(labels.tolist(), 1 / 20, 11, profile)
    ref_indices, ref_counts = _reference_subset(labels, 1 / 20, 11, profile)
    assert indices == ref_indices
    assert counts == ref_counts
    assert counts == [int((labels[indices] == c).sum()) for c in range(7)]
    expected = (
        [30, 18, 11, 6, 4, 2, 1] if profile == "exp" else [30, 30, 30, 1, 1, 1, 1]
    )  # int(30 * 0.05 ** (i / 6)) and int(30 * 0.05)
    assert counts == expected


def test_long_tailed_indices_accepts_tensor_and_restores_global_rng():
    labels = torch.arange(40) % 4
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    a, _ = data.long_tailed_indices(labels, 0.1, 5)
    assert np.random.rand() == expected_next
    b, _ = data.long_tailed_indices(labels.tolist(), 0.1, 5)
    assert a == b


def test_imb_factor_one_keeps_everything():
    labels = [2, 0, 1, 1, 0, 2, 2, 1, 0]
    indices, counts = data.long_tailed_indices(labels, 1.0, 0)
    assert sorted(indices) == list(range(len(labels)))
    assert counts == [3, 3, 3]


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, 100, float("nan"), "x"])
def test_bad_imb_factor(bad):
    with pytest.raises(LtbenchError, match=r"imbalance factor .* is outside \(0, 1\]"):
        data.long_tailed_indices([0, 1], bad, 0)


def test_bad_profile():
    with pytest.raises(LtbenchError, match="unknown imbalance profile 'linear'.*exp, step"):
        data.long_tailed_indices([0, 1], 0.5, 0, profile="linear")


def test_split_validation_per_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 2 + [3])
    train, val = data.split_validation(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(len(labels)))
    held = np.bincount(labels[val], minlength=4).tolist()
    assert held == [5, 1, 1, 0]  # 10 images: the minimum of 5; at least 1 below that
    assert data.split_validation(labels, 0.2, seed=0) == (train, val)


def _old_split(labels, fraction, seed):
    """The hold-out before the per-class minimum: round(fraction * n), 1 <= . <= n - 1."""
    rng = np.random.default_rng(seed)
    val = []
    for cls in range(int(labels.max()) + 1):
        idx = np.where(labels == cls)[0]
        n_val = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1) if len(idx) > 1 else 0
        val += rng.permutation(idx)[:n_val].tolist()
    return sorted(val)


def test_validation_count_rule():
    m = data.VAL_MIN_PER_CLASS
    assert m == 5
    count = data.validation_count
    assert [count(n, 0.1) for n in (0, 1, 2, 5, 9, 10, 49, 50, 51, 500)] == [
        0, 0, 1, 1, 1, 5, 5, 5, 5, 50
    ]  # fmt: skip
    assert [count(n, 0.2) for n in (4, 9, 10, 24, 26, 100)] == [1, 2, 5, 5, 5, 20]
    assert count(3, 0.9) == 2 and count(12, 0.9) == 11 and count(7, 0.0) == 0
    assert data.classes_short_of_minimum([50, 5, 4, 0]) == [2, 3]


def test_split_validation_minimum_keeps_cifar10_lt_split_and_reports_short_classes():
    # CIFAR-10-LT, rho = 100: 5000 ... 50 images; at 0.1 every class already gives >= 5
    counts = data.long_tailed_counts(10, 5000, 0.01)
    labels = np.repeat(np.arange(10), counts)
    np.random.default_rng(3).shuffle(labels)
    _, val = data.split_validation(labels, 0.1, seed=7)
    assert val == _old_split(labels, 0.1, 7)
    # CIFAR-100-LT, rho = 100 (500 ... 5): classes of 10..49 images rise to 5; the smaller fall
    # short (and say so); classes above the minimum keep exactly the old draw
    counts = data.long_tailed_counts(100, 500, 0.01)
    labels = np.repeat(np.arange(100), counts)
    train, val = data.split_validation(labels, 0.1, seed=0)
    held = np.bincount(labels[val], minlength=100)
    for c, n in enumerate(counts):
        assert held[c] == data.validation_count(n, 0.1)
        assert held[c] >= 5 or n < 10
    short = data.classes_short_of_minimum(held.tolist())
    assert short == [c for c, n in enumerate(counts) if n < 10] and short
    old = set(_old_split(labels, 0.1, 0))
    big = [c for c, n in enumerate(counts) if round(0.1 * n) >= 5]
    assert {i for i in val if labels[i] in big} == {i for i in old if labels[i] in big}
    # raising a count takes the old draw plus the next images of the same permutation
    assert old <= set(val)
    assert sorted(train + val) == list(range(len(labels)))


# --------------------------------------------------------------------------- registry and errors


def test_registry_names():
    assert data.list_datasets() == [
        "synthetic-lt",
        "cifar10-lt",
        "cifar100-lt",
        "imagenet-lt",
        "inat2018",
        "image-folder",
        "split-files",
    ]


def test_unknown_dataset():
    with pytest.raises(LtbenchError, match="unknown dataset 'mnist-lt'; known datasets: synth"):
        data.load_dataset("mnist-lt", imb_factor=0.01)


def test_unknown_option():
    with pytest.raises(LtbenchError, match="no option 'bogus'"):
        data.load_dataset("synthetic-lt", imb_factor=0.01, bogus=1)


def test_missing_cifar_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(LtbenchError, match=f"no CIFAR data under {missing}"):
        data.load_dataset("cifar10-lt", root=missing, imb_factor=0.01)
    with pytest.raises(LtbenchError, match="needs its folder: pass --data-root"):
        data.load_dataset("cifar100-lt", imb_factor=0.01)


def test_missing_split_file(tmp_path):
    with pytest.raises(LtbenchError, match="train split file not found: .*ImageNet_LT_train.txt"):
        data.load_dataset("imagenet-lt", root=tmp_path, imb_factor=1.0)
    with pytest.raises(LtbenchError, match="root folder not found"):
        data.load_dataset("inat2018", root=tmp_path / "nope", imb_factor=1.0)


def test_split_file_dataset_rejects_imbalance(tmp_path):
    with pytest.raises(LtbenchError, match="long-tailed already.*imb_factor must be 1"):
        data.load_dataset("imagenet-lt", root=tmp_path, imb_factor=0.01)


# --------------------------------------------------------------------------- synthetic-lt


def test_synthetic_is_deterministic():
    a_x, a_y = synthetic.generate("train", 20)
    b_x, b_y = synthetic.generate("train", 20)
    assert a_x.dtype == np.uint8 and a_x.shape == (200, 3, 16, 16)
    assert np.array_equal(a_x, b_x) and np.array_equal(a_y, b_y)
    t_x, _ = synthetic.generate("test", 20)
    assert not np.array_equal(a_x, t_x)
    # pinned: a change here means every synthetic-lt result changes; only on purpose
    assert hashlib.sha256(a_x.tobytes()).hexdigest()[:16] == "8d4db0a8ca8fdbf9"


def test_synthetic_bundle():
    b = data.load_dataset("synthetic-lt", imb_factor=0.01, subset_seed=1, val_fraction=0.1)
    assert b.num_classes == 10 and len(b.class_names) == 10 and b.in_memory
    assert b.class_names[0] == "red-disc" and b.image_size == 16
    n_lt = data.long_tailed_counts(10, 1000, 0.01)
    assert n_lt[0] == 1000 and n_lt[-1] == 10
    val_counts = data.class_counts(b.val.labels, 10)
    assert [t + v for t, v in zip(b.cls_num_list, val_counts, strict=True)] == n_lt
    assert b.cls_num_list == data.class_counts(b.train.labels, 10)
    assert len(b.test) == 3000 and data.class_counts(b.test.labels, 10) == [300] * 10
    assert b.crop_padding == 2  # CIFAR's 4 pixels on 32, scaled to 16
    assert b.train.images.dtype == torch.uint8 and b.train.labels.dtype == torch.int64


# --------------------------------------------------------------------------- augmentation / loader


def _slow_crop_flip(img: np.ndarray, oy: int, ox: int, flip: bool, pad: int) -> np.ndarray:
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    h, w = img.shape[1:]
    out = padded[:, oy : oy + h, ox : ox + w]
    return out[:, :, ::-1] if flip else out


def test_crop_flip_matches_slow_reference():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=g, dtype=torch.uint8)
    oy, ox, flips = data.draw_crop_flip(16, 4, g)
    out = data.crop_flip(images, oy, ox, flips, 4)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(16):
        ref = _slow_crop_flip(images[i].numpy(), int(oy[i]), int(ox[i]), bool(flips[i]), 4)
        assert np.array_equal(out[i].numpy(), ref)
    # real shifts happen: some offsets differ from the centre (4, 4), and some are unflipped
    assert (oy != 4).any() and (ox != 4).any()
    centred = data.crop_flip(images, torch.full((16,), 4), torch.full((16,), 4), flips < 0, 4)
    assert torch.equal(centred, images)


def test_crop_padding_scales_with_the_image_side():
    """CIFAR's random crop pads 4 pixels on 32; a 16 x 16 image gets the same relative shift."""
    small = data.load_dataset("synthetic-lt", imb_factor=0.1, n_max=20, n_test_max=5)
    assert make_loader_padding(small) == 2
    assert make_loader_padding(dataclasses.replace(small, image_size=32)) == 4
    assert make_loader_padding(dataclasses.replace(small, image_size=8)) == 1


def make_loader_padding(bundle) -> int:
    return data.make_loader(bundle, "train", 8, seed=0).padding


def test_flip_rate_about_half():
    _, _, flips = data.draw_crop_flip(20000, 4, torch.Generator().manual_seed(3))
    assert 0.48 < flips.float().mean().item() < 0.52


def _toy(n_per_class=(20, 10, 5)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    images = torch.randint(0, 256, (len(labels), 3, 32, 32), dtype=torch.uint8)
    return data.TensorData(images, labels)


def test_tensor_batches_shapes_and_order():
    d = _toy()
    loader = data.TensorBatches(d, 8, train=True, seed=1)
    assert len(loader) == 5
    batches = list(loader)
    assert [len(y) for _, y in batches] == [8, 8, 8, 8, 3]
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == sorted(d.labels.tolist())  # a permutation
    assert len(data.TensorBatches(d, 8, train=True, drop_last=True)) == 4

    # eval: in order, no augmentation, just normalisation
    ev = list(data.TensorBatches(d, 16, train=False))
    assert torch.equal(torch.cat([y for _, y in ev]), d.labels)
    expected = data.normalize(d.images[:16], data.CIFAR_MEAN, data.CIFAR_STD)
    assert torch.equal(ev[0][0], expected)


def test_tensor_batches_resume_gives_same_epoch():
    d = _toy()
    run = data.TensorBatches(d, 8, train=True, seed=4)
    epochs = []
    for e in range(3):
        run.set_epoch(e)
        epochs.append([(x.clone(), y.clone()) for x, y in run])
    resumed = data.TensorBatches(d, 8, train=True, seed=4)
    resumed.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(epochs[2], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(epochs[0][0][1], epochs[1][0][1])  # epochs differ


def test_class_balanced_sampling():
    d = _toy((400, 40, 4))
    loader = data.TensorBatches(d, 111, train=True, seed=0, sampling="class-balanced")
    seen = torch.zeros(3)
    for e in range(5):
        loader.set_epoch(e)
        for _, y in loader:
            seen += torch.bincount(y, minlength=3)
    share = seen / seen.sum()
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.03)
    with pytest.raises(LtbenchError, match="unknown sampling mode"):
        data.TensorBatches(d, 8, train=True, sampling="square-root")


def test_make_loader_for_bundle():
    b = data.load_dataset("synthetic-lt", imb_factor=0.1, n_max=20, n_test_max=5)
    train = data.make_loader(b, "train", 32)
    x, y = next(iter(train))
    assert x.shape == (32, 3, 16, 16)
    assert len(data.make_loader(b, "test", 32)) == 2
    with pytest.raises(LtbenchError, match="no val split"):
        data.make_loader(b, "val", 32)


# --------------------------------------------------------------------------- CIFAR image folders


def _write_image(path: Path, colour, size=(32, 32)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _cifar_tree(root: Path, per_class_train=6, per_class_test=2, classes=10):
    from ltbench.data.loaders import CIFAR_CLASSES

    names = CIFAR_CLASSES["cifar10-lt" if classes == 10 else "cifar100-lt"][:classes]
    for c, name in enumerate(names):
        for i in range(per_class_train):
            _write_image(root / "train" / name / f"{i:04d}.png", (c * 20, i * 10, 0))
        for i in range(per_class_test):
            _write_image(root / "test" / name / f"{i:04d}.png", (c * 20, 0, 200))
    return names


def test_cifar_image_folder(tmp_path):
    names = _cifar_tree(tmp_path / "c10")
    cache = tmp_path / "cache"
    b = data.load_dataset(
        "cifar10-lt", root=tmp_path / "c10", imb_factor=0.5, n_max=4, cache_dir=cache
    )
    assert b.class_names == names and b.num_classes == 10
    assert b.cls_num_list == data.long_tailed_counts(10, 4, 0.5)  # n_max applied first
    assert len(b.test) == 20 and b.val is None
    # pixels decoded in the right class: red channel encodes the class (PNG is lossless)
    assert torch.equal(b.train.images[:, 0, 0, 0].long(), b.train.labels * 20)
    assert int(b.train.images[:, 1, 0, 0].max()) <= 30  # only the first 4 images per class
    assert len(list(cache.glob("*.npz"))) == 2
    again = data.load_dataset(
        "cifar10-lt", root=tmp_path / "c10", imb_factor=0.5, n_max=4, cache_dir=cache
    )
    assert torch.equal(again.train.images, b.train.images)
    with pytest.raises(LtbenchError, match="has 10 class folders, expected 100"):
        data.load_dataset("cifar100-lt", root=tmp_path / "c10", imb_factor=0.5, cache_dir=False)


def test_cifar_image_folder_rejects_mixed_sizes(tmp_path):
    _cifar_tree(tmp_path, per_class_train=1, per_class_test=1)
    _write_image(tmp_path / "train" / "cat" / "0009.png", (0, 0, 0), size=(16, 16))
    with pytest.raises(LtbenchError, match="0009.png is 16x16, expected 32x32"):
        data.load_dataset("cifar10-lt", root=tmp_path, imb_factor=1.0, cache_dir=False)


# --------------------------------------------------------------------------- split files


def _split_tree(root: Path):
    lines_train, lines_test = [], []
    counts = [5, 3, 1]
    for c, n in enumerate(counts):
        for i in range(n):
            rel = f"train/n{c:03d}/img{i}.jpg"
            _write_image(root / rel, (c * 80, 10, 10), size=(40, 30))
            lines_train.append(f"{rel} {c}")
        rel = f"val/n{c:03d}/img0.jpg"
        _write_image(root / rel, (c * 80, 10, 10), size=(30, 40))
        lines_test.append(f"{rel} {c}")
    (root / "ImageNet_LT_train.txt").write_text("\n".join(lines_train) + "\n")
    (root / "ImageNet_LT_test.txt").write_text("\n".join(lines_test) + "\n")
    return counts


def test_split_file_dataset(tmp_path):
    counts = _split_tree(tmp_path)
    b = data.load_dataset("imagenet-lt", root=tmp_path, imb_factor=1.0, image_size=16)
    assert not b.in_memory and b.num_classes == 3 and b.cls_num_list == counts
    assert b.class_names == ["n000", "n001", "n002"]
    x, y = b.train[0]  # uint8 from the workers; normalised on the device
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == 0
    x, y = b.test[2]
    assert x.shape == (3, 16, 16) and y == 2
    loader = data.make_loader(b, "train", 4, seed=0)
    loader.set_epoch(1)
    xs, ys = zip(*loader, strict=True)
    assert xs[0].dtype == torch.float32 and xs[0].shape == (4, 3, 16, 16)
    test = data.make_loader(b, "test", 3)
    expect = data.normalize(torch.stack([b.test[i][0] for i in range(3)]), b.mean, b.std)
    assert torch.equal(next(iter(test))[0], expect)
    assert sorted(torch.cat(ys).tolist()) == sorted(b.train.labels.tolist())

    b_val = data.load_dataset(
        "imagenet-lt", root=tmp_path, imb_factor=1.0, val_fraction=0.3, image_size=16
    )
    assert b_val.cls_num_list == [3, 2, 1] and len(b_val.val) == 3
    assert b_val.val_source == "holdout" and b.val_source == ""


def test_imagenet_lt_official_val_file_replaces_the_holdout(tmp_path):
    """With val_fraction > 0, ROOT/ImageNet_LT_val.txt (balanced) is the validation split when
    present: every training image is kept. Without val_fraction it is not read."""
    counts = _split_tree(tmp_path)
    lines = []
    for c in range(len(counts)):
        for i in range(2):
            rel = f"valsplit/n{c:03d}/img{i}.jpg"
            _write_image(tmp_path / rel, (c * 80, 200, 10), size=(20, 20))
            lines.append(f"{rel} {c}")
    (tmp_path / "ImageNet_LT_val.txt").write_text("\n".join(lines) + "\n")
    b = data.load_dataset(
        "imagenet-lt", root=tmp_path, imb_factor=1.0, val_fraction=0.3, image_size=16
    )
    assert b.cls_num_list == counts  # nothing held out of training
    assert b.val_source == str(tmp_path / "ImageNet_LT_val.txt")
    assert sorted(b.val.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert b.val.paths[0].startswith("valsplit/")
    plain = data.load_dataset("imagenet-lt", root=tmp_path, imb_factor=1.0, image_size=16)
    assert plain.val is None and plain.cls_num_list == counts
    with pytest.raises(LtbenchError, match="give val_split or val_fraction, not both"):
        data.load_dataset(
            "imagenet-lt",
            root=tmp_path,
            imb_factor=1.0,
            val_fraction=0.3,
            val_split="ImageNet_LT_val.txt",
        )


def test_split_file_explicit_paths_and_errors(tmp_path):
    _split_tree(tmp_path)
    b = data.load_dataset(
        "inat2018",
        root=tmp_path,
        imb_factor=1.0,
        train_split=tmp_path / "ImageNet_LT_train.txt",
        test_split="ImageNet_LT_test.txt",
        image_size=16,
    )
    assert len(b.train) == 9 and len(b.test) == 3
    with pytest.raises(LtbenchError, match="test split file not found: .*iNaturalist18_val.txt"):
        data.load_dataset(
            "inat2018", root=tmp_path, imb_factor=1.0, train_split="ImageNet_LT_train.txt"
        )
    bad = tmp_path / "bad.txt"
    bad.write_text("train/n000/img0.jpg zero\n")
    with pytest.raises(LtbenchError, match="bad.txt:1: expected 'relative/path label'"):
        data.load_dataset("imagenet-lt", root=tmp_path, imb_factor=1.0, train_split=bad)


def test_cifar_torchvision_pickles(tmp_path, monkeypatch):
    """The pickle layout goes through torchvision; fake tiny batches stand in for the real ones
    (their checksums cannot match, so torchvision's integrity check is bypassed)."""
    import pickle

    cifar = pytest.importorskip("torchvision.datasets.cifar")
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)

    def batch(name, per_class):
        labels = np.tile(np.arange(10), per_class)
        pixels = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        pixels[:, 0] = labels * 20  # first red pixel encodes the class
        (folder / name).write_bytes(pickle.dumps({"data": pixels, "labels": labels.tolist()}))

    for i in range(1, 6):
        batch(f"data_batch_{i}", 2)  # 10 per class in all
    batch("test_batch", 3)
    names = [f"c{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))

    b = data.load_dataset("cifar10-lt", root=tmp_path, imb_factor=0.1, n_max=8)
    assert b.class_names == names
    assert b.cls_num_list == data.long_tailed_counts(10, 8, 0.1) == [8, 6, 4, 3, 2, 2, 1, 1, 1, 0]
    assert torch.equal(b.train.images[:, 0, 0, 0].long(), b.train.labels * 20)
    assert len(b.test) == 30 and b.test.images.shape[1:] == (3, 32, 32)
