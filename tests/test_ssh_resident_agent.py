"""The resident agent on real sshd hosts: after a push the host keeps one idle agent process per deploy root and
runtime version; later commands reach it through an SSH stream-local channel to its 0600 socket, so no agent
process (and no remote shell) starts per command. Wherever it cannot be used -- a host that refuses stream-local
forwarding, a resident agent that does not answer -- the command runs in an exec'd agent as before, and a cut
connection or a killed agent still leaves the previous release serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from modeldeck.core.errors import DeployError, HostUnreachable, TargetError
from modeldeck.core.targets.base import DeployOptions, ProgressEvent
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.ssh.target import SshTarget, SshTimeouts

from tests.fixtures.deploy import held_spare_runtime, processes, runtime_pids
from tests.fixtures.ssh_target import kill_runtimes, resident_agent_pids, seed_runtime, target_for
from tests.fixtures.sshd import SshHost

pytestmark = [pytest.mark.server, pytest.mark.slow]


def options(host: SshHost, port: int | None = None) -> DeployOptions:
    return DeployOptions(host=host.ip, port=port or free_port(host.ip))


def served_version(endpoint: str) -> str:
    return request_json("GET", endpoint + "/version", timeout=5).body["model_version"]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def resident_socket(host: SshHost, target: SshTarget) -> Path:
    return host.deploy_root / "runtime" / target._runtime_version() / "agent.sock"


def resident_pid(host: SshHost, target: SshTarget) -> int:
    """Wait until the host's resident agent listens; its pid."""
    sock = resident_socket(host, target)
    pid_file = sock.with_name("agent.pid")
    wait_until(lambda: sock.exists() and pid_file.is_file())
    return int(pid_file.read_text())


class ExecdAgents:
    """Records every agent process started by exec (``agent push``/``status``...) for a deploy root while open."""

    def __init__(self, root: Path) -> None:
        self.root = str(root).encode()
        self.seen: set[bytes] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.003):
            for _pid, cmd in processes():
                if b"modeldeck.core.targets.agent" in cmd and self.root in cmd and b"\x00serve\x00" not in cmd:
                    self.seen.add(cmd)

    def __enter__(self) -> ExecdAgents:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def serving(ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles) -> tuple[SshTarget, SshHost, object]:
    """v1 deployed (through an exec'd agent: the first push) and the resident agent it left listening."""
    v1 = ssh_target.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    assert v1.outcome == "deployed", v1.message
    assert ssh_target.agent_routes == ["exec"]
    resident_pid(ssh_deploy_host, ssh_target)
    return ssh_target, ssh_deploy_host, v1


def port_of(result) -> int:  # type: ignore[no-untyped-def]
    return int(result.status.endpoint.rsplit(":", 1)[1])


def test_a_known_host_deploy_runs_in_the_resident_agent_and_starts_no_agent_process(serving, deploy_bundles) -> None:
    target, host, v1 = serving
    pid = resident_pid(host, target)
    sock = resident_socket(host, target)
    assert sock.stat().st_mode & 0o777 == 0o600
    target.agent_routes.clear()
    with ExecdAgents(host.deploy_root) as watch:
        v2 = target.deploy(deploy_bundles["v2"], options(host, port_of(v1)))
        statuses = target.status()
    assert v2.outcome == "deployed", v2.message
    assert served_version(v2.status.endpoint) == "2"
    assert [s.release_id for s in statuses] == [v2.status.release_id]
    assert target.agent_routes == ["resident", "resident"]
    assert watch.seen == set()  # no agent interpreter was started on the host
    assert resident_pid(host, target) == pid  # the same resident agent served both


def test_a_host_that_refuses_stream_local_forwarding_gets_an_execd_agent(
    sshd_factory: Callable[..., SshHost], ssh_runtime_seed: Path, tmp_path: Path, deploy_bundles
) -> None:
    host = sshd_factory(extra_config=["AllowStreamLocalForwarding no"])
    seed_runtime(host, ssh_runtime_seed)
    try:
        target = target_for(host, tmp_path)
        v1 = target.deploy(deploy_bundles["v1"], options(host))
        assert v1.outcome == "deployed", v1.message
        resident_pid(host, target)  # it runs; this sshd will not connect anyone to it
        v2 = target.deploy(deploy_bundles["v2"], options(host, port_of(v1)))
        assert v2.outcome == "deployed", v2.message
        assert served_version(v2.status.endpoint) == "2"
        assert target.agent_routes == ["exec", "exec"]
    finally:
        kill_runtimes(host.deploy_root)


def test_a_resident_agent_that_does_not_answer_is_passed_over(serving, deploy_bundles, tmp_path: Path) -> None:
    target, host, v1 = serving
    sock = resident_socket(host, target)
    os.kill(resident_pid(host, target), signal.SIGTERM)
    wait_until(lambda: not sock.exists())
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # takes connections, never answers
    mute.bind(str(sock))
    mute.listen(4)
    try:
        # connect_s bounds the greeting wait, and the SSH connect too: not tighter on a loaded machine
        quick = target_for(host, tmp_path / "quick", timeouts=SshTimeouts(connect_s=3.0))
        quick.cache_dir = target.cache_dir  # a known host: its facts are cached
        v2 = quick.deploy(deploy_bundles["v2"], options(host, port_of(v1)))
        assert v2.outcome == "deployed", v2.message
        assert served_version(v2.status.endpoint) == "2"
        assert quick.agent_routes == ["resident (no answer)", "exec"]
    finally:
        mute.close()


