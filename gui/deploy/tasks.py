"""What the deploy UI runs in workers: plain calls into core, no Qt.

Each function takes the worker's ``progress(message, fraction)`` and ``cancel`` event and
returns a value the UI thread shows; errors are core :class:`ModelDeckError` s.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeck.core.errors import ModelDeckError
from modeldeck.core.settings import Settings
from modeldeck.core.targets.base import DeploymentStatus, DeployOptions, DeployResult, ProgressEvent, Target
from modeldeck.core.targets.health import HttpAnswer, request_json
from modeldeck.gui.widgets import pretty_json

ProgressFn = Callable[[str, "float | None"], None]


def _noop(_message: str, _fraction: float | None) -> None:
    """Default progress sink."""


def bundle_dir_for(settings: Settings, model_uri: str) -> Path:
    """Where the app keeps the bundle of ``model_uri`` (``models:/iris/3`` -> ``bundles/iris-3``)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_uri.split(":", 1)[-1]).strip("-._") or "bundle"
    return settings.bundles_dir / slug


def build(
    settings: Settings,
    model_uri: str,
    out_dir: Path,
    bundle_options: Any,
    progress: ProgressFn = _noop,
    cancel: threading.Event | None = None,
) -> Any:
    """Build a bundle (see :func:`modeldeck.core.bundle.build_bundle`); returns its report."""
    from modeldeck.core.bundle import build_bundle

    return build_bundle(
        model_uri,
        out_dir,
        tracking_uri=settings.effective_tracking_uri,
        registry_uri=settings.registry_uri,
        options=bundle_options,
        progress=progress,
        cancel=cancel,
    )


@dataclass(frozen=True)
class BundleAndDeploy:
    """Outcome of "Deploy locally": the bundle report (None if an existing bundle was used) and the deploy result."""

    report: Any
    result: DeployResult


def bundle_and_deploy(
    settings: Settings,
    model_uri: str,
    target: Target,
    options: DeployOptions,
    bundle_options: Any,
    progress: ProgressFn = _noop,
    cancel: threading.Event | None = None,
) -> BundleAndDeploy:
    """Bundle ``model_uri`` into the app's bundle folder (first half of the progress), then deploy it."""
    out = bundle_dir_for(settings, model_uri)
    check_port = getattr(target, "check_port", None)
    if check_port is not None and options.name:
        check_port(options.name, options)  # a busy port fails now, not after bundling

    def bundle_progress(message: str, fraction: float | None) -> None:
        progress(f"Bundling: {message}", None if fraction is None else 0.5 * fraction)

    report = build(settings, model_uri, out, bundle_options, progress=bundle_progress, cancel=cancel)

    def deploy_progress(event: ProgressEvent) -> None:
        fraction = None if event.fraction is None else 0.5 + 0.5 * event.fraction
        progress(f"Deploying: {event.message}", fraction)

    result = target.deploy(Path(report.out_dir), options, progress=deploy_progress, cancel=cancel)
    return BundleAndDeploy(report, result)


def statuses(target: Target) -> list[DeploymentStatus]:
    return target.status()


def input_example_text(target: Target, name: str) -> str:
    """The deployment's input example, pretty-printed for the Try-it editor ('' if it has none)."""
    getter = getattr(target, "input_example", None)
    example = getter(name) if getter is not None else None
    return pretty_json(example) if example is not None else ""


def send_request(endpoint: str, body: Any, timeout: float = 10.0) -> HttpAnswer:
    """POST ``body`` to ``endpoint/invocations``; transport failures become a one-line ModelDeckError."""
    try:
        return request_json("POST", endpoint.rstrip("/") + "/invocations", body, timeout=timeout)
    except (OSError, ValueError) as exc:
        raise ModelDeckError(f"no answer from {endpoint}: {exc}", hint="is the deployment running?") from exc


