"""Prometheus metrics of one runtime, on its own registry (no process-wide globals).

Label children are created once and cached, so the per-request cost is a couple
of lock-protected float additions (measured in benchmarks/bench_runtime.py).
"""

from __future__ import annotations

import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Sub-millisecond to tens of seconds: a tree model answers in ~100 µs, a big batch in seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class RuntimeMetrics:
    """The counters, histograms and gauges ``GET /metrics`` exposes."""

    def __init__(
        self, *, model_name: str, model_version: str, bundle_sha256: str, runtime_version: str, deployment: str = ""
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modeldeck_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "modeldeck_request_duration_seconds",
            "Time from request start to response sent, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "modeldeck_inference_duration_seconds",
            "Time in onnxruntime session.run per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("modeldeck_batch_size", "Rows per session.run", buckets=BATCH_BUCKETS, registry=r)
        self.batch_requests = Histogram(
            "modeldeck_batch_requests", "Requests coalesced per session.run", buckets=BATCH_BUCKETS, registry=r
        )
        self.in_flight = Gauge("modeldeck_requests_in_flight", "Requests being handled now", registry=r)
        self.inference_errors = Counter(
            "modeldeck_inference_errors", "session.run calls that failed inside onnxruntime", registry=r
        )
        info = Info("modeldeck_model", "The model this runtime serves", registry=r)
        info.info(
            {
                "name": model_name,
                "version": model_version,
                "bundle_sha256": bundle_sha256,
                "runtime_version": runtime_version,
                "deployment": deployment,
            }
        )
        self.start_time = time.time()
        start = Gauge("modeldeck_start_time_seconds", "Unix time the runtime process started serving", registry=r)
        start.set(self.start_time)
        uptime = Gauge("modeldeck_uptime_seconds", "Seconds since the runtime started", registry=r)
        uptime.set_function(lambda: time.time() - self.start_time)
        self.ready = Gauge("modeldeck_ready", "1 once the model is loaded and warmed up", registry=r)
        if sys.platform.startswith("linux"):
            ProcessCollector(registry=r)
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request; ``route`` must be a template, never a raw path (bounded cardinality)."""
        key = (route, status)
        child = self._children.get(key)
        if child is None:
            child = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._children[key] = child
        child[0].inc()
        child[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
