"""Collection benchmark: N deployments scraped at 1 Hz by one Collector, what it costs the process that hosts it.

    .venv/bin/python benchmarks/bench_monitor.py [--endpoints 50] [--duration 60]

The endpoints are one real runtime's ``/metrics`` page (captured from an iris
runtime after some traffic, so histograms are filled) served by N loopback
HTTP servers in a *separate* process, so their CPU is not counted. Reports the
collector's CPU %, scrape-to-sample latency, resident memory over the run, and
the lag of a 5 ms sleeper thread in the collector's process (a stand-in for the
UI thread's share of the GIL). All traffic on 127.0.0.1; the run is bounded.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def capture_page(workdir: Path) -> bytes:
    from tests.fixtures.runtime import make_iris_bundle, start_runtime

    bundle = make_iris_bundle(workdir / "iris")
    rp = start_runtime(bundle.path, workdir / "run")
    try:
        body = json.dumps({"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}})
        for _ in range(200):
            req = urllib.request.Request(
                f"{rp.url}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(req, timeout=5).read()
        return urllib.request.urlopen(f"{rp.url}/metrics", timeout=5).read()
    finally:
        rp.terminate()


SERVERS = textwrap.dedent(
    """
    import sys, threading, json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    page = open(sys.argv[1], "rb").read()
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", str(len(page))); self.end_headers()
            self.wfile.write(page)
        def log_message(self, *a): pass
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), H) for _ in range(int(sys.argv[2]))]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(json.dumps([s.server_address[1] for s in servers]), flush=True)
    sys.stdin.read()
    """
)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoints", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--retention", type=int, default=3600)
    ap.add_argument("--freeze", action="store_true", help="gc.freeze() before collecting, as the GUI does")
    args = ap.parse_args()
    gc_times: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_times[info["generation"]].append(time.perf_counter() - gc_start[0])

    from modeldeck.core.monitor.collector import Collector, Endpoint

    with tempfile.TemporaryDirectory() as tmp:
        page = capture_page(Path(tmp))
        (Path(tmp) / "page.txt").write_bytes(page)
        servers = subprocess.Popen(
            [sys.executable, "-c", SERVERS, str(Path(tmp) / "page.txt"), str(args.endpoints)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            ports = json.loads(servers.stdout.readline())  # type: ignore[union-attr]
            endpoints = [Endpoint(f"dep-{i}", f"http://127.0.0.1:{p}/metrics") for i, p in enumerate(ports)]
            lags: list[float] = []
            stop = threading.Event()

            def sleeper() -> None:
                while not stop.is_set():
                    t0 = time.perf_counter()
                    time.sleep(0.005)
                    lags.append(time.perf_counter() - t0 - 0.005)

            if args.freeze:
                gc.collect()
                gc.freeze()
            gc.callbacks.append(on_gc)
            collector = Collector(endpoints, interval=1.0, retention=args.retention)
            probe = threading.Thread(target=sleeper, daemon=True)
            probe.start()
            rss0 = rss_mb()
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            collector.start()
            counts = {"all": 0, "ok": 0}
            rss_points = []
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                time.sleep(0.1)  # a UI timer draining at 10 Hz
                batch = collector.drain()
                counts["all"] += len(batch)
                counts["ok"] += sum(s.derived is not None for s in batch)
                rss_points.append(rss_mb())
            collector.stop(timeout=5)
            cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            stop.set()
            probe.join(2)
        finally:
            servers.stdin.close()  # type: ignore[union-attr]
            servers.wait(timeout=10)

    gc.callbacks.remove(on_gc)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    lags_ms = sorted(x * 1000 for x in lags)
    half = len(rss_points) // 2
    print(f"page size: {len(page)} bytes; endpoints: {args.endpoints}; duration: {wall1 - wall0:.1f} s")
    print(f"samples: {counts['all']} ({counts['ok']} ok) = {counts['all'] / (wall1 - wall0):.1f}/s")
    print(f"collector process CPU: {100 * cpu / (wall1 - wall0):.1f} % of one core")
    print(f"  per scrape: {1000 * cpu / max(counts['all'], 1):.2f} ms CPU")
    print(
        f"5 ms sleeper lag: p50 {statistics.median(lags_ms):.2f} ms, p99 {lags_ms[int(0.99 * len(lags_ms))]:.2f} ms,"
        f" max {lags_ms[-1]:.2f} ms"
    )
    for gen, times in gc_times.items():
        if times:
            print(f"gc gen{gen}: {len(times)} runs, max {1000 * max(times):.1f} ms, total {sum(times):.2f} s")
    print(
        f"RSS: start {rss0:.1f} MB, after 10 s {rss_points[min(100, len(rss_points) - 1)]:.1f} MB,"
        f" mid {rss_points[half]:.1f} MB, end {rss_points[-1]:.1f} MB;"
        f" series store {collector.series.nbytes / 1e6:.1f} MB (retention {args.retention} points)"
    )


if __name__ == "__main__":
    main()
