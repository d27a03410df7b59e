"""``hosts test``: connect to a host, verify its key, authenticate, and report what it runs.

The host key is checked before any credential or command is sent (that is
:meth:`SshConnection.open`'s contract); a refused key surfaces as UnknownHostKey /
HostKeyChanged with nothing executed. The facts come from the SSH target's one-round-trip
probe when that is available; until then from a single ``uname``/``python3`` command here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modeldeck.core.errors import Cancelled
from modeldeck.core.inventory.known_hosts import KnownHosts, fingerprint
from modeldeck.core.targets.ssh.connection import PassphrasePrompt, SshConnection, SshEndpoint

log = logging.getLogger(__name__)

Progress = Callable[[str, "float | None"], None]

_FACTS_COMMAND = (
    "printf 'arch=%s\\n' \"$(uname -m)\"; printf 'os=%s\\n' \"$(uname -sr)\"; "
    "printf 'python=%s\\n' \"$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null)\"; "
    "printf 'systemd=%s\\n' \"$(test -d /run/systemd/system && echo yes || echo no)\""
)


@dataclass(frozen=True)
class HostCheck:
    """The outcome of a successful test: who we reached, with which key, and what it runs."""

    label: str
    key_type: str
    fingerprint: str
    facts: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def summary(self) -> str:
        f = self.facts
        python = f"Python {f['python']}" if f.get("python") else "no python3"
        parts = [f.get("arch") or "?", python, f.get("os") or ""]
        return ", ".join(p for p in parts if p)


def check_host(
    endpoint: SshEndpoint,
    known_hosts: KnownHosts,
    *,
    passphrase: PassphrasePrompt | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> HostCheck:
    """Connect, verify the key, authenticate, collect facts in one command. ModelDeck errors only."""
    started = time.monotonic()
    if progress:
        progress(f"connecting to {endpoint.label}", None)
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    with SshConnection.open(endpoint, known_hosts, passphrase=passphrase) as conn:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if progress:
            progress(f"{endpoint.label}: collecting facts", None)
        transport = conn.client.get_transport()
        assert transport is not None
        key = transport.get_remote_server_key()
        facts = _facts(conn)
    return HostCheck(endpoint.label, key.get_name(), fingerprint(key), facts, time.monotonic() - started)


def _facts(conn: SshConnection) -> dict[str, str]:
    result = conn.run(_FACTS_COMMAND, timeout=30, check=True)
    out: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and value.strip():
            out[key.strip()] = value.strip()
    return out
