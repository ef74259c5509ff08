"""The `ltbench` command: train, eval, run, sweep, report, bench, list, doctor.

Every mistake in the user's input ends as one line, `ltbench: error: ...`, exit status 2;
no traceback from deep inside torch or Ray.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path
from typing import Any

from ltbench.doctor.args import add_doctor_parser
from ltbench.errors import (
    Interrupted,
    LtbenchError,
    one_line,
    os_error_message,
    yaml_value,
)
from ltbench.stop import quiet_broken_pipe, restore, signals_as_interrupt, stopped_by
from reports import REFERENCE_HELP

# OSErrors that the user's environment causes (permissions, a full or read-only disk, a path
# through a file): one line naming the file. Any other OSError is ltbench's bug: a traceback.
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOSPC",
        "EDQUOT",
        "ENOTDIR",
        "EISDIR",
        "ENAMETOOLONG",
        "EIO",
    )
    if hasattr(errno, name)
)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (`ltbench: error: ...`, exit 2) instead of the usage."""

    def error(self, message: str):
        self.exit(2, f"ltbench: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def _param(text: str) -> tuple[str, Any]:
    """`key=value`, the value read as YAML (so 0.5 is a float, 120 an int, true a bool)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text[:200]!r}")
    try:
        return key.strip(), yaml_value(key.strip(), value)
    except LtbenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _epochs(text: str) -> list[int]:
    """`E1,E2` as a list of epochs."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epochs, e.g. 160,180, got {text!r}"
        ) from None


def _add_train_args(p: argparse.ArgumentParser) -> None:
    """The arguments of `ltbench train`: data, method, model and schedule, run."""
    _add_data_group(p)
    _add_method_group(p)
    _add_schedule_group(p)
    _add_run_group(p)


