"""The report as data: tables of marked cells, figures and warnings.

Both writers (markdown and PDF) render the same ``Report``, so what one shows the other shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BEST = "best"  # the paper's underline bold
SECOND = "second"  # the paper's bold


@dataclass
class Cell:
    """One table cell: its text and an optional best / second-best mark."""

    text: str
    mark: str = ""


@dataclass(frozen=True)
class Column:
    """A column header; ``group`` (e.g. "cifar10-lt ρ=100") spans neighbouring columns."""

    label: str
    group: str = ""
    align: str = "center"  # "left" for long free text


@dataclass
class Table:
    """A titled table; the first column holds the row labels."""

    title: str
    columns: list[Column]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    anchor: str = ""  # short id for file names and links


@dataclass
class Figure:
    """A PNG written under the report's figures folder."""

    title: str
    path: Path
    caption: str = ""


@dataclass
class Report:
    """Everything both writers render, in reading order."""

    title: str
    meta: list[tuple[str, str]]
    warnings: list[str]
    problems: Table | None
    tables: list[Table]
    figures: list[Figure]
    reference: Table | None = None
