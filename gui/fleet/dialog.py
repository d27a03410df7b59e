""" "Deploy to hosts…": push the selected model version to many inventory hosts at once.

Choose hosts (checkable list from the inventory, filtered by text or checked by group),
how many at a time, preview the plan, then watch every host's progress bar and a log while
the fleet layer deploys; a results table says what happened per host and "Roll back" returns
the hosts that switched to their previous release.

All I/O runs in workers (:mod:`modeldeck.gui.workers`). The fleet's progress events arrive in
an :class:`EventBuffer` from the worker threads and a :class:`QTimer` drains it ten times a
second into the progress model and the log -- never one signal per event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modeldeck.core.inventory.hosts import Host, Inventory
from modeldeck.core.registry.types import ModelVersion
from modeldeck.core.settings import Settings, config_dir
from modeldeck.core.targets.base import DeployOptions, HealthGate, ProgressEvent
from modeldeck.core.targets.fleet import DEFAULT_FORKS, FleetResult, HostPlan, StepTimeouts
from modeldeck.core.targets.releases import name_from_model
from modeldeck.gui import style
from modeldeck.gui.fleet import tasks
from modeldeck.gui.fleet.models import HostChoiceModel, HostFilterProxy, HostProgressModel, ProgressRole
from modeldeck.gui.widgets import MessageBanner
from modeldeck.gui.workers import TaskHandle, describe_error, run_task
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, Qt, QTimer, Signal
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

DRAIN_MS = 100
ALL_GROUPS = "Check a group…"


class ProgressBarDelegate(QStyledItemDelegate):
    """Paints the Progress column as a progress bar (busy look when the fraction is unknown)."""

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        value = index.data(ProgressRole)
        if value is None:
            super().paint(painter, option, index)
            return
        bar = QStyleOptionProgressBar()
        rect: QRect = option.rect.adjusted(4, 5, -4, -5)  # type: ignore[attr-defined]
        bar.rect = rect  # type: ignore[attr-defined]
        bar.minimum = 0  # type: ignore[attr-defined]
        bar.maximum = 1000 if value >= 0 else 0  # type: ignore[attr-defined]
        bar.progress = max(0, value)  # type: ignore[attr-defined]
        bar.text = index.data(Qt.ItemDataRole.DisplayRole) or ""  # type: ignore[attr-defined]
        bar.textVisible = True  # type: ignore[attr-defined]
        bar.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal  # type: ignore[attr-defined]
        style_ = option.widget.style() if option.widget is not None else QApplication.style()  # type: ignore[attr-defined]
        style_.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


class ProgressLog:
    """Log lines from events: each step change, failures and results, fractions only per 25 %."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int, str]] = {}

    def lines(self, events: Sequence[ProgressEvent]) -> list[str]:
        out = []
        for e in events:
            host = e.host or "bundle"
            bucket = int((e.fraction or 0.0) * 4)
            last = self._last.get(host)
            if last is not None and last[:2] == (e.step, bucket) and (e.step != "done" or last[2] == e.message):
                continue
            self._last[host] = (e.step, bucket, e.message)
            out.append(f"[{host}] {e.step}: {e.message}")
        return out


