"""What a push checks now that the host's agent hashes each object once, at upload, and links the release.

The agent no longer re-hashes the staged bundle or a copy of it: each object was checked against its name when it
was uploaded, the staged manifest must list exactly the files sent with it, and the runtime verifies the release
before it serves. These tests hold the guarantees that replaced the re-hashing.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from modeldeck.core.errors import DeployError
from modeldeck.core.runtime.manifest import MANIFEST_NAME, read_manifest, write_manifest
from modeldeck.core.targets import agent
from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.ssh.target import SshTarget, _sha256_file

from tests.fixtures.sshd import SshHost


def _objects_for(deploy_root: Path, bundle: Path) -> dict[str, str]:
    """Put a bundle's files into the host's object store as a push would; return the request's ``files`` map."""
    store = deploy_root / agent.OBJECTS
    store.mkdir(parents=True, exist_ok=True)
    files = {}
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        sha = _sha256_file(path)
        shutil.copyfile(path, store / sha)
        files[path.relative_to(bundle).as_posix()] = sha
    return files


def test_a_staged_manifest_that_lists_other_files_than_were_sent_is_refused(tmp_path: Path, deploy_bundles) -> None:
    root = tmp_path / "root"
    files = _objects_for(root, deploy_bundles["v1"])
    stage = agent.stage_bundle(root, files)
    agent.check_staged(stage, files)  # the bundle as sent

    other = dict(files)
    other["model.onnx"] = files[MANIFEST_NAME]  # a file the manifest does not name under that sha256
    stage = agent.stage_bundle(root, other)
    with pytest.raises(DeployError, match="does not list exactly the files"):
        agent.check_staged(stage, other)

    fewer = {k: v for k, v in files.items() if k != "model.onnx"}
    stage = agent.stage_bundle(root, fewer)
    with pytest.raises(DeployError, match="does not list exactly the files"):
        agent.check_staged(stage, fewer)


@pytest.mark.server
@pytest.mark.slow
def test_a_stored_object_damaged_after_its_upload_is_caught_before_the_release_serves(
    ssh_target: SshTarget, ssh_deploy_host: SshHost, deploy_bundles, tmp_path: Path
) -> None:
    host = ssh_deploy_host
    port = free_port(host.ip)
    v1 = ssh_target.deploy(deploy_bundles["v1"], DeployOptions(host=host.ip, port=port))
    assert v1.outcome == "deployed", v1.message
    release = host.deploy_root / "deployments" / "iris" / "releases" / v1.status.release_id / "bundle"
    model = release / "model.onnx"
    sha = _sha256_file(model)
    assert os.path.samefile(model, host.deploy_root / "objects" / sha)  # linked, not copied
    assert model.stat().st_mode & 0o777 == 0o444  # so nobody edits a serving release through the store

    # The same model under a new version: only the manifest is sent, the model comes from the store -- which was
    # damaged since (replaced, not written in place: the serving release keeps its own inode).
    relabel = tmp_path / "relabel"
    shutil.copytree(deploy_bundles["v1"], relabel)
    write_manifest(relabel, replace(read_manifest(relabel), model_version="relabel"))
    damaged = host.deploy_root / "objects" / f"{sha}.damaged"
    damaged.write_bytes(b"not the model the store says")
    damaged.replace(host.deploy_root / "objects" / sha)

    result = ssh_target.deploy(relabel, DeployOptions(host=host.ip, port=port))
    assert result.outcome == "failed (rolled back)"
    assert "model.onnx" in result.message
    (status,) = ssh_target.status()
    assert (status.state, status.release_id) == ("running", v1.status.release_id)
    assert request_json("GET", status.endpoint + "/version", timeout=5).body["model_version"] == "1"
    state = json.loads((host.deploy_root / "deployments" / "iris" / "state.json").read_text())
    assert state["active_release"] == v1.status.release_id


def test_a_bundle_changed_after_a_deploy_is_verified_again_before_the_next(tmp_path: Path, deploy_bundles) -> None:
    from modeldeck.core.errors import HostUnreachable, TamperedBundle
    from modeldeck.core.inventory.known_hosts import KnownHosts
    from modeldeck.core.targets.ssh.connection import SshEndpoint

    bundle = tmp_path / "bundle"
    shutil.copytree(deploy_bundles["v1"], bundle)
    nobody = SshEndpoint("127.0.0.1", free_port("127.0.0.1"), "nobody", allow_agent=False)
    target = SshTarget(
        nobody, str(tmp_path / "root"), known_hosts=KnownHosts(tmp_path / "pins", []), cache_dir=tmp_path
    )
    for _ in range(2):  # verified (the second time from the process's memo), then the host cannot be reached
        with pytest.raises(HostUnreachable):
            target.deploy(bundle, DeployOptions())
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))  # same size, same inode, written in place
    with pytest.raises(TamperedBundle, match=r"model\.onnx"):
        target.deploy(bundle, DeployOptions())