def operate(
    target: Target,
    verb: str,
    name: str,
    progress: ProgressFn = _noop,
    cancel: threading.Event | None = None,
) -> Any:
    """Run ``target.<verb>(name)`` (start, stop, rollback, undeploy) with the worker's progress and cancel."""

    def forward(event: ProgressEvent) -> None:
        progress(event.message, event.fraction)

    fn = getattr(target, verb, None)
    if fn is None:
        raise ModelDeckError(f"a {getattr(target, 'kind', '')} target cannot {verb} a deployment".replace("  ", " "))
    if verb == "stop":
        return fn(name)
    return fn(name, progress=forward, cancel=cancel)


# -- many targets ----------------------------------------------------------------------------------


class TargetPool:
    """Opened targets by the URL the catalog lists them under, shared by refreshes and actions.

    Opening a target may be slow (a Docker client pings its engine), so it happens in workers and
    each target is opened once; the lock makes concurrent workers share one instance.
    """

    def __init__(
        self,
        primary: Target,
        *,
        deployments_dir: Path | None = None,
        bundles_dir: Path | None = None,
        extra_urls: Callable[[], list[Any]] | None = None,
    ) -> None:
        """``extra_urls`` returns URLs or catalog ``KnownTarget`` entries (whose ``host`` opens an inventory host)."""
        self.primary = primary
        self.deployments_dir = deployments_dir
        self.bundles_dir = bundles_dir  # where the app's own bundles are: input examples for remote deployments
        self.extra_urls = extra_urls
        self._opened: dict[str, Target] = {primary.url: primary}
        self._hosts: dict[str, str] = {}  # URL -> inventory host name
        self._lock = threading.Lock()

    def urls(self) -> list[str]:
        """The primary target's URL, then the others (``extra_urls`` runs here: call it from a worker)."""
        urls = [self.primary.url]
        for entry in self.extra_urls() if self.extra_urls is not None else []:
            url = entry if isinstance(entry, str) else entry.url
            host = None if isinstance(entry, str) else getattr(entry, "host", None)
            if host is not None:
                with self._lock:
                    self._hosts[url] = host
            if url not in urls:
                urls.append(url)
        return urls

    def is_inventory_host(self, url: str) -> bool:
        with self._lock:
            return url in self._hosts

    def host_name(self, url: str) -> str | None:
        """The inventory host listed under ``url`` (None for other targets)."""
        with self._lock:
            return self._hosts.get(url)

    def get(self, url: str) -> Target:
        """The target listed under ``url``, opened on first use; raises :class:`TargetError`."""
        from modeldeck.core.targets.catalog import open_known

        with self._lock:
            target = self._opened.get(url)
        if target is not None:
            return target
        with self._lock:
            host = self._hosts.get(url)
        target = open_known(url, deployments_dir=self.deployments_dir, host=host)
        with self._lock:
            return self._opened.setdefault(url, target)

    def drop(self, url: str) -> None:
        """Forget the opened instance (e.g. after its engine failed), so the next use opens it afresh."""
        with self._lock:
            target = self._opened.pop(url, None) if url != self.primary.url else None
        close = getattr(target, "close", None)
        if close is not None:
            close()


def catalog_urls() -> list[Any]:
    """The non-local targets of the catalog (remembered deploys and inventory hosts), as ``KnownTarget`` s."""
    from modeldeck.core.targets.catalog import is_local, known_targets

    return [t for t in known_targets() if not is_local(t.url)]


@dataclass(frozen=True)
class AllListings:
    """One refresh: every target's listing, plus the /metrics scrapes used to compute runtime CPU %."""

    listings: list[Any]  # list[TargetListing]
    scrapes: dict[str, Any]  # endpoint -> Scrape
    primary_only: bool = False  # only the primary target was asked


