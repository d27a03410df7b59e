"""The Monitor page inside the main window, with a REAL local deployment: it appears in the fleet by
itself, the load generator sends its input example, and it leaves the fleet when undeployed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from modeldeck.core.monitor.scrape import fetch
from modeldeck.core.settings import load_settings
from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.local import LocalTarget
from modeldeck.gui.dashboard.controller import DashboardUI
from modeldeck.gui.dashboard.models import HEALTH_COLOURS
from modeldeck.gui.main_window import MainWindow
from modeldeck.gui.workers import wait_for_workers
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests.fixtures.deploy import runtime_pids

pytestmark = [pytest.mark.gui, pytest.mark.server, pytest.mark.slow]


@pytest.fixture
def window(qtbot: QtBot) -> Iterator[MainWindow]:
    """A main window (no registry opened: the Monitor page does not need one); undeploys everything after."""
    settings = load_settings()
    window = MainWindow(settings)
    qtbot.addWidget(window)
    window.resize(1400, 860)
    window.show()
    yield window
    window.close()
    target = LocalTarget(settings.deployments_dir)
    for status in target.status():
        target.undeploy(status.name)
    assert runtime_pids(settings.deployments_dir) == []
    wait_for_workers(10)


def test_a_local_deployment_is_monitored_loaded_and_dropped_when_undeployed(
    qtbot: QtBot, window: MainWindow, deploy_bundles: dict[str, Path], tmp_path: Path
) -> None:
    ui: DashboardUI = window.dashboard_ui
    page = ui.page
    assert window.pages.tabText(window.pages.indexOf(page)) == "Monitor"
    window.pages.setCurrentWidget(page)
    assert page.empty_label.isVisible()

    target = LocalTarget(window.settings.deployments_dir)
    result = target.deploy(deploy_bundles["v1"], DeployOptions(name="iris-demo"))
    assert result.ok, result.message
    ui.poll()  # as the 5 s poll would, sooner
    qtbot.waitUntil(lambda: page.model.row_of("iris-demo") >= 0, timeout=15_000)
    qtbot.waitUntil(lambda: page.status_colour("iris-demo") == HEALTH_COLOURS[1][0], timeout=15_000)
    assert page.source.monitored["iris-demo"].metrics_url == f"{result.status.endpoint}/metrics"
    page.select("iris-demo")
    assert page.load_button.isEnabled()

    page.open_load_dialog()  # reads the deployment's input example in a worker, then opens the dialog
    qtbot.waitUntil(lambda: page.load_dialog is not None and page.load_dialog.isVisible(), timeout=10_000)
    dialog = page.load_dialog
    assert dialog.body["dataframe_split"]["columns"][0] == "sepal length (cm)" or dialog.body
    dialog.rate_spin.setValue(50)
    dialog.duration_spin.setValue(5)
    dialog.count_spin.setValue(40)
    before = fetch(f"{result.status.endpoint}/metrics").value(
        "modeldeck_requests_total", 0.0, route="/invocations", status="200"
    )
    with qtbot.waitSignal(dialog.finishedRun, timeout=20_000) as done:
        qtbot.mouseClick(dialog.start_button, Qt.MouseButton.LeftButton)
    after = fetch(f"{result.status.endpoint}/metrics").value(
        "modeldeck_requests_total", 0.0, route="/invocations", status="200"
    )
    assert done.args[0].ok == 40 and after - before == 40
    qtbot.waitUntil(lambda: (page.model.row_at(page.model.row_of("iris-demo")).request_rate or 0) > 0, timeout=5_000)
    dialog.close()

    target.undeploy("iris-demo")
    ui.poll()
    qtbot.waitUntil(lambda: page.model.row_of("iris-demo") < 0, timeout=15_000)
    assert "iris-demo" not in page.source.collector.health()


def test_prometheus_mode_writes_scrape_targets_and_the_settings_survive(qtbot: QtBot, window: MainWindow) -> None:
    from dataclasses import replace

    from modeldeck.core.monitor.config import load_monitor_config
    from modeldeck.gui.dashboard.source import Monitored

    ui: DashboardUI = window.dashboard_ui
    ui.page.source.add(Monitored("edge-gw", "http://127.0.0.1:9100/metrics", None, "manual"))
    ui._endpoint_added("edge-gw", "http://127.0.0.1:9100/metrics")
    ui._config_changed(replace(ui.config, prometheus_url="http://127.0.0.1:9090"))
    qtbot.waitUntil(ui.file_sd_path.exists, timeout=10_000)
    wait_for_workers(10)
    groups = json.loads(ui.file_sd_path.read_text())
    assert {"targets": ["127.0.0.1:9100"], "labels": {"deployment": "edge-gw", "model": "", "version": ""}} in groups
    saved = load_monitor_config(window.settings.config_dir)
    assert saved.prometheus_url == "http://127.0.0.1:9090"
    assert saved.endpoints == (("edge-gw", "http://127.0.0.1:9100/metrics"),)


def test_the_window_trims_its_heap_while_open_and_stops_when_closed(qtbot: QtBot, window: MainWindow) -> None:
    # A dashboard left open for days: freed fragments go back to the OS (core/heap.py, glibc).
    trimmer = window.heap_trimmer
    assert trimmer._thread is not None and trimmer._thread.daemon
    window.close()
    assert trimmer._thread is None
