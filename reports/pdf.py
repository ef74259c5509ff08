"""Render a ``Report`` as one PDF (matplotlib ``PdfPages``), A4 landscape pages.

Page order: title page, warnings (incomplete runs only), one page per table chunk, one page per
figure, the paper reference table. Tables are drawn as text: a table too wide for a page is
split between column groups (a dataset/ρ setting is never cut), one too long is split between
rows, and the row labels and headers repeat on every piece.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure as MplFigure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from reports.content import BEST, SECOND, Report, Table

PAGE = (11.69, 8.27)  # A4 landscape, inches
MARGIN = 0.6
BODY_PT = 9.0
NOTE_PT = 8.5
TITLE_PT = 14.0
META_PT = 10.5  # the title page's run details
ROW_IN = 0.24
PAD_IN = 0.18
STRIPE = "#f2f4f7"


@dataclass
class _Piece:
    """One page's share of a table: row and column index ranges."""

    cols: list[int]
    rows: list[int]
    part: str


_MEASURE = RendererAgg(10, 10, 72)  # at 72 dpi a width in pixels is a width in points
_BOLD = FontProperties(size=BODY_PT, weight="bold")


def text_width_in(text: str, size: float = BODY_PT) -> float:
    """Printed width of ``text`` in bold at ``size`` points (default BODY_PT), in inches."""
    if not text:
        return 0.0
    font = _BOLD if size == BODY_PT else FontProperties(size=size, weight="bold")
    w, _, _ = _MEASURE.get_text_width_height_descent(text, font, ismath=False)
    return w / 72


def _col_width(table: Table, j: int) -> float:
    texts = [table.columns[j].label] + [row[j].text for row in table.rows]
    return max(max(text_width_in(t) for t in texts) + PAD_IN, 0.5)


def _group_spans(table: Table) -> list[list[int]]:
    """Column indices (excluding the row-label column 0) in runs that share a group."""
    spans: list[list[int]] = []
    for j in range(1, len(table.columns)):
        g = table.columns[j].group
        if spans and g and table.columns[spans[-1][-1]].group == g:
            spans[-1].append(j)
        else:
            spans.append([j])
    return spans


def _wrap(lines: list[str], width_in: float, size_pt: float) -> list[str]:
    chars = max(20, int(width_in / (size_pt / 72 * 0.55)))
    out = []
    for line in lines:
        out += textwrap.wrap(line, chars) or [""]
    return out


def paginate(table: Table, page=PAGE, reserved_in: float = 0.0) -> list[_Piece]:
    """Split a table into page-sized pieces: first by column groups, then by rows.

    ``reserved_in`` is height already taken on the pages (e.g. by warning text above).
    """
    usable_w = page[0] - 2 * MARGIN
    widths = [_col_width(table, j) for j in range(len(table.columns))]
    col_chunks: list[list[int]] = [[]]
    used = widths[0]
    for span in _group_spans(table):
        w = sum(widths[j] for j in span)
        if col_chunks[-1] and used + w > usable_w:
            col_chunks.append([])
            used = widths[0]
        col_chunks[-1] += span
        used += w
    note_lines = len(_wrap(table.notes, usable_w, NOTE_PT))
    has_groups = any(c.group for c in table.columns)
    header_in = ROW_IN * (2 if has_groups else 1)
    avail = (
        page[1]
        - 2 * MARGIN
        - 0.55
        - reserved_in
        - header_in
        - 0.3
        - note_lines * NOTE_PT / 72 * 1.45
    )
    per_page = max(5, int(avail / ROW_IN))
    row_chunks = [
        list(range(i, min(i + per_page, len(table.rows))))
        for i in range(0, max(len(table.rows), 1), per_page)
    ]
    pieces = []
    total = len(col_chunks) * len(row_chunks)
    for ci, cols in enumerate(col_chunks):
        for ri, rows in enumerate(row_chunks):
            k = ci * len(row_chunks) + ri + 1
            part = f" (part {k} of {total})" if total > 1 else ""
            pieces.append(_Piece([0] + cols, rows, part))
    return pieces


class _Writer:
    def __init__(self, pdf: PdfPages, footer: str):
        self.pdf = pdf
        self.footer = footer
        self.pages = 0

    def new_page(self) -> MplFigure:
        fig = MplFigure(figsize=PAGE)
        FigureCanvasAgg(fig)  # gives text a renderer to measure against
        return fig

    def finish(self, fig: MplFigure) -> None:
        self.pages += 1
        fig.text(
            0.5,
            0.25 / PAGE[1],
            f"{self.footer}  ·  page {self.pages}",
            ha="center",
            va="bottom",
            fontsize=8,
            color="#555555",
        )
        self.pdf.savefig(fig)


def _x(inches: float) -> float:
    return inches / PAGE[0]


def _y(inches_from_top: float) -> float:
    return 1 - inches_from_top / PAGE[1]


def _text_block(fig, lines, top_in, size, **kw) -> float:
    """Draw lines from ``top_in`` down; returns the next free position (inches from top)."""
    step = size / 72 * 1.45
    for line in lines:
        fig.text(_x(MARGIN), _y(top_in), line, fontsize=size, va="top", ha="left", **kw)
        top_in += step
    return top_in


