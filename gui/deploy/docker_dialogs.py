"""The "Build image…" and "Deploy to Docker…" dialogs for one registry version.

Every field is checked before anything runs -- with the same rules the Docker target applies --
and a bad one gets its message right under it; nothing reaches the engine until the whole form
is valid. The build log streams live into a :class:`StreamingLogView` (queued by the worker,
drained by a timer); a failing build highlights its failing step.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any

from modeldeck.core.errors import ModelDeckError
from modeldeck.core.formatting import format_size
from modeldeck.core.registry.types import ModelVersion
from modeldeck.core.settings import Settings
from modeldeck.core.targets.base import DeployOptions, DeployResult
from modeldeck.core.targets.local import free_port
from modeldeck.core.targets.releases import name_from_model, validate_name
from modeldeck.gui import style
from modeldeck.gui.deploy import tasks
from modeldeck.gui.deploy.dialogs import _WorkDialog
from modeldeck.gui.deploy.logview import StreamingLogView
from modeldeck.gui.workers import TaskHandle, describe_error, run_task
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

log = logging.getLogger(__name__)

DEFAULT_ENGINE = "docker://"
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- validation (pure functions: each returns an error message or None) ------------------------------


def check_engine_url(text: str) -> str | None:
    from modeldeck.core.targets.docker.engine import parse_engine_url

    if not text.strip():
        return "Enter the engine: docker:// for this machine, docker+ssh://USER@HOST or docker+tcp://HOST:PORT."
    try:
        parse_engine_url(text.strip())
    except ModelDeckError as exc:
        return exc.one_line()
    return None


def check_tag(text: str) -> str | None:
    if not re.fullmatch(r"[a-z0-9]+([._/:-][a-zA-Z0-9_.-]+)*", text or "") or len(text) > 255:
        return "Use REPO:TAG in lower case, e.g. iris:3 or registry.example.com/iris:3."
    return None


def check_base_image(text: str) -> str | None:
    if not text.strip() or " " in text.strip():
        return "Enter a base image, e.g. python:3.11-slim."
    return None


def check_name(text: str) -> str | None:
    try:
        validate_name(text.strip())
    except ModelDeckError as exc:
        return exc.one_line()
    return None


def check_address(text: str) -> str | None:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return "Enter an IP address to publish on: 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)."
    return None


def _docker_setting(key: str, value: Any) -> str | None:
    from modeldeck.core.targets.docker.target import DockerSettings

    try:
        DockerSettings.from_extra({key: value})
    except ModelDeckError as exc:
        return exc.one_line()
    return None


def parse_cpus(text: str) -> tuple[float | None, str | None]:
    """Blank: no limit. Else a positive number of CPUs."""
    if not text.strip():
        return None, None
    try:
        value = float(text.strip())
    except ValueError:
        return None, f"“{text.strip()}” is not a number of CPUs; use e.g. 0.5 or 2 (blank: no limit)."
    error = _docker_setting("cpus", value)
    return (value, None) if error is None else (None, "CPUs must be more than 0 and at most 1024.")


def parse_memory(text: str) -> tuple[str | None, str | None]:
    """Blank: no limit. Else bytes or a unit (512m, 2g)."""
    if not text.strip():
        return None, None
    value = text.strip()
    if _docker_setting("memory", value) is not None:
        return None, f"“{value}” is not a memory size; use bytes or a unit: 512m, 2g (blank: no limit)."
    return value, None


def parse_env(text: str) -> tuple[dict[str, str], str | None]:
    """``KEY=VALUE`` per line (blank lines and ``#`` comments ignored); the first bad line is the error."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            return {}, f"Line {number}: “{line}” is not KEY=VALUE."
        if not _ENV_KEY.match(key.strip()):
            return {}, f"Line {number}: “{key.strip()}” is not a valid variable name (letters, digits, _)."
        env[key.strip()] = value
    return env, None


# -- dialogs -------------------------------------------------------------------------------------------


class _DockerDialog(_WorkDialog):
    """Shared: the engine field (with docker contexts), per-field inline errors, and the streaming log."""

    def __init__(self, title: str, run_text: str, settings: Settings, version: ModelVersion, parent: QWidget | None):
        super().__init__(title, run_text, parent)
        self.settings = settings
        self.version = version
        self.field_errors: dict[str, QLabel] = {}
        self.engine_combo = QComboBox()
        self.engine_combo.setEditable(True)
        self.engine_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.engine_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.engine_combo.addItem(DEFAULT_ENGINE, DEFAULT_ENGINE)
        self.engine_combo.setToolTip(
            "docker:// is this machine's engine; docker+ssh://USER@HOST and docker+tcp://HOST:PORT reach others. "
            "Docker contexts are listed."
        )
        self.log_view = StreamingLogView()
        self.log_view.setMinimumHeight(200)
        self.log_view.hide()
        self.layout().insertWidget(self.layout().indexOf(self.report), self.log_view, 2)  # type: ignore[union-attr]
        run_task(
            tasks.docker_contexts,
            on_result=self._contexts_loaded,
            on_error=lambda e: log.info("no docker contexts: %s", describe_error(e)),
            name="docker contexts",
            owner=self,
        )

    def _add_field(self, key: str, label: str, widget: Any) -> None:
        """A form row plus a hidden error line right under it."""
        self.form.addRow(label, widget)
        error = QLabel()
        error.setWordWrap(True)
        error.setStyleSheet(f"color: {style.ERROR_FG};")
        error.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)  # wrap at the field's width
        error.setObjectName(f"error-{key}")
        self.form.addRow("", error)
        self.form.setRowVisible(error, False)
        self.field_errors[key] = error

    def _contexts_loaded(self, contexts: list[Any]) -> None:
        typed = self.engine_combo.currentText()
        for ctx in contexts:
            if self.engine_combo.findData(ctx.target_url) < 0:
                self.engine_combo.addItem(ctx.target_url, ctx.target_url)  # the text is what engine_url() reads
                self.engine_combo.setItemData(
                    self.engine_combo.count() - 1,
                    f"docker context “{ctx.name}”: {ctx.description or ctx.host}",
                    Qt.ItemDataRole.ToolTipRole,
                )
        current = next((c for c in contexts if c.current), None)
        if current is not None and typed == DEFAULT_ENGINE:
            self.engine_combo.setCurrentIndex(max(0, self.engine_combo.findData(current.target_url)))

    def engine_url(self) -> str:
        return self.engine_combo.currentText().strip()

    def show_field_errors(self, errors: dict[str, str]) -> None:
        for key, label in self.field_errors.items():
            text = errors.get(key)
            label.setText(text or "")
            self.form.setRowVisible(label, bool(text))
        if errors:
            self._fit_height()

    def errors(self) -> dict[str, str]:
        """Field key -> message for every invalid field (empty: the form is valid)."""
        raise NotImplementedError

    def _start_log(self) -> None:
        self.log_view.clear_log()
        self.log_view.show()
        self.report.hide()
        self._grow_for_report()
        self.log_view.start()

    def _failed(self, error: BaseException) -> None:
        self.log_view.stop()
        super()._failed(error)
        step = self.log_view.highlight_failing_step()
        if step is not None:
            self.step_label.setText(f"Failed at {step}")
            self.step_label.setStyleSheet(f"color: {style.ERROR_FG};")
            self.step_label.show()

    def cancel(self) -> None:
        super().cancel()
        self.log_view.stop()

    def reject(self) -> None:
        self.log_view.timer.stop()
        super().reject()


