"""Every row of the paper's Tables 3 and 4 is a runnable method: a report of measured results
shows the paper's number beside each of them, and no row is "paper only"."""

from __future__ import annotations

import math

import pandas as pd

from ltbench.runner.suite import expand, load_suite
from ltbench.schema import RESULTS_COLUMNS
from reports.collect import _normalise_results
from reports.paper import load_paper_numbers
from reports.tables import fmt, metric_table, reference_table

TABLE4_DATASETS = ("imagenet-lt", "inat2018")


def _row(i, method, label, dataset, rho, rule="raw"):
    row = dict.fromkeys(RESULTS_COLUMNS, math.nan)
    row.update(
        trial=f"t{i}", method=method, params="{}", dataset=dataset, imb_factor=1 / rho,
        rho=float(rho), seed=0, subset_seed=0, top1_error=30.0 + i, epochs=200,
        status="finished", error="", label=label, setup="none", precision="float32",
        full_schedule="True", rule=rule,
    )  # fmt: skip
    return row


def _fixture(paper) -> pd.DataFrame:
    """Measured rows (any numbers) for every method of Tables 3 and 4, as a suite would record
    them: CIFAR-10-LT at rho 100 for Table 3, ImageNet-LT and iNaturalist 2018 for Table 4;
    Decoupling's τ-norm is the `ce` trial's `tau-norm` rule row."""
    rows = []
    for key in paper.tables["table3"]["values"]:
        rows.append(_row(len(rows), key, key, "cifar10-lt", 100))
    for key in paper.tables["table4"]["values"]:
        for dataset in TABLE4_DATASETS:
            if key == "tau-norm":
                rows.append(_row(len(rows), "ce", "ce", dataset, 1, rule="tau-norm"))
            else:
                rows.append(_row(len(rows), key, key, dataset, 1))
    return _normalise_results(pd.DataFrame(rows, columns=RESULTS_COLUMNS))


def test_no_paper_only_rows_and_every_paper_key_is_a_method():
    from ltbench.sdk.registry import list_losses

    paper = load_paper_numbers()
    assert paper.paper_only == []
    registered = set(list_losses())
    for table in ("table3", "table4"):
        for key in paper.tables[table]["values"]:
            method = "ce" if key == "tau-norm" else paper.canonical(key)
            assert method in registered, key
    ref = reference_table(paper)
    assert all(row[1].text != "(paper only)" for row in ref.rows)
    assert {"bbn", "meta-ldam", "meta-focal", "meta-ce", "lws", "tau-norm"} <= {
        row[1].text for row in ref.rows
    }


def test_report_shows_the_paper_number_beside_every_row_of_tables_3_and_4():
    paper = load_paper_numbers()
    results = _fixture(paper)
    table = metric_table(results, [("top1_error", "err")], "t", False, "top1", paper=paper)
    settings = [c.group for c in table.columns[1:]][::3]  # (err, paper, Δ) per setting
    cells = {row[0].text: [c.text for c in row[1:]] for row in table.rows}
    shown = 0
    for table_name in ("table3", "table4"):
        for key, per_dataset in paper.tables[table_name]["values"].items():
            method = "ce [tau-norm]" if key == "tau-norm" else key
            for dataset, per_rho in per_dataset.items():
                for rho, value in per_rho.items():
                    if value is None or (dataset == "cifar10-lt" and rho != 100):
                        continue
                    if dataset == "cifar100-lt":
                        continue  # the fixture measures Table 3 on CIFAR-10-LT only
                    label = dataset if dataset in TABLE4_DATASETS else f"{dataset} ρ=100"
                    i = settings.index(label)
                    measured, paper_cell, delta = cells[method][3 * i : 3 * i + 3]
                    assert measured != "-" and paper_cell == fmt(value), (key, dataset)
                    assert delta.startswith(("+", "-")) and delta != "-", (key, dataset)
                    shown += 1
    # every Table 3 row on CIFAR-10-LT rho 100 and every Table 4 number
    assert shown == 12 + 22
    # the CE run's own (raw) row keeps CE's number; its τ-norm row is Decoupling's
    i = settings.index("inat2018")
    assert cells["ce"][3 * i + 1] == "39.89" and cells["ce [tau-norm]"][3 * i + 1] == "30.70"


def test_comparison_suites_run_every_row():
    paper = load_paper_numbers()
    table3 = set(paper.tables["table3"]["values"])
    assert {m.name for m in load_suite("comparison").methods} == table3
    large = load_suite("comparison-large")
    trials = expand(large)
    names = {t.method for t in trials}
    table4 = set(paper.tables["table4"]["values"]) - {"tau-norm"}
    assert names == table4
    assert {t.dataset for t in trials} == set(TABLE4_DATASETS)
    ce = [t for t in trials if t.method == "ce"]
    assert ce and all(t.posthoc == ("tau-norm",) for t in ce)
    assert all(t.posthoc == () for t in trials if t.method != "ce")


def test_a_method_entry_checks_its_own_posthoc_rules(tmp_path):
    import pytest

    from ltbench.errors import LtbenchError

    path = tmp_path / "s.yaml"
    path.write_text(
        "methods:\n  - {loss: ce, posthoc: [bogus]}\ndatasets: [synthetic-lt]\n"
        "rhos: [100]\nseeds: [0]\n"
    )
    with pytest.raises(LtbenchError, match=r"methods\[0\]: posthoc: unknown post-hoc rule 'bogus'"):
        load_suite(path)
