"""The Prometheus-server path against a real ``prometheus`` on loopback, scraping a real runtime via our file_sd."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx
import numpy as np
import pytest
from modeldeck.core.monitor.derive import SERIES
from modeldeck.core.monitor.prometheus import PrometheusClient, PrometheusError, ScrapeTarget, write_file_sd

from tests.fixtures.monitor import PrometheusServer, free_port
from tests.fixtures.runtime import RuntimeProcess

pytestmark = pytest.mark.server


def test_prometheus_scrapes_our_file_sd_targets_and_answers_the_dashboard_series(
    prometheus_server: PrometheusServer, iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    address = iris_runtime.ready["binds"][0]
    write_file_sd(prometheus_server.sd_file, [ScrapeTarget("iris-prod", address, "iris", "3")])
    client = PrometheusClient(prometheus_server.url, timeout=5)

    bundle = runtime_bundles["iris"]
    good = json.dumps({"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}})
    bad = json.dumps({"dataframe_split": {"columns": ["nope"], "data": [[1.0]]}})
    deadline = time.monotonic() + 40
    latest: dict[str, float] = {}
    with httpx.Client(timeout=10) as http:
        # paced traffic (about 50 req/s, bounded by the deadline) until Prometheus has two scrapes of it
        while time.monotonic() < deadline:
            for i in range(10):
                http.post(
                    f"{iris_runtime.url}/invocations",
                    content=bad if i == 0 else good,
                    headers={"Content-Type": "application/json"},
                )
            time.sleep(0.2)
            latest = client.latest("iris-prod", window="10s")
            if latest["request_rate"] > 0 and not math.isnan(latest["latency_p99"]):
                break
        else:
            pytest.fail(
                f"Prometheus never reported traffic: {latest}; log: {prometheus_server.log.read_text()[-1500:]}"
            )

    assert set(latest) == set(SERIES)
    assert latest["client_error_rate"] == pytest.approx(0.1, abs=0.06)  # 1 in 10, sampled at 1 s
    assert latest["error_rate"] == 0.0
    assert 0 < latest["latency_p50"] <= latest["latency_p99"] < 1.0
    assert latest["resident_memory"] > 10e6 and latest["uptime"] > 0

    up = client.query('up{deployment="iris-prod"}')
    assert up and up[0][1] == 1.0 and up[0][0]["model"] == "iris" and up[0][0]["version"] == "3"

    end = time.time()
    series = client.series("iris-prod", end - 30, end, step=1.0, window="10s")
    t, v = series["request_rate"]
    assert isinstance(t, np.ndarray) and len(t) == len(v) > 0 and np.nanmax(v) > 0


def test_bad_promql_is_a_prometheus_error_with_its_message(prometheus_server: PrometheusServer) -> None:
    with pytest.raises(PrometheusError, match="refused the query"):
        PrometheusClient(prometheus_server.url).query("rate(")


def test_unreachable_prometheus_is_a_prometheus_error() -> None:
    with pytest.raises(PrometheusError, match="unreachable"):
        PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2).query("up")
