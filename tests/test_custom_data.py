"""Your own data: the generic `image-folder` and `split-files` kinds with any number of classes
(as they are or drawn long-tailed), the default recipe by image size, the fingerprint of every
draw, draw files, and whether ltbench's CIFAR draw is LDAM-DRW's."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from ltbench.cli import main
from ltbench.data import load_dataset, long_tailed_indices
from ltbench.data.draws import fingerprint, read_draw
from ltbench.data.registry import dataset_recipe
from ltbench.engine.record import CLOCK_KEYS
from ltbench.errors import LtbenchError

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox", "gnu"]  # 7 classes, already long-tailed
COUNTS = [60, 40, 25, 15, 10, 6, 4]
TEST_PER_CLASS = 10
FAST = ["--epochs", "2", "--width", "0.25", "--num-workers", "0"]


def make_folder(root, size=16, counts=COUNTS, val_per_class=0):
    """root/train/<class>/NNN.png (COUNTS images), root/test/<class>/ (10 each), optionally
    root/val/<class>/; each class a colour of its own plus noise (learnable, not trivial)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    splits = [("train", counts), ("test", [TEST_PER_CLASS] * len(counts))]
    if val_per_class:
        splits.append(("val", [val_per_class] * len(counts)))
    for split, per_class in splits:
        for c, (name, n) in enumerate(zip(CLASSES[: len(counts)], per_class, strict=True)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = np.zeros((size, size, 3), np.int64)
                img[..., c % 3] = 35 * c
                img += rng.integers(0, 80, (size, size, 3))
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def load(root, dataset="image-folder", **kw):
    kw.setdefault("imb_factor", 1.0)
    return load_dataset(dataset, root=root, cache_dir=False, **kw)


# --------------------------------------------------------------------------- the kinds


def test_an_image_folder_is_used_as_it_is_or_drawn_long_tailed(tmp_path):
    root = make_folder(tmp_path / "data")
    as_is = load(root)
    assert as_is.class_names == CLASSES and as_is.num_classes == 7
    assert as_is.cls_num_list == COUNTS and as_is.in_memory and as_is.image_size == 16
    assert len(as_is.test) == 7 * TEST_PER_CLASS
    assert sorted(as_is.train.ids)[:2] == ["train/ant/000.png", "train/ant/001.png"]
    # drawn with imb_factor 0.1: int(60 * 0.1 ** (i / 6)) per class, at most what it has
    drawn = load(root, imb_factor=0.1)
    targets = [int(60 * 0.1 ** (i / 6)) for i in range(7)]
    assert drawn.cls_num_list == [min(t, n) for t, n in zip(targets, COUNTS, strict=True)]
    drawn = load(root, imb_factor=0.05)
    assert drawn.cls_num_list[0] == 60 and drawn.cls_num_list[-1] == 3


def test_an_image_folder_uses_its_own_val_folder_when_validation_is_asked(tmp_path):
    root = make_folder(tmp_path / "data", val_per_class=3)
    with_val = load(root, val_fraction=0.1)
    assert with_val.val_source.endswith("val") and len(with_val.val) == 21
    assert with_val.cls_num_list == COUNTS  # nothing held out of training
    assert load(root).val is None  # no validation asked: none, as on ImageNet-LT


def test_split_files_with_any_classes_and_their_errors(tmp_path):
    root = make_folder(tmp_path / "data")
    for split in ("train", "test"):
        lines = [
            f"{split}/{name}/{f.name} {c}"
            for c, name in enumerate(CLASSES)
            for f in sorted((root / split / name).iterdir())
        ]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    bundle = load(root, "split-files")
    assert bundle.cls_num_list == COUNTS and bundle.class_names == CLASSES
    assert sorted(bundle.train.ids)[0] == "train/ant/000.png"
    assert load(root, "split-files", imb_factor=0.1).cls_num_list[:2] == [60, 40]
    (root / "test.txt").write_text("test/ant/000.png 9\n")
    with pytest.raises(LtbenchError, match="test split has label 9, but the train split only 7"):
        load(root, "split-files")
    (root / "test.txt").unlink()
    with pytest.raises(LtbenchError, match=r"split-files: test split file not found: .*test\.txt"):
        load(root, "split-files")


def test_large_images_are_read_from_disk_with_the_imagenet_recipe(tmp_path):
    root = make_folder(tmp_path / "data", size=80, counts=[3, 2])
    bundle = load(root)
    assert not bundle.in_memory and bundle.image_size == 224 and bundle.cls_num_list == [3, 2]
    assert tuple(bundle.train[0][0].shape) == (3, 224, 224)
    big = dataset_recipe("image-folder", str(root))
    assert (big.model, big.epochs, big.lr_decay_epochs) == ("resnet50", 180, (120, 160))
    assert "80x80 images" in big.note and "large" in big.note
    small = dataset_recipe("image-folder", str(make_folder(tmp_path / "small", counts=[2, 2])))
    assert (small.model, small.epochs, small.lr_decay_epochs, small.imb_factor) == (
        "resnet32",
        200,
        (160, 180),
        1.0,
    )


@pytest.mark.parametrize(
    "layout, match",
    [
        ("no-test", r"image-folder: .*test not found; expected .*/train/<class>/<image>"),
        ("other-classes", r"the class folders of .*test and .*train differ \(only in"),
        ("no-root", r"dataset 'image-folder' needs its folder: pass --data-root DIR"),
    ],
)
def test_a_bad_image_folder_is_a_one_line_error(tmp_path, layout, match):
    root = make_folder(tmp_path / "data", counts=[2, 2])
    if layout == "no-test":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
        for d in sorted((root / "test").iterdir()):
            d.rmdir()
        (root / "test").rmdir()
    elif layout == "other-classes":
        (root / "test" / "bee").rename(root / "test" / "bees")
    code, _, err = run_cli(
        ["train", "--dataset", "image-folder", *FAST, "--out", str(tmp_path / "run")]
        + ([] if layout == "no-root" else ["--data-root", str(root)])
    )
    lines = err.strip().splitlines()  # the recipe note may come first; then one error line
    assert code == 2 and sum("error" in line for line in lines) == 1, err
    assert re.search(match, lines[-1]), err
    assert not (tmp_path / "run" / "result.json").exists()


def test_list_shows_the_generic_kinds():
    code, out, _ = run_cli(["list", "datasets"])
    assert code == 0
    for name in ("image-folder", "split-files", "imagenet-lt"):
        assert f"  {name} " in out
    assert "recipe by image size" in out and "ROOT/train/<class>/" in out


# --------------------------------------------------------------------------- a run and a suite


def test_train_on_a_seven_class_folder_as_it_is_and_drawn(tmp_path):
    root = make_folder(tmp_path / "data")
    base = ["train", "--dataset", "image-folder", "--data-root", str(root), *FAST]
    code, out, err = run_cli(
        [*base, "--out", str(tmp_path / "as-is"), "--many-shot", "30", "--few-shot", "8"]
    )
    assert code == 0, err
    assert "no paper recipe: 16x16 images" in err and "resnet32, 200 epochs" in err
    assert "this run's own: epochs 2" in err  # the flags that replace the recipe's values
    r = json.loads((tmp_path / "as-is" / "result.json").read_text())
    assert r["class_counts"] == COUNTS and r["class_names"] == CLASSES
    assert r["rho"] == 1 and r["class_count_ratio"] == 15
    assert (r["many_classes"], r["medium_classes"], r["few_classes"]) == (2, 3, 2)
    assert r["worst_class_name"] in CLASSES and r["fingerprints"]["val"] is None
    assert "worst class" in out and "(2)/" in out
    code, _, err = run_cli([*base, "--out", str(tmp_path / "drawn"), "--imb-factor", "0.05"])
    assert code == 0, err
    d = json.loads((tmp_path / "drawn" / "result.json").read_text())
    assert d["rho"] == 20 and d["class_counts"][-1] == 3
    assert d["fingerprints"]["train"] != r["fingerprints"]["train"]


SUITE = """
description: two methods on a 7-class image folder, as it is and drawn
methods:
  - loss: ce
  - loss: focal
datasets: [image-folder]
rhos: [1, 20]
seeds: [0]
config: {{epochs: 2, width: 0.25, data_root: {root}, many_shot: 30, few_shot: 8}}
"""


@pytest.mark.ray
def test_a_two_method_suite_on_the_folder_reports_its_groups_and_worst_class(ray_session, tmp_path):
    root = make_folder(tmp_path / "data")
    suite = tmp_path / "folder.yaml"
    suite.write_text(SUITE.format(root=root))
    out = tmp_path / "out"
    code, _, err = run_cli(["run", "--suite", str(suite), "--out", str(out), "--report", "md"])
    assert code == 0, err
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["status"]) == ["finished"] * 4
    # one training subset per setting: both methods trained on the same images
    prints = results.groupby("rho")["train_fingerprint"].nunique()
    assert prints.to_dict() == {1.0: 1, 20.0: 1}
    report = (out / "report.md").read_text()
    assert "image-folder" in report and "worst class" in report
    assert "many (> 30) 2, medium (8-30) 3, few (< 8) 2" in report  # as it is: 60 ... 4
    assert "Training subsets (SHA-256" in report and "DIFFERENT SUBSETS" not in report
    # as it is, ρ reads 1: the note gives the data's own imbalance (60 / 4)
    assert "image-folder as is: " in report and "trained at imbalance 15 (largest" in report
    assert results.set_index("rho")["class_count_ratio"].to_dict() == {1.0: 15.0, 20.0: 20.0}
    for fp in results["train_fingerprint"].unique():
        assert fp in report
    assert "nan" not in report.lower().replace("nanmean", "")


