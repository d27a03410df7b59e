"""Scrape many endpoints concurrently on an interval; hand samples to a UI in batches.

One scheduler thread ticks every ``interval`` and submits one scrape per
endpoint to a small pool. Each scrape ends within ``timeout`` (< interval), an
endpoint whose previous scrape is somehow still running is skipped and reported
unreachable, so a slow or hanging endpoint never delays the others and turns
down within two intervals. The UI side calls :meth:`Collector.drain` from a timer
and :meth:`Collector.snapshot` for whole arrays; events (health, version,
restart) arrive through a plain callback on a collector thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, Self, TypeVar

import numpy as np
from modeldeck.core.monitor.derive import LATENCY, SERIES, Derived, derive
from modeldeck.core.monitor.health import HealthPolicy, HealthState, HealthStatus, HealthTracker
from modeldeck.core.monitor.scrape import DEFAULT_MAX_BYTES, Scrape, ScrapeError, fetch
from modeldeck.core.monitor.series import DEFAULT_RETENTION, SeriesStore

log = logging.getLogger(__name__)

# What a scrape older than the last one is still needed for: window percentiles and restart detection.
# Window bases are kept every window/_WINDOW_STEPS seconds, not every scrape: memory per endpoint is fixed
# whatever the interval, and the percentile window is exact to within 1/_WINDOW_STEPS of its length.
_WINDOW_STEPS = 12
_SPREAD_SLOTS = 10  # slots per interval the endpoints' scrapes are spread over (see Collector._run)
_WINDOW_SAMPLES = (f"{LATENCY}_bucket", "process_start_time_seconds", "modeldeck_start_time_seconds")


@dataclass(frozen=True)
class Endpoint:
    """A deployment's metrics URL under the name the user knows it by."""

    name: str
    url: str


@dataclass(frozen=True)
class Sample:
    """One scrape outcome: ``derived`` on success, else ``error``; ``health`` after this scrape."""

    endpoint: str
    at: float
    derived: Derived | None
    health: HealthStatus
    error: str = ""


@dataclass(frozen=True)
class MonitorEvent:
    """``kind`` is ``"health"``, ``"version"`` or ``"restart"``; ``detail`` says what changed, for a marker."""

    kind: str
    endpoint: str
    at: float
    detail: str


@dataclass
class _EndpointState:
    endpoint: Endpoint
    tracker: HealthTracker
    last: Scrape | None = None  # the previous scrape, whole: rates and version changes need all of it
    history: deque[Scrape] = field(default_factory=lambda: deque(maxlen=4 * _WINDOW_STEPS))  # slim, inside the window
    in_flight: Future[None] | None = None
    started: float = 0.0


def emit_events(on_event: Callable[[MonitorEvent], None] | None, events: list[MonitorEvent]) -> None:
    """Hand ``events`` to a collector's listener, one by one; a listener's bug is logged, never raised into
    collection."""
    if on_event is None:
        return
    for event in events:
        try:
            on_event(event)
        except Exception:  # a listener's bug must not stop collection
            log.exception("monitor event listener failed on %s", event)


class _Watched(Protocol):
    endpoint: Endpoint
    tracker: HealthTracker


StateT = TypeVar("StateT", bound=_Watched)


