"""``modeldeck deploy/status/rollback --hosts``: the real entry point against an inventory of real sshd hosts.

Host keys are pinned in ModelDeck's own known_hosts (the user's file is never touched); the runtime
is already installed on the hosts (seeded), so the CLI's default runtime source never fetches.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from modeldeck.core.inventory.hosts import Host, Inventory
from modeldeck.core.inventory.known_hosts import KnownHosts, host_key_name
from modeldeck.core.settings import config_dir
from modeldeck.core.targets.fleet import StepTimeouts
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.ssh_hosts import targets_for_hosts

from tests.fixtures.deploy import runtime_pids
from tests.fixtures.fleet import undeploy_all
from tests.fixtures.ssh_target import seed_runtime
from tests.fixtures.sshd import SshHost

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def modeldeck(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modeldeck.core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def inventory_hosts(sshd_factory, ssh_runtime_seed) -> Iterator[dict[str, SshHost]]:
    """web1..web3 in group ``web`` (web3 also ``canary``), keys pinned in ModelDeck's known_hosts."""
    inventory = Inventory.for_config_dir(config_dir())
    pins = KnownHosts(config_dir() / "known_hosts", [])
    hosts: dict[str, SshHost] = {}
    for i in range(1, 4):
        host = sshd_factory()
        seed_runtime(host, ssh_runtime_seed)
        pins.pin(host_key_name(host.ip, host.port), host.host_public_key)
        hosts[f"web{i}"] = host
        inventory.add(
            Host(
                f"web{i}",
                host.ip,
                port=host.port,
                user=host.user,
                identity_files=(str(host.client_key),),
                deploy_root=str(host.deploy_root),
                groups=("web", "canary") if i == 3 else ("web",),
            )
        )
    yield hosts
    for host in hosts.values():
        if host.proc is None:
            host.start()
    undeploy_all(targets_for_hosts(inventory, inventory.hosts, step_timeouts=StepTimeouts(connect_s=3)))
    for name, host in hosts.items():
        left = runtime_pids(host.deploy_root)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"runtime processes left behind on {name}"


def test_deploy_to_a_group_prints_per_host_progress_and_a_results_table(inventory_hosts, deploy_bundles) -> None:
    inventory_hosts["web3"].stop()  # unreachable: a failed row, exit 1, the others deployed
    done = modeldeck(
        "deploy",
        str(deploy_bundles["v1"]),
        "--hosts",
        "web",
        "--forks",
        "3",
        "--connect-timeout",
        "3",
        "--publish-address",
        "localhost",
        "--json",
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    by_host = {h["host"]: h for h in report["hosts"]}
    assert [by_host[h]["outcome"] for h in ("web1", "web2")] == ["deployed", "deployed"]
    assert by_host["web3"]["outcome"] == "failed" and by_host["web3"]["error"] == "HostUnreachable"
    assert by_host["web1"]["release"]
    assert "[web1] " in done.stderr and "[web2] " in done.stderr
    assert "[web3] done: failed: " in done.stderr

    status = modeldeck("status", "--hosts", "web1,web2", "--json")
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    for row in rows:
        # the runtime listens on the host's localhost (--publish-address); all hosts here are this machine
        port = row["statuses"][0]["endpoint"].rsplit(":", 1)[1]
        answer = request_json("GET", f"http://127.0.0.1:{port}/version", timeout=5)
        assert answer.body["model_version"] == "1"

    table = modeldeck("status", "--hosts", "web")
    assert table.returncode == 1  # web3 could not be asked
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOST", "NAME", "STATE"]
    assert any(line.startswith("web3") and "unreachable" in line for line in lines)

    # no previous release yet: a per-host error, exit 1, nothing changed
    back = modeldeck("rollback", "iris", "--hosts", "web1,web2")
    assert back.returncode == 1
    assert "no previous release" in back.stdout


def test_dry_run_plans_every_host_and_unknown_selection_is_a_one_line_error(inventory_hosts, deploy_bundles) -> None:
    plan = modeldeck("deploy", str(deploy_bundles["v1"]), "--hosts", "canary", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith("web3: plan for iris on ssh://")
    assert runtime_pids(inventory_hosts["web3"].deploy_root) == []

    bad = modeldeck("deploy", str(deploy_bundles["v1"]), "--hosts", "db")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown host or group 'db'")
