"""Read a suite output directory (layout in docs/DESIGN.md) into pandas frames.

Only reading and validation happen here: a directory without results.csv, or a CSV that lacks
a column the contract names, is a user error with a one-line message. The contract (file
names, columns, readers) is `ltbench.schema`, the module the runner writes with; nothing here
imports torch, Ray or the engine.
"""

from __future__ import annotations

import math
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from ltbench.errors import LtbenchError
from ltbench.schema import (
    FINISHED,
    METRIC_COLUMNS,
    METRICS_FILE,
    MISSING,
    OPTIONAL_COLUMNS,
    OPTIONAL_RESULTS_COLUMNS,
    PER_CLASS_COLUMNS,
    PER_CLASS_FILE,
    RAW_RULE,
    RESULT_FILE,
    RESULTS_COLUMNS,
    RESULTS_FILE,
    SUITE_FILE,
    SWEEP_FILE,
    SWEEP_FIXED_COLUMNS,
    SWEEP_REQUIRED_COLUMNS,
    UNKNOWN,
    read_metrics,
    read_result,
    required_columns,
    sweep_params,
    trial_dir,
)

CURVE_COLUMNS = ("epoch", "train_loss", "test_top1_error")  # the metrics.jsonl keys plotted


@dataclass
class RunData:
    """Everything a report needs from one suite output directory."""

    run_dir: Path
    results: pd.DataFrame  # results.csv, all statuses
    per_class: pd.DataFrame | None = None  # per_class.csv
    sweep: pd.DataFrame | None = None  # sweep.csv
    sweep_params: list[str] = field(default_factory=list)  # its searched parameters, in order
    curves: pd.DataFrame | None = None  # metrics.jsonl of every finished trial, stacked
    suite: dict = field(default_factory=dict)  # suite.yaml

    @property
    def finished(self) -> pd.DataFrame:
        """The rows of results.csv whose trial finished."""
        return self.results[self.results["status"] == FINISHED]


TEXT_COLUMNS = {"train_fingerprint": str}


def _read_csv(path: Path, columns, optional=()) -> pd.DataFrame:
    """A CSV with `columns`; `optional` ones (which older files lack) are filled with NaN."""
    try:
        # text columns that may look like numbers (a fingerprint of digits only) stay text
        df = pd.read_csv(path, keep_default_na=True, dtype=TEXT_COLUMNS)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LtbenchError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise LtbenchError(f"cannot read {path}: not a UTF-8 text CSV file") from None
    _check_columns(path, df, [c for c in columns if c not in optional])
    for c in optional:
        if c not in df.columns:
            df[c] = math.nan
    return df


def _check_columns(path: Path, df: pd.DataFrame, columns) -> None:
    missing = [c for c in required_columns(columns) if c not in df.columns]
    if missing:
        raise LtbenchError(
            f"{path} lacks column(s) {', '.join(missing)} (see 'Suite output directory' in "
            "docs/DESIGN.md)"
        )


# The number columns of results.csv a table cell stands on (the metrics and the seed).
NUMBER_COLUMNS = ("rho", "seed", *METRIC_COLUMNS, *OPTIONAL_RESULTS_COLUMNS)


def _cell(value) -> str:
    text = str(value)
    return repr(text if len(text) <= 40 else text[:40] + "...")


def check_results_cells(path: Path, df: pd.DataFrame) -> None:
    """A results.csv a table can stand on, else a one-line error naming the line (of the file)
    and the cell: a (trial, rule) on two lines (it would count as another seed), a finished
    line without a whole-number seed (its mean would hide that n is smaller), a word in a
    number column (it would show as "-"). Empty number cells are allowed (not measured)."""
    line = lambda i: int(i) + 2  # noqa: E731 (the header is line 1)
    rule = (
        df["rule"].astype(object).where(df["rule"].notna(), RAW_RULE) if "rule" in df else RAW_RULE
    )
    keys = pd.DataFrame({"trial": df["trial"].astype(str), "rule": rule})
    twice = keys.duplicated(keep=False)
    if twice.any():
        first = keys[twice].iloc[0]
        lines = [line(i) for i in keys.index[twice & (keys == first).all(axis=1)]]
        raise LtbenchError(
            f"{path}: trial {_cell(first['trial'])} (rule {first['rule']}) is on lines "
            f"{', '.join(map(str, lines))}; a trial counts once: remove the copy, or write the "
            "table again (`ltbench eval` on a trial, or the suite's `ltbench run --resume`)"
        )
    for col in (c for c in NUMBER_COLUMNS if c in df.columns):
        text = df[col]
        numbers = pd.to_numeric(text, errors="coerce")
        words = text.notna() & numbers.isna() & (text.astype(str).str.strip() != "")
        if words.any():
            i = words.idxmax()
            raise LtbenchError(
                f"{path}, line {line(i)}: {col} is {_cell(text[i])}, not a number; correct the "
                "cell or leave it empty"
            )
    finished = df["status"].astype(str).str.strip() == FINISHED
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    bad = finished & ~(seeds.notna() & (seeds == seeds.round()))
    if bad.any():
        i = bad.idxmax()
        raise LtbenchError(
            f"{path}, line {line(i)}: the finished trial {_cell(df['trial'][i])} has seed "
            f"{_cell(df['seed'][i])}; a finished line needs its whole-number seed"
        )