def _add_data_group(p: argparse.ArgumentParser) -> None:
    """The `data` group of `ltbench train`: the dataset, its long-tailed draw, the split."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None, help="dataset name (see `ltbench list datasets`)")
    g.add_argument("--data-root", default=None, help="folder holding the dataset")
    g.add_argument(
        "--download",
        action="store_true",
        default=None,
        help="download CIFAR through torchvision if it is missing (needs network)",
    )
    g.add_argument(
        "--imb-factor",
        type=float,
        default=None,
        help="1/rho in (0, 1], e.g. 0.01 for rho=100 (default: the paper's)",
    )
    g.add_argument(
        "--profile",
        choices=["exp", "step"],
        default=None,
        help="imbalance profile: exp (counts fall geometrically from head to tail, the "
        "paper's) or step (half the classes at the head's count, half at the tail's); default exp",
    )
    g.add_argument(
        "--subset-seed",
        type=int,
        default=None,
        help="seed of the long-tailed draw (0: the standard draw)",
    )
    g.add_argument(
        "--draw",
        default=None,
        metavar="FILE",
        help="train on exactly the subsets of a draw file (`ltbench draw RUN --out FILE`), "
        "in its order, instead of drawing them; give the data settings it was drawn with",
    )
    g.add_argument(
        "--n-max",
        type=int,
        default=None,
        help="images per class before the long-tailed draw (default: all)",
    )
    g.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="share of the training data held out for model selection",
    )
    g.add_argument(
        "--many-shot",
        type=int,
        default=None,
        metavar="N",
        help="many-shot classes: more than N training images (default: the dataset's, 100)",
    )
    g.add_argument(
        "--few-shot",
        type=int,
        default=None,
        metavar="N",
        help="few-shot classes: fewer than N training images (default: the dataset's, 20)",
    )


def _add_method_group(p: argparse.ArgumentParser) -> None:
    """The `method` group of `ltbench train`: the loss, its parameters and variant, mixup."""
    g = p.add_argument_group("method")
    g.add_argument("--loss", default=None, help="loss or method name (see `ltbench list`)")
    g.add_argument(
        "--param",
        "-p",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="a loss parameter, e.g. -p m_max=0.4 (repeatable)",
    )
    g.add_argument(
        "--variant",
        default=None,
        help="a named variant of the method instead of the paper's text, e.g. authors-script "
        "(kps, kps-ga, kps-drw: the authors' public CIFAR script); see `ltbench list`",
    )
    g.add_argument("--mixup-alpha", type=float, default=None, help="mixup alpha (0: off)")


def _add_schedule_group(p: argparse.ArgumentParser) -> None:
    """The `model and schedule` group of `ltbench train` (defaults: the recipe's)."""
    g = p.add_argument_group("model and schedule (default: the paper's Table 2)")
    g.add_argument(
        "--model", default=None, help="network (see `ltbench list models`; default: the dataset's)"
    )
    g.add_argument("--width", type=float, default=None, help="channel width multiplier")
    g.add_argument("--epochs", type=int, default=None, help="training epochs")
    g.add_argument("--batch-size", type=int, default=None, help="images per SGD step")
    g.add_argument("--lr", type=float, default=None, help="base learning rate (after warm-up)")
    g.add_argument("--weight-decay", type=float, default=None, help="SGD weight decay")
    g.add_argument(
        "--warmup-epochs",
        type=int,
        default=None,
        help="epochs of linear learning-rate warm-up from lr / N to lr",
    )
    g.add_argument(
        "--lr-decay-epochs",
        type=_epochs,
        default=None,
        metavar="E1,E2",
        help="epochs after which the learning rate is multiplied by --lr-decay-factor",
    )
    g.add_argument(
        "--lr-decay-factor",
        type=float,
        default=None,
        help="factor of each decay (the paper's CIFAR text: 0.01)",
    )


def _add_run_group(p: argparse.ArgumentParser) -> None:
    """The `run` group of `ltbench train`: seed, device, precision, evaluation."""
    g = p.add_argument_group("run")
    g.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the weights, the batch order and the augmentation (default 0); the "
        "long-tailed draw has its own, --subset-seed",
    )
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default=None,
        help="where to train (default auto: CUDA when there is a GPU, else the CPU)",
    )
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 autocast (default: on where bf16 is fast: CUDA, AMX CPUs)",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model",
    )
    g.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CUDA only, unmeasured: capture and replay the step as CUDA graphs (off)",
    )
    g.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="DataLoader worker processes for datasets read from files (default 4; 0: read in "
        "the training process)",
    )
    g.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="test every N epochs (and at the last one and each new best validation error)",
    )
    g.add_argument(
        "--keep-best-val",
        action="store_true",
        default=None,
        help="also keep the best-on-validation epoch's checkpoint (checkpoint-best-val.pt)",
    )
    g.add_argument(
        "--threads",
        type=_threads,
        default=None,
        metavar="N",
        help="CPU threads torch uses for this run (torch.set_num_threads; default: torch's, one "
        "per core); several runs side by side on one machine want 1 each",
    )
    g.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a YAML of TrainConfig keys; command-line flags override it",
    )


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from --config (if any) overridden by the flags that were given."""
    from ltbench.engine.config import TrainConfig, load_yaml

    cfg = load_yaml(args.config) if args.config else TrainConfig()
    data = cfg.to_dict()
    for key in data:
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    if args.param:
        data["loss_params"] = {**data["loss_params"], **dict(args.param)}
    if data.get("draw"):  # a run may resume from another folder: the file by its full path
        data["draw"] = str(Path(data["draw"]).expanduser().resolve())
    return TrainConfig.from_dict(data, source="command line")


def _threads(text: str) -> int:
    """`--threads N`: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from ltbench.engine.checkpoint import refuse_resume_of_finished
    from ltbench.engine.loop import train

    cfg = config_from_args(args)
    _print_recipe_note(cfg)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / f"{cfg.loss}-{cfg.dataset}-seed{cfg.seed}"
    resume: Any = False
    if args.resume is not None:
        resume = True if args.resume == "auto" else Path(args.resume)
        refuse_resume_of_finished(Path(out), args.overwrite)
    try:
        result = train(cfg, out, resume=resume, overwrite=args.overwrite)
    except KeyboardInterrupt:
        raise Interrupted(
            f"the run so far is in {out}: continue it with the same command plus --resume"
        ) from None
    shots = "/".join(_group(result, g) for g in ("many", "medium", "few"))
    worst = result.get("worst_class_name") or result.get("worst_class")
    print(
        f"{result['method']} on {result['dataset']} (rho={result['rho']:g}, seed "
        f"{result['seed']}): top-1 error {result['top1_error']:.2f}%  "
        f"many/medium/few acc {shots}  worst class {_pct(result.get('worst_class_error'))} "
        f"({worst})  ECE {result['ece']:.2f}%  -> {Path(out) / 'result.json'}"
    )
    return 0