def _anchor(table: Table, j: int, k: int, left: float, width: float) -> tuple[str, float]:
    """Horizontal alignment and x (inches) of column j drawn at position k."""
    if k == 0 or table.columns[j].align == "left":
        return "left", left + 0.06
    return "center", left + width / 2


def _draw_table(fig: MplFigure, table: Table, piece: _Piece, top_in: float) -> float:
    widths = [_col_width(table, j) for j in piece.cols]
    lefts = [MARGIN]
    for w in widths[:-1]:
        lefts.append(lefts[-1] + w)
    total_w = sum(widths)
    renderer = fig.canvas.get_renderer()
    rule = {"color": "#222222", "linewidth": 0.9}

    def hline(y_in, lw=0.9):
        fig.add_artist(
            Line2D([_x(MARGIN), _x(MARGIN + total_w)], [_y(y_in)] * 2, **{**rule, "linewidth": lw})
        )

    hline(top_in, 1.2)
    y = top_in
    if any(table.columns[j].group for j in piece.cols):
        # group header row: one label centred over each run of columns with the same group
        runs: list[tuple[str, int, int]] = []
        for k, j in enumerate(piece.cols):
            g = table.columns[j].group
            if runs and g and runs[-1][0] == g:
                runs[-1] = (g, runs[-1][1], k)
            else:
                runs.append((g, k, k))
        for g, a, b in runs:
            if not g:
                continue
            x0, x1 = lefts[a], lefts[b] + widths[b]
            fig.text(
                _x((x0 + x1) / 2),
                _y(y + ROW_IN / 2),
                g,
                ha="center",
                va="center",
                fontsize=BODY_PT,
                fontweight="bold",
            )
            fig.add_artist(
                Line2D(
                    [_x(x0 + 0.05), _x(x1 - 0.05)],
                    [_y(y + ROW_IN - 0.02)] * 2,
                    lw=0.6,
                    color="#444444",
                )
            )
        y += ROW_IN
    for k, j in enumerate(piece.cols):
        ha, x = _anchor(table, j, k, lefts[k], widths[k])
        fig.text(
            _x(x),
            _y(y + ROW_IN / 2),
            table.columns[j].label,
            ha=ha,
            va="center",
            fontsize=BODY_PT,
            fontweight="bold",
        )
    y += ROW_IN
    hline(y, 0.8)
    for n, i in enumerate(piece.rows):
        if n % 2:
            fig.add_artist(
                Rectangle(
                    (_x(MARGIN), _y(y + ROW_IN)),
                    _x(total_w),
                    ROW_IN / PAGE[1],
                    facecolor=STRIPE,
                    edgecolor="none",
                    zorder=0,
                )
            )
        for k, j in enumerate(piece.cols):
            cell = table.rows[i][j]
            ha, x = _anchor(table, j, k, lefts[k], widths[k])
            bold = cell.mark in (BEST, SECOND)
            t = fig.text(
                _x(x),
                _y(y + ROW_IN / 2),
                cell.text,
                ha=ha,
                va="center",
                fontsize=BODY_PT,
                fontweight="bold" if bold else "normal",
            )
            if cell.mark == BEST:
                bb = t.get_window_extent(renderer).transformed(fig.transFigure.inverted())
                yy = bb.y0 - 0.012 / PAGE[1]
                fig.add_artist(Line2D([bb.x0, bb.x1], [yy, yy], color="black", linewidth=0.8))
        y += ROW_IN
    hline(y, 1.2)
    return y


def _warning_lines(report: Report) -> list[str]:
    return _wrap([f"• {s}" for s in report.warnings], PAGE[0] - 2 * MARGIN, 10)


def _warning_reserved(report: Report) -> float:
    """Height the warning sentences take above the problems table, in inches."""
    return 0.5 + len(_warning_lines(report)) * 10 / 72 * 1.45


def contents(report: Report) -> list[tuple[str, int]]:
    """(entry, first page) for every section of the PDF, in page order; also fixes the count."""
    entries: list[tuple[str, int]] = []
    page = 2
    if report.warnings or report.problems is not None:
        entries.append(("Warnings: incomplete run", page))
        if report.problems is not None:
            page += len(paginate(report.problems, reserved_in=_warning_reserved(report)))
        else:
            page += 1
    for i, t in enumerate(report.tables, start=1):
        entries.append((f"Table {i}: {t.title}", page))
        page += len(paginate(t))
    for f in report.figures:
        entries.append((f"Figure: {f.title}", page))
        page += 1
    if report.reference is not None:
        entries.append((report.reference.title, page))
        page += len(paginate(report.reference))
    entries.append(("", page))  # sentinel: one past the last page
    return entries


