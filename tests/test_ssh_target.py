"""The SSH target against real sshd hosts on 127.0.0.N: facts, runtime install, deploy, predictions
from the host's own address, no-change redeploys, switches under load, rollback, stop/start, undeploy.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from modeldeck.core.errors import DeployError, TargetError
from modeldeck.core.targets.base import DeployOptions, ProgressEvent, Target, open_target
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.ssh.facts import parse_facts
from modeldeck.core.targets.ssh.target import SshTarget, parse_ssh_url, systemd_unit

from tests.fixtures.deploy import runtime_pids
from tests.fixtures.ssh_target import target_for
from tests.fixtures.sshd import SshHost

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


def options(host: SshHost, port: int | None = None, **kw) -> DeployOptions:
    return DeployOptions(host=host.ip, port=port or free_port(host.ip), **kw)


class Steps:
    """Collects progress events (what a user would watch)."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def steps(self) -> list[str]:
        return [e.step for e in self.events]


# -- URL, facts, unit: no host needed ----------------------------------------------------------------------
def test_ssh_url_names_user_host_port_and_deploy_root() -> None:
    assert parse_ssh_url("ssh://deploy@web1:2222/srv/md") == ("deploy", "web1", 2222, "/srv/md", {})
    assert parse_ssh_url("ssh://web1") == (None, "web1", 22, None, {})
    assert parse_ssh_url("ssh://u@h/~/models?bind=10.0.0.5") == ("u", "h", 22, "~/models", {"bind": "10.0.0.5"})
    with pytest.raises(TargetError, match="invalid port"):
        parse_ssh_url("ssh://u@h:notaport/x")
    with pytest.raises(TargetError, match="unknown option"):
        parse_ssh_url("ssh://u@h/x?colour=red")
    target = open_target("ssh://deploy@web1:2222/srv/md")
    assert isinstance(target, SshTarget) and isinstance(target, Target)
    assert target.url == "ssh://deploy@web1:2222/srv/md"
    assert open_target("ssh://web1").url == "ssh://web1/~/modeldeck"


def test_facts_refuse_old_python_and_unsupported_architecture() -> None:
    facts = parse_facts(
        "h",
        "home=/home/u\ndeploy_root=/home/u/md\nmachine=armv7l\npython=/usr/bin/python3\n"
        "python_version=3.8.10\nvenv=yes\nlibc=glibc\nwritable=yes\nfree_kib=100\n",
    )
    problems = " ".join(facts.problems())
    assert "Python 3.8.10" in problems and "armv7l" in problems
    assert facts.free_bytes == 100 * 1024


def test_systemd_unit_starts_and_stops_through_the_agent() -> None:
    text = systemd_unit("iris", "/srv/md/runtime/v/venv/bin/python", "/srv/md", user_mode=False)
    assert "ExecStart=/srv/md/runtime/v/venv/bin/python -m modeldeck.core.targets.agent start iris" in text
    assert "ExecStop=/srv/md/runtime/v/venv/bin/python -m modeldeck.core.targets.agent stop iris" in text
    assert "WantedBy=multi-user.target" in text
    assert "WantedBy=default.target" in systemd_unit("iris", "/p", "/r", user_mode=True)


