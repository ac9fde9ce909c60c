#!/usr/bin/env bash
# The learned-PSIR GPU check (issue 12): one script, under 8 minutes on one NVIDIA H100/H200
# with 16 CPU cores. Three parts, each writing its output under OUT:
#
#   1. train   a larger PsirRefine (32 channels, 4 pools, noise channel) on CUDA for a fixed
#              wall-clock budget (TRAIN_MIN minutes, samples drawn by WORKERS processes);
#   2. score   it beside psir_classic and the shipped psir_refine_cpu on the held-out key-frame
#              cases of bench/eval_keyframe.py (CASES cases with R drawn from 2-3, and CASES at
#              R = 1; the two sets run in parallel on the CPU cores);
#   3. time    the published PSIRNet configuration (845,426,378 parameters, random weights), the
#              shipped psirnet_cpu_small and both PsirRefine models on the GPU at 256x192 x 30
#              coils, fp32 and bf16 autocast, batch 1 and 8: ms/slice and peak GPU memory
#              (bench/bench_psirnet.py's GPU table).
#
# Run from the repository root, where python has torch with CUDA:
#
#     bash bench/gpu_check.sh [OUT]            # default OUT: $OUT, else out/gpu_check
#
# cmrecon's own dependencies that a bare GPU image lacks (ismrmrd, xsdata, pydicom) are
# installed from wheels in $WHEELS (default .whl) when that folder exists; make it on a machine
# with the package registries (Python 3.12 image):
#
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux2014_x86_64 -d .whl ismrmrd==1.15.0 xsdata==26.10 pydicom==3.0.1
#
# Results: OUT/gpu_check.md (all tables), OUT/train.log, OUT/refine_gpu/best.pt (+ .sha256).
# Knobs (environment): TRAIN_MIN (3.5), SAMPLES (2400), WORKERS (14), CASES (16), PY (python3),
# DEVICE (cuda; DEVICE=cpu with tiny knobs is the smoke run of the script on a machine without a
# GPU: it trains and scores on the CPU and its GPU table says it was skipped).
set -euo pipefail
OUT=${1:-${OUT:-out/gpu_check}}
PY=${PY:-python3}
TRAIN_MIN=${TRAIN_MIN:-3.5}
SAMPLES=${SAMPLES:-2400}
WORKERS=${WORKERS:-14}
CASES=${CASES:-16}
WHEELS=${WHEELS:-.whl}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[gpu_check $(( $(date +%s) - t0 )) s] $*"; }

if ! "$PY" -c "import cmrecon, cmrecon_gadgets" 2>/dev/null; then
    if [ -d "$WHEELS" ]; then
        stamp "installing $WHEELS/*.whl into /tmp/cmrecon_site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/cmrecon_site "$WHEELS"/*.whl
        export PYTHONPATH=/tmp/cmrecon_site${PYTHONPATH:+:$PYTHONPATH}
    fi
    stamp "installing cmrecon (editable, no dependencies)"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        || { echo "gpu_check: cannot install cmrecon here (see the header for the wheels)"; exit 2; }
fi
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA device')"
fi
CMRECON="$PY -m cmrecon.cli"

stamp "1/3 training PsirRefine (32 ch, 4 pools) on $DEVICE for $TRAIN_MIN min"
$CMRECON train refine --out "$OUT/refine_gpu" --device "$DEVICE" --chans 32 --pools 4 \
    --samples "$SAMPLES" --val-samples 64 --workers "$WORKERS" --threads 0 --batch 16 \
    --lr 1e-3 --seed 4040 --minutes "$TRAIN_MIN" 2>&1 | tee "$OUT/train.log"

stamp "2/3 held-out key-frame cases ($CASES at R 2-3, $CASES at R 1)"
export CMRECON_WEIGHTS_PATH="$OUT/refine_gpu"
export CMRECON_TORCH_THREADS=4
"$PY" bench/eval_keyframe.py --cases "$CASES" --chains psir_refine \
    --refine-weights "$OUT/refine_gpu/best.pt" -o "$OUT/eval_r23" > "$OUT/eval_r23.log" 2>&1 &
r23=$!
"$PY" bench/eval_keyframe.py --cases "$CASES" --acceleration 1 --chains psir_refine \
    --refine-weights "$OUT/refine_gpu/best.pt" -o "$OUT/eval_r1" > "$OUT/eval_r1.log" 2>&1
wait "$r23"

stamp "3/3 GPU latency and memory"
unset CMRECON_TORCH_THREADS
"$PY" bench/bench_psirnet.py --skip-e2e --runs 5 --batch 8 --gpu-batch 8 \
    --refine-weights "$OUT/refine_gpu/best.pt" > "$OUT/latency.md"

{
    echo "# gpu_check ($(date -u +%Y-%m-%dT%H:%MZ), $(( $(date +%s) - t0 )) s)"
    echo
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none', '| torch', torch.__version__)"
    echo
    echo "## 1. Training (last lines)"
    echo '```'
    tail -n 4 "$OUT/train.log"
    echo '```'
    echo
    echo "## 2. Held-out key-frame cases, R 2-3"
    cat "$OUT/eval_r23/results.md"
    echo
    echo "## 2. Held-out key-frame cases, R 1"
    cat "$OUT/eval_r1/results.md"
    echo
    echo "## 3. Latency and memory"
    cat "$OUT/latency.md"
} > "$OUT/gpu_check.md"
stamp "done: $OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
