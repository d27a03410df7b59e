"""Reaching a Docker engine: target URLs, TLS material, docker contexts, and error mapping.

Target URLs:

* ``docker://`` -- the local engine, from ``DOCKER_HOST`` or the default socket;
  ``docker:///path/to/docker.sock`` names a socket explicitly;
* ``docker+ssh://USER@HOST[:PORT]`` -- a remote engine through SSH: ModelDeck's own paramiko
  connection (same host-key rules as ``ssh://`` targets: the user's ``known_hosts`` plus ModelDeck's
  pins, an unknown key refused with its fingerprint unless accepted with ``accept_host_key``; an
  optional ``identity`` file) runs ``docker system dial-stdio`` on the host for each HTTP connection;
* ``docker+tcp://HOST:PORT`` -- a remote engine over TCP with TLS material from the
  arguments (``tls_ca``/``tls_cert``/``tls_key``) or ``DOCKER_CERT_PATH``.

Every client has a finite timeout (docker-py applies it to every HTTP call, and adds a
container's stop timeout to ``stop``). Every docker-py / requests exception is turned
into a :class:`TargetError` or :class:`DeployError` with a hint by :func:`engine_error`,
so callers never see a library exception.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modeldeck.core.errors import DeployError, ModelDeckError, TargetError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_SOCKET = "unix:///var/run/docker.sock"


@dataclass(frozen=True)
class EngineSpec:
    """Where the engine is and how to talk to it (parsed from a target URL; nothing is contacted)."""

    url: str  # the target URL as the user wrote it (normalised)
    base_url: str  # what docker-py gets: unix://…, ssh://…, tcp://…
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    identity: Path | None = None  # docker+ssh: private key file (default: ssh-agent and ~/.ssh keys)
    accept_host_key: str | None = None  # docker+ssh: pin an unknown host key with exactly this fingerprint

    @property
    def is_local(self) -> bool:
        """True if the engine runs on this machine (its host network is our 127.0.0.1)."""
        if self.base_url.startswith(("unix://", "npipe://")):
            return True
        host = urlsplit(self.base_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def normalise_engine_url(url: str) -> str:
    """One spelling per engine, so a catalog lists it once: ``docker:///var/run/docker.sock`` and
    ``unix:///var/run/docker.sock`` are ``docker://`` (the default socket); other sockets are
    ``docker:///path``; ``ssh://``/``tcp://`` engine addresses get their ``docker+`` prefix. Text that
    is not an engine URL is returned unchanged (stripped of a trailing slash on remote engines)."""
    url = url.strip()
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        return "docker://" if path in ("", "/var/run/docker.sock", "/run/docker.sock") else f"docker://{path}"
    if url.startswith(("ssh://", "tcp://")):
        url = "docker+" + url
    if url.startswith("docker://"):
        path = url[len("docker://") :]
        if path in ("", "/", "/var/run/docker.sock", "/run/docker.sock"):
            return "docker://"
        return url
    if url.startswith(("docker+ssh://", "docker+tcp://")):
        return url.rstrip("/")
    return url


def parse_engine_url(
    url: str,
    *,
    tls_ca: str | Path | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    identity: str | Path | None = None,
    accept_host_key: str | None = None,
) -> EngineSpec:
    """Parse a ``docker://``, ``docker+ssh://`` or ``docker+tcp://`` URL; raises :class:`TargetError`.

    ``identity``/``accept_host_key`` only apply to ``docker+ssh://``, TLS files only to ``docker+tcp://``.
    """
    if (identity or accept_host_key) and not url.startswith("docker+ssh://"):
        raise TargetError("--identity/--accept-host-key only apply to ssh:// and docker+ssh:// targets")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise TargetError(f"not a docker target URL: {url!r}", hint="use docker://, docker+ssh://USER@HOST or "
                          "docker+tcp://HOST:PORT")  # fmt: skip
    rest = rest.rstrip("/") if scheme != "docker" else rest
    if scheme == "docker":
        if rest in ("", "/"):
            return EngineSpec("docker://", os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET)
        if rest.startswith("/"):
            return EngineSpec(f"docker://{rest}", f"unix://{rest}")
        raise TargetError(
            f"invalid docker target {url!r}",
            hint="docker:// uses the local engine; use docker+ssh://USER@HOST or docker+tcp://HOST:PORT for others",
        )
    if scheme == "docker+ssh":
        parts = urlsplit(f"ssh://{rest}")
        if not parts.hostname:
            raise TargetError(f"no host in docker target {url!r}", hint="use docker+ssh://USER@HOST")
        try:
            parts.port  # noqa: B018 -- validates it
        except ValueError:
            raise TargetError(f"invalid port in docker target {url!r}", hint="e.g. docker+ssh://USER@HOST:22") from None
        key = Path(identity).expanduser() if identity else None
        if key is not None and not key.is_file():
            raise TargetError(f"identity file {key} does not exist")
        return EngineSpec(f"docker+ssh://{rest}", f"ssh://{rest}", identity=key, accept_host_key=accept_host_key)
    if scheme == "docker+tcp":
        parts = urlsplit(f"tcp://{rest}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise TargetError(f"docker target {url!r} needs HOST:PORT", hint="e.g. docker+tcp://10.0.0.5:2376")
        cert_path = os.environ.get("DOCKER_CERT_PATH")
        if cert_path and not (tls_ca or tls_cert or tls_key):
            base = Path(cert_path)
            tls_ca, tls_cert, tls_key = base / "ca.pem", base / "cert.pem", base / "key.pem"
        spec = EngineSpec(
            f"docker+tcp://{rest}",
            f"tcp://{rest}",
            Path(tls_ca) if tls_ca else None,
            Path(tls_cert) if tls_cert else None,
            Path(tls_key) if tls_key else None,
        )
        for what, path in (("CA", spec.tls_ca), ("certificate", spec.tls_cert), ("key", spec.tls_key)):
            if path is not None and not path.is_file():
                raise TargetError(f"TLS {what} file {path} does not exist")
        if (spec.tls_cert is None) != (spec.tls_key is None):
            raise TargetError("TLS needs both --tls-cert and --tls-key")
        return spec
    raise TargetError(
        f"unsupported docker target scheme {scheme!r}", hint="use docker://, docker+ssh:// or docker+tcp://"
    )


def connect(spec: EngineSpec, *, timeout: float = DEFAULT_TIMEOUT_S, check: bool = True) -> Any:
    """A ``docker.DockerClient`` for ``spec`` with ``timeout`` on every call; pings it when ``check``.

    Raises :class:`TargetError` (engine down, permission denied, not a socket, TLS failure).
    """
    import docker
    from docker.tls import TLSConfig

    tls: Any = None
    if spec.tls_ca or spec.tls_cert:
        client_cert = (str(spec.tls_cert), str(spec.tls_key)) if spec.tls_cert and spec.tls_key else None
        tls = TLSConfig(
            client_cert=client_cert, ca_cert=str(spec.tls_ca) if spec.tls_ca else None, verify=bool(spec.tls_ca)
        )
    kwargs: dict[str, Any] = {"base_url": spec.base_url, "timeout": int(max(1, round(timeout))), "tls": tls}
    if spec.base_url.startswith("ssh://"):
        return _connect_ssh(spec, kwargs, check=check)
    socket_path = spec.base_url[len("unix://") :] if spec.base_url.startswith("unix://") else None
    if socket_path is not None:
        _check_socket_path(spec, Path(socket_path))
    try:
        if tls is None:
            client = docker.DockerClient(**kwargs)
        else:
            # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override the session's CA file, so the engine's
            # own CA would be ignored wherever those are set: no environment for TLS engines (the API version
            # is asked for only after that).
            from docker.constants import DEFAULT_DOCKER_API_VERSION

            client = docker.DockerClient(**kwargs, version=DEFAULT_DOCKER_API_VERSION)
            client.api.trust_env = False
            client.api._version = client.api._retrieve_server_version()
        if check:
            client.ping()
    except Exception as exc:  # docker-py raises DockerException, requests' and OS errors: all mean the same here
        raise engine_error(exc, spec=spec) from exc
    return client


def _connect_ssh(spec: EngineSpec, kwargs: dict[str, Any], *, check: bool) -> Any:
    """A client whose HTTP connections are ``docker system dial-stdio`` channels of one verified SSH connection.

    docker-py's own SSH transports either shell out to ``ssh`` with whatever the user's config says
    about unknown host keys, or use paramiko with only ``~/.ssh/known_hosts``; neither knows ModelDeck's
    pins, ``--accept-host-key`` or ``--identity``. So the connection is opened here, exactly as for
    ``ssh://`` targets, before any request reaches the engine, and handed to docker-py's adapter.
    """
    import docker
    from docker.constants import DEFAULT_DOCKER_API_VERSION
    from modeldeck.core.inventory.known_hosts import KnownHosts
    from modeldeck.core.settings import config_dir
    from modeldeck.core.targets.ssh.connection import SshConnection, SshEndpoint

    parts = urlsplit(spec.base_url)
    endpoint = SshEndpoint(
        parts.hostname or "",
        parts.port or 22,
        parts.username,
        identity_files=(spec.identity,) if spec.identity else (),
        connect_timeout_s=min(10.0, float(kwargs["timeout"])),
    )
    known = KnownHosts(config_dir() / "known_hosts")
    conn = SshConnection.open(endpoint, known, accept_fingerprint=spec.accept_host_key)  # ModelDeck errors only
    try:
        # An explicit API version: "auto" would ask the engine through docker-py's own transport first.
        client = docker.DockerClient(
            base_url=spec.base_url, timeout=kwargs["timeout"], use_ssh_client=True, version=DEFAULT_DOCKER_API_VERSION
        )
        adapter = _verified_ssh_adapter(conn, spec.base_url, timeout=kwargs["timeout"])
        client.api._custom_adapter = adapter
        client.api.mount("http+docker://ssh", adapter)
        client.api._version = client.api._retrieve_server_version()
        if check:
            client.ping()
    except ModelDeckError:
        conn.close()
        raise
    except Exception as exc:  # docker-py/paramiko/OS errors: one mapped error
        conn.close()
        raise engine_error(exc, spec=spec) from exc
    return client


def _verified_adapter_class() -> type:
    from docker.transport.sshconn import SSHHTTPAdapter

    class VerifiedSshAdapter(SSHHTTPAdapter):  # type: ignore[misc]
        """docker-py's SSH adapter over an already verified, authenticated ModelDeck connection."""

        def __init__(self, conn: Any, base_url: str, timeout: int) -> None:
            super().__init__(base_url, timeout=timeout, shell_out=True)  # shell_out: do not connect by itself
            self._conn = conn
            self.ssh_client = conn.client

        def get_connection(self, url: str, proxies: Any = None) -> Any:
            # docker-py keys its pools by the full request URL, so each new API path (every container's
            # /json, every exec) opened a channel and a `docker system dial-stdio` (~0.2 s each) and pools
            # beyond the ninth were closed again. One engine, one pool of kept-alive channels.
            from docker.transport.sshconn import SSHConnectionPool

            transport = self.ssh_client.get_transport()
            if transport is None or not transport.is_active():
                self._connect()
            with self.pools.lock:
                pool = self.pools.get("engine")
                if pool is None:
                    pool = SSHConnectionPool(
                        ssh_client=self.ssh_client, timeout=self.timeout, maxsize=self.max_pool_size, host=self.ssh_host
                    )
                    self.pools["engine"] = pool
            return pool

        def _connect(self) -> None:
            raise TargetError(
                f"the SSH connection to {self._conn.endpoint.label} was lost", hint="retry; check the host and network"
            )

        def close(self) -> None:
            super().close()  # closes ssh_client, i.e. the connection's client
            self._conn.close()

    return VerifiedSshAdapter


