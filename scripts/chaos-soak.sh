#!/usr/bin/env bash
# Runs `svm run chaos` again and again to catch a rare hang, and on one
# takes every thread's stack of init (`svm`, which holds the supervisor and
# the pager's descriptor keeper) and of each server before killing the run.
# CI runs it once (`RUNS=1`); each run takes ~40 s of both cores. Exits 1
# when a run hung, failed or lost a word. Where gdb is missing, each
# thread's name, kernel wait channel and system call are taken instead
# (enough to see who waits on what), and CI prints them.
#
#   BIN=target/release OUT=/tmp/soak RUNS=20 scripts/chaos-soak.sh
set -u -o pipefail
BIN=$(cd "${BIN:-target/release}" && pwd) || { echo "chaos-soak: no binaries"; exit 2; }
OUT=${OUT:-/tmp/chaos-soak} RUNS=${RUNS:-20} LIMIT=${LIMIT:-90}
mkdir -p "$OUT"
export SVM_BIN_DIR=$BIN
hung=0 failed=0

# Each thread of process $1: its name, kernel wait channel and system call.
threads() {
    for t in /proc/"$1"/task/*; do
        echo "$(cat "$t/comm" 2>/dev/null) wchan=$(cat "$t/wchan" 2>/dev/null)" \
            "syscall=$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)"
    done
}
for i in $(seq 1 "$RUNS"); do
    "$BIN/svm" run chaos --kill gpu,pager,mm --every 2s --for 30s >"$OUT/run$i.log" 2>&1 &
    run=$!
    for _ in $(seq 1 "$LIMIT"); do kill -0 "$run" 2>/dev/null || break; sleep 1; done
    if kill -0 "$run" 2>/dev/null; then
        hung=$((hung + 1))
        echo "run $i: HUNG" | tee -a "$OUT/summary.txt"
        for pid in "$run" $(pgrep -P "$run"); do
            name=$(cat "/proc/$pid/comm" 2>/dev/null)
            stack=$OUT/stack-$i-$name-$pid.txt
            if command -v gdb >/dev/null; then
                gdb -batch -ex "thread apply all bt" -p "$pid" >"$stack" 2>&1
            else
                threads "$pid" >"$stack"
            fi
            [ -n "${SHOW_STACKS:-}" ] && { echo "== $stack"; cat "$stack"; }
        done
        pkill -9 -P "$run"; kill -9 "$run"
        tail -n 20 "$OUT/run$i.log"
    else
        wait "$run"
        rc=$?
        line=$(grep restarts= "$OUT/run$i.log" | tail -1)
        echo "run $i: rc=$rc $line" | tee -a "$OUT/summary.txt"
        case "$rc $line" in
            "0 "*bad=0*) ;;
            *) failed=$((failed + 1)); tail -n 20 "$OUT/run$i.log" ;;
        esac
    fi
done
echo "$hung of $RUNS runs hung, $failed failed" | tee -a "$OUT/summary.txt"
[ "$hung" = 0 ] && [ "$failed" = 0 ]
