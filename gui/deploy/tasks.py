"""What the deploy UI runs in workers: plain calls into core, no Qt.

Each function takes the worker's ``progress(message, fraction)`` and ``cancel`` event and
returns a value the UI thread shows; errors are core :class:`ModelDeckError` s.
"""

from __future__ import annotations

import json
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


def pretty_json(value: Any, indent: int = 2) -> str:
    """Indented JSON whose innermost lists (rows, predictions) stay on one line, so tables stay readable."""

    def flat(v: Any) -> bool:
        return isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v)

    def render(v: Any, level: int) -> str:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(v, dict) and v:
            items = [f"{inner}{json.dumps(k)}: {render(x, level + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(v, list) and v and not flat(v):
            return "[\n" + ",\n".join(inner + render(x, level + 1) for x in v) + "\n" + pad + "]"
        return json.dumps(v)

    return render(value, 0)


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

    fn = getattr(target, verb)
    if verb == "stop":
        return fn(name)
    return fn(name, progress=forward, cancel=cancel)
