"""Start the desktop app, or render one offscreen screenshot of it (``modeldeck gui --screenshot``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from modeldeck.core.errors import ConfigError, ModelDeckError
from modeldeck.core.settings import load_settings
from modeldeck.core.state import parse_selection
from modeldeck.gui.main_window import MainWindow
from modeldeck.gui.style import apply_style
from modeldeck.gui.workers import default_pool, wait_for_workers
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

log = logging.getLogger(__name__)

SCREENSHOT_TIMEOUT_S = 60.0
UI_SWITCH_INTERVAL_S = 0.001
REGISTRY_TIMEOUT_S = 10.0  # Registry's default timeout


def create_application(argv: list[str] | None = None) -> QApplication:
    """The QApplication (reused if one exists, as under pytest-qt), styled."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("ModelDeck")
    app.setOrganizationName("ModelDeck")
    app.setApplicationDisplayName("ModelDeck")
    apply_style(app)
    # Workers run MLflow's pure-Python code; with the default 5 ms GIL switch interval every
    # Python callback the UI thread makes while painting (item models' data()) can wait up to
    # 5 ms for the GIL ("convoy effect") — scrolling 1,500 versions stalled ~85 ms at p50.
    # 1 ms keeps the UI thread's waits short at a small cost to worker throughput.
    sys.setswitchinterval(UI_SWITCH_INTERVAL_S)
    # Registry() bounds MLflow's HTTP retries through environment variables; set them here, on the UI
    # thread before any worker runs, so workers creating registries never putenv while Qt reads the env.
    from modeldeck.core.registry.client import bound_http_retries

    bound_http_retries(REGISTRY_TIMEOUT_S)
    return app


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(p) for p in text.lower().split("x", 1))
    except ValueError as exc:
        raise ConfigError(f"bad --size {text!r}", hint="use WIDTHxHEIGHT, e.g. 1400x860") from exc
    if not (320 <= w <= 8000 and 240 <= h <= 8000):
        raise ConfigError(f"--size {text} is out of range", hint="between 320x240 and 8000x8000")
    return w, h


def wait_for_first_screen(window: MainWindow, timeout_s: float = SCREENSHOT_TIMEOUT_S) -> str | None:
    """Run the event loop until the registry page shows models, versions and details.

    Returns None when it did, or the error text (failure or timeout).
    """
    page = window.registry_page
    outcome: dict[str, str | None] = {}
    loop = QEventLoop()

    def ready() -> None:
        outcome.setdefault("error", None)
        loop.quit()

    def failed(text: str) -> None:
        outcome.setdefault("error", text)
        loop.quit()

    page.firstScreenReady.connect(ready)
    page.loadFailed.connect(failed)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(lambda: failed(f"the registry did not load within {timeout_s:.0f} s"))
    timer.start(int(timeout_s * 1000))
    window.open_current_registry()
    if "error" not in outcome:
        loop.exec()
    timer.stop()
    page.firstScreenReady.disconnect(ready)
    page.loadFailed.disconnect(failed)
    return outcome.get("error")


def take_screenshot(window: MainWindow, path: Path, size: tuple[int, int]) -> str | None:
    """Open the registry, wait for the first screen, save a PNG. Returns an error text or None."""
    window.resize(*size)
    window.show()
    error = wait_for_first_screen(window)
    # Let pending metric fetches land so the metric column is filled, then paint.
    wait_for_workers(10.0)
    QApplication.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().save(str(path), "PNG"):
        return f"cannot write {path}"
    return error


def run_app(args: argparse.Namespace) -> int:
    """Entry point used by ``modeldeck`` / ``modeldeck gui``."""
    ref = getattr(args, "select", None)
    select = parse_selection(ref) if ref else None  # a bad REF fails before any window appears
    app = create_application()
    settings = load_settings(tracking_uri=getattr(args, "tracking_uri", None))
    screenshot = getattr(args, "screenshot", None)
    if screenshot:
        size = parse_size(getattr(args, "size", None) or "1400x860")
        window = MainWindow(settings, select=select)
        try:
            error = take_screenshot(window, Path(screenshot), size)
        finally:
            default_pool().cancel_all()
            wait_for_workers(15.0)
            window.close()
        if error:
            raise ModelDeckError(f"registry did not load for the screenshot: {error}")
        print(f"saved {screenshot}")
        return 0
    window = MainWindow(settings, select=select)
    window.show()
    window.open_current_registry()
    code = app.exec()
    default_pool().cancel_all()
    wait_for_workers(5.0)
    return int(code)