def test_a_cut_connection_or_a_killed_resident_command_leaves_the_previous_release_serving(
    serving, deploy_bundles
) -> None:
    target, host, v1 = serving
    port = port_of(v1)

    def cut_at_health(event: ProgressEvent) -> None:
        if event.step == "health":
            host.kill_sessions()

    target.agent_routes.clear()
    # The claimed spare held: the cut lands in the health gate, not after a commit ~50 ms past the "health" event.
    with held_spare_runtime(host.deploy_root), pytest.raises(HostUnreachable):
        target.deploy(deploy_bundles["v2"], options(host, port), progress=cut_at_health)
    assert target.agent_routes == ["resident"]
    wait_until(lambda: len(runtime_pids(host.deploy_root)) == 2)  # v1's supervisor and runtime only
    (status,) = target.status()
    assert status.release_id == v1.status.release_id
    assert served_version(status.endpoint) == "1"

    server = resident_pid(host, target)
    killed: list[int] = []

    def kill_command_at_health(event: ProgressEvent) -> None:
        if event.step == "health" and not killed:
            for pid in resident_agent_pids(host.deploy_root):
                if pid != server:  # the forked child running this push
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    with pytest.raises(TargetError, match="without an answer"):
        target.deploy(deploy_bundles["v2"], options(host, port), progress=kill_command_at_health)
    assert killed
    wait_until(lambda: len(runtime_pids(host.deploy_root)) == 2)
    (status,) = target.status()
    assert served_version(status.endpoint) == "1"

    v2 = target.deploy(deploy_bundles["v2"], options(host, port))
    assert v2.outcome == "deployed", v2.message
    assert served_version(v2.status.endpoint) == "2"


def test_undeploy_leaves_no_resident_agent_or_orphan_behind(serving) -> None:
    target, host, _ = serving
    target.agent_routes.clear()
    target.undeploy("iris")
    assert target.agent_routes == ["resident"]
    wait_until(lambda: resident_agent_pids(host.deploy_root) == [], timeout=10)
    assert runtime_pids(host.deploy_root) == []
    assert not resident_socket(host, target).exists()


def test_the_resident_agent_ends_when_its_deploy_root_goes(serving) -> None:
    target, host, _ = serving
    resident_pid(host, target)
    for pid in runtime_pids(host.deploy_root):  # the deployment stays recorded; only its install goes
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
    (host.deploy_root / "runtime" / target._runtime_version() / "installed.json").unlink()
    wait_until(lambda: resident_agent_pids(host.deploy_root) == [], timeout=10)


def test_resident_agent_off_starts_none_and_execs_every_command(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    ssh_target.resident_agent = False
    v1 = ssh_target.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    assert v1.outcome == "deployed", v1.message
    ssh_target.status()
    assert ssh_target.agent_routes == ["exec", "exec"]
    time.sleep(0.5)  # a resident agent would have been started right after the push's answer
    assert resident_agent_pids(ssh_deploy_host.deploy_root) == []


# -- the files go through the agent's own channel ------------------------------------------------------------
def test_files_stream_through_the_agents_channel_without_an_sftp_session(serving, deploy_bundles) -> None:
    target, host, v1 = serving
    sftp_servers: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.003):
            sftp_servers.update(pid for pid, cmd in processes() if b"sftp-server" in cmd)

    before = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        v2 = target.deploy(deploy_bundles["v2"], options(host, port_of(v1)))
    finally:
        stop.set()
        watcher.join(5)
    assert v2.outcome == "deployed", v2.message
    assert served_version(v2.status.endpoint) == "2"
    assert not (sftp_servers - before)  # (other sessions' sftp-servers on this machine existed before)
    stored = [p for p in (host.deploy_root / "objects").iterdir()]
    assert stored and all(p.stat().st_mode & 0o777 == 0o444 for p in stored)
    assert not [p for p in stored if p.name.endswith(".part")]


def test_bytes_damaged_in_transit_are_refused_and_nothing_is_activated(serving, deploy_bundles) -> None:
    target, host, v1 = serving
    real_send = target._send
    damaged: list[int] = []

    def damaging_send(chan, data: bytes) -> None:  # type: ignore[no-untyped-def]
        if not damaged and len(data) > 1000 and not data.startswith(b"{"):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
            damaged.append(len(data))
        real_send(chan, data)

    target._send = damaging_send  # type: ignore[method-assign]
    with pytest.raises(DeployError, match="checksum mismatch"):
        target.deploy(deploy_bundles["v2"], options(host, port_of(v1)))
    assert damaged
    assert not list((host.deploy_root / "objects").glob("*.part"))
    (status,) = target.status()
    assert (status.release_id, served_version(status.endpoint)) == (v1.status.release_id, "1")

    target._send = real_send  # type: ignore[method-assign]
    v2 = target.deploy(deploy_bundles["v2"], options(host, port_of(v1)))
    assert v2.outcome == "deployed", v2.message


def test_a_damaged_resumed_part_is_sent_again_from_the_start(serving, deploy_bundles) -> None:
    target, host, v1 = serving
    model = deploy_bundles["v2"] / "model.onnx"
    from modeldeck.core.runtime.manifest import read_manifest

    sha = read_manifest(deploy_bundles["v2"]).files["model.onnx"]
    part = host.deploy_root / "objects" / f"{sha}.part"
    part.write_bytes(b"X" * min(100, model.stat().st_size - 1))  # a left-over part that is not the file's start
    v2 = target.deploy(deploy_bundles["v2"], options(host, port_of(v1)))
    assert v2.outcome == "deployed", v2.message
    assert served_version(v2.status.endpoint) == "2"
    assert not part.exists()
