"""The Registry page: models | versions | details, plus compare and alias promotion.

Every registry call runs in a worker. Requests that belong to "the current
selection" are tagged (a :class:`~modeldeck.gui.workers.Channel`, or the model
generation counter for paging/metrics) so a slow answer for an old selection is
dropped instead of overwriting what the user is looking at now.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modeldeck.core.errors import Cancelled
from modeldeck.core.registry.types import ModelVersion, Page, RegisteredModel, VersionComparison, VersionDetails
from modeldeck.core.state import Selection
from modeldeck.gui import style
from modeldeck.gui.registry.details import DetailsPane
from modeldeck.gui.registry.dialogs import CompareDialog, ComparePickerDialog, PromoteDialog
from modeldeck.gui.registry.models import ModelFilterProxy as _ModelFilterProxy
from modeldeck.gui.registry.models import (
    ObjectRole,
    RegisteredModelListModel,
    SubtitleRole,
    VersionSortProxy,
    VersionTableModel,
)
from modeldeck.gui.widgets import ElidedLabel, MessageBanner, fit_columns
from modeldeck.gui.workers import Channel, TaskHandle, describe_error, run_task
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QFont, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QMessageBox,
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

if TYPE_CHECKING:
    from modeldeck.core.registry.client import Registry

log = logging.getLogger(__name__)

MAX_MODEL_PAGES = 200  # 20,000 models: a bound, not an expectation
MAX_SEEK_PAGES = 25  # pages loaded to reach a remembered/requested older version (5,000 at 200 a page)
APPEND_SLICE = 50  # rows added per event-loop turn when a page arrives
METRIC_SLICE = 40  # metric cells rewritten per event-loop turn
PREFERRED_METRICS = ("accuracy", "f1", "f1_score", "roc_auc", "r2", "rmse", "mae", "mse", "loss")


def _fetch_all_models(calls: SerialRegistry, cancel: Any = None) -> list[RegisteredModel]:
    """All registered models, page by page (bounded), honouring cancellation between pages."""
    models: list[RegisteredModel] = []
    token: str | None = None
    for _ in range(MAX_MODEL_PAGES):
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        page = calls("list_models")("", token, 100, cancel=cancel)
        models.extend(page.items)
        token = page.next_token
        if token is None:
            break
    return models


def default_model(models: list[RegisteredModel]) -> RegisteredModel | None:
    """Where to open when nothing is remembered: the model with a ``champion``, then the most versions."""

    def rank(m: RegisteredModel) -> tuple[int, int, int, str]:
        latest = int(m.latest_version) if (m.latest_version or "").isdigit() else 0
        return (-("champion" in m.aliases), -latest, -len(m.aliases), m.name)

    return min(models, key=rank, default=None)


class SerialRegistry:
    """Calls into one :class:`Registry` from the pool, one at a time.

    The registry client promises safety for one worker thread at a time, so every
    call takes this lock; requests that were cancelled (superseded) while waiting
    give up without touching the registry.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._lock = threading.Lock()

    def __call__(self, method: str) -> Callable[..., Any]:
        fn = getattr(self.registry, method)

        def locked(*args: Any, cancel: threading.Event | None = None) -> Any:
            with self._lock:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                return fn(*args)

        locked.__qualname__ = f"Registry.{method}"
        return locked


