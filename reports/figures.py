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


def per_group_figure(
    groups: pd.DataFrame, setting: Setting, methods: list[str], path: Path, grouped: bool
) -> None:
    """Grouped bars of error per class/group for each method; error bars: std over seeds."""
    n_groups = int(groups["n_groups"].max())
    stats = (
        groups.groupby(["method", "group"])["error"]
        .agg(mean="mean", std=_std, n="count")
        .reset_index()
    )
    methods = [m for m in methods if m in set(stats["method"])]
    colours = _palette(methods)
    width = 0.8 / max(len(methods), 1)
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = new_figure(WIDE)
        ax = fig.add_subplot()
        x = np.arange(n_groups)
        for i, m in enumerate(methods):
            s = stats[stats["method"] == m].set_index("group").reindex(range(1, n_groups + 1))
            ax.bar(
                x - 0.4 + width * (i + 0.5),
                s["mean"],
                width,
                yerr=s["std"].fillna(0.0),
                label=m,
                color=colours[m],
                edgecolor="white",
                linewidth=0.4,
                error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#333333"},
            )
        ax.set_xticks(x, group_labels(n_groups, grouped))
        ax.set_xlim(-0.5, n_groups - 0.5)
        ymax = float((stats["mean"] + stats["std"].fillna(0)).max())
        ax.set_ylim(0, min(100.0, ymax * 1.15 + 1) if np.isfinite(ymax) else 100.0)
        if n_groups == N_GROUPS:
            for name, lo, hi, colour in PART_SPANS:
                ax.axvspan(lo, hi, color=colour, alpha=0.07, zorder=0)
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
        unit = "group of classes" if grouped else "class"
        ax.set_ylabel("top-1 error (%)")
        ax.set_xlabel(f"{unit}, most frequent first")
        ax.set_title(f"Per-{unit.split(' ')[0]} error, {setting.label}")
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
            title="method",
        )
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


def make_figures(data, fig_dir: Path) -> list[Figure]:
    """Write every figure a suite's data allows into ``fig_dir``; returns them in order.

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
        per_group_figure(g, s, methods, path, grouped)
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
                "finished seeds, error bars: std over seeds."
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
