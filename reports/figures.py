"""Figures as PNG files: per-class/group error bars (the paper's Figs. 6 and 7) and training
curves; the helpers every figure uses (the search report's are in ``reports.search_figures``).

Figures are ``matplotlib.figure.Figure`` objects drawn by an explicit Agg canvas: no pyplot
state, so building a report never opens a window, leaks figures or changes the backend of the
caller's session.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from ltbench.schema import RAW_RULE
from reports.content import Figure
from reports.tables import (
    N_GROUPS,
    Setting,
    group_labels,
    methods_of,
    per_group_errors,
    settings_of,
)

DPI = 150
WIDE = (11.0, 4.8)  # inches: fits an A4 landscape page with margins
STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
}
PART_SPANS = (
    ("Head", -0.5, 2.5, "#4c72b0"),
    ("Mid", 2.5, 6.5, "#dd8452"),
    ("Tail", 6.5, 9.5, "#c44e52"),
)


def _palette(methods: list[str]) -> dict[str, tuple]:
    colours = sns.color_palette("tab10" if len(methods) <= 10 else "husl", len(methods))
    return dict(zip(methods, colours, strict=True))


def new_figure(figsize) -> MplFigure:
    fig = MplFigure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: MplFigure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if values.count() > 1 else math.nan


def _group_stats(groups: pd.DataFrame) -> pd.DataFrame:
    return (
        groups.groupby(["method", "group"])["error"]
        .agg(mean="mean", std=_std, n="count")
        .reset_index()
    )


def _spread_words(groups: pd.DataFrame) -> str:
    """What the error bars of a per-class figure show, given its methods' seed counts."""
    seeds = _group_stats(groups).groupby("method")["n"].max()
    if (seeds <= 1).all():
        return "no error bars (one seed each: no spread to show)"
    if (seeds <= 1).any():
        return "error bars: std over seeds (none for a method with one seed)"
    return "error bars: std over seeds"


def _draw_bars(ax, stats, methods, colours, n_groups, hatch=None) -> None:
    """Side-by-side bars of ``methods`` per group on ``ax``; error bars: std over seeds (none
    for a method with one seed: a zero-length bar would read as a spread of 0)."""
    width = 0.8 / max(len(methods), 1)
    x = np.arange(n_groups)
    for i, m in enumerate(methods):
        s = stats[stats["method"] == m].set_index("group").reindex(range(1, n_groups + 1))
        spread = {}
        if s["std"].notna().any():
            spread = {
                "yerr": s["std"].fillna(0.0),
                "error_kw": {"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#333333"},
            }
        ax.bar(
            x - 0.4 + width * (i + 0.5),
            s["mean"],
            width,
            label=m,
            color=colours[m],
            edgecolor="white",
            linewidth=0.4,
            hatch=(hatch or {}).get(m),
            **spread,
        )


def _shade_parts(ax, n_groups: int, labels: bool = True) -> None:
    """The Head / Mid / Tail spans of ten groups (nothing for another number of groups)."""
    if n_groups != N_GROUPS:
        return
    for name, lo, hi, colour in PART_SPANS:
        ax.axvspan(lo, hi, color=colour, alpha=0.07, zorder=0)
        if labels:
            ax.text(
                (lo + hi) / 2,
                0.97,
                name,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=11,
                fontweight="bold",
                color=colour,
            )
    for edge in (2.5, 6.5):
        ax.axvline(edge, color="#555555", linestyle="--", linewidth=0.8)


def per_group_figure(
    groups: pd.DataFrame,
    setting: Setting,
    methods: list[str],
    path: Path,
    grouped: bool,
    reference: str | None = None,
) -> None:
    """Bars of error per class/group; error bars: std over seeds. Without a reference (or
    with only the reference): all methods side by side in one panel. With one: a panel per
    other method, the reference's bars (grey, hatched) beside the method's."""
    n_groups = int(groups["n_groups"].max())
    stats = _group_stats(groups)
    methods = [m for m in methods if m in set(stats["method"])]
    others = [m for m in methods if m != reference]
    paired = reference in methods and bool(others)
    colours = _palette(methods)
    unit = "group of classes" if grouped else "class"
    ymax = float((stats["mean"] + stats["std"].fillna(0)).max())
    top = min(100.0, ymax * 1.15 + 1) if np.isfinite(ymax) else 100.0
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        if not paired:
            fig = new_figure(WIDE)
            axes = [fig.add_subplot()]
            panels = [methods]
        else:
            colours[reference] = (0.62, 0.62, 0.62)
            ncols = 1 if len(others) <= 2 else 2
            nrows = math.ceil(len(others) / ncols)
            fig = new_figure((WIDE[0], 1.0 + 2.6 * nrows))
            grid = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
            axes = list(grid.flat)
            panels = [[reference, m] for m in others]
            for ax in axes[len(panels) :]:
                ax.set_axis_off()
        for ax, panel in zip(axes, panels, strict=False):
            _draw_bars(ax, stats, panel, colours, n_groups, {reference: "//"} if paired else None)
            ticks = group_labels(n_groups, grouped)
            ax.set_xticks(np.arange(n_groups), ticks, fontsize=9 if not paired else 7)
            ax.set_xlim(-0.5, n_groups - 0.5)
            ax.set_ylim(0, top)
            _shade_parts(ax, n_groups, labels=not paired)  # paired: the ticks name the parts
            ax.set_ylabel("top-1 error (%)")
            if paired:
                ax.set_title(f"{panel[1]} (colour) beside {reference} (grey)", fontsize=10)
                ax.legend(loc="upper left", frameon=False, fontsize=8)
        if not paired:
            axes[0].set_xlabel(f"{unit}, most frequent first")
            axes[0].set_title(f"Per-{unit.split(' ')[0]} error, {setting.label}")
            axes[0].legend(
                loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="method"
            )
        else:
            fig.suptitle(
                f"Per-{unit.split(' ')[0]} error, {setting.label}: each method beside the "
                f"reference {reference} ({unit}, most frequent first)"
            )
            fig.tight_layout()
        save_figure(fig, path)


