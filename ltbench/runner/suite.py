"""Suites: YAML files that list the axes of an experiment, expanded into one spec per trial.

A suite names its axes; `ltbench run` turns every combination into one training run
(`ltbench.runner.commands`, on Ray through `ltbench.runner.ray_adapter`). The file format,
checked key by key when the file is loaded:

    description: LA ablation                      # one line, shown by `ltbench list suites`
    methods:                                      # required, at least one
      - loss: la                                   # a registered loss / method name (required)
        name: la+mixup                             # label in tables (default: the loss name,
                                                   # loss@variant with a variant)
        variant: authors-script                    # a named variant of the method instead of
                                                   # the paper's text (`ltbench list`)
        params: {tau: 1.5}                         # loss parameters (default: the paper's)
        mixup_alpha: 1.0                           # 0 (default) disables mixup
        config: {stage2: {epochs: 10}}             # TrainConfig keys for this method only
        posthoc: [tau-norm]                        # post-hoc rules for this method only (its
                                                   # rows `name [rule]`: `ce [tau-norm]` is
                                                   # Decoupling's τ-norm)
    datasets: [cifar10-lt, cifar100-lt]           # required
    rhos: [100, 50]                               # imbalance ratios max(n)/min(n), required
    seeds: [0, 1, 2]                              # training seeds, required
    subset_seeds: [0]                             # draws of the long-tailed subset (0: standard)
    config: {val_fraction: 0.1}                   # TrainConfig keys for every trial
    posthoc: [logit-adjust, tau-norm]             # post-hoc rules evaluated after each trial
                                                  # (`ltbench eval`; tau chosen on val)
    pack: 3                                       # train up to 3 trials that share data and
                                                  # schedule as one fused network (1: alone;
                                                  # `ltbench.runner.packs`)
    workers_per_trial: 1                          # data-parallel workers of one trial (the
                                                  # recipe's batch split over them), or per
                                                  # dataset: {imagenet-lt: 4, inat2018: 8};
                                                  # a method entry may set its own
    search:                                       # sweep suites only (`ltbench sweep`); the
      space:                                      # format: ltbench.runner.search
        tau: {type: float, low: 0.5, high: 2.0}
      num_samples: 30

The trial grid is methods x datasets x rhos x seeds x subset_seeds. A trial's settings are
layered: TrainConfig defaults (the paper's schedule) < the suite's `config` < the method's
`config` < the preset (`ltbench.runner.presets`; `smoke` shrinks everything) < the axis values.
Method names are checked against the loss registry when a suite is run (`check_methods`), not
when it is loaded, so a suite may name a method whose plugin is installed later. The trials
themselves (`TrialSpec`, DIR/trials.json) are defined in `ltbench.runner.trials`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import sweeps
from ltbench.data.registry import get_dataset_spec
from ltbench.engine.config import TrainConfig
from ltbench.errors import LtbenchError, check_size
from ltbench.runner.packs import check_pack_size
from ltbench.runner.presets import DEFAULT_PRESET, PRESETS
from ltbench.runner.search import (
    SearchSpace,
    check_keys,
    is_int,
    is_number,
    parse_search,
    type_name,
)
from ltbench.runner.trials import TrialSpec, trial_key
from ltbench.sdk.registry import VARIANT_MARK, VARIANT_NAME_RE

SUITES_DIR = Path(sweeps.__file__).resolve().parent  # the suite YAML files shipped as package data

# TrainConfig keys that belong to an axis of the suite, so a `config` block may not set them.
AXIS_KEYS = {
    "dataset": "datasets",
    "imb_factor": "rhos",
    "seed": "seeds",
    "subset_seed": "subset_seeds",
    "loss": "methods[].loss",
    "loss_params": "methods[].params",
    "variant": "methods[].variant",
    "mixup_alpha": "methods[].mixup_alpha",
}
SUITE_KEYS = (
    "description",
    "methods",
    "datasets",
    "rhos",
    "seeds",
    "subset_seeds",
    "config",
    "search",
    "posthoc",
    "pack",
    "workers_per_trial",
    "reference",
)
REQUIRED_KEYS = ("methods", "datasets", "rhos", "seeds")
METHOD_KEYS = (
    "name",
    "loss",
    "params",
    "variant",
    "mixup_alpha",
    "config",
    "posthoc",
    "workers_per_trial",
)
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=@-]*$")


# ----------------------------------------------------------------------------------------------
# The loaded suite


@dataclass(frozen=True)
class Method:
    """One entry of a suite's `methods` list."""

    name: str
    loss: str
    params: dict[str, Any] = field(default_factory=dict)
    mixup_alpha: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    posthoc: list[str] = field(default_factory=list)
    workers_per_trial: int | None = None  # None: the suite's
    variant: str | None = None  # a named variant of the method (None: the paper's text)


