"""The "Bundle…" and "Deploy locally…" dialogs for one registry version.

Both run their core call in a worker with a progress bar and a Cancel button, keep the
window usable, and show the outcome (or the error) inside the dialog itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modeldeck.core.errors import BundleError
from modeldeck.core.registry.types import ModelVersion
from modeldeck.core.settings import Settings
from modeldeck.core.targets.base import DeployOptions, DeployResult, Target
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.releases import name_from_model
from modeldeck.gui import style
from modeldeck.gui.deploy import tasks
from modeldeck.gui.widgets import MessageBanner
from modeldeck.gui.workers import TaskHandle, describe_error, run_task
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)


class _WorkDialog(QDialog):
    """Shared frame: a form, a progress area, an outcome area and Run/Cancel/Close buttons."""

    def __init__(self, title: str, run_text: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.handle: TaskHandle | None = None
        layout = QVBoxLayout(self)
        layout.setSpacing(8)
        self.heading = QLabel()
        self.heading.setProperty("role", "pane-title")
        self.heading.setWordWrap(True)
        layout.addWidget(self.heading)
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        layout.addLayout(self.form)
        self.banner = MessageBanner()
        layout.addWidget(self.banner)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setMaximumHeight(10)
        self.progress.setStyleSheet(
            f"QProgressBar {{ border: 1px solid {style.BORDER}; border-radius: 4px; background: {style.BASE}; }}"
            f"QProgressBar::chunk {{ background: {style.ACCENT}; border-radius: 3px; }}"
        )
        self.step_label = QLabel()
        self.step_label.setProperty("role", "muted")
        self.step_label.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.step_label)
        self.progress.hide()
        self.step_label.hide()
        self.outcome = QLabel()
        self.outcome.setWordWrap(True)
        self.outcome.hide()
        layout.addWidget(self.outcome)
        self.report = QPlainTextEdit()
        self.report.setReadOnly(True)
        self.report.setFont(style.monospace_font())
        self.report.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.report.setMinimumHeight(150)
        self.report.hide()
        layout.addWidget(self.report, 1)
        self.buttons = QDialogButtonBox()
        self.run_button = self.buttons.addButton(run_text, QDialogButtonBox.ButtonRole.AcceptRole)
        self.run_button.setDefault(True)
        self.cancel_button = self.buttons.addButton("Cancel", QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(640)

    # subclasses: validate the form, start the task and return its handle (or None if invalid)
    def _start_task(self) -> TaskHandle | None:
        raise NotImplementedError

    def _form_widgets(self) -> list[QWidget]:
        return []

    def _fit_height(self) -> None:
        """Grow (never shrink) to the height the content now needs, e.g. after a banner appeared."""
        layout = self.layout()
        if layout is not None:
            layout.activate()
        self.resize(self.width(), max(self.height(), self.sizeHint().height()))

    def _show_error(self, text: str) -> None:
        self.banner.show_message(text)
        self._fit_height()

    def _grow_for_report(self) -> None:
        """Room for the report once it is shown (the form alone is sized to its content)."""
        self.resize(max(self.width(), 860), max(self.height(), 600))

    def start(self) -> TaskHandle | None:
        self.banner.hide()
        self.outcome.hide()
        handle = self._start_task()
        if handle is None:
            return None
        self.handle = handle
        self._set_running(True)
        return handle

    def cancel(self) -> None:
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()
            self.step_label.setText("Cancelling…")
            # the worker reports Cancelled, which is not delivered; re-enable the form once it is done
            self._set_running(False)
            self._show_outcome("Cancelled. Nothing was changed.", style.MUTED)

    def reject(self) -> None:
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()
        super().reject()

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        for w in self._form_widgets():
            w.setEnabled(not running)
        self.progress.setVisible(running or self.progress.value() > 0)
        self.step_label.setVisible(True if running else bool(self.step_label.text()))
        if running:
            self.progress.setRange(0, 0)
            self.step_label.setText("Starting…")

    def _on_progress(self, message: str, fraction: float | None) -> None:
        if fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(max(0.0, min(1.0, fraction)) * 1000))
        self.step_label.setText(message)

    def _finish(self) -> None:
        self._set_running(False)
        self.progress.setRange(0, 1000)
        self.progress.setValue(1000)

    def _failed(self, error: BaseException) -> None:
        self._set_running(False)
        self.progress.hide()
        self.step_label.hide()
        self._show_error(describe_error(error))

    def _show_outcome(self, text: str, colour: str) -> None:
        self.outcome.setText(text)
        self.outcome.setStyleSheet(f"color: {colour}; font-weight: 600;")
        self.outcome.show()
        self._fit_height()


class BundleDialog(_WorkDialog):
    """Build a bundle of one version: output folder, optimise/quantise options, max accuracy delta."""

    built = Signal(object)  # BundleReport

    def __init__(self, settings: Settings, version: ModelVersion, parent: QWidget | None = None) -> None:
        super().__init__(f"Bundle {version.name} v{version.version}", "Build", parent)
        self.settings = settings
        self.version = version
        self.heading.setText(f"Bundle {version.name} version {version.version} as a verified ONNX bundle")
        self.out_edit = QLineEdit(str(tasks.bundle_dir_for(settings, version.uri)))
        self.browse_button = QPushButton("Browse…")
        row = QHBoxLayout()
        row.addWidget(self.out_edit, 1)
        row.addWidget(self.browse_button)
        self.form.addRow("Output folder:", row)
        self.optimize_check = QCheckBox("Optimise the graph (onnxruntime basic optimisations)")
        self.quantize_combo = QComboBox()
        self.quantize_combo.addItem("No quantisation", None)
        self.quantize_combo.addItem("Dynamic int8 (MatMul/Gemm weights)", "int8")
        self.delta_spin = QDoubleSpinBox()
        self.delta_spin.setRange(0.0, 1.0)
        self.delta_spin.setDecimals(3)
        self.delta_spin.setSingleStep(0.005)
        self.delta_spin.setValue(0.01)
        self.delta_spin.setToolTip(
            "The most accuracy (share of changed labels, or relative error) quantisation may cost"
        )
        self.overwrite_check = QCheckBox("Replace the folder if it is not empty")
        self.overwrite_check.setChecked(True)
        self.trust_check = QCheckBox("Trust a pickled model (loading it runs code from the file)")
        self.form.addRow("", self.optimize_check)
        self.form.addRow("Quantise:", self.quantize_combo)
        self.form.addRow("Max accuracy delta:", self.delta_spin)
        self.form.addRow("", self.overwrite_check)
        self.form.addRow("", self.trust_check)
        self.browse_button.clicked.connect(self._browse)
        self.quantize_combo.currentIndexChanged.connect(self._quantize_changed)
        self._quantize_changed()
        self.adjustSize()

    def _form_widgets(self) -> list[QWidget]:
        return [
            self.out_edit,
            self.browse_button,
            self.optimize_check,
            self.quantize_combo,
            self.delta_spin,
            self.overwrite_check,
            self.trust_check,
        ]

    def _quantize_changed(self, *_: Any) -> None:
        self.delta_spin.setEnabled(self.quantize_combo.currentData() is not None)

    def _browse(self) -> None:
        dialog = QFileDialog(self, "Bundle output folder", self.out_edit.text())
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.fileSelected.connect(self.out_edit.setText)
        dialog.open()

    def bundle_options(self) -> Any:
        from modeldeck.core.bundle import BundleOptions

        return BundleOptions(
            overwrite=self.overwrite_check.isChecked(),
            optimize=self.optimize_check.isChecked(),
            quantize=self.quantize_combo.currentData(),
            max_accuracy_delta=self.delta_spin.value(),
            trust_pickle=self.trust_check.isChecked(),
        )

    def _start_task(self) -> TaskHandle | None:
        out = self.out_edit.text().strip()
        if not out:
            self._show_error("Choose an output folder.")
            return None
        self.report.hide()
        return run_task(
            tasks.build,
            self.settings,
            self.version.uri,
            Path(out).expanduser(),
            self.bundle_options(),
            on_result=self._built,
            on_error=self._failed,
            on_progress=self._on_progress,
            name=f"bundle {self.version.ref}",
            owner=self,
        )

    def _failed(self, error: BaseException) -> None:
        # The core's hint names the CLI's --force; here the same choice is the "Replace the folder" box.
        if isinstance(error, BundleError) and error.hint and "--force" in error.hint:
            hint = "tick “Replace the folder if it is not empty”, or choose another folder"
            error = BundleError(error.message, hint=hint)
        super()._failed(error)

    def _built(self, report: Any) -> None:
        self._finish()
        self.step_label.setText(f"Built in {sum(report.timings.values()):.1f} s")
        parity = report.parity
        if parity is not None and parity.passed:
            self._show_outcome(f"Bundle built; parity passed on {parity.rows} rows.", style.OK_FG)
        else:
            self._show_outcome("Bundle built (parity not checked — see the report).", style.WARN_FG)
        self.report.setPlainText(report.to_text())
        self.report.show()
        self._grow_for_report()
        self.built.emit(report)


class DeployDialog(_WorkDialog):
    """Bundle one version and deploy it on this machine: name and port (a free one by default)."""

    deployed = Signal(object)  # DeployResult

    def __init__(
        self, settings: Settings, version: ModelVersion, target: Target, parent: QWidget | None = None
    ) -> None:
        super().__init__(f"Deploy {version.name} v{version.version} locally", "Deploy", parent)
        self.settings = settings
        self.version = version
        self.target = target
        self.deploy_result: DeployResult | None = None
        self.heading.setText(f"Deploy {version.name} version {version.version} on this machine")
        self.name_edit = QLineEdit(name_from_model(version.name))
        self.name_edit.setToolTip("Deploying again under the same name replaces that deployment (start-first)")
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1024, 65535)
        self.port_spin.setValue(free_port())
        self.port_spin.setToolTip("The public port on 127.0.0.1 (a free one is suggested)")
        self.trust_check = QCheckBox("Trust a pickled model (loading it runs code from the file)")
        self.form.addRow("Deployment name:", self.name_edit)
        self.form.addRow("Port:", self.port_spin)
        self.form.addRow("", self.trust_check)
        note = QLabel("The model is bundled first; the new release only takes traffic once it answers its example.")
        note.setProperty("role", "muted")
        note.setWordWrap(True)
        note.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)  # as wide as the fields
        self.form.addRow("", note)
        self.adjustSize()

    def _form_widgets(self) -> list[QWidget]:
        return [self.name_edit, self.port_spin, self.trust_check]

    def _start_task(self) -> TaskHandle | None:
        from modeldeck.core.bundle import BundleOptions

        name = self.name_edit.text().strip()
        if not name:
            self._show_error("Enter a deployment name.")
            return None
        options = DeployOptions(name=name, port=self.port_spin.value())
        return run_task(
            tasks.bundle_and_deploy,
            self.settings,
            self.version.uri,
            self.target,
            options,
            BundleOptions(overwrite=True, trust_pickle=self.trust_check.isChecked()),
            on_result=self._deployed,
            on_error=self._failed,
            on_progress=self._on_progress,
            name=f"deploy {self.version.ref}",
            owner=self,
        )

    def _deployed(self, outcome: tasks.BundleAndDeploy) -> None:
        self._finish()
        result = outcome.result
        self.deploy_result = result
        status = result.status
        if result.ok:
            where = f" at {status.endpoint}" if status is not None else ""
            self._show_outcome(f"{result.name}: {result.outcome}{where}", style.OK_FG)
        else:
            self._show_outcome(f"{result.name}: {result.outcome}", style.ERROR_FG)
        self.step_label.setText(result.message)
        self.step_label.show()
        self.report.setPlainText(outcome.report.to_text() if outcome.report is not None else "")
        self.report.setVisible(outcome.report is not None)
        self._grow_for_report()
        self.deployed.emit(result)