def list_all(
    pool: TargetPool,
    previous_scrapes: dict[str, Any] | None = None,
    *,
    timeout: float = 8.0,
    scrape_timeout: float = 1.0,
    primary_only: bool = False,
    cancel: threading.Event | None = None,
) -> AllListings:
    """Every target's deployments (unreachable targets as errors), with CPU/memory for each running deployment.

    Targets that measure resources themselves (Docker's container stats) keep theirs; for the
    others the runtime's own ``/metrics`` is scraped (bounded by ``scrape_timeout``) and CPU % is
    derived from the previous refresh's scrape of the same endpoint. ``primary_only`` asks just the
    primary (local) target: remote targets cost a connection each, so the page asks them less often.
    """
    from modeldeck.core.targets.catalog import TargetListing, status_all

    urls = [pool.primary.url] if primary_only else pool.urls()
    listings = status_all(urls, timeout=timeout, opener=pool.get, cancel=cancel)
    for listing in listings:
        if listing.error is not None and listing.url != pool.primary.url:
            pool.drop(listing.url)  # reopen next time: the engine or host may be back
    wanted = [
        s.endpoint
        for listing in listings
        for s in listing.statuses
        if s.resources is None and s.endpoint and s.state == "running"
    ][:32]
    scrapes = _scrape_all(wanted, scrape_timeout) if wanted else {}
    previous = previous_scrapes or {}
    out: list[TargetListing] = []
    for listing in listings:
        statuses = tuple(_with_usage(s, scrapes.get(s.endpoint or ""), previous) for s in listing.statuses)
        out.append(TargetListing(listing.url, listing.kind, statuses, listing.error, listing.seconds))
    return AllListings(out, scrapes, primary_only)


def _scrape_all(endpoints: list[str], timeout: float) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from modeldeck.core.monitor.scrape import ScrapeError, fetch

    def one(endpoint: str) -> Any:
        try:
            return fetch(endpoint.rstrip("/") + "/metrics", timeout=timeout)
        except ScrapeError:
            return None

    with ThreadPoolExecutor(max_workers=min(8, len(endpoints)), thread_name_prefix="modeldeck-usage") as ex:
        results = list(ex.map(one, endpoints))
    return {e: r for e, r in zip(endpoints, results, strict=True) if r is not None}


def _with_usage(status: DeploymentStatus, scrape: Any, previous: dict[str, Any]) -> DeploymentStatus:
    if status.resources is not None or scrape is None:
        return status
    import math
    from dataclasses import replace

    from modeldeck.core.monitor.derive import derive

    derived = derive(previous.get(status.endpoint or ""), scrape)
    usage = {"cpu_percent": derived.cpu_percent, "memory_bytes": derived.resident_memory}
    return replace(status, resources={k: v for k, v in usage.items() if not math.isnan(v)})


def operate_on(
    pool: TargetPool,
    url: str,
    verb: str,
    name: str,
    progress: ProgressFn = _noop,
    cancel: threading.Event | None = None,
) -> Any:
    """:func:`operate` on the target listed under ``url`` (opened in this worker if needed)."""
    return operate(pool.get(url), verb, name, progress=progress, cancel=cancel)


def logs_of(pool: TargetPool, url: str, name: str, lines: int = 200) -> str:
    return pool.get(url).logs(name, lines)


def example_of(pool: TargetPool, url: str, name: str, bundle_sha256: str | None = None) -> str:
    """The input example for the Try-it editor: from the target if it can tell, else from the app's own
    bundle with the deployed ``bundle_sha256`` (a remote target's bundle was built here); '' if neither."""
    target = pool.get(url)
    if getattr(target, "input_example", None) is not None:
        return input_example_text(target, name)
    if not bundle_sha256 or pool.bundles_dir is None:
        return ""
    from modeldeck.core.errors import BundleError
    from modeldeck.core.runtime.manifest import read_manifest
    from modeldeck.core.targets.health import load_example

    for manifest_file in sorted(pool.bundles_dir.glob("*/manifest.json"))[:200]:
        try:
            manifest = read_manifest(manifest_file.parent)
        except BundleError:
            continue
        if manifest.sha256 == bundle_sha256:
            example = load_example(manifest_file.parent, manifest.input_example_file)
            return pretty_json(example) if example is not None else ""
    return ""


# -- Docker ----------------------------------------------------------------------------------------

LogSink = Callable[[str], None]


