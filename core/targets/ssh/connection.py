"""One verified SSH connection to a host: run commands with deadlines, transfer files by SFTP.

Everything paramiko can raise is turned into ModelDeck errors here, so the SSH
target, the inventory's "test host" and the CLI see only :class:`HostUnreachable`,
:class:`SshAuthError`, :class:`UnknownHostKey` / :class:`HostKeyChanged` and
:class:`TargetError`. Host keys are verified *before* authentication, so a host
that fails the check never sees a credential or a command.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from modeldeck.core.errors import (
    HostKeyChanged,
    HostKeyError,
    HostUnreachable,
    SshAuthError,
    TargetError,
)
from modeldeck.core.inventory.known_hosts import KnownHosts, fingerprint

log = logging.getLogger(__name__)

# AEAD ciphers first when paramiko offers them: AES-GCM runs on AES-NI with no separate MAC pass (issue #5
# measured one paramiko connection reaching scp speed with it and 255 KiB SFTP writes). Others stay as fallbacks.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")


def _fast_transport(*args: object, **kwargs: object) -> paramiko.Transport:
    transport = paramiko.Transport(*args, **kwargs)  # type: ignore[arg-type]
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    fast = tuple(c for c in FAST_CIPHERS if c in offered)
    options.ciphers = fast + tuple(c for c in offered if c not in fast)
    return transport


# Asks for an encrypted key's passphrase (GUI dialog, CLI getpass); None means "no passphrase, give up".
PassphrasePrompt = Callable[[Path], "str | None"]


@dataclass(frozen=True)
class SshEndpoint:
    """Resolved connection settings of one host (what ``hosts show`` prints)."""

    host: str
    port: int = 22
    user: str | None = None
    identity_files: tuple[Path, ...] = ()
    proxy_jump: SshEndpoint | None = None
    password: str | None = field(default=None, repr=False)  # from the OS keyring only, never from a file
    allow_agent: bool = True
    connect_timeout_s: float = 10.0
    auth_timeout_s: float = 15.0

    @property
    def label(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port != 22 else ""
        return f"{user}{self.host}{port}"


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class SshConnection:
    """An open, host-key-verified, authenticated connection. Use as a context manager."""

    def __init__(self, endpoint: SshEndpoint, client: paramiko.SSHClient, jump: SshConnection | None = None) -> None:
        self.endpoint = endpoint
        self.client = client
        self._jump = jump
        self._sftp: paramiko.SFTPClient | None = None

    @classmethod
    def open(
        cls,
        endpoint: SshEndpoint,
        known_hosts: KnownHosts,
        *,
        accept_fingerprint: str | None = None,
        passphrase: PassphrasePrompt | None = None,
    ) -> SshConnection:
        """Connect, verify the host key, authenticate. Raises ModelDeck errors only (see the module doc)."""
        jump = None
        sock = None
        if endpoint.proxy_jump is not None:
            jump = cls.open(endpoint.proxy_jump, known_hosts, passphrase=passphrase)
            try:
                transport = jump.client.get_transport()
                assert transport is not None
                sock = transport.open_channel(
                    "direct-tcpip", (endpoint.host, endpoint.port), ("127.0.0.1", 0), timeout=endpoint.connect_timeout_s
                )
            except (paramiko.SSHException, OSError, EOFError) as exc:  # EOFError: the jump connection is gone
                jump.close()
                raise HostUnreachable(
                    f"{endpoint.label}: the jump host {endpoint.proxy_jump.label} cannot reach it: {exc}"
                ) from exc
        client = paramiko.SSHClient()
        known_hosts.configure(client, accept_fingerprint)
        key_files = [str(p) for p in endpoint.identity_files]
        attempt_passphrase: str | None = None
        while True:
            try:
                client.connect(
                    endpoint.host,
                    port=endpoint.port,
                    username=endpoint.user,
                    password=endpoint.password,
                    key_filename=key_files or None,
                    look_for_keys=not key_files,
                    allow_agent=endpoint.allow_agent,
                    passphrase=attempt_passphrase,
                    timeout=endpoint.connect_timeout_s,
                    banner_timeout=endpoint.connect_timeout_s,
                    auth_timeout=endpoint.auth_timeout_s,
                    channel_timeout=endpoint.connect_timeout_s,
                    sock=sock,
                    transport_factory=_fast_transport,
                )
                break
            except paramiko.PasswordRequiredException as exc:
                # An encrypted key: ask once for its passphrase, then retry with it.
                encrypted = next((p for p in endpoint.identity_files if p.is_file()), None)
                if passphrase is None or attempt_passphrase is not None or encrypted is None:
                    client.close()
                    _close(jump)
                    raise SshAuthError(
                        f"{endpoint.label}: the key is encrypted and no passphrase was given",
                        hint="load it into ssh-agent, or run interactively to be asked for its passphrase",
                    ) from exc
                attempt_passphrase = passphrase(encrypted)
                if attempt_passphrase is None:
                    client.close()
                    _close(jump)
                    raise SshAuthError(f"{endpoint.label}: no passphrase given for {encrypted}") from exc
            except BaseException as exc:
                client.close()
                _close(jump)
                raise _translate(endpoint, exc) from exc
        return cls(endpoint, client, jump)

    def __enter__(self) -> SshConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        # Through a jump host the transport's socket is a channel of the jump connection, whose close sends and
        # raises EOFError once that is gone: in __exit__ it would replace the real error and skip the jump's close.
        with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
            self.client.close()
        _close(self._jump)

    @property
    def host_key(self) -> paramiko.PKey:
        """The host's (verified) key. Raises :class:`HostUnreachable` once the connection is gone: paramiko's
        ``get_remote_server_key`` raises a bare ``SSHException("No existing session")`` then, and a deploy (for its
        facts cache) and ``hosts test`` ask for it right after connecting."""
        transport = self.client.get_transport()
        try:
            if transport is None:
                raise paramiko.SSHException("closed")
            return transport.get_remote_server_key()
        except paramiko.SSHException as exc:
            raise HostUnreachable(f"{self.endpoint.label}: the connection dropped", hint="run it again") from exc

    @property
    def host_key_fingerprint(self) -> str:
        return fingerprint(self.host_key)

    def run(
        self, command: str, *, timeout: float = 60.0, stdin: bytes | None = None, check: bool = False
    ) -> CommandResult:
        """Run ``command`` through the remote shell; give up after ``timeout`` seconds (the channel is closed).

        With ``check`` a non-zero exit raises :class:`TargetError` carrying stderr's last lines.
        """
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(f"{self.endpoint.label}: the connection was closed")
        try:
            chan = transport.open_session(timeout=min(timeout, self.endpoint.connect_timeout_s))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(f"{self.endpoint.label}: cannot open a session: {exc}") from exc
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            chan.settimeout(0.2)
            chan.exec_command(command)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out.append(chan.recv(65536))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not transport.is_active():
                    raise HostUnreachable(f"{self.endpoint.label}: the connection dropped while running a command")
                if time.monotonic() > deadline:
                    raise TargetError(
                        f"{self.endpoint.label}: command timed out after {timeout:.0f} s: {_short(command)}"
                    )
                try:
                    data = chan.recv(65536)
                    if data:
                        out.append(data)
                except TimeoutError:
                    pass
                except socket.timeout:  # noqa: UP041 -- paramiko raises the socket module's alias
                    pass
            status = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(f"{self.endpoint.label}: connection lost: {exc}") from exc
        finally:
            close_channel(chan)
        result = CommandResult(
            command, status, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace")
        )
        if check and not result.ok:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:]) or result.stdout.strip()[-500:]
            raise TargetError(f"{self.endpoint.label}: `{_short(command)}` failed (exit {status})", hint=tail or None)
        return result

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session (opened once, closed with the connection)."""
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
                channel = self._sftp.get_channel()
                if channel is not None:
                    channel.settimeout(self.endpoint.connect_timeout_s * 3)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise HostUnreachable(f"{self.endpoint.label}: cannot open SFTP: {exc}") from exc
        return self._sftp


