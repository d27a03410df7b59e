"""The Deployments page over several targets: real local deployments beside targets that cannot be
asked (an engine port that never answers, an SSH port that refuses), each one row with its reason;
actions on the row's own target; Forget target; superseded refreshes dropped."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from modeldeck.core.targets import catalog
from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.local import LocalTarget, free_port
from modeldeck.gui.deploy import tasks
from modeldeck.gui.deploy.models import DeploymentTableModel, TargetRole
from modeldeck.gui.deploy.page import DeploymentsPage
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.gui.conftest import settle

pytestmark = [pytest.mark.gui]

assert len(DeploymentTableModel.HEADERS) == 9
COLUMNS = ("name", "model", "version", "state", "url", "target", "cpu", "memory", "since")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung engine)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def make_page(qtbot: QtBot, target: LocalTarget, extra: list[str], **kw: object) -> DeploymentsPage:
    page = DeploymentsPage(target, extra_targets=lambda: list(extra), refresh_ms=300, list_timeout_s=2.0, **kw)
    qtbot.addWidget(page)
    page.resize(1400, 520)
    return page


def cells(page: DeploymentsPage, row: int) -> list[str]:
    m = page.table_model
    return [m.index(row, c).data() or "" for c in range(m.columnCount())]


def row_where(page: DeploymentsPage, **want: str) -> int:
    for r in range(page.table_model.rowCount()):
        c = dict(zip(COLUMNS, cells(page, r), strict=True))
        if all(c[k] == v for k, v in want.items()):
            return r
    return -1


def select_source_row(page: DeploymentsPage, row: int) -> None:
    page.view.setCurrentIndex(page.proxy.mapFromSource(page.table_model.index(row, 0)))


@pytest.mark.server
@pytest.mark.slow
def test_local_deployments_and_unreachable_targets_share_one_table(
    qtbot: QtBot, local_target: LocalTarget, deploy_bundles: dict[str, Path], silent_port: int, qtmodeltester
) -> None:
    port = free_port()
    local_target.deploy(deploy_bundles["v1"], DeployOptions(name="flowers", port=port))
    hung = f"docker+tcp://127.0.0.1:{silent_port}"
    refused = f"ssh://deploy@127.0.0.1:{closed_port()}/srv/modeldeck"
    page = make_page(qtbot, local_target, [hung, refused])
    page.show()

    qtbot.waitUntil(lambda: page.table_model.rowCount() == 3, timeout=20_000)
    qtmodeltester.check(page.table_model)
    local = row_where(page, name="flowers")
    endpoint = f"http://127.0.0.1:{port}"
    assert cells(page, local)[:6] == ["flowers", "iris", "1", "running", endpoint, "this machine"]
    hung_row = row_where(page, target=hung)
    assert cells(page, hung_row)[3:5] == ["unreachable", "no answer within 2 s"]
    refused_row = row_where(page, target=refused)
    assert cells(page, refused_row)[3] == "unreachable"
    assert "127.0.0.1" in cells(page, refused_row)[4]  # the SSH target's own reason (connection refused)
    assert "1 deployment on 3 targets, 1 running, 2 unreachable" in page.footer.text()

    # the runtime's own CPU and memory (from its /metrics) fill in once two refreshes have scraped it
    qtbot.waitUntil(lambda: cells(page, row_where(page, name="flowers"))[6].endswith(" %"), timeout=20_000)
    assert cells(page, row_where(page, name="flowers"))[7].endswith("MiB")

    # rows are grouped by target: local first, then the others
    by_view = [page.proxy.index(r, 0).data(TargetRole) for r in range(page.proxy.rowCount())]
    assert by_view[0] == "local://" and set(by_view[1:]) == {hung, refused}

    # at the default size every column fits (no scroll bar hiding Since); Since has its exact time
    QApplication.processEvents()
    assert not page.view.horizontalScrollBar().isVisible()
    local_row, metrics = row_where(page, name="flowers"), page.view.fontMetrics()
    for col in range(DeploymentTableModel.SINCE + 1):  # every value of the running row is shown whole
        text = page.table_model.index(local_row, col).data() or ""
        assert metrics.horizontalAdvance(text) + 8 <= page.view.columnWidth(col), (COLUMNS[col], text)
    since = page.table_model.index(row_where(page, name="flowers"), DeploymentTableModel.SINCE)
    assert since.data(Qt.ItemDataRole.ToolTipRole).startswith("running since 20")
    # deployed once: Rollback is off and says why; the details say there is no previous release
    page.select("flowers", "local://")
    assert not page.rollback_button.isEnabled() and "no previous release" in page.rollback_button.toolTip()
    assert "no previous release" in page.details.text()

    select_source_row(page, row_where(page, target=hung))
    for button in (page.start_button, page.stop_button, page.rollback_button, page.undeploy_button, page.logs_button):
        assert not button.isEnabled()
    assert page.forget_button.isVisible()
    assert page.details.text() == f"{hung} is unreachable: no answer within 2 s"
    QApplication.processEvents()
    page.grab().save("/tmp/deploys.png")

    # an action goes to the row's own target
    page.select("flowers", "local://")
    assert not page.forget_button.isVisible()
    with qtbot.waitSignal(page.operationFinished, timeout=60_000) as done:
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    assert done.args[0] == "stop" and done.args[1].state == "stopped"
    qtbot.waitUntil(lambda: cells(page, row_where(page, name="flowers"))[3] == "stopped", timeout=20_000)
    assert cells(page, row_where(page, name="flowers"))[6:8] == ["", ""]  # nothing measured while stopped
    page.timer.stop()
    settle(qtbot)


def test_forget_target_drops_its_row_and_the_catalog_entry(qtbot: QtBot, tmp_path: Path) -> None:
    gone = f"docker+tcp://127.0.0.1:{closed_port()}"
    catalog.remember(gone)
    page = make_page(qtbot, LocalTarget(tmp_path / "deployments"), [])
    page.pool.extra_urls = tasks.catalog_urls
    page.show()
    qtbot.waitUntil(lambda: row_where(page, target=gone) >= 0, timeout=20_000)
    assert "cannot reach the Docker engine" in cells(page, row_where(page, target=gone))[4]
    select_source_row(page, row_where(page, target=gone))
    qtbot.mouseClick(page.forget_button, Qt.MouseButton.LeftButton)
    assert f"Stop listing {gone} here?" in page.banner.text()
    qtbot.mouseClick(page.banner.action_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.table_model.rowCount() == 0, timeout=20_000)
    assert [t.url for t in catalog.known_targets()] == ["local://"]
    assert page.empty_label.isVisible()
    page.timer.stop()
    settle(qtbot)


@pytest.mark.server
def test_an_inventory_host_with_an_unknown_key_points_to_the_hosts_page(
    qtbot: QtBot,
    tmp_path: Path,
    sshd_factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from modeldeck.core.inventory.hosts import Host, Inventory
    from modeldeck.core.settings import config_dir

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))  # no known_hosts: the host's key is unknown
    sshd = sshd_factory()
    Inventory.for_config_dir(config_dir()).add(
        Host("edge-new", sshd.ip, port=sshd.port, user=sshd.user, identity_files=(str(sshd.client_key),))
    )
    page = make_page(qtbot, LocalTarget(tmp_path / "deployments"), [])
    page.pool.extra_urls = tasks.catalog_urls
    page.show()
    qtbot.waitUntil(lambda: page.table_model.rowCount() == 1, timeout=20_000)
    select_source_row(page, 0)
    assert "unknown host key" in page.details.text()
    assert "on the Hosts page, select “edge-new” and press Test" in page.details.text()
    page.timer.stop()
    settle(qtbot)


def test_a_superseded_refresh_is_dropped(qtbot: QtBot, tmp_path: Path, silent_port: int) -> None:
    page = make_page(qtbot, LocalTarget(tmp_path / "deployments"), [f"docker+tcp://127.0.0.1:{silent_port}"])
    listed: list[object] = []
    page.listed.connect(listed.append)
    page.refresh()
    page.refresh(restart=True)  # e.g. a target was forgotten: the first answer is stale
    qtbot.waitUntil(lambda: len(listed) == 1, timeout=20_000)
    settle(qtbot)
    assert len(listed) == 1


def test_the_timer_asks_remote_targets_less_often_than_the_local_one(qtbot: QtBot, tmp_path: Path) -> None:
    with socket.socket() as engine:  # a hung engine that counts the connections it gets
        engine.bind(("127.0.0.1", 0))
        engine.listen(64)
        engine.setblocking(False)
        accepted: list[socket.socket] = []

        def connections() -> int:
            while True:
                try:
                    accepted.append(engine.accept()[0])
                except BlockingIOError:
                    return len(accepted)

        url = f"docker+tcp://127.0.0.1:{engine.getsockname()[1]}"
        page = DeploymentsPage(
            LocalTarget(tmp_path / "deployments"),
            extra_targets=lambda: [url],
            refresh_ms=100,
            list_timeout_s=0.5,
            remote_refresh_ms=60_000,
        )
        qtbot.addWidget(page)
        ticks: list[object] = []
        page.listed.connect(ticks.append)
        page.show()
        qtbot.waitUntil(lambda: len(ticks) >= 6, timeout=20_000)
        assert connections() == 1  # the first refresh asked the engine; timer ticks since then did not
        assert cells(page, row_where(page, target=url))[3:5] == ["unreachable", "no answer within 0.5 s"]  # kept
        with qtbot.waitSignal(page.listed, timeout=10_000):
            page.refresh()  # an explicit refresh asks every target
        qtbot.waitUntil(lambda: connections() == 2, timeout=10_000)
        page.timer.stop()
        settle(qtbot)
        for conn in accepted:
            conn.close()
