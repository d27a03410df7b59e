"""The load generator against a real runtime: bounded by count and by time, cancellable, and its numbers
match what the runtime itself counted on /metrics."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from modeldeck.core.errors import Cancelled, ConfigError
from modeldeck.core.monitor.loadgen import LoadPlan, run_load
from modeldeck.core.monitor.scrape import fetch

from tests.fixtures.runtime import RuntimeProcess


def _requests_by_status(url: str) -> dict[str, float]:
    scrape = fetch(f"{url}/metrics", timeout=5)
    out: dict[str, float] = {}
    for labels, value in scrape.series("modeldeck_requests_total").items():
        d = dict(labels)
        if d.get("route") == "/invocations":
            out[d.get("status", "")] = out.get(d.get("status", ""), 0.0) + value
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if after.get(k, 0.0) != before.get(k, 0.0)}


def _body(bundle: Any) -> dict[str, Any]:
    return {"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}}


def test_count_bound_stops_the_run_and_matches_what_the_runtime_counted(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    before = _requests_by_status(iris_runtime.url)
    seen: list[tuple[str, float | None]] = []
    result = run_load(
        LoadPlan(iris_runtime.url, _body(runtime_bundles["iris"]), rate=200, count=150, duration_s=30, concurrency=3),
        progress=lambda m, f: seen.append((m, f)),
    )
    after = _requests_by_status(iris_runtime.url)
    assert result.sent == 150 and result.ok == 150 and result.errors == 0
    assert _delta(before, after) == {"200": 150.0}
    assert len(result.latencies_s) == 150 and 0 < result.percentile(0.5) <= result.percentile(0.99)
    assert result.elapsed_s < 10  # 150 at 200/s: under a second, far from the 30 s bound
    assert seen[-1] == ("sent 150", 1.0)


def test_duration_bound_stops_the_run_at_the_rate_given(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    before = _requests_by_status(iris_runtime.url)
    result = run_load(
        LoadPlan(iris_runtime.url, _body(runtime_bundles["iris"]), rate=20, count=100_000, duration_s=1.5)
    )
    after = _requests_by_status(iris_runtime.url)
    assert 25 <= result.sent <= 31  # 20/s for 1.5 s: request i is due at i/20 s, so 30 are due before the end
    assert result.elapsed_s < 1.5 + 5
    assert sum(_delta(before, after).values()) == result.sent


def test_refused_answers_are_counted_by_status(iris_runtime: RuntimeProcess) -> None:
    bad = {"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}}
    before = _requests_by_status(iris_runtime.url)
    result = run_load(LoadPlan(iris_runtime.url, bad, rate=100, count=20, duration_s=10))
    after = _requests_by_status(iris_runtime.url)
    assert result.ok == 0 and result.errors == 20 and set(result.by_status) == {400}
    assert _delta(before, after) == {"400": 20.0}
    assert result.first_error == "HTTP 400"


def test_a_dead_endpoint_gives_transport_errors_not_an_exception(tmp_path: Path) -> None:
    from tests.fixtures.monitor import free_port

    result = run_load(LoadPlan(f"http://127.0.0.1:{free_port()}", {}, rate=50, count=5, duration_s=5, timeout_s=1))
    assert result.sent == 5 and result.transport_errors == 5 and result.ok == 0
    assert "ConnectionRefused" in result.first_error


def test_cancel_stops_a_long_run_quickly_and_returns_what_was_sent(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    cancel = threading.Event()
    threading.Timer(0.8, cancel.set).start()
    start = time.monotonic()
    result = run_load(
        LoadPlan(iris_runtime.url, _body(runtime_bundles["iris"]), rate=10, count=1000, duration_s=600), cancel=cancel
    )
    assert time.monotonic() - start < 5
    assert result.cancelled and 1 <= result.sent <= 12


def test_cancel_before_anything_was_sent_is_cancelled(iris_runtime: RuntimeProcess) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        run_load(LoadPlan(iris_runtime.url, {}, rate=0.01, count=10, duration_s=600), cancel=cancel)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"count": 100_001}, "count"),
        ({"count": 0}, "count"),
        ({"duration_s": 601}, "duration"),
        ({"concurrency": 9}, "concurrency"),
        ({"rate": 0}, "rate"),
        ({"url": "ftp://x"}, "URL"),
    ],
)
def test_unbounded_or_malformed_plans_are_refused_before_sending(changes: dict[str, Any], message: str) -> None:
    plan = LoadPlan(**{"url": "http://127.0.0.1:9", "body": {}, **changes})
    with pytest.raises(ConfigError, match=message):
        run_load(plan)
