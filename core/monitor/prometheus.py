"""Fleet scale through a Prometheus server: query its HTTP API, write its file_sd targets, export a Grafana dashboard.

:class:`PrometheusCollector` is the collector of "Prometheus server" mode: the same samples, health and
events as scraping every ``/metrics`` page, from a dozen queries a round for the whole fleet (the
collection process runs it, so the GUI never decodes a query result).

The PromQL here computes the same series as :mod:`modeldeck.core.monitor.derive`
(same names), so a dashboard can plot either source. Deployments are selected by
the ``deployment`` label that :func:`write_file_sd` attaches to every target.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from modeldeck.core.errors import ModelDeckError
from modeldeck.core.fileio import atomic_write_text
from modeldeck.core.monitor.collector import CollectorBase, Endpoint, MonitorEvent, Sample
from modeldeck.core.monitor.derive import SERIES, Derived
from modeldeck.core.monitor.health import HealthPolicy, HealthState, HealthStatus, HealthTracker
from modeldeck.core.monitor.scrape import ScrapeError, _watchdog
from modeldeck.core.monitor.series import DEFAULT_RETENTION

log = logging.getLogger(__name__)

_NOT_SCRAPES = 'route!="/metrics"'
MAX_ANSWER = 64 << 20  # bytes of one API answer
# fleet_queries' answers besides the series: is Prometheus scraping it, when did it start, which model it serves
_UP, _STARTED, _INFO = "_up", "_started", "_info"


def queries(deployment: str, window: str = "1m") -> dict[str, str]:
    """PromQL per series name (the names of ``derive.SERIES``) for one deployment (an exact label match, which
    the Grafana dashboard's ``$deployment`` variable replaces)."""
    return _series_queries(f"deployment={json.dumps(deployment)}", window)  # Go's string escaping is JSON's


def _series_queries(matcher: str, window: str) -> dict[str, str]:
    """PromQL per series name for the deployments ``matcher`` selects: one result per ``deployment`` label."""
    sel = "{" + matcher + "}"
    req = "{" + f"{matcher},{_NOT_SCRAPES}" + "}"
    total = f"sum by (deployment) (rate(modeldeck_requests_total{req}[{window}]))"

    def by_status(prefix: str) -> str:
        status = "{" + f'{matcher},{_NOT_SCRAPES},status=~"{prefix}.."' + "}"
        # a deployment with no 5xx series at all has a rate of 0, not "no data"
        return f"(sum by (deployment) (rate(modeldeck_requests_total{status}[{window}])) or 0 * {total}) / {total}"

    def quantile(q: float) -> str:
        bucket = f"rate(modeldeck_request_duration_seconds_bucket{req}[{window}])"
        return f"histogram_quantile({q}, sum by (deployment, le) ({bucket}))"

    def mean(name: str) -> str:
        return (
            f"sum by (deployment) (rate({name}_sum{sel}[{window}]))"
            f" / sum by (deployment) (rate({name}_count{sel}[{window}]))"
        )

    return {
        "request_rate": total,
        "error_rate": by_status("5"),
        "client_error_rate": by_status("4"),
        "latency_p50": quantile(0.5),
        "latency_p95": quantile(0.95),
        "latency_p99": quantile(0.99),
        "inference_mean": mean("modeldeck_inference_duration_seconds"),
        "batch_size_mean": mean("modeldeck_batch_size"),
        "cpu_percent": f"100 * sum by (deployment) (rate(process_cpu_seconds_total{sel}[{window}]))",
        "resident_memory": f"sum by (deployment) (process_resident_memory_bytes{sel})",
        "uptime": f"max by (deployment) (time() - process_start_time_seconds{sel})",
        "in_flight": (
            f"sum by (deployment) (modeldeck_requests_in_flight{sel})"
            f" - count by (deployment) (modeldeck_requests_in_flight{sel})"
        ),
    }


def fleet_queries(deployments: Iterable[str], window: str = "1m") -> dict[str, str]:
    """PromQL per series name for many deployments at once: one result per ``deployment`` label.

    A fleet costs the same dozen queries as one deployment, instead of a dozen per deployment.
    """
    regex = "|".join(re.escape(name) for name in sorted(set(deployments)))  # RE2 takes Python's escapes
    matcher = f"deployment=~{json.dumps(regex)}"
    sel = "{" + matcher + "}"
    return {  # health first: on a slow server the pool takes them before the figures
        _UP: f"max by (deployment) (up{sel})",
        _STARTED: f"max by (deployment) (process_start_time_seconds{sel})",
        _INFO: f"modeldeck_model_info{sel}",
        **_series_queries(matcher, window),
    }


class PrometheusError(ModelDeckError):
    """The Prometheus server did not answer, or refused the query."""


@dataclass(frozen=True)
class PrometheusClient:
    """A small client for ``/api/v1/query`` and ``/api/v1/query_range``; every call ends within ``timeout``."""

    base_url: str
    timeout: float = 5.0

    def _get(self, path: str, params: Mapping[str, str], *, post: bool = False) -> Any:
        """The ``data`` of one API answer; ``post`` sends the parameters as a form (no URL length limit).

        The whole exchange ends within ``timeout``: socket timeouts bound each read only, so the scrapes'
        watchdog shuts the socket down at the deadline (a server that trickles cannot hold a query).
        """
        query = urllib.parse.urlencode(params)
        parts = urllib.parse.urlsplit(f"{self.base_url.rstrip('/')}{path}")
        try:
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("not an http(s) URL with a host")
            port = parts.port
        except ValueError as exc:
            raise PrometheusError(
                f"{self.base_url!r} is not a Prometheus server URL: {exc}", hint="e.g. http://127.0.0.1:9090"
            ) from exc
        conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_class(parts.hostname, port, timeout=self.timeout)
        expired = threading.Event()

        def abort() -> None:
            expired.set()
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

        headers = {"Accept": "application/json", "Connection": "close"}
        if post:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        watch = _watchdog.schedule(self.timeout, abort)
        try:
            conn.request(
                "POST" if post else "GET",
                parts.path if post else f"{parts.path}?{query}",
                body=query.encode() if post else None,
                headers=headers,
            )
            response = conn.getresponse()
            body = response.read(MAX_ANSWER + 1)
            status = response.status
        except (http.client.HTTPException, OSError, ValueError) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                raise PrometheusError(
                    f"Prometheus at {self.base_url} did not answer within {self.timeout:g} s",
                    hint="is the server overloaded, or is this URL something else?",
                ) from exc
            reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc) or repr(exc)
            raise PrometheusError(
                f"Prometheus at {self.base_url} unreachable: {reason}", hint="check the Prometheus URL in settings"
            ) from exc
        finally:
            _watchdog.cancel(watch)
            conn.close()
        if expired.is_set():  # cut short at the deadline: a truncated answer must not pass
            raise PrometheusError(f"Prometheus at {self.base_url} did not answer within {self.timeout:g} s")
        if len(body) > MAX_ANSWER:
            raise PrometheusError(f"Prometheus at {self.base_url} answered more than {MAX_ANSWER >> 20} MiB")
        if status != 200:  # 400/422 carry Prometheus' own error message
            try:
                detail = json.loads(body).get("error", "")
            except (ValueError, AttributeError):
                detail = ""
            raise PrometheusError(f"Prometheus refused the query (HTTP {status}): {detail}".rstrip(": "))
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PrometheusError(
                f"{self.base_url} did not answer JSON; is it a Prometheus server?",
                hint="check the Prometheus URL in settings",
            ) from exc
        if not isinstance(doc, dict) or "status" not in doc:
            raise PrometheusError(
                f"{self.base_url} answered JSON that is not the Prometheus API; is it a Prometheus server?",
                hint="check the Prometheus URL in settings",
            )
        if doc.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed: {doc.get('error', 'unknown error')}")
        return doc.get("data")

    def query(self, promql: str, at: float | None = None, *, post: bool = False) -> list[tuple[dict[str, str], float]]:
        """An instant query: ``[(labels, value), ...]`` (scalars come back with empty labels)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params, post=post)
        try:
            if data["resultType"] in ("scalar", "string"):
                return [({}, float(data["result"][1]))]
            return [(r.get("metric", {}), float(r["value"][1])) for r in data["result"]]
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise PrometheusError(f"{self.base_url} answered a query with something that is not a result") from exc

    def query_range(
        self, promql: str, start: float, end: float, step: float, *, post: bool = False
    ) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        """A range query: ``[(labels, t, v), ...]`` with float arrays (``NaN`` where Prometheus says so)."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        data = self._get("/api/v1/query_range", params, post=post)
        out = []
        try:
            for r in data["result"]:
                values = r.get("values", [])
                t = np.array([float(p[0]) for p in values])
                v = np.array([float(p[1]) for p in values])
                out.append((r.get("metric", {}), t, v))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise PrometheusError(
                f"{self.base_url} answered a range query with something that is not a result"
            ) from exc
        return out

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets (``labels``, ``health``, ``lastError``, …) as Prometheus reports them."""
        data = self._get("/api/v1/targets", {"state": "active"})
        active = data.get("activeTargets", []) if isinstance(data, dict) else []
        return [t for t in active if isinstance(t, dict)]

    def series(
        self, deployment: str, start: float, end: float, step: float = 1.0, window: str = "1m"
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The dashboard series of one deployment, by the same names as the collector's ring buffers."""
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, promql in queries(deployment, window).items():
            result = self.query_range(promql, start, end, step)
            out[name] = (result[0][1], result[0][2]) if result else (np.array([]), np.array([]))
        return out

    def latest(self, deployment: str, window: str = "1m") -> dict[str, float]:
        """The current value of every series (NaN when Prometheus has none yet)."""
        out = {}
        for name, promql in queries(deployment, window).items():
            result = self.query(promql)
            out[name] = result[0][1] if result else math.nan
        return out


