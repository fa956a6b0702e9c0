#!/usr/bin/env bash
# Runs `svm run chaos` again and again to catch a rare hang, and on one
# takes every thread's stack of init (`svm`, which holds the supervisor and
# the pager's descriptor keeper) and of each server before killing the run.
# Not part of CI (each run takes ~40 s of both cores).
#
#   BIN=target/release OUT=/tmp/soak RUNS=20 scripts/chaos-soak.sh
set -u -o pipefail
BIN=$(cd "${BIN:-target/release}" && pwd) || { echo "chaos-soak: no binaries"; exit 2; }
OUT=${OUT:-/tmp/chaos-soak} RUNS=${RUNS:-20} LIMIT=${LIMIT:-90}
mkdir -p "$OUT"
export SVM_BIN_DIR=$BIN
hung=0
for i in $(seq 1 "$RUNS"); do
    "$BIN/svm" run chaos --kill gpu,pager,mm --every 2s --for 30s >"$OUT/run$i.log" 2>&1 &
    run=$!
    for _ in $(seq 1 "$LIMIT"); do kill -0 "$run" 2>/dev/null || break; sleep 1; done
    if kill -0 "$run" 2>/dev/null; then
        hung=$((hung + 1))
        echo "run $i: HUNG" | tee -a "$OUT/summary.txt"
        for pid in "$run" $(pgrep -P "$run"); do
            name=$(cat "/proc/$pid/comm" 2>/dev/null)
            gdb -batch -ex "thread apply all bt" -p "$pid" >"$OUT/stack-$i-$name-$pid.txt" 2>&1
        done
        pkill -9 -P "$run"; kill -9 "$run"
    else
        wait "$run"
        echo "run $i: rc=$? $(grep restarts= "$OUT/run$i.log" | tail -1)" | tee -a "$OUT/summary.txt"
    fi
done
echo "$hung of $RUNS runs hung" | tee -a "$OUT/summary.txt"
