"""Prometheus-server mode of the collection process, against a REAL ``prometheus`` on loopback scraping real
runtimes: the child queries the server, the parent gets the same samples as when scraping."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from modeldeck.core.monitor.collector import Endpoint, Sample
from modeldeck.core.monitor.derive import SERIES
from modeldeck.core.monitor.health import HealthState
from modeldeck.core.monitor.process import CollectorProcess
from modeldeck.core.monitor.prometheus import (
    Backfill,
    PrometheusClient,
    PrometheusCollector,
    ScrapeTarget,
    fleet_queries,
    write_file_sd,
)
from modeldeck.core.monitor.series import SeriesStore
from modeldeck.core.monitor.worker import MonitorProcessError, backfill_from_wire, backfill_to_wire

from tests.fixtures.monitor import PrometheusServer, StaticServer, TricklingServer, free_port
from tests.fixtures.runtime import RuntimeProcess
from tests.test_monitor_live import Events, send, wait_until

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"  # the session's Prometheus keeps other tests' deployments


def scrape_by_prometheus(server: PrometheusServer, *targets: tuple[str, str]) -> None:
    write_file_sd(server.sd_file, [ScrapeTarget(name, address, "iris", "3") for name, address in targets])


def server_answers(server: PrometheusServer, name: str, at: float, window: str) -> dict[str, float]:
    """What the server says for ``name`` at ``at``, by the queries the child sends."""
    client = PrometheusClient(server.url, timeout=5)
    out = {}
    for series, promql in fleet_queries([name], window).items():
        if series in SERIES:
            answer = [v for labels, v in client.query(promql, at) if labels.get("deployment") == name]
            out[series] = answer[0] if answer else math.nan
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_figures_in_prometheus_mode_are_what_the_server_answers(
    prometheus_server: PrometheusServer, iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    name = unique("iris")
    scrape_by_prometheus(prometheus_server, (name, iris_runtime.url.removeprefix("http://")))
    bundle = runtime_bundles["iris"]
    body = {"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}}
    collector = CollectorProcess(
        [Endpoint(name, f"{iris_runtime.url}/metrics")], interval=0.5, window=10.0, prometheus_url=prometheus_server.url
    )
    collector.start()
    samples: list[Sample] = []
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:  # bounded load until the server has rates and percentiles of it
            send(iris_runtime.url, body, 10)
            samples += collector.drain()
            busy = [s for s in samples if s.derived and s.derived.request_rate > 0 and s.derived.latency_p99 > 0]
            if len(busy) >= 3:
                break
        else:
            pytest.fail(f"no traffic seen through Prometheus in 40 s: {samples[-3:]}")
        t = collector.snapshot(name, ["request_rate"])["request_rate"][0]
    finally:
        assert collector.stop(timeout=5)

    # the server answers the same at the same time (unless a scrape landed in between: then the next one)
    for sample in reversed(busy):
        assert sample.derived is not None
        server = server_answers(prometheus_server, name, sample.at, "10s")
        ours = sample.derived.values()
        if all(same(ours[k], server[k]) for k in SERIES):
            break
    else:
        pytest.fail(f"never the server's figures: ours {ours}, server {server}")
    assert sample.derived.model_name == "iris" and sample.derived.model_version
    assert sample.derived.resident_memory > 10e6 and sample.derived.uptime > 0
    assert sample.health.state is HealthState.OK and collector.health()[name].state is HealthState.OK
    assert sample.at in t and np.all(np.diff(t) > 0)


def test_history_the_server_kept_from_before_fills_the_ring_buffers(
    prometheus_server: PrometheusServer, iris_runtime: RuntimeProcess
) -> None:
    name = unique("iris")
    scrape_by_prometheus(prometheus_server, (name, iris_runtime.url.removeprefix("http://")))
    client = PrometheusClient(prometheus_server.url, timeout=5)
    seen = f"count_over_time(up{{deployment={json.dumps(name)}}}[1m])"
    wait_until(lambda: any(v >= 4 for _, v in client.query(seen)), 30, "four scrapes of the new target")
    opened = time.time()
    collector = CollectorProcess(
        [Endpoint(name, f"{iris_runtime.url}/metrics")],
        interval=0.5,
        retention=120,
        prometheus_url=prometheus_server.url,
    )  # the ring buffers hold 60 s: that much is asked for
    collector.start()
    try:
        wait_until(lambda: any(s.derived for s in collector.drain()), 15, "a first live sample")
        t, v = collector.snapshot(name, ["resident_memory"])["resident_memory"]
    finally:
        assert collector.stop(timeout=5)
    before = t < opened
    assert before.sum() >= 3, t
    assert opened - t[0] <= 61 and np.all(np.diff(t) > 0)  # backfill first, then live points after it
    assert np.all(v[before] > 10e6) and (t >= opened).any()


def test_the_drawing_process_never_loads_the_prometheus_client(
    prometheus_server: PrometheusServer, iris_runtime: RuntimeProcess
) -> None:
    name = unique("iris")
    scrape_by_prometheus(prometheus_server, (name, iris_runtime.url.removeprefix("http://")))
    # in a fresh interpreter: this test process has imported the client for other tests
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from modeldeck.core.monitor.collector import Endpoint
        from modeldeck.core.monitor.process import CollectorProcess
        c = CollectorProcess([Endpoint("{name}", "{iris_runtime.url}/metrics")], interval=0.3,
                             prometheus_url="{prometheus_server.url}")
        c.start()
        got = []
        deadline = time.monotonic() + 20
        while len([s for s in got if s.derived is not None]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            got += c.drain()
        c.stop(timeout=5)
        print(json.dumps({{"figures": sum(s.derived is not None for s in got),
                           "memory": max((s.derived.resident_memory for s in got if s.derived), default=0),
                           "loaded": [m for m in sys.modules if m.endswith("monitor.prometheus")]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=40, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["figures"] >= 3 and result["memory"] > 10e6
    assert result["loaded"] == []


@pytest.mark.parametrize(
    ("server", "why"),
    [("absent", "unreachable"), ("a wiki", "did not answer JSON; is it a Prometheus server?")],
)
def test_a_server_that_is_not_there_or_not_prometheus_makes_every_endpoint_unknown_saying_why(
    static_endpoint: StaticServer, server: str, why: str
) -> None:
    static_endpoint.body = b"<html>a wiki</html>"
    url = f"http://127.0.0.1:{free_port()}" if server == "absent" else static_endpoint.url.removesuffix("/metrics")
    events = Events()
    endpoints = [Endpoint("a", "http://127.0.0.1:9/metrics"), Endpoint("b", "http://127.0.0.1:9/metrics")]
    collector = CollectorProcess(endpoints, interval=0.3, prometheus_url=url, on_event=events)
    collector.start()
    try:
        wait_until(
            lambda: all(h.state is HealthState.UNKNOWN and why in h.reason for h in collector.health().values()),
            10,
            f"every endpoint unknown because {why}",
        )
        wait_until(lambda: bool(events.of("", "source")), 5, "the source event")
        samples = collector.drain()
    finally:
        assert collector.stop(timeout=5)
    detail = events.of("", "source")[0][1].detail
    assert why in detail and "Prometheus URL" in detail
    assert samples and all(s.derived is None and why in s.error for s in samples)


def test_a_deployment_the_server_does_not_scrape_is_unknown_and_one_it_cannot_scrape_is_down_with_its_error(
    prometheus_server: PrometheusServer,
) -> None:
    gone, ghost = unique("gone"), unique("ghost")
    scrape_by_prometheus(prometheus_server, (gone, f"127.0.0.1:{free_port()}"))
    endpoints = [Endpoint(gone, "http://127.0.0.1:9/metrics"), Endpoint(ghost, "http://127.0.0.1:9/metrics")]
    collector = CollectorProcess(endpoints, interval=0.5, prometheus_url=prometheus_server.url)
    collector.start()
    try:
        wait_until(lambda: collector.health()[gone].state is HealthState.DOWN, 20, "down once Prometheus tried it")
        health = collector.health()
    finally:
        assert collector.stop(timeout=5)
    assert "Prometheus cannot scrape it" in health[gone].reason and "connection refused" in health[gone].reason
    assert health[ghost].state is HealthState.UNKNOWN and "no scrape target" in health[ghost].reason


def test_switching_source_drops_the_other_sources_figures_and_survives_a_killed_child(
    prometheus_server: PrometheusServer, iris_runtime: RuntimeProcess
) -> None:
    name = unique("direct-only")  # scraped directly; not a target of Prometheus: there it is 'unknown'
    events = Events()
    collector = CollectorProcess([Endpoint(name, f"{iris_runtime.url}/metrics")], interval=0.3, on_event=events)
    collector.start()
    try:
        wait_until(lambda: collector.health()[name].state is HealthState.OK, 10, "scraped directly")
        assert collector.set_prometheus(prometheus_server.url) and not collector.set_prometheus(prometheus_server.url)
        assert collector.snapshot(name) == {} and collector.drain() == []

        def unknown_in_prometheus() -> bool:
            return "no scrape target" in collector.health()[name].reason

        wait_until(unknown_in_prometheus, 10, "Prometheus' answer")
        assert all(s.derived is None for s in collector.drain())  # nothing scraped after the switch
        first = collector.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: collector.pid not in (None, first), 10, "a new child")
        wait_until(lambda: bool(collector.drain()), 10, "samples from the new child")
        assert unknown_in_prometheus() and all(s.derived is None for s in collector.drain())  # still Prometheus

        collector.set_prometheus(None)
        wait_until(lambda: collector.health()[name].state is HealthState.OK, 10, "scraped directly again")
    finally:
        assert collector.stop(timeout=5)
    assert "killed by SIGKILL" in events.of("", "collector")[0][1].detail


def test_a_backfill_never_makes_a_series_go_back_in_time() -> None:
    store = SeriesStore(retention=8)
    store.append("a", 105.0, {"request_rate": 1.0})
    t = np.arange(100.0, 112.0)
    assert store.extend("a", t, {"request_rate": t * 10, "uptime": t}) == 6  # only what is newer than 105
    times, values = store.snapshot("a", ["request_rate"])["request_rate"]
    assert list(times) == [105.0, 106.0, 107.0, 108.0, 109.0, 110.0, 111.0]
    assert list(values) == [1.0, 1060.0, 1070.0, 1080.0, 1090.0, 1100.0, 1110.0]
    assert store.extend("a", np.arange(200.0, 220.0), {"request_rate": np.zeros(20)}) == 20
    assert list(store.snapshot("a", ["request_rate"])["request_rate"][0]) == list(np.arange(212.0, 220.0))


def test_a_backfill_crosses_the_pipe_exactly_and_a_malformed_one_says_what_is_wrong() -> None:
    t = np.array([10.0, 11.0, 12.5])
    values = {name: np.array([1.0, math.nan, 3.0]) * (i + 1) for i, name in enumerate(SERIES)}
    endpoint, t2, values2 = backfill_from_wire(json.loads(json.dumps(backfill_to_wire(Backfill("a", t, values)))))
    assert endpoint == "a" and np.array_equal(t2, t)
    assert all(np.array_equal(values2[name], values[name], equal_nan=True) for name in SERIES)
    row = backfill_to_wire(Backfill("a", t, values))
    with pytest.raises(MonitorProcessError, match="bytes for 4 points"):
        backfill_from_wire(["a", 4, row[2]])
    with pytest.raises(MonitorProcessError, match="not base64"):
        backfill_from_wire(["a", 3, "not base64!"])
    with pytest.raises(MonitorProcessError, match="not ascending"):
        backfill_from_wire(backfill_to_wire(Backfill("a", t[::-1].copy(), values)))


def test_the_prometheus_collector_works_in_process_too(
    prometheus_server: PrometheusServer, iris_runtime: RuntimeProcess
) -> None:
    """What the collection process runs is a plain core object: a CLI or a script can use it without any process."""
    name = unique("iris")
    scrape_by_prometheus(prometheus_server, (name, iris_runtime.url.removeprefix("http://")))
    events = Events()
    with PrometheusCollector(
        [Endpoint(name, f"{iris_runtime.url}/metrics")],
        url=prometheus_server.url,
        interval=0.5,
        backfill=30.0,
        on_event=events,
    ) as collector:
        wait_until(lambda: collector.health()[name].state is HealthState.OK, 20, "figures from Prometheus")
        samples = collector.drain()
    assert collector.stop(timeout=1)
    assert samples and samples[-1].derived is not None and samples[-1].derived.model_name == "iris"
    t, _ = collector.snapshot(name, ["uptime"])["uptime"]
    assert len(t) >= 1 and np.all(np.diff(t) > 0)
    assert [e.detail for _, e in events.of(name, "health")][-1] == "ok"


@pytest.fixture
def slow_quantiles(prometheus_server: PrometheusServer) -> Iterator[str]:
    """A loopback proxy to the real Prometheus that answers instant latency-percentile queries 3 s late."""
    stop = threading.Event()

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/api/v1/query" and b"histogram_quantile" in body:  # not query_range (the backfill)
                stop.wait(3.0)
            request = urllib.request.Request(prometheus_server.url + self.path, data=body, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    status, payload = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, payload = exc.code, exc.read()
            with contextlib.suppress(OSError):  # the client gave up waiting (its timeout): nobody to answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    stop.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_a_slow_query_leaves_only_its_own_series_empty_and_never_delays_the_rounds(
    slow_quantiles: str,
    prometheus_server: PrometheusServer,
    iris_runtime: RuntimeProcess,
    runtime_bundles: dict[str, Any],
) -> None:
    name = unique("iris")
    scrape_by_prometheus(prometheus_server, (name, iris_runtime.url.removeprefix("http://")))
    bundle = runtime_bundles["iris"]
    body = {"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}}
    collector = CollectorProcess(
        [Endpoint(name, f"{iris_runtime.url}/metrics")], interval=0.5, window=10.0, prometheus_url=slow_quantiles
    )
    collector.start()
    samples: list[Sample] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(s.derived and s.derived.request_rate > 0 for s in samples):
            send(iris_runtime.url, body, 10)  # bounded load until the server has a rate
            samples += collector.drain()
        start = time.monotonic()
        while time.monotonic() - start < 4.0:
            time.sleep(0.1)
            samples += collector.drain()
    finally:
        assert collector.stop(timeout=5)
    late = [s for s in samples if s.at >= time.time() - 4.5]
    assert len(late) >= 7  # a round every 0.5 s, though three of its queries take 3 s each
    figures = [s.derived for s in late if s.derived is not None]
    assert len(figures) == len(late) and all(s.health.state is HealthState.OK for s in late)
    assert all(d.resident_memory > 10e6 and d.uptime > 0 for d in figures)
    assert all(math.isnan(d.latency_p50) and math.isnan(d.latency_p99) for d in figures)  # only those are empty


def test_a_server_that_trickles_its_answers_is_cut_off_at_the_timeout(trickling_endpoint: TricklingServer) -> None:
    url = trickling_endpoint.url.removesuffix("/metrics")
    collector = CollectorProcess([Endpoint("a", "http://127.0.0.1:9/metrics")], interval=0.5, prometheus_url=url)
    collector.start()
    try:
        wait_until(lambda: "did not answer within" in collector.health()["a"].reason, 20, "the timeout as the reason")
        collector.drain()
        time.sleep(2.0)
        samples = collector.drain()
    finally:
        assert collector.stop(timeout=5)
    assert len(samples) >= 3  # rounds go on while each query is held until its deadline
    assert all(s.health.state is HealthState.UNKNOWN and "did not answer within 0.4 s" in s.error for s in samples)
