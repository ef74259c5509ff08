"""Post-hoc decision rules on a finished run, without retraining (`ltbench eval RUN_DIR`).

The run's network is rebuilt from `config.yaml` and `checkpoint.pt` (a two-stage run's final
network is its stage-2 `StageModel`), its data from the same settings (the same validation
split: `val_seed = cfg.seed`). Features are computed once per split (validation and test); each
rule then turns them into logits and is evaluated with the engine's metrics:

- `raw`: the trained decision, argmax of the scores (cosines for a cosine head: the paper's
  rule; logits for a linear head). Its confidences (ECE) are the loss's `eval_logits`
  (scores times the loss's scale s).
- `train-logits`: argmax of the logits the loss trains with, without its margins
  (`LossPlugin.train_logits`: KPS `s_base r_j cos θ_j`, LDAM / CosFace `s cos θ_j`, LA
  `z_j + τ log π_j`, CE the logits); the ECE uses these logits.
- `logit-adjust` (Menon et al. 2021, post hoc): `z_j - τ log π_j`, z the train logits (scale
  included), π the training class prior (the counts trained on); the ECE uses these logits.
- `tau-norm` (Kang et al. 2020): each classifier weight row divided by `||w_j||^τ`, and the
  linear head's bias dropped, as the official `tau_norm.py` of classifier-balancing does (so
  τ = 0 is the raw rule without its bias); a learnt class scale (LWS) still multiplies the
  scores. A cosine head normalises its rows anyway: τ has no effect there (the result says so).
  The ECE uses `eval_logits`.

The rules are registered by name (`ltbench.sdk.posthoc`, entry-point group `ltbench.posthoc`;
these four are `BUILT_IN_RULES`), so a third-party package adds its own the same way.

τ is chosen on the validation split, over a grid (default 0, 0.1, ..., 2) by the lowest
balanced validation error (the mean per-class error over the classes that have validation
images; ties: the smallest τ). The test split is never read before τ is fixed. A run without a
validation split has no way to choose τ: a rule with τ asked of it is refused in one line unless
the user gives τ (`tau`, `ltbench eval --tau`); such an entry says `tau_selected_on: "fixed by
the user"` and its results row is labelled `rule (τ=T fixed)` (`fixed_tau_rule`), so it is never
taken for the paper's row. Without rules named, `ltbench eval` on such a run evaluates the rules
without τ and lists the others under `skipped`.

The results go into `result.json` under `posthoc` (written atomically; the rest of the file is
kept): per rule every metric of the test set (without the confusion matrix), the per-class
accuracy, τ, the validation errors per τ; and the grid, the selection metric and the precision
of the evaluation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ltbench.engine.checkpoint import load_checkpoint, write_json
from ltbench.engine.config import TrainConfig, load_yaml, resolve
from ltbench.engine.identity import precision_name
from ltbench.engine.locks import hold
from ltbench.engine.metrics import Evaluator, per_class_accuracy
from ltbench.engine.models import CosineClassifier
from ltbench.engine.stages import plan_stages
from ltbench.engine.step import (
    hold_out_meta,
    load_run_data,
    make_loaders,
    pick_device,
    step_options,
)
from ltbench.errors import LtbenchError
from ltbench.runfiles import CHECKPOINT_FILE, CONFIG_FILE, RESULT_FILE
from ltbench.sdk.posthoc import RULES as _RULES
from ltbench.sdk.posthoc import PosthocRule

DEFAULT_GRID = tuple(round(0.1 * i, 10) for i in range(21))
FIXED_BY_USER = "fixed by the user"
NO_VALIDATION = (
    "no validation split to choose tau on: train with --val-fraction 0.1 (ImageNet-LT: its "
    "val file) or give --tau T (the row is then labelled tau fixed)"
)
MAX_GRID = 10_000  # τ values one evaluation may try (each is one pass over the features)
SELECTION_METRIC = "val_balanced_error"
_CHUNK = 4096


# ----------------------------------------------------------------------------------------------
# Arguments


def parse_rules(rules: str | Iterable[str] | None) -> list[str]:
    """Rule names from a comma-separated string or a list (default: every registered rule),
    checked against the registry (`ltbench.sdk.posthoc`)."""
    known = _RULES.names()
    if rules is None:
        return known
    if isinstance(rules, str):
        rules = [r.strip() for r in rules.split(",") if r.strip()]
    out = list(dict.fromkeys(rules))
    if not out:
        raise LtbenchError(f"no post-hoc rule given; allowed: {', '.join(known)}")
    for rule in out:
        if rule not in known:
            raise LtbenchError(f"unknown post-hoc rule {rule!r}; allowed: {', '.join(known)}")
    return out


def parse_grid(text: str | Sequence[float] | None) -> list[float]:
    """A τ grid from `START:STOP:STEP` (both ends included) or `a,b,c` (default 0:2:0.1)."""
    if text is None:
        return list(DEFAULT_GRID)
    if not isinstance(text, str):
        values = [float(v) for v in text]
    elif ":" in text:
        try:
            start, stop, step = (float(x) for x in text.split(":"))
        except ValueError:
            raise LtbenchError(f"--tau-grid {text!r}: expected START:STOP:STEP") from None
        if not all(math.isfinite(x) for x in (start, stop, step)):
            raise LtbenchError(f"--tau-grid {text!r}: START, STOP and STEP must be finite numbers")
        if not step > 0 or stop < start:
            raise LtbenchError(f"--tau-grid {text!r}: STEP must be > 0 and STOP >= START")
        n = math.floor((stop - start) / step + 1e-9)
        if n + 1 > MAX_GRID:
            raise LtbenchError(
                f"--tau-grid {text!r} has {n + 1:.3g} values; at most {MAX_GRID} "
                "(use a larger STEP)"
            )
        values = [round(start + i * step, 10) for i in range(n + 1)]
    else:
        try:
            values = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise LtbenchError(f"--tau-grid {text!r}: expected numbers") from None
    if len(values) > MAX_GRID:
        raise LtbenchError(f"the tau grid has {len(values)} values; at most {MAX_GRID}")
    if not values or any(not math.isfinite(v) or v < 0 for v in values):
        raise LtbenchError(f"the tau grid must list numbers >= 0, got {str(text)[:200]!r}")
    return values


# ----------------------------------------------------------------------------------------------
# The finished run


@dataclass
class FinishedRun:
    """A finished run's network, loss plugin and data, ready to compute features."""

    run_dir: Path
    cfg: TrainConfig
    model: torch.nn.Module  # `.backbone` and `.classifier` (and `.class_scale` for a stage)
    plugin: Any
    bundle: Any
    device: torch.device
    amp: bool


