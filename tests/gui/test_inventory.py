"""The Hosts page clicked through offscreen: add with validation, import with warnings, test real sshd
hosts, and the unknown/changed host-key dialogs (accept pins, reject does not), passwords to the keyring.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from modeldeck.core.inventory.hosts import Host, Inventory
from modeldeck.core.settings import config_dir
from modeldeck.gui.inventory.dialogs import ChangedHostKeyDialog, UnknownHostKeyDialog
from modeldeck.gui.inventory.models import CheckOutcome, HostTableModel
from modeldeck.gui.inventory.page import InventoryPage
from modeldeck.gui.workers import default_pool
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox
from pytestqt.qtbot import QtBot

from tests.fixtures.keyring_memory import MemoryKeyring, memory_keyring, no_keyring  # noqa: F401
from tests.fixtures.sshd import SshHost, keygen

pytestmark = pytest.mark.gui

SHOTS = Path("/tmp/shots")


def shot(widget, name: str) -> None:  # type: ignore[no-untyped-def]
    QApplication.processEvents()
    SHOTS.mkdir(parents=True, exist_ok=True)
    widget.grab().save(str(SHOTS / f"inventory-{name}.png"))


def idle(qtbot: QtBot) -> None:
    qtbot.waitUntil(lambda: not default_pool().pending, timeout=30_000)


@pytest.fixture
def page(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[InventoryPage]:
    """The Hosts page over an isolated config dir, with an empty ~/.ssh and no ssh-agent."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    widget = InventoryPage(config_dir())
    qtbot.addWidget(widget)
    widget.resize(1300, 640)
    widget.show()
    with qtbot.waitSignal(widget.hostsLoaded, timeout=30_000):
        widget.reload()
    yield widget
    widget.stop_watching()
    idle(qtbot)


def load(qtbot: QtBot, page: InventoryPage, *hosts: Host) -> None:
    Inventory.for_config_dir(config_dir()).add_many(hosts)
    with qtbot.waitSignal(page.hostsLoaded, timeout=30_000):
        page.reload()


