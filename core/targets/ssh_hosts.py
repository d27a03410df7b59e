"""SSH targets for inventory hosts: what ``--hosts GROUP`` and the GUI's "Deploy to hosts…" deploy to.

The glue between the inventory (names, groups, labels, resolved connection settings) and the
target-agnostic fleet layer: each selected host becomes an :class:`SshTarget` keyed by its
inventory name, with the fleet's per-step timeouts applied to its connection and transfer.
Resolving never connects; unreachable hosts show up later as per-host failures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modeldeck.core.inventory.hosts import Host, Inventory, resolve
from modeldeck.core.inventory.known_hosts import KnownHosts
from modeldeck.core.targets.base import Target
from modeldeck.core.targets.fleet import StepTimeouts

log = logging.getLogger(__name__)


def ssh_timeouts(steps: StepTimeouts) -> Any:
    """The SSH target's own timeouts for these fleet step limits."""
    from modeldeck.core.targets.ssh.target import SshTimeouts

    defaults = SshTimeouts()
    return SshTimeouts(
        connect_s=steps.connect_s,
        auth_s=steps.auth_s,
        # an SFTP request unanswered this long fails the transfer; the whole transfer is bounded by the fleet
        transfer_stall_s=min(defaults.transfer_stall_s, steps.transfer_s),
        install_s=steps.install_s,
    )


def select_hosts(inventory: Inventory, expr: str) -> list[Host]:
    """Hosts named by ``expr`` (names, groups, ``label=value``, ``all``, ``!term``); ConfigError if none."""
    return inventory.select(expr)


def targets_for_hosts(
    inventory: Inventory,
    hosts: Sequence[Host],
    *,
    step_timeouts: StepTimeouts | None = None,
    known_hosts: KnownHosts | None = None,
    password_lookup: Any = None,
    **target_kwargs: Any,
) -> dict[str, Target]:
    """An SSH target per host, keyed by inventory name, in the given order.

    ``target_kwargs`` go to every :class:`SshTarget` (``runtime_source``, ``wheelhouse_dir``,
    ``bind_host``, ``cache_dir``…). Raises :class:`ConfigError` for a host the inventory cannot
    resolve (unknown jump host, loop) before anything connects.
    """
    from modeldeck.core.targets.ssh.target import SshTarget

    steps = step_timeouts or StepTimeouts()
    out: dict[str, Target] = {}
    for host in hosts:
        resolved = resolve(inventory, host.name, password_lookup=password_lookup, connect_timeout_s=steps.connect_s)
        out[host.name] = SshTarget(
            resolved.endpoint,
            host.deploy_root,
            known_hosts=known_hosts,
            timeouts=ssh_timeouts(steps),
            **target_kwargs,
        )
    return out


def default_inventory() -> Inventory:
    """The inventory of the current configuration (``<config dir>/inventory.toml``)."""
    from modeldeck.core.settings import config_dir

    return Inventory.for_config_dir(Path(config_dir()))
