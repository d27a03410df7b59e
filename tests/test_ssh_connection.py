"""SSH connections against real sshd processes: host-key trust, auth, command deadlines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from modeldeck.core.errors import HostKeyChanged, HostUnreachable, SshAuthError, TargetError, UnknownHostKey
from modeldeck.core.inventory.known_hosts import KnownHosts
from modeldeck.core.targets.ssh.connection import SshConnection, SshEndpoint

from tests.fixtures.sshd import SshHost, keygen

pytestmark = pytest.mark.server


def endpoint(host: SshHost, key: Path | None = None, **kw: object) -> SshEndpoint:
    return SshEndpoint(host.ip, host.port, host.user, identity_files=(key or host.client_key,), allow_agent=False, **kw)  # type: ignore[arg-type]


def trust(tmp_path: Path, *hosts: SshHost) -> KnownHosts:
    user_file = tmp_path / "user_known_hosts"
    user_file.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
    return KnownHosts(tmp_path / "pins", [user_file])


def test_known_host_runs_commands(ssh_host: SshHost, tmp_path: Path) -> None:
    with SshConnection.open(endpoint(ssh_host), trust(tmp_path, ssh_host)) as conn:
        result = conn.run("echo hello; echo oops >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, "hello\n", "oops\n")


def test_unknown_host_key_is_refused_with_its_fingerprint_and_nothing_runs(ssh_host: SshHost, tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "pins", [tmp_path / "none"])
    with pytest.raises(UnknownHostKey) as info:
        SshConnection.open(endpoint(ssh_host), known)
    assert info.value.fingerprint == ssh_host.fingerprint
    assert ssh_host.fingerprint in info.value.hint
    assert not (tmp_path / "pins").exists()


def test_accepting_the_exact_fingerprint_pins_the_key(ssh_host: SshHost, tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "pins", [tmp_path / "none"])
    with pytest.raises(UnknownHostKey):
        SshConnection.open(endpoint(ssh_host), known, accept_fingerprint="SHA256:not-this-one")
    with SshConnection.open(endpoint(ssh_host), known, accept_fingerprint=ssh_host.fingerprint) as conn:
        assert conn.run("true").ok
    with SshConnection.open(endpoint(ssh_host), known) as conn:  # pinned now: no acceptance needed
        assert conn.host_key_fingerprint == ssh_host.fingerprint


def test_changed_host_key_is_a_hard_error_and_the_users_file_is_untouched(ssh_host: SshHost, tmp_path: Path) -> None:
    known = trust(tmp_path, ssh_host)
    user_text = known.user_files[0].read_text()
    old = ssh_host.fingerprint
    ssh_host.new_host_key()
    marker = tmp_path / "ran"
    with (
        pytest.raises(HostKeyChanged) as info,
        SshConnection.open(endpoint(ssh_host), known, accept_fingerprint=ssh_host.fingerprint) as conn,
    ):
        conn.run(f"touch {marker}")
    assert (info.value.expected, info.value.presented) == (old, ssh_host.fingerprint)
    assert not marker.exists()
    # Re-pin: ModelDeck's own file overrides the user's stale line, which stays as it was.
    known.pin(f"[{ssh_host.ip}]:{ssh_host.port}", ssh_host.host_public_key, replace=True)
    with SshConnection.open(endpoint(ssh_host), known) as conn:
        assert conn.run("true").ok
    assert known.user_files[0].read_text() == user_text


def test_wrong_key_is_an_auth_error(ssh_host: SshHost, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(SshAuthError, match="authentication failed"):
        SshConnection.open(endpoint(ssh_host, stranger), trust(tmp_path, ssh_host))


def test_encrypted_key_asks_for_its_passphrase(sshd_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    locked = keygen(tmp_path / "locked", passphrase="s3cret")
    host = sshd_factory(authorized=[locked])
    asked: list[Path] = []

    def prompt(path: Path) -> str:
        asked.append(path)
        return "s3cret"

    with SshConnection.open(endpoint(host, locked), trust(tmp_path, host), passphrase=prompt) as conn:
        assert conn.run("true").ok
    assert asked == [locked]
    with pytest.raises(SshAuthError, match="encrypted"):
        SshConnection.open(endpoint(host, locked), trust(tmp_path, host))


def test_closed_port_is_unreachable_not_a_hang(tmp_path: Path) -> None:
    ep = SshEndpoint("127.0.0.1", 1, "nobody", connect_timeout_s=2)
    with pytest.raises(HostUnreachable):
        SshConnection.open(ep, KnownHosts(tmp_path / "pins", []))


def test_command_past_its_deadline_is_stopped(ssh_host: SshHost, tmp_path: Path) -> None:
    with SshConnection.open(endpoint(ssh_host), trust(tmp_path, ssh_host)) as conn:
        with pytest.raises(TargetError, match="timed out"):
            conn.run("sleep 30", timeout=1)
        assert conn.run("echo still-usable").stdout == "still-usable\n"


def test_dropped_session_is_reported_as_unreachable(ssh_host: SshHost, tmp_path: Path) -> None:
    with SshConnection.open(endpoint(ssh_host), trust(tmp_path, ssh_host)) as conn:
        ssh_host.kill_sessions()
        with pytest.raises(HostUnreachable):
            conn.run("true", timeout=10)


def test_an_aes_gcm_cipher_is_negotiated_when_the_host_offers_one(ssh_host: SshHost, tmp_path: Path) -> None:
    with SshConnection.open(endpoint(ssh_host), trust(tmp_path, ssh_host)) as conn:
        transport = conn.client.get_transport()
        assert transport is not None
        assert transport.local_cipher == "aes128-gcm@openssh.com"


def test_a_host_test_whose_connection_drops_after_the_handshake_is_unreachable(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    """paramiko's get_remote_server_key raises a bare SSHException ("No existing session") once the transport is
    gone: ``hosts test`` showed that instead of HostUnreachable when the host dropped the connection just then."""
    import threading
    import time

    import paramiko
    from modeldeck.core.inventory.probe import check_host

    def transports() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if isinstance(t, paramiko.Transport) and t.is_alive()}

    others = transports()

    def drop_before_the_facts(message: str, fraction: float | None) -> None:
        if message.endswith("collecting facts"):
            ssh_host.kill_sessions()
            deadline = time.monotonic() + 20  # until paramiko's reader thread has seen the connection go
            while transports() - others:
                assert time.monotonic() < deadline, "the transport never noticed the dropped connection"
                time.sleep(0.02)

    with pytest.raises(HostUnreachable, match="dropped"):
        check_host(endpoint(ssh_host), trust(tmp_path, ssh_host), progress=drop_before_the_facts)


def test_the_host_key_of_a_dropped_connection_is_unreachable_not_a_paramiko_error(
    ssh_host: SshHost, tmp_path: Path
) -> None:
    with SshConnection.open(endpoint(ssh_host), trust(tmp_path, ssh_host)) as conn:
        transport = conn.client.get_transport()
        assert transport is not None
        ssh_host.kill_sessions()
        deadline = time.monotonic() + 20  # until paramiko's reader thread has seen the connection go
        while transport.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(HostUnreachable, match="dropped"):
            conn.host_key_fingerprint  # noqa: B018
