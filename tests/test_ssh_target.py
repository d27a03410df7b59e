"""The SSH target against real sshd hosts on 127.0.0.N: facts, runtime install, deploy, predictions
from the host's own address, no-change redeploys, switches under load, rollback, stop/start, undeploy.
"""

from __future__ import annotations

import pytest
from modeldeck.core.errors import TargetError
from modeldeck.core.targets.base import DeployOptions, ProgressEvent, Target, open_target
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.runtime_dist import runtime_version
from modeldeck.core.targets.ssh.facts import parse_facts
from modeldeck.core.targets.ssh.target import SshTarget, parse_ssh_url, systemd_unit

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
def test_facts_of_a_real_host_in_one_round_trip(ssh_target: SshTarget, ssh_deploy_host: SshHost) -> None:
    facts = ssh_target.facts()
    assert facts.machine == "x86_64"
    assert facts.python and facts.python_version and facts.has_venv
    assert facts.deploy_root == str(ssh_deploy_host.deploy_root)
    assert facts.deploy_root_writable and facts.free_bytes and facts.free_bytes > 0
    assert facts.runtime_versions == (runtime_version(),)
    assert facts.problems() == []


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
    (listed,) = ssh_target.status()
    assert (listed.state, listed.model_version, listed.endpoint) == ("running", "1", status.endpoint)
    assert "started runtime" in ssh_target.logs("iris")
    assert ssh_target.input_example("iris") is not None
    # The release layout on the host, and the content-addressed store the upload went to.
    ddir = ssh_deploy_host.deploy_root / "deployments" / "iris"
    assert (ddir / "current").is_symlink() and (ddir / "state.json").is_file()
    assert len(list((ssh_deploy_host.deploy_root / "objects").iterdir())) == 3  # model, example, manifest
