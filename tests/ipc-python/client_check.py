#!/usr/bin/env python3
"""The Python client's conformance checks against a server (docs/ipc.md
"Conformance endpoints", client role): started by `svm conformance client
--spawn 'python3 tests/ipc-python/client_check.py' (--system | --server
CMD)` with the endpoint at $XSVM_ENDPOINT_FD (every right) and one without
rights at $XSVM_DENIED_FD, and where the server can be restarted, an
endpoint to it at $XSVM_RESTART_FD and the socket to ask for restarts on at
$XSVM_RESTART_CONTROL_FD. Prints one PASS/FAIL/SKIP line per check."""

import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xsvm import schema as schema_mod  # noqa: E402
from xsvm.client import CallError, Client, close_all  # noqa: E402
from xsvm.codec import Codec  # noqa: E402
from xsvm.transport import Endpoint  # noqa: E402

UNUSED_ID = 0xFFFFFFFF
failed = False


def report(name, fn):
    global failed
    try:
        note = fn()
    except Skip as e:
        print(f"SKIP {name}: {e}", flush=True)
        return
    except (AssertionError, CallError) as e:
        failed = True
        print(f"FAIL {name}: {e}", flush=True)
        return
    print(f"PASS {name}" + (f": {note}" if note else ""), flush=True)


class Skip(Exception):
    pass


def expect_error(fn, cls, name):
    try:
        fn()
    except CallError as e:
        assert (e.cls, e.name) == (cls, name), f"expected {cls} {name}, got {e}"
        return e
    raise AssertionError(f"expected {cls} {name}, got a reply")


# ---- safe calls per interface: answered, and they change nothing ----


def answered(c, name, fields):
    """A reply, or the server's own typed error (an id that exists nowhere)."""
    try:
        _, fds = c.call(name, fields)
        close_all(fds)
        return "replied"
    except CallError as e:
        if e.cls != "server":
            raise
        return f"answered {e.name}"


def liveness(c):
    n = c.iface.name
    if n == "Pager":
        reply, fds = c.call("CreateObject", {"size_bytes": 4096})
        assert len(fds) == 1 and os.fstat(fds[0]).st_size == 4096, "the memfd is not 4096 bytes"
        close_all(fds)
        c.call("DestroyObject", {"object": reply["object"]})
        return None
    if n == "PagerMigrate":
        return answered(c, "GetPages", {"object": UNUSED_ID, "first_page": 0, "count": 1})
    if n == "GpuNotify":
        return answered(c, "ViewGone", {"view": UNUSED_ID})
    name = {"PagerReclaim": "Usage", "Gpu": "Stats", "GpuShrink": "Usage", "Pressure": "Status"}[n]
    reply, _ = c.call(name, {})
    return f"{name}: {len(reply)} fields"


# ---- checks ----


def raw_refusal(c, mutate, want):
    """Sends a frame of the safe call broken by `mutate`, expects `want`."""
    frame = bytearray(c.request_frame(*safe_request(c), 0x77))
    mutate(frame)
    c.ep.send(bytes(frame))
    rx = c.receive()
    m = c.iface.by_opcode.get(int.from_bytes(frame[8:10], "little"))
    opcode = int.from_bytes(frame[8:10], "little")
    expect_error(lambda: c.check(rx, 0x77, opcode, m), "protocol", want)
    liveness(c)


def safe_request(c):
    """A request that carries fields, for breaking."""
    return {
        "Pager": ("CreateObject", {"size_bytes": 4096 * 3 + 1}),
        "PagerMigrate": ("GetPages", {"object": UNUSED_ID, "first_page": 0, "count": 1}),
        "PagerReclaim": ("Evict", {"gpu": 15, "bytes": 0}),
        "Gpu": ("DestroyVm", {"vm": UNUSED_ID}),
        "GpuNotify": ("ViewGone", {"view": UNUSED_ID}),
        "GpuShrink": ("Shrink", {"bytes": 0}),
        "Pressure": ("Reserve", {"memory": "Sram", "world": "Svm", "bytes": 1, "timeout_ms": 0}),
    }[c.iface.name]


