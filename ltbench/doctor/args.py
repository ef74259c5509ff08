"""The flags of `ltbench doctor` (registered by `ltbench.cli`; the work is in
`ltbench.doctor.report` and `ltbench.doctor.selftest`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_doctor(args: argparse.Namespace) -> int:
    from ltbench.doctor.report import doctor_command

    return doctor_command(args)


def add_doctor_parser(sub) -> None:
    """`ltbench doctor` as a sub-command of `sub` (the CLI's subparsers)."""
    p = sub.add_parser(
        "doctor",
        help="show what this machine offers ltbench; --self-test runs every path it supports",
        description="The environment in one screen (versions, devices, CPUs, Ray, data roots, "
        "free disk) and what ltbench will do here by default. With --self-test: a short run of "
        "every code path the machine supports, each compared with its reference; exit 0 only "
        "when all pass.",
    )
    p.add_argument(
        "--self-test",
        action="store_true",
        help="train tiny runs on every supported path and compare each with its reference "
        "(a few minutes; BENCHMARKS.md has the measured times)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="the device shown and self-tested (default: CUDA where available)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="a Ray cluster (host:port of its head): show its resources and share them as "
        "`ltbench run --address` would",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder holding datasets (repeatable): which datasets ltbench finds in it",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="where runs will be written: its free disk is shown; the self-test trains in a "
        "temporary folder inside it and removes it (default: the current folder)",
    )
    p.add_argument(
        "--paths",
        default=None,
        metavar="P[,P2]",
        help="self-test only these paths (default: all); names as in the table: solo, amp, "
        "pack, cuda-graphs, data-parallel, two-stage, ray-tune",
    )
    p.set_defaults(func=cmd_doctor)
