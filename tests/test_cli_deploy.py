"""``modeldeck deploy/status/logs/stop/start/rollback/undeploy`` as a user runs them: subprocesses,
real runtimes on 127.0.0.1, one-line errors and exit codes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from modeldeck.core.settings import load_settings
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import LocalTarget, free_port

from tests.fixtures.deploy import runtime_pids

pytestmark = [pytest.mark.server, pytest.mark.slow]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeck.core.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def deployments() -> Iterator[Path]:
    """The (per-test) deployments dir; teardown undeploys everything and checks no process is left."""
    root = load_settings().deployments_dir
    yield root
    target = LocalTarget(root)
    for status in target.status():
        target.undeploy(status.name)
    assert runtime_pids(root) == []


def test_deploy_status_logs_stop_undeploy_round_trip(deployments: Path, deploy_bundles) -> None:
    port = free_port()
    done = cli("deploy", str(deploy_bundles["v1"]), "--target", f"local://{port}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"iris: deployed at http://127.0.0.1:{port} (iris v1, release ")
    assert "health:" in done.stderr  # step progress on stderr

    status = cli("status")
    assert status.returncode == 0
    header, row = status.stdout.splitlines()
    assert header.split() == ["NAME", "STATE", "MODEL", "VERSION", "URL", "RELEASE", "SINCE"]
    assert row.split()[:5] == ["iris", "running", "iris", "1", f"http://127.0.0.1:{port}"]
    (entry,) = json.loads(cli("status", "iris", "--json").stdout)
    assert entry["state"] == "running" and entry["endpoint"] == f"http://127.0.0.1:{port}"

    logs = cli("logs", "iris", "-n", "3")
    assert logs.returncode == 0 and 0 < len(logs.stdout.splitlines()) <= 3

    assert cli("stop", "iris").stdout.strip() == "iris: stopped"
    assert cli("start", "iris").returncode == 0
    assert request_json("GET", f"http://127.0.0.1:{port}/health", timeout=5).status == 200

    gone = cli("undeploy", "iris")
    assert gone.returncode == 0 and gone.stdout.strip() == "iris: undeployed"
    assert cli("status").stdout.strip() == "no deployments"
    assert runtime_pids(deployments) == []


def test_dry_run_prints_the_plan_and_changes_nothing(deployments: Path, deploy_bundles) -> None:
    done = cli("deploy", str(deploy_bundles["v1"]), "-t", f"local://{free_port()}", "--dry-run", "--name", "trial")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("plan for trial on local://127.0.0.1:")
    assert "health" in done.stdout
    assert not (deployments / "trial").exists()


def test_failed_release_exits_non_zero_and_rollback_works(deployments: Path, deploy_bundles) -> None:
    port = free_port()
    for bundle in ("v1", "v2"):
        assert cli("deploy", str(deploy_bundles[bundle]), "-t", f"local://{port}").returncode == 0

    bad = cli("deploy", str(deploy_bundles["bad"]), "-t", f"local://{port}", "--json")
    assert bad.returncode == 1
    result = json.loads(bad.stdout)
    assert (result["ok"], result["outcome"]) == (False, "failed (rolled back)")
    assert result["status"]["model_version"] == "2"

    back = cli("rollback", "iris")
    assert back.returncode == 0, back.stderr
    assert "iris: rolled-back" in back.stdout
    assert request_json("GET", f"http://127.0.0.1:{port}/version", timeout=5).body["model_version"] == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["logs", "ghost"], "error: no deployment named 'ghost' (hint: see `modeldeck status`)"),
        (["stop", "ghost"], "error: no deployment named 'ghost' (hint: see `modeldeck status`)"),
        (["deploy", "/no/such/bundle", "-t", "local://8080"], "error: '/no/such/bundle' is neither a bundle folder"),
        (["deploy", ".", "-t", "ftp://x"], "error: unsupported target 'ftp://x'"),
        (["deploy", ".", "-t", "local://99999"], "error: port 99999 in target 'local://99999' is out of range"),
    ],
)
def test_mistakes_are_one_line_errors(deployments: Path, args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 1
    assert done.stderr.startswith(message)
    assert len(done.stderr.strip().splitlines()) == 1


def test_killed_deployer_leaves_the_previous_version_serving(deployments: Path, deploy_bundles) -> None:
    port = free_port()
    assert cli("deploy", str(deploy_bundles["v1"]), "-t", f"local://{port}").returncode == 0
    serving = set(runtime_pids(deployments))

    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeck.core.cli", "deploy", str(deploy_bundles["v2"]), "-t", f"local://{port}"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    for line in proc.stderr:  # kill it while the new release is starting beside the old one
        if "health:" in line or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()

    deadline = time.monotonic() + 20  # the orphaned candidate notices and stops itself
    while set(runtime_pids(deployments)) != serving and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(runtime_pids(deployments)) == serving
    assert request_json("GET", f"http://127.0.0.1:{port}/version", timeout=5).body["model_version"] == "1"
    (status,) = LocalTarget(deployments).status()
    assert (status.state, status.model_version) == ("running", "1")
    # and the next deploy goes through normally
    assert cli("deploy", str(deploy_bundles["v2"]), "-t", f"local://{port}").returncode == 0


@pytest.mark.timeout(400)
def test_deploying_a_model_uri_bundles_it_first(deployments: Path, demo_tracking_uri: str) -> None:
    port = free_port()
    done = cli(
        "--tracking-uri",
        demo_tracking_uri,
        "deploy",
        "models:/iris-classifier/1",
        "-t",
        f"local://{port}",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "bundle:" in done.stderr and "parity" in done.stderr
    assert done.stdout.startswith(f"iris-classifier: deployed at http://127.0.0.1:{port} (iris-classifier v1")
    assert (load_settings().bundles_dir / "iris-classifier-1" / "manifest.json").is_file()

    again = cli("--tracking-uri", demo_tracking_uri, "deploy", "models:/iris-classifier/1", "-t", f"local://{port}")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("iris-classifier: already-installed")  # the rebuilt bundle has the same sha256
