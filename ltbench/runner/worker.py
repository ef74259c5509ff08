"""What runs inside a trial process: train one trial into its directory, reporting each epoch,
or a pack of trials (`run_pack`) into theirs.

Ray-free: `report` is any callable that takes a dict of scalars (the Ray adapter passes
`ray.tune.report`), so a test can run a trial with a fake trainer and a list's `append`.
A data-parallel trial (`spec.workers` > 1) gets a `train_fn` that starts its workers
(`ltbench.runner.ray_train`); the trial process then holds no lock: its rank-0 worker holds
the trial's folder, as `train` does.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ltbench.engine.locks import hold
from ltbench.engine.record import EPOCH_GROUP_METRICS
from ltbench.errors import LtbenchError, one_line
from ltbench.runner.hooks import TuneHooks
from ltbench.runner.trials import TrialSpec, load_trials
from ltbench.schema import (
    ERROR_FILE,
    RESULT_FILE,
    SEARCH_METRIC,
    VAL_TOP1_METRIC,
    read_result,
    trial_dir,
)

# the group numbers of a finished trial's final report (an empty group's None is left out):
# those of every evaluated epoch, and the calibration error
FINAL_GROUP_METRICS = (*EPOCH_GROUP_METRICS, "ece")


def final_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The scalars of a finished trial's final report (and of its progress line)."""
    out = {
        "top1_error": result.get("top1_error"),
        "epochs": result.get("epochs"),
        "wall_seconds": result.get("wall_seconds"),
        "finished": True,
    }
    for key in (SEARCH_METRIC, VAL_TOP1_METRIC, *FINAL_GROUP_METRICS):
        if result.get(key) is not None:
            out[key] = result[key]
    return {k: v for k, v in out.items() if v is not None}


def _one_line(exc: BaseException) -> str:
    text = one_line(exc) if str(exc).strip() else ""
    if isinstance(exc, LtbenchError):
        return text or "error"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_trial(
    spec: TrialSpec, out_dir: str | Path, resources: dict[str, float], report, train_fn=None
) -> dict[str, Any]:
    """Train one trial into DIR/trials/<key> (or report its stored result); Ray-free."""
    tdir = trial_dir(Path(out_dir), spec.key)
    stored = read_result(tdir / RESULT_FILE)
    if stored is not None:  # finished earlier: never train it again
        if spec.posthoc and "posthoc" not in stored:
            stored = _posthoc(tdir, spec, _posthoc_device(spec, resources)) or stored
        report(final_metrics(stored))
        return stored
    if spec.workers > 1:  # its rank-0 worker holds the folder
        return _train_trial(spec, tdir, resources, report, train_fn)
    with hold(tdir):  # the trial's folder is this process's until it ends
        return _train_trial(spec, tdir, resources, report, train_fn)


def _posthoc_device(spec: TrialSpec, resources: dict[str, float]) -> str:
    """Where the post-hoc rules run: the trial's GPU; the CPU in a data-parallel trial's own
    process (its GPUs are its workers')."""
    return "cuda" if resources.get("gpu", 0) > 0 and spec.workers == 1 else "cpu"


def _train_trial(spec: TrialSpec, tdir: Path, resources, report, train_fn) -> dict[str, Any]:
    (tdir / ERROR_FILE).unlink(missing_ok=True)
    if train_fn is None:
        from ltbench.engine.loop import train as train_fn
    import torch

    from ltbench.engine.config import resolve

    # Ray sets OMP_NUM_THREADS=1 for trials with < 2 CPUs; use the CPUs the trial holds.
    torch.set_num_threads(max(int(resources.get("cpu", 1)), 1))
    cfg = spec.train_config()
    # The device follows the trial's resources, never torch.cuda.is_available(): on a GPU node
    # a CPU-only trial may still see the GPUs.
    cfg.device = "cuda" if resources.get("gpu", 0) > 0 else "cpu"
    cfg.num_workers = min(cfg.num_workers, max(int(resources.get("cpu", 1)) - 1, 0))
    try:
        epochs = resolve(cfg).epochs
        hooks = TuneHooks(report, epochs)
        result = train_fn(cfg, tdir, hooks=hooks, resume=True, progress=False)
    except Exception as exc:
        (tdir / ERROR_FILE).write_text(_one_line(exc) + "\n")
        raise
    if spec.posthoc:
        result = _posthoc(tdir, spec, _posthoc_device(spec, resources)) or result
    report(final_metrics(result))
    return result