def rule_label(method: str, rule: str) -> str:
    """The report's row label of a post-hoc rule's row: `method [rule]` (raw: the method)."""
    return method if rule == RAW_RULE else f"{method} [{rule}]"


def _fill_optional(df: pd.DataFrame) -> pd.DataFrame:
    """Columns an older file lacks (or leaves empty) get the value that means "not recorded"."""
    for col, missing in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = missing
        df[col] = df[col].astype(object).where(df[col].notna() & (df[col] != ""), missing)
        df[col] = df[col].astype(str)
    return df


def _normalise_results(df: pd.DataFrame) -> pd.DataFrame:
    df = _fill_optional(df.copy())
    df["status"] = df["status"].fillna(MISSING).astype(str).str.strip()
    df["method"] = [rule_label(str(m), r) for m, r in zip(df["method"], df["rule"], strict=True)]
    df["dataset"] = df["dataset"].astype(str)
    df["trial"] = df["trial"].astype(str)
    df["rho"] = pd.to_numeric(df["rho"], errors="coerce")
    df["error"] = df["error"].astype(object).where(df["error"].notna(), "").astype(str)
    return df


def _read_suite(run_dir: Path) -> dict:
    path = run_dir / SUITE_FILE
    if not path.is_file():
        return {}
    try:
        suite = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LtbenchError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError:
        raise LtbenchError(f"cannot read {path}: not a UTF-8 text YAML file") from None
    return suite if isinstance(suite, dict) else {}


def load_run(run_dir: str | Path) -> RunData:
    """Read results.csv (required), per_class.csv, sweep.csv, suite.yaml and the curves.

    A sweep's searched parameters are those suite.yaml records (`search.params`), or for an
    older directory the columns of sweep.csv that are not fixed ones.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LtbenchError(f"{run_dir} is not a directory")
    results_path = run_dir / RESULTS_FILE
    sweep_path = run_dir / SWEEP_FILE
    if not results_path.is_file():
        raise LtbenchError(
            f"{run_dir} has no results.csv: not a suite output directory "
            "(write one with `ltbench run --suite ... --out DIR`)"
        )
    raw = _read_csv(results_path, RESULTS_COLUMNS, OPTIONAL_RESULTS_COLUMNS)
    check_results_cells(results_path, raw)
    results = _normalise_results(raw)
    data = RunData(run_dir=run_dir, results=results, suite=_read_suite(run_dir))

    per_class_path = run_dir / PER_CLASS_FILE
    if per_class_path.is_file():
        pc = _fill_optional(_read_csv(per_class_path, PER_CLASS_COLUMNS))
        pc["method"] = [
            rule_label(str(m), r) for m, r in zip(pc["method"], pc["rule"], strict=True)
        ]
        pc["trial"] = pc["trial"].astype(str)
        pc["rho"] = pd.to_numeric(pc["rho"], errors="coerce")
        data.per_class = pc
    if sweep_path.is_file():
        optional = [c for c in SWEEP_FIXED_COLUMNS if c not in SWEEP_REQUIRED_COLUMNS]
        sweep = _read_csv(sweep_path, SWEEP_FIXED_COLUMNS, optional)
        params = sweep_params(data.suite, sweep.columns)
        _check_columns(sweep_path, sweep, params)
        sweep["status"] = sweep["status"].fillna(MISSING).astype(str).str.strip()
        data.sweep, data.sweep_params = sweep, params
    data.curves = _read_curves(run_dir, data.finished)
    return data


def _read_curves(run_dir: Path, finished: pd.DataFrame) -> pd.DataFrame | None:
    """Stack trials/<trial>/metrics.jsonl of finished trials; None when there are none."""
    frames = []
    for row in finished[finished["rule"] == RAW_RULE].itertuples(index=False):
        records = read_metrics(trial_dir(run_dir, row.trial) / METRICS_FILE)
        if not records:
            continue
        df = pd.DataFrame.from_records(records)
        if "epoch" not in df.columns:
            continue
        for col in CURVE_COLUMNS:
            if col not in df.columns:
                df[col] = math.nan
        df = df[list(CURVE_COLUMNS)].assign(
            trial=row.trial, method=row.method, dataset=row.dataset, rho=row.rho, seed=row.seed
        )
        frames.append(df)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def _first_env(data: RunData) -> dict:
    """The `env` block of the first finished trial's result.json, if any."""
    for trial in data.finished["trial"]:
        env = (read_result(trial_dir(data.run_dir, trial) / RESULT_FILE) or {}).get("env")
        if isinstance(env, dict) and env:
            return env
    return {}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _ltbench_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ltbench")
    except PackageNotFoundError:
        return "unknown"


