"""The deploy UI clicked through offscreen: Deploy locally from a registry version, the Deployments
table, Try it, Stop, Logs, and the Bundle… dialog -- with real bundles and runtime processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from modeldeck.core.settings import load_settings
from modeldeck.core.targets.base import DeploymentStatus
from modeldeck.core.targets.local import LocalTarget, free_port
from modeldeck.gui.deploy.controller import DeployUI, install_deploy_ui
from modeldeck.gui.deploy.models import DeploymentTableModel
from modeldeck.gui.main_window import MainWindow
from modeldeck.gui.registry.models import RawRole
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.fixtures.deploy import runtime_pids
from tests.gui.conftest import settle

pytestmark = [pytest.mark.gui, pytest.mark.server, pytest.mark.slow]

SHOTS = Path("/tmp/shots")
DEPLOY_TIMEOUT_MS = 180_000


def shot(widget, name: str) -> None:
    """Save a PNG of ``widget`` once pending layout requests ran (as they would before the next paint)."""
    QApplication.processEvents()
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(SHOTS / f"deploy-{name}.png"))


@pytest.fixture
def no_deployment_left() -> Iterator[Path]:
    """Undeploys everything the test deployed and fails if a runtime process is left."""
    root = load_settings().deployments_dir
    yield root
    target = LocalTarget(root)
    for status in target.status():
        target.undeploy(status.name)
    assert runtime_pids(root) == []


@pytest.fixture
def deploy_window(
    open_window: Callable[..., MainWindow], demo_tracking_uri: str, qtbot: QtBot, no_deployment_left: Path
) -> Iterator[tuple[MainWindow, DeployUI]]:
    window = open_window(demo_tracking_uri)
    ui = getattr(window, "deploy_ui", None) or install_deploy_ui(window)
    ui.page.timer.setInterval(400)
    assert window.pages.indexOf(ui.page) >= 0
    yield window, ui
    ui.page.timer.stop()
    settle(qtbot)


def select_version(qtbot: QtBot, window: MainWindow, model: str, version: str) -> None:
    page = window.registry_page
    if page.current_model() is None or page.current_model().name != model:
        with qtbot.waitSignal(page.versionsLoaded, timeout=30_000):
            assert page.select_model(model)
    assert page.select_version(version)
    settle(qtbot)


def row_status(ui: DeployUI, name: str) -> DeploymentStatus | None:
    row = ui.page.table_model.row_of(name)
    return ui.page.table_model.status_at(row)


def test_deploy_locally_try_it_and_stop(
    qtbot: QtBot, deploy_window: tuple[MainWindow, DeployUI], qtmodeltester
) -> None:
    window, ui = deploy_window
    assert not ui.deploy_action.isEnabled() or window.registry_page.current_version() is not None
    select_version(qtbot, window, "iris-classifier", "1")
    assert ui.deploy_action.isEnabled() and ui.bundle_action.isEnabled()

    ui.deploy_action.trigger()
    dialog = ui.deploy_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.name_edit.text() == "iris-classifier"
    port = free_port()
    dialog.port_spin.setValue(port)
    shot(dialog, "dialog-deploy")
    with qtbot.waitSignal(dialog.deployed, timeout=DEPLOY_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        assert not dialog.run_button.isEnabled() and dialog.cancel_button.isEnabled()
    result = blocker.args[0]
    assert result.ok, result.message
    assert dialog.outcome.text() == f"iris-classifier: deployed at http://127.0.0.1:{port}"
    assert "parity" in dialog.report.toPlainText()
    shot(dialog, "dialog-deploy-done")
    dialog.close()

    window.pages.setCurrentWidget(ui.page)
    qtbot.waitUntil(
        lambda: (s := row_status(ui, "iris-classifier")) is not None and s.state == "running", timeout=20_000
    )
    qtmodeltester.check(ui.page.table_model)
    model = ui.page.table_model
    row = model.row_of("iris-classifier")
    cells = [model.index(row, c).data() for c in range(model.columnCount())]
    assert cells[:5] == ["iris-classifier", "iris-classifier", "1", "running", f"http://127.0.0.1:{port}"]
    assert model.index(row, DeploymentTableModel.STATE).data(Qt.ItemDataRole.ForegroundRole) is not None
    assert ui.page.current_status().name == "iris-classifier"

    try_it = ui.page.try_it
    qtbot.waitUntil(lambda: "dataframe_split" in try_it.request_edit.toPlainText(), timeout=10_000)
    with qtbot.waitSignal(try_it.answered, timeout=15_000) as answered:
        qtbot.mouseClick(try_it.send_button, Qt.MouseButton.LeftButton)
    assert answered.args[0].status == 200
    response = json.loads(try_it.response_view.toPlainText())
    assert len(response["predictions"]) >= 1
    assert try_it.response_status.text().startswith("HTTP 200  ·  ")
    assert try_it.response_status.text().endswith(" ms")
    shot(window, "page-deployments")
    shot(ui.page, "page-deployments-only")

    # invalid JSON: an inline error, nothing sent
    try_it.request_edit.setPlainText('{"dataframe_split": ')
    before = try_it.response_view.toPlainText()
    assert try_it.send() is None
    assert try_it.request_error.isVisible()
    assert try_it.request_error.text().startswith("Invalid JSON at line 1")
    assert try_it.response_view.toPlainText() == before
    shot(ui.page, "tryit-invalid-json")

    viewer = ui.page.show_logs()
    assert viewer is not None
    qtbot.waitUntil(lambda: "supervisor" in viewer.text.toPlainText(), timeout=10_000)
    shot(viewer, "dialog-logs")
    viewer.close()

    with qtbot.waitSignal(ui.page.operationFinished, timeout=60_000):
        qtbot.mouseClick(ui.page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: row_status(ui, "iris-classifier").state == "stopped", timeout=20_000)
    assert ui.page.start_button.isEnabled() and not ui.page.stop_button.isEnabled()
    assert not try_it.send_button.isEnabled()  # nothing to send to while stopped
    assert runtime_pids(load_settings().deployments_dir) == []

    with qtbot.waitSignal(ui.page.operationFinished, timeout=60_000) as started:
        qtbot.mouseClick(ui.page.start_button, Qt.MouseButton.LeftButton)
    assert started.args[1].ok
    qtbot.waitUntil(lambda: row_status(ui, "iris-classifier").state == "running", timeout=20_000)
    assert try_it.send_button.isEnabled()


def test_undeploy_asks_inline_then_removes_the_row(
    qtbot: QtBot, deploy_window: tuple[MainWindow, DeployUI], deploy_bundles
) -> None:
    window, ui = deploy_window
    ui.target.deploy(deploy_bundles["v1"], options=_options(name="flowers"))
    window.pages.setCurrentWidget(ui.page)
    qtbot.waitUntil(lambda: row_status(ui, "flowers") is not None, timeout=10_000)
    ui.page.select("flowers")
    qtbot.mouseClick(ui.page.undeploy_button, Qt.MouseButton.LeftButton)
    assert ui.page.banner.isVisible() and "Undeploy flowers?" in ui.page.banner.text()
    shot(ui.page, "undeploy-confirm")
    with qtbot.waitSignal(ui.page.operationFinished, timeout=60_000):
        qtbot.mouseClick(ui.page.banner.action_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ui.page.table_model.rowCount() == 0, timeout=10_000)
    assert ui.page.empty_label.isVisible()


def test_bundle_dialog_builds_and_shows_the_parity_report(
    qtbot: QtBot, deploy_window: tuple[MainWindow, DeployUI], tmp_path: Path
) -> None:
    window, ui = deploy_window
    select_version(qtbot, window, "iris-classifier", "2")
    dialog = ui.open_bundle_dialog()
    assert dialog is not None
    dialog.out_edit.setText(str(tmp_path / "bundle"))
    dialog.quantize_combo.setCurrentIndex(1)
    assert dialog.delta_spin.isEnabled()
    dialog.quantize_combo.setCurrentIndex(0)
    assert not dialog.delta_spin.isEnabled()
    shot(dialog, "dialog-bundle")
    with qtbot.waitSignal(dialog.built, timeout=DEPLOY_TIMEOUT_MS):
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    assert dialog.outcome.text().startswith("Bundle built; parity passed")
    assert "sha256" in dialog.report.toPlainText()
    shot(dialog, "dialog-bundle-done")
    dialog.close()


def test_failed_bundle_shows_the_error_inside_the_dialog(
    qtbot: QtBot, deploy_window: tuple[MainWindow, DeployUI], tmp_path: Path
) -> None:
    window, ui = deploy_window
    select_version(qtbot, window, "iris-classifier", "1")
    dialog = ui.open_bundle_dialog()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something.txt").write_text("x")
    dialog.out_edit.setText(str(occupied))
    dialog.overwrite_check.setChecked(False)
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.banner.isVisible(), timeout=60_000)
    assert "not empty" in dialog.banner.text()
    # the dialog's own words (the replace box), not the CLI's --force / -o DIR
    assert "Replace the folder if it is not empty" in dialog.banner.text() and "--force" not in dialog.banner.text()
    assert dialog.run_button.isEnabled()
    shot(dialog, "dialog-bundle-error")
    dialog.close()


def _options(**kw):
    from modeldeck.core.targets.base import DeployOptions

    return DeployOptions(port=free_port(), **kw)


def test_rollback_button_switches_back_to_the_previous_release(
    qtbot: QtBot, deploy_window: tuple[MainWindow, DeployUI], deploy_bundles
) -> None:
    window, ui = deploy_window
    options = _options(name="flowers")
    ui.target.deploy(deploy_bundles["v1"], options)
    ui.target.deploy(deploy_bundles["v2"], options)
    window.pages.setCurrentWidget(ui.page)
    qtbot.waitUntil(lambda: (s := row_status(ui, "flowers")) is not None and s.model_version == "2", timeout=10_000)
    ui.page.select("flowers")
    assert ui.page.rollback_button.isEnabled()
    with qtbot.waitSignal(ui.page.operationFinished, timeout=60_000) as done:
        qtbot.mouseClick(ui.page.rollback_button, Qt.MouseButton.LeftButton)
        assert not ui.page.rollback_button.isEnabled()  # no second click while it runs
    assert done.args[1].outcome == "rolled-back"
    qtbot.waitUntil(lambda: row_status(ui, "flowers").model_version == "1", timeout=10_000)
    assert row_status(ui, "flowers").state == "running"


def test_busy_port_is_refused_inside_the_deploy_dialog_before_bundling(
    qtbot: QtBot, deploy_window: tuple[MainWindow, DeployUI]
) -> None:
    import socket

    window, ui = deploy_window
    select_version(qtbot, window, "iris-classifier", "1")
    dialog = ui.open_deploy_dialog()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        dialog.port_spin.setValue(busy.getsockname()[1])
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.banner.isVisible(), timeout=30_000)
    assert "is in use by another program" in dialog.banner.text()
    assert dialog.run_button.isEnabled() and dialog.name_edit.isEnabled()
    assert not (load_settings().bundles_dir / "iris-classifier-1").exists()
    assert ui.target.status() == []
    shot(dialog, "dialog-deploy-port-busy")
    dialog.close()


def test_cancelling_a_deploy_changes_nothing(qtbot: QtBot, deploy_window: tuple[MainWindow, DeployUI]) -> None:
    window, ui = deploy_window
    select_version(qtbot, window, "iris-classifier", "1")
    dialog = ui.open_deploy_dialog()
    dialog.port_spin.setValue(free_port())
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert dialog.outcome.text() == "Cancelled. Nothing was changed."
    qtbot.waitUntil(lambda: dialog.handle.done, timeout=60_000)
    assert ui.target.status() == []
    assert runtime_pids(load_settings().deployments_dir) == []
    assert dialog.run_button.isEnabled()
    dialog.close()


def test_deploy_dialog_note_spans_the_field_column(qtbot: QtBot, tmp_path: Path) -> None:
    from modeldeck.core.registry.types import ModelVersion
    from modeldeck.gui.deploy.dialogs import DeployDialog

    version = ModelVersion("iris-classifier", "1", 0, 0, "READY", "models:/iris-classifier/1", None)
    dialog = DeployDialog(load_settings(), version, LocalTarget(tmp_path / "deployments"))
    qtbot.addWidget(dialog)
    dialog.show()
    QApplication.processEvents()
    note = dialog.form.itemAt(dialog.form.rowCount() - 1, dialog.form.ItemRole.FieldRole).widget()
    assert "bundled first" in note.text()
    assert note.width() >= dialog.name_edit.width() - 2, "the note wraps at the fields' width, not in a narrow column"
    dialog.close()


def test_since_is_as_short_as_the_date_allows() -> None:
    from datetime import datetime, timedelta

    from modeldeck.gui.deploy.models import format_since

    now = datetime.now().astimezone().replace(month=6, day=15, hour=12, minute=0, second=0, microsecond=0)
    iso = lambda d: d.astimezone(datetime.now().astimezone().tzinfo).isoformat()  # noqa: E731
    assert format_since(iso(now.replace(hour=9, minute=5)), now=now) == "09:05"
    assert format_since(iso(now - timedelta(days=3)), now=now) == "06-12 12:00"
    assert format_since(iso(now.replace(year=now.year - 1)), now=now) == f"{now.year - 1}-06-15"
    assert format_since(iso(now), seconds=True, now=now).endswith(" 12:00:00")
    assert format_since(None) == "" and format_since("yesterday") == "yesterday"


def test_memory_with_a_limit_names_the_unit_once_when_both_share_it() -> None:
    from modeldeck.gui.deploy.models import format_memory

    assert format_memory({"memory_bytes": 44.4 * 2**20, "memory_limit_bytes": 512 * 2**20}) == "44.4 / 512.0 MiB"
    assert format_memory({"memory_bytes": 900 * 2**20, "memory_limit_bytes": 2 * 2**30}) == "900.0 MiB / 2.0 GiB"
    assert format_memory({"memory_bytes": 74.5 * 2**20}) == "74.5 MiB"


def test_table_model_merges_listings_in_place(qtmodeltester) -> None:
    def st(name: str, state: str, version: str = "1") -> DeploymentStatus:
        return DeploymentStatus(name, "local://127.0.0.1:1", state, "http://127.0.0.1:1", "m", version)

    model = DeploymentTableModel()
    model.set_statuses([st("a", "running"), st("b", "running")])
    qtmodeltester.check(model)
    changed: list[int] = []
    model.dataChanged.connect(lambda top, _bottom: changed.append(top.row()))
    model.set_statuses([st("b", "stopped"), st("c", "starting", "10")])
    assert [model.index(r, 0).data() for r in range(model.rowCount())] == ["b", "c"]
    assert changed == [0]  # b updated in place, not re-inserted
    assert model.index(0, DeploymentTableModel.STATE).data() == "stopped"
    assert model.index(1, DeploymentTableModel.VERSION).data(RawRole) == 10
    qtmodeltester.check(model)