class BuildImageDialog(_DockerDialog):
    """Bundle one version and build a container image of it on a Docker engine."""

    built = Signal(object)  # tasks.DockerBuild

    def __init__(self, settings: Settings, version: ModelVersion, parent: QWidget | None = None) -> None:
        super().__init__(f"Build image of {version.name} v{version.version}", "Build", settings, version, parent)
        from modeldeck.core.targets.docker.image import DEFAULT_BASE_IMAGE

        self.heading.setText(f"Build a container image of {version.name} version {version.version}")
        slug = name_from_model(version.name).lower()
        self.tag_edit = QLineEdit(f"modeldeck/{slug}:v{version.version}")
        self.base_edit = QLineEdit(DEFAULT_BASE_IMAGE)
        self.base_edit.setToolTip("The image the runtime is installed on (a ModelDeck warm base is used as is)")
        self.pull_check = QCheckBox("Pull the base image even if the engine has it")
        self.push_check = QCheckBox("Push the image to its registry (the result names it by digest)")
        self.trust_check = QCheckBox("Trust a pickled model (loading it runs code from the file)")
        self._add_field("engine", "Engine:", self.engine_combo)
        self._add_field("tag", "Image tag:", self.tag_edit)
        self._add_field("base_image", "Base image:", self.base_edit)
        self.form.addRow("", self.pull_check)
        self.form.addRow("", self.push_check)
        self.form.addRow("", self.trust_check)
        self.result: Any = None
        self.adjustSize()

    def _form_widgets(self) -> list[QWidget]:
        return [self.engine_combo, self.tag_edit, self.base_edit, self.pull_check, self.push_check, self.trust_check]

    def errors(self) -> dict[str, str]:
        checks = {
            "engine": check_engine_url(self.engine_url()),
            "tag": check_tag(self.tag_edit.text().strip()),
            "base_image": check_base_image(self.base_edit.text()),
        }
        return {k: v for k, v in checks.items() if v}

    def _start_task(self) -> TaskHandle | None:
        from modeldeck.core.bundle import BundleOptions
        from modeldeck.core.targets.docker.image import BuildOptions

        errors = self.errors()
        self.show_field_errors(errors)
        if errors:
            return None
        self.step_label.setStyleSheet("")
        self._start_log()
        options = BuildOptions(
            tag=self.tag_edit.text().strip(),
            base_image=self.base_edit.text().strip(),
            pull_base=self.pull_check.isChecked(),
        )
        return run_task(
            tasks.build_docker_image,
            self.settings,
            self.version.uri,
            self.engine_url(),
            options,
            BundleOptions(overwrite=True, trust_pickle=self.trust_check.isChecked()),
            self.log_view.sink,
            push=self.push_check.isChecked(),
            on_result=self._built,
            on_error=self._failed,
            on_progress=self._on_progress,
            name=f"build image of {self.version.ref}",
            owner=self,
        )

    def _built(self, outcome: tasks.DockerBuild) -> None:
        self.log_view.stop()
        self._finish()
        image = outcome.image
        self.result = image
        digest = f", pushed as {image.repo_digest}" if image.repo_digest else ""
        self.step_label.setText(f"Built in {image.seconds:.1f} s")
        self._show_outcome(
            f"Built {image.tag}: {image.image_id[:19]}… ({format_size(image.size_bytes)}){digest}", style.OK_FG
        )
        self.outcome.setToolTip(f"image ID {image.image_id}")
        self.built.emit(outcome)


