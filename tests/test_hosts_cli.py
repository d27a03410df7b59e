"""``modeldeck hosts`` against real sshd hosts on loopback: test, trust, unknown and changed keys, passwords.

"Nothing executed" is checked in sshd's own log: a host whose key is refused never sees an
authentication attempt (no ``Accepted``/``Failed`` line), let alone a command.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from modeldeck.core.cli import main
from modeldeck.core.settings import config_dir

from tests.fixtures.keyring_memory import MemoryKeyring, memory_keyring, no_keyring  # noqa: F401
from tests.fixtures.sshd import SshHost

pytestmark = pytest.mark.server

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Run:
    """``run("hosts", "test", "web")`` -> (exit code, stdout, stderr), with an empty ~/.ssh and no agent."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


def add(run: Run, name: str, host: SshHost, *extra: str) -> None:
    code, _, err = run(
        "hosts", "add", name, "--host", host.ip, "--port", str(host.port), "--user", host.user,
        "--identity", str(host.client_key), "--deploy-root", str(host.deploy_root), *extra,
    )  # fmt: skip
    assert code == 0, err


class SshdLog:
    """What sshd logged since the last call (authentications show there before anything runs)."""

    def __init__(self, host: SshHost) -> None:
        self.path = host.workdir / "sshd.log"
        self.offset = self.path.stat().st_size

    def new(self) -> str:
        text = self.path.read_text(errors="replace")[self.offset :]
        self.offset += len(text)
        return text


def test_unknown_host_key_is_refused_before_authentication(run: Run, ssh_host: SshHost) -> None:
    add(run, "web1", ssh_host)
    log = SshdLog(ssh_host)
    code, out, _ = run("hosts", "test", "web1")
    assert code == 1
    assert "unknown host key" in out and ssh_host.fingerprint in out
    assert f"modeldeck hosts trust web1 --fingerprint {ssh_host.fingerprint}" in out
    assert "Accepted" not in log.new()
    assert not (config_dir() / "known_hosts").exists()


def test_trust_shows_the_key_and_pins_only_the_matching_fingerprint(run: Run, ssh_host: SshHost) -> None:
    add(run, "web1", ssh_host)
    code, out, _ = run("hosts", "trust", "web1")
    assert code == 0
    assert f"presents ssh-ed25519 {ssh_host.fingerprint}" in out
    assert not (config_dir() / "known_hosts").exists()  # showing is not trusting

    code, _, err = run("hosts", "trust", "web1", "--fingerprint", "SHA256:" + "A" * 43)
    assert code == 1 and "nothing was pinned" in err
    assert not (config_dir() / "known_hosts").exists()

    code, out, _ = run("hosts", "trust", "web1", "--fingerprint", ssh_host.fingerprint)
    assert code == 0 and "pinned ssh-ed25519" in out
    code, out, _ = run("hosts", "test", "web1")
    assert code == 0, out
    assert "ok" in out and "Python 3." in out and "x86_64" in out

    code, out, _ = run("hosts", "show", "web1")
    assert ssh_host.fingerprint in out and str(config_dir() / "known_hosts") in out


def test_changed_host_key_is_a_hard_error_until_re_pinned_with_replace(run: Run, ssh_host: SshHost) -> None:
    user_known = Path.home() / ".ssh" / "known_hosts"
    user_known.write_text(ssh_host.known_hosts_line + "\n")
    users_file = user_known.read_text()
    add(run, "web1", ssh_host)
    assert run("hosts", "test", "web1")[0] == 0
    old = ssh_host.fingerprint
    ssh_host.new_host_key()
    log = SshdLog(ssh_host)

    code, out, _ = run("hosts", "test", "web1")
    assert code == 1 and "HOST KEY CHANGED" in out
    assert f"--replace --fingerprint {ssh_host.fingerprint}" in out
    code, out, _ = run("hosts", "trust", "web1")
    assert "CHANGED" in out and old in out
    code, _, err = run("hosts", "trust", "web1", "--fingerprint", ssh_host.fingerprint)
    assert code == 1 and "HOST KEY CHANGED" in err  # the new fingerprint alone is not enough
    assert "Accepted" not in log.new()

    code, out, _ = run("hosts", "trust", "web1", "--replace", "--fingerprint", ssh_host.fingerprint)
    assert code == 0 and "re-pinned" in out
    assert run("hosts", "test", "web1")[0] == 0
    assert user_known.read_text() == users_file  # ModelDeck never writes the user's known_hosts
    assert old not in run("hosts", "show", "web1")[1]  # ModelDeck's pin now decides