def _verified_ssh_adapter(conn: Any, base_url: str, *, timeout: int) -> Any:
    return _verified_adapter_class()(conn, base_url, timeout)


def _check_socket_path(spec: EngineSpec, path: Path) -> None:
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise TargetError(
            f"the Docker engine at {spec.url} is not running (no socket {path})",
            hint="start it (`systemctl start docker` or `dockerd`), or set DOCKER_HOST",
        ) from None
    except PermissionError:
        raise _permission_denied(spec, path) from None
    if not stat.S_ISSOCK(mode):
        raise TargetError(f"{path} is not a socket, so no Docker engine listens there", hint="check DOCKER_HOST")
    if not os.access(path, os.R_OK | os.W_OK):
        raise _permission_denied(spec, path)


def _permission_denied(spec: EngineSpec, path: Path | None) -> TargetError:
    where = str(path) if path else spec.url
    return TargetError(
        f"permission denied on the Docker socket {where}",
        hint="add your user to the 'docker' group (then log in again), or use rootless Docker",
    )


def engine_error(exc: BaseException, *, spec: EngineSpec | None = None, what: str = "") -> ModelDeckError:
    """One actionable error for a docker-py/requests/OS exception (``what`` says what we were doing)."""
    import docker.errors
    import requests

    if isinstance(exc, ModelDeckError):
        return exc
    where = spec.url if spec else "the Docker engine"
    doing = f"{what}: " if what else ""
    text = _explain(exc)
    low = text.lower()
    if isinstance(exc, PermissionError) or "permission denied" in low:
        return _permission_denied(spec, None) if spec else TargetError(f"{doing}permission denied: {text}")
    tls_problem = _tls_problem(exc, low)
    if tls_problem:
        return TargetError(
            f"{doing}TLS with the Docker engine at {where} failed: {tls_problem}",
            hint="give the engine's CA and a client certificate it trusts: --tls-ca, --tls-cert, --tls-key "
            "(or DOCKER_CERT_PATH with ca.pem, cert.pem, key.pem)",
        )
    if isinstance(exc, docker.errors.ImageNotFound):
        return DeployError(f"{doing}image not found: {text}", hint="build it with `modeldeck build`, or check the tag")
    if isinstance(exc, docker.errors.NotFound):
        return DeployError(f"{doing}{text}")
    if isinstance(exc, docker.errors.APIError):
        if "address already in use" in low or "port is already allocated" in low:
            return DeployError(f"{doing}the port is already in use: {text}", hint="pick another --port")
        if "pull access denied" in low or "manifest unknown" in low or ("not found" in low and "pull" in low):
            return DeployError(f"{doing}cannot pull the image: {text}", hint="check the name, tag and registry login")
        return DeployError(f"{doing}the Docker engine refused: {text}")
    timeouts = (requests.exceptions.Timeout, TimeoutError)
    if isinstance(exc, timeouts) or "timed out" in low:
        return TargetError(
            f"{doing}the Docker engine at {where} did not answer in time",
            hint="it may be overloaded or stuck; check `docker info` there",
        )
    if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError, docker.errors.DockerException, OSError)):
        over_ssh = spec is not None and spec.base_url.startswith("ssh://")
        return TargetError(
            f"{doing}cannot reach the Docker engine at {where}: {_short(text)}",
            hint="the host needs the `docker` CLI (ModelDeck runs `docker system dial-stdio` there) and a running "
            "engine the SSH user may use"
            if over_ssh
            else "is dockerd running? (`systemctl start docker`); for remote engines check the URL and TLS/SSH setup",
        )
    return TargetError(f"{doing}Docker engine error: {_short(text)}")


