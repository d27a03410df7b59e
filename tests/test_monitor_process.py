"""Collection in a child process: real runtimes on 127.0.0.1, a child killed, a child that speaks garbage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from modeldeck.core.monitor.collector import Endpoint
from modeldeck.core.monitor.health import HealthState
from modeldeck.core.monitor.process import CollectorProcess
from modeldeck.core.monitor.worker import MonitorProcessError, sample_from_wire

from tests.fixtures.monitor import free_port
from tests.fixtures.runtime import RuntimeProcess, start_runtime
from tests.test_monitor_live import Events, send, wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it has exited all the same
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_figures_of_a_runtime_under_load_arrive_from_the_child(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    bundle = runtime_bundles["iris"]
    body = {"dataframe_split": {"columns": bundle.feature_names, "data": bundle.X[:1].tolist()}}
    collector = CollectorProcess([Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=0.3)
    samples: list[Any] = []
    collector.start()
    try:
        assert collector.pid is not None and collector.pid != os.getpid()
        # Load until the child has sent five rounds of figures (bounded): a fixed 3 s window got only 2 while the
        # child was still starting on a loaded machine.
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and sum(s.derived is not None for s in samples) < 5:
            send(iris_runtime.url, body, 20)
            samples += collector.drain()
        wait_until(lambda: collector.health().get("iris", None) is not None, 1, "health")
        samples += collector.drain()
    finally:
        assert collector.stop(timeout=5)
    figures = [s.derived for s in samples if s.derived is not None]
    assert len(figures) >= 5
    assert max(d.request_rate for d in figures[1:]) > 10
    assert all(d.model_name == "iris" and d.model_version == "3" for d in figures)
    assert samples[-1].health.state is HealthState.OK and collector.health()["iris"].state is HealthState.OK
    t, v = collector.snapshot("iris", ["request_rate"])["request_rate"]
    assert len(t) == len(v) == len(samples)


def test_an_endpoint_that_dies_turns_down_within_two_intervals(
    runtime_bundles: dict[str, Any], runtime_processes: list[RuntimeProcess], tmp_path: Path
) -> None:
    interval = 0.5
    port = free_port()
    rp = start_runtime(runtime_bundles["iris"].path, tmp_path / "run", "--port", str(port))
    runtime_processes.append(rp)
    events = Events()
    collector = CollectorProcess(
        [Endpoint("iris", f"http://127.0.0.1:{port}/metrics")], interval=interval, on_event=events
    )
    collector.start()
    try:
        wait_until(lambda: collector.health()["iris"].state is HealthState.OK, 10, "first healthy scrape")
        rp.terminate()
        died = time.monotonic()
        wait_until(lambda: collector.health()["iris"].state is HealthState.DOWN, 5, "down after the runtime died")
    finally:
        assert collector.stop(timeout=5)
    down_at, event = events.of("iris", "health")[-1]
    assert event.detail.startswith("down:") and "unreachable" in event.detail
    assert down_at - died <= 2 * interval


def test_a_killed_child_is_reported_and_restarted_with_every_endpoint(iris_runtime: RuntimeProcess) -> None:
    events = Events()
    collector = CollectorProcess([Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=0.3, on_event=events)
    collector.start()
    try:
        wait_until(lambda: len(collector.drain()) > 0, 10, "first sample")
        first = collector.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: bool(events.of("", "collector")), 5, "the collector event")
        wait_until(lambda: collector.pid not in (None, first), 5, "a new child")
        collector.drain()
        wait_until(lambda: any(s.derived is not None for s in collector.drain()), 10, "samples from the new child")
    finally:
        assert collector.stop(timeout=5)
    detail = events.of("", "collector")[0][1].detail
    assert "killed by SIGKILL" in detail and "restarting" in detail
    assert collector.restarts == 1 and not collector.failure
    assert not _alive(first)


def test_a_child_that_breaks_the_protocol_is_a_clear_error_and_restarts_are_bounded() -> None:
    garbage = [
        sys.executable,
        "-c",
        "import sys; print('Traceback (most recent call last):', flush=True); sys.stdin.read()",
    ]
    events = Events()
    collector = CollectorProcess(
        [Endpoint("x", "http://127.0.0.1:9/metrics")], interval=0.3, on_event=events, max_restarts=2, command=garbage
    )
    collector.start()
    try:
        wait_until(lambda: bool(collector.failure), 10, "collection to give up")
    finally:
        assert collector.stop(timeout=5)
    details = [e.detail for _, e in events.of("", "collector")]
    assert len(details) == 3 and all("not its protocol" in d for d in details)
    assert "Traceback" in details[0] and details[-1].startswith("monitoring stopped:")
    assert "gave up after 2 restarts" in details[-1]
    health = collector.health()["x"]
    assert health.state is HealthState.UNKNOWN and "gave up" in health.reason


def test_collection_that_gave_up_resumes_on_request_with_every_endpoint(iris_runtime: RuntimeProcess) -> None:
    """The user's "Restart monitoring": a fresh child with the same endpoints, restart budget reset."""
    collector = CollectorProcess(
        [Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=0.3, max_restarts=0, hang_after=30
    )
    assert not collector.resume()  # nothing to resume before it has given up
    collector.start()
    try:
        wait_until(lambda: any(s.derived for s in collector.drain()), 10, "a first sample")
        first = collector.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: bool(collector.failure), 10, "collection to give up (no restarts allowed)")
        wait_until(lambda: collector.resume(), 5, "the reader to finish so collection can resume")
        assert collector.failure == "" and collector.pid not in (None, first)
        collector.drain()
        wait_until(lambda: any(s.endpoint == "iris" and s.derived for s in collector.drain()), 10, "samples again")
        assert collector.health()["iris"].state is HealthState.OK
    finally:
        assert collector.stop(timeout=5)


