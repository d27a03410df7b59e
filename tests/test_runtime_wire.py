"""The runtime on the wire: one write per response, and HTTP/1.1 corners that this must not break
(pipelining, HEAD without a body, ``Expect: 100-continue``, ``Connection: close``). Raw sockets, real process."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import sys
import time
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


# -- the fast path for predictions (POST /invocations, POST /v2/models/{name}/infer past ASGI) -------------------


def _v2_request(name: bytes = b"iris", extra: bytes = b"") -> bytes:
    body = json.dumps(
        {
            "inputs": [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [v]}
                for c, v in zip(COLUMNS, [5.1, 3.5, 1.4, 0.2], strict=True)
            ]
        }
    ).encode()
    return (
        b"POST /v2/models/"
        + name
        + b"/infer HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _in_flight(rp: RuntimeProcess) -> float:
    """Requests in flight, not counting the scrape that asks."""
    with _connect(rp) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        text = _read_all(sock).decode()
    line = next(x for x in text.splitlines() if x.startswith("modeldeck_requests_in_flight "))
    return float(line.split()[1]) - 1


def test_pipelined_predictions_mixed_with_other_routes_are_answered_in_order(iris_runtime: RuntimeProcess) -> None:
    """Predictions take the fast path, the others ASGI; on one connection they still answer in request order."""
    with _connect(iris_runtime) as sock:
        sock.sendall(
            _request()
            + _v2_request()
            + b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"
            + _request(b'{"dataframe_split": {"columns": ["nope"], "data": [[1]]}}')
            + _v2_request(b"other-model")
            + b"HEAD /ping HTTP/1.1\r\nHost: t\r\n\r\n"
            + _request()
            + _request(extra=b"Connection: close\r\n")
        )
        data = _read_all(sock)
    parts = data.split(b"HTTP/1.1 ")[1:]
    assert [p[:3] for p in parts] == [b"200", b"200", b"200", b"400", b"404", b"405", b"200", b"200"], data
    bodies = [p.split(b"\r\n\r\n", 1)[1] for p in parts]
    assert json.loads(bodies[0]) == {"predictions": [0]} == json.loads(bodies[6]) == json.loads(bodies[7])
    assert json.loads(bodies[1])["model_name"] == "iris"
    assert json.loads(bodies[3])["error_code"] == "BAD_REQUEST"
    assert json.loads(bodies[4])["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert bodies[5] == b""
    assert b"connection: close" in parts[7].lower() and b"connection: close" not in parts[6].lower()


def test_a_prediction_split_over_many_tcp_segments_is_answered_once(iris_runtime: RuntimeProcess) -> None:
    request = _request()
    cuts = [0, 7, 40, len(request) - len(BODY) - 1, len(request) - len(BODY) + 5, len(request) - 3, len(request)]
    with _connect(iris_runtime) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for a, b in itertools.pairwise(cuts):
            sock.sendall(request[a:b])
            time.sleep(0.02)  # separate segments, each read on its own by the server
        buffer = bytearray()
        head, body = _read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"predictions": [0]}
        sock.sendall(_request(extra=b"Connection: close\r\n"))  # the connection is still in step
        rest = bytes(buffer) + _read_all(sock)
    assert rest.startswith(b"HTTP/1.1 200") and rest.endswith(b'{"predictions": [0]}')


def test_chunked_and_large_prediction_bodies_are_answered_like_small_ones(iris_runtime: RuntimeProcess) -> None:
    """Bodies without a declared length or above uvicorn's 64 KiB read buffer go through ASGI: same answers."""
    rows = 3000  # ~75 KB of JSON
    large = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]] * rows}}).encode()
    assert len(large) > 65536
    chunked = (
        b"POST /invocations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(BODY[i : i + 10]), BODY[i : i + 10]) for i in range(0, len(BODY), 10))
        + b"0\r\n\r\n"
    )
    with _connect(iris_runtime) as sock:
        buffer = bytearray()
        sock.sendall(chunked)
        head, body = _read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"predictions": [0]}
        sock.sendall(_request(large))
        head, body = _read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"predictions": [0] * rows}
        sock.sendall(_request())
        head, body = _read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"predictions": [0]}


