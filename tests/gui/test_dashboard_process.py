"""The Monitor page over its collection process: a killed process is a banner and a restart, never a frozen page."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from modeldeck.core.monitor.config import MonitorConfig
from modeldeck.core.monitor.health import HealthState
from modeldeck.core.monitor.process import CollectorProcess
from modeldeck.gui.dashboard.models import FleetModel
from modeldeck.gui.dashboard.page import MonitorPage
from modeldeck.gui.dashboard.source import Monitored, MonitorSource
from modeldeck.gui.workers import wait_for_workers
from pytestqt.qtbot import QtBot

from tests.fixtures.runtime import RuntimeProcess
from tests.test_monitor_process import STUBBORN_CHILD, _alive

pytestmark = [pytest.mark.gui, pytest.mark.server]


@pytest.fixture
def page(qtbot: QtBot) -> Iterator[MonitorPage]:
    source = MonitorSource(interval=0.3, drain_hz=10)
    page = MonitorPage(source, MonitorConfig(interval=0.3))
    qtbot.addWidget(page)
    page.resize(1300, 820)
    page.show()
    source.start()
    yield page
    source.stop()
    wait_for_workers(10)


def test_the_page_collects_in_a_child_process_and_survives_its_death(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess
) -> None:
    collector = page.source.collector
    assert isinstance(collector, CollectorProcess)
    page.source.add(Monitored("iris", f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
    page.select("iris")
    qtbot.waitUntil(lambda: "iris" in page.source.latest, timeout=10_000)
    first = collector.pid
    assert first is not None and first != os.getpid()

    os.kill(first, signal.SIGKILL)
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=5_000)
    assert "killed by SIGKILL" in page.banner.label.text() and "restarting" in page.banner.label.text()
    seen = page.source.latest["iris"].at
    # the restarted process scrapes the same endpoints; the row and the plots go on
    qtbot.waitUntil(lambda: page.source.latest["iris"].at > seen + 0.5, timeout=10_000)
    assert collector.pid not in (None, first)
    row = page.model.row_at(page.model.row_of("iris"))
    assert row is not None and row.health.state is HealthState.OK


def test_monitoring_that_gave_up_says_so_and_restarts_from_the_banner(
    qtbot: QtBot, page: MonitorPage, iris_runtime: RuntimeProcess
) -> None:
    collector = page.source.collector
    assert isinstance(collector, CollectorProcess)
    collector.max_restarts = 0  # the next death is one too many
    page.source.add(Monitored("iris", f"{iris_runtime.url}/metrics", iris_runtime.url, "manual"))
    qtbot.waitUntil(lambda: "iris" in page.source.latest, timeout=10_000)
    first = collector.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    qtbot.waitUntil(lambda: page.banner.isVisible() and "Monitoring stopped" in page.banner.label.text(), timeout=5_000)
    assert page.banner.action_button.isVisible() and page.banner.action_button.text() == "Restart monitoring"
    stopped = page.model.row_at(page.model.row_of("iris"))
    assert stopped is not None and stopped.health.state is HealthState.UNKNOWN and "gave up" in stopped.health.reason
    assert page.model.index(page.model.row_of("iris"), FleetModel.HEALTH).data() == "STOPPED"
    seen = page.source.latest["iris"].at
    qtbot.waitUntil(lambda: not (collector._thread and collector._thread.is_alive()), timeout=5_000)
    page.banner.action_button.click()
    qtbot.waitUntil(lambda: page.source.latest["iris"].at > seen + 0.5, timeout=10_000)
    assert collector.failure == "" and collector.pid not in (None, first) and not page.banner.isVisible()
    qtbot.waitUntil(lambda: page.model.row_at(page.model.row_of("iris")).health.state is HealthState.OK, timeout=10_000)


def test_closing_the_page_does_not_wait_for_a_collection_process_slow_to_end(qtbot: QtBot) -> None:
    """The app closing: the child is left to a thread of its own (killed after 3 s), the window does not freeze."""
    source = MonitorSource(interval=0.3, drain_hz=10)
    assert isinstance(source.collector, CollectorProcess)
    source.collector.command = STUBBORN_CHILD  # ignores the end of its stdin, like one with queries in flight
    source.start()
    pid = source.collector.pid
    assert pid is not None
    try:
        source.stop()
        assert _alive(pid)  # stop() came back before the child ended: the UI thread did not wait for it
        qtbot.waitUntil(lambda: not _alive(pid), timeout=10_000)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
