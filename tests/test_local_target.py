"""The local target against real runtime processes on 127.0.0.1: deploy, health-gated start-first
switches under load, failed releases rolled back, rollback, stop/start, undeploy, supervision, cancel.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from modeldeck.core.errors import Cancelled, DeployError, TamperedBundle
from modeldeck.core.targets import releases
from modeldeck.core.targets.base import DeployOptions, HealthGate, ProgressEvent, Target, open_target
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import LocalTarget, free_port, pid_alive

from tests.fixtures.deploy import runtime_pids

pytestmark = [pytest.mark.server, pytest.mark.slow]

EXAMPLE = {
    "dataframe_split": {
        "columns": ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"],
        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
    }
}


def predict(endpoint: str) -> list:
    answer = request_json("POST", endpoint + "/invocations", EXAMPLE, timeout=5)
    assert answer.status == 200, answer.text
    return answer.body["predictions"]


def served_version(endpoint: str) -> str:
    return request_json("GET", endpoint + "/version", timeout=5).body["model_version"]


def wait_until(condition, timeout: float = 20.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def options(port: int, **kw) -> DeployOptions:
    return DeployOptions(port=port, **kw)


@dataclass
class Load:
    """A light, bounded load: one request at a time on a fresh connection, paced, ≤ max_requests, ≤ max_seconds."""

    port: int
    max_requests: int = 2000
    max_seconds: float = 15.0
    pause_s: float = 0.004  # pacing, so the request budget lasts through a slow switch on a busy machine
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = json.dumps(EXAMPLE).encode()
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.max_requests):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                if i % 10 == 0:
                    conn.request("GET", "/version")
                    resp = conn.getresponse()
                    version = json.loads(resp.read())["model_version"]
                    if not self.versions or self.versions[-1] != version:
                        self.versions.append(version)
                else:
                    conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.status != 200:
                        self.failures.append(f"HTTP {resp.status}: {data[:100]!r}")
                        continue
                self.ok += 1
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.failures.append(f"{exc.__class__.__name__}: {exc}")
            finally:
                conn.close()
            self.stop.wait(self.pause_s)


def test_local_target_implements_the_target_protocol(tmp_path: Path) -> None:
    target = open_target("local://8123", root=tmp_path)
    assert isinstance(target, Target)
    assert target.url == "local://127.0.0.1:8123"


def test_deploy_serves_predictions_and_reports_running(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    events: list[ProgressEvent] = []
    result = local_target.deploy(deploy_bundles["v1"], options(port), progress=events.append)

    assert result.outcome == "deployed", result.message
    assert result.name == "iris"
    assert [e.step for e in events][-1] == "done"
    (status,) = local_target.status()
    assert status.state == "running"
    assert status.endpoint == f"http://127.0.0.1:{port}"
    assert (status.model_name, status.model_version) == ("iris", "1")
    assert len(predict(status.endpoint)) == 2
    assert served_version(status.endpoint) == "1"
    root = local_target.root / "iris"
    assert releases.current_release(local_target.root, "iris") == status.release_id
    assert (root / "releases" / status.release_id / "bundle" / "manifest.json").is_file()
    assert "supervisor" in local_target.logs("iris", 50)


def test_redeploy_of_the_same_bundle_is_already_installed_without_restart(
    local_target: LocalTarget, deploy_bundles
) -> None:
    port = free_port()
    first = local_target.deploy(deploy_bundles["v1"], options(port))
    again = local_target.deploy(deploy_bundles["v1"], options(port))
    assert again.outcome == "already-installed"
    assert again.status.pid == first.status.pid
    assert again.status.release_id == first.status.release_id


def test_new_registry_version_with_identical_weights_is_a_new_release_not_already_installed(
    local_target: LocalTarget, deploy_bundles, tmp_path: Path
) -> None:
    """Re-registering the same run as version 2 must deploy version 2: /version and status name what was deployed."""
    same_files = tmp_path / "v1-as-v2"
    shutil.copytree(deploy_bundles["v1"], same_files)
    manifest_path = same_files / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["model_version"] = "2"
    manifest_path.write_text(json.dumps(data))
    port = free_port()
    first = local_target.deploy(deploy_bundles["v1"], options(port))
    second = local_target.deploy(same_files, options(port))
    assert second.outcome == "deployed" and second.status.release_id != first.status.release_id
    assert second.status.model_version == "2" and served_version(second.status.endpoint) == "2"
    assert local_target.deploy(same_files, options(port)).outcome == "already-installed"


def test_deploy_does_not_wait_for_the_old_release_to_drain_and_the_old_runtime_still_exits(
    local_target: LocalTarget, deploy_bundles
) -> None:
    port = free_port()
    v1 = local_target.deploy(deploy_bundles["v1"], options(port))
    body = json.dumps(EXAMPLE).encode()
    held = socket.create_connection(("127.0.0.1", port), timeout=10)  # an in-flight request on v1: half its body
    head = f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    held.sendall(head.encode() + b"\r\n\r\n" + body[:10])
    try:
        v2 = local_target.deploy(deploy_bundles["v2"], options(port))

        assert v2.outcome == "deployed", v2.message
        assert served_version(v2.status.endpoint) == "2"
        assert pid_alive(v1.status.pid)  # still draining the held request: the deploy did not wait for it
        held.sendall(body[10:])
        answer = held.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]  # the old release finished what it had
    finally:
        held.close()
    wait_until(lambda: not pid_alive(v1.status.pid), timeout=30)
    wait_until(lambda: len(runtime_pids(local_target.root)) == 2, timeout=15)  # v2's supervisor + runtime only
    (status,) = local_target.status()
    assert status.release_id == v2.status.release_id
    assert releases.read_state(local_target.root, "iris").retiring_pid in (None, v1.status.pid)
    local_target.stop("iris")  # the next operation forgets the exited supervisor
    assert releases.read_state(local_target.root, "iris").retiring_pid is None


def switch_under_load(target: LocalTarget, bundles: dict[str, Path]) -> Load:
    """Deploy v1, then v2 while a light bounded load runs against the public port."""
    port = free_port()
    assert target.deploy(bundles["v1"], options(port)).ok
    load = Load(port)
    worker = threading.Thread(target=load.run)
    worker.start()
    try:
        wait_until(lambda: load.ok >= 50, timeout=10)
        result = target.deploy(bundles["v2"], options(port))
        assert result.outcome == "deployed", result.message
        ok_at_switch = load.ok
        wait_until(lambda: load.ok >= ok_at_switch + 50 or not worker.is_alive(), timeout=15)
        assert load.ok >= ok_at_switch + 50, "the load's budget ran out before the switch ended"
    finally:
        load.stop.set()
        worker.join(timeout=30)
    return load


def test_new_version_takes_over_under_load_with_zero_failed_requests(local_target: LocalTarget, deploy_bundles) -> None:
    load = switch_under_load(local_target, deploy_bundles)
    assert load.failures == [], load.failures
    assert load.versions == ["1", "2"]  # never back and forth: the old release keeps the port until the switch
    assert "handed port" in local_target.logs("iris")  # the supervisor steered it (not the hash fallback)
    (status,) = local_target.status()
    assert (status.state, status.model_version) == ("running", "2")
    assert status.previous_release_id is not None


def test_release_that_cannot_answer_its_example_is_rolled_back(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    good = local_target.deploy(deploy_bundles["v1"], options(port))
    result = local_target.deploy(deploy_bundles["bad"], options(port))

    assert result.outcome == "failed (rolled back)"
    assert not result.ok
    assert result.message.startswith("the new runtime exited before it was ready: warm-up on the bundle's input")
    assert "unknown column 'nonsense'" in result.message  # the runtime's own words, not just "it failed"
    (status,) = local_target.status()
    assert (status.state, status.model_version, status.release_id) == ("running", "1", good.status.release_id)
    assert releases.current_release(local_target.root, "iris") == good.status.release_id
    assert releases.list_releases(local_target.root, "iris") == [good.status.release_id]
    assert served_version(status.endpoint) == "1"
    assert len(predict(status.endpoint)) == 2
    assert status.pid == good.status.pid


def test_rollback_returns_to_the_previous_release_and_back(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    v1 = local_target.deploy(deploy_bundles["v1"], options(port))
    v2 = local_target.deploy(deploy_bundles["v2"], options(port))

    back = local_target.rollback("iris")
    assert back.outcome == "rolled-back", back.message
    assert back.status.release_id == v1.status.release_id
    assert back.status.previous_release_id == v2.status.release_id
    assert served_version(back.status.endpoint) == "1"

    forth = local_target.rollback("iris")
    assert forth.status.release_id == v2.status.release_id
    assert served_version(forth.status.endpoint) == "2"


def test_rollback_without_a_previous_release_is_a_clear_error(local_target: LocalTarget, deploy_bundles) -> None:
    local_target.deploy(deploy_bundles["v1"], options(free_port()))
    with pytest.raises(DeployError, match="no previous release"):
        local_target.rollback("iris")


def test_stop_start_and_undeploy_leave_no_process(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    deployed = local_target.deploy(deploy_bundles["v1"], options(port, name="flowers"))
    assert deployed.name == "flowers"

    stopped = local_target.stop("flowers")
    assert stopped.state == "stopped"
    assert not pid_alive(deployed.status.pid)
    assert runtime_pids(local_target.root) == []
    with pytest.raises(OSError):
        request_json("GET", deployed.status.endpoint + "/health", timeout=2)

    started = local_target.start("flowers")
    assert started.ok, started.message
    assert local_target.status("flowers")[0].state == "running"
    assert served_version(started.status.endpoint) == "1"

    local_target.undeploy("flowers")
    assert local_target.status() == []
    assert not (local_target.root / "flowers").exists()
    assert runtime_pids(local_target.root) == []


def test_deploying_a_stopped_deployment_again_restarts_it(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    local_target.deploy(deploy_bundles["v1"], options(port))
    local_target.stop("iris")
    again = local_target.deploy(deploy_bundles["v1"], options(port))
    assert again.outcome == "deployed"
    assert local_target.status("iris")[0].state == "running"


def test_supervisor_restarts_a_killed_runtime(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    result = local_target.deploy(deploy_bundles["v1"], options(port))
    ready = releases.run_dir(local_target.root, "iris") / f"{result.status.release_id}.ready.json"
    runtime_pid = json.loads(ready.read_text())["pid"]

    os.kill(runtime_pid, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return json.loads(ready.read_text())["pid"] != runtime_pid
        except (OSError, ValueError):
            return False

    wait_until(restarted, timeout=30)
    status = local_target.status("iris")[0]
    assert status.state == "running"
    assert status.pid == result.status.pid  # same supervisor
    assert len(predict(status.endpoint)) == 2
    assert "exited unexpectedly" in local_target.logs("iris")


def test_cancel_mid_deploy_leaves_the_old_release_serving(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    v1 = local_target.deploy(deploy_bundles["v1"], options(port))
    cancel = threading.Event()

    def progress(event: ProgressEvent) -> None:
        if event.step == "health":
            cancel.set()

    with pytest.raises(Cancelled):
        local_target.deploy(deploy_bundles["v2"], options(port), progress=progress, cancel=cancel)

    (status,) = local_target.status()
    assert (status.state, status.release_id) == ("running", v1.status.release_id)
    assert releases.list_releases(local_target.root, "iris") == [v1.status.release_id]
    wait_until(lambda: len(runtime_pids(local_target.root)) == 2, timeout=15)  # v1's supervisor + runtime only
    assert served_version(status.endpoint) == "1"


def test_first_deploy_that_fails_leaves_nothing_behind(local_target: LocalTarget, deploy_bundles) -> None:
    result = local_target.deploy(deploy_bundles["bad"], options(free_port(), health=HealthGate(start_period_s=15)))
    assert result.outcome == "failed"
    assert local_target.status() == []
    assert runtime_pids(local_target.root) == []


def test_port_in_use_by_another_program_is_refused_before_anything_changes(
    local_target: LocalTarget, deploy_bundles
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DeployError, match=f"port {port}.*in use"):
            local_target.deploy(deploy_bundles["v1"], options(port))
    assert local_target.status() == []
    assert not (local_target.root / "iris").exists()  # not even an empty folder


def test_port_of_another_deployment_is_refused(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    local_target.deploy(deploy_bundles["v1"], options(port, name="one"))
    with pytest.raises(DeployError, match="deployment 'one'"):
        local_target.deploy(deploy_bundles["v2"], options(port, name="two"))


def test_tampered_bundle_is_refused_before_anything_changes(
    local_target: LocalTarget, deploy_bundles, tmp_path: Path
) -> None:
    port = free_port()
    v1 = local_target.deploy(deploy_bundles["v1"], options(port))
    tampered = tmp_path / "tampered"
    shutil.copytree(deploy_bundles["v2"], tampered)
    with (tampered / "model.onnx").open("ab") as fh:
        fh.write(b"\0")

    with pytest.raises(TamperedBundle, match=r"model\.onnx"):
        local_target.deploy(tampered, options(port))
    assert releases.list_releases(local_target.root, "iris") == [v1.status.release_id]
    assert served_version(v1.status.endpoint) == "1"


def test_missing_bundle_is_a_clear_error(local_target: LocalTarget, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="does not exist"):
        local_target.deploy(tmp_path / "nope", options(free_port()))


def test_unknown_deployment_is_a_clear_error(local_target: LocalTarget) -> None:
    with pytest.raises(DeployError, match="no deployment named 'ghost'"):
        local_target.stop("ghost")


def test_private_port_is_the_one_the_runtime_names_even_with_the_public_ports_number() -> None:
    """127.0.0.1:0 may be given the public port's number when the public bind is on another address (seen in CI)."""
    from modeldeck.core.targets.local import _private_bind

    ready = {"binds": ["127.0.0.38:42741", "127.0.0.1:42741"], "private_binds": ["127.0.0.1:42741"]}
    assert _private_bind(ready, "127.0.0.38", 42741) == "127.0.0.1:42741"
    # an older runtime without private_binds: by elimination, as before
    assert _private_bind({"binds": ["127.0.0.38:42741", "127.0.0.1:5000"]}, "127.0.0.38", 42741) == "127.0.0.1:5000"
