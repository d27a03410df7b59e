"""A bounded load generator: send one request body to a deployment at a steady rate, then stop.

Meant for demos and smoke tests ("make the plots move"), not for benchmarking:
every run is bounded in request count, duration and concurrency, each request
has a timeout, and a cancel event stops it within one request timeout.
Requests are paced on a fixed schedule (request *i* is due at ``i / rate``), so
a slow answer delays only its own worker, and a worker that falls behind sends
the overdue requests back-to-back rather than sleeping (bounded by ``count``).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from modeldeck.core.errors import Cancelled, ConfigError

log = logging.getLogger(__name__)

MAX_COUNT = 100_000
MAX_DURATION_S = 600.0
MAX_CONCURRENCY = 8
MAX_RATE = 5_000.0

ProgressFn = Callable[[str, "float | None"], None]


@dataclass(frozen=True)
class LoadPlan:
    """What to send: ``rate`` requests/s until ``count`` were sent or ``duration_s`` passed, whichever first."""

    url: str  # the deployment's base URL; requests go to url + path
    body: Any
    rate: float = 20.0
    count: int = 1_200
    duration_s: float = 60.0
    concurrency: int = 2
    timeout_s: float = 5.0
    path: str = "/invocations"

    def validate(self) -> None:
        """Refuse anything unbounded or malformed before a single request is sent."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"not an http(s) URL: {self.url!r}", hint="e.g. http://127.0.0.1:8080")
        if not 0 < self.rate <= MAX_RATE:
            raise ConfigError(f"rate {self.rate:g} req/s is out of range", hint=f"between 0 and {MAX_RATE:g}")
        if not 1 <= self.count <= MAX_COUNT:
            raise ConfigError(f"count {self.count} is out of range", hint=f"between 1 and {MAX_COUNT:,}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ConfigError(
                f"duration {self.duration_s:g} s is out of range", hint=f"at most {MAX_DURATION_S / 60:g} minutes"
            )
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(f"concurrency {self.concurrency} is out of range", hint=f"1 to {MAX_CONCURRENCY}")
        if not 0 < self.timeout_s <= 60:
            raise ConfigError("request timeout must be between 0 and 60 s")


@dataclass(frozen=True)
class LoadResult:
    """What happened: requests sent, answers by HTTP status, transport failures, client-side latencies."""

    sent: int
    by_status: dict[int, int]
    transport_errors: int
    latencies_s: tuple[float, ...]
    elapsed_s: float
    cancelled: bool = False
    first_error: str = ""
    plan: LoadPlan | None = field(default=None, compare=False)

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.by_status.items() if 200 <= s < 300)

    @property
    def errors(self) -> int:
        """Requests that did not get a 2xx answer (4xx, 5xx and transport failures)."""
        return self.sent - self.ok

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> str:
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        text = (
            f"{self.sent:,} requests in {self.elapsed_s:.1f} s ({rate:.1f}/s): {self.ok:,} ok, {self.errors:,} failed"
        )
        if self.latencies_s:
            text += f"; p50 {self.percentile(0.5) * 1000:.1f} ms, p99 {self.percentile(0.99) * 1000:.1f} ms"
        if self.cancelled:
            text += " (cancelled)"
        return text


class _Shared:
    """State the worker threads share; one lock, held only for counters."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.lock = threading.Lock()
        self.next_index = 0
        self.by_status: Counter[int] = Counter()
        self.transport_errors = 0
        self.latencies: list[float] = []
        self.first_error = ""

    def claim(self) -> int | None:
        with self.lock:
            if self.next_index >= self.plan.count:
                return None
            i = self.next_index
            self.next_index += 1
            return i

    @property
    def done(self) -> int:
        with self.lock:
            return sum(self.by_status.values()) + self.transport_errors


def _connection(url: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


def _worker(shared: _Shared, payload: bytes, start: float, deadline: float, stop: threading.Event) -> None:
    plan = shared.plan
    parts = urlsplit(plan.url)
    path = (parts.path.rstrip("/") + plan.path) or "/"
    headers = {"Content-Type": "application/json"}
    conn: http.client.HTTPConnection | None = None
    try:
        while not stop.is_set():
            i = shared.claim()
            if i is None:
                return
            due = start + i / plan.rate
            now = time.monotonic()
            if due >= deadline:
                return
            if due > now and stop.wait(due - now):
                return
            if conn is None:  # keep-alive: one connection per worker, reopened after a failure
                conn = _connection(plan.url, plan.timeout_s)
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=payload, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                with shared.lock:
                    shared.transport_errors += 1
                    if not shared.first_error:
                        shared.first_error = f"{type(exc).__name__}: {exc}"
                continue
            elapsed = time.perf_counter() - t0
            with shared.lock:
                shared.by_status[status] += 1
                shared.latencies.append(elapsed)
                if status >= 400 and not shared.first_error:
                    shared.first_error = f"HTTP {status}"
    finally:
        if conn is not None:
            conn.close()


def run_load(
    plan: LoadPlan,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> LoadResult:
    """Send ``plan.body`` as JSON to ``plan.url + plan.path`` on ``plan.concurrency`` threads; return the counts.

    Stops after ``plan.count`` requests or ``plan.duration_s`` seconds, whichever
    comes first (a request already sent is awaited, at most ``timeout_s``).
    ``progress`` is called about twice a second with (message, fraction done).
    Raises :class:`ConfigError` for an unbounded or malformed plan (nothing
    sent) and :class:`Cancelled` when ``cancel`` is set — but only if nothing
    was sent; a run cancelled midway returns its counts with ``cancelled=True``
    so the user sees what reached the deployment.
    """
    plan.validate()
    if cancel is not None and cancel.is_set():
        raise Cancelled("load generation cancelled")
    payload = json.dumps(plan.body).encode()
    shared = _Shared(plan)
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + plan.duration_s
    threads = [
        threading.Thread(
            target=_worker, args=(shared, payload, start, deadline, stop), name=f"modeldeck-load-{i}", daemon=True
        )
        for i in range(plan.concurrency)
    ]
    for t in threads:
        t.start()
    expected = min(plan.count, max(1, int(plan.rate * plan.duration_s)))
    cancelled = False
    try:
        while any(t.is_alive() for t in threads):
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            if time.monotonic() > deadline + plan.timeout_s + 1.0:
                break  # only a wedged connection gets here: the join below is bounded too
            if progress is not None:
                done = shared.done
                progress(f"sent {done:,} of {expected:,}", min(1.0, done / expected))
            alive = next((t for t in threads if t.is_alive()), None)
            if alive is not None:
                alive.join(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(plan.timeout_s + 1.0)
    elapsed = time.monotonic() - start
    with shared.lock:
        by_status = dict(shared.by_status)
        transport = shared.transport_errors
        latencies = tuple(shared.latencies)
        first_error = shared.first_error
    sent = sum(by_status.values()) + transport
    if cancelled and sent == 0:
        raise Cancelled("load generation cancelled")
    if progress is not None:
        progress(f"sent {sent:,}", 1.0)
    log.info("load run against %s: %d sent, %d transport errors", plan.url, sent, transport)
    return LoadResult(sent, by_status, transport, latencies, elapsed, cancelled, first_error, plan)
