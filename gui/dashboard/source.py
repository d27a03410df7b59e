"""The UI side of collection: owns a collector, drains it on a timer, forwards its events as signals.

The collector is a :class:`CollectorProcess`: fetching and parsing 50 pages a
second in this process held the GIL the UI thread needs, so it happens in a
child process and only the derived figures come back (``in_process=True`` keeps
the old in-process :class:`Collector`, for comparisons). In Prometheus-server
mode (:meth:`MonitorSource.set_prometheus`) the same child queries the server
instead, so this process never decodes a query result either: the samples, ring
buffers and events the page reads are the same in both modes. This object lives in the
UI thread. A ``QTimer`` drains at ``drain_hz`` and emits one ``samplesArrived``
batch per tick (never a signal per sample); collector events (health, version,
restart, and the child's own faults) are emitted from collector threads into a
signal, which Qt delivers queued to the UI thread. Nothing here blocks: history
writes go to the writer's thread.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from modeldeck.core.errors import ModelDeckError
from modeldeck.core.monitor.collector import Collector, Endpoint, MonitorEvent, Sample
from modeldeck.core.monitor.health import HealthPolicy, HealthState, HealthStatus
from modeldeck.core.monitor.history import HistoryEvent, HistoryWriter
from modeldeck.core.monitor.process import CollectorProcess
from modeldeck.core.monitor.prometheus import PrometheusCollector
from modeldeck.core.targets.base import DeploymentStatus, Target
from PySide6.QtCore import QObject, QTimer, Signal

log = logging.getLogger(__name__)

MAX_MARKERS = 200  # per endpoint: version/restart markers kept for the plots


@dataclass(frozen=True)
class Monitored:
    """One monitored endpoint: where its metrics are, and where they came from (a target, or added by hand)."""

    name: str
    metrics_url: str
    base_url: str | None = None  # the deployment's API (for the load generator); None for a bare metrics URL
    origin: str = "target"  # "target" or "manual"
    status: DeploymentStatus | None = None


def monitored_from_status(status: DeploymentStatus, origin: str = "target") -> Monitored | None:
    """A deployment with an endpoint is monitored at ``endpoint/metrics`` (works for any target kind).

    A deployment stopped on purpose is not monitored (it would only ever show "down").
    """
    if not status.endpoint or status.state == "stopped":
        return None
    base = status.endpoint.rstrip("/")
    return Monitored(status.name, f"{base}/metrics", base, origin, status)


class StatusPoller:
    """Lists every target's deployments every ``interval`` s on its own thread (like the collector, long-lived).

    ``on_result(origin, statuses)`` and ``on_error(origin, message)`` are called on the poller thread:
    the UI side turns them into queued signals. One slow target delays only the next round, never the UI.
    """

    def __init__(
        self,
        on_result: Callable[[str, list[DeploymentStatus]], None],
        on_error: Callable[[str, str], None],
        interval: float = 5.0,
    ) -> None:
        self.interval = interval
        self._on_result, self._on_error = on_result, on_error
        self._targets: dict[str, Target] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, origin: str, target: Target) -> None:
        with self._lock:
            self._targets[origin] = target
        self._wake.set()

    def target(self, origin: str) -> Target | None:
        with self._lock:
            return self._targets.get(origin)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="modeldeck-monitor-targets", daemon=True)
            self._thread.start()

    def poll_now(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                targets = list(self._targets.items())
            for origin, target in targets:
                if self._stop.is_set():
                    return
                try:
                    statuses = target.status()
                except ModelDeckError as exc:
                    self._on_error(origin, exc.one_line())
                except Exception as exc:  # a target's bug must not end monitoring
                    log.exception("listing deployments of %s failed", origin)
                    self._on_error(origin, f"internal error: {type(exc).__name__}: {exc}")
                else:
                    self._on_result(origin, statuses)
            self._wake.wait(self.interval)


class MonitorSource(QObject):
    """Live samples for the dashboards. ``samplesArrived(list[Sample])`` per drain tick; ``eventArrived(event)``.

    ``collectorProblem(message)``: the collection process died, hung or broke its protocol (it is restarted,
    a bounded number of times; ``collector.failure`` says when it was given up). ``sourceProblem(message)``:
    the Prometheus server stopped answering (why), or answers again (``''``).
    """

    samplesArrived = Signal(list)
    eventArrived = Signal(object)  # MonitorEvent, delivered queued in the UI thread
    endpointsChanged = Signal()
    collectorProblem = Signal(str)
    sourceProblem = Signal(str)
    _eventFromCollector = Signal(object)

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        interval: float = 1.0,
        retention: int = 3600,
        drain_hz: float = 5.0,
        policy: HealthPolicy | None = None,
        history: HistoryWriter | None = None,
        in_process: bool = False,
        prometheus_url: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.in_process = in_process
        self.prometheus_url = prometheus_url or None
        self._settings = {"interval": interval, "retention": retention, "policy": policy, "on_event": self._on_event}
        self.collector: Collector | PrometheusCollector | CollectorProcess = self._make_collector()
        self.history = history
        self.monitored: dict[str, Monitored] = {}
        self.latest: dict[str, Sample] = {}
        self.markers: dict[str, collections.deque[MonitorEvent]] = {}
        self.health: dict[str, HealthStatus] = {}
        self.versions: dict[str, str] = {}
        self._started = False
        self.timer = QTimer(self)
        self.timer.setInterval(max(20, int(1000 / drain_hz)))
        self.timer.timeout.connect(self.drain)
        # AutoConnection from a collector thread -> queued into this object's (the UI) thread
        self._eventFromCollector.connect(self._deliver_event)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self.collector.start()
            self._started = True
        self.timer.start()

    def stop(self) -> None:
        """Stop draining and collecting, and flush the history writer.

        The collection process is told to end and left to a thread of its own (SIGKILL after 3 s): it can take
        seconds to go, and waiting here froze the window that long.
        """
        self.timer.stop()
        if self._started:
            if isinstance(self.collector, CollectorProcess):
                self.collector.stop(timeout=3.0, wait=False)
            else:
                self.collector.stop(timeout=3.0)
            self._started = False
        if self.history is not None:
            self.history.stop()
            self.history = None

    def _make_collector(self) -> Collector | PrometheusCollector | CollectorProcess:
        if not self.in_process:
            return CollectorProcess([], prometheus_url=self.prometheus_url, **self._settings)  # type: ignore[arg-type]
        if self.prometheus_url:
            backfill = self._settings["retention"] * self._settings["interval"]  # type: ignore[operator]
            return PrometheusCollector([], url=self.prometheus_url, backfill=backfill, **self._settings)  # type: ignore[arg-type]
        return Collector([], **self._settings)  # type: ignore[arg-type]

    def set_prometheus(self, url: str | None) -> None:
        """Take the figures from the Prometheus server at ``url`` (None: scrape every endpoint directly).

        What was collected the other way is dropped, so rows and plots never mix the two; the
        endpoints stay. Never blocks: the child switches on its own, an in-process collector is
        replaced and the old one left to end its threads.
        """
        url = url or None
        if url == self.prometheus_url:
            return
        self.prometheus_url = url
        if isinstance(self.collector, CollectorProcess):
            self.collector.set_prometheus(url)
        else:
            old, self.collector = self.collector, self._make_collector()
            for endpoint in old.endpoints:
                self.collector.add_endpoint(endpoint)
            if self._started:
                old.stop(timeout=0.0)
                self.collector.start()
        for d in (self.latest, self.markers, self.health, self.versions):
            d.clear()
        self.sourceProblem.emit("")  # a problem of the previous source is not one of this one
        self.endpointsChanged.emit()

    # -- endpoints ---------------------------------------------------------------------------------------------------
    def set_deployments(self, statuses: Iterable[DeploymentStatus], *, origin: str = "target") -> None:
        """Sync the endpoints of one origin with a fresh listing: new ones are added, gone ones removed."""
        fresh = {m.name: m for m in (monitored_from_status(s, origin) for s in statuses) if m is not None}
        changed = False
        for name in [n for n, m in self.monitored.items() if m.origin == origin and n not in fresh]:
            changed |= self.remove(name)
        for m in fresh.values():
            known = self.monitored.get(m.name)
            if known is not None and known.origin != origin:
                continue  # a manual endpoint of the same name wins; never fight over it
            if known != m:
                self.monitored[m.name] = m
                changed = True
            changed |= self.collector.add_endpoint(Endpoint(m.name, m.metrics_url))
        if changed:
            self.endpointsChanged.emit()

    def add(self, monitored: Monitored) -> None:
        self.monitored[monitored.name] = monitored
        self.collector.add_endpoint(Endpoint(monitored.name, monitored.metrics_url))
        self.endpointsChanged.emit()

    def remove(self, name: str) -> bool:
        if self.monitored.pop(name, None) is None:
            return False
        self.collector.remove_endpoint(name)
        for d in (self.latest, self.markers, self.health, self.versions):
            d.pop(name, None)
        self.endpointsChanged.emit()
        return True

    # -- data out ----------------------------------------------------------------------------------------------------
    def drain(self) -> list[Sample]:
        """Timer slot: take the collector's batch, update the latest values, emit it once (if non-empty)."""
        batch = self.collector.drain()
        if not batch:
            return batch
        batch = [s for s in batch if s.endpoint in self.monitored]
        for sample in batch:
            self.latest[sample.endpoint] = sample
            self.health[sample.endpoint] = sample.health
            if sample.derived is not None and sample.derived.model_version:
                self.versions[sample.endpoint] = sample.derived.model_version
        if self.history is not None:
            self.history.put(batch)
        if batch:
            self.samplesArrived.emit(batch)
        return batch

    def snapshot(self, name: str, names: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self.collector.snapshot(name, names)

    def health_of(self, name: str) -> HealthStatus:
        return self.health.get(name, HealthStatus(HealthState.UNKNOWN, "not scraped yet"))

    # -- events ------------------------------------------------------------------------------------------------------
    def _on_event(self, event: MonitorEvent) -> None:  # collector thread: only emit
        self._eventFromCollector.emit(event)

    def _deliver_event(self, event: MonitorEvent) -> None:
        if event.kind == "source":
            self.sourceProblem.emit(event.detail[:1].upper() + event.detail[1:])
            return
        if event.kind == "collector":
            if getattr(self.collector, "failure", ""):
                # collection stopped: no sample will come to change the last health the rows show
                self.health.update({n: h for n, h in self.collector.health().items() if n in self.monitored})
            self.collectorProblem.emit(event.detail[:1].upper() + event.detail[1:])
            return
        if event.endpoint not in self.monitored:
            return
        if event.kind in ("version", "restart"):
            self.markers.setdefault(event.endpoint, collections.deque(maxlen=MAX_MARKERS)).append(event)
            if self.history is not None:
                self.history.put([], [HistoryEvent(event.endpoint, event.at, event.kind, event.detail)])
        self.eventArrived.emit(event)
