"""Collection against real runtime processes on 127.0.0.1, and endpoints that hang or answer garbage."""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from modeldeck.core.monitor.collector import Collector, Endpoint, MonitorEvent
from modeldeck.core.monitor.derive import derive
from modeldeck.core.monitor.health import HealthState
from modeldeck.core.monitor.scrape import ScrapeError, fetch

from tests.fixtures.monitor import HangingServer, StaticServer, TricklingServer, free_port
from tests.fixtures.runtime import RuntimeProcess, make_iris_bundle, make_sklearn_bundle, start_runtime


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def send(url: str, body: Any, n: int) -> list[float]:
    """``n`` sequential POSTs to /invocations; client-side seconds per request."""
    seconds = []
    content = json.dumps(body).encode()
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            start = time.perf_counter()
            client.post(f"{url}/invocations", content=content, headers={"Content-Type": "application/json"})
            seconds.append(time.perf_counter() - start)
    return seconds


class Events:
    """Thread-safe record of collector events (they arrive on collector threads)."""

    def __init__(self) -> None:
        self.items: list[tuple[float, MonitorEvent]] = []
        self.lock = threading.Lock()

    def __call__(self, event: MonitorEvent) -> None:
        with self.lock:
            self.items.append((time.monotonic(), event))

    def of(self, endpoint: str, kind: str) -> list[tuple[float, MonitorEvent]]:
        with self.lock:
            return [(t, e) for t, e in self.items if e.endpoint == endpoint and e.kind == kind]