def load_finished_run(run_dir: str | Path, device: str = "auto") -> FinishedRun:
    """Rebuild a finished run's final network and its data (one-line errors)."""
    from ltbench.engine.network import build_stages_network
    from ltbench.sdk.registry import build_loss, get_spec

    run_dir = Path(run_dir)
    for name in (CONFIG_FILE, CHECKPOINT_FILE, RESULT_FILE):
        if not (run_dir / name).is_file():
            raise LtbenchError(f"{run_dir} is not a finished run: it has no {name}")
    cfg = resolve(load_yaml(run_dir / CONFIG_FILE))
    cfg.device = device
    stages = plan_stages(cfg)
    stage = stages[-1]
    dev = pick_device(cfg.device)
    amp, _ = step_options(cfg, dev)
    per_class = stage.meta_per_class
    data = load_run_data(cfg, download=False, meta_per_class=per_class)
    bundle, _, _ = hold_out_meta(data, per_class, cfg.seed)
    counts = list(bundle.cls_num_list)
    plugin = build_loss(stage.loss, counts, **stage.loss_params)
    heads = [get_spec(s.loss).head for s in stages[:-1]] + [plugin.head]
    model = build_stages_network(cfg, stages, bundle.num_classes, heads)
    if not (hasattr(model, "backbone") and hasattr(model, "classifier")):
        raise LtbenchError(
            f"loss {cfg.loss!r}: its network has no backbone and classifier; "
            "post-hoc rules need both"
        )
    state = load_checkpoint(run_dir / CHECKPOINT_FILE, cfg)
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    plugin.to(dev)
    return FinishedRun(run_dir, cfg, model, plugin, bundle, dev, amp)


@dataclass
class SplitFeatures:
    """Backbone features (float32) and labels of one split, on the run's device."""

    features: torch.Tensor
    labels: torch.Tensor


