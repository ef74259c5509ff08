"""`ltbench doctor`: the environment in one screen, and what ltbench will do here by default.

Every default shown is the engine's or the runner's own decision, asked of the function that
makes it (`step_options`, `check_fusion`, the `paper` preset, `share_resources`), never a copy
of its rule. Ray is reached through `ltbench.runner.ray_adapter` only.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ltbench.errors import LtbenchError

COUNT_FILES_UP_TO = 100
PATH_NAMES = ("solo", "amp", "pack", "cuda-graphs", "data-parallel", "two-stage", "ray-tune")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software_lines() -> list[str]:
    """Python, torch, torchvision, CUDA, cuDNN and Ray versions."""
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [
        f"python        {platform.python_version()} ({platform.python_implementation()}, "
        f"{platform.platform()})",
        f"torch         {torch.__version__}   torchvision {_version('torchvision')}",
        f"CUDA          {torch.version.cuda or 'none (CPU build)'}   cuDNN {cudnn or 'none'}",
        f"ltbench       {_version('ltbench')}   ray {_version('ray')}",
    ]


def device_lines() -> list[str]:
    """Each CUDA device with its memory, bf16 and TF32; the CPU with its cores and threads."""
    import torch

    from ltbench.engine.step import fast_bf16
    from ltbench.runner.cluster import local_cpus

    lines = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        ampere = torch.cuda.get_device_capability(i)[0] >= 8
        lines.append(
            f"cuda:{i}        {props.name}, {_gib(total)} ({_gib(free)} free), "
            f"capability {props.major}.{props.minor}, bf16 "
            f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}, TF32 "
            f"{'yes' if ampere else 'no (before Ampere)'} (convolutions "
            f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}, matmul "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})"
        )
    if not lines:
        lines.append("cuda          no CUDA device")
    amx = fast_bf16(torch.device("cpu"))
    lines.append(
        f"cpu           {_cpu_name()}: {os.cpu_count()} cores, {local_cpus()} usable by this "
        f"process, torch threads {torch.get_num_threads()} (OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}), fast bf16 (AMX) {'yes' if amx else 'no'}"
    )
    return lines


def _split_contents(folder: Path) -> str:
    """What one image-folder split holds: its class folders, and their files where there are
    at most `COUNT_FILES_UP_TO` classes (CIFAR; ImageNet's 1.2M files would take long)."""
    classes = [e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
    if len(classes) > COUNT_FILES_UP_TO:
        return f"{folder.name}/: {len(classes)} classes"
    files = sum(1 for c in classes for f in os.scandir(c) if f.is_file())
    return f"{folder.name}/: {len(classes)} classes, {files} files"


def data_lines(roots: list[Path]) -> list[str]:
    """Which datasets each `--data-root` holds (the registry's own file checks, no image
    read), the built-in ones, and the decoded-image cache."""
    from ltbench.data.files import default_cache_dir
    from ltbench.data.registry import DATASETS, check_files

    built_in = [name for name, spec in DATASETS.items() if spec.built_in]
    lines = [f"data          built in (no root needed): {', '.join(built_in)}"]
    if not roots:
        lines.append("data root     none given (--data-root DIR shows what a folder holds)")
    for root in roots:
        if not root.is_dir():
            lines.append(f"data root     {root}: not a folder")
            continue
        found = []
        for name, spec in DATASETS.items():
            if spec.built_in:
                continue
            try:
                check_files(name, root=root, imb_factor=spec.recipe.imb_factor)
            except LtbenchError:
                continue
            found.append(name)
        splits = [s for s in ("train", "test") if (root / s).is_dir()]
        counts = ", ".join(_split_contents(root / s) for s in splits)
        held = ", ".join(found) if found else "no dataset ltbench knows"
        lines.append(f"data root     {root}: {held}" + (f" ({counts})" if counts else ""))
    cache = default_cache_dir()
    cached = sorted(p.name for p in cache.glob("*.npz")) if cache.is_dir() else []
    size = sum((cache / n).stat().st_size for n in cached)
    lines.append(
        f"image cache   {cache} ($LTBENCH_CACHE): {len(cached)} decoded splits, {_gib(size)}"
    )
    return lines


def disk_line(out: Path) -> str:
    """Free disk where runs will be written (the nearest folder of `out` that exists)."""
    where = out.resolve()
    while not where.exists():
        where = where.parent
    usage = shutil.disk_usage(where)
    return f"disk          {_gib(usage.free)} free of {_gib(usage.total)} at {where}"


def cluster_totals(address: str | None, gpus_here: int) -> tuple[float, float, float, str]:
    """(total CPUs, total GPUs, CPUs of the largest node, a line): the cluster at `address`
    (asked of Ray), or the Ray that `ltbench run` would start on this machine."""
    from ltbench.runner.cluster import local_cpus

    if address is None:
        cpus = float(local_cpus())
        line = f"ray           no --address: `ltbench run` starts Ray here ({cpus:g} CPUs, "
        return cpus, float(gpus_here), cpus, line + f"{gpus_here} GPUs)"
    from ltbench.runner.ray_adapter import cluster_resources

    total, nodes = cluster_resources(address)
    cpu, gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
    node_cpu = max((n.get("CPU", 0.0) for n in nodes), default=cpu)
    plural = "" if len(nodes) == 1 else "s"
    line = f"ray cluster   {address}: {len(nodes)} node{plural}, {cpu:g} CPUs, {gpu:g} GPUs"
    return cpu, gpu, node_cpu, line


def default_lines(device, address: str | None) -> list[str]:
    """What ltbench does here by default: precision, layout, pack fusion, trials side by side."""
    import torch

    from ltbench.engine.config import TrainConfig
    from ltbench.engine.fuse import check_fusion
    from ltbench.engine.identity import precision_name
    from ltbench.engine.step import step_options
    from ltbench.runner.cluster import share_resources
    from ltbench.runner.presets import PRESETS

    amp, channels_last = step_options(TrainConfig(), device)
    paper_amp = PRESETS["paper"].overrides.get("amp", amp)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    total_cpu, total_gpu, node_cpu, ray_line = cluster_totals(address, gpus)
    share = share_resources(total_cpu, total_gpu, node_cpu, None, None)
    side = math.floor(total_cpu / share["cpu"] + 1e-9)
    if share["gpu"] > 0:
        side = min(side, math.floor(total_gpu / share["gpu"] + 1e-9))
    return [
        ray_line,
        f"precision     `ltbench train`: {precision_name(amp)}; `ltbench run --preset paper`: "
        f"{precision_name(paper_amp)}; layout {'channels-last' if channels_last else 'NCHW'}",
        f"pack fusion   {check_fusion('auto', device)} (`--pack K` on {device.type})",
        f"trials        {side} side by side ({share['cpu']:g} CPU, {share['gpu']:g} GPU each; "
        "--cpus-per-trial / --gpus-per-trial change it)",
    ]


def doctor_command(args: argparse.Namespace) -> int:
    """`ltbench doctor [--self-test]`: print the environment; with --self-test, the table of
    paths and exit 1 unless every path passed."""
    from ltbench.engine.checkpoint import environment_summary
    from ltbench.engine.config import TrainConfig
    from ltbench.engine.step import pick_device, step_options

    paths = _paths(args.paths)
    if args.out.exists() and not args.out.is_dir():
        raise LtbenchError(f"--out {args.out} is a file; give a folder (new or existing)")
    device = pick_device(args.device)
    amp, _ = step_options(TrainConfig(), device)
    print(f"ltbench doctor: {environment_summary(device, amp=amp)}")
    for line in software_lines() + device_lines() + data_lines(list(args.data_root)):
        print(line)
    print(disk_line(args.out))
    print(f"\ndefaults here (device {device.type}):")
    for line in default_lines(device, args.address):
        print(line)
    if not args.self_test:
        return 0
    from ltbench.doctor.selftest import format_table, self_test

    rows = self_test(device, args.out, paths=paths, address=args.address)
    print()
    print(format_table(rows))
    failed = [r.path for r in rows if r.verdict == "FAIL"]
    print(f"\nself-test: {'FAILED: ' + ', '.join(failed) if failed else 'every path passed'}")
    return 1 if failed else 0


def _paths(text: str | None) -> tuple[str, ...]:
    if text is None:
        return PATH_NAMES
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in names if p not in PATH_NAMES]
    if bad or not names:
        raise LtbenchError(f"--paths {text!r}: unknown path; allowed: {', '.join(PATH_NAMES)}")
    return names
