"""Live dashboards under load: 50 deployments scraped at 1 Hz with the fleet table and the detail plots open.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_dashboard.py [--endpoints 50] [--duration 600]

The endpoints are a real iris runtime's ``/metrics`` page (captured after traffic,
as in ``bench_monitor.py``) served by N loopback HTTP servers in a *separate*
process; each server scales the page's counters up a little on every GET so
rates, error ratios and latency percentiles keep moving like live traffic. The
GUI process is the app's: the Monitor page in a tall offscreen window (all 50
rows and their sparklines visible) with ``--selected`` deployments overlaid in
the detail plots, the collector at 1 Hz, drained at 5 Hz. Collection runs in the app's child process
(``CollectorProcess``) unless ``--in-process`` (the old in-process ``Collector``, for A/B runs).

Reports:
- UI-thread stall: a 10 ms ``QTimer`` probe, lag = how much later than scheduled each tick ran (p50/p99/max);
- per drain tick: the slot's time (fleet rows + plots' ``setData``), and the time of every paint event of the
  fleet table (50 rows with sparklines) and of the plots, as Qt schedules them — together, the "frame";
- resident memory every 10 s of the GUI process and of the collection process, and their slopes over the second
  half (MB/min);
- with ``--profile-plots``, the functions the plots' paints spend their time in (cProfile, cumulative);
- gen2 GC passes (the process freezes start-up objects with ``gc.freeze()`` as the main window does).
All traffic stays on 127.0.0.1; the run is bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import array
import cProfile
import gc
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_monitor import capture_page  # noqa: E402


def proc_status(pid: int | str = "self", field: str = "VmRSS") -> int | None:
    """A number from /proc/PID/status (kB for memory fields), None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far (NaN when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self") -> float:
    kb = proc_status(pid)
    return kb / 1024 if kb is not None else float("nan")


# Each server answers the captured page with every cumulative counter scaled by a factor that grows by
# 1-3 % per GET: counters stay monotonic and histograms consistent, so the collector derives real rates.
SERVERS = textwrap.dedent(
    """
    import json, random, re, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    lines = open(sys.argv[1]).read().splitlines()
    counter = re.compile(r"^(\\w+?(_total|_count|_sum|_bucket))(\\{.*\\})? (\\S+)$")
    parts = []
    for line in lines:
        m = counter.match(line)
        if m and not line.startswith(("process_start", "process_virtual", "process_max")):
            parts.append((line[: line.rfind(" ") + 1], float(m.group(4))))
        else:
            parts.append((line, None))
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        factor = 1.0
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            srv = self.server
            srv.factor += random.uniform(0.01, 0.03)
            body = "\\n".join(p if v is None else f"{p}{v * srv.factor:.6g}" for p, v in parts).encode() + b"\\n"
            try:
                self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the collector gave up (its timeout) on a machine too loaded to answer in time
        def log_message(self, *a): pass
    servers = [Server(("127.0.0.1", 0), H) for _ in range(int(sys.argv[2]))]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(json.dumps([s.server_address[1] for s in servers]), flush=True)
    sys.stdin.read()
    """
)


class PaintTimer:
    """Times every paint event of a widget: the filter delivers the event itself, between two clock reads."""

    def __init__(self, widget: object, profile: object = None) -> None:
        from PySide6.QtCore import QEvent, QObject
        from PySide6.QtWidgets import QApplication

        self.ms: list[float] = []
        self.profile = profile  # a cProfile.Profile enabled around each paint, or None
        self._busy = False
        outer = self

        class Filter(QObject):
            def eventFilter(self, obj: QObject, event: QEvent) -> bool:
                if event.type() != QEvent.Type.Paint or outer._busy:
                    return False
                outer._busy = True
                if outer.profile is not None:
                    outer.profile.enable()  # type: ignore[attr-defined]
                t0 = time.perf_counter()
                try:
                    QApplication.sendEvent(obj, event)
                finally:
                    outer._busy = False
                    if outer.profile is not None:
                        outer.profile.disable()  # type: ignore[attr-defined]
                outer.ms.append((time.perf_counter() - t0) * 1000)
                return True

        self._filter = Filter()
        widget.installEventFilter(self._filter)  # type: ignore[attr-defined]

    def reset(self) -> None:
        self.ms.clear()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / var if var else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", type=int, default=50)
    ap.add_argument("--selected", type=int, default=4, help="deployments overlaid in the detail plots")
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--range", default="5 min", help="detail plots' time range")
    ap.add_argument("--no-freeze", action="store_true", help="skip gc.freeze() after start-up")
    ap.add_argument("--in-process", action="store_true", help="collect in the GUI process (the old Collector)")
    ap.add_argument("--profile-plots", action="store_true", help="cProfile the plots' paints, print the top 25")
    ap.add_argument("--screenshot", type=Path, help="save the page as a PNG at the end")
    ap.add_argument("--arena-max", type=int, default=2, help="MALLOC_ARENA_MAX of the collection process (0: unset)")
    args = ap.parse_args()
    if not 10 <= args.duration <= 3600:
        ap.error("--duration must be between 10 and 3600 s")

    from modeldeck.core.monitor.config import MonitorConfig
    from modeldeck.gui.app import create_application
    from modeldeck.gui.dashboard.page import MonitorPage
    from modeldeck.gui.dashboard.source import Monitored, MonitorSource
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    create_application()
    gc_times: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_times[info["generation"]].append(time.perf_counter() - gc_start[0])

    with tempfile.TemporaryDirectory() as tmp:
        page_file = Path(tmp) / "page.txt"
        page_file.write_bytes(capture_page(Path(tmp)))
        servers = subprocess.Popen(
            [sys.executable, "-c", SERVERS, str(page_file), str(args.endpoints)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            ports = json.loads(servers.stdout.readline())  # type: ignore[union-attr]
            source = MonitorSource(interval=1.0, drain_hz=5.0, in_process=args.in_process)
            if not args.in_process:
                source.collector.malloc_arena_max = args.arena_max or None  # type: ignore[union-attr]
            page = MonitorPage(source, MonitorConfig())
            row_h = page.view.verticalHeader().defaultSectionSize()
            table_h = (args.endpoints + 1) * row_h + 8
            page.resize(1400, table_h + 700)
            page.show()
            splitter = page.plots.parentWidget().parentWidget()
            splitter.setSizes([table_h, 640])  # every row (and its sparkline) on screen
            for i, port in enumerate(ports):
                name = f"dep-{i:02d}"
                source.add(Monitored(name, f"http://127.0.0.1:{port}/metrics", None, "manual"))
            page.select(*(f"dep-{i:02d}" for i in range(args.selected)))
            page.set_range(args.range)
            if not args.no_freeze:
                gc.collect()
                gc.freeze()
            gc.callbacks.append(on_gc)

            lags = array.array("d")  # 8 bytes a tick, not a float object: the probe must not show as RSS growth
            last = [time.perf_counter()]

            def probe() -> None:
                now = time.perf_counter()
                lags.append(max(0.0, (now - last[0]) * 1000 - 10.0))
                last[0] = now

            timer = QTimer()
            timer.setTimerType(Qt.TimerType.PreciseTimer)
            timer.setInterval(10)
            timer.timeout.connect(probe)
            profile = cProfile.Profile() if args.profile_plots else None
            paints = {
                "table": PaintTimer(page.view.viewport()),
                "plots": PaintTimer(page.plots.graphics.viewport(), profile),
            }

            rss: list[tuple[float, float, float]] = []  # (s, GUI MB, collection process MB)

            threads: list[int | None] = []  # of the collection process: its scrape pool grows threads lazily

            def sample_rss() -> None:
                child = getattr(source.collector, "pid", None)
                rss.append((time.monotonic() - start, rss_mb(), rss_mb(child) if child else float("nan")))
                threads.append(proc_status(child, "Threads") if child else None)

            load0 = os.getloadavg()
            source.start()
            start = time.monotonic()
            loop = QEventLoop()
            warmup = 10.0  # ring buffers fill their first points, pyqtgraph builds its caches
            cpu0: list[float] = []  # GUI, collection process at the end of the warm-up

            def cpu_now() -> list[float]:
                child = getattr(source.collector, "pid", None)
                return [cpu_seconds(), cpu_seconds(child) if child else 0.0]

            QTimer.singleShot(
                int(warmup * 1000),
                lambda: (
                    cpu0.extend(cpu_now()),
                    timer.start(),
                    last.__setitem__(0, time.perf_counter()),
                    *(p.reset() for p in paints.values()),
                    profile.clear() if profile is not None else None,  # type: ignore[func-returns-value]
                ),
            )
            rss_timer = QTimer()
            rss_timer.setInterval(10_000)
            rss_timer.timeout.connect(sample_rss)
            rss_timer.start()
            sample_rss()
            QTimer.singleShot(int((warmup + args.duration) * 1000), loop.quit)
            loop.exec()
            timer.stop()
            rss_timer.stop()
            cpu1 = cpu_now()
            elapsed = time.monotonic() - start
            load1 = os.getloadavg()
            samples = sum(len(source.snapshot(n, ["uptime"]).get("uptime", ((),))[0]) for n in source.monitored)
            updates = [t * 1000 for t in page.update_times]
            drawn = len(page.plots.curves)
            if args.screenshot:
                page.grab().save(str(args.screenshot))
            restarts = getattr(source.collector, "restarts", 0)
            source.stop()
            gc.callbacks.remove(on_gc)
            if args.no_freeze is False:
                gc.unfreeze()
        finally:
            servers.stdin.close()  # type: ignore[union-attr]
            servers.wait(timeout=10)

    print(
        f"endpoints: {args.endpoints} at 1 Hz, {args.selected} overlaid ({drawn} curves), range {args.range}; "
        f"measured {args.duration:.0f} s after {warmup:.0f} s warm-up; load avg {load0[0]:.2f} -> {load1[0]:.2f}"
    )
    where = (
        "in the GUI process"
        if args.in_process
        else f"in a child process ({restarts} restarts, MALLOC_ARENA_MAX={args.arena_max or 'unset'})"
    )
    print(f"samples in ring buffers: {samples} ({samples / elapsed:.1f}/s); collection {where}")
    print(
        f"UI-thread stall (10 ms timer lag): p50 {statistics.median(lags):.2f} ms, p99 {pct(list(lags), 0.99):.1f} ms,"
        f" max {max(lags):.1f} ms ({len(lags)} ticks)"
    )
    print(
        f"drain-tick update (rows + setData): p50 {statistics.median(updates):.2f} ms, p99 {pct(updates, 0.99):.2f} ms,"
        f" max {max(updates):.1f} ms ({len(updates)} ticks)"
    )
    for what, timer_ in paints.items():
        ms = timer_.ms
        if not ms:
            continue
        print(
            f"paint of the {what}: p50 {statistics.median(ms):.1f} ms, p99 {pct(ms, 0.99):.1f} ms,"
            f" max {max(ms):.1f} ms ({len(ms)} paints, {len(ms) / args.duration:.1f}/s)"
        )
    gui_cpu, child_cpu = ((b - a) / args.duration for a, b in zip(cpu0, cpu1, strict=True))
    print(
        f"CPU per second of run: GUI process {gui_cpu * 1000:.0f} ms"
        + ("" if args.in_process else f", collection process {child_cpu * 1000:.0f} ms")
    )
    for gen, times in gc_times.items():
        if times:
            print(f"gc gen{gen}: {len(times)} passes, max {1000 * max(times):.1f} ms")
    half = [p for p in rss if p[0] >= elapsed / 2]
    for i, what in ((1, "GUI process"), (2, "collection process")):
        if args.in_process and i == 2:
            continue
        points = [(p[0], p[i]) for p in rss]
        print(
            f"RSS of the {what} (MB) every 10 s: "
            + " ".join(f"{v:.1f}" for _, v in points)
            + f"\n  slope over the second half: {slope_mb_per_min([(p[0], p[i]) for p in half]):+.2f} MB/min"
            + f" (from 10 s on {slope_mb_per_min(points[1:]):+.2f} MB/min)"
        )
    if not args.in_process:
        print("threads of the collection process every 10 s: " + " ".join(str(n) for n in threads))
    if profile is not None:
        pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
