"""Which targets ModelDeck knows, and their deployments listed all at once.

The catalog is what the Deployments page and ``modeldeck status --all`` show: always the local
target, every target URL a deploy succeeded to (recorded by :func:`remember` on the CLI and GUI
deploy paths), and the hosts of the inventory once it exists. It is persisted as
``targets.toml`` in the config dir, written atomically, and never holds a secret: passwords in
a URL's user-info and secret-looking query parameters are stripped before anything is written
(TLS file *paths* are kept; they are not secrets).

:func:`status_all` asks every target concurrently with one deadline, so an unreachable SSH host
or a stopped Docker engine becomes a single "unreachable" listing with its reason and never
holds up the others.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from modeldeck.core.errors import Cancelled, ConfigError, ModelDeckError, TargetError
from modeldeck.core.fileio import atomic_write_text
from modeldeck.core.targets.base import DeploymentStatus, Target, open_target

log = logging.getLogger(__name__)

CATALOG_NAME = "targets.toml"
LOCAL_URL = "local://"
DEFAULT_TIMEOUT_S = 8.0
MAX_PARALLEL = 8
_SECRET_WORDS = ("password", "passwd", "pass", "secret", "token", "passphrase", "key_password", "auth")
_write_lock = threading.Lock()


@dataclass(frozen=True)
class KnownTarget:
    """One target in the catalog; ``source`` says why it is there: "local", "deployed" or "inventory"."""

    url: str
    source: str
    last_deployed: str | None = None  # ISO-8601 UTC of the last successful deploy recorded
    host: str | None = None  # inventory host name: opened from the inventory (jump hosts, keys), not the URL

    @property
    def kind(self) -> str:
        return kind_of(self.url)


@dataclass(frozen=True)
class TargetListing:
    """What one target answered: its deployments, or why it could not be asked (``error`` is one line)."""

    url: str
    kind: str
    statuses: tuple[DeploymentStatus, ...] = ()
    error: str | None = None
    seconds: float = 0.0

    @property
    def reachable(self) -> bool:
        return self.error is None


def kind_of(url: str) -> str:
    """``docker+ssh://u@h`` -> ``docker``; ``ssh://…`` -> ``ssh``; ``local://…`` -> ``local``."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    return scheme.split("+", 1)[0] or "unknown"


def is_local(url: str) -> bool:
    return kind_of(url) == "local"


def safe_url(url: str) -> str:
    """``url`` with any password and secret-looking query parameter removed (what may be written to disk).

    Raises :class:`TargetError` for text that is not a ``scheme://…`` URL.
    """
    url = url.strip()
    if "://" not in url or not url.split("://", 1)[0]:
        raise TargetError(f"not a target URL: {url!r}", hint="e.g. docker://, ssh://USER@HOST or local://")
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = parts.query
    if query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not _secret_key(k)]
        query = urlencode(kept)
    # built by hand: urlunsplit drops the "//" of an empty authority (docker://, docker:///path)
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def canonical_url(url: str) -> str:
    """:func:`safe_url`, with Docker engine URLs in one spelling (``docker:///var/run/docker.sock`` and
    ``unix:///var/run/docker.sock`` are ``docker://``), so one engine is one catalog entry."""
    clean = safe_url(url)
    if kind_of(clean) in ("docker", "unix"):
        from modeldeck.core.targets.docker.engine import normalise_engine_url

        return normalise_engine_url(clean)
    return clean


def _canonical_or_raw(url: str) -> str:
    try:
        return canonical_url(url)
    except TargetError:
        return url


def _secret_key(key: str) -> bool:
    low = key.lower().replace("-", "_")
    return any(word == low or low.endswith("_" + word) or low.startswith(word) for word in _SECRET_WORDS)


def catalog_path(config_dir: Path | None = None) -> Path:
    if config_dir is None:
        from modeldeck.core.settings import config_dir as default_config_dir

        config_dir = default_config_dir()
    return Path(config_dir) / CATALOG_NAME