def host_for(sshd: SshHost, name: str = "lab1", **kw: object) -> Host:
    return Host(
        name, sshd.ip, port=sshd.port, user=sshd.user, identity_files=(str(sshd.client_key),),
        deploy_root=str(sshd.deploy_root), **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_add_host_marks_bad_fields_inline_and_saves_a_good_one(
    qtbot: QtBot, page: InventoryPage, qtmodeltester
) -> None:
    qtmodeltester.check(page.model)
    load(qtbot, page, Host("bastion", "10.0.0.1", groups=("infra",)))
    dialog = page.open_add_dialog()
    save = dialog.buttons.button(QDialogButtonBox.StandardButton.Save)
    qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    assert dialog.isVisible()
    assert dialog.errors["name"].isVisible() and dialog.errors["hostname"].isVisible()

    qtbot.keyClicks(dialog.name_edit, "web1")
    qtbot.keyClicks(dialog.host_edit, "10.0.0.11")
    qtbot.keyClicks(dialog.port_edit, "99999")
    qtbot.keyClicks(dialog.jump_edit, "bastoin")
    qtbot.keyClicks(dialog.labels_edit, "gpu=a100, oops")
    qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    assert not dialog.errors["name"].isVisible() and not dialog.errors["hostname"].isVisible()
    assert "not a port" in dialog.errors["port"].text()
    assert "'bastoin' is not a host in the inventory" in dialog.errors["proxy_jump"].text()
    assert "key=value" in dialog.errors["labels"].text()
    shot(dialog, "add-errors")

    dialog.port_edit.setText("2222")
    dialog.jump_edit.setText("bastion")
    dialog.labels_edit.setText("gpu=a100")
    dialog.groups_edit.setText("web, prod")
    with (
        qtbot.waitSignal(page.hostsLoaded, timeout=30_000),
        qtbot.waitSignal(page.detailsShown, timeout=30_000, check_params_cb=lambda name: name == "web1"),
    ):
        qtbot.mouseClick(save, Qt.MouseButton.LeftButton)
    assert not dialog.isVisible()
    saved = Inventory.for_config_dir(config_dir()).get("web1")
    assert (saved.port, saved.proxy_jump, saved.groups, dict(saved.labels)) == (
        2222,
        "bastion",
        ("web", "prod"),
        {"gpu": "a100"},
    )
    assert page.current_host().name == "web1"
    row = page.model.row_of("web1")
    assert page.model.index(row, HostTableModel.ADDRESS).data() == "10.0.0.11:2222"
    settings = {
        page.settings_model.cell(r, 0): page.settings_model.cell(r, 1) for r in range(page.settings_model.rowCount())
    }
    assert settings["Port"] == "2222" and settings["ProxyJump"] == "bastion"


def test_filter_narrows_by_group_label_and_address(qtbot: QtBot, page: InventoryPage) -> None:
    # no hosts: the page says how to add some, and the details pane asks for no selection
    assert page.empty_label.isVisible() and page.empty_label.text().startswith("No hosts yet.")
    assert page.details_title.text() == ""
    load(
        qtbot,
        page,
        Host("web1", "10.0.0.11", groups=("web",), labels={"gpu": "a100"}),
        Host("web2", "10.0.0.12", groups=("web",)),
        Host("db1", "10.0.0.21", groups=("db",)),
    )
    qtbot.keyClicks(page.filter_edit, "gpu=a100")
    assert page.proxy.rowCount() == 1
    page.filter_edit.setText("web")
    assert page.proxy.rowCount() == 2
    page.filter_edit.setText("10.0.0.21")
    assert page.proxy.index(0, 0).data() == "db1"
    # a filter matching nothing says so instead of leaving a blank table; Esc clears it
    page.filter_edit.setText("no-such-host")
    assert not page.view.isVisible() and page.empty_label.isVisible()
    assert page.empty_label.text() == "No host matches “no-such-host”. Clear the filter (Esc) to see all 3."
    page.activateWindow()
    page.filter_edit.setFocus()
    qtbot.waitUntil(page.filter_edit.hasFocus, timeout=5000)
    qtbot.keyClick(page.filter_edit, Qt.Key.Key_Escape)
    assert page.filter_edit.text() == "" and page.view.isVisible() and not page.empty_label.isVisible()


def test_import_ssh_config_previews_hosts_with_their_warnings_then_imports(
    qtbot: QtBot, page: InventoryPage, tmp_path: Path
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host gpu1 gpu2\n  HostName %h.lab\n  User ml\n  ProxyCommand nc -X connect %h %p\n"
        "Host plain\n  HostName 10.2.0.9\n  Port 2200\n"
    )
    dialog = page.open_import_dialog("ssh_config", config)
    qtbot.keyClicks(dialog.group_edit, "lab")
    qtbot.mouseClick(dialog.preview_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.tree.topLevelItemCount() == 3, timeout=10_000)
    gpu1 = dialog.tree.topLevelItem(0)
    assert gpu1.text(0) == "gpu1" and gpu1.childCount() == 1
    assert "ProxyCommand nc -X connect %h %p is not supported" in gpu1.child(0).text(0)
    assert "2 with settings ModelDeck does not support" in dialog.summary.text()
    assert Inventory.for_config_dir(config_dir()).hosts == []  # a preview writes nothing
    shot(dialog, "import-preview")
    with qtbot.waitSignal(page.hostsLoaded, timeout=30_000):
        qtbot.mouseClick(dialog.import_button, Qt.MouseButton.LeftButton)
    assert [h.name for h in page.model.hosts()] == ["gpu1", "gpu2", "plain"]
    assert Inventory.for_config_dir(config_dir()).get("plain").groups == ("lab",)
    page.select_host("gpu1")
    qtbot.waitUntil(lambda: page.warnings_label.isVisible(), timeout=10_000)
    assert "ProxyCommand" in page.warnings_label.text()


def test_a_broken_ansible_file_imports_nothing_and_says_where(
    qtbot: QtBot, page: InventoryPage, tmp_path: Path
) -> None:
    bad = tmp_path / "hosts.ini"
    bad.write_text("[web]\nweb1 ansible_port=22\nweb2 ansible_port\n")
    dialog = page.open_import_dialog("ansible", bad)
    qtbot.mouseClick(dialog.preview_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.banner.isVisible(), timeout=10_000)
    assert f"{bad}:3: expected key=value" in dialog.banner.text()
    assert not dialog.import_button.isEnabled()


@pytest.mark.server
def test_unknown_host_key_dialog_accept_pins_the_key_and_shows_facts(
    qtbot: QtBot, page: InventoryPage, ssh_host: SshHost, qtmodeltester
) -> None:
    load(qtbot, page, host_for(ssh_host))
    assert page.select_host("lab1")
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: isinstance(page.key_dialog, UnknownHostKeyDialog) and page.key_dialog.isVisible(), timeout=30_000
    )
    dialog = page.key_dialog
    assert isinstance(dialog, UnknownHostKeyDialog)
    assert dialog.fingerprint_label.text() == ssh_host.fingerprint
    assert dialog.reject_button.isDefault() and not dialog.accept_button.isDefault()
    shot(dialog, "unknown-key")
    with qtbot.waitSignal(page.testFinished, timeout=30_000) as finished:
        qtbot.mouseClick(dialog.accept_button, Qt.MouseButton.LeftButton)
    name, outcome = finished.args
    assert name == "lab1" and outcome.state == "ok", outcome
    assert ssh_host.host_public_key.get_base64() in (config_dir() / "known_hosts").read_text()
    facts = {page.facts_model.cell(r, 0): page.facts_model.cell(r, 1) for r in range(page.facts_model.rowCount())}
    assert facts["arch"] and facts["python"].startswith("3.")
    qtmodeltester.check(page.model)
    qtbot.waitUntil(lambda: ssh_host.fingerprint in page.keys_label.text(), timeout=10_000)
    shot(page, "tested")


