"""A caller of one interface over one endpoint (docs/ipc.md "Checking an
answer", "Request ids")."""

import itertools
import os
import socket

from .codec import Refusal
from .transport import Closed


class CallError(Exception):
    """Why a call got no reply: `cls` is protocol, denied or server (an
    error frame; `name` is its code's name, `missing` the rights a denial
    names), or bad (an answer that is not a valid one), closed, timeout."""

    def __init__(self, cls, name, missing=0):
        super().__init__(f"{cls} {name}" + (f" (missing {missing:#x})" if missing else ""))
        self.cls = cls
        self.name = name
        self.missing = missing


class Client:
    def __init__(self, codec, iface, endpoint, timeout=10.0):
        self.codec = codec
        self.iface = iface
        self.ep = endpoint
        self.timeout = timeout
        self.ids = itertools.count(1)

    def request_frame(self, name, fields, request_id, kind="request"):
        m = self.iface.by_name[name]
        payload = self.codec.encode_fields(m.request["fields"], fields)
        k = self.codec.s.kinds[kind]
        handles = m.request["handles"]
        return self.codec.frame(self.iface.id, m.opcode, k, handles, request_id, payload)

    def call(self, name, fields=None, fds=()):
        """The reply's fields and descriptors, or CallError."""
        m = self.iface.by_name[name]
        if fields is None:
            fields = {}
        rid = next(self.ids)
        self.ep.send(self.request_frame(name, fields, rid), fds)
        return self.answer(rid, m)

    def notify(self, name, fields):
        self.ep.send(self.request_frame(name, fields, 0, "notification"))

    def receive(self):
        try:
            return self.ep.recv(self.timeout)
        except socket.timeout:
            raise CallError("timeout", "no answer within the deadline")
        except Closed:
            raise CallError("closed", "the endpoint closed")

    def answer(self, rid, m):
        """Waits for the answer to call `rid` of message `m` and checks it."""
        rx = self.receive()
        try:
            return self.check(rx, rid, m.opcode, m)
        except Refusal as e:
            rx.close_fds()
            raise CallError("bad", f"{e.code}: {e}")

    def check(self, rx, rid, opcode, m=None):
        if rx.truncated:
            raise Refusal("Oversized", "answer longer than a frame")
        if rx.ctrunc:
            raise Refusal("WrongHandleCount", "more descriptors than a frame carries")
        h, payload = self.codec.parse(rx.data, len(rx.fds))
        if h.interface != self.iface.id:
            raise Refusal("UnknownInterface", f"interface {h.interface}")
        if h.request_id != rid:
            raise Refusal("BadKind", f"answers request id {h.request_id:#x}, not {rid:#x}")
        if h.opcode != opcode:
            raise Refusal("UnknownOpcode", f"answers opcode {h.opcode}, not {opcode}")
        if h.kind == self.codec.s.kinds["error"]:
            if rx.fds:
                raise Refusal("WrongHandleCount", "an error frame with handles")
            cls, name, missing = self.codec.decode_error(payload, self.iface)
            raise CallError(cls, name, missing)
        if h.kind != self.codec.s.kinds["reply"] or m is None or m.reply is None:
            raise Refusal("BadKind", f"kind {h.kind}")
        if len(rx.fds) != m.reply["handles"]:
            declared = m.reply["handles"]
            raise Refusal("WrongHandleCount", f"{len(rx.fds)} handles, {declared} declared")
        return self.codec.decode_fields(m.reply["fields"], payload), rx.fds


def close_all(fds):
    for fd in fds:
        os.close(fd)
