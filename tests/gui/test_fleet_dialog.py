"""The "Deploy to hosts…" dialog against real sshd hosts on 127.0.0.N (offscreen Qt).

Hosts come from a real inventory file; targets are resolved through it (connection settings,
identity file) and trust exactly the test hosts' keys. What the user sees is asserted: per-host
progress rows and outcomes, the log, cancel, and "Roll back" returning hosts to the previous release.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from modeldeck.core.inventory.hosts import Host, Inventory
from modeldeck.core.registry.types import ModelVersion
from modeldeck.core.settings import config_dir, load_settings
from modeldeck.core.targets.base import DeployOptions, ProgressEvent, Target
from modeldeck.core.targets.fleet import HostPlan, HostResult, StepTimeouts, deploy_many, status_many
from modeldeck.core.targets.health import request_json
from modeldeck.core.targets.ssh_hosts import targets_for_hosts
from modeldeck.gui.fleet.dialog import HostsDeployDialog
from modeldeck.gui.fleet.models import HostChoiceModel, HostProgressModel, ProgressRole
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from tests.fixtures.deploy import runtime_pids
from tests.fixtures.fleet import undeploy_all
from tests.fixtures.ssh_target import seed_runtime, trusting, wheelhouse_dir
from tests.fixtures.sshd import SshHost

pytestmark = [pytest.mark.server, pytest.mark.slow]

RUN_TIMEOUT_MS = 240_000


def version(v: str = "2") -> ModelVersion:
    return ModelVersion(name="iris", version=v, creation_time=0, last_updated=0, status="READY", source="", run_id=None)


def served_version(endpoint: str) -> str:
    return str(request_json("GET", endpoint + "/version", timeout=5).body["model_version"])


class Fleet:
    def __init__(self, hosts: dict[str, SshHost], inventory: Inventory, known: Any, tmp: Path) -> None:
        self.hosts, self.inventory, self.known, self.tmp = hosts, inventory, known, tmp

    def factory(self, hosts: Sequence[Host], steps: StepTimeouts) -> dict[str, Target]:
        """SSH targets resolved through the inventory, each listening on its own host's address."""
        out: dict[str, Target] = {}
        for h in hosts:
            ip = self.hosts[h.name].ip
            out.update(
                targets_for_hosts(
                    self.inventory,
                    [h],
                    step_timeouts=steps,
                    known_hosts=self.known,
                    password_lookup=lambda _name: None,
                    runtime_source="wheelhouse",
                    wheelhouse_dir=wheelhouse_dir(),
                    bind_host=ip,
                    cache_dir=self.tmp / "ssh-cache",
                )
            )
        return out


@pytest.fixture
def fleet(sshd_factory, ssh_runtime_seed, tmp_path) -> Iterator[Fleet]:
    hosts = {}
    inventory = Inventory.for_config_dir(config_dir())
    for i in range(1, 4):
        host = sshd_factory()
        seed_runtime(host, ssh_runtime_seed)
        name = f"web{i}"
        hosts[name] = host
        inventory.add(
            Host(
                name,
                host.ip,
                port=host.port,
                user=host.user,
                identity_files=(str(host.client_key),),
                deploy_root=str(host.deploy_root),
                groups=("web",) if i < 3 else ("web", "canary"),
                labels={"zone": "a" if i < 3 else "b"},
            )
        )
    made = Fleet(hosts, inventory, trusting(tmp_path / "trust", *hosts.values()), tmp_path)
    yield made
    for host in hosts.values():
        if host.proc is None:
            host.start()
    undeploy_all(made.factory(inventory.hosts, StepTimeouts(connect_s=3)))
    for name in hosts:
        left = runtime_pids(hosts[name].deploy_root)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"runtime processes left behind on {name}"


def open_dialog(qtbot: QtBot, fleet: Fleet, bundle: Path) -> HostsDeployDialog:
    dialog = HostsDeployDialog(load_settings(), version(), factory=fleet.factory, bundle_dir=bundle)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.inventoryLoaded, timeout=10_000):
        dialog.show()
    return dialog


