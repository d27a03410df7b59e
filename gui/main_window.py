"""The main window: toolbar, pages (Registry now; Deployments etc. via :meth:`MainWindow.add_page`), status bar.

The window owns which registry is open. Opening one (creating and seeding the
embedded demo registry on first start, then a ping) runs in a worker; pages
listen to :attr:`MainWindow.registryChanged`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modeldeck.core.heap import HeapTrimmer
from modeldeck.core.registry.types import VersionDetails
from modeldeck.core.settings import Settings, save_settings
from modeldeck.core.state import Selection, load_last_selection, remember_selection
from modeldeck.gui.registry.page import RegistryPage
from modeldeck.gui.settings_dialog import SettingsDialog
from modeldeck.gui.widgets import home_abbreviated
from modeldeck.gui.workers import Channel, default_pool, describe_error, run_task
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import QLabel, QMainWindow, QProgressBar, QTabWidget, QToolBar, QWidget

if TYPE_CHECKING:
    from modeldeck.core.registry.client import Registry

log = logging.getLogger(__name__)


def open_registry(settings: Settings, progress: Any = None, cancel: Any = None) -> Registry:
    """Worker side of "open": seed the embedded registry if needed, connect, ping."""
    from modeldeck.core.registry.client import Registry

    if settings.uses_embedded_registry:
        from modeldeck.core.registry.embedded import ensure_embedded_registry

        ensure_embedded_registry(settings, progress=progress, cancel=cancel)
    registry = Registry.from_settings(settings)
    registry.ping()
    return registry


class MainWindow(QMainWindow):
    registryChanged = Signal(object)  # Registry | None

    def __init__(
        self,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        versions_page_size: int = 200,
        select: Selection | None = None,
    ) -> None:
        """``select``: the model/version to open on (``modeldeck gui --select``) instead of the remembered one."""
        super().__init__(parent)
        self.settings = settings
        self.requested_selection = select
        self._registry: Registry | None = None
        self._open_channel = Channel("open registry")
        self.settings_dialog: SettingsDialog | None = None
        self.setWindowTitle("ModelDeck")
        self.resize(1400, 860)
        # Left open for days (the Monitor page's churn), glibc's heap keeps freed fragments resident.
        self.heap_trimmer = HeapTrimmer()
        self.heap_trimmer.start()

        self._page_refresh: dict[QWidget, Callable[[], object]] = {}
        self.pages = QTabWidget()
        self.pages.setDocumentMode(True)
        self.setCentralWidget(self.pages)
        self.registry_page = RegistryPage(versions_page_size=versions_page_size)
        self.add_page("Registry", self.registry_page)
        self._unsaved_selection: tuple[str, Selection] | None = None
        self.registry_page.detailsShown.connect(self._remember_selection)

        self._build_actions()
        self._build_status_bar()
        self.registry_page.statusMessage.connect(self.show_status)
        self.registry_page.actionsChanged.connect(self._update_actions)
        default_pool().busyChanged.connect(self._set_busy)
        self._update_actions()
        # The deploy UI adds the Deployments page (via add_page) and the Bundle…/Deploy locally… actions.
        from modeldeck.gui.deploy.controller import install_deploy_ui

        self.deploy_ui = install_deploy_ui(self)
        from modeldeck.gui.dashboard.controller import install_dashboard_ui

        self.dashboard_ui = install_dashboard_ui(self)
        from modeldeck.gui.inventory.controller import install_inventory_ui

        self.inventory_ui = install_inventory_ui(self)
        # Ctrl+1…Ctrl+4 go to the pages (Registry, Deployments, Monitor, Hosts), as tabs do in a browser.
        for index in range(self.pages.count()):
            go = QShortcut(QKeySequence(f"Ctrl+{index + 1}"), self)
            go.activated.connect(lambda i=index: self.pages.setCurrentIndex(i))
            self.pages.setTabToolTip(index, f"{self.pages.tabText(index)} (Ctrl+{index + 1})")

    # -- construction -----------------------------------------------------------------------------
    def _build_actions(self) -> None:
        self.open_action = QAction("Open registry…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.setToolTip("Choose the MLflow registry to browse (Ctrl+O)")
        self.open_action.triggered.connect(self.open_settings)
        self.settings_action = QAction("Settings…", self)
        self.settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        self.settings_action.triggered.connect(self.open_settings)
        self.refresh_action = QAction("Refresh", self)
        self.refresh_action.setShortcut(QKeySequence(Qt.Key.Key_F5))
        self.refresh_action.setToolTip("Reload the page shown: the registry, deployments or hosts (F5)")
        self.refresh_action.triggered.connect(self.refresh)
        self.compare_action = QAction("Compare", self)
        self.compare_action.setToolTip("Compare the two selected versions")
        self.compare_action.triggered.connect(self.registry_page.compare_selected)
        self.promote_action = QAction("Promote…", self)
        self.promote_action.setToolTip("Set or move an alias to the selected version")
        self.promote_action.triggered.connect(self.registry_page.promote_selected)
        # No shortcut here: the page owns Ctrl+F (two owners would make it ambiguous).
        self.find_action = QAction("Find model\tCtrl+F", self)
        self.find_action.triggered.connect(self._focus_filter)
        self.quit_action = QAction("Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.settings_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        view_menu = menu.addMenu("&Registry")
        view_menu.addAction(self.refresh_action)
        view_menu.addAction(self.find_action)
        view_menu.addSeparator()
        view_menu.addAction(self.compare_action)
        view_menu.addAction(self.promote_action)

        toolbar = QToolBar("Main")
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for action in (self.open_action, self.refresh_action):
            toolbar.addAction(action)
        toolbar.addSeparator()
        for action in (self.compare_action, self.promote_action):
            toolbar.addAction(action)
        toolbar.addSeparator()
        toolbar.addAction(self.settings_action)
        self.addToolBar(toolbar)
        self.toolbar = toolbar

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.registry_label = QLabel("No registry open")
        self.registry_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(120)
        self.busy.setMaximumHeight(12)
        self.busy.setTextVisible(False)
        self.busy.hide()
        bar.addPermanentWidget(self.busy)
        bar.addPermanentWidget(self.registry_label)

    # -- public API -------------------------------------------------------------------------------
    def add_page(self, title: str, widget: QWidget, *, refresh: Callable[[], object] | None = None) -> int:
        """Add a top-level page (e.g. "Deployments"); returns its tab index.

        ``refresh`` is what Refresh (F5) does while the page is shown; pages without one refresh the registry.
        """
        if refresh is not None:
            self._page_refresh[widget] = refresh
        return self.pages.addTab(widget, title)

    @property
    def registry(self) -> Registry | None:
        return self._registry

    def open_current_registry(self) -> None:
        """Open the registry named by :attr:`settings` in a worker (seeding the demo on first start)."""
        self._open_channel.invalidate()
        self._save_selection()
        if self._registry is not None:
            self._registry = None
            self.registry_page.set_registry(None)
            self.registryChanged.emit(None)
        where = (
            "the embedded registry" if self.settings.uses_embedded_registry else self.settings.effective_tracking_uri
        )
        self.registry_label.setText(f"Opening {where}…")
        self.registry_page.banner.hide()
        self.registry_page._show_models_state(f"Opening {where}…")
        run_task(
            open_registry,
            self.settings,
            on_result=self._registry_opened,
            on_error=self._registry_failed,
            on_progress=self._open_progress,
            channel=self._open_channel,
            name="open registry",
            owner=self,
        )

    def refresh(self) -> None:
        page_refresh = self._page_refresh.get(self.pages.currentWidget())
        if page_refresh is not None:
            page_refresh()
        elif self._registry is None:
            self.open_current_registry()
        else:
            self.registry_page.refresh()

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        self.settings_dialog = dialog
        dialog.accepted.connect(lambda: self.apply_settings(dialog.chosen_settings()))
        dialog.open()

    def apply_settings(self, settings: Settings) -> None:
        """Save ``settings`` and reopen the registry they name."""
        try:
            save_settings(settings)
        except OSError as exc:
            self.registry_page.banner.show_message(f"Could not save the settings: {exc}")
            log.warning("could not save settings", exc_info=True)
        self.settings = settings
        self.open_current_registry()

    def show_status(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    # -- callbacks --------------------------------------------------------------------------------
    def _open_progress(self, message: str, fraction: float | None) -> None:
        pct = f" ({fraction:.0%})" if fraction is not None else ""
        self.show_status(f"{message}{pct}")
        self.registry_page._show_models_state(f"{message}{pct}")

    def _registry_opened(self, registry: Registry) -> None:
        # MLflow, SQLAlchemy and friends are imported by now: hundreds of thousands of long-lived objects.
        # A full (gen2) collection walks all of them with the GIL held — ~180 ms, the one UI stall while
        # paging 2,000 versions. Freezing moves them out of the collector's reach; new garbage still goes.
        gc.freeze()
        self._registry = registry
        self.registry_label.setText(home_abbreviated(registry.display_name))
        self.registry_label.setToolTip(registry.tracking_uri)
        select, explicit = self.requested_selection, self.requested_selection is not None
        self.requested_selection = None  # asked for once; reopening goes back to what was last shown
        if select is None:
            select = load_last_selection(self.settings, registry.tracking_uri)
        self.registry_page.set_registry(registry, select=select, explicit=explicit)
        self.registryChanged.emit(registry)
        self._update_actions()

    def _registry_failed(self, error: BaseException) -> None:
        text = describe_error(error)
        self.registry_label.setText("Registry not reachable")
        self.registry_label.setToolTip(text)
        self.show_status("Opening the registry failed")
        self.registry_page.show_open_error(text, self.open_current_registry)
        self._update_actions()

    def _remember_selection(self, details: VersionDetails) -> None:
        # Kept in memory and written when the window closes or the registry changes:
        # arrowing through versions must not write a file on the UI thread at every step.
        if self._registry is not None:
            self._unsaved_selection = (
                self._registry.tracking_uri,
                Selection(details.version.name, details.version.version),
            )

    def _save_selection(self) -> None:
        if self._unsaved_selection is None:
            return
        uri, selection = self._unsaved_selection
        self._unsaved_selection = None
        try:
            remember_selection(self.settings, uri, selection)
        except OSError:
            log.warning("could not remember the selected version", exc_info=True)

    def _set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)

    def _update_actions(self, *_: Any) -> None:
        page = self.registry_page
        self.compare_action.setEnabled(page.compare_button.isEnabled())
        self.promote_action.setEnabled(page.promote_button.isEnabled())

    def _focus_filter(self) -> None:
        self.pages.setCurrentWidget(self.registry_page)
        self.registry_page.focus_filter()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._save_selection()
        default_pool().cancel_all()
        self._open_channel.invalidate()
        self.heap_trimmer.stop(timeout=0)  # a trim in progress finishes by itself; the thread is a daemon
        super().closeEvent(event)
