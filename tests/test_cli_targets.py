"""``modeldeck targets``: every known target asked at once, unreachable ones as a line with their reason."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from modeldeck.core.cli import main
from modeldeck.core.settings import load_settings
from modeldeck.core.targets import catalog
from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.local import LocalTarget, free_port


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_targets_lists_local_and_remembered_without_asking_them(capsys: pytest.CaptureFixture[str]) -> None:
    catalog.remember("docker+tcp://10.0.0.5:2376")
    assert main(["targets", "--no-status"]) == 0
    assert capsys.readouterr().out.splitlines() == ["local://  (local)", "docker+tcp://10.0.0.5:2376  (deployed)"]


@pytest.mark.server
@pytest.mark.slow
def test_targets_shows_real_deployments_and_an_unreachable_engine_exits_1(
    capsys: pytest.CaptureFixture[str], deploy_bundles: dict[str, Path]
) -> None:
    target = LocalTarget(load_settings().deployments_dir)
    port = free_port()
    target.deploy(deploy_bundles["v1"], DeployOptions(name="flowers", port=port))
    try:
        gone = f"docker+tcp://127.0.0.1:{closed_port()}"
        catalog.remember(gone)
        assert main(["targets", "--timeout", "10"]) == 1
        out, err = capsys.readouterr()
        lines = out.splitlines()
        assert lines[:2] == ["local://: 1 deployment", f"  flowers  running  iris v1 at http://127.0.0.1:{port}"]
        assert lines[2].startswith(f"{gone}: unreachable: cannot reach the Docker engine at {gone}")
        assert err.strip() == f"error: 1 target(s) unreachable: {gone}"

        assert main(["targets", "--json"]) == 1
        data = json.loads(capsys.readouterr().out)
        assert [(d["url"], d["reachable"]) for d in data] == [("local://", True), (gone, False)]
        assert data[0]["deployments"][0]["name"] == "flowers"

        assert main(["targets", "forget", gone]) == 0
        assert main(["targets", "--timeout", "10"]) == 0
    finally:
        target.undeploy("flowers")


def test_forgetting_an_unknown_target_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets", "forget", "docker://"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: docker:// is not in the target list (hint: see `modeldeck targets --no-status`)"
    )