@pytest.mark.server
def test_a_jump_hosts_unknown_key_is_asked_about_under_its_own_name(
    qtbot: QtBot,
    page: InventoryPage,
    sshd_factory,  # type: ignore[no-untyped-def]
) -> None:
    bastion, inner = sshd_factory(), sshd_factory()
    load(qtbot, page, host_for(bastion, "bastion"), host_for(inner, "inner", proxy_jump="bastion"))
    page.select_host("inner")
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    for expected, host in (("bastion", bastion), ("inner", inner)):
        qtbot.waitUntil(lambda: page.key_dialog is not None and page.key_dialog.isVisible(), timeout=30_000)
        dialog = page.key_dialog
        assert isinstance(dialog, UnknownHostKeyDialog)
        assert (dialog.host_name, dialog.fingerprint) == (expected, host.fingerprint)
        page.key_dialog = None
        qtbot.mouseClick(dialog.accept_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: (page.model.outcome("inner") or CheckOutcome("", "")).state == "ok", timeout=30_000)
    pins = (config_dir() / "known_hosts").read_text()
    assert bastion.host_public_key.get_base64() in pins and inner.host_public_key.get_base64() in pins


@pytest.mark.server
def test_an_encrypted_key_asks_for_its_passphrase_once(
    qtbot: QtBot,
    page: InventoryPage,
    sshd_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    locked = keygen(tmp_path / "locked", passphrase="s3cret")
    host = sshd_factory(authorized=[locked])
    (Path.home() / ".ssh" / "known_hosts").write_text(host.known_hosts_line + "\n")
    load(qtbot, page, replace(host_for(host), identity_files=(str(locked),)))
    page.select_host("lab1")
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.passphrase_dialog is not None and page.passphrase_dialog.isVisible(), timeout=30_000)
    dialog = page.passphrase_dialog
    assert dialog.passphrase_edit.echoMode() == dialog.passphrase_edit.EchoMode.Password  # type: ignore[union-attr]
    assert "encrypted" in page.model.outcome("lab1").detail  # type: ignore[union-attr]
    qtbot.keyClicks(dialog.passphrase_edit, "s3cret")  # type: ignore[union-attr]
    with qtbot.waitSignal(page.testFinished, timeout=30_000) as finished:
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)  # type: ignore[union-attr]
    assert finished.args[1].state == "ok"
    assert dialog.passphrase_edit.text() == ""  # type: ignore[union-attr]