def idempotent_request(c):
    """A call marked idempotent that changes nothing."""
    return {
        "Pager": ("Snapshot", {"object": UNUSED_ID, "first_page": 0, "count": 1}),
        "PagerMigrate": ("GetPages", {"object": UNUSED_ID, "first_page": 0, "count": 1}),
        "PagerReclaim": ("Usage", {}),
        "Gpu": ("Stats", {}),
        "GpuNotify": ("ViewGone", {"view": UNUSED_ID}),
        "GpuShrink": ("Usage", {}),
        "Pressure": ("Status", {}),
    }[c.iface.name]


class Restarts:
    """Asks the suite to stop and to restart the server (a line each way)."""

    def __init__(self, fd):
        self.sock = socket.socket(fileno=fd)
        self.sock.settimeout(60)
        self.lines = self.sock.makefile("r")

    def ask(self, request):
        self.sock.sendall(f"{request}\n".encode())
        answer = self.lines.readline().strip()
        assert answer and not answer.startswith("error"), f"{request}: {answer or 'no answer'}"
        return answer

    def pause(self):
        self.ask("pause")

    def restart(self):
        """The generation the server runs as now."""
        return int(self.ask("restart").split()[1])


def waiting_call_fails(c, ctl):
    """A call sent to a stopped server fails with PeerRestarted once the
    new generation announces itself; it is not sent again."""
    liveness(c)
    name, fields = safe_request(c)
    ctl.pause()
    p = c.start(name, fields)
    g = ctl.restart()
    try:
        c.answer(p.rid, c.iface.by_name[name])
    except CallError as e:
        assert e.cls == "restarted", f"expected PeerRestarted, got {e}"
        assert e.generation == g == c.generation, f"generation {e.generation}, started as {g}"
        return f"PeerRestarted, generation {g}"
    raise AssertionError("the call caught by the restart got an answer as if nothing happened")


def idempotent_call_resent(c, ctl):
    """An idempotent call caught by a restart is sent again and answered."""
    name, fields = idempotent_request(c)
    ctl.pause()
    p = c.start(name, fields)
    g = ctl.restart()
    before = c.resent
    try:
        _, fds = c.result(p)
        close_all(fds)
        how = "replied"
    except CallError as e:
        if e.cls != "server":
            raise
        how = f"answered {e.name}"
    assert c.resent == before + 1, f"sent again {c.resent - before} times, not once"
    assert c.generation == g, f"generation {c.generation}, started as {g}"
    return f"{name} sent again, {how}"


RESTART_CHECKS = ["restart.waiting_call_fails", "restart.idempotent_call_resent",
                  "restart.next_call_served"]


def restart_checks(codec, iface):
    fd = os.environ.get("XSVM_RESTART_FD")
    if fd is None:
        why = os.environ.get("XSVM_RESTART_UNAVAILABLE", "no restartable server")
        for name in RESTART_CHECKS:
            report(name, lambda: (_ for _ in ()).throw(Skip(why)))
        return
    # Far from the other client's ids: the endpoint may be the same socket.
    c = Client(codec, iface, Endpoint.from_fd(int(fd)), first_id=1 << 40)
    ctl = Restarts(int(os.environ["XSVM_RESTART_CONTROL_FD"]))
    report("restart.waiting_call_fails", lambda: waiting_call_fails(c, ctl))
    report("restart.idempotent_call_resent", lambda: idempotent_call_resent(c, ctl))
    report("restart.next_call_served", lambda: liveness(c))


def two_pending(c):
    """Two calls sent before either answer is read: each answer carries its id."""
    name, fields = safe_request(c)
    ids = [0x1001, 0x1002]
    for i in ids:
        c.ep.send(c.request_frame(name, fields, i))
    seen = []
    for _ in ids:
        rx = c.receive()
        rid = int.from_bytes(rx.data[16:24], "little")
        assert rid in ids and rid not in seen, f"answer for id {rid:#x}"
        seen.append(rid)
        try:
            _, fds = c.check(rx, rid, c.iface.by_name[name].opcode, c.iface.by_name[name])
            close_all(fds)
        except CallError as e:
            assert e.cls == "server", f"{e}"


