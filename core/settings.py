"""One typed settings object: XDG TOML file < environment < command-line flags.

Secrets never live here: an MLflow token is read from ``MLFLOW_TRACKING_TOKEN``
(as MLflow itself does) and is never written to the settings file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs
from modeldeck.core.errors import ConfigError
from modeldeck.core.fileio import atomic_write_text

APP = "modeldeck"


def config_dir() -> Path:
    return Path(os.environ.get("MODELDECK_CONFIG_DIR") or platformdirs.user_config_dir(APP))


def data_dir() -> Path:
    return Path(os.environ.get("MODELDECK_DATA_DIR") or platformdirs.user_data_dir(APP))


@dataclass(frozen=True)
class Settings:
    """Where ModelDeck keeps things and which registry it opens.

    ``tracking_uri`` None means the embedded local registry under ``data_dir``.
    """

    data_dir: Path
    config_dir: Path
    tracking_uri: str | None = None
    registry_uri: str | None = None
    recent_tracking_uris: tuple[str, ...] = field(default_factory=tuple)

    @property
    def embedded_registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def embedded_tracking_uri(self) -> str:
        return f"sqlite:///{(self.embedded_registry_dir / 'mlflow.db').as_posix()}"

    @property
    def embedded_artifact_root(self) -> Path:
        return self.embedded_registry_dir / "artifacts"

    @property
    def deployments_dir(self) -> Path:
        return self.data_dir / "deployments"

    @property
    def bundles_dir(self) -> Path:
        return self.data_dir / "bundles"

    @property
    def effective_tracking_uri(self) -> str:
        return self.tracking_uri or self.embedded_tracking_uri

    @property
    def uses_embedded_registry(self) -> bool:
        return self.tracking_uri is None or self.tracking_uri == self.embedded_tracking_uri

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"


def load_settings(*, tracking_uri: str | None = None) -> Settings:
    """Settings from ``config.toml``, then ``MLFLOW_TRACKING_URI``, then the flag.

    Raises :class:`ConfigError` for an unreadable or malformed file, naming it.
    """
    cfg_dir, dat_dir = config_dir(), data_dir()
    file_values: dict[str, Any] = {}
    cfg_file = cfg_dir / "config.toml"
    if cfg_file.is_file():
        try:
            file_values = tomllib.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {cfg_file}: {exc}", hint="fix or delete the file") from exc
    registry = file_values.get("registry", {})
    if not isinstance(registry, dict):
        raise ConfigError(f"{cfg_file}: [registry] must be a table")
    uri = registry.get("tracking_uri") or None
    recent = registry.get("recent_tracking_uris", [])
    if uri is not None and not isinstance(uri, str):
        raise ConfigError(f"{cfg_file}: registry.tracking_uri must be a string")
    if not isinstance(recent, list) or not all(isinstance(r, str) for r in recent):
        raise ConfigError(f"{cfg_file}: registry.recent_tracking_uris must be a list of strings")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or uri
    uri = tracking_uri or uri
    reg_uri = os.environ.get("MLFLOW_REGISTRY_URI") or registry.get("registry_uri") or None
    return Settings(
        data_dir=dat_dir,
        config_dir=cfg_dir,
        tracking_uri=uri,
        registry_uri=reg_uri,
        recent_tracking_uris=tuple(recent),
    )


def save_settings(settings: Settings) -> None:
    """Persist the user-chosen parts of ``settings`` (atomically; never secrets)."""
    import tomli_w

    recent = [u for u in settings.recent_tracking_uris if u][:10]
    registry: dict[str, Any] = {"recent_tracking_uris": recent}
    if settings.tracking_uri:
        registry["tracking_uri"] = settings.tracking_uri
    if settings.registry_uri:
        registry["registry_uri"] = settings.registry_uri
    atomic_write_text(settings.config_file, tomli_w.dumps({"registry": registry}))


def with_tracking_uri(settings: Settings, uri: str | None) -> Settings:
    """A copy that opens ``uri`` (None: the embedded registry) and remembers it in the recent list."""
    recent = list(settings.recent_tracking_uris)
    if uri:
        recent = [uri] + [u for u in recent if u != uri]
    return replace(settings, tracking_uri=uri, recent_tracking_uris=tuple(recent[:10]))
