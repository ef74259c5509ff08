"""The names of the files and keys in a run's folder and a suite's folder: the one owner.

The engine writes a run's folder, the runner a suite's, the reports read both; all take the
names from here (standard library only, the lowest layer beside `ltbench.errors`).

A run's folder (`ltbench train --out DIR`, one trial of a suite):

    DIR/config.yaml        the resolved configuration (CONFIG_FILE)
    DIR/metrics.jsonl      one JSON line per epoch (METRICS_FILE)
    DIR/checkpoint.pt      the state after the last finished epoch (CHECKPOINT_FILE, the keys
                           below)
    DIR/result.json        the final record; its presence means the run finished (RESULT_FILE)
    DIR/checkpoint-best-val.pt  the best-on-validation epoch's state, with --keep-best-val
                           (BEST_VAL_CHECKPOINT_FILE; ltbench.engine.protocols)
    DIR/events.out.tfevents.*.ltbench  TensorBoard event files: the numbers of metrics.jsonl
                           per epoch (TENSORBOARD_PREFIX, TENSORBOARD_SUFFIX; engine.curves)

A suite's folder: see `ltbench.schema`.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------------------
# A run's folder

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.json"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, RESULT_FILE)
BEST_VAL_CHECKPOINT_FILE = "checkpoint-best-val.pt"
# TensorBoard event files beside metrics.jsonl: `tensorboard --logdir` on a run's or a suite's
# folder finds them (the prefix is TensorBoard's own; the suffix marks them as ltbench's)
TENSORBOARD_PREFIX = "events.out.tfevents."
TENSORBOARD_SUFFIX = ".ltbench"
STAGE_CACHE_DIR = "_stage1"  # beside a run's folder: the shared earlier stages (engine.stages)

# The keys of checkpoint.pt: `epoch` counts the finished epochs of the whole run, `stage` and
# `stage_epoch` those of the stage being trained.
CHECKPOINT_FORMAT = "ltbench-checkpoint-1"
CHECKPOINT_KEYS = ("format", "config", "epoch", "stage", "stage_epoch", "model", "optimizer")

# ----------------------------------------------------------------------------------------------
# A suite's folder (ltbench.schema describes it)

SUITE_FILE = "suite.yaml"
TRIALS_FILE = "trials.json"
TRIALS_DIR = "trials"
ERROR_FILE = "error.txt"
TRIAL_SPEC_FILE = "trial.json"
RESULTS_FILE = "results.csv"
PER_CLASS_FILE = "per_class.csv"
SWEEP_FILE = "sweep.csv"
MLFLOW_DIR = "mlruns"  # `--mlflow` without a URI: MLflow's local file store in the suite's folder
