"""Deploying to many targets at once (core/targets/fleet.py) against real targets.

Local targets (real runtime processes on 127.0.0.1, one deploy root each) pin down the fleet
logic itself -- per-host results, cancel, rollback, waves; real sshd hosts on 127.0.0.N then
check what only a network target can do: an unreachable host, an unknown host key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from modeldeck.core.errors import DeployError, HostUnreachable, UnknownHostKey
from modeldeck.core.inventory.known_hosts import KnownHosts
from modeldeck.core.targets.base import DeployOptions, ProgressEvent
from modeldeck.core.targets.fleet import (
    NOT_STARTED,
    SKIPPED,
    TIMED_OUT,
    Rollout,
    StepTimeouts,
    Wave,
    deploy_many,
    rollback_many,
    status_many,
)
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import LocalTarget, free_port
from modeldeck.core.targets.ssh.connection import SshEndpoint
from modeldeck.core.targets.ssh.target import SshTarget, SshTimeouts

from tests.fixtures.deploy import runtime_pids
from tests.fixtures.fleet import undeploy_all
from tests.fixtures.ssh_target import seed_runtime, target_for, trusting
from tests.fixtures.sshd import SshHost

pytestmark = [pytest.mark.server, pytest.mark.slow]


def served_version(endpoint: str) -> str:
    return str(request_json("GET", endpoint + "/version", timeout=5).body["model_version"])


@pytest.fixture
def local_fleet(tmp_path: Path) -> Iterator[dict[str, LocalTarget]]:
    """Three local targets, each its own deploy root and port (hosts as far as the fleet can tell)."""
    fleet = {f"node{i}": LocalTarget(tmp_path / f"node{i}", port=free_port()) for i in range(1, 4)}
    yield fleet
    for target in fleet.values():
        for status in target.status():
            target.undeploy(status.name)
    left = runtime_pids(tmp_path)
    assert not left, f"runtime processes left behind: {sorted(left)}"


class Recorder:
    """A progress sink that also checks the fleet never calls it from two threads at once."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self.inside = 0
        self.overlaps = 0

    def __call__(self, event: ProgressEvent) -> None:
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        self.events.append(event)
        time.sleep(0.0005)
        self.inside -= 1

    def hosts(self) -> set[str | None]:
        return {e.host for e in self.events}


def test_every_host_deploys_and_reports_its_own_result(local_fleet, deploy_bundles) -> None:
    progress = Recorder()
    result = deploy_many(local_fleet, deploy_bundles["v1"], DeployOptions(), forks=3, progress=progress)

    assert result.ok, [(h.host, h.outcome, h.message) for h in result.hosts]
    assert [h.host for h in result.hosts] == ["node1", "node2", "node3"]
    for host in result.hosts:
        assert host.outcome == "deployed"
        assert host.release_id and host.duration_s > 0
        assert served_version(host.result.status.endpoint) == "1"
    assert progress.hosts() == {"node1", "node2", "node3"}
    assert progress.overlaps == 0
    # a no-change redeploy touches nothing and says so per host
    again = deploy_many(local_fleet, deploy_bundles["v1"], DeployOptions(), forks=3)
    assert [h.outcome for h in again.hosts] == ["already-installed"] * 3


def test_forks_bounds_how_many_hosts_run_at_once(local_fleet, deploy_bundles) -> None:
    running: set[str] = set()
    peak = 0
    lock = threading.Lock()

    def progress(event: ProgressEvent) -> None:
        nonlocal peak
        with lock:
            if event.step == "start" and event.message == "deploy started":
                running.add(str(event.host))
            elif event.step == "done":
                running.discard(str(event.host))
            peak = max(peak, len(running))

    result = deploy_many(local_fleet, deploy_bundles["v1"], DeployOptions(), forks=1, progress=progress)
    assert result.ok
    assert peak == 1


