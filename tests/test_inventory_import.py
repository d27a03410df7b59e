"""Importing hosts from ~/.ssh/config and Ansible inventories: what is carried over, what is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from modeldeck.core.errors import ConfigError
from modeldeck.core.inventory.ansible import import_ansible
from modeldeck.core.inventory.hosts import Inventory, resolve
from modeldeck.core.inventory.ssh_config import import_ssh_config


def write(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"))
    return path


def by_name(hosts: list) -> dict:  # type: ignore[type-arg]
    return {h.name: h for h in hosts}


# -- ssh_config -----------------------------------------------------------------------------------------


SSH_CONFIG = """
# defaults come last in the file but apply to every host
Host bastion
    HostName bastion.example.com
    User jump
    Port 2200

Host web1 web2
    HostName %h.internal
    ProxyJump bastion
    IdentityFile ~/.ssh/deploy_key
    ServerAliveInterval 30

Host legacy
    HostName 10.1.2.3
    ProxyCommand ssh -W %h:%p old-gateway
    StrictHostKeyChecking no
    LocalForward 8080 localhost:80

Host outside
    HostName 10.9.9.9
    ProxyJump gw

Host *.internal web*
    User deploy

Match host legacy
    User root

Host *
    IdentityFile ~/.ssh/id_ed25519
    User fallback
"""


def test_ssh_config_hosts_take_first_obtained_values_and_defaults(tmp_path: Path) -> None:
    result = import_ssh_config(write(tmp_path / "config", SSH_CONFIG))
    hosts = by_name(result.hosts)
    assert sorted(hosts) == ["bastion", "legacy", "outside", "web1", "web2"]  # wildcards are not hosts
    web1 = hosts["web1"]
    assert web1.hostname == "web1.internal"
    assert web1.user == "deploy"  # first obtained value: "Host *.internal web*" before "Host *"
    assert web1.identity_files == (str(Path.home() / ".ssh/deploy_key"), str(Path.home() / ".ssh/id_ed25519"))
    assert web1.proxy_jump == "bastion"
    assert web1.origins["hostname"].endswith("config:8")
    assert web1.origins["user"].endswith("config:24")
    assert hosts["bastion"].port == 2200 and hosts["bastion"].user == "jump"
    assert web1.source == f"ssh_config:{tmp_path / 'config'}"


def test_unsupported_directives_are_reported_per_host_with_file_and_line(tmp_path: Path) -> None:
    hosts = by_name(import_ssh_config(write(tmp_path / "config", SSH_CONFIG)).hosts)
    legacy = "\n".join(hosts["legacy"].warnings)
    assert "config:15: ProxyCommand ssh -W %h:%p old-gateway is not supported" in legacy
    assert "config:16: StrictHostKeyChecking no is not supported: ModelDeck always verifies host keys" in legacy
    assert "config:17: LocalForward" in legacy
    assert "config:26: Match host legacy is not evaluated" in legacy
    web1 = "\n".join(hosts["web1"].warnings)
    assert "config:11: ServerAliveInterval 30 is not supported" in web1
    assert "ProxyCommand" not in web1
    assert all("ServerAliveInterval" not in w for w in hosts["bastion"].warnings)


def test_proxy_jump_to_an_alias_resolves_to_a_chain_after_import(tmp_path: Path) -> None:
    result = import_ssh_config(write(tmp_path / "config", SSH_CONFIG))
    inv = Inventory(tmp_path / "inventory.toml")
    inv.add_many(result.hosts)
    r = resolve(inv, "web2", password_lookup=lambda _: None)
    assert r.endpoint.host == "web2.internal"
    assert (r.endpoint.proxy_jump.host, r.endpoint.proxy_jump.port, r.endpoint.proxy_jump.user) == (
        "bastion.example.com",
        2200,
        "jump",
    )
    assert r.proxy_jump.source.endswith("config:9")
    # A hop that is no concrete alias is spelled out, so it is not mistaken for a missing inventory host.
    assert inv.get("outside").proxy_jump == "fallback@gw:22"


def test_include_is_followed_and_loops_are_errors(tmp_path: Path) -> None:
    extra = write(tmp_path / "extra.conf", "Host db1\n    HostName 10.0.0.21\n    Port 2201\n")
    main = write(tmp_path / "config", f"Include {tmp_path}/*.conf\nHost web1\n    HostName 10.0.0.11\n")
    assert sorted(h.name for h in import_ssh_config(main).hosts) == ["db1", "web1"]
    assert by_name(import_ssh_config(main).hosts)["db1"].origins["port"] == f"{extra}:3"
    write(tmp_path / "loop.conf", f"Include {main}\n")
    with pytest.raises(ConfigError, match="Include loop"):
        import_ssh_config(main)


def test_bad_port_in_ssh_config_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config", "Host a\n    HostName h\n    Port ssh\n")
    with pytest.raises(ConfigError, match=r"config:3: Port 'ssh' is not between 1 and 65535"):
        import_ssh_config(path)


# -- Ansible ------------------------------------------------------------------------------------------


ANSIBLE_INI = """
# an inventory as people write them
gateway ansible_host=192.0.2.1

