"""The health gate a new release must pass before it takes traffic, and a tiny HTTP/JSON client.

Stdlib only and every call has a finite timeout, so the SSH and Docker targets (and the GUI's
Try-it panel) can reuse it anywhere. Plain ``http://`` exchanges are a few lines over a socket
rather than ``http.client``, whose import (``email.parser`` and friends) cost the SSH agent
~0.05 CPU-s per deploy; ``https://`` uses ``http.client``. The gate is:
the runtime says it is ready (ready file or ``/health`` 200) within the start
period, ``/health`` answers 200, and -- if asked -- the bundle's input example
sent to ``/invocations`` comes back with one prediction per row.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modeldeck.core.errors import Cancelled, DeployError
from modeldeck.core.targets.base import HealthGate

log = logging.getLogger(__name__)
READY_POLL_S = 0.02  # how often the ready file is looked for while a runtime starts
MAX_ANSWER_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class HttpAnswer:
    """One HTTP exchange: status, parsed JSON body (or None) and raw text, and how long it took."""

    status: int
    body: Any
    text: str
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def request_json(method: str, url: str, body: Any = None, *, timeout: float = 5.0) -> HttpAnswer:
    """Send one request (JSON body if given) and return the answer.

    Raises :class:`OSError` (incl. timeouts and refused connections) for transport
    failures; the caller decides whether that is an error or a retry.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    payload = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Connection": "close"} if payload is not None else {}
    start = time.perf_counter()
    if parts.scheme == "https":
        status, raw = _https_exchange(parts.hostname, parts.port, method, path, payload, headers, url, timeout)
    else:
        status, raw = _http_exchange(parts.hostname, parts.port or 80, method, path, payload, url, timeout)
    elapsed = time.perf_counter() - start
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text) if text else None
    except json.JSONDecodeError:
        parsed = None
    return HttpAnswer(status, parsed, text, elapsed)


def _https_exchange(
    host: str, port: int | None, method: str, path: str, payload: bytes | None, headers: dict[str, str], url: str,
    timeout: float,
) -> tuple[int, bytes]:  # fmt: skip
    import http.client

    conn = http.client.HTTPSConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer from {url}: {exc}") from exc
    finally:
        conn.close()


def _http_exchange(
    host: str, port: int, method: str, path: str, payload: bytes | None, url: str, timeout: float
) -> tuple[int, bytes]:
    """One HTTP/1.1 exchange with ``Connection: close``: the whole exchange ends within ``timeout``.

    Raises :class:`OSError` for transport failures and malformed answers (like ``http.client``'s errors).
    """
    deadline = time.monotonic() + timeout
    name = f"[{host}]" if ":" in host else host
    head = [f"{method} {path} HTTP/1.1", f"Host: {name}:{port}", "Connection: close", "Accept-Encoding: identity"]
    if payload is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    elif method in ("POST", "PUT", "PATCH"):
        head.append("Content-Length: 0")
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (payload or b"")
    chunks: list[bytes] = []
    size = 0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{url} did not answer within {timeout:g} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"{url} did not answer within {timeout:g} s") from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise OSError(f"bad HTTP answer from {url}: over {MAX_ANSWER_BYTES} bytes")
            if _complete(b"".join(chunks)):
                break
    return _parse_answer(b"".join(chunks), url)


def _split_answer(raw: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """Status, headers (lower-case names) and the bytes after them; None until the head is complete."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = raw[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise OSError(f"bad HTTP status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return int(parts[1]), headers, raw[end + 4 :]


def _complete(raw: bytes) -> bool:
    """Whether ``raw`` holds the whole answer (by Content-Length or the last chunk), so no wait for EOF is needed."""
    try:
        split = _split_answer(raw)
    except OSError:
        return True  # let the parser say what is wrong
    if split is None:
        return False
    _, headers, rest = split
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return rest.endswith(b"0\r\n\r\n")
    length = headers.get("content-length")
    return length is not None and length.isdigit() and len(rest) >= int(length)


def _parse_answer(raw: bytes, url: str) -> tuple[int, bytes]:
    try:
        split = _split_answer(raw)
        if split is None:
            raise OSError("the connection closed before the answer's headers ended")
        status, headers, rest = split
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                line, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    raise OSError("a chunked answer ended early")
                n = int(line.split(b";", 1)[0].strip() or b"x", 16)
                if n == 0:
                    break
                if len(rest) < n + 2:
                    raise OSError("a chunked answer ended early")
                body += rest[:n]
                rest = rest[n + 2 :]
            return status, body
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or len(rest) < int(length):
                raise OSError("the answer is shorter than its Content-Length")
            return status, rest[: int(length)]
        return status, rest
    except (OSError, ValueError) as exc:
        raise OSError(f"bad HTTP answer from {url}: {exc}") from exc


def is_healthy(base_url: str, *, timeout: float = 1.0) -> bool:
    """True if ``GET base_url/health`` answers 200 within ``timeout``."""
    try:
        return request_json("GET", base_url.rstrip("/") + "/health", timeout=timeout).status == 200
    except (OSError, ValueError):
        return False


def example_request(example: Any) -> dict[str, Any]:
    """The ``/invocations`` body for a bundle's input example (accepts the bare split form too)."""
    if isinstance(example, dict) and any(k in example for k in ("dataframe_split", "inputs", "instances")):
        return example
    if isinstance(example, dict) and "columns" in example and "data" in example:
        return {"dataframe_split": example}
    if isinstance(example, list):
        return {"inputs": example}
    raise DeployError("the bundle's input example is not in MLflow dataframe_split or inputs form")


def example_rows(request: dict[str, Any]) -> int | None:
    """How many rows the request holds (None if it cannot tell)."""
    split = request.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("data"), list):
        return len(split["data"])
    for key in ("inputs", "instances"):
        value = request.get(key)
        if isinstance(value, list):
            return len(value)
    return None


