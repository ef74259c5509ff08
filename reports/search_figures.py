"""The search report's figures over the search space (the figures that check the validation
error against the test error are in ``reports.validation_figures``):

1. Every tried point over the search space, coloured by its balanced validation error; finished
   and early-stopped points told apart, the selected point ringed (`sweep_figure`). One
   searched parameter: the error against it.
2. A heat map, only where the points form a full grid (`heat_map`).

The selected point is `reports.search.selected` (`ltbench.schema.select_best`). The helpers
here (colours, point labels) are shared with ``reports.validation_figures``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from ltbench.schema import sweep_params
from reports.content import Figure
from reports.figures import STYLE, new_figure, save_figure
from reports.search import LABELS, grid_axes, selected, selection_metric

CMAP = "viridis_r"  # low error: yellow, high: dark
SELECTED = "#d62728"


def ring_selected(ax, x, y, *, size: float = 260, width: float = 2.2) -> None:
    """Ring the selected point (the same mark in every search figure)."""
    ax.scatter(
        [x], [y], s=size, facecolors="none", edgecolors=SELECTED, linewidths=width,
        label="selected", zorder=4,
    )  # fmt: skip


ANNOTATE_UP_TO = 24  # points: write each point's error next to it up to this many


def value_text(v) -> str:
    """A parameter's value with three significant digits."""
    try:
        return f"{float(v):.3g}"
    except (TypeError, ValueError):
        return str(v)


def point_text(row: pd.Series, params: list[str]) -> str:
    """A point as `m_max=0.4, s_base=15`."""
    return ", ".join(f"{p}={value_text(row[p])}" for p in params)


def _status_groups(pts: pd.DataFrame, key: str):
    """(finished with a value, stopped with a value, the rest) of the tried points."""
    has = pts[key].notna()
    fin = pts[(pts["status"] == "finished") & has]
    stp = pts[(pts["status"] == "stopped") & has]
    rest = pts[~pts.index.isin(fin.index.union(stp.index))]
    return fin, stp, rest


# ----------------------------------------------------------------------------------------------
# 1. The tried points over the search space


def sweep_figure(sweep: pd.DataFrame, path: Path, params: list[str] | None = None) -> str | None:
    """Every tried point over the searched parameters, coloured by its balanced validation
    error; returns a caption, or None when no point has a validation error.

    Two or more parameters: a scatter over the first two. One: the error against it.
    """
    params = list(params) if params is not None else sweep_params({}, sweep.columns)
    key = selection_metric(sweep)
    if not params or key is None:
        return None
    pts = sweep.dropna(subset=params[:2])
    if pts[key].notna().sum() == 0:
        return None
    if len(params) == 1:
        return error_curve(pts, params[0], key, path, selected(sweep))
    return points_map(pts, params, key, path, selected(sweep))


def legend_below(ax, ncol: int = 4) -> None:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=ncol, frameon=False, fontsize=9)