@pytest.mark.server
def test_testing_several_hosts_reports_each_row_and_opens_no_dialog(
    qtbot: QtBot,
    page: InventoryPage,
    sshd_factory,  # type: ignore[no-untyped-def]
) -> None:
    known, stranger, dead = sshd_factory(), sshd_factory(), sshd_factory()
    (Path.home() / ".ssh" / "known_hosts").write_text(known.known_hosts_line + "\n" + dead.known_hosts_line + "\n")
    load(qtbot, page, host_for(known, "a-known"), host_for(stranger, "b-stranger"), host_for(dead, "c-dead"))
    dead.stop()
    page.view.selectAll()
    assert len(page.selected_hosts()) == 3 and page.details_title.text() == "3 hosts selected."
    assert page.selection_hint.isVisible() and "Test checks each of them" in page.selection_hint.text()
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    done = lambda: all(  # noqa: E731
        (page.model.outcome(n) or CheckOutcome("testing", "")).state != "testing"
        for n in ("a-known", "b-stranger", "c-dead")
    )
    qtbot.waitUntil(done, timeout=60_000)
    assert page.model.outcome("a-known").state == "ok"  # type: ignore[union-attr]
    assert page.model.outcome("b-stranger").text == "unknown host key"  # type: ignore[union-attr]
    assert page.model.outcome("c-dead").text == "unreachable"  # type: ignore[union-attr]
    assert "cannot connect" in page.model.outcome("c-dead").detail  # type: ignore[union-attr]
    assert page.key_dialog is None  # several hosts: the rows say it, no dialog pops up per host
    shot(page, "several")


@pytest.mark.server
def test_rejecting_an_unknown_key_pins_nothing(qtbot: QtBot, page: InventoryPage, ssh_host: SshHost) -> None:
    load(qtbot, page, host_for(ssh_host))
    page.select_host("lab1")
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.key_dialog is not None and page.key_dialog.isVisible(), timeout=30_000)
    qtbot.mouseClick(page.key_dialog.reject_button, Qt.MouseButton.LeftButton)  # type: ignore[union-attr]
    idle(qtbot)
    assert not (config_dir() / "known_hosts").exists()
    assert page.model.outcome("lab1").text == "unknown host key"  # type: ignore[union-attr]


@pytest.mark.server
def test_changed_host_key_re_pins_only_after_the_new_fingerprint_is_typed(
    qtbot: QtBot, page: InventoryPage, ssh_host: SshHost
) -> None:
    (Path.home() / ".ssh" / "known_hosts").write_text(ssh_host.known_hosts_line + "\n")
    users_file = (Path.home() / ".ssh" / "known_hosts").read_text()
    load(qtbot, page, host_for(ssh_host))
    old = ssh_host.fingerprint
    ssh_host.new_host_key()
    page.select_host("lab1")
    qtbot.mouseClick(page.test_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: isinstance(page.key_dialog, ChangedHostKeyDialog) and page.key_dialog.isVisible(), timeout=30_000
    )
    dialog = page.key_dialog
    assert isinstance(dialog, ChangedHostKeyDialog)
    assert page.model.outcome("lab1").text == "HOST KEY CHANGED"  # type: ignore[union-attr]
    assert not dialog.repin_button.isEnabled() and dialog.cancel_button.isDefault()
    qtbot.keyClicks(dialog.confirm_edit, old)
    assert not dialog.repin_button.isEnabled()  # the old fingerprint does not unlock it
    shot(dialog, "changed-key")
    dialog.confirm_edit.setText(ssh_host.fingerprint)
    assert dialog.repin_button.isEnabled()
    with qtbot.waitSignal(page.testFinished, timeout=30_000) as finished:
        qtbot.mouseClick(dialog.repin_button, Qt.MouseButton.LeftButton)
    assert finished.args[1].state == "ok"
    assert (Path.home() / ".ssh" / "known_hosts").read_text() == users_file  # never rewritten