def _read(path: Path) -> list[KnownTarget]:
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the target list {path}: {exc}", hint="fix or delete the file") from exc
    entries = data.get("targets", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'targets' must be an array of tables")
    found: list[KnownTarget] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            log.warning("%s: skipping an entry without a url: %r", path, entry)
            continue
        last = entry.get("last_deployed")
        found.append(KnownTarget(entry["url"], "deployed", last if isinstance(last, str) else None))
    return found


def _write(path: Path, targets: list[KnownTarget]) -> None:
    import tomli_w

    doc: dict[str, Any] = {
        "targets": [{"url": t.url, **({"last_deployed": t.last_deployed} if t.last_deployed else {})} for t in targets]
    }
    atomic_write_text(path, "# Targets ModelDeck deployed to. No secrets are stored here.\n" + tomli_w.dumps(doc))


def remember(url: str, *, config_dir: Path | None = None) -> str | None:
    """Record that a deploy to ``url`` succeeded; returns the URL as stored (None for the local target).

    The local target is always known and is not stored. The stored URL has no secrets (:func:`safe_url`).
    """
    clean = canonical_url(url)
    if is_local(clean):
        return None
    path = catalog_path(config_dir)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with _write_lock:
        entries = [t for t in _read(path) if _canonical_or_raw(t.url) != clean]
        entries.append(KnownTarget(clean, "deployed", now))
        _write(path, entries)
    log.info("remembered target %s", clean)
    return clean


def forget(url: str, *, config_dir: Path | None = None) -> bool:
    """Drop ``url`` from the catalog (its deployments are not touched); True if it was there."""
    clean = canonical_url(url)
    path = catalog_path(config_dir)
    with _write_lock:
        entries = _read(path)
        kept = [t for t in entries if t.url != url and _canonical_or_raw(t.url) != clean]
        if len(kept) == len(entries):
            return False
        _write(path, kept)
    return True


def _inventory_targets() -> list[KnownTarget]:
    """One entry per inventory host (URL as its SSH target names itself); [] without an inventory.

    Resolving a host never connects. A host the inventory cannot resolve is skipped (logged):
    the inventory page is where that is reported.
    """
    try:
        from modeldeck.core.inventory.hosts import Inventory
        from modeldeck.core.targets.ssh_hosts import default_inventory, targets_for_hosts
    except ImportError:
        return []
    try:
        inventory: Inventory = default_inventory()
        hosts = inventory.hosts
    except ModelDeckError as exc:
        log.warning("cannot read the host inventory: %s", exc.one_line())
        return []
    found: list[KnownTarget] = []
    for host in hosts:
        try:
            target = targets_for_hosts(inventory, [host])[host.name]
        except ModelDeckError as exc:
            log.warning("inventory host %s is not listed: %s", host.name, exc.one_line())
            continue
        found.append(KnownTarget(target.url, "inventory", host=host.name))
    return found


def known_targets(*, config_dir: Path | None = None) -> list[KnownTarget]:
    """The local target first, then remembered targets (most recent deploy last), then inventory hosts.

    A remembered URL that is also an inventory host is listed once, as the inventory host (which
    knows its jump hosts and keys).
    """
    inventory = _inventory_targets()
    hosts = {t.url for t in inventory}
    found = [KnownTarget(LOCAL_URL, "local")]
    seen = {LOCAL_URL}
    for t in _read(catalog_path(config_dir)):
        try:
            t = replace(t, url=canonical_url(t.url))  # older entries may spell an engine differently
        except TargetError:
            log.warning("skipping an unreadable target URL in the catalog: %r", t.url)
            continue
        if t.url not in seen and t.url not in hosts and not is_local(t.url):
            found.append(t)
            seen.add(t.url)
    for t in inventory:
        if t.url not in seen:
            found.append(t)
            seen.add(t.url)
    return found


def open_known(url: str, *, deployments_dir: Path | None = None, host: str | None = None) -> Target:
    """Open a catalog entry: ``host`` names an inventory host (opened with its inventory settings),
    the local target gets the app's deployments dir. Raises :class:`TargetError`/:class:`ConfigError`."""
    if host is not None:
        from modeldeck.core.targets.ssh_hosts import default_inventory, targets_for_hosts

        inventory = default_inventory()
        return targets_for_hosts(inventory, [inventory.get(host)])[host]
    if is_local(url):
        return open_target(url, root=deployments_dir) if deployments_dir is not None else open_target(url)
    return open_target(url)


def status_all(
    targets: Sequence[Target | str],
    timeout: float = DEFAULT_TIMEOUT_S,
    *,
    opener: Callable[[str], Target] | None = None,
    max_parallel: int = MAX_PARALLEL,
    cancel: threading.Event | None = None,
) -> list[TargetListing]:
    """List the deployments of every target concurrently; one :class:`TargetListing` per target, in order.

    Strings are opened with ``opener`` (default :func:`open_known`) inside the worker, so a URL
    that cannot be opened is a listing with an error too. Any target still silent after
    ``timeout`` seconds is reported as "no answer within …" -- its thread is left to end on its
    own I/O timeout, and never delays the result. Raises :class:`Cancelled` if ``cancel`` is set.
    """
    open_url = opener or open_known
    started = time.monotonic()
    deadline = started + timeout

    def ask(item: Target | str) -> TargetListing:
        t0 = time.monotonic()
        url = item if isinstance(item, str) else item.url
        try:
            target = open_url(item) if isinstance(item, str) else item
            statuses = tuple(target.status())
        except ModelDeckError as exc:
            return TargetListing(url, kind_of(url), error=exc.one_line(), seconds=time.monotonic() - t0)
        except Exception as exc:  # a bug in a target must not hide the other targets' deployments
            log.error("listing %s failed", url, exc_info=True)
            return TargetListing(
                url, kind_of(url), error=f"internal error: {type(exc).__name__}: {exc}", seconds=time.monotonic() - t0
            )
        return TargetListing(url, getattr(target, "kind", kind_of(url)), statuses, seconds=time.monotonic() - t0)

    if not targets:
        return []
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, min(max_parallel, len(targets))), thread_name_prefix="modeldeck-status"
    )
    try:
        futures = [pool.submit(ask, item) for item in targets]
        pending = set(futures)
        while pending:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _done, pending = concurrent.futures.wait(pending, timeout=min(left, 0.1))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    listings: list[TargetListing] = []
    for item, future in zip(targets, futures, strict=True):
        url = item if isinstance(item, str) else item.url
        if future.done() and not future.cancelled():
            listings.append(future.result())
        else:
            listings.append(
                TargetListing(
                    url, kind_of(url), error=f"no answer within {timeout:g} s", seconds=time.monotonic() - started
                )
            )
    return listings
