"""The Deployments page: the deployments of every known target, their actions, and Try it.

The table lists the local target and every target in the catalog (remembered deploys, inventory
hosts), refreshed every few seconds through a worker that asks all targets concurrently under
one deadline -- a target that cannot be asked is one "unreachable" row with its reason. A
refresh never overlaps the previous one, and a superseded one is dropped. Start/Stop/Rollback/
Undeploy/Logs/Try it go to the selected row's own target, in workers, and report inline.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modeldeck.core.targets.base import DeploymentStatus, Target
from modeldeck.core.targets.catalog import TargetListing
from modeldeck.core.targets.health import HttpAnswer
from modeldeck.gui import style
from modeldeck.gui.deploy import tasks
from modeldeck.gui.deploy.models import DeploymentRow, DeploymentTableModel, TargetRole, target_label
from modeldeck.gui.deploy.tasks import TargetPool
from modeldeck.gui.registry.models import ObjectRole, RawRole
from modeldeck.gui.widgets import MessageBanner, pretty_json, sortable_table
from modeldeck.gui.workers import Channel, TaskHandle, describe_error, run_task
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

REFRESH_MS = 3000
REMOTE_REFRESH_MS = 15_000  # remote targets (a connection each) are asked this often; explicit refreshes ask all
LIST_TIMEOUT_S = 8.0  # a target silent this long is shown as unreachable


def _mono_editor(read_only: bool) -> QPlainTextEdit:
    edit = QPlainTextEdit()
    edit.setReadOnly(read_only)
    edit.setFont(style.monospace_font())
    edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
    edit.setTabChangesFocus(True)
    return edit


ROLLBACK_TIP = "Switch back to the previous release (health-checked, start-first)"


class TryItPanel(QWidget):
    """Send a request (pre-filled with the deployment's input example) and show the answer."""

    answered = Signal(object)  # HttpAnswer
    requestFailed = Signal(str)

    def __init__(self, pool: TargetPool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pool = pool
        self.target_url = pool.primary.url
        self.status: DeploymentStatus | None = None
        self._example_channel = Channel("input example")
        self._send_channel = Channel("try it")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 0, 0, 0)
        layout.setSpacing(6)
        title = QLabel("Try it")
        title.setProperty("role", "pane-title")
        title.setMinimumHeight(QPushButton("Send").sizeHint().height())  # level with the table's button row
        self.endpoint_label = QLabel("Select a deployment.")
        self.endpoint_label.setProperty("role", "muted")
        self.endpoint_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(title)
        layout.addWidget(self.endpoint_label)

        request_label = QLabel("Request body (JSON)")
        self.request_edit = _mono_editor(read_only=False)
        self.request_edit.setPlaceholderText('{"dataframe_split": {"columns": [...], "data": [[...]]}}')
        request_label.setBuddy(self.request_edit)
        self.request_error = QLabel()
        self.request_error.setWordWrap(True)
        self.request_error.setStyleSheet(f"color: {style.ERROR_FG};")
        self.request_error.hide()
        buttons = QHBoxLayout()
        self.reset_button = QPushButton("Reset to example")
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        buttons.addWidget(self.send_button)
        layout.addWidget(request_label)
        layout.addWidget(self.request_edit, 2)
        layout.addWidget(self.request_error)
        layout.addLayout(buttons)

        response_head = QHBoxLayout()
        response_label = QLabel("Response")
        self.response_status = QLabel()
        bold = self.response_status.font()
        bold.setBold(True)
        self.response_status.setFont(bold)  # fixed here: a bold set later by style sheet would not resize it
        self.response_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        response_head.addWidget(response_label)
        response_head.addStretch(1)
        response_head.addWidget(self.response_status)
        self.response_view = _mono_editor(read_only=True)
        self.response_view.setPlaceholderText("The answer appears here.")
        layout.addLayout(response_head)
        layout.addWidget(self.response_view, 3)

        self._example_text = ""
        self.send_button.clicked.connect(self.send)
        self.reset_button.clicked.connect(self._reset_example)
        self.request_edit.textChanged.connect(self.request_error.hide)
        from PySide6.QtGui import QKeySequence, QShortcut

        shortcut = QShortcut(QKeySequence("Ctrl+Return"), self.request_edit)
        shortcut.activated.connect(self.send)
        self._update_enabled()

    def set_deployment(self, status: DeploymentStatus | None, target_url: str | None = None) -> None:
        """Show ``status`` on the target listed as ``target_url`` (None: nothing selected).

        A different deployment reloads its input example.
        """
        previous, previous_url = self.status, self.target_url
        self.status = status
        self.target_url = target_url or self.pool.primary.url
        if status is None:
            self.endpoint_label.setText("Select a deployment.")
            self.request_edit.clear()
            self.response_view.clear()
            self.response_status.clear()
        else:
            where = status.endpoint or "no endpoint"
            self.endpoint_label.setText(f"POST {where}/invocations  ·  {status.name} ({status.state})")
        if status is not None and (previous is None or previous.name != status.name or previous_url != self.target_url):
            self.request_edit.clear()
            self.response_view.clear()
            self.response_status.clear()
            run_task(
                tasks.example_of,
                self.pool,
                self.target_url,
                status.name,
                status.bundle_sha256,
                on_result=self._example_loaded,
                on_error=lambda e: self._show_request_error(f"Could not read the input example: {describe_error(e)}"),
                channel=self._example_channel,
                name="load input example",
                owner=self,
            )
        self._update_enabled()

    def send(self) -> TaskHandle | None:
        """Validate the editor's JSON and send it in a worker; invalid JSON is an inline error, nothing is sent."""
        if self.status is None or not self.status.endpoint or not self.send_button.isEnabled():
            return None  # nothing selected, stopped, or a request already in flight
        text = self.request_edit.toPlainText()
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            self._show_request_error(f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}. Nothing sent.")
            return None
        self.request_error.hide()
        self.response_status.setStyleSheet(f"color: {style.MUTED};")
        self.response_status.setText("Sending…")
        self.send_button.setEnabled(False)
        return run_task(
            tasks.send_request,
            self.status.endpoint,
            body,
            on_result=self._answered,
            on_error=self._failed,
            channel=self._send_channel,
            name="try it",
            owner=self,
        )

    # -- callbacks -------------------------------------------------------------------------------
    def _example_loaded(self, text: str) -> None:
        self._example_text = text
        self.request_edit.setPlainText(text)
        self.request_error.hide()

    def _reset_example(self) -> None:
        self.request_edit.setPlainText(self._example_text)

    def _show_request_error(self, text: str) -> None:
        self.request_error.setText(text)
        self.request_error.show()

    def _answered(self, answer: HttpAnswer) -> None:
        self._update_enabled()
        colour = style.OK_FG if answer.ok else style.ERROR_FG
        self.response_status.setStyleSheet(f"color: {colour};")
        self.response_status.setText(f"HTTP {answer.status}  ·  {answer.elapsed_s * 1000:.1f} ms")
        pretty = pretty_json(answer.body) if answer.body is not None else answer.text
        self.response_view.setPlainText(pretty)
        self.answered.emit(answer)

    def _failed(self, error: BaseException) -> None:
        self._update_enabled()
        text = describe_error(error)
        self.response_status.setStyleSheet(f"color: {style.ERROR_FG};")
        self.response_status.setText("No answer")
        self.response_view.setPlainText(text)
        self.requestFailed.emit(text)

    def _update_enabled(self) -> None:
        ok = self.status is not None and bool(self.status.endpoint) and self.status.state != "stopped"
        self.send_button.setEnabled(ok)
        self.send_button.setToolTip(
            "POST the body to the deployment's /invocations (Ctrl+Enter)"
            if ok or self.status is None
            else "The deployment is stopped: start it first"
        )
        self.reset_button.setEnabled(ok)
        self.request_edit.setEnabled(self.status is not None)


class LogViewer(QDialog):
    """The tail of a deployment's runtime log, loaded in a worker (Refresh reloads it)."""

    def __init__(
        self, pool: TargetPool, target_url: str, name: str, parent: QWidget | None = None, lines: int = 500
    ) -> None:
        super().__init__(parent)
        self.pool, self.target_url, self.name, self.lines = pool, target_url, name, lines
        self.setWindowTitle(f"Logs — {name} on {target_label(target_url)}")
        self.resize(900, 520)
        layout = QVBoxLayout(self)
        self.info = QLabel(f"Last {lines} lines of the runtime log of {name}")
        self.info.setProperty("role", "muted")
        self.text = _mono_editor(read_only=True)
        self.text.setPlaceholderText("Loading…")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.refresh_button = buttons.addButton("Refresh", QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        self.refresh_button.clicked.connect(self.reload)
        layout.addWidget(self.info)
        layout.addWidget(self.text, 1)
        layout.addWidget(buttons)
        self._channel = Channel("logs")
        self.reload()

    def reload(self) -> None:
        run_task(
            tasks.logs_of,
            self.pool,
            self.target_url,
            self.name,
            self.lines,
            on_result=self._loaded,
            on_error=lambda e: self.text.setPlainText(describe_error(e)),
            channel=self._channel,
            name="load logs",
            owner=self,
        )

    def _loaded(self, text: str) -> None:
        self.text.setPlainText(text or "(the log is empty)")
        bar = self.text.verticalScrollBar()
        bar.setValue(bar.maximum())


class StateDelegate(QStyledItemDelegate):
    """Draws the state as a coloured chip, readable on selected rows too."""

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        fg = index.data(Qt.ItemDataRole.ForegroundRole)
        bg = index.data(Qt.ItemDataRole.BackgroundRole)
        text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        plain = QStyleOptionViewItem(option)
        self.initStyleOption(plain, index)
        plain.text = ""
        plain.backgroundBrush = QBrush()
        style_ = option.widget.style() if option.widget is not None else QApplication.style()
        style_.drawControl(QStyle.ControlElement.CE_ItemViewItem, plain, painter, option.widget)
        if not text or fg is None or bg is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        metrics = option.fontMetrics
        rect = option.rect.adjusted(4, 4, 0, -4)
        rect.setWidth(metrics.horizontalAdvance(text) + 16)
        painter.setPen(QPen(QColor(fg).lighter(170), 1))
        painter.setBrush(QColor(bg))
        painter.drawRoundedRect(rect, 4, 4)
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor(fg))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()


class DeploymentsPage(QWidget):
    """Table of deployments (left), Try it (right), actions above the table."""

    refreshed = Signal(list)  # list[DeploymentStatus] of the primary (local) target
    listed = Signal(list)  # list[TargetListing] of every target
    operationFinished = Signal(str, object)  # verb, result
    operationFailed = Signal(str, str)  # verb, message
    statusMessage = Signal(str)

    def __init__(
        self,
        target: Target,
        parent: QWidget | None = None,
        *,
        refresh_ms: int = REFRESH_MS,
        extra_targets: Callable[[], list[str]] | None = None,
        deployments_dir: Path | None = None,
        bundles_dir: Path | None = None,
        list_timeout_s: float = LIST_TIMEOUT_S,
        remote_refresh_ms: int = REMOTE_REFRESH_MS,
    ) -> None:
        """``target`` is the primary (local) target; ``extra_targets`` returns the URLs of the others
        (called in the refresh worker, e.g. :func:`tasks.catalog_urls`)."""
        super().__init__(parent)
        self.target = target
        self.pool = TargetPool(
            target, deployments_dir=deployments_dir, bundles_dir=bundles_dir, extra_urls=extra_targets
        )
        self.list_timeout_s = list_timeout_s
        self.remote_refresh_s = remote_refresh_ms / 1000
        self._remote_due = 0.0  # monotonic time the next periodic refresh asks the remote targets too
        self._last_listings: list[TargetListing] = []
        self._refreshing: TaskHandle | None = None
        self._refresh_channel = Channel("deployments")
        self._scrapes: dict[str, Any] = {}
        self._busy: set[tuple[str, str]] = set()  # (target URL, deployment) with an operation in flight
        self._select_after_refresh: tuple[str, str | None] | None = None
        self._refresh_again = False
        self.log_viewers: list[LogViewer] = []
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(refresh_ms)
        self.timer.timeout.connect(self._tick)

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.setSpacing(6)
        self.banner = MessageBanner()
        outer.addWidget(self.banner)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        outer.addWidget(splitter, 1)

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 4, 0)
        head = QHBoxLayout()
        title = QLabel("Deployments")
        title.setProperty("role", "pane-title")
        head.addWidget(title, 1)
        self.refresh_button = QPushButton("Refresh")
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.rollback_button = QPushButton("Rollback")
        self.undeploy_button = QPushButton("Undeploy…")
        self.logs_button = QPushButton("Logs…")
        self.forget_button = QPushButton("Forget target")
        self.refresh_button.setToolTip("Ask every target for its deployments now (F5)")
        self.forget_button.setToolTip("Stop listing this target here (its deployments are not touched)")
        self.start_button.setToolTip("Start the stopped deployment again (health-checked)")
        self.stop_button.setToolTip("Drain and stop the runtime; it stays installed")
        self.rollback_button.setToolTip(ROLLBACK_TIP)
        self.undeploy_button.setToolTip("Stop the deployment and remove its releases and logs")
        for b in (
            self.refresh_button,
            self.start_button,
            self.stop_button,
            self.rollback_button,
            self.undeploy_button,
            self.logs_button,
            self.forget_button,
        ):
            head.addWidget(b)
        left_layout.addLayout(head)

        self.table_model = DeploymentTableModel(self)
        self.proxy, self.view = sortable_table(
            self.table_model,
            sort_role=RawRole,
            sort_column=DeploymentTableModel.TARGET,  # grouped by target
            # Sum 808: at the default window size the stretched Since column keeps ~100 px ("11-27 14:20")
            # with no scroll bar; Memory fits a container's "44.4 / 512.0 MiB", URL a full loopback endpoint.
            widths=(104, 96, 60, 110, 158, 100, 62, 118),
        )
        self.view.setItemDelegateForColumn(DeploymentTableModel.STATE, StateDelegate(self.view))
        self.empty_label = QLabel(
            "No deployments yet. Select a version in the Registry and choose “Deploy locally…”, “Deploy to hosts…” "
            "or “Deploy to Docker…”."
        )
        self.empty_label.setProperty("role", "empty")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.footer = QLabel()
        self.footer.setProperty("role", "muted")
        self.table_stack = QStackedWidget()
        self.table_stack.addWidget(self.view)
        self.table_stack.addWidget(self.empty_label)
        left_layout.addWidget(self.table_stack, 1)
        left_layout.addWidget(self.footer)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.setProperty("role", "muted")
        left_layout.addWidget(self.details)
        splitter.addWidget(left)

        self.try_it = TryItPanel(self.pool)
        splitter.addWidget(self.try_it)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([930, 410])

        self.refresh_button.clicked.connect(self.refresh)
        self.start_button.clicked.connect(lambda: self._operate("start"))
        self.stop_button.clicked.connect(lambda: self._operate("stop"))
        self.rollback_button.clicked.connect(lambda: self._operate("rollback"))
        self.undeploy_button.clicked.connect(self._confirm_undeploy)
        self.logs_button.clicked.connect(self.show_logs)
        self.forget_button.clicked.connect(self._confirm_forget)
        self.view.selectionModel().currentRowChanged.connect(self._selection_changed)
        self.table_model.dataChanged.connect(self._selection_changed)
        self.table_model.rowsInserted.connect(self._rows_changed)
        self.table_model.rowsRemoved.connect(self._rows_changed)
        self._rows_changed()

    # -- refresh ---------------------------------------------------------------------------------
    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh()
        self.timer.start()

    def hideEvent(self, event: Any) -> None:
        super().hideEvent(event)
        self.timer.stop()

    def _tick(self) -> None:
        """Periodic refresh: skipped while the previous one is still in flight (never overlapping)."""
        if self._refreshing is None or self._refreshing.done:
            self.refresh(remote=time.monotonic() >= self._remote_due)

    def refresh(
        self, *, select: str | None = None, target: str | None = None, restart: bool = False, remote: bool = True
    ) -> None:
        """Reload every target's listing in a worker, unless a refresh is in flight (then wait for it).

        ``select`` names a deployment (on ``target``, if given) to select once the listing arrives
        (e.g. one just deployed). ``restart`` drops the refresh in flight (its result would be
        stale, e.g. a target was forgotten) and starts a new one. ``remote`` False asks only the
        local target and keeps the other targets' last listings (the timer does that between full refreshes).
        """
        if select is not None:
            self._select_after_refresh = (select, target)
        if self._refreshing is not None and not self._refreshing.done and not restart:
            self._refresh_again = True  # an explicit request wants data newer than the one in flight
            return
        if remote:
            self._remote_due = time.monotonic() + self.remote_refresh_s
        self._refreshing = run_task(
            tasks.list_all,
            self.pool,
            dict(self._scrapes),
            timeout=self.list_timeout_s,
            primary_only=not remote,
            on_result=self._refreshed,
            on_error=self._refresh_failed,
            channel=self._refresh_channel,
            name="refresh deployments",
            owner=self,
        )

    def _refreshed(self, result: tasks.AllListings) -> None:
        listings: list[TargetListing] = result.listings
        if result.primary_only:  # keep the other targets' last answers
            asked = {listing.url for listing in listings}
            listings = listings + [old for old in self._last_listings if old.url not in asked]
        self._last_listings = listings
        listed = {s.endpoint for listing in listings for s in listing.statuses if s.endpoint}
        merged = {**self._scrapes, **result.scrapes}  # remote runtimes' scrapes are kept between their refreshes
        self._scrapes = {endpoint: scrape for endpoint, scrape in merged.items() if endpoint in listed}
        self.table_model.set_listings(listings)
        if self._select_after_refresh is not None and self.select(*self._select_after_refresh):
            self._select_after_refresh = None
        if self._refresh_again:  # something changed while this refresh was in flight
            self._refresh_again = False
            QTimer.singleShot(0, self.refresh)
        statuses = [s for listing in listings for s in listing.statuses]
        running = sum(s.state == "running" for s in statuses)
        unreachable = sum(not listing.reachable for listing in listings)
        where = f" on {len(listings)} target{'s' * (len(listings) != 1)}" if len(listings) > 1 else ""
        problems = f", {unreachable} unreachable" if unreachable else ""
        self.footer.setText(
            f"{len(statuses)} deployment{'s' * (len(statuses) != 1)}{where}, {running} running{problems}  ·  "
            f"refreshed {time.strftime('%H:%M:%S')}"
        )
        if self.view.currentIndex().row() < 0 and self.table_model.rowCount():
            self.view.selectRow(0)
        self._selection_changed()
        primary = next((listing for listing in listings if listing.url == self.pool.primary.url), None)
        self.refreshed.emit(list(primary.statuses) if primary is not None else [])
        self.listed.emit(listings)

    def _refresh_failed(self, error: BaseException) -> None:
        self.banner.show_message(f"Could not list deployments: {describe_error(error)}", action=self.refresh)

    # -- selection & actions ---------------------------------------------------------------------
    def current_status(self) -> DeploymentStatus | None:
        index = self.view.currentIndex()
        return index.data(ObjectRole) if index.isValid() else None

    def current_row(self) -> DeploymentRow | None:
        index = self.view.currentIndex()
        return self.table_model.row_at(self.proxy.mapToSource(index).row()) if index.isValid() else None

    def current_target_url(self) -> str:
        index = self.view.currentIndex()
        return str(index.data(TargetRole)) if index.isValid() else self.pool.primary.url

    def select(self, name: str, target: str | None = None) -> bool:
        """Select deployment ``name`` (on the target listed as ``target``, else on any); False if not listed."""
        row = self.table_model.row_of(name, target)
        if row < 0:
            return False
        self.view.selectRow(self.proxy.mapFromSource(self.table_model.index(row, 0)).row())
        return True

    def _rows_changed(self, *_: Any) -> None:
        empty = self.table_model.rowCount() == 0
        self.table_stack.setCurrentWidget(self.empty_label if empty else self.view)
        self._selection_changed()

    def _selection_changed(self, *_: Any) -> None:
        s = self.current_status()
        url = self.current_target_url()
        row = self.current_row()
        busy = s is not None and (url, s.name) in self._busy
        running = s is not None and s.state in ("running", "starting", "unknown")
        self.start_button.setEnabled(s is not None and not busy and not running)
        self.stop_button.setEnabled(s is not None and not busy and running)
        self.rollback_button.setEnabled(s is not None and not busy and bool(s.previous_release_id))
        self.rollback_button.setToolTip(
            ROLLBACK_TIP
            if s is None or s.previous_release_id
            else f"{ROLLBACK_TIP} — {s.name} has no previous release yet (it was deployed once)"
        )
        self.undeploy_button.setEnabled(s is not None and not busy)
        self.logs_button.setEnabled(s is not None)
        self.forget_button.setVisible(
            row is not None and row.target != self.pool.primary.url and not self.pool.is_inventory_host(row.target)
        )
        if s is None:
            text = ""
            if row is not None and row.error:
                text = f"{target_label(row.target)} is unreachable: {row.error}"
                host = self.pool.host_name(row.target)
                if host and "host key" in row.error:
                    # the hint names the CLI's --accept-host-key; in the app a key is trusted on the Hosts page
                    text += f"\nIn the app: on the Hosts page, select “{host}” and press Test to review its key."
            self.details.setText(text)
        else:
            extra = f" — {s.message}" if s.message else ""
            previous = f"previous {s.previous_release_id}" if s.previous_release_id else "no previous release"
            self.details.setText(
                f"{s.name}: release {s.release_id or '-'}, {previous}, "
                f"bundle {(s.bundle_sha256 or '-')[:12]}{f', pid {s.pid}' if s.pid else ''}{extra}"
            )
        self.try_it.set_deployment(s, url)

    def _operate(self, verb: str, name: str | None = None, target: str | None = None) -> TaskHandle | None:
        """Run ``verb`` on deployment ``name`` of the target listed as ``target`` (default: the selected row)."""
        if name is None:
            status, url = self.current_status(), self.current_target_url()
        else:
            at = self.table_model.row_of(name, target)
            row = self.table_model.row_at(at)
            status, url = (row.status, row.target) if row is not None else (None, "")
        if status is None:
            return None
        name = status.name
        key = (url, name)
        self._busy.add(key)
        self._selection_changed()
        self.statusMessage.emit(f"{verb.capitalize()} {name}…")

        def done(result: Any) -> None:
            self._busy.discard(key)
            ok = getattr(result, "ok", True)
            message = getattr(result, "message", "") or ""
            if not ok:
                self.banner.show_message(f"{verb.capitalize()} {name}: {result.outcome}: {message}")
            else:
                self.banner.hide()
            self.statusMessage.emit(f"{name}: {getattr(result, 'outcome', verb + ' done')}")
            self.operationFinished.emit(verb, result)
            self._selection_changed()
            self.refresh()

        def failed(error: BaseException) -> None:
            self._busy.discard(key)
            text = describe_error(error)
            self.banner.show_message(f"{verb.capitalize()} {name} failed: {text}")
            self.operationFailed.emit(verb, text)
            self._selection_changed()
            self.refresh()

        return run_task(
            tasks.operate_on,
            self.pool,
            url,
            verb,
            name,
            on_result=done,
            on_error=failed,
            name=f"{verb} {name} on {url}",
            owner=self,
        )

    def _confirm_undeploy(self) -> None:
        s = self.current_status()
        if s is None:
            return
        url = self.current_target_url()
        where = "" if url == self.pool.primary.url else f" on {url}"
        self.banner.show_message(
            f"Undeploy {s.name}{where}? This stops it and removes all its releases and logs.",
            kind="warning",
            action_text="Undeploy",
            action=lambda: self._operate("undeploy", s.name, url),
        )

    def _confirm_forget(self) -> None:
        row = self.current_row()
        if row is None or row.target == self.pool.primary.url:
            return
        self.banner.show_message(
            f"Stop listing {row.target} here? Its deployments keep running; deploying to it lists it again.",
            kind="warning",
            action_text="Forget",
            action=lambda: self.forget_target(row.target),
        )

    def forget_target(self, url: str) -> TaskHandle:
        """Remove ``url`` from the catalog (in a worker), then list again without it."""
        from modeldeck.core.targets import catalog

        def forgotten(_was_known: bool) -> None:
            self.pool.drop(url)
            self.statusMessage.emit(f"Forgot target {url}")
            self.refresh(restart=True)

        return run_task(
            catalog.forget,
            url,
            on_result=forgotten,
            on_error=lambda e: self.banner.show_message(f"Could not forget {url}: {describe_error(e)}"),
            name=f"forget {url}",
            owner=self,
        )

    def show_logs(self) -> LogViewer | None:
        s = self.current_status()
        if s is None:
            return None
        viewer = LogViewer(self.pool, self.current_target_url(), s.name, self)
        self.log_viewers.append(viewer)
        viewer.finished.connect(lambda _r: self.log_viewers.remove(viewer) if viewer in self.log_viewers else None)
        viewer.open()
        return viewer
