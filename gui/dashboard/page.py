"""The Monitor page: the fleet table (health, key figures, sparklines) above the detail plots of the selection.

Everything it shows arrives in batches from :class:`MonitorSource` (a timer
drains the collector); rows and curves get whole arrays. Plots redraw only when
visible and not paused — pausing freezes the picture, collection goes on. In
Prometheus mode the source's collection process queries the server instead of
scraping, and this page shows its samples the same way; the "Saved history"
range reads the SQLite history in a worker, never blocking the UI thread.
"""

from __future__ import annotations

import array
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from modeldeck.core.errors import ModelDeckError
from modeldeck.core.monitor.config import MonitorConfig
from modeldeck.core.monitor.history import HistoryStore
from modeldeck.gui import style
from modeldeck.gui.dashboard.dialogs import AddEndpointDialog, LoadDialog, MonitorSettingsDialog
from modeldeck.gui.dashboard.models import FleetModel, FleetRow
from modeldeck.gui.dashboard.plots import PANEL_ROWS, PANELS, PLOTTED_SERIES, DetailPlots
from modeldeck.gui.dashboard.source import Monitored, MonitorSource
from modeldeck.gui.dashboard.sparkline import HealthChipDelegate, SparklineDelegate
from modeldeck.gui.registry.models import RawRole
from modeldeck.gui.widgets import MessageBanner, sortable_table
from modeldeck.gui.workers import Channel, describe_error, run_task
from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger(__name__)

RANGES: tuple[tuple[str, float | None], ...] = (
    ("1 min", 60.0),
    ("5 min", 300.0),
    ("15 min", 900.0),
    ("1 h", 3600.0),
    ("All retained", None),
)
HISTORY_RANGE = "Saved history"
SPARK_SECONDS = 300.0
ROWS_PER_SLICE = 4  # fleet rows updated per slice (at least), ...
SLICES_PER_INTERVAL = 8  # ... so that a whole fleet is updated in this many slices (a paint of ~7 of 50 rows)
SLICE_MS = 60
UPDATE_TIMES_KEPT = 10_000

ExampleLoader = Callable[[Monitored], Any]  # runs in a worker: the /invocations body for a deployment, or None


