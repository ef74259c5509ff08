"""`ltbench train --threads N`: torch's CPU threads for the run; a bad N is a one-line error."""

from __future__ import annotations

import pytest
import torch

from ltbench.cli import main

TINY = ["train", "--dataset", "synthetic-lt", "--epochs", "1", "--n-max", "40", "--imb-factor",
        "0.1", "--width", "0.125", "--device", "cpu"]  # fmt: skip


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_a_bad_thread_count_is_refused_with_one_line(bad, tmp_path, capsys):
    assert main([*TINY, "--threads", bad, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"argument --threads: expected a whole number >= 1, got '{bad}'" in err
    assert not (tmp_path / "o").exists()


def test_threads_sets_torchs_threads_for_the_run(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main([*TINY, "--threads", "1", "--out", str(tmp_path / "o")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "o" / "result.json").is_file()
