"""Turn consecutive scrapes of a runtime into the figures a dashboard shows.

Rates come from counter deltas over the monotonic clock between two scrapes;
percentiles from histogram bucket deltas over a (possibly longer) window,
interpolated linearly inside a bucket the way Prometheus' ``histogram_quantile``
does. A counter that goes down, or a changed process start time, is a restart:
the new values then count from zero, as Prometheus' ``rate`` treats resets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from modeldeck.core.monitor.scrape import Labels, Scrape

REQUESTS = "modeldeck_requests_total"
LATENCY = "modeldeck_request_duration_seconds"
INFERENCE = "modeldeck_inference_duration_seconds"
BATCH = "modeldeck_batch_size"
MODEL_INFO = "modeldeck_model_info"
# The collector's own scrapes are requests too; they are not the traffic a user wants to see.
IGNORED_ROUTES = frozenset({"/metrics"})

# The numeric series a derived sample carries, in a fixed order (ring buffers and Prometheus queries use these names).
SERIES = (
    "request_rate",
    "error_rate",
    "client_error_rate",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "inference_mean",
    "batch_size_mean",
    "cpu_percent",
    "resident_memory",
    "uptime",
    "in_flight",
)


@dataclass(frozen=True)
class Derived:
    """What happened at one endpoint between two scrapes.

    Rates are per second; ``error_rate`` (5xx) and ``client_error_rate`` (4xx)
    are fractions of the requests in the interval (NaN when there were none);
    latencies and means are seconds / rows (NaN when nothing was observed).
    """

    at: float
    request_rate: float
    error_rate: float
    client_error_rate: float
    latency_p50: float
    latency_p95: float
    latency_p99: float
    inference_mean: float
    batch_size_mean: float
    cpu_percent: float
    resident_memory: float
    uptime: float
    in_flight: float
    model_name: str
    model_version: str
    bundle_sha256: str
    restarted: bool
    version_changed: bool

    def values(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in SERIES}


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile of cumulative ``(upper_bound, count)`` buckets, like Prometheus' ``histogram_quantile``.

    Linear interpolation inside the bucket holding the rank; the first bucket
    starts at 0 (or its bound if negative); a rank in the ``+Inf`` bucket
    answers the highest finite bound. NaN when there are no observations.
    """
    if not buckets:
        return math.nan
    ordered = sorted(buckets)
    if not math.isinf(ordered[-1][0]):
        return math.nan
    total = ordered[-1][1]
    if total <= 0 or not 0 <= q <= 1:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for i, (bound, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(bound):
                return ordered[-2][0] if len(ordered) > 1 else math.nan
            if i == 0 and bound <= 0:
                return bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return math.nan


def _sum_by_le(scrape: Scrape, name: str, ignored_routes: Iterable[str]) -> dict[float, float]:
    ignored = set(ignored_routes)
    out: dict[float, float] = {}
    for labels, value in scrape.series(f"{name}_bucket").items():
        d = dict(labels)
        if d.get("route") in ignored:
            continue
        le = float(d["le"]) if "le" in d else math.inf
        out[le] = out.get(le, 0.0) + value
    return out


def _sum(scrape: Scrape, name: str, ignored_routes: Iterable[str] = ()) -> float:
    ignored = set(ignored_routes)
    return sum(v for labels, v in scrape.series(name).items() if dict(labels).get("route") not in ignored)


def _requests_by_class(scrape: Scrape, ignored_routes: Iterable[str]) -> dict[str, float]:
    ignored = set(ignored_routes)
    out = {"all": 0.0, "4xx": 0.0, "5xx": 0.0}
    for labels, value in scrape.series(REQUESTS).items():
        d = dict(labels)
        if d.get("route") in ignored:
            continue
        out["all"] += value
        status = d.get("status", "")
        if status.startswith("5"):
            out["5xx"] += value
        elif status.startswith("4"):
            out["4xx"] += value
    return out


def _counters(scrape: Scrape) -> Mapping[tuple[str, Labels], float]:
    return {
        (name, labels): value
        for name, series in scrape.samples.items()
        if name.endswith(("_total", "_count", "_sum", "_bucket")) and not name.startswith("process_virtual")
        for labels, value in series.items()
    }


def start_time(scrape: Scrape) -> float | None:
    """When the scraped process started (prometheus_client's process collector, else the runtime's own gauge)."""
    return scrape.value("process_start_time_seconds", scrape.value("modeldeck_start_time_seconds"))


def model_info(scrape: Scrape) -> dict[str, str]:
    """``name``, ``version``, ``bundle_sha256``, ``runtime_version`` of the served model ('' when not a runtime)."""
    series = scrape.series(MODEL_INFO)
    labels = dict(next(iter(series))) if series else {}
    return {k: labels.get(k, "") for k in ("name", "version", "bundle_sha256", "runtime_version")}


def is_restart(prev: Scrape, cur: Scrape) -> bool:
    """A changed start time, or any counter that went down (a reset the start time did not show)."""
    a, b = start_time(prev), start_time(cur)
    if a is not None and b is not None and abs(a - b) > 0.5:
        return True
    before = _counters(prev)
    return any(value < before.get(key, 0.0) for key, value in _counters(cur).items())


def derive(
    prev: Scrape | None,
    cur: Scrape,
    *,
    window_base: Scrape | None = None,
    ignored_routes: Iterable[str] = IGNORED_ROUTES,
) -> Derived:
    """Figures for the interval ``prev`` → ``cur``; percentiles over ``window_base`` → ``cur`` (default ``prev``).

    With no ``prev`` (the first scrape) rates and percentiles are NaN, gauges are filled.
    A restart between the two scrapes counts the new process' values from zero.
    """
    ignored = tuple(ignored_routes)
    restarted = prev is not None and is_restart(prev, cur)
    base = None if restarted else prev
    wbase = base if window_base is None or restarted or is_restart(window_base, cur) else window_base
    info = model_info(cur)
    version_changed = False
    if prev is not None:
        old = model_info(prev)
        version_changed = (old["version"], old["bundle_sha256"], old["name"]) != (
            info["version"],
            info["bundle_sha256"],
            info["name"],
        )

    started = start_time(cur)
    uptime = cur.value("modeldeck_uptime_seconds")
    if uptime is None:
        uptime = cur.at - started if started is not None else math.nan

    nan = math.nan
    rate = err = client = p50 = p95 = p99 = inf_mean = batch_mean = cpu = nan
    if prev is not None:
        if restarted:  # the process counted from zero since it started: the interval is its uptime, bounded by ours
            seconds = min(cur.monotonic - prev.monotonic, max(uptime, 1e-3))
        else:
            seconds = cur.monotonic - prev.monotonic
        if seconds > 0:
            now_req = _requests_by_class(cur, ignored)
            old_req = _requests_by_class(base, ignored) if base else {"all": 0.0, "4xx": 0.0, "5xx": 0.0}
            count = now_req["all"] - old_req["all"]
            rate = count / seconds
            if count > 0:
                err = (now_req["5xx"] - old_req["5xx"]) / count
                client = (now_req["4xx"] - old_req["4xx"]) / count
            cpu_now = cur.value("process_cpu_seconds_total")
            if cpu_now is not None:
                cpu_then = (base.value("process_cpu_seconds_total") if base else 0.0) or 0.0
                cpu = 100.0 * (cpu_now - cpu_then) / seconds
        p50, p95, p99 = _window_quantiles(wbase, cur, ignored)
        inf_mean = _mean_delta(base, cur, INFERENCE)
        batch_mean = _mean_delta(base, cur, BATCH)

    return Derived(
        at=cur.at,
        request_rate=rate,
        error_rate=err,
        client_error_rate=client,
        latency_p50=p50,
        latency_p95=p95,
        latency_p99=p99,
        inference_mean=inf_mean,
        batch_size_mean=batch_mean,
        cpu_percent=cpu,
        resident_memory=cur.value("process_resident_memory_bytes", nan) or nan,
        uptime=uptime,
        # a runtime counts the scrape itself as in flight
        in_flight=max((cur.value("modeldeck_requests_in_flight", 0.0) or 0.0) - (1.0 if info["name"] else 0.0), 0.0),
        model_name=info["name"],
        model_version=info["version"],
        bundle_sha256=info["bundle_sha256"],
        restarted=restarted,
        version_changed=version_changed,
    )


def _window_quantiles(base: Scrape | None, cur: Scrape, ignored: Sequence[str]) -> tuple[float, float, float]:
    now = _sum_by_le(cur, LATENCY, ignored)
    then = _sum_by_le(base, LATENCY, ignored) if base else {}
    delta = [(le, now[le] - then.get(le, 0.0)) for le in now]
    return tuple(histogram_quantile(q, delta) for q in (0.5, 0.95, 0.99))  # type: ignore[return-value]


def _mean_delta(base: Scrape | None, cur: Scrape, name: str) -> float:
    count = _sum(cur, f"{name}_count") - (_sum(base, f"{name}_count") if base else 0.0)
    total = _sum(cur, f"{name}_sum") - (_sum(base, f"{name}_sum") if base else 0.0)
    return total / count if count > 0 else math.nan
