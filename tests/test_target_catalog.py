"""The target catalog: which targets ModelDeck lists, what it stores about them, and listing them all at once
without one silent target holding up the others."""

from __future__ import annotations

import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from modeldeck.core.errors import ConfigError, TargetError
from modeldeck.core.settings import config_dir
from modeldeck.core.targets import catalog
from modeldeck.core.targets.base import DeploymentStatus, DeployOptions
from modeldeck.core.targets.local import free_port


def test_only_the_local_target_is_known_at_first() -> None:
    assert [(t.url, t.source, t.kind) for t in catalog.known_targets()] == [("local://", "local", "local")]
    assert not catalog.catalog_path().exists()


def test_remembered_targets_are_listed_after_local_and_survive_a_restart() -> None:
    catalog.remember("docker://")
    catalog.remember("ssh://deploy@10.0.0.7:22/srv/modeldeck")
    catalog.remember("docker://")  # again: moves to the end, not duplicated
    urls = [t.url for t in catalog.known_targets()]
    assert urls == ["local://", "ssh://deploy@10.0.0.7:22/srv/modeldeck", "docker://"]
    stored = tomllib.loads((config_dir() / "targets.toml").read_text(encoding="utf-8"))
    assert [t["url"] for t in stored["targets"]] == urls[1:]
    assert all(t["last_deployed"].endswith("Z") for t in stored["targets"])


def test_the_local_target_is_never_stored() -> None:
    assert catalog.remember("local://127.0.0.1:8080") is None
    assert not catalog.catalog_path().exists()


def test_passwords_and_secret_parameters_are_never_written() -> None:
    stored = catalog.remember("ssh://deploy:hunter2@10.0.0.7/srv?password=hunter2&key_passphrase=x&port_hint=1")
    assert stored == "ssh://deploy@10.0.0.7/srv?port_hint=1"
    tls = catalog.remember("docker+tcp://10.0.0.5:2376?tls_ca=/etc/ca.pem&tls_cert=/etc/cert.pem&token=abc")
    assert tls == "docker+tcp://10.0.0.5:2376?tls_ca=%2Fetc%2Fca.pem&tls_cert=%2Fetc%2Fcert.pem"
    text = catalog.catalog_path().read_text(encoding="utf-8")
    assert "hunter2" not in text and "abc" not in text and "key_passphrase" not in text


def test_forget_removes_a_target_and_reports_whether_it_was_known() -> None:
    catalog.remember("docker://")
    assert catalog.forget("docker://")
    assert not catalog.forget("docker://")
    assert [t.url for t in catalog.known_targets()] == ["local://"]


def test_a_url_without_a_scheme_is_a_one_line_error() -> None:
    with pytest.raises(TargetError, match="not a target URL"):
        catalog.remember("10.0.0.7")


def test_concurrent_remembers_keep_every_target_and_a_readable_file() -> None:
    urls = [f"docker+tcp://10.0.0.{i}:2376" for i in range(16)]
    threads = [threading.Thread(target=catalog.remember, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(t.url for t in catalog.known_targets()[1:]) == sorted(urls)
    assert not list(catalog.catalog_path().parent.glob(".targets-*"))  # no temp file left


def test_a_corrupt_catalog_is_a_config_error_naming_the_file() -> None:
    path = catalog.catalog_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("targets = [ oops", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"targets\.toml") as info:
        catalog.known_targets()
    assert info.value.hint == "fix or delete the file"


# -- listing every target --------------------------------------------------------------------------


class SilentHostTarget:
    """A target whose status() waits (30 s socket timeout) on a host that accepts and never answers."""

    kind = "ssh"

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"ssh://nobody@127.0.0.1:{port}/srv"

    def status(self, name: str | None = None) -> list[DeploymentStatus]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
            conn.recv(1)  # blocks: the listener never writes
        return []


@pytest.fixture
def silent_listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.server
@pytest.mark.slow
def test_status_all_lists_real_deployments_beside_unreachable_targets(
    local_target, deploy_bundles: dict[str, Path], silent_listener: int
) -> None:
    local_target.deploy(deploy_bundles["v1"], DeployOptions(name="flowers", port=free_port()))
    bad_url = f"nonsense+tcp://127.0.0.1:{closed_port()}"
    silent = SilentHostTarget(silent_listener)

    t0 = time.monotonic()
    listings = catalog.status_all([local_target, silent, bad_url], timeout=2.0)
    elapsed = time.monotonic() - t0

    assert elapsed < 6.0  # bounded by the timeout, not by the silent host's 30 s
    local, hung, bad = listings
    assert local.reachable and local.kind == "local"
    assert [(s.name, s.state) for s in local.statuses] == [("flowers", "running")]
    assert not hung.reachable and hung.url == silent.url and hung.error == "no answer within 2 s"
    assert not bad.reachable and "unsupported target" in bad.error


def test_status_all_of_nothing_is_empty() -> None:
    assert catalog.status_all([]) == []


def test_status_all_opens_urls_inside_the_pool_and_reports_open_errors_per_target(tmp_path: Path) -> None:
    listings = catalog.status_all(
        ["local://", "ssh://"], opener=lambda u: catalog.open_known(u, deployments_dir=tmp_path / "d")
    )
    assert listings[0].reachable and listings[0].statuses == ()
    assert not listings[1].reachable and listings[1].kind == "ssh"


def test_inventory_hosts_are_listed_and_an_unreachable_one_is_a_row_with_its_reason() -> None:
    from modeldeck.core.inventory.hosts import Host, Inventory

    port = closed_port()
    Inventory.for_config_dir(config_dir()).add(Host(name="edge-1", hostname="127.0.0.1", port=port, user="deploy"))
    url = catalog.known_targets()[1].url
    assert url.startswith(f"ssh://deploy@127.0.0.1:{port}/")
    catalog.remember(url)  # the same host, deployed to by URL: still listed once, as the inventory host
    known = catalog.known_targets()
    assert [(t.source, t.host) for t in known] == [("local", None), ("inventory", "edge-1")]

    t0 = time.monotonic()
    [listing] = catalog.status_all([url], timeout=20, opener=lambda u: catalog.open_known(u, host="edge-1"))
    assert time.monotonic() - t0 < 20
    assert not listing.reachable and listing.kind == "ssh"
    assert "127.0.0.1" in listing.error


@pytest.mark.server
@pytest.mark.slow
def test_status_all_lists_a_real_ssh_host_beside_local_and_a_refusing_one(
    local_target, ssh_target, ssh_deploy_host, deploy_bundles: dict[str, Path]
) -> None:
    local_target.deploy(deploy_bundles["v1"], DeployOptions(name="flowers", port=free_port()))
    options = DeployOptions(name="iris", host=ssh_deploy_host.ip, port=free_port(ssh_deploy_host.ip))
    remote = ssh_target.deploy(deploy_bundles["v2"], options)
    assert remote.ok, remote.message
    refused = f"ssh://deploy@127.0.0.1:{closed_port()}/srv/modeldeck"

    local, ssh, gone = catalog.status_all([local_target, ssh_target, refused], timeout=30.0)

    assert [(s.name, s.state) for s in local.statuses] == [("flowers", "running")]
    assert ssh.reachable and ssh.kind == "ssh" and ssh.url == ssh_target.url
    assert [(s.name, s.state, s.model_version) for s in ssh.statuses] == [("iris", "running", "2")]
    assert not gone.reachable and gone.kind == "ssh" and "127.0.0.1" in gone.error