class ModelItemDelegate(QStyledItemDelegate):
    """Two lines per model: the name, and "latest vN · aliases" in a muted colour."""

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        h = option.fontMetrics.height()
        return QSize(120, 2 * h + 14)  # narrower than the pane: names elide ("…") instead of a scroll bar

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        widget = opt.widget
        widget_style = widget.style() if widget is not None else None
        if widget_style is not None:
            widget_style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        painter.save()
        rect = option.rect.adjusted(10, 6, -8, -6)
        h = option.fontMetrics.height()
        bold = QFont(option.font)
        bold.setWeight(QFont.Weight.DemiBold)
        painter.setFont(bold)
        painter.setPen(QColor(style.TEXT))
        name = painter.fontMetrics().elidedText(str(index.data()), Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(QRect(rect.left(), rect.top(), rect.width(), h), Qt.AlignmentFlag.AlignLeft, name)
        painter.setFont(option.font)
        painter.setPen(QColor(style.MUTED))
        subtitle = str(index.data(SubtitleRole) or "")
        sub = option.fontMetrics.elidedText(subtitle, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(QRect(rect.left(), rect.top() + h + 2, rect.width(), h), Qt.AlignmentFlag.AlignLeft, sub)
        painter.restore()


class RegistryPage(QWidget):
    """Browse a registry. Call :meth:`set_registry`; everything else follows from user actions."""

    modelsLoaded = Signal(int)
    versionsLoaded = Signal(str)  # model name
    detailsShown = Signal(object)  # VersionDetails
    firstScreenReady = Signal()
    loadFailed = Signal(str)
    statusMessage = Signal(str)
    aliasChanged = Signal(str, str)  # model, alias
    actionsChanged = Signal()  # Compare/Promote availability changed

    def __init__(self, parent: QWidget | None = None, *, versions_page_size: int = 200) -> None:
        super().__init__(parent)
        self.registry: Registry | None = None
        self._calls: Any = None  # SerialRegistry over self.registry
        self.versions_page_size = versions_page_size
        self._models_channel = Channel("models")
        self._versions_channel = Channel("versions")
        self._details_channel = Channel("details")
        self._action_channel = Channel("action")
        self._model_gen = 0  # bumps when the selected model or the registry changes
        self._model_tasks: list[TaskHandle] = []
        self._first_screen_pending = False
        self._want: Selection | None = None  # what to select when models/versions arrive
        self._want_reported = False  # say so when an explicitly requested model/version is missing
        # (model generation, wanted version, provisional version shown meanwhile, pages left) while paging
        # towards a wanted version older than the first page; dropped when the user picks something else.
        self._seek: tuple[int, str, str, int] | None = None
        self._model_aliases: dict[str, str] = {}
        self.compare_dialog: CompareDialog | None = None
        self.compare_picker: ComparePickerDialog | None = None
        self.promote_dialog: PromoteDialog | None = None
        self.remove_alias_box: QMessageBox | None = None
        self._details_timer = QTimer(self)
        self._details_timer.setSingleShot(True)
        self._details_timer.setInterval(40)  # arrow-key runs coalesce into one details request
        self._details_timer.timeout.connect(self._load_current_details)
        self._build()

    # -- construction -----------------------------------------------------------------------------
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.setSpacing(6)
        self.banner = MessageBanner()
        outer.addWidget(self.banner)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setChildrenCollapsible(False)
        outer.addWidget(self.splitter, 1)

        # Left: models
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 4, 0)
        left.setMinimumWidth(180)  # model names stay readable in a small window; the other panes give way
        title = QLabel("Models")
        title.setProperty("role", "pane-title")
        self.filter_edit = QLineEdit()
        self.filter_edit.setPlaceholderText("Filter models  (Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        self.model_list_model = RegisteredModelListModel(self)
        self.model_proxy = _ModelFilterProxy(self)
        self.model_proxy.setSourceModel(self.model_list_model)
        self.model_view = QListView()
        self.model_view.setModel(self.model_proxy)
        self.model_view.setItemDelegate(ModelItemDelegate(self.model_view))
        self.model_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.model_view.setUniformItemSizes(True)
        self.model_view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.models_stack = QStackedWidget()
        self.models_empty = QLabel()
        self.models_empty.setProperty("role", "empty")
        self.models_empty.setWordWrap(True)
        self.models_empty.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.models_stack.addWidget(self.model_view)
        self.models_stack.addWidget(self.models_empty)
        self.models_count = QLabel()
        self.models_count.setProperty("role", "muted")
        left_layout.addWidget(title)
        left_layout.addWidget(self.filter_edit)
        left_layout.addWidget(self.models_stack, 1)
        left_layout.addWidget(self.models_count)
        self.splitter.addWidget(left)

        # Middle: versions
        middle = QWidget()
        mid_layout = QVBoxLayout(middle)
        mid_layout.setContentsMargins(4, 0, 4, 0)
        head = QHBoxLayout()
        # Long model names must not set the window's minimum width: elided, full name in the tooltip.
        self.versions_title = ElidedLabel("Versions")
        self.versions_title.setProperty("role", "pane-title")
        self.metric_combo = QComboBox()
        self.metric_combo.setToolTip("Metric of each version's source run shown in the table (sortable)")
        self.metric_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.metric_combo.setMinimumContentsLength(10)
        metric_label = QLabel("Metric:")
        metric_label.setBuddy(self.metric_combo)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip(
            "Compare metrics and parameters of two versions (Ctrl+click two rows, or pick them in a dialog)"
        )
        self.promote_button = QPushButton("Promote…")
        self.promote_button.setToolTip("Set or move an alias (e.g. champion) to the selected version")
        head.addWidget(self.versions_title, 1)
        head.addWidget(metric_label)
        head.addWidget(self.metric_combo)
        head.addWidget(self.compare_button)
        head.addWidget(self.promote_button)
        mid_layout.addLayout(head)
        self.versions_banner = MessageBanner()
        mid_layout.addWidget(self.versions_banner)
        self.version_model = VersionTableModel(self)
        self.version_proxy = VersionSortProxy(self)
        self.version_proxy.setSourceModel(self.version_model)
        self.version_view = QTableView()
        self.version_view.setModel(self.version_proxy)
        self.version_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.version_view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.version_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.version_view.setAlternatingRowColors(True)
        self.version_view.setShowGrid(False)
        self.version_view.setWordWrap(False)
        self.version_view.setSortingEnabled(True)
        self.version_view.sortByColumn(VersionTableModel.VERSION, Qt.SortOrder.DescendingOrder)
        self.version_view.verticalHeader().hide()
        self.version_view.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        self.version_view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header = self.version_view.horizontalHeader()
        header.setHighlightSections(False)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setStretchLastSection(True)
        header.setSortIndicatorShown(True)
        header.setMinimumSectionSize(48)
        # The short run id is in each row's tooltip and in the details; the room goes to the tags instead.
        self.version_view.setColumnHidden(VersionTableModel.RUN, True)
        self.version_view.setTextElideMode(Qt.TextElideMode.ElideRight)
        # Fit columns on a sample of rows (visible ones first), not on every loaded version.
        header.setResizeContentsPrecision(60)
        self.version_view.verticalHeader().setResizeContentsPrecision(60)
        self.versions_stack = QStackedWidget()
        self.versions_empty = QLabel()
        self.versions_empty.setProperty("role", "empty")
        self.versions_empty.setWordWrap(True)
        self.versions_empty.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.versions_stack.addWidget(self.version_view)
        self.versions_stack.addWidget(self.versions_empty)
        mid_layout.addWidget(self.versions_stack, 1)
        self.versions_count = QLabel()
        self.versions_count.setProperty("role", "muted")
        mid_layout.addWidget(self.versions_count)
        self.splitter.addWidget(middle)

        # Right: details
        self.details = DetailsPane()
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(4, 0, 0, 0)
        right_layout.addWidget(self.details)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 5)
        self.splitter.setStretchFactor(2, 5)
        self.splitter.setSizes([230, 660, 510])

        # Wiring
        self.filter_edit.textChanged.connect(self._filter_changed)
        clear_filter = QShortcut(QKeySequence(Qt.Key.Key_Escape), self.filter_edit)
        clear_filter.setContext(Qt.ShortcutContext.WidgetShortcut)
        clear_filter.activated.connect(self.filter_edit.clear)
        self.filter_edit.returnPressed.connect(self.model_view.setFocus)
        self.model_view.selectionModel().currentChanged.connect(self._model_current_changed)
        self.version_view.selectionModel().currentRowChanged.connect(self._version_current_changed)
        self.version_view.selectionModel().selectionChanged.connect(self._update_buttons)
        self.version_view.activated.connect(self._version_activated)
        self.version_view.customContextMenuRequested.connect(self._version_context_menu)
        self.version_model.moreRequested.connect(self._fetch_more_versions)
        self.metric_combo.currentTextChanged.connect(self._metric_chosen)
        self.compare_button.clicked.connect(self.compare_selected)
        self.promote_button.clicked.connect(self.promote_selected)
        find = QShortcut(QKeySequence.StandardKey.Find, self)
        find.activated.connect(self.focus_filter)
        self.setTabOrder(self.filter_edit, self.model_view)
        self.setTabOrder(self.model_view, self.metric_combo)
        self.setTabOrder(self.metric_combo, self.compare_button)
        self.setTabOrder(self.compare_button, self.promote_button)
        self.setTabOrder(self.promote_button, self.version_view)
        self.setTabOrder(self.version_view, self.details.tabs)
        self._show_models_state("Opening the registry…")
        self._show_versions_state("Select a model to see its versions.")
        self._update_buttons()

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> TaskHandle:
        """run_task, with results dropped if this page is destroyed meanwhile."""
        return run_task(fn, *args, owner=self, **kwargs)

    # -- public API -------------------------------------------------------------------------------
    def set_registry(
        self, registry: Registry | None, *, select: Selection | None = None, explicit: bool = False
    ) -> None:
        """Show ``registry`` (None: nothing open); drops everything in flight for the previous one.

        ``select`` is the model/version to open on (remembered or asked for); without it the model
        with a ``champion`` alias (else the most versions) is chosen. ``explicit`` selections that do
        not exist are reported in the status bar; remembered ones fall back silently.
        """
        for channel in (self._models_channel, self._versions_channel, self._details_channel, self._action_channel):
            channel.invalidate()
        self._new_model_generation()
        self.registry = registry
        self._calls = SerialRegistry(registry) if registry is not None else None
        self.banner.hide()
        self.model_list_model.set_models([])
        self._model_aliases = {}
        self.version_model.reset()
        self.details.show_empty()
        self.versions_banner.hide()
        self.versions_title.setText("Versions")
        self.metric_combo.clear()
        self._show_versions_state("")
        self._update_buttons()
        self._want = None
        if registry is None:
            self._show_models_state("No registry is open.")
            return
        self._first_screen_pending = True
        self._want = select
        self._want_reported = explicit
        self.reload_models()

    def show_open_error(self, text: str, retry: Any) -> None:
        """The registry could not be opened: say why in the page, offer Retry."""
        self.set_registry(None)
        self.details.show_empty("Nothing to show until the registry can be reached.")
        self._show_models_state("No registry open.")
        self._show_versions_state("Versions appear here once the registry answers.")
        self.banner.show_message(text, action_text="Retry", action=retry)
        self.loadFailed.emit(text)

    def refresh(self) -> None:
        """Reload models, versions and details, keeping the selection where it is."""
        if self.registry is None:
            return
        current = self.current_version()
        model = self.current_model()
        self._want = Selection(model.name, current.version if current else None) if model else None
        self._want_reported = False
        self.reload_models()

    def reload_models(self) -> None:
        if self.registry is None:
            return
        self.statusMessage.emit("Loading models…")
        if not self.model_list_model.rowCount():
            self._show_models_state("Loading models…")
        self._run(
            _fetch_all_models,
            self._calls,
            on_result=self._models_loaded,
            on_error=self._models_failed,
            channel=self._models_channel,
            name="list models",
        )

    def has_scheduled_work(self) -> bool:
        """True while a details request is waiting for the selection to settle (debounce)."""
        return self._details_timer.isActive()

    def focus_filter(self) -> None:
        self.filter_edit.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.filter_edit.selectAll()

    def current_model(self) -> RegisteredModel | None:
        index = self.model_view.currentIndex()
        return index.data(ObjectRole) if index.isValid() else None

    def current_version(self) -> ModelVersion | None:
        index = self.version_view.currentIndex()
        return index.data(ObjectRole) if index.isValid() else None

    def selected_versions(self) -> list[ModelVersion]:
        rows = self.version_view.selectionModel().selectedRows()
        return [r.data(ObjectRole) for r in sorted(rows, key=lambda r: r.row())]

    def select_model(self, name: str) -> bool:
        row = self.model_list_model.row_of(name)
        if row < 0:
            return False
        index = self.model_proxy.mapFromSource(self.model_list_model.index(row, 0))
        if not index.isValid():
            return False
        self.model_view.setCurrentIndex(index)
        return True

    def select_version(self, version: str) -> bool:
        row = self.version_model.row_of(version)
        if row < 0:
            return False
        index = self.version_proxy.mapFromSource(self.version_model.index(row, 0))
        self.version_view.setCurrentIndex(index)
        self.version_view.scrollTo(index)
        return True

    # -- models -----------------------------------------------------------------------------------
    def _show_models_state(self, text: str) -> None:
        self.models_empty.setText(text)
        self.models_stack.setCurrentWidget(self.models_empty)
        self.models_count.setText("")

    def _filter_changed(self, text: str) -> None:
        self.model_proxy.setFilterFixedString(text)
        if self.model_list_model.rowCount() > 0:
            self._show_filtered_models()

    def _show_filtered_models(self) -> None:
        """The model list, or — when the filter hides every model — a line saying so (not a blank list)."""
        total, shown = self.model_list_model.rowCount(), self.model_proxy.rowCount()
        if shown == 0 and total > 0:
            self.models_empty.setText(
                f"No model matches “{self.filter_edit.text()}”. Clear the filter (Esc) to see all {total}."
            )
            self.models_stack.setCurrentWidget(self.models_empty)
        else:
            self.models_stack.setCurrentWidget(self.model_view)
        self.models_count.setText(f"{total} model(s)" if shown == total else f"{shown} of {total} model(s)")

    def _show_versions_state(self, text: str) -> None:
        self.versions_empty.setText(text)
        self.versions_stack.setCurrentWidget(self.versions_empty)
        self.versions_count.setText("")

    def _models_loaded(self, models: list[RegisteredModel]) -> None:
        self.banner.hide()
        current = self.current_model()
        want = self._want or (Selection(current.name) if current else None)
        self.model_list_model.set_models(models)
        self.modelsLoaded.emit(len(models))
        self.statusMessage.emit(f"{len(models)} model(s)")
        if not models:
            self._show_models_state("No registered models in this registry.")
            self._show_versions_state("Register a model with MLflow (mlflow.register_model) and press F5.")
            self.details.show_empty("Nothing to show yet.")
            self._emit_first_screen()
            return
        self._show_filtered_models()
        if want is not None and self.model_list_model.row_of(want.model) >= 0:
            self._want = self._resolve_alias(want, models)
            self.select_model(want.model)
            return
        if want is not None and self._want_reported:
            self.banner.show_message(f"No model named '{want.model}' in this registry.", kind="warning")
        self._want = None
        default = default_model(models)
        if not (default and self.select_model(default.name)):
            first = self.model_proxy.index(0, 0)
            if first.isValid():
                self.model_view.setCurrentIndex(first)

    def _resolve_alias(self, want: Selection, models: list[RegisteredModel]) -> Selection:
        """NAME@ALIAS → NAME/VERSION through the model's alias table (already loaded with the models)."""
        if not want.alias:
            return want
        model = next(m for m in models if m.name == want.model)
        version = model.aliases.get(want.alias)
        if version is None and self._want_reported:
            self.banner.show_message(f"{want.model} has no alias '{want.alias}'.", kind="warning")
        return Selection(want.model, version)

    def _models_failed(self, error: BaseException) -> None:
        text = describe_error(error)
        where = self.registry.display_name if self.registry is not None else "the registry"
        if self.model_list_model.rowCount() == 0:
            self._show_models_state(f"Could not list the models of {where}.")
            self._show_versions_state("")
        self.banner.show_message(text, action_text="Retry", action=self.reload_models)
        self.statusMessage.emit("Loading models failed")
        self.loadFailed.emit(text)

    def _model_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        model: RegisteredModel | None = current.data(ObjectRole) if current.isValid() else None
        self._new_model_generation()
        self._details_channel.invalidate()
        self.version_model.reset()
        self.details.show_empty()
        if model is None:
            self._versions_channel.invalidate()  # e.g. the filter hid the model: its versions must not land
            self.versions_title.setText("Versions")
            self._model_aliases = {}
            self._show_versions_state("Select a model to see its versions.")
            self._update_buttons()
            return
        self._model_aliases = dict(model.aliases)
        self.versions_title.setText(f"Versions of {model.name}")
        self._show_versions_state(f"Loading versions of {model.name}…")
        self._load_versions(model.name)
        self._update_buttons()

    # -- versions ---------------------------------------------------------------------------------
    def _new_model_generation(self) -> None:
        self._model_gen += 1
        for handle in self._model_tasks:
            handle.cancel()
        self._model_tasks = []

    def _for_model(self, fn: Any) -> Any:
        """Wrap a callback so it only runs if the selected model has not changed since the request."""
        gen = self._model_gen

        def call(value: Any) -> None:
            if gen == self._model_gen:
                fn(value)

        return call

    def _load_versions(self, name: str) -> None:
        if self.registry is None:
            return
        self.versions_banner.hide()
        self._run(
            self._calls("list_versions"),
            name,
            None,
            self.versions_page_size,
            on_result=self._versions_loaded,
            on_error=self._versions_failed,
            channel=self._versions_channel,
            name=f"list versions of {name}",
        )

    def _versions_loaded(self, page: Page[ModelVersion]) -> None:
        model = self.current_model()
        self.version_model.reset(page)
        if not page.items:
            self._show_versions_state(f"{model.name if model else 'This model'} has no versions yet.")
            self.details.show_empty("Nothing to show: the model has no versions.")
            self._emit_first_screen()
        else:
            self.versions_stack.setCurrentWidget(self.version_view)
            self._fit_version_columns()
            want, self._want = self._want, None
            wanted = want.version if want is not None and model is not None and want.model == model.name else None
            self._seek = None
            if not (wanted and self.select_version(wanted)):
                if wanted and self._seek_older(wanted, MAX_SEEK_PAGES):
                    pass
                elif wanted and self._want_reported:
                    self.banner.show_message(
                        f"Version {wanted} of {model.name} was not found among the newest "  # type: ignore[union-attr]
                        f"{self.versions_page_size} versions; showing the latest.",
                        kind="warning",
                    )
                self.version_view.setCurrentIndex(self.version_proxy.index(0, 0))
                self.version_view.scrollToTop()
            # The selection was made by us, not by arrow keys: ask for details now, before the metrics.
            self._details_timer.stop()
            self._load_current_details()
            self._request_metrics(page.items)
        self._update_counts()
        self.versionsLoaded.emit(model.name if model else "")

    def _fit_version_columns(self) -> None:
        """Columns fit their contents (bounded); Tags, the last one, stretches over what is left."""
        fit_columns(self.version_view, max_width=200)

    def _versions_failed(self, error: BaseException) -> None:
        model = self.current_model()
        self._show_versions_state(f"Could not list the versions of {model.name if model else 'this model'}.")
        retry = (lambda: self._load_versions(model.name)) if model else None
        self.versions_banner.show_message(describe_error(error), action_text="Retry", action=retry)
        self._emit_first_screen_failure(describe_error(error))

    def _fetch_more_versions(self, token: object) -> None:
        model = self.current_model()
        if self.registry is None or model is None:
            self.version_model.fetch_failed()
            return
        handle = self._run(
            self._calls("list_versions"),
            model.name,
            token,
            self.versions_page_size,
            on_result=self._for_model(self._more_versions_loaded),
            on_error=self._for_model(self._more_versions_failed),
            name=f"more versions of {model.name}",
        )
        self._model_tasks.append(handle)

    def _more_versions_loaded(self, page: Page[ModelVersion]) -> None:
        """Append in slices, yielding to the event loop between them, so the table keeps painting."""
        items = page.items
        if len(items) > APPEND_SLICE:
            self.version_model.append_versions(items[:APPEND_SLICE])
            rest = Page(items[APPEND_SLICE:], page.next_token)
            QTimer.singleShot(0, self, functools.partial(self._for_model(self._more_versions_loaded), rest))
            return
        self.version_model.append_page(page)
        self._update_counts()
        self._request_metrics(self.version_model.versions()[-self.versions_page_size :])
        self._continue_seek()

    def _seek_older(self, version: str, pages: int) -> bool:
        """Page on towards ``version`` if it can only be further down (older than everything loaded)."""
        loaded = self.version_model.versions()
        last = loaded[-1].version if loaded else ""
        if pages <= 0 or not (version.isdigit() and last.isdigit() and int(version) < int(last)):
            return False
        if not self.version_model.canFetchMore():
            return False
        if self._seek is None:  # show the newest meanwhile, so the first screen is not held up
            self.version_view.setCurrentIndex(self.version_proxy.index(0, 0))
        current = self.current_version()
        self._seek = (self._model_gen, version, current.version if current else "", pages)
        self.version_model.fetchMore(QModelIndex())
        return True

    def _continue_seek(self) -> None:
        if self._seek is None:
            return
        gen, version, provisional, pages = self._seek
        current = self.current_version()
        self._seek = None
        if gen != self._model_gen or current is None or current.version != provisional:
            return  # the user moved on
        if self.select_version(version):
            return
        if not self._seek_older(version, pages - 1) and self._want_reported:
            model = self.current_model()
            self.banner.show_message(
                f"Version {version} of {model.name if model else 'this model'} was not found; showing the latest.",
                kind="warning",
            )

    def _more_versions_failed(self, error: BaseException) -> None:
        self.version_model.fetch_failed()
        self.versions_banner.show_message(
            "Could not load more versions: " + describe_error(error),
            action_text="Retry",
            action=lambda: self.version_model.fetchMore(QModelIndex()),
        )

    def _update_counts(self) -> None:
        n = self.version_model.rowCount()
        more = " — scroll for more" if self.version_model.next_token else ""
        self.versions_count.setText(f"{n} version(s) loaded{more}")

    def _request_metrics(self, versions: tuple[ModelVersion, ...] | list[ModelVersion]) -> None:
        run_ids = sorted({v.run_id for v in versions if v.run_id})
        if not run_ids or self.registry is None:
            return
        handle = self._run(
            self._calls("run_metrics"),
            run_ids,
            on_result=self._for_model(self._metrics_loaded),
            on_error=self._for_model(self._metrics_failed),
            name="run metrics",
        )
        self._model_tasks.append(handle)

    def _metrics_loaded(self, metrics: dict[str, dict[str, float]]) -> None:
        self._refresh_metric_rows(self.version_model.merge_metrics(metrics))
        names = self.version_model.metric_names()
        current = self.metric_combo.currentText()
        if names == [self.metric_combo.itemText(i) for i in range(self.metric_combo.count())]:
            return
        self.metric_combo.blockSignals(True)
        self.metric_combo.clear()
        self.metric_combo.addItems(names)
        self.metric_combo.blockSignals(False)
        choice = current if current in names else next((m for m in PREFERRED_METRICS if m in names), None)
        choice = choice or (names[0] if names else "")
        self.metric_combo.blockSignals(True)
        self.metric_combo.setCurrentText(choice)
        self.metric_combo.blockSignals(False)
        self._metric_chosen(choice)
        self._update_buttons()

    def _refresh_metric_rows(self, rows: list[int]) -> None:
        """Metric cells in slices: every cell write is a Python→Qt call that must win the GIL back from
        the worker fetching the next page, so 200 rows in one go stalled the UI for ~70–130 ms."""
        self.version_model.refresh_metric_rows(rows[:METRIC_SLICE])
        if len(rows) > METRIC_SLICE:
            rest = rows[METRIC_SLICE:]
            QTimer.singleShot(0, self, functools.partial(self._for_model(self._refresh_metric_rows), rest))

    def _metrics_failed(self, error: BaseException) -> None:
        self.versions_banner.show_message("Metrics unavailable: " + describe_error(error), kind="warning")

    def _metric_chosen(self, name: str) -> None:
        if (name or None) == self.version_model.metric_name:
            return
        self.version_model.set_metric_name(name or None)
        self.version_view.resizeColumnToContents(VersionTableModel.METRIC)

    # -- details ----------------------------------------------------------------------------------
    def _version_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._update_buttons()
        if not current.isValid():
            return
        version: ModelVersion = current.data(ObjectRole)
        self.details.show_loading(f"{version.name} version {version.version}")
        self._details_timer.start()

    def _version_activated(self, index: QModelIndex) -> None:
        """Enter (or double-click) on a version: show its details now and move focus there."""
        self._details_timer.stop()
        self._load_current_details()
        self.details.tabs.setFocus(Qt.FocusReason.OtherFocusReason)

    def _load_current_details(self) -> None:
        version = self.current_version()
        if version is None or self.registry is None:
            return
        if self.details.details is not None and self.details.details.version == version:
            return
        self._run(
            self._calls("version_details"),
            version.name,
            version.version,
            on_result=self._details_loaded,
            on_error=lambda exc, v=version: self._details_failed(v, exc),
            channel=self._details_channel,
            name=f"details of {version.ref}",
        )

    def _details_loaded(self, details: VersionDetails) -> None:
        self.details.show_details(details)
        self.detailsShown.emit(details)
        self.statusMessage.emit(f"{details.version.name} version {details.version.version}")
        self._emit_first_screen()

    def _details_failed(self, version: ModelVersion, error: BaseException) -> None:
        self.details.show_empty(f"Could not load {version.name} version {version.version}.")
        self.details.show_error(describe_error(error), retry=self._load_current_details)
        self._emit_first_screen_failure(describe_error(error))

    def _emit_first_screen(self) -> None:
        if self._first_screen_pending:
            self._first_screen_pending = False
            self.firstScreenReady.emit()

    def _emit_first_screen_failure(self, text: str) -> None:
        if self._first_screen_pending:
            self._first_screen_pending = False
            self.loadFailed.emit(text)

    # -- actions ----------------------------------------------------------------------------------
    def _update_buttons(self, *_: Any) -> None:
        selected = len(self.version_view.selectionModel().selectedRows())
        self.compare_button.setEnabled(selected == 2 or (selected <= 1 and self.version_model.rowCount() >= 2))
        self.promote_button.setEnabled(self.current_version() is not None and self.registry is not None)
        self.metric_combo.setEnabled(self.metric_combo.count() > 0)
        self.actionsChanged.emit()

    def _version_context_menu(self, pos: Any) -> None:
        version = self.current_version()
        if version is None:
            return
        menu = QMenu(self)
        promote = QAction(f"Promote version {version.version}…", menu)
        promote.triggered.connect(self.promote_selected)
        menu.addAction(promote)
        for alias in version.aliases:
            remove = QAction(f"Remove alias '{alias}'…", menu)
            remove.triggered.connect(lambda _=False, a=alias: self.remove_alias(a))
            menu.addAction(remove)
        menu.addSeparator()
        two = len(self.selected_versions()) == 2
        compare = QAction("Compare the two selected versions" if two else "Compare with…", menu)
        compare.setEnabled(self.compare_button.isEnabled())
        compare.triggered.connect(self.compare_selected)
        menu.addAction(compare)
        menu.popup(self.version_view.viewport().mapToGlobal(pos))

    def compare_selected(self) -> None:
        """Compare the two selected versions; with one or none selected, let the user pick two first."""
        versions = self.selected_versions()
        if self.registry is None:
            return
        if len(versions) <= 1 and self.version_model.rowCount() >= 2:
            self.pick_versions_to_compare()
            return
        if len(versions) != 2:
            self.statusMessage.emit("Select exactly two versions to compare (Ctrl+click).")
            return
        self.compare_versions(*versions)

    def pick_versions_to_compare(self) -> None:
        if self.compare_picker is not None:
            self.compare_picker.close()
        picker = ComparePickerDialog(self.version_model.versions(), self.current_version(), self)
        picker.accepted.connect(lambda: self.compare_versions(*picker.chosen()))
        self.compare_picker = picker
        picker.open()

    def compare_versions(self, first: ModelVersion, second: ModelVersion) -> None:
        """Fetch the comparison in a worker and show it; the older version is always "a"."""
        if self.registry is None:
            return
        a, b = sorted((first, second), key=lambda v: (len(v.version), v.version))
        self.statusMessage.emit(f"Comparing {a.name} v{a.version} and v{b.version}…")
        self._run(
            self._calls("compare"),
            a,
            b,
            on_result=self._show_comparison,
            on_error=lambda exc: self.versions_banner.show_message("Compare failed: " + describe_error(exc)),
            channel=self._action_channel,
            name="compare versions",
        )

    def _show_comparison(self, comparison: VersionComparison) -> None:
        if self.compare_dialog is not None:
            self.compare_dialog.close()
        self.compare_dialog = CompareDialog(comparison, self)
        self.compare_dialog.show()
        self.statusMessage.emit(f"Compared {comparison.a.name} v{comparison.a.version} and v{comparison.b.version}")

    def promote_selected(self) -> None:
        version = self.current_version()
        if version is None or self.registry is None:
            return
        self.promote_dialog = PromoteDialog(version, self._model_aliases, self)
        self.promote_dialog.accepted.connect(lambda d=self.promote_dialog: self._set_alias(d.version, d.alias))
        self.promote_dialog.open()

    def _set_alias(self, version: ModelVersion, alias: str) -> None:
        if self.registry is None:
            return
        self.statusMessage.emit(f"Setting alias '{alias}' on {version.name} version {version.version}…")
        self._run(
            self._calls("set_alias"),
            version.name,
            alias,
            version.version,
            on_result=lambda _r: self._alias_done(
                version.name, alias, f"'{alias}' now points to version {version.version}"
            ),
            on_error=lambda exc: self.versions_banner.show_message(
                f"Could not set alias '{alias}': " + describe_error(exc)
            ),
            name="set alias",
        )

    def remove_alias(self, alias: str) -> None:
        version = self.current_version()
        if version is None or self.registry is None:
            return
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Remove alias",
            f"Remove alias '{alias}' from version {version.version} of {version.name}? "
            "Deployments that follow this alias will no longer resolve it.",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        remove = box.addButton("Remove alias", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        self.remove_alias_box = box

        def done() -> None:
            if box.clickedButton() is remove and self.registry is not None:
                self._run(
                    self._calls("delete_alias"),
                    version.name,
                    alias,
                    on_result=lambda _r: self._alias_done(version.name, alias, f"alias '{alias}' removed"),
                    on_error=lambda exc: self.versions_banner.show_message(
                        f"Could not remove alias '{alias}': " + describe_error(exc)
                    ),
                    name="delete alias",
                )

        box.finished.connect(done)
        box.open()

    def _alias_done(self, model: str, alias: str, what: str) -> None:
        self.statusMessage.emit(f"{model}: {what}")
        self.aliasChanged.emit(model, alias)
        self.refresh()
