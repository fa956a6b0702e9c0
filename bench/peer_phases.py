#!/usr/bin/env python3
"""Where `svm run peer`'s time goes, from a system-wide CPU profile.

    perf record -e cpu-clock -F 2000 -a -o peer.data -- \
        target/release/svm run peer --size 64M --reps 10
    perf script -i peer.data -F comm,pid,tid,time > peer.txt
    python3 bench/peer_phases.py peer.txt

Cuts the run into 2 ms windows and names each by which device model's
compute engine ran in it: GPU 1's alone with GPU 0's copy engine or the
pager's migrate threads busy is the peer migration; GPU 1's alone without
them is GPU 1's touch of resident pages; GPU 0's alone is GPU 0's touch;
the pager's userfaultfd threads alone are the CPU read back. Prints, per
phase, each thread group's share of both CPUs (`idle`: nothing ran).
The device models are told apart by process id: GPU 0's starts first.
"""
import collections
import re
import sys

WINDOW = 0.002


def main(path):
    rows = []
    for line in open(path):
        m = re.match(r"\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):", line)
        if m:
            rows.append((float(m.group(4)), m.group(1).strip(), int(m.group(2))))
    if not rows:
        sys.exit("no samples")
    models = sorted({p for _, c, p in rows if c.startswith("xe-model")})
    if len(models) < 2:
        sys.exit("fewer than two device models in the profile")
    gpu = {models[0]: 0, models[1]: 1}
    t0 = rows[0][0]
    windows = collections.defaultdict(list)
    for t, c, p in rows:
        windows[int((t - t0) / WINDOW)].append((c, p))

    def group(c, p):
        if c == "swapper":
            return "idle"
        if c.startswith("xe-model"):
            return f"GPU {gpu.get(p, '?')} model: {c.split('-')[-1]}"
        if c.startswith("pager-space"):
            return "pager: userfaultfd threads"
        return c

    share = collections.Counter()
    count = collections.Counter()
    for s in windows.values():
        def ran(prefix, g=None):
            return any(c.startswith(prefix) and (g is None or gpu.get(p) == g) for c, p in s)

        a, b, cpu = ran("xe-model-ccs", 0), ran("xe-model-ccs", 1), ran("pager-space")
        push = ran("xe-model-bcs", 0) or ran("pager-migrate")
        if b and not a and not cpu:
            phase = "peer migration (GPU 1 faults)" if push else "GPU 1, pages resident"
        elif a and not b and not cpu:
            phase = "GPU 0 touch (RAM to VRAM 0)"
        elif cpu and not a and not b:
            phase = "CPU read back"
        else:
            phase = "other (floor, set-up, mixed)"
        count[phase] += 1
        for c, p in s:
            share[(phase, group(c, p))] += 1
    for phase in sorted(count, key=lambda k: -count[k]):
        n = sum(v for (ph, _), v in share.items() if ph == phase)
        print(f"== {phase}: {count[phase] * WINDOW * 1e3:.0f} ms of windows, {n} samples")
        for (ph, g), v in sorted(share.items(), key=lambda x: -x[1]):
            if ph == phase and v / n >= 0.02:
                print(f"   {g:34s} {100 * v / n:5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/dev/stdin")
