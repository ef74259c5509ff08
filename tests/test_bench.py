"""`ltbench bench train` plumbing on tiny settings (one short run; no timing is asserted)."""

import re

import pytest
import torch

from ltbench.bench.train import (
    bench_config,
    bench_train,
    cifar_shaped_images,
    format_train_bench,
    ltbench_run,
    parse_batch_sizes,
    reference_run,
)
from ltbench.cli import main
from ltbench.errors import LtbenchError


def test_both_loops_start_from_the_same_model_loss_and_optimizer_settings():
    cfg = bench_config(8, "cpu", width=0.25)
    data = cifar_shaped_images(16)
    ours = ltbench_run(cfg, data, torch.device("cpu"))
    ref = reference_run(cfg, data, torch.device("cpu"), workers=0)
    a, b = ours.step_model.state_dict(), ref.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert type(ours.plugin) is type(ref.loss_fn)
    for ga, gb in zip(ours.optimizer.param_groups, ref.optimizer.param_groups, strict=True):
        assert (ga["lr"], ga["momentum"], ga["weight_decay"]) == (
            gb["lr"],
            gb["momentum"],
            gb["weight_decay"],
        )
    assert len(ours.loader) == len(ref.loader) == 2


def test_bench_train_rows_and_table():
    rows = bench_train(batch_sizes=(8,), repeats=1, steps=2, warmup=0, workers=0, width=0.25)
    assert [r["batch"] for r in rows] == [8]
    row = rows[0]
    assert row["ltbench"] > 0 and row["reference"] > 0
    assert row["ratio"] == pytest.approx(row["ltbench"] / row["reference"])
    table = format_train_bench(rows, device="cpu", repeats=1, warmup=0, workers=0)
    assert re.fullmatch(r"speedup \d+\.\d\dx", table.splitlines()[-1])


def test_bench_train_command_prints_the_speedup_last(capsys):
    code = main(
        [
            "bench",
            "train",
            "--batch-sizes",
            "4",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"speedup \d+\.\d\dx", out[-1])
    assert any(line.split()[0] == "4" for line in out if line.strip())


def test_bad_batch_sizes_are_one_line_errors(capsys):
    with pytest.raises(LtbenchError, match="positive integers"):
        parse_batch_sizes("64,x")
    assert main(["bench", "train", "--batch-sizes", "0", "--steps", "1"]) == 2
    assert capsys.readouterr().err.startswith("ltbench: error: --batch-sizes")


def test_bench_train_pack_adds_the_packed_side_and_its_ratio_last(capsys):
    rows = bench_train(
        batch_sizes=(8,), repeats=1, steps=2, warmup=0, workers=0, pack=2, width=0.25
    )
    row = rows[0]
    assert row["pack"] == 2 and row["fusion"] == "serial"  # the CPU default
    assert row["packed"] > 0 and row["pack_ratio"] == pytest.approx(row["packed"] / row["ltbench"])
    lines = format_train_bench(rows, device="cpu", repeats=1, warmup=0, workers=0).splitlines()
    assert re.fullmatch(r"pack speedup \(packed x2 / ltbench\) \d+\.\d\dx", lines[-1])
    assert re.fullmatch(r"speedup \d+\.\d\dx", lines[-2])
    argv = ["bench", "train", "--batch-sizes", "4", "--steps", "1", "--repeats", "1"]
    assert main([*argv, "--warmup", "0", "--workers", "0", "--pack", "0"]) == 2
    assert "--pack must be >= 1" in capsys.readouterr().err


@pytest.mark.slow  # a ResNet-32 step on 224-pixel images: about a minute on a busy 2-core CPU
def test_bench_data_writes_an_imagenet_lt_folder_and_times_both_sides(tmp_path):
    from ltbench.bench.data import bench_data, class_counts, format_data_bench, write_jpeg_folder

    counts = class_counts(100, 5)
    assert sum(counts) == 100 and counts == sorted(counts, reverse=True) and counts[-1] >= 1
    split = write_jpeg_folder(tmp_path / "jpegs", 12, 3)
    lines = split.read_text().splitlines()
    assert len(lines) == 12 and lines[0].startswith("train/n00000000/") and lines[0].endswith(" 0")
    assert (tmp_path / "jpegs" / lines[-1].split()[0]).stat().st_size > 1000
    row = bench_data(images=24, classes=3, batch=4, batches=2, workers=0, steps=1,
                     model="resnet32")  # fmt: skip
    assert row["loader_images"] == 8 and row["loader"] > 0 and row["step"] > 0
    text = format_data_bench(row)
    assert "24 generated JPEGs" in text and "loader / step = " in text


def test_device_decoding_matches_the_worker_pipeline(tmp_path):
    """The batch decoder (nvJPEG on CUDA; the same call on the CPU here) gives the worker
    pipeline's images: same shape and labels, and pixels within resampling differences."""
    from ltbench.bench.data import loader_rate, write_jpeg_folder
    from ltbench.data import load_dataset
    from ltbench.data.batches import DatasetBatches
    from ltbench.data.files import DeviceJpegDecoder

    write_jpeg_folder(tmp_path, 6, 2)
    bundle = load_dataset("imagenet-lt", root=tmp_path, imb_factor=1.0)
    plain = DatasetBatches(bundle.test, 2, train=False)
    decoded = DatasetBatches(
        bundle.test, 2, train=False, decoder=DeviceJpegDecoder("cpu", train=False)
    )
    (x1, y1), (x2, y2) = next(iter(plain)), next(iter(decoded))
    assert x1.shape == x2.shape == (2, 3, 224, 224) and x2.dtype == torch.uint8
    assert torch.equal(y1, y2)
    assert (x1.float() - x2.float()).abs().mean() < 4  # of 255: bilinear resampling differs
    train = DatasetBatches(
        bundle.train, 3, train=True, decoder=DeviceJpegDecoder("cpu", train=True)
    )
    assert next(iter(train))[0].shape == (3, 3, 224, 224)
    rate, seen = loader_rate(tmp_path, 3, 1, 0, torch.device("cpu"), decode="device")
    assert seen == 3 and rate > 0