def test_password_goes_to_the_keyring_through_a_masked_field(
    qtbot: QtBot,
    page: InventoryPage,
    memory_keyring: MemoryKeyring,  # noqa: F811
) -> None:
    load(qtbot, page, Host("web1", "10.0.0.11"))
    page.select_host("web1")
    dialog = page.open_password_dialog()
    assert dialog is not None
    assert dialog.password_edit.echoMode() == dialog.password_edit.EchoMode.Password
    qtbot.keyClicks(dialog.password_edit, "s3cret-pw")
    qtbot.keyClicks(dialog.again_edit, "s3cret-pX")
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert "differ" in dialog.error.text()
    dialog.again_edit.setText("s3cret-pw")
    with qtbot.waitSignal(dialog.accepted, timeout=10_000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert memory_keyring.entries == {("modeldeck-ssh", "web1"): "s3cret-pw"}
    assert not any(b"s3cret-pw" in p.read_bytes() for p in config_dir().rglob("*") if p.is_file())


def test_without_a_keyring_the_password_dialog_says_to_use_keys(
    qtbot: QtBot,
    page: InventoryPage,
    no_keyring: None,  # noqa: F811
) -> None:
    load(qtbot, page, Host("web1", "10.0.0.11"))
    page.select_host("web1")
    dialog = page.open_password_dialog()
    assert dialog is not None
    dialog.password_edit.setText("pw")
    dialog.again_edit.setText("pw")
    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.error.isVisible(), timeout=10_000)
    assert "no OS keyring" in dialog.error.text() and "SSH key or ssh-agent" in dialog.error.text()
    assert dialog.isVisible()


def test_the_main_window_has_a_hosts_page(qtbot: QtBot, page: InventoryPage) -> None:
    from modeldeck.core.settings import load_settings
    from modeldeck.gui.main_window import MainWindow

    Inventory.for_config_dir(config_dir()).add(Host("web1", "10.0.0.11", groups=("web",)))
    window = MainWindow(load_settings())
    qtbot.addWidget(window)
    ui = window.inventory_ui
    assert window.pages.tabText(ui.page_index) == "Hosts"
    qtbot.waitUntil(lambda: ui.page.model.rowCount() == 1, timeout=30_000)
    window.pages.setCurrentIndex(ui.page_index)
    window.resize(1400, 700)
    window.show()
    qtbot.waitUntil(lambda: ui.page.settings_model.rowCount() > 0, timeout=30_000)
    shot(window, "main-window")
    # the window's shortcuts act on the page shown: F5 reloads the hosts, Ctrl+F goes to their filter
    qtbot.waitExposed(window)
    window.activateWindow()
    with qtbot.waitSignal(ui.page.hostsLoaded, timeout=30_000):
        qtbot.keyClick(window, Qt.Key.Key_F5)
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert ui.page.filter_edit.hasFocus()
    assert "Ctrl+F" in ui.page.filter_edit.placeholderText()
    idle(qtbot)
    window.close()