def test_a_silent_child_is_taken_for_hung_killed_and_restarted() -> None:
    says_hello_then_nothing = "import sys; print('{\"hello\": 1}', flush=True); sys.stdin.read()"
    events = Events()
    collector = CollectorProcess(
        [Endpoint("x", "http://127.0.0.1:9/metrics")],
        on_event=events,
        command=[sys.executable, "-c", says_hello_then_nothing],
        hang_after=0.5,
        max_restarts=1,
    )
    collector.start()
    first = collector.pid
    try:
        wait_until(lambda: bool(collector.failure), 10, "collection to give up")
    finally:
        assert collector.stop(timeout=5)
    assert "sent nothing for 0.5 s (hung); restarting it" in events.of("", "collector")[0][1].detail
    assert first is not None and not _alive(first)


def test_a_malformed_sample_names_the_field_it_got_wrong() -> None:
    with pytest.raises(MonitorProcessError, match="time = 'soon', not a number"):
        sample_from_wire(["x", "soon", None, 1, "", ""])
    with pytest.raises(MonitorProcessError, match="unknown health state 7"):
        sample_from_wire(["x", 1.0, None, 7, "", ""])
    with pytest.raises(MonitorProcessError, match="malformed figures"):
        sample_from_wire(["x", 1.0, [1.0, 2.0], 1, "", ""])


def test_the_drawing_process_never_parses_a_metrics_page(iris_runtime: RuntimeProcess) -> None:
    # in a fresh interpreter: this test process has imported the parser for other tests
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from modeldeck.core.monitor.collector import Endpoint
        from modeldeck.core.monitor.process import CollectorProcess
        c = CollectorProcess([Endpoint("iris", "{iris_runtime.url}/metrics")], interval=0.2)
        c.start()
        got = []
        deadline = time.monotonic() + 15
        while len([s for s in got if s.derived is not None]) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            got += c.drain()
        c.stop(timeout=5)
        print(json.dumps({{"figures": sum(s.derived is not None for s in got),
                           "parser": [m for m in sys.modules if m.startswith("prometheus_client")]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["figures"] >= 3
    assert result["parser"] == []


def test_the_child_ends_when_its_parent_is_killed(iris_runtime: RuntimeProcess) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from modeldeck.core.monitor.collector import Endpoint
        from modeldeck.core.monitor.process import CollectorProcess
        c = CollectorProcess([Endpoint("iris", "{iris_runtime.url}/metrics")], interval=0.2)
        c.start()
        print(c.pid, flush=True)
        time.sleep(30)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert _alive(child)
        parent.kill()
        parent.wait(5)
        wait_until(lambda: not _alive(child), 5, "the orphaned child to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        parent.stdout.close()  # type: ignore[union-attr]


# A child that keeps talking (so it is not taken for hung) but ignores the end of its stdin for 20 s, as one
# whose queries to a slow Prometheus server are still in flight does for seconds.
STUBBORN_CHILD = [
    sys.executable,
    "-c",
    "import sys, time\n"
    "print('{\"hello\": 1}', flush=True)\n"
    "for _ in range(100):\n"
    '    print(\'{"g": 0, "s": [], "e": []}\', flush=True)\n'
    "    time.sleep(0.2)\n",
]


def test_stop_without_waiting_returns_while_the_child_still_runs_and_it_is_killed_after_the_timeout() -> None:
    """What the UI thread calls: it must never wait for a child that is slow to end."""
    collector = CollectorProcess([Endpoint("x", "http://127.0.0.1:9/metrics")], command=STUBBORN_CHILD)
    collector.start()
    pid = collector.pid
    assert pid is not None
    try:
        assert collector.stop(timeout=1.0, wait=False) is False
        assert _alive(pid)  # the call came back before the child ended: nothing waited for it
        wait_until(lambda: not _alive(pid), 10, "the child to be killed once the timeout passed")
        reader = collector._thread
        wait_until(lambda: reader is None or not reader.is_alive(), 5, "the reader thread to end")
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_child_is_started_again_without_holding_the_lock_the_ui_thread_drains_with(
    iris_runtime: RuntimeProcess,
) -> None:
    """fork/exec of a large process on a loaded machine is not bounded; drain() must not wait behind it."""
    held: list[bool] = []

    class Spied(CollectorProcess):
        def _popen(self) -> subprocess.Popen[bytes]:
            held.append(self._lock.locked())
            return super()._popen()

    collector = Spied([Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=0.3, hang_after=30)
    collector.start()
    try:
        first = collector.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(held) >= 2, 10, "a new child")  # len() only: this thread must not take the lock
        wait_until(lambda: any(s.derived for s in collector.drain()), 10, "samples from the new child")
    finally:
        assert collector.stop(timeout=5)
    assert held == [False, False]


def test_the_collection_process_runs_at_a_lower_cpu_priority_than_the_gui(iris_runtime: RuntimeProcess) -> None:
    """Collection is background work: under CPU contention the scheduler should pick the UI thread first."""

    def niceness(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    for nice, expected in ((None, 5), (0, 0)):
        kwargs = {} if nice is None else {"nice": nice}
        collector = CollectorProcess([Endpoint("iris", f"{iris_runtime.url}/metrics")], interval=0.3, **kwargs)
        collector.start()
        try:
            wait_until(lambda c=collector: len(c.drain()) > 0, 10, "first sample")  # type: ignore[misc]
            assert collector.pid is not None
            assert niceness(collector.pid) == niceness(os.getpid()) + expected
        finally:
            assert collector.stop(timeout=5)
