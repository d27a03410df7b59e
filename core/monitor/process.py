"""A :class:`Collector` whose scraping runs in a child process; the same API for whoever drains it.

The child (:mod:`modeldeck.core.monitor.worker`) fetches, parses and derives;
this side keeps the endpoint list, the ring buffers, the pending samples and the
health of every endpoint, so :meth:`snapshot` and :meth:`drain` stay local and
cheap. One reader thread turns the child's batches into :class:`Sample` objects:
the only Python this process runs per scrape is a JSON decode and a ring-buffer
append, instead of a page parse.

In Prometheus-server mode (``prometheus_url``) the child queries the server
instead of scraping; the samples, health and events that come back are the same.

Faults are states, not exceptions: a child that exits, hangs (no line within
``HANG_S``) or sends garbage is killed, reported as a ``MonitorEvent`` of kind
``"collector"`` and started again with every endpoint (at most ``max_restarts``
times in ``RESTART_WINDOW_S``, with a growing pause); after that collection
stops and every endpoint shows unknown with the reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np
from modeldeck.core.monitor.collector import Endpoint, MonitorEvent, Sample, emit_events
from modeldeck.core.monitor.derive import SERIES
from modeldeck.core.monitor.health import HealthPolicy, HealthState, HealthStatus
from modeldeck.core.monitor.series import DEFAULT_RETENTION, SeriesStore
from modeldeck.core.monitor.worker import (
    CHILD_NICE,
    MAX_LINE,
    NICE_ENV,
    PROTOCOL,
    MonitorProcessError,
    backfill_from_wire,
    decode_line,
    event_from_wire,
    policy_to_wire,
    sample_from_wire,
)

log = logging.getLogger(__name__)

HANG_S = 5.0  # the child sends a line at least every second; five seconds of silence is a hung process
RESTART_WINDOW_S = 600.0
MAX_URL = 2048  # a command line stays under PIPE_BUF, so a non-blocking write is all or nothing
_UNKNOWN = HealthStatus(HealthState.UNKNOWN, "not scraped yet")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class CollectorProcess:
    """Scrapes ``endpoints`` every ``interval`` seconds in a child process until :meth:`stop`.

    Same reading API as :class:`~modeldeck.core.monitor.collector.Collector`
    (``drain``, ``snapshot``, ``health``, ``endpoints``, ``add_endpoint``,
    ``remove_endpoint``, ``on_event``), plus :attr:`pid` and :attr:`restarts`.
    ``malloc_arena_max`` goes into the child's environment: glibc otherwise gives
    each scrape thread its own arena, and their memory creeps. ``command`` replaces the child's
    command line (tests use it to start a process that breaks the protocol); ``nice`` lowers the child's CPU
    priority (collection is background work: on a busy machine the UI thread should win the CPU); a child silent for
    ``hang_after`` seconds is taken for hung. With ``prometheus_url`` the child queries that Prometheus server
    (:class:`~modeldeck.core.monitor.prometheus.PrometheusCollector`) instead of scraping, and first sends the
    history the server kept for the span of the ring buffers; :meth:`set_prometheus` switches either way.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint] = (),
        *,
        interval: float = 1.0,
        timeout: float | None = None,
        window: float = 60.0,
        retention: int = DEFAULT_RETENTION,
        policy: HealthPolicy | None = None,
        on_event: Callable[[MonitorEvent], None] | None = None,
        max_pending: int = 10_000,
        max_restarts: int = 5,
        malloc_arena_max: int | None = 2,
        nice: int = CHILD_NICE,
        command: list[str] | None = None,
        hang_after: float = HANG_S,
        prometheus_url: str | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.timeout = timeout
        self.window = window
        self.policy = policy or HealthPolicy()
        self.series = SeriesStore(retention)
        self.on_event = on_event
        self.max_restarts = max_restarts
        self.malloc_arena_max = malloc_arena_max
        self.nice = nice
        self.command = command or [sys.executable, "-m", "modeldeck.core.monitor.worker"]
        self.hang_after = hang_after
        self.prometheus_url = prometheus_url or None
        self.restarts = 0
        self.failure = ""  # why collection stopped for good ('' while it runs)
        self._endpoints: dict[str, Endpoint] = {ep.name: ep for ep in endpoints}
        self._health: dict[str, HealthStatus] = dict.fromkeys(self._endpoints, _UNKNOWN)
        self._pending: deque[Sample] = deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._restart_times: deque[float] = deque()
        self._generation = 0  # of the config last sent; the child's lines from an older one are dropped

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("collector already started")
        try:
            proc = self._popen()
        except OSError as exc:
            raise MonitorProcessError(
                f"cannot start the monitor process: {exc}", hint="is the machine out of memory or processes?"
            ) from exc
        with self._lock:
            self._adopt(proc)
        self._thread = threading.Thread(target=self._run, name="modeldeck-monitor-reader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0, *, wait: bool = True) -> bool:
        """End the child (stdin closed, then SIGKILL after ``timeout``) and the reader; True if both ended.

        ``wait=False`` (the UI thread) returns at once, False unless nothing ran: a daemon thread waits for the
        child instead. A child can take seconds to go (its queries to a slow Prometheus server end only at their
        own timeouts), and waiting for it on the UI thread froze the window for ``timeout`` plus the kill.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            proc = self._proc
            if proc is not None and proc.stdin is not None:
                proc.stdin.close()
        if not wait:
            if proc is None and self._thread is None:
                return True
            threading.Thread(
                target=self._finish, args=(proc, deadline), name="modeldeck-monitor-stop", daemon=True
            ).start()
            return False
        return self._finish(proc, deadline)

    def _finish(self, proc: subprocess.Popen[bytes] | None, deadline: float) -> bool:
        """Wait for the child (SIGKILL at ``deadline``) and the reader after :meth:`stop`; True if both ended."""
        if proc is not None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(1.0)
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
        return (proc is None or proc.poll() is not None) and not (self._thread and self._thread.is_alive())

    def resume(self) -> bool:
        """Collect again after giving up (the user's "Restart monitoring"); False if it never stopped or is stopping."""
        with self._lock:
            if not self.failure or self._stop.is_set() or (self._thread is not None and self._thread.is_alive()):
                return False
            self.failure = ""
            self._restart_times.clear()
            self._health = dict.fromkeys(self._endpoints, _UNKNOWN)
            try:
                self._adopt(self._popen())
            except OSError as exc:
                self.failure = f"cannot start the monitor process: {exc}"
                raise MonitorProcessError(self.failure, hint="is the machine out of memory or processes?") from exc
        self._thread = threading.Thread(target=self._run, name="modeldeck-monitor-reader", daemon=True)
        self._thread.start()
        return True

    def __enter__(self) -> CollectorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    # -- what the UI reads -----------------------------------------------------------------------------------------

    def drain(self) -> list[Sample]:
        """Every sample since the last call, oldest first (thread-safe; meant for a UI timer)."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def snapshot(self, endpoint: str, names: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self.series.snapshot(endpoint, names)

    def health(self) -> dict[str, HealthStatus]:
        with self._lock:
            return dict(self._health)

    @property
    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return list(self._endpoints.values())

    def add_endpoint(self, endpoint: Endpoint) -> bool:
        """Start scraping ``endpoint``; an existing name with a new URL is re-pointed. True if anything changed."""
        if len(endpoint.url) > MAX_URL or len(endpoint.name) > MAX_URL:
            raise ValueError(f"metrics URL or name longer than {MAX_URL} characters")
        with self._lock:
            if self._endpoints.get(endpoint.name) == endpoint:
                return False
            self._endpoints[endpoint.name] = endpoint
            self._health.setdefault(endpoint.name, _UNKNOWN)
            self._send({"op": "add", "name": endpoint.name, "url": endpoint.url})
            return True

    def remove_endpoint(self, name: str, *, forget: bool = True) -> bool:
        with self._lock:
            removed = self._endpoints.pop(name, None) is not None
            self._health.pop(name, None)
            if removed:
                self._send({"op": "remove", "name": name})
        if removed and forget:
            self.series.forget(name)
        return removed

    def set_prometheus(self, url: str | None) -> bool:
        """Query the Prometheus server at ``url`` from now on (None: scrape every endpoint); True if that changed.

        What was collected the other way is dropped (series, pending samples, health), so plots never mix them.
        """
        url = url or None
        with self._lock:
            if url == self.prometheus_url:
                return False
            self.prometheus_url = url
            self._generation += 1
            self._pending.clear()
            self._health = dict.fromkeys(self._endpoints, _UNKNOWN)
            for name in self._endpoints:
                self.series.forget(name)
            self._send(self._config())
        return True

    # -- the child -------------------------------------------------------------------------------------------------

    def _config(self) -> dict[str, object]:
        return {
            "op": "config",
            "gen": self._generation,
            "interval": self.interval,
            "timeout": self.timeout,
            "window": self.window,
            "policy": policy_to_wire(self.policy),
            "prometheus_url": self.prometheus_url,
            "backfill": self.series.retention * self.interval,  # what the ring buffers can hold
        }

    def _popen(self) -> subprocess.Popen[bytes]:
        """Start a child. Never with the lock held: a fork/exec of this (large) process on a loaded machine is
        not bounded, and the UI thread takes the lock to drain."""
        env = dict(os.environ)
        if self.malloc_arena_max:
            env["MALLOC_ARENA_MAX"] = str(self.malloc_arena_max)
        env[NICE_ENV] = str(self.nice)
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)  # a stuck child must never block the caller (the UI)
        return proc

    def _adopt(self, proc: subprocess.Popen[bytes]) -> None:
        """Make ``proc`` the child and give it the config and every endpoint (called with the lock held)."""
        self._proc = proc
        self._send(self._config())
        for ep in self._endpoints.values():
            self._send({"op": "add", "name": ep.name, "url": ep.url})

    def _send(self, command: dict[str, object]) -> None:
        """One command line to the child (lock held); a full pipe means a stuck child: the reader restarts it."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.closed:
            return  # applied when the next child starts (it gets every endpoint)
        line = json.dumps(command, separators=(",", ":")).encode() + b"\n"
        try:
            os.write(proc.stdin.fileno(), line)
        except BlockingIOError:
            log.warning("monitor process is not reading its commands; killing it")
            proc.kill()
        except OSError:  # it died; the reader notices and restarts it with every endpoint
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                proc = self._proc
            assert proc is not None and proc.stdout is not None
            error = self._read(proc)
            if self._stop.is_set():
                return
            if proc.poll() is None:
                proc.kill()
            try:
                code = proc.wait(2.0)
            except subprocess.TimeoutExpired:
                code = None
            proc.stdout.close()
            with self._lock:  # _send writes to this fd under the lock: never to a closed (or reused) number
                if proc.stdin is not None:
                    proc.stdin.close()
            reason = str(error) if error is not None else f"the monitor process {_describe_exit(code)}"
            if not self._restart(reason):
                return

    def _read(self, proc: subprocess.Popen[bytes]) -> MonitorProcessError | None:
        """Apply the child's lines until it ends (None), hangs or breaks the protocol (the error)."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        hello = False
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(self.hang_after):
                    return MonitorProcessError(f"the monitor process sent nothing for {self.hang_after:g} s (hung)")
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                buffer += chunk
                if len(buffer) > MAX_LINE and b"\n" not in buffer:
                    return MonitorProcessError("the monitor process sent a line longer than the protocol allows")
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    try:
                        message = decode_line(line)
                        if not hello:
                            if message.get("hello") != PROTOCOL:
                                raise MonitorProcessError(
                                    f"monitor process speaks {message.get('hello')!r}, not {PROTOCOL}"
                                )
                            hello = True
                            continue
                        self._apply(message)
                    except MonitorProcessError as exc:
                        log.error("%s", exc.one_line())
                        return exc
                    except Exception as exc:  # a bug here must end in a restart, not in a reader that is gone
                        log.exception("reading the monitor process failed")
                        return MonitorProcessError(f"internal error reading the monitor process: {exc!r}"[:300])
        return None

    def _apply(self, message: dict[str, object]) -> None:
        generation = message.get("g", 0)
        if "b" in message:  # history from the Prometheus server, before the endpoint's first sample
            endpoint, t, values = backfill_from_wire(message["b"])
            with self._lock:
                if generation == self._generation and endpoint in self._endpoints:
                    self.series.extend(endpoint, t, values)  # only what is newer than the buffers hold
            return
        raw_samples, raw_events = message.get("s", []), message.get("e", [])
        if not isinstance(raw_samples, list) or not isinstance(raw_events, list):
            raise MonitorProcessError(f"monitor process sent a malformed batch: {str(message)[:200]}")
        samples = [sample_from_wire(row) for row in raw_samples]
        events = [event_from_wire(row) for row in raw_events]
        with self._lock:
            if generation != self._generation:  # collected before the last switch of source
                return
            for sample in samples:
                if sample.endpoint not in self._endpoints:  # removed while its scrape was in flight
                    continue
                values = sample.derived.values() if sample.derived is not None else dict.fromkeys(SERIES, math.nan)
                self.series.append(sample.endpoint, sample.at, values)
                self._health[sample.endpoint] = sample.health
                self._pending.append(sample)
            known = set(self._endpoints)
        self._emit([e for e in events if e.endpoint in known or e.kind == "source"])

    def _restart(self, reason: str) -> bool:
        """Start a new child after a pause, unless it failed too often; False when collection stops for good."""
        now = time.monotonic()
        while self._restart_times and now - self._restart_times[0] > RESTART_WINDOW_S:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.max_restarts:
            self.failure = f"{reason}; gave up after {self.max_restarts} restarts in {RESTART_WINDOW_S / 60:g} min"
            with self._lock:
                self._proc = None
                self._health = dict.fromkeys(self._endpoints, HealthStatus(HealthState.UNKNOWN, self.failure))
            self._emit([MonitorEvent("collector", "", time.time(), f"monitoring stopped: {self.failure}")])
            return False
        pause = min(0.2 * 2 ** len(self._restart_times), 5.0)
        self._restart_times.append(now)
        self.restarts += 1
        self._emit([MonitorEvent("collector", "", time.time(), f"{reason}; restarting it")])
        if self._stop.wait(pause):
            return False
        try:
            proc: subprocess.Popen[bytes] | None = self._popen()
        except OSError as exc:
            proc = None
            with self._lock:
                self.failure = f"cannot start the monitor process again: {exc}"
                self._proc = None
                self._health = dict.fromkeys(self._endpoints, HealthStatus(HealthState.UNKNOWN, self.failure))
        if proc is not None:
            with self._lock:
                stopped = self._stop.is_set()  # stop() ran meanwhile: it looked at the old child, not this one
                if not stopped:
                    self._adopt(proc)
            if stopped:
                proc.kill()
                try:
                    proc.wait(2.0)
                except subprocess.TimeoutExpired:
                    log.warning("monitor process %d did not end within 2 s of SIGKILL", proc.pid)
                for pipe in (proc.stdin, proc.stdout):
                    if pipe is not None:
                        pipe.close()
                return False
        if self.failure:
            self._emit([MonitorEvent("collector", "", time.time(), f"monitoring stopped: {self.failure}")])
            return False
        return True

    def _emit(self, events: list[MonitorEvent]) -> None:
        emit_events(self.on_event, events)
