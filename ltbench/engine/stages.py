"""Two-stage methods: train the whole network, then re-train its classifier on a frozen backbone.

Registered methods (each is selected like any loss: `ltbench train --loss mislas`, `loss: mislas`
in a suite):

- `crt` (Kang et al., ICLR 2020, classifier re-training): stage 1 is plain CE; stage 2 draws a
  fresh linear classifier and trains it with CE under class-balanced sampling. The backbone is
  frozen, BatchNorm included.
- `mislas` (Zhong et al., CVPR 2021): stage 1 is CE with mixup (alpha 1); stage 2 continues the
  stage-1 classifier under class-balanced sampling with label-aware smoothing (`las`), lets the
  BatchNorm running statistics follow the stage-2 data ("shift learning": BN layers stay in train
  mode while every backbone weight is frozen) and learns a per-class scale of the outputs (LWS,
  a vector initialised to 1 that multiplies the classifier's scores).
- `mislas-kps` (paper Table 7, "MiSLAS w. KPS"): `mislas` with the KPS loss in stage 2. KPS needs
  a cosine head: stage 2 builds a cosine classifier whose class weights are the L2-normalised
  stage-1 linear weights (the direction of each class is kept, the bias is dropped), so stage 2
  starts from what stage 1 learnt rather than from random weights.

One trial runs both stages. Pipeline of `run_two_stage(cfg, out_dir)`:

1. Stage 1 is an ordinary `ltbench.engine.loop.train` run of `stage1_loss` (with `stage1_params`,
   mixup `stage1_mixup_alpha`) on the trial's data, model and schedule. It lives in a cache
   folder shared by every trial that needs the same stage 1:
   `<cache>/<loss>-<dataset>-seed<seed>-<hash>/`, where `<hash>` digests the resolved stage-1
   configuration without the settings that do not change its numbers (`RUNTIME_KEYS`). The
   cache is the keyword `cache_dir`, else `$LTBENCH_STAGE1_CACHE`, else `<out_dir>/../_stage1`
   (for a suite, DIR/trials/_stage1). A stage 1 is finished when its `result.json` exists. An
   exclusive `fcntl.flock` on `<run folder>.lock` makes concurrent trials wait for the one that
   trains it, then reuse it; an interrupted stage 1 is resumed from its checkpoint.
2. Stage 2 loads the stage-1 checkpoint, freezes the backbone (its weights never receive a
   gradient and are not given to the optimizer), builds the stage-2 classifier (copied, converted
   or re-initialised, see `stage2_classifier`), and trains it (and the LWS vector) for
   `stage2_epochs` with SGD (the run's momentum), a per-epoch cosine schedule from `stage2_lr` to
   0 (MiSLAS's and cRT's schedule), the classifier at `stage2_lr * stage2_lr_factor` and LWS at
   `stage2_lr`. The stage-2 loss sees epochs counted from 0 at the start of stage 2.

Settings are the method's loss parameters, flat (`-p stage2_epochs=5`, suite `params:`); each
method's defaults are in its spec below, the stage-2 loss's own parameters (`smooth_head`,
`smooth_tail`, `shape` for `las`; `m_max`, `s_base`, `n_base` for KPS) are taken from that loss's
spec, and the per-dataset loss defaults of `ltbench.engine.config` apply to them as to any loss (e.g.
`las` 0.4 / 0.1 on CIFAR-100-LT):

    stage1_loss          "ce"             loss of stage 1 (any single-stage loss)
    stage1_params        {}               its parameters (its defaults otherwise)
    stage1_mixup_alpha   1.0 (crt: 0.0)   mixup in stage 1 (0: off)
    stage2_epochs        None             None: 10 at the dataset's paper schedule, scaled by
                                          epochs / paper epochs like every milestone (min. 1)
    stage2_lr            None             None: the run's lr
    stage2_lr_factor     0.5 (crt: 1.0)   the classifier's lr relative to stage2_lr
    stage2_batch_size    None             None: the run's batch size
    stage2_weight_decay  None             None: the run's weight decay
    stage2_sampling      "class-balanced" or "instance"
    stage2_shift_bn      True (crt: False)   BN statistics follow the stage-2 data
    stage2_lws           True (crt: False)   learnable per-class scale of the scores
    stage2_reinit        False (crt: True)   a fresh classifier instead of the stage-1 one

`TrainConfig.stage2` is a shorthand for the `stage2_*` parameters: `stage2: {epochs: 5}` sets
`stage2_epochs=5` (and wins over a value in `loss_params`). A `None` above is replaced by its
value in the saved config.yaml and result.json. The run's `mixup_alpha` must stay 0: stage 1's
mixup is `stage1_mixup_alpha`, and stage 2 never mixes.

Output (the layout of DESIGN.md, in the trial's `out_dir`): `metrics.jsonl` holds the stage-1
epochs (copied from the cache, `"stage": "stage1"`) and then the stage-2 epochs
(`"stage": "stage2"`); epochs keep counting, so stage-2 epoch k is line E1 + k, and `lr` of a
stage-2 line is the classifier's. `checkpoint.pt` is the stage-2 state (the whole network, its
BN statistics, LWS as `class_scale`, the optimizer); a crash in stage 2 resumes from it with
`resume=True`, reusing the cached stage 1. `result.json` is `build_result`'s record of the final
(stage-2) model with `stages: {stage1: <the stage-1 result.json>, stage2: <the same record
without stages>}`, `stage1_dir`, `epochs` = E1 + E2 at the top level (each stage gives its own)
and `wall_seconds` = stage 1's + stage 2's. `hooks` hear the epochs this process trains: stage-1
epochs only when this trial trains stage 1, then every stage-2 epoch (numbered after stage 1).
`overwrite` clears the trial folder only, never the shared stage 1.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.ce import SPEC as CE
from baselines.las import SPEC as LAS
from losses.kps import KPS
from ltbench.data import SAMPLING_MODES, load_dataset, make_loader
from ltbench.engine.config import DATASET_DEFAULTS, TrainConfig, resolve, save_yaml
from ltbench.engine.loop import (
    FUSED_SGD_DEVICES,
    RUNTIME_KEYS,
    TrainHooks,
    build_result,
    environment,
    epoch_batches,
    evaluate,
    fit_epoch,
    load_checkpoint,
    make_loaders,
    pick_device,
    prepare_out_dir,
    record_epoch,
    step_options,
    train,
    write_json,
)
from ltbench.engine.models import CosineClassifier, build_head, build_model
from ltbench.errors import LtbenchError
from ltbench.runner.results import read_metrics
from ltbench.sdk.registry import LossSpec, build_loss, get_spec

try:
    import fcntl
except ImportError:  # not POSIX: no lock, concurrent trials may train the same stage 1 twice
    fcntl = None

PAPER_STAGE2_EPOCHS = 10  # MiSLAS and cRT re-train the classifier for 10 epochs
CACHE_ENV = "LTBENCH_STAGE1_CACHE"
STAGE2_PREFIX = "stage2_"

# The settings every two-stage method has (see the module docstring); a method changes some.
SETTINGS: dict[str, Any] = {
    "stage1_loss": "ce",
    "stage1_params": {},
    "stage1_mixup_alpha": 1.0,
    "stage2_epochs": None,
    "stage2_lr": None,
    "stage2_lr_factor": 0.5,
    "stage2_batch_size": None,
    "stage2_weight_decay": None,
    "stage2_sampling": "class-balanced",
    "stage2_shift_bn": True,
    "stage2_lws": True,
    "stage2_reinit": False,
}


# ----------------------------------------------------------------------------------------------
# Settings -> plan


@dataclasses.dataclass(frozen=True)
class Plan:
    """A two-stage run, fully resolved: the stage-1 run and every stage-2 setting."""

    stage1: TrainConfig
    epochs: int
    lr: float
    lr_factor: float
    batch_size: int
    weight_decay: float
    sampling: str
    shift_bn: bool
    lws: bool
    reinit: bool


def _fail(cfg: TrainConfig, message: str) -> LtbenchError:
    return LtbenchError(f"loss {cfg.loss!r}: {message}")


def _number(
    cfg, name: str, value, *, integer: bool = False, minimum: float = 0.0, strict: bool = True
):
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        what = "an integer" if integer else "a number"
        raise _fail(
            cfg,
            f"{name}={value!r} is invalid; {name} must be {what} "
            f"{'>' if strict else '>='} {minimum:g}",
        )
    return int(value) if integer else float(value)


def normalize(cfg: TrainConfig) -> TrainConfig:
    """The resolved config of a two-stage run: `stage2` folded into the loss parameters and
    every `None` setting replaced by its value; raises `LtbenchError` on a bad setting."""
    cfg = resolve(cfg)
    spec = get_spec(cfg.loss)
    params = dict(cfg.loss_params)
    for key, value in cfg.stage2.items():
        name = STAGE2_PREFIX + str(key)
        if name not in spec.defaults:
            allowed = ", ".join(
                k[len(STAGE2_PREFIX) :] for k in spec.defaults if k.startswith(STAGE2_PREFIX)
            )
            raise _fail(cfg, f"unknown stage2 setting {key!r}; allowed: {allowed}")
        params[name] = value
    if params.get("stage2_epochs") is None:
        factor = cfg.epochs / DATASET_DEFAULTS[cfg.dataset].epochs
        params["stage2_epochs"] = max(1, int(round(PAPER_STAGE2_EPOCHS * factor)))
    for name, run_value in (
        ("stage2_lr", cfg.lr),
        ("stage2_batch_size", cfg.batch_size),
        ("stage2_weight_decay", cfg.weight_decay),
    ):
        if params.get(name) is None:
            params[name] = run_value
    return resolve(dataclasses.replace(cfg, loss_params=params, stage2={}))


def make_plan(cfg: TrainConfig) -> Plan:
    """Check a normalised config's settings and derive the stage-1 run."""
    p = cfg.loss_params
    if cfg.mixup_alpha != 0:
        raise _fail(
            cfg,
            f"mixup_alpha={cfg.mixup_alpha!r}: a two-stage method sets stage 1's "
            "mixup with the parameter stage1_mixup_alpha; leave mixup_alpha at 0",
        )
    stage1_spec = get_spec(str(p["stage1_loss"]))
    if stage1_spec.runner is not None:
        raise _fail(
            cfg,
            f"stage1_loss={stage1_spec.name!r} is itself a multi-stage method; "
            "stage 1 needs a single-stage loss",
        )
    if not isinstance(p["stage1_params"], dict):
        raise _fail(cfg, f"stage1_params must be a mapping, got {p['stage1_params']!r}")
    if p["stage2_sampling"] not in SAMPLING_MODES:
        raise _fail(
            cfg,
            f"stage2_sampling={p['stage2_sampling']!r} is invalid; allowed: "
            f"{', '.join(SAMPLING_MODES)}",
        )
    for name in ("stage2_shift_bn", "stage2_lws", "stage2_reinit"):
        if not isinstance(p[name], bool):
            raise _fail(cfg, f"{name} must be true or false, got {p[name]!r}")
    stage1 = dataclasses.replace(
        cfg,
        loss=stage1_spec.name,
        loss_params=dict(p["stage1_params"]),
        mixup_alpha=_number(cfg, "stage1_mixup_alpha", p["stage1_mixup_alpha"], strict=False),
        stage2={},
    )
    try:
        stage1 = resolve(stage1)
    except LtbenchError as exc:
        raise _fail(cfg, f"stage 1: {exc}") from None
    return Plan(
        stage1=stage1,
        epochs=_number(cfg, "stage2_epochs", p["stage2_epochs"], integer=True),
        lr=_number(cfg, "stage2_lr", p["stage2_lr"]),
        lr_factor=_number(cfg, "stage2_lr_factor", p["stage2_lr_factor"]),
        batch_size=_number(cfg, "stage2_batch_size", p["stage2_batch_size"], integer=True),
        weight_decay=_number(cfg, "stage2_weight_decay", p["stage2_weight_decay"], strict=False),
        sampling=p["stage2_sampling"],
        shift_bn=p["stage2_shift_bn"],
        lws=p["stage2_lws"],
        reinit=p["stage2_reinit"],
    )


