"""Figures as PNG files: per-class/group error bars (the paper's Figs. 6 and 7), training curves
and the sweep's error over its searched parameters (a heat map for two or more, a curve for one).

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
from matplotlib.patches import Rectangle

from ltbench.schema import sweep_params
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


def _new_figure(figsize) -> MplFigure:
    fig = MplFigure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: MplFigure, path: Path) -> None:
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
        fig = _new_figure(WIDE)
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
        _save(fig, path)


def curves_figure(curves: pd.DataFrame, setting: Setting, methods: list[str], path: Path) -> None:
    """Train loss and test error per epoch per method: mean over seeds with a ±1 std band."""
    methods = [m for m in methods if m in set(curves["method"])]
    colours = _palette(methods)
    panels = [("train_loss", "train loss"), ("test_top1_error", "test top-1 error (%)")]
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = _new_figure(WIDE)
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
        _save(fig, path)


def _interval_label(iv: pd.Interval) -> str:
    return f"{iv.left:.3g}-{iv.right:.3g}"


def _best_text(best: pd.Series, params: list[str], key: str) -> str:
    values = ", ".join(f"{p}={_axis_value(best[p])}" for p in params)
    return f"{values}, {best[key]:.2f}%"


def _axis_value(v) -> str:
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def sweep_figure(sweep: pd.DataFrame, path: Path, params: list[str] | None = None) -> str | None:
    """The sweep's validation error over its searched parameters; returns a caption.

    ``params``: the searched parameters in order (default: sweep.csv's columns that are not
    fixed ones). Two or more: a heat map over the first two (`heat_map`); one: the error
    against it (`error_curve`). None when nothing finished or nothing was searched.
    """
    params = list(params) if params is not None else sweep_params({}, sweep.columns)
    if not params:
        return None
    fin = sweep[sweep["status"] == "finished"].copy()
    key = "val_top1_error" if fin["val_top1_error"].notna().any() else "test_top1_error"
    axes = params[:2]
    fin = fin.dropna(subset=[key, *axes])
    if fin.empty:
        return None
    if len(axes) == 1:
        return error_curve(fin, axes[0], key, path)
    caption = heat_map(fin, axes[0], axes[1], key, path, others=tuple(params[2:]))
    if len(params) > 2:
        caption += (
            f" The sweep searched {len(params)} parameters ({', '.join(params)}); the map shows "
            f"the first two, so each cell averages over the other "
            f"{'one' if len(params) == 3 else 'ones'}."
        )
    return caption


def error_curve(fin: pd.DataFrame, param: str, key: str, path: Path) -> str:
    """Error of the finished points against one searched parameter; the best point in red.

    Values on a grid (at most 12 distinct) are joined by the line of their mean error.
    """
    what = "validation" if key == "val_top1_error" else "test"
    best = fin.loc[fin[key].idxmin()]
    on_grid = fin[param].nunique() <= 12
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = _new_figure((8.5, 5.0))
        ax = fig.add_subplot()
        ax.scatter(fin[param], fin[key], color="#4c72b0", s=24, alpha=0.8, label="point")
        if on_grid:
            means = fin.groupby(param)[key].mean().sort_index()
            ax.plot(means.index, means.values, color="#4c72b0", linewidth=1.2, label="mean")
        ax.scatter([best[param]], [best[key]], color="red", s=80, zorder=3, label="best")
        ax.set_xlabel(param)
        ax.set_ylabel(f"{what} top-1 error (%)")
        ax.set_title(f"Sweep: {what} error against {param}\nbest: {_best_text(best, [param], key)}")
        ax.legend(loc="best", frameon=False)
        _save(fig, path)
    line = " The line joins the mean error of each value." if on_grid else ""
    return (
        f"{what.capitalize()} top-1 error against {param} for {len(fin)} finished points; "
        f"the best point ({_best_text(best, [param], key)}) is marked in red.{line}"
    )


def heat_map(
    fin: pd.DataFrame,
    row_param: str,
    col_param: str,
    key: str,
    path: Path,
    others: tuple[str, ...] = (),
) -> str:
    """Heat map of the error over two searched parameters; the best point is boxed.

    Values on a grid (at most 12 distinct of each) are used as they are; scattered values
    (random or Bayesian search) are binned into at most 8 ranges per axis and each bin shows
    the mean error of its points. ``others``: further searched parameters, which a cell
    averages over (the best point's text names their values too).
    """
    fin = fin.copy()
    best = fin.loc[fin[key].idxmin()]
    on_grid = fin[row_param].nunique() <= 12 and fin[col_param].nunique() <= 12
    if on_grid:
        fin["_row"], fin["_col"] = fin[row_param], fin[col_param]
        best_r, best_c = best[row_param], best[col_param]
    else:
        fin["_row"] = pd.cut(fin[row_param], bins=min(8, fin[row_param].nunique()))
        fin["_col"] = pd.cut(fin[col_param], bins=min(8, fin[col_param].nunique()))
        best_r, best_c = fin.loc[best.name, "_row"], fin.loc[best.name, "_col"]
    grid = fin.pivot_table(
        index="_row", columns="_col", values=key, aggfunc="mean", observed=False
    ).sort_index(ascending=False)
    row = list(grid.index).index(best_r)
    col = list(grid.columns).index(best_c)
    if not on_grid:
        grid.index = [_interval_label(i) for i in grid.index]
        grid.columns = [_interval_label(i) for i in grid.columns]
    else:
        grid.index = [f"{v:g}" for v in grid.index]
        grid.columns = [f"{v:g}" for v in grid.columns]
    what = "validation" if key == "val_top1_error" else "test"
    shown = _best_text(best, [row_param, col_param, *others], key)
    mean = "" if on_grid and not others else ", bin mean" if not others else ", cell mean"
    with sns.axes_style("white"), matplotlib.rc_context(STYLE):
        fig = _new_figure((8.5, 6.0))
        ax = fig.add_subplot()
        sns.heatmap(
            grid,
            ax=ax,
            annot=grid.size <= 150,
            fmt=".2f" if grid.size <= 40 else ".1f",
            cmap="viridis_r",
            cbar_kws={"label": f"{what} top-1 error (%){mean}"},
            linewidths=0.5,
            linecolor="white",
            annot_kws={"fontsize": 8},
        )
        ax.add_patch(Rectangle((col, row), 1, 1, fill=False, edgecolor="red", linewidth=3))
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_xlabel(col_param + ("" if on_grid else " (binned)"))
        ax.set_ylabel(row_param + ("" if on_grid else " (binned)"))
        ax.set_title(f"Sweep: {what} error over {row_param} x {col_param}\nbest (red box): {shown}")
        _save(fig, path)
    mean_note = "" if on_grid else " Points are binned; each bin shows the mean of its points."
    return (
        f"{what.capitalize()} top-1 error over {row_param} x {col_param} for {len(fin)} "
        f"finished points; the best point ({shown}) is boxed in red.{mean_note}"
    )


def make_figures(data, fig_dir: Path, sweep_only: bool = False) -> list[Figure]:
    """Write every figure the run's data allows into ``fig_dir``; returns them in order.

    ``sweep_only``: just the sweep figure (a sweep's trials are search points, not methods).
    """
    out: list[Figure] = []
    if sweep_only:
        return _sweep_figures(data, fig_dir)
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

    return out + _sweep_figures(data, fig_dir)


def _sweep_figures(data, fig_dir: Path) -> list[Figure]:
    if data.sweep is None or data.sweep.empty:
        return []
    params = data.sweep_params
    two = len(params) >= 2
    path = fig_dir / ("sweep_heatmap.png" if two else "sweep_curve.png")
    caption = sweep_figure(data.sweep, path, params)
    title = "Sweep heat map" if two else f"Sweep: error against {params[0] if params else '-'}"
    return [Figure(title, path, caption)] if caption else []


def _rho_match(col: pd.Series, rho: float) -> pd.Series:
    if math.isnan(rho):
        return col.isna()
    return col == rho


def _n_classes(per_class: pd.DataFrame, trial: str) -> int:
    return int((per_class["trial"] == trial).sum())