@dataclass(frozen=True)
class DockerBuild:
    """Outcome of "Build image…": the bundle report and the image built from it."""

    report: Any
    image: Any  # core.targets.docker.image.BuildResult


def build_docker_image(
    settings: Settings,
    model_uri: str,
    engine_url: str,
    build_options: Any,
    bundle_options: Any,
    log: LogSink,
    progress: ProgressFn = _noop,
    cancel: threading.Event | None = None,
    *,
    push: bool = False,
) -> DockerBuild:
    """Bundle ``model_uri``, then build an image of it on the engine at ``engine_url`` (and push it).

    Every build output line goes to ``log`` as it arrives (a thread-safe sink the UI drains);
    ``progress`` gets the coarse steps only.
    """
    from modeldeck.core.targets.docker.engine import connect, parse_engine_url
    from modeldeck.core.targets.docker.image import build_image, push_image

    spec = parse_engine_url(engine_url)  # a bad URL fails before bundling

    def bundle_progress(message: str, fraction: float | None) -> None:
        progress(f"Bundling: {message}", None if fraction is None else 0.3 * fraction)

    log(f"bundling {model_uri}…")
    out = bundle_dir_for(settings, model_uri)
    report = build(settings, model_uri, out, bundle_options, progress=bundle_progress, cancel=cancel)
    progress(f"Connecting to {spec.url}", 0.3)
    client = connect(spec)
    try:

        def build_progress(message: str, fraction: float | None) -> None:
            log(message)
            if fraction is not None:
                progress(f"Building: {message}", 0.3 + 0.7 * fraction)

        progress(f"Building {build_options.tag}", 0.3)
        image = build_image(client, Path(report.out_dir), build_options, progress=build_progress, cancel=cancel)
        if push:
            progress(f"Pushing {build_options.tag}", None)
            image = push_image(client, image, progress=lambda m, _f: log(m), cancel=cancel)
    finally:
        client.close()
    return DockerBuild(report, image)


def deploy_to_docker(
    settings: Settings,
    model_uri: str,
    engine_url: str,
    options: DeployOptions,
    bundle_options: Any,
    log: LogSink,
    progress: ProgressFn = _noop,
    cancel: threading.Event | None = None,
) -> BundleAndDeploy:
    """Bundle ``model_uri`` and deploy it to the Docker engine at ``engine_url`` (image built on the way).

    Build lines and deploy steps go to ``log``; a successful deploy records the target in the
    catalog, so the Deployments page lists it from now on.
    """
    from modeldeck.core.errors import ModelDeckError as _Error
    from modeldeck.core.targets import catalog

    target = catalog.open_known(engine_url)  # parses the URL; the engine is contacted only by deploy
    try:
        out = bundle_dir_for(settings, model_uri)

        def bundle_progress(message: str, fraction: float | None) -> None:
            progress(f"Bundling: {message}", None if fraction is None else 0.3 * fraction)

        log(f"bundling {model_uri}…")
        report = build(settings, model_uri, out, bundle_options, progress=bundle_progress, cancel=cancel)

        def deploy_progress(event: ProgressEvent) -> None:
            if event.step == "build":
                log(event.message)
            else:
                log(f"[{event.step}] {event.message}")
            if event.step != "build" or event.fraction is not None:
                fraction = None if event.fraction is None else 0.3 + 0.7 * event.fraction
                progress(f"{event.step.capitalize()}: {event.message}", fraction)

        result = target.deploy(Path(report.out_dir), options, progress=deploy_progress, cancel=cancel)
        if result.ok:
            try:
                catalog.remember(engine_url)
            except (_Error, OSError) as exc:
                log(f"could not add {engine_url} to the target list: {exc}")
        return BundleAndDeploy(report, result)
    finally:
        close = getattr(target, "close", None)
        if close is not None:
            close()


def docker_contexts() -> list[Any]:
    """The docker CLI's contexts (reads small files; run in a worker)."""
    from modeldeck.core.targets.docker.engine import list_contexts

    return list_contexts()