def _print_recipe_note(cfg) -> None:
    """Say which recipe a run on data without a paper recipe gets (the default by image size)."""
    from ltbench.data.registry import dataset_recipe, get_dataset_spec

    if get_dataset_spec(cfg.dataset).recipe_for is not None and cfg.data_root is not None:
        note = dataset_recipe(cfg.dataset, cfg.data_root).note
        given = []
        for key in RECIPE_NOTE_FIELDS:
            value = getattr(cfg, key, None)
            if isinstance(value, list):
                value = ",".join(map(str, value))
            if value is not None:
                given.append(f"{key.replace('_', ' ')} {value}")
        mine = f"; this run's own: {', '.join(given)}" if given else ""
        print(f"ltbench: {cfg.dataset}: {note}{mine}", file=sys.stderr)


# the recipe values the note names, which a flag or a --config may replace for one run
RECIPE_NOTE_FIELDS = ("model", "epochs", "batch_size", "lr", "lr_decay_epochs", "weight_decay")


def cmd_draw(args: argparse.Namespace) -> int:
    from ltbench.engine.draw_export import export_draw

    path, prints = export_draw(args.run_dir, args.out)
    shown = ", ".join(f"{k} {v[:12]}" for k, v in prints.items() if v)
    print(f"the draw of {args.run_dir} -> {path} (fingerprints: {shown})")
    print(f"train on it elsewhere: ltbench train --draw {path} (with the run's data settings)")
    return 0


def _pct(value: float | None, digits: int = 1) -> str:
    """A percentage for the terminal; "–" where there is none (an empty group)."""
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def _group(result: dict, group: str) -> str:
    """A group's accuracy and its number of classes, e.g. "85.2 (3)" or "– (0)"."""
    return f"{_pct(result.get(f'{group}_acc'))} ({result.get(f'{group}_classes', '?')})"


