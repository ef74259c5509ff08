"""Which images each setting's rows trained on: the note that names the training subsets'
fingerprints per dataset and ρ (results.csv `train_fingerprint`, the first 12 hex digits of
result.json's SHA-256 `fingerprints.train`, `ltbench.data.draws`).

One fingerprint on a setting: every row trained on the same images. Where the images trained on
are far more imbalanced than the setting's ρ (data used as it is has ρ = 1), the note gives
their own imbalance (results.csv `class_count_ratio`). More than one: the rows
of that setting trained on different subsets (another `subset_seed`, another copy of the data,
a different draw file), and a difference between them is partly a difference of data; the note
says so and how many rows each subset has. Older results without fingerprints say nothing.
"""

from __future__ import annotations

import pandas as pd

from ltbench.schema import UNKNOWN


def _own_imbalance(rows: pd.DataFrame) -> str:
    """The words "trained at imbalance 15" (after a comma) where the images trained on are more
    imbalanced than the setting's ρ says (data used as it is: ρ = 1); "" otherwise or where
    not recorded."""
    if "class_count_ratio" not in rows.columns:
        return ""
    ratio = pd.to_numeric(rows["class_count_ratio"], errors="coerce").dropna()
    rho = pd.to_numeric(rows["rho"], errors="coerce").dropna()
    if ratio.empty or rho.empty or ratio.max() <= 1.5 * rho.max():
        return ""
    low, high = ratio.min(), ratio.max()
    span = f"{low:.3g}" if low == high else f"{low:.3g}-{high:.3g}"
    return f", trained at imbalance {span} (largest / smallest class; data used as it is)"


def subset_note(results: pd.DataFrame) -> str | None:
    """The note under the main table: the training subsets' fingerprints per setting (the
    frame has the tables' `setting` column); None when no row records one."""
    if "train_fingerprint" not in results.columns:
        return None
    fin = results[(results["status"] == "finished") & (results["rule"] == "raw")]
    known = fin[~fin["train_fingerprint"].astype(str).isin(["", UNKNOWN, "nan"])]
    parts = []
    for setting, rows in known.groupby("setting", sort=False):
        counts = rows["train_fingerprint"].astype(str).value_counts(sort=True)
        if len(counts) == 1:
            part = f"{setting}: {counts.index[0]} (all {counts.iloc[0]} runs)"
        else:
            each = ", ".join(f"{fp} ({n} runs)" for fp, n in counts.items())
            part = f"{setting}: DIFFERENT SUBSETS, {len(counts)} of them: {each}"
        parts.append(part + _own_imbalance(rows))
    if not parts:
        return None
    return (
        "Training subsets (SHA-256 of the images trained on, first 12 hex digits; same "
        "fingerprint, same images): " + "; ".join(parts) + "."
    )
