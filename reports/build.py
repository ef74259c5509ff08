"""``build_report``: one suite output directory -> report.md / report.pdf / figures/*.png."""

from __future__ import annotations

from pathlib import Path

from ltbench.errors import LtbenchError
from reports.collect import load_run, run_metadata
from reports.compare import Comparer
from reports.content import Report
from reports.figures import make_figures
from reports.judge import Judge, choose_reference, delta_table
from reports.markdown import write_markdown
from reports.paper import load_paper_numbers
from reports.pdf import write_pdf
from reports.problems import incomplete_warnings, problems_table
from reports.protocols import protocol_table
from reports.search import (
    grid_tables,
    selected_table,
    sweep_table,
    sweep_warnings,
    within_noise,
)
from reports.search_figures import space_figures
from reports.tables import reference_table, result_tables
from reports.validation_figures import validation_figures

FORMATS = ("md", "pdf")


def _formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = formats.split(",")
    wanted = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    if not wanted:
        raise LtbenchError(f"no report format given; choose from {', '.join(FORMATS)}")
    for f in wanted:
        if f not in FORMATS:
            raise LtbenchError(f"unknown report format {f!r}; choose from {', '.join(FORMATS)}")
    return wanted


def output_prefix(run_dir: Path, out: str | Path | None) -> Path:
    """Where report.<ext> goes, as a path without suffix.

    ``out`` ending in .md or .pdf is a file prefix: ``--out results/c10.pdf`` gives
    results/c10.md and results/c10.pdf. Any other ``out`` is a directory (created when
    needed) that receives report.md / report.pdf. Default: ``run_dir``.
    """
    if out is None:
        return run_dir / "report"
    path = Path(out)
    if path.suffix.lower() in (".md", ".pdf") and not path.is_dir():
        return path.with_suffix("")
    return path / "report"


def recorded_reference(suite: dict) -> str | None:
    """The reference DIR/suite.yaml records: its suite's `reference` (the suite file's key); a
    top-level `reference` is read too."""
    inner = suite.get("suite") if isinstance(suite.get("suite"), dict) else {}
    value = suite.get("reference") or inner.get("reference")
    return str(value) if value else None


def comparison_tables(data, paper, reference: str | None) -> tuple[list, str | None]:
    """The measured-results tables with their intervals and marks, and the Δ table of the
    head / mid / tail errors; returns (tables, the reference used)."""
    results = data.results
    ref = choose_reference(results, reference, recorded_reference(data.suite))
    comparer = Comparer(results, data.per_class, data.run_dir)
    tables = result_tables(results, paper, lambda labels: Judge(comparer, ref, labels))
    parts = [("head_error", "Δ head"), ("mid_error", "Δ mid"), ("tail_error", "Δ tail")]
    extra = delta_table(
        Judge(comparer, ref, dict(parts)),
        parts,
        f"Head / Mid / Tail error: Δ vs {ref} (points) with 95 % intervals",
        "parts-delta",
    )
    if extra is not None:
        at = next(i for i, t in enumerate(tables) if t.anchor == "parts") + 1
        tables.insert(at, extra)
    return tables, ref


def assemble(run_dir: str | Path, fig_dir: Path, reference: str | None = None) -> Report:
    """Read the run and build the ``Report`` (tables, warnings, figures written to fig_dir).

    A sweep directory (one with sweep.csv) is reported as a sweep, since its results.csv rows
    are search points of one method, not seeds to average: the best points by balanced
    validation error, the selected point, a grid's sensitivity tables, and the figures of
    ``reports.search_figures``; only failed points are listed as problems (early-stopped ones
    are expected). ``reference``: the method every other is compared with (see
    ``reports.judge.choose_reference``).
    """
    data = load_run(run_dir)
    paper = load_paper_numbers()
    results = data.results
    meta = run_metadata(data)
    if data.sweep is not None:
        sweep, params = data.sweep, data.sweep_params
        tables, warnings = [], ["sweep.csv lists no points: there is nothing to report."]
        if not sweep.empty:
            chosen = selected_table(sweep, results, params)
            noise = within_noise(data.run_dir, sweep)
            tables = [sweep_table(sweep, params, noise=noise), *([chosen] if chosen else [])]
            tables += grid_tables(sweep, params, noise)
            warnings = sweep_warnings(sweep)
        problems = problems_table(results, only=("failed",))
        figures = space_figures(data, fig_dir) + validation_figures(data, fig_dir)
    else:
        tables, ref = comparison_tables(data, paper, reference)
        tables += [t for t in [protocol_table(results, paper)] if t is not None]
        warnings = incomplete_warnings(results)
        problems = problems_table(results)
        figures = make_figures(data, fig_dir, ref)
    return Report(
        title=f"ltbench report: {dict(meta)['suite']}",
        meta=meta,
        warnings=warnings,
        problems=problems,
        tables=tables,
        figures=figures,
        reference=reference_table(paper),
    )


def build_report(run_dir, formats=FORMATS, out=None, reference=None) -> dict[str, Path]:
    """Write the report of a suite output directory; returns {format: path written}.

    ``formats``: any of "md", "pdf" (a list or a comma-separated string). ``out``: a directory
    or path prefix for report.md / report.pdf (default: ``run_dir``). Figures are written as
    PNG files to a ``figures`` folder next to the report files.
    Raises ``LtbenchError`` (one line) for a directory that is not a suite output directory.
    """
    wanted = _formats(formats)
    run_dir = Path(run_dir)
    prefix = output_prefix(run_dir, out)
    report = assemble(run_dir, prefix.parent / "figures", reference)
    written: dict[str, Path] = {}
    if "md" in wanted:
        written["md"] = write_markdown(report, prefix.with_name(prefix.name + ".md"))
    if "pdf" in wanted:
        pdf_path = prefix.with_name(prefix.name + ".pdf")
        write_pdf(report, pdf_path)
        written["pdf"] = pdf_path
    return written
