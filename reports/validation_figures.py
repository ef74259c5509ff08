"""The search report's figures that check its validation error against the test error:

1. Validation against test error across the finished points, with Spearman's rank correlation
   of the balanced and of the instance-weighted validation error (`val_test_figure`).
2. The selected point's per-class test error, with its per-class validation error and the
   validation images of each class beside it (`selected_figure`).

The selected point is `reports.search.selected` (`ltbench.schema.select_best`): the test error
is drawn, never used to choose.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns

from ltbench.schema import (
    RESULT_FILE,
    SEARCH_METRIC,
    SWEEP_TEST_METRIC,
    VAL_TOP1_METRIC,
    read_result,
    trial_dir,
)
from reports.content import Figure
from reports.figures import STYLE, WIDE, new_figure, save_figure
from reports.search import LABELS, correlations, selected, selection_metric
from reports.search_figures import SELECTED, legend_below, point_text, ring_selected
from reports.tables import N_GROUPS, group_labels

# ----------------------------------------------------------------------------------------------
# 1. Validation against test


def _rho_text(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def val_test_figure(sweep: pd.DataFrame, path: Path) -> str | None:
    """Each finished point's validation error against its test error: the balanced validation
    error (filled) and the instance-weighted one (hollow), with Spearman's rank correlation of
    each with the test error. None with fewer than two such points."""
    fin = sweep[(sweep["status"] == "finished") & sweep[SWEEP_TEST_METRIC].notna()]
    series = [c for c in (SEARCH_METRIC, VAL_TOP1_METRIC) if c in fin and fin[c].notna().any()]
    if len(fin) < 2 or not series:
        return None
    rho = correlations(sweep)
    best = selected(sweep)
    key = selection_metric(sweep)
    style = {
        SEARCH_METRIC: dict(color="#4c72b0", marker="o", s=45, zorder=3),
        VAL_TOP1_METRIC: dict(
            facecolors="none", edgecolors="#7f7f7f", marker="s", s=40, zorder=2, linewidths=1.2
        ),
    }
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = new_figure((8.5, 6.2))
        ax = fig.add_subplot()
        if len(series) == 2 and len(fin) <= 60:
            for _, r in fin.iterrows():  # each point's two validation errors, joined
                ax.plot(
                    [r[SEARCH_METRIC], r[VAL_TOP1_METRIC]],
                    [r[SWEEP_TEST_METRIC]] * 2,
                    color="#bbbbbb",
                    linewidth=0.7,
                    zorder=1,
                )
        for col in series:
            ax.scatter(
                fin[col],
                fin[SWEEP_TEST_METRIC],
                label=f"{LABELS[col]} (Spearman ρ = {_rho_text(rho.get(col, math.nan))})",
                **style[col],
            )
        if best is not None:
            ring_selected(ax, best[key], best[SWEEP_TEST_METRIC], size=260, width=2.2)
        values = pd.concat([fin[c] for c in series] + [fin[SWEEP_TEST_METRIC]])
        lo, hi = float(values.min()), float(values.max())
        pad = max(hi - lo, 1.0) * 0.05
        ax.plot(
            [lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="#999999", lw=0.8, label="y = x"
        )
        ax.set_xlabel("validation error (%)")
        ax.set_ylabel("test top-1 error (%)")
        ax.set_title(
            f"Validation against test error, {len(fin)} finished points\n"
            f"Spearman ρ with test: balanced {_rho_text(rho.get(SEARCH_METRIC, math.nan))}, "
            f"instance-weighted {_rho_text(rho.get(VAL_TOP1_METRIC, math.nan))}"
        )
        legend_below(ax, ncol=2)
        fig.tight_layout()
        save_figure(fig, path)
    return (
        f"Each finished point's test top-1 error against its validation error: the balanced "
        f"validation error (the selection metric, filled circles) and the instance-weighted one "
        f"(hollow squares; a grey line joins a point's two values). Spearman's rank correlation "
        f"with the test error: balanced {_rho_text(rho.get(SEARCH_METRIC, math.nan))}, "
        f"instance-weighted {_rho_text(rho.get(VAL_TOP1_METRIC, math.nan))}. The test set is "
        "balanced, so its top-1 error is the mean per-class error, which the balanced validation "
        "error estimates; a high rank correlation means the validation split orders the points "
        "as the test set does."
    )


# ----------------------------------------------------------------------------------------------
# 2. The selected point per class


def _class_frame(per_class: pd.DataFrame, result: dict, trial: str) -> pd.DataFrame | None:
    pc = per_class[per_class["trial"].astype(str) == str(trial)].sort_values("class")
    if pc.empty:
        return None
    n = len(pc)
    val_acc = result.get("val_per_class_accuracy") or [None] * n
    val_n = result.get("val_class_counts") or [None] * n
    short = set(result.get("val_classes_below_minimum") or [])
    return pd.DataFrame(
        {
            "noisy": [c in short for c in pc["class"]],
            "name": pc["class_name"].astype(str).to_numpy(),
            "count": pd.to_numeric(pc["count"], errors="coerce").to_numpy(),
            "test_error": 100.0 - pd.to_numeric(pc["accuracy"], errors="coerce").to_numpy(),
            "val_error": [np.nan if a is None else 100.0 - a for a in val_acc[:n]]
            + [np.nan] * (n - len(val_acc[:n])),
            "val_n": [np.nan if v is None else v for v in val_n[:n]]
            + [np.nan] * (n - len(val_n[:n])),
        }
    )


def selected_figure(data, path: Path) -> str | None:
    """The selected point's test error per class (or per frequency group of classes beyond
    20 classes), most frequent first, with its validation error per class beside it."""
    sweep, per_class = data.sweep, data.per_class
    best = selected(sweep)
    if best is None or per_class is None:
        return None
    result = read_result(trial_dir(data.run_dir, best["trial"]) / RESULT_FILE) or {}
    frame = _class_frame(per_class, result, best["trial"])
    if frame is None:
        return None
    frame = frame.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)
    grouped = len(frame) > 2 * N_GROUPS
    if grouped:
        parts = np.array_split(np.arange(len(frame)), N_GROUPS)
        frame = pd.DataFrame(
            {
                "test_error": [frame["test_error"].iloc[p].mean() for p in parts],
                "val_error": [frame["val_error"].iloc[p].mean() for p in parts],
                "val_n": [frame["val_n"].iloc[p].sum() for p in parts],
                "count": [frame["count"].iloc[p].sum() for p in parts],
                "noisy": False,
            }
        )
        ticks = group_labels(N_GROUPS, True)
    else:
        ticks = list(frame["name"])
    ticks = [
        f"{t}\n{int(c) if not math.isnan(c) else '?'} / {int(v) if not math.isnan(v) else '?'}"
        for t, c, v in zip(ticks, frame["count"], frame["val_n"], strict=True)
    ]
    params = data.sweep_params
    x = np.arange(len(frame))
    test_err = float(best[SWEEP_TEST_METRIC])
    val_err = float(best.get(SEARCH_METRIC, math.nan))
    with sns.axes_style("whitegrid"), matplotlib.rc_context(STYLE):
        fig = new_figure(WIDE)
        ax = fig.add_subplot()
        ax.bar(x, frame["test_error"], 0.7, color="#4c72b0", label="test error")
        noisy = frame["noisy"].to_numpy(dtype=bool)
        minimum = result.get("val_min_per_class")
        fewer = f"fewer than {minimum}" if minimum else "few"
        ax.scatter(
            x[~noisy],
            frame["val_error"][~noisy],
            marker="D",
            color=SELECTED,
            s=36,
            zorder=3,
            label="validation error",
        )
        if noisy.any():
            ax.scatter(
                x[noisy],
                frame["val_error"][noisy],
                marker="D",
                facecolors="none",
                edgecolors=SELECTED,
                s=36,
                zorder=3,
                label=f"validation error, {fewer} images",
            )
        ax.axhline(test_err, color="#4c72b0", ls="--", lw=0.9, label=f"test {test_err:.2f}%")
        if not math.isnan(val_err):
            ax.axhline(
                val_err, color=SELECTED, ls=":", lw=1.1, label=f"balanced val {val_err:.2f}%"
            )
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_xlim(-0.6, len(frame) - 0.4)
        ax.set_ylim(-3, 105)  # a validation error of 0 stays visible
        unit = "group of classes" if grouped else "class"
        ax.set_xlabel(f"{unit}, most frequent first (training / validation images)")
        ax.set_ylabel("error (%)")
        ax.set_title(f"Selected point {point_text(best, params)}: test top-1 error {test_err:.2f}%")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.tight_layout()
        save_figure(fig, path)
    short = result.get("val_classes_below_minimum") or []
    empty = result.get("val_classes_without_images") or []
    fewer = f"fewer than {result['val_min_per_class']}" if result.get("val_min_per_class") else ""
    text = (
        f"The selected point ({point_text(best, params)}, trial {best['trial']}): test error per "
        f"{'frequency group of classes (mean over its classes)' if grouped else 'class'} "
        f"(bars; dashed line: the test top-1 error, {test_err:.2f}%) and validation error "
        f"(diamonds; dotted line: the balanced validation error"
        + (f", {val_err:.2f}%" if not math.isnan(val_err) else "")
        + "). Tick labels give the training and validation images."
    )
    if short:
        text += (
            f" {len(short)} class(es) have {fewer or 'too few'} validation images"
            + ("" if grouped else " (hollow diamonds)")
            + ": their validation error is noisy."
        )
    if empty:
        text += f" {len(empty)} class(es) without a validation image are left out of its mean."
    return text


# ----------------------------------------------------------------------------------------------
# Both


def validation_figures(data, fig_dir: Path) -> list[Figure]:
    """The figures that check the validation error against the test error, where the sweep's
    data allows them."""
    if data.sweep is None or data.sweep.empty:
        return []
    out: list[Figure] = []
    path = fig_dir / "sweep_val_vs_test.png"
    caption = val_test_figure(data.sweep, path)
    if caption:
        out.append(Figure("Sweep: validation against test error", path, caption))
    path = fig_dir / "sweep_selected.png"
    caption = selected_figure(data, path)
    if caption:
        out.append(Figure("Sweep: the selected point per class", path, caption))
    return out
