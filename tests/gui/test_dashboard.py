"""The Monitor page offscreen, fed by REAL runtime processes on 127.0.0.1: plots and fleet rows fill,
health turns red when a runtime dies and green when it is back, a new version is marked on the time axis,
pause freezes, the range selector moves the x axis, the crosshair reads values, the load generator's
numbers match the runtime's own counters."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modeldeck.core.monitor.config import MonitorConfig
from modeldeck.core.monitor.health import HealthState
from modeldeck.core.monitor.scrape import fetch
from modeldeck.gui.dashboard.dialogs import LoadDialog
from modeldeck.gui.dashboard.models import HEALTH_COLOURS, FleetModel
from modeldeck.gui.dashboard.page import MonitorPage
from modeldeck.gui.dashboard.source import Monitored, MonitorSource
from modeldeck.gui.workers import wait_for_workers
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.fixtures.monitor import free_port
from tests.fixtures.runtime import RuntimeProcess, SklearnBundle, make_iris_bundle, make_sklearn_bundle, start_runtime

pytestmark = [pytest.mark.gui, pytest.mark.server]

SHOTS = Path("/tmp/shots")
OK, DOWN = HEALTH_COLOURS[HealthState.OK][0], HEALTH_COLOURS[HealthState.DOWN][0]


def shot(widget: Any, name: str) -> None:
    QApplication.processEvents()
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(SHOTS / f"dashboard-{name}.png"))


@pytest.fixture(scope="module")
def iris_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SklearnBundle]:
    base = tmp_path_factory.mktemp("dash-bundles")
    v3 = make_iris_bundle(base / "iris3")
    v4 = make_sklearn_bundle(
        base / "iris4", v3.model, v3.X, v3.feature_names, name="iris", version="4", task="classification"
    )
    return {"3": v3, "4": v4}


def body_of(bundle: SklearnBundle) -> dict[str, Any]:
    return {"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}}


def send(url: str, body: Any, n: int) -> None:
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            client.post(f"{url}/invocations", content=json.dumps(body), headers={"Content-Type": "application/json"})


@pytest.fixture
def page(qtbot: QtBot) -> Iterator[MonitorPage]:
    """A Monitor page on its own, scraping every 0.3 s and drained at 10 Hz (the app uses 1 s / 5 Hz)."""
    source = MonitorSource(interval=0.3, drain_hz=10)
    page = MonitorPage(source, MonitorConfig(interval=0.3))
    qtbot.addWidget(page)
    page.resize(1300, 820)
    page.show()
    source.start()
    yield page
    source.stop()
    wait_for_workers(10)


def watch(page: MonitorPage, rp: RuntimeProcess, name: str = "iris") -> None:
    page.source.add(Monitored(name, f"{rp.url}/metrics", rp.url, "manual"))
    page.select(name)


def finite_points(page: MonitorPage, name: str, series: str) -> int:
    curve = page.plots.curves.get((name, series))
    if curve is None or curve.yData is None:
        return 0
    return int(np.isfinite(curve.yData).sum())


def test_plots_and_fleet_row_fill_from_a_real_runtime(
    qtbot: QtBot,
    page: MonitorPage,
    iris_versions: dict[str, SklearnBundle],
    runtime_processes: list,
    tmp_path: Path,
    qtmodeltester,
) -> None:
    rp = start_runtime(iris_versions["3"].path, tmp_path / "run")
    runtime_processes.append(rp)
    watch(page, rp)
    qtbot.waitUntil(lambda: "iris" in page.source.latest, timeout=10_000)  # rates count from the first scrape
    send(rp.url, body_of(iris_versions["3"]), 30)
    qtbot.waitUntil(lambda: finite_points(page, "iris", "request_rate") >= 2, timeout=10_000)
    for series in ("latency_p99", "cpu_percent", "resident_memory"):
        qtbot.waitUntil(lambda s=series: finite_points(page, "iris", s) >= 1, timeout=10_000)

    def row_scraped() -> bool:  # a tick that redraws plots leaves the rows to a later slice: the row may lag them
        row = page.model.row_at(page.model.row_of("iris"))
        return row is not None and row.health.state is HealthState.OK

    qtbot.waitUntil(row_scraped, timeout=10_000)
    row = page.model.row_at(page.model.row_of("iris"))
    assert row is not None and row.health.state is HealthState.OK and row.version == "3"
    assert page.status_colour("iris") == OK
    assert row.resident_memory > 10e6
    mem = page.plots.curves[("iris", "resident_memory")].yData
    assert np.nanmax(mem) == pytest.approx(row.resident_memory / 2**20, rel=0.5)  # MiB on the plot
    cells = [page.model.index(0, c).data() for c in range(page.model.columnCount())]
    assert cells[0] == "iris" and cells[1] == "OK" and cells[6].endswith("MiB") and cells[7] == "3"
    assert page.model.index(0, FleetModel.HEALTH).data(Qt.ItemDataRole.ToolTipRole) == "ok"
    qtmodeltester.check(page.model)
    shot(page, "one")


def test_dead_runtime_turns_red_then_green_again_and_the_new_version_is_marked(
    qtbot: QtBot, page: MonitorPage, iris_versions: dict[str, SklearnBundle], runtime_processes: list, tmp_path: Path
) -> None:
    port = free_port()
    rp = start_runtime(iris_versions["3"].path, tmp_path / "run1", "--port", str(port))
    runtime_processes.append(rp)
    watch(page, rp)
    qtbot.waitUntil(lambda: page.status_colour("iris") == OK, timeout=10_000)
    rp.kill()
    qtbot.waitUntil(lambda: page.status_colour("iris") == DOWN, timeout=5_000)
    tip = page.model.index(page.model.row_of("iris"), FleetModel.HEALTH).data(Qt.ItemDataRole.ToolTipRole)
    assert tip.startswith("down: ") and str(port) in tip  # the reason names the endpoint that stopped answering
    shot(page, "down")
    rp2 = start_runtime(iris_versions["4"].path, tmp_path / "run2", "--port", str(port))
    runtime_processes.append(rp2)
    qtbot.waitUntil(lambda: page.status_colour("iris") == OK, timeout=15_000)
    qtbot.waitUntil(lambda: any("v4" in label for label in page.plots.marker_labels()), timeout=5_000)
    assert page.model.row_at(page.model.row_of("iris")).version == "4"
    marker_x = [line.value() for _plot, line in page.plots.markers]
    x0, x1 = page.plots.x_range()
    assert all(x0 <= x <= x1 for x in marker_x)  # on the visible time axis
    shot(page, "restarted")


def test_pause_freezes_the_plots_while_collection_goes_on(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess
) -> None:
    watch(page, iris_runtime)
    qtbot.waitUntil(lambda: finite_points(page, "iris", "resident_memory") >= 2, timeout=10_000)
    qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    assert page.paused and page.pause_button.text() == "Resume"
    frozen = page.plots.curves[("iris", "resident_memory")].xData.copy()
    collected = len(page.source.snapshot("iris", ["uptime"])["uptime"][0])
    qtbot.waitUntil(lambda: len(page.source.snapshot("iris", ["uptime"])["uptime"][0]) >= collected + 3, timeout=5_000)
    np.testing.assert_array_equal(page.plots.curves[("iris", "resident_memory")].xData, frozen)
    qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    assert not page.paused
    assert len(page.plots.curves[("iris", "resident_memory")].xData) > len(frozen)


def test_range_selector_sets_the_visible_time_span(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess
) -> None:
    watch(page, iris_runtime)
    qtbot.waitUntil(lambda: finite_points(page, "iris", "resident_memory") >= 2, timeout=10_000)
    for label, seconds in (("1 min", 60), ("15 min", 900), ("1 h", 3600), ("5 min", 300)):
        page.set_range(label)
        x0, x1 = page.plots.x_range()
        assert x1 - x0 == pytest.approx(seconds, rel=0.02), label
    page.set_range("All retained")
    t = page.plots.curves[("iris", "resident_memory")].xData
    x0, x1 = page.plots.x_range()
    assert x0 <= t[0] and x1 >= t[-1] and x1 - x0 < 60  # fits the few seconds there are


def test_crosshair_reads_the_values_under_the_mouse(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess
) -> None:
    watch(page, iris_runtime)
    qtbot.waitUntil(lambda: finite_points(page, "iris", "resident_memory") >= 2, timeout=10_000)
    qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    curve = page.plots.curves[("iris", "resident_memory")]
    t, v = curve.xData[-1], curve.yData[-1]
    text = page.plots.crosshair_to(t)
    assert f"memory {v:.1f}MiB" in text and "<b>iris</b>" in text
    assert all(line.isVisible() and line.value() == t for line in page.plots.crosshairs.values())
    # and a real mouse move over a plot moves it there
    plot = page.plots.plots["cpu"]
    view = page.plots.graphics
    centre = view.mapFromScene(plot.sceneBoundingRect().center())
    qtbot.mouseMove(view.viewport(), centre)
    expected = plot.getViewBox().mapSceneToView(plot.sceneBoundingRect().center()).x()
    qtbot.waitUntil(
        lambda: page.plots.crosshair_t is not None and abs(page.plots.crosshair_t - expected) < 1, timeout=3000
    )
    at = page.plots.crosshair_t
    assert page.plots.readout.text().startswith(time.strftime("%H:%M:%S", time.localtime(at)))


def test_load_generator_is_bounded_and_the_runtime_counts_the_same(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    watch(page, iris_runtime)
    dialog = LoadDialog("iris", iris_runtime.url, body_of(runtime_bundles["iris"]), page)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.count_spin.maximum() == 100_000 and dialog.duration_spin.maximum() == 600
    assert dialog.concurrency_spin.maximum() == 8
    dialog.rate_spin.setValue(40)
    dialog.duration_spin.setValue(3)
    dialog.count_spin.setValue(60)  # the count bound wins over 40/s x 3 s = 120
    before = fetch(f"{iris_runtime.url}/metrics").value(
        "modeldeck_requests_total", 0.0, route="/invocations", status="200"
    )
    with qtbot.waitSignal(dialog.finishedRun, timeout=20_000) as done:
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
        assert not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    result = done.args[0]
    after = fetch(f"{iris_runtime.url}/metrics").value(
        "modeldeck_requests_total", 0.0, route="/invocations", status="200"
    )
    assert result.sent == 60 and result.ok == 60 and after - before == 60
    assert 1.0 < result.elapsed_s < 3.5  # 60 at 40/s: 1.5 s
    assert "60 requests" in dialog.status.text() and dialog.start_button.isEnabled()
    qtbot.waitUntil(lambda: np.nanmax(page.plots.curves[("iris", "request_rate")].yData, initial=0) > 5, timeout=5000)


def test_load_generator_cancel_stops_it(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    dialog = LoadDialog("iris", iris_runtime.url, body_of(runtime_bundles["iris"]), page)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.rate_spin.setValue(5)
    dialog.duration_spin.setValue(600)
    handle = dialog.start()
    assert handle is not None
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert handle.cancelled and dialog.start_button.isEnabled() and dialog.status.text() == "Cancelled."
    assert wait_for_workers(5)  # the worker ends within a request timeout, not after 10 minutes


def test_add_endpoint_validates_the_url_and_adds_a_row(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess
) -> None:
    dialog = page.open_add_endpoint()
    qtbot.keyClicks(dialog.url_edit, "ftp://nowhere")
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and dialog.error.isVisible() and "http" in dialog.error.text()
    dialog.url_edit.setText(iris_runtime.url.removeprefix("http://"))  # host:port is enough
    dialog.name_edit.setText("by-hand")
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    assert page.source.monitored["by-hand"].metrics_url == f"{iris_runtime.url}/metrics"
    qtbot.waitUntil(lambda: page.status_colour("by-hand") == OK, timeout=10_000)
    assert page.selected_names() == ["by-hand"] and page.remove_button.isEnabled()
    dialog = page.open_add_endpoint()
    dialog.url_edit.setText(iris_runtime.url)
    dialog.name_edit.setText("by-hand")
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert dialog.isVisible() and "already monitored" in dialog.error.text()
    dialog.reject()
    qtbot.mouseClick(page.remove_button, Qt.MouseButton.LeftButton)
    assert page.model.row_of("by-hand") < 0


def test_several_deployments_overlay_with_a_legend(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess, diabetes_runtime: RuntimeProcess
) -> None:
    watch(page, iris_runtime, "iris")
    watch(page, diabetes_runtime, "diabetes")
    page.select("iris", "diabetes")
    assert page.plots.names == ["diabetes", "iris"]
    qtbot.waitUntil(
        lambda: (
            finite_points(page, "iris", "resident_memory") >= 1
            and finite_points(page, "diabetes", "resident_memory") >= 1
        ),
        timeout=10_000,
    )
    colours = {n: page.plots.curves[(n, "request_rate")].opts["pen"].color().name() for n in ("iris", "diabetes")}
    assert len(set(colours.values())) == 2
    legend = page.detail_title.text()  # one legend for all plots: each name in its curves' colour
    for name, colour in colours.items():
        assert f'<span style="color:{colour}">&#9632;</span>&nbsp;{name}' in legend
    assert math.isfinite(page.plots.x_range()[0])