def cmd_list(args: argparse.Namespace) -> int:
    from ltbench.data.registry import DATASETS
    from ltbench.sdk.registry import get_spec, list_losses

    what = args.what
    if what in ("all", "losses"):
        print("losses (name: head, defaults):")
        for name, defaults in list_losses(args.pattern).items():
            spec = get_spec(name)
            params = ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-"
            extra = f" [{spec.kind}]" if spec.kind != "loss" else ""
            print(f"  {name:<12} {spec.head:<7} {params}{extra}")
            for vname, variant in spec.variants.items():
                print(f"  {'':<12} --variant {vname}: {variant.description}")
    if what in ("all", "datasets"):
        print("datasets (name: model, epochs, batch, lr, imb_factor, groups many/few):")
        for name, spec in DATASETS.items():
            d = spec.recipe
            print(
                f"  {name:<13} {d.model:<9} {d.epochs:>4} {d.batch_size:>4} {d.lr:<5} "
                f"{d.imb_factor:<5g} >{d.many_shot}/<{d.few_shot}"
                + (f"  recipe {d.note}" if d.note else "")
            )
            print(f"  {'':<13} {spec.description}")
    if what in ("all", "rules"):
        from ltbench.sdk.posthoc import RULES

        print("post-hoc rules (`ltbench eval`; name: tau, what it does):")
        for name in RULES.names():
            rule = RULES.get(name)
            tau = "tuned" if rule.tuned else "-"
            print(f"  {name:<13} {tau:<6} {rule.description}")
    if what in ("all", "models"):
        from ltbench.engine.models import list_models

        print("models:")
        for name in list_models():
            print(f"  {name}")
    if what in ("all", "suites"):
        from ltbench.runner.suite import list_suites

        print("suites:")
        for name, desc in list_suites().items():
            print(f"  {name:<13} {desc}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports import build_report

    # reports.build checks the formats and the reference (one-line errors)
    paths = build_report(args.dir, formats=args.format, out=args.out, reference=args.reference)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from ltbench.runner.gather import collect_runs

    trials = collect_runs(args.out, args.runs)
    print(f"collected {len(trials)} runs into {args.out}; next: ltbench report {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ltbench.engine.posthoc import posthoc

    block = posthoc(args.run_dir, args.rules, args.tau_grid, device=args.device, tau=args.tau)
    how = (
        f"tau chosen on {block['selection_split']} by {block['selection_metric']}"
        if block["selection_split"]
        else f"tau fixed at {block['fixed_tau']:g} by --tau"
        if block["fixed_tau"] is not None
        else "no rule with tau"
    )
    print(f"post-hoc rules on {args.run_dir} ({block['precision']}; {how})")
    head = ("rule", "tau", "top-1 err", "many", "med", "few", "ECE")
    print("  {:<13} {:>5} {:>9} {:>6} {:>6} {:>6} {:>6}".format(*head))
    for rule, r in block["rules"].items():
        tau = "-" if r["tau"] is None else f"{r['tau']:g}"
        print(
            f"  {rule:<13} {tau:>5} {r['top1_error']:>9.2f} {_pct(r['many_acc']):>6} "
            f"{_pct(r['medium_acc']):>6} {_pct(r['few_acc']):>6} {r['ece']:>6.2f}  "
            f"(ECE of {r['ece_logits']}){'; ' + r['note'] if r.get('note') else ''}"
        )
    for rule, why in block.get("skipped", {}).items():
        print(f"  {rule:<13} skipped: {why}")
    print(f"-> {Path(args.run_dir) / 'result.json'} (posthoc)")
    from ltbench.runner.results import refresh_after_eval

    note = refresh_after_eval(args.run_dir)
    if note:
        print(note)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ltbench.runner.commands import run_suite_command

    return run_suite_command(args)


def cmd_sweep(args: argparse.Namespace) -> int:
    from ltbench.runner.commands import sweep_command

    return sweep_command(args)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "losses":
        from ltbench.bench.losses import bench_losses, format_bench

        rows = bench_losses(device=args.device, repeats=args.repeats)
        print(format_bench(rows))
        return 0
    if args.what == "data":
        from ltbench.bench.data import bench_data_command

        return bench_data_command(args)
    from ltbench.bench.train import bench_train_command

    return bench_train_command(args)


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    """The arguments of `ltbench bench`."""
    p.add_argument(
        "what",
        choices=["losses", "train", "data"],
        help="losses: each loss's forward and backward; train: ltbench's training step against "
        "a plain reference loop; data: loading and augmenting images",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to measure")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per measurement (default: 20 for losses, 5 for train)",
    )
    p.add_argument("--batch-sizes", default="64,128", help="train: comma-separated batch sizes")
    g = p.add_argument_group("train (ltbench's loop against a reference loop)")
    g.add_argument("--steps", type=int, default=None, help="steps in one timed epoch (20)")
    g.add_argument(
        "--warmup", type=int, default=None, help="untimed rounds before the timed ones (train: 1)"
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes of the reference loop (2)",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile ltbench's model (default: as `ltbench train`, off)",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ltbench's layout (default: as `ltbench train`, channels-last)",
    )
    g.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ltbench's bf16 autocast (default: as `ltbench train`, on for CUDA and AMX CPUs)",
    )
    g.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CUDA only, unmeasured: replay ltbench's step as CUDA graphs (default: off)",
    )
    g.add_argument(
        "--pack",
        type=int,
        default=None,
        metavar="K",
        help="also train K runs as one fused pack and report its images per second",
    )
    g.add_argument(
        "--pack-fusion",
        choices=["auto", "grouped", "serial"],
        default=None,
        help="how the pack is fused (default auto: grouped convolutions on CUDA, serial on CPU)",
    )
    g = p.add_argument_group("data (the file loader against the model step, generated JPEGs)")
    g.add_argument("--images", type=int, default=512, help="JPEG files to generate (512)")
    g.add_argument("--classes", type=int, default=16, help="long-tailed classes (16)")
    g.add_argument("--batch", type=int, default=64, help="batch size of both (64)")
    g.add_argument("--batches", type=int, default=6, help="loader batches timed (6)")
    g.add_argument("--loader-workers", type=int, default=2, help="DataLoader worker processes (2)")
    g.add_argument("--model", default="resnet50", help="the model of the step (resnet50)")
    g.add_argument(
        "--decode",
        choices=["workers", "device"],
        default="workers",
        help="decode JPEGs in the DataLoader workers (default, as `train`) or in batches on the "
        "device with torchvision.io.decode_jpeg (nvJPEG on CUDA)",
    )
    p.set_defaults(func=cmd_bench)