def test_buttons_say_why_they_are_off_and_a_failed_test_shows_no_empty_facts_table(
    qtbot: QtBot, page: InventoryPage
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    load(qtbot, page, Host("dead", "127.0.0.1", port=closed), Host("web1", "10.0.0.11"))
    page.view.clearSelection()
    assert not page.edit_button.isEnabled() and "select a host first" in page.edit_button.toolTip()
    assert "select one or more hosts first" in page.test_button.toolTip()
    page.view.selectAll()
    assert not page.remove_button.isEnabled() and "select just one host" in page.remove_button.toolTip()
    assert page.selection_hint.isVisible()
    assert page.test_button.isEnabled()

    with qtbot.waitSignal(page.detailsShown, timeout=30_000):
        page.select_host("dead")
    assert page.edit_button.isEnabled() and page.edit_button.toolTip() == "Edit the selected host's connection settings"
    assert not page.selection_hint.isVisible()
    assert page.test_label.text().startswith("Not tested in this session.")
    assert not page.facts_view.isVisible(), "no facts yet: no empty table"
    page.test_host("dead")
    qtbot.waitUntil(lambda: (o := page.model.outcome("dead")) is not None and o.state != "testing", timeout=30_000)
    assert "cannot connect" in page.test_label.text()
    assert not page.facts_view.isVisible(), "a failed test has no facts: its error is shown without an empty table"
    shot(page, "dead-host")
    idle(qtbot)


def test_editing_an_imported_host_keeps_untouched_origins_and_remove_asks_first(
    qtbot: QtBot, page: InventoryPage
) -> None:
    imported = Host(
        "web1",
        "10.0.0.11",
        user="deploy",
        port=2200,
        source="ssh_config:~/.ssh/config",
        origins={"hostname": "~/.ssh/config:2", "user": "~/.ssh/config:3", "port": "~/.ssh/config:4"},
    )
    load(qtbot, page, imported)
    page.select_host("web1")
    dialog = page.open_edit_dialog()
    assert dialog is not None and dialog.port_edit.text() == "2200"
    dialog.user_edit.setText("ops")
    with qtbot.waitSignal(page.hostsLoaded, timeout=30_000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    saved = Inventory.for_config_dir(config_dir()).get("web1")
    assert saved.user == "ops" and saved.source == "ssh_config:~/.ssh/config"
    assert dict(saved.origins) == {"hostname": "~/.ssh/config:2", "port": "~/.ssh/config:4"}  # user is now ours

    box = page.confirm_remove()
    assert box is not None and box.defaultButton() is box.button(box.StandardButton.Cancel)
    qtbot.mouseClick(box.button(box.StandardButton.Cancel), Qt.MouseButton.LeftButton)
    idle(qtbot)
    assert "web1" in Inventory.for_config_dir(config_dir())
    box = page.confirm_remove()
    with qtbot.waitSignal(page.hostsLoaded, timeout=30_000):
        qtbot.mouseClick(box.button(box.StandardButton.Yes), Qt.MouseButton.LeftButton)  # type: ignore[union-attr]
    assert page.model.rowCount() == 0 and page.empty_label.isVisible()
    assert "web1" not in Inventory.for_config_dir(config_dir())


def test_a_broken_inventory_file_is_shown_in_the_page_not_overwritten(qtbot: QtBot, page: InventoryPage) -> None:
    path = config_dir() / "inventory.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[hosts.web1]\nhostname = "10.0.0.11\n')
    page.reload()
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=30_000)
    assert "not valid TOML" in page.banner.text() and "line 2" in page.banner.text()
    assert path.read_text() == '[hosts.web1]\nhostname = "10.0.0.11\n'
    shot(page, "broken-file")


def test_changes_made_outside_the_page_show_up_by_themselves(qtbot: QtBot, page: InventoryPage) -> None:
    with qtbot.waitSignal(page.hostsLoaded, timeout=30_000):
        Inventory.for_config_dir(config_dir()).add(Host("from-cli", "10.9.0.1"))  # as `modeldeck hosts add` would
    assert [h.name for h in page.model.hosts()] == ["from-cli"]
