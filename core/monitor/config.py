"""Monitoring settings: ``monitor.toml`` in ModelDeck's config dir (next to ``health.toml``).

Kept apart from ``config.toml`` (which the registry settings rewrite whole) so
that saving one never drops the other. Extra endpoints the user added by hand
("Add endpoint…") live here too, so they come back after a restart.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modeldeck.core.errors import ConfigError
from modeldeck.core.fileio import atomic_write_text
from modeldeck.core.monitor.history import DEFAULT_MAX_ROWS, DEFAULT_RETENTION_DAYS
from modeldeck.core.monitor.series import DEFAULT_RETENTION

FILE_NAME = "monitor.toml"


@dataclass(frozen=True)
class MonitorConfig:
    """How the dashboards collect: scrape ``interval``, ring-buffer ``retention`` (points), sources, history."""

    interval: float = 1.0
    retention: int = DEFAULT_RETENTION
    prometheus_url: str | None = None  # set: detail plots query this Prometheus server instead of the ring buffers
    history: bool = False
    history_retention_days: float = DEFAULT_RETENTION_DAYS
    history_max_rows: int = DEFAULT_MAX_ROWS
    endpoints: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (name, metrics URL) added by hand

    def history_path(self, data_dir: Path) -> Path:
        return data_dir / "monitor" / "history.sqlite"


def validate_metrics_url(text: str) -> str:
    """A Prometheus-format endpoint URL, normalised (``/metrics`` appended to a bare host:port).

    Raises :class:`ConfigError` with a hint for anything that is not an http(s) URL with a host.
    """
    url = text.strip()
    if not url:
        raise ConfigError("enter the URL of a /metrics page", hint="e.g. http://127.0.0.1:8080/metrics")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{text.strip()!r} is not an http(s) URL", hint="e.g. http://127.0.0.1:8080/metrics")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad port in {text.strip()!r}", hint="a number between 1 and 65535") from exc
    if not parts.hostname or any(c.isspace() for c in url):
        raise ConfigError(f"{text.strip()!r} has no host", hint="e.g. http://127.0.0.1:8080/metrics")
    if port == 0:
        raise ConfigError(f"bad port in {text.strip()!r}", hint="a number between 1 and 65535")
    if parts.path in ("", "/"):
        url = url.rstrip("/") + "/metrics"
    return url


def validate_prometheus_url(text: str) -> str | None:
    """'' means "no Prometheus server"; anything else must be an http(s) URL with a host."""
    url = text.strip().rstrip("/")
    if not url:
        return None
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{text.strip()!r} is not a Prometheus server URL", hint="e.g. http://127.0.0.1:9090")
    return url


def load_monitor_config(config_dir: Path) -> MonitorConfig:
    """Read ``monitor.toml`` (defaults when absent); ``MODELDECK_PROMETHEUS_URL`` overrides the file."""
    path = config_dir / FILE_NAME
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", hint="fix or delete the file") from exc
    try:
        endpoints = tuple(
            (str(e["name"]), validate_metrics_url(str(e["url"])))
            for e in data.get("endpoint", [])
            if isinstance(e, dict)
        )
        config = MonitorConfig(
            interval=float(data.get("interval", 1.0)),
            retention=int(data.get("retention", DEFAULT_RETENTION)),
            prometheus_url=validate_prometheus_url(str(data.get("prometheus_url", ""))),
            history=bool(data.get("history", False)),
            history_retention_days=float(data.get("history_retention_days", DEFAULT_RETENTION_DAYS)),
            history_max_rows=int(data.get("history_max_rows", DEFAULT_MAX_ROWS)),
            endpoints=endpoints,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", hint=exc.hint) from exc
    if not 0.1 <= config.interval <= 3600 or config.retention < 10:
        raise ConfigError(f"{path}: interval must be 0.1..3600 s and retention at least 10 points")
    env = os.environ.get("MODELDECK_PROMETHEUS_URL")
    if env is not None:
        config = MonitorConfig(**{**config.__dict__, "prometheus_url": validate_prometheus_url(env)})
    return config


def save_monitor_config(config_dir: Path, config: MonitorConfig) -> None:
    """Write ``monitor.toml`` atomically."""
    import tomli_w

    doc: dict[str, Any] = {
        "interval": config.interval,
        "retention": config.retention,
        "history": config.history,
        "history_retention_days": config.history_retention_days,
        "history_max_rows": config.history_max_rows,
    }
    if config.prometheus_url:
        doc["prometheus_url"] = config.prometheus_url
    if config.endpoints:
        doc["endpoint"] = [{"name": n, "url": u} for n, u in config.endpoints]
    atomic_write_text(config_dir / FILE_NAME, tomli_w.dumps(doc))
