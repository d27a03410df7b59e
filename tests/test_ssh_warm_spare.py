"""The warm spare on real sshd hosts: after a deploy the host keeps one idle runtime (its serving stack already
imported), the next deploy runs in it, and it never weakens the health-gated switch: a dead or stale spare is
not used, a connection cut after the claim stops the uncommitted release, and rollback/stop/undeploy and
``warm_spare=False`` leave no spare or orphan process behind.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from modeldeck.core.errors import HostUnreachable
from modeldeck.core.targets.base import DeployOptions, ProgressEvent
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import LocalTarget, free_port
from modeldeck.core.targets.ssh.target import SshTarget

from tests.fixtures.deploy import HeldProcess, child_pids, runtime_pids
from tests.fixtures.sshd import SshHost

pytestmark = [pytest.mark.server, pytest.mark.slow]


def options(host: SshHost, port: int | None = None, **kw) -> DeployOptions:
    return DeployOptions(host=host.ip, port=port or free_port(host.ip), **kw)


def served_version(endpoint: str) -> str:
    return request_json("GET", endpoint + "/version", timeout=5).body["model_version"]


def wait_until(condition, timeout: float = 30.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def run_dir(host: SshHost, name: str = "iris") -> Path:
    return host.deploy_root / "deployments" / name / "run"


def spare_pid(host: SshHost) -> int | None:
    """The idle spare's supervisor, as the host's agent would find it."""
    return LocalTarget(host.deploy_root / "deployments").spare_pid("iris")


def ready_spare(host: SshHost) -> int:
    """Wait until the host's spare has imported its stack; its supervisor's pid."""
    wait_until(lambda: (run_dir(host) / "spare.ready.json").is_file() and spare_pid(host) is not None)
    pid = spare_pid(host)
    assert pid is not None
    return pid


def phases(host: SshHost, release_id: str) -> dict[str, float]:
    return json.loads((run_dir(host) / f"{release_id}.ready.json").read_text())["phases_s"]


def test_the_next_deploy_runs_in_the_spare_the_previous_one_left(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    opts = options(ssh_deploy_host)
    v1 = ssh_target.deploy(deploy_bundles["v1"], opts)
    assert v1.outcome == "deployed", v1.message
    spare = ready_spare(ssh_deploy_host)
    assert spare != v1.status.pid
    assert [s.release_id for s in ssh_target.status()] == [v1.status.release_id]  # the spare is no release

    steps: list[ProgressEvent] = []
    v2 = ssh_target.deploy(deploy_bundles["v2"], opts, progress=steps.append)
    assert v2.outcome == "deployed", v2.message
    assert v2.status.pid == spare  # the serving supervisor is the one that idled as the spare
    assert "claimed" in phases(ssh_deploy_host, v2.status.release_id)
    assert any("warm spare" in e.message for e in steps if e.step == "start")
    assert served_version(v2.status.endpoint) == "2"
    # ...and a new spare waits for the deploy after it: one per deployment, never the serving one.
    assert ready_spare(ssh_deploy_host) not in (spare, v1.status.pid)
    assert len(list(run_dir(ssh_deploy_host).glob("spare*.pid"))) == 1


def test_a_dead_or_stale_spare_is_not_used_and_the_deploy_succeeds_without_it(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    opts = options(ssh_deploy_host)
    assert ssh_target.deploy(deploy_bundles["v1"], opts).ok
    dead = ready_spare(ssh_deploy_host)
    os.kill(dead, signal.SIGKILL)  # its socket file stays behind: the claim finds nobody listening
    v2 = ssh_target.deploy(deploy_bundles["v2"], opts)
    assert v2.outcome == "deployed", v2.message
    assert v2.status.pid != dead and "claimed" not in phases(ssh_deploy_host, v2.status.release_id)

    stale = ready_spare(ssh_deploy_host)
    # Another environment for the runtime: the spare was started with the old one, so it is stale and ends itself.
    v1 = ssh_target.deploy(deploy_bundles["v1"], options(ssh_deploy_host, opts.port, env={"MODELDECK_TEST": "1"}))
    assert v1.outcome == "deployed", v1.message
    assert v1.status.pid != stale and "claimed" not in phases(ssh_deploy_host, v1.status.release_id)
    wait_until(lambda: stale not in runtime_pids(ssh_deploy_host.deploy_root))
    assert ready_spare(ssh_deploy_host) != stale


def test_a_connection_cut_after_the_claim_stops_the_uncommitted_release(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    opts = options(ssh_deploy_host)
    v1 = ssh_target.deploy(deploy_bundles["v1"], opts)
    spare = ready_spare(ssh_deploy_host)

    def cut_at_health(event: ProgressEvent) -> None:
        if event.step == "health":
            ssh_deploy_host.kill_sessions()

    # Held, the claimed spare cannot become ready: the cut lands in the health gate, not after a commit that a
    # ready spare reaches ~50 ms after the "health" event (the pgrep in kill_sessions lost that race under load).
    (spare_runtime,) = child_pids(spare)
    with HeldProcess(spare_runtime), pytest.raises(HostUnreachable):
        ssh_target.deploy(deploy_bundles["v2"], opts, progress=cut_at_health)
    # The claimed spare lost its probation channel with the agent and stopped; v1's two processes remain.
    wait_until(lambda: sorted(runtime_pids(ssh_deploy_host.deploy_root)) == sorted(serving_pids(v1.status.pid)))
    assert spare not in runtime_pids(ssh_deploy_host.deploy_root)
    (status,) = ssh_target.status()
    assert (status.state, status.release_id) == ("running", v1.status.release_id)
    assert served_version(status.endpoint) == "1"
    again = ssh_target.deploy(deploy_bundles["v2"], opts)  # no spare now: the ordinary path
    assert again.outcome == "deployed", again.message


def serving_pids(supervisor: int) -> list[int]:
    """A supervisor and its runtime child."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return [supervisor, *(int(c) for c in children)]


