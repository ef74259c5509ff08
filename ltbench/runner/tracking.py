"""Run tracking of a suite or sweep in MLflow (`ltbench run/sweep --mlflow [URI]`), Ray-free.

`tracking_uri` turns the flag into the tracking URI, checked before anything is written: no
value, a local store in the suite's folder (`file:` URI of DIR/mlruns); a path, a local store
there; a URI with a scheme (`http://host:5000`, `file:/…`, `sqlite:///…`, `databricks`), as
given. `MLflow` is what the Ray adapter needs to log: the URI, the experiment (the suite's name)
and the parameters of each Tune trial's MLflow run (`trial_params`: the trial's method and its
configuration from DIR/trials.json; a pack's runs name their members). Ray Tune's
`MLflowLoggerCallback` (in `ltbench.runner.ray_adapter`) then logs every epoch's report of the
trial as metrics, step = the epoch.

MLflow 3 refuses a file store unless `MLFLOW_ALLOW_FILE_STORE=true` (it prefers a database);
ltbench sets that variable for a `file:` URI while Tune runs (`MLflow.environment`).
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltbench.errors import LtbenchError
from ltbench.runfiles import MLFLOW_DIR

LOCAL_STORE = ""  # the flag's value without a URI: DIR/mlruns
FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")


def tracking_uri(flag: str | None, out_dir: Path) -> str | None:
    """The tracking URI of `--mlflow` (None: the flag was not given); one-line errors."""
    if flag is None:
        return None
    if importlib.util.find_spec("mlflow") is None:
        raise LtbenchError(
            "--mlflow needs the mlflow package: pip install mlflow-skinny (or mlflow)"
        )
    text = str(flag).strip()
    if text == LOCAL_STORE:
        return (Path(out_dir).resolve() / MLFLOW_DIR).as_uri()
    if text == "databricks" or (_SCHEME.match(text) and not _WINDOWS_DRIVE.match(text)):
        return text
    return Path(text).expanduser().resolve().as_uri()  # a folder: a local store there


@dataclass(frozen=True)
class MLflow:
    """Where a suite's or sweep's trials are logged and under which experiment."""

    uri: str
    experiment: str
    out_dir: Path

    @contextmanager
    def environment(self) -> Iterator[None]:
        """While Tune runs: MLflow's file store allowed for a `file:` URI; afterwards the
        MLflow variables of this process (Ray's logger sets the tracking URI) as they were."""
        saved = {k: os.environ.get(k) for k in (*_MLFLOW_ENV, FILE_STORE_ENV)}
        if self.uri.startswith("file:"):
            os.environ.setdefault(FILE_STORE_ENV, "true")
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    @property
    def tags(self) -> dict[str, str]:
        """The tags of every run: the ltbench output folder it belongs to."""
        return {"ltbench.out_dir": str(self.out_dir)}


def tracking_environment(mlflow: MLflow | None):
    """`mlflow.environment()`, or nothing to do without `--mlflow`."""
    return nullcontext() if mlflow is None else mlflow.environment()


def spec_params(spec) -> dict[str, Any]:
    """A trial's parameters as MLflow shows them: its key, method label and every setting of
    its configuration that is set (loss parameters flattened by the logger: loss_params/tau)."""
    config = {k: v for k, v in spec.config.items() if v is not None and v != {} and v != []}
    return {"key": spec.key, "method": spec.method, **config}


def trial_params(specs: dict[str, Any], unit: str, packs: dict[str, list[str]] | None) -> dict:
    """The parameters of a suite's Tune trial `unit`: its spec's, or a pack's members."""
    members = (packs or {}).get(unit)
    if members:
        first = specs.get(members[0])
        shared = spec_params(first) if first is not None else {}
        shared.pop("key", None)
        shared.pop("seed", None)
        return {**shared, "pack_members": ",".join(members)}
    spec = specs.get(unit)
    return spec_params(spec) if spec is not None else {}