def _add_eval_parser(sub) -> None:
    """`ltbench eval`: post-hoc rules on a finished run."""
    p = sub.add_parser("eval", help="post-hoc decision rules on a finished run (no retraining)")
    p.add_argument("run_dir", type=Path, help="a finished `ltbench train` output directory")
    p.add_argument(
        "--rules",
        default=None,
        help="comma-separated post-hoc rules (see `ltbench list rules`; default: all)",
    )
    p.add_argument(
        "--tau-grid",
        default=None,
        metavar="START:STOP:STEP",
        help="tau values tried on the validation split (default 0:2:0.1; both ends included)",
    )
    p.add_argument(
        "--tau",
        type=float,
        default=None,
        help="fix tau instead of choosing it on the validation split (the rows are labelled "
        "'tau fixed'); a run without a validation split needs it for logit-adjust and tau-norm",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where to compute the logits (default auto: CUDA when there is a GPU)",
    )
    p.set_defaults(func=cmd_eval)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    import ltbench

    parser = Parser(
        prog="ltbench", description="Benchmark harness for long-tailed recognition losses."
    )
    parser.add_argument("--version", action="version", version=f"ltbench {ltbench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one method on one dataset")
    _add_train_args(p)
    p.add_argument("--out", type=Path, default=None, help="output directory of the run")
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        metavar="CHECKPOINT",
        help="continue from OUT/checkpoint.pt, or from the given checkpoint",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in OUT")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "draw", help="write a run's draw (its training, validation, meta images) to a file"
    )
    p.add_argument("run_dir", type=Path, help="an `ltbench train` output directory")
    p.add_argument(
        "--out", type=Path, required=True, help="the draw file to write (JSON; not overwritten)"
    )
    p.set_defaults(func=cmd_draw)

    _add_eval_parser(sub)

    p = sub.add_parser(
        "list", help="list losses, datasets, post-hoc rules, models and suites (the registries)"
    )
    p.add_argument(
        "what",
        nargs="?",
        default="all",
        choices=["all", "losses", "datasets", "rules", "models", "suites"],
        help="which registry to list (default: all)",
    )
    p.add_argument("--pattern", default="*", help="wildcard on loss names, e.g. 'kps*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run a suite of trials on Ray Tune")
    from ltbench.runner.args import add_run_args, add_sweep_args

    add_run_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="search KPS hyper-parameters on Ray Tune")
    add_sweep_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("collect", help="gather finished `ltbench train` runs into a results folder")
    p.add_argument("out", type=Path, help="the results folder to write (new or empty)")
    p.add_argument("runs", nargs="+", type=Path, help="finished `ltbench train --out` folders")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("report", help="write the markdown / PDF report of a results folder")
    p.add_argument(
        "dir",
        type=Path,
        help="a results folder: the --out of `ltbench run` or `ltbench sweep`, or one written "
        "by `ltbench collect`",
    )
    p.add_argument("--format", default="md,pdf", help="comma-separated: md, pdf")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="a folder for report.md / report.pdf, or a file name (x.md or x.pdf gives x.md and "
        "x.pdf); figures/ goes beside them (default: DIR itself)",
    )
    p.add_argument("--reference", metavar="METHOD", help=REFERENCE_HELP)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="measure loss, training-step and data-loading speed")
    _add_bench_args(p)
    add_doctor_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `ltbench` console script."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or the one-line error of `Parser.error`
        return exc.code if isinstance(exc.code, int) else 2
    replaced = signals_as_interrupt()
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, so that a reader gone away is caught below
        return code
    except BrokenPipeError:
        return quiet_broken_pipe()
    except LtbenchError as exc:
        print(f"ltbench: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in ENVIRONMENT_ERRNOS or exc.filename is None:
            raise
        print(f"ltbench: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        hint = getattr(exc, "hint", "")
        why = f" by {stopped_by[0]}" if stopped_by else ""
        print(f"ltbench: interrupted{why}{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    finally:
        restore(replaced)


if __name__ == "__main__":
    sys.exit(main())