class CollectorBase(Generic[StateT]):
    """What every collector shares: the interval, the ring buffers, one health tracker per endpoint, the samples
    waiting for the UI (``max_pending``, oldest dropped), one scheduler thread and its worker pools, and the
    read side a UI uses (:meth:`drain`, :meth:`snapshot`, :meth:`health`). Subclasses say how an endpoint's
    state starts (:meth:`_new_state`), which pools they run (:meth:`_pools`) and what one tick does (:meth:`_run`).
    """

    thread_name = "modeldeck-collector"

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        interval: float,
        timeout: float | None,
        window: float,
        retention: int,
        policy: HealthPolicy | None,
        on_event: Callable[[MonitorEvent], None] | None,
        max_pending: int,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.timeout = min(timeout if timeout is not None else interval * 0.8, interval * 0.9)
        self.window = window
        self.series = SeriesStore(retention)
        self.policy = policy or HealthPolicy()
        self.on_event = on_event
        self._states: dict[str, StateT] = {ep.name: self._new_state(ep) for ep in endpoints}
        self._pending: deque[Sample] = deque(maxlen=max_pending)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _new_state(self, endpoint: Endpoint) -> StateT:
        raise NotImplementedError

    def _pools(self) -> list[ThreadPoolExecutor]:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("collector already started")
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop scheduling and wait at most ``timeout`` s for work in flight; True if everything ended."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        threads: list[threading.Thread] = []
        for pool in self._pools():
            pool.shutdown(wait=False, cancel_futures=True)
            threads += list(getattr(pool, "_threads", ()))
        for worker in threads:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not (self._thread is not None and self._thread.is_alive()) and not any(w.is_alive() for w in threads)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the UI reads -----------------------------------------------------------------------------------------

    def drain(self) -> list[Sample]:
        """Every sample since the last call, oldest first (thread-safe; meant for a UI timer)."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    def snapshot(self, endpoint: str, names: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Ring-buffer arrays ``{series: (t, v)}`` for one endpoint, ready for ``setData``."""
        return self.series.snapshot(endpoint, names)

    def health(self) -> dict[str, HealthStatus]:
        with self._lock:
            return {name: st.tracker.status for name, st in self._states.items()}

    @property
    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return [st.endpoint for st in self._states.values()]

    def remove_endpoint(self, name: str, *, forget: bool = True) -> bool:
        """Stop collecting ``name`` (work in flight for it is discarded); ``forget`` also drops its series."""
        with self._lock:
            removed = self._states.pop(name, None) is not None
        if removed and forget:
            self.series.forget(name)
        return removed

    def _emit(self, events: list[MonitorEvent]) -> None:
        emit_events(self.on_event, events)


