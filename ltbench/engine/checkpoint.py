"""A run's folder on disk: refusing to mix runs, checkpoints, atomic JSON, the environment.

`DIR/checkpoint.pt` holds the model, the optimizer and where the run stands (`epoch`: finished
epochs of the whole run; `stage`, `stage_epoch`: of the stage being trained). It is loaded with
`weights_only=True` (no code runs) and must belong to the run resuming it: every setting that
changes the numbers must match (`RUNTIME_KEYS` may differ).
"""

from __future__ import annotations

import errno
import json
import os
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any

import torch

import ltbench
from ltbench.engine.config import TrainConfig, runtime_keys
from ltbench.engine.curves import close_curves
from ltbench.engine.identity import precision_name
from ltbench.errors import LtbenchError
from ltbench.runfiles import (
    CHECKPOINT_FORMAT,
    RESULT_FILE,
    RUN_FILES,
    TENSORBOARD_PREFIX,
    TENSORBOARD_SUFFIX,
)


def prepare_out_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite a finished run or to silently mix with an unfinished one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    close_curves(out_dir)  # a writer an earlier run in this process left open starts afresh
    present = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not present:
        return
    if overwrite:
        for name in present:
            (out_dir / name).unlink()
        for events in out_dir.glob(f"{TENSORBOARD_PREFIX}*{TENSORBOARD_SUFFIX}"):
            events.unlink()  # the curves of the run replaced
        return
    if (out_dir / RESULT_FILE).exists() and not resume:
        raise LtbenchError(
            f"output directory {out_dir} already holds a finished run; "
            "choose another --out or pass --overwrite"
        )
    if not resume:
        raise LtbenchError(
            f"output directory {out_dir} holds an unfinished run; "
            "pass --resume to continue it or --overwrite to start again"
        )


def refuse_resume_of_finished(out_dir: Path, overwrite: bool) -> None:
    """`train --resume` continues an unfinished run; on a finished one (result.json, perhaps
    with `ltbench eval`'s rules) it would train the last epoch again and rewrite the record."""
    if not overwrite and (out_dir / "result.json").is_file():
        raise LtbenchError(
            f"{out_dir} holds a finished run (result.json): --resume only continues an "
            "unfinished run, so nothing was changed; pass --overwrite to train it again, or "
            "choose another --out"
        )


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically, so a crash mid-write never leaves a truncated checkpoint. A file that
    cannot be written is an OSError naming it (torch's own writer would not name it)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        try:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, fh)
        except RuntimeError as exc:  # the zip writer's "file write failed": disk full, ...
            raise OSError(errno.EIO, f"write failed ({exc})", str(tmp)) from None
    os.replace(tmp, path)


# Settings added to the configuration after runs were saved, with the value every run saved
# before had: a checkpoint without the key was trained with it (so those runs still resume).
ADDED_SETTINGS = {
    "variant": None,
    "keep_best_val": False,
    "nesterov": False,
    "draw": None,
}


def load_checkpoint(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Load without executing code (`weights_only`) and check that it belongs to this run."""
    if not path.is_file():
        raise LtbenchError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: refused below
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LtbenchError(
            f"checkpoint {path} is corrupted or not a checkpoint ({first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise LtbenchError(f"checkpoint {path} was not written by ltbench ({CHECKPOINT_FORMAT})")
    lacking = [k for k in ("config", "model", "optimizer", "epoch") if k not in state]
    if lacking or not isinstance(state["config"], dict):
        raise LtbenchError(
            f"checkpoint {path} is incomplete (no {lacking[0] if lacking else 'config'!r}); "
            "give a checkpoint.pt that ltbench wrote"
        )
    saved, now = {**ADDED_SETTINGS, **state["config"]}, cfg.to_dict()
    skip = runtime_keys(cfg.dataset)
    for key in now:
        if key not in skip and saved.get(key) != now[key]:
            raise LtbenchError(
                f"checkpoint {path} belongs to another run: {key} is {saved.get(key)!r} there, "
                f"{now[key]!r} here"
            )
    return state


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True))
    os.replace(tmp, path)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The lines of a metrics.jsonl ([] when there is none); a line cut short by a killed
    process is left out (its epoch is redone from the checkpoint)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One more metrics.jsonl line."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace metrics.jsonl by `rows` (a resumed run drops the lines it will redo)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def environment(device: torch.device, *, amp: bool, channels_last: bool) -> dict[str, str]:
    """Versions, machine and the numerics settings of the step, stored with every result."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "ltbench": ltbench.__version__,
        "git_commit": commit or "unknown",
        "torch": torch.__version__,
        "device": f"{device.type} ({name or platform.machine()})",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu_count": str(os.cpu_count()),
        "amp_bf16": str(amp),
        "channels_last": str(channels_last),
        "summary": environment_summary(device, amp=amp),
    }


def environment_summary(device: torch.device, *, amp: bool) -> str:
    """The machine and numerics in one line, as `ltbench doctor` prints it first and every
    result.json records it (`env.summary`; a report's title page shows it): the device (GPU
    name, memory and count, or the CPU's cores and torch threads), torch, CUDA and cuDNN
    versions, and the precision of the step."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        count = torch.cuda.device_count()
        where = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)" + (
            f" x{count}" if count > 1 else ""
        )
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        stack = f"CUDA {torch.version.cuda}, cuDNN {cudnn or 'none'}"
        ampere = torch.cuda.get_device_capability(device)[0] >= 8
        tf32 = ", TF32 convolutions" if ampere and torch.backends.cudnn.allow_tf32 else ""
    else:
        threads = torch.get_num_threads()
        where = f"CPU {platform.machine()} ({os.cpu_count()} cores, {threads} torch threads)"
        stack, tf32 = "no CUDA", ""
    return f"{where}, torch {torch.__version__}, {stack}, {precision_name(amp)}{tf32}"
