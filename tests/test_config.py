"""Configuration: paper defaults, schedule scaling, one-line errors."""

import pytest

from ltbench.engine.config import TrainConfig, load_yaml, resolve, save_yaml
from ltbench.errors import LtbenchError


def test_cifar_defaults_follow_table_2():
    cfg = resolve(TrainConfig(dataset="cifar10-lt", loss="kps-ga"))
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.weight_decay) == ("resnet32", 64, 0.1, 2e-4)
    assert (cfg.epochs, cfg.warmup_epochs, cfg.lr_decay_epochs) == (200, 5, [160, 180])
    assert cfg.lr_decay_factor == 0.01 and cfg.imb_factor == 0.01
    assert cfg.loss_params["ga_epoch"] == 120 and cfg.loss_params["m_max"] == 0.5


def test_dataset_specific_loss_defaults():
    assert resolve(TrainConfig(dataset="imagenet-lt", loss="kps")).loss_params["m_max"] == 0.35
    assert resolve(TrainConfig(dataset="inat2018", loss="kps")).loss_params["m_max"] == 0.3
    cfg = resolve(TrainConfig(dataset="inat2018", loss="kps", loss_params={"m_max": 0.2}))
    assert cfg.loss_params["m_max"] == 0.2


def test_shorter_runs_scale_the_milestones_the_user_did_not_set():
    cfg = resolve(TrainConfig(dataset="cifar10-lt", loss="kps-ga", epochs=20))
    assert cfg.warmup_epochs == 1  # 5 * 0.1 = 0.5, kept at one epoch
    assert cfg.lr_decay_epochs == [16, 18]
    assert cfg.loss_params["ga_epoch"] == 12
    kept = resolve(
        TrainConfig(
            dataset="cifar10-lt",
            loss="kps-ga",
            epochs=20,
            loss_params={"ga_epoch": 3},
            lr_decay_epochs=[10],
        )
    )
    assert kept.loss_params["ga_epoch"] == 3 and kept.lr_decay_epochs == [10]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"imb_factor": 0.0}, r"imbalance factor 0\.0 is outside \(0, 1\]"),
        ({"imb_factor": 100.0}, r"imbalance factor 100\.0 is outside"),
        ({"dataset": "mnist-lt"}, r"unknown dataset 'mnist-lt'; known datasets: .*cifar10-lt"),
        ({"loss": "softmax"}, r"unknown loss 'softmax'; known losses: .*kps-ga"),
        ({"loss": "kps", "loss_params": {"margin": 1}}, r"no parameter 'margin'; allowed"),
        ({"profile": "linear"}, r"unknown imbalance profile 'linear'; known: exp, step"),
        ({"epochs": 0}, r"epochs must be an integer >= 1, got 0"),
        ({"epochs": "ten"}, r"epochs must be int"),
    ],
)
def test_bad_values_give_one_line_errors(kwargs, match):
    with pytest.raises(LtbenchError, match=match) as info:
        resolve(TrainConfig(**kwargs))
    assert "\n" not in str(info.value)


def test_yaml_round_trip_and_unknown_key(tmp_path):
    cfg = resolve(TrainConfig(loss="la", epochs=3))
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("dataset: synthetic-lt\nepochz: 3\n")
    with pytest.raises(LtbenchError, match=r"bad.yaml: unknown key 'epochz'"):
        load_yaml(tmp_path / "bad.yaml")


def test_loss_milestones_scale_from_the_200_epoch_schedule_on_every_dataset():
    # synthetic-lt's own schedule is 30 epochs; ga_epoch=120 of 200 means 60% of the run.
    cfg = resolve(TrainConfig(dataset="synthetic-lt", loss="kps-ga"))
    assert cfg.epochs == 30 and cfg.loss_params["ga_epoch"] == 18
    cfg = resolve(TrainConfig(dataset="synthetic-lt", loss="kps-drw", epochs=12))
    assert cfg.loss_params["drw_epoch"] == round(160 * 12 / 200)
    assert cfg.lr_decay_epochs == [round(24 * 12 / 30), round(27 * 12 / 30)]