@torch.no_grad()
def split_features(run: FinishedRun, split: str) -> SplitFeatures | None:
    """The features of `split` ("val" or "test"; None when the run has no such split)."""
    if getattr(run.bundle, split) is None:
        return None
    loaders = make_loaders(run.bundle, run.cfg, run.device)
    loader = loaders.val if split == "val" else loaders.test
    loader.set_epoch(0)
    autocast = torch.autocast(run.device.type, dtype=torch.bfloat16) if run.amp else nullcontext()
    feats, labels = [], []
    run.model.eval()
    for images, y in loader:
        with autocast:
            f = run.model.backbone(images)
        feats.append(f.float())
        labels.append(y.to(run.device))
    return SplitFeatures(torch.cat(feats), torch.cat(labels))


# ----------------------------------------------------------------------------------------------
# Scores and rules


def head_scores(
    run: FinishedRun, features: torch.Tensor, tau: float | None = None, bias: bool = True
):
    """The classifier's scores of `features`, its weight rows divided by ||w_j||^tau (None: as
    trained); a linear head adds its bias unless `bias` is False (τ-norm); a learnt class scale
    multiplies the scores."""
    clf = run.model.classifier
    w = clf.weight.detach().float()
    if isinstance(clf, CosineClassifier):
        scores = (F.normalize(features, dim=1, eps=clf.eps) @ F.normalize(w, dim=1).t()).clamp(
            -1.0, 1.0
        )
    else:
        if tau:
            w = w / w.norm(dim=1, keepdim=True).pow(tau)
        b = None if clf.bias is None or not bias else clf.bias.detach().float()
        scores = F.linear(features, w, b)
    scale = getattr(run.model, "class_scale", None)
    return scores if scale is None else scores * scale.detach().float()


def log_prior(run: FinishedRun) -> torch.Tensor:
    """log π_j of the training counts (float32, on the run's device)."""
    n = torch.as_tensor(np.asarray(run.bundle.cls_num_list, dtype=np.float64))
    return torch.log(n / n.sum()).float().to(run.device)


@dataclass
class RuleContext:
    """What a rule's `logits(ctx, tau)` sees of one chunk of features (`ltbench.sdk.posthoc`)."""

    run: FinishedRun
    features: torch.Tensor

    def scores(self, tau: float | None = None, bias: bool = True) -> torch.Tensor:
        """The classifier's scores (weight rows divided by ||w_j||^tau when tau is given; a
        linear head's bias left out when `bias` is False)."""
        return head_scores(self.run, self.features, tau, bias)

    def eval_logits(self, scores: torch.Tensor) -> torch.Tensor:
        return self.run.plugin.eval_logits(scores)

    def train_logits(self, scores: torch.Tensor) -> torch.Tensor:
        return self.run.plugin.train_logits(scores)

    def log_prior(self) -> torch.Tensor:
        return log_prior(self.run)


def tuned_rules() -> list[str]:
    """The registered rules whose tau is chosen on the validation split."""
    return [name for name in _RULES.names() if _RULES.get(name).tuned]


def rule_logits(run: FinishedRun, rule: str, features: torch.Tensor, tau: float | None):
    """The logits of `rule` (their argmax is its prediction; their softmax its confidences)."""
    with torch.no_grad():
        return _RULES.get(rule).logits(RuleContext(run, features), tau)


def _cosine_note(run: FinishedRun) -> str | None:
    if isinstance(run.model.classifier, CosineClassifier):
        return "cosine head: the weight rows are normalised anyway; tau has no effect"
    return None


# ltbench's own rules (entry point `built-in` of `ltbench.posthoc`; see the module docstring)
BUILT_IN_RULES = [
    PosthocRule(
        "raw",
        lambda ctx, tau: ctx.eval_logits(ctx.scores()),
        ece_logits="eval_logits: scores x the loss's scale",
        description="the trained decision: argmax of the scores",
    ),
    PosthocRule(
        "train-logits",
        lambda ctx, tau: ctx.train_logits(ctx.scores()),
        ece_logits="train_logits",
        description="argmax of the logits the loss trains with, without its margins",
    ),
    PosthocRule(
        "logit-adjust",
        lambda ctx, tau: ctx.train_logits(ctx.scores()) - tau * ctx.log_prior(),
        ece_logits="train_logits - tau log prior",
        tuned=True,
        description="train logits minus tau log prior (Menon et al. 2021, post hoc)",
    ),
    PosthocRule(
        "tau-norm",
        lambda ctx, tau: ctx.eval_logits(ctx.scores(tau, bias=False)),  # official: no bias
        ece_logits="eval_logits of the tau-normalised scores",
        tuned=True,
        description="classifier rows divided by their norm to the power tau (Kang et al. 2020)",
        note=_cosine_note,
    ),
]


