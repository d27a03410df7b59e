"""Monitor pieces that need no server: parsing, quantiles, health rules, ring buffers, file_sd, Grafana JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from modeldeck.core.errors import ConfigError
from modeldeck.core.monitor.derive import SERIES, derive, histogram_quantile
from modeldeck.core.monitor.health import (
    HealthPolicy,
    HealthRule,
    HealthState,
    HealthTracker,
    load_policy,
    user_policy,
)
from modeldeck.core.monitor.prometheus import ScrapeTarget, grafana_dashboard, queries, write_file_sd
from modeldeck.core.monitor.scrape import ScrapeError, parse
from modeldeck.core.monitor.series import RingBuffer, SeriesStore

PAGE = """\
# TYPE modeldeck_requests_total counter
modeldeck_requests_total{{route="/invocations",status="200"}} {ok}
modeldeck_requests_total{{route="/invocations",status="400"}} {bad}
modeldeck_requests_total{{route="/invocations",status="500"}} {err}
modeldeck_requests_total{{route="/metrics",status="200"}} {scrapes}
# TYPE modeldeck_request_duration_seconds histogram
modeldeck_request_duration_seconds_bucket{{le="0.01",route="/invocations"}} {b1}
modeldeck_request_duration_seconds_bucket{{le="0.1",route="/invocations"}} {b2}
modeldeck_request_duration_seconds_bucket{{le="+Inf",route="/invocations"}} {b3}
modeldeck_request_duration_seconds_count{{route="/invocations"}} {b3}
modeldeck_request_duration_seconds_sum{{route="/invocations"}} 1.0
# TYPE modeldeck_model_info gauge
modeldeck_model_info{{bundle_sha256="abc",name="iris",runtime_version="0.1.0",version="{version}"}} 1.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# TYPE process_start_time_seconds gauge
process_start_time_seconds {start}
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1e8
"""


def page(**kw: object) -> str:
    values = dict(ok=0, bad=0, err=0, scrapes=0, b1=0, b2=0, b3=0, version="3", cpu=0.0, start=1000.0)
    values.update(kw)
    return PAGE.format(**values)


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    buckets = [(0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.05)  # first bucket starts at 0


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound_and_empty_is_nan() -> None:
    assert histogram_quantile(0.99, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]))


def test_two_scrapes_give_rates_error_fractions_and_percentiles_without_the_collectors_own_scrapes() -> None:
    a = parse(page(scrapes=5, cpu=1.0), at=100.0, monotonic=10.0)
    b = parse(page(ok=160, bad=20, err=20, scrapes=7, b1=100, b2=200, b3=200, cpu=1.5), at=102.0, monotonic=12.0)
    d = derive(a, b)
    assert d.request_rate == pytest.approx(100.0)
    assert d.error_rate == pytest.approx(0.1)
    assert d.client_error_rate == pytest.approx(0.1)
    assert d.latency_p50 == pytest.approx(0.01)
    assert d.latency_p99 == pytest.approx(0.01 + 0.09 * 0.98)
    assert d.cpu_percent == pytest.approx(25.0)
    assert d.resident_memory == 1e8
    assert (d.model_name, d.model_version, d.bundle_sha256) == ("iris", "3", "abc")
    assert not d.restarted and not d.version_changed


def test_first_scrape_has_gauges_but_no_rates() -> None:
    d = derive(None, parse(page(), at=100.0, monotonic=1.0))
    assert math.isnan(d.request_rate) and d.resident_memory == 1e8


def test_counter_reset_is_a_restart_and_counts_from_zero() -> None:
    a = parse(page(ok=1000, b3=1000, b2=1000, b1=1000), monotonic=10.0)
    b = parse(page(ok=10, b3=10, b2=10, b1=10), monotonic=11.0)
    d = derive(a, b)
    assert d.restarted
    assert d.request_rate >= 10.0  # new process' 10 requests, never a negative rate


def test_changed_start_time_is_a_restart_even_when_counters_grew() -> None:
    a = parse(page(ok=5), monotonic=10.0)
    b = parse(page(ok=50, start=2000.0), monotonic=11.0)
    assert derive(a, b).restarted


def test_changed_model_version_is_reported() -> None:
    a = parse(page(), monotonic=10.0)
    b = parse(page(version="4"), monotonic=11.0)
    d = derive(a, b)
    assert d.version_changed and d.model_version == "4"


@pytest.mark.parametrize(
    "garbage",
    ["", "<html><body>Not Found</body></html>", "metric{ 1", "\x00\x01\x02", 'm{l="unterminated} 1\n', "a b c d e\n"],
)
def test_garbage_is_a_scrape_error_not_a_crash(garbage: str) -> None:
    with pytest.raises(ScrapeError):
        parse(garbage, url="http://x/metrics")


def test_error_rate_rule_degrades_only_after_holding_for_its_duration() -> None:
    tracker = HealthTracker(HealthPolicy((HealthRule("error_rate", ">", 0.01, 60.0),)))
    assert tracker.observe(0.0, {"error_rate": 0.05}).state is HealthState.OK
    assert tracker.observe(59.0, {"error_rate": 0.05}).state is HealthState.OK
    status = tracker.observe(60.0, {"error_rate": 0.05})
    assert status.state is HealthState.DEGRADED
    assert "error_rate 0.05 > 0.01 for 60s" in status.reason
    assert tracker.observe(61.0, {"error_rate": 0.0}).state is HealthState.OK


def test_a_dip_restarts_the_rule_clock_and_nan_never_fires() -> None:
    tracker = HealthTracker(HealthPolicy((HealthRule("latency_p99", ">", 0.25, 30.0),)))
    tracker.observe(0.0, {"latency_p99": 0.5})
    tracker.observe(20.0, {"latency_p99": math.nan})  # no traffic: no evidence
    assert tracker.observe(40.0, {"latency_p99": 0.5}).state is HealthState.OK
    assert tracker.observe(70.0, {"latency_p99": 0.5}).state is HealthState.DEGRADED


def test_unreachable_is_down_with_the_reason_and_recovers_on_the_next_good_scrape() -> None:
    tracker = HealthTracker()
    status = tracker.unreachable("http://h:1/metrics unreachable: connection refused")
    assert status.state is HealthState.DOWN and "connection refused" in status.reason
    assert tracker.observe(1.0, {}).state is HealthState.OK


def test_worst_firing_rule_wins() -> None:
    rules = (HealthRule("error_rate", ">", 0.01), HealthRule("error_rate", ">", 0.5, state=HealthState.DOWN))
    status = HealthTracker(HealthPolicy(rules)).observe(0.0, {"error_rate": 0.9})
    assert status.state is HealthState.DOWN and "0.5" in status.reason


def test_rules_load_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "health.toml"
    path.write_text(
        'down_after_failures = 2\n[[rule]]\nmetric = "error_rate"\nop = ">"\nthreshold = 0.01\nfor = "1m"\n'
        '[[rule]]\nmetric = "latency_p99"\nthreshold = 0.25\nfor = 30\nstate = "down"\n'
    )
    policy = load_policy(path)
    assert policy.down_after_failures == 2
    assert policy.rules == (
        HealthRule("error_rate", ">", 0.01, 60.0),
        HealthRule("latency_p99", ">", 0.25, 30.0, HealthState.DOWN),
    )


@pytest.mark.parametrize(
    "text",
    [
        '[[rule]]\nmetric = "nope"\nthreshold = 1\n',
        '[[rule]]\nmetric = "error_rate"\n',
        "[[rule]\n",
        '[[rule]]\nmetric = "error_rate"\nthreshold = 1\nfor = "soon"\n',
    ],
)
def test_bad_rules_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "health.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_policy(path)


def test_ring_buffer_keeps_the_last_points_in_order_and_never_grows() -> None:
    buf = RingBuffer(5)
    size = buf.nbytes
    for i in range(12):
        buf.append(float(i), float(i) * 10)
    t, v = buf.snapshot()
    assert t.tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert v.tolist() == [70.0, 80.0, 90.0, 100.0, 110.0]
    assert buf.nbytes == size and len(buf) == 5


def test_series_store_memory_is_bounded_by_retention_not_by_run_time() -> None:
    store = SeriesStore(retention=100)
    values = dict.fromkeys(SERIES, 1.0)
    for i in range(100):
        store.append("a", float(i), values)
    after_fill = store.nbytes
    for i in range(100, 10_000):
        store.append("a", float(i), values)
    assert store.nbytes == after_fill == len(SERIES) * 100 * 2 * 8
    t, _ = store.snapshot("a")["request_rate"]
    assert isinstance(t, np.ndarray) and t[0] == 9900.0 and t[-1] == 9999.0


def test_file_sd_is_prometheus_target_groups_with_deployment_labels(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "modeldeck.json"
    write_file_sd(
        path,
        [ScrapeTarget("iris-prod", "127.0.0.1:8080", "iris", "3"), ScrapeTarget("x", "h:1", metrics_path="/m")],
    )
    groups = json.loads(path.read_text())
    assert groups[0] == {
        "targets": ["127.0.0.1:8080"],
        "labels": {"deployment": "iris-prod", "model": "iris", "version": "3"},
    }
    assert groups[1]["labels"]["__metrics_path__"] == "/m"
    assert [p.name for p in path.parent.iterdir()] == ["modeldeck.json"]  # no temp file left behind


def test_file_sd_refuses_a_url_where_host_port_belongs(tmp_path: Path) -> None:
    with pytest.raises(ScrapeError):
        write_file_sd(tmp_path / "sd.json", [ScrapeTarget("a", "http://127.0.0.1:8080/metrics")])
    assert not (tmp_path / "sd.json").exists()


def test_grafana_dashboard_has_a_panel_per_series_with_the_deployment_variable() -> None:
    dash = json.loads(json.dumps(grafana_dashboard()))  # must be plain JSON
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) == len(SERIES) - 1  # everything but in_flight
    assert all('deployment="$deployment"' in e for e in exprs)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    assert dash["templating"]["list"][0]["name"] == "deployment"


def test_promql_covers_every_series_and_escapes_the_deployment_name() -> None:
    q = queries('we"ird')
    assert set(q) == set(SERIES)
    assert 'deployment="we\\"ird"' in q["request_rate"]


def test_user_rules_come_from_health_toml_in_the_config_dir_else_defaults(tmp_path: Path) -> None:
    assert user_policy(tmp_path) == HealthPolicy()
    (tmp_path / "health.toml").write_text('[[rule]]\nmetric = "cpu_percent"\nthreshold = 90\nfor = "2m"\n')
    assert user_policy(tmp_path).rules == (HealthRule("cpu_percent", ">", 90.0, 120.0),)


def test_percentiles_cover_the_window_while_rates_cover_the_last_interval() -> None:
    old = parse(page(), monotonic=0.0)
    prev = parse(page(ok=100, b1=0, b2=100, b3=100), monotonic=50.0)  # 100 requests of 10-100 ms, 50 s ago
    cur = parse(page(ok=200, b1=100, b2=200, b3=200), monotonic=60.0)  # then 100 requests under 10 ms
    d = derive(prev, cur, window_base=old)
    assert d.request_rate == pytest.approx(10.0)  # 100 requests in the last 10 s
    assert d.latency_p50 == pytest.approx(0.01)  # half the window's 200 requests were fast
    assert d.latency_p99 > 0.09
    assert derive(prev, cur).latency_p99 < 0.01  # the last interval alone saw only fast requests
