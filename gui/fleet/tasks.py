"""What the "Deploy to hosts" dialog runs in workers: plain calls into core, no Qt.

Progress here is the fleet's :class:`ProgressEvent` stream (``host=`` set), handed to an
:class:`EventBuffer` the dialog drains on a timer -- never one queued signal per event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from modeldeck.core.inventory.hosts import Host, Inventory
from modeldeck.core.settings import Settings
from modeldeck.core.targets.base import DeployOptions, ProgressEvent, Target
from modeldeck.core.targets.fleet import (
    FleetResult,
    HostPlan,
    StepTimeouts,
    deploy_many,
    plan_many,
    rollback_many,
)

# Builds the targets for the chosen hosts (default: SSH targets resolved through the inventory).
TargetFactory = Callable[[Sequence[Host], StepTimeouts], Mapping[str, Target]]

BUNDLE_HOST = ""  # events about the bundle (not about one host) carry this host name


class EventBuffer:
    """Thread-safe inbox of progress events: workers ``put``, the UI thread ``drain`` s on a timer."""

    def __init__(self, limit: int = 50_000) -> None:
        self._lock = threading.Lock()
        self._events: list[ProgressEvent] = []
        self._limit = limit
        self.dropped = 0

    def put(self, event: ProgressEvent) -> None:
        with self._lock:
            if len(self._events) >= self._limit:  # a stuck UI must not grow memory without bound
                self.dropped += 1
                return
            self._events.append(event)

    def drain(self) -> list[ProgressEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events


def load_inventory(config_dir: Path) -> Inventory:
    """The inventory (reads ``inventory.toml``: not in the UI thread)."""
    return Inventory.for_config_dir(config_dir)


def ssh_targets(inventory: Inventory) -> TargetFactory:
    """The default factory: SSH targets for inventory hosts."""

    def make(hosts: Sequence[Host], steps: StepTimeouts) -> Mapping[str, Target]:
        from modeldeck.core.targets.ssh_hosts import targets_for_hosts

        return targets_for_hosts(inventory, hosts, step_timeouts=steps)

    return make


def ensure_bundle(
    settings: Settings,
    model_uri: str,
    bundle_dir: Path | None,
    progress: Callable[[ProgressEvent], None],
    cancel: threading.Event | None,
) -> Path:
    """``bundle_dir`` if given, else the version bundled into the app's bundle folder."""
    if bundle_dir is not None:
        return bundle_dir
    from modeldeck.core.bundle import BundleOptions
    from modeldeck.gui.deploy.tasks import build, bundle_dir_for

    def bundle_progress(message: str, fraction: float | None) -> None:
        progress(ProgressEvent("bundle", message, fraction, host=BUNDLE_HOST))

    out = bundle_dir_for(settings, model_uri)
    report = build(settings, model_uri, out, BundleOptions(overwrite=True), progress=bundle_progress, cancel=cancel)
    return Path(report.out_dir)


def plan_hosts(
    settings: Settings,
    model_uri: str,
    bundle_dir: Path | None,
    factory: TargetFactory,
    hosts: Sequence[Host],
    options: DeployOptions,
    forks: int,
    steps: StepTimeouts,
    events: EventBuffer,
    cancel: threading.Event | None = None,
) -> list[HostPlan]:
    """Bundle if needed, then ask every host what a deploy would do (connects; changes nothing)."""
    bundle = ensure_bundle(settings, model_uri, bundle_dir, events.put, cancel)
    targets = factory(hosts, steps)
    return plan_many(targets, bundle, options, forks=forks, step_timeouts=steps, cancel=cancel)


def deploy_hosts(
    settings: Settings,
    model_uri: str,
    bundle_dir: Path | None,
    factory: TargetFactory,
    hosts: Sequence[Host],
    options: DeployOptions,
    forks: int,
    steps: StepTimeouts,
    events: EventBuffer,
    cancel: threading.Event | None = None,
) -> FleetResult:
    """Bundle if needed, then deploy to every host (see :func:`deploy_many`)."""
    bundle = ensure_bundle(settings, model_uri, bundle_dir, events.put, cancel)
    targets = factory(hosts, steps)
    return deploy_many(targets, bundle, options, forks=forks, step_timeouts=steps, progress=events.put, cancel=cancel)


def rollback_hosts(
    factory: TargetFactory,
    hosts: Sequence[Host],
    name: str,
    forks: int,
    steps: StepTimeouts,
    events: EventBuffer,
    cancel: threading.Event | None = None,
) -> FleetResult:
    targets = factory(hosts, steps)
    return rollback_many(targets, name, forks=forks, step_timeouts=steps, progress=events.put, cancel=cancel)


def remember_targets(urls: Sequence[str]) -> None:
    """Record targets in the catalog the Deployments page lists (a failure to record is only logged)."""
    import logging

    from modeldeck.core.errors import ModelDeckError
    from modeldeck.core.targets import catalog

    for url in urls:
        try:
            catalog.remember(url)
        except (ModelDeckError, OSError) as exc:
            logging.getLogger(__name__).warning("could not record target %s: %s", url, exc)