def _evaluate(run: FinishedRun, rule: str, data: SplitFeatures, tau: float | None) -> Evaluator:
    ev = Evaluator(run.bundle.num_classes, run.device)
    for i in range(0, data.labels.shape[0], _CHUNK):
        logits = rule_logits(run, rule, data.features[i : i + _CHUNK], tau)
        ev.update(logits, data.labels[i : i + _CHUNK])
    return ev


def balanced_error(ev: Evaluator) -> float:
    """Mean per-class error (percent) over the classes with images in the split."""
    c = ev.num_classes
    acc = per_class_accuracy(ev.confusion.view(c, c).cpu().numpy())
    acc = acc[~np.isnan(acc)]
    return float(100.0 - acc.mean()) if acc.size else math.nan


def fixed_tau_rule(rule: str, tau: float) -> str:
    """The results row name of a rule whose τ the user fixed: `logit-adjust (τ=1 fixed)`."""
    return f"{rule} (τ={tau:g} fixed)"


def check_tau(value: Any) -> float:
    """A τ the user gives: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise LtbenchError(f"tau {value!r} must be a finite number >= 0")
    return float(value)


def choose_tau(
    run: FinishedRun,
    rule: str,
    val: SplitFeatures | None,
    grid: Sequence[float],
    tau: float | None = None,
) -> dict[str, Any]:
    """τ of a rule: `tau` when the user fixed it, else the grid point with the lowest balanced
    validation error (the first of equal ones). Reads only `val`; refused without one."""
    if tau is not None:
        return {"tau": check_tau(tau), "tau_selected_on": FIXED_BY_USER}
    if val is None:
        raise LtbenchError(f"{run.run_dir}: rule {rule!r} needs tau, and there is {NO_VALIDATION}")
    errors = [balanced_error(_evaluate(run, rule, val, tau)) for tau in grid]
    best = min(range(len(grid)), key=lambda i: (errors[i], i))
    return {
        "tau": float(grid[best]),
        "tau_selected_on": "val",
        f"{SELECTION_METRIC}_by_tau": errors,
    }


def evaluate_rules(
    run: FinishedRun,
    rules: Sequence[str],
    grid: Sequence[float] = DEFAULT_GRID,
    tau: float | None = None,
) -> dict[str, Any]:
    """The `posthoc` block of result.json for `rules` on the finished `run`.

    Every τ is fixed on the validation split (or given as `tau`) before the test features are
    computed; a rule with τ on a run without a validation split and without `tau` is refused.
    """
    rules = parse_rules(list(rules))
    if tau is None and run.bundle.val is None:
        needs = [r for r in rules if r in tuned_rules()]
        if needs:  # before any feature is computed
            raise LtbenchError(
                f"{run.run_dir}: rule {needs[0]!r} needs tau, and there is {NO_VALIDATION}"
            )
    val = split_features(run, "val")
    counts = list(run.bundle.cls_num_list)
    shots = (run.cfg.many_shot, run.cfg.few_shot)
    chosen: dict[str, dict[str, Any]] = {}
    for rule in rules:
        spec = _RULES.get(rule)
        entry: dict[str, Any] = {"tau": None, "ece_logits": spec.ece_logits}
        if spec.tuned:
            entry.update(choose_tau(run, rule, val, grid, tau))
        note = spec.note(run) if spec.note is not None else None
        if note is not None:
            entry["note"] = note
        if val is not None:
            ev = _evaluate(run, rule, val, entry["tau"])
            entry["val_top1_error"] = ev.compute(counts, *shots)["top1_error"]
            entry[SELECTION_METRIC] = balanced_error(ev)
        chosen[rule] = entry
    test = split_features(run, "test")  # only now: every τ is fixed
    out_rules = {}
    for rule, entry in chosen.items():
        metrics = _evaluate(run, rule, test, entry["tau"]).compute(counts, *shots)
        metrics.pop("confusion_matrix", None)
        out_rules[rule] = {**entry, **metrics}
    return {
        "rules": out_rules,
        "tau_grid": [float(t) for t in grid],
        "selection_metric": SELECTION_METRIC if val is not None and tau is None else None,
        "selection_split": "val" if val is not None and tau is None else None,
        "fixed_tau": tau,
        "precision": precision_name(run.amp),
        "device": run.device.type,
        "tau_norm_bias": "dropped, as the official tau_norm.py (tau = 0 is raw without bias)",
    }


def posthoc(
    run_dir: str | Path,
    rules: str | Iterable[str] | None = None,
    grid: str | Sequence[float] | None = None,
    *,
    device: str = "auto",
    tau: float | None = None,
) -> dict[str, Any]:
    """Evaluate `rules` (None: every rule the run allows) on the finished run in `run_dir` and
    store them in its result.json under `posthoc` (atomically; everything else in the file is
    kept, and so are the rules of an earlier evaluation that this one does not redo:
    `merge_posthoc`). `tau` fixes τ instead of choosing it. The run's folder is held for the
    whole evaluation (`ltbench.engine.locks`): a second `eval` or a `train` on it meanwhile is
    refused with the holder's PID. Returns the block of this evaluation."""
    run_dir = Path(run_dir)
    asked = rules is not None
    rules = parse_rules(rules)
    grid_values = parse_grid(grid)
    tau = None if tau is None else check_tau(tau)
    if not run_dir.is_dir():
        raise LtbenchError(f"{run_dir} is not a finished run: no such folder")
    with hold(run_dir):  # no other writer in the run's folder meanwhile
        result = read_run_result(run_dir)
        run = load_finished_run(run_dir, device)
        skipped = {}
        if not asked and tau is None and run.bundle.val is None:  # the default set: what can run
            skipped = {r: NO_VALIDATION for r in rules if r in tuned_rules()}
            rules = [r for r in rules if r not in skipped]
        block = evaluate_rules(run, rules, grid_values, tau)
        if skipped:
            block["skipped"] = skipped
        merged = merge_posthoc(result.get("posthoc"), block)
        if skipped:  # a rule an earlier evaluation did (with --tau) is not skipped
            merged["skipped"] = {r: w for r, w in skipped.items() if r not in merged["rules"]}
        result["posthoc"] = merged
        write_json(run_dir / RESULT_FILE, result)
    return block


