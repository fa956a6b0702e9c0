#!/usr/bin/env bash
# Peer migration against its floor (issue 17): `svm run peer` boots two
# GPUs; each rep GPU 0 touches a buffer into its VRAM, then GPU 1 takes
# every page VRAM to VRAM (timed) by one prefetch or by its kernel's faults
# (BY), every word checked; beside a
# memcpy of the same bytes between two memfd mappings. Also the copy
# engine's 2 MiB peer push alone (`svm bench --quick`'s "peer VRAM" line),
# to split the migration's time between the copy and the rest.
#
#   BIN=target/release OUT=bench/results/dev-YYYY-MM-DD-peer bash bench/peer.sh
#
# Environment: BIN (release binaries), OUT, SIZES (svm sizes), REPS, RUNS
# (runs of each size), ENGINES (copy engine counts), BY (what moves the
# pages: prefetch, touch, touch-aheadN: touch with `svm --fault-ahead N`).
# Files in $OUT:
# machine.txt, peer-<by>-<size>-e<engines>-<run>.txt (stdout; stderr in log.txt),
# bench-quick.txt, summary.txt (each run's summary line).
set -u -o pipefail
cd "$(dirname "$0")/.."

BIN=$(cd "${BIN:-target/release}" && pwd) || { echo "peer.sh: no binary folder"; exit 2; }
OUT=${OUT:-${TMPDIR:-/tmp}/peer}
SIZES=${SIZES:-"16M 64M"} REPS=${REPS:-5} RUNS=${RUNS:-3} ENGINES=${ENGINES:-"1"}
BY=${BY:-"prefetch touch touch-ahead4"}
mkdir -p "$OUT"
LOG=$OUT/log.txt SUM=$OUT/summary.txt
: >"$LOG"; : >"$SUM"
export SVM_BIN_DIR=$BIN
{ date -u +%FT%TZ; uname -a; nproc; free -g; lscpu 2>&1 | head -20
  git rev-parse HEAD 2>/dev/null; git status --short 2>/dev/null | head -50
} >"$OUT/machine.txt" 2>&1

fail=0
for by in $BY; do for e in $ENGINES; do for s in $SIZES; do for r in $(seq 1 "$RUNS"); do
    f=$OUT/peer-$by-$s-e$e-$r.txt
    mover=$by ahead=0
    case $by in touch-ahead*) mover=touch ahead=${by#touch-ahead} ;; esac
    { echo "== svm --copy-engines $e --fault-ahead $ahead run peer --size $s --reps $REPS" \
        "--by $mover"; uptime; ps -eo pcpu,comm --sort=-pcpu | head -6; } >>"$LOG"
    timeout 600 "$BIN/svm" --copy-engines "$e" --fault-ahead "$ahead" run peer --size "$s" \
        --reps "$REPS" --by "$mover" >"$f" 2>>"$LOG"
    rc=$?
    [ "$rc" = 0 ] || fail=1
    echo "$by e$e run$r rc=$rc $(tail -n 1 "$f")" | tee -a "$SUM"
done; done; done; done

timeout 600 "$BIN/svm" bench --quick --plot-dir "$OUT/plot" >"$OUT/bench-quick.txt" 2>>"$LOG" || fail=1
grep -i "peer VRAM" "$OUT/bench-quick.txt" | tee -a "$SUM"
exit $fail
