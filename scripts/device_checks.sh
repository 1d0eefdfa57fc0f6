#!/usr/bin/env bash
# Every GPU check of issues 3, 4 and 5 in one call on a lent GPU box (/work/.library/device/README.md):
#   here, once:  scripts/device_wheels.sh          (.whl/ is git-ignored; ~10 MB)
#   there:       run(command="scripts/device_checks.sh", carry=[".whl"], timeout_s=540)
# One JSON line per check goes to $OUT/device_checks.jsonl (a failed check: {"check", "rc", "error"}), the whole
# log to $OUT/device_checks.log. Checks run in order of importance, each under its own timeout cut to what is
# left of DEVICE_CHECKS_MAX_S (default 420 s for the whole script; a check with under DEVICE_CHECKS_MIN_S=30 s left is skipped), so
# the call ends well inside timeout_s=540 and the session keeps device time for a rerun.
# DEVICE_CHECKS_SMOKE=1 runs the same sequence with the tiny encoders on the CPU: the test of this script.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/radscale-device-checks}
mkdir -p "$out"
jsonl="$out/device_checks.jsonl" log="$out/device_checks.log"
: >"$jsonl"
: >"$log"
py=${DEVICE_CHECKS_PYTHON:-python3}
smoke=${DEVICE_CHECKS_SMOKE:-0}
max_s=${DEVICE_CHECKS_MAX_S:-420}
min_s=${DEVICE_CHECKS_MIN_S:-30}
start=$SECONDS
export PYTHONUNBUFFERED=1

if [ "$smoke" != 1 ] && [ -d .whl ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >>"$log" 2>&1 || { echo '{"check": "install", "error": "pip install of .whl failed (see log)"}' >>"$jsonl"; exit 1; }
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"

check() {   # check NAME TIMEOUT_S ARGS... : one `radscale bench` run; its JSON line, or an error line
    local name=$1 limit=$2
    shift 2
    local left=$(( max_s - (SECONDS - start) ))
    (( left < limit )) && limit=$left
    if (( limit < min_s )); then
        echo "{\"check\": \"$name\", \"error\": \"skipped: past DEVICE_CHECKS_MAX_S=$max_s\"}" >>"$jsonl"
        return
    fi
    echo "=== $name: radscale bench $* ($(( SECONDS - start )) s in, limit $limit s)" >>"$log"
    local tmp rc t0=$SECONDS
    tmp=$(mktemp)
    timeout "$limit" "$py" -m radscale bench "$@" >"$tmp" 2>>"$log"
    rc=$?
    cat "$tmp" >>"$log"
    local line
    line=$(grep '^{"bench"' "$tmp" | tail -n 1)
    if [ "$rc" = 0 ] && [ -n "$line" ]; then
        echo "{\"check\": \"$name\", \"wall_s\": $(( SECONDS - t0 )), ${line#\{}" >>"$jsonl"
    else
        echo "{\"check\": \"$name\", \"rc\": $rc, \"wall_s\": $(( SECONDS - t0 )), \"error\": \"see device_checks.log\"}" >>"$jsonl"
    fi
    rm -f "$tmp"
}

if [ "$smoke" = 1 ]; then
    dino=rad-dino-tiny mi2=mi2-tiny secs=1 peak=0 dev=(--device cpu)
    imgs=(--images 160 --batch-size 32) imgs_mi2=(--images 160 --batch-size 32) compile=(--compile-backend eager)
else
    dino=rad-dino mi2=mi2 secs=15 peak=797 dev=(--device cuda)
    imgs=(--images 4096 --batch-size 128 --repeats 3) imgs_mi2=(--images 2048 --batch-size 64 --repeats 3) compile=()
    { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
      "$py" -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; } >>"$log" 2>&1
fi

# One GPU per trial trains with ZeRO-0 (nothing to partition; DeepSpeed 0.19's ZeRO-1/2 step reads 15 values
# back per step, `radscale_host_read_sites`); ZeRO-2 runs last, for comparison.
z0=(--zero-stage 0)
# Issue 3 + 4: full-size steps in bf16 (images/s, MFU, host syncs) and radscale / bare ratios (target >= 0.95).
check train-rad-dino 240 train --encoder "$dino" --objective dinov2 --batch-size 64 --seconds "$secs" \
    --peak-tflops "$peak" "${z0[@]}" "${dev[@]}"
check train-mi2-clip 240 train --encoder "$mi2" --objective clip --batch-size 16 --seconds "$secs" \
    --peak-tflops "$peak" "${z0[@]}" "${dev[@]}"
# Issue 4 + 5: extraction, the actor's callable vs bare (target >= 0.9; no ray there), bf16 as eval.precision,
# with the segmentation tokens of the eval defaults (RAD-DINO: last 4 blocks; MI2: stride-16 stage).
check extract-rad-dino 120 extract --encoder "$dino" --precision bf16 --without-ray "${imgs[@]}" "${dev[@]}"
check extract-mi2 120 extract --encoder "$mi2" --precision bf16 --without-ray "${imgs_mi2[@]}" "${dev[@]}"
# Issue 4: the compiled DINOv2 step (target >= 45% of 797 TFLOP/s).
check train-rad-dino-compiled 300 train --encoder "$dino" --objective dinov2 --batch-size 64 --seconds "$secs" \
    --peak-tflops "$peak" --compile "${compile[@]}" "${z0[@]}" "${dev[@]}"
# Multi-GPU trials' stage on one GPU: what ZeRO-2's machinery costs.
check train-rad-dino-zero2 240 train --encoder "$dino" --objective dinov2 --batch-size 64 --seconds "$secs" \
    --peak-tflops "$peak" --zero-stage 2 "${dev[@]}"

echo "=== done in $(( SECONDS - start )) s" >>"$log"
cat "$jsonl"
