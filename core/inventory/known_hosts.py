"""Which SSH host keys ModelDeck trusts: the user's ``known_hosts`` (read only) plus its own pins.

Rules, in the order they apply to a host name (``host`` or ``[host]:port``):

1. ModelDeck's own pin file (``<config dir>/known_hosts``) -- if it names the host, it decides.
   A re-pinned host (its key legitimately changed) is recorded here and only here.
2. The user's ``~/.ssh/known_hosts`` (and any extra files given) -- hashed entries included.
3. Neither knows the host: the key is refused with its SHA256 fingerprint, unless the caller
   passes exactly that fingerprint as accepted (GUI dialog, ``--accept-host-key``); then it is pinned.

A key that differs from the one on record is always a hard error. ModelDeck never writes to
the user's files: a changed key is re-pinned in its own file, which then takes precedence.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from modeldeck.core.errors import ConfigError, UnknownHostKey
from modeldeck.core.fileio import atomic_write_text

log = logging.getLogger(__name__)


def host_key_name(host: str, port: int) -> str:
    """The name OpenSSH files a host's key under."""
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:…`` exactly as ``ssh-keygen -lf`` and OpenSSH's prompts print it."""
    return str(key.fingerprint)


@dataclass(frozen=True)
class KnownKey:
    name: str
    key_type: str
    fingerprint: str
    source: Path


class KnownHosts:
    """Host-key trust for one ModelDeck configuration (see the module docstring for the rules)."""

    def __init__(self, pins_file: Path, user_files: Sequence[Path] | None = None) -> None:
        self.pins_file = pins_file
        self.user_files = tuple(user_files) if user_files is not None else (Path.home() / ".ssh" / "known_hosts",)

    def _load(self, path: Path) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if path.is_file():
            try:
                keys.load(str(path))
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise ConfigError(f"cannot read known hosts file {path}: {exc}") from exc
        return keys

    def pins(self) -> paramiko.HostKeys:
        return self._load(self.pins_file)

    def user_keys(self) -> paramiko.HostKeys:
        merged = paramiko.HostKeys()
        for path in self.user_files:
            for name, entry in self._load(path).items():
                for key_type, key in entry.items():
                    merged.add(name, key_type, key)
        return merged

    def known(self, host: str, port: int) -> list[KnownKey]:
        """Every key on record for the host, pins first (what ``hosts show`` prints)."""
        name = host_key_name(host, port)
        found: list[KnownKey] = []
        pinned = self.pins().lookup(name)
        if pinned:
            found += [KnownKey(name, t, fingerprint(k), self.pins_file) for t, k in pinned.items()]
            return found
        for path in self.user_files:
            entry = self._load(path).lookup(name)
            if entry:
                found += [KnownKey(name, t, fingerprint(k), path) for t, k in entry.items()]
        return found

    def configure(self, client: paramiko.SSHClient, accept_fingerprint: str | None = None) -> None:
        """Make ``client`` verify host keys by these rules (call before ``connect``).

        Pins are loaded as paramiko's "system" keys, which it consults first and exclusively when
        they name the host; the user's keys go in the client's other table, which is never saved
        because no filename is set on it. A mismatch raises paramiko's ``BadHostKeyException``
        (mapped to :class:`HostKeyChanged` by the connection).
        """
        if self.pins_file.is_file():
            client.load_system_host_keys(str(self.pins_file))
        table = client.get_host_keys()
        for name, entry in self.user_keys().items():
            for key_type, key in entry.items():
                table.add(name, key_type, key)
        client.set_missing_host_key_policy(_PinOrRefuse(self, accept_fingerprint))

    def pin(self, name: str, key: paramiko.PKey, *, replace: bool = False) -> None:
        """Record ``key`` for ``name`` in ModelDeck's own file (atomically); ``replace`` drops its old pins."""
        self.pins_file.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        if self.pins_file.is_file():
            for line in self.pins_file.read_text().splitlines():
                names = line.split(" ", 1)[0].split(",") if line and not line.startswith("#") else []
                if replace and name in names:
                    continue
                lines.append(line)
        lines.append(f"{name} {key.get_name()} {key.get_base64()}")
        atomic_write_text(self.pins_file, "\n".join(lines) + "\n")
        log.info("pinned %s host key %s for %s", key.get_name(), fingerprint(key), name)


class _PinOrRefuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts, accept_fingerprint: str | None) -> None:
        self.known = known
        self.accept = accept_fingerprint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        if self.accept is not None and _same_fingerprint(self.accept, fp):
            self.known.pin(hostname, key)
            return
        raise UnknownHostKey(hostname, key.get_name(), fp)


def _same_fingerprint(given: str, actual: str) -> bool:
    given = given.strip()
    if not given.startswith("SHA256:"):
        given = "SHA256:" + given
    return given.rstrip("=") == actual
