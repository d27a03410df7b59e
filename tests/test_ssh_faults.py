"""The SSH target under faults, against real sshd hosts: connections cut mid-upload and mid-switch,
a full disk, corrupted uploads, releases that crash or fail readiness, untrusted or changed host keys,
wrong keys, hosts that cannot run the runtime. After each fault the previous release still serves
(or nothing was touched at all) and a retry converges.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from modeldeck.core.errors import (
    Cancelled,
    DeployError,
    HostKeyChanged,
    HostUnreachable,
    SshAuthError,
    TargetError,
    UnknownHostKey,
)
from modeldeck.core.inventory.known_hosts import KnownHosts
from modeldeck.core.runtime.manifest import hash_tree, read_manifest, write_manifest
from modeldeck.core.targets.base import DeployOptions, HealthGate, ProgressEvent
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.ssh.target import SshTarget

from tests.fixtures.deploy import held_spare_runtime, make_iris_bundle, processes, runtime_pids
from tests.fixtures.ssh_target import seed_runtime, ssh_endpoint, target_for
from tests.fixtures.sshd import SshHost, keygen

pytestmark = [pytest.mark.server, pytest.mark.slow]


def served_version(endpoint: str) -> str:
    return request_json("GET", endpoint + "/version", timeout=5).body["model_version"]


def options(host: SshHost, port: int | None = None, **kw) -> DeployOptions:
    return DeployOptions(host=host.ip, port=port or free_port(host.ip), **kw)


def wait_until(condition, timeout: float = 20.0, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def releases_of(host: SshHost, name: str = "iris") -> list[str]:
    base = host.deploy_root / "deployments" / name / "releases"
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


@pytest.fixture(scope="module")
def big_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An iris bundle carrying ~20 MB of extra weights (random, so nothing compresses or dedups)."""
    out = tmp_path_factory.mktemp("big") / "bundle"
    out.mkdir()
    (out / "weights.bin").write_bytes(os.urandom(20 * 1024 * 1024))
    return make_iris_bundle(out, version="9")


def crashing_bundle(src: Path, out: Path) -> Path:
    """A copy of ``src`` whose model file is garbage (manifest re-hashed): the runtime dies loading it."""
    import shutil

    shutil.copytree(src, out)
    (out / "model.onnx").write_bytes(b"this is not an onnx model")
    manifest = read_manifest(out)
    write_manifest(out, replace(manifest, model_version="crash", files=hash_tree(out)))
    return out


@pytest.fixture
def serving(ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles) -> tuple[SshTarget, SshHost, object]:
    """v1 deployed and serving on the host; returns (target, host, v1's result)."""
    result = ssh_target.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    assert result.outcome == "deployed", result.message
    return ssh_target, ssh_deploy_host, result


def assert_v1_serves(target: SshTarget, v1) -> None:  # type: ignore[no-untyped-def]
    (status,) = target.status()
    assert (status.state, status.release_id) == ("running", v1.status.release_id)
    assert served_version(status.endpoint) == "1"