def test_prediction_over_the_body_limit_is_refused_with_413(tmp_path: Path, runtime_processes: list) -> None:
    from tests.fixtures.runtime import make_iris_bundle, start_runtime

    rp = start_runtime(make_iris_bundle(tmp_path / "iris").path, tmp_path, config={"max_body_bytes": 200})
    runtime_processes.append(rp)
    big = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]] * 10}}).encode()
    with _connect(rp) as sock:
        buffer = bytearray()
        sock.sendall(_request(big))
        head, body = _read_response(sock, buffer)
        assert head.startswith(b"HTTP/1.1 413") and json.loads(body)["error_code"] == "REQUEST_LIMIT_EXCEEDED"
        sock.sendall(_request(extra=b"Connection: close\r\n"))
        rest = bytes(buffer) + _read_all(sock)
    assert rest.startswith(b"HTTP/1.1 200")


def test_keep_alive_predictions_then_close_and_http10(iris_runtime: RuntimeProcess) -> None:
    with _connect(iris_runtime) as sock:
        buffer = bytearray()
        for _ in range(3):
            sock.sendall(_request())
            head, body = _read_response(sock, buffer)
            assert head.startswith(b"HTTP/1.1 200") and b"connection:" not in head.lower()
        sock.sendall(_request(extra=b"Connection: close\r\n"))
        head, body = _read_response(sock, buffer)
        assert b"connection: close" in head.lower() and json.loads(body) == {"predictions": [0]}
        assert sock.recv(65536) == b""  # the server closed it
    with _connect(iris_runtime) as sock:
        sock.sendall(_request().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        data = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data.lower()


def test_client_leaving_mid_prediction_is_not_answered_and_not_left_in_flight(iris_runtime: RuntimeProcess) -> None:
    request = _request()
    for cut in (len(request) - len(BODY) // 2, len(request) - len(BODY) - 4):  # mid-body, mid-head
        with _connect(iris_runtime) as sock:
            sock.sendall(request[:cut])
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while _in_flight(iris_runtime) != 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _in_flight(iris_runtime) == 0
    with _connect(iris_runtime) as sock:
        sock.sendall(_request(extra=b"Connection: close\r\n"))
        assert _read_all(sock).endswith(b'{"predictions": [0]}')


def test_sigterm_answers_the_prediction_in_flight_and_closes_its_connection(
    tmp_path: Path, runtime_processes: list
) -> None:
    from tests.fixtures.runtime import make_slow_bundle, start_runtime

    rp = start_runtime(make_slow_bundle(tmp_path / "slow"), tmp_path, config={"inference_in_thread": True})
    runtime_processes.append(rp)
    rows = 2000  # ~0.2-0.6 s of onnxruntime
    body = json.dumps({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]] * rows}}).encode()
    with _connect(rp) as sock:
        sock.settimeout(60)
        sock.sendall(_request(body))
        deadline = time.monotonic() + 30
        while _in_flight(rp) < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        rp.proc.send_signal(signal.SIGTERM)
        data = _read_all(sock)  # the answer, then the server's close
    assert rp.proc.wait(timeout=60) == 0
    head, _, answer = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert len(json.loads(answer)["predictions"]) == rows


def test_the_installed_uvicorn_has_what_the_prediction_fast_path_relies_on() -> None:
    """Otherwise every request silently takes the slower ASGI path (the fast path fails closed)."""
    from modeldeck.core.runtime import http_protocol

    assert http_protocol.FAST_PATH_SUPPORTED


def test_a_long_pipeline_of_predictions_is_answered_in_full(iris_runtime: RuntimeProcess) -> None:
    """Behind a request still being answered (here one through ASGI), the predictions queue up; each starts once
    the one before it is answered, and hundreds of them must not nest one answer inside the other."""
    n = 400
    with _connect(iris_runtime) as sock:
        sock.settimeout(30)
        sock.sendall(
            b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n"
            + _request() * n
            + b"GET /ping HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        data = _read_all(sock)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == n + 2 and data.count(b'{"predictions": [0]}') == n
