"""Host-key decisions a user makes explicitly: look at a host's key, then pin exactly that key.

:func:`fetch_host_key` runs only the SSH key exchange (no authentication, no command), so the
fingerprint can be shown before anything is sent to the host. :func:`trust` pins a key only if
the host presents the fingerprint the user confirmed; a host whose key changed is re-pinned
only with ``replace=True`` *and* the new fingerprint -- two separate, deliberate acts.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Literal, NamedTuple

import paramiko
from modeldeck.core.errors import HostKeyChanged, HostKeyError, HostUnreachable
from modeldeck.core.inventory.known_hosts import KnownHosts, _same_fingerprint, fingerprint, host_key_name
from modeldeck.core.targets.ssh.connection import (
    PassphrasePrompt,
    SshConnection,
    SshEndpoint,
    close_channel,
    socket_reason,
)

log = logging.getLogger(__name__)

KeyState = Literal["trusted", "unknown", "changed"]


class PresentedKey(NamedTuple):
    key_type: str
    fingerprint: str


@dataclass(frozen=True)
class KeyCheck:
    """A presented key compared with what is on record for ``name`` (``host`` or ``[host]:port``)."""

    name: str
    presented: PresentedKey
    state: KeyState
    expected: str | None  # the fingerprint on record for that key type (state "changed"/"trusted")


@dataclass(frozen=True)
class TrustResult:
    name: str
    key_type: str
    fingerprint: str
    before: KeyState
    pinned: bool  # False when the key was already trusted


def fetch_host_key(
    endpoint: SshEndpoint,
    known_hosts: KnownHosts | None = None,
    *,
    passphrase: PassphrasePrompt | None = None,
) -> PresentedKey:
    """The host key ``endpoint`` presents, found without authenticating or running anything.

    Hosts behind a proxy jump are reached through verified, authenticated jump connections
    (``known_hosts`` is then required). Raises HostUnreachable when the handshake fails in time.
    """
    key = _presented_key(endpoint, known_hosts, passphrase)
    return PresentedKey(key.get_name(), fingerprint(key))


def check_key(
    endpoint: SshEndpoint, known_hosts: KnownHosts, *, passphrase: PassphrasePrompt | None = None
) -> KeyCheck:
    """Fetch the host's key and say whether it is trusted, unknown or changed (nothing is pinned)."""
    key = _presented_key(endpoint, known_hosts, passphrase)
    return _compare(endpoint, known_hosts, key)


def trust(
    endpoint: SshEndpoint,
    fingerprint_given: str,
    known_hosts: KnownHosts,
    *,
    replace: bool = False,
    passphrase: PassphrasePrompt | None = None,
) -> TrustResult:
    """Pin the key ``endpoint`` presents if and only if its fingerprint is ``fingerprint_given``.

    * already trusted: nothing changes (``pinned`` False);
    * unknown: pinned in ModelDeck's own file;
    * changed: raises :class:`HostKeyChanged` unless ``replace`` -- then the old pins are dropped.
    A fingerprint that is not the presented one raises :class:`HostKeyError` and pins nothing.
    The user's ``known_hosts`` is never written.
    """
    key = _presented_key(endpoint, known_hosts, passphrase)
    check = _compare(endpoint, known_hosts, key)
    presented = check.presented.fingerprint
    if not _same_fingerprint(fingerprint_given, presented):
        raise HostKeyError(
            f"{endpoint.label} presents {check.presented.key_type} {presented}, not {fingerprint_given.strip()}: "
            "nothing was pinned",
            hint="compare the fingerprint with the one the host's administrator gave you",
        )
    if check.state == "trusted":
        return TrustResult(check.name, key.get_name(), presented, "trusted", False)
    if check.state == "changed" and not replace:
        raise HostKeyChanged(endpoint.label, key.get_name(), check.expected or "?", presented)
    known_hosts.pin(check.name, key, replace=check.state == "changed")
    return TrustResult(check.name, key.get_name(), presented, check.state, True)


def _compare(endpoint: SshEndpoint, known_hosts: KnownHosts, key: paramiko.PKey) -> KeyCheck:
    name = host_key_name(endpoint.host, endpoint.port)
    presented = PresentedKey(key.get_name(), fingerprint(key))
    same_type = [k for k in known_hosts.known(endpoint.host, endpoint.port) if k.key_type == key.get_name()]
    if any(k.fingerprint == presented.fingerprint for k in same_type):
        return KeyCheck(name, presented, "trusted", presented.fingerprint)
    if same_type:
        return KeyCheck(name, presented, "changed", same_type[0].fingerprint)
    return KeyCheck(name, presented, "unknown", None)


def _presented_key(
    endpoint: SshEndpoint, known_hosts: KnownHosts | None, passphrase: PassphrasePrompt | None
) -> paramiko.PKey:
    jump: SshConnection | None = None
    sock: socket.socket | paramiko.Channel
    try:
        if endpoint.proxy_jump is not None:
            if known_hosts is None:
                raise HostKeyError(f"{endpoint.label}: jump hosts must be verified; known hosts are required")
            jump = SshConnection.open(endpoint.proxy_jump, known_hosts, passphrase=passphrase)
            transport = jump.client.get_transport()
            assert transport is not None
            sock = transport.open_channel(
                "direct-tcpip", (endpoint.host, endpoint.port), ("127.0.0.1", 0), timeout=endpoint.connect_timeout_s
            )
        else:
            sock = socket.create_connection((endpoint.host, endpoint.port), timeout=endpoint.connect_timeout_s)
    except HostKeyError:
        _close(jump)
        raise
    except (OSError, paramiko.SSHException, EOFError) as exc:  # EOFError: the jump host's connection is gone
        _close(jump)
        raise HostUnreachable(f"{endpoint.label}: cannot connect: {socket_reason(exc)}") from exc
    transport = paramiko.Transport(sock)
    transport.banner_timeout = endpoint.connect_timeout_s
    transport.handshake_timeout = endpoint.connect_timeout_s
    if known_hosts is not None:
        # Ask for the key type on record first, as SSHClient.connect does, so "changed" means changed.
        on_record = [k.key_type for k in known_hosts.known(endpoint.host, endpoint.port)]
        options = transport.get_security_options()
        preferred = [t for t in on_record if t in options.key_types]
        if preferred:
            options.key_types = [*dict.fromkeys(preferred), *(t for t in options.key_types if t not in preferred)]
    try:
        transport.start_client(timeout=endpoint.connect_timeout_s)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise HostUnreachable(f"{endpoint.label}: SSH handshake failed: {exc}") from exc
    finally:
        # Through a jump host both closes send on its connection, and raise EOFError once it is gone: that must not
        # replace the error above, nor skip closing the jump connection.
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            transport.close()
        if isinstance(sock, paramiko.Channel):
            close_channel(sock)
        else:
            with contextlib.suppress(OSError):
                sock.close()
        _close(jump)


def _close(conn: SshConnection | None) -> None:
    if conn is not None:
        conn.close()