# -- against real hosts --------------------------------------------------------------------------------------
def test_agent_answers_and_exits_cleanly_while_its_lifeline_is_still_open(tmp_path: Path) -> None:
    """The stdin lifeline thread once made every switching command wait 1 s at exit and die of SIGABRT."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeck.core.targets.agent", "push", "--deploy-root", str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"files": {}, "options": {}}).encode() + b"\n")
    proc.stdin.flush()  # and kept open, as the SSH target keeps it
    try:
        lines = [json.loads(line) for line in proc.stdout]  # up to the agent's exit
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdin.close()
        proc.stdout.close()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert "error" in lines[-1]  # an empty bundle is refused on the protocol
    assert code == 1, stderr


def test_facts_of_a_real_host_in_one_round_trip(ssh_target: SshTarget, ssh_deploy_host: SshHost) -> None:
    facts = ssh_target.facts()
    assert facts.machine == "x86_64"
    assert facts.python and facts.python_version and facts.has_venv
    assert facts.deploy_root == str(ssh_deploy_host.deploy_root)
    assert facts.deploy_root_writable and facts.free_bytes and facts.free_bytes > 0
    assert facts.runtime_versions == (ssh_target._runtime_version(),)
    assert facts.problems() == []
    unknown = "0" * 64
    assert ssh_target.facts(objects=[unknown, "not-a-sha; rm -rf /"]).missing_objects == (unknown,)


def test_deploy_serves_predictions_on_the_hosts_address(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    steps = Steps()
    result = ssh_target.deploy(deploy_bundles["v1"], options(ssh_deploy_host), progress=steps)
    assert result.outcome == "deployed", result.message
    status = result.status
    assert status.endpoint.startswith(f"http://{ssh_deploy_host.ip}:")
    assert status.target_url == ssh_target.url
    assert len(predict(status.endpoint)) == 2
    assert {"connect", "transfer", "start", "health", "switch", "done"} <= set(steps.steps())
    assert all(e.host == ssh_target.label for e in steps.events)
    fractions = [e.fraction for e in steps.events if e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0  # one bar that never runs backwards
    (listed,) = ssh_target.status()
    assert (listed.state, listed.model_version, listed.endpoint) == ("running", "1", status.endpoint)
    assert "started runtime" in ssh_target.logs("iris")
    assert ssh_target.input_example("iris") is not None
    # The release layout on the host, and the content-addressed store the upload went to.
    ddir = ssh_deploy_host.deploy_root / "deployments" / "iris"
    assert (ddir / "current").is_symlink() and (ddir / "state.json").is_file()
    assert len(list((ssh_deploy_host.deploy_root / "objects").iterdir())) == 3  # model, example, manifest


def test_redeploy_of_the_same_bundle_sends_nothing_and_keeps_the_process(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    opts = options(ssh_deploy_host)
    plan = ssh_target.plan(deploy_bundles["v1"], opts)
    assert "upload 3 file(s)" in next(s.description for s in plan.steps if s.step == "transfer")
    assert not (ssh_deploy_host.deploy_root / "deployments").exists()  # planning changes nothing
    first = ssh_target.deploy(deploy_bundles["v1"], opts)
    plan = ssh_target.plan(deploy_bundles["v1"], opts)
    assert [s.step for s in plan.steps] == ["facts", "noop"]
    steps = Steps()
    started = time.perf_counter()
    again = ssh_target.deploy(deploy_bundles["v1"], opts, progress=steps)
    elapsed = time.perf_counter() - started
    print(f"no-change redeploy over SSH: {elapsed * 1000:.0f} ms")
    assert again.outcome == "already-installed", again.message
    assert (again.status.pid, again.status.release_id) == (first.status.pid, first.status.release_id)
    assert "the host already holds every file; nothing to send" in [e.message for e in steps.events]


def count_facts_runs(ssh_target: SshTarget, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that gets one entry each time the target runs the host-facts script."""
    inspected: list[str] = []
    real_facts = ssh_target.facts

    def counting_facts(*args, **kwargs):  # type: ignore[no-untyped-def]
        inspected.append("facts")
        return real_facts(*args, **kwargs)

    monkeypatch.setattr(ssh_target, "facts", counting_facts)
    return inspected


def make_facts_cache_stale(ssh_target: SshTarget) -> tuple[Path, dict]:
    """Point the cached facts at a deploy root that is gone (its interpreter with it); returns the file and old data."""
    cache = next((ssh_target.cache_dir / "facts").glob("*.json"))
    data = json.loads(cache.read_text())
    cache.write_text(json.dumps({**data, "deploy_root": data["deploy_root"] + "-gone"}))
    return cache, data


