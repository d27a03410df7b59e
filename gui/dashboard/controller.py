"""Wires the dashboards into the main window: the Monitor page, its collector, and which endpoints it watches.

Endpoints come from :class:`DeploymentStatus` objects — the Deployments page's
listings of every known target (local, SSH, Docker…), plus a slow poll of the
local target on a thread of its own (so local deployments come and go even while
that page is hidden) — and from endpoints the user added by hand (kept in
``monitor.toml``). Any target kind whose status carries an
``endpoint`` is monitored without changes here.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modeldeck.core.errors import ConfigError, ModelDeckError
from modeldeck.core.monitor.config import MonitorConfig, load_monitor_config, save_monitor_config
from modeldeck.core.monitor.health import HealthPolicy, user_policy
from modeldeck.core.monitor.history import HistoryWriter
from modeldeck.core.monitor.prometheus import ScrapeTarget, write_file_sd
from modeldeck.core.targets.base import DeploymentStatus, Target
from modeldeck.gui.dashboard.page import MonitorPage
from modeldeck.gui.dashboard.source import Monitored, MonitorSource, StatusPoller
from modeldeck.gui.workers import Channel, describe_error, run_task
from PySide6.QtCore import QEvent, QObject, Signal

if TYPE_CHECKING:
    from modeldeck.gui.main_window import MainWindow

log = logging.getLogger(__name__)

POLL_MS = 5000


class DashboardUI(QObject):
    """Owns the Monitor page and its :class:`MonitorSource`; stops collection when the window closes."""

    _listed = Signal(str, list)  # from the poller thread, queued into the UI thread
    _listing_failed = Signal(str, str)

    def __init__(self, window: MainWindow, *, poll_ms: int = POLL_MS, drain_hz: float = 5.0) -> None:
        super().__init__(window)
        self.window = window
        settings = window.settings
        problems = []
        try:
            self.config = load_monitor_config(settings.config_dir)
        except ConfigError as exc:
            problems.append(describe_error(exc))
            self.config = MonitorConfig()
        try:
            policy = user_policy(settings.config_dir)
        except ConfigError as exc:
            problems.append(describe_error(exc))
            policy = HealthPolicy()
        self.history_path = self.config.history_path(settings.data_dir)
        self.source = MonitorSource(
            self, interval=self.config.interval, retention=self.config.retention, drain_hz=drain_hz, policy=policy
        )
        self._start_history(problems)
        self.page = MonitorPage(self.source, self.config, example_loader=self._example, history_path=self.history_path)
        self.page_index = window.add_page("Monitor", self.page)
        self.page.statusMessage.connect(window.show_status)
        self.page.configChanged.connect(self._config_changed)
        self.page.endpointAdded.connect(self._endpoint_added)
        self.page.endpointRemoved.connect(self._endpoint_removed)
        if problems:
            self.page.banner.show_message("; ".join(problems), kind="warning")
        for name, url in self.config.endpoints:
            self.source.add(Monitored(name, url, None, "manual"))

        self._file_sd_channel = Channel("file_sd")
        self._owners: dict[str, str] = {}  # deployment name -> origin (for its input example)
        self.poller = StatusPoller(self._listed.emit, self._listing_failed.emit, interval=poll_ms / 1000)
        self._listed.connect(self._statuses)
        self._listing_failed.connect(self._list_failed)
        self._pool: Any = None  # the Deployments page's pool of every known target (SSH, Docker, …)
        deploy_ui = getattr(window, "deploy_ui", None)
        if deploy_ui is not None:
            self.add_target(deploy_ui.target)
            listed = getattr(deploy_ui.page, "listed", None)
            self._pool = getattr(deploy_ui.page, "pool", None)
            if listed is not None:
                listed.connect(self._listings)
            else:
                origin = self._origin(deploy_ui.target)
                deploy_ui.page.refreshed.connect(lambda statuses: self._statuses(origin, statuses))
        self.file_sd_path = settings.data_dir / "monitor" / "prometheus" / "modeldeck-targets.json"
        self.source.endpointsChanged.connect(self.write_scrape_targets)
        window.installEventFilter(self)
        self.source.start()
        self.poller.start()

    # -- targets -----------------------------------------------------------------------------------------------------
    @staticmethod
    def _origin(target: Target) -> str:
        return f"target:{getattr(target, 'url', repr(target))}"

    def add_target(self, target: Target) -> None:
        """Monitor every deployment of ``target`` (SSH, Docker, … — anything implementing ``status()``)."""
        self.poller.add(self._origin(target), target)

    def poll(self) -> None:
        """List every target's deployments now (on the poller thread) instead of at the next interval."""
        self.poller.poll_now()

    def _list_failed(self, origin: str, message: str) -> None:
        log.info("listing %s for the monitor failed: %s", origin, message)

    def _listings(self, listings: list[Any]) -> None:
        """The Deployments page listed every target: remote ones are monitored from here (unreachable: kept)."""
        for listing in listings:
            if listing.reachable:
                self._statuses(f"target:{listing.url}", list(listing.statuses))

    def _statuses(self, origin: str, statuses: list[DeploymentStatus]) -> None:
        for s in statuses:
            self._owners[s.name] = origin
        self.source.set_deployments(statuses, origin=origin)

    def _example(self, monitored: Monitored) -> Any:
        """Worker: the input example of a monitored deployment, from the target that runs it."""
        origin = self._owners.get(monitored.name, "")
        target = self.poller.target(origin)
        if target is None and self._pool is not None and origin.startswith("target:"):
            target = self._pool.get(origin.removeprefix("target:"))
        getter = getattr(target, "input_example", None)
        if getter is None:
            raise ModelDeckError(f"{monitored.name} has no input example", hint="only deployments of a target have one")
        return getter(monitored.name)

    def write_scrape_targets(self) -> None:
        """In Prometheus mode, keep a file_sd file of every monitored endpoint for the user's Prometheus (worker)."""
        if not self.config.prometheus_url:
            return
        targets = []
        for m in self.source.monitored.values():
            parts = urlsplit(m.metrics_url)
            status = m.status
            targets.append(
                ScrapeTarget(
                    m.name,
                    parts.netloc,
                    (status.model_name or "") if status else "",
                    (status.model_version or "") if status else "",
                    parts.path or "/metrics",
                )
            )
        self.page.source_label.setToolTip(
            f"Scrape targets for Prometheus (file_sd_configs): {self.file_sd_path}\n"
            "Each target carries a 'deployment' label, which the plots query by."
        )
        run_task(
            write_file_sd,
            self.file_sd_path,
            targets,
            on_error=lambda e: self.page.banner.show_message(
                f"Could not write the scrape targets: {describe_error(e)}"
            ),
            channel=self._file_sd_channel,
            name="write Prometheus targets",
            owner=self.page,
        )

    # -- settings ----------------------------------------------------------------------------------------------------
    def _start_history(self, problems: list[str]) -> None:
        if not self.config.history:
            return
        writer = HistoryWriter(
            self.history_path,
            retention_days=self.config.history_retention_days,
            max_rows=self.config.history_max_rows,
        )
        try:
            writer.start()
        except ConfigError as exc:
            problems.append(describe_error(exc))
            return
        self.source.history = writer

    def _save(self) -> None:
        try:
            save_monitor_config(self.window.settings.config_dir, self.config)
        except OSError as exc:
            self.page.banner.show_message(f"Could not save the monitoring settings: {exc}")

    def _config_changed(self, config: MonitorConfig) -> None:
        history_changed = (config.history, config.history_retention_days, config.history_max_rows) != (
            self.config.history,
            self.config.history_retention_days,
            self.config.history_max_rows,
        )
        self.config = config
        self._save()
        self.write_scrape_targets()
        if history_changed:
            if self.source.history is not None:
                self.source.history.stop()
                self.source.history = None
            problems: list[str] = []
            self._start_history(problems)
            if problems:
                self.page.banner.show_message("; ".join(problems))

    def _endpoint_added(self, name: str, url: str) -> None:
        self.config = replace(self.config, endpoints=(*[e for e in self.config.endpoints if e[0] != name], (name, url)))
        self.page.config = self.config
        self._save()

    def _endpoint_removed(self, name: str) -> None:
        self.config = replace(self.config, endpoints=tuple(e for e in self.config.endpoints if e[0] != name))
        self.page.config = self.config
        self._save()

    # -- shutdown ----------------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.poller.stop()
        self.source.stop()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.window and event.type() == QEvent.Type.Close:
            self.shutdown()
        return False


def install_dashboard_ui(window: MainWindow, **kwargs: Any) -> DashboardUI:
    """Add the Monitor page to ``window`` (after the deploy UI, whose deployments it watches)."""
    return DashboardUI(window, **kwargs)