def test_rollback_stop_and_undeploy_leave_no_spare_or_orphan(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    opts = options(ssh_deploy_host)
    v1 = ssh_target.deploy(deploy_bundles["v1"], opts)
    ready_spare(ssh_deploy_host)
    v2 = ssh_target.deploy(deploy_bundles["v2"], opts)
    spare = ready_spare(ssh_deploy_host)
    back = ssh_target.rollback("iris")
    assert back.outcome == "rolled-back", back.message
    assert (back.status.release_id, back.status.pid) == (v1.status.release_id, spare)
    assert served_version(back.status.endpoint) == "1"
    ready_spare(ssh_deploy_host)

    assert ssh_target.stop("iris").state == "stopped"
    assert runtime_pids(ssh_deploy_host.deploy_root) == []  # the spare went with the release
    assert not list(run_dir(ssh_deploy_host).glob("spare*"))
    assert ssh_target.start("iris").ok
    ready_spare(ssh_deploy_host)
    ssh_target.undeploy("iris")
    assert runtime_pids(ssh_deploy_host.deploy_root) == []
    assert not (ssh_deploy_host.deploy_root / "deployments" / "iris").exists()
    assert v2.ok


def test_warm_spare_off_leaves_none_and_rollback_remembers_it(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    opts = options(ssh_deploy_host, extra={"warm_spare": False})
    v1 = ssh_target.deploy(deploy_bundles["v1"], opts)
    assert v1.outcome == "deployed", v1.message
    v2 = ssh_target.deploy(deploy_bundles["v2"], opts)
    assert ssh_target.rollback("iris").ok
    time.sleep(0.5)  # a spare would have been launched before the rollback returned; give it time to show up
    assert spare_pid(ssh_deploy_host) is None
    assert not [p for p in ("spare.pid", "spare.sock", "spare.ready.json") if (run_dir(ssh_deploy_host) / p).exists()]
    # The serving release only, once the retired one has drained (in the background, after the rollback returned:
    # a fixed 0.5 s was not always enough on a loaded machine).
    wait_until(lambda: len(runtime_pids(ssh_deploy_host.deploy_root)) == 2)
    # Turned on again by a later deploy.
    on = ssh_target.deploy(deploy_bundles["v2"], options(ssh_deploy_host, opts.port, extra={"warm_spare": True}))
    assert on.ok and v2.ok
    ready_spare(ssh_deploy_host)


def test_the_local_target_claims_its_spare_when_turned_on(tmp_path: Path, deploy_bundles) -> None:
    target = LocalTarget(tmp_path / "deployments", warm_spare=True)
    try:
        v1 = target.deploy(deploy_bundles["v1"], DeployOptions(name="iris"))
        assert v1.ok, v1.message
        wait_until(
            lambda: (
                target.spare_pid("iris") is not None and (tmp_path / "deployments/iris/run/spare.ready.json").is_file()
            )
        )
        spare = target.spare_pid("iris")
        v2 = target.deploy(deploy_bundles["v2"], DeployOptions(name="iris"))
        assert (v2.outcome, v2.status.pid) == ("deployed", spare)
        assert served_version(v2.status.endpoint) == "2"
    finally:
        for status in target.status():
            target.undeploy(status.name)
    assert runtime_pids(tmp_path / "deployments") == []


def test_cli_no_warm_spare_reaches_the_deploy_options_of_every_host() -> None:
    from modeldeck.core.cli import build_parser
    from modeldeck.core.cli.fleet import deploy_options

    args = build_parser().parse_args(["deploy", "bundle-dir", "--hosts", "web", "--no-warm-spare"])
    assert deploy_options(args).extra == {"warm_spare": False}
    args = build_parser().parse_args(["deploy", "bundle-dir", "--hosts", "web"])
    assert deploy_options(args).extra == {}


def test_a_deploy_right_after_another_claims_the_spare_before_its_runtime_started(
    tmp_path: Path, deploy_bundles
) -> None:
    target = LocalTarget(tmp_path / "deployments", warm_spare=True)
    try:
        assert target.deploy(deploy_bundles["v1"], DeployOptions(name="iris")).ok
        run = tmp_path / "deployments/iris/run"
        wait_until(lambda: (run / "spare.sock").exists(), timeout=10)  # listening, but in its start delay
        spare = target.spare_pid("iris")
        assert spare is not None and not (run / "spare.ready.json").is_file()
        v2 = target.deploy(deploy_bundles["v2"], DeployOptions(name="iris"))
        assert (v2.outcome, v2.status.pid) == ("deployed", spare)
        assert served_version(v2.status.endpoint) == "2"
        wait_until(lambda: target.spare_pid("iris") not in (None, spare))
    finally:
        for status in target.status():
            target.undeploy(status.name)
    assert runtime_pids(tmp_path / "deployments") == []


def test_an_idle_spare_ends_with_its_deployment_and_its_runtime_with_its_supervisor(
    tmp_path: Path, deploy_bundles
) -> None:
    root = tmp_path / "deployments"
    target = LocalTarget(root, warm_spare=True)
    state = root / "iris" / "state.json"
    try:
        serving = target.deploy(deploy_bundles["v1"], DeployOptions(name="iris")).status.pid
        wait_until(lambda: (root / "iris/run/spare.ready.json").is_file())
        spare = target.spare_pid("iris")
        state.rename(state.with_name("state.json.away"))  # as if the deployment had been removed under it
        wait_until(lambda: sorted(runtime_pids(root)) == sorted(serving_pids(serving)), timeout=10)
        state.with_name("state.json.away").rename(state)

        assert target.deploy(deploy_bundles["v2"], DeployOptions(name="iris")).ok  # starts a new spare
        wait_until(lambda: (root / "iris/run/spare.ready.json").is_file())
        spare = target.spare_pid("iris")
        assert spare is not None
        (runtime,) = serving_pids(spare)[1:]
        os.kill(spare, signal.SIGKILL)
        wait_until(lambda: runtime not in runtime_pids(root), timeout=10)  # end-of-file on its stdin
    finally:
        for status in target.status():
            target.undeploy(status.name)
    assert runtime_pids(root) == []


def test_a_release_that_crashes_in_the_claimed_spare_is_rolled_back_with_its_error(
    tmp_path: Path, deploy_bundles
) -> None:
    import shutil
    from dataclasses import replace

    from modeldeck.core.runtime.manifest import hash_tree, read_manifest, write_manifest

    crash = tmp_path / "crash"
    shutil.copytree(deploy_bundles["v2"], crash)
    (crash / "model.onnx").write_bytes(b"this is not an onnx model")
    write_manifest(crash, replace(read_manifest(crash), model_version="crash", files=hash_tree(crash)))
    root = tmp_path / "deployments"
    target = LocalTarget(root, warm_spare=True)
    try:
        v1 = target.deploy(deploy_bundles["v1"], DeployOptions(name="iris"))
        wait_until(lambda: (root / "iris/run/spare.ready.json").is_file())
        spare = target.spare_pid("iris")
        failed = target.deploy(crash, DeployOptions(name="iris"))
        assert failed.outcome == "failed (rolled back)", failed.message
        assert "model" in failed.message.lower()  # the runtime's own error line, as without the spare
        assert spare not in runtime_pids(root)
        (status,) = target.status()
        assert (status.state, status.release_id, status.pid) == ("running", v1.status.release_id, v1.status.pid)
        assert served_version(status.endpoint) == "1"
    finally:
        for status in target.status():
            target.undeploy(status.name)
    assert runtime_pids(root) == []
