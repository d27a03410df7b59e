"""The health gate's own HTTP/1.1 exchange (plain http:// without http.client): answers as a runtime sends
them, and the whole exchange bounded by its timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from modeldeck.core.targets.health import request_json


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """Serve one connection with a handler that writes raw bytes; yields a function that returns its URL."""
    servers: list[socket.socket] = []

    def start(handler: Callable[[socket.socket], None]) -> str:
        srv = socket.create_server(("127.0.0.1", 0))
        servers.append(srv)

        def run() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                handler(conn)

        threading.Thread(target=run, daemon=True).start()
        return f"http://127.0.0.1:{srv.getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


def test_a_chunked_answer_is_read_whole(raw_server) -> None:
    url = raw_server(
        lambda c: c.sendall(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n')
    )
    answer = request_json("GET", url + "/health", timeout=5)
    assert (answer.status, answer.body) == (200, {"a": 1})


def test_an_answer_with_content_length_returns_without_waiting_for_the_server_to_close(raw_server) -> None:
    done = threading.Event()

    def answer_and_linger(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}")
        done.wait(5)

    url = raw_server(answer_and_linger)
    start = time.monotonic()
    answer = request_json("GET", url + "/health", timeout=5)
    done.set()
    assert (answer.status, answer.body, answer.ok) == (503, {}, False)
    assert time.monotonic() - start < 4


def test_a_server_trickling_its_answer_is_cut_off_at_the_timeout(raw_server) -> None:
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        with contextlib.suppress(OSError):  # the client hangs up first
            while not stop.wait(0.05):
                conn.sendall(b" ")

    url = raw_server(trickle)
    start = time.monotonic()
    with pytest.raises(OSError, match="did not answer within"):
        request_json("GET", url + "/health", timeout=0.5)
    stop.set()
    assert time.monotonic() - start < 2


def test_a_reply_that_is_not_http_is_a_transport_error(raw_server) -> None:
    url = raw_server(lambda c: c.sendall(b"SSH-2.0-OpenSSH\r\n\r\n"))
    with pytest.raises(OSError, match="bad HTTP"):
        request_json("GET", url + "/health", timeout=5)