@dataclass
class _Watched:
    endpoint: Endpoint
    tracker: HealthTracker
    live: bool = False  # sampled every round (after its backfill, if one is wanted)
    backfilling: bool = False
    started: float | None = None  # the process start time Prometheus reported last round (a change is a restart)
    model: tuple[str, str, str] | None = None  # (name, version, bundle sha256) last round


@dataclass(frozen=True)
class Backfill:
    """What Prometheus kept of an endpoint from before it was watched: ``values[series]`` aligned with ``t``."""

    endpoint: str
    t: np.ndarray
    values: dict[str, np.ndarray]


class PrometheusCollector(CollectorBase[_Watched]):
    """:class:`~modeldeck.core.monitor.collector.Collector`'s API with the figures queried from a Prometheus server.

    Endpoints are ``deployment`` labels (their URL is Prometheus' business: :func:`write_file_sd`). Every
    ``interval`` one round of instant queries (:func:`fleet_queries`: the same 15 for a whole fleet, all at
    one evaluation time) gives each endpoint a :class:`Sample` with the figures, health rules and events of
    direct scraping. Queries run on ``max_workers`` threads, each bounded by ``timeout``; one that has not
    answered by then only leaves its own series empty for that round and is not sent again while it runs,
    so a slow query never delays the others or the next round.

    Before its first sample, a new endpoint gets ``backfill`` seconds of history (range queries, at most
    ``backfill_points`` points, a 10 s budget), so plots show what Prometheus kept from before.

    What Prometheus says becomes health: ``up == 0`` is a failed scrape (down, with Prometheus' last error);
    no ``up`` series is unknown ("Prometheus has no scrape target …"); a server that does not answer, or answers
    something that is not its API, makes every endpoint unknown with the reason, reported once as a
    :class:`MonitorEvent` of kind ``"source"`` (and once more, with an empty detail, when it answers again).
    """

    thread_name = "modeldeck-prometheus"

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        url: str,
        interval: float = 1.0,
        timeout: float | None = None,
        window: float = 60.0,
        retention: int = DEFAULT_RETENTION,
        policy: HealthPolicy | None = None,
        on_event: Callable[[MonitorEvent], None] | None = None,
        max_workers: int = 4,
        max_pending: int = 10_000,
        backfill: float = 0.0,
        backfill_points: int = 600,
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
        self.url = url
        self.range = f"{max(window, 1.0):g}s"
        self.backfill = backfill
        self.backfill_points = max(1, backfill_points)
        self.client = PrometheusClient(url, timeout=self.timeout)
        self._backfills: deque[Backfill] = deque(maxlen=1000)
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="modeldeck-promql")
        self._backfill_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modeldeck-backfill")
        self._in_flight: dict[str, Future[list[tuple[dict[str, str], float]]]] = {}
        self._problem = ""  # why Prometheus gave nothing last round ('' while it answers)

    def _new_state(self, endpoint: Endpoint) -> _Watched:
        return _Watched(endpoint, HealthTracker(self.policy))

    def _pools(self) -> list[ThreadPoolExecutor]:
        return [self._pool, self._backfill_pool]

    # -- what the UI reads -----------------------------------------------------------------------------------------

    def drain_backfill(self) -> list[Backfill]:
        """Every backfill since the last call (already in :attr:`series`; the collection process forwards them)."""
        with self._lock:
            out = list(self._backfills)
            self._backfills.clear()
        return out

    def add_endpoint(self, endpoint: Endpoint) -> bool:
        """Query ``endpoint.name`` from the next round on (after its backfill); True if anything changed."""
        with self._lock:
            state = self._states.get(endpoint.name)
            if state is not None:
                changed = state.endpoint != endpoint
                state.endpoint = endpoint  # the same deployment label: nothing else changes
                return changed
            self._states[endpoint.name] = self._new_state(endpoint)
            return True

    # -- the rounds ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug must not end collection; the next round tries again
                log.exception("a round of Prometheus queries failed")
            next_tick += self.interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind: skip missed rounds instead of bursting
                next_tick = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def tick(self) -> None:
        """One round: start the backfill of new endpoints, query the live ones (public so tests drive the clock)."""
        with self._lock:
            fresh = [st for st in self._states.values() if not st.live and not st.backfilling]
            for st in fresh:
                st.live, st.backfilling = not self.backfill, bool(self.backfill)
            live = {name: st for name, st in self._states.items() if st.live}
        if fresh and self.backfill:
            try:
                self._backfill_pool.submit(self._load_backfill, fresh)
            except RuntimeError:  # stop() shut the pool down
                return
        if live:
            self._round(live)

    def _round(self, live: dict[str, _Watched]) -> None:
        at = round(time.time(), 3)
        futures = {}
        for series, promql in fleet_queries(live, self.range).items():
            running = self._in_flight.get(series)
            if running is not None and not running.done():
                continue  # still waiting on last round's: this series stays empty this round
            try:
                futures[series] = self._in_flight[series] = self._pool.submit(self.client.query, promql, at, post=True)
            except RuntimeError:
                return
        done, _ = wait(futures.values(), timeout=self.timeout + 0.05)
        answers: dict[str, list[tuple[dict[str, str], float]]] = {}
        errors: list[str] = []
        for series, future in futures.items():
            if future not in done:
                continue
            try:
                answers[series] = future.result()
            except PrometheusError as exc:
                errors.append(exc.one_line())
            except Exception as exc:  # a bug: this series stays empty, the others go on
                log.exception("query of %s failed", series)
                errors.append(f"internal error: {type(exc).__name__}: {exc}")
        if not answers:
            problem = errors[0] if errors else f"Prometheus at {self.url} did not answer within {self.timeout:g} s"
            self._set_problem(problem, at)
            for st in live.values():
                self._record_unknown(st, at, problem)
            return
        self._set_problem("", at)
        by_deployment: dict[str, dict[str, float]] = {}
        for series in SERIES:
            for labels, value in answers.get(series, ()):
                by_deployment.setdefault(labels.get("deployment", ""), {})[series] = value
        up = {labels.get("deployment", ""): v for labels, v in answers[_UP]} if _UP in answers else None
        started = {labels.get("deployment", ""): v for labels, v in answers.get(_STARTED, ())}
        info = {labels.get("deployment", ""): labels for labels, _ in answers.get(_INFO, ())}
        last_errors = self._last_errors() if up is not None and any(up.get(n) == 0 for n in live) else {}
        for name, st in live.items():
            if up is not None and name not in up:
                self._record_unknown(
                    st,
                    at,
                    f"Prometheus has no scrape target with deployment={json.dumps(name)}"
                    " (does its configuration read ModelDeck's file_sd targets?)",
                )
            elif up is not None and up[name] == 0:
                error = last_errors.get(name, "")
                self._record_failure(st, at, f"Prometheus cannot scrape it{': ' + error if error else ''}")
            else:
                figures = by_deployment.get(name, {})
                values = {series: figures.get(series, math.nan) for series in SERIES}
                self._record(st, at, values, started.get(name), info.get(name))

    def _last_errors(self) -> dict[str, str]:
        """Prometheus' own reason per deployment it fails to scrape ({} if it will not say within the timeout)."""
        try:
            targets = self.client.targets()
        except PrometheusError as exc:
            log.debug("no target list from %s: %s", self.url, exc)
            return {}
        out = {}
        for target in targets:
            labels = target.get("labels")
            if isinstance(labels, dict) and target.get("lastError"):
                out[str(labels.get("deployment", ""))] = str(target["lastError"])[:300]
        return out

    def _record(
        self,
        st: _Watched,
        at: float,
        values: dict[str, float],
        started: float | None,
        info: Mapping[str, str] | None,
    ) -> None:
        name = st.endpoint.name
        events: list[MonitorEvent] = []
        # our file_sd puts a 'version' label on the target, so Prometheus renames the runtime's own to exported_version
        model = (
            (info.get("name", ""), info.get("exported_version", info.get("version", "")), info.get("bundle_sha256", ""))
            if info is not None
            else None
        )
        with self._lock:
            if self._states.get(name) is not st:  # removed while the round ran
                return
            restarted = started is not None and st.started is not None and abs(started - st.started) > 0.5
            version_changed = model is not None and st.model is not None and model != st.model
            if started is not None:
                st.started = started
            if model is not None:
                st.model = model
            shown = st.model or ("", "", "")
            derived = Derived(
                at=at,
                **values,
                model_name=shown[0],
                model_version=shown[1],
                bundle_sha256=shown[2],
                restarted=restarted,
                version_changed=version_changed,
            )
            before = st.tracker.status
            health = st.tracker.observe(time.monotonic(), values)
            self.series.append(name, at, values)
            self._pending.append(Sample(name, at, derived, health))
        if restarted:
            events.append(MonitorEvent("restart", name, at, "process start time changed"))
        if version_changed:
            events.append(MonitorEvent("version", name, at, f"{shown[0]} version {shown[1]}"))
        if health != before:
            events.append(MonitorEvent("health", name, at, f"{health.state}: {health.reason}".rstrip(": ")))
        self._emit(events)

    def _record_failure(self, st: _Watched, at: float, reason: str) -> None:
        self._record_without_figures(st, at, reason, lambda: st.tracker.unreachable(reason))

    def _record_unknown(self, st: _Watched, at: float, reason: str) -> None:
        def unknown() -> HealthStatus:
            st.tracker.status = HealthStatus(HealthState.UNKNOWN, reason)
            return st.tracker.status

        self._record_without_figures(st, at, reason, unknown)

    def _record_without_figures(self, st: _Watched, at: float, reason: str, judge: Callable[[], HealthStatus]) -> None:
        name = st.endpoint.name
        with self._lock:
            if self._states.get(name) is not st:
                return
            before = st.tracker.status
            health = judge()
            self.series.append(name, at, dict.fromkeys(SERIES, math.nan))  # a gap in every plot
            self._pending.append(Sample(name, at, None, health, reason))
        if health != before:
            self._emit([MonitorEvent("health", name, at, f"{health.state}: {health.reason}")])

    def _set_problem(self, problem: str, at: float) -> None:
        with self._lock:
            if problem == self._problem:
                return
            self._problem = problem
        self._emit([MonitorEvent("source", "", at, problem)])

    def _load_backfill(self, states: list[_Watched]) -> None:
        """Range queries for ``states`` (one per series for all of them); they go live afterwards, whatever happens."""
        names = [st.endpoint.name for st in states]
        end = time.time()
        start = end - self.backfill
        step = max(self.interval, self.backfill / self.backfill_points)
        n = int((end - start) // step) + 1
        grid = start + step * np.arange(n)
        columns: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
        client = PrometheusClient(self.url, timeout=5.0)
        deadline = time.monotonic() + 10.0
        try:
            for series, promql in fleet_queries(names, self.range).items():
                if series not in SERIES:
                    continue
                if self._stop.is_set() or time.monotonic() > deadline:
                    log.info("backfill from %s cut short after 10 s", self.url)
                    break
                for labels, t, v in client.query_range(promql, start, end, step, post=True):
                    column = columns.get(labels.get("deployment", ""))
                    if column is None:
                        continue
                    index = np.rint((t - start) / step).astype(int)
                    inside = (index >= 0) & (index < n)
                    column[series] = np.full(n, math.nan)
                    column[series][index[inside]] = v[inside]
        except PrometheusError as exc:
            log.info("no backfill from %s: %s", self.url, exc.one_line())
            columns = {}
        except Exception:  # a bug: no history, but the endpoints must still go live
            log.exception("backfill from %s failed", self.url)
            columns = {}
        with self._lock:
            for st in states:
                name = st.endpoint.name
                st.backfilling, st.live = False, True
                column = columns.get(name)
                if self._states.get(name) is not st or not column:
                    continue
                values = {series: column.get(series, np.full(n, math.nan)) for series in SERIES}
                known = np.zeros(n, dtype=bool)
                for v in values.values():
                    known |= np.isfinite(v)
                if known.any():
                    backfill = Backfill(name, grid[known], {series: v[known] for series, v in values.items()})
                    self.series.extend(name, backfill.t, backfill.values)
                    self._backfills.append(backfill)


@dataclass(frozen=True)
class ScrapeTarget:
    """One deployment as Prometheus should scrape it (``address`` is ``host:port``)."""

    deployment: str
    address: str
    model: str = ""
    version: str = ""
    metrics_path: str = "/metrics"


def write_file_sd(path: Path, deployments: Iterable[ScrapeTarget]) -> None:
    """Write Prometheus file_sd JSON for ``deployments`` atomically (Prometheus never reads half a file).

    Each target carries ``deployment``, ``model`` and ``version`` labels; a
    non-default metrics path is passed as ``__metrics_path__``.
    """
    groups = []
    for d in deployments:
        if not d.address or "/" in d.address or ":" not in d.address:
            raise ScrapeError(f"scrape target {d.address!r} of {d.deployment!r} is not host:port")
        labels = {"deployment": d.deployment, "model": d.model, "version": d.version}
        if d.metrics_path != "/metrics":
            labels["__metrics_path__"] = d.metrics_path
        groups.append({"targets": [d.address], "labels": labels})
    atomic_write_text(path, json.dumps(groups, indent=2), mode=0o644)  # Prometheus often runs as another user


_PANELS = (
    ("Throughput", "request_rate", "reqps"),
    ("Errors (5xx)", "error_rate", "percentunit"),
    ("Client errors (4xx)", "client_error_rate", "percentunit"),
    ("Latency", ("latency_p50", "latency_p95", "latency_p99"), "s"),
    ("Inference time (mean)", "inference_mean", "s"),
    ("Batch size (mean)", "batch_size_mean", "short"),
    ("CPU", "cpu_percent", "percent"),
    ("Resident memory", "resident_memory", "bytes"),
    ("Uptime", "uptime", "s"),
)


def grafana_dashboard(title: str = "ModelDeck deployments", *, window: str = "1m") -> dict[str, Any]:
    """A Grafana dashboard (JSON model) with ModelDeck's panels and a ``deployment`` variable.

    Import it in Grafana and pick the Prometheus data source when asked (``${DS_PROMETHEUS}``).
    """
    marker = "__DEPLOYMENT__"
    q = queries(marker, window)
    panels = []
    for i, (panel_title, names, unit) in enumerate(_PANELS):
        names = (names,) if isinstance(names, str) else names
        targets = [
            {
                "refId": chr(ord("A") + j),
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                "expr": q[name].replace(json.dumps(marker), '"$deployment"'),
                "legendFormat": name.removeprefix("latency_") if len(names) > 1 else panel_title,
            }
            for j, name in enumerate(names)
        ]
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": panel_title,
                "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": targets,
            }
        )
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus"}],
        "title": title,
        "uid": "modeldeck-deployments",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "5s",
        "tags": ["modeldeck"],
        "templating": {
            "list": [
                {
                    "name": "deployment",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                    "query": "label_values(modeldeck_model_info, deployment)",
                    "refresh": 2,
                }
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "Version changes",
                    "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
                    "enable": True,
                    "expr": 'count(count_over_time(modeldeck_model_info{deployment="$deployment"}[1m])) > 1',
                }
            ]
        },
        "panels": panels,
    }