def load_example(bundle_dir: Path, example_file: str | None) -> dict[str, Any] | None:
    """The bundle's input example as an ``/invocations`` body, or None if the bundle has none."""
    if not example_file:
        return None
    path = Path(bundle_dir) / example_file
    if not path.is_file():
        return None
    try:
        return example_request(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise DeployError(f"cannot read the bundle's input example {path}: {exc}") from exc


def wait_for_ready_file(
    path: Path,
    gate: HealthGate,
    *,
    alive: Callable[[], bool],
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Wait up to ``gate.start_period_s`` for the runtime's ready file and return its JSON.

    Fails early (:class:`DeployError`) if ``alive()`` turns False -- the process died
    while loading -- and raises :class:`Cancelled` as soon as ``cancel`` is set.
    """
    deadline = time.monotonic() + gate.start_period_s
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    return data
            except (OSError, ValueError):
                pass  # being replaced right now; look again
        if not alive():
            raise DeployError("the new runtime exited before it was ready")
        if time.monotonic() >= deadline:
            raise DeployError(f"the new runtime was not ready within {gate.start_period_s:g} s")
        # A stat, not a request: polled more often than the gate's interval (which paces the HTTP checks);
        # a 0.2 s poll left ~0.1 s of slack in every switch.
        pause = min(gate.interval_s, READY_POLL_S)
        if cancel is not None:
            cancel.wait(pause)
        else:
            time.sleep(pause)


def check_release(
    base_url: str,
    gate: HealthGate,
    *,
    example: dict[str, Any] | None,
    expect_sha256: str | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Run the gate's HTTP checks against one runtime (its private port); return a one-line summary.

    ``/health`` must answer 200 (``gate.retries`` tries, ``gate.interval_s`` apart);
    ``/version`` must name ``expect_sha256`` (proves we talk to the new process);
    the example must come back as 200 with one prediction per row.
    Raises :class:`DeployError` saying which check failed.
    """
    base = base_url.rstrip("/")
    last = "no answer"
    for attempt in range(max(gate.retries, 1)):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        try:
            answer = request_json("GET", base + "/health", timeout=gate.timeout_s)
            if answer.status == 200:
                break
            last = f"HTTP {answer.status}"
        except OSError as exc:
            last = str(exc)
        if attempt + 1 < gate.retries:
            time.sleep(gate.interval_s)
    else:
        raise DeployError(f"health check failed: /health {last}")
    if expect_sha256:
        try:
            version = request_json("GET", base + "/version", timeout=gate.timeout_s)
        except OSError as exc:
            raise DeployError(f"health check failed: /version: {exc}") from exc
        got = version.body.get("bundle_sha256") if isinstance(version.body, dict) else None
        if got is not None and got != expect_sha256:
            raise DeployError(f"health check failed: the runtime serves bundle {str(got)[:12]}…, not the new one")
    if not gate.check_example or example is None:
        return "healthy"
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    try:
        answer = request_json("POST", base + "/invocations", example, timeout=gate.timeout_s)
    except OSError as exc:
        raise DeployError(f"the input example got no answer: {exc}") from exc
    if answer.status != 200:
        detail = answer.body.get("message") or answer.body.get("error") if isinstance(answer.body, dict) else None
        raise DeployError(f"the input example failed: HTTP {answer.status}: {detail or answer.text[:200]}")
    predictions = answer.body.get("predictions") if isinstance(answer.body, dict) else None
    rows = example_rows(example)
    if not isinstance(predictions, list) or (rows is not None and len(predictions) != rows):
        raise DeployError(f"the input example got a malformed answer: {answer.text[:200]}")
    return f"healthy; the example answered {len(predictions)} prediction(s) in {answer.elapsed_s * 1000:.0f} ms"
