"""The training loop end to end on tiny settings: files, reproducibility, resume, errors."""

import json
import subprocess
import sys

import pytest
import torch

from ltbench.cli import main
from ltbench.engine.config import TrainConfig
from ltbench.engine.loop import learning_rate, train
from ltbench.errors import LtbenchError
from ltbench.sdk.registry import _REGISTRY, LossSpec, register

TINY = dict(dataset="synthetic-lt", n_max=100, imb_factor=0.05, width=0.25, batch_size=64, epochs=2)


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def test_train_writes_every_file(tmp_path):
    result = train(tiny(loss="kps-ga"), tmp_path / "run")
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "checkpoint.pt",
        "result.json",
    }
    saved = json.loads((run / "result.json").read_text())
    assert saved["top1_error"] == pytest.approx(result["top1_error"])
    assert len(saved["per_class_accuracy"]) == 10
    assert len(saved["confusion_matrix"]) == 10
    assert saved["class_counts"][0] > saved["class_counts"][-1]  # long-tailed
    assert saved["env"]["torch"] == torch.__version__
    for key in (
        "many_acc",
        "medium_acc",
        "few_acc",
        "head_error",
        "mid_error",
        "tail_error",
        "ece",
        "wall_seconds",
        "best_test_top1_error_selected_on_test",
    ):
        assert key in saved
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_validation_split_gives_balanced_error_and_per_class_accuracy(tmp_path, capsys):
    """`ltbench train ... --val-fraction 0.2`: the balanced validation error is 100 minus the
    mean of val_per_class_accuracy (classes without a validation image left out and listed)."""
    run = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic-lt", "--n-max", "100", "--imb-factor", "0.01"]
    argv += ["--width", "0.25", "--batch-size", "64", "--epochs", "2", "--loss", "kps-ga"]
    assert main([*argv, "--val-fraction", "0.2", "--out", str(run)]) == 0
    saved = json.loads((run / "result.json").read_text())
    acc = saved["val_per_class_accuracy"]
    assert len(acc) == 10
    seen = [a for a in acc if a is not None]
    assert saved["val_balanced_error"] == pytest.approx(100 - sum(seen) / len(seen))
    assert saved["val_classes_without_images"] == [c for c, a in enumerate(acc) if a is None]
    counts = saved["val_class_counts"]
    assert saved["val_classes_without_images"] == [c for c, n in enumerate(counts) if n == 0]
    assert saved["val_classes_below_minimum"] == [c for c, n in enumerate(counts) if n < 5]
    assert counts[:5] == [20, 12, 7, 5, 5]  # 100, 59, 35, 21, 12 images: the minimum of 5
    assert saved["val_source"] == "holdout"
    assert 0 <= saved["val_top1_error"] <= 100
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_balanced_error"] == pytest.approx(saved["val_balanced_error"])
    assert rows[-1]["val_per_class_accuracy"] == acc
    assert all("val_top1_error" in r for r in rows)


