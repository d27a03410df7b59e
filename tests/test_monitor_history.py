"""The optional SQLite history: what the collector saw comes back after a restart, bounded by age and rows,
written on its own thread; and the monitoring settings file it is switched on in."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from modeldeck.core.errors import ConfigError
from modeldeck.core.monitor.collector import Collector, Endpoint, Sample
from modeldeck.core.monitor.config import (
    MonitorConfig,
    load_monitor_config,
    save_monitor_config,
    validate_metrics_url,
)
from modeldeck.core.monitor.health import HealthState, HealthStatus
from modeldeck.core.monitor.history import HistoryEvent, HistoryStore, HistoryWriter

from tests.fixtures.runtime import RuntimeProcess


def _failed(endpoint: str, at: float) -> Sample:
    return Sample(endpoint, at, None, HealthStatus(HealthState.DOWN, "refused"), "refused")


def test_samples_from_a_real_runtime_survive_a_restart_of_the_store(
    iris_runtime: RuntimeProcess, tmp_path: Path
) -> None:
    path = tmp_path / "history.sqlite"
    writer = HistoryWriter(path)
    writer.start()
    collector = Collector([Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=0.1)
    for _ in range(5):
        collector.tick()
        deadline = time.monotonic() + 5
        while not collector._pending and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.put(collector.drain(), [HistoryEvent("iris", time.time(), "version", "iris version 3")])
    assert collector.stop(timeout=5)
    assert writer.flush(5)
    writer.stop()
    assert writer.written == 5 and not writer.error

    store = HistoryStore(path)  # a new process would open it like this
    try:
        data = store.load("iris")
        t, memory = data["resident_memory"]
        assert len(t) == 5 and np.all(np.diff(t) > 0)
        assert np.all(memory > 10e6)  # the runtime's real RSS
        live = collector.snapshot("iris", ["resident_memory"])["resident_memory"]
        np.testing.assert_allclose(memory, live[1])
        assert math.isnan(data["request_rate"][1][0])  # the first scrape has no rate: NaN, not 0
        assert [e.kind for e in store.events("iris")] == ["version"] * 5
        assert store.endpoints() == ["iris"]
    finally:
        store.close()


def test_failed_scrapes_are_stored_as_gaps(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    store.write([_failed("a", 100.0), _failed("a", 101.0)])
    t, v = store.load("a", names=["latency_p99"])["latency_p99"]
    assert list(t) == [100.0, 101.0] and np.isnan(v).all()


def test_retention_drops_old_rows_then_the_oldest_beyond_max_rows(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite", retention_days=1, max_rows=100)
    now = 1_000_000.0
    store.write([_failed("a", now - 2 * 86400 + i) for i in range(50)])  # two days old: past retention
    store.write([_failed("a", now - 1000 + i) for i in range(150)])
    assert store.row_count() == 200
    removed = store.prune(now=now)
    assert removed == 100 and store.row_count() == 100
    t, _ = store.load("a", names=["uptime"])["uptime"]
    assert t[0] == now - 1000 + 50  # the newest 100 are kept


def test_put_never_blocks_and_a_full_queue_drops_the_oldest_batch(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "h.sqlite", max_queue=2)
    # Not started: nothing drains the queue, as with a disk that stopped answering, so a put that waited for room
    # would wait forever. Bounded by a join, not by a wall-clock figure a loaded machine can miss.
    putter = threading.Thread(target=lambda: [writer.put([_failed("a", float(i))]) for i in range(5)], daemon=True)
    putter.start()
    putter.join(30)
    assert not putter.is_alive(), "put() waited for room in a full queue"
    assert writer.dropped == 3


def test_writes_happen_on_the_writer_thread(tmp_path: Path) -> None:
    seen: list[str] = []
    writer = HistoryWriter(tmp_path / "h.sqlite")
    writer.start()
    original = HistoryStore.write

    def spy(self: HistoryStore, *args: object, **kwargs: object) -> int:
        seen.append(threading.current_thread().name)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    HistoryStore.write = spy  # type: ignore[method-assign]
    try:
        writer.put([_failed("a", 1.0)])
        assert writer.flush(5)
    finally:
        HistoryStore.write = original  # type: ignore[method-assign]
        writer.stop()
    assert seen == ["modeldeck-history"]


def test_an_unwritable_history_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = HistoryWriter(blocker / "sub" / "h.sqlite")
    with pytest.raises(ConfigError, match="monitoring history"):
        writer.start()


def test_monitor_settings_round_trip_and_history_is_off_by_default(tmp_path: Path) -> None:
    assert load_monitor_config(tmp_path) == MonitorConfig()
    assert MonitorConfig().history is False
    config = MonitorConfig(
        prometheus_url="http://127.0.0.1:9090",
        history=True,
        history_retention_days=2.5,
        endpoints=(("edge", "http://10.0.0.5:8080/metrics"),),
    )
    save_monitor_config(tmp_path, config)
    assert load_monitor_config(tmp_path) == config


def test_a_broken_monitor_settings_file_names_itself(tmp_path: Path) -> None:
    (tmp_path / "monitor.toml").write_text('[[endpoint]]\nname = "x"\nurl = "ftp://nope"\n')
    with pytest.raises(ConfigError, match=r"monitor\.toml"):
        load_monitor_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", "http://127.0.0.1:8080/metrics"),
        ("http://host:9100/", "http://host:9100/metrics"),
        ("https://h/custom/path", "https://h/custom/path"),
    ],
)
def test_metrics_urls_are_normalised(text: str, expected: str) -> None:
    assert validate_metrics_url(text) == expected


@pytest.mark.parametrize("text", ["", "ftp://h/metrics", "http://", "http://h:99999/metrics", "http://h:0"])
def test_bad_metrics_urls_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_metrics_url(text)
    assert info.value.hint


def test_a_long_history_is_read_as_bucket_peaks_not_every_row(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite")
    from modeldeck.core.monitor.derive import SERIES, Derived

    def sample(at: float, rate: float) -> Sample:
        values = dict.fromkeys(SERIES, 1.0) | {"request_rate": rate}
        derived = Derived(
            at=at, **values, model_name="m", model_version="1", bundle_sha256="", restarted=False, version_changed=False
        )
        return Sample("a", at, derived, HealthStatus(HealthState.OK))

    store.write([sample(float(i), 500.0 if i == 4321 else 1.0) for i in range(20_000)])  # one spike
    t, v = store.load("a", names=["request_rate"], max_points=1000)["request_rate"]
    assert 900 <= len(t) <= 1001 and np.all(np.diff(t) > 0)
    assert v.max() == 500.0  # the spike survives the thinning
    assert len(store.load("a", names=["request_rate"], max_points=50_000)["request_rate"][0]) == 20_000
