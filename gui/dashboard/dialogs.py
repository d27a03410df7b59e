"""Dialogs of the Monitor page: add a metrics endpoint, monitoring settings, and the load generator.

All validate inline (the OK/Start button stays usable; a click on invalid input
shows why next to the field) and never block: the load generator runs in a
worker, reports progress, and its Cancel stops it within a request timeout.
"""

from __future__ import annotations

from typing import Any

from modeldeck.core.errors import ConfigError
from modeldeck.core.monitor.config import MonitorConfig, validate_metrics_url, validate_prometheus_url
from modeldeck.core.monitor.loadgen import MAX_CONCURRENCY, MAX_COUNT, MAX_DURATION_S, LoadPlan, LoadResult, run_load
from modeldeck.gui import style
from modeldeck.gui.workers import TaskHandle, describe_error, run_task
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)


def _error_label() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setStyleSheet(f"color: {style.ERROR_FG};")
    label.hide()
    return label


class AddEndpointDialog(QDialog):
    """Name + URL of any Prometheus-format endpoint; ``chosen()`` is (name, normalised URL) once accepted."""

    def __init__(self, taken: set[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add metrics endpoint")
        self.taken = taken
        self._chosen: tuple[str, str] | None = None
        layout = QVBoxLayout(self)
        intro = QLabel("Monitor any page in Prometheus text format, e.g. a runtime started by hand or an exporter.")
        intro.setWordWrap(True)
        intro.setProperty("role", "muted")
        layout.addWidget(intro)
        form = QFormLayout()
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("http://127.0.0.1:8080/metrics")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("defaults to host:port")
        form.addRow("&URL", self.url_edit)
        form.addRow("&Name", self.name_edit)
        layout.addLayout(form)
        self.error = _error_label()
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Add")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.url_edit.textChanged.connect(self.error.hide)
        self.name_edit.textChanged.connect(self.error.hide)
        self.resize(520, self.sizeHint().height())

    def accept(self) -> None:
        try:
            url = validate_metrics_url(self.url_edit.text())
        except ConfigError as exc:
            self._show(describe_error(exc))
            return
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        name = self.name_edit.text().strip() or f"{parts.hostname}:{parts.port or 80}"
        if name in self.taken:
            self._show(f"{name!r} is already monitored: choose another name.")
            return
        self._chosen = (name, url)
        super().accept()

    def chosen(self) -> tuple[str, str] | None:
        return self._chosen

    def _show(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()


class MonitorSettingsDialog(QDialog):
    """Prometheus server mode and the optional SQLite history."""

    def __init__(self, config: MonitorConfig, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Monitoring settings")
        self.config = config
        self._chosen: MonitorConfig | None = None
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.prometheus_edit = QLineEdit(config.prometheus_url or "")
        self.prometheus_edit.setPlaceholderText("empty: scrape deployments directly")
        self.prometheus_edit.setToolTip(
            "With a Prometheus server, the detail plots query it (query_range) instead of ModelDeck's own scrapes"
        )
        self.history_box = QCheckBox("Keep history in a local SQLite file (for review after a restart)")
        self.history_box.setChecked(config.history)
        self.retention_spin = QDoubleSpinBox()
        self.retention_spin.setRange(0.1, 365)
        self.retention_spin.setSuffix(" days")
        self.retention_spin.setValue(config.history_retention_days)
        self.rows_spin = QSpinBox()
        self.rows_spin.setRange(1_000, 50_000_000)
        self.rows_spin.setSingleStep(100_000)
        self.rows_spin.setGroupSeparatorShown(True)
        self.rows_spin.setValue(config.history_max_rows)
        form.addRow("&Prometheus server", self.prometheus_edit)
        form.addRow("", self.history_box)
        form.addRow("History &retention", self.retention_spin)
        form.addRow("History max &rows", self.rows_spin)
        layout.addLayout(form)
        self.error = _error_label()
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.prometheus_edit.textChanged.connect(self.error.hide)
        self.resize(560, self.sizeHint().height())

    def accept(self) -> None:
        try:
            url = validate_prometheus_url(self.prometheus_edit.text())
        except ConfigError as exc:
            self.error.setText(describe_error(exc))
            self.error.show()
            return
        self._chosen = MonitorConfig(
            **{
                **self.config.__dict__,
                "prometheus_url": url,
                "history": self.history_box.isChecked(),
                "history_retention_days": self.retention_spin.value(),
                "history_max_rows": self.rows_spin.value(),
            }
        )
        super().accept()

    def chosen(self) -> MonitorConfig | None:
        return self._chosen


class LoadDialog(QDialog):
    """Send the deployment's input example at a bounded rate; Start, live progress, Cancel, then the summary."""

    finishedRun = Signal(object)  # LoadResult

    def __init__(self, name: str, base_url: str, body: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Generate load — {name}")
        self.name, self.base_url, self.body = name, base_url, body
        self.handle: TaskHandle | None = None
        self.outcome: LoadResult | None = None  # not `result`: QDialog.result() exists
        layout = QVBoxLayout(self)
        intro = QLabel(f"POST the input example to {base_url}/invocations, then stop.")
        intro.setProperty("role", "muted")
        intro.setWordWrap(True)
        intro.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(intro)
        form = QFormLayout()
        self.rate_spin = QDoubleSpinBox()
        self.rate_spin.setRange(0.1, 1000)
        self.rate_spin.setDecimals(1)
        self.rate_spin.setValue(20)
        self.rate_spin.setSuffix(" req/s")
        self.duration_spin = QSpinBox()
        self.duration_spin.setRange(1, int(MAX_DURATION_S))
        self.duration_spin.setValue(60)
        self.duration_spin.setSuffix(" s")
        self.count_spin = QSpinBox()
        self.count_spin.setRange(1, MAX_COUNT)
        self.count_spin.setGroupSeparatorShown(True)
        self.count_spin.setValue(1_200)
        self.concurrency_spin = QSpinBox()
        self.concurrency_spin.setRange(1, MAX_CONCURRENCY)
        self.concurrency_spin.setValue(2)
        form.addRow("&Rate", self.rate_spin)
        form.addRow("&Duration (max 10 min)", self.duration_spin)
        form.addRow("&At most", self.count_spin)
        form.addRow("&Concurrency", self.concurrency_spin)
        layout.addLayout(form)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        buttons = QDialogButtonBox()
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.close_button = QPushButton("Close")
        buttons.addButton(self.start_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.close_button, QDialogButtonBox.ButtonRole.RejectRole)
        layout.addWidget(buttons)
        self.cancel_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.reject)
        self.rate_spin.valueChanged.connect(self._suggest_count)
        self.duration_spin.valueChanged.connect(self._suggest_count)

    def plan(self) -> LoadPlan:
        return LoadPlan(
            url=self.base_url,
            body=self.body,
            rate=self.rate_spin.value(),
            count=self.count_spin.value(),
            duration_s=float(self.duration_spin.value()),
            concurrency=self.concurrency_spin.value(),
        )

    def start(self) -> TaskHandle | None:
        if self.handle is not None and not self.handle.done:
            return None
        plan = self.plan()
        try:
            plan.validate()
        except ConfigError as exc:
            self._status(describe_error(exc), style.ERROR_FG)
            return None
        self.outcome = None
        self._running(True)
        self._status(f"Sending up to {plan.count:,} requests at {plan.rate:g}/s…", style.MUTED)
        self.handle = run_task(
            run_load,
            plan,
            on_result=self._done,
            on_error=self._failed,
            on_progress=self._progress,
            name=f"load {self.name}",
            owner=self,
        )
        return self.handle

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self._running(False)
        self._status("Cancelled.", style.MUTED)

    def reject(self) -> None:
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()
        super().reject()

    def _suggest_count(self, *_: Any) -> None:
        self.count_spin.setValue(min(MAX_COUNT, max(1, round(self.rate_spin.value() * self.duration_spin.value()))))

    def _running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in (self.rate_spin, self.duration_spin, self.count_spin, self.concurrency_spin):
            w.setEnabled(not running)
        self.progress.setVisible(running)
        self.progress.setValue(0)

    def _progress(self, message: str, fraction: float | None) -> None:
        if fraction is not None:
            self.progress.setValue(int(fraction * 1000))
        self._status(message, style.MUTED)

    def _done(self, result: LoadResult) -> None:
        self.outcome = result
        self._running(False)
        colour = style.OK_FG if result.errors == 0 else style.WARN_FG
        detail = f" — first error: {result.first_error}" if result.first_error else ""
        self._status(result.summary() + detail, colour)
        self.finishedRun.emit(result)

    def _failed(self, error: BaseException) -> None:
        self._running(False)
        self._status(describe_error(error), style.ERROR_FG)

    def _status(self, text: str, colour: str) -> None:
        self.status.setStyleSheet(f"color: {colour};")
        self.status.setText(text)
