"""The runtime on the wire: one write per response, and HTTP/1.1 corners that this must not break
(pipelining, HEAD without a body, ``Expect: 100-continue``, ``Connection: close``). Raw sockets, real process."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from tests.fixtures.runtime import RuntimeProcess

pytestmark = pytest.mark.server

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
BODY = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}}).encode()


def _request(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _connect(rp: RuntimeProcess) -> socket.socket:
    host, port = rp.ready["binds"][0].rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytes, bytes]:
    """One response (head, body) off a keep-alive connection; ``buffer`` carries bytes of the next one."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buffer[:] = rest[length:]
    return head, rest[:length]


def _write_syscalls(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/PID/io")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts syscalls through /proc")
def test_each_response_leaves_in_one_write(iris_runtime: RuntimeProcess) -> None:
    """uvicorn writes head and body separately; the runtime's protocol sends them together (one syscall)."""
    n = 50
    buffer = bytearray()
    with _connect(iris_runtime) as sock:
        sock.sendall(_request())
        _read_response(sock, buffer)  # warm: the connection's first request
        before = _write_syscalls(iris_runtime.proc.pid)
        for _ in range(n):
            sock.sendall(_request())
            head, body = _read_response(sock, buffer)
            assert head.startswith(b"HTTP/1.1 200"), head
            assert json.loads(body) == {"predictions": [0]}
        writes = _write_syscalls(iris_runtime.proc.pid) - before
    assert writes < 1.5 * n, f"{writes} write syscalls for {n} responses"


def test_pipelined_requests_are_answered_in_order_with_heads_and_bodies_intact(iris_runtime: RuntimeProcess) -> None:
    with _connect(iris_runtime) as sock:
        sock.sendall(
            _request()
            + b"HEAD /ping HTTP/1.1\r\nHost: t\r\n\r\n"
            + b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n"
            + _request(b"{not json")
            + b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    parts = data.split(b"HTTP/1.1 ")[1:]
    statuses = [p[:3] for p in parts]
    assert statuses == [b"200", b"405", b"200", b"400", b"200"], data
    assert parts[0].endswith(b'\r\n\r\n{"predictions": [0]}')
    assert parts[1].endswith(b"\r\n\r\n")  # HEAD: a head only, sent although no body write follows
    assert json.loads(parts[2].split(b"\r\n\r\n", 1)[1])["model_name"]
    assert json.loads(parts[3].split(b"\r\n\r\n", 1)[1])["error_code"] == "BAD_REQUEST"
    assert b"connection: close" in parts[4].lower() and parts[4].endswith(b"\r\n\r\n\n")


def test_expect_100_continue_gets_an_interim_response_then_the_prediction(iris_runtime: RuntimeProcess) -> None:
    with _connect(iris_runtime) as sock:
        request = _request(extra=b"Expect: 100-continue\r\n")
        head, _, body = request.partition(b"\r\n\r\n")
        sock.sendall(head + b"\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(65536)
            assert chunk
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        head, answer = _read_response(sock, bytearray())
    assert head.startswith(b"HTTP/1.1 200") and json.loads(answer) == {"predictions": [0]}