# --------------------------------------------------------------------------- fingerprints


def test_the_same_draw_gives_the_same_fingerprint_another_subset_seed_another(tmp_path):
    root = make_folder(tmp_path / "data")
    first = load(root, imb_factor=0.05, val_fraction=0.2)
    again = load(root, imb_factor=0.05, val_fraction=0.2)
    other = load(root, imb_factor=0.05, val_fraction=0.2, subset_seed=1)
    assert fingerprint(first.train.ids) == fingerprint(again.train.ids)
    assert fingerprint(first.val.ids) == fingerprint(again.val.ids)
    assert fingerprint(first.train.ids) != fingerprint(other.train.ids)
    # the fingerprint is of the images, not their order; it is SHA-256 of the sorted names
    ids = list(first.train.ids)
    assert fingerprint(ids[::-1]) == fingerprint(ids)
    import hashlib

    assert fingerprint(ids) == hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def test_an_exported_draw_reproduces_the_run_bit_for_bit(tmp_path):
    root = make_folder(tmp_path / "data")
    data = ["--dataset", "image-folder", "--data-root", str(root), "--imb-factor", "0.1"]
    data += ["--val-fraction", "0.2", *FAST]
    assert run_cli(["train", *data, "--out", str(tmp_path / "a")])[0] == 0
    code, out, err = run_cli(["draw", str(tmp_path / "a"), "--out", str(tmp_path / "d.json")])
    assert code == 0, err
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    assert a["fingerprints"]["train"][:12] in out
    draw = read_draw(tmp_path / "d.json")
    assert fingerprint(draw.ids("train")) == a["fingerprints"]["train"]
    # another machine: the folder copied elsewhere, the run made from the draw file alone
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(root, copy)
    data[3] = str(copy)
    again = ["train", *data, "--draw", str(tmp_path / "d.json"), "--out", str(tmp_path / "b")]
    code, _, err = run_cli(again)
    assert code == 0, err
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert b["fingerprints"] == a["fingerprints"] and b["draw_file"] == str(tmp_path / "d.json")
    assert b["confusion_matrix"] == a["confusion_matrix"] and b["top1_error"] == a["top1_error"]
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rows = [
        [json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("a", "b")
    ]
    for ra, rb in zip(*rows, strict=True):
        for key in CLOCK_KEYS:
            ra.pop(key), rb.pop(key)
        assert ra == rb


def test_a_draw_file_that_does_not_fit_is_refused_in_one_line(tmp_path):
    root = make_folder(tmp_path / "data", counts=[6, 4])
    first = ["train", "--data-root", str(root), *FAST, "--dataset", "image-folder"]
    base = [*first, "--out", str(tmp_path / "x")]
    assert run_cli([*first, "--out", str(tmp_path / "a")])[0] == 0
    assert run_cli(["draw", str(tmp_path / "a"), "--out", str(tmp_path / "d.json")])[0] == 0
    code, _, err = run_cli(["draw", str(tmp_path / "a"), "--out", str(tmp_path / "d.json")])
    assert code == 2 and "exists already" in err  # a shared draw is never overwritten
    cases = [
        (["--imb-factor", "0.5"], r"drawn with imb_factor=1\.0; this run asks for imb_factor=0\.5"),
        (["--dataset", "synthetic-lt"], r"is a draw of 'image-folder', not of 'synthetic-lt'"),
    ]
    record = json.loads((tmp_path / "d.json").read_text())
    edited = dict(record, train=record["train"][:-1])
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    foreign = dict(
        record, train=["ant/999.png"], fingerprints={"train": fingerprint(["ant/999.png"])}
    )
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    for flags, match in cases:
        code, _, err = run_cli([*base, *flags, "--draw", str(tmp_path / "d.json")])
        assert code == 2 and re.search(match, err), err
    for name, match in (
        ("edited.json", "the train subset does not match its fingerprint"),
        ("foreign.json", r"1 image\(s\) of the draw are not in this dataset, e\.g\. 'ant/999.png'"),
        ("none.json", "cannot read draw file"),
    ):
        code, _, err = run_cli([*base, "--draw", str(tmp_path / name)])
        assert code == 2 and match.split(",")[0].replace("\\", "") in err.replace("\\", ""), err
        assert sum("error" in line for line in err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "result.json").exists()


# --------------------------------------------------------------------------- LDAM-DRW's draw


def ldam_drw_draw(targets, imb_factor, seed=0):
    """LDAM-DRW's IMBALANCECIFAR10 draw (kaidic/LDAM-DRW, imbalance_cifar.py), restated here:
    the global numpy generator seeded once; per class in label order, img_max * imb ** (i /
    (C - 1.0)) images, img_max = len / C; the class's indices (np.where) shuffled in place and
    the first ones kept."""
    np.random.seed(seed)
    targets = np.array(targets, dtype=np.int64)
    classes = np.unique(targets)
    img_max = len(targets) / len(classes)
    kept = []
    for i, cls in enumerate(classes):
        n = int(img_max * imb_factor ** (i / (len(classes) - 1.0)))
        idx = np.where(targets == cls)[0]
        np.random.shuffle(idx)
        kept.extend(idx[:n].tolist())
    return kept


@pytest.mark.parametrize("imb_factor", [0.01, 0.02, 0.1])
def test_the_cifar_draw_is_ldam_drws_on_torchvisions_label_order(imb_factor):
    # CIFAR-10's training labels come interleaved (the pickles' order), 5000 per class; the
    # draw only reads the labels, so any interleaving of 5000 per class stands for the files
    labels = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 5000))
    ours, counts = long_tailed_indices(labels, imb_factor, seed=0)
    assert ours == ldam_drw_draw(labels, imb_factor)  # the same images, in the same order
    assert counts[0] == 5000 and counts[-1] == int(5000 * imb_factor)


