"""The serve loop (docs/ipc.md "Checking a received frame"): every frame is
checked in the documented order; a handler sees only decoded requests.
Control frames ("Control frames and restarts"): a server started as
generation 2 or later announces it before anything else; a `Restarted`
from the caller ends the caller's session (`handler.disconnected`), and
the endpoint stays open."""

import os
import sys

from .codec import Refusal
from .transport import Closed


class ServerError(Exception):
    """The handler's own typed error: `name` is a code of the interface's
    error enum."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


class Server:
    def __init__(self, codec, iface, handler):
        self.codec = codec
        self.iface = iface
        self.handler = handler

    def serve(self, endpoint, badge, rights, generation=1):
        """Serves `endpoint` until its peer closes it; as generation 2 or
        later, announces that first."""
        if generation > 1:
            try:
                endpoint.send(self.restarted(generation))
            except Closed:
                self.handler.disconnected(badge)
                return
        while True:
            try:
                rx = endpoint.recv()
            except Closed:
                self.handler.disconnected(badge)
                return
            out = self.dispatch(rx, badge, rights)
            if out is not None:
                frame, fds = out
                try:
                    endpoint.send(frame, fds)
                except Closed:
                    self.handler.disconnected(badge)
                    return
                finally:
                    for fd in fds:
                        os.close(fd)

    def restarted(self, generation):
        return self.codec.control_frame(self.iface.id, "Restarted", {"generation": generation})

    def control(self, rx, h, payload, badge):
        """A control frame: acted on when well-formed, never answered."""
        try:
            name, fields = self.codec.decode_control(h, payload)
        except Refusal as e:
            print(f"xsvm server: dropped a malformed control frame: {e}", file=sys.stderr)
            rx.close_fds()
            return None
        if name == "Restarted":
            # The caller's process restarted: what the old one held is nobody's.
            print(f"xsvm server: caller {badge} restarted (generation {fields['generation']})",
                  file=sys.stderr)
            self.handler.disconnected(badge)
        return None

    def error(self, rx, cls, code, missing=0):
        data = rx.data
        opcode = int.from_bytes(data[8:10], "little") if len(data) >= 10 else 0
        rid = int.from_bytes(data[16:24], "little") if len(data) >= 24 else 0
        payload = self.codec.error_payload(cls, code, missing)
        kind = self.codec.s.kinds["error"]
        return self.codec.frame(self.iface.id, opcode, kind, 0, rid, payload), []

    def refuse(self, rx, name):
        rx.close_fds()
        return self.error(rx, "protocol", self.codec.s.protocol_errors[name])

    def dispatch(self, rx, badge, rights):
        """The answer to one received frame (frame, fds), or None."""
        kinds = self.codec.s.kinds
        # 1. The datagram and its descriptors.
        if rx.truncated:
            return self.refuse(rx, "Oversized")
        if rx.ctrunc:
            return self.refuse(rx, "WrongHandleCount")
        # 2. The header.
        try:
            h, payload = self.codec.parse(rx.data, len(rx.fds))
        except Refusal as e:
            return self.refuse(rx, e.code)
        # 3. The endpoint's interface.
        if h.interface != self.iface.id:
            return self.refuse(rx, "UnknownInterface")
        # 4. Only requests and notifications reach a server; control frames
        # are news about the endpoint.
        if h.kind in (kinds["reply"], kinds["error"]):
            return self.refuse(rx, "BadKind")
        if h.kind == kinds["control"]:
            return self.control(rx, h, payload, badge)
        one_way = h.kind == kinds["notification"]
        # 5. The payload.
        try:
            m = self.iface.by_opcode.get(h.opcode)
            if m is None:
                raise Refusal("UnknownOpcode")
            if len(rx.fds) != m.request["handles"]:
                raise Refusal("WrongHandleCount")
            fields = self.codec.decode_fields(m.request["fields"], payload)
        except Refusal as e:
            if one_way:
                rx.close_fds()
                return None
            return self.refuse(rx, e.code)
        # 6. Kind against message.
        if m.one_way != one_way:
            if one_way:
                rx.close_fds()
                return None
            return self.refuse(rx, "BadKind")
        # 7. Rights.
        missing = m.rights & ~rights
        if missing:
            rx.close_fds()
            return None if one_way else self.error(rx, "denied", 0, missing)
        # 8. The handler.
        try:
            reply, fds = self.handler.handle(badge, m.name, fields, rx.fds)
        except ServerError as e:
            if one_way:
                return None
            return self.error(rx, "server", self.iface.errors[e.name])
        except Exception as e:  # a bug in the handler must not end the server
            print(f"xsvm server: {m.name} failed: {e!r}", file=sys.stderr)
            if one_way:
                return None
            code = self.iface.errors.get("Host", min(self.iface.errors.values()))
            return self.error(rx, "server", code)
        if one_way:
            return None
        out = self.codec.encode_fields(m.reply["fields"], reply)
        rid = h.request_id
        return self.codec.frame(self.iface.id, m.opcode, kinds["reply"], len(fds), rid, out), fds
