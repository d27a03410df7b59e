"""``hosts test``: connect to a host, verify its key, authenticate, and report what it runs.

The host key is checked before any credential or command is sent (that is
:meth:`SshConnection.open`'s contract); a refused key surfaces as UnknownHostKey /
HostKeyChanged with nothing executed. The facts come from the SSH target's one-round-trip
probe (:func:`modeldeck.core.targets.ssh.facts.detect_facts`), so ``hosts test`` says exactly
what a deploy would find; without it, from a single ``uname``/``python3`` command.
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
DEFAULT_DEPLOY_ROOT = "~/modeldeck"

_FACTS_COMMAND = (
    "printf 'arch=%s\\n' \"$(uname -m)\"; printf 'os=%s\\n' \"$(uname -sr)\"; "
    "printf 'python=%s\\n' \"$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null)\""
)


@dataclass(frozen=True)
class HostCheck:
    """The outcome of a successful test: who we reached, with which key, and what it runs."""

    label: str
    key_type: str
    fingerprint: str
    facts: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # why the runtime could not run there (empty: deployable)
    elapsed_s: float = 0.0

    def summary(self) -> str:
        f = self.facts
        python = f"Python {f['python']}" if f.get("python") else "no python3"
        text = ", ".join(p for p in (f.get("arch") or "?", python, f.get("os") or "") if p)
        return f"{text} -- NOT DEPLOYABLE: {'; '.join(self.problems)}" if self.problems else text


def check_host(
    endpoint: SshEndpoint,
    known_hosts: KnownHosts,
    *,
    deploy_root: str | None = None,
    passphrase: PassphrasePrompt | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> HostCheck:
    """Connect, verify the key, authenticate, collect facts in one command. Raises ModelDeck errors only."""
    started = time.monotonic()
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    if progress:
        progress(f"connecting to {endpoint.label}", None)
    with SshConnection.open(endpoint, known_hosts, passphrase=passphrase) as conn:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if progress:
            progress(f"{endpoint.label}: collecting facts", None)
        key = conn.host_key
        facts, problems = _facts(conn, deploy_root or DEFAULT_DEPLOY_ROOT)
    return HostCheck(endpoint.label, key.get_name(), fingerprint(key), facts, problems, time.monotonic() - started)


def _facts(conn: SshConnection, deploy_root: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """(facts to show, reasons the runtime cannot run there)."""
    try:
        from modeldeck.core.targets.ssh.facts import detect_facts
    except ImportError:  # the SSH target is not installed: a minimal probe
        return _minimal_facts(conn), ()
    found = detect_facts(conn, deploy_root)
    free = f"{found.free_bytes / 2**30:.1f} GiB" if found.free_bytes is not None else ""
    shown = {
        "arch": found.machine,
        "python": found.python_version or "",
        "python_path": found.python or "",
        "venv": "yes" if found.has_venv else "no",
        "os": found.kernel,
        "libc": found.libc,
        "systemd": found.systemd or "no",
        "deploy_root": found.deploy_root,
        "writable": "yes" if found.deploy_root_writable else "no",
        "free": free,
        "runtimes": ", ".join(found.runtime_versions),
    }
    return {k: v for k, v in shown.items() if v}, tuple(found.problems())


def _minimal_facts(conn: SshConnection) -> dict[str, str]:
    result = conn.run(_FACTS_COMMAND, timeout=30, check=True)
    out: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and value.strip():
            out[key.strip()] = value.strip()
    return out
