"""Bit-identity check for refactors of the engine: run a fixed set of tiny CPU trainings and
save (or compare) their result.json and metrics.jsonl, timing and paths left out.

    OMP_NUM_THREADS=1 python tests/tools/bit_identity.py save  DIR   # before the change
    OMP_NUM_THREADS=1 python tests/tools/bit_identity.py check DIR   # after: exit 1 on a diff

The runs: a one-stage method (kps-ga, without and with a validation split), a two-stage method
(crt), BBN, a meta method (meta-ce), each through `ltbench train` with one seed, and a pack of
three (ce, ldam-drw, kps-ga, with a validation split) through `ltbench.engine.pack.train_pack`,
the call `ltbench run --pack 3` makes per pack; then `ltbench eval` (every post-hoc rule) on
kps-ga-val and crt. To take the "before" outputs from an older
commit: `git archive COMMIT | tar -x -C OLD` and run `save` with `PYTHONPATH=OLD`. Not a pytest
module: it takes minutes and compares against outputs of an older checkout kept outside the
repository.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TINY = [
    "--dataset", "synthetic-lt", "--n-max", "60", "--imb-factor", "0.1", "--width", "0.125",
    "--batch-size", "32", "--epochs", "2", "--eval-every", "1", "--device", "cpu", "--no-amp",
    "--seed", "3",
]  # fmt: skip
# (folder, loss, further flags): kps-ga twice, with and without a validation split
SOLO = [
    ("kps-ga", "kps-ga", []),
    ("kps-ga-val", "kps-ga", ["--val-fraction", "0.2"]),
    ("crt", "crt", []),
    ("bbn", "bbn", []),
    ("meta-ce", "meta-ce", []),
]
PACK = ["ce", "ldam-drw", "kps-ga"]
POSTHOC = ["kps-ga-val", "crt"]  # `ltbench eval`: result.json gets its `posthoc` block
# What differs between two identical runs: clocks, machine, folders (a literal list: this tool
# also runs against commits whose ltbench has no `CLOCK_KEYS`).
VOLATILE = {
    *("wall_seconds", "epoch_seconds", "epoch_cpu_seconds", "threads", "env"),
    *("stage1_dir", "out_dir", "run_dir"),
}

PACK_SCRIPT = """
import sys
from ltbench.engine.config import TrainConfig
from ltbench.engine.pack import train_pack
kw = dict(dataset="synthetic-lt", n_max=60, imb_factor=0.1, width=0.125, batch_size=32,
          epochs=2, eval_every=1, device="cpu", amp=False, val_fraction=0.2)
cfgs = [TrainConfig(loss=name, seed=k, **kw) for k, name in enumerate(sys.argv[2].split(","))]
out = [f"{sys.argv[1]}/pack-{c.loss}" for c in cfgs]
for r in train_pack(cfgs, out, fusion="grouped", progress=False):
    if not isinstance(r, dict):
        raise SystemExit(str(r))
"""


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def run_all(work: Path) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    probe = [sys.executable, "-c", "import ltbench; print(ltbench.__file__)"]
    where = subprocess.run(probe, env=env, capture_output=True, text=True, check=True).stdout
    print(f"ltbench from {where.strip()}")
    ltbench = [sys.executable, "-m", "ltbench.cli"]
    for folder, name, flags in SOLO:
        cmd = [*ltbench, "train", "--loss", name, *TINY, *flags, "--out", str(work / folder)]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    for folder in POSTHOC:  # every post-hoc rule, tau chosen on validation where there is one
        cmd = [*ltbench, "eval", str(work / folder), "--device", "cpu"]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", PACK_SCRIPT, str(work), ",".join(PACK)], check=True,
                   env=env)  # fmt: skip
    out = {}
    for run in sorted(p for p in work.iterdir() if (p / "result.json").exists()):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        out[run.name] = {
            "result": strip(json.loads((run / "result.json").read_text())),
            "metrics": strip(rows),
        }
    return out


def diff(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                yield f"{where}/{k}: only in {'new' if k in b else 'old'}"
            else:
                yield from diff(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from diff(x, y, f"{where}[{i}]")
    elif a != b and not (a != a and b != b):  # NaN == NaN here
        yield f"{where}: {a!r} -> {b!r}"


def main() -> int:
    mode, store = sys.argv[1], Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        got = run_all(Path(tmp))
    if mode == "save":
        store.mkdir(parents=True, exist_ok=True)
        (store / "outputs.json").write_text(json.dumps(got, indent=1, sort_keys=True))
        print(f"saved {len(got)} runs to {store / 'outputs.json'}")
        return 0
    old = json.loads((store / "outputs.json").read_text())
    problems = list(diff(old, json.loads(json.dumps(got))))
    for p in problems[:60]:
        print(p)
    metric_keys = ["top1_error", "per_class_accuracy", "confusion_matrix", "val_top1_error"]
    for run in sorted(old):
        same = {k: old[run]["result"].get(k) == got.get(run, {}).get("result", {}).get(k)
                for k in metric_keys}  # fmt: skip
        print(run, "identical" if not any(run in p.split("/")[1] for p in problems) else "DIFF",
              same)  # fmt: skip
    print(f"{len(problems)} differences over {len(old)} runs")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
