"""Remote Docker engines for real: ``docker+tcp://`` with mutual TLS on a second dockerd, and
``docker+ssh://`` through a real sshd to this machine's engine, with ModelDeck's host-key rules.

Also the small fixes that came with them: ``/version`` names the deployment inside containers,
``status`` says "starting" until Docker's own first health check passed, and one engine is one
catalog entry however its URL is spelled.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest
from modeldeck.core.cli import main
from modeldeck.core.errors import TargetError, UnknownHostKey
from modeldeck.core.targets.base import DeployOptions, open_target
from modeldeck.core.targets.health import load_example, request_json

from tests.fixtures.docker import ModelImages, free_port, run_unhealthy_container, start_dockerd, stop_dockerd
from tests.fixtures.docker_base import unmount_below
from tests.fixtures.sshd import SshHost

pytestmark = [pytest.mark.server, pytest.mark.slow]

IMAGE_TAG = "modeldeck-test/iris:v1"


# -- TLS material and a second engine listening on tcp://127.0.0.1 --------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    """``<name>-ca.pem`` / ``<name>-ca-key.pem``: a self-signed CA."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
             "-subj", f"/CN=ModelDeck test CA {name}", "-keyout", f"{name}-ca-key.pem", "-out", f"{name}-ca.pem",
             cwd=d)  # fmt: skip


def make_cert(d: Path, ca: str, name: str, *, server: bool) -> None:
    """``<name>-cert.pem`` / ``<name>-key.pem`` signed by CA ``ca`` (server: SAN 127.0.0.1; else clientAuth)."""
    ext = d / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        if server
        else "extendedKeyUsage=clientAuth\n"
    )
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}-ca.pem", "-CAkey", f"{ca}-ca-key.pem",
             "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}-cert.pem", cwd=d)  # fmt: skip


@dataclass(frozen=True)
class TlsEngine:
    """A dockerd on ``tcp://127.0.0.1:port`` that requires client certificates of ``certs/main-ca.pem``."""

    port: int
    socket: Path
    certs: Path  # main-ca.pem, client-{cert,key}.pem (good), rogue-{cert,key}.pem (another CA)

    @property
    def url(self) -> str:
        return f"docker+tcp://127.0.0.1:{self.port}"

    def tls(self, client: str = "client") -> dict[str, str]:
        return {
            "tls_ca": str(self.certs / "main-ca.pem"),
            "tls_cert": str(self.certs / f"{client}-cert.pem"),
            "tls_key": str(self.certs / f"{client}-key.pem"),
        }


@pytest.fixture(scope="module")
def tls_engine(docker_client: Any, model_images: ModelImages) -> Iterator[TlsEngine]:
    """A second engine (own data/exec root, socket and bridge, like the spare engine) with ``--tlsverify`` on
    a loopback TCP port, holding the v1 test image (``docker save | docker load``: no registry round trip)."""
    base = Path(tempfile.mkdtemp(prefix="md-dockerd-tls-", dir="/var/tmp"))
    certs = base / "certs"
    certs.mkdir()
    make_ca(certs, "main")
    make_ca(certs, "rogue")
    make_cert(certs, "main", "server", server=True)
    make_cert(certs, "main", "client", server=False)
    make_cert(certs, "rogue", "rogue", server=False)
    bridge = f"mdtls{uuid.uuid4().hex[:6]}"  # never `--bridge none`: that deletes the host's docker0
    for cmd in (
        ["ip", "link", "add", bridge, "type", "bridge"],
        ["ip", "addr", "add", "10.199.78.1/24", "dev", bridge],
        ["ip", "link", "set", bridge, "up"],
    ):
        subprocess.run(cmd, check=True, capture_output=True, timeout=30)
    port = free_port()
    socket = base / "docker.sock"
    proc = None
    try:
        proc = start_dockerd(
            socket_path=socket,
            data_root=base / "data",
            exec_root=base / "exec",
            log_path=base / "dockerd.log",
            extra=(
                "--bridge", bridge, "--iptables=false", "--ip-masq=false",
                "--host", f"tcp://127.0.0.1:{port}", "--tlsverify", "--tlscacert", str(certs / "main-ca.pem"),
                "--tlscert", str(certs / "server-cert.pem"), "--tlskey", str(certs / "server-key.pem"),
            ),
        )  # fmt: skip
        docker_client.images.get(model_images.ids["v1"]).tag(IMAGE_TAG)
        save = subprocess.Popen(["docker", "save", IMAGE_TAG], stdout=subprocess.PIPE)
        load = subprocess.run(
            ["docker", "-H", f"unix://{socket}", "load", "-q"], stdin=save.stdout, capture_output=True, timeout=180
        )
        assert save.stdout is not None
        save.stdout.close()
        assert save.wait(timeout=60) == 0 and load.returncode == 0, load.stderr
        yield TlsEngine(port, socket, certs)
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):
                import docker

                client = docker.DockerClient(base_url=f"unix://{socket}", timeout=30)
                for c in client.containers.list(all=True):
                    c.remove(force=True)
                client.close()
            stop_dockerd(proc)
        unmount_below(base)
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30, check=False)