def test_a_known_host_is_redeployed_with_one_command_and_a_stale_cache_falls_back_to_the_facts(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = options(ssh_deploy_host)
    first = ssh_target.deploy(deploy_bundles["v1"], opts)
    assert first.ok, first.message
    inspected = count_facts_runs(ssh_target, monkeypatch)
    again = ssh_target.deploy(deploy_bundles["v1"], opts)
    assert again.outcome == "already-installed", again.message
    assert inspected == []  # the cached facts were enough: one agent command
    # A cache whose interpreter is gone (here: a deploy root that moved) is noticed and replaced.
    cache, data = make_facts_cache_stale(ssh_target)
    v2 = ssh_target.deploy(deploy_bundles["v2"], opts)
    assert v2.outcome == "deployed", v2.message
    assert inspected == ["facts"]
    assert json.loads(cache.read_text())["deploy_root"] == data["deploy_root"]
    assert not (Path(data["deploy_root"] + "-gone")).exists()
    ssh_target.undeploy(v2.name)


def test_plan_status_and_logs_of_a_known_host_skip_the_facts_script_and_a_stale_cache_falls_back(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = options(ssh_deploy_host)
    first = ssh_target.deploy(deploy_bundles["v1"], opts)
    assert first.ok, first.message
    inspected = count_facts_runs(ssh_target, monkeypatch)
    assert [s.step for s in ssh_target.plan(deploy_bundles["v1"], opts).steps] == ["facts", "noop"]
    plan = ssh_target.plan(deploy_bundles["v2"], opts)
    assert plan.replaces == first.status.release_id
    assert "upload 2 file(s)" in next(s.description for s in plan.steps if s.step == "transfer")  # model+manifest
    (status,) = ssh_target.status()
    assert (status.state, status.release_id) == ("running", first.status.release_id)
    assert "started runtime" in ssh_target.logs("iris")
    assert inspected == []  # one agent command each, as for a deploy
    # A cache whose interpreter is gone is noticed (nothing ran) and the host inspected again.
    make_facts_cache_stale(ssh_target)
    (status,) = ssh_target.status()
    assert status.release_id == first.status.release_id
    assert inspected == ["facts"]


def test_unchanged_weights_are_not_sent_again(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles, tmp_path: Path
) -> None:
    import shutil
    from dataclasses import replace

    from modeldeck.core.runtime.manifest import hash_tree, read_manifest, write_manifest

    ssh_target.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    # Version 2: the same model file, another input example -> a new bundle whose weights the host already has.
    v2 = shutil.copytree(deploy_bundles["v1"], tmp_path / "v2")
    example = json.loads((v2 / "input_example.json").read_text())
    example["data"] = example["data"][:1]
    (v2 / "input_example.json").write_text(json.dumps(example))
    write_manifest(v2, replace(read_manifest(v2), model_version="2", files=hash_tree(v2)))
    steps = Steps()
    result = ssh_target.deploy(v2, options(ssh_deploy_host), progress=steps)
    assert result.outcome == "deployed", result.message
    assert "uploading 2 of 3 file(s)" in " ".join(e.message for e in steps.events)  # example + manifest only
    assert served_version(result.status.endpoint) == "2"


@dataclass
class Load:
    """A light, bounded load against one address: paced requests on fresh connections, ≤ N requests, ≤ T s."""

    host: str
    port: int
    max_requests: int = 2000
    max_seconds: float = 20.0
    pause_s: float = 0.004
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
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            try:
                if i % 10 == 0:
                    conn.request("GET", "/version")
                    version = json.loads(conn.getresponse().read())["model_version"]
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


def wait_until(condition, timeout: float = 20.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def test_new_version_takes_over_under_load_without_a_failed_request(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    opts = options(ssh_deploy_host)
    assert ssh_target.deploy(deploy_bundles["v1"], opts).ok
    load = Load(ssh_deploy_host.ip, opts.port)
    worker = threading.Thread(target=load.run)
    worker.start()
    try:
        wait_until(lambda: load.ok >= 50, timeout=10)
        result = ssh_target.deploy(deploy_bundles["v2"], opts)
        assert result.outcome == "deployed", result.message
        ok_at_switch = load.ok
        wait_until(lambda: load.ok >= ok_at_switch + 50 or not worker.is_alive(), timeout=15)
    finally:
        load.stop.set()
        worker.join(timeout=30)
    assert load.failures == [], load.failures
    assert load.versions == ["1", "2"]
    (status,) = ssh_target.status()
    assert (status.state, status.model_version) == ("running", "2")


def test_rollback_stop_start_and_undeploy(ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles) -> None:
    opts = options(ssh_deploy_host)
    v1 = ssh_target.deploy(deploy_bundles["v1"], opts)
    v2 = ssh_target.deploy(deploy_bundles["v2"], opts)
    back = ssh_target.rollback("iris")
    assert back.outcome == "rolled-back", back.message
    assert (back.status.release_id, back.status.previous_release_id) == (v1.status.release_id, v2.status.release_id)
    assert served_version(back.status.endpoint) == "1"

    stopped = ssh_target.stop("iris")
    assert stopped.state == "stopped"
    started = ssh_target.start("iris")
    assert started.ok, started.message
    assert served_version(started.status.endpoint) == "1"

    ssh_target.undeploy("iris")
    assert ssh_target.status() == []
    assert not (ssh_deploy_host.deploy_root / "deployments" / "iris").exists()
    assert list((ssh_deploy_host.deploy_root / "objects").iterdir()) == []  # no file of it is left on the host
    assert runtime_pids(ssh_deploy_host.deploy_root) == []
    with pytest.raises(DeployError, match="no deployment named 'iris'"):
        ssh_target.rollback("iris")


def test_runtime_is_installed_from_an_uploaded_wheelhouse(sshd_factory, tmp_path: Path, deploy_bundles) -> None:
    host = sshd_factory()  # an empty host: no runtime yet
    target = target_for(host, tmp_path)
    steps = Steps()
    result = target.deploy(deploy_bundles["v1"], options(host), progress=steps)
    try:
        assert result.outcome == "deployed", result.message
        assert "runtime" in steps.steps()
        fractions = [e.fraction for e in steps.events if e.fraction is not None]
        assert fractions == sorted(fractions)
        assert (host.deploy_root / "runtime" / target._runtime_version() / "installed.json").is_file()
        assert any((host.deploy_root / "wheelhouse").rglob("onnxruntime-*.whl"))
        assert target.facts().runtime_versions == (target._runtime_version(),)
        assert len(predict(result.status.endpoint)) == 2
    finally:
        target.undeploy("iris")


def test_cli_deploys_to_an_ssh_target_after_the_user_accepts_its_host_key(
    ssh_deploy_host: SshHost, deploy_bundles
) -> None:
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "modeldeck.core.cli", *args], capture_output=True, text=True, timeout=180
        )

    url = f"{ssh_deploy_host.url}?bind={ssh_deploy_host.ip}"
    key = ["--identity", str(ssh_deploy_host.client_key)]
    refused = cli("deploy", str(deploy_bundles["v1"]), "--target", url, *key)
    assert refused.returncode == 1
    assert f"--accept-host-key {ssh_deploy_host.fingerprint}" in refused.stderr
    assert sorted(p.name for p in ssh_deploy_host.deploy_root.iterdir()) == ["runtime"]

    accept = ["--accept-host-key", ssh_deploy_host.fingerprint]
    done = cli("deploy", str(deploy_bundles["v1"]), "--target", url, *key, *accept, "--runtime-source", "wheelhouse")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"iris: deployed at http://{ssh_deploy_host.ip}:")
    try:
        (entry,) = json.loads(cli("status", "--target", url, *key, "--json").stdout)  # pinned: no flag needed now
        assert (entry["state"], entry["target_url"]) == ("running", ssh_deploy_host.url)
        assert len(predict(entry["endpoint"])) == 2
        assert cli("logs", "iris", "--target", url, *key).returncode == 0
    finally:
        gone = cli("undeploy", "iris", "--target", url, *key)
    assert gone.returncode == 0, gone.stderr
    assert runtime_pids(ssh_deploy_host.deploy_root) == []
