"""The SSH target (``ssh://USER@HOST[:PORT][/DEPLOY_ROOT]``): one Linux host reached with paramiko.

A deploy is: connect (host key verified before any credential is offered) -> detect the
host's facts in one round trip and refuse an incompatible host -> make sure the ModelDeck
runtime venv for this version exists under ``DEPLOY_ROOT/runtime/<version>`` (installed from
the host's package index or from a wheelhouse uploaded by ModelDeck) -> start the remote agent
(:mod:`modeldeck.core.targets.agent`) once: it names the objects it lacks, they are uploaded
into ``DEPLOY_ROOT/objects/<sha256>.part`` (SFTP on the same connection, pipelined 255 KiB
writes), the agent checks their sha256 before they count and then performs exactly the local
target's health-gated, start-first switch on the host, streaming its progress back.

The facts of a host that passed are cached locally (per user, host, port, deploy root, host key
and runtime version): the next deploy is then a single remote command -- the runtime venv's
Python by absolute path -- and falls back to inspecting the host when that interpreter is gone.

Layout on the host::

    DEPLOY_ROOT/deployments/NAME/...   the local target's release layout (releases/, current, state.json, logs/)
    DEPLOY_ROOT/objects/<sha256>       uploaded files, content-addressed: unchanged weights are never re-sent
    DEPLOY_ROOT/runtime/<version>/venv the runtime (+ agent and supervisor), one per ModelDeck runtime version
    DEPLOY_ROOT/wheelhouse/<platform>/ dependencies uploaded for air-gapped hosts

Failure model: a connection that drops mid-upload leaves only ``.part`` files (resumed on the
next try); one that drops mid-switch closes the agent's lifeline, so it cancels and the
candidate is stopped (the supervisor's probation pipe does the same if the agent is killed).
In every case the previous release keeps serving and a retry converges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import posixpath
import shlex
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paramiko
from modeldeck.core import errors
from modeldeck.core.errors import Cancelled, DeployError, HostUnreachable, ModelDeckError, TargetError
from modeldeck.core.inventory.known_hosts import KnownHosts
from modeldeck.core.runtime.manifest import MANIFEST_NAME, Manifest, verify_bundle
from modeldeck.core.targets import agent as agent_protocol
from modeldeck.core.targets import releases
from modeldeck.core.targets.base import (
    DeploymentStatus,
    DeployOptions,
    DeployResult,
    Plan,
    PlannedStep,
    Progress,
    ProgressEvent,
    no_progress,
)
from modeldeck.core.targets.ssh.connection import (
    PassphrasePrompt,
    SshConnection,
    SshEndpoint,
    close_channel,
    open_unix_channel,
    quote,
)
from modeldeck.core.targets.ssh.facts import INSTALLED_MARKER, RUNTIME_DIR, HostFacts, check_compatible, detect_facts

log = logging.getLogger(__name__)

DEFAULT_DEPLOY_ROOT = "~/modeldeck"
AGENT_MODULE = "modeldeck.core.targets.agent"
CHUNK = 255 * 1024  # 256 KiB SFTP writes make OpenSSH's sftp-server drop the connection
RUNTIME_SOURCES = ("index", "wheelhouse")
_WILDCARD = ("0.0.0.0", "::", "")
_LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class SshTimeouts:
    """Per-step deadlines; every remote call has one."""

    connect_s: float = 10.0
    auth_s: float = 15.0
    command_s: float = 60.0  # facts, checks, small commands
    transfer_stall_s: float = 30.0  # an SFTP request unanswered this long fails the transfer
    install_s: float = 900.0  # creating the runtime venv and pip-installing into it
    switch_margin_s: float = 120.0  # agent's deploy: health gate's own bounds + this (drain, staging)
    host_lock_s: float = 30.0  # how long a push waits for another deploy to the same deploy root


@dataclass(frozen=True)
class LocalFile:
    rel: str
    path: Path
    sha256: str
    size: int


def parse_ssh_url(url: str) -> tuple[str | None, str, int, str | None, dict[str, str]]:
    """``ssh://[USER@]HOST[:PORT][/DEPLOY_ROOT][?bind=ADDR]`` -> (user, host, port, deploy root, query).

    A root of ``/~/x`` means ``~/x`` on the host. Raises :class:`TargetError` for anything else.
    """
    if not url.startswith("ssh://"):
        raise TargetError(f"not an SSH target URL: {url!r}", hint="use ssh://USER@HOST[:PORT][/DEPLOY_ROOT]")
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or 22
    except ValueError:
        raise TargetError(f"invalid port in target {url!r}", hint="use ssh://USER@HOST:PORT") from None
    if not host:
        raise TargetError(f"no host in target {url!r}", hint="use ssh://USER@HOST[:PORT][/DEPLOY_ROOT]")
    path = unquote(parts.path) or None
    if path in ("/", ""):
        path = None
    if path and path.startswith("/~"):
        path = path[1:]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"bind"}
    if unknown:
        raise TargetError(f"unknown option(s) {sorted(unknown)} in target {url!r}", hint="supported: ?bind=ADDRESS")
    return (unquote(parts.username) if parts.username else None), host, port, path, query


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(bundle_dir: Path, manifest: Manifest) -> list[LocalFile]:
    """Every file of a verified bundle with its sha256 (the manifest's sums; the manifest hashed here)."""
    out = []
    for rel, sha in sorted(manifest.files.items()):
        path = bundle_dir / rel
        out.append(LocalFile(rel, path, sha, path.stat().st_size))
    mpath = bundle_dir / MANIFEST_NAME
    out.append(LocalFile(MANIFEST_NAME, mpath, _sha256_file(mpath), mpath.stat().st_size))
    return out


def systemd_unit(name: str, python: str, deploy_root: str, *, user_mode: bool) -> str:
    """A unit that brings a deployment back after a reboot (the supervisor restarts crashes meanwhile).

    It runs the agent's ``start``/``stop`` (health-gated like a deploy) rather than the runtime
    itself, so systemd and ModelDeck never disagree about which release serves.
    """
    agent = f"{python} -m {AGENT_MODULE}"
    return "\n".join(
        [
            "[Unit]",
            f"Description=ModelDeck deployment {name}",
            "After=network-online.target",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            f"ExecStart={agent} start {name} --deploy-root {deploy_root}",
            f"ExecStop={agent} stop {name} --deploy-root {deploy_root}",
            "TimeoutStartSec=300",
            "",
            "[Install]",
            f"WantedBy={'default.target' if user_mode else 'multi-user.target'}",
            "",
        ]
    )


class SshTarget:
    """Deployments on one SSH host, under ``deploy_root`` there (default ``~/modeldeck``)."""

    kind = "ssh"

    def __init__(
        self,
        endpoint: SshEndpoint,
        deploy_root: str | None = None,
        *,
        known_hosts: KnownHosts | None = None,
        accept_fingerprint: str | None = None,
        passphrase: PassphrasePrompt | None = None,
        runtime_source: str = "index",
        wheelhouse_dir: Path | None = None,
        cache_dir: Path | None = None,
        index_url: str | None = None,
        bind_host: str = "0.0.0.0",
        systemd: bool = True,
        timeouts: SshTimeouts | None = None,
        runtime_version: str | None = None,
        resident_agent: bool = True,
        stream_upload: bool = True,
    ) -> None:
        if runtime_source not in RUNTIME_SOURCES:
            raise TargetError(f"unknown runtime source {runtime_source!r}", hint="use index or wheelhouse")
        self.timeouts = timeouts or SshTimeouts()
        self.endpoint = replace(
            endpoint, connect_timeout_s=self.timeouts.connect_s, auth_timeout_s=self.timeouts.auth_s
        )
        self.deploy_root = (deploy_root or DEFAULT_DEPLOY_ROOT).rstrip("/") or "/"
        if known_hosts is None:
            from modeldeck.core.settings import config_dir

            known_hosts = KnownHosts(config_dir() / "known_hosts")
        self.known_hosts = known_hosts
        self.accept_fingerprint = accept_fingerprint
        self.passphrase = passphrase
        self.runtime_source = runtime_source
        self.wheelhouse_dir = wheelhouse_dir
        if cache_dir is None:
            from modeldeck.core.settings import data_dir

            cache_dir = data_dir() / "cache" / "ssh"
        self.cache_dir = cache_dir
        self.index_url = index_url
        self.bind_host = bind_host
        self.systemd = systemd
        # The runtime version this target installs and runs the agent from: computed once (from the files the
        # wheel carries), so one target never mixes two versions; pinnable, e.g. to reuse a host's install.
        self._runtime = runtime_version
        # Test seam: called with (connection, remote .part paths) after the upload, before the host checks them.
        self.before_verify: Callable[[SshConnection, list[str]], None] | None = None
        # Benchmark seam: environment variables set for the remote agent (e.g. agent.PROFILE_ENV).
        self.agent_env: dict[str, str] = {}
        # Reach the host's resident agent (started by a push, see agent.serve) instead of starting one per command.
        self.resident_agent = resident_agent
        # Send the bundle's files through the agent's own channel (the agent hashes them as they arrive) instead of
        # an SFTP session beside it.
        self.stream_upload = stream_upload
        # Test and benchmark seam: how each agent command reached the host ("resident" or "exec"), in order.
        self.agent_routes: list[str] = []

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        root: Path | None = None,  # the local deployments dir the CLI passes to every target; unused here
        identity: Path | str | None = None,
        accept_host_key: str | None = None,
        runtime_source: str = "index",
        **kwargs: Any,
    ) -> SshTarget:
        user, host, port, deploy_root, query = parse_ssh_url(url)
        endpoint = SshEndpoint(host, port, user, identity_files=(Path(identity).expanduser(),) if identity else ())
        if "bind" in query:
            kwargs.setdefault("bind_host", query["bind"])
        return cls(endpoint, deploy_root, accept_fingerprint=accept_host_key, runtime_source=runtime_source, **kwargs)

    @property
    def url(self) -> str:
        user = f"{self.endpoint.user}@" if self.endpoint.user else ""
        port = f":{self.endpoint.port}" if self.endpoint.port != 22 else ""
        root = self.deploy_root if self.deploy_root.startswith("/") else "/" + self.deploy_root
        return f"ssh://{user}{self.endpoint.host}{port}{root}"

    @property
    def label(self) -> str:
        return self.endpoint.label

    # -- connection and facts ----------------------------------------------------------------------
    def connect(self) -> SshConnection:
        """A verified, authenticated connection (see :meth:`SshConnection.open` for the errors)."""
        return SshConnection.open(
            self.endpoint, self.known_hosts, accept_fingerprint=self.accept_fingerprint, passphrase=self.passphrase
        )

    def facts(self, conn: SshConnection | None = None, objects: list[str] | None = None) -> HostFacts:
        """The host's facts (one round trip; opens a connection if none is given).

        ``objects``: sha256s to look up in the host's object store in the same round trip.
        """
        if conn is not None:
            return detect_facts(conn, self.deploy_root, timeout=self.timeouts.command_s, objects=objects or ())
        with self.connect() as c:
            return detect_facts(c, self.deploy_root, timeout=self.timeouts.command_s, objects=objects or ())

    def _emit(self, progress: Progress, step: str, message: str, fraction: float | None) -> None:
        progress(ProgressEvent(step, message, fraction, host=self.label))

    # -- planning ------------------------------------------------------------------------------------
    def plan(self, bundle_dir: Path, options: DeployOptions) -> Plan:
        """What :meth:`deploy` would do; connects and inspects the host but changes nothing on it."""
        from modeldeck.core.targets.releases import name_from_model, validate_name

        manifest = self._checked_bundle(bundle_dir)
        name = validate_name(options.name or name_from_model(manifest.model_name))
        files = bundle_files(Path(bundle_dir), manifest)
        with self.connect() as conn:
            runtime = self._runtime_version()
            current: DeploymentStatus | None = None
            missing: set[str] | None = None
            facts = self._cached_facts(conn)
            if facts is not None:  # a known host: one agent command, as a deploy would run
                try:
                    seen = self._agent(conn, facts, "plan", name=name, request={"objects": [f.sha256 for f in files]})
                    missing = set(seen.get("missing") or [])
                    found = [self._status(s) for s in seen.get("status") or [] if s.get("name") == name]
                    current = found[0] if found else None
                except _RuntimeMissing:
                    self._forget_facts(conn)
                    facts = None
            if facts is None:
                facts = self.facts(conn, objects=[f.sha256 for f in files])
                check_compatible(facts, self.label)
                if runtime in facts.runtime_versions:
                    missing = set(facts.missing_objects)
                    found = [self._status(s) for s in self._agent(conn, facts, "status") if s.get("name") == name]
                    current = found[0] if found else None
            root = facts.deploy_root
            steps = [PlannedStep("facts", f"{self.label}: {facts.machine}, Python {facts.python_version}")]
            if missing is None:
                steps.append(
                    PlannedStep("runtime", f"install runtime {runtime} into {root}/runtime ({self.runtime_source})")
                )
            serving = current is not None and current.state == "running"
            replaces = current.release_id if serving and current is not None else None
            if (
                serving
                and current is not None
                and releases.serves_bundle(current.bundle_sha256, current.model_name, current.model_version, manifest)
            ):
                steps.append(PlannedStep("noop", "this bundle is already installed and serving"))
                return Plan(self.url, name, tuple(steps), replaces=replaces)
            if missing is None:
                size = sum(f.size for f in files)
                steps.append(PlannedStep("transfer", f"upload up to {len(files)} file(s), {size} bytes"))
            elif missing:
                size = sum(f.size for f in files if f.sha256 in missing)
                steps.append(PlannedStep("transfer", f"upload {len(missing)} file(s), {size} bytes"))
            else:
                steps.append(PlannedStep("transfer", "nothing to upload: the host holds every file"))
            steps += [
                PlannedStep("start", "start the runtime beside the current one on the host"),
                PlannedStep("health", "wait until ready, check /health and answer the bundle's input example"),
                PlannedStep("switch", f"make it current and drain {replaces}" if replaces else "make it current"),
            ]
        return Plan(self.url, name, tuple(steps), replaces=replaces)

    # -- deploy --------------------------------------------------------------------------------------
    def deploy(
        self,
        bundle_dir: Path,
        options: DeployOptions,
        progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> DeployResult:
        """Deploy ``bundle_dir`` to the host, health-gated and start-first (see the module doc).

        Raises :class:`HostKeyError`/:class:`SshAuthError`/:class:`HostUnreachable` before anything
        runs on the host, :class:`TargetError` for an incompatible host before any transfer,
        :class:`DeployError` for a failed upload or checksum, :class:`Cancelled` when cancelled;
        returns ``failed (rolled back)`` when the new release fails its health gate.
        """
        _check_cancel(cancel)
        self._emit(progress, "verify", "verifying the bundle", 0.01)
        unknown = sorted(set(options.extra) - {"warm_spare"})
        if unknown:
            raise DeployError(
                f"the SSH target takes no setting(s) {', '.join(unknown)}",
                hint="those flags are for docker:// targets (warm_spare is the SSH target's one setting)",
            )
        if not isinstance(options.extra.get("warm_spare", True), bool):
            raise DeployError("the warm_spare setting must be true or false")
        manifest = self._checked_bundle(bundle_dir)
        files = bundle_files(Path(bundle_dir), manifest)
        if options.host in ("127.0.0.1", "") and self.bind_host:
            options = replace(options, host=self.bind_host)
        from modeldeck.core.targets.releases import name_from_model, validate_name

        # Named here, so the host's agent knows the deployment before the manifest has arrived (it pre-starts the
        # runtime during the upload); the same name the local target would derive.
        options = replace(options, name=validate_name(options.name or name_from_model(manifest.model_name)))
        self._emit(progress, "connect", f"connecting to {self.label}", 0.02)
        with self.connect() as conn:
            cached = self._cached_facts(conn)
            if cached is not None:  # one remote command: the agent from the runtime venv, by absolute path
                try:
                    return self._push(conn, cached, files, options, progress, cancel)
                except _RuntimeMissing:
                    log.info("%s: the cached runtime is gone; inspecting the host again", self.label)
                    self._forget_facts(conn)
            facts = self.facts(conn)
            check_compatible(facts, self.label)
            _check_cancel(cancel)
            self._ensure_runtime(conn, facts, progress, cancel)
            self._remember_facts(conn, facts)
            return self._push(conn, facts, files, options, progress, cancel)

    # -- per-host facts cache ---------------------------------------------------------------------------
    def _facts_cache_path(self, conn: SshConnection) -> Path:
        """One file per host + port + user + deploy root + host key + runtime version: any change misses."""
        key = "\n".join(
            [
                self.endpoint.user or "",
                self.endpoint.host,
                str(self.endpoint.port),
                self.deploy_root,
                conn.host_key_fingerprint,
                self._runtime_version(),
            ]
        )
        return self.cache_dir / "facts" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def _cached_facts(self, conn: SshConnection) -> HostFacts | None:
        """The facts of the last deploy that installed or found this runtime here, if still compatible."""
        path = self._facts_cache_path(conn)
        try:
            data = json.loads(path.read_text())
            data["runtime_versions"] = tuple(data.get("runtime_versions") or ())
            facts = HostFacts(**data)
        except (OSError, ValueError, TypeError):
            return None
        if facts.problems() or self._runtime_version() not in facts.runtime_versions:
            return None
        return facts

    def _remember_facts(self, conn: SshConnection, facts: HostFacts) -> None:
        path = self._facts_cache_path(conn)
        data = {k: v for k, v in dataclasses.asdict(facts).items() if k not in ("missing_objects", "free_bytes")}
        data["runtime_versions"] = sorted({*facts.runtime_versions, self._runtime_version()})
        data["free_bytes"] = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
        except OSError as exc:  # only the next deploy's speed depends on it
            log.warning("cannot cache the facts of %s: %s", self.label, exc)

    def _forget_facts(self, conn: SshConnection) -> None:
        with contextlib.suppress(OSError):
            self._facts_cache_path(conn).unlink()

    # -- the push: one agent process per deploy ---------------------------------------------------------
    def _push(
        self,
        conn: SshConnection,
        facts: HostFacts,
        files: list[LocalFile],
        options: DeployOptions,
        progress: Progress,
        cancel: threading.Event | None,
    ) -> DeployResult:
        """Run the agent's ``push``: it names the objects it lacks, waits while they are uploaded (SFTP on the
        same connection), checks their sha256 itself, then switches -- one remote command, one Python start.

        Raises :class:`_RuntimeMissing` when the runtime venv cannot be started (nothing happened on the host).
        """
        by_sha: dict[str, LocalFile] = {}
        for f in files:
            by_sha.setdefault(f.sha256, f)
        store = f"{facts.deploy_root}/{agent_protocol.OBJECTS}"
        total = sum(f.size for f in files)
        resumed: set[str] = set()
        retried: set[str] = set()
        asked = threading.Event()

        def part(sha: str) -> str:
            return f"{store}/{sha}.part"

        stream_parts: dict[str, int] = {}
        send: Callable[[bytes], None] | None = None

        def upload(shas: list[str], *, resume: bool) -> None:
            pending = [(by_sha[s], part(s)) for s in shas]
            if send is not None:  # through the agent's own channel
                offsets = {s: (stream_parts.get(s, 0) if resume else 0) for s in shas}
                resumed.update(self._stream_files(send, pending, offsets, progress, cancel))
            else:
                resumed.update(self._put_files(conn, pending, progress, cancel, "transfer", resume=resume))
            if self.before_verify is not None:
                self.before_verify(conn, [p for _, p in pending])

        def open_sftp() -> None:
            """Opened while the agent starts, so sshd's sftp-server start is off the critical path. Read-only:
            nothing on the host changes before the agent holds the host lock and has checked the free disk."""
            with contextlib.suppress(ModelDeckError):  # opened again in the upload, which reports the error
                conn.sftp()

        sftp_ready = threading.Thread(target=open_sftp, name=f"sftp-{self.label}", daemon=True)
        if not self.stream_upload:
            sftp_ready.start()

        def on_need(need: dict[str, Any], sender: Callable[[bytes], None]) -> bytes:
            nonlocal send
            asked.set()
            if need.get("stream") and self.stream_upload:
                send = sender
                stream_parts.clear()
                stream_parts.update({str(k): int(v) for k, v in (need.get("parts") or {}).items()})
            elif not sftp_ready.is_alive() and sftp_ready.ident is None:
                sftp_ready.start()  # an agent that takes no streamed upload: SFTP after all
            if send is None:
                sftp_ready.join(self.timeouts.connect_s * 3)  # one SFTP session: wait for the one being opened
            asked_for = set(need.get("missing") or [])
            missing = [s for s in by_sha if s in asked_for]  # the bundle's order: the manifest last
            bad = [s for s in need.get("bad") or [] if s in by_sha]
            if bad:
                retry = [s for s in bad if part(s) in resumed and s not in retried]
                if len(retry) < len(bad):
                    raise DeployError(
                        f"{self.label}: checksum mismatch after upload for {len(bad)} file(s); nothing was activated",
                        hint="the data changed in transit or on the host's disk; deploy again, and check the "
                        "host's disk",
                    )
                log.info("%s: %d resumed upload(s) failed the checksum; sending them again", self.label, len(retry))
                retried.update(retry)
                upload(retry, resume=False)
                return b"uploaded\n"
            needed = sum(by_sha[s].size for s in missing)
            # The release copies the staged files: room for the upload and one copy of the whole bundle.
            wanted = needed + total + (1 << 20)
            free = need.get("free_bytes")
            if isinstance(free, int) and free < wanted:
                raise DeployError(
                    f"{self.label}: not enough disk under {facts.deploy_root}: {free} bytes free, "
                    f"the deploy needs about {wanted}",
                    hint="free some space on the host (or undeploy old deployments) and deploy again",
                )
            self._emit(
                progress,
                "transfer",
                f"uploading {len(missing)} of {len(files)} file(s), {needed} bytes; the host holds the rest",
                0.2,
            )
            if send is None:
                if sftp_ready.is_alive():
                    raise HostUnreachable(f"{self.label}: the SFTP session did not open in time")
                with contextlib.suppress(OSError):
                    conn.sftp().mkdir(store)
            upload(missing, resume=True)
            _check_cancel(cancel)
            return b"uploaded\n"

        def relay(event: ProgressEvent) -> None:
            if not asked.is_set():  # the agent went straight to the switch
                asked.set()
                self._emit(progress, "transfer", "the host already holds every file; nothing to send", 0.5)
            progress(event)

        request = {
            "files": {f.rel: f.sha256 for f in files},
            "options": agent_protocol.options_to_dict(options),
            "lock_wait_s": self.timeouts.host_lock_s,
            "resident": self.resident_agent,
            "stream": self.stream_upload,
        }
        gate = options.health
        timeout = (
            self.timeouts.host_lock_s
            + gate.start_period_s
            + max(gate.retries, 1) * (gate.interval_s + gate.timeout_s) * 2
            + self.timeouts.switch_margin_s
        )
        raw = self._agent(
            conn,
            facts,
            "push",
            request=request,
            progress=relay,
            cancel=cancel,
            timeout=timeout,
            lifeline=True,
            fraction_base=0.5,
            on_need=on_need,
        )
        result = self._result(raw)
        if result.ok and result.outcome != "already-installed" and facts.systemd and self.systemd:
            self._install_unit(conn, facts, result.name)
        return result

    def _checked_bundle(self, bundle_dir: Path) -> Manifest:
        path = Path(bundle_dir)
        if not path.is_dir():
            raise DeployError(f"bundle {path} does not exist", hint="build one with `modeldeck bundle MODEL_URI`")
        return _VERIFIED.check(path)

    # -- runtime ---------------------------------------------------------------------------------------
    def _runtime_version(self) -> str:
        if self._runtime is None:
            from modeldeck.core.targets.runtime_dist import runtime_version

            self._runtime = runtime_version()
        return self._runtime

    def _python(self, facts: HostFacts, version: str | None = None) -> str:
        return f"{facts.deploy_root}/{RUNTIME_DIR}/{version or self._runtime_version()}/venv/bin/python"

    def _ensure_runtime(
        self, conn: SshConnection, facts: HostFacts, progress: Progress, cancel: threading.Event | None
    ) -> None:
        """Install this version's runtime venv unless the host has it (an ``installed.json`` marks it complete)."""
        from modeldeck.core.targets.runtime_dist import runtime_wheel, wheelhouse

        version = self._runtime_version()
        if version in facts.runtime_versions:
            return
        rdir = f"{facts.deploy_root}/{RUNTIME_DIR}/{version}"
        self._emit(progress, "runtime", f"installing runtime {version} into {rdir} ({self.runtime_source})", 0.05)
        wheel = runtime_wheel(self.cache_dir / "dist")
        uploads = [LocalFile(wheel.name, wheel, _sha256_file(wheel), wheel.stat().st_size)]
        conn.run(
            f"rm -rf {quote(rdir)} && mkdir -p {quote(rdir + '/dist')}", timeout=self.timeouts.command_s, check=True
        )
        if self.runtime_source == "wheelhouse":
            platform = facts.platform()
            tag = f"cp{platform.python_version.replace('.', '')}-{platform.machine}-{platform.libc}"
            local_wh = self.wheelhouse_dir or self.cache_dir / "wheelhouse" / tag
            wheels = wheelhouse(
                local_wh, platform, progress=lambda m, f: self._emit(progress, "runtime", m, None), cancel=cancel
            )
            remote_wh = f"{facts.deploy_root}/wheelhouse/{tag}"
            conn.run(f"mkdir -p {quote(remote_wh)}", timeout=self.timeouts.command_s, check=True)
            have = self._remote_sizes(conn, remote_wh)
            todo = [LocalFile(w.name, w, "", w.stat().st_size) for w in wheels if have.get(w.name) != w.stat().st_size]
            self._put_files(
                conn, [(f, f"{remote_wh}/{f.rel}") for f in todo], progress, cancel, "runtime", span=(0.06, 0.12)
            )
            source = f"--no-index --find-links {quote(remote_wh)}"
        else:
            source = f"--index-url {quote(self.index_url)}" if self.index_url else ""
        self._put_files(
            conn, [(f, f"{rdir}/dist/{f.rel}") for f in uploads], progress, cancel, "runtime", span=(0.12, 0.13)
        )
        _check_cancel(cancel)
        self._emit(progress, "runtime", "creating the runtime venv and installing its dependencies", 0.14)
        marker = json.dumps({"version": version, "source": self.runtime_source, "installed_at": time.time()})
        cmd = (
            f"{quote(facts.python or 'python3')} -m venv {quote(rdir + '/venv')}"
            f" && {quote(rdir + '/venv/bin/python')} -m pip install --quiet --disable-pip-version-check --no-input"
            f" {source} {quote(rdir + '/dist/' + wheel.name)}"
            f" && printf '%s\\n' {quote(marker)} > {quote(rdir + '/' + INSTALLED_MARKER)}"
        )
        result = conn.run(cmd, timeout=self.timeouts.install_s)
        if not result.ok:
            conn.run(f"rm -rf {quote(rdir)}", timeout=self.timeouts.command_s)
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise DeployError(
                f"{self.label}: installing the runtime failed (exit {result.exit_status})",
                hint=tail
                or (
                    "the host could not reach its package index; try --runtime-source wheelhouse"
                    if self.runtime_source == "index"
                    else None
                ),
            )
        log.info("installed runtime %s on %s", version, self.label)

    def _remote_sizes(self, conn: SshConnection, remote_dir: str) -> dict[str, int]:
        try:
            return {a.filename: int(a.st_size or 0) for a in conn.sftp().listdir_attr(remote_dir)}
        except (OSError, paramiko.SSHException, EOFError):  # a drop mid-request is SSHException; the upload reports it
            return {}

    # -- transfer ----------------------------------------------------------------------------------------
    def _put_files(
        self,
        conn: SshConnection,
        items: list[tuple[LocalFile, str]],
        progress: Progress,
        cancel: threading.Event | None,
        step: str,
        *,
        resume: bool = False,
        span: tuple[float, float] = (0.2, 0.45),
    ) -> set[str]:
        """Pipelined SFTP uploads with progress; returns the remote paths that were resumed, not restarted."""
        if not items:
            return set()
        sftp = conn.sftp()
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(self.timeouts.transfer_stall_s)
        meter = _TransferMeter(lambda message, fraction: self._emit(progress, step, message, fraction), items, span)
        resumed: set[str] = set()
        for f, remote in items:
            offset = 0
            if resume:
                # A drop mid-request raises SSHException ("Server connection dropped"), not OSError: the upload
                # below then fails and says so (outside its try, it escaped raw from a runtime install).
                with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                    st = sftp.stat(remote)
                    if st.st_mode is not None and stat.S_ISREG(st.st_mode) and 0 < (st.st_size or 0) <= f.size:
                        offset = int(st.st_size or 0)
            if offset:
                resumed.add(remote)
                log.info("%s: resuming %s at %d of %d bytes", self.label, f.rel, offset, f.size)
            try:
                with f.path.open("rb") as src, sftp.open(remote, "ab" if offset else "wb") as dst:
                    dst.set_pipelined(True)
                    src.seek(offset)
                    meter.sent += offset
                    while True:
                        _check_cancel(cancel)
                        chunk = src.read(CHUNK)
                        if not chunk:
                            break
                        dst.write(chunk)
                        meter.add(len(chunk), f.rel)
            except Cancelled:
                raise
            except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
                if not self._still_connected(conn):
                    raise HostUnreachable(
                        f"{self.label}: the connection dropped while uploading {f.rel}",
                        hint="deploy again: the upload resumes where it stopped; the previous release still serves",
                    ) from exc
                raise DeployError(
                    f"{self.label}: uploading {f.rel} failed: {exc}",
                    hint="check free disk on the host; the previous release still serves",
                ) from exc
        meter.finish()
        return resumed

    def _send(self, chan: paramiko.Channel, data: bytes) -> None:
        """All of ``data`` on ``chan`` (whose timeout is short, for the read loop): waits for the peer's window up to
        ``transfer_stall_s``. Raises :class:`_AgentStopped` when the agent closed its end (it stopped reading: an
        error line follows), :class:`HostUnreachable` when the connection is gone or stalled."""
        view = memoryview(data)
        stalled_at: float | None = None
        transport = chan.get_transport()
        while view:
            try:
                sent = chan.send(view[: 1 << 20])
            except TimeoutError:
                sent = 0
            except (EOFError, paramiko.SSHException) as exc:
                # paramiko's write to a socket that died under the transport (before its reader noticed): EOFError.
                # It escaped to _agent_once as "connection lost during `push`: " (empty message): the mid-upload
                # cut test failed 6 times in 14 runs.
                raise HostUnreachable(f"{self.label}: the connection dropped while uploading") from exc
            except OSError as exc:  # paramiko: "Socket is closed" once the agent's end closed
                if transport is not None and transport.is_active():
                    raise _AgentStopped from exc
                raise HostUnreachable(f"{self.label}: the connection dropped while uploading") from exc
            if sent:
                view = view[sent:]
                stalled_at = None
                continue
            if transport is None or not transport.is_active():
                raise HostUnreachable(f"{self.label}: the connection dropped while uploading")
            if chan.closed or chan.eof_received:
                raise _AgentStopped
            stalled_at = stalled_at or time.monotonic()
            if time.monotonic() - stalled_at > self.timeouts.transfer_stall_s:
                raise HostUnreachable(f"{self.label}: the upload stalled for {self.timeouts.transfer_stall_s:g} s")

    def _stream_files(
        self,
        send: Callable[[bytes], None],
        items: list[tuple[LocalFile, str]],
        offsets: dict[str, int],
        progress: Progress,
        cancel: threading.Event | None,
        span: tuple[float, float] = (0.2, 0.45),
    ) -> set[str]:
        """Send files through the agent's own channel (a header line, then the bytes from the part the host already
        holds): no SFTP session, no sftp-server process, no per-write requests and acknowledgements; the agent
        hashes the bytes as they arrive. Returns the remote part paths that were resumed, not restarted."""
        meter = _TransferMeter(
            lambda message, fraction: self._emit(progress, "transfer", message, fraction), items, span
        )
        resumed: set[str] = set()
        for f, remote in items:
            offset = offsets.get(f.sha256, 0)
            if not 0 < offset <= f.size:
                offset = 0
            if offset:
                resumed.add(remote)
                log.info("%s: resuming %s at %d of %d bytes", self.label, f.rel, offset, f.size)
            header = {"put": {"sha": f.sha256, "offset": offset, "size": f.size - offset, "name": f.rel}}
            try:
                send(json.dumps(header).encode() + b"\n")
                with f.path.open("rb") as src:
                    src.seek(offset)
                    meter.sent += offset
                    while True:
                        _check_cancel(cancel)
                        chunk = src.read(CHUNK * 4)
                        if not chunk:
                            break
                        send(chunk)
                        meter.add(len(chunk), f.rel)
            except HostUnreachable as exc:
                raise HostUnreachable(
                    f"{self.label}: the connection dropped while uploading {f.rel}",
                    hint="deploy again: the upload resumes where it stopped; the previous release still serves",
                ) from exc
        meter.finish()
        return resumed

    def _still_connected(self, conn: SshConnection) -> bool:
        """One cheap round trip tells a dropped connection from an error the host reported (e.g. a full disk)."""
        try:
            conn.run("true", timeout=min(10.0, self.timeouts.command_s))
        except (HostUnreachable, TargetError):
            return False
        return True

    # -- the agent ---------------------------------------------------------------------------------------
    def _open_resident(
        self, transport: paramiko.Transport, facts: HostFacts, version: str | None
    ) -> paramiko.Channel | None:
        """A channel to the host's resident agent for this runtime version, or None (then the agent is exec'd):
        none runs yet (first deploy), the host refuses stream-local forwarding (``AllowStreamLocalForwarding
        no``), or this target has it turned off. A refusal costs one round trip and starts nothing on the host."""
        if not self.resident_agent:
            return None
        path = (
            f"{facts.deploy_root}/{RUNTIME_DIR}/{version or self._runtime_version()}/{agent_protocol.RESIDENT_SOCKET}"
        )
        try:
            return open_unix_channel(transport, path, self.timeouts.connect_s)
        except paramiko.ChannelException as exc:
            log.debug("%s: no resident agent (%s); starting the agent", self.label, exc)
            return None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(f"{self.label}: cannot open a channel: {exc}") from exc

    def _agent(self, conn: SshConnection, facts: HostFacts, command: str, **kwargs: Any) -> Any:
        """Run one agent command (see :meth:`_agent_once`); a resident agent that does not greet in time is left
        alone and the command runs in an exec'd agent instead."""
        try:
            return self._agent_once(conn, facts, command, **kwargs)
        except _ResidentSilent:
            log.warning("%s: the resident agent did not answer; starting the agent instead", self.label)
            self.agent_routes[-1] = "resident (no answer)"
            return self._agent_once(conn, facts, command, use_resident=False, **kwargs)

    def _agent_once(
        self,
        conn: SshConnection,
        facts: HostFacts,
        command: str,
        *,
        name: str | None = None,
        request: dict[str, Any] | None = None,
        progress: Progress = no_progress,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        version: str | None = None,
        lifeline: bool = False,
        extra: str = "",
        fraction_base: float = 0.0,
        on_need: Callable[[dict[str, Any], Callable[[bytes], None]], bytes] | None = None,
        use_resident: bool = True,
    ) -> Any:
        """Run one agent command, streaming its progress events; return its result or raise its error.

        The host's resident agent runs it when one listens (no process start on the host), else an exec'd agent
        does; the protocol below is the same either way.

        Commands that switch releases keep stdin open as the agent's lifeline: cancelling sends
        ``cancel`` and waits for the agent to clean up; losing the connection closes it. ``on_need``
        answers the agent's ``need`` lines (the push's upload runs inside it; its deadline restarts after).
        """
        timeout = timeout or self.timeouts.command_s
        env = "".join(f"{k}={quote(v)} " for k, v in sorted(self.agent_env.items()))
        cmd = (
            f"{env}exec {quote(self._python(facts, version))} -m {AGENT_MODULE} {command}"
            + (f" {quote(name)}" if name else "")
            + f" --deploy-root {quote(facts.deploy_root)}{extra}"
        )
        transport = conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachable(f"{self.label}: the connection was closed")
        chan = self._open_resident(transport, facts, version) if use_resident else None
        resident = chan is not None
        if chan is None:
            try:
                chan = transport.open_session(timeout=self.timeouts.connect_s)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise HostUnreachable(f"{self.label}: cannot open a session: {exc}") from exc
        self.agent_routes.append("resident" if resident else "exec")
        buffer = b""
        err: list[bytes] = []
        outcome: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout
        # A resident agent greets from its forked child before anything runs; silence means a wedged process
        # (it got no request, so it does nothing) and the command goes the exec way instead.
        hello_deadline = time.monotonic() + self.timeouts.connect_s if resident else None
        cancel_sent_at: float | None = None
        try:
            chan.settimeout(0.1)
            if resident:
                argv = [command, *([name] if name else []), "--deploy-root", facts.deploy_root, *shlex.split(extra)]
                chan.sendall(json.dumps({"argv": argv, "env": self.agent_env}).encode() + b"\n")
            else:
                chan.exec_command(cmd)
            if request is not None:
                chan.sendall(json.dumps(request).encode() + b"\n")
            if not lifeline:
                chan.shutdown_write()
            while True:
                if cancel is not None and cancel.is_set() and cancel_sent_at is None:
                    cancel_sent_at = time.monotonic()
                    with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                        chan.sendall(b"cancel\n")
                    deadline = min(deadline, cancel_sent_at + 60.0)
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                try:
                    data = chan.recv(65536)
                except TimeoutError:
                    data = None
                if data:
                    buffer += data
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        obj = self._agent_line(line, progress, fraction_base)
                        if obj is not None and "hello" in obj:
                            hello_deadline = None
                        elif obj is not None and "need" in obj:
                            if on_need is None:
                                raise TargetError(f"{self.label}: the host's agent asked for files during `{command}`")
                            # _AgentStopped: it stopped reading mid-upload; its error line follows.
                            with contextlib.suppress(_AgentStopped):
                                self._send(chan, on_need(obj["need"], lambda data: self._send(chan, data)))
                            deadline = time.monotonic() + timeout
                        else:
                            outcome = obj or outcome
                elif data == b"":  # EOF on stdout: the agent finished (or died)
                    break
                if hello_deadline is not None and time.monotonic() > hello_deadline:
                    raise _ResidentSilent
                if not transport.is_active():
                    raise HostUnreachable(
                        f"{self.label}: the connection dropped during `{command}`",
                        hint="the host keeps (or returns to) the previous release; run the command again",
                    )
                if time.monotonic() > deadline:
                    raise TargetError(f"{self.label}: the host's agent did not finish `{command}` in {timeout:.0f} s")
            if buffer.strip():
                outcome = self._agent_line(buffer, progress, fraction_base) or outcome
            if resident:  # a socket has no exit status: the answer line is what counts
                exit_status = 0 if outcome is not None else -1
            else:
                status_deadline = time.monotonic() + 10
                while not chan.exit_status_ready() and time.monotonic() < status_deadline:
                    time.sleep(0.01)
                exit_status = chan.exit_status if chan.exit_status_ready() else -1
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise HostUnreachable(f"{self.label}: connection lost during `{command}`: {exc}") from exc
        finally:
            close_channel(chan)
        if outcome is None and resident and transport.is_active():
            raise TargetError(
                f"{self.label}: the host's resident agent ended without an answer to `{command}`",
                hint="run the command again (the previous release keeps serving); the host's "
                f"{facts.deploy_root}/{RUNTIME_DIR}/<version>/{agent_protocol.RESIDENT_LOG} says why",
            )
        if outcome is None and (exit_status == -1 or not transport.is_active()) and not self._still_connected(conn):
            raise HostUnreachable(
                f"{self.label}: the connection dropped during `{command}`",
                hint="the host keeps (or returns to) the previous release; run the command again",
            )
        if outcome is None:
            tail = "\n".join(b"".join(err).decode("utf-8", "replace").strip().splitlines()[-5:])
            if exit_status == 127 or "No such file" in tail:
                # Only exit 127 (the shell found no interpreter, or the agent saw an incomplete install) means
                # nothing ran: a deploy may then inspect the host and try again.
                kind = _RuntimeMissing if exit_status == 127 else TargetError
                raise kind(
                    f"{self.label}: the ModelDeck runtime is not installed under {facts.deploy_root}",
                    hint="deploy once to install it",
                )
            raise TargetError(
                f"{self.label}: the host's agent exited {exit_status} without an answer to `{command}`",
                hint=tail or None,
            )
        if "error" in outcome:
            raise _agent_error(outcome["error"], self.label)
        return outcome.get("result")

    def _agent_line(self, line: bytes, progress: Progress, fraction_base: float = 0.0) -> dict[str, Any] | None:
        """Relay one protocol line: events go to ``progress`` (their fractions mapped into
        ``fraction_base..1`` so a deploy's bar never runs backwards), a result or error is returned."""
        try:
            obj = json.loads(line)
        except ValueError:
            log.debug("%s agent: %s", self.label, line[:200])
            return None
        if not isinstance(obj, dict):
            return None
        if "event" in obj:
            ev = obj["event"]
            fraction = ev.get("fraction")
            if isinstance(fraction, (int, float)):
                fraction = fraction_base + (1.0 - fraction_base) * float(fraction)
            progress(ProgressEvent(str(ev.get("step")), str(ev.get("message")), fraction, host=self.label))
            return None
        if "result" in obj or "error" in obj or "need" in obj or "hello" in obj:
            return obj
        return None

    def _result(self, raw: dict[str, Any]) -> DeployResult:
        status = self._status(raw["status"]) if raw.get("status") else None
        return DeployResult(raw["name"], raw["outcome"], status, raw.get("message", ""))

    def _status(self, raw: dict[str, Any]) -> DeploymentStatus:
        known = {k: v for k, v in raw.items() if k in DeploymentStatus.__dataclass_fields__}
        endpoint = known.get("endpoint")
        if endpoint:
            scheme, _, rest = endpoint.partition("://")
            host, _, port = rest.rpartition(":")
            if host in _LOCAL_NAMES and self.bind_host in _WILDCARD:
                host = self.endpoint.host if ":" not in self.endpoint.host else f"[{self.endpoint.host}]"
            known["endpoint"] = f"{scheme}://{host}:{port}"
        known["target_url"] = self.url
        return DeploymentStatus(**known)

    def _with_agent(self, fn: Callable[[SshConnection, HostFacts, str | None], Any]) -> Any:
        """Connect, detect facts and pick the installed runtime (this version if present, else the newest).

        A known host (facts cached by a deploy) skips the facts script: one remote command, as for a deploy.
        """
        with self.connect() as conn:
            cached = self._cached_facts(conn)
            if cached is not None:
                try:
                    return fn(conn, cached, self._runtime_version())
                except _RuntimeMissing:  # the runtime was removed: nothing ran; inspect the host again
                    self._forget_facts(conn)
            facts = self.facts(conn)
            mine = self._runtime_version()
            if mine in facts.runtime_versions:
                version: str | None = mine
            else:
                version = facts.runtime_versions[-1] if facts.runtime_versions else None
            return fn(conn, facts, version)

    # -- the rest of the protocol ----------------------------------------------------------------------
    def status(self, name: str | None = None) -> list[DeploymentStatus]:
        """Deployments on the host (state file + supervisor liveness + ``/health``, all read on the host)."""

        def run(conn: SshConnection, facts: HostFacts, version: str | None) -> list[DeploymentStatus]:
            if version is None:
                if name:
                    raise DeployError(f"no deployment named {name!r} on {self.label}", hint="see `modeldeck status`")
                return []
            raw = self._agent(conn, facts, "status", name=name, version=version)
            return [self._status(s) for s in raw]

        return list(self._with_agent(run))

    def _switching(self, command: str, name: str, progress: Progress, cancel: threading.Event | None) -> DeployResult:
        def run(conn: SshConnection, facts: HostFacts, version: str | None) -> DeployResult:
            if version is None:
                raise DeployError(f"no deployment named {name!r} on {self.label}")
            raw = self._agent(
                conn,
                facts,
                command,
                name=name,
                version=version,
                progress=progress,
                cancel=cancel,
                lifeline=True,
                timeout=300.0,
            )
            return self._result(raw)

        return self._with_agent(run)  # type: ignore[no-any-return]

    def rollback(
        self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None
    ) -> DeployResult:
        """Switch back to the host's recorded previous release (health-gated, start-first)."""
        return self._switching("rollback", name, progress, cancel)

    def start(self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None) -> DeployResult:
        """Start a stopped deployment's active release again (health-gated)."""
        return self._switching("start", name, progress, cancel)

    def stop(self, name: str) -> DeploymentStatus:
        """Drain and stop the deployment's runtime on the host; it stays installed."""

        def run(conn: SshConnection, facts: HostFacts, version: str | None) -> DeploymentStatus:
            if version is None:
                raise DeployError(f"no deployment named {name!r} on {self.label}")
            return self._status(self._agent(conn, facts, "stop", name=name, version=version, timeout=120.0))

        return self._with_agent(run)  # type: ignore[no-any-return]

    def logs(self, name: str, lines: int = 200) -> str:
        """The last ``lines`` lines of the deployment's runtime log on the host."""

        def run(conn: SshConnection, facts: HostFacts, version: str | None) -> str:
            if version is None:
                raise DeployError(f"no deployment named {name!r} on {self.label}")
            raw = self._agent(conn, facts, "logs", name=name, version=version, extra=f" --lines {int(lines)}")
            return str(raw.get("text", ""))

        return self._with_agent(run)  # type: ignore[no-any-return]

    def input_example(self, name: str) -> dict[str, Any] | None:
        """The active release's input example as an ``/invocations`` body (None if it has none)."""

        def run(conn: SshConnection, facts: HostFacts, version: str | None) -> Any:
            if version is None:
                raise DeployError(f"no deployment named {name!r} on {self.label}")
            return self._agent(conn, facts, "input-example", name=name, version=version).get("example")

        return self._with_agent(run)  # type: ignore[no-any-return]

    def undeploy(self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None) -> None:
        """Stop every process of the deployment on the host and remove it (releases, logs, state, unit)."""

        def run(conn: SshConnection, facts: HostFacts, version: str | None) -> None:
            if version is None:
                raise DeployError(f"no deployment named {name!r} on {self.label}")
            self._agent(conn, facts, "undeploy", name=name, version=version, progress=progress, timeout=120.0)
            if facts.systemd and self.systemd:
                self._remove_unit(conn, facts, name)

        self._with_agent(run)

    # -- systemd (generated and installed when the host runs systemd; not exercised by the test suite) ---
    def _unit_path(self, facts: HostFacts, name: str) -> tuple[str, str]:
        unit = f"modeldeck-{name}.service"
        if facts.systemd == "system" and self.endpoint.user == "root":
            return f"/etc/systemd/system/{unit}", "systemctl"
        return f"{facts.home}/.config/systemd/user/{unit}", "systemctl --user"

    def _install_unit(self, conn: SshConnection, facts: HostFacts, name: str) -> None:
        path, ctl = self._unit_path(facts, name)
        text = systemd_unit(name, self._python(facts), facts.deploy_root, user_mode=ctl != "systemctl")
        unit = posixpath.basename(path)
        cmd = (
            f"mkdir -p {quote(posixpath.dirname(path))} && printf '%s' {quote(text)} > {quote(path)}"
            f" && {ctl} daemon-reload && {ctl} enable {quote(unit)}"
        )
        result = conn.run(cmd, timeout=self.timeouts.command_s)
        if not result.ok:  # the deployment serves anyway; only reboot persistence is missing
            log.warning("%s: could not enable %s: %s", self.label, unit, result.stderr.strip()[-300:])

    def _remove_unit(self, conn: SshConnection, facts: HostFacts, name: str) -> None:
        path, ctl = self._unit_path(facts, name)
        unit = posixpath.basename(path)
        conn.run(
            f"if [ -f {quote(path)} ]; then {ctl} disable {quote(unit)}; rm -f {quote(path)}; {ctl} daemon-reload; fi",
            timeout=self.timeouts.command_s,
        )


class _VerifiedBundles:
    """Bundles this process has verified, by the stat of every file (size, inode, mtime and ctime: any write changes
    one): a fleet deploy's hosts share one sha256 pass over the bundle instead of one each (20 MiB: ~0.03 CPU-s per
    host). The hosts check every file's sha256 again whatever this says; this only fails a bad bundle early."""

    def __init__(self, size: int = 8) -> None:
        self.lock = threading.Lock()  # held while verifying: a fleet's hosts start at once, one of them hashes
        self.size = size
        self.known: dict[tuple[str, tuple[tuple[str, int, int, int, int], ...]], Manifest] = {}

    @staticmethod
    def _signature(path: Path) -> tuple[tuple[str, int, int, int, int], ...]:
        sig = []
        for f in sorted(path.rglob("*")):
            st = f.lstat()
            sig.append((f.relative_to(path).as_posix(), st.st_size, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(sig)

    def check(self, path: Path) -> Manifest:
        """:func:`verify_bundle`, unless this process verified the same files unchanged before."""
        with self.lock:
            try:
                key = (str(path.resolve()), self._signature(path))
            except OSError:
                return verify_bundle(path)  # reports what is wrong
            manifest = self.known.get(key)
            if manifest is None:
                manifest = verify_bundle(path)
                if len(self.known) >= self.size:
                    self.known.pop(next(iter(self.known)))
                self.known[key] = manifest
            return manifest


_VERIFIED = _VerifiedBundles()


class _AgentStopped(Exception):
    """The agent closed its end of the channel while we were sending (its error line is on the way)."""


class _ResidentSilent(Exception):
    """The resident agent took the connection but did not greet in time (nothing ran)."""


class _RuntimeMissing(TargetError):
    """The runtime venv's interpreter could not start the agent (exit 127): nothing ran on the host."""


class _TransferMeter:
    """Bytes sent across one upload's files, reported at most every 0.2 s or 2 MiB as a share of ``span``."""

    def __init__(
        self, emit: Callable[[str, float], None], items: list[tuple[LocalFile, str]], span: tuple[float, float]
    ) -> None:
        self.emit, self.span = emit, span
        self.total = sum(f.size for f, _ in items) or 1
        self.sent = 0
        self.started = time.monotonic()
        self._last_report = 0.0
        self._last_sent = 0

    def add(self, n: int, rel: str) -> None:
        self.sent += n
        now = time.monotonic()
        if now - self._last_report > 0.2 or self.sent - self._last_sent >= 2 * 1024 * 1024:
            self._last_report, self._last_sent = now, self.sent
            rate = self.sent / max(now - self.started, 1e-6) / 1e6
            share = self.span[0] + (self.span[1] - self.span[0]) * min(self.sent / self.total, 1.0)
            self.emit(f"{rel}: {self.sent // 1024} of {self.total // 1024} KiB ({rate:.0f} MB/s)", share)

    def finish(self) -> None:
        self.emit(f"sent {self.sent // 1024} KiB in {time.monotonic() - self.started:.1f} s", self.span[1])


def _agent_error(data: dict[str, Any], label: str) -> ModelDeckError:
    kind: Any = getattr(errors, str(data.get("type")), None)
    message = f"{label}: {data.get('message')}"
    hint = data.get("hint")
    if kind is Cancelled:
        return Cancelled(message)
    if isinstance(kind, type) and issubclass(kind, ModelDeckError):
        with contextlib.suppress(TypeError):  # classes with their own constructor (host-key errors) fall through
            return kind(message, hint=hint)
    return DeployError(message, hint=hint)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()
