"""Render a ``Report`` as GitHub-flavoured markdown (tables through tabulate)."""

from __future__ import annotations

import os
from pathlib import Path

from tabulate import tabulate

from reports.content import BEST, SECOND, Cell, Report, Table


def cell_markdown(cell: Cell) -> str:
    """Markdown of a cell: best is underlined bold, second best bold (the paper's marks)."""
    if not cell.text:
        return ""
    if cell.mark == BEST:
        return f"<u>**{cell.text}**</u>"
    if cell.mark == SECOND:
        return f"**{cell.text}**"
    return cell.text


def header_labels(table: Table) -> list[str]:
    """One header row: a column group's name is written on its first column."""
    labels, previous = [], None
    for col in table.columns:
        if col.group and col.group != previous:
            labels.append(f"{col.group}: {col.label}")
        else:
            labels.append(col.label)
        previous = col.group
    return labels


def table_markdown(table: Table, number: int | None = None) -> str:
    """A titled markdown table followed by its notes."""
    title = f"Table {number}: {table.title}" if number else table.title
    body = tabulate(
        [[cell_markdown(c) for c in row] for row in table.rows],
        headers=header_labels(table),
        tablefmt="github",
        disable_numparse=True,
    )
    notes = "\n".join(f"- {n}" for n in table.notes)
    return f"### {title}\n\n{body}\n\n{notes}\n".rstrip() + "\n"


def render_markdown(report: Report, md_path: Path) -> str:
    """The whole report as markdown; figure links are relative to ``md_path``'s folder."""
    parts = [f"# {report.title}\n"]
    parts.append(
        tabulate(report.meta, headers=["", ""], tablefmt="github", disable_numparse=True) + "\n"
    )
    if report.warnings or report.problems is not None:
        parts.append("## Warnings: incomplete run\n")
        parts.append("\n".join(f"- **{w}**" for w in report.warnings) + "\n")
        if report.problems is not None:
            parts.append(table_markdown(report.problems))
    parts.append("## Results\n")
    for i, table in enumerate(report.tables, start=1):
        parts.append(table_markdown(table, i))
    if report.figures:
        parts.append("## Figures\n")
        for fig in report.figures:
            rel = Path(os.path.relpath(fig.path, md_path.parent)).as_posix()
            parts.append(f"### {fig.title}\n\n![{fig.title}]({rel})\n\n{fig.caption}\n")
    if report.reference is not None:
        parts.append("## Paper reference\n")
        parts.append(table_markdown(report.reference))
    return "\n".join(parts)


def write_markdown(report: Report, md_path: Path) -> Path:
    """Write report.md and return its path."""
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render_markdown(report, md_path), encoding="utf-8")
    return md_path
