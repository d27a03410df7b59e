"""The Hosts page: the SSH inventory as a filterable table, with a details pane and host actions.

Everything that touches files, the keyring or the network runs in a worker
(:mod:`modeldeck.gui.inventory.tasks`); results come back to the UI thread and go into the
thin models. Details of the selected host are requested on a :class:`Channel` so a slow
answer for a previous selection never overwrites the current one.

"Test" connects to the selected hosts. A refused host key is never accepted silently: when one
host is tested, an unknown key opens :class:`UnknownHostKeyDialog` (Reject is the default) and a
changed key opens :class:`ChangedHostKeyDialog` (re-pin only with the new fingerprint typed);
accepting pins through :func:`modeldeck.core.inventory.trust.trust`, which checks that the host
still presents that very key, then the host is tested again.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

from modeldeck.core.errors import HostKeyChanged, HostUnreachable, SshAuthError, UnknownHostKey
from modeldeck.core.inventory.hosts import Host, inventory_path
from modeldeck.core.inventory.probe import HostCheck
from modeldeck.core.inventory.trust import TrustResult
from modeldeck.gui import style
from modeldeck.gui.inventory import tasks
from modeldeck.gui.inventory.dialogs import (
    ChangedHostKeyDialog,
    HostDialog,
    ImportDialog,
    PassphraseDialog,
    PasswordDialog,
    UnknownHostKeyDialog,
)
from modeldeck.gui.inventory.models import CheckOutcome, HostFilterProxy, HostTableModel
from modeldeck.gui.registry.models import RowsModel
from modeldeck.gui.widgets import MessageBanner, fit_columns, home_abbreviated, readonly_table
from modeldeck.gui.workers import Channel, TaskHandle, describe_error, run_task
from PySide6.QtCore import QFileSystemWatcher, QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtGui import QHideEvent, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)


RELOAD_DELAY_MS = 300  # coalesces the temp-file + rename of one write (and a .bak) into one reload
EMPTY_TEXT = "No hosts yet. Add one, or import them from ~/.ssh/config or an Ansible inventory."


class InventoryPage(QWidget):
    statusMessage = Signal(str)
    hostsLoaded = Signal()
    detailsShown = Signal(str)  # host name
    testFinished = Signal(str, object)  # host name, CheckOutcome

    def __init__(self, config_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.config_dir = config_dir
        self._details_channel = Channel("host details")
        self.key_dialog: UnknownHostKeyDialog | ChangedHostKeyDialog | None = None
        self.host_dialog: HostDialog | None = None
        self.import_dialog: ImportDialog | None = None
        self.password_dialog: PasswordDialog | None = None
        self.passphrase_dialog: PassphraseDialog | None = None
        self.remove_box: QMessageBox | None = None

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        bar = QHBoxLayout()
        self.add_button = QPushButton("Add…")
        self.edit_button = QPushButton("Edit…")
        self.remove_button = QPushButton("Remove")
        self.import_ssh_button = QPushButton("Import SSH config…")
        self.import_ansible_button = QPushButton("Import Ansible…")
        self.test_button = QPushButton("Test")
        self.password_button = QPushButton("Set password…")
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter hosts  (Ctrl+F)")
        self.filter_edit.setToolTip("Shows the hosts whose name, address, group or label contains the text")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.setMinimumWidth(160)  # the button row must not set a wide window minimum
        self.filter_edit.setMaximumWidth(280)
        title = QLabel("Hosts")  # titled like the Deployments page's table
        title.setProperty("role", "pane-title")
        bar.addWidget(title)
        bar.addSpacing(8)
        for button in (self.add_button, self.edit_button, self.remove_button):
            bar.addWidget(button)
        bar.addSpacing(12)
        bar.addWidget(self.import_ssh_button)
        bar.addWidget(self.import_ansible_button)
        bar.addSpacing(12)
        bar.addWidget(self.test_button)
        bar.addWidget(self.password_button)
        bar.addStretch(1)
        bar.addWidget(self.filter_edit)
        layout.addLayout(bar)
        self.banner = MessageBanner()
        layout.addWidget(self.banner)

        self.model = HostTableModel(self)
        self.proxy = HostFilterProxy(self)
        self.proxy.setSourceModel(self.model)
        self.view = readonly_table(self.proxy)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(HostTableModel.NAME, Qt.SortOrder.AscendingOrder)
        self.empty_label = QLabel(EMPTY_TEXT)
        self.empty_label.setProperty("role", "empty")
        # at the top, as the Registry and Deployments pages show theirs
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.empty_label.setWordWrap(True)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.view, 1)
        left_layout.addWidget(self.empty_label)

        self.details = self._build_details()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(left)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        layout.addWidget(splitter, 1)

        self.add_button.clicked.connect(self.open_add_dialog)
        self.edit_button.clicked.connect(self.open_edit_dialog)
        self.remove_button.clicked.connect(self.confirm_remove)
        self.import_ssh_button.clicked.connect(lambda: self.open_import_dialog("ssh_config"))
        self.import_ansible_button.clicked.connect(lambda: self.open_import_dialog("ansible"))
        self.test_button.clicked.connect(self.test_selected)
        self.password_button.clicked.connect(self.open_password_dialog)
        self.filter_edit.textChanged.connect(self._filter_changed)
        clear_filter = QShortcut(QKeySequence(Qt.Key.Key_Escape), self.filter_edit)
        clear_filter.setContext(Qt.ShortcutContext.WidgetShortcut)
        clear_filter.activated.connect(self.filter_edit.clear)
        find = QShortcut(QKeySequence.StandardKey.Find, self)
        find.activated.connect(self.focus_filter)
        self.view.selectionModel().selectionChanged.connect(self._selection_changed)
        self.view.doubleClicked.connect(lambda _: self.open_edit_dialog())
        self._update_actions()
        # The CLI (or another window) may change the inventory: while the page is visible, reload when
        # inventory.toml changes. The directory is watched, not the file (atomic writes replace the
        # file's inode); other files changing there do not reload.
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(RELOAD_DELAY_MS)
        self._reload_timer.timeout.connect(self.reload)
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._directory_changed)
        self._loaded_stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file last loaded

    def _filter_changed(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)
        if not self.banner.isVisible() or self.model.rowCount():  # keep a broken file's message
            self._show_filtered_hosts()

    def _show_filtered_hosts(self) -> None:
        """The table, or a line saying why it is empty: no hosts yet, or none matching the filter."""
        total, shown = self.model.rowCount(), self.proxy.rowCount()
        if not total:
            text = EMPTY_TEXT
        elif not shown:
            text = f"No host matches “{self.filter_edit.text()}”. Clear the filter (Esc) to see all {total}."
        else:
            text = ""
        self.empty_label.setText(text)
        self.empty_label.setVisible(bool(text))
        self.view.setVisible(shown > 0)

    def focus_filter(self) -> None:
        self.filter_edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.filter_edit.selectAll()

    def _build_details(self) -> QWidget:
        pane = QWidget()
        pane.setMinimumWidth(380)
        layout = QVBoxLayout(pane)
        layout.setContentsMargins(4, 0, 0, 0)
        self.details_title = QLabel("Select a host.")
        self.details_title.setProperty("role", "pane-title")
        self.details_source = QLabel()
        self.details_source.setProperty("role", "muted")
        self.details_source.setWordWrap(True)
        layout.addWidget(self.details_title)
        self.selection_hint = QLabel("Test checks each of them; Edit, Remove and Set password work on one host.")
        self.selection_hint.setProperty("role", "muted")
        self.selection_hint.setWordWrap(True)
        self.selection_hint.hide()
        layout.addWidget(self.selection_hint)
        self.details_body = QWidget()  # hidden unless exactly one host is selected
        outer = layout
        layout = QVBoxLayout(self.details_body)
        layout.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.details_body, 1)
        outer.addStretch(0)
        layout.addWidget(self.details_source)
        self.settings_model = RowsModel(["Setting", "Value", "From"], self)
        self.settings_view = readonly_table(self.settings_model)
        self.settings_view.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # long paths keep both ends
        layout.addWidget(self.settings_view)
        self.keys_label = QLabel()
        self.keys_label.setWordWrap(True)
        self.keys_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.keys_label)
        facts_title = QLabel("Last test")
        facts_title.setProperty("role", "pane-title")
        layout.addWidget(facts_title)
        self.test_label = QLabel("Not tested in this session.")
        self.test_label.setProperty("role", "muted")
        self.test_label.setWordWrap(True)
        self.test_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.test_label)
        self.facts_model = RowsModel(["Fact", "Value"], self)
        self.facts_view = readonly_table(self.facts_model)
        self.facts_view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        layout.addWidget(self.facts_view, 1)
        layout.addStretch(0)  # takes the room while the facts table is hidden
        self.warnings_title = QLabel("Import warnings")
        self.warnings_title.setProperty("role", "pane-title")
        self.warnings_label = QLabel()
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warnings_label.setProperty("role", "muted")
        layout.addWidget(self.warnings_title)
        layout.addWidget(self.warnings_label)
        self.warnings_title.hide()
        self.warnings_label.hide()
        return pane

    # -- loading ---------------------------------------------------------------------------------
    def _watch(self) -> None:
        path = str(self.config_dir)
        if path in self._watcher.directories():
            return
        try:
            self.config_dir.mkdir(parents=True, exist_ok=True)  # one mkdir: watched from the start
        except OSError:
            log.warning("cannot create %s; the Hosts page will not notice outside changes", path)
            return
        self._watcher.addPath(path)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = inventory_path(self.config_dir).stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _directory_changed(self, _path: str) -> None:
        if self._stamp() != self._loaded_stamp:
            self._reload_timer.start()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._watch()
        if self._stamp() != self._loaded_stamp:
            self._reload_timer.start()

    def hideEvent(self, event: QHideEvent) -> None:
        self.stop_watching()
        super().hideEvent(event)

    def stop_watching(self) -> None:
        """No more automatic reloads (window closing, tests tearing down)."""
        self._reload_timer.stop()
        if self._watcher.directories():
            self._watcher.removePaths(self._watcher.directories())

    def reload(self) -> TaskHandle:
        self._loaded_stamp = self._stamp()  # a change after this point reloads again
        if self.isVisible():
            self._watch()  # the config dir may only exist since the first write
        return run_task(
            tasks.load_hosts,
            self.config_dir,
            on_result=self.set_hosts,
            on_error=self._load_failed,
            name="load inventory",
            owner=self,
        )

    def _load_failed(self, error: BaseException) -> None:
        self.banner.show_message(describe_error(error), action_text="Retry", action=self.reload)
        self.model.set_hosts([])  # rows from before the file broke would be stale
        self.view.hide()
        self.empty_label.setText("The inventory file could not be read: nothing is shown or changed until it is fixed.")
        self.empty_label.show()
        self._selection_changed()
        self.hostsLoaded.emit()

    def set_hosts(self, hosts: list[Host]) -> None:
        self.banner.hide()
        self.model.set_hosts(hosts)
        fit_columns(self.view)
        self._show_filtered_hosts()
        if hosts and not self.selected_hosts():
            self.select_host(self.proxy.index(0, 0).data() or hosts[0].name)
        else:
            self._selection_changed()
        self.hostsLoaded.emit()

    # -- selection -------------------------------------------------------------------------------
    def selected_hosts(self) -> list[Host]:
        rows = sorted({self.proxy.mapToSource(i).row() for i in self.view.selectionModel().selectedRows()})
        return [h for h in (self.model.host_at(r) for r in rows) if h is not None]

    def current_host(self) -> Host | None:
        selected = self.selected_hosts()
        return selected[0] if len(selected) == 1 else None

    def select_host(self, name: str) -> bool:
        row = self.model.row_of(name)
        if row < 0:
            return False
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        if not index.isValid():
            return False
        flags = QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        self.view.selectionModel().setCurrentIndex(index, flags)
        return True

    def _update_actions(self) -> None:
        selected = self.selected_hosts()
        one = len(selected) == 1
        why = "" if one else (" (select just one host)" if selected else " (select a host first)")
        for button, what in (
            (self.edit_button, "Edit the selected host's connection settings"),
            (self.remove_button, "Remove the selected host from the inventory"),
            (self.password_button, "Store the selected host's SSH password in the system keyring"),
        ):
            button.setEnabled(one)
            button.setToolTip(what + why)
        self.test_button.setEnabled(bool(selected))
        self.test_button.setToolTip(
            "Connect (host key verified first), log in and collect facts"
            + ("" if selected else " (select one or more hosts first)")
        )

    def _selection_changed(self, *_: object) -> None:
        self._update_actions()
        host = self.current_host()
        if host is None:
            self._details_channel.invalidate()
            count = len(self.selected_hosts())
            none = "Select a host." if self.model.rowCount() else ""  # no hosts: the empty text says what to do
            self.details_title.setText(f"{count} hosts selected." if count else none)
            self.selection_hint.setVisible(count > 1)
            self.details_body.hide()
            self.details_source.clear()
            self.keys_label.clear()
            self.warnings_title.hide()
            self.warnings_label.hide()
            self.settings_model.set_rows([])
            self.facts_model.set_rows([])
            self.test_label.setText("")
            return
        if self.details_title.text() != host.name:  # never show another host's settings under this name
            self.settings_model.set_rows([])
            self.keys_label.clear()
            self.details_source.clear()
        self.details_title.setText(host.name)
        self.selection_hint.hide()
        self.details_body.show()
        self._show_outcome(host.name)
        self._show_warnings(host)
        run_task(
            tasks.details,
            self.config_dir,
            host.name,
            on_result=self._show_details,
            on_error=lambda e: self.details_source.setText(describe_error(e)),
            channel=self._details_channel,
            name="host details",
            owner=self,
        )

    def _show_details(self, details: tasks.HostDetails) -> None:
        resolved = details.resolved
        host = resolved.host
        current = self.current_host()
        if current is None or current.name != host.name:
            return
        notes = "".join(
            f"<br><span style='color:{style.ERROR_FG}'>⚠ {html.escape(home_abbreviated(n))}</span>"
            for n in resolved.notes
        )
        self.details_source.setText(f"Source: {html.escape(home_abbreviated(host.source))}{notes}")
        rows = [(name, s.text(), home_abbreviated(s.source)) for name, s in resolved.settings()]
        hops = []
        ep = resolved.endpoint.proxy_jump
        while ep is not None:
            hops.append(ep.label)
            ep = ep.proxy_jump
        if hops:
            rows.append(("Route", " → ".join([*reversed(hops), resolved.endpoint.label]), ""))
        rows.append(("DeployRoot", host.deploy_root or "~/modeldeck", "inventory" if host.deploy_root else "default"))
        self.settings_model.set_rows(rows)
        fit_columns(self.settings_view, max_width=240)
        self._fit_height(self.settings_view)
        if details.keys:
            keys = "<br>".join(
                f"{k.key_type} <tt>{k.fingerprint}</tt><br>"
                f"<span style='color:{style.MUTED}'>in {html.escape(home_abbreviated(str(k.source)))}</span>"
                for k in details.keys
            )
            self.keys_label.setText(f"<b>Host keys on record</b><br>{keys}")
        else:
            self.keys_label.setText("<b>Host keys on record</b><br>None yet: Test shows the key for you to accept.")
        self.detailsShown.emit(host.name)

    @staticmethod
    def _fit_height(view: QTableView) -> None:
        """As tall as its rows (no empty band, no scroll bar for the handful of settings)."""
        rows = view.model().rowCount()
        height = view.horizontalHeader().height() + sum(view.rowHeight(r) for r in range(rows)) + 2 * view.frameWidth()
        view.setFixedHeight(height + 2)

    def _show_warnings(self, host: Host) -> None:
        visible = bool(host.warnings)
        self.warnings_title.setVisible(visible)
        self.warnings_label.setVisible(visible)
        self.warnings_title.setText(f"Import warnings ({len(host.warnings)})")
        self.warnings_label.setText("\n".join(home_abbreviated(w) for w in host.warnings))

    def _show_outcome(self, name: str) -> None:
        outcome = self.model.outcome(name)
        if outcome is None:
            self.test_label.setText("Not tested in this session. Test connects and collects its facts.")
            self.facts_model.set_rows([])
            self.facts_view.hide()
            return
        self.test_label.setText(outcome.detail or outcome.text)
        check = outcome.check
        rows: list[tuple[str, str]] = []
        if check is not None:
            rows = [("address", check.label), ("host key", f"{check.key_type} {check.fingerprint}")]
            rows += sorted(check.facts.items())
            rows += [("problem", p) for p in check.problems]
            rows.append(("time", f"{check.elapsed_s:.2f} s"))
        self.facts_model.set_rows(rows)
        self.facts_view.setVisible(bool(rows))  # a failed test has no facts: no empty table under its error
        fit_columns(self.facts_view, max_width=160)

    # -- testing and host keys -------------------------------------------------------------------
    def test_selected(self) -> list[TaskHandle]:
        hosts = self.selected_hosts()
        return [self.test_host(h.name, ask_about_keys=len(hosts) == 1) for h in hosts]

    def test_host(self, name: str, *, ask_about_keys: bool = True, passphrase: str | None = None) -> TaskHandle:
        self._set_outcome(name, CheckOutcome("testing", "testing…"))
        return run_task(
            tasks.run_host_test,
            self.config_dir,
            name,
            passphrase,
            on_result=lambda check: self._tested(name, check),
            on_error=lambda error: self._test_failed(name, error, ask_about_keys),
            name=f"test {name}",
            owner=self,
        )

    def _set_outcome(self, name: str, outcome: CheckOutcome) -> None:
        self.model.set_outcome(name, outcome)
        current = self.current_host()
        if current is not None and current.name == name:
            self._show_outcome(name)

    def _tested(self, name: str, check: HostCheck) -> None:
        state = "warning" if check.problems else "ok"
        text = f"{'not deployable' if check.problems else 'ok'}: {check.summary()}"
        outcome = CheckOutcome(state, text, check.summary(), check)
        self._set_outcome(name, outcome)
        self.statusMessage.emit(f"{name}: {text}")
        self.testFinished.emit(name, outcome)
        if self.current_host() is not None and self.current_host().name == name:  # type: ignore[union-attr]
            self._selection_changed()  # the keys on record may have changed

    def _test_failed(self, name: str, error: BaseException, ask_about_keys: bool) -> None:
        # A refused key may be a jump host's: the dialog and the pin are about that host.
        owner = getattr(error, "inventory_host", None) or name
        via = "" if owner == name else f" (jump host {owner})"
        if isinstance(error, UnknownHostKey):
            outcome = CheckOutcome(
                "failed", f"unknown host key{via}", f"{error.key_type} {error.fingerprint} — not trusted"
            )
        elif isinstance(error, HostKeyChanged):
            outcome = CheckOutcome("failed", f"HOST KEY CHANGED{via}", describe_error(error))
        elif isinstance(error, HostUnreachable):
            outcome = CheckOutcome("failed", "unreachable", describe_error(error))
        elif isinstance(error, SshAuthError):
            outcome = CheckOutcome("failed", "login refused", describe_error(error))
        else:
            outcome = CheckOutcome("failed", "failed", describe_error(error))
        self._set_outcome(name, outcome)
        self.testFinished.emit(name, outcome)
        if ask_about_keys and isinstance(error, SshAuthError) and "encrypted" in error.message:
            self._ask_passphrase(name)
            return
        if not ask_about_keys or owner not in [h.name for h in self.model.hosts()]:
            return
        if isinstance(error, UnknownHostKey):
            self._ask_unknown_key(owner, error, retest=name)
        elif isinstance(error, HostKeyChanged):
            self._ask_changed_key(owner, error, retest=name)

    def _ask_passphrase(self, name: str) -> None:
        dialog = PassphraseDialog(name, self)
        self.passphrase_dialog = dialog
        dialog.accepted.connect(lambda: self.test_host(name, passphrase=dialog.take_passphrase()))
        dialog.open()

    def _ask_unknown_key(self, owner: str, error: UnknownHostKey, retest: str) -> None:
        dialog = UnknownHostKeyDialog(owner, error, self)
        self.key_dialog = dialog
        dialog.accepted.connect(lambda: self._pin(owner, dialog.fingerprint, replace_key=False, retest=retest))
        dialog.rejected.connect(lambda: self.statusMessage.emit(f"{owner}: host key rejected; nothing was pinned"))
        dialog.open()

    def _ask_changed_key(self, owner: str, error: HostKeyChanged, retest: str) -> None:
        dialog = ChangedHostKeyDialog(owner, error, self)
        self.key_dialog = dialog
        dialog.accepted.connect(lambda: self._pin(owner, dialog.fingerprint, replace_key=True, retest=retest))
        dialog.open()

    def _pin(self, owner: str, fingerprint: str, *, replace_key: bool, retest: str | None = None) -> TaskHandle:
        """Pin ``owner``'s key (the core re-checks that the host presents it), then test ``retest`` again."""
        again = retest or owner
        return run_task(
            tasks.trust_host,
            self.config_dir,
            owner,
            fingerprint,
            replace_key,
            on_result=lambda result: self._pinned(owner, result, again),
            on_error=lambda e: self._set_outcome(again, CheckOutcome("failed", "key not pinned", describe_error(e))),
            name=f"trust {owner}",
            owner=self,
        )

    def _pinned(self, owner: str, result: TrustResult, retest: str) -> None:
        self.statusMessage.emit(f"{owner}: pinned {result.key_type} {result.fingerprint}")
        self.test_host(retest)

    # -- editing ---------------------------------------------------------------------------------
    def open_add_dialog(self) -> HostDialog:
        return self._open_host_dialog(None)

    def open_edit_dialog(self) -> HostDialog | None:
        host = self.current_host()
        return self._open_host_dialog(host) if host is not None else None

    def _open_host_dialog(self, host: Host | None) -> HostDialog:
        names = [h.name for h in self.model.hosts()]
        dialog = HostDialog(self.config_dir, names, host, self)
        self.host_dialog = dialog
        dialog.saved.connect(lambda hosts: self._changed(hosts, dialog.name_edit.text().strip()))
        dialog.open()
        return dialog

    def _changed(self, hosts: list[Host], select: str | None = None) -> None:
        self.set_hosts(hosts)
        if select:
            self.select_host(select)

    def open_import_dialog(self, kind: str, path: Path | None = None) -> ImportDialog:
        dialog = ImportDialog(self.config_dir, kind, path, self)
        self.import_dialog = dialog
        dialog.imported.connect(self._imported)
        dialog.open()
        return dialog

    def _imported(self, hosts: list[Host]) -> None:
        self.set_hosts(hosts)
        self.statusMessage.emit(f"inventory: {len(hosts)} hosts")

    def open_password_dialog(self) -> PasswordDialog | None:
        host = self.current_host()
        if host is None:
            return None
        dialog = PasswordDialog(host.name, self)
        self.password_dialog = dialog
        dialog.accepted.connect(lambda: self._password_stored(host.name))
        dialog.open()
        return dialog

    def _password_stored(self, name: str) -> None:
        self.statusMessage.emit(f"{name}: password stored in the OS keyring")
        self._selection_changed()

    def confirm_remove(self) -> QMessageBox | None:
        host = self.current_host()
        if host is None:
            return None
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Remove host",
            f"Remove {host.name} ({host.address}) from the inventory? Deployments on it are not touched.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        self.remove_box = box
        yes = box.button(QMessageBox.StandardButton.Yes)
        box.buttonClicked.connect(lambda button: self._remove(host.name) if button is yes else None)
        box.open()
        return box

    def _remove(self, name: str) -> TaskHandle:
        return run_task(
            tasks.remove_host,
            self.config_dir,
            name,
            on_result=self._changed,
            on_error=lambda e: self.banner.show_message(describe_error(e)),
            name=f"remove {name}",
            owner=self,
        )