def _values_by_method(rows: pd.DataFrame, column: str) -> str:
    values = sorted(set(rows[column]))
    if len(values) == 1:
        return values[0]
    per = rows.groupby("method")[column].agg(lambda v: ", ".join(sorted(set(v))))
    return "; ".join(f"{m}: {v}" for m, v in per.items())


def numerics_metadata(results: pd.DataFrame) -> list[tuple[str, str]]:
    """Title-page lines: the numeric precision of the numbers, and whether the runs are the
    paper's full schedule ("unknown" for files that did not record it)."""
    fin = results[results["status"] == FINISHED]
    if fin.empty:
        return []
    raw = fin[fin["rule"] == RAW_RULE]
    schedule = raw.assign(
        full_schedule=raw["full_schedule"]
        .map({"True": "yes", "False": "no (shortened)", UNKNOWN: UNKNOWN})
        .fillna(UNKNOWN)
    )
    return [
        ("precision", _values_by_method(fin, "precision")),
        ("paper's full schedule", _values_by_method(schedule, "full_schedule")),
    ]


def run_metadata(data: RunData) -> list[tuple[str, str]]:
    """(label, value) pairs for the title page.

    Values recorded by the run (suite.yaml, the trials' `env`) come first; where the run
    recorded nothing, the environment the report is built in is used and labelled so.
    """
    env = _first_env(data)
    suite = data.suite
    here = " (report machine)"
    meta = [("suite", str(suite.get("name") or data.run_dir.resolve().name))]
    for key in ("description", "preset"):
        if suite.get(key):
            meta.append((key, str(suite[key])))
    meta.append(("directory", str(data.run_dir.resolve())))
    if suite.get("created"):
        meta.append(("run started", str(suite["created"])))
    meta.append(("report built", datetime.now().strftime("%Y-%m-%d %H:%M")))
    host = env.get("hostname") or suite.get("hostname")
    meta.append(("run host", str(host) if host else "not recorded"))
    meta.append(("device", str(env.get("device") or "not recorded by the trials")))
    if env.get("summary"):  # `ltbench doctor`'s line: device, versions, precision
        meta.append(("machine", str(env["summary"])))
    if env.get("cpu_count"):
        meta.append(("CPU cores", str(env["cpu_count"])))
    for key in ("platform", "torch", "python"):
        if env.get(key):
            meta.append((key, str(env[key])))
    meta.append(("ltbench", str(env.get("ltbench") or _ltbench_version() + here)))
    meta.append(("git commit", str(env.get("git_commit") or _git_commit() + here)))
    meta.append(("report machine", f"{socket.gethostname()}, {_cpu_name()}"))
    meta += numerics_metadata(data.results)
    trials = data.results[data.results["rule"] == RAW_RULE]  # one row per trial
    counts = trials["status"].value_counts()
    parts = ", ".join(f"{int(n)} {s}" for s, n in counts.items())
    meta.append(("trials", f"{len(trials)} ({parts})" if parts else "0"))
    return meta