class HostsDeployDialog(QDialog):
    """Deploy one model version to chosen inventory hosts (non-modal; see the module doc)."""

    finishedRun = Signal(object)  # FleetResult of a deploy or rollback
    previewed = Signal(object)  # list[HostPlan] of "Preview on hosts"
    inventoryLoaded = Signal()

    def __init__(
        self,
        settings: Settings,
        version: ModelVersion,
        parent: QWidget | None = None,
        *,
        inventory_dir: Path | None = None,
        factory: tasks.TargetFactory | None = None,
        bundle_dir: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.settings = settings
        self.version = version
        self.inventory_dir = inventory_dir or config_dir()
        self.inventory: Inventory | None = None
        self._factory = factory
        self.bundle_dir = bundle_dir  # a built bundle to deploy instead of bundling the version
        self.events = tasks.EventBuffer()
        self.progress_log = ProgressLog()
        self.handle: TaskHandle | None = None
        self.cancel_event = threading.Event()
        self.result: FleetResult | None = None
        self.plans: list[HostPlan] | None = None
        self._run_kind = ""
        self.setWindowTitle(f"Deploy {version.name} v{version.version} to hosts")
        self._build()
        self.drain_timer = QTimer(self)
        self.drain_timer.setInterval(DRAIN_MS)
        self.drain_timer.timeout.connect(self.drain)
        self._load_inventory()

    # -- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        heading = QLabel(f"Deploy <b>{self.version.name}</b> version {self.version.version} to SSH hosts")
        layout.addWidget(heading)

        pick = QHBoxLayout()
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter hosts by name, address, group or label…")
        self.filter_edit.setClearButtonEnabled(True)
        self.group_combo = QComboBox()
        self.group_combo.setToolTip("Check every host of a group")
        self.group_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.check_button = QPushButton("Check shown")
        self.uncheck_button = QPushButton("Uncheck shown")
        pick.addWidget(self.filter_edit, 1)
        pick.addWidget(self.group_combo)
        pick.addWidget(self.check_button)
        pick.addWidget(self.uncheck_button)
        layout.addLayout(pick)

        self.host_model = HostChoiceModel(self)
        self.host_proxy = HostFilterProxy(self)
        self.host_proxy.setSourceModel(self.host_model)
        self.host_view = _table(self.host_proxy)
        self.host_view.setSortingEnabled(True)
        self.host_view.sortByColumn(0, Qt.SortOrder.AscendingOrder)

        self.form = QFormLayout()
        self.name_edit = QLineEdit(name_from_model(self.version.name))
        self.forks_spin = QSpinBox()
        self.forks_spin.setRange(1, 64)
        self.forks_spin.setValue(DEFAULT_FORKS)
        self.forks_spin.setToolTip("How many hosts are worked on at the same time")
        self.connect_spin = QDoubleSpinBox()
        self.connect_spin.setRange(1, 120)
        self.connect_spin.setValue(10)
        self.connect_spin.setSuffix(" s")
        self.connect_spin.setToolTip("An unreachable host fails after this long (the others carry on)")
        row = QHBoxLayout()
        row.addWidget(self.name_edit, 1)
        row.addWidget(QLabel("Hosts at once:"))
        row.addWidget(self.forks_spin)
        row.addWidget(QLabel("Connect timeout:"))
        row.addWidget(self.connect_spin)
        self.form.addRow("Deployment name:", row)
        self.plan_label = QLabel()
        self.plan_label.setWordWrap(True)
        self.plan_label.setProperty("role", "muted")
        self.form.addRow("Plan:", self.plan_label)

        self.banner = MessageBanner()
        self.outcome = QLabel()
        self.outcome.setWordWrap(True)
        self.outcome.hide()

        self.progress_model = HostProgressModel(self)
        self.progress_view = _table(self.progress_model)
        self.progress_view.setItemDelegateForColumn(HostProgressModel.PROGRESS_COLUMN, ProgressBarDelegate(self))
        self.progress_view.horizontalHeader().resizeSection(HostProgressModel.PROGRESS_COLUMN, 150)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setFont(style.monospace_font())
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("Per-host log of the run")

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.host_view, 1)
        top_layout.addLayout(self.form)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.progress_view)
        self.splitter.addWidget(self.log_view)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 2)
        self.splitter.setChildrenCollapsible(False)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.banner)
        layout.addWidget(self.outcome)

        self.buttons = QDialogButtonBox()
        self.preview_button = self.buttons.addButton("Preview on hosts", QDialogButtonBox.ButtonRole.ActionRole)
        self.preview_button.setToolTip("Connect to each host and show what the deploy would do (changes nothing)")
        self.deploy_button = self.buttons.addButton("Deploy", QDialogButtonBox.ButtonRole.AcceptRole)
        self.deploy_button.setDefault(True)
        self.cancel_button = self.buttons.addButton("Cancel run", QDialogButtonBox.ButtonRole.ActionRole)
        self.rollback_button = self.buttons.addButton("Roll back", QDialogButtonBox.ButtonRole.ActionRole)
        self.rollback_button.setToolTip("Return the hosts that switched in this run to their previous release")
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        layout.addWidget(self.buttons)

        self.filter_edit.textChanged.connect(self.host_proxy.setFilterFixedString)
        self.group_combo.activated.connect(self._check_group)
        self.check_button.clicked.connect(lambda: self._check_shown(True))
        self.uncheck_button.clicked.connect(lambda: self._check_shown(False))
        self.host_model.dataChanged.connect(self._update_plan)
        self.host_model.modelReset.connect(self._update_plan)
        self.forks_spin.valueChanged.connect(self._update_plan)
        self.name_edit.textChanged.connect(self._update_plan)
        self.preview_button.clicked.connect(self.preview)
        self.deploy_button.clicked.connect(self.deploy)
        self.cancel_button.clicked.connect(self.cancel)
        self.rollback_button.clicked.connect(self.rollback)
        self.close_button.clicked.connect(self.reject)
        self._set_running(False)
        self.resize(1100, 820)

    # -- inventory -------------------------------------------------------------------------------
    def _load_inventory(self) -> None:
        self.plan_label.setText("Reading the inventory…")
        run_task(
            tasks.load_inventory,
            self.inventory_dir,
            on_result=self._inventory_loaded,
            on_error=self._failed,
            name="load inventory",
            owner=self,
        )

    def _inventory_loaded(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.host_model.set_hosts(inventory.hosts)
        self.group_combo.clear()
        self.group_combo.addItem(ALL_GROUPS)
        for group, names in inventory.groups().items():
            self.group_combo.addItem(f"{group} ({len(names)})", group)
        self.host_view.resizeColumnsToContents()
        if not inventory.hosts:
            self.banner.show_message("The inventory has no hosts yet: add some on the Hosts page.", kind="warning")
        self._update_plan()
        self.inventoryLoaded.emit()

    def factory(self) -> tasks.TargetFactory:
        if self._factory is not None:
            return self._factory
        assert self.inventory is not None
        return tasks.ssh_targets(self.inventory)

    def _check_group(self, index: int) -> None:
        group = self.group_combo.itemData(index)
        if group and self.inventory is not None:
            self.host_model.set_checked(self.inventory.groups().get(group, []))
        self.group_combo.setCurrentIndex(0)

    def _check_shown(self, checked: bool) -> None:
        names = [
            self.host_proxy.index(r, 0).data(Qt.ItemDataRole.DisplayRole) for r in range(self.host_proxy.rowCount())
        ]
        self.host_model.set_checked(names, checked)

    def select_hosts(self, expr: str) -> None:
        """Check exactly the hosts ``expr`` selects (as ``--hosts`` would); errors show in the banner."""
        from modeldeck.core.errors import ModelDeckError

        if self.inventory is None:
            return
        try:
            names = [h.name for h in self.inventory.select(expr)]
        except ModelDeckError as exc:
            self.banner.show_message(describe_error(exc))
            return
        self.host_model.set_checked([h.name for h in self.host_model.hosts()], False)
        self.host_model.set_checked(names)

    # -- plan ------------------------------------------------------------------------------------
    def chosen(self) -> list[Host]:
        return self.host_model.checked_hosts()

    def _update_plan(self, *_: Any) -> None:
        hosts = self.chosen()
        if self.inventory is None:
            return
        if not hosts:
            self.plan_label.setText("Check the hosts to deploy to.")
        else:
            names = ", ".join(h.name for h in hosts[:6]) + (f" and {len(hosts) - 6} more" if len(hosts) > 6 else "")
            forks = min(self.forks_spin.value(), len(hosts))
            self.plan_label.setText(
                f"{len(hosts)} host(s): {names}; {forks} at a time. On each host: connect (host key checked), "
                "upload only the files it lacks (sha256-verified), start the new release beside the current one, "
                "health gate, then switch. A host that fails keeps its current release."
            )
        if self._run_kind == "":
            self.deploy_button.setEnabled(bool(hosts))
            self.preview_button.setEnabled(bool(hosts))

    def options(self) -> DeployOptions:
        return DeployOptions(name=self.name_edit.text().strip() or None, health=HealthGate())

    def step_timeouts(self) -> StepTimeouts:
        return StepTimeouts(connect_s=self.connect_spin.value())

    # -- runs ------------------------------------------------------------------------------------
    def _start(self, kind: str, hosts: Sequence[str]) -> None:
        self.banner.hide()
        self.outcome.hide()
        self.cancel_event = threading.Event()
        self.events.drain()
        self._run_kind = kind
        self.progress_model.start(list(hosts))
        self._set_running(True)
        self.drain_timer.start()

    def preview(self) -> TaskHandle | None:
        hosts = self.chosen()
        if not hosts:
            return None
        self._start("preview", [h.name for h in hosts])
        return self._run_on_hosts(tasks.plan_hosts, hosts, self._previewed, f"plan {self.version.ref} on hosts")

    def deploy(self) -> TaskHandle | None:
        hosts = self.chosen()
        if not hosts:
            self.banner.show_message("Check at least one host.")
            return None
        self.log_view.appendPlainText(f"— deploy {self.version.ref} to {len(hosts)} host(s)")
        self._start("deploy", [h.name for h in hosts])
        return self._run_on_hosts(tasks.deploy_hosts, hosts, self._ran, f"deploy {self.version.ref} to hosts")

    def _run_on_hosts(
        self, task: Callable[..., Any], hosts: Sequence[Host], on_result: Callable[[Any], None], name: str
    ) -> TaskHandle:
        """Run a fleet task (plan or deploy) for ``hosts`` with this dialog's form values, off the UI thread."""
        self.handle = run_task(
            task,
            self.settings,
            self.version.uri,
            self.bundle_dir,
            self.factory(),
            hosts,
            self.options(),
            self.forks_spin.value(),
            self.step_timeouts(),
            self.events,
            cancel=self.cancel_event,
            on_result=on_result,
            on_error=self._failed,
            name=name,
            owner=self,
        )
        return self.handle

    def rollback_candidates(self) -> list[Host]:
        if self.result is None or self.result.action != "deploy" or self.inventory is None:
            return []
        changed = {
            h.host
            for h in self.result.hosts
            if h.changed
            and h.result is not None
            and h.result.status is not None
            and h.result.status.previous_release_id
        }
        return [h for h in self.host_model.hosts() if h.name in changed]

    def rollback(self) -> TaskHandle | None:
        hosts = self.rollback_candidates()
        assert self.result is not None
        chosen = {h.name for h in hosts}
        names = {h.result.name for h in self.result.hosts if h.host in chosen and h.result is not None}
        if not hosts or len(names) != 1:
            return None
        self.log_view.appendPlainText(f"— roll back {next(iter(names))} on {len(hosts)} host(s)")
        self._start("rollback", [h.name for h in hosts])
        self.handle = run_task(
            tasks.rollback_hosts,
            self.factory(),
            hosts,
            next(iter(names)),
            self.forks_spin.value(),
            self.step_timeouts(),
            self.events,
            cancel=self.cancel_event,
            on_result=self._ran,
            on_error=self._failed,
            name="roll back hosts",
            owner=self,
        )
        return self.handle

    def cancel(self) -> None:
        """Stop scheduling hosts and cancel running ones; the result (with what did switch) still arrives."""
        if self.handle is not None and not self.handle.done:
            self.cancel_event.set()
            self.cancel_button.setEnabled(False)
            self.cancel_button.setText("Cancelling…")

    def reject(self) -> None:
        self.cancel_event.set()
        if self.handle is not None and not self.handle.done:
            self.handle.cancel()
        self.drain_timer.stop()
        super().reject()

    def drain(self) -> None:
        """Move buffered events into the progress table and the log (one batch per tick)."""
        events = self.events.drain()
        if not events:
            return
        self.progress_model.apply_events(events)
        lines = self.progress_log.lines(events)
        if lines:
            self.log_view.appendPlainText("\n".join(lines))

    def _previewed(self, plans: list[HostPlan]) -> None:
        self.drain()
        self._finish_run()
        self.plans = plans
        self.progress_model.apply_plans(plans)
        lines = []
        for hp in plans:
            if hp.plan is None:
                lines.append(f"{hp.host}: cannot deploy: {hp.error}")
            else:
                steps = "; ".join(s.description for s in hp.plan.steps)
                lines.append(f"{hp.host}: {steps}")
        self.log_view.appendPlainText("— plan\n" + "\n".join(lines))
        bad = [hp for hp in plans if hp.plan is None]
        if bad:
            self.banner.show_message(f"{len(bad)} of {len(plans)} host(s) cannot be deployed to; see the log.")
        self.previewed.emit(plans)

    def _ran(self, result: FleetResult) -> None:
        self.drain()
        self.result = result
        self.progress_model.apply_results(result.hosts)
        self.progress_view.resizeColumnToContents(4)
        self._finish_run()
        ok, total = len(result.succeeded), len(result.hosts)
        what = "Rolled back" if result.action == "rollback" else "Deployed"
        text = f"{what}: {ok} of {total} host(s) ok in {result.duration_s:.1f} s"
        if result.cancelled:
            text += " (cancelled: hosts not reached keep their current release)"
        colour = style.OK_FG if result.ok else style.ERROR_FG if not result.cancelled else style.WARN_FG
        self.outcome.setText(text)
        self.outcome.setStyleSheet(f"color: {colour}; font-weight: 600;")
        self.outcome.show()
        self.finishedRun.emit(result)

    def _failed(self, error: BaseException) -> None:
        self.drain()
        self._finish_run()
        self.banner.show_message(describe_error(error))

    def _finish_run(self) -> None:
        self.drain_timer.stop()
        self._run_kind = ""
        self._set_running(False)

    def _set_running(self, running: bool) -> None:
        hosts = bool(self.chosen())
        self.deploy_button.setEnabled(not running and hosts)
        self.preview_button.setEnabled(not running and hosts)
        self.cancel_button.setEnabled(running)
        self.cancel_button.setText("Cancel run")
        self.rollback_button.setEnabled(not running and bool(self.rollback_candidates()))
        for w in (self.host_view, self.filter_edit, self.group_combo, self.check_button, self.uncheck_button):
            w.setEnabled(not running)
        for w in (self.name_edit, self.forks_spin, self.connect_spin):
            w.setEnabled(not running)

    def is_running(self) -> bool:
        return self.handle is not None and not self.handle.done


def _table(model: Any) -> QTableView:
    view = QTableView()
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.verticalHeader().hide()
    view.setAlternatingRowColors(True)
    header = view.horizontalHeader()
    header.setStretchLastSection(True)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)  # as every other table
    view.setWordWrap(False)
    return view
