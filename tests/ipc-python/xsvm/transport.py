"""The host transport (docs/ipc.md "Transport"): one frame per
SOCK_SEQPACKET datagram, descriptors as one SCM_RIGHTS message."""

import array
import os
import socket

MAX_FRAME = 4096
MAX_HANDLES = 4


class Received:
    def __init__(self, data, fds, truncated, ctrunc):
        self.data = data
        self.fds = fds
        self.truncated = truncated
        self.ctrunc = ctrunc

    def close_fds(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []


class Closed(Exception):
    """The peer closed its end."""


class Endpoint:
    def __init__(self, sock):
        self.sock = sock

    @classmethod
    def from_fd(cls, fd):
        return cls(socket.socket(fileno=fd))

    def send(self, frame, fds=()):
        fds = list(fds)
        try:
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                self.sock.sendmsg([frame], anc)
            else:
                self.sock.sendmsg([frame])
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed() from e

    def recv(self, timeout=None):
        """The next frame; `socket.timeout` after `timeout` seconds; Closed
        when the peer closed."""
        self.sock.settimeout(timeout)
        # One byte more than a frame, room for exactly MAX_HANDLES descriptors.
        space = socket.CMSG_SPACE(MAX_HANDLES * array.array("i").itemsize)
        try:
            data, anc, flags, _ = self.sock.recvmsg(MAX_FRAME + 1, space, socket.MSG_CMSG_CLOEXEC)
        except ConnectionResetError as e:
            raise Closed() from e
        fds = []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(payload[: len(payload) - len(payload) % a.itemsize])
                fds.extend(a)
        if not data and not fds and self._hung_up():
            # An empty datagram with no hang-up is a (malformed) frame.
            raise Closed()
        truncated = bool(flags & socket.MSG_TRUNC) or len(data) > MAX_FRAME
        return Received(data, fds, truncated, bool(flags & socket.MSG_CTRUNC))

    def _hung_up(self):
        """Whether the peer closed its end (a zero-length read alone does
        not tell a close from an empty datagram)."""
        import select
        p = select.poll()
        p.register(self.sock, select.POLLRDHUP)
        return any(ev & (select.POLLHUP | select.POLLRDHUP | select.POLLERR)
                   for _, ev in p.poll(0))

    def close(self):
        self.sock.close()