def test_a_failing_host_is_its_own_result_and_the_others_deploy(local_fleet, deploy_bundles, tmp_path) -> None:
    # node2's port is taken by another program: its deploy is refused before anything changes there.
    import socket

    blocker = socket.socket()
    blocker.bind(("127.0.0.1", local_fleet["node2"].port))
    blocker.listen()
    try:
        result = deploy_many(local_fleet, deploy_bundles["v1"], DeployOptions(), forks=3)
    finally:
        blocker.close()
    by_host = result.by_host()
    assert by_host["node1"].ok and by_host["node3"].ok
    assert by_host["node2"].outcome == "failed"
    assert by_host["node2"].error == "DeployError"
    assert "in use" in by_host["node2"].message
    assert [h.host for h in result.failed] == ["node2"]
    assert not result.ok


def test_cancel_midway_leaves_previous_releases_serving(local_fleet, deploy_bundles) -> None:
    first = deploy_many(local_fleet, deploy_bundles["v1"], DeployOptions(), forks=3)
    assert first.ok
    cancel = threading.Event()

    def progress(event: ProgressEvent) -> None:
        if event.step == "health":  # the first host to reach its health gate cancels the run
            cancel.set()

    result = deploy_many(local_fleet, deploy_bundles["v2"], DeployOptions(), forks=2, progress=progress, cancel=cancel)
    assert result.cancelled
    outcomes = {h.host: h.outcome for h in result.hosts}
    assert set(outcomes.values()) <= {"cancelled", NOT_STARTED, "deployed"}, outcomes
    assert NOT_STARTED in outcomes.values() or "cancelled" in outcomes.values()
    for host, target in local_fleet.items():
        (status,) = target.status()
        expected = "2" if outcomes[host] == "deployed" else "1"
        assert served_version(status.endpoint) == expected, host