class Collector(CollectorBase[_EndpointState]):
    """Scrapes ``endpoints`` every ``interval`` seconds until :meth:`stop`.

    ``window`` is the span percentiles are computed over (Prometheus' ``[1m]``);
    ``retention`` bounds every series' ring buffer in points; one pool thread
    per endpoint (up to ``max_workers``), because scrapes wait on the network and
    a thread held by a hanging endpoint must not make a healthy one queue; ``max_pending``
    bounds samples waiting for :meth:`drain` (oldest dropped), so a UI that stops
    draining cannot grow memory; ``spread`` scrapes the endpoints in slots across
    the interval instead of all at its start.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        interval: float = 1.0,
        timeout: float | None = None,
        window: float = 60.0,
        retention: int = DEFAULT_RETENTION,
        policy: HealthPolicy | None = None,
        on_event: Callable[[MonitorEvent], None] | None = None,
        max_workers: int = 64,
        max_pending: int = 10_000,
        max_bytes: int = DEFAULT_MAX_BYTES,
        spread: bool = True,
    ) -> None:
        super().__init__(
            endpoints,
            interval=interval,
            timeout=timeout,
            window=window,
            retention=retention,
            policy=policy,
            on_event=on_event,
            max_pending=max_pending,
        )
        self.max_bytes = max_bytes
        self.spread = spread
        # threads start lazily (one per endpoint scraped at once), so endpoints added later get theirs too
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="modeldeck-scrape")

    def _new_state(self, endpoint: Endpoint) -> _EndpointState:
        return _EndpointState(endpoint, HealthTracker(self.policy))

    def _pools(self) -> list[ThreadPoolExecutor]:
        return [self._pool]

    # -- what the UI changes ---------------------------------------------------------------------------------------

    def add_endpoint(self, endpoint: Endpoint) -> bool:
        """Start scraping ``endpoint`` at the next tick; an existing name with a new URL is re-pointed.

        Returns True if anything changed. Series of a re-pointed endpoint are kept (same deployment, new port).
        """
        with self._lock:
            state = self._states.get(endpoint.name)
            if state is not None and state.endpoint == endpoint:
                return False
            if state is None:
                self._states[endpoint.name] = self._new_state(endpoint)
            else:
                state.endpoint = endpoint
                state.last = None
                state.history.clear()
            return True

    # -- the loop --------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        # With ``spread`` each interval is cut into slots and every endpoint scraped in its own slot: parsing
        # 50 pages at once held the GIL in one ~200 ms burst a second, which a UI thread in the same process
        # felt as a stall; spread out, the same work comes in small pieces. Each endpoint is still scraped
        # once per interval.
        slots = _SPREAD_SLOTS if self.spread else 1
        step = self.interval / slots
        next_tick = time.monotonic()
        slot = 0
        while not self._stop.is_set():
            self.tick(slot, slots)
            slot = (slot + 1) % slots
            next_tick += step
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind (suspend, overload): skip missed ticks instead of bursting
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def tick(self, slot: int = 0, slots: int = 1) -> None:
        """Submit one scrape per endpoint of ``slot`` (of ``slots``; default: all endpoints).

        Public so tests and benchmarks can drive the clock.
        """
        now = time.monotonic()
        with self._lock:
            states = list(self._states.values())[slot::slots]
        for state in states:
            if state.in_flight is not None and not state.in_flight.done():
                # should not happen (fetch is bounded), but a stuck scrape must still show as unreachable
                if now - state.started > self.timeout:
                    self._record_failure(
                        state, f"{state.endpoint.url} still not answered after {now - state.started:.1f} s"
                    )
                continue
            state.started = now
            try:
                state.in_flight = self._pool.submit(self._scrape, state)
            except RuntimeError:  # pool shut down by stop()
                return

    def _scrape(self, state: _EndpointState) -> None:
        try:
            scrape = fetch(state.endpoint.url, timeout=self.timeout, max_bytes=self.max_bytes)
        except ScrapeError as exc:
            log.debug("scrape of %s failed: %s", state.endpoint.name, exc)
            self._record_failure(state, exc.one_line())
            return
        except Exception as exc:  # a bug must not kill the collector; log it and show the endpoint as failing
            log.exception("unexpected error scraping %s", state.endpoint.url)
            self._record_failure(state, f"internal error: {type(exc).__name__}: {exc}")
            return
        self._record(state, scrape)

    def _record(self, state: _EndpointState, scrape: Scrape) -> None:
        events: list[MonitorEvent] = []
        name = state.endpoint.name
        with self._lock:
            if self._states.get(name) is not state:  # removed while this scrape was in flight
                return
            prev = state.last
            base = next((s for s in state.history if scrape.monotonic - s.monotonic <= self.window), prev)
            derived = derive(prev, scrape, window_base=base)
            if derived.restarted:
                state.history.clear()
                events.append(MonitorEvent("restart", name, scrape.at, "counters reset or start time changed"))
            if derived.version_changed:
                events.append(
                    MonitorEvent("version", name, scrape.at, f"{derived.model_name} version {derived.model_version}")
                )
            while state.history and scrape.monotonic - state.history[0].monotonic > self.window:
                state.history.popleft()
            if not state.history or scrape.monotonic - state.history[-1].monotonic >= self.window / _WINDOW_STEPS:
                state.history.append(scrape.only(_WINDOW_SAMPLES))
            state.last = scrape
            values = derived.values()
            before = state.tracker.status
            health = state.tracker.observe(scrape.monotonic, values)
            self.series.append(name, scrape.at, values)
            self._pending.append(Sample(name, scrape.at, derived, health))
        if health != before:
            events.append(MonitorEvent("health", name, scrape.at, f"{health.state}: {health.reason}".rstrip(": ")))
        self._emit(events)

    def _record_failure(self, state: _EndpointState, reason: str) -> None:
        at = time.time()
        name = state.endpoint.name
        with self._lock:
            if self._states.get(name) is not state:
                return
            before = state.tracker.status
            health = state.tracker.unreachable(reason)
            self.series.append(name, at, dict.fromkeys(SERIES, math.nan))  # a gap in every plot
            self._pending.append(Sample(name, at, None, health, reason))
        if health != before:
            self._emit([MonitorEvent("health", name, at, f"{health.state}: {health.reason}")])


def is_down(status: HealthStatus) -> bool:
    return status.state is HealthState.DOWN