# ----------------------------------------------------------------------------------------------
# Stage 1: a cached, locked, ordinary training run


def stage1_key(cfg1: TrainConfig) -> str:
    """Digest of a resolved stage-1 config, without the settings that leave its numbers alone."""
    kept = {k: v for k, v in cfg1.to_dict().items() if k not in RUNTIME_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def stage1_dir(cfg1: TrainConfig, out_dir: Path, cache_dir: str | Path | None = None) -> Path:
    """The cache folder of a stage-1 run (see the module docstring for where the cache is)."""
    cache = cache_dir or os.environ.get(CACHE_ENV) or Path(out_dir).resolve().parent / "_stage1"
    return Path(cache) / f"{cfg1.loss}-{cfg1.dataset}-seed{cfg1.seed}-{stage1_key(cfg1)[:16]}"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_stage1(
    cfg1: TrainConfig, run_dir: Path, hooks: TrainHooks | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """The stored result of stage 1, training (or finishing) it first when it is not done."""
    with file_lock(run_dir.with_name(run_dir.name + ".lock")):
        done = run_dir / "result.json"
        if not done.exists():
            train(cfg1, run_dir, hooks, resume=True, progress=progress)
        return json.loads(done.read_text())


# ----------------------------------------------------------------------------------------------
# Stage 2: the model, its classifier, its schedule


class Stage2Model(nn.Module):
    """`scores = classifier(backbone(x)) * class_scale` with a frozen backbone.

    The backbone runs without autograd. With `shift_bn` its BatchNorm layers follow the model's
    train/eval mode, so their running statistics move to the stage-2 data; without it the
    backbone stays in eval mode throughout. `class_scale` (LWS) is None when not learnt. The
    state-dict keys `backbone.*` and `classifier.*` are those of the stage-1 `LtModel`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        num_classes: int,
        *,
        lws: bool,
        shift_bn: bool,
    ):
        super().__init__()
        self.backbone = backbone.requires_grad_(False)
        self.classifier = classifier
        self.shift_bn = shift_bn
        scale = nn.Parameter(torch.ones(num_classes)) if lws else None
        self.register_parameter("class_scale", scale)

    def train(self, mode: bool = True) -> Stage2Model:
        super().train(mode)
        if not self.shift_bn:
            self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(x)
        scores = self.classifier(features)
        return scores if self.class_scale is None else scores * self.class_scale


def stage2_classifier(stage1: nn.Module, head: str, *, reinit: bool) -> nn.Module:
    """The classifier stage 2 starts from, for a loss that wants `head`.

    `reinit`: a freshly initialised head (draws from torch's global RNG). Otherwise a copy of the
    stage-1 classifier when the head kinds agree; across kinds, each class keeps the direction
    of its stage-1 weight: a cosine head takes the L2-normalised rows, a linear head the
    normalised rows and a zero bias (a stage-1 linear bias is dropped either way).
    """
    num_classes, in_features = stage1.weight.shape
    if reinit:
        return build_head(head, in_features, num_classes)
    same = isinstance(stage1, CosineClassifier) == (head == "cosine")
    if same:
        return copy.deepcopy(stage1)
    fresh = build_head(head, in_features, num_classes)
    with torch.no_grad():
        fresh.weight.copy_(F.normalize(stage1.weight.detach().float(), dim=1))
        if getattr(fresh, "bias", None) is not None:
            fresh.bias.zero_()
    return fresh


def cosine_learning_rate(base: float, epoch: int, epochs: int) -> float:
    """Stage-2 lr of 0-based `epoch`: `base * (1 + cos(pi * epoch / epochs)) / 2`, per epoch."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


# ----------------------------------------------------------------------------------------------
# The whole run


def run_two_stage(
    cfg: TrainConfig,
    out_dir: str | Path,
    hooks: TrainHooks | None = None,
    *,
    resume: bool | str | Path = False,
    overwrite: bool = False,
    progress: bool | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train both stages of a two-stage method into `out_dir`; returns the final result.

    Same contract as `ltbench.engine.loop.train` (which hands two-stage methods to this function);
    `resume` may name a stage-2 checkpoint. `cache_dir`: where stage-1 runs are kept.
    """
    cfg = normalize(cfg)
    plan = make_plan(cfg)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir, resume=bool(resume), overwrite=overwrite)

    # -- stage 1: trained once per configuration, shared through the cache ------------------
    run1 = stage1_dir(plan.stage1, out_dir, cache_dir)
    result1 = ensure_stage1(plan.stage1, run1, hooks, progress)
    epochs1 = plan.stage1.epochs
    start_time = time.perf_counter()

    # -- data, loss, model ------------------------------------------------------------------
    device = pick_device(cfg.device)
    amp, channels_last = step_options(cfg, device)
    bundle = load_dataset(
        cfg.dataset,
        root=cfg.data_root,
        imb_factor=cfg.imb_factor,
        profile=cfg.profile,
        subset_seed=cfg.subset_seed,
        download=cfg.download,
        n_max=cfg.n_max,
        val_fraction=cfg.val_fraction,
        val_seed=cfg.seed,
    )
    counts = list(bundle.cls_num_list)
    loaders = make_loaders(bundle, cfg, device)
    train_loader = make_loader(
        bundle,
        "train",
        plan.batch_size,
        sampling=plan.sampling,
        seed=cfg.seed,
        device=device,
        num_workers=cfg.num_workers,
    )

    torch.manual_seed(cfg.seed)
    plugin = build_loss(cfg.loss, counts, **cfg.loss_params).to(device)
    net = build_model(
        cfg.model, bundle.num_classes, head=get_spec(plan.stage1.loss).head, width=cfg.width
    )
    net.load_state_dict(load_checkpoint(run1 / "checkpoint.pt", plan.stage1)["model"])
    torch.manual_seed(cfg.seed)
    classifier = stage2_classifier(net.classifier, plugin.head, reinit=plan.reinit)
    model = Stage2Model(
        net.backbone, classifier, bundle.num_classes, lws=plan.lws, shift_bn=plan.shift_bn
    ).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = [{"params": list(model.classifier.parameters()), "lr_factor": plan.lr_factor}]
    if model.class_scale is not None:
        groups.append({"params": [model.class_scale], "lr_factor": 1.0})
    optimizer = torch.optim.SGD(
        groups,
        lr=plan.lr,
        momentum=cfg.momentum,
        weight_decay=plan.weight_decay,
        fused=device.type in FUSED_SGD_DEVICES,
    )
    to_logits = getattr(plugin, "eval_logits", None)

    def assess(loader) -> dict[str, Any]:
        return evaluate(
            model,
            epoch_batches(loader, 0, channels_last),
            bundle.num_classes,
            device,
            amp=amp,
            to_logits=to_logits,
        ).compute(counts)

    # -- resume: the stage-2 checkpoint; metrics = stage-1 lines + the kept stage-2 lines -----
    start = 0
    ckpt_path = out_dir / "checkpoint.pt"
    if resume:
        source = ckpt_path if resume is True else Path(resume)
        if resume is not True or source.exists():
            state = load_checkpoint(source, cfg)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["stage2_epoch"])
    history1 = [{**row, "stage": "stage1"} for row in read_metrics(run1 / "metrics.jsonl")]
    history2 = [
        row
        for row in read_metrics(out_dir / "metrics.jsonl")
        if row.get("stage") == "stage2" and row["epoch"] <= epochs1 + start
    ]
    (out_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in history1 + history2)
    )
    save_yaml(cfg, out_dir / "config.yaml")

    # -- stage-2 epochs ---------------------------------------------------------------------
    show = progress if progress is not None else os.isatty(2)
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(
            total=plan.epochs,
            initial=start,
            desc=f"{cfg.loss} stage 2 on {cfg.dataset}",
            unit="epoch",
            dynamic_ncols=True,
        )
    final = None
    for epoch in range(start, plan.epochs):
        tick = time.perf_counter()
        lr = cosine_learning_rate(plan.lr, epoch, plan.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        overall = epochs1 + epoch  # 0-based epoch of the whole trial: seeds and batch order
        row: dict[str, Any] = {
            "epoch": overall + 1,
            "stage": "stage2",
            "lr": lr * plan.lr_factor,
            **fit_epoch(
                model,
                train_loader,
                plugin,
                optimizer,
                device,
                seed=cfg.seed,
                epoch=overall,
                schedule_epoch=epoch,
                channels_last=channels_last,
                amp=amp,
                where="in stage 2 ",
                hint=f"try a lower stage2_lr (now {plan.lr:g})",
            ),
        }
        last = epoch + 1 == plan.epochs
        if last or (epoch + 1) % cfg.eval_every == 0:
            tested = assess(loaders.test)
            row["test_top1_error"] = tested["top1_error"]
            final = tested if last else None
        if loaders.val is not None:
            row["val_top1_error"] = assess(loaders.val)["top1_error"]
        row["epoch_seconds"] = time.perf_counter() - tick
        history2.append(row)
        state = {
            "config": cfg.to_dict(),
            "epoch": overall + 1,
            "stage2_epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
        }
        record_epoch(out_dir, state, row, hooks, bar)
    if bar is not None:
        bar.close()

    # -- the result: final = stage 2, both stages side by side ------------------------------
    result2 = build_result(cfg, bundle, final or assess(loaders.test), history2)
    if loaders.val is not None:
        result2["val_top1_error"] = assess(loaders.val)["top1_error"]
    result2["epochs"] = plan.epochs
    result2["wall_seconds"] = (
        time.perf_counter()
        - start_time
        + sum(r.get("epoch_seconds", 0.0) for r in history2[:start])
    )
    result2["env"] = environment(device, amp=amp, channels_last=channels_last)
    result = {
        **result2,
        "epochs": epochs1 + plan.epochs,
        "wall_seconds": result1.get("wall_seconds", 0.0) + result2["wall_seconds"],
        "stage1_dir": str(run1),
        "stages": {"stage1": result1, "stage2": result2},
    }
    write_json(out_dir / "result.json", result)
    return result


# ----------------------------------------------------------------------------------------------
# Registrations


class Stage2LossFactory:
    """`factory(cls_num_list, **settings)` of a two-stage spec: builds its stage-2 loss.

    It takes every setting of the method (so `build_loss` can check them) and passes on the
    stage-2 loss's own parameters.
    """

    def __init__(self, loss: LossSpec, settings: list[str]):
        self.loss = loss
        self.__signature__ = inspect.Signature(
            [inspect.Parameter("cls_num_list", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in settings]
        )

    def __call__(self, cls_num_list, **settings):
        return self.loss.factory(cls_num_list, **{k: settings[k] for k in self.loss.defaults})


def two_stage_spec(
    name: str, stage2_loss: LossSpec, *, description: str, paper: str, **settings: Any
) -> LossSpec:
    """A two-stage method training its classifier with `stage2_loss` in stage 2.

    `settings` change the common `SETTINGS`; the stage-2 loss's parameters join them flat.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    clash = sorted(set(SETTINGS) & set(stage2_loss.defaults))
    if unknown or clash:
        raise ValueError(f"two-stage method {name!r}: bad settings {unknown + clash}")
    defaults = {**SETTINGS, **settings, **stage2_loss.defaults}
    return LossSpec(
        name=name,
        factory=Stage2LossFactory(stage2_loss, list(defaults)),
        head=stage2_loss.head,
        defaults=defaults,
        description=description,
        paper=paper,
        kind="two-stage",
        runner=run_two_stage,
    )


MISLAS_PAPER = "Zhong et al., Improving Calibration for Long-Tailed Recognition, CVPR 2021"

CRT = two_stage_spec(
    "crt",
    CE,
    description="classifier re-training: CE, then a fresh classifier, class-balanced, frozen net",
    paper="Kang et al., Decoupling Representation and Classifier for Long-Tailed Recognition, "
    "ICLR 2020",
    stage1_mixup_alpha=0.0,
    stage2_lr_factor=1.0,
    stage2_shift_bn=False,
    stage2_lws=False,
    stage2_reinit=True,
)
MISLAS = two_stage_spec(
    "mislas",
    LAS,
    description="MiSLAS: mixup stage 1; class-balanced LAS, shifted BN and LWS in stage 2",
    paper=MISLAS_PAPER,
)
MISLAS_KPS = two_stage_spec(
    "mislas-kps",
    KPS,
    description="MiSLAS with the KPS loss (cosine head from stage 1's weights) in stage 2",
    paper=f"{MISLAS_PAPER}; {KPS.paper} (Table 7)",
)