def test_host_choice_and_progress_models_pass_the_model_tester(qtmodeltester) -> None:
    hosts = [Host("a", "10.0.0.1", groups=("web",)), Host("b", "10.0.0.2", labels={"zone": "x"})]
    choice = HostChoiceModel()
    choice.set_hosts(hosts, checked=["a"])
    qtmodeltester.check(choice)
    assert [h.name for h in choice.checked_hosts()] == ["a"]
    choice.setData(choice.index(1, 0), Qt.CheckState.Checked.value, Qt.ItemDataRole.CheckStateRole)
    assert [h.name for h in choice.checked_hosts()] == ["a", "b"]

    progress = HostProgressModel()
    progress.start(["a", "b"])
    progress.apply_events([ProgressEvent("transfer", "sending", 0.4, host="a"), ProgressEvent("x", "?", None, "zz")])
    qtmodeltester.check(progress)
    assert progress.index(0, 1).data(ProgressRole) == 400
    assert progress.index(1, 1).data(ProgressRole) == 0
    progress.apply_results([HostResult("b", "ssh://b", "failed", "no route", 1.5)])
    assert progress.index(1, 3).data() == "failed"
    assert progress.index(1, 5).data() == "1.5 s"
    qtmodeltester.check(progress)


def test_a_preview_leaves_each_host_row_saying_whether_it_can_deploy_not_queued(qtmodeltester) -> None:
    from modeldeck.core.targets.base import Plan, PlannedStep

    progress = HostProgressModel()
    progress.start(["a", "b"])
    plan = Plan(target_url="ssh://a", name="iris", steps=(PlannedStep("upload", "upload 3 file(s)"),))
    progress.apply_plans([HostPlan("a", "ssh://a", plan=plan), HostPlan("b", "ssh://b", error="cannot connect")])
    qtmodeltester.check(progress)
    assert [progress.index(r, 3).data() for r in (0, 1)] == ["can deploy", "cannot deploy"]
    assert progress.index(0, 6).data() == "upload 3 file(s)" and progress.index(1, 6).data() == "cannot connect"
    assert "queued" not in [progress.index(r, 2).data() for r in (0, 1)]
    assert progress.index(0, 1).data(ProgressRole) is None, "no (busy) bar for a run that did not happen"


def test_deploy_to_a_group_shows_each_hosts_progress_and_rolls_back(qtbot: QtBot, fleet: Fleet, deploy_bundles) -> None:
    # v1 is already serving everywhere; the dialog deploys v2 to the "web" group, then rolls back.
    targets = fleet.factory(fleet.inventory.hosts, StepTimeouts())
    assert deploy_many(targets, deploy_bundles["v1"], DeployOptions(), forks=3).ok

    dialog = open_dialog(qtbot, fleet, deploy_bundles["v2"])
    assert dialog.host_model.rowCount() == 3
    assert not dialog.deploy_button.isEnabled()  # nothing checked yet
    dialog.group_combo.setCurrentIndex(dialog.group_combo.findData("canary"))
    dialog.group_combo.activated.emit(dialog.group_combo.currentIndex())
    assert [h.name for h in dialog.chosen()] == ["web3"]
    dialog.select_hosts("web")
    assert [h.name for h in dialog.chosen()] == ["web1", "web2", "web3"]
    assert "3 host(s)" in dialog.plan_label.text()

    with qtbot.waitSignal(dialog.finishedRun, timeout=RUN_TIMEOUT_MS) as run:
        qtbot.mouseClick(dialog.deploy_button, Qt.MouseButton.LeftButton)
        assert not dialog.deploy_button.isEnabled() and dialog.cancel_button.isEnabled()
    result = run.args[0]
    assert result.ok, [(h.host, h.outcome, h.message) for h in result.hosts]
    model = dialog.progress_model
    assert [model.index(r, 3).data() for r in range(3)] == ["deployed"] * 3
    assert [model.index(r, 1).data(ProgressRole) for r in range(3)] == [1000] * 3
    log_text = dialog.log_view.toPlainText()
    assert "[web1] transfer" in log_text or "[web1] health" in log_text
    assert "Deployed: 3 of 3 host(s) ok" in dialog.outcome.text()
    assert dialog.rollback_button.isEnabled()
    dialog.grab().save("/tmp/fleet.png")
    for s in status_many(targets):
        assert served_version(s.statuses[0].endpoint) == "2"

    with qtbot.waitSignal(dialog.finishedRun, timeout=RUN_TIMEOUT_MS) as run:
        qtbot.mouseClick(dialog.rollback_button, Qt.MouseButton.LeftButton)
    back = run.args[0]
    assert back.action == "rollback" and back.ok
    assert [model.index(r, 3).data() for r in range(3)] == ["rolled-back"] * 3
    for s in status_many(targets):
        assert served_version(s.statuses[0].endpoint) == "1"
    dialog.grab().save("/tmp/fleet-rolled-back.png")


