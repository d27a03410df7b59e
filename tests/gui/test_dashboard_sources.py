"""Where the detail plots' data comes from besides the live ring buffers: the saved SQLite history (after a
restart of the app) and a REAL Prometheus server (Debian's ``prometheus``, scraping a real runtime)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modeldeck.core.monitor.config import MonitorConfig
from modeldeck.core.monitor.history import HistoryWriter
from modeldeck.core.monitor.prometheus import ScrapeTarget, write_file_sd
from modeldeck.gui.dashboard.page import HISTORY_RANGE, MonitorPage
from modeldeck.gui.dashboard.source import Monitored
from pytestqt.qtbot import QtBot

from tests.fixtures.monitor import PrometheusServer, free_port
from tests.fixtures.runtime import RuntimeProcess

pytestmark = [pytest.mark.gui, pytest.mark.server]


@pytest.fixture
def make_page(make_monitor_page: Callable[..., MonitorPage]) -> Callable[..., MonitorPage]:
    return lambda config, **kw: make_monitor_page(config, interval=0.3, **kw)


def points(page: MonitorPage, name: str, series: str) -> np.ndarray:
    curve = page.plots.curves.get((name, series))
    return np.array([]) if curve is None or curve.xData is None else curve.xData[np.isfinite(curve.yData)]


def test_saved_history_shows_samples_from_before_a_restart(
    qtbot: QtBot, make_page: Callable[..., MonitorPage], iris_runtime: RuntimeProcess, tmp_path: Path
) -> None:
    path = tmp_path / "history.sqlite"
    config = MonitorConfig(interval=0.3, history=True)
    writer = HistoryWriter(path)
    writer.start()
    first = make_page(config, history=path, writer=writer)
    first.source.add(Monitored("iris", f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
    qtbot.waitUntil(lambda: writer.written >= 5, timeout=10_000)
    first.source.stop()  # the app closing: the writer flushes and stops
    restart = time.time()

    second = make_page(config, history=path)
    second.source.add(Monitored("iris", f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
    second.select("iris")
    assert second.range_combo.model().item(second.range_combo.findText(HISTORY_RANGE)).isEnabled()
    second.set_range(HISTORY_RANGE)
    qtbot.waitUntil(lambda: len(points(second, "iris", "resident_memory")) >= 5, timeout=10_000)
    saved = points(second, "iris", "resident_memory")
    assert saved.min() < restart  # points from the first "session"
    x0, x1 = second.plots.x_range()
    assert x0 <= saved.min() and x1 >= saved.max()


def test_history_range_is_disabled_when_history_is_off(make_page: Callable[..., MonitorPage]) -> None:
    page = make_page(MonitorConfig())
    assert not page.range_combo.model().item(page.range_combo.findText(HISTORY_RANGE)).isEnabled()


def test_prometheus_mode_plots_what_a_real_prometheus_scraped(
    qtbot: QtBot,
    make_page: Callable[..., MonitorPage],
    prometheus_server: PrometheusServer,
    iris_runtime: RuntimeProcess,
    runtime_bundles: dict[str, Any],
) -> None:
    name = f"iris-{time.monotonic_ns()}"  # the session's Prometheus may know other tests' deployments
    write_file_sd(
        prometheus_server.sd_file, [ScrapeTarget(name, iris_runtime.url.removeprefix("http://"), "iris", "3")]
    )
    page = make_page(MonitorConfig(interval=0.3, prometheus_url=prometheus_server.url))
    page.source.add(Monitored(name, f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
    page.select(name)
    assert "Prometheus" in page.source_label.text()
    bundle = runtime_bundles["iris"]
    body = json.dumps({"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}})
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not len(points(page, name, "request_rate")):
            for _ in range(20):
                client.post(
                    f"{iris_runtime.url}/invocations", content=body, headers={"Content-Type": "application/json"}
                )
            qtbot.wait(500)  # the event loop runs: the collection process queries Prometheus every round
    assert len(points(page, name, "request_rate")), "no throughput from Prometheus within 40 s"
    qtbot.waitUntil(lambda: len(points(page, name, "resident_memory")) > 0, timeout=10_000)
    curve = page.plots.curves[(name, "resident_memory")]
    assert np.nanmax(curve.yData) > 10  # MiB of the real runtime, as Prometheus saw it
    assert page.source.latest[name].derived.model_name == "iris"  # the runtime's model_info, as Prometheus has it


def test_an_unreachable_prometheus_is_a_banner_not_a_freeze(
    qtbot: QtBot, make_page: Callable[..., MonitorPage], iris_runtime: RuntimeProcess
) -> None:
    page = make_page(MonitorConfig(interval=0.3, prometheus_url=f"http://127.0.0.1:{free_port()}"))
    page.source.add(Monitored("iris", f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
    page.select("iris")
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=10_000)
    assert "unreachable" in page.banner.label.text() and "Prometheus URL" in page.banner.label.text()


def test_settings_dialog_refuses_a_bad_prometheus_url_and_switches_history_on(
    qtbot: QtBot, make_page: Callable[..., MonitorPage], tmp_path: Path
) -> None:
    page = make_page(MonitorConfig())
    page.history_path = tmp_path / "h.sqlite"
    dialog = page.open_settings()
    dialog.prometheus_edit.setText("ftp://prom")
    dialog.accept()
    assert dialog.isVisible() and dialog.error.isVisible() and "Prometheus" in dialog.error.text()
    dialog.prometheus_edit.setText("127.0.0.1:9090")
    dialog.history_box.setChecked(True)
    with qtbot.waitSignal(page.configChanged) as changed:
        dialog.accept()
    config = changed.args[0]
    assert config.prometheus_url == "http://127.0.0.1:9090" and config.history
    assert page.range_combo.model().item(page.range_combo.findText(HISTORY_RANGE)).isEnabled()
