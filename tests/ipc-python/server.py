#!/usr/bin/env python3
"""The Python `Pager` server (docs/ipc.md "Conformance endpoints").

Spawned (`svm conformance ipc --spawn 'python3 tests/ipc-python/server.py'`):
serves the endpoint at $XSVM_ENDPOINT_FD with $XSVM_BADGE and $XSVM_RIGHTS
until it closes; started again on the same endpoint with $XSVM_GENERATION
2 or more, it announces its generation there first. Listening (`server.py --listen PATH [--listen-denied
PATH2]`): serves every connection to PATH with every right of the
interface and every connection to PATH2 with none, each under its own
badge, until killed."""

import argparse
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xsvm import schema as schema_mod  # noqa: E402
from xsvm.codec import Codec  # noqa: E402
from xsvm.server import Server  # noqa: E402
from xsvm.toy_pager import ToyPager  # noqa: E402
from xsvm.transport import Endpoint  # noqa: E402

SERVED = "Pager"


def listen(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)
    s.listen(16)
    return s


def accept_loop(sock, server, rights, badges):
    while True:
        conn, _ = sock.accept()
        badge = next(badges)
        args = (Endpoint(conn), badge, rights)
        threading.Thread(target=server.serve, args=args, daemon=True).start()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen")
    p.add_argument("--listen-denied")
    a = p.parse_args()
    schema = schema_mod.load()
    iface = schema.interfaces[SERVED]
    server = Server(Codec(schema), iface, ToyPager())
    if a.listen:
        import itertools

        badges = itertools.count(1)
        socks = [(listen(a.listen), iface.all_rights())]
        if a.listen_denied:
            socks.append((listen(a.listen_denied), 0))
        for s, rights in socks[1:]:
            args = (s, server, rights, badges)
            threading.Thread(target=accept_loop, args=args, daemon=True).start()
        print(f"python server: listening on {a.listen}", flush=True)
        accept_loop(socks[0][0], server, socks[0][1], badges)
        return 0
    wanted = os.environ.get("XSVM_INTERFACE", SERVED)
    if wanted != SERVED:
        print(f"python server: serves {SERVED} only, not {wanted}", file=sys.stderr)
        return 2
    fd = int(os.environ.get("XSVM_ENDPOINT_FD", "3"))
    badge = int(os.environ.get("XSVM_BADGE", "1"))
    rights = int(os.environ.get("XSVM_RIGHTS", str(iface.all_rights())))
    generation = int(os.environ.get("XSVM_GENERATION", "1"))
    server.serve(Endpoint.from_fd(fd), badge, rights, generation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
