"""A runtime started before its release is installed (what the SSH agent does during an upload), against real
runtime processes: it is used by the deploy it was started for, refuses a bundle that does not match its
manifest, and leaves nothing behind when no deploy takes it over.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modeldeck.core.runtime.manifest import read_manifest
from modeldeck.core.targets import releases
from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import LocalTarget, free_port, pid_alive

from tests.fixtures.deploy import runtime_pids
from tests.test_local_target import wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]


def deploy_prestarted(target: LocalTarget, started_for: Path, deployed: Path, opts: DeployOptions):
    """Pre-start a runtime for bundle ``started_for``, deploy ``deployed`` with it, discard it whatever happens."""
    early = target.prestart(read_manifest(started_for).sha256, opts)
    assert early is not None
    try:
        return early, target.deploy(deployed, opts, prestarted=early)
    finally:
        target.discard(early)


def test_a_prestarted_runtime_serves_the_deploy_it_was_started_for(local_target: LocalTarget, deploy_bundles) -> None:
    port = free_port()
    v1 = local_target.deploy(deploy_bundles["v1"], DeployOptions(port=port))
    opts = DeployOptions(name="iris", port=port)
    early, v2 = deploy_prestarted(local_target, deploy_bundles["v2"], deploy_bundles["v2"], opts)

    assert v2.outcome == "deployed", v2.message
    assert (v2.status.release_id, v2.status.pid) == (early.release_id, early.pid)
    assert request_json("GET", v2.status.endpoint + "/version", timeout=5).body["model_version"] == "2"
    assert pid_alive(early.pid)  # discard after a switch took it over changes nothing
    ready = releases.run_dir(local_target.root, "iris") / f"{early.release_id}.ready.json"
    text = ready.read_text()  # names when each start-up phase was reached
    assert '"imported"' in text and '"bundle_arrived"' in text and '"ready"' in text
    assert v2.status.previous_release_id == v1.status.release_id


def test_a_first_deploy_without_a_port_uses_the_prestarted_runtime_and_its_port(
    local_target: LocalTarget, deploy_bundles
) -> None:
    opts = DeployOptions(name="iris")  # no port: a free one is picked
    early, result = deploy_prestarted(local_target, deploy_bundles["v1"], deploy_bundles["v1"], opts)

    assert result.outcome == "deployed", result.message
    assert (result.status.release_id, result.status.pid) == (early.release_id, early.pid)
    assert result.status.endpoint.endswith(f":{early.port}")


def test_a_prestarted_runtime_nobody_takes_over_leaves_nothing_behind(
    local_target: LocalTarget, deploy_bundles
) -> None:
    early = local_target.prestart(
        read_manifest(deploy_bundles["v1"]).sha256, DeployOptions(name="iris", port=free_port())
    )
    assert early is not None
    assert pid_alive(early.pid)

    local_target.discard(early)  # e.g. the upload failed its checksum

    assert not pid_alive(early.pid)
    assert runtime_pids(local_target.root) == []
    assert local_target.status() == []
    assert not (local_target.root / "iris").exists()  # a first deploy that never happened leaves no folder


def test_a_prestarted_runtime_for_another_bundle_is_replaced_not_used(
    local_target: LocalTarget, deploy_bundles
) -> None:
    opts = DeployOptions(name="iris", port=free_port())
    early, result = deploy_prestarted(local_target, deploy_bundles["v2"], deploy_bundles["v1"], opts)

    assert result.outcome == "deployed", result.message
    assert result.status.release_id != early.release_id
    assert not pid_alive(early.pid)
    wait_until(lambda: len(runtime_pids(local_target.root)) == 2, timeout=30.0)  # v1's supervisor and runtime only


def test_a_waiting_runtime_refuses_a_bundle_that_does_not_match_its_manifest(tmp_path: Path, deploy_bundles) -> None:
    release = tmp_path / "release"
    ready = tmp_path / "ready.json"
    serve = [sys.executable, "-m", "modeldeck.core.runtime", "serve", str(release / "bundle"), "--port", "0"]
    proc = subprocess.Popen(
        [*serve, "--ready-file", str(ready), "--wait-for-bundle", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(0.5)  # let it get to its wait (or not: the bundle is checked either way)
        staging = tmp_path / "release.tmp"
        shutil.copytree(deploy_bundles["v1"], staging / "bundle")
        model = next(p for p in (staging / "bundle").iterdir() if p.suffix == ".onnx")
        model.write_bytes(model.read_bytes()[:-1] + b"\0")  # one byte changed
        staging.rename(release)  # appears complete, as a release does
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    assert proc.returncode == 1
    assert b"does not match the manifest" in err
    assert not ready.exists()