# -- transfer ---------------------------------------------------------------------------------------------
def test_connection_cut_mid_upload_keeps_the_old_release_and_the_retry_resumes(
    serving, big_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target, host, v1 = serving
    cut = threading.Event()

    def cut_half_way(event: ProgressEvent) -> None:
        if event.step == "transfer" and event.message.startswith("weights.bin") and not cut.is_set():
            kib = int(event.message.split(": ")[1].split()[0])
            if kib >= 2 * 1024:  # reported at least every 2 MiB
                cut.set()
                host.kill_sessions()

    opts = replace(options(host), port=int(v1.status.endpoint.rsplit(":", 1)[1]))
    with pytest.raises(HostUnreachable, match="dropped while uploading"):
        target.deploy(big_bundle, opts, progress=cut_half_way)
    assert cut.is_set()
    parts = list((host.deploy_root / "objects").glob("*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < 20 * 1024 * 1024
    assert releases_of(host) == [v1.status.release_id]
    assert_v1_serves(target, v1)

    with caplog.at_level(logging.INFO, logger="modeldeck.core.targets.ssh.target"):
        result = target.deploy(big_bundle, opts)
    assert result.outcome == "deployed", result.message
    assert any("resuming weights.bin" in r.getMessage() for r in caplog.records)
    assert served_version(result.status.endpoint) == "9"
    assert not list((host.deploy_root / "objects").glob("*.part"))


def test_checksum_mismatch_is_refused_and_nothing_is_activated(serving, deploy_bundles) -> None:
    target, host, v1 = serving

    def corrupt(conn, parts: list[str]) -> None:  # type: ignore[no-untyped-def]
        for part in parts:
            with open(part, "r+b") as fh:
                fh.write(b"X")

    target.stream_upload = False  # parts on disk between the SFTP upload and the agent's check
    target.before_verify = corrupt
    with pytest.raises(DeployError, match="checksum mismatch"):
        target.deploy(deploy_bundles["v2"], options(host, int(v1.status.endpoint.rsplit(":", 1)[1])))
    assert not list((host.deploy_root / "objects").glob("*.part"))
    assert releases_of(host) == [v1.status.release_id]
    assert_v1_serves(target, v1)

    target.before_verify = None
    assert target.deploy(deploy_bundles["v2"], options(host, int(v1.status.endpoint.rsplit(":", 1)[1]))).ok


def test_full_disk_is_a_clear_error_and_nothing_is_activated(serving, big_bundle: Path) -> None:
    target, host, v1 = serving
    objects = host.deploy_root / "objects"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(objects)], check=True, timeout=30)
    try:
        with pytest.raises(DeployError, match=r"uploading weights\.bin failed") as info:
            target.deploy(big_bundle, options(host, int(v1.status.endpoint.rsplit(":", 1)[1])))
        assert "free disk" in (info.value.hint or "")
        assert releases_of(host) == [v1.status.release_id]
        assert_v1_serves(target, v1)
    finally:
        subprocess.run(["umount", "-l", str(objects)], check=True, timeout=30)
    # Space freed: the retry converges.
    assert target.deploy(big_bundle, options(host, int(v1.status.endpoint.rsplit(":", 1)[1]))).ok


def test_not_enough_free_disk_is_refused_before_the_upload(
    sshd_factory, ssh_runtime_seed: Path, tmp_path: Path, big_bundle: Path
) -> None:
    host = sshd_factory()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(host.deploy_root)], check=True, timeout=30)
    try:
        elsewhere = tmp_path / "runtime-home"
        elsewhere.mkdir()
        fake = SshHost(**{**host.__dict__, "deploy_root": elsewhere})
        seed_runtime(fake, ssh_runtime_seed)
        (host.deploy_root / "runtime").symlink_to(elsewhere / "runtime")
        target = target_for(host, tmp_path)
        with pytest.raises(DeployError, match="not enough disk") as info:
            target.deploy(big_bundle, options(host))
        assert "free some space" in (info.value.hint or "")
        assert not (host.deploy_root / "objects").exists()
    finally:
        subprocess.run(["umount", "-l", str(host.deploy_root)], check=True, timeout=30)


# -- the switch --------------------------------------------------------------------------------------------
def test_releases_that_crash_at_start_or_fail_readiness_are_rolled_back(
    serving, deploy_bundles, tmp_path: Path
) -> None:
    target, host, v1 = serving
    port = int(v1.status.endpoint.rsplit(":", 1)[1])
    crash = target.deploy(
        crashing_bundle(deploy_bundles["v1"], tmp_path / "crash"),
        options(host, port, health=HealthGate(start_period_s=20)),
    )
    assert crash.outcome == "failed (rolled back)"
    assert "exited before it was ready" in crash.message
    assert releases_of(host) == [v1.status.release_id]
    assert_v1_serves(target, v1)

    unready = target.deploy(deploy_bundles["bad"], options(host, port))
    assert unready.outcome == "failed (rolled back)"
    assert "unknown column 'nonsense'" in unready.message  # the runtime's own words, relayed from the host
    assert releases_of(host) == [v1.status.release_id]
    assert_v1_serves(target, v1)

    assert target.deploy(deploy_bundles["v2"], options(host, port)).ok


def test_cancel_or_connection_cut_mid_switch_leaves_the_old_release_serving(serving, deploy_bundles) -> None:
    target, host, v1 = serving
    port = int(v1.status.endpoint.rsplit(":", 1)[1])
    cancel = threading.Event()

    def cancel_at_health(event: ProgressEvent) -> None:
        if event.step == "health":
            cancel.set()

    with held_spare_runtime(host.deploy_root), pytest.raises(Cancelled):
        target.deploy(deploy_bundles["v2"], options(host, port), progress=cancel_at_health, cancel=cancel)
    assert releases_of(host) == [v1.status.release_id]
    wait_until(lambda: len(runtime_pids(host.deploy_root)) == 2, timeout=30)
    assert_v1_serves(target, v1)

    def cut_at_health(event: ProgressEvent) -> None:
        if event.step == "health":
            host.kill_sessions()

    with pytest.raises(HostUnreachable):
        target.deploy(deploy_bundles["v2"], options(host, port), progress=cut_at_health)
    # The agent lost its lifeline and cancelled: only v1's supervisor and runtime remain.
    wait_until(lambda: len(runtime_pids(host.deploy_root)) == 2, timeout=30)
    wait_until(lambda: releases_of(host) == [v1.status.release_id], timeout=30)
    assert_v1_serves(target, v1)
    result = target.deploy(deploy_bundles["v2"], options(host, port))
    assert result.outcome == "deployed", result.message
    assert served_version(result.status.endpoint) == "2"