def test_cancel_stops_the_run_and_reports_what_happened(qtbot: QtBot, fleet: Fleet, deploy_bundles) -> None:
    targets = fleet.factory(fleet.inventory.hosts, StepTimeouts())
    assert deploy_many(targets, deploy_bundles["v1"], DeployOptions(), forks=3).ok
    dialog = open_dialog(qtbot, fleet, deploy_bundles["v2"])
    dialog.select_hosts("all")
    dialog.forks_spin.setValue(1)
    with qtbot.waitSignal(dialog.finishedRun, timeout=RUN_TIMEOUT_MS) as run:
        qtbot.mouseClick(dialog.deploy_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: any(r.step not in ("queued",) for r in dialog.progress_model.rows()), timeout=60_000)
        dialog.grab().save("/tmp/fleet-running.png")
        qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    result = run.args[0]
    assert result.cancelled
    outcomes = {h.host: h.outcome for h in result.hosts}
    assert "not started" in outcomes.values()
    assert "cancelled" in dialog.outcome.text()
    dialog.grab().save("/tmp/fleet-cancelled.png")
    for s in status_many(targets):
        expected = "2" if outcomes[s.host] == "deployed" else "1"
        assert served_version(s.statuses[0].endpoint) == expected


def test_an_unreachable_host_is_a_failed_row_and_the_others_deploy(qtbot: QtBot, fleet: Fleet, deploy_bundles) -> None:
    fleet.hosts["web2"].stop()
    try:
        dialog = open_dialog(qtbot, fleet, deploy_bundles["v1"])
        dialog.select_hosts("zone=a")
        assert [h.name for h in dialog.chosen()] == ["web1", "web2"]
        dialog.connect_spin.setValue(3)
        with qtbot.waitSignal(dialog.previewed, timeout=RUN_TIMEOUT_MS) as preview:
            qtbot.mouseClick(dialog.preview_button, Qt.MouseButton.LeftButton)
        plans = {hp.host: hp for hp in preview.args[0]}
        assert plans["web1"].plan is not None and plans["web2"].plan is None
        assert "web2: cannot deploy:" in dialog.log_view.toPlainText()
        rows = {dialog.progress_model.index(r, 0).data(): r for r in range(dialog.progress_model.rowCount())}
        assert dialog.progress_model.index(rows["web1"], 3).data() == "can deploy"
        assert dialog.progress_model.index(rows["web2"], 3).data() == "cannot deploy"
        assert dialog.banner.isVisible()
        with qtbot.waitSignal(dialog.finishedRun, timeout=RUN_TIMEOUT_MS) as run:
            qtbot.mouseClick(dialog.deploy_button, Qt.MouseButton.LeftButton)
        by_host = run.args[0].by_host()
        assert by_host["web1"].ok
        assert by_host["web2"].outcome == "failed"
        assert dialog.progress_model.index(1, 3).data() == "failed"
        assert "1 of 2 host(s) ok" in dialog.outcome.text()
        assert not dialog.rollback_button.isEnabled()  # web1 had no release before: nothing to roll back to
    finally:
        fleet.hosts["web2"].start()


def test_deploy_to_hosts_action_opens_the_dialog_for_the_selected_version(
    qtbot: QtBot, open_window, demo_tracking_uri: str
) -> None:
    from modeldeck.gui.deploy.controller import install_deploy_ui

    from tests.gui.conftest import settle
    from tests.gui.test_deploy import select_version

    window = open_window(demo_tracking_uri)
    ui = getattr(window, "deploy_ui", None) or install_deploy_ui(window)
    ui.page.timer.stop()
    select_version(qtbot, window, "iris-classifier", "1")
    assert ui.hosts_action.isEnabled()
    assert ui.hosts_action in window.toolbar.actions()
    ui.hosts_action.trigger()
    dialog = ui.hosts_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.inventory is not None, timeout=10_000)
    assert dialog.windowTitle() == "Deploy iris-classifier v1 to hosts"
    assert dialog.host_model.rowCount() == 0
    assert "no hosts yet" in dialog.banner.label.text()  # empty inventory: said inside the dialog
    assert not dialog.deploy_button.isEnabled()
    dialog.close()
    settle(qtbot)