@dataclass(frozen=True)
class Suite:
    """A validated suite file. `source` is the file it came from (used in messages)."""

    name: str
    source: str
    description: str
    methods: list[Method]
    datasets: list[str]
    rhos: list[float]
    seeds: list[int]
    subset_seeds: list[int] = field(default_factory=lambda: [0])
    config: dict[str, Any] = field(default_factory=dict)
    search: SearchSpace | None = None
    posthoc: list[str] = field(default_factory=list)
    pack: int = 1  # trials per pack (1: every trial alone)
    workers_per_trial: dict[str, int] = field(default_factory=dict)  # dataset -> workers
    reference: str | None = None  # the method the report compares every other with

    def workers(self, method: Method, dataset: str) -> int:
        """The workers of a trial: the method's, else the suite's for the dataset, else 1."""
        if method.workers_per_trial is not None:
            return method.workers_per_trial
        return self.workers_per_trial.get(dataset, self.workers_per_trial.get("*", 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to DIR/suite.yaml."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------
# Finding and loading suite files


def _suite_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


def list_suites() -> dict[str, str]:
    """The suites shipped in `sweeps/`, each with its one-line description."""
    out = {}
    for name, path in _suite_files().items():
        try:
            out[name] = load_suite(path).description
        except LtbenchError as exc:
            out[name] = f"(invalid: {exc})"
    return out


def suite_path(name_or_path: str | Path) -> Path:
    """A suite name from `sweeps/` or a path to a YAML file; one-line error otherwise."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        path = Path(text).expanduser()
        if not path.is_file():
            raise LtbenchError(f"suite file {text} does not exist")
        return path
    files = _suite_files()
    if text not in files:
        known = ", ".join(files) or "(none)"
        raise LtbenchError(
            f"unknown suite {text!r}; known suites: {known} (or pass --suite path/to/file.yaml)"
        )
    return files[text]


def _list_of(data: dict, key: str, where: str, check, what: str) -> list:
    value = data[key]
    if not isinstance(value, list) or not value:
        raise LtbenchError(
            f"{where}: {key} must be a non-empty list of {what}, got {value!r} ({type_name(value)})"
        )
    for item in value:
        if not check(item):
            raise LtbenchError(
                f"{where}: {key} must be a list of {what}, got item {item!r} ({type_name(item)})"
            )
    if len(set(map(str, value))) != len(value):
        raise LtbenchError(f"{where}: {key} lists a value twice: {value!r}")
    return list(value)


def check_config_block(block: Any, where: str) -> dict[str, Any]:
    """A `config` block: TrainConfig keys (not the axis keys) with values of the right type."""
    if not isinstance(block, dict):
        raise LtbenchError(f"{where} must be a mapping of TrainConfig keys, got {block!r}")
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in block:
        if key in AXIS_KEYS:
            raise LtbenchError(
                f"{where}: key {key!r} is set by the suite's {AXIS_KEYS[key]}, not in config"
            )
        if key not in fields:
            allowed = ", ".join(k for k in fields if k not in AXIS_KEYS)
            raise LtbenchError(f"{where}: unknown key {key!r}; allowed keys: {allowed}")
    TrainConfig.from_dict(dict(block), source=where)  # type check of every value
    return dict(block)


def _method(entry: Any, index: int, where: str) -> Method:
    at = f"{where}: methods[{index}]"
    if isinstance(entry, str):
        entry = {"loss": entry}
    if not isinstance(entry, dict):
        raise LtbenchError(
            f"{at} must be a loss name or a mapping with keys {', '.join(METHOD_KEYS)}, "
            f"got {entry!r}"
        )
    check_keys(entry, METHOD_KEYS, at)
    loss = entry.get("loss")
    if not isinstance(loss, str) or not loss:
        raise LtbenchError(f"{at}: loss must be a registered loss name (str), got {loss!r}")
    variant = entry.get("variant")
    if variant is not None and not (isinstance(variant, str) and VARIANT_NAME_RE.match(variant)):
        raise LtbenchError(
            f"{at}: variant must be a variant name such as authors-script, got {variant!r}"
        )
    name = entry.get("name", loss if variant is None else f"{loss}{VARIANT_MARK}{variant}")
    if not isinstance(name, str) or not LABEL_RE.match(name):
        raise LtbenchError(
            f"{at}: name must be a label of letters, digits and . _ + = @ -, got {name!r}"
        )
    params = entry.get("params", {}) or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise LtbenchError(f"{at}: params must be a mapping of parameter names, got {params!r}")
    alpha = entry.get("mixup_alpha", 0.0)
    if not is_number(alpha) or alpha < 0:
        raise LtbenchError(f"{at}: mixup_alpha must be a number >= 0, got {alpha!r}")
    config = check_config_block(entry.get("config", {}) or {}, f"{at}: config")
    posthoc = _posthoc(entry.get("posthoc"), at)
    workers = entry.get("workers_per_trial")
    if workers is not None and not (is_int(workers) and workers >= 1):
        raise LtbenchError(f"{at}: workers_per_trial must be an integer >= 1, got {workers!r}")
    return Method(name, loss, dict(params), float(alpha), config, posthoc, workers, variant)


def _workers(value: Any, where: str) -> dict[str, int]:
    """The suite's `workers_per_trial`: an integer for every dataset, or {dataset: integer}."""
    if value is None:
        return {}
    if is_int(value) and value >= 1:
        return {"*": int(value)}
    if isinstance(value, dict) and all(is_int(v) and v >= 1 for v in value.values()):
        check_datasets([str(k) for k in value], f"{where}: workers_per_trial")
        return {str(k): int(v) for k, v in value.items()}
    raise LtbenchError(
        f"{where}: workers_per_trial must be an integer >= 1 or a mapping of datasets to "
        f"integers >= 1, got {value!r}"
    )


def load_suite(name_or_path: str | Path) -> Suite:
    """Load and validate a suite by name (from `sweeps/`) or path; one-line errors."""
    path = suite_path(name_or_path)
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise LtbenchError(f"{where}: not valid YAML ({first})") from None
    except UnicodeDecodeError:
        raise LtbenchError(f"{where}: not a UTF-8 text YAML file") from None
    except OSError as exc:
        raise LtbenchError(f"cannot read suite file {where}: {exc.strerror}") from None
    check_size(data, where)
    if not isinstance(data, dict):
        raise LtbenchError(f"{where}: expected a mapping with keys {', '.join(SUITE_KEYS)}")
    check_keys(data, SUITE_KEYS, where)
    for key in REQUIRED_KEYS:
        if key not in data:
            raise LtbenchError(f"{where}: missing required key {key!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise LtbenchError(f"{where}: description must be a string, got {description!r}")

    if not isinstance(data["methods"], list) or not data["methods"]:
        raise LtbenchError(f"{where}: methods must be a non-empty list, got {data['methods']!r}")
    methods = [_method(m, i, where) for i, m in enumerate(data["methods"])]
    labels = [m.name for m in methods]
    for label in labels:
        if labels.count(label) > 1:
            raise LtbenchError(
                f"{where}: two methods are labelled {label!r}; give one of them a distinct name"
            )
    datasets = _list_of(data, "datasets", where, lambda v: isinstance(v, str), "dataset names")
    check_datasets(datasets, where)
    rhos = _list_of(
        data,
        "rhos",
        where,
        lambda v: is_number(v) and v >= 1,
        "imbalance ratios >= 1 (e.g. 100 for rho = 100)",
    )
    seeds = _list_of(data, "seeds", where, lambda v: is_int(v) and v >= 0, "integers >= 0")
    subset_seeds = [0]
    if "subset_seeds" in data:
        subset_seeds = _list_of(
            data, "subset_seeds", where, lambda v: is_int(v) and v >= 0, "integers >= 0"
        )
    config = check_config_block(data.get("config", {}) or {}, f"{where}: config")
    search = parse_search(data["search"], where) if "search" in data else None
    posthoc = _posthoc(data.get("posthoc"), where)
    pack = check_pack_size(data.get("pack", 1), f"{where}: pack")
    workers = _workers(data.get("workers_per_trial"), where)
    reference = check_reference(data.get("reference"), labels, f"{where}: reference")
    return Suite(path.stem, where, description, methods, datasets, [float(r) for r in rhos],
        seeds, subset_seeds, config, search, posthoc, pack, workers, reference)  # fmt: skip


def check_reference(value: Any, labels: list[str], where: str) -> str | None:
    """The suite's `reference:` (the method its report compares every other with): None, or
    one of the suite's method labels."""
    if value is not None and (not isinstance(value, str) or value not in labels):
        raise LtbenchError(
            f"{where} {value!r} is not a method of the suite; choose one of: {', '.join(labels)}"
        )
    return value


def _posthoc(value: Any, where: str) -> list[str]:
    """The suite's `posthoc` list of rule names (checked against the engine's rules)."""
    from ltbench.engine.posthoc import parse_rules

    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise LtbenchError(f"{where}: posthoc must be a list of rule names, got {value!r}")
    try:
        return parse_rules(value) if value else []
    except LtbenchError as exc:
        raise LtbenchError(f"{where}: posthoc: {exc}") from None


def check_datasets(datasets: list[str], where: str) -> None:
    """Every dataset is one ltbench knows; the error lists the known ones."""
    for d in datasets:
        try:
            get_dataset_spec(d)
        except LtbenchError as exc:
            raise LtbenchError(f"{where}: {exc}") from None


def check_methods(suite: Suite) -> None:
    """Every method's loss is registered (run time: plugins may arrive after the YAML)."""
    from ltbench.sdk.registry import get_spec, get_variant

    for m in suite.methods:
        try:
            spec = get_spec(m.loss)
            if m.variant is not None:
                get_variant(spec, m.variant)
        except LtbenchError as exc:
            raise LtbenchError(f"{suite.source}: method {m.name!r}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# Overrides from the command line, and expansion into trials


def apply_overrides(
    suite: Suite,
    *,
    datasets: list[str] | None = None,
    rhos: list[float] | None = None,
    seeds: int | None = None,
    preset: str = DEFAULT_PRESET,
    preset_seeds: bool = True,
    data_root: str | Path | None = None,
    download: bool = False,
    extra_methods: tuple[str, ...] | list[str] = (),
    workers: int | None = None,
) -> tuple[Suite, dict[str, Any]]:
    """The suite with the command line's axes, and the preset's TrainConfig overrides.

    `preset_seeds=False` keeps the suite's seeds under a preset that sets a seed count.
    `extra_methods` (`--with`) are appended as methods with their paper defaults; one the
    suite already has under that label is not added twice. `workers` (`--workers-per-trial`)
    replaces every trial's number of data-parallel workers.
    """
    if preset not in PRESETS:
        raise LtbenchError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    changes: dict[str, Any] = {}
    if extra_methods:
        from ltbench.sdk.registry import get_spec

        for name in extra_methods:
            try:
                get_spec(name)
            except LtbenchError as exc:
                raise LtbenchError(f"--with: {exc}") from None
        labels = {m.name for m in suite.methods}
        added = [
            _method(name, i, "--with")
            for i, name in enumerate(dict.fromkeys(extra_methods))
            if name not in labels
        ]
        changes["methods"] = [*suite.methods, *added]
    if datasets:
        check_datasets(datasets, "--dataset")
        changes["datasets"] = list(dict.fromkeys(datasets))
    if rhos:
        bad = [r for r in rhos if not r >= 1]
        if bad:
            raise LtbenchError(f"--rho must be >= 1 (e.g. 100), got {bad[0]!r}")
        changes["rhos"] = [float(r) for r in dict.fromkeys(rhos)]
    n_seeds = seeds if seeds is not None else (p.seeds if preset_seeds else None)
    if n_seeds is not None:
        if n_seeds < 1:
            raise LtbenchError(f"--seeds must be >= 1, got {n_seeds}")
        changes["seeds"] = list(range(n_seeds))
    if suite.search is not None and not suite.search.is_grid:  # a grid keeps all its points
        search = suite.search
        if p.num_samples is not None:
            search = dataclasses.replace(search, num_samples=p.num_samples)
        if p.grace_fraction is not None:
            search = dataclasses.replace(search, grace_fraction=p.grace_fraction)
        changes["search"] = search
    if workers is not None:
        methods = changes.get("methods", suite.methods)
        changes["methods"] = [dataclasses.replace(m, workers_per_trial=None) for m in methods]
        changes["workers_per_trial"] = {"*": int(workers)}
    overrides = dict(p.overrides)
    if data_root is not None:
        overrides["data_root"] = str(Path(data_root).expanduser().resolve())
    if download:
        overrides["download"] = True
    return dataclasses.replace(suite, **changes), overrides


# A trial whose post-hoc rules choose a τ gets this validation split unless its suite, method
# or preset sets `val_fraction` (the same 0.1, at least 5 images per class, as elsewhere).
POSTHOC_VAL_FRACTION = 0.1


def posthoc_val_fraction(suite: Suite, m: Method, rules, layers) -> float | None:
    """The `val_fraction` a trial with post-hoc `rules` must get (None: leave it as it is):
    `POSTHOC_VAL_FRACTION` where a rule chooses τ and no layer of the trial sets it; a layer that
    sets it to 0 for such a rule is a one-line error."""
    from ltbench.engine.posthoc import tuned_rules

    tau_rules = [r for r in rules if r in tuned_rules()]
    if not tau_rules:
        return None
    given = [layer["val_fraction"] for layer in layers if "val_fraction" in layer]
    if not given:
        return POSTHOC_VAL_FRACTION
    if not given[-1]:
        raise LtbenchError(
            f"{suite.source}: method {m.name!r}: post-hoc rule {tau_rules[0]!r} chooses tau on "
            "a validation split, and val_fraction is 0; leave val_fraction unset (0.1) or > 0"
        )
    return None


def expand(suite: Suite, preset_overrides: dict[str, Any] | None = None) -> list[TrialSpec]:
    """One TrialSpec per (method, dataset, rho, seed, subset_seed), in suite order."""
    preset_overrides = dict(preset_overrides or {})
    tag_subset = len(suite.subset_seeds) > 1 or suite.subset_seeds != [0]
    trials = []
    for m in suite.methods:
        for dataset in suite.datasets:
            for rho in suite.rhos:
                for seed in suite.seeds:
                    for ss in suite.subset_seeds:
                        cfg = TrainConfig().to_dict()
                        cfg.update(suite.config)
                        cfg.update(m.config)
                        cfg.update(preset_overrides)
                        cfg.update(
                            dataset=dataset,
                            imb_factor=1.0 / rho,
                            seed=seed,
                            subset_seed=ss,
                            loss=m.loss,
                            variant=m.variant,
                            loss_params=dict(m.params),
                            mixup_alpha=m.mixup_alpha,
                        )
                        if cfg.get("draw"):  # trials keep the driver's folder; resumes may not
                            cfg["draw"] = str(Path(cfg["draw"]).expanduser().resolve())
                        key = trial_key(m.name, dataset, rho, seed, ss if tag_subset else None)
                        rules = tuple(dict.fromkeys([*suite.posthoc, *m.posthoc]))
                        layers = (suite.config, m.config, preset_overrides)
                        val = posthoc_val_fraction(suite, m, rules, layers)
                        if val is not None:
                            cfg["val_fraction"] = val
                        workers = suite.workers(m, dataset)
                        trials.append(TrialSpec(key, m.name, cfg, rules, workers))
    return trials