def test_a_host_past_its_deadline_is_cancelled_and_reported_timed_out(local_fleet, deploy_bundles) -> None:
    assert deploy_many(local_fleet, deploy_bundles["v1"], DeployOptions(), forks=3).ok
    slow = {"node1": local_fleet["node1"]}

    told_to_stop = threading.Event()

    class CancelWatcher(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "cancelling it" in record.getMessage():
                told_to_stop.set()

    def hold_in_health(event: ProgressEvent) -> None:
        # A local deploy can finish inside any fixed deadline on a fast machine (CI once saw 'deployed' at
        # 0.3 s), and a fixed hold can end before a loaded coordinator looks at the clock: the host is held in
        # its health gate until the fleet has cancelled it (bounded, so a fleet that never does fails the test).
        if event.step == "health":
            told_to_stop.wait(30)

    watcher = CancelWatcher()
    fleet_log = logging.getLogger("modeldeck.core.targets.fleet")
    level = fleet_log.level
    fleet_log.setLevel(logging.WARNING)  # whatever an earlier test configured: the watcher must see the warning
    fleet_log.addHandler(watcher)
    try:
        result = deploy_many(
            slow, deploy_bundles["v2"], DeployOptions(), step_timeouts=StepTimeouts(host_s=0.3), progress=hold_in_health
        )
    finally:
        fleet_log.removeHandler(watcher)
        fleet_log.setLevel(level)
    assert told_to_stop.is_set()
    (host,) = result.hosts
    assert host.outcome == TIMED_OUT
    assert not result.ok
    (status,) = local_fleet["node1"].status()
    assert served_version(status.endpoint) == "1"  # the target was cancelled cleanly: v1 still serves


def test_rollback_and_status_across_the_fleet(local_fleet, deploy_bundles) -> None:
    assert deploy_many(local_fleet, deploy_bundles["v1"], DeployOptions(), forks=3).ok
    assert deploy_many(local_fleet, deploy_bundles["v2"], DeployOptions(), forks=3).ok

    statuses = status_many(local_fleet)
    assert all(s.ok for s in statuses)
    assert {s.statuses[0].model_version for s in statuses} == {"2"}

    back = rollback_many(local_fleet, "iris", forks=3)
    assert back.ok
    assert [h.outcome for h in back.hosts] == ["rolled-back"] * 3
    for s in status_many(local_fleet, "iris"):
        assert served_version(s.statuses[0].endpoint) == "1"

    missing = rollback_many(local_fleet, "no-such-deployment")
    assert not missing.ok
    assert {h.error for h in missing.hosts} == {DeployError.__name__}


def test_a_wave_beyond_its_failure_threshold_stops_the_rollout(local_fleet, deploy_bundles) -> None:
    rollout = Rollout((Wave(("node1",), max_failures=0, name="canary"), Wave(("node2", "node3"))))
    result = deploy_many(local_fleet, deploy_bundles["bad"], DeployOptions(), rollout=rollout)
    by_host = result.by_host()
    assert by_host["node1"].outcome == "failed"  # the bad bundle's example cannot be answered
    assert by_host["node2"].outcome == by_host["node3"].outcome == SKIPPED
    assert result.aborted_after == "canary"
    assert local_fleet["node2"].status() == []


def test_staged_rollout_splits_hosts_into_waves() -> None:
    rollout = Rollout.staged(["a", "b", "c", "d", "e"], [1, 2])
    assert [w.hosts for w in rollout.waves] == [("a",), ("b", "c"), ("d", "e")]
    assert rollout.hosts == ("a", "b", "c", "d", "e")


def test_step_timeouts_bound_the_health_gate() -> None:
    options = StepTimeouts(health_s=7).apply(DeployOptions())
    assert options.health.start_period_s == 7


# -- real SSH hosts --------------------------------------------------------------------------------
@dataclass
class SshFleet:
    hosts: dict[str, SshHost]
    targets: dict[str, SshTarget]
    known: KnownHosts


def _ssh_fleet(sshd_factory, seed: Path, tmp: Path, count: int, *, trusted: int | None = None, **kw) -> SshFleet:
    hosts = {}
    for i in range(1, count + 1):
        host = sshd_factory()
        seed_runtime(host, seed)
        hosts[f"web{i}"] = host
    known = trusting(tmp / "trust", *list(hosts.values())[: trusted if trusted is not None else count])
    kw.setdefault("timeouts", SshTimeouts(connect_s=3, auth_s=5))
    targets = {name: target_for(h, tmp / name, known_hosts=known, **kw) for name, h in hosts.items()}
    return SshFleet(hosts, targets, known)


@pytest.fixture
def ssh_fleet_factory(sshd_factory, ssh_runtime_seed, tmp_path) -> Iterator[Any]:
    made: list[SshFleet] = []

    def make(count: int = 4, **kw: Any) -> SshFleet:
        fleet = _ssh_fleet(sshd_factory, ssh_runtime_seed, tmp_path / f"fleet{len(made)}", count, **kw)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        for host in fleet.hosts.values():
            if host.proc is None:
                host.start()
        undeploy_all(fleet.targets)
        for host in fleet.hosts.values():
            left = runtime_pids(host.deploy_root)
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            assert not left, f"runtime processes left behind on {host.ip}: {sorted(left)}"


def test_ssh_hosts_all_deploy_in_parallel_and_a_redeploy_sends_nothing(ssh_fleet_factory, deploy_bundles) -> None:
    fleet = ssh_fleet_factory(4)
    progress = Recorder()
    result = deploy_many(fleet.targets, deploy_bundles["v1"], DeployOptions(), forks=4, progress=progress)

    assert result.ok, [(h.host, h.outcome, h.message) for h in result.hosts]
    assert progress.hosts() == {"web1", "web2", "web3", "web4"}  # fleet names, not addresses
    for h in result.hosts:
        assert h.outcome == "deployed"
        status = h.result.status
        assert status.endpoint.startswith(f"http://{fleet.hosts[h.host].ip}:")
        assert served_version(status.endpoint) == "1"
    again = deploy_many(fleet.targets, deploy_bundles["v1"], DeployOptions(), forks=4)
    assert [h.outcome for h in again.hosts] == ["already-installed"] * 4
    statuses = status_many(fleet.targets)
    assert [len(s.statuses) for s in statuses] == [1, 1, 1, 1]


def test_a_stopped_host_is_a_reported_failure_and_the_others_deploy(ssh_fleet_factory, deploy_bundles) -> None:
    fleet = ssh_fleet_factory(3)
    fleet.hosts["web2"].stop()
    result = deploy_many(fleet.targets, deploy_bundles["v1"], DeployOptions(), forks=3)
    by_host = result.by_host()
    assert by_host["web1"].ok and by_host["web3"].ok
    assert by_host["web2"].outcome == "failed"
    assert by_host["web2"].error == HostUnreachable.__name__
    assert fleet.hosts["web2"].ip in by_host["web2"].message
    statuses = {s.host: s for s in status_many(fleet.targets)}
    assert not statuses["web2"].ok and statuses["web1"].ok


def test_a_host_that_never_answers_fails_within_its_connect_timeout(ssh_fleet_factory, deploy_bundles) -> None:
    fleet = ssh_fleet_factory(2)
    silent = socket.socket()  # accepts TCP connections, never sends an SSH banner
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        endpoint = SshEndpoint("127.0.0.1", silent.getsockname()[1], "nobody", allow_agent=False)
        targets = {
            **fleet.targets,
            "mute": SshTarget(
                endpoint, "/nonexistent", known_hosts=fleet.known, timeouts=SshTimeouts(connect_s=2, auth_s=2)
            ),
        }
        result = deploy_many(targets, deploy_bundles["v1"], DeployOptions(), forks=3)
    finally:
        silent.close()
    by_host = result.by_host()
    assert by_host["web1"].ok and by_host["web2"].ok
    assert by_host["mute"].outcome == "failed"
    assert by_host["mute"].error == HostUnreachable.__name__
    assert by_host["mute"].duration_s < 30  # bounded by its connect timeout, not by the others' deploys


def test_a_host_with_an_unknown_key_is_refused_before_anything_runs(ssh_fleet_factory, deploy_bundles) -> None:
    fleet = ssh_fleet_factory(3, trusted=2)  # web3's key is in no known_hosts file
    result = deploy_many(fleet.targets, deploy_bundles["v1"], DeployOptions(), forks=3)
    by_host = result.by_host()
    assert by_host["web1"].ok and by_host["web2"].ok
    refused = by_host["web3"]
    assert refused.outcome == "failed" and refused.error == UnknownHostKey.__name__
    assert fleet.hosts["web3"].fingerprint in refused.message
    assert sorted(p.name for p in fleet.hosts["web3"].deploy_root.iterdir()) == ["runtime"]  # nothing was written


def test_cancel_midway_over_ssh_leaves_previous_releases_serving(ssh_fleet_factory, deploy_bundles) -> None:
    fleet = ssh_fleet_factory(4)
    assert deploy_many(fleet.targets, deploy_bundles["v1"], DeployOptions(), forks=4).ok
    cancel = threading.Event()

    def progress(event: ProgressEvent) -> None:
        if event.step == "health":
            cancel.set()

    result = deploy_many(
        fleet.targets, deploy_bundles["v2"], DeployOptions(), forks=2, progress=progress, cancel=cancel
    )
    assert result.cancelled
    outcomes = {h.host: h.outcome for h in result.hosts}
    assert "cancelled" in outcomes.values() or NOT_STARTED in outcomes.values(), outcomes
    for s in status_many(fleet.targets):
        (status,) = s.statuses
        expected = "2" if outcomes[s.host] == "deployed" else "1"
        assert served_version(status.endpoint) == expected, (s.host, outcomes[s.host])