def test_agent_killed_mid_switch_leaves_the_old_release_serving(serving, deploy_bundles) -> None:
    target, host, v1 = serving
    killed: list[int] = []

    servers = {int(p.read_text()) for p in (host.deploy_root / "runtime").glob("*/agent.pid")}

    def kill_agent_at_health(event: ProgressEvent) -> None:
        if event.step == "health" and not killed:
            for pid, cmd in processes():
                # An exec'd agent, or the resident agent's child running this push (never the resident itself).
                execd = b"modeldeck.core.targets.agent\x00push" in cmd
                forked = b"modeldeck.core.targets.agent\x00serve" in cmd and pid not in servers
                if (execd or forked) and str(host.deploy_root).encode() in cmd:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)

    port = int(v1.status.endpoint.rsplit(":", 1)[1])
    with held_spare_runtime(host.deploy_root), pytest.raises(TargetError, match="without an answer"):
        target.deploy(deploy_bundles["v2"], options(host, port), progress=kill_agent_at_health)
    assert killed
    # The candidate's supervisor saw its probation pipe close uncommitted and stopped itself.
    wait_until(lambda: len(runtime_pids(host.deploy_root)) == 2, timeout=30)
    assert_v1_serves(target, v1)
    result = target.deploy(deploy_bundles["v2"], options(host, port))
    assert result.outcome == "deployed", result.message


# -- trust and access: refused before anything runs on the host ------------------------------------------------
def untouched(host: SshHost) -> bool:
    return sorted(p.name for p in host.deploy_root.iterdir()) == ["runtime"]


def test_unknown_host_key_is_refused_and_nothing_runs(ssh_deploy_host: SshHost, tmp_path: Path, deploy_bundles) -> None:
    target = target_for(ssh_deploy_host, tmp_path, known_hosts=KnownHosts(tmp_path / "pins", [tmp_path / "none"]))
    with pytest.raises(UnknownHostKey) as info:
        target.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    assert info.value.fingerprint == ssh_deploy_host.fingerprint
    assert untouched(ssh_deploy_host)
    # Accepting exactly that fingerprint pins it, and the deploy goes through.
    accepted = target_for(
        ssh_deploy_host,
        tmp_path,
        known_hosts=KnownHosts(tmp_path / "pins", [tmp_path / "none"]),
        accept_fingerprint=ssh_deploy_host.fingerprint,
    )
    result = accepted.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    assert result.ok, result.message
    accepted.undeploy("iris")


def test_changed_host_key_is_refused_and_nothing_runs(ssh_deploy_host: SshHost, tmp_path: Path, deploy_bundles) -> None:
    target = target_for(ssh_deploy_host, tmp_path)  # trusts the current key
    ssh_deploy_host.new_host_key()
    with pytest.raises(HostKeyChanged):
        target.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    assert untouched(ssh_deploy_host)


def test_wrong_key_is_an_auth_error(ssh_deploy_host: SshHost, tmp_path: Path, deploy_bundles) -> None:
    target = target_for(ssh_deploy_host, tmp_path)
    target.endpoint = replace(ssh_endpoint(ssh_deploy_host, keygen(tmp_path / "stranger")))
    with pytest.raises(SshAuthError, match="authentication failed"):
        target.deploy(deploy_bundles["v1"], options(ssh_deploy_host))
    assert untouched(ssh_deploy_host)


def test_host_with_old_python_and_wrong_architecture_is_refused_before_transfer(
    sshd_factory, tmp_path: Path, deploy_bundles
) -> None:
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for tool in ("sh", "df", "awk", "dirname", "basename", "grep", "mkdir", "rm", "cat", "printf", "ldd"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        if real.startswith("/"):
            (bin_dir / tool).symlink_to(real)
    (bin_dir / "uname").write_text("#!/bin/sh\necho armv7l\n")
    (bin_dir / "python3").write_text(  # answers the facts probe as an old Python 3.8 would
        "#!/bin/sh\ncat >/dev/null\nprintf 'python=%s\\npython_version=3.8.10\\nvenv=yes\\npython_ok=no\\n' \"$0\"\n"
    )
    for stub in ("uname", "python3"):
        (bin_dir / stub).chmod(0o755)
    # HOME elsewhere too, so the login shell's rc files (here: pyenv's shims first on the PATH) stay out of it.
    host = sshd_factory(extra_config=[f"SetEnv PATH={bin_dir} HOME={tmp_path}"])
    target = target_for(host, tmp_path)
    with pytest.raises(TargetError, match="cannot run the ModelDeck runtime") as info:
        target.deploy(deploy_bundles["v1"], options(host))
    assert "armv7l" in info.value.message and "3.10 or newer" in info.value.message
    assert list(host.deploy_root.iterdir()) == []  # nothing was transferred or created
