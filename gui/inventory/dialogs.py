"""Dialogs of the Hosts page: add/edit a host, import, host-key decisions, password.

Validation happens in the form (inline, next to the field) before anything is written;
file and network work runs in workers and its errors are shown inside the dialog.
The two host-key dialogs default to refusing: accepting an unknown key is a click on
"Trust this key", re-pinning a changed one needs its new fingerprint typed or pasted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modeldeck.core.errors import ConfigError, HostKeyChanged, UnknownHostKey
from modeldeck.core.inventory.hosts import Host, split_list
from modeldeck.core.inventory.known_hosts import _same_fingerprint
from modeldeck.gui import style
from modeldeck.gui.inventory import tasks
from modeldeck.gui.widgets import MessageBanner, home_abbreviated
from modeldeck.gui.workers import describe_error, run_task
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)


def _error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {style.ERROR_FG};")
    label.hide()
    return label


def _mono(text: str) -> QLabel:
    label = QLabel(text)
    label.setFont(style.monospace_font())
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


# Which form field a core validation message is about (first match wins).
_FIELD_OF_MESSAGE = (
    ("group name", "groups"),
    ("label key", "labels"),
    ("port", "port"),
    ("user", "user"),
    ("proxy jump", "proxy_jump"),
    ("deploy root", "deploy_root"),
    ("address", "hostname"),
)


class HostDialog(QDialog):
    """Add a host, or edit one. ``saved(list[Host])`` carries the inventory after the write."""

    saved = Signal(object)

    def __init__(
        self, config_dir: Path, known_names: list[str], host: Host | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.config_dir = config_dir
        self.original = host
        self.known_names = [n for n in known_names if host is None or n != host.name]
        self.setWindowTitle("Edit host" if host else "Add host")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.errors: dict[str, QLabel] = {}

        def row(key: str, label: str, edit: QLineEdit, placeholder: str) -> QLineEdit:
            edit.setPlaceholderText(placeholder)
            box = QVBoxLayout()
            box.setSpacing(2)
            box.addWidget(edit)
            self.errors[key] = _error_label()
            self.errors[key].setWordWrap(False)  # a wrapped label in a form row gets clipped; keep errors short
            box.addWidget(self.errors[key])
            buddy = QLabel(label)
            buddy.setBuddy(edit)
            form.addRow(buddy, box)
            edit.textChanged.connect(self.errors[key].hide)
            return edit

        self.name_edit = row("name", "&Name", QLineEdit(), "web1")
        self.host_edit = row("hostname", "&Address", QLineEdit(), "host name or IP address")
        self.port_edit = row("port", "&Port", QLineEdit(), "22")
        self.user_edit = row("user", "&User", QLineEdit(), "your local user name")
        self.identity_edit = row("identity_files", "&Identity files", QLineEdit(), "~/.ssh/id_ed25519 (comma list)")
        self.jump_edit = row("proxy_jump", "Proxy &jump", QLineEdit(), "inventory host or user@host:port")
        self.root_edit = row("deploy_root", "&Deploy root", QLineEdit(), "~/modeldeck")
        self.groups_edit = row("groups", "&Groups", QLineEdit(), "web, prod")
        self.labels_edit = row("labels", "&Labels", QLineEdit(), "gpu=a100, zone=eu")
        layout.addLayout(form)
        self.banner = MessageBanner()
        layout.addWidget(self.banner)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        if host is not None:
            self.name_edit.setText(host.name)
            self.host_edit.setText(host.hostname)
            self.port_edit.setText(str(host.port) if host.port is not None else "")
            self.user_edit.setText(host.user or "")
            self.identity_edit.setText(", ".join(host.identity_files))
            self.jump_edit.setText(host.proxy_jump or "")
            self.root_edit.setText(host.deploy_root or "")
            self.groups_edit.setText(", ".join(host.groups))
            self.labels_edit.setText(", ".join(f"{k}={v}" for k, v in sorted(host.labels.items())))

    def _fail(self, key: str, text: str) -> None:
        self.errors[key].setText(text)
        self.errors[key].show()

    def host_from_form(self) -> Host | None:
        """The form as a :class:`Host`, or None after marking every bad field inline."""
        ok = True
        name = self.name_edit.text().strip()
        hostname = self.host_edit.text().strip()
        if not name:
            self._fail("name", "A name is required.")
            ok = False
        elif name in self.known_names:
            self._fail("name", f"A host named {name!r} already exists.")
            ok = False
        if not hostname:
            self._fail("hostname", "The address is required.")
            ok = False
        port: int | None = None
        port_text = self.port_edit.text().strip()
        if port_text:
            if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
                self._fail("port", f"{port_text!r} is not a port (1-65535).")
                ok = False
            else:
                port = int(port_text)
        jump = self.jump_edit.text().strip() or None
        if jump is not None:
            for hop in split_list(jump):
                if hop == name:
                    self._fail("proxy_jump", "A host cannot jump through itself.")
                    ok = False
                elif hop not in self.known_names and not any(c in hop for c in "@:.["):
                    self._fail("proxy_jump", f"{hop!r} is not a host in the inventory; write user@host:port.")
                    ok = False
        labels: dict[str, str] = {}
        for item in split_list(self.labels_edit.text()):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                self._fail("labels", f"{item!r}: write labels as key=value.")
                ok = False
            else:
                labels[key.strip()] = value.strip()
        if not ok:
            return None
        base = self.original
        host = Host(
            name=name,
            hostname=hostname,
            port=port,
            user=self.user_edit.text().strip() or None,
            identity_files=tuple(split_list(self.identity_edit.text())),
            proxy_jump=jump,
            deploy_root=self.root_edit.text().strip() or None,
            groups=tuple(dict.fromkeys(split_list(self.groups_edit.text()))),
            labels=labels,
            source=base.source if base else "manual",
            origins=dict(base.origins) if base else {},
            warnings=base.warnings if base else (),
        )
        try:
            host.validate()
        except ConfigError as exc:  # the core's rules, shown next to the field they are about
            field = next((key for text, key in _FIELD_OF_MESSAGE if text in exc.message), "name")
            self._fail(field, exc.message)
            return None
        return host

    def save(self) -> None:
        host = self.host_from_form()
        if host is None:
            return
        self.save_button.setEnabled(False)
        self.banner.hide()
        run_task(
            tasks.save_host,
            self.config_dir,
            host,
            self.original,
            on_result=self._saved,
            on_error=self._failed,
            name="save host",
            owner=self,
        )

    def _saved(self, hosts: list[Host]) -> None:
        self.saved.emit(hosts)
        self.accept()

    def _failed(self, error: BaseException) -> None:
        self.save_button.setEnabled(True)
        self.banner.show_message(describe_error(error))


class ImportDialog(QDialog):
    """Preview an import (hosts and every warning), then write all hosts at once."""

    imported = Signal(object)  # list[Host] (the inventory after the write)

    def __init__(self, config_dir: Path, kind: str, path: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config_dir = config_dir
        self.kind = kind
        self.result: Any = None
        what = "SSH config" if kind == "ssh_config" else "Ansible inventory"
        self.setWindowTitle(f"Import hosts from an {what}")
        self.resize(760, 520)
        layout = QVBoxLayout(self)
        pick = QHBoxLayout()
        self.path_edit = QLineEdit(str(path) if path else "")
        self.path_edit.setPlaceholderText("~/.ssh/config" if kind == "ssh_config" else "inventory.ini or hosts.yml")
        browse = QPushButton("Browse…")
        self.preview_button = QPushButton("Preview")
        pick.addWidget(QLabel("File:"))
        pick.addWidget(self.path_edit, 1)
        pick.addWidget(browse)
        pick.addWidget(self.preview_button)
        layout.addLayout(pick)
        options = QHBoxLayout()
        options.addWidget(QLabel("Groups:"))
        self.group_edit = QLineEdit()
        self.group_edit.setPlaceholderText("also put every host in these groups (optional)")
        self.replace_check = QCheckBox("Replace hosts with the same name")
        options.addWidget(self.group_edit, 1)
        options.addWidget(self.replace_check)
        layout.addLayout(options)
        self.summary = QLabel("Choose a file and press Preview: nothing is imported before you confirm.")
        self.summary.setProperty("role", "muted")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Host", "Address", "User", "Groups", "Warnings"])
        self.tree.setRootIsDecorated(True)
        self.tree.setAlternatingRowColors(True)
        layout.addWidget(self.tree, 1)
        self.banner = MessageBanner()
        layout.addWidget(self.banner)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.import_button = self.buttons.addButton("Import", QDialogButtonBox.ButtonRole.AcceptRole)
        self.import_button.setEnabled(False)
        self.buttons.accepted.connect(self.do_import)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        browse.clicked.connect(self._browse)
        self.preview_button.clicked.connect(self.preview)
        self.path_edit.returnPressed.connect(self.preview)
        self.path_edit.textChanged.connect(self._invalidate)
        self.group_edit.textChanged.connect(self._invalidate)

    def _browse(self) -> None:
        start = self.path_edit.text() or str(Path.home() / ".ssh")
        chosen, _ = QFileDialog.getOpenFileName(self, self.windowTitle(), start)
        if chosen:
            self.path_edit.setText(chosen)
            self.preview()

    def _invalidate(self) -> None:
        self.result = None
        self.import_button.setEnabled(False)

    def preview(self) -> None:
        text = self.path_edit.text().strip() or ("~/.ssh/config" if self.kind == "ssh_config" else "")
        if not text:
            self.banner.show_message("Choose a file to import.")
            return
        self.banner.hide()
        self.tree.clear()
        self.summary.setText("Reading…")
        groups = tuple(split_list(self.group_edit.text()))
        run_task(
            tasks.preview_import,
            self.kind,
            Path(text).expanduser(),
            groups,
            on_result=self._previewed,
            on_error=self._failed,
            name="preview import",
            owner=self,
        )

    def _previewed(self, result: Any) -> None:
        self.result = result
        self.tree.clear()
        warned = 0
        for host in result.hosts:
            item = QTreeWidgetItem(
                [host.name, host.address, host.user or "", ", ".join(host.groups), str(len(host.warnings) or "")]
            )
            item.setToolTip(0, f"{host.name}: {host.source}")
            if host.warnings:
                warned += 1
                item.setForeground(4, style_colour(style.WARN_FG))
                for warning in host.warnings:
                    child = QTreeWidgetItem([_short_warning(warning, result.path)])
                    child.setForeground(0, style_colour(style.WARN_FG))
                    child.setToolTip(0, warning)
                    item.addChild(child)
            self.tree.addTopLevelItem(item)
            for i in range(item.childCount()):  # spanning only takes once the item is in the tree
                item.child(i).setFirstColumnSpanned(True)
            item.setExpanded(bool(host.warnings))
        # Warning rows span all columns: size the columns on the host rows only.
        metrics = self.tree.fontMetrics()
        for col in range(5):
            texts = [self.tree.headerItem().text(col)]
            texts += [self.tree.topLevelItem(i).text(col) for i in range(self.tree.topLevelItemCount())]
            extra = 48 if col == 0 else 24  # the branch indicator
            self.tree.setColumnWidth(col, min(max(metrics.horizontalAdvance(t) for t in texts) + extra, 320))
        notes = "".join(f"\n{w}" for w in result.warnings)
        self.summary.setText(
            f"{len(result.hosts)} hosts in {result.path}; {warned} with settings ModelDeck does not support "
            f"(listed under each host).{notes}"
        )
        self.import_button.setEnabled(bool(result.hosts))

    def do_import(self) -> None:
        if self.result is None:
            return
        self.import_button.setEnabled(False)
        run_task(
            tasks.apply_import,
            self.config_dir,
            list(self.result.hosts),
            self.replace_check.isChecked(),
            on_result=self._imported,
            on_error=self._failed,
            name="import hosts",
            owner=self,
        )

    def _imported(self, hosts: list[Host]) -> None:
        self.imported.emit(hosts)
        self.accept()

    def _failed(self, error: BaseException) -> None:
        self.summary.setText("Nothing was imported.")
        self.banner.show_message(describe_error(error))
        self.import_button.setEnabled(self.result is not None)


def _short_warning(warning: str, path: Path) -> str:
    """``/long/path/config:4: ProxyCommand …`` -> ``line 4: ProxyCommand …`` for the file being imported."""
    for prefix in (f"{path}:", f"{home_abbreviated(str(path))}:"):
        if warning.startswith(prefix):
            return "line " + warning[len(prefix) :]
    return home_abbreviated(warning)


def style_colour(name: str) -> Any:
    from PySide6.QtGui import QBrush, QColor

    return QBrush(QColor(name))


class UnknownHostKeyDialog(QDialog):
    """The host presented a key found nowhere: show its SHA256 fingerprint; Reject is the default."""

    def __init__(self, host_name: str, error: UnknownHostKey, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.error = error
        self.host_name = host_name
        self.setWindowTitle("Unknown host key")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        title = QLabel(f"ModelDeck has never seen the key of {host_name} ({error.host}).")
        title.setProperty("role", "pane-title")
        title.setWordWrap(True)
        layout.addWidget(title)
        explain = QLabel(
            "Nothing was sent to the host. Compare this fingerprint with the one its administrator gave you "
            "(on the host: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub). Trust it only if they are identical."
        )
        explain.setWordWrap(True)
        layout.addWidget(explain)
        form = QFormLayout()
        form.addRow("Key type:", _mono(error.key_type))
        self.fingerprint_label = _mono(error.fingerprint)
        form.addRow("Fingerprint:", self.fingerprint_label)
        layout.addLayout(form)
        self.buttons = QDialogButtonBox()
        self.reject_button = self.buttons.addButton("Reject", QDialogButtonBox.ButtonRole.RejectRole)
        self.accept_button = self.buttons.addButton("Trust this key", QDialogButtonBox.ButtonRole.AcceptRole)
        self.accept_button.setAutoDefault(False)
        self.reject_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.reject_button.setFocus()

    @property
    def fingerprint(self) -> str:
        return self.error.fingerprint


class ChangedHostKeyDialog(QDialog):
    """The host's key differs from the one on record: a hard error; re-pin only with the new fingerprint typed."""

    def __init__(self, host_name: str, error: HostKeyChanged, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.error = error
        self.host_name = host_name
        self.setWindowTitle("HOST KEY CHANGED")
        self.setMinimumWidth(620)
        layout = QVBoxLayout(self)
        title = QLabel(f"The host key of {host_name} ({error.host}) has CHANGED.")
        title.setStyleSheet(f"color: {style.ERROR_FG}; font-weight: 600;")
        title.setWordWrap(True)
        layout.addWidget(title)
        explain = QLabel(
            "Someone may be intercepting the connection, or the host was re-installed. Nothing was sent to it and "
            "ModelDeck will refuse it until the new key is pinned. Re-pin only if you know the host was re-installed "
            "and its administrator confirmed the new fingerprint."
        )
        explain.setWordWrap(True)
        layout.addWidget(explain)
        form = QFormLayout()
        form.addRow("Key type:", _mono(error.key_type))
        form.addRow("On record:", _mono(error.expected))
        form.addRow("Presented:", _mono(error.presented))
        layout.addLayout(form)
        layout.addWidget(QLabel("To re-pin, type or paste the new fingerprint exactly:"))
        self.confirm_edit = QLineEdit()
        self.confirm_edit.setFont(style.monospace_font())
        self.confirm_edit.setPlaceholderText("SHA256:…")
        layout.addWidget(self.confirm_edit)
        self.buttons = QDialogButtonBox()
        self.cancel_button = self.buttons.addButton("Keep refusing", QDialogButtonBox.ButtonRole.RejectRole)
        self.repin_button = self.buttons.addButton("Re-pin the new key", QDialogButtonBox.ButtonRole.AcceptRole)
        self.repin_button.setEnabled(False)
        self.repin_button.setAutoDefault(False)
        self.cancel_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.confirm_edit.textChanged.connect(self._check)

    def _check(self, text: str) -> None:
        self.repin_button.setEnabled(bool(text.strip()) and _same_fingerprint(text, self.error.presented))

    @property
    def fingerprint(self) -> str:
        return self.confirm_edit.text().strip()


class PasswordDialog(QDialog):
    """Store a host's password in the OS keyring (never in a file); errors (no keyring) stay in the dialog."""

    def __init__(self, host_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host_name = host_name
        self.setWindowTitle(f"Password for {host_name}")
        self.setMinimumWidth(460)
        layout = QVBoxLayout(self)
        note = QLabel("Stored in the OS keyring only. Prefer an SSH key or ssh-agent where you can.")
        note.setProperty("role", "muted")
        note.setWordWrap(True)
        layout.addWidget(note)
        form = QFormLayout()
        self.password_edit = QLineEdit()
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.again_edit = QLineEdit()
        self.again_edit.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow("&Password:", self.password_edit)
        form.addRow("&Again:", self.again_edit)
        layout.addLayout(form)
        self.error = _error_label()
        layout.addWidget(self.error)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.password_edit.textChanged.connect(self.error.hide)
        self.again_edit.textChanged.connect(self.error.hide)

    def save(self) -> None:
        password = self.password_edit.text()
        if not password:
            self._show("Enter a password.")
            return
        if password != self.again_edit.text():
            self._show("The two passwords differ.")
            return
        self.save_button.setEnabled(False)
        run_task(
            tasks.store_password,
            self.host_name,
            password,
            on_result=lambda _: self._stored(),
            on_error=lambda e: self._show(describe_error(e)),
            name="store password",
            owner=self,
        )

    def _stored(self) -> None:
        self.password_edit.clear()
        self.again_edit.clear()
        self.accept()

    def _show(self, text: str) -> None:
        self.save_button.setEnabled(True)
        self.error.setText(text)
        self.error.show()


class PassphraseDialog(QDialog):
    """Ask for an encrypted identity file's passphrase for one test; it is used once and not stored."""

    def __init__(self, host_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host_name = host_name
        self.setWindowTitle(f"Passphrase for {host_name}")
        self.setMinimumWidth(440)
        layout = QVBoxLayout(self)
        note = QLabel(
            f"The identity file of {host_name} is encrypted. The passphrase is used for this test only; "
            "to avoid the question, load the key into ssh-agent."
        )
        note.setWordWrap(True)
        layout.addWidget(note)
        self.passphrase_edit = QLineEdit()
        self.passphrase_edit.setEchoMode(QLineEdit.EchoMode.Password)
        layout.addWidget(self.passphrase_edit)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Test")
        self.ok_button.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.passphrase_edit.textChanged.connect(lambda text: self.ok_button.setEnabled(bool(text)))

    def take_passphrase(self) -> str:
        """The passphrase, cleared from the field (the dialog does not keep it)."""
        text = self.passphrase_edit.text()
        self.passphrase_edit.clear()
        return text
