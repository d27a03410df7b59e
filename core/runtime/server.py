"""The runtime process: bind, serve over uvicorn, load and warm up, report ready, drain on SIGTERM.

Process contract (relied on by the deploy targets):

* the bundle is verified (:func:`verify_bundle`) and every bind address is bound
  *before* anything else; a tampered bundle or a taken port exits non-zero with
  one ``error:`` line on stderr;
* the model loads and warms up while the server already answers probes with
  503 -- except on shared ports: a ``--reuse-port`` socket with a fixed port is
  bound early (so a port held by a non-sharing process still fails fast) but
  starts listening only once the model is warm, because the kernel hands new
  connections to every *listening* member of a reuse-port group and a
  not-yet-ready runtime would answer its share of them 503 during a start-first
  switch; port-0 binds (the private health port) listen at once;
* once ready, ``--ready-file`` is written atomically with the pid, the *actual*
  bound addresses (port 0 resolved) and the model's identity;
* SIGTERM (or SIGINT) stops accepting, lets in-flight requests finish within
  ``graceful_shutdown_timeout_s`` and exits 0.

uvicorn runs with httptools and uvloop and a plain ASGI app (its httptools
protocol sends each response in one write, see :mod:`.http_protocol`); a single process
is the default because on a 2-core host the load generator or a neighbour needs
the other core. uvicorn's multi-worker mode is reported to skip TCP_NODELAY
(uvicorn #3149); for the sockets we bind and hand to uvicorn, uvloop sets
TCP_NODELAY on every accepted connection (checked: getsockopt returns 1), so no
per-connection hook is needed.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from modeldeck.core.errors import ConfigError, ModelDeckError
from modeldeck.core.runtime import RUNTIME_VERSION
from modeldeck.core.runtime.app import RuntimeApp
from modeldeck.core.runtime.config import Bind, RuntimeConfig
from modeldeck.core.runtime.manifest import verify_bundle
from modeldeck.core.runtime.model import ServedModel

log = logging.getLogger(__name__)

BACKLOG = 2048


def bind_socket(bind: Bind, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``bind`` (and listening unless ``listen`` is false); a taken port is a one-line
    :class:`ConfigError`."""
    try:
        infos = socket.getaddrinfo(bind.host, bind.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve bind address {bind}: {exc.strerror}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise ConfigError("--reuse-port is not supported on this platform")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {bind.port} on {bind.host} is already in use",
                hint="stop the other process, pick another --port, or start both with --reuse-port",
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ConfigError(f"no permission to listen on {bind}", hint="use a port above 1023") from exc
        raise ConfigError(f"cannot listen on {bind}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Write JSON atomically (tmp + rename in the same directory) so a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    tmp.replace(path)


class Phases:
    """Seconds since the process started at which start-up reached each phase (reported in the ready file and
    the log, so the time to ready can be told apart: imports, bundle arrival, verification, model load)."""

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self._t0 = time.monotonic() - _process_age()

    def mark(self, phase: str) -> None:
        self.marks[phase] = round(time.monotonic() - self._t0, 3)


def _process_age() -> float:
    """How long this process has been running (Linux: from /proc; elsewhere 0)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def serve(
    bundle_dir: Path, config: RuntimeConfig, *, ready_file: Path | None = None, phases: Phases | None = None
) -> int:
    """Serve ``bundle_dir`` until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop).

    Raises :class:`ModelDeckError` (tampered bundle, taken port, model that
    cannot load or fails its warm-up) for the caller to print as one line.
    """
    import uvicorn
    from modeldeck.core.runtime.http_protocol import OneWriteHttpToolsProtocol

    phases = phases or Phases()
    if "imported" not in phases.marks:  # a pre-started runtime marked it before waiting for its bundle
        phases.mark("imported")
    bundle_dir = Path(bundle_dir)
    manifest = verify_bundle(bundle_dir)
    phases.mark("verified")
    model = ServedModel(bundle_dir, manifest, intra_op_threads=config.intra_op_threads)
    sockets: list[socket.socket] = []
    held: list[socket.socket] = []  # shared (reuse-port, fixed port): listen only once the model is warm
    try:
        for b in config.binds:
            hold = config.reuse_port and b.port != 0
            sock = bind_socket(b, reuse_port=config.reuse_port, listen=not hold)
            sockets.append(sock)
            if hold:
                held.append(sock)
    except BaseException:
        for s in sockets:
            s.close()
        raise
    addresses = [_address(s) for s in sockets]
    app = RuntimeApp(model, config, RUNTIME_VERSION)
    uv_config = uvicorn.Config(
        app,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http=OneWriteHttpToolsProtocol,  # uvicorn's httptools protocol, head and body in one write
        lifespan="off",
        access_log=False,
        server_header=False,
        proxy_headers=False,  # the runtime never uses the client address; saves a middleware hop per request
        log_level=config.log_level,
        timeout_graceful_shutdown=int(max(1, round(config.graceful_shutdown_timeout_s))),
        backlog=BACKLOG,
    )
    server = _RuntimeServer(
        uv_config,
        app=app,
        model=model,
        config=config,
        ready_file=ready_file,
        addresses=addresses,
        held=held,
        phases=phases,
    )
    # uvicorn re-raises the signal it caught after shutting down; with these no-op handlers in place that
    # re-raise is harmless and the process exits 0 after a graceful stop, as service managers expect.
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[s for s in sockets if s not in held])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.batcher.close()
        for s in sockets:
            s.close()
        if ready_file is not None and server.wrote_ready_file:
            Path(ready_file).unlink(missing_ok=True)
    if server.failure is not None:
        raise server.failure
    return 0


def _ignore(signum: int, frame: Any) -> None:
    """Placeholder handler; uvicorn installs its own while serving."""


class _RuntimeServer:
    """uvicorn.Server plus the model load that runs once the sockets accept connections."""

    def __init__(
        self,
        uv_config: Any,
        *,
        app: RuntimeApp,
        model: ServedModel,
        config: RuntimeConfig,
        ready_file: Path | None,
        addresses: list[str],
        held: list[socket.socket],
        phases: Phases,
    ) -> None:
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                outer._load_task = asyncio.get_running_loop().create_task(outer._load())

            async def start_listening(self, late: list[socket.socket]) -> None:
                """Serve sockets that were bound but not listening, exactly as uvicorn serves the first ones
                (``create_server`` calls ``listen``); ``shutdown`` closes them with the rest."""
                config = self.config

                def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
                    return config.http_protocol_class(  # type: ignore[call-arg]
                        config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
                    )

                loop = asyncio.get_running_loop()
                for sock in late:
                    server = await loop.create_server(create_protocol, sock=sock, backlog=config.backlog)
                    self.servers.append(server)

        self._server = Server(uv_config)
        tasks = getattr(getattr(self._server, "server_state", None), "tasks", None)
        if isinstance(tasks, set):  # uvicorn's set of live request tasks: lets a lone request skip the batch queue
            app.pending_requests = tasks.__len__
        self.app = app
        self.model = model
        self.config = config
        self.ready_file = ready_file
        self.addresses = addresses
        self.held = held
        self.phases = phases
        self.failure: ModelDeckError | None = None
        self.wrote_ready_file = False
        self._load_task: asyncio.Task[None] | None = None

    def run(self, sockets: list[socket.socket]) -> None:
        log.info("serving %s on %s", self.model.manifest.model_name, ", ".join(self.addresses))
        self._server.run(sockets=sockets)

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.model.load, self.config.warmup_runs)
        except ModelDeckError as exc:
            self.failure = exc
            self._server.should_exit = True
            return
        except Exception as exc:  # onnxruntime failures not already wrapped
            log.debug("model load failed", exc_info=True)
            self.failure = ModelDeckError(f"cannot load the model: {exc.__class__.__name__}: {exc}")
            self._server.should_exit = True
            return
        self.phases.mark("loaded")
        self.app.mark_ready()
        if self._server.should_exit:  # stopped while loading: do not start taking shared traffic now
            return
        try:
            await self._server.start_listening(self.held)
        except OSError as exc:
            self.failure = ConfigError(f"cannot listen on the shared port: {exc.strerror or exc}")
            self._server.should_exit = True
            return
        m = self.model.manifest
        self.phases.mark("ready")
        if self.ready_file is not None:
            try:
                write_ready_file(
                    self.ready_file,
                    {
                        "pid": os.getpid(),
                        "binds": self.addresses,
                        # the port-0 binds, resolved: a supervisor's private health port. Told apart by what was
                        # asked for, not by comparing ports: 127.0.0.1:0 may get the public port's number when the
                        # public bind is on another address.
                        "private_binds": [
                            a for b, a in zip(self.config.binds, self.addresses, strict=True) if b.port == 0
                        ],
                        "model_name": m.model_name,
                        "model_version": m.model_version,
                        "bundle_sha256": m.sha256,
                        "runtime_version": RUNTIME_VERSION,
                        "phases_s": self.phases.marks,
                    },
                )
                self.wrote_ready_file = True
            except OSError as exc:
                self.failure = ConfigError(f"cannot write the ready file {self.ready_file}: {exc.strerror or exc}")
                self._server.should_exit = True
                return
        log.info("ready: %s version %s on %s", m.model_name, m.model_version, ", ".join(self.addresses))
        log.info("start-up, seconds since the process started: %s", self.phases.marks)
