"""Registry browser on the ~2,000-version store: time to first screen, and UI-thread stalls while paging.

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_registry_browse.py [--runs 3]``

1. First screen: from ``MainWindow(...)`` to "models listed, first page of the
   selected model's versions in the table, details of the newest version shown".
   With nothing remembered the window opens on the model with a ``champion`` and the
   most versions — here ``big-model`` itself (200 rows + their metrics).
   Target < 2 s. The store is opened once beforehand in a throwaway process-level
   warm-up so the figure is the window's, not MLflow's import time (reported separately).
2. Scrolling ``big-model`` (1,500 versions, pages of 200) to the bottom through
   ``fetchMore`` while a 5 ms QTimer probe records how late each tick fires: the
   UI thread's stalls (max / p99 / mean lag).

Bounded: at most ``--scroll-timeout`` seconds of scrolling; all I/O is local SQLite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


class LagProbe:
    """A 5 ms repeating timer; lag = how much later than scheduled each tick ran."""

    def __init__(self, interval_ms: int = 5) -> None:
        self.interval_ms = interval_ms
        self.lags_ms: list[float] = []
        self._clock = QElapsedTimer()
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0

    def start(self) -> None:
        self.lags_ms.clear()
        self._clock.start()
        self._last = 0.0
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = self._clock.nsecsElapsed() / 1e6
        self.lags_ms.append(max(0.0, now - self._last - self.interval_ms))
        self._last = now

    def summary(self) -> str:
        if not self.lags_ms:
            return "no samples"
        lags = sorted(self.lags_ms)
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        return (
            f"ticks={len(lags)} max={lags[-1]:.1f} ms p99={p99:.1f} ms "
            f"p50={statistics.median(lags):.1f} ms mean={statistics.fmean(lags):.2f} ms"
        )


def wait_for(predicate, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    """Spin the event loop (no sleeping) until ``predicate()`` or the timeout."""
    app = QApplication.instance()
    assert app is not None
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
    return True


def first_screen(uri: str) -> tuple[float, object]:
    from modeldeck.core.settings import load_settings
    from modeldeck.gui.main_window import MainWindow

    ready: list[float] = []
    t0 = time.perf_counter()
    window = MainWindow(load_settings(tracking_uri=uri))
    window.resize(1400, 860)
    window.show()
    page = window.registry_page
    marks: dict[str, float] = {"window": time.perf_counter()}
    window.registryChanged.connect(lambda _r: marks.setdefault("registry open", time.perf_counter()))
    page.modelsLoaded.connect(lambda _n: marks.setdefault("models listed", time.perf_counter()))
    page.versionsLoaded.connect(lambda _n: marks.setdefault("versions shown", time.perf_counter()))
    page.detailsShown.connect(lambda _d: marks.setdefault("details shown", time.perf_counter()))
    page.firstScreenReady.connect(lambda: ready.append(time.perf_counter()))
    window.registry_page.loadFailed.connect(lambda text: sys.exit(f"error: {text}"))
    window.open_current_registry()
    if not wait_for(lambda: bool(ready), 60):
        sys.exit("error: first screen did not appear within 60 s")
    print("  " + ", ".join(f"{k} +{(v - t0) * 1000:.0f} ms" for k, v in marks.items()))
    return ready[0] - t0, window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scroll-timeout", type=float, default=120.0)
    parser.add_argument(
        "--switch-interval", type=float, help="override the app's GIL switch interval (s), to compare settings"
    )
    args = parser.parse_args()

    from tests.fixtures.registry import BIG_MODEL, BIG_MODEL_VERSIONS, cached_big_store_db, sqlite_uri

    work = Path(tempfile.mkdtemp(prefix="modeldeck-bench-"))
    os.environ["MODELDECK_DATA_DIR"] = str(work / "data")
    os.environ["MODELDECK_CONFIG_DIR"] = str(work / "config")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
    try:
        t = time.perf_counter()
        cached, built = cached_big_store_db()
        shutil.copyfile(cached, work / "mlflow.db")
        uri = sqlite_uri(work / "mlflow.db")
        print(f"big store ready in {time.perf_counter() - t:.1f} s" + (f" (built in {built:.0f} s)" if built else ""))

        from modeldeck.gui.app import create_application
        from modeldeck.gui.workers import wait_for_workers

        create_application()
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        t = time.perf_counter()
        from modeldeck.core.registry.client import Registry

        Registry(uri).ping()  # MLflow import + first DB open, paid once per process
        print(f"warm-up (import mlflow, open store): {time.perf_counter() - t:.2f} s")

        times = []
        window = None
        for i in range(args.runs):
            if window is not None:
                window.close()
                window.deleteLater()
            elapsed, window = first_screen(uri)
            wait_for_workers(30)
            times.append(elapsed)
            print(f"first screen run {i + 1}: {elapsed * 1000:.0f} ms")
        print(
            f"FIRST SCREEN: best {min(times) * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms "
            f"(target < 2000 ms; ratio to target {statistics.median(times) / 2.0:.2f})"
        )

        assert window is not None
        page = window.registry_page  # type: ignore[attr-defined]
        loaded: list[str] = []
        page.versionsLoaded.connect(loaded.append)
        current = page.current_model()
        if current is None or current.name != BIG_MODEL:
            page.select_model(BIG_MODEL)
            if not wait_for(lambda: BIG_MODEL in loaded, 30):
                sys.exit("error: big-model versions did not load")
        wait_for_workers(30)
        view = page.version_view
        bar = view.verticalScrollBar()
        probe = LagProbe(5)
        steps = 0
        loop = QEventLoop()

        def scroll_step() -> None:
            """What a user flicking the wheel does: one page down every 16 ms."""
            nonlocal steps
            steps += 1
            bar.setValue(min(bar.maximum(), bar.value() + view.viewport().height()))
            if page.version_model.rowCount() >= BIG_MODEL_VERSIONS and bar.value() == bar.maximum():
                loop.quit()

        driver = QTimer()
        driver.setInterval(16)
        driver.timeout.connect(scroll_step)
        QTimer.singleShot(int(args.scroll_timeout * 1000), loop.quit)
        t = time.perf_counter()
        probe.start()
        driver.start()
        loop.exec()  # the real event loop: the probe sees exactly what a user would
        driver.stop()
        probe.stop()
        scroll_s = time.perf_counter() - t
        rows = page.version_model.rowCount()
        done = rows >= BIG_MODEL_VERSIONS
        print(
            f"SCROLL TO BOTTOM: {rows}/{BIG_MODEL_VERSIONS} versions in {scroll_s:.2f} s "
            f"({steps} wheel steps of one page every 16 ms){'' if done else ' — TIMED OUT'}"
        )
        print(f"UI-THREAD LAG while scrolling (5 ms probe): {probe.summary()}")
        wait_for_workers(30)
        window.close()
        return 0 if done else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