class DockerDeployDialog(_DockerDialog):
    """Bundle one version and deploy it to a Docker engine: image built on the engine, health-gated switch."""

    deployed = Signal(object, str)  # DeployResult, engine URL

    def __init__(self, settings: Settings, version: ModelVersion, parent: QWidget | None = None) -> None:
        super().__init__(f"Deploy {version.name} v{version.version} to Docker", "Deploy", settings, version, parent)
        from modeldeck.core.targets.docker.image import DEFAULT_BASE_IMAGE

        self.heading.setText(f"Deploy {version.name} version {version.version} to a Docker engine")
        self.deploy_result: DeployResult | None = None
        self.name_edit = QLineEdit(name_from_model(version.name))
        self.name_edit.setToolTip("Deploying again under the same name replaces that deployment (start-first)")
        self.base_edit = QLineEdit(DEFAULT_BASE_IMAGE)
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(free_port())
        self.port_spin.setToolTip("The published port (a free one on this machine is suggested)")
        self.address_edit = QLineEdit("127.0.0.1")
        self.address_edit.setToolTip("The address the port is published on; 127.0.0.1 keeps it on the engine's host")
        self.cpus_edit = QLineEdit()
        self.cpus_edit.setPlaceholderText("no limit (e.g. 0.5, 2)")
        self.memory_edit = QLineEdit()
        self.memory_edit.setPlaceholderText("no limit (e.g. 512m, 2g)")
        self.replicas_spin = QSpinBox()
        self.replicas_spin.setRange(1, 64)
        self.replicas_spin.setToolTip("Containers sharing the port")
        self.env_edit = QPlainTextEdit()
        self.env_edit.setPlaceholderText("KEY=VALUE, one per line")
        self.env_edit.setFont(style.monospace_font())
        self.env_edit.setFixedHeight(self.fontMetrics().lineSpacing() * 4 + 12)
        self.env_edit.setTabChangesFocus(True)
        self.trust_check = QCheckBox("Trust a pickled model (loading it runs code from the file)")
        self._add_field("engine", "Engine:", self.engine_combo)
        self._add_field("name", "Deployment name:", self.name_edit)
        self._add_field("base_image", "Base image:", self.base_edit)
        self._add_field("port", "Port:", self.port_spin)
        self._add_field("address", "Publish on:", self.address_edit)
        self._add_field("cpus", "CPUs:", self.cpus_edit)
        self._add_field("memory", "Memory:", self.memory_edit)
        self._add_field("replicas", "Replicas:", self.replicas_spin)
        self._add_field("env", "Environment:", self.env_edit)
        self.form.addRow("", self.trust_check)
        note = QLabel(
            "The model is bundled and built into an image on the engine; the new container takes over only once "
            "it is healthy and answers its example, else the old one keeps serving."
        )
        note.setProperty("role", "muted")
        note.setWordWrap(True)
        note.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.form.addRow("", note)
        self.adjustSize()

    def _form_widgets(self) -> list[QWidget]:
        return [
            self.engine_combo,
            self.name_edit,
            self.base_edit,
            self.port_spin,
            self.address_edit,
            self.cpus_edit,
            self.memory_edit,
            self.replicas_spin,
            self.env_edit,
            self.trust_check,
        ]

    def errors(self) -> dict[str, str]:
        _cpus, cpus_error = parse_cpus(self.cpus_edit.text())
        _memory, memory_error = parse_memory(self.memory_edit.text())
        _env, env_error = parse_env(self.env_edit.toPlainText())
        checks = {
            "engine": check_engine_url(self.engine_url()),
            "name": check_name(self.name_edit.text()),
            "base_image": check_base_image(self.base_edit.text()),
            "address": check_address(self.address_edit.text()),
            "cpus": cpus_error,
            "memory": memory_error,
            "env": env_error,
        }
        return {k: v for k, v in checks.items() if v}

    def options(self) -> DeployOptions:
        """The deploy options of a valid form."""
        cpus, _ = parse_cpus(self.cpus_edit.text())
        memory, _ = parse_memory(self.memory_edit.text())
        env, _ = parse_env(self.env_edit.toPlainText())
        extra: dict[str, Any] = {"base_image": self.base_edit.text().strip(), "replicas": self.replicas_spin.value()}
        if cpus is not None:
            extra["cpus"] = cpus
        if memory is not None:
            extra["memory"] = memory
        return DeployOptions(
            name=self.name_edit.text().strip(),
            host=self.address_edit.text().strip(),
            port=self.port_spin.value(),
            env=env,
            extra=extra,
        )

    def _start_task(self) -> TaskHandle | None:
        from modeldeck.core.bundle import BundleOptions

        errors = self.errors()
        self.show_field_errors(errors)
        if errors:
            return None
        self.step_label.setStyleSheet("")
        self._start_log()
        url = self.engine_url()
        return run_task(
            tasks.deploy_to_docker,
            self.settings,
            self.version.uri,
            url,
            self.options(),
            BundleOptions(overwrite=True, trust_pickle=self.trust_check.isChecked()),
            self.log_view.sink,
            on_result=lambda outcome: self._deployed(outcome, url),
            on_error=self._failed,
            on_progress=self._on_progress,
            name=f"deploy {self.version.ref} to {url}",
            owner=self,
        )

    def _deployed(self, outcome: tasks.BundleAndDeploy, url: str) -> None:
        self.log_view.stop()
        self._finish()
        result = outcome.result
        self.deploy_result = result
        status = result.status
        if result.ok:
            where = f" at {status.endpoint}" if status is not None and status.endpoint else ""
            self._show_outcome(f"{result.name}: {result.outcome}{where}", style.OK_FG)
            self.step_label.setText(result.message or f"on {url}")
        else:
            self._show_outcome(f"{result.name}: {result.outcome} — {result.message}", style.ERROR_FG)
            self.step_label.setText(
                "The previous release keeps serving."
                if result.outcome == "failed (rolled back)"
                else "Nothing of this deployment was serving before, and nothing is now."
            )
        self.step_label.show()
        self.deployed.emit(result, url)
