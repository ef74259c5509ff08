"""Loss milestones follow every dataset's schedule: DRW at the first lr decay, GA at 60%."""

import pytest

from ltbench.data.registry import DATASETS
from ltbench.engine.config import TrainConfig, resolve


def lengths(dataset):
    paper = DATASETS[dataset].recipe.epochs
    return sorted({paper, max(8, paper // 4), 12})


# the datasets with a paper recipe (the generic kinds' recipe follows their data's image size)
PAPER_DATASETS = [name for name, spec in DATASETS.items() if spec.recipe_for is None]


@pytest.mark.parametrize("dataset", PAPER_DATASETS)
def test_drw_at_first_decay_and_ga_at_sixty_percent(dataset):
    imb = DATASETS[dataset].recipe.imb_factor
    for epochs in lengths(dataset):
        for loss in ("kps-drw", "ldam-drw"):
            cfg = resolve(TrainConfig(dataset=dataset, imb_factor=imb, loss=loss, epochs=epochs))
            first_decay = cfg.lr_decay_epochs[0]
            assert cfg.loss_params["drw_epoch"] == first_decay, (dataset, epochs, loss)
            assert 0 < first_decay < epochs  # the decay happens, before the run ends
            assert cfg.warmup_epochs <= first_decay  # warm-up, then decay, then DRW's weights
        ga = resolve(TrainConfig(dataset=dataset, imb_factor=imb, loss="kps-ga", epochs=epochs))
        assert ga.loss_params["ga_epoch"] == round(0.6 * epochs), (dataset, epochs)
