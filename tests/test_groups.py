"""Groups that survive other data: thresholds per dataset or run, empty groups as "–" with the
number of classes in each group (never NaN), and the worst class, from the metric to the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from ltbench.cli import main
from ltbench.engine import metrics
from ltbench.engine.config import TrainConfig, resolve
from ltbench.errors import LtbenchError
from ltbench.schema import RESULTS_COLUMNS
from reports.compare import class_weights
from reports.tables import result_tables


def _strict_json(path):
    """A JSON file read without NaN / Infinity (those are not JSON)."""

    def refuse(name):
        raise ValueError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_thresholds_move_the_groups_and_count_their_classes():
    cm = np.diag([10, 10, 10, 10])  # every class right
    counts = [60, 30, 12, 5]
    paper = metrics.summarize(cm, counts, ece=1.0)  # 100 / 20: no many-shot class
    assert paper["many_acc"] is None and paper["many_classes"] == 0
    assert (paper["medium_classes"], paper["few_classes"]) == (2, 2)
    assert paper["few_acc"] == pytest.approx((100 + 100) / 2)
    own = metrics.summarize(cm, counts, many_shot=40, few_shot=10)
    assert (own["many_classes"], own["medium_classes"], own["few_classes"]) == (1, 2, 1)
    assert own["many_acc"] == 100.0 and (own["many_shot"], own["few_shot"]) == (40, 10)
    assert json.loads(json.dumps(paper, allow_nan=False))["many_acc"] is None


def test_worst_class_is_the_largest_error_first_on_a_tie_and_skips_classes_without_images():
    cm = np.array([[9, 1, 0, 0], [5, 5, 0, 0], [0, 5, 5, 0], [0, 0, 0, 0]])
    out = metrics.summarize(cm, [100, 50, 20, 5])
    assert (out["worst_class_error"], out["worst_class"]) == (50.0, 1)  # 1 and 2 tie at 50 %
    error, index = metrics.worst_class(np.array([np.nan, np.nan]))
    assert math.isnan(error) and index is None


@pytest.mark.parametrize(
    ("many", "few", "message"),
    [
        (10, 30, r"few_shot \(30\) must be at most many_shot \+ 1 \(11\)"),
        (0, 0, r"many_shot must be a whole number >= 1 .*got 0"),
        (100, 2.5, r"few_shot must be int or None, got 2.5"),
    ],
)
def test_bad_thresholds_are_one_line_errors(many, few, message):
    with pytest.raises(LtbenchError, match=message) as err:
        resolve(TrainConfig(many_shot=many, few_shot=few))
    assert "\n" not in str(err.value)


def test_thresholds_default_to_the_dataset_recipe():
    cfg = resolve(TrainConfig(dataset="synthetic-lt"))
    assert (cfg.many_shot, cfg.few_shot) == (100, 20)
    assert resolve(TrainConfig(few_shot=5)).few_shot == 5


def test_train_records_groups_worst_class_and_no_nan(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic-lt", "--epochs", "1", "--width", "0.25"]
    args += ["--n-max", "60", "--imb-factor", "0.1", "--device", "cpu", "--out", str(out)]
    assert main([*args, "--many-shot", "1000", "--few-shot", "10"]) == 0
    result = _strict_json(out / "result.json")
    counts = np.array(result["class_counts"])
    assert result["many_acc"] is None and result["many_classes"] == 0
    assert result["medium_classes"] == int(((counts >= 10) & (counts <= 1000)).sum())
    assert result["few_classes"] == int((counts < 10).sum()) > 0
    errors = 100.0 - np.array(result["per_class_accuracy"])
    assert result["worst_class_error"] == pytest.approx(errors.max())
    assert result["worst_class"] == int(np.argmax(errors))
    assert result["worst_class_name"] == result["class_names"][result["worst_class"]]
    line = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["test_many_acc"] is None
    assert line["test_worst_class_error"] == result["worst_class_error"]
    printed = capsys.readouterr().out
    assert "many/medium/few acc – (0)/" in printed and result["worst_class_name"] in printed


def _results(groups: dict[str, tuple[int, int, int]]) -> pd.DataFrame:
    """Two methods x two seeds per dataset; `groups` gives each dataset's class counts of
    many / medium / few (0: that group is empty and has no accuracy)."""
    rows = []
    for dataset, sizes in groups.items():
        for method, shift in (("ce", 0.0), ("la", 5.0)):
            for seed in (0, 1):
                row = dict.fromkeys(RESULTS_COLUMNS, math.nan)
                row.update(
                    trial=f"{method}-{dataset}-{seed}",
                    method=method,
                    dataset=dataset,
                    rho=100.0,
                    seed=seed,
                    subset_seed=0,
                    status="finished",
                    error="",
                    rule="raw",
                    top1_error=40.0 - shift + seed,
                    head_error=20.0,
                    mid_error=40.0,
                    tail_error=60.0,
                    ece=5.0,
                    worst_class_error=90.0 - shift + seed,
                    worst_class="truck" if seed == 0 or method == "la" else "ship",
                    many_shot=100,
                    few_shot=20,
                )
                for g, n in zip(("many", "medium", "few"), sizes, strict=True):
                    row[f"{g}_classes"] = n
                    row[f"{g}_acc"] = math.nan if n == 0 else 70.0 + shift + seed
                rows.append(row)
    return pd.DataFrame(rows, columns=RESULTS_COLUMNS)


def _cells(table) -> dict[tuple[str, str], str]:
    out = {}
    for row in table.rows:
        for col, cell in zip(table.columns[1:], row[1:], strict=True):
            out[(row[0].text, f"{col.group}: {col.label}")] = cell.text
    return out


def test_report_shows_an_empty_group_as_a_dash_with_the_class_counts():
    results = _results({"my-lt": (0, 4, 3), "cifar10-lt": (4, 3, 3)})
    tables = {t.anchor: t for t in result_tables(results, paper=None)}
    cells = _cells(tables["shots"])
    assert cells[("ce", "my-lt ρ=100: many")] == "–"
    assert cells[("ce", "my-lt ρ=100: medium")].startswith("70.50 ± 0.71")
    assert cells[("ce", "cifar10-lt ρ=100: many")].startswith("70.50")
    assert not any("nan" in text.lower() for text in cells.values())
    notes = " ".join(tables["shots"].notes)
    assert "my-lt ρ=100: many (> 100) 0, medium (20-100) 4, few (< 20) 3" in notes
    assert "cifar10-lt ρ=100: many (> 100) 4, medium (20-100) 3, few (< 20) 3" in notes


def test_report_has_a_worst_class_column_and_names_the_class():
    results = _results({"my-lt": (0, 4, 3)})
    parts = {t.anchor: t for t in result_tables(results, paper=None)}["parts"]
    cells = _cells(parts)
    assert cells[("ce", "my-lt ρ=100: worst class")].startswith("90.50 ± 0.71")
    assert cells[("la", "my-lt ρ=100: worst class")].startswith("85.50 ± 0.71")
    notes = " ".join(parts.notes)
    assert "la on my-lt ρ=100: truck (2 of 2 seeds)" in notes
    assert "ce on my-lt ρ=100: " in notes and "(1 of 2 seeds)" in notes


def test_older_results_without_the_new_columns_keep_their_tables():
    results = _results({"cifar10-lt": (4, 3, 3)})
    results["worst_class_error"] = math.nan
    results[["many_classes", "medium_classes", "few_classes", "many_shot", "few_shot"]] = math.nan
    tables = {t.anchor: t for t in result_tables(results, paper=None)}
    assert [c.label for c in tables["parts"].columns[1:]] == ["head", "mid", "tail"]
    assert "> 100, 20-100, < 20" in tables["shots"].title


def test_bootstrap_weights_follow_the_recorded_thresholds():
    counts, totals = np.array([150, 60, 30, 10]), np.full(4, 10.0)
    paper, _ = class_weights("many_acc", counts, totals)
    own, _ = class_weights("many_acc", counts, totals, (50, 20))
    assert list(paper > 0) == [True, False, False, False]
    assert list(own > 0) == [True, True, False, False]
