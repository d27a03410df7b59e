"""The one protocol every deploy target implements (local, SSH, Docker, edge).

GUI and CLI talk only to this interface; they branch on the target kind only to
show target-specific settings. Every method is synchronous, takes a ``progress``
callback and a ``cancel`` event where it can be slow, returns the result types
below, and raises :class:`DeployError` / :class:`TargetError` -- never a library
exception. A deploy cut off at any point leaves the previous release serving.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from modeldeck.core.errors import TargetError


@dataclass(frozen=True)
class HealthGate:
    """When a new release counts as healthy: ready within the start period, then the example answers."""

    start_period_s: float = 20.0
    interval_s: float = 0.2
    retries: int = 3
    timeout_s: float = 5.0
    check_example: bool = True


@dataclass(frozen=True)
class DeployOptions:
    name: str | None = None  # deployment name; defaults to the bundle's model name
    host: str = "127.0.0.1"
    port: int | None = None  # None: keep the deployment's current port, else pick a free one
    max_batch_size: int = 32
    max_batch_wait_ms: float = 2.0
    cors_origins: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    health: HealthGate = field(default_factory=HealthGate)
    keep_releases: int = 5
    # Target-specific settings, each target documents and validates its keys and refuses unknown ones
    # (docker: image, base_image, cpus, memory, replicas, restart_retries, restart_unhealthy).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProgressEvent:
    step: str  # short machine-friendly step name: "transfer", "start", "health", ...
    message: str
    fraction: float | None = None  # 0..1 for the whole operation, None if unknown
    host: str | None = None  # for multi-host targets


Progress = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    """Default progress sink."""


@dataclass(frozen=True)
class PlannedStep:
    step: str
    description: str


@dataclass(frozen=True)
class Plan:
    """What ``deploy`` would do, shown before anything changes (``--dry-run``, the GUI's confirm)."""

    target_url: str
    name: str
    steps: tuple[PlannedStep, ...]
    replaces: str | None = None  # release/bundle currently serving, if any


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    target_url: str
    state: str  # "running", "starting", "stopped", "failed", "unknown"
    endpoint: str | None = None  # base URL of the runtime's HTTP API
    model_name: str | None = None
    model_version: str | None = None
    bundle_sha256: str | None = None
    release_id: str | None = None
    previous_release_id: str | None = None
    since: str | None = None  # ISO-8601
    message: str = ""
    pid: int | None = None
    # Container/process resource use where the target measures it: cpu_percent, memory_bytes, memory_limit_bytes.
    resources: dict[str, float] | None = None


@dataclass(frozen=True)
class DeployResult:
    name: str
    outcome: str  # "deployed", "already-installed", "rolled-back", "failed (rolled back)", "failed"
    status: DeploymentStatus | None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in ("deployed", "already-installed", "rolled-back")


@runtime_checkable
class Target(Protocol):
    """A place deployments run. Implementations: ``local.LocalTarget``, later SSH, Docker, edge."""

    kind: str
    url: str

    def plan(self, bundle_dir: Path, options: DeployOptions) -> Plan: ...

    def deploy(
        self,
        bundle_dir: Path,
        options: DeployOptions,
        progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> DeployResult: ...

    def status(self, name: str | None = None) -> list[DeploymentStatus]: ...

    def rollback(
        self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None
    ) -> DeployResult: ...

    def logs(self, name: str, lines: int = 200) -> str: ...

    def stop(self, name: str) -> DeploymentStatus: ...

    def undeploy(self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None) -> None: ...


def open_target(url: str, **kwargs: object) -> Target:
    """The target for ``url``; raises :class:`TargetError` for an unknown scheme or a malformed URL.

    New target kinds add a branch here and nothing else changes for GUI or CLI.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "local":
        from modeldeck.core.targets.local import LocalTarget

        return LocalTarget.from_url(url, **kwargs)  # type: ignore[arg-type]
    if scheme in ("docker", "docker+ssh", "docker+tcp"):
        from modeldeck.core.targets.docker.target import DockerTarget

        return DockerTarget.from_url(url, **kwargs)  # type: ignore[arg-type]
    if scheme == "ssh":
        from modeldeck.core.targets.ssh.target import SshTarget

        return SshTarget.from_url(url, **kwargs)  # type: ignore[arg-type]
    raise TargetError(
        f"unsupported target {url!r}",
        hint="use local://PORT (ssh:// and docker:// targets are coming)",
    )