def test_scrambled_test_labels_change_no_validation_number_and_no_choice(tmp_path, monkeypatch):
    """Nothing of the test set is read to choose: train two points of a search, then again with
    the test labels replaced by garbage. Every validation number (and so the selected point)
    is the same; only the test numbers change."""
    import numpy as np
    import pandas as pd

    import ltbench.data
    from ltbench.data.batches import TensorData
    from ltbench.schema import select_best

    real_load = ltbench.data.load_dataset

    def scrambled(*args, **kwargs):
        bundle = real_load(*args, **kwargs)
        gen = torch.Generator().manual_seed(123)
        garbage = torch.randint(0, bundle.num_classes, bundle.test.labels.shape, generator=gen)
        bundle.test = TensorData(bundle.test.images, garbage.to(bundle.test.labels.device))
        return bundle

    points = {"a": 0.1, "b": 0.6}
    runs = {}
    for poisoned in (False, True):
        if poisoned:
            monkeypatch.setattr(ltbench.data, "load_dataset", scrambled)
        rows = []
        for key, m_max in points.items():
            cfg = tiny(loss="kps-ga", epochs=1, val_fraction=0.2, loss_params={"m_max": m_max})
            r = train(cfg, tmp_path / f"{key}-{poisoned}")
            rows.append(
                {
                    "trial": key,
                    "val_balanced_error": r["val_balanced_error"],
                    "val_per_class": r["val_per_class_accuracy"],
                    "test_top1_error": r["top1_error"],
                    "status": "finished",
                }
            )
        runs[poisoned] = pd.DataFrame(rows)
    clean, poisoned = runs[False], runs[True]
    assert list(clean["val_balanced_error"]) == list(poisoned["val_balanced_error"])
    assert list(clean["val_per_class"]) == list(poisoned["val_per_class"])
    assert not np.allclose(clean["test_top1_error"], poisoned["test_top1_error"])
    assert select_best(clean)["trial"] == select_best(poisoned)["trial"]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = train(tiny(loss="ce", seed=3), tmp_path / "a")
    b = train(tiny(loss="ce", seed=3), tmp_path / "b")
    train(tiny(loss="ce", seed=4), tmp_path / "c")

    def losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["train_loss"] for x in lines]

    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert losses("a") == losses("b")
    assert losses("a") != losses("c")


class _Crash:
    """A hook that stops the run after a given epoch, like a killed process."""

    def __init__(self, after: int):
        self.after = after

    def on_epoch_end(self, epoch, metrics, checkpoint):
        if epoch == self.after:
            raise KeyboardInterrupt


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    cfg = tiny(loss="ldam-drw", epochs=3)
    full = train(cfg, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", hooks=_Crash(after=2))
    assert not (tmp_path / "cut" / "result.json").exists()
    with pytest.raises(LtbenchError, match="holds an unfinished run; pass --resume"):
        train(cfg, tmp_path / "cut")
    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert resumed["confusion_matrix"] == full["confusion_matrix"]
    epochs = [
        json.loads(x)["epoch"]
        for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2, 3]


def test_each_line_says_its_epochs_time_and_threads_across_a_resume(tmp_path):
    """A run stopped after epoch 2 and resumed with two threads: each line carries the thread
    count it ran at, its wall time and this process's CPU time."""
    cfg, before = tiny(loss="ce", epochs=3), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, tmp_path / "cut", hooks=_Crash(after=2))
        torch.set_num_threads(2)
        train(cfg, tmp_path / "cut", resume=True)
    finally:
        torch.set_num_threads(before)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert [r["threads"] for r in rows] == [1, 1, 2]
    for r in rows:
        assert r["epoch_seconds"] > 0 and r["epoch_cpu_seconds"] > 0


_CLOCK_PROBE = """
import json, time
from ltbench.engine.record import EpochClock
clock = EpochClock()
time.sleep(0.5)
paused = clock.read()
clock = EpochClock()
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
print(json.dumps({"paused": paused, "busy": clock.read()}))
"""


def test_an_epoch_clock_tells_a_pause_from_work():
    """Time asleep (a paused process, a busy machine) is wall time without CPU time; work is
    both. In a fresh process, whose CPU time is the probe's own (threads that earlier tests
    left in this one would add theirs). Loose bounds: this checks what is measured, not how fast
    anything runs."""
    probe = subprocess.run(
        [sys.executable, "-c", _CLOCK_PROBE], capture_output=True, text=True, check=True
    )
    times = json.loads(probe.stdout)
    paused, busy = times["paused"], times["busy"]
    assert paused["epoch_seconds"] >= 0.5 and paused["epoch_cpu_seconds"] < 0.25
    assert busy["epoch_cpu_seconds"] >= 0.3
    assert busy["threads"] >= 1


def test_finished_run_is_never_overwritten_without_overwrite(tmp_path):
    cfg = tiny(loss="ce", epochs=1)
    train(cfg, tmp_path / "r")
    before = (tmp_path / "r" / "result.json").read_bytes()
    with pytest.raises(LtbenchError, match="already holds a finished run.*--overwrite"):
        train(cfg, tmp_path / "r")
    assert (tmp_path / "r" / "result.json").read_bytes() == before
    train(tiny(loss="ce", epochs=1, seed=9), tmp_path / "r", overwrite=True)
    assert (tmp_path / "r" / "result.json").read_bytes() != before


