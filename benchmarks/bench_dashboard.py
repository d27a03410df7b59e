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
import ctypes
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
import tracemalloc
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

    def __init__(self, widget: object, profile: object = None, tag: object = None) -> None:
        from PySide6.QtCore import QEvent, QObject
        from PySide6.QtWidgets import QApplication

        self.ms = array.array("d")
        self.cpu_ms = array.array("d")  # the UI thread's CPU time in each paint (wall minus this: waiting)
        self.tags: list[str] = []  # per paint, what ``tag(event)`` said about it (e.g. "full" / "part")
        self.tag = tag
        self.profile = profile  # a cProfile.Profile enabled around each paint, or None
        self._busy = False
        outer = self

        class Filter(QObject):
            def eventFilter(self, obj: QObject, event: QEvent) -> bool:
                if event.type() != QEvent.Type.Paint or outer._busy:
                    return False
                outer._busy = True
                tag = outer.tag(event) if outer.tag is not None else ""  # type: ignore[operator]
                if outer.profile is not None:
                    outer.profile.enable()  # type: ignore[attr-defined]
                t0, c0 = time.perf_counter(), time.thread_time()
                try:
                    QApplication.sendEvent(obj, event)
                finally:
                    outer._busy = False
                    if outer.profile is not None:
                        outer.profile.disable()  # type: ignore[attr-defined]
                outer.ms.append((time.perf_counter() - t0) * 1000)
                outer.cpu_ms.append((time.thread_time() - c0) * 1000)
                outer.tags.append(tag)
                return True

        self._filter = Filter()
        widget.installEventFilter(self._filter)  # type: ignore[attr-defined]

    def reset(self) -> None:
        del self.ms[:]
        del self.cpu_ms[:]
        self.tags.clear()