def denied(codec, c, m):
    """Every call on the endpoint without rights: Denied with exactly its rights."""
    fds = [os.memfd_create("denied-handle", os.MFD_CLOEXEC) for _ in range(m.request["handles"])]
    try:
        e = expect_error(lambda: c.call(m.name, codec.example_fields(m.request["fields"]), fds),
                         "denied", "Denied")
    finally:
        close_all(fds)
    assert e.missing == m.rights, f"missing {e.missing:#x}, the call needs {m.rights:#x}"


def pager_object_lifecycle(c):
    reply, fds = c.call("CreateObject", {"size_bytes": 3 * 4096})
    assert reply["size_bytes"] == 3 * 4096
    assert os.fstat(fds[0]).st_size == 3 * 4096
    close_all(fds)
    o = reply["object"]
    states, _ = c.call("Snapshot", {"object": o, "first_page": 0, "count": 3})
    assert len(states["states"]) == 3, states
    expect_error(lambda: c.call("Snapshot", {"object": o, "first_page": 2, "count": 2}),
                 "server", "OutOfRange")
    c.call("DestroyObject", {"object": o})
    expect_error(lambda: c.call("Snapshot", {"object": o, "first_page": 0, "count": 1}),
                 "server", "NoSuchObject")
    expect_error(lambda: c.call("DestroyObject", {"object": o}), "server", "NoSuchObject")
    expect_error(lambda: c.call("CreateObject", {"size_bytes": 1000}), "server", "BadSize")
    return f"states {states['states']}"


def gpu_vm_lifecycle(c):
    vm, _ = c.call("CreateVm", {})
    stats, _ = c.call("Stats", {})
    assert stats["vram_total"] > 0, stats
    c.call("DestroyVm", {"vm": vm["vm"]})
    expect_error(lambda: c.call("DestroyVm", {"vm": vm["vm"]}), "server", "NoSuchVm")
    return f"vm {vm['vm']}, {stats['vram_total'] >> 20} MiB VRAM"


def main():
    schema = schema_mod.load()
    codec = Codec(schema)
    iface = schema.interfaces[os.environ["XSVM_INTERFACE"]]
    c = Client(codec, iface, Endpoint.from_fd(int(os.environ.get("XSVM_ENDPOINT_FD", "3"))))
    report("liveness", lambda: liveness(c))
    for case, mutate, want in [
        ("bad_magic", lambda f: f.__setitem__(0, ord("Y")), "BadMagic"),
        ("unknown_version", lambda f: f.__setitem__(4, 9), "UnknownVersion"),
        ("unknown_opcode", lambda f: f.__setitem__(slice(8, 10), b"\xf0\xff"), "UnknownOpcode"),
        ("trailing_bytes", lambda f: (f.append(0), f.__setitem__(12, f[12] + 1)), "TrailingBytes"),
        ("kind_reply", lambda f: f.__setitem__(10, 2), "BadKind"),
    ]:
        report(f"refused.{case}", lambda: raw_refusal(c, mutate, want))
    report("ids.two_pending", lambda: two_pending(c))
    if iface.name == "Pager":
        report("pager.object_lifecycle", lambda: pager_object_lifecycle(c))
    if iface.name == "Gpu":
        report("gpu.vm_lifecycle", lambda: gpu_vm_lifecycle(c))
    denied_fd = os.environ.get("XSVM_DENIED_FD")
    d = None if denied_fd is None else Client(codec, iface, Endpoint.from_fd(int(denied_fd)))
    for m in iface.messages:
        if m.one_way:
            continue
        name = f"rights.denied.{m.name}"
        if d is None:
            report(name, lambda: (_ for _ in ()).throw(Skip("no endpoint without rights")))
            continue
        report(name, lambda: denied(codec, d, m))
    restart_checks(codec, iface)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