def points_map(
    pts: pd.DataFrame, params: list[str], key: str, path: Path, best: pd.Series | None
) -> str:
    """Scatter of the tried points over the first two parameters; colour: `key`."""
    x_p, y_p = params[:2]
    fin, stp, rest = _status_groups(pts, key)
    # the colours span the finished points; worse early-stopped ones take the darkest colour
    shown = fin[key] if len(fin) else stp[key]
    norm = Normalize(float(shown.min()), float(shown.max()) + 1e-9)
    beyond = bool(len(stp) and stp[key].max() > shown.max())
    label = LABELS[key]
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = new_figure((9.0, 6.4))
        ax = fig.add_subplot()
        kw = dict(cmap=CMAP, norm=norm, edgecolors="black", linewidths=0.6, zorder=3)
        sc = ax.scatter(fin[x_p], fin[y_p], c=fin[key], s=90, marker="o", label="finished", **kw)
        if len(stp):
            stopped = ax.scatter(
                stp[x_p],
                stp[y_p],
                c=stp[key],
                s=70,
                marker="v",
                alpha=0.85,
                label="stopped early (value at its last epoch)",
                **kw,
            )
        if len(rest):
            ax.scatter(
                rest[x_p],
                rest[y_p],
                s=60,
                marker="x",
                color="#7f7f7f",
                linewidths=1.5,
                label="failed / not run",
                zorder=3,
            )
        if best is not None:
            ring_selected(ax, best[x_p], best[y_p], size=420, width=2.4)
        if len(fin) + len(stp) <= ANNOTATE_UP_TO:
            for df in (fin, stp):
                for _, r in df.iterrows():
                    ax.annotate(
                        f"{r[key]:.1f}",
                        (r[x_p], r[y_p]),
                        xytext=(7, 6),
                        textcoords="offset points",
                        fontsize=8,
                        color="#333333",
                    )
        cbar = fig.colorbar(
            sc if len(fin) else stopped, ax=ax, pad=0.02, extend="max" if beyond else "neither"
        )
        cbar.set_label(f"{label} (%)")
        ax.set_xlabel(x_p)
        ax.set_ylabel(y_p)
        title = f"Sweep: every tried point over {x_p} x {y_p}"
        if best is not None:
            title += f"\nselected: {point_text(best, params)}, {best[key]:.2f}%"
        ax.set_title(title)
        legend_below(ax)
        fig.tight_layout()
        save_figure(fig, path)
    text = (
        f"Every tried point over {x_p} x {y_p} ({len(fin)} finished points, {len(stp)} stopped "
        f"early, {len(rest)} failed or not run), coloured by its {label} (finished: circles; "
        "stopped early by ASHA: triangles, coloured by the value at their last epoch; failed: "
        "grey crosses)."
    )
    if best is not None:
        text += f" The selected point ({point_text(best, params)}) is ringed in red."
    if len(params) > 2:
        text += (
            f" The sweep searched {len(params)} parameters ({', '.join(params)}); the plot shows "
            "the first two, so points that differ only in the others overlap."
        )
    return text


def error_curve(pts: pd.DataFrame, param: str, key: str, path: Path, best: pd.Series | None) -> str:
    """The validation error of every tried point against one searched parameter."""
    fin, stp, rest = _status_groups(pts, key)
    on_grid = pts[param].nunique() <= 12
    label = LABELS[key]
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = new_figure((8.5, 5.4))
        ax = fig.add_subplot()
        ax.scatter(fin[param], fin[key], color="#4c72b0", s=40, label="finished", zorder=3)
        if len(stp):
            ax.scatter(
                stp[param],
                stp[key],
                color="#dd8452",
                marker="v",
                s=40,
                label="stopped early (last epoch)",
                zorder=3,
            )
        if on_grid and len(fin):
            means = fin.groupby(param)[key].mean().sort_index()
            ax.plot(means.index, means.values, color="#4c72b0", linewidth=1.2, label="mean")
        if len(rest):
            ax.scatter(
                rest[param],
                np.full(len(rest), 0.97),
                transform=ax.get_xaxis_transform(),
                marker="x",
                color="#7f7f7f",
                label="failed / not run",
            )
        if best is not None:
            ring_selected(ax, best[param], best[key], size=260, width=2.2)
        ax.set_xlabel(param)
        ax.set_ylabel(f"{label} (%)")
        title = f"Sweep: {label} against {param}"
        if best is not None:
            title += f"\nselected: {param}={value_text(best[param])}, {best[key]:.2f}%"
        ax.set_title(title)
        legend_below(ax)
        fig.tight_layout()
        save_figure(fig, path)
    line = " The line joins the mean error of each value." if on_grid and len(fin) else ""
    text = (
        f"The {label} against {param} for {len(fin)} finished points (circles) and {len(stp)} "
        f"stopped early (triangles, value at their last epoch).{line}"
    )
    if best is not None:
        text += f" The selected point ({param}={value_text(best[param])}) is ringed in red."
    return text