class Phases:
    """Where the UI thread's updates spend their time. A tick is one call of a wrapped slot (a drain tick,
    ``MonitorPage._samples``, or a row slice, ``_row_slice``); methods wrapped with :meth:`wrap` (on their classes,
    before the page exists, so Qt's connections call the wrappers too) add their inclusive time under their call path
    ("plots/show_data/range") to the tick in progress, and so does GC. Per tick: wall and UI-thread CPU time (wall
    minus CPU is waiting: the scheduler, the GIL). Kept in arrays, 8 bytes a value, plus the detail of the slow ticks
    only, so the recorder itself does not show as memory growth."""

    def __init__(self, slow_ms: float = 16.0) -> None:
        self.slow_ms = slow_ms
        self.wall_ms = array.array("d")
        self.cpu_ms = array.array("d")
        self.kinds = array.array("b")  # index into self.kind_names
        self.stepped = array.array("b")  # 1: the plots' x range stepped on in this tick
        self.kind_names: list[str] = []
        self.phase_ms: dict[str, array.array[float]] = {}  # per path: its time in each tick it ran in
        self.slow: list[tuple[float, float, bool, str, dict[str, float]]] = []  # (wall, CPU, stepped, kind, phases)
        self.recording = False
        self.profile_slow: pstats.Stats | None = None
        self.profile_ticks = False
        self._stack: list[str] = []
        self._current: dict[str, float] | None = None
        self._gc_t0 = 0.0

    def wrap(self, owner: object, attr: str, name: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:  # an older page (A/B runs against a previous commit)
            return
        outer = self

        def timed(*args: object, **kwargs: object) -> object:
            if outer._current is None:
                return original(*args, **kwargs)
            outer._stack.append(name)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                path = "/".join(outer._stack)
                outer._current[path] = outer._current.get(path, 0.0) + (time.perf_counter() - t0) * 1000
                outer._stack.pop()

        setattr(owner, attr, timed)

    def wrap_tick(self, owner: type, attr: str, kind: str, stepped: object) -> None:
        """``owner.attr`` is a tick; ``stepped(self_)`` returns a value that changes when the range steps on."""
        original = getattr(owner, attr, None)
        if original is None:  # an older page (A/B runs against a previous commit)
            return
        outer = self
        self.kind_names.append(kind)
        kind_index = len(self.kind_names) - 1

        def tick(self_: object, *args: object) -> object:
            if not outer.recording or outer._current is not None:
                return original(self_, *args)
            before = stepped(self_)  # type: ignore[operator]
            outer._current, outer._stack = {}, []
            profile = cProfile.Profile() if outer.profile_ticks else None
            if profile is not None:
                profile.enable()
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return original(self_, *args)
            finally:
                ms, cpu = (time.perf_counter() - t0) * 1000, (time.thread_time() - c0) * 1000
                if profile is not None:
                    profile.disable()
                    if cpu > outer.slow_ms:
                        if outer.profile_slow is None:
                            outer.profile_slow = pstats.Stats(profile)
                        else:
                            outer.profile_slow.add(profile)
                step = stepped(self_) != before  # type: ignore[operator]
                outer.wall_ms.append(ms)
                outer.cpu_ms.append(cpu)
                outer.kinds.append(kind_index)
                outer.stepped.append(step)
                for path, value in outer._current.items():
                    outer.phase_ms.setdefault(path, array.array("d")).append(value)
                if ms > outer.slow_ms or cpu > outer.slow_ms:
                    outer.slow.append((ms, cpu, step, kind, outer._current))
                outer._current = None

        setattr(owner, attr, tick)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if self._current is None:
            return
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            key = f"gc{info['generation']}"
            self._current[key] = self._current.get(key, 0.0) + (time.perf_counter() - self._gc_t0) * 1000

    def report(self, show: int = 10) -> None:
        n = len(self.wall_ms)
        if not n:
            return
        limit = self.slow_ms
        for k, kind in enumerate(self.kind_names):
            wall = [w for w, i in zip(self.wall_ms, self.kinds, strict=True) if i == k]
            cpu = [c for c, i in zip(self.cpu_ms, self.kinds, strict=True) if i == k]
            if wall:
                print(
                    f"{kind} ({len(wall)}): wall p50 {statistics.median(wall):.2f} ms, p99 {pct(wall, 0.99):.2f},"
                    f" max {max(wall):.1f}, over {limit:g} ms: {sum(w > limit for w in wall)};"
                    f" UI-thread CPU p50 {statistics.median(cpu):.2f} ms, p99 {pct(cpu, 0.99):.2f}, max {max(cpu):.1f},"
                    f" over {limit:g} ms: {sum(c > limit for c in cpu)}"
                )
        steps = [i for i, s in enumerate(self.stepped) if s]
        if steps:
            print(
                f"  ticks that stepped the x range on: {len(steps)}; their wall p50"
                f" {statistics.median(self.wall_ms[i] for i in steps):.1f} ms, CPU p50"
                f" {statistics.median(self.cpu_ms[i] for i in steps):.1f} ms,"
                f" max {max(self.cpu_ms[i] for i in steps):.1f}"
            )
        slow_wall = [t for t in self.slow if t[0] > limit]
        print(
            f"  {'phase (inclusive wall ms)':44s} {'p50':>7s} {'p99':>7s} {'max':>7s} {'ticks':>6s}   {'in slow':>7s}"
        )
        for path in sorted(self.phase_ms):
            values = list(self.phase_ms[path]) + [0.0] * (n - len(self.phase_ms[path]))
            print(
                f"  {path:44s} {statistics.median(values):7.2f} {pct(values, 0.99):7.2f} {max(values):7.1f}"
                f" {len(self.phase_ms[path]):6d}   {sum(path in t[4] for t in slow_wall):7d}"
            )
        for title, key in (("slowest by wall", 0), ("most CPU", 1)):
            for ms, cpu, stepped, kind, ph in sorted(self.slow, key=lambda t: -t[key])[:show]:
                top = sorted(((v, p) for p, v in ph.items() if "/" not in p or v > 1.0), reverse=True)[:7]
                what = ", ".join(f"{p} {v:.1f}" for v, p in top)
                print(f"  {title}: {kind} wall {ms:5.1f} ms, CPU {cpu:5.1f}{' (x step)' if stepped else ''}: {what}")
        if self.profile_slow is not None:
            print(f"cProfile of the ticks that used over {limit:g} ms of CPU (cumulative):")
            self.profile_slow.stream = sys.stdout  # type: ignore[attr-defined]
            self.profile_slow.sort_stats("cumulative").print_stats(30)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd")] + [
        (name, ctypes.c_size_t) for name in ("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
    ]


def native_memory() -> dict[str, float]:
    """MB: Anonymous memory (/proc/self/smaps_rollup); glibc's heap in use, free inside it, and mmapped chunks
    (mallinfo2, all arenas); pymalloc's blocks in use (thousands): what kind of memory grows."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith(("Anonymous:", "Rss:")):
                out[line.split(":")[0].lower()] = int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:  # not glibc >= 2.33
        mallinfo2 = None
    if mallinfo2 is not None:
        mallinfo2.restype = _MallInfo2
        mi = mallinfo2()
        out["malloc_used"] = mi.uordblks / 2**20
        out["malloc_free"] = mi.fordblks / 2**20
        out["malloc_mmap"] = mi.hblkhd / 2**20
    out["pymalloc_blocks_k"] = sys.getallocatedblocks() / 1000
    return out


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
    ap.add_argument("--no-trim", action="store_true", help="no HeapTrimmer (malloc_trim every 60 s), as the app runs")
    ap.add_argument("--in-process", action="store_true", help="collect in the GUI process (the old Collector)")
    ap.add_argument("--profile-plots", action="store_true", help="cProfile the plots' paints, print the top 25")
    ap.add_argument("--profile-table", action="store_true", help="cProfile the fleet table's paints, print the top 25")
    ap.add_argument("--screenshot", type=Path, help="save the page as a PNG at the end")
    ap.add_argument("--sort", default="Deployment", help="fleet column to sort by, descending unless the name")
    ap.add_argument("--profile-slow-ticks", action="store_true", help="cProfile every tick, print the slow ones'")
    ap.add_argument("--slow-ms", type=float, default=16.0, help="a tick is slow above this (wall or UI-thread CPU)")
    ap.add_argument(
        "--tracemalloc", action="store_true", help="Python allocations' growth between a third of the run and its end"
    )
    ap.add_argument("--child-nice", type=int, default=5, help="niceness increment of the collection process (0: none)")
    ap.add_argument("--arena-max", type=int, default=2, help="MALLOC_ARENA_MAX of the collection process (0: unset)")
    args = ap.parse_args()
    if not 10 <= args.duration <= 3600:
        ap.error("--duration must be between 10 and 3600 s")

    from modeldeck.core.heap import HeapTrimmer
    from modeldeck.core.monitor.config import MonitorConfig
    from modeldeck.gui.app import create_application
    from modeldeck.gui.dashboard import plots as plots_module
    from modeldeck.gui.dashboard.models import FleetModel
    from modeldeck.gui.dashboard.page import MonitorPage
    from modeldeck.gui.dashboard.source import Monitored, MonitorSource
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    create_application()
    import pyqtgraph as pg

    phases = Phases(slow_ms=args.slow_ms)
    phases.profile_ticks = args.profile_slow_ticks
    phases.wrap_tick(MonitorPage, "_samples", "drain tick", lambda page_: page_.plots.x_range())
    phases.wrap_tick(MonitorPage, "_row_slice", "row slice", lambda page_: page_.plots.x_range())
    for owner, attr, name in (
        (MonitorPage, "refresh_plots", "plots"),
        (MonitorPage, "_update_dirty_rows", "rows"),
        (MonitorPage, "_row", "row"),
        (MonitorSource, "snapshot", "snapshot"),
        (FleetModel, "set_rows", "set_rows"),
        (FleetModel, "setItemData", "setItemData"),
        (MonitorPage, "_resort", "resort"),
        (plots_module.DetailPlots, "show_data", "show_data"),
        (plots_module.DetailPlots, "show_markers", "markers"),
        (plots_module.DetailPlots, "_apply_range", "range"),
        (plots_module.DetailPlots, "_y_range", "y"),
        (plots_module, "decimate", "decimate"),
        (pg.PlotCurveItem, "setData", "setData"),
        (pg.PlotItem, "setRange", "setRange"),
        (pg.ViewBox, "prepareForPaint", "prepare"),
    ):
        phases.wrap(owner, attr, name)
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
                source.collector.nice = args.child_nice  # type: ignore[union-attr]
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
            sort_column = FleetModel.HEADERS.index(args.sort)
            page.view.sortByColumn(
                sort_column, Qt.SortOrder.AscendingOrder if sort_column == 0 else Qt.SortOrder.DescendingOrder
            )
            # what makes Qt re-lay out the table, what repaints cells, what re-lays an axis: counted per second
            counts = dict.fromkeys(("table layoutChanged", "table dataChanged", "axis pictures generated"), 0)

            def count(key: str) -> None:
                counts[key] += phases.recording

            page.proxy.layoutChanged.connect(lambda *_: count("table layoutChanged"))
            page.proxy.dataChanged.connect(lambda *_: count("table dataChanged"))
            generate = pg.AxisItem.generateDrawSpecs

            def counted_generate(self_: object, *a: object) -> object:
                count("axis pictures generated")
                return generate(self_, *a)

            pg.AxisItem.generateDrawSpecs = counted_generate  # type: ignore[method-assign]
            if not args.no_freeze:
                gc.collect()
                gc.freeze()
            trimmer = HeapTrimmer()  # as the main window runs it
            if not args.no_trim:
                trimmer.start()
            gc.callbacks.append(on_gc)
            gc.callbacks.append(phases.on_gc)

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
            profile = cProfile.Profile() if args.profile_plots or args.profile_table else None
            viewport = page.view.viewport()
            last_x = [page.plots.x_range()]

            def x_stepped_since_last_paint(_event: object) -> str:
                x = page.plots.x_range()
                stepped = x != last_x[0]
                last_x[0] = x
                return "x stepped" if stepped else "same x"

            paints = {
                "table": PaintTimer(
                    viewport,
                    profile if args.profile_table else None,
                    tag=lambda e: "whole" if e.region().boundingRect().height() >= viewport.height() - 4 else "part",  # type: ignore[attr-defined]
                ),
                "plots": PaintTimer(
                    page.plots.graphics.viewport(),
                    profile if args.profile_plots else None,
                    tag=x_stepped_since_last_paint,
                ),
            }

            rss: list[tuple[float, float, float]] = []  # (s, GUI MB, collection process MB)
            native: list[dict[str, float]] = []  # the GUI process's memory by kind, at the same times
            snapshots: list[object] = []  # tracemalloc: at a third of the measured run, at its end

            threads: list[int | None] = []  # of the collection process: its scrape pool grows threads lazily

            def sample_rss() -> None:
                child = getattr(source.collector, "pid", None)
                rss.append((time.monotonic() - start, rss_mb(), rss_mb(child) if child else float("nan")))
                threads.append(proc_status(child, "Threads") if child else None)
                native.append(native_memory())
                native[-1]["bench_records"] = recorder_mb()

            def recorder_mb() -> float:
                """What this benchmark's own records hold (probe lags, paint and tick times): growth that is not
                the app's. Slow ticks' details are counted at ~1 kB each."""
                held = [
                    lags,
                    page.update_times,
                    *(getattr(phases, a) for a in ("wall_ms", "cpu_ms", "kinds", "stepped")),
                ]
                held += [*phases.phase_ms.values()]
                held += [x for t in paints.values() for x in (t.ms, t.cpu_ms, t.tags)]
                return (sum(sys.getsizeof(x) for x in held) + 1000 * len(phases.slow)) / 2**20

            load0 = os.getloadavg()
            source.start()
            start = time.monotonic()
            loop = QEventLoop()
            warmup = 10.0  # ring buffers fill their first points, pyqtgraph builds its caches
            cpu0: list[float] = []  # GUI, collection process at the end of the warm-up
            updates0: list[int] = []  # updates the page had timed by then

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
                    setattr(phases, "recording", True),
                    updates0.append(len(page.update_times)),
                    tracemalloc.start(10) if args.tracemalloc else None,
                ),
            )
            if args.tracemalloc:
                QTimer.singleShot(
                    int((warmup + args.duration / 3) * 1000), lambda: snapshots.append(tracemalloc.take_snapshot())
                )
            rss_timer = QTimer()
            rss_timer.setInterval(10_000)
            rss_timer.timeout.connect(sample_rss)
            rss_timer.start()
            sample_rss()
            QTimer.singleShot(int((warmup + args.duration) * 1000), loop.quit)
            loop.exec()
            phases.recording = False
            if args.tracemalloc:
                snapshots.append(tracemalloc.take_snapshot())
                tracemalloc.stop()
            timer.stop()
            rss_timer.stop()
            cpu1 = cpu_now()
            elapsed = time.monotonic() - start
            load1 = os.getloadavg()
            samples = sum(len(source.snapshot(n, ["uptime"]).get("uptime", ((),))[0]) for n in source.monitored)
            updates = [t * 1000 for t in page.update_times[updates0[0] :]]
            drawn = len(page.plots.curves)
            if args.screenshot:
                page.grab().save(str(args.screenshot))
            restarts = getattr(source.collector, "restarts", 0)
            source.stop()
            trimmer.stop()
            gc.callbacks.remove(on_gc)
            gc.callbacks.remove(phases.on_gc)
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
        else f"in a child process ({restarts} restarts, MALLOC_ARENA_MAX={args.arena_max or 'unset'}, "
        f"nice +{args.child_nice})"
    )
    print(f"samples in ring buffers: {samples} ({samples / elapsed:.1f}/s); collection {where}")
    print(f"sorted by {args.sort}; per second: " + ", ".join(f"{k} {v / args.duration:.1f}" for k, v in counts.items()))
    print(
        f"UI-thread stall (10 ms timer lag): p50 {statistics.median(lags):.2f} ms, p99 {pct(list(lags), 0.99):.1f} ms,"
        f" max {max(lags):.1f} ms ({len(lags)} ticks)"
    )
    print(
        f"UI update (drain ticks and row slices: rows + setData): p50 {statistics.median(updates):.2f} ms,"
        f" p99 {pct(updates, 0.99):.2f} ms, max {max(updates):.1f} ms ({len(updates)} ticks)"
    )
    for what, timer_ in paints.items():
        ms = timer_.ms
        if not ms:
            continue
        print(
            f"paint of the {what}: p50 {statistics.median(ms):.1f} ms, p99 {pct(ms, 0.99):.1f} ms,"
            f" max {max(ms):.1f} ms ({len(ms)} paints, {len(ms) / args.duration:.1f}/s); CPU p50"
            f" {statistics.median(timer_.cpu_ms):.1f} ms, p99 {pct(timer_.cpu_ms, 0.99):.1f} ms,"
            f" max {max(timer_.cpu_ms):.1f} ms, over 16 ms: {sum(c > 16 for c in timer_.cpu_ms)}"
        )
        for tag in sorted(set(timer_.tags)):
            tagged = [m for m, t in zip(ms, timer_.tags, strict=True) if t == tag]
            tagged_cpu = [m for m, t in zip(timer_.cpu_ms, timer_.tags, strict=True) if t == tag]
            print(
                f"  {tag}: p50 {statistics.median(tagged):.1f} ms, p99 {pct(tagged, 0.99):.1f} ms,"
                f" max {max(tagged):.1f} ms ({len(tagged)} paints); over 16 ms: {sum(m > 16 for m in tagged)};"
                f" CPU p50 {statistics.median(tagged_cpu):.1f}, p99 {pct(tagged_cpu, 0.99):.1f} ms"
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
        thirds = [
            slope_mb_per_min([p for p in points[1:] if k * elapsed / 3 <= p[0] < (k + 1) * elapsed / 3 + 1])
            for k in range(3)
        ]
        print(
            f"RSS of the {what} (MB) every 10 s: "
            + " ".join(f"{v:.1f}" for _, v in points)
            + f"\n  slope over the second half: {slope_mb_per_min([(p[0], p[i]) for p in half]):+.2f} MB/min"
            + f" (from 10 s on {slope_mb_per_min(points[1:]):+.2f} MB/min)"
            + "; by thirds: "
            + " / ".join(f"{v:+.2f}" for v in thirds)
            + " MB/min"
        )
    if native:
        last_third = [k for k, p in enumerate(rss) if p[0] >= 2 * elapsed / 3]
        first = next((k for k, p in enumerate(rss) if p[0] >= warmup), 0)
        print(
            "GUI process memory by kind (MB; pymalloc in thousands of blocks): at warm-up end -> at 2/3 -> end,"
            " slope over the last third per min"
        )
        for key in native[-1]:
            pts = [(rss[k][0], native[k].get(key, float("nan"))) for k in last_third]
            at = [native[k].get(key, float("nan")) for k in (first, last_third[0] if last_third else first, -1)]
            print(f"  {key:18s} " + " -> ".join(f"{v:.2f}" for v in at) + f"   {slope_mb_per_min(pts):+.3f}/min")
        own = [(rss[k][0], rss[k][1] - native[k].get("bench_records", 0.0)) for k in last_third]
        print(
            "  GUI RSS minus the benchmark's own records, slope over the last third:"
            f" {slope_mb_per_min(own):+.3f} MB/min"
        )
    if len(snapshots) == 2:
        print("tracemalloc: growth from a third of the run to its end (top 15 lines)")
        for stat in snapshots[1].compare_to(snapshots[0], "lineno")[:15]:  # type: ignore[attr-defined]
            print(f"  {stat}")
        print("  biggest growth by traceback:")
        for stat in snapshots[1].compare_to(snapshots[0], "traceback")[:3]:  # type: ignore[attr-defined]
            print(f"  {stat.size_diff / 1024:+.1f} KiB, {stat.count_diff:+d} blocks")
            for line in stat.traceback.format()[-8:]:
                print(f"    {line}")
    if not args.in_process:
        print("threads of the collection process every 10 s: " + " ".join(str(n) for n in threads))
    phases.report()
    if profile is not None:
        pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
