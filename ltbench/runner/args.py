"""The command-line flags of `ltbench run` and `ltbench sweep`.

Only the flags live here; `ltbench.runner.commands` turns the parsed `argparse.Namespace` into
a validated request (`RunRequest`, `SweepRequest`) in one place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ltbench.runner.presets import DEFAULT_PRESET, PRESETS

DEFAULT_SWEEP_SUITE = "kps-search"  # the suite `ltbench sweep` searches without --suite


def _comma_list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list, got {text!r}"
            ) from None

    return parse


def _add_common(p: argparse.ArgumentParser, default_suite: str | None) -> None:
    p.add_argument(
        "--suite",
        required=default_suite is None,
        default=default_suite,
        help="a suite in sweeps/ (see `ltbench list suites`) or a path to a YAML file",
    )
    p.add_argument(
        "--dataset",
        type=_comma_list(str),
        default=None,
        metavar="D[,D2]",
        help="replace the suite's datasets, e.g. synthetic-lt",
    )
    p.add_argument(
        "--rho",
        type=_comma_list(float),
        default=None,
        metavar="R[,R2]",
        help="replace the suite's imbalance ratios, e.g. 100,50",
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=DEFAULT_PRESET,
        help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()),
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="folder holding the datasets' files (CIFAR: torchvision's layout)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download CIFAR into --data-root if missing",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default: runs/<suite>[-<preset>]); on a multi-node "
        "cluster it must be on a filesystem shared by all nodes",
    )
    p.add_argument(
        "--address",
        default=None,
        help="join an existing Ray cluster (host:port of its head); default: start "
        "Ray on this machine",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        default=None,
        help="CPUs per trial (default: 1 without GPUs, else an even share)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs per trial, fractions allowed: 0.25 runs 4 separate trials on one GPU (--pack "
        "fuses them into one); a whole number "
        "G > 1 trains each trial data-parallel on G GPUs (G workers) "
        "(default: 1 if the cluster has GPUs, else 0)",
    )
    p.add_argument(
        "--workers-per-trial",
        type=int,
        default=None,
        metavar="N",
        help="train every trial data-parallel over N workers (DistributedDataParallel through "
        "Ray Train; the recipe's batch is split over them, each worker takes --cpus-per-trial "
        "and --gpus-per-trial); default: the suite's workers_per_trial, else 1",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="at most this many trials at once (default: as resources allow)",
    )
    p.add_argument(
        "--report",
        default="md,pdf",
        metavar="FORMATS",
        help="report formats written at the end: md, pdf, md,pdf (default) or none",
    )
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="log every trial to MLflow (Ray Tune's MLflowLoggerCallback): a file store in "
        "DIR/mlruns, or the tracking URI given (http://host:5000, file:/path, ...)",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options of `ltbench run`."""
    _add_common(p, None)
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="run seeds 0..N-1 (default: the suite's; smoke preset: 2)",
    )
    p.add_argument(
        "--with",
        dest="extra_methods",
        type=_comma_list(str),
        default=None,
        metavar="LOSS[,LOSS2]",
        help="add these methods (registered loss names, paper defaults) to the suite for this "
        "run, e.g. --with ce for a reference beside an ablation; the suite file is unchanged",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a suite in --out: run only the trials without a result",
    )
    p.add_argument(
        "--pack",
        type=int,
        default=None,
        metavar="K",
        help="train up to K trials that share data and schedule as one fused network, one "
        "Tune trial (default: the suite's `pack`, else 1: each alone); each keeps its folder",
    )
    p.add_argument(
        "--max-failures",
        type=int,
        default=1,
        help="retries of a failing trial before it counts as failed (default 1)",
    )


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """The options of `ltbench sweep`."""
    _add_common(p, DEFAULT_SWEEP_SUITE)
    p.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="points to try (default: the suite's; smoke preset: 4)",
    )
    p.add_argument(
        "--max-failures", type=int, default=0, help="retries of a failing trial (default 0)"
    )
