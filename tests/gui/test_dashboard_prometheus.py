"""The Monitor page in Prometheus-server mode, against a REAL ``prometheus`` scraping a real runtime: the rows
and plots show what the server has, the collection process asks it (never the GUI process), and a server that
goes away is a clear state the page recovers from."""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modeldeck.core.monitor.config import MonitorConfig
from modeldeck.core.monitor.health import HealthState
from modeldeck.core.monitor.process import CollectorProcess
from modeldeck.core.monitor.prometheus import PrometheusClient, ScrapeTarget, write_file_sd
from modeldeck.gui.dashboard.models import FleetModel
from modeldeck.gui.dashboard.page import MonitorPage
from modeldeck.gui.dashboard.source import Monitored
from pytestqt.qtbot import QtBot

from tests.fixtures.monitor import PrometheusServer, start_prometheus, stop_prometheus
from tests.fixtures.runtime import RuntimeProcess
from tests.test_monitor_live import send
from tests.test_monitor_prometheus_mode import same, server_answers, unique

pytestmark = [pytest.mark.gui, pytest.mark.server]

FIGURES = ("request_rate", "error_rate", "latency_p99", "cpu_percent", "resident_memory")  # the row's columns


@pytest.fixture
def make_page(make_monitor_page: Callable[..., MonitorPage]) -> Callable[[str], MonitorPage]:
    return lambda prometheus_url: make_monitor_page(MonitorConfig(interval=0.5, prometheus_url=prometheus_url))


def row(page: MonitorPage, name: str) -> Any:
    return page.model.row_at(page.model.row_of(name))


def test_rows_and_plots_show_what_the_server_has_and_only_the_collection_process_asks_it(
    qtbot: QtBot,
    monkeypatch: pytest.MonkeyPatch,
    make_page: Callable[[str], MonitorPage],
    prometheus_server: PrometheusServer,
    iris_runtime: RuntimeProcess,
    runtime_bundles: dict[str, Any],
    tmp_path: Path,
) -> None:
    asked: list[str] = []  # every request this (the GUI) process makes to a Prometheus server, but the test's own
    test_asks = threading.Event()
    original = PrometheusClient._get

    def counted(self: PrometheusClient, path: str, *args: Any, **kwargs: Any) -> Any:
        if not (test_asks.is_set() and threading.current_thread() is threading.main_thread()):
            asked.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(PrometheusClient, "_get", counted)
    name = unique("iris")
    write_file_sd(
        prometheus_server.sd_file, [ScrapeTarget(name, iris_runtime.url.removeprefix("http://"), "iris", "3")]
    )
    page = make_page(prometheus_server.url)
    page.source.add(Monitored(name, f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
    page.select(name)
    bundle = runtime_bundles["iris"]
    body = {"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}}
    for _ in range(80):  # bounded load (at most 800 requests) until the row shows the server's rates
        send(iris_runtime.url, body, 10)
        qtbot.wait(200)
        shown = row(page, name)
        if shown is not None and shown.request_rate > 0 and shown.latency_p99 > 0:
            break
    else:
        pytest.fail(f"the row never showed traffic from Prometheus: {row(page, name)}")

    # the row is the last sample, which is what the server answers at its time (unless a scrape landed in
    # between: then a later sample)
    for _ in range(5):
        sample = page.source.latest[name]
        qtbot.waitUntil(lambda s=sample: row(page, name).request_rate == s.derived.request_rate, timeout=5_000)
        test_asks.set()  # the event loop does not run meanwhile: only the test asks from this thread
        server = server_answers(prometheus_server, name, sample.at, "60s")
        test_asks.clear()
        if all(same(getattr(row(page, name), k), server[k]) for k in FIGURES):
            break
        qtbot.waitUntil(lambda s=sample: page.source.latest[name].at > s.at, timeout=5_000)
    else:
        pytest.fail(f"the row never showed the server's figures: {row(page, name)} vs {server}")
    assert row(page, name).health.state is HealthState.OK
    qtbot.waitUntil(lambda: (name, "request_rate") in page.plots.curves, timeout=5_000)
    curve = page.plots.curves[(name, "request_rate")]
    qtbot.waitUntil(lambda: curve.yData is not None and np.isfinite(curve.yData).any(), timeout=5_000)
    assert "queried from Prometheus" in page.source_label.text()

    collector = page.source.collector
    assert isinstance(collector, CollectorProcess) and collector.pid not in (None, os.getpid())
    assert asked == []  # the queries, and the decoding of their answers, happened in the collection process
    path = os.environ.get("MODELDECK_SCREENSHOT_DIR")
    page.grab().save(str(Path(path or tmp_path) / "monitor-prometheus.png"))


def test_a_server_that_goes_away_is_unknown_with_why_and_figures_come_back_with_it(
    qtbot: QtBot, make_page: Callable[[str], MonitorPage], iris_runtime: RuntimeProcess, tmp_path: Path
) -> None:
    server = start_prometheus(tmp_path / "prometheus")
    try:
        write_file_sd(server.sd_file, [ScrapeTarget("iris", iris_runtime.url.removeprefix("http://"), "iris", "3")])
        page = make_page(server.url)
        page.source.add(Monitored("iris", f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
        page.select("iris")
        qtbot.waitUntil(lambda: row(page, "iris").health.state is HealthState.OK, timeout=20_000)

        stop_prometheus(server)
        qtbot.waitUntil(lambda: row(page, "iris").health.state is HealthState.UNKNOWN, timeout=10_000)
        assert "unreachable" in row(page, "iris").health.reason
        assert math.isnan(row(page, "iris").request_rate)  # no stale figure left standing
        assert page.model.index(page.model.row_of("iris"), FleetModel.HEALTH).data() == "UNKNOWN"
        qtbot.waitUntil(page.banner.isVisible, timeout=5_000)
        assert page.banner.label.text() == row(page, "iris").health.reason  # the why, once, above the page
        assert "connection refused" in page.banner.label.text() and "Prometheus URL" in page.banner.label.text()

        server = start_prometheus(tmp_path / "prometheus", port=int(server.url.rsplit(":", 1)[1]))
        qtbot.waitUntil(lambda: row(page, "iris").health.state is HealthState.OK, timeout=30_000)
        qtbot.waitUntil(lambda: not page.banner.isVisible(), timeout=5_000)
        assert page.source.latest["iris"].derived is not None
        assert not page.source.collector.restarts  # the collection process never had to be restarted for it
    finally:
        stop_prometheus(server)
    assert json.loads(server.sd_file.read_text())[0]["labels"]["deployment"] == "iris"
