"""What the user was looking at, remembered between runs (per tracking URI).

Kept apart from :mod:`modeldeck.core.settings`: settings are what the user chose,
state is what the app noticed. It lives in ``<data_dir>/state.json`` and is
written atomically; a missing, unreadable or malformed file simply means
"nothing remembered" — losing it must never stop the app from starting.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeck.core.errors import ConfigError
from modeldeck.core.fileio import atomic_write_text
from modeldeck.core.registry.client import redact_uri
from modeldeck.core.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
MAX_REMEMBERED_URIS = 20
_NAME_RE = re.compile(r"^[^/@\s][^/@]*$")
_VERSION_RE = re.compile(r"^[0-9]+$")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


@dataclass(frozen=True)
class Selection:
    """A model, optionally narrowed to a version number or an alias (never both)."""

    model: str
    version: str | None = None
    alias: str | None = None

    @property
    def ref(self) -> str:
        if self.version:
            return f"{self.model}/{self.version}"
        if self.alias:
            return f"{self.model}@{self.alias}"
        return self.model


def parse_selection(ref: str) -> Selection:
    """``NAME``, ``NAME/VERSION`` or ``NAME@ALIAS`` (a ``models:/`` prefix is accepted).

    Raises :class:`ConfigError` naming the reference when it cannot be one of those.
    """
    text = (ref or "").strip()
    if text.startswith("models:/"):
        text = text[len("models:/") :]
    hint = "use NAME, NAME/VERSION or NAME@ALIAS, e.g. iris-classifier@champion"
    model, version, alias = text, None, None
    if "@" in text:
        model, alias = text.rsplit("@", 1)
        if not _ALIAS_RE.match(alias):
            raise ConfigError(f"invalid model reference {ref!r}: {alias!r} is not an alias", hint=hint)
    elif "/" in text:
        model, version = text.rsplit("/", 1)
        if not _VERSION_RE.match(version):
            raise ConfigError(f"invalid model reference {ref!r}: {version!r} is not a version number", hint=hint)
    if not _NAME_RE.match(model):
        raise ConfigError(f"invalid model reference {ref!r}", hint=hint)
    return Selection(model, version, alias)


def state_file(settings: Settings) -> Path:
    return settings.data_dir / STATE_FILE


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _key(tracking_uri: str) -> str:
    """Credentials never reach the state file: registries are keyed by their redacted URI."""
    return redact_uri(tracking_uri)


def load_last_selection(settings: Settings, tracking_uri: str) -> Selection | None:
    """The model/version last shown for ``tracking_uri``, or None (also for a damaged state file)."""
    entry = _read(state_file(settings)).get("last_selection", {}).get(_key(tracking_uri))
    if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
        return None
    version = entry.get("version")
    return Selection(entry["model"], version if isinstance(version, str) and _VERSION_RE.match(version) else None)


def remember_selection(settings: Settings, tracking_uri: str, selection: Selection) -> None:
    """Record ``selection`` for ``tracking_uri`` (atomic replace; keeps the newest few registries).

    Raises :class:`OSError` when the data directory is not writable — callers log it and go on.
    """
    path = state_file(settings)
    data = _read(path)
    remembered = data.get("last_selection")
    if not isinstance(remembered, dict):
        remembered = {}
    key = _key(tracking_uri)
    entry = {"model": selection.model, "version": selection.version}
    if remembered.get(key) == entry:
        return
    remembered.pop(key, None)
    remembered[key] = entry  # newest last; drop the oldest beyond the bound
    data["last_selection"] = dict(list(remembered.items())[-MAX_REMEMBERED_URIS:])
    atomic_write_text(path, json.dumps(data, indent=2))