[web]
web[01:03] ansible_user=deploy
special.example.com:2222 gpu=a100

[db]
db1 ansible_host=10.0.0.21 ansible_ssh_private_key_file=~/.ssh/db_key ansible_ssh_common_args='-J gw'

[prod:children]
web
db

[prod:vars]
ansible_port=2200
env=prod
ansible_password=sekrit

[web:vars]
ansible_port=2201
"""


def test_ansible_ini_groups_children_vars_and_ranges(tmp_path: Path) -> None:
    result = import_ansible(write(tmp_path / "hosts.ini", ANSIBLE_INI))
    hosts = by_name(result.hosts)
    assert sorted(hosts) == ["db1", "gateway", "special.example.com", "web01", "web02", "web03"]
    web02 = hosts["web02"]
    assert web02.groups == ("prod", "web")
    assert web02.user == "deploy"
    assert web02.port == 2201  # child group vars win over parent group vars
    assert web02.labels == {"env": "prod"}
    assert web02.origins["port"] == f"{tmp_path / 'hosts.ini'}:21"
    special = hosts["special.example.com"]
    assert special.port == 2222 and special.labels == {"env": "prod", "gpu": "a100"}  # host:port beats group vars
    db1 = hosts["db1"]
    assert (db1.hostname, db1.port, db1.identity_files) == ("10.0.0.21", 2200, (str(Path.home() / ".ssh/db_key"),))
    assert hosts["gateway"].groups == () and hosts["gateway"].hostname == "192.0.2.1"
    warnings = "\n".join(db1.warnings)
    assert "hosts.ini:9: ansible_ssh_common_args=" in warnings and "not applied" in warnings
    assert "ansible_password=*** ignored: passwords are not imported" in warnings
    assert "sekrit" not in warnings


def test_ansible_yaml_inventory_imports_like_the_ini_one(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.yml",
        """
all:
  vars:
    ansible_user: ops
  hosts:
    gateway:
      ansible_host: 192.0.2.1
  children:
    prod:
      vars:
        ansible_port: 2200
        env: prod
      children:
        web:
          hosts:
            web[1:2]:
              gpu: a100
          vars:
            ansible_port: 2201
        db:
          hosts:
            db1:
              ansible_host: 10.0.0.21
              ansible_become: true
""",
    )
    hosts = by_name(import_ansible(path).hosts)
    assert sorted(hosts) == ["db1", "gateway", "web1", "web2"]
    assert hosts["web1"].groups == ("prod", "web")
    assert (hosts["web1"].user, hosts["web1"].port) == ("ops", 2201)
    assert hosts["web1"].labels == {"env": "prod", "gpu": "a100"}
    assert hosts["db1"].port == 2200
    assert hosts["db1"].origins["hostname"] == f"{path}:22"
    assert any("hosts.yml:23: ansible_become=True ignored" in w for w in hosts["db1"].warnings)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.ini", "[web]\nweb1 ansible_port\n", r"bad.ini:2: expected key=value"),
        ("bad.ini", "[web\nweb1\n", r"bad.ini:1: section header"),
        ("bad.ini", "[web]\nweb1\n[web:vars]\nansible_port=http\n", r"bad.ini:4: ansible_port 'http' is not a port"),
        ("bad.ini", "[web:hosts]\n", r"bad.ini:1: unknown section kind :hosts"),
        ("bad.yml", "all:\n  hosts:\n    web1: [\n", r"bad.yml:\d+: not valid YAML"),
        ("bad.yml", "all:\n  hostz:\n    web1:\n", r"bad.yml:2: unexpected key 'hostz'"),
        ("bad.yml", "all:\n  hosts:\n    web1:\n      ansible_port: 99999\n", r"bad.yml:4: ansible_port 99999"),
    ],
)
def test_bad_ansible_files_name_file_and_line_and_import_nothing(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        import_ansible(write(tmp_path / name, text))


def test_imported_hosts_land_in_the_inventory_in_one_write(tmp_path: Path) -> None:
    inv = Inventory(tmp_path / "inventory.toml")
    result = import_ansible(write(tmp_path / "hosts.ini", ANSIBLE_INI))
    inv.add_many(result.hosts)
    again = Inventory(inv.path)
    assert [h.name for h in again.select("prod,!db")] == ["special.example.com", "web01", "web02", "web03"]
    assert again.get("db1").warnings == by_name(result.hosts)["db1"].warnings
    with pytest.raises(ConfigError, match="already exists"):
        inv.add_many(result.hosts)


def test_secrets_in_ansible_vars_never_become_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path / "hosts.yml",
        """
all:
  hosts:
    web1:
      db_password: hunter2
      api_token: abc123
      vault_thing: !vault |
        $ANSIBLE_VAULT;1.1;AES256
        6162636465
      zone: eu
""",
    )
    host = import_ansible(path).hosts[0]
    assert host.labels == {"zone": "eu"}
    text = "\n".join(host.warnings)
    assert "db_password looks like a secret; not imported" in text
    assert "api_token looks like a secret" in text
    assert "vault_thing (!vault) not imported" in text
    assert "hunter2" not in text and "abc123" not in text
