"""Which images each setting's rows trained on: the note that names the training subsets'
fingerprints per dataset and ρ (results.csv `train_fingerprint`, the first 12 hex digits of
result.json's SHA-256 `fingerprints.train`, `ltbench.data.draws`).

One fingerprint on a setting: every row trained on the same images. More than one: the rows
of that setting trained on different subsets (another `subset_seed`, another copy of the data,
a different draw file), and a difference between them is partly a difference of data; the note
says so and how many rows each subset has. Older results without fingerprints say nothing.
"""

from __future__ import annotations

import pandas as pd

from ltbench.schema import UNKNOWN


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
            parts.append(f"{setting}: {counts.index[0]} (all {counts.iloc[0]} runs)")
        else:
            each = ", ".join(f"{fp} ({n} runs)" for fp, n in counts.items())
            parts.append(f"{setting}: DIFFERENT SUBSETS, {len(counts)} of them: {each}")
    if not parts:
        return None
    return (
        "Training subsets (SHA-256 of the images trained on, first 12 hex digits; same "
        "fingerprint, same images): " + "; ".join(parts) + "."
    )
