"""Runtime settings: one frozen value, loadable from the ``runtime.json`` a deploy target writes.

Validation happens here, at the edge, so a bad file stops the runtime before it
binds a port, with an error naming the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from modeldeck.core.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Bind:
    """One address to listen on; port 0 asks the kernel for a free one."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Bind:
        """Parse ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raises :class:`ConfigError`."""
        host, sep, port_text = str(text).rpartition(":")
        if not sep or not host:
            raise ConfigError(f"invalid bind address {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:8080")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(
                f"invalid port in bind address {text!r}", hint="use HOST:PORT, e.g. 127.0.0.1:8080"
            ) from None
        return cls(host, _check_port(port, f"bind address {text!r}"))


def _check_port(port: int, what: str) -> int:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what}: port {port} is out of range 0..65535")
    return port


@dataclass(frozen=True)
class RuntimeConfig:
    """How one runtime process serves its bundle.

    ``max_batch_wait_ms`` is only spent when other requests are already queued:
    a lone request is never held back, so latency at low concurrency does not
    suffer from batching. ``inference_in_thread`` moves ``session.run`` off the
    event loop (worth it for models that take milliseconds; for sub-millisecond
    models the thread hand-off costs more than it saves).
    """

    deployment_name: str = ""
    binds: tuple[Bind, ...] = (Bind(DEFAULT_HOST, DEFAULT_PORT),)
    reuse_port: bool = False
    max_batch_size: int = 64
    max_batch_wait_ms: float = 0.0
    max_body_bytes: int = 10 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    request_timeout_s: float = 60.0
    graceful_shutdown_timeout_s: float = 30.0
    warmup_runs: int = 3
    intra_op_threads: int = 1
    inference_in_thread: bool = False
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.binds:
            raise ConfigError("runtime config: at least one bind address is needed")
        for b in self.binds:
            _check_port(b.port, "runtime config binds")
        _positive_int("max_batch_size", self.max_batch_size)
        _positive_int("max_body_bytes", self.max_body_bytes)
        _positive_int("intra_op_threads", self.intra_op_threads)
        if not isinstance(self.warmup_runs, int) or isinstance(self.warmup_runs, bool) or self.warmup_runs < 0:
            raise ConfigError(f"runtime config: warmup_runs must be an integer >= 0, got {self.warmup_runs!r}")
        for name in ("max_batch_wait_ms",):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1000:
                raise ConfigError(f"runtime config: {name} must be a number in 0..1000, got {value!r}")
        for name in ("request_timeout_s", "graceful_shutdown_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 3600:
                raise ConfigError(f"runtime config: {name} must be a number of seconds in (0, 3600], got {value!r}")
        for origin in self.cors_origins:
            if not isinstance(origin, str) or not (origin == "*" or origin.startswith(("http://", "https://"))):
                raise ConfigError(
                    f"runtime config: invalid CORS origin {origin!r}",
                    hint='origins look like "https://example.com" (or "*" for any)',
                )
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            raise ConfigError(f"runtime config: unknown log_level {self.log_level!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeConfig:
        """Build from parsed JSON; unknown keys are refused so typos do not pass silently."""
        if not isinstance(data, dict):
            raise ConfigError("runtime config must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"runtime config: unknown setting {unknown[0]!r}", hint=f"known settings: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = dict(data)
        if "binds" in kwargs:
            binds = kwargs["binds"]
            if not isinstance(binds, list):
                raise ConfigError('runtime config: binds must be a list of "HOST:PORT" strings')
            kwargs["binds"] = tuple(Bind.parse(b) for b in binds)
        if "cors_origins" in kwargs:
            origins = kwargs["cors_origins"]
            if not isinstance(origins, list):
                raise ConfigError("runtime config: cors_origins must be a list of origins")
            kwargs["cors_origins"] = tuple(origins)
        for name in ("max_batch_size", "max_body_bytes", "intra_op_threads", "warmup_runs"):
            if name in kwargs and (not isinstance(kwargs[name], int) or isinstance(kwargs[name], bool)):
                raise ConfigError(f"runtime config: {name} must be an integer, got {kwargs[name]!r}")
        for name in ("reuse_port", "inference_in_thread"):
            if name in kwargs and not isinstance(kwargs[name], bool):
                raise ConfigError(f"runtime config: {name} must be true or false, got {kwargs[name]!r}")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: Path) -> RuntimeConfig:
        """Read a ``runtime.json``; raises :class:`ConfigError` naming the file and the problem."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read runtime config {path}: {exc.strerror or exc}") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"runtime config {path} is not valid JSON: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            detail = exc.message.removeprefix("runtime config: ")
            raise ConfigError(f"runtime config {path}: {detail}", hint=exc.hint) from exc
        except TypeError as exc:
            raise ConfigError(f"runtime config {path}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The JSON form :meth:`from_dict` reads (what deploy targets write as ``runtime.json``)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["binds"] = [str(b) for b in self.binds]
        out["cors_origins"] = list(self.cors_origins)
        return out

    def with_overrides(self, **changes: Any) -> RuntimeConfig:
        """A copy with command-line flags applied (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"runtime config: {name} must be an integer >= 1, got {value!r}")
