"""Wires the deploy UI into the main window: the Deployments page and the Bundle…/Deploy locally…/
Build image…/Deploy to Docker… actions.

The actions act on the version selected in the Registry page (toolbar, a "Deploy" menu and
the versions table's context menu); they are enabled only while a version is selected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldeck.core.registry.types import ModelVersion
from modeldeck.core.targets.base import DeployResult
from modeldeck.core.targets.fleet import FleetResult
from modeldeck.core.targets.local import LocalTarget
from modeldeck.gui.deploy.dialogs import BundleDialog, DeployDialog
from modeldeck.gui.deploy.docker_dialogs import BuildImageDialog, DockerDeployDialog
from modeldeck.gui.deploy.page import DeploymentsPage
from modeldeck.gui.deploy.tasks import catalog_urls
from modeldeck.gui.fleet.dialog import HostsDeployDialog
from modeldeck.gui.fleet.tasks import remember_targets
from modeldeck.gui.workers import run_task
from PySide6.QtCore import QObject
from PySide6.QtGui import QAction, QKeySequence

if TYPE_CHECKING:
    from modeldeck.gui.main_window import MainWindow


class DeployUI(QObject):
    """Owns the Deployments page and the dialogs opened from the Registry page."""

    def __init__(self, window: MainWindow, *, refresh_ms: int | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.target = LocalTarget(window.settings.deployments_dir)
        kwargs = {} if refresh_ms is None else {"refresh_ms": refresh_ms}
        self.page = DeploymentsPage(
            self.target,
            extra_targets=catalog_urls,
            deployments_dir=window.settings.deployments_dir,
            bundles_dir=window.settings.bundles_dir,
            **kwargs,
        )
        self.page_index = window.add_page("Deployments", self.page, refresh=self.page.refresh)
        self.page.statusMessage.connect(window.show_status)
        self.bundle_dialog: BundleDialog | None = None
        self.deploy_dialog: DeployDialog | None = None
        self.build_image_dialog: BuildImageDialog | None = None
        self.docker_dialog: DockerDeployDialog | None = None

        self.bundle_action = QAction("Bundle…", window)
        self.bundle_action.setShortcut(QKeySequence("Ctrl+B"))
        self.bundle_action.setToolTip("Build a verified ONNX bundle of the selected version (Ctrl+B)")
        self.bundle_action.triggered.connect(self.open_bundle_dialog)
        self.deploy_action = QAction("Deploy locally…", window)
        self.deploy_action.setShortcut(QKeySequence("Ctrl+D"))
        self.deploy_action.setToolTip("Bundle the selected version and serve it on this machine (Ctrl+D)")
        self.deploy_action.triggered.connect(self.open_deploy_dialog)
        self.hosts_action = QAction("Deploy to hosts…", window)
        self.hosts_action.setShortcut(QKeySequence("Ctrl+Shift+D"))
        self.hosts_action.setToolTip(
            "Bundle the selected version and push it to SSH hosts from the inventory (Ctrl+Shift+D)"
        )
        self.hosts_action.triggered.connect(self.open_hosts_dialog)
        self.hosts_dialog: HostsDeployDialog | None = None
        self.build_image_action = QAction("Build image…", window)
        self.build_image_action.setToolTip("Bundle the selected version and build a container image of it")
        self.build_image_action.triggered.connect(self.open_build_image_dialog)
        self.docker_action = QAction("Deploy to Docker…", window)
        self.docker_action.setToolTip("Bundle the selected version and run it on a Docker engine")
        self.docker_action.triggered.connect(self.open_docker_dialog)
        window.toolbar.addSeparator()
        window.toolbar.addAction(self.bundle_action)
        window.toolbar.addAction(self.deploy_action)
        window.toolbar.addAction(self.hosts_action)
        window.toolbar.addAction(self.docker_action)
        menu = window.menuBar().addMenu("&Deploy")
        menu.addAction(self.bundle_action)
        menu.addAction(self.deploy_action)
        menu.addAction(self.hosts_action)
        menu.addSeparator()
        menu.addAction(self.build_image_action)
        menu.addAction(self.docker_action)

        selection = window.registry_page.version_view.selectionModel()
        selection.currentRowChanged.connect(self._update_actions)
        selection.selectionChanged.connect(self._update_actions)
        window.registryChanged.connect(self._update_actions)
        # A model change resets the versions table without a currentRowChanged (e.g. a filter hiding the model).
        window.registry_page.actionsChanged.connect(self._update_actions)
        self._update_actions()

    def selected_version(self) -> ModelVersion | None:
        if self.window.registry is None:
            return None
        return self.window.registry_page.current_version()

    def _update_actions(self, *_: object) -> None:
        enabled = self.selected_version() is not None
        actions = (
            self.bundle_action,
            self.deploy_action,
            self.hosts_action,
            self.build_image_action,
            self.docker_action,
        )
        for action in actions:
            action.setEnabled(enabled)

    def open_bundle_dialog(self) -> BundleDialog | None:
        version = self.selected_version()
        if version is None:
            return None
        dialog = BundleDialog(self.window.settings, version, self.window)
        self.bundle_dialog = dialog
        dialog.open()
        return dialog

    def open_deploy_dialog(self) -> DeployDialog | None:
        version = self.selected_version()
        if version is None:
            return None
        dialog = DeployDialog(self.window.settings, version, self.target, self.window)
        dialog.deployed.connect(self._deployed)
        self.deploy_dialog = dialog
        dialog.open()
        return dialog

    def open_hosts_dialog(self) -> HostsDeployDialog | None:
        version = self.selected_version()
        if version is None:
            return None
        dialog = HostsDeployDialog(self.window.settings, version, self.window)
        dialog.finishedRun.connect(self._hosts_deployed)
        self.hosts_dialog = dialog
        dialog.open()
        return dialog

    def _hosts_deployed(self, result: FleetResult) -> None:
        """List the hosts that now run a deployment on the Deployments page (recorded off the UI thread)."""
        urls = [h.target_url for h in result.hosts if h.ok]
        if urls:
            run_task(remember_targets, urls, on_result=lambda _: self.page.refresh(), name="remember SSH targets")

    def open_build_image_dialog(self) -> BuildImageDialog | None:
        version = self.selected_version()
        if version is None:
            return None
        dialog = BuildImageDialog(self.window.settings, version, self.window)
        self.build_image_dialog = dialog
        dialog.open()
        return dialog

    def open_docker_dialog(self) -> DockerDeployDialog | None:
        version = self.selected_version()
        if version is None:
            return None
        dialog = DockerDeployDialog(self.window.settings, version, self.window)
        dialog.deployed.connect(self._deployed)
        self.docker_dialog = dialog
        dialog.open()
        return dialog

    def _deployed(self, result: DeployResult, target_url: str | None = None) -> None:
        self.page.refresh(select=result.name if result.ok else None, target=target_url)


def install_deploy_ui(window: MainWindow, **kwargs: int) -> DeployUI:
    """Add the Deployments page and the deploy actions to ``window``."""
    return DeployUI(window, **kwargs)