# ----------------------------------------------------------------------------------------------
# 2. A heat map, only for a grid


def heat_map(sweep: pd.DataFrame, params: list[str], key: str, path: Path) -> str | None:
    """The validation error over the first two parameters of a full grid; the selected point
    boxed, cells without a finished point labelled with their status. None if not a grid."""
    axes = grid_axes(sweep, params)
    if axes is None or len(params) < 2:
        return None
    row_p, col_p = params[:2]
    best = selected(sweep)
    fin = sweep[(sweep["status"] == "finished") & sweep[key].notna()]
    grid = (
        fin.pivot_table(index=row_p, columns=col_p, values=key, aggfunc="mean")
        .reindex(index=axes[row_p], columns=axes[col_p])
        .sort_index(ascending=False)
    )
    status = (
        sweep.groupby([row_p, col_p])["status"]
        .agg(lambda s: "finished" if (s == "finished").any() else s.iloc[0])
        .unstack()
        .reindex(index=grid.index, columns=grid.columns)
    )
    others = params[2:]
    label = LABELS[key]
    with sns.axes_style("white"), matplotlib.rc_context(STYLE):
        fig = new_figure((8.5, 6.0))
        ax = fig.add_subplot()
        shown = grid.rename(index=value_text, columns=value_text)
        sns.heatmap(
            shown,
            ax=ax,
            annot=True,
            fmt=".2f",
            cmap=CMAP,
            cbar_kws={"label": f"{label} (%)" + (", cell mean" if others else "")},
            linewidths=0.5,
            linecolor="white",
            annot_kws={"fontsize": 9},
        )
        for i, rv in enumerate(grid.index):
            for j, cv in enumerate(grid.columns):
                if math.isnan(grid.loc[rv, cv]):
                    ax.text(
                        j + 0.5,
                        i + 0.5,
                        str(status.loc[rv, cv]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="#555555",
                    )
        if best is not None:
            i = list(grid.index).index(best[row_p])
            j = list(grid.columns).index(best[col_p])
            ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor=SELECTED, linewidth=3))
        ax.tick_params(axis="y", labelrotation=0)
        ax.set_xlabel(col_p)
        ax.set_ylabel(row_p)
        title = f"Sweep grid: {label} over {row_p} x {col_p}"
        if best is not None:
            title += f"\nselected (red box): {point_text(best, params)}, {best[key]:.2f}%"
        ax.set_title(title)
        fig.tight_layout()
        save_figure(fig, path)
    text = (
        f"The {label} of every point of the {row_p} x {col_p} grid; cells without a finished "
        "point show its status."
    )
    if best is not None:
        text += " The selected point is boxed in red."
    if others:
        text += (
            f" The sweep searched {len(params)} parameters ({', '.join(params)}); the map shows "
            f"the first two, so each cell averages over the other "
            f"{'one' if len(params) == 3 else 'ones'}."
        )
    return text


# ----------------------------------------------------------------------------------------------
# Both


def space_figures(data, fig_dir: Path) -> list[Figure]:
    """The figures over the search space that the sweep's data allows: the tried points, and a
    heat map where they form a grid."""
    sweep = data.sweep
    if sweep is None or sweep.empty:
        return []
    params = data.sweep_params
    key = selection_metric(sweep)
    out: list[Figure] = []
    one = len(params) == 1
    path = fig_dir / ("sweep_curve.png" if one else "sweep_points.png")
    caption = sweep_figure(sweep, path, params)
    if caption:
        title = f"Sweep: error against {params[0]}" if one else "Sweep: every tried point"
        out.append(Figure(title, path, caption))
    if key is not None and len(params) >= 2:
        path = fig_dir / "sweep_heatmap.png"
        caption = heat_map(sweep, params, key, path)
        if caption:
            out.append(Figure("Sweep grid heat map", path, caption))
    return out