def _tls_problem(exc: BaseException, low: str) -> str:
    """What went wrong in a TLS handshake, in the user's terms ("" if ``exc`` is not about TLS)."""
    import ssl

    import requests

    if "client sent an http request to an https server" in low:
        return "the engine requires TLS and no TLS material was given"
    if not (isinstance(exc, (requests.exceptions.SSLError, ssl.SSLError)) or "ssl" in low):
        return ""
    if "certificate_verify_failed" in low or "certificate verify failed" in low:
        return "the engine's certificate is not signed by the given CA (or does not name this host)"
    if "certificate required" in low or "bad certificate" in low or "unknown ca" in low:
        return "the engine refused the client certificate (none given, or not signed by a CA it trusts)"
    if "eof occurred in violation of protocol" in low or "unexpected eof" in low:
        # TLS 1.3: a server that rejects the client certificate just closes the connection
        return "the engine closed the connection in the handshake (it probably refused the client certificate)"
    if "wrong version number" in low or "record layer failure" in low:
        return "the engine does not speak TLS on this port"
    return _short(low[max(0, low.find("ssl")) :])


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc) or exc.__class__.__name__


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class DockerContext:
    """One ``docker context`` (``~/.docker/contexts/meta/*/meta.json``), as a target URL to choose from."""

    name: str
    description: str
    host: str  # the endpoint's Host: unix://…, ssh://…, tcp://…
    target_url: str
    current: bool = False