def test_an_image_folder_copy_draws_the_same_ranks_within_each_class():
    # a folder copy lists each class's images together (files sorted by name); the draw picks
    # the same within-class positions as on the interleaved pickles, so the same images when
    # the files sort in the pickles' order (docs/DATASETS.md)
    labels = np.random.default_rng(7).permutation(np.repeat(np.arange(10), 500))
    grouped = np.sort(labels, kind="stable")
    a, _ = long_tailed_indices(labels, 0.01, seed=0)
    b, _ = long_tailed_indices(grouped, 0.01, seed=0)

    def ranks(kept, lab):
        rank = np.empty(len(lab), dtype=np.int64)
        for c in range(10):
            where = np.where(lab == c)[0]
            rank[where] = np.arange(len(where))
        return [(int(lab[i]), int(rank[i])) for i in kept]

    assert ranks(a, labels) == ranks(b, grouped)


# --------------------------------------------------------------------------- what a review found


def test_the_stage1_cache_key_of_runs_saved_before_draw_files_is_unchanged():
    # the digest commit e822807 (before `draw` existed) gave this configuration: caches and
    # two-stage runs saved then are found again
    from ltbench.engine.config import TrainConfig, resolve
    from ltbench.engine.stages import stage1_key

    cfg = resolve(
        TrainConfig(dataset="synthetic-lt", loss="ce", epochs=4, n_max=40, imb_factor=0.1)
    )
    assert stage1_key(cfg) == "93fc9a781335a874cc65f44d696aa247f8f57f8305176cc2c3362e649b23d42a"