class MonitorPage(QWidget):
    """Fleet overview + detail dashboard. ``configChanged(MonitorConfig)`` when the user changes settings."""

    configChanged = Signal(object)
    endpointAdded = Signal(str, str)  # name, url (the controller persists it)
    endpointRemoved = Signal(str)
    statusMessage = Signal(str)

    def __init__(
        self,
        source: MonitorSource,
        config: MonitorConfig,
        parent: QWidget | None = None,
        *,
        example_loader: ExampleLoader | None = None,
        history_path: Any = None,
    ) -> None:
        super().__init__(parent)
        self.source = source
        self.config = config
        self.example_loader = example_loader
        self.history_path = history_path
        self.paused = False
        self.load_dialog: LoadDialog | None = None
        self.dialog: Any = None
        self._history_channel = Channel("history")
        self._example_channel = Channel("load example")
        self._source_message = ""  # the banner's text while it says the Prometheus server does not answer
        # seconds per update the UI thread ran: drain ticks and row slices (the benchmark reads it); 8 bytes each,
        # at most 2 x UPDATE_TIMES_KEPT, so a week-long session does not grow by it
        self.update_times = array.array("d")
        self._plots_stale = False
        self._plots_drawn = 0.0
        self._plot_rows: list[tuple[str, ...]] = []  # rows of panels still to redraw in this round, one per tick
        self._sorted_at = -math.inf  # monotonic time of the last re-sort
        self._resort_timer = QTimer(self)
        self._resort_timer.setSingleShot(True)
        self._resort_timer.timeout.connect(lambda: self._resort({self.proxy.sortColumn()}))
        self._dirty: dict[str, None] = {}  # endpoints with samples not yet shown in their row, oldest first
        self._slice_timer = QTimer(self)
        self._slice_timer.setInterval(SLICE_MS)
        self._slice_timer.timeout.connect(self._row_slice)
        self._build()
        source.samplesArrived.connect(self._samples)
        source.eventArrived.connect(self._event)
        source.endpointsChanged.connect(self._endpoints_changed)
        source.collectorProblem.connect(self._collector_problem)
        source.sourceProblem.connect(self._source_problem)
        self._apply_config()

    # -- construction -------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.setSpacing(6)
        self.banner = MessageBanner()
        outer.addWidget(self.banner)

        head = QHBoxLayout()
        title = QLabel("Fleet")
        title.setProperty("role", "pane-title")
        self.source_label = QLabel()
        self.source_label.setProperty("role", "muted")
        head.addWidget(title)
        head.addWidget(self.source_label, 1)
        self.add_button = QPushButton("Add endpoint…")
        self.add_button.setToolTip("Monitor any Prometheus-format /metrics URL")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Stop monitoring the selected endpoint you added by hand")
        self.load_button = QPushButton("Generate load…")
        self.load_button.setToolTip("Send the deployment's input example at a bounded rate (makes the plots move)")
        self.settings_button = QPushButton("Settings…")
        self.settings_button.setToolTip("Prometheus server mode and saved history")
        for b in (self.add_button, self.remove_button, self.load_button, self.settings_button):
            head.addWidget(b)
        outer.addLayout(head)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.setChildrenCollapsible(False)
        outer.addWidget(splitter, 1)

        self.model = FleetModel(self)
        self.proxy, self.view = sortable_table(
            self.model,
            sort_role=RawRole,
            sort_column=FleetModel.NAME,
            widths=(170, 110, 70, 70, 80, 60, 90, 70),
            multi_select=True,
        )
        # sorted once per update by _resort: dynamically, the proxy re-sorted (and the view re-laid out the whole
        # table) for every changed cell of the sorted column, 48 times for 50 rows sorted by Req/s
        self.proxy.setDynamicSortFilter(False)
        self.view.setItemDelegateForColumn(FleetModel.HEALTH, HealthChipDelegate(self.view))
        self.view.setItemDelegateForColumn(FleetModel.TREND, SparklineDelegate(self.view))
        self.empty_label = QLabel(
            "Nothing to monitor yet. Deploy a model (Deployments page) or add any /metrics URL with “Add endpoint…”."
        )
        self.empty_label.setProperty("role", "empty")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        fleet = QWidget()
        fleet_layout = QVBoxLayout(fleet)
        fleet_layout.setContentsMargins(0, 0, 0, 0)
        fleet_layout.addWidget(self.view, 1)
        fleet_layout.addWidget(self.empty_label, 1)
        splitter.addWidget(fleet)

        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.setContentsMargins(0, 4, 0, 0)
        bar = QHBoxLayout()
        self.detail_title = QLabel("Select deployments above to plot them")
        self.detail_title.setProperty("role", "pane-title")
        bar.addWidget(self.detail_title, 1)
        bar.addWidget(QLabel("Range"))
        self.range_combo = QComboBox()
        for label, seconds in RANGES:
            self.range_combo.addItem(label, seconds)
        self.range_combo.addItem(HISTORY_RANGE, None)
        self.range_combo.setCurrentIndex(1)
        self.range_combo.setToolTip("Time span of the plots; “Saved history” reads the history file (if enabled)")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setToolTip("Freeze the plots (collection goes on); click again to resume")
        bar.addWidget(self.range_combo)
        bar.addWidget(self.pause_button)
        detail_layout.addLayout(bar)
        self.plots = DetailPlots()
        detail_layout.addWidget(self.plots, 1)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 5)
        splitter.setSizes([230, 560])

        self.add_button.clicked.connect(self.open_add_endpoint)
        self.remove_button.clicked.connect(self.remove_selected)
        self.load_button.clicked.connect(self.open_load_dialog)
        self.settings_button.clicked.connect(self.open_settings)
        self.range_combo.currentIndexChanged.connect(self._range_changed)
        self.pause_button.toggled.connect(self.set_paused)
        self.view.selectionModel().selectionChanged.connect(self._selection_changed)
        self.view.doubleClicked.connect(self._focus_row)
        self.model.rowsInserted.connect(self._rows_changed)
        self.model.rowsRemoved.connect(self._rows_changed)
        self._rows_changed()

    # -- public API ---------------------------------------------------------------------------------------------------
    def selected_names(self) -> list[str]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [self.proxy.index(r, FleetModel.NAME).data() for r in rows]

    def select(self, *names: str) -> None:
        """Select these deployments (as a click and ctrl-clicks would)."""
        selection = self.view.selectionModel()
        selection.clearSelection()
        flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
        for name in names:
            row = self.model.row_of(name)
            if row >= 0:
                selection.select(self.proxy.mapFromSource(self.model.index(row, 0)), flags)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if self.pause_button.isChecked() != paused:
            self.pause_button.setChecked(paused)
        self.pause_button.setText("Resume" if paused else "Pause")
        if not paused:
            self.refresh_plots()

    def set_range(self, label: str) -> None:
        self.range_combo.setCurrentIndex(self.range_combo.findText(label))

    @property
    def history_mode(self) -> bool:
        return self.range_combo.currentText() == HISTORY_RANGE

    def set_config(self, config: MonitorConfig) -> None:
        self.config = config
        self._apply_config()

    def refresh_plots(self, panels: tuple[str, ...] | None = None) -> None:
        """Redraw the detail plots (default: all panels) from the ring buffers (scraped, or queried from Prometheus)."""
        if panels is None:
            self._plot_rows.clear()  # everything is redrawn now: a round in progress has nothing left to do
        if self.paused or self.history_mode or not self.plots.isVisible():
            return
        names = self.plots.names
        series = PLOTTED_SERIES
        if panels is not None:
            series = tuple(line.series for p in PANELS if p.key in panels for line in p.lines)
        data = {n: self.source.snapshot(n, series) for n in names}
        self.plots.show_data(data, panels)
        self.plots.show_markers(e for n in names for e in self.source.markers.get(n, ()))

    def refresh_fleet(self, names: set[str] | None = None) -> None:
        """Rebuild the rows of ``names`` (default: all) from the latest samples and the ring buffers."""
        rows = []
        current = {r.name: r for r in self.model.rows()}
        for name, monitored in self.source.monitored.items():
            if names is not None and name not in names and name in current:
                rows.append(current[name])
                continue
            rows.append(self._row(name, monitored))
        self._resort(self.model.set_rows(rows))

    def _resort(self, written: set[int]) -> None:
        """Re-sort after an update that wrote the sorted column, unless the rows are still in order, and at most
        once per scrape interval (each sort is a relayout and a repaint of the whole table; the slices of one
        interval would otherwise re-sort up to 8 times). Persistent indexes survive it, so the selection stays."""
        column = self.proxy.sortColumn()
        if column < 0 or column not in written or self._resort_timer.isActive():
            return
        order = self.proxy.sortOrder()
        values = [self.proxy.index(r, column).data(RawRole) for r in range(self.proxy.rowCount())]
        if order == Qt.SortOrder.DescendingOrder:
            values.reverse()
        if not any(b < a for a, b in itertools.pairwise(values)):
            return
        wait = self._sorted_at + self.source.collector.interval - time.monotonic()
        if wait > 0:
            self._resort_timer.start(math.ceil(wait * 1000))
            return
        self._sorted_at = time.monotonic()
        self.proxy.sort(column, order)

    # -- data in ------------------------------------------------------------------------------------------------------
    def _row(self, name: str, monitored: Monitored) -> FleetRow:
        sample = self.source.latest.get(name)
        d = sample.derived if sample is not None else None
        spark = np.empty(0)
        stamp = 0.0
        if sample is not None:
            t, v = self.source.snapshot(name, ("request_rate",)).get("request_rate", (np.empty(0), np.empty(0)))
            keep = t >= t[-1] - SPARK_SECONDS if len(t) else slice(0)
            spark, stamp = v[keep], float(t[-1]) if len(t) else 0.0
        version = self.source.versions.get(name, "")
        if not version and monitored.status is not None:
            version = monitored.status.model_version or ""
        return FleetRow(
            name=name,
            health=self.source.health_of(name),
            request_rate=d.request_rate if d else math.nan,
            error_rate=d.error_rate if d else math.nan,
            latency_p99=d.latency_p99 if d else math.nan,
            cpu_percent=d.cpu_percent if d else math.nan,
            resident_memory=d.resident_memory if d else math.nan,
            version=version,
            url=monitored.metrics_url,
            spark=spark,
            spark_stamp=stamp,
            scraped=sample is not None,
            stopped=bool(getattr(self.source.collector, "failure", "")),
        )

    def _samples(self, batch: list[Any]) -> None:
        """A drain tick's batch: the plots of the selection redraw a row of panels per tick, fleet rows in slices.

        Every endpoint is scraped on the same tick, so a whole fleet's samples land in one batch; its rows are
        updated a slice per tick (all within a second at 5 Hz) so no single repaint covers the whole table. The
        plots redraw at most once per scrape interval, a row of panels per tick (this one, then the slice timer's):
        each paint covers a third of the curves and an x step re-lays two axes at a time. A tick that redraws
        panels leaves its fleet rows to a later slice: the two in one tick added up to most slow ticks.
        """
        started = time.perf_counter()
        touched = {s.endpoint for s in batch}
        self._dirty.update(dict.fromkeys(s.endpoint for s in batch))
        if touched & set(self.plots.names):
            self._plots_stale = True
        # at most one redraw per scrape interval: scrapes are spread over the interval, so the selected
        # deployments' samples come in different ticks; redrawing for each would paint the plots 5 times a second
        if self._plots_stale and time.monotonic() - self._plots_drawn >= 0.9 * self.source.collector.interval:
            self._plots_stale = False
            self._plots_drawn = time.monotonic()
            self._plot_rows = list(PANEL_ROWS)
        self._next_update()
        self._record(started)

    def _row_slice(self) -> None:
        if not self._dirty and not self._plot_rows:
            self._slice_timer.stop()
            return
        started = time.perf_counter()
        self._next_update()
        self._record(started)

    def _next_update(self) -> None:
        """One piece of work per tick: the next row of panels of a redraw round, else a slice of fleet rows."""
        if self._plot_rows:
            self.refresh_plots(self._plot_rows.pop(0))
        else:
            self._update_dirty_rows()
        if (self._dirty or self._plot_rows) and not self._slice_timer.isActive():
            self._slice_timer.start()

    def _record(self, started: float) -> None:
        self.update_times.append(time.perf_counter() - started)
        if len(self.update_times) >= 2 * UPDATE_TIMES_KEPT:
            del self.update_times[:-UPDATE_TIMES_KEPT]

    def _update_dirty_rows(self) -> None:
        if not self._dirty:
            return
        per_tick = max(ROWS_PER_SLICE, -(-len(self.source.monitored) // SLICES_PER_INTERVAL))
        names = list(self._dirty)[:per_tick]
        for name in names:
            del self._dirty[name]
        self.refresh_fleet(set(names))

    def _event(self, event: Any) -> None:
        if event.kind == "health":
            monitored = self.source.monitored.get(event.endpoint)
            if monitored is not None:
                self._resort(self.model.update_row(self._row(event.endpoint, monitored)))
            if event.detail.startswith("down"):
                self.statusMessage.emit(f"{event.endpoint} is down: {event.detail.split(': ', 1)[-1]}")
        elif event.endpoint in self.plots.names:
            self.refresh_plots()

    def _endpoints_changed(self) -> None:
        self.refresh_fleet()
        self._update_source_label()

    def _rows_changed(self, *_: Any) -> None:
        empty = self.model.rowCount() == 0
        self.view.setVisible(not empty)
        self.empty_label.setVisible(empty)
        if not empty and not self.view.selectionModel().hasSelection():
            self.view.selectRow(0)
        self._selection_changed()

    def _selection_changed(self, *_: Any) -> None:
        names = self.selected_names()
        self.plots.set_deployments(names)
        self.detail_title.setText(self.plots.legend_html() if names else "Select deployments above to plot them")
        monitored = self.source.monitored.get(names[0]) if len(names) == 1 else None
        self.load_button.setEnabled(monitored is not None and monitored.base_url is not None)
        self.remove_button.setEnabled(
            any(self.source.monitored.get(n, None) and self.source.monitored[n].origin == "manual" for n in names)
        )
        if self.history_mode:
            self._load_history()
        else:
            self.refresh_plots()

    def _focus_row(self, index: QModelIndex) -> None:
        """Double-click: plot just that deployment."""
        name = self.proxy.index(index.row(), FleetModel.NAME).data()
        if name:
            self.select(name)
            self.plots.setFocus()

    def _range_changed(self, _index: int) -> None:
        if self.history_mode:
            self.plots.set_range(None)
            self._load_history()
            return
        self.plots.set_range(self.range_combo.currentData())
        self.refresh_plots()

    # -- Prometheus mode and saved history (workers) -------------------------------------------------------------------
    def _apply_config(self) -> None:
        self.source.set_prometheus(self.config.prometheus_url)
        history_index = self.range_combo.findText(HISTORY_RANGE)
        item = self.range_combo.model().item(history_index)  # type: ignore[attr-defined]
        item.setEnabled(self.config.history and self.history_path is not None)
        self._update_source_label()

    def _update_source_label(self) -> None:
        n = len(self.source.monitored)
        where = f"queried from Prometheus at {self.config.prometheus_url}" if self.config.prometheus_url else "scraped"
        every = f"every {self.source.collector.interval:g} s"
        history = " · history saved" if self.config.history else ""
        self.source_label.setText(f"{n} endpoint{'s' * (n != 1)}, {where} {every}{history}")

    def _collector_problem(self, message: str) -> None:
        """The collection process failed: say so (restarted: a warning; given up: an error that stays)."""
        stopped = bool(getattr(self.source.collector, "failure", ""))
        if stopped:
            self.refresh_fleet()  # every row says why it is no longer watched
        if stopped and hasattr(self.source.collector, "resume"):
            self.banner.show_message(
                message, kind="error", action_text="Restart monitoring", action=self._resume_collection
            )
        else:
            self.banner.show_message(message, kind="error" if stopped else "warning")

    def _resume_collection(self) -> None:
        try:
            self.source.collector.resume()
        except ModelDeckError as exc:
            self.banner.show_message(describe_error(exc), kind="error")

    def _source_problem(self, message: str) -> None:
        """The Prometheus server stopped answering (rows say unknown, with why), or answers again ('')."""
        if message:
            self.banner.show_message(message, kind="warning")
        elif self.banner.isVisible() and self.banner.label.text() == self._source_message:
            self.banner.hide()
        self._source_message = message

    def _load_history(self) -> None:
        names = list(self.plots.names)
        if not names or self.history_path is None:
            return
        run_task(
            _history_series,
            self.history_path,
            names,
            on_result=self._history_loaded,
            on_error=lambda e: self.banner.show_message(f"Could not read the history: {describe_error(e)}"),
            channel=self._history_channel,
            name="read history",
            owner=self,
        )

    def _history_loaded(self, result: tuple[dict[str, Any], list[Any]]) -> None:
        if not self.history_mode:
            return
        data, events = result
        self.plots.show_data(data)
        self.plots.show_markers(events)

    # -- actions ------------------------------------------------------------------------------------------------------
    def open_add_endpoint(self) -> AddEndpointDialog:
        dialog = AddEndpointDialog(set(self.source.monitored), self)
        self.dialog = dialog

        def accepted() -> None:
            chosen = dialog.chosen()
            if chosen is not None:
                name, url = chosen
                self.source.add(Monitored(name, url, None, "manual"))
                self.endpointAdded.emit(name, url)
                self.select(name)

        dialog.accepted.connect(accepted)
        dialog.open()
        return dialog

    def remove_selected(self) -> None:
        for name in self.selected_names():
            monitored = self.source.monitored.get(name)
            if monitored is not None and monitored.origin == "manual":
                self.source.remove(name)
                self.endpointRemoved.emit(name)

    def open_settings(self) -> MonitorSettingsDialog:
        dialog = MonitorSettingsDialog(self.config, self)
        self.dialog = dialog

        def accepted() -> None:
            chosen = dialog.chosen()
            if chosen is not None:
                self.set_config(chosen)
                self.configChanged.emit(chosen)

        dialog.accepted.connect(accepted)
        dialog.open()
        return dialog

    def open_load_dialog(self) -> None:
        """Load the selected deployment's input example in a worker, then open the load dialog on it."""
        names = self.selected_names()
        monitored = self.source.monitored.get(names[0]) if len(names) == 1 else None
        if monitored is None or monitored.base_url is None:
            return
        if self.example_loader is None:
            self.banner.show_message("This endpoint has no input example to send.", kind="warning")
            return
        run_task(
            self.example_loader,
            monitored,
            on_result=lambda body: self._open_load(monitored, body),
            on_error=lambda e: self.banner.show_message(f"Could not read the input example: {describe_error(e)}"),
            channel=self._example_channel,
            name="load input example",
            owner=self,
        )

    def _open_load(self, monitored: Monitored, body: Any) -> None:
        if body is None:
            self.banner.show_message(f"{monitored.name} has no input example to send.", kind="warning")
            return
        if self.load_dialog is not None:
            self.load_dialog.close()
        assert monitored.base_url is not None
        self.load_dialog = LoadDialog(monitored.name, monitored.base_url, body, self)
        self.load_dialog.finishedRun.connect(lambda r: self.statusMessage.emit(f"{monitored.name}: {r.summary()}"))
        self.load_dialog.open()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.refresh_plots()

    def status_colour(self, name: str) -> str:
        """The health chip's foreground colour of ``name`` (what a user sees; tests read it)."""
        row = self.model.row_of(name)
        colour = self.model.index(row, FleetModel.HEALTH).data(Qt.ItemDataRole.ForegroundRole)
        return colour.name() if colour is not None else style.MUTED


def _history_series(path: Any, names: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """Worker: every saved point and marker of ``names`` from the history file."""
    from modeldeck.core.monitor.collector import MonitorEvent

    store = HistoryStore(path)
    try:
        data = {n: store.load(n, names=PLOTTED_SERIES) for n in names}
        events = [MonitorEvent(e.kind, e.endpoint, e.at, e.detail) for n in names for e in store.events(n)]
    finally:
        store.close()
    return data, events