def test_rates_errors_and_latency_match_what_was_sent(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    bundle = runtime_bundles["iris"]
    good = {"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}}
    bad = {"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}}
    before = fetch(f"{iris_runtime.url}/metrics")
    latencies = send(iris_runtime.url, good, 200) + send(iris_runtime.url, bad, 20)
    after = fetch(f"{iris_runtime.url}/metrics")

    d = derive(before, after)
    elapsed = after.monotonic - before.monotonic
    assert d.request_rate * elapsed == pytest.approx(220, abs=0.01)  # the collector's own scrapes not counted
    assert d.client_error_rate == pytest.approx(20 / 220)
    assert d.error_rate == 0.0
    assert 0 < d.latency_p50 <= d.latency_p95 <= d.latency_p99 <= max(latencies)
    assert d.inference_mean > 0 and d.batch_size_mean == pytest.approx(1.0)
    assert d.cpu_percent >= 0 and d.resident_memory > 10e6 and d.uptime > 0
    assert (d.model_name, d.model_version) == ("iris", "3") and len(d.bundle_sha256) == 64
    assert not d.restarted and not d.version_changed


def test_server_errors_are_counted_apart_from_client_errors(
    runtime_bundles: dict[str, Any], runtime_processes: list[RuntimeProcess], tmp_path: Path
) -> None:
    rp = start_runtime(runtime_bundles["fragile"], tmp_path / "fragile")
    runtime_processes.append(rp)
    cols = ["a", "b", "c", "d"]
    before = fetch(f"{rp.url}/metrics")
    send(rp.url, {"dataframe_split": {"columns": cols, "data": [[1, 2, 3, 4]] * 3}}, 12)
    send(rp.url, {"dataframe_split": {"columns": cols, "data": [[1, 2, 3, 4]]}}, 4)  # onnxruntime fails: 500
    d = derive(before, fetch(f"{rp.url}/metrics"))
    assert d.error_rate == pytest.approx(4 / 16)
    assert d.client_error_rate == 0.0


def test_hanging_endpoint_turns_down_within_two_intervals_without_delaying_the_other(
    iris_runtime: RuntimeProcess, hanging_endpoint: HangingServer
) -> None:
    interval = 0.5
    events = Events()
    collector = Collector(
        [Endpoint("hangs", hanging_endpoint.url), Endpoint("iris", f"{iris_runtime.url}/metrics")],
        interval=interval,
        on_event=events,
    )
    started = time.monotonic()
    collector.start()
    try:
        wait_until(lambda: bool(events.of("hangs", "health")), 5, "the hanging endpoint to change health")
        first_down, event = events.of("hangs", "health")[0]
        assert (
            event.detail.startswith("down:") and "did not finish answering" in event.detail
        ) or "timed out" in event.detail
        assert first_down - started <= 2 * interval
        time.sleep(2.5)
        samples = collector.drain()
    finally:
        assert collector.stop(timeout=5)
    iris = [s for s in samples if s.endpoint == "iris"]
    assert all(s.derived is not None and s.health.state is HealthState.OK for s in iris)
    gaps = [b.at - a.at for a, b in itertools.pairwise(iris)]
    assert len(iris) >= 5 and max(gaps) < 1.5 * interval  # the hang never held the runtime's scrapes back
    hangs = [s for s in samples if s.endpoint == "hangs"]
    assert hangs and all(s.derived is None and s.health.state is HealthState.DOWN for s in hangs)
    t, v = collector.snapshot("iris")["request_rate"]
    assert len(t) == len(v) >= 5


def test_many_hanging_endpoints_do_not_delay_a_healthy_one(
    iris_runtime: RuntimeProcess, hanging_endpoint: HangingServer
) -> None:
    interval = 0.5
    endpoints = [Endpoint(f"hangs-{i}", hanging_endpoint.url) for i in range(12)]
    collector = Collector([*endpoints, Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=interval)
    collector.start()
    try:
        time.sleep(2.6)
        samples = collector.drain()
    finally:
        assert collector.stop(timeout=5)
    iris = [s for s in samples if s.endpoint == "iris"]
    assert len(iris) >= 5 and all(s.derived is not None for s in iris)
    assert max(b.at - a.at for a, b in itertools.pairwise(iris)) < 1.5 * interval
    assert all(collector.health()[e.name].state is HealthState.DOWN for e in endpoints)


def test_an_endpoint_that_trickles_bytes_cannot_hold_a_scrape_past_its_timeout(
    trickling_endpoint: TricklingServer,
) -> None:
    start = time.monotonic()
    with pytest.raises(ScrapeError, match=r"did not answer within 0\.5 s"):
        fetch(trickling_endpoint.url, timeout=0.5)
    assert time.monotonic() - start < 1.5


def test_garbage_endpoint_is_down_with_a_parse_reason(static_endpoint: StaticServer) -> None:
    static_endpoint.body = b"<html>hello</html>\n"
    collector = Collector([Endpoint("junk", static_endpoint.url)], interval=0.2)
    collector.start()
    try:
        wait_until(lambda: collector.health()["junk"].state is HealthState.DOWN, 5, "garbage endpoint to be down")
    finally:
        assert collector.stop(timeout=5)
    assert "not Prometheus text format" in collector.health()["junk"].reason


def test_http_errors_and_oversized_pages_are_scrape_errors(static_endpoint: StaticServer) -> None:
    static_endpoint.status = 500
    static_endpoint.body = b"oops"
    with pytest.raises(ScrapeError, match="HTTP 500"):
        fetch(static_endpoint.url, timeout=2)
    static_endpoint.status = 200
    static_endpoint.body = b"# big\n" * 100_000
    with pytest.raises(ScrapeError, match="more than 1000 bytes"):
        fetch(static_endpoint.url, timeout=2, max_bytes=1000)


def test_refused_connection_is_a_scrape_error_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(ScrapeError, match="unreachable"):
        fetch(f"http://127.0.0.1:{free_port()}/metrics", timeout=2)
    assert time.monotonic() - start < 2


def test_restart_with_a_new_version_is_detected_and_health_recovers_by_itself(
    runtime_processes: list[RuntimeProcess], tmp_path: Path
) -> None:
    v3 = make_iris_bundle(tmp_path / "iris3")
    v4 = make_sklearn_bundle(
        tmp_path / "iris4", v3.model, v3.X, v3.feature_names, name="iris", version="4", task="classification"
    )
    port = free_port()
    rp = start_runtime(v3.path, tmp_path / "run1", "--port", str(port))
    runtime_processes.append(rp)
    events = Events()
    collector = Collector([Endpoint("iris", f"http://127.0.0.1:{port}/metrics")], interval=0.3, on_event=events)
    collector.start()
    try:
        wait_until(lambda: collector.health()["iris"].state is HealthState.OK, 10, "first healthy scrape")
        rp.terminate()
        wait_until(lambda: collector.health()["iris"].state is HealthState.DOWN, 5, "down after the runtime stopped")
        rp2 = start_runtime(v4.path, tmp_path / "run2", "--port", str(port))
        runtime_processes.append(rp2)
        wait_until(lambda: collector.health()["iris"].state is HealthState.OK, 10, "recovery after restart")
        wait_until(lambda: bool(events.of("iris", "version")), 5, "the version event")
    finally:
        assert collector.stop(timeout=5)
    assert events.of("iris", "restart")
    assert "iris version 4" in events.of("iris", "version")[0][1].detail
    # A new reason while down is an event of its own ("connection refused", then "did not answer" while the new
    # runtime loads on a slow machine): the states, not the events, go ok -> down -> ok.
    states = [e.detail.split(":")[0] for _, e in events.of("iris", "health")]
    assert [state for state, _ in itertools.groupby(states)] == ["ok", "down", "ok"], states
    samples = collector.drain()
    assert any(s.derived is not None and s.derived.restarted for s in samples)
    assert not any(
        s.derived is not None and not math.isnan(s.derived.request_rate) and s.derived.request_rate < 0 for s in samples
    )


def test_scrape_deadlines_leave_nothing_behind_after_successes_and_timeouts(
    iris_runtime: RuntimeProcess, hanging_endpoint: HangingServer
) -> None:
    from modeldeck.core.monitor import scrape

    for _ in range(30):
        fetch(f"{iris_runtime.url}/metrics", timeout=2)
    for _ in range(3):
        with pytest.raises(ScrapeError):
            fetch(hanging_endpoint.url, timeout=0.1)
    assert scrape._watchdog._callbacks == {}  # no callback kept for a finished scrape, timed out or not


def test_collector_keeps_a_fixed_number_of_window_points_per_endpoint(iris_runtime: RuntimeProcess) -> None:
    collector = Collector([Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=0.05, window=0.6)
    collector.start()
    try:
        wait_until(lambda: len(collector.drain()) >= 0 and collector.series.snapshot("iris") != {}, 5, "samples")
        time.sleep(1.5)  # 30 scrapes, 2.5 windows
    finally:
        assert collector.stop(timeout=5)
    history = collector._states["iris"].history  # white-box: the memory bound is the point of this test
    assert 2 <= len(history) <= 14
    assert all(
        set(s.samples)
        <= {"modeldeck_request_duration_seconds_bucket", "process_start_time_seconds", "modeldeck_start_time_seconds"}
        for s in history
    )
