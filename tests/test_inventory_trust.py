"""Host-key decisions in core against real sshd hosts: a key is looked at without logging in, and
pinned only when the host presents exactly the fingerprint the user confirmed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from modeldeck.core.errors import HostKeyChanged, HostKeyError, HostUnreachable
from modeldeck.core.inventory.known_hosts import KnownHosts
from modeldeck.core.inventory.trust import check_key, fetch_host_key, trust
from modeldeck.core.targets.ssh.connection import SshConnection, SshEndpoint

from tests.fixtures.sshd import SshHost

pytestmark = pytest.mark.server


def endpoint(host: SshHost) -> SshEndpoint:
    return SshEndpoint(host.ip, host.port, host.user, identity_files=(host.client_key,), allow_agent=False)


def sshd_log(host: SshHost) -> str:
    return (host.workdir / "sshd.log").read_text(errors="replace")


def test_fetching_a_key_never_authenticates(ssh_host: SshHost) -> None:
    key = fetch_host_key(endpoint(ssh_host))
    assert key == ("ssh-ed25519", ssh_host.fingerprint)
    log = sshd_log(ssh_host)
    assert "Accepted" not in log and "Failed" not in log and "authenticating user" not in log


def test_trust_pins_only_the_presented_fingerprint(ssh_host: SshHost, tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "pins", [tmp_path / "none"])
    assert check_key(endpoint(ssh_host), known).state == "unknown"
    with pytest.raises(HostKeyError, match="nothing was pinned"):
        trust(endpoint(ssh_host), "SHA256:" + "x" * 43, known)
    assert not known.pins_file.exists()
    result = trust(endpoint(ssh_host), ssh_host.fingerprint.removeprefix("SHA256:"), known)  # prefix optional
    assert (result.before, result.pinned) == ("unknown", True)
    assert check_key(endpoint(ssh_host), known).state == "trusted"
    again = trust(endpoint(ssh_host), ssh_host.fingerprint, known)
    assert (again.before, again.pinned) == ("trusted", False)


def test_a_changed_key_needs_replace_and_the_new_fingerprint(ssh_host: SshHost, tmp_path: Path) -> None:
    user_file = tmp_path / "known_hosts"
    user_file.write_text(ssh_host.known_hosts_line + "\n")
    users_text = user_file.read_text()
    known = KnownHosts(tmp_path / "pins", [user_file])
    old = ssh_host.fingerprint
    ssh_host.new_host_key()
    check = check_key(endpoint(ssh_host), known)
    assert (check.state, check.expected) == ("changed", old)
    with pytest.raises(HostKeyChanged):
        trust(endpoint(ssh_host), ssh_host.fingerprint, known)
    with pytest.raises(HostKeyError, match="nothing was pinned"):
        trust(endpoint(ssh_host), old, known, replace=True)  # the old key is not what the host presents
    result = trust(endpoint(ssh_host), ssh_host.fingerprint, known, replace=True)
    assert (result.before, result.pinned) == ("changed", True)
    assert check_key(endpoint(ssh_host), known).state == "trusted"
    assert user_file.read_text() == users_text  # never written: it still holds the old key
    assert old in [k.fingerprint for k in KnownHosts(tmp_path / "none", [user_file]).known(ssh_host.ip, ssh_host.port)]


def test_a_closed_port_is_unreachable_not_a_hang() -> None:
    with pytest.raises(HostUnreachable, match="cannot connect: connection refused") as err:
        fetch_host_key(SshEndpoint("127.0.0.1", 1, connect_timeout_s=5))
    assert "Errno" not in err.value.message


def test_a_closed_port_through_ssh_says_refused_not_errno_none(tmp_path: Path) -> None:
    with pytest.raises(HostUnreachable, match="cannot connect: connection refused") as err:
        SshConnection.open(SshEndpoint("127.0.0.1", 1, connect_timeout_s=5), KnownHosts(tmp_path / "pins", []))
    assert "Errno" not in err.value.message