def curves_figure(curves: pd.DataFrame, setting: Setting, methods: list[str], path: Path) -> None:
    """Train loss and test error per epoch per method: mean over seeds with a ±1 std band."""
    methods = [m for m in methods if m in set(curves["method"])]
    colours = _palette(methods)
    panels = [("train_loss", "train loss"), ("test_top1_error", "test top-1 error (%)")]
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = new_figure(WIDE)
        axes = fig.subplots(1, 2)
        for ax, (col, label) in zip(axes, panels, strict=True):
            for m in methods:
                c = curves[curves["method"] == m]
                s = c.groupby("epoch")[col].agg(mean="mean", std=_std).dropna(subset=["mean"])
                if s.empty:
                    continue
                ax.plot(s.index, s["mean"], color=colours[m], label=m, linewidth=1.4)
                band = s["std"].fillna(0.0)
                ax.fill_between(
                    s.index, s["mean"] - band, s["mean"] + band, color=colours[m], alpha=0.18
                )
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(label)
        handles, labels = axes[0].get_legend_handles_labels()
        if not handles:
            handles, labels = axes[1].get_legend_handles_labels()
        fig.suptitle(f"Training curves, {setting.label} (mean over seeds, band: ±1 std)")
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.tight_layout()
        save_figure(fig, path)


def make_figures(data, fig_dir: Path, reference: str | None = None) -> list[Figure]:
    """Write every figure a suite's data allows into ``fig_dir``; returns them in order.
    ``reference``: the method whose bars the per-class chart draws beside each other method's.

    A sweep's figures are ``reports.search_figures.sweep_figures`` (its trials are search
    points, not methods).
    """
    out: list[Figure] = []
    results = data.results
    methods = methods_of(results)
    settings = settings_of(results)
    finished = set(data.finished["trial"])

    groups = None
    if data.per_class is not None and finished:
        groups = per_group_errors(data.per_class, finished)
    for s in settings:
        if groups is None or groups.empty:
            break
        g = groups[(groups["dataset"] == s.dataset) & _rho_match(groups["rho"], s.rho)]
        if g.empty:
            continue
        n_classes = _n_classes(data.per_class, g["trial"].iloc[0])
        grouped = n_classes > N_GROUPS
        kind = "group" if grouped else "class"
        path = fig_dir / f"per_{kind}_{s.slug}.png"
        per_group_figure(g, s, methods, path, grouped, reference)
        parts = int(g["n_groups"].max()) == N_GROUPS
        what = (
            f"{N_GROUPS} groups of about {n_classes // N_GROUPS} classes"
            if grouped
            else f"{n_classes} classes"
        )
        out.append(
            Figure(
                f"Per-{kind} error, {s.label}",
                path,
                f"Top-1 error per {kind} ({what}, sorted by training count, most frequent "
                "first) for each method, as in the paper's Figs. 6 and 7; bars: mean over "
                f"finished seeds, {_spread_words(g)}."
                + (
                    f" One panel per method, the reference {reference}'s bars (grey, hatched) "
                    "beside its own."
                    if reference in set(g["method"]) and len(set(g["method"])) > 1
                    else ""
                )
                + (" Shaded: Head (1-3), Mid (4-7), Tail (8-10)." if parts else ""),
            )
        )

    curves = data.curves
    for s in settings:
        if curves is None:
            break
        c = curves[(curves["dataset"] == s.dataset) & _rho_match(curves["rho"], s.rho)]
        if c.empty or c[["train_loss", "test_top1_error"]].isna().all().all():
            continue
        path = fig_dir / f"curves_{s.slug}.png"
        curves_figure(c, s, methods, path)
        out.append(
            Figure(
                f"Training curves, {s.label}",
                path,
                "Train loss and test top-1 error per epoch (metrics.jsonl of finished trials); "
                "line: mean over seeds, band: ±1 std.",
            )
        )

    return out


def _rho_match(col: pd.Series, rho: float) -> pd.Series:
    if math.isnan(rho):
        return col.isna()
    return col == rho


def _n_classes(per_class: pd.DataFrame, trial: str) -> int:
    """The trial's number of classes (one row per class of its trained model, `raw` rule)."""
    rows = per_class["trial"] == trial
    if "rule" in per_class:
        rows &= per_class["rule"] == RAW_RULE
    return int(rows.sum())
