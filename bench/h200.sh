#!/usr/bin/env bash
# The side-by-side kit of issue 15, in one command, for the 16-core H200
# machine: ours (`svm run herd --json`), the two userfaultfd floors (`svm
# bench floor`) and NVIDIA UVM (bench/uvm_herd.cu) run interleaved per
# configuration (copy and minor floor, ours, UVM, minor and copy floor
# again; two rounds), then the whole `svm bench` once with UVM's lines
# beside it. Raw logs, the machine and the tables go to $OUT.
#
#   cargo build --release; mkdir -p bin
#   cp target/release/{svm,pager,xe-svm,mm-server,xe-model} bin/
#   OUT=/tmp/out bash bench/h200.sh           # on the H200 machine
#   OUT=/tmp/out bash bench/h200.sh --dry     # anywhere: no GPU, UVM skipped
#
# Through the device tool: it sends the checkout the session started in
# (not a helper's worktree), so strip the five binaries and copy them, this
# script and uvm_herd.cu into a folder that checkout ignores (for instance
# target/h200carry), carry that folder, copy the two files into bench/
# there and run BIN=target/h200carry OUT=$OUT ROUNDS=1 bash bench/h200.sh.
#
# Environment: BIN (release binaries, default bin/ in the repository
# root), OUT (default $TMPDIR/h200-out), SIZES (KiB), THREADS, MODES,
# ROUNDS, REPS (the sweep), BUDGET_S (seconds after which the last step,
# the whole `svm bench`, is skipped), BASE_THREADS (thread counts at which
# ours also runs with each lever of issue 15 changed, for the A/B: "chunk"
# with whole-chunk migrations (XE_SVM_MIGRATION=chunk), "e4" with four copy
# engines (opt-in: one by default), "old" with whole chunks and one engine;
# their lines go to base.jsonl, not into the tables; empty: none). On the
# 16-core H200 machine, ROUNDS=1 with the A/B took 77 s (2026-12-02).
# The floors are built into `svm` (no separate C programs to build).
# Files in $OUT (8, none deeper; the device tool brings back 8 at most):
# machine.txt, log.txt, results.jsonl, base.jsonl, table.txt,
# herd-per-page.png, bench.txt, bench.json (its plot stays in the work
# folder: the same lines as herd-per-page.png plus the ones of one process).
set -u -o pipefail
cd "$(dirname "$0")/.."

DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
BIN=$(cd "${BIN:-bin}" && pwd) || { echo "h200.sh: no binary folder ${BIN:-bin}"; exit 2; }
OUT=${OUT:-${TMPDIR:-/tmp}/h200-out}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/svm-h200.XXXXXX")
mkdir -p "$OUT"
if [ "$DRY" = 1 ]; then
    SIZES=${SIZES:-2048} THREADS=${THREADS:-"1 2"} MODES=${MODES:-touch}
    ROUNDS=${ROUNDS:-1} REPS=${REPS:-2} BASE_THREADS=${BASE_THREADS-1}
else
    SIZES=${SIZES:-"2048 65536"} THREADS=${THREADS:-"1 2 4 8 16"}
    MODES=${MODES:-"touch inc-all"} ROUNDS=${ROUNDS:-2} REPS=${REPS:-5}
    BASE_THREADS=${BASE_THREADS-"1 16"}
fi
BUDGET_S=${BUDGET_S:-480}
BENCH_RC=0
LOG=$OUT/log.txt RES=$OUT/results.jsonl BASE=$OUT/base.jsonl
: >"$LOG"; : >"$RES"; : >"$BASE"
# Ours with density-sized migrations, as measured on 2026-12-02 and -03
# (opt-in since: drivers/xe-svm/src/density.rs says why).
export XE_SVM_MIGRATION=${XE_SVM_MIGRATION:-density}
export SVM_BIN_DIR=$BIN
START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }
say() { echo "== $* (t=$(elapsed)s)" | tee -a "$LOG"; }
trap 'rm -rf "$WORK"' EXIT

say "machine"
{
    date -u +%FT%TZ; uname -a; nproc; head -2 /etc/os-release 2>/dev/null
    grep -E 'MemTotal|MemFree' /proc/meminfo
    echo "unprivileged_userfaultfd=$(cat /proc/sys/vm/unprivileged_userfaultfd 2>&1)"
    echo "shmem THP: $(cat /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>&1)"
    lscpu 2>&1
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,pstate \
            --format=csv
        nvidia-smi -q | grep -i -E 'Product Name|Addressing|Persistence|Compute Mode'
    else
        echo "nvidia-smi: not here"
    fi
    command -v nvcc >/dev/null && nvcc --version | tail -2
    ldd "$BIN/svm" 2>&1
} >"$OUT/machine.txt" 2>&1
head -3 "$OUT/machine.txt" | tee -a "$LOG"

UVM=""
if [ "$DRY" = 1 ]; then
    say "UVM: skipped (dry run: no GPU is used; the UVM herd is neither built nor run)"
