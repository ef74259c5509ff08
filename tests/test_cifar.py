"""Integration: ResNet-32 on CIFAR-10-LT built from the JPEG copy in ../shared/data."""

import zipfile
from pathlib import Path

import pytest

from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import train

ZIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip"
TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 200


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    if not ZIP.exists():
        pytest.skip(f"CIFAR-10 JPEG copy not found at {ZIP}")
    root = tmp_path_factory.mktemp("cifar10")
    with zipfile.ZipFile(ZIP) as z:
        for name in z.namelist():
            parts = name.split("/")  # cifar10-jpeg/<split>/<class>/NNNN.jpg
            if len(parts) != 4 or not parts[3]:
                continue
            limit = TRAIN_PER_CLASS if parts[1] == "train" else TEST_PER_CLASS
            if int(parts[3].split(".")[0]) < limit:
                target = root / parts[1] / parts[2] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(name))
    return root


def test_resnet32_learns_cifar10_lt_from_the_jpeg_copy(cifar_root, tmp_path):
    cfg = TrainConfig(
        dataset="cifar10-lt",
        data_root=str(cifar_root),
        imb_factor=0.1,
        loss="kps-ga",
        epochs=4,
        lr=0.05,
        batch_size=128,
    )
    result = train(cfg, tmp_path / "run")
    assert result["class_names"][0] == "airplane" and result["class_names"][9] == "truck"
    assert result["class_counts"][0] == TRAIN_PER_CLASS
    assert result["class_counts"][9] == TRAIN_PER_CLASS // 10
    assert sum(1 for _ in result["per_class_accuracy"]) == 10
    # chance is 10% (2000 balanced test images: +-0.7% sd); 4 short epochs reach 20-30%
    assert result["top1_acc"] > 18.0
