#!/usr/bin/env python3
"""Slowdown of unmodified programs under `svm exec` (issue 18).

Runs each workload plain and under `svm exec` (libsvm.so preloaded: the
program's heap and anonymous mappings are pager memory), checks the output
is byte-identical, and reports the median wall time of each and the ratio.
`svm exec -- true` is measured too: the cost of booting and stopping the
system, which every `svm exec` run pays once.

    cargo build --release -p init -p pager -p xe-svm -p mm-server -p libsvm \
        && cargo build --release -p hw --bin xe-model
    python3 bench/exec_slowdown.py [--svm target/release/svm] [--reps 3]
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

PY_SCRIPT = """
import hashlib, json, collections
d = collections.Counter()
rows = []
for i in range(200000):
    k = "key%d" % (i % 1000)
    d[k] += i
    rows.append({"i": i, "k": k, "v": [i, i * 2, str(i)]})
blob = json.dumps(rows).encode()
print(len(blob), hashlib.sha256(blob).hexdigest())
big = bytearray(64 << 20)
for j in range(0, len(big), 4096):
    big[j] = j % 251
print(sum(big[::4096]))
"""

SQL = """
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 300000)
INSERT INTO t SELECT x, 'k' || (x % 997), x * 7 FROM c;
CREATE INDEX tk ON t(k);
SELECT k, count(*), sum(v) FROM t GROUP BY k ORDER BY sum(v) DESC LIMIT 5;
SELECT count(*) FROM t a JOIN t b ON a.k = b.k WHERE a.id < 300 AND b.id < 3000;
"""


def workloads(tmp):
    text = os.path.join(tmp, "big.txt")
    rnd = random.Random(7)
    words = ["alpha", "beta", "svm", "pager", "vram", "chunk", "fault", "heap"]
    with open(text, "w") as f:
        for i in range(400000):
            f.write(" ".join(rnd.choice(words) for _ in range(8)) + " %d\n" % i)
    script = os.path.join(tmp, "work.py")
    with open(script, "w") as f:
        f.write(PY_SCRIPT)
    sql = os.path.join(tmp, "q.sql")
    with open(sql, "w") as f:
        f.write(SQL)
    out = [("gzip -6 (20 MB text)", ["gzip", "-c", "-6", text], None)]
    out.append(("python3 (json, 64 MiB bytearray)", [sys.executable, script], None))
    if shutil.which("sqlite3"):
        out.append(("sqlite3 (300k rows, index, join)", ["sqlite3", ":memory:"], sql))
    return out


def timed(cmd, stdin_path, env):
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    t0 = time.monotonic()
    r = subprocess.run(cmd, stdin=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env=env, timeout=600)
    dt = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit("%s failed (%d): %s" % (cmd, r.returncode, r.stderr.decode()[-2000:]))
    return dt, r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--svm", default="target/release/svm")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    svm = os.path.abspath(a.svm)
    env = dict(os.environ, RUST_LOG="warn")
    with tempfile.TemporaryDirectory() as tmp:
        boot = statistics.median(
            timed([svm, "exec", "--", "true"], None, env)[0] for _ in range(a.reps))
        print("svm exec -- true (boot + stop): %.3f s" % boot)
        print("%-34s %9s %9s %8s %8s" % ("program", "plain s", "svm s", "ratio", "ratio-boot"))
        for name, cmd, stdin in workloads(tmp):
            plain, svm_t, want = [], [], None
            for _ in range(a.reps):
                dt, out = timed(cmd, stdin, env)
                plain.append(dt)
                want = out
                dt, out = timed([svm, "exec", "--"] + cmd, stdin, env)
                svm_t.append(dt)
                if out != want:
                    sys.exit("%s: output differs under svm exec" % name)
            p, s = statistics.median(plain), statistics.median(svm_t)
            print("%-34s %9.3f %9.3f %7.2fx %7.2fx" % (name, p, s, s / p, (s - boot) / p))
    print("outputs byte-identical: yes")


if __name__ == "__main__":
    main()
