"""The Deployments page: a table of deployments refreshed off the UI thread, their actions, and Try it.

The table refreshes every few seconds through a worker (a refresh never overlaps the previous
one); Start/Stop/Rollback/Undeploy run in workers too and report inline, never modally.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from modeldeck.core.targets.base import DeploymentStatus, Target
from modeldeck.core.targets.health import HttpAnswer
from modeldeck.gui import style
from modeldeck.gui.deploy import tasks
from modeldeck.gui.deploy.models import DeploymentTableModel
from modeldeck.gui.deploy.tasks import pretty_json
from modeldeck.gui.registry.models import ObjectRole, RawRole
from modeldeck.gui.widgets import MessageBanner
from modeldeck.gui.workers import Channel, TaskHandle, describe_error, run_task
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

REFRESH_MS = 3000


def _mono_editor(read_only: bool) -> QPlainTextEdit:
    edit = QPlainTextEdit()
    edit.setReadOnly(read_only)
    edit.setFont(style.monospace_font())
    edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
    edit.setTabChangesFocus(True)
    return edit


class TryItPanel(QWidget):
    """Send a request (pre-filled with the deployment's input example) and show the answer."""

    answered = Signal(object)  # HttpAnswer
    requestFailed = Signal(str)

    def __init__(self, target: Target, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.target = target
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

    def set_deployment(self, status: DeploymentStatus | None) -> None:
        """Show ``status`` (None: nothing selected); a new deployment reloads its example."""
        previous = self.status
        self.status = status
        if status is None:
            self.endpoint_label.setText("Select a deployment.")
        else:
            where = status.endpoint or "no endpoint"
            self.endpoint_label.setText(f"POST {where}/invocations  ·  {status.name} ({status.state})")
        if status is not None and (previous is None or previous.name != status.name):
            self.request_edit.clear()
            self.response_view.clear()
            self.response_status.clear()
            run_task(
                tasks.input_example_text,
                self.target,
                status.name,
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

    def __init__(self, target: Target, name: str, parent: QWidget | None = None, lines: int = 500) -> None:
        super().__init__(parent)
        self.target, self.name, self.lines = target, name, lines
        self.setWindowTitle(f"Logs — {name}")
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
            self.target.logs,
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

    refreshed = Signal(list)  # list[DeploymentStatus]
    operationFinished = Signal(str, object)  # verb, result
    operationFailed = Signal(str, str)  # verb, message
    statusMessage = Signal(str)

    def __init__(self, target: Target, parent: QWidget | None = None, *, refresh_ms: int = REFRESH_MS) -> None:
        super().__init__(parent)
        self.target = target
        self._refreshing: TaskHandle | None = None
        self._busy: set[str] = set()  # deployments with an operation in flight
        self._select_after_refresh: str | None = None
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
        self.start_button.setToolTip("Start the stopped deployment again (health-checked)")
        self.stop_button.setToolTip("Drain and stop the runtime; it stays installed")
        self.rollback_button.setToolTip("Switch back to the previous release (health-checked, start-first)")
        self.undeploy_button.setToolTip("Stop the deployment and remove its releases and logs")
        for b in (
            self.refresh_button,
            self.start_button,
            self.stop_button,
            self.rollback_button,
            self.undeploy_button,
            self.logs_button,
        ):
            head.addWidget(b)
        left_layout.addLayout(head)

        self.table_model = DeploymentTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.table_model)
        self.proxy.setSortRole(RawRole)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setItemDelegateForColumn(DeploymentTableModel.STATE, StateDelegate(self.view))
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setAlternatingRowColors(True)
        self.view.setShowGrid(False)
        self.view.setWordWrap(False)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(DeploymentTableModel.NAME, Qt.SortOrder.AscendingOrder)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.view.horizontalHeader()
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in ((0, 150), (1, 150), (2, 70), (3, 90), (4, 200)):
            self.view.setColumnWidth(col, width)
        self.empty_label = QLabel("No deployments yet. Select a version in the Registry and choose “Deploy locally…”.")
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

        self.try_it = TryItPanel(self.target)
        splitter.addWidget(self.try_it)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([820, 520])

        self.refresh_button.clicked.connect(self.refresh)
        self.start_button.clicked.connect(lambda: self._operate("start"))
        self.stop_button.clicked.connect(lambda: self._operate("stop"))
        self.rollback_button.clicked.connect(lambda: self._operate("rollback"))
        self.undeploy_button.clicked.connect(self._confirm_undeploy)
        self.logs_button.clicked.connect(self.show_logs)
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
            self.refresh()

    def refresh(self, *, select: str | None = None) -> None:
        """Reload the listing in a worker, unless a refresh is still in flight (then just wait for it).

        ``select`` names a deployment to select once the listing arrives (e.g. one just deployed).
        """
        if select is not None:
            self._select_after_refresh = select
        if self._refreshing is not None and not self._refreshing.done:
            self._refresh_again = True  # an explicit request wants data newer than the one in flight
            return
        self._refreshing = run_task(
            tasks.statuses,
            self.target,
            on_result=self._refreshed,
            on_error=self._refresh_failed,
            name="refresh deployments",
            owner=self,
        )

    def _refreshed(self, statuses: list[DeploymentStatus]) -> None:
        self.table_model.set_statuses(statuses)
        if self._select_after_refresh is not None and self.select(self._select_after_refresh):
            self._select_after_refresh = None
        if self._refresh_again:  # something changed while this refresh was in flight
            self._refresh_again = False
            QTimer.singleShot(0, self.refresh)
        running = sum(s.state == "running" for s in statuses)
        self.footer.setText(
            f"{len(statuses)} deployment{'s' * (len(statuses) != 1)}, {running} running  ·  "
            f"refreshed {time.strftime('%H:%M:%S')}"
        )
        if self.view.currentIndex().row() < 0 and statuses:
            self.view.selectRow(0)
        self._selection_changed()
        self.refreshed.emit(statuses)

    def _refresh_failed(self, error: BaseException) -> None:
        self.banner.show_message(f"Could not list deployments: {describe_error(error)}", action=self.refresh)

    # -- selection & actions ---------------------------------------------------------------------
    def current_status(self) -> DeploymentStatus | None:
        index = self.view.currentIndex()
        return index.data(ObjectRole) if index.isValid() else None

    def select(self, name: str) -> bool:
        row = self.table_model.row_of(name)
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
        busy = s is not None and s.name in self._busy
        running = s is not None and s.state in ("running", "starting", "unknown")
        self.start_button.setEnabled(s is not None and not busy and not running)
        self.stop_button.setEnabled(s is not None and not busy and running)
        self.rollback_button.setEnabled(s is not None and not busy and bool(s.previous_release_id))
        self.undeploy_button.setEnabled(s is not None and not busy)
        self.logs_button.setEnabled(s is not None)
        if s is None:
            self.details.setText("")
        else:
            extra = f" — {s.message}" if s.message else ""
            self.details.setText(
                f"{s.name}: release {s.release_id or '-'}, previous {s.previous_release_id or '-'}, "
                f"bundle {(s.bundle_sha256 or '-')[:12]}, pid {s.pid or '-'}{extra}"
            )
        self.try_it.set_deployment(s)

    def _operate(self, verb: str, name: str | None = None) -> TaskHandle | None:
        status = (
            self.current_status()
            if name is None
            else next((s for s in self.table_model.statuses() if s.name == name), None)
        )
        if status is None:
            return None
        name = status.name
        fn = getattr(self.target, verb, None)
        if fn is None:
            self.banner.show_message(f"This target cannot {verb} a deployment.")
            return None
        self._busy.add(name)
        self._selection_changed()
        self.statusMessage.emit(f"{verb.capitalize()} {name}…")

        def done(result: Any) -> None:
            self._busy.discard(name)
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
            self._busy.discard(name)
            text = describe_error(error)
            self.banner.show_message(f"{verb.capitalize()} {name} failed: {text}")
            self.operationFailed.emit(verb, text)
            self._selection_changed()
            self.refresh()

        return run_task(
            tasks.operate, self.target, verb, name, on_result=done, on_error=failed, name=f"{verb} {name}", owner=self
        )

    def _confirm_undeploy(self) -> None:
        s = self.current_status()
        if s is None:
            return
        self.banner.show_message(
            f"Undeploy {s.name}? This stops it and removes all its releases and logs.",
            kind="warning",
            action_text="Undeploy",
            action=lambda: self._operate("undeploy", s.name),
        )

    def show_logs(self) -> LogViewer | None:
        s = self.current_status()
        if s is None:
            return None
        viewer = LogViewer(self.target, s.name, self)
        self.log_viewers.append(viewer)
        viewer.finished.connect(lambda _r: self.log_viewers.remove(viewer) if viewer in self.log_viewers else None)
        viewer.open()
        return viewer