def read_run_result(run_dir: Path) -> dict[str, Any]:
    """The run's result.json as a dict; a one-line error if it is missing, unreadable or not a
    JSON object."""
    path = run_dir / "result.json"
    if not path.is_file():
        raise LtbenchError(f"{run_dir} is not a finished run: it has no result.json")
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 text
        raise LtbenchError(f"{path} is not readable ({str(exc)[:200]})") from None
    if not isinstance(result, dict):
        raise LtbenchError(
            f"{path} holds a JSON {type(result).__name__}, not a run's record (an object); "
            "train the run again with --overwrite"
        )
    return result


# The settings of an evaluation that each rule carries when rules of two evaluations are kept.
_EVALUATION_KEYS = (
    "tau_grid",
    "selection_metric",
    "selection_split",
    "fixed_tau",
    "precision",
    "device",
)


def merge_posthoc(earlier: Any, block: dict[str, Any]) -> dict[str, Any]:
    """The `posthoc` block after `block`'s evaluation: its rules replace the same rules of the
    `earlier` block; the earlier block's other rules are kept. A kept rule evaluated with other
    settings (τ grid, precision, device) carries its own settings."""
    if not isinstance(earlier, dict) or not isinstance(earlier.get("rules"), dict):
        return block
    kept = {}
    for rule, entry in earlier["rules"].items():
        if rule in block["rules"] or not isinstance(entry, dict):
            continue
        own = {k: earlier[k] for k in _EVALUATION_KEYS if k in earlier and k not in entry}
        differs = any(own.get(k, block.get(k)) != block.get(k) for k in own)
        kept[rule] = {**entry, **own} if differs else entry
    return {**block, "rules": {**kept, **block["rules"]}}