def predict(port: int, bundle: Path) -> Any:
    answer = request_json(
        "POST", f"http://127.0.0.1:{port}/invocations", load_example(bundle, "input_example.json"), timeout=5
    )
    assert answer.status == 200, answer.text
    return answer.body


def test_tls_engine_deploys_serves_reports_and_undeploys(tls_engine: TlsEngine, model_images: ModelImages) -> None:
    target = open_target(tls_engine.url, **tls_engine.tls())
    try:
        port = free_port()
        result = target.deploy(
            model_images.bundles["v1"], DeployOptions(name="iris-tls", port=port, extra={"image": IMAGE_TAG})
        )
        assert result.outcome == "deployed", result.message
        assert len(predict(port, model_images.bundles["v1"])["predictions"]) == 2
        (status,) = target.status("iris-tls")
        assert status.target_url == tls_engine.url and status.endpoint == f"http://127.0.0.1:{port}"
        assert status.state in ("starting", "running") and status.model_version == "1"
        assert "supervisor" in target.logs("iris-tls")
        target.undeploy("iris-tls")
        assert target.status() == []
    finally:
        target.close()


@pytest.mark.parametrize(
    ("client", "what"),
    [("none", "no client certificate"), ("rogue", "a certificate from another CA"), ("plain", "no TLS at all")],
)
def test_tls_engine_refuses_a_client_without_a_valid_certificate_in_one_line(
    tls_engine: TlsEngine, client: str, what: str
) -> None:
    if client == "plain":
        kwargs: dict[str, str] = {}
    elif client == "none":
        kwargs = {"tls_ca": tls_engine.tls()["tls_ca"]}
    else:
        kwargs = tls_engine.tls("rogue")
    target = open_target(tls_engine.url, **kwargs)
    with pytest.raises(TargetError) as err:
        target.status()
    message = err.value.message
    assert "TLS" in message and tls_engine.url in message and "\n" not in message, (what, message)
    assert err.value.hint and "--tls" in err.value.hint
    assert "Traceback" not in err.value.one_line()
    assert ("certificate" if client != "plain" else "requires TLS") in message