def _title_page(w: _Writer, report: Report, toc: list[tuple[str, int]]) -> None:
    fig = w.new_page()
    fig.text(0.5, _y(1.0), "ltbench report", ha="center", fontsize=24, fontweight="bold")
    suite = dict(report.meta).get("suite", "")
    fig.text(0.5, _y(1.5), suite, ha="center", fontsize=16)
    y = 2.0
    key_w = max(text_width_in(k, META_PT) for k, _ in report.meta) + 0.3
    for key, value in report.meta:
        fig.text(_x(1.5), _y(y), key, fontsize=META_PT, fontweight="bold", va="top")
        for line in textwrap.wrap(value, 100) or [""]:
            fig.text(_x(1.5 + key_w), _y(y), line, fontsize=META_PT, va="top")
            y += 0.22
    y += 0.2
    if report.warnings:
        fig.text(
            _x(1.5),
            _y(y),
            "WARNING: this run is incomplete; see page 2.",
            fontsize=12,
            fontweight="bold",
            color="#b00020",
            va="top",
        )
        y += 0.35
    fig.text(_x(1.5), _y(y), "Contents", fontsize=12, fontweight="bold", va="top")
    y += 0.3
    entries = toc[:-1]
    step = 0.19
    per_col = max(1, int((PAGE[1] - 0.7 - y) / step))
    n_cols = 2 if len(entries) > per_col else 1
    col_w = (PAGE[0] - 3.0) / n_cols
    chars = int(col_w / (9 / 72 * 0.55)) - 6
    for k, (entry, page) in enumerate(entries[: per_col * n_cols]):
        c, r = divmod(k, per_col)
        x0 = 1.5 + c * col_w
        text = entry if len(entry) <= chars else entry[: chars - 3] + "..."
        fig.text(_x(x0), _y(y + r * step), text, fontsize=9, va="top")
        fig.text(
            _x(x0 + col_w - 0.25), _y(y + r * step), str(page), fontsize=9, va="top", ha="right"
        )
    w.finish(fig)


def _warnings_pages(w: _Writer, report: Report) -> None:
    fig = w.new_page()
    fig.text(
        _x(MARGIN),
        _y(MARGIN),
        "Warnings: incomplete run",
        fontsize=TITLE_PT,
        fontweight="bold",
        color="#b00020",
        va="top",
    )
    y = _text_block(fig, _warning_lines(report), MARGIN + 0.5, 10)
    if report.problems is None:
        w.finish(fig)
        return
    for n, piece in enumerate(paginate(report.problems, reserved_in=_warning_reserved(report))):
        if n:
            fig = w.new_page()
            y = MARGIN + 0.5
        fig.text(
            _x(MARGIN),
            _y(y + 0.15),
            report.problems.title + piece.part,
            fontsize=11,
            fontweight="bold",
            va="top",
        )
        _draw_table(fig, report.problems, piece, y + 0.5)
        w.finish(fig)


def _table_pages(w: _Writer, table: Table, title: str) -> None:
    usable = PAGE[0] - 2 * MARGIN
    for piece in paginate(table):
        fig = w.new_page()
        fig.text(
            _x(MARGIN),
            _y(MARGIN),
            title + piece.part,
            fontsize=TITLE_PT - 1,
            fontweight="bold",
            va="top",
        )
        y = _draw_table(fig, table, piece, MARGIN + 0.55)
        _text_block(fig, _wrap(table.notes, usable, NOTE_PT), y + 0.2, NOTE_PT, color="#222222")
        w.finish(fig)


def _figure_page(w: _Writer, title: str, path: Path, caption: str) -> None:
    fig = w.new_page()
    fig.text(_x(MARGIN), _y(MARGIN), title, fontsize=TITLE_PT - 1, fontweight="bold", va="top")
    cap = _wrap([caption], PAGE[0] - 2 * MARGIN, 10)
    cap_h = len(cap) * 10 / 72 * 1.45
    img = mpimg.imread(path)
    top, bottom = MARGIN + 0.5, MARGIN + 0.3 + cap_h
    ax = fig.add_axes(
        [_x(MARGIN), bottom / PAGE[1], _x(PAGE[0] - 2 * MARGIN), (PAGE[1] - top - bottom) / PAGE[1]]
    )
    ax.imshow(img, interpolation="none")
    ax.set_axis_off()
    _text_block(fig, cap, PAGE[1] - bottom + 0.15, 10)
    w.finish(fig)


def write_pdf(report: Report, pdf_path: Path) -> int:
    """Write report.pdf; returns the number of pages."""
    toc = contents(report)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    suite = dict(report.meta).get("suite", "")
    with PdfPages(pdf_path) as pdf:
        d = pdf.infodict()
        d["Title"] = report.title
        d["Creator"] = "ltbench reports"
        w = _Writer(pdf, f"ltbench report  ·  {suite}")
        _title_page(w, report, toc)
        if report.warnings or report.problems is not None:
            _warnings_pages(w, report)
        for i, table in enumerate(report.tables, start=1):
            _table_pages(w, table, f"Table {i}: {table.title}")
        for f in report.figures:
            _figure_page(w, f.title, f.path, f.caption)
        if report.reference is not None:
            _table_pages(w, report.reference, report.reference.title)
    if w.pages != toc[-1][1] - 1:
        raise AssertionError(f"PDF has {w.pages} pages, contents planned {toc[-1][1] - 1}")
    return w.pages
