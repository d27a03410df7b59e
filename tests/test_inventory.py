"""The host inventory file: round trips, selectors, broken files, effective settings with their origins."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modeldeck.core.errors import ConfigError
from modeldeck.core.inventory.hosts import Host, Inventory, resolve


def no_password(_: str) -> None:
    return None


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    inv = Inventory(tmp_path / "inventory.toml")
    inv.add_many(
        [
            Host("bastion", "bastion.example.com", user="jump", groups=("infra",)),
            Host("web1", "10.0.0.11", port=2222, user="deploy", groups=("web", "prod"), labels={"gpu": "a100"}),
            Host("web2", "10.0.0.12", groups=("web",), labels={"gpu": "t4"}, proxy_jump="bastion"),
            Host("db1", "10.0.0.21", groups=("db", "prod"), deploy_root="/srv/models"),
        ]
    )
    return inv


def test_hosts_survive_a_round_trip_through_the_file(inventory: Inventory) -> None:
    again = Inventory(inventory.path)
    assert again.hosts == inventory.hosts
    assert again.get("web1").labels == {"gpu": "a100"}
    assert again.get("web1").port == 2222
    assert again.get("db1").deploy_root == "/srv/models"


def test_selectors_union_groups_labels_names_and_exclusions(inventory: Inventory) -> None:
    names = lambda expr: [h.name for h in inventory.select(expr)]  # noqa: E731
    assert names("web") == ["web1", "web2"]
    assert names("prod") == ["db1", "web1"]
    assert names("gpu=t4") == ["web2"]
    assert names("web,db1") == ["web1", "web2", "db1"]
    assert names("all") == ["bastion", "db1", "web1", "web2"]
    assert names("all,!prod") == ["bastion", "web2"]
    assert names("bastion") == ["bastion"]


def test_unknown_group_is_a_one_line_error_listing_what_exists(inventory: Inventory) -> None:
    with pytest.raises(ConfigError, match="unknown host or group 'webs'") as info:
        inventory.select("webs")
    assert "groups: db, infra, prod, web" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="no host has the label gpu=h100"):
        inventory.select("gpu=h100")
    with pytest.raises(ConfigError, match="selects no host"):
        inventory.select("web,!web")


def test_duplicate_add_is_refused_and_replace_overwrites(inventory: Inventory) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        inventory.add(Host("web1", "10.9.9.9"))
    inventory.add(Host("web1", "10.9.9.9"), replace_existing=True)
    assert Inventory(inventory.path).get("web1").hostname == "10.9.9.9"


@pytest.mark.parametrize(
    ("host", "message"),
    [
        (Host("x", ""), "address"),
        (Host("x", "h", port=70000), "port 70000"),
        (Host("bad name", "h"), "host name 'bad name'"),
        (Host("all", "h"), "reserved"),
        (Host("x", "h", proxy_jump="nosuchhost"), "not a host in the inventory"),
        (Host("x", "h", proxy_jump="x"), "its own proxy jump"),
        (Host("x", "h", deploy_root="relative/dir"), "absolute"),
        (Host("x", "h", groups=("bad group",)), "group name"),
    ],
)
def test_invalid_hosts_are_refused_before_anything_is_written(inventory: Inventory, host: Host, message: str) -> None:
    before = inventory.path.read_text()
    with pytest.raises(ConfigError, match=message):
        inventory.add(host)
    assert inventory.path.read_text() == before


def test_a_batch_with_one_bad_host_adds_none(inventory: Inventory) -> None:
    with pytest.raises(ConfigError):
        inventory.add_many([Host("ok1", "10.1.1.1"), Host("bad", "h", port=0)])
    assert "ok1" not in Inventory(inventory.path)


def test_jump_loops_are_refused(inventory: Inventory) -> None:
    with pytest.raises(ConfigError, match="proxy jump loop"):
        inventory.update("bastion", proxy_jump="web2")


def test_removing_a_jump_host_in_use_is_refused(inventory: Inventory) -> None:
    with pytest.raises(ConfigError, match="web2 jump through 'bastion'"):
        inventory.remove("bastion")
    inventory.remove("web1")
    assert "web1" not in Inventory(inventory.path)


def test_broken_file_is_an_error_with_line_and_column_and_nothing_is_lost(inventory: Inventory) -> None:
    inventory.add(Host("web3", "10.0.0.13"))  # leaves a .bak of the previous good version
    good = inventory.path.read_text()
    broken = good.replace('hostname = "10.0.0.13"', 'hostname = "10.0.0.13')
    inventory.path.write_text(broken)
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line \d+, column \d+") as info:
        Inventory(inventory.path)
    assert "inventory.toml.bak" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="not valid TOML"):
        inventory.add(Host("web4", "10.0.0.14"))
    assert inventory.path.read_text() == broken  # the user's edit is not overwritten
    assert "web1" in Inventory(inventory.backup_path)


def test_wrong_types_in_the_file_name_the_host_and_key(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text('[hosts.web1]\nhostname = "h"\nport = "22"\n')
    with pytest.raises(ConfigError, match="host 'web1': port must be an integer"):
        Inventory(path)
    path.write_text('[hosts.web1]\nhostname = "h"\npasword = "x"\n')
    with pytest.raises(ConfigError, match="unknown keys pasword"):
        Inventory(path)


def test_resolve_shows_each_value_and_where_it_came_from(inventory: Inventory) -> None:
    r = resolve(inventory, "web1", password_lookup=no_password)
    rows = {name: (s.text(), s.source) for name, s in r.settings()}
    assert rows["HostName"] == ("10.0.0.11", "inventory")
    assert rows["Port"] == ("2222", "inventory")
    assert rows["User"] == ("deploy", "inventory")
    assert rows["IdentityFile"][1].startswith("default")
    assert rows["ProxyJump"] == ("-", "none (direct)")
    assert rows["Password"][1].startswith("none")
    d = resolve(inventory, "db1", password_lookup=no_password)
    assert (d.port.value, d.port.source) == (22, "default")
    assert (d.user.value, d.user.source) == (getpass.getuser(), "default (local user name)")


def test_proxy_jump_chains_become_endpoint_chains(inventory: Inventory) -> None:
    inventory.add(Host("inner", "10.1.0.5", proxy_jump="web2,ops@10.0.0.99:2200"))
    ep = resolve(inventory, "inner", password_lookup=no_password).endpoint
    assert ep.host == "10.1.0.5"
    assert (ep.proxy_jump.host, ep.proxy_jump.port, ep.proxy_jump.user) == ("10.0.0.99", 2200, "ops")
    web2 = ep.proxy_jump.proxy_jump
    assert web2.host == "10.0.0.12"
    assert web2.proxy_jump.host == "bastion.example.com"  # web2's own jump is kept
    assert web2.proxy_jump.user == "jump"
    assert web2.proxy_jump.proxy_jump is None


def test_keyring_password_is_used_but_never_shown(inventory: Inventory) -> None:
    r = resolve(inventory, "web1", password_lookup=lambda name: "hunter2" if name == "web1" else None)
    assert r.endpoint.password == "hunter2"
    assert (r.password.value, r.password.source) == (True, "OS keyring")
    assert "hunter2" not in repr(r.endpoint)


def test_update_changes_fields_and_can_rename(inventory: Inventory) -> None:
    inventory.update("db1", port=2201)
    inventory.update("db1", name="db-primary", user="postgres")
    again = Inventory(inventory.path)
    assert "db1" not in again
    assert (again.get("db-primary").port, again.get("db-primary").user) == (2201, "postgres")
    with pytest.raises(ConfigError, match="already exists"):
        inventory.update("db-primary", name="web1")


_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True).filter(lambda n: n != "all")
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@st.composite
def _hosts(draw: st.DrawFn) -> Host:
    return Host(
        name=draw(_names),
        hostname=draw(st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,30}", fullmatch=True)),
        port=draw(st.none() | st.integers(1, 65535)),
        user=draw(st.none() | st.from_regex(r"[a-z_][a-z0-9_\-]{0,15}", fullmatch=True)),
        identity_files=tuple(draw(st.lists(_text.filter(bool), max_size=2))),
        deploy_root=draw(st.none() | st.just("/srv/") | _text.map(lambda t: "/" + t)),
        groups=tuple(draw(st.lists(_names, max_size=3, unique=True))),
        labels=draw(st.dictionaries(_names, _text, max_size=3)),
        source=draw(st.sampled_from(["manual", "ansible:/tmp/x.ini", "ssh_config:~/.ssh/config"])),
        origins=draw(st.dictionaries(st.sampled_from(["hostname", "port", "user"]), _text, max_size=2)),
        warnings=tuple(draw(st.lists(_text, max_size=2))),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hosts=st.lists(_hosts(), max_size=6, unique_by=lambda h: h.name))
def test_any_valid_host_survives_the_file_unchanged(tmp_path: Path, hosts: list[Host]) -> None:
    path = tmp_path / "inventory.toml"
    path.unlink(missing_ok=True)
    Inventory(path).add_many(hosts)
    assert Inventory(path).hosts == sorted(hosts, key=lambda h: h.name)