def test_two_folders_never_share_a_stage1_cache_a_pack_or_a_checkpoint(tmp_path):
    from ltbench.engine.config import TrainConfig, resolve
    from ltbench.engine.pack import pack_signature
    from ltbench.engine.stages import stage1_key

    a, b = (str(make_folder(tmp_path / n, counts=[3, 2])) for n in ("a", "b"))
    ra, rb = (resolve(TrainConfig(dataset="image-folder", data_root=r, epochs=2)) for r in (a, b))
    assert stage1_key(ra) != stage1_key(rb) and pack_signature(ra) != pack_signature(rb)
    # a paper dataset is the same images wherever its copy lies
    ca, cb = (resolve(TrainConfig(dataset="cifar10-lt", data_root=r, epochs=2)) for r in (a, b))
    assert stage1_key(ca) == stage1_key(cb)


def test_identities_name_the_split_so_a_val_folder_is_never_the_training_pool(tmp_path):
    root = make_folder(tmp_path / "data", val_per_class=2)
    bundle = load(root, val_fraction=0.1)
    assert all(i.startswith("train/") for i in bundle.train.ids)
    assert all(i.startswith("val/") for i in bundle.val.ids)
    first = ["train", "--dataset", "image-folder", "--data-root", str(root), *FAST]
    first += ["--val-fraction", "0.1"]
    assert run_cli([*first, "--out", str(tmp_path / "a")])[0] == 0
    assert run_cli(["draw", str(tmp_path / "a"), "--out", str(tmp_path / "d.json")])[0] == 0
    import shutil

    shutil.rmtree(root / "val")  # a copy without val/: the draw's validation images are gone
    code, _, err = run_cli(
        [*first, "--draw", str(tmp_path / "d.json"), "--out", str(tmp_path / "b")]
    )
    assert code == 2 and "are not in this dataset, e.g. 'val/" in err, err


