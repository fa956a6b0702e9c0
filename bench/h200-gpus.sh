#!/usr/bin/env bash
# Issue 17's measurements on the H200 machine, side by side in one
# command. First the whole peer migration beside its floor (`svm run peer`
# by prefetch, by touch, and by touch with fault-ahead). Then the herd with
# pages spread over several GPUs, per configuration: the minor floor (`svm
# bench floor --kind minor`), ours on one GPU, ours with the pages spread
# over four GPUs (`svm run herd --gpus 4`: each GPU faults a stripe in,
# then the CPU herd brings them back from all four), and NVIDIA UVM's herd
# (bench/uvm_herd.cu, one GPU) when nvcc is there.
#
#   BIN=target/h200carry OUT=/tmp/out bash bench/h200-gpus.sh
#
# Environment: BIN (release binaries), OUT, SIZES (KiB), THREADS, MODE,
# REPS, VRAM_MIB (each device's VRAM). Files in $OUT: machine.txt, log.txt,
# results.txt (one line per step: the tag, then the step's output).
set -u -o pipefail
cd "$(dirname "$0")/.."

BIN=$(cd "${BIN:-bin}" && pwd) || { echo "h200-gpus.sh: no binary folder"; exit 2; }
OUT=${OUT:-${TMPDIR:-/tmp}/h200-gpus}
SIZES=${SIZES:-"65536 262144"} THREADS=${THREADS:-"1 4 16"} MODE=${MODE:-touch}
REPS=${REPS:-5} VRAM_MIB=${VRAM_MIB:-1024}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/svm-gpus.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
LOG=$OUT/log.txt RES=$OUT/results.txt
: >"$LOG"; : >"$RES"
export SVM_BIN_DIR=$BIN
{ date -u +%FT%TZ; uname -a; nproc; lscpu 2>&1 | head -20
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv
} >"$OUT/machine.txt" 2>&1

UVM=""
if command -v nvcc >/dev/null && nvcc -O2 -arch=sm_90 -o "$WORK/uvm_herd" \
    bench/uvm_herd.cu >>"$LOG" 2>&1; then
    UVM=$WORK/uvm_herd
else
    echo "UVM: skipped (no nvcc, or it failed)" | tee -a "$LOG"
fi

step() {
    local tag=$1; shift
    local out rc
    out=$(timeout 300 "$@" 2>>"$LOG" | tr '\n' ' ')
    rc=$?
    echo "$tag $out rc=$rc" | tee -a "$RES"
}

# The whole peer migration beside its floor (`svm run peer`: GPU 1 takes
# a buffer from GPU 0's VRAM, by its kernel's faults or by one prefetch,
# which moves four chunks at once; a memcpy between two memfds beside it).
# By touch also with fault-ahead (`--fault-ahead 4`: each GPU server moves
# the four chunks after a stream of faults ahead of the kernel).
# Each with one copy engine (the model's default) and with four (a 2 MiB
# push split by rows over them, as a real Xe part has several).
for e in 1 4; do for by in prefetch touch touch-ahead4; do for s in 16M 64M 256M; do
    ahead=0
    [ "$by" = touch-ahead4 ] && ahead=4
    step "peer e$e $by $s" "$BIN/svm" --vram-mib "$VRAM_MIB" --copy-engines "$e" \
        --fault-ahead "$ahead" run peer --size "$s" --reps "$REPS" --by "${by%-ahead4}" --json
done; done; done

# Then the herd, per configuration.
for kib in $SIZES; do for t in $THREADS; do
    c="$MODE $kib $t"
    step "$c floor-minor" "$BIN/svm" bench floor --kind minor --size "${kib}K" \
        --threads "$t" --mode "$MODE" --reps "$REPS"
    for g in 1 4; do
        step "$c ours-gpus$g" "$BIN/svm" --vram-mib "$VRAM_MIB" run herd --size "${kib}K" \
            --threads "$t" --mode "$MODE" --reps "$REPS" --json --gpus "$g"
    done
    if [ -n "$UVM" ]; then
        step "$c uvm" "$UVM" "$kib" "$t" "$MODE" "$REPS"
    fi
done; done

