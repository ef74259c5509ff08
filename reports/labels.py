"""Which paper number may stand beside a measured row, and the precision of the numbers.

A paper number is shown only when the run's configuration is the paper row's: the label the
run derived from everything that defines it (results.csv `label`: loss, changed parameters,
mixup, stages; `ltbench.engine.identity`) must be the row's key in paper_numbers.yaml, and its
setup (network, data, schedule) the paper's (`setup` is "none"). Otherwise the cell says why.
A row of a post-hoc rule is matched as `label [rule]`: the paper's τ-norm row (Decoupling) is
`ce [tau-norm]`, a CE run reported under the `tau-norm` rule (alias `tau-norm`).
"""

from __future__ import annotations

import pandas as pd

from ltbench.schema import RAW_RULE, SAME_SETUP, UNKNOWN
from reports.paper import PaperNumbers, PaperValue


def rule_key(label: str, rule: str) -> str:
    """The key of a configuration reported under a post-hoc rule: `label [rule]` (paper rows
    of that form are aliases: `ce [tau-norm]` is the method label `tau-norm`)."""
    return label if rule == RAW_RULE else f"{label} [{rule}]"


def setting_in_paper(paper: PaperNumbers, setting) -> bool:
    """Whether any of the paper's tables reports a number for this dataset and rho."""
    return any(
        (pv := paper.lookup(m, setting.dataset, setting.rho)) is not None and pv.value is not None
        for m in paper.methods
    )


def paper_match(
    rows: pd.DataFrame, paper: PaperNumbers, setting
) -> tuple[PaperValue | None, str, str]:
    """(the paper's number, "", "") when the finished ``rows`` of one method and setting are
    the paper row's configuration, else (None, short reason for the cell, longer note).

    The configuration is the label the run derived from everything that defines it
    (results.csv ``label``: loss, changed parameters, mixup, stages), and its setup must be the
    paper's (``setup`` empty: network, data, schedule). The suite's method name plays no part.
    Rows of a post-hoc rule are the configuration ``label [rule]`` (`rule_key`).
    """
    if rows.empty or not setting_in_paper(paper, setting):
        return None, "-", ""
    rules = set(rows["rule"])
    if len(rules) > 1:
        return None, "post-hoc rule", ""
    rule = rules.pop()
    labels, setups = set(rows["label"]), set(rows["setup"])
    if UNKNOWN in labels or UNKNOWN in setups:
        return None, "config unknown", "the results file does not record the configuration"
    if len(labels) > 1:
        return None, "mixed configs", "configurations: " + "; ".join(sorted(labels))
    label = labels.pop()
    if rule != RAW_RULE:  # a post-hoc rule's row: a paper row only where one is that rule
        label = rule_key(label, rule)
        pv = paper.lookup(label, setting.dataset, setting.rho)
        if pv is None:
            return None, "post-hoc rule", ""
    pv = paper.lookup(label, setting.dataset, setting.rho)
    if pv is None:
        return None, "no paper row", f"configuration {label} is not a row of the paper"
    if pv.value is None:
        return None, "-", ""
    deviations = sorted(x for x in setups if x != SAME_SETUP)
    if deviations:
        return None, "setup differs", f"setup differs from the paper's: {deviations[0]}"
    return pv, "", ""


def precision_note(results: pd.DataFrame) -> str:
    """The precision the numbers were computed in, as a table note."""
    fin = results[results["status"] == "finished"]
    if fin.empty or "precision" not in fin.columns:
        return ""
    values = sorted(set(fin["precision"].astype(str)))
    if len(values) == 1:
        return f"Precision: {values[0]}."
    per = fin.groupby("method")["precision"].agg(lambda v: ", ".join(sorted(set(map(str, v)))))
    items = [f"{m}: {v}" for m, v in per.items()]
    more = f"; and {len(items) - 12} more" if len(items) > 12 else ""
    return "Precision: " + "; ".join(items[:12]) + more + "."