def test_split_files_take_a_named_validation_file(tmp_path):
    root = make_folder(tmp_path / "data", val_per_class=2)
    for split in ("train", "test", "val"):
        lines = [
            f"{split}/{name}/{f.name} {c}"
            for c, name in enumerate(CLASSES)
            for f in sorted((root / split / name).iterdir())
        ]
        (root / f"{split}.list").write_text("\n".join(lines) + "\n")
    names = {"train_split": "train.list", "test_split": "test.list"}
    bundle = load(root, "split-files", val_split="val.list", **names)
    assert len(bundle.val) == 14 and bundle.val_source.endswith("val.list")
    assert bundle.cls_num_list == COUNTS


def test_a_meta_runs_draw_holds_the_subsets_it_used_and_replays_bit_for_bit(tmp_path):
    root = make_folder(tmp_path / "data")
    data = ["--dataset", "image-folder", "--data-root", str(root), "--imb-factor", "0.1", *FAST]
    data += ["--loss", "meta-ce", "--epochs", "1", "--batch-size", "32"]
    assert run_cli(["train", *data, "--out", str(tmp_path / "a")])[0] == 0
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    assert run_cli(["draw", str(tmp_path / "a"), "--out", str(tmp_path / "d.json")])[0] == 0
    draw = read_draw(tmp_path / "d.json")
    assert fingerprint(draw.ids("train")) == a["fingerprints"]["train"]
    assert fingerprint(draw.ids("meta")) == a["fingerprints"]["meta"] is not None
    assert not set(draw.ids("meta")) & set(draw.ids("train"))
    assert draw.meta_source == a["meta_set"]["source"]
    replay = ["train", *data, "--draw", str(tmp_path / "d.json"), "--out", str(tmp_path / "b")]
    assert run_cli(replay)[0] == 0
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert b["fingerprints"] == a["fingerprints"] and b["confusion_matrix"] == a["confusion_matrix"]
    assert b["meta_set"]["source"].startswith("the meta set of the draw file")
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a replay asking for another meta set size than the draw holds is refused, nothing written
    other = [*replay[:-1], str(tmp_path / "c"), "-p", "meta_per_class=4"]
    code, _, err = run_cli(other)
    assert code == 2 and not (tmp_path / "c" / "result.json").exists()
    assert re.search(r"meta set holds 10 images per class .* asks for meta_per_class=4", err)


