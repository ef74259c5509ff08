"""The CUDA-graph switch (`cuda_graphs`, `--cuda-graphs`): off by default, CUDA only, refused
on CPU with one line. Capture and replay need a device; no CPU test can exercise them."""

import pytest
import torch

from ltbench.cli import main
from ltbench.engine.config import RUNTIME_KEYS, TrainConfig, resolve
from ltbench.engine.step import step_module
from ltbench.errors import LtbenchError


def test_cuda_graphs_are_off_by_default_and_a_runtime_setting():
    assert TrainConfig().cuda_graphs is False
    assert "cuda_graphs" in RUNTIME_KEYS  # the numbers are those of the eager step
    model = torch.nn.Linear(2, 2)
    assert step_module(model, resolve(TrainConfig()), torch.device("cpu")) is model


def test_cuda_graphs_on_cpu_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(LtbenchError, match="cuda_graphs needs a CUDA device; this run is on cpu"):
        resolve(TrainConfig(device="cpu", cuda_graphs=True))
    cfg = resolve(TrainConfig(device="auto", cuda_graphs=True))  # auto: known when it runs
    with pytest.raises(LtbenchError, match="needs a CUDA device; this run is on cpu"):
        step_module(torch.nn.Linear(2, 2), cfg, torch.device("cpu"))
    argv = ["train", "--device", "cpu", "--cuda-graphs", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == "ltbench: error: cuda_graphs needs a CUDA device; this run is on cpu"
    assert not (tmp_path / "run").exists()