elif ! command -v nvcc >/dev/null; then
    say "UVM: skipped (no nvcc on this machine)"
else
    say "build the UVM herd"
    if nvcc -O2 -arch=sm_90 -o "$WORK/uvm_herd" bench/uvm_herd.cu >>"$LOG" 2>&1; then
        UVM=$WORK/uvm_herd
    else
        say "UVM: skipped (nvcc failed, see above)"
    fi
fi

# One step of the sweep: a tag, then the step's output on one line.
step() {
    local tag=$1; shift
    local out rc
    out=$(timeout 180 "$@" 2>>"$LOG" | tr '\n' ' ')
    rc=$?
    echo "$tag $out rc=$rc" | tee -a "$RES"
}

# Ours without the levers (A/B), into base.jsonl: a tag, the variant.
base_step() {
    local tag=$1 variant=$2; shift 2
    local out rc env=() args=()
    case $variant in
        chunk) env=(XE_SVM_MIGRATION=chunk) ;;
        e4) env=(XE_SVM_MIGRATION=density) args=(--copy-engines 4) ;;
        old) env=(XE_SVM_MIGRATION=chunk) args=(--copy-engines 1) ;;
    esac
    out=$(env "${env[@]}" timeout 180 "$BIN/svm" "${args[@]}" "$@" 2>>"$LOG" | tr '\n' ' ')
    rc=$?
    echo "$tag base-$variant $out rc=$rc" | tee -a "$BASE"
}

say "smoke: svm boots"
timeout 60 "$BIN/svm" boot --check >>"$LOG" 2>&1 || echo "svm boot --check failed" | tee -a "$LOG"

for round in $(seq 1 "$ROUNDS"); do
    say "round $round"
    for kib in $SIZES; do for mode in $MODES; do for t in $THREADS; do
        sz=${kib}K
        c="R$round $mode $kib $t"
        step "$c A floor-copy" "$BIN/svm" bench floor --kind copy --size "$sz" --threads "$t" \
            --mode "$mode" --reps "$REPS"
        step "$c A floor-minor" "$BIN/svm" bench floor --kind minor --size "$sz" \
            --threads "$t" --mode "$mode" --reps "$REPS"
        step "$c ours" "$BIN/svm" run herd --size "$sz" --threads "$t" --mode "$mode" \
            --reps "$REPS" --json
        if [ "$round" = 1 ] && [[ " $BASE_THREADS " == *" $t "* ]]; then
            for v in old chunk e4; do
                base_step "$c" "$v" run herd --size "$sz" --threads "$t" --mode "$mode" \
                    --reps "$REPS" --json
            done
        fi
        if [ -n "$UVM" ]; then
            step "$c uvm" "$UVM" "$kib" "$t" "$mode" "$REPS"
        fi
        step "$c B floor-minor" "$BIN/svm" bench floor --kind minor --size "$sz" \
            --threads "$t" --mode "$mode" --reps "$REPS"
        step "$c B floor-copy" "$BIN/svm" bench floor --kind copy --size "$sz" --threads "$t" \
            --mode "$mode" --reps "$REPS"
        step "$c memcpy" "$BIN/svm" bench floor --kind memcpy --size "$sz" --threads "$t" \
            --mode "$mode" --reps "$REPS"
    done; done; done
done

say "table: the interleaved runs (medians over rounds and the A/B floors)"
timeout 120 "$BIN/svm" bench report "$RES" --plot-dir "$WORK/report" \
    >"$OUT/table.txt" 2>>"$LOG"
REPORT_RC=$?
echo "svm bench report rc=$REPORT_RC" | tee -a "$LOG"
cat "$OUT/table.txt"
cp "$WORK/report/herd-per-page.png" "$OUT/" 2>/dev/null

if [ "$(elapsed)" -lt "$BUDGET_S" ]; then
    say "svm bench: every path beside its floor in one process, UVM beside"
    QUICK=() UVMARG=()
    [ "$DRY" = 1 ] && QUICK=(--quick)
    grep -q '"impl":"uvm"' "$RES" && UVMARG=(--uvm "$RES")
    timeout 400 "$BIN/svm" bench "${QUICK[@]}" "${UVMARG[@]}" --json "$OUT/bench.json" \
        --plot-dir "$WORK/bench" >"$OUT/bench.txt" 2>>"$LOG"
    BENCH_RC=$?
    echo "svm bench rc=$BENCH_RC" | tee -a "$LOG"
    cat "$OUT/bench.txt"
else
    say "svm bench: skipped (past BUDGET_S=$BUDGET_S)"
fi
command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu --format=csv >>"$LOG" 2>&1
BAD=$(cat "$RES" "$BASE" | grep -c -E '"bad":[1-9]|rc=[1-9]')
say "end: $BAD result lines with bad pages or a failed step; report rc=$REPORT_RC, \
svm bench rc=$BENCH_RC"
[ "$BAD" = 0 ] && [ "$REPORT_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
