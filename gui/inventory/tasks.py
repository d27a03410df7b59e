"""What the Hosts page runs in workers: plain functions over the config dir, no Qt.

Each one opens the inventory afresh (the CLI may have changed it) and returns values the UI
thread can show; errors are ModelDeck errors the page shows inline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from modeldeck.core.errors import HostKeyChanged, UnknownHostKey
from modeldeck.core.inventory.hosts import FIELDS, Host, Inventory, ResolvedHost, resolve
from modeldeck.core.inventory.known_hosts import KnownHosts, KnownKey
from modeldeck.core.inventory.probe import HostCheck, check_host
from modeldeck.core.inventory.trust import TrustResult, trust


@dataclass(frozen=True)
class HostDetails:
    resolved: ResolvedHost
    keys: tuple[KnownKey, ...]


def known_hosts(config_dir: Path) -> KnownHosts:
    return KnownHosts(config_dir / "known_hosts")


def load_hosts(config_dir: Path) -> list[Host]:
    return Inventory.for_config_dir(config_dir).hosts


def save_host(config_dir: Path, host: Host, original: Host | None = None) -> list[Host]:
    """Add ``host``, or replace ``original`` by it (a rename included). Edited values lose their import origin."""
    inv = Inventory.for_config_dir(config_dir)
    if original is None:
        inv.add(host)
        return inv.hosts
    origins = {k: v for k, v in original.origins.items() if k not in FIELDS or getattr(host, k) == getattr(original, k)}
    changes = {f.name: getattr(host, f.name) for f in fields(Host) if f.name not in ("source", "warnings")}
    changes["origins"] = origins
    inv.update(original.name, **changes)
    return inv.hosts


def remove_host(config_dir: Path, name: str) -> list[Host]:
    inv = Inventory.for_config_dir(config_dir)
    inv.remove(name)
    return inv.hosts


def details(config_dir: Path, name: str) -> HostDetails:
    resolved = resolve(Inventory.for_config_dir(config_dir), name)
    ep = resolved.endpoint
    return HostDetails(resolved, tuple(known_hosts(config_dir).known(ep.host, ep.port)))


def preview_import(kind: str, path: Path, groups: tuple[str, ...] = ()) -> Any:
    """Parse an ssh_config (``kind`` "ssh_config") or an Ansible inventory; nothing is written."""
    if kind == "ssh_config":
        from modeldeck.core.inventory.ssh_config import import_ssh_config

        return import_ssh_config(path, groups=groups)
    from modeldeck.core.inventory.ansible import import_ansible

    result = import_ansible(path)
    if groups:
        result.hosts = [replace(h, groups=tuple(dict.fromkeys([*h.groups, *groups]))) for h in result.hosts]
    return result


def apply_import(config_dir: Path, hosts: list[Host], replace_existing: bool) -> list[Host]:
    inv = Inventory.for_config_dir(config_dir)
    inv.add_many(hosts, replace_existing=replace_existing)
    return inv.hosts


def run_host_test(
    config_dir: Path,
    name: str,
    passphrase: str | None = None,
    *,
    progress: Any = None,
    cancel: threading.Event | None = None,
) -> HostCheck:
    """Test one host. A refused host key carries ``inventory_host``: the host (maybe a jump host) to trust.

    ``passphrase`` unlocks an encrypted identity file for this one test; it is not kept.
    """
    inv = Inventory.for_config_dir(config_dir)
    resolved = resolve(inv, name)
    try:
        return check_host(
            resolved.endpoint,
            known_hosts(config_dir),
            deploy_root=resolved.host.deploy_root,
            passphrase=(lambda _path: passphrase) if passphrase is not None else None,
            progress=progress,
            cancel=cancel,
        )
    except (UnknownHostKey, HostKeyChanged) as exc:
        exc.inventory_host = resolved.host_of(exc.host)  # type: ignore[attr-defined]
        raise


def trust_host(config_dir: Path, name: str, fingerprint: str, replace_key: bool = False) -> TrustResult:
    resolved = resolve(Inventory.for_config_dir(config_dir), name)
    return trust(resolved.endpoint, fingerprint, known_hosts(config_dir), replace=replace_key)


def store_password(name: str, password: str) -> None:
    from modeldeck.core.inventory.secrets import set_password

    set_password(name, password)
