#!/usr/bin/env bash
# Issue 22's three 200-epoch runs on one GPU (docs/REPRODUCTION.md, "On one GPU"): CE and
# KPS-GA as the paper's text states them, and KPS-GA with the authors' public script's settings,
# CIFAR-10-LT rho=100 from the shared JPEG copy, float32, seed 0, a 0.1 validation split, the
# test set every 2 epochs: the CPU record's commands with `--device cuda`. The three share the
# GPU side by side; each run's wall time goes to OUT/times.txt. After training, every post-hoc
# rule (`ltbench eval`). Each run folder is copied to OUT/<run>.tar every minute and at the end,
# so what a stopped call leaves is still there to read and to resume.
#
#   bash bench/gpu-200.sh DATA_ZIP OUT [TRAIN_SECONDS]
#
# DATA_ZIP: ../shared/data/cifar10-jpeg.zip (carried to the machine); it is unzipped to
# /work/data, the path of the CPU record, so the runs' settings are identical to it.
# TRAIN_SECONDS (default 470): the runs still going then are stopped (SIGTERM: their last
# epoch's checkpoint stays; `--resume` continues them). Environment: LTBENCH_GPU_EXTRA adds flags
# to every run (for a dry run on CPU: "--device cpu --epochs 1 --n-max 60"), LTBENCH_GPU_RUNS
# (default /tmp/gpu-runs) is where the runs are written.
set -uo pipefail
zip=${1:?DATA_ZIP}
out=${2:?OUT}
train_seconds=${3:-470}
runs=${LTBENCH_GPU_RUNS:-/tmp/gpu-runs}
extra=${LTBENCH_GPU_EXTRA:---device cuda}
t0=$(date +%s)
mkdir -p "$out" "$runs"
say() { echo "[gpu-200 +$(( $(date +%s) - t0 ))s] $*"; }

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi: not found" > "$out/nvidia-smi.txt"
if [ ! -d /work/data/cifar10-jpeg/train ]; then
    mkdir -p /work/data && unzip -q "$zip" -d /work/data || { say "unzip failed"; exit 2; }
fi
lt="python3 -m ltbench.cli"
if ! $lt list >/dev/null 2>&1; then
    # a bare machine: the package from this checkout, nothing downloaded; failing that, the
    # checkout on the path with its carried ltbench.egg-info (the losses' entry points)
    python3 -m pip install -q --no-deps --no-index --no-build-isolation -e . >/dev/null 2>&1 ||
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
    $lt list >/dev/null || { say "ltbench does not run here"; exit 2; }
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

common="--dataset cifar10-lt --data-root /work/data/cifar10-jpeg --imb-factor 0.01 --no-amp \
--val-fraction 0.1 --seed 0 --num-workers 0 --eval-every 2 --keep-best-val $extra"
export OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1

# One epoch alone first: the CUDA path works, the image cache is filled once for the three runs,
# and its epoch time is the time of a run with the GPU to itself.
say "smoke: one epoch of kps-ga (authors-script) alone"
# shellcheck disable=SC2086
if ! $lt train $common --loss kps-ga --variant authors-script --epochs 1 \
        --out "$runs/smoke" > "$out/smoke.log" 2>&1; then
    tail -n 30 "$out/smoke.log"; say "smoke failed"; exit 3
fi
tail -n 4 "$out/smoke.log"

snapshot() {  # each run folder as OUT/<run>.tar, written whole before it replaces the last
    for d in "$runs"/*-200; do
        [ -d "$d" ] || continue
        n=$(basename "$d")
        tar -C "$runs" -cf "$out/.$n.tar" "$n" 2>/dev/null && mv "$out/.$n.tar" "$out/$n.tar"
    done
}
run() {  # name, flags...
    local name=$1 s e rc left
    shift
    left=$(( train_seconds - ($(date +%s) - t0) ))
    [ "$left" -gt 0 ] || left=1
    s=$(date +%s.%N)
    # shellcheck disable=SC2086
    timeout -s TERM "$left" \
        $lt train $common "$@" --out "$runs/$name" > "$runs/$name.log" 2>&1
    rc=$?
    e=$(date +%s.%N)
    echo "$name rc=$rc wall_s=$(python3 -c "print(round($e - $s, 1))") start=$s end=$e" >> "$out/times.txt"
}

say "three runs side by side"
run ce-200 --loss ce & p1=$!
run kps-ga-200 --loss kps-ga & p2=$!
run kps-ga-script-200 --loss kps-ga --variant authors-script & p3=$!
( while sleep 60; do snapshot; done ) &
snapper=$!
wait "$p1" "$p2" "$p3"
kill "$snapper" 2>/dev/null
cat "$out/times.txt"
for n in ce-200 kps-ga-200 kps-ga-script-200; do
    tail -n 3 "$runs/$n.log"
    cp "$runs/$n.log" "$runs/$n/train.log"
    if [ -f "$runs/$n/result.json" ]; then
        say "post-hoc rules: $n"
        $lt eval "$runs/$n" > "$runs/$n/eval.log" 2>&1 || tail -n 5 "$runs/$n/eval.log"
    fi
done
snapshot
say "done"
