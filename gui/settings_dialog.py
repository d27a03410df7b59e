"""Choose which registry ModelDeck opens: the embedded local one or a tracking URI.

Credentials are deliberately not part of this dialog: like MLflow itself,
ModelDeck reads them from ``MLFLOW_TRACKING_TOKEN`` or
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` in the environment, so
they are never typed into a form or written to the settings file.
"""

from __future__ import annotations

import html
from dataclasses import replace

from modeldeck.core.settings import Settings, with_tracking_uri
from modeldeck.gui import style
from modeldeck.gui.widgets import home_abbreviated
from modeldeck.gui.workers import Channel, describe_error, run_task
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

SUPPORTED_SCHEMES = ("http://", "https://", "sqlite:///", "file:", "databricks", "postgresql", "mysql")


def _test_connection(uri: str, registry_uri: str | None = None, timeout_s: float = 10.0) -> str:
    """Ping the registry at ``uri``; returns its display name (raises RegistryError)."""
    from modeldeck.core.registry.client import Registry

    registry = Registry(uri, registry_uri, timeout_s=timeout_s)
    registry.ping()
    return registry.display_name


class SettingsDialog(QDialog):
    """Edits the registry location; :meth:`chosen_settings` is what the caller saves and opens."""

    connectionTested = Signal(bool, str)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings — Registry")
        self.settings = settings
        self._test_channel = Channel("test connection")
        layout = QVBoxLayout(self)

        box = QGroupBox("Model registry")
        box_layout = QVBoxLayout(box)
        self.embedded_radio = QRadioButton("Embedded local registry")
        self.embedded_path = QLabel(home_abbreviated(str(settings.embedded_registry_dir)))
        self.embedded_path.setToolTip(str(settings.embedded_registry_dir))
        self.embedded_path.setProperty("role", "muted")
        self.uri_radio = QRadioButton("MLflow tracking server or store URI")
        group = QButtonGroup(self)
        group.addButton(self.embedded_radio)
        group.addButton(self.uri_radio)
        self.uri_box = QComboBox()
        self.uri_box.setEditable(True)
        self.uri_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.uri_box.setMinimumContentsLength(42)
        self.uri_box.addItems([u for u in settings.recent_tracking_uris if u != settings.embedded_tracking_uri])
        line = self.uri_box.lineEdit()
        assert line is not None
        line.setPlaceholderText("http://mlflow.example.com:5000  or  sqlite:////path/to/mlflow.db")
        box_layout.addWidget(self.embedded_radio)
        embedded_row = QHBoxLayout()
        embedded_row.addSpacing(24)
        embedded_row.addWidget(self.embedded_path, 1)
        box_layout.addLayout(embedded_row)
        box_layout.addWidget(self.uri_radio)
        uri_row = QHBoxLayout()
        uri_row.addSpacing(24)
        uri_row.addWidget(self.uri_box, 1)
        box_layout.addLayout(uri_row)
        # MLflow lets the model registry live apart from the tracking store (e.g. a shared
        # registry database next to per-team tracking servers); empty means "the same".
        self.registry_uri_edit = QLineEdit(settings.registry_uri or "")
        self.registry_uri_edit.setPlaceholderText("Model registry URI, if it differs from the tracking URI")
        self.registry_uri_edit.setToolTip("MLFLOW_REGISTRY_URI: leave empty to use the tracking URI")
        registry_row = QHBoxLayout()
        registry_row.addSpacing(24)
        registry_row.addWidget(self.registry_uri_edit, 1)
        box_layout.addLayout(registry_row)
        creds = QLabel(
            "Credentials are not stored by ModelDeck. Like MLflow, it reads MLFLOW_TRACKING_TOKEN, or "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, from the environment."
        )
        creds.setWordWrap(True)
        creds.setProperty("role", "muted")
        box_layout.addWidget(creds)
        layout.addWidget(box)

        test_row = QHBoxLayout()
        self.test_button = QPushButton("Test connection")
        self.test_result = QLabel()
        self.test_result.setWordWrap(True)
        test_row.addWidget(self.test_button)
        test_row.addWidget(self.test_result, 1)
        layout.addLayout(test_row)
        layout.addStretch(1)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.save_button = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        self.save_button.setText("Save and open")
        self.buttons.accepted.connect(self._accept_if_valid)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        if settings.uses_embedded_registry:
            self.embedded_radio.setChecked(True)
        else:
            self.uri_radio.setChecked(True)
            self.uri_box.setCurrentText(settings.tracking_uri or "")
            line.setCursorPosition(0)  # a long URI shows its scheme and host, not its tail
        self.embedded_radio.toggled.connect(self._update)
        self.uri_box.editTextChanged.connect(self._update)
        self.registry_uri_edit.textChanged.connect(self._update)
        self.test_button.clicked.connect(self.test_connection)
        self.setMinimumWidth(560)
        # Room for a typical server URL or sqlite path without scrolling it inside the field.
        self.resize(max(720, self.sizeHint().width()), self.sizeHint().height())
        self._update()

    # -- state ------------------------------------------------------------------------------------
    def chosen_uri(self) -> str | None:
        """None means the embedded registry."""
        return None if self.embedded_radio.isChecked() else self.uri_box.currentText().strip() or None

    def chosen_registry_uri(self) -> str | None:
        """None means "the same as the tracking URI" (always so for the embedded registry)."""
        return None if self.embedded_radio.isChecked() else self.registry_uri_edit.text().strip() or None

    def chosen_settings(self) -> Settings:
        return replace(with_tracking_uri(self.settings, self.chosen_uri()), registry_uri=self.chosen_registry_uri())

    def problem(self) -> str | None:
        if self.embedded_radio.isChecked():
            return None
        uri = self.uri_box.currentText().strip()
        if not uri:
            return "Enter a tracking URI, or choose the embedded registry."
        registry_uri = self.registry_uri_edit.text().strip()
        for label, value in (("tracking", uri), ("registry", registry_uri)):
            if not value:
                continue
            if not value.startswith(SUPPORTED_SCHEMES):
                return (
                    f"The {label} URI must start with http://, https://, sqlite:/// or file: "
                    "(or another MLflow store scheme)."
                )
            if "@" in value.split("//", 1)[-1].split("/", 1)[0]:
                return "Do not put credentials in a URI; set MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN instead."
        return None

    def _update(self) -> None:
        self.uri_box.setEnabled(self.uri_radio.isChecked())
        self.registry_uri_edit.setEnabled(self.uri_radio.isChecked())
        problem = self.problem()
        self.save_button.setEnabled(problem is None)
        self.test_button.setEnabled(problem is None)
        self._test_channel.invalidate()
        self._set_result(problem or "", ok=None if problem is None else False)

    def _set_result(self, text: str, *, ok: bool | None) -> None:
        colour = {True: style.OK_FG, False: style.ERROR_FG, None: style.MUTED}[ok]
        self.test_result.setText(f'<span style="color:{colour};">{html.escape(text)}</span>' if text else "")
        self.test_result.setToolTip(text)

    def result_text(self) -> str:
        return self.test_result.toolTip()

    def test_connection(self) -> None:
        """Ping the chosen registry in a worker; the answer appears next to the button."""
        uri = self.chosen_uri() or self.settings.embedded_tracking_uri
        self._set_result(f"Connecting to {uri}…", ok=None)
        self.test_button.setEnabled(False)
        run_task(
            _test_connection,
            uri,
            self.chosen_registry_uri(),
            on_result=self._test_ok,
            on_error=self._test_failed,
            channel=self._test_channel,
            name="test connection",
            owner=self,
        )

    def _test_ok(self, display_name: str) -> None:
        self.test_button.setEnabled(True)
        self._set_result(f"Connected: {display_name}", ok=True)
        self.connectionTested.emit(True, display_name)

    def _test_failed(self, error: BaseException) -> None:
        self.test_button.setEnabled(True)
        text = describe_error(error)
        self._set_result(text, ok=False)
        self.connectionTested.emit(False, text)

    def _accept_if_valid(self) -> None:
        if self.problem() is None:
            self.accept()

    def done(self, result: int) -> None:
        self._test_channel.invalidate()
        super().done(result)
