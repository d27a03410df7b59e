"""GUI test setup: the app's style, a main-window factory, and a guard against leaked workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from modeldeck.core.monitor.config import MonitorConfig
from modeldeck.core.monitor.history import HistoryWriter
from modeldeck.core.settings import load_settings
from modeldeck.gui.app import create_application
from modeldeck.gui.dashboard.page import MonitorPage
from modeldeck.gui.dashboard.source import MonitorSource
from modeldeck.gui.main_window import MainWindow
from modeldeck.gui.workers import default_pool, wait_for_workers
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

pytestmark = pytest.mark.gui

FIRST_SCREEN_TIMEOUT_MS = 60_000
GUI_DIR = Path(__file__).parent

# The offscreen platform plugin warns whenever a top-level window gets size constraints
# (every layout does that); it is about the test platform, not about our code.
OFFSCREEN_NOISE = "This plugin does not support propagateSizeHints"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if GUI_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.qt_log_ignore(OFFSCREEN_NOISE))


@pytest.fixture(autouse=True)
def no_worker_left_running(qapp: object) -> Iterator[None]:
    """Fail a test that ends with a worker task still running or undelivered (and clean it up)."""
    create_application()
    yield
    left = default_pool().pending
    if left:
        default_pool().cancel_all()
        wait_for_workers(30.0)
        pytest.fail(f"test left worker tasks running: {left}")


@pytest.fixture
def open_window(qtbot: QtBot) -> Iterator[Callable[..., MainWindow]]:
    """``open_window(uri)``: a shown main window on ``uri``, returned once models, versions and details show."""

    windows: list[MainWindow] = []  # strong references: qtbot only holds weak ones

    def make(tracking_uri: str, *, wait: bool = True, versions_page_size: int = 200) -> MainWindow:
        window = MainWindow(load_settings(tracking_uri=tracking_uri), versions_page_size=versions_page_size)
        qtbot.addWidget(window)
        windows.append(window)
        window.resize(1400, 860)
        window.show()
        if wait:
            with qtbot.waitSignal(window.registry_page.firstScreenReady, timeout=FIRST_SCREEN_TIMEOUT_MS):
                window.open_current_registry()
            settle(qtbot)
        else:
            window.open_current_registry()
        return window

    yield make


def settle(qtbot: QtBot, timeout_s: float = 30.0) -> None:
    """Wait until no request is scheduled and every worker task has been delivered."""

    def idle() -> bool:
        pages = [w.registry_page for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow)]
        return not default_pool().pending and not any(p.has_scheduled_work() for p in pages)

    qtbot.waitUntil(idle, timeout=int(timeout_s * 1000))


@pytest.fixture
def make_monitor_page(qtbot: QtBot) -> Iterator[Callable[..., MonitorPage]]:
    """``make(config, interval=None, history=None, writer=None)``: a shown Monitor page whose source collects
    every ``interval`` s (default ``config.interval``) in its own collection process; stopped after the test."""
    made: list[MonitorPage] = []

    def make(
        config: MonitorConfig,
        *,
        interval: float | None = None,
        history: Path | None = None,
        writer: HistoryWriter | None = None,
    ) -> MonitorPage:
        source = MonitorSource(interval=interval or config.interval, drain_hz=10, history=writer)
        page = MonitorPage(source, config, history_path=history)
        qtbot.addWidget(page)
        page.resize(1300, 820)
        page.show()
        source.start()
        made.append(page)
        return page

    yield make
    for page in made:
        page.source.stop()
    wait_for_workers(10)