def list_contexts(docker_config: Path | None = None) -> list[DockerContext]:
    """The docker CLI's contexts (plus ``default``), each with the ModelDeck target URL that reaches it.

    Reads the files the docker CLI writes; needs no engine. Unreadable entries are skipped (logged).
    """
    base = Path(docker_config or os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    current = "default"
    with contextlib.suppress(OSError, ValueError):
        current = json.loads((base / "config.json").read_text(encoding="utf-8")).get("currentContext") or "default"
    current = os.environ.get("DOCKER_CONTEXT") or current
    found = [
        DockerContext(
            "default",
            "the local engine (DOCKER_HOST or the default socket)",
            os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET,
            "docker://",
            current == "default",
        )
    ]
    for meta in sorted((base / "contexts" / "meta").glob("*/meta.json")):
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            name = str(data["Name"])
            host = str(data.get("Endpoints", {}).get("docker", {}).get("Host") or "")
            description = str((data.get("Metadata") or {}).get("Description") or "")
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            log.warning("skipping unreadable docker context %s: %s", meta, exc)
            continue
        found.append(DockerContext(name, description, host, context_target_url(host), current == name))
    return found


def context_target_url(host: str) -> str:
    """The target URL for a docker endpoint ``Host`` value."""
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        return "docker://" if path == "/var/run/docker.sock" else f"docker://{path}"
    if host.startswith("ssh://"):
        return "docker+" + host
    if host.startswith("tcp://"):
        return "docker+" + host
    return "docker://"
