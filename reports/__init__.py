"""Reports of suite runs: markdown and PDF with the paper's tables and Fig. 6/7-style charts.

Entry point: ``build_report(run_dir, formats=("md", "pdf"), out=None, reference=None)``.
The heavy imports (matplotlib, seaborn) happen on the first call, not on ``import reports``.
"""

from __future__ import annotations

from pathlib import Path

REFERENCE_HELP = (  # `ltbench report --reference`
    "the method the tables compare every other with (Δ with 95%% intervals); default: the "
    "suite's `reference:`, else ce when the run has it"
)


def build_report(run_dir, formats=("md", "pdf"), out=None, reference=None) -> dict[str, Path]:
    """Write report.md and/or report.pdf (and figures/*.png) for a suite output directory.

    ``formats``: "md", "pdf" or both (a list, or a comma-separated string); ``out``: directory
    or path prefix for the report files (default: ``run_dir``); ``reference``: the method the
    tables compare every other with (default: the run's recorded reference, else "ce" when the
    run has it). Returns {format: path}.
    Raises ``ltbench.errors.LtbenchError`` when ``run_dir`` has no results.csv or a CSV lacks
    a column of the contract in docs/DESIGN.md.
    """
    from reports.build import build_report as _build

    return _build(run_dir, formats=formats, out=out, reference=reference)


__all__ = ["REFERENCE_HELP", "build_report"]