def test_docker_cert_path_supplies_the_tls_material(
    tls_engine: TlsEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for src, dst in (("main-ca.pem", "ca.pem"), ("client-cert.pem", "cert.pem"), ("client-key.pem", "key.pem")):
        shutil.copy(tls_engine.certs / src, tmp_path / dst)
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    assert main(["status", "--target", tls_engine.url, "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    # explicit flags win over DOCKER_CERT_PATH: a rogue certificate is refused even with a good one there
    rogue = tls_engine.tls("rogue")
    code = main(["status", "--target", tls_engine.url, "--tls-ca", rogue["tls_ca"], "--tls-cert", rogue["tls_cert"],
                 "--tls-key", rogue["tls_key"]])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "TLS" in err and "Traceback" not in err


# -- docker+ssh:// through a real sshd to this machine's engine -------------------------------------------------
@pytest.fixture
def docker_ssh_host(sshd_factory: Any) -> SshHost:
    return sshd_factory()  # type: ignore[no-any-return]


def ssh_url(host: SshHost) -> str:
    return f"docker+ssh://{host.user}@{host.ip}:{host.port}"


def deployment_containers(docker_client: Any, name: str, role: str | None = None) -> list[Any]:
    labels = [f"io.modeldeck.deployment={name}"] + ([f"io.modeldeck.role={role}"] if role else [])
    return list(docker_client.containers.list(all=True, filters={"label": labels}))


def test_unknown_ssh_host_key_is_refused_with_its_fingerprint_before_anything_is_created(
    docker_ssh_host: SshHost, docker_client: Any, model_images: ModelImages, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"t{uuid.uuid4().hex[:6]}-iris-ssh"
    target = open_target(ssh_url(docker_ssh_host), identity=str(docker_ssh_host.client_key))
    options = DeployOptions(name=name, port=free_port(), extra={"image": model_images.ids["v1"]})
    with pytest.raises(UnknownHostKey) as err:
        target.deploy(model_images.bundles["v1"], options)
    assert err.value.fingerprint == docker_ssh_host.fingerprint
    assert docker_ssh_host.fingerprint in err.value.hint

    bundle = str(model_images.bundles["v1"])
    args = ["deploy", bundle, "--name", name, "--target", ssh_url(docker_ssh_host),
            "--identity", str(docker_ssh_host.client_key), "--image", model_images.ids["v1"]]  # fmt: skip
    assert main(args) == 1
    err_text = capsys.readouterr().err
    assert f"unknown host key for [{docker_ssh_host.ip}]:{docker_ssh_host.port}" in err_text
    assert docker_ssh_host.fingerprint in err_text and "Traceback" not in err_text
    assert main([*args, "--accept-host-key", "SHA256:AAAAnotthekeyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]) == 1
    assert "unknown host key" in capsys.readouterr().err
    assert deployment_containers(docker_client, name) == []  # refused before any call reached the engine


def test_docker_over_ssh_with_an_accepted_host_key_deploys_and_serves(
    docker_ssh_host: SshHost, docker_client: Any, model_images: ModelImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: the container's /version names the deployment, and status says "starting" until Docker's own
    first health check (every 10 s) has passed, then "running"."""
    name = f"t{uuid.uuid4().hex[:6]}-iris-ssh"
    port = free_port()
    url = ssh_url(docker_ssh_host)
    channels: list[str] = []
    open_session = paramiko.Transport.open_session

    def counted(self: paramiko.Transport, *args: Any, **kwargs: Any) -> Any:
        channels.append("session")
        return open_session(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.Transport, "open_session", counted)
    target = open_target(url, identity=str(docker_ssh_host.client_key), accept_host_key=docker_ssh_host.fingerprint)
    try:
        result = target.deploy(
            model_images.bundles["v1"], DeployOptions(name=name, port=port, extra={"image": model_images.ids["v1"]})
        )
        assert result.outcome == "deployed", result.message
        # kept-alive dial-stdio channels (a few: exec probes hijack theirs), not one per API path (~0.2 s each)
        assert len(channels) <= 4, len(channels)
        assert len(predict(port, model_images.bundles["v1"])["predictions"]) == 2
        version = request_json("GET", f"http://127.0.0.1:{port}/version", timeout=5).body
        assert version["deployment"] == name
        (container,) = deployment_containers(docker_client, name, role="runtime")
        container.reload()
        docker_before = container.attrs["State"]["Health"]["Status"]
        (status,) = target.status(name)
        container.reload()
        docker_after = container.attrs["State"]["Health"]["Status"]
        assert status.target_url == url and status.endpoint == f"http://127.0.0.1:{port}"  # a loopback host
        if docker_before == docker_after == "starting":  # Docker has not run its first check (~10 s after start)
            assert status.state == "starting"
            assert "Docker's first health check is still pending" in status.message
        deadline = time.monotonic() + 30
        while status.state == "starting" and time.monotonic() < deadline:
            time.sleep(0.5)
            (status,) = target.status(name)
        assert status.state == "running", status.message
    finally:
        with contextlib.suppress(Exception):
            target.undeploy(name)
        target.close()
    # the fingerprint is pinned: the next connection needs no flag, and the containers are gone
    again = open_target(url, identity=str(docker_ssh_host.client_key))
    try:
        assert [s.name for s in again.status() if s.name == name] == []
    finally:
        again.close()
    assert deployment_containers(docker_client, name) == []


def test_a_changed_host_key_is_refused_and_docker_watch_and_build_take_the_ssh_flags(
    docker_ssh_host: SshHost, model_images: ModelImages, capsys: pytest.CaptureFixture[str]
) -> None:
    url, key = ssh_url(docker_ssh_host), str(docker_ssh_host.client_key)
    build = ["build", str(model_images.bundles["v1"]), "--tag", "modeldeck-test/never:built", "--engine", url]
    assert main([*build, "--identity", key]) == 1  # refused before anything is built
    assert f"--accept-host-key {docker_ssh_host.fingerprint}" in capsys.readouterr().err
    watch = ["docker", "watch", "--target", url, "--identity", key, "--timeout", "1"]
    assert main(watch) == 1
    assert docker_ssh_host.fingerprint in capsys.readouterr().err
    assert main([*watch, "--accept-host-key", docker_ssh_host.fingerprint]) == 0  # pinned; one quiet second
    assert main(watch) == 0
    capsys.readouterr()
    docker_ssh_host.new_host_key()  # a re-installed server, or an impostor
    assert main(watch) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: HOST KEY CHANGED") and "Traceback" not in err


def test_a_health_watch_over_ssh_that_stops_early_reports_its_event_and_no_error(
    docker_ssh_host: SshHost, docker_client: Any, docker_base_image: str
) -> None:
    """docker-py's event stream cannot be cancelled over SSH (its close() raises DockerException): a watch that
    stopped after its event, with the stream still open, raised "Docker engine error" instead of returning."""
    from modeldeck.core.targets.docker.target import watch_health

    name = f"t{uuid.uuid4().hex[:6]}-sick-ssh"
    container = run_unhealthy_container(docker_client, docker_base_image, name)
    target = open_target(
        ssh_url(docker_ssh_host), identity=str(docker_ssh_host.client_key), accept_host_key=docker_ssh_host.fingerprint
    )
    try:
        events = watch_health(target, name=name, timeout_s=30, restart_unhealthy=False, stop_after=1)
        assert [(e.deployment, e.status, e.restarted) for e in events] == [(name, "unhealthy", False)]
        assert [s.name for s in target.status() if s.name == name] == []  # the connection still works after it
    finally:
        target.close()
        container.remove(force=True)


def test_a_host_without_a_usable_docker_cli_is_a_one_line_error(sshd_factory: Any) -> None:
    host: SshHost = sshd_factory(extra_config=["ForceCommand /bin/false"])  # every command fails, as without docker
    target = open_target(ssh_url(host), identity=str(host.client_key), accept_host_key=host.fingerprint)
    with pytest.raises(TargetError) as err:
        target.status()
    assert err.value.message.startswith(f"cannot reach the Docker engine at {ssh_url(host)}")
    assert "\n" not in err.value.message and "docker system dial-stdio" in (err.value.hint or "")


# -- one engine, one catalog entry ------------------------------------------------------------------------------
def test_the_local_engine_is_one_catalog_entry_however_it_is_spelled(tmp_path: Path) -> None:
    from modeldeck.core.targets import catalog

    for url in ("docker:///var/run/docker.sock", "unix:///var/run/docker.sock", "docker://", "docker:///"):
        catalog.remember(url, config_dir=tmp_path)
    catalog.remember("docker+tcp://127.0.0.1:2376/", config_dir=tmp_path)
    catalog.remember("docker+tcp://127.0.0.1:2376", config_dir=tmp_path)
    catalog.remember("docker:///run/user/1000/docker.sock", config_dir=tmp_path)
    urls = [t.url for t in catalog.known_targets(config_dir=tmp_path) if t.kind == "docker"]
    assert urls == ["docker://", "docker+tcp://127.0.0.1:2376", "docker:///run/user/1000/docker.sock"]
    # an older file with two spellings of the default socket is listed once too
    (tmp_path / catalog.CATALOG_NAME).write_text(
        '[[targets]]\nurl = "docker:///var/run/docker.sock"\n[[targets]]\nurl = "docker://"\n'
    )
    assert [t.url for t in catalog.known_targets(config_dir=tmp_path) if t.kind == "docker"] == ["docker://"]
    assert catalog.forget("unix:///var/run/docker.sock", config_dir=tmp_path)
    assert [t.url for t in catalog.known_targets(config_dir=tmp_path) if t.kind == "docker"] == []


def test_runtime_takes_its_deployment_name_from_the_flag_or_the_container_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Containers set MODELDECK_DEPLOYMENT (not a flag), so images of older runtimes still start."""
    import argparse

    from modeldeck.core.runtime.__main__ import add_serve_arguments, config_from_args

    def config(*argv: str) -> Any:
        parser = argparse.ArgumentParser()
        add_serve_arguments(parser)
        return config_from_args(parser.parse_args(["bundle", *argv]))

    monkeypatch.delenv("MODELDECK_DEPLOYMENT", raising=False)
    assert config().deployment_name == ""
    assert config("--deployment", "iris-a").deployment_name == "iris-a"
    monkeypatch.setenv("MODELDECK_DEPLOYMENT", "iris-b")
    assert config().deployment_name == "iris-b"
    assert config("--deployment", "iris-a").deployment_name == "iris-a"