def test_an_empty_folder_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        ["train", "--dataset", "image-folder", "--data-root", str(tmp_path / "empty"), *FAST]
    )
    assert code == 2 and err.count("\n") == 1 and "train not found; expected" in err, err


def test_the_report_flags_a_setting_whose_rows_trained_on_different_subsets():
    from reports.subsets import subset_note
    from reports.tables import with_setting

    rows = pd.DataFrame(
        {
            "dataset": ["cifar10-lt"] * 3 + ["image-folder"],
            "rho": [100.0, 100.0, 100.0, 1.0],
            "status": ["finished"] * 4,
            "rule": ["raw"] * 4,
            "train_fingerprint": ["aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb", "0123456789ab"],
            "class_count_ratio": [100.0, 100.0, 100.0, 15.0],
        }
    )
    note = subset_note(with_setting(rows))
    assert (
        "cifar10-lt ρ=100: DIFFERENT SUBSETS, 2 of them: aaaaaaaaaaaa (2 runs), bbbbbbbbbbbb"
        in note
    )
    assert "image-folder as is: 0123456789ab (all 1 runs), trained at imbalance 15" in note
    assert "bbbbbbbbbbbb (1 runs);" in note  # each subset with its number of rows
    older = rows.drop(columns=["train_fingerprint", "class_count_ratio"])
    assert subset_note(with_setting(older)) is None  # older results say nothing


@pytest.mark.parametrize("own_val", [0, 2])
def test_a_draw_replays_on_images_read_from_disk(tmp_path, own_val):
    """Large images stay on disk: a draw picks its subsets out of the files by identity, the
    validation images (held out, or the folder's own val/) with the evaluation transform."""
    from ltbench.data.draws import write_draw

    root = make_folder(tmp_path / "data", size=80, counts=[6, 5, 4], val_per_class=own_val)
    settings = {"imb_factor": 0.5, "profile": "exp", "subset_seed": 0, "val_fraction": 0.25}
    a = load(root, **settings)
    assert not a.in_memory and len(a.val)
    assert a.val_source == (str(root / "val") if own_val else "holdout")
    assert all(i.startswith("val/" if own_val else "train/") for i in a.val.ids)
    subsets = {"train": list(a.train.ids)[::-1], "val": list(a.val.ids)}  # another order than drawn
    write_draw(tmp_path / "d.json", "image-folder", {**settings, "n_max": None}, subsets)
    b = load(root, draw=tmp_path / "d.json", **settings)
    assert list(b.train.ids) == subsets["train"] and list(b.val.ids) == subsets["val"]
    assert b.cls_num_list == a.cls_num_list and b.val_source == a.val_source
    first = [b.val[0][0] for _ in range(2)]  # no random crop or flip on validation images
    assert torch.equal(*first) and tuple(first[0].shape) == (3, 224, 224)
    missing = {**subsets, "val": [*subsets["val"][:-1], "train/ant/999.png"]}
    write_draw(tmp_path / "bad.json", "image-folder", {**settings, "n_max": None}, missing)
    with pytest.raises(
        LtbenchError, match=r"draw file .*bad.json: 1 image\(s\) of the draw are not"
    ):
        load(root, draw=tmp_path / "bad.json", **settings)
