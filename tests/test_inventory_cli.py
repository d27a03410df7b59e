"""``modeldeck hosts`` commands that need no SSH server: listing, showing, importing, selection errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modeldeck.core.cli import main


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".ssh").mkdir(parents=True)

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


def test_list_and_show_as_json(run) -> None:  # type: ignore[no-untyped-def]
    assert (
        run("hosts", "add", "web1", "--host", "10.0.0.11", "--port", "2222", "--group", "web", "--label", "gpu=a100")[0]
        == 0
    )
    assert run("hosts", "add", "db1", "--host", "10.0.0.21", "--identity", "~/.ssh/missing_key")[0] == 0
    code, out, _ = run("hosts", "list", "--json")
    assert code == 0
    assert [(h["name"], h["port"], h["labels"]) for h in json.loads(out)] == [
        ("db1", None, {}),
        ("web1", 2222, {"gpu": "a100"}),
    ]
    code, out, _ = run("hosts", "show", "db1", "--json")
    shown = json.loads(out)
    assert shown["resolved"]["Port"] == {"value": 22, "source": "default"}
    assert shown["known_host_keys"] == []
    assert shown["notes"] == [f"identity file {Path.home() / '.ssh/missing_key'} does not exist"]
    code, out, _ = run("hosts", "show", "db1")
    assert "warning: identity file" in out and "IdentityFile" in out


def test_unknown_selection_is_a_one_line_error(run) -> None:  # type: ignore[no-untyped-def]
    run("hosts", "add", "web1", "--host", "10.0.0.11", "--group", "web")
    code, out, err = run("hosts", "test", "webz")
    assert code == 1 and out == ""
    assert err.strip() == "error: unknown host or group 'webz' (hint: groups: web; hosts: web1)"
    code, _, err = run("hosts", "add", "web2", "--host", "10.0.0.12", "--label", "oops")
    assert code == 1 and "--label 'oops': expected KEY=VALUE" in err
    code, _, err = run("hosts", "add", "web2", "--host", "10.0.0.12", "--port", "0")
    assert code == 1 and "port 0 is not between 1 and 65535" in err


def test_import_ansible_dry_run_changes_nothing_and_real_run_imports(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nweb[1:2] ansible_user=deploy ansible_become=yes\n")
    code, out, _ = run("hosts", "import-ansible", str(inventory), "--dry-run")
    assert code == 0 and "would import 2 hosts" in out and "ansible_become" in out
    assert "no hosts" in run("hosts", "list")[1]
    code, out, _ = run("hosts", "import-ansible", str(inventory))
    assert code == 0 and "imported 2 hosts" in out
    code, out, _ = run("hosts", "list", "web")
    assert "web1" in out and "web2" in out and "ansible:" in out
    code, _, err = run("hosts", "import-ansible", str(inventory))
    assert code == 1 and "already exists" in err


def test_import_ssh_config_defaults_to_the_users_config(run) -> None:  # type: ignore[no-untyped-def]
    (Path.home() / ".ssh" / "config").write_text("Host box\n  HostName 10.3.0.1\n  Compression yes\n")
    code, out, _ = run("hosts", "import-ssh-config")
    assert code == 0 and "Compression yes is not supported" in out
    code, out, _ = run("hosts", "show", "box")
    assert "~/.ssh/config:2" in out  # where HostName came from
