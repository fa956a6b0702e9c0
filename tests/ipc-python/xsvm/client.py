"""A caller of one interface over one endpoint (docs/ipc.md "Checking an
answer", "Request ids", "Control frames and restarts").

Several calls may be pending at once (`start`, then `result`). When the
server announces a restart (`Restarted`), every call still waiting fails
with `PeerRestarted`; `result` sends an idempotent call that passes no
handles again (a few times at most), and answers that arrive later for a
failed call are dropped."""

import itertools
import os
import socket

from .codec import Refusal
from .transport import Closed

# Times an idempotent call is sent again after restarts.
RESENDS = 3


class CallError(Exception):
    """Why a call got no reply: `cls` is protocol, denied or server (an
    error frame; `name` is its code's name, `missing` the rights a denial
    names), restarted (`PeerRestarted`: the server restarted before
    answering; `generation` is its new one), or bad (an answer that is not
    a valid one), closed, timeout."""

    def __init__(self, cls, name, missing=0, generation=0):
        super().__init__(f"{cls} {name}" + (f" (missing {missing:#x})" if missing else "")
                         + (f" (generation {generation})" if generation else ""))
        self.cls = cls
        self.name = name
        self.missing = missing
        self.generation = generation


class Pending:
    """A call sent and not yet answered."""

    def __init__(self, name, fields, fds, rid):
        self.name = name
        self.fields = fields
        self.fds = fds
        self.rid = rid


class Client:
    def __init__(self, codec, iface, endpoint, timeout=10.0, first_id=1):
        self.codec = codec
        self.iface = iface
        self.ep = endpoint
        self.timeout = timeout
        self.ids = itertools.count(first_id)
        # Idempotent calls sent again after a restart, so far.
        self.resent = 0
        # The server's generation as last announced (0: never).
        self.generation = 0
        self.waiting = set()  # ids of calls sent and not answered
        self.arrived = {}  # id -> a received answer not yet taken
        self.restarted = {}  # id -> the generation whose announcement failed it
        self.given_up = set()  # ids whose late answers are dropped

    def request_frame(self, name, fields, request_id, kind="request"):
        m = self.iface.by_name[name]
        payload = self.codec.encode_fields(m.request["fields"], fields)
        k = self.codec.s.kinds[kind]
        handles = m.request["handles"]
        return self.codec.frame(self.iface.id, m.opcode, k, handles, request_id, payload)

    def start(self, name, fields=None, fds=()):
        """Sends a call; its answer is taken with `result`."""
        fields = {} if fields is None else fields
        rid = next(self.ids)
        self.waiting.add(rid)
        self.ep.send(self.request_frame(name, fields, rid), fds)
        return Pending(name, fields, list(fds), rid)

    def result(self, p):
        """The reply's fields and descriptors, or CallError. An idempotent
        call without handles caught by a restart is sent again."""
        m = self.iface.by_name[p.name]
        for tries in itertools.count():
            try:
                return self.answer(p.rid, m)
            except CallError as e:
                if e.cls != "restarted" or not m.idempotent or p.fds or tries >= RESENDS:
                    raise
            self.resent += 1
            p = self.start(p.name, p.fields)

    def call(self, name, fields=None, fds=()):
        """The reply's fields and descriptors, or CallError."""
        return self.result(self.start(name, fields, fds))

    def notify(self, name, fields):
        self.ep.send(self.request_frame(name, fields, 0, "notification"))

    def announce_restart(self, generation):
        """Tells the server this caller's process restarted as `generation`."""
        frame = self.codec.control_frame(self.iface.id, "Restarted", {"generation": generation})
        self.ep.send(frame)

    def receive(self):
        try:
            return self.ep.recv(self.timeout)
        except socket.timeout:
            raise CallError("timeout", "no answer within the deadline")
        except Closed:
            raise CallError("closed", "the endpoint closed")

    def answer(self, rid, m):
        """Waits for the answer to call `rid` of message `m` and checks it."""
        try:
            rx = self.next_for(rid)
        except CallError:
            self.give_up(rid)
            raise
        try:
            return self.check(rx, rid, m.opcode, m)
        except Refusal as e:
            rx.close_fds()
            raise CallError("bad", f"{e.code}: {e}")

    def give_up(self, rid):
        self.waiting.discard(rid)
        self.given_up.add(rid)

    def next_for(self, rid):
        """The frame that answers `rid`, sorting out what else arrives."""
        while True:
            if rid in self.arrived:
                self.waiting.discard(rid)
                return self.arrived.pop(rid)
            if rid in self.restarted:
                g = self.restarted.pop(rid)
                raise CallError("restarted", "PeerRestarted", generation=g)
            rx = self.receive()
            data = rx.data
            if len(data) > 10 and data[10] == self.codec.s.kinds["control"]:
                self.on_control(rx)
                continue
            other = int.from_bytes(data[16:24], "little") if len(data) >= 24 else None
            if other in self.given_up:
                self.given_up.discard(other)  # a late answer: dropped
                rx.close_fds()
            elif other in self.waiting and other != rid:
                self.arrived[other] = rx
            else:
                # Ours, or answers no call at all: `check` judges it.
                self.waiting.discard(rid)
                return rx

    def on_control(self, rx):
        """A control frame from the server; a malformed one, or one of
        another interface, is dropped."""
        try:
            h, payload = self.codec.parse(rx.data, len(rx.fds))
            if h.interface != self.iface.id:
                raise Refusal("UnknownInterface", f"interface {h.interface}")
            name, fields = self.codec.decode_control(h, payload)
        except Refusal:
            rx.close_fds()
            return
        if name == "Restarted":
            self.generation = fields["generation"]
            for rid in [r for r in self.waiting if r not in self.arrived]:
                self.waiting.discard(rid)
                self.given_up.add(rid)
                self.restarted[rid] = self.generation

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
