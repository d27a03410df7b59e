"""Fetch one ``/metrics`` page (bounded in time and size) and parse it with prometheus_client's parser."""

from __future__ import annotations

import contextlib
import heapq
import http.client
import itertools
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from modeldeck.core.errors import ModelDeckError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 2.0
DEFAULT_MAX_BYTES = 4 * 1024 * 1024  # a runtime's page is ~10 kB; anything near this is not a metrics page


class ScrapeError(ModelDeckError):
    """A metrics endpoint did not answer in time, answered an error, or answered something unparseable."""


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape: every sample by its full name (``foo_total``, ``foo_bucket``), with sorted labels.

    ``at`` is wall-clock time (for plots and Prometheus' start-time gauges),
    ``monotonic`` the clock used for rates, so a wall-clock jump never yields a negative rate.
    """

    url: str
    at: float
    monotonic: float
    samples: Mapping[str, Mapping[Labels, float]] = field(default_factory=dict)

    def value(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """The sample ``name`` whose labels include ``labels`` (first match), else ``default``."""
        want = set(labels.items())
        for key, value in self.samples.get(name, {}).items():
            if want <= set(key):
                return value
        return default

    def series(self, name: str) -> Mapping[Labels, float]:
        return self.samples.get(name, {})

    def only(self, names: Iterable[str]) -> Scrape:
        """The same scrape keeping just ``names``: what a collector retains for windows, at a fraction of the size."""
        return Scrape(self.url, self.at, self.monotonic, {n: self.samples[n] for n in names if n in self.samples})


class _Watchdog:
    """One thread that runs callbacks at deadlines: a per-scrape ``threading.Timer`` would start a thread per scrape.

    Cancelling drops the callback at once; its heap entry is skipped when due, so
    the heap holds at most one timeout's worth of entries.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, callback: Callable[[], None]) -> int:
        with self._cond:
            token = next(self._ids)
            self._callbacks[token] = callback
            heapq.heappush(self._heap, (time.monotonic() + delay, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="modeldeck-scrape-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._callbacks.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._heap:
                    if not self._cond.wait(timeout=30.0) and not self._heap:
                        self._thread = None  # idle: let the thread end; schedule() starts another
                        return
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0 and token in self._callbacks:
                    self._cond.wait(timeout=wait)
                    continue
                heapq.heappop(self._heap)
                callback = self._callbacks.pop(token, None)
            if callback is not None:
                try:
                    callback()
                except Exception:  # a watchdog callback only shuts a socket down; never let it kill the thread
                    log.exception("scrape watchdog callback failed")


_watchdog = _Watchdog()


def parse(text: str, *, url: str = "", at: float | None = None, monotonic: float | None = None) -> Scrape:
    """Parse Prometheus text exposition; anything the parser refuses (or an empty page) is a :class:`ScrapeError`."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, dict[Labels, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = float(sample.value)
    except Exception as exc:  # the parser raises ValueError, IndexError, TypeError... on garbage
        raise ScrapeError(
            f"{url or 'metrics page'} is not Prometheus text format: {type(exc).__name__}: {exc}"[:300],
            hint="point ModelDeck at the /metrics path of a Prometheus exporter",
        ) from exc
    if not samples:
        raise ScrapeError(f"{url or 'metrics page'} has no metrics", hint="is this the /metrics path?")
    return Scrape(
        url,
        time.time() if at is None else at,
        time.monotonic() if monotonic is None else monotonic,
        samples,
    )


def fetch(url: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES) -> Scrape:
    """GET ``url`` and parse it; the whole exchange (connect, headers, body) ends within ``timeout`` seconds.

    Never raises anything but :class:`ScrapeError`: a dead, hanging, erroring or
    garbage-speaking endpoint is a normal state for a monitor. Socket timeouts
    bound each read only, so a watchdog shuts the socket down at the deadline:
    an endpoint that trickles a byte at a time cannot hold a scrape past it.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScrapeError(f"not an http(s) URL: {url!r}", hint="e.g. http://127.0.0.1:8080/metrics")
    try:
        port = parts.port
    except ValueError as exc:
        raise ScrapeError(f"bad port in {url!r}") from exc
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, port, timeout=timeout)
    expired = threading.Event()

    def abort() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    at, mono = time.time(), time.monotonic()
    chunks: list[bytes] = []
    watch = -1
    try:
        watch = _watchdog.schedule(timeout, abort)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers={"Accept": "text/plain;version=0.0.4", "Connection": "close"})
        response = conn.getresponse()
        if response.status != 200:
            raise ScrapeError(f"{url} answered HTTP {response.status}")
        size = 0
        while chunk := response.read1(65536):
            size += len(chunk)
            if size > max_bytes:
                raise ScrapeError(f"{url} answered more than {max_bytes} bytes", hint="is this a metrics page?")
            chunks.append(chunk)
    except ScrapeError:
        raise
    except (http.client.HTTPException, OSError, ValueError) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):
            raise ScrapeError(f"{url} did not answer within {timeout:g} s (timed out)") from exc
        raise ScrapeError(f"{url} unreachable: {exc or type(exc).__name__}") from exc
    finally:
        _watchdog.cancel(watch)
        conn.close()
    if expired.is_set():  # the watchdog cut the body short: a truncated page must not pass as a scrape
        raise ScrapeError(f"{url} did not answer within {timeout:g} s (timed out)")
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScrapeError(f"{url} answered bytes that are not UTF-8 text") from exc
    return parse(text, url=url, at=at, monotonic=mono)