def test_corrupted_and_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(LtbenchError, match=r"bad\.pt is corrupted or not a checkpoint"):
        train(tiny(loss="ce", epochs=1), tmp_path / "x", resume=bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(LtbenchError, match="was not written by ltbench"):
        train(tiny(loss="ce", epochs=1), tmp_path / "y", resume=foreign)
    train(tiny(loss="ce", epochs=1), tmp_path / "ce")
    with pytest.raises(LtbenchError, match="belongs to another run: loss is 'ce' there"):
        train(tiny(loss="la", epochs=1), tmp_path / "z", resume=tmp_path / "ce" / "checkpoint.pt")


def test_a_checkpoint_from_before_a_setting_existed_still_resumes(tmp_path):
    """A run saved before `nesterov` (or `variant`, `keep_best_val`) was a setting trained
    with the value it now defaults to; a saved value that differs is still another run."""
    from ltbench.engine.checkpoint import load_checkpoint
    from ltbench.engine.config import resolve

    cfg = tiny(loss="ce", epochs=1)
    train(cfg, tmp_path / "ce")
    path = tmp_path / "ce" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    for key in ("nesterov", "variant", "keep_best_val"):
        del state["config"][key]
    torch.save(state, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt", resolve(cfg))["epoch"] == state["epoch"]
    state["config"]["nesterov"] = True
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(LtbenchError, match="belongs to another run: nesterov is True there"):
        load_checkpoint(tmp_path / "other.pt", resolve(cfg))


class _NanAfter(torch.nn.Module):
    head = "linear"

    def __init__(self, counts, bad_step):
        super().__init__()
        self.bad_step, self.calls = bad_step, 0

    def set_epoch(self, epoch):
        pass

    def forward(self, scores, targets):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(scores, targets)
        return loss * float("nan") if self.calls > self.bad_step else loss


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    name = "test-nan-after-3"
    if name not in _REGISTRY:
        register(LossSpec(name=name, factory=_NanAfter, head="linear", defaults={"bad_step": 3}))
    with pytest.raises(LtbenchError, match=r"NaN or infinite at epoch 1, step 4"):
        train(tiny(loss=name, n_max=200, epochs=1), tmp_path / "nan")


def test_learning_rate_schedule():
    cfg = TrainConfig(dataset="cifar10-lt", lr=0.1)
    from ltbench.engine.config import resolve

    cfg = resolve(cfg)
    assert learning_rate(cfg, 0) == pytest.approx(0.02)
    assert learning_rate(cfg, 4) == pytest.approx(0.1)
    assert learning_rate(cfg, 159) == pytest.approx(0.1)
    assert learning_rate(cfg, 160) == pytest.approx(0.001)
    assert learning_rate(cfg, 199) == pytest.approx(0.00001)


def test_cli_train_and_one_line_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        [
            "train",
            "--dataset",
            "synthetic-lt",
            "--loss",
            "la",
            "--epochs",
            "1",
            "--n-max",
            "100",
            "--imb-factor",
            "0.05",
            "--width",
            "0.25",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "top-1 error" in capsys.readouterr().out
    cases = [
        (["--loss", "nope"], "unknown loss 'nope'"),
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--imb-factor", "1.5"], "imbalance factor 1.5 is outside (0, 1]"),
        (["--model", "vgg"], "unknown model 'vgg'"),
        (["--dataset", "cifar10-lt", "--data-root", str(tmp_path / "nowhere")], "nowhere"),
        (["-p", "m_max=-1", "--loss", "kps"], "m_max"),
    ]
    for extra, message in cases:
        code = main(
            [
                "train",
                "--epochs",
                "1",
                "--n-max",
                "100",
                "--imb-factor",
                "0.05",
                "--out",
                str(tmp_path / "e"),
                "--overwrite",
                *extra,
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2, extra
        assert err.startswith("ltbench: error:") and message in err, err
        assert "\n" not in err