def _posthoc(tdir: Path, spec: TrialSpec, device: str) -> dict[str, Any] | None:
    """Evaluate the suite's post-hoc rules on the finished trial, in this process; adds
    `posthoc` to its result.json (an error there is recorded in the block, the trial stays
    finished). Returns the updated result."""
    from ltbench.engine.checkpoint import write_json
    from ltbench.engine.posthoc import posthoc

    try:
        posthoc(tdir, spec.posthoc, device=device)
    except Exception as exc:
        result = read_result(tdir / RESULT_FILE)
        if result is None:
            return None
        result["posthoc"] = {"error": _one_line(exc), "rules": {}}
        write_json(tdir / RESULT_FILE, result)
    return read_result(tdir / RESULT_FILE)


def run_pack(
    specs: list[TrialSpec], out_dir: str | Path, resources: dict[str, float], report, pack_fn=None
) -> list[dict[str, Any] | None]:
    """Train the trials `specs` as one pack (`ltbench.engine.pack.train_pack`), each into its
    own DIR/trials/<key> as `run_trial` would; Ray-free.

    A finished member is not trained again; a member that fails gets its error.txt and the
    others go on. The pack reports its first member's epochs, then one final report; it raises
    (after every member is done) when a member failed, naming them, so that Tune counts it.
    """
    if pack_fn is None:
        from ltbench.engine.pack import train_pack as pack_fn
    import torch

    from ltbench.engine.config import resolve

    dirs = [trial_dir(Path(out_dir), s.key) for s in specs]
    torch.set_num_threads(max(int(resources.get("cpu", 1)), 1))
    cfgs = []
    for spec in specs:
        cfg = spec.train_config()
        cfg.device = "cuda" if resources.get("gpu", 0) > 0 else "cpu"
        cfg.num_workers = min(cfg.num_workers, max(int(resources.get("cpu", 1)) - 1, 0))
        cfgs.append(cfg)
    with ExitStack() as stack:
        for tdir in dirs:
            stack.enter_context(hold(tdir))
        for tdir in dirs:
            if read_result(tdir / RESULT_FILE) is None:
                (tdir / ERROR_FILE).unlink(missing_ok=True)
        try:
            hooks = [TuneHooks(report, resolve(cfgs[0]).epochs)] + [None] * (len(specs) - 1)
            outcomes = pack_fn(cfgs, dirs, hooks, resume=True, progress=False)
        except Exception as exc:
            for tdir in dirs:
                if read_result(tdir / RESULT_FILE) is None:
                    (tdir / ERROR_FILE).write_text(_one_line(exc) + "\n")
            raise
        results: list[dict[str, Any] | None] = []
        failed = []
        for spec, tdir, outcome in zip(specs, dirs, outcomes, strict=True):
            if isinstance(outcome, Exception):
                (tdir / ERROR_FILE).write_text(_one_line(outcome) + "\n")
                failed.append(f"{spec.key}: {_one_line(outcome)}")
                results.append(None)
                continue
            if spec.posthoc and "posthoc" not in outcome:
                outcome = _posthoc(tdir, spec, cfgs[0].device) or outcome
            results.append(outcome)
    done = [r for r in results if r is not None]
    final = final_metrics(min(done, key=lambda r: r.get("top1_error", 100.0))) if done else {}
    report({**final, "pack_finished": len(done), "pack_failed": len(failed)})
    if failed:
        raise LtbenchError(f"{len(failed)} of {len(specs)} runs of the pack failed: {failed[0]}")
    return results


def run_unit(
    key: str,
    out_dir: str | Path,
    *,
    resources: dict[str, float],
    report,
    train_fn=None,
    packs: dict[str, list[str]] | None = None,
    data_parallel=None,
) -> None:
    """One Tune trial of a suite: the trial `key` of DIR/trials.json, or the pack of that name
    (`packs`: pack name -> its trial keys). `data_parallel(spec, out_dir, resources, train_fn)`
    gives a trial's `train_fn` (`ltbench.runner.ray_train.trial_train_fn`: Ray Train's workers
    for a trial of `workers` > 1, which is never packed)."""
    specs = load_trials(Path(out_dir))
    members = (packs or {}).get(key)
    if members:
        many = [k for k in members if specs[k].workers > 1]
        if many:
            raise LtbenchError(f"a data-parallel trial cannot be packed: {many[0]}")
        run_pack([specs[k] for k in members], out_dir, resources, report)
        return
    if data_parallel is not None:
        train_fn = data_parallel(specs[key], str(out_dir), resources, train_fn)
    run_trial(specs[key], out_dir, resources, report, train_fn)