def quote(value: str | Path) -> str:
    """Shell-quote one argument for a remote POSIX shell."""
    return shlex.quote(str(value))


def _short(command: str, limit: int = 80) -> str:
    return command if len(command) <= limit else command[: limit - 1] + "…"


def close_channel(chan: paramiko.Channel) -> None:
    """Close a channel whose connection may already be gone.

    paramiko's ``Channel.close`` sends a message and raises ``EOFError`` on a dead socket; inside a ``finally``
    that would replace the clear error being raised (e.g. "the connection dropped while uploading").
    """
    with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
        chan.close()


STREAMLOCAL = "direct-streamlocal@openssh.com"


class _QuietRefusals(logging.Filter):
    """paramiko logs every refused channel at ERROR; a refused stream-local channel is an expected answer (no
    resident agent there, or forwarding disabled) with a fallback, so those lines go (by transport + channel id)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: set[tuple[int, int]] = set()
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not self.pending:
            return True
        text = record.getMessage()
        with self.lock:
            return not any(text.startswith(f"Secsh channel {chanid} open FAILED") for _, chanid in self.pending)


_QUIET = _QuietRefusals()
logging.getLogger("paramiko.transport").addFilter(_QUIET)


def open_unix_channel(transport: paramiko.Transport, path: str, timeout: float) -> paramiko.Channel:
    """A channel to the unix socket ``path`` on the host (OpenSSH's ``direct-streamlocal@openssh.com``, what
    ``ssh -L local:/remote.sock`` uses): sshd connects to the socket itself, so no shell or process starts.

    paramiko's ``Transport.open_channel`` writes the extra fields of the tcpip and x11 kinds only, so this sends
    the same CHANNEL_OPEN with streamlocal's (socket path, reserved string, reserved uint32) and then waits the
    way ``open_channel`` does. Raises :class:`paramiko.ChannelException` when the host refuses (forwarding
    disabled: ``AllowStreamLocalForwarding no``, or no such socket), :class:`paramiko.SSHException` on a timeout
    or a dropped connection.
    """
    from paramiko.channel import Channel
    from paramiko.common import cMSG_CHANNEL_OPEN
    from paramiko.message import Message

    if not transport.is_active():
        raise paramiko.SSHException("SSH session not active")
    with transport.lock:
        window = transport._sanitize_window_size(None)
        packet = transport._sanitize_packet_size(None)
        chanid = transport._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string(STREAMLOCAL)
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(path)
        m.add_string("")  # reserved
        m.add_int(0)  # reserved
        chan = Channel(chanid)
        transport._channels.put(chanid, chan)
        transport.channel_events[chanid] = event = threading.Event()
        transport.channels_seen[chanid] = True
        chan._set_transport(transport)
        chan._set_window(window, packet)
    key = (id(transport), chanid)
    with _QUIET.lock:
        _QUIET.pending.add(key)
    try:
        transport._send_user_message(m)
        deadline = time.monotonic() + timeout
        while not event.wait(0.05):
            if not transport.is_active():
                raise transport.get_exception() or paramiko.SSHException("the connection closed")
            if time.monotonic() > deadline:
                raise paramiko.SSHException("timeout opening a streamlocal channel")
    finally:
        with _QUIET.lock:
            _QUIET.pending.discard(key)
    opened = transport._channels.get(chanid)
    if opened is None:
        raise transport.get_exception() or paramiko.ChannelException(2, "refused")
    return opened


def _close(conn: SshConnection | None) -> None:
    if conn is not None:
        conn.close()


def socket_reason(exc: BaseException) -> str:
    """Why a TCP connect failed, in words (paramiko's "[Errno None] Unable to connect to port …" hides the cause)."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) and exc.errors:
        exc = next(iter(exc.errors.values()))
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port: is sshd running there?)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host name ({exc.strerror or exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def _translate(endpoint: SshEndpoint, exc: BaseException) -> BaseException:
    label = endpoint.label
    if isinstance(exc, HostKeyError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyChanged(label, exc.key.get_name(), fingerprint(exc.expected_key), fingerprint(exc.key))
    if isinstance(exc, paramiko.AuthenticationException):
        return SshAuthError(
            f"{label}: authentication failed ({exc})",
            hint="check the user, the identity file or ssh-agent; passwords come only from the OS keyring",
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HostUnreachable(f"{label}: no answer within {endpoint.connect_timeout_s:.0f} s")
    if isinstance(exc, (ConnectionRefusedError, socket.gaierror, OSError)):
        return HostUnreachable(f"{label}: cannot connect: {socket_reason(exc)}")
    if isinstance(exc, paramiko.SSHException) and "No authentication methods available" in str(exc):
        return SshAuthError(
            f"{label}: no key, ssh-agent identity or password to offer",
            hint="give an identity file, load a key into ssh-agent, or store a password: modeldeck hosts set-password",
        )
    if isinstance(exc, (paramiko.SSHException, EOFError)):
        return HostUnreachable(f"{label}: SSH handshake failed: {exc}")
    return exc
