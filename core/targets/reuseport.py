"""Steering a shared ``SO_REUSEPORT`` port during a start-first switch (Linux).

Two runtimes listening on one port with ``SO_REUSEPORT`` split new connections by hash.
The runtime only starts listening on a shared port once its model is warm, so a loading
release takes no public connections; but hash sharing still loses the connections waiting
in the old runtime's accept queue, which are reset when it closes its listener on drain,
and it gives the new release traffic before the deployer has seen it answer the example
on its private port. The kernel lets a classic-BPF program on the
port's reuseport group choose the socket instead (``SO_ATTACH_REUSEPORT_CBPF``); the
program returns an index into the group, in join order, falling back to the hash when
the index is out of range. So during a switch:

1. before starting the new release, attaches ``return 0`` -- every new connection goes to
   the oldest socket, the serving release (the new one joins as index 1);
2. once the new release passed its health gate, attaches ``return 1`` -- new connections
   go to it, and waits until the old socket's accept queue is empty;
3. only then drains the old release. After it closes, the new socket becomes index 0.

Getting at the group needs a duplicate of a member socket, taken from the serving
runtime with ``pidfd_getfd(2)`` (Linux >= 5.6, ptrace permission over that process). The
runtime's own supervisor -- its parent, which Yama's default ``ptrace_scope=1`` allows --
does it on the deployer's signal (SIGUSR1: steps 1, SIGUSR2: steps 2-3). Where that is not
possible, :meth:`SharedPort.borrow` returns None and the switch falls back to plain hash
sharing (correct, but a few requests may see 503 or a reset while switching).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import struct
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

_SYS_PIDFD_OPEN = 434  # same number on every Linux architecture (the generic syscall table)
_SYS_PIDFD_GETFD = 438
_SO_ATTACH_REUSEPORT_CBPF = 51
_BPF_RET_K = 0x06
_TCP_LISTEN = "0A"  # in /proc/net/tcp
_TCP_STATE_LISTEN = 10  # in struct tcp_info


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _listening_inodes(port: int) -> dict[int, int]:
    """Socket inode -> accept-queue length for every TCP socket listening on ``port``."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) != port:
                continue
            found[int(fields[9])] = int(fields[4].split(":")[1], 16)
    return found


class SharedPort:
    """A borrowed duplicate of one listening socket of a ``SO_REUSEPORT`` group."""

    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.port = port
        self.inode = os.fstat(sock.fileno()).st_ino

    @classmethod
    def borrow(cls, pid: int, port: int) -> SharedPort | None:
        """Duplicate the socket that process ``pid`` listens with on ``port``; None if not possible."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            pidfd = libc.syscall(_SYS_PIDFD_OPEN, pid, 0)
            if pidfd < 0:
                raise OSError(ctypes.get_errno(), "pidfd_open")
            try:
                for entry in Path(f"/proc/{pid}/fd").iterdir():
                    try:
                        if not os.readlink(entry).startswith("socket:["):
                            continue
                    except OSError:
                        continue
                    fd = libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(entry.name), 0)
                    if fd < 0:
                        raise OSError(ctypes.get_errno(), "pidfd_getfd")
                    sock = socket.socket(fileno=fd)
                    try:
                        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                        if listening and sock.type == socket.SOCK_STREAM and sock.getsockname()[1] == port:
                            return cls(sock, port)
                    except OSError:
                        pass
                    sock.close()
            finally:
                os.close(pidfd)
            log.debug("process %d has no socket listening on port %d", pid, port)
            return None
        except (OSError, ValueError, AttributeError) as exc:
            log.info("cannot steer port %d during the switch (falling back to hash sharing): %s", port, exc)
            return None

    def steer(self, index: int) -> bool:
        """Send every new connection on the port to the group member ``index`` (join order)."""
        filters = (_SockFilter * 1)(_SockFilter(_BPF_RET_K, 0, 0, index))
        prog = _SockFprog(1, filters)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, bytes(prog))
        except OSError as exc:
            log.info("cannot attach a reuseport program to port %d: %s", self.port, exc)
            return False
        return True

    def accept_queue(self) -> int | None:
        """Connections waiting in this socket's accept queue (None if it is no longer listening).

        Read with ``TCP_INFO`` (``tcpi_unacked`` is the accept backlog of a listening socket),
        falling back to ``/proc/net/tcp``, which is slow when thousands of connections linger.
        """
        try:
            info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            state, unacked = info[0], struct.unpack_from("I", info, 24)[0]
            return int(unacked) if state == _TCP_STATE_LISTEN else None
        except (OSError, AttributeError, struct.error):
            return _listening_inodes(self.port).get(self.inode)

    def wait_until_drained(self, timeout: float = 2.0, settle: float = 0.1) -> None:
        """Wait (bounded) until this socket's accept queue is empty, then ``settle`` seconds more
        so that the owning server has read the requests of the connections it just accepted."""
        deadline = time.monotonic() + timeout
        while (self.accept_queue() or 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(settle)

    def close(self) -> None:
        self.sock.close()