def test_a_group_test_reports_each_host_and_a_dead_one_fails_fast(run: Run, sshd_factory: Callable) -> None:  # type: ignore[type-arg]
    alive, dead = sshd_factory(), sshd_factory()
    Path.home().joinpath(".ssh", "known_hosts").write_text(alive.known_hosts_line + "\n" + dead.known_hosts_line + "\n")
    add(run, "alive", alive, "--group", "web")
    add(run, "dead", dead, "--group", "web")
    dead.stop()
    code, out, _ = run("hosts", "test", "web", "--json")
    results = {r["host"]: r for r in json.loads(out)}
    assert code == 1
    assert results["alive"]["ok"] and results["alive"]["facts"]["arch"]
    assert not results["dead"]["ok"] and results["dead"]["status"] == "HostUnreachable"
    code, out, _ = run("hosts", "test", "web")
    assert "1/2 hosts ok" in out


def test_imported_ssh_config_with_a_proxy_jump_connects_through_the_jump_host(
    run: Run,
    sshd_factory: Callable,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    bastion, inner = sshd_factory(), sshd_factory()
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host bastion\n  HostName {bastion.ip}\n  Port {bastion.port}\n  User {bastion.user}\n"
        f"  IdentityFile {bastion.client_key}\n  ServerAliveInterval 15\n"
        f"Host inner\n  HostName {inner.ip}\n  Port {inner.port}\n  User {inner.user}\n"
        f"  IdentityFile {inner.client_key}\n  ProxyJump bastion\n  ForwardAgent yes\n"
    )
    code, out, _ = run("hosts", "import-ssh-config", str(config), "--group", "lab")
    assert code == 0
    assert "ForwardAgent yes is not supported" in out and "ServerAliveInterval 15 is not supported" in out
    code, out, _ = run("hosts", "show", "inner")
    assert "ForwardAgent" in out  # warnings stay with the host
    assert f"{bastion.user}@{bastion.ip}:{bastion.port} -> {inner.user}@{inner.ip}:{inner.port}" in out
    assert f"{config}:11" in out  # where ProxyJump came from

    code, out, _ = run("hosts", "test", "inner")  # neither key is trusted yet: the jump host's is refused first
    assert code == 1 and f"modeldeck hosts trust bastion --fingerprint {bastion.fingerprint}" in out
    assert run("hosts", "trust", "bastion", "--fingerprint", bastion.fingerprint)[0] == 0
    code, out, _ = run("hosts", "test", "inner")
    assert code == 1 and f"modeldeck hosts trust inner --fingerprint {inner.fingerprint}" in out
    assert run("hosts", "trust", "inner", "--fingerprint", inner.fingerprint)[0] == 0  # fetched through bastion
    code, out, _ = run("hosts", "test", "lab")
    assert code == 0, out
    assert "2/2 hosts ok" in out


# -- passwords --------------------------------------------------------------------------------------

PASSWORD = "Corr3ct-horse-battery"


@pytest.fixture
def password_user() -> Iterator[str]:
    """A throw-away local user with a password (sshd checks it against /etc/shadow)."""
    name = "mdpwtest"
    subprocess.run(["userdel", "-r", name], capture_output=True, timeout=30)
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{PASSWORD}\n", text=True, check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, timeout=30)


def test_password_from_the_keyring_logs_in_and_is_never_written_to_a_file(
    run: Run,
    sshd_factory: Callable,  # type: ignore[type-arg]
    password_user: str,
    memory_keyring: MemoryKeyring,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = sshd_factory(extra_config=[f"Match User {password_user}", "    PasswordAuthentication yes"])
    Path.home().joinpath(".ssh", "known_hosts").write_text(host.known_hosts_line + "\n")
    code, _, err = run("hosts", "add", "pw", "--host", host.ip, "--port", str(host.port), "--user", password_user)
    assert code == 0, err

    code, out, _ = run("hosts", "test", "pw")
    assert code == 1 and "no key, ssh-agent identity or password to offer" in out

    monkeypatch.setattr("sys.stdin", io.StringIO("wrong-password\n"))
    assert run("hosts", "set-password", "pw", "--stdin")[0] == 0
    code, out, _ = run("hosts", "test", "pw")
    assert code == 1 and "authentication failed" in out

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, out, _ = run("hosts", "set-password", "pw", "--stdin")
    assert code == 0 and "OS keyring" in out
    code, out, _ = run("hosts", "test", "pw")
    assert code == 0, out
    assert "stored" in run("hosts", "show", "pw")[1]

    assert memory_keyring.entries == {("modeldeck-ssh", "pw"): PASSWORD}
    for path in config_dir().rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    assert run("hosts", "remove", "pw")[1].strip() == "removed pw and its keyring password"
    assert memory_keyring.entries == {}


def test_without_a_keyring_set_password_says_to_use_keys(
    run: Run,
    no_keyring: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run("hosts", "add", "web1", "--host", "192.0.2.10")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("secret\n"))
    code, _, err = run("hosts", "set-password", "web1", "--stdin")
    assert code == 1
    assert "no OS keyring" in err and "SSH key or ssh-agent" in err
    assert not any(b"secret" in p.read_bytes() for p in config_dir().rglob("*") if p.is_file())
