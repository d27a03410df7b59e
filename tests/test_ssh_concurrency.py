"""Two deployers pushing to the same SSH host at once (two ModelDeck processes, or the GUI and CI), against a
real sshd: the host's deploy root is locked for a whole push, so the second waits for the first (bounded) and
then either follows it or fails with a message naming who holds the host -- never two uploads or switches at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from modeldeck.core.errors import DeployError
from modeldeck.core.targets.base import DeployOptions, DeployResult, ProgressEvent
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.ssh.connection import SshConnection
from modeldeck.core.targets.ssh.target import SshTimeouts

from tests.fixtures.ssh_target import target_for
from tests.fixtures.sshd import SshHost

pytestmark = [pytest.mark.server, pytest.mark.slow]


def served_version(endpoint: str) -> str:
    return request_json("GET", endpoint + "/version", timeout=5).body["model_version"]


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def test_a_second_deploy_while_one_runs_fails_after_a_bounded_wait_naming_the_other(
    ssh_deploy_host: SshHost, tmp_path: Path, deploy_bundles
) -> None:
    opts = DeployOptions(host=ssh_deploy_host.ip, port=free_port(ssh_deploy_host.ip))
    first = target_for(ssh_deploy_host, tmp_path / "gui")
    second = target_for(ssh_deploy_host, tmp_path / "ci", timeouts=SshTimeouts(host_lock_s=1.0))
    refused: list[BaseException] = []

    def while_the_first_holds_the_host(conn: SshConnection, parts: list[str]) -> None:
        # The first push is uploaded but not yet verified or switched: its agent holds the host's lock.
        try:
            second.deploy(deploy_bundles["v2"], opts)
        except DeployError as exc:
            refused.append(exc)

    first.before_verify = while_the_first_holds_the_host
    result = first.deploy(deploy_bundles["v1"], opts)

    assert result.outcome == "deployed", result.message
    (error,) = refused
    assert "another deploy to " in error.message, error.message
    assert f":{ssh_deploy_host.deploy_root} is in progress (pid " in error.message, error.message
    assert "started 20" in error.message
    assert served_version(result.status.endpoint) == "1"  # nothing of the second deploy happened
    assert not list((ssh_deploy_host.deploy_root / "staging").glob("*"))


def test_a_second_deploy_waits_for_the_first_and_then_takes_over(
    ssh_deploy_host: SshHost, tmp_path: Path, deploy_bundles
) -> None:
    opts = DeployOptions(host=ssh_deploy_host.ip, port=free_port(ssh_deploy_host.ip))
    first = target_for(ssh_deploy_host, tmp_path / "gui")
    second = target_for(ssh_deploy_host, tmp_path / "ci", timeouts=SshTimeouts(host_lock_s=120.0))
    waits: list[ProgressEvent] = []
    outcome: list[DeployResult | BaseException] = []

    def run_second() -> None:
        try:
            outcome.append(second.deploy(deploy_bundles["v2"], opts, progress=on_progress))
        except BaseException as exc:  # reported by the assertions below
            outcome.append(exc)

    def on_progress(event: ProgressEvent) -> None:
        if event.step == "wait":
            waits.append(event)

    worker = threading.Thread(target=run_second)

    def while_the_first_holds_the_host(conn: SshConnection, parts: list[str]) -> None:
        worker.start()
        wait_until(lambda: bool(waits) or bool(outcome))  # the second agent is queued behind the first

    first.before_verify = while_the_first_holds_the_host
    v1 = first.deploy(deploy_bundles["v1"], opts)
    worker.join(180)

    assert v1.outcome == "deployed", v1.message
    (v2,) = outcome
    assert isinstance(v2, DeployResult), v2
    assert v2.outcome == "deployed", v2.message
    assert "waiting for another deploy to" in waits[0].message and "(pid " in waits[0].message
    assert v2.status.previous_release_id == v1.status.release_id  # one after the other, not interleaved
    assert served_version(v2.status.endpoint) == "2"
