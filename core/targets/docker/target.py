"""The Docker target: deployments as containers on a local or remote engine.

Each release of a deployment ``NAME`` runs as ``replicas`` containers named
``modeldeck-NAME-<release-id>-<i>`` on the engine's **host network**. The runtime in each binds
the public ``HOST:PORT`` with ``SO_REUSEPORT`` (listening only once warm) plus a private
``127.0.0.1:0`` health port, under the runtime's supervisor. All images run the runtime as the
same uid (10001), which ``SO_REUSEPORT`` requires, so:

1. the old release is *pinned* (SIGUSR1 to its supervisor: a classic-BPF program on the port's
   reuseport group keeps every new connection on it -- see :mod:`modeldeck.core.targets.reuseport`);
2. the new containers start beside it and must pass the health gate on their private port:
   ready file, ``/health``, ``/version`` naming the new bundle, and the bundle's own input
   example -- checked *inside* the container with ``exec`` (stdlib ``urllib``), so the gate works
   the same for remote engines whose host network we cannot reach;
3. the new release is committed (a new state record, below), its containers get the restart
   policy ``on-failure:N``, and the old release gets SIGUSR2: its supervisor hands the port over
   to the new socket, waits until its accept queue is empty, then drains (SIGTERM) and exits.

The pin needs ``pidfd_getfd(2)``, which Docker's default seccomp profile allows only with
``CAP_SYS_PTRACE``; containers get that capability added (the runtime runs as uid 10001, so it
holds no capabilities itself; ptrace stays limited to its own processes). With several replicas
the port is shared by hash during the switch instead (a few requests may see a reset).

Any failure before the commit removes the new containers; the old release keeps serving and
the result says why (``failed (rolled back)``). Deployment state lives on the engine, so any
machine that reaches it sees the same ``status``: containers carry labels (deployment, release,
model, version, bundle sha, image), and a *state record* -- a created, never-started container
``modeldeck-NAME-state-<generation>`` whose labels hold the active and previous release and
image, port and settings -- is replaced (new generation first, then the old one removed) at
every commit. Leftovers of an interrupted operation (containers of a release the record does
not name) are removed by the next operation on the deployment.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modeldeck.core.errors import BundleError, Cancelled, DeployError, ModelDeckError, TargetError
from modeldeck.core.runtime.manifest import Manifest, verify_bundle
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
from modeldeck.core.targets.docker import image as images
from modeldeck.core.targets.docker.engine import DEFAULT_TIMEOUT_S, EngineSpec, connect, engine_error, parse_engine_url

log = logging.getLogger(__name__)

L_DEPLOYMENT = "io.modeldeck.deployment"
L_RELEASE = "io.modeldeck.release"
L_ROLE = "io.modeldeck.role"  # "runtime" or "state"
L_IMAGE = "io.modeldeck.image"
L_REPLICA = "io.modeldeck.replica"
L_GENERATION = "io.modeldeck.generation"
L_STATE = "io.modeldeck.state"  # JSON of DockerState on the record container
_STOP_TIMEOUT_S = 35  # the runtime's 30 s graceful drain + margin
_RUNTIME_UID = f"{images.RUNTIME_UID}:{images.RUNTIME_UID}"
_MEMORY_RE = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)

# Runs inside a container (stdlib only): one pass of the health gate against the private port.
# Exit 0 = healthy (JSON summary on stdout), 3 = not ready yet, 1 = failed (JSON with the reason).
_PROBE = r"""
import json, sys, time, urllib.request, urllib.error
ready_path, public_port, expect_sha, check_example = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
def done(code, **info):
    print(json.dumps(info)); sys.exit(code)
try:
    ready = json.load(open(ready_path))
except (OSError, ValueError):
    done(3, message="not ready")
binds = ready.get("private_binds")
if binds is None:
    binds = [b for b in ready.get("binds", []) if not b.endswith(":" + public_port)]
if not binds:
    done(1, message="the runtime reported no private port: %s" % ready.get("binds"))
base = "http://" + binds[-1]
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(), time.perf_counter() - t
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.perf_counter() - t
    except OSError as e:
        done(1, message="%s: %s" % (path, e))
status, body, _ = call("GET", "/health")
if status != 200:
    done(1, message="health check failed: /health HTTP %d" % status)
status, body, _ = call("GET", "/version")
got = json.loads(body or b"{}").get("bundle_sha256")
if status != 200 or (got and got != expect_sha):
    done(1, message="health check failed: the runtime serves bundle %s, not the new one" % str(got)[:12])
if not check_example:
    done(0, message="healthy", private=binds[-1])
manifest = json.load(open("/opt/modeldeck/bundle/manifest.json"))
name = manifest.get("input_example_file")
if not name:
    done(0, message="healthy (the bundle has no input example)", private=binds[-1])
example = json.load(open("/opt/modeldeck/bundle/" + name))
if isinstance(example, dict) and "columns" in example and "data" in example and "dataframe_split" not in example:
    example = {"dataframe_split": example}
elif isinstance(example, list):
    example = {"inputs": example}
status, body, elapsed = call("POST", "/invocations", example)
if status != 200:
    done(1, message="the input example failed: HTTP %d: %s" % (status, body[:200].decode(errors="replace")))
preds = json.loads(body).get("predictions")
if not isinstance(preds, list):
    done(1, message="the input example got a malformed answer: %s" % body[:200].decode(errors="replace"))
done(0, message="healthy; the example answered %d prediction(s) in %.0f ms" % (len(preds), elapsed * 1000),
     private=binds[-1])
"""


@dataclass(frozen=True)
class DockerSettings:
    """Docker-specific deploy settings, from ``DeployOptions.extra`` (unknown keys are refused).

    ``image``: run this prebuilt image (tag or ``REPO@sha256:…``; pulled if absent) instead of
    building one; its bundle-sha256 label must match the bundle. ``base_image``: what images are
    built on. ``cpus``/``memory``: limits per container (``memory`` like ``512m``). ``replicas``:
    containers per release sharing the port. ``restart_retries``: the ``on-failure:N`` policy.
    ``restart_unhealthy``: :func:`watch_health` restarts this deployment's unhealthy containers.
    """

    image: str | None = None
    base_image: str = images.DEFAULT_BASE_IMAGE
    cpus: float | None = None
    memory: str | None = None
    replicas: int = 1
    restart_retries: int = 3
    restart_unhealthy: bool = False

    KEYS = ("image", "base_image", "cpus", "memory", "replicas", "restart_retries", "restart_unhealthy")

    @classmethod
    def from_extra(cls, extra: dict[str, Any] | None) -> DockerSettings:
        extra = dict(extra or {})
        unknown = sorted(set(extra) - set(cls.KEYS))
        if unknown:
            raise DeployError(f"unknown docker option(s): {', '.join(unknown)}", hint=f"known: {', '.join(cls.KEYS)}")
        settings = cls(**{k: v for k, v in extra.items() if v is not None})
        if settings.cpus is not None and not 0 < float(settings.cpus) <= 1024:
            raise DeployError(f"--cpus must be a positive number, not {settings.cpus!r}")
        if settings.memory is not None and not _MEMORY_RE.match(str(settings.memory)):
            raise DeployError(f"invalid --memory {settings.memory!r}", hint="use bytes or a unit: 512m, 2g")
        if not 1 <= int(settings.replicas) <= 64:
            raise DeployError(f"--replicas must be 1..64, not {settings.replicas!r}")
        if not 0 <= int(settings.restart_retries) <= 100:
            raise DeployError(f"restart retries must be 0..100, not {settings.restart_retries!r}")
        return settings


@dataclass(frozen=True)
class DockerState:
    """What the state record holds (the source of truth for ``status``, ``rollback``, ``start``)."""

    name: str
    host: str
    port: int
    active_release: str | None = None
    active_image: str | None = None  # image ID or REPO@sha256 digest, exactly what runs
    previous_release: str | None = None
    previous_image: str | None = None
    desired: str = "running"
    started_at: str | None = None
    bundle_sha256: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory: str | None = None
    replicas: int = 1
    restart_retries: int = 3
    restart_unhealthy: bool = False
    generation: int = 0

    def to_json(self) -> str:
        from dataclasses import asdict

        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DockerState:
        from dataclasses import fields

        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class HealthEvent:
    """One health change :func:`watch_health` saw (``status`` is ``healthy``/``unhealthy``/``starting``)."""

    deployment: str
    container: str
    status: str
    restarted: bool = False
    at: float = 0.0


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


class DockerTarget:
    """Deployments on one Docker engine (see the module docs for the replacement scheme)."""

    kind = "docker"

    def __init__(
        self,
        spec: EngineSpec,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        client: Any = None,
        steer_port: bool = True,
        **_ignored: object,
    ) -> None:
        self.spec = spec
        self.timeout = timeout
        self._client = client
        self.steer_port = steer_port  # False: share the port by hash during switches (for comparison)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        identity: str | None = None,
        accept_host_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        **ignored: object,
    ) -> DockerTarget:
        """``docker://``, ``docker+ssh://USER@HOST`` (``identity``, ``accept_host_key``), ``docker+tcp://HOST:PORT``
        (TLS files); other keywords (e.g. the local target's ``root``) are accepted and ignored so callers can
        pass the same ones to any target."""
        spec = parse_engine_url(
            url, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, identity=identity, accept_host_key=accept_host_key
        )
        return cls(spec, timeout=timeout)

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def client(self) -> Any:
        """The engine client (connected and pinged on first use; :class:`TargetError` if unreachable)."""
        if self._client is None:
            self._client = connect(self.spec, timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    @contextlib.contextmanager
    def _engine(self, what: str) -> Iterator[None]:
        """Map any library exception raised inside to a ModelDeck error saying what we were doing."""
        try:
            yield
        except (ModelDeckError, Cancelled):
            raise
        except Exception as exc:
            raise engine_error(exc, spec=self.spec, what=what) from exc

    # -- state record ----------------------------------------------------------------------------
    def _records(self, name: str | None = None) -> list[Any]:
        labels = [f"{L_ROLE}=state"] + ([f"{L_DEPLOYMENT}={name}"] if name else [])
        with self._engine("listing deployments"):
            return list(self.client.containers.list(all=True, filters={"label": labels}))

    def read_state(self, name: str) -> DockerState | None:
        """The newest state record of ``name``, or None if it was never deployed here."""
        best: tuple[int, DockerState] | None = None
        for c in self._records(name):
            labels = c.labels or {}
            try:
                state = DockerState.from_json(labels[L_STATE])
            except (KeyError, ValueError, TypeError):
                log.warning("ignoring unreadable state record %s", c.name)
                continue
            if best is None or state.generation > best[0]:
                best = (state.generation, state)
        return best[1] if best else None

    def _write_state(self, state: DockerState) -> DockerState:
        """Commit ``state`` as a new record generation, then drop older records. The create is the commit."""
        new = replace(state, generation=state.generation + 1)
        image = new.active_image or new.previous_image
        if image is None:
            raise DeployError("internal: a state record needs an image")
        labels = {L_DEPLOYMENT: new.name, L_ROLE: "state", L_STATE: new.to_json(), L_GENERATION: str(new.generation)}
        with self._engine("recording the deployment state"):
            self.client.containers.create(
                image,
                name=f"modeldeck-{new.name}-state-{new.generation}",
                labels=labels,
                entrypoint=["true"],
                command=[],
                network_mode="none",
            )
            for c in self._records(new.name):
                if (c.labels or {}).get(L_GENERATION) != str(new.generation):
                    with contextlib.suppress(Exception):
                        c.remove(force=True)
        return new

    def _runtime_containers(self, name: str | None = None, release: str | None = None) -> list[Any]:
        labels = [f"{L_ROLE}=runtime"]
        if name:
            labels.append(f"{L_DEPLOYMENT}={name}")
        if release:
            labels.append(f"{L_RELEASE}={release}")
        with self._engine("listing containers"):
            found = list(self.client.containers.list(all=True, filters={"label": labels}))
        return sorted(found, key=lambda c: (c.labels or {}).get(L_REPLICA, ""))

    def _remove_leftovers(self, state: DockerState | None, name: str) -> list[str]:
        """Remove containers of releases the record does not name as active (an interrupted operation's)."""
        removed = []
        for c in self._runtime_containers(name):
            if state is None or (c.labels or {}).get(L_RELEASE) != state.active_release:
                log.info("removing leftover container %s", c.name)
                with self._engine(f"removing leftover container {c.name}"):
                    c.remove(force=True)
                removed.append(c.name)
        return removed

    # -- planning --------------------------------------------------------------------------------
    def _checked_bundle(self, bundle_dir: Path) -> Manifest:
        try:
            return verify_bundle(Path(bundle_dir))
        except BundleError as exc:
            raise DeployError(f"cannot deploy {bundle_dir}: {exc.message}", hint=exc.hint) from exc

    def _name_for(self, manifest: Manifest, options: DeployOptions) -> str:
        return releases.validate_name(options.name or releases.name_from_model(manifest.model_name))

    def _choose_port(self, state: DockerState | None, options: DeployOptions) -> tuple[str, int]:
        host = options.host or "127.0.0.1"
        if options.port is not None:
            port = options.port
        elif state is not None:
            port = state.port
        elif self.spec.is_local:
            from modeldeck.core.targets.local import free_port

            port = free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        else:
            port = images.DEFAULT_PORT
        if not 1 <= port <= 65535:
            raise DeployError(f"port {port} is out of range 1..65535")
        ours = state is not None and state.port == port and state.host == host and self._serving(state)
        if self.spec.is_local and not ours:
            from modeldeck.core.targets.local import port_is_free

            if not port_is_free(host, port):
                raise DeployError(
                    f"port {port} on {host} is already in use", hint="stop the other program or pick another --port"
                )
        return host, port

    def plan(self, bundle_dir: Path, options: DeployOptions) -> Plan:
        """What :meth:`deploy` would do; validates bundle, name, settings and port, changes nothing."""
        manifest = self._checked_bundle(bundle_dir)
        settings = DockerSettings.from_extra(options.extra)
        name = self._name_for(manifest, options)
        state = self.read_state(name)
        host, port = self._choose_port(state, options)
        serving = state is not None and self._serving(state)
        image_step = (
            PlannedStep("image", f"use image {settings.image}")
            if settings.image
            else PlannedStep(
                "build", f"build an image of {manifest.model_name} v{manifest.model_version} on {settings.base_image}"
            )
        )
        steps = [
            image_step,
            PlannedStep("start", f"start {settings.replicas} container(s) on {host}:{port} beside the current ones"),
            PlannedStep("health", "wait until ready, check /health and answer the bundle's input example"),
            PlannedStep(
                "switch",
                f"commit and drain the old release {state.active_release}" if serving and state else "commit",
            ),
        ]
        return Plan(
            self.url + f" ({host}:{port})",
            name,
            tuple(steps),
            replaces=state.active_release if serving and state else None,
        )

    # -- deploy ----------------------------------------------------------------------------------
    def deploy(
        self,
        bundle_dir: Path,
        options: DeployOptions,
        progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> DeployResult:
        """Build (or take) an image of ``bundle_dir`` and switch the deployment to it, health-gated.

        Validation errors raise before anything changes on the engine. A failed gate returns
        ``failed (rolled back)`` (``failed`` if nothing served) with the reason; the old release
        keeps serving. :class:`Cancelled` after the same clean-up.
        """
        _check_cancel(cancel)
        progress(ProgressEvent("verify", "verifying the bundle", 0.02))
        manifest = self._checked_bundle(bundle_dir)
        settings = DockerSettings.from_extra(options.extra)
        name = self._name_for(manifest, options)
        state = self.read_state(name)
        self._remove_leftovers(state, name)
        host, port = self._choose_port(state, options)
        if (
            state is not None
            and releases.serves_bundle(state.bundle_sha256, state.model_name, state.model_version, manifest)
            and state.port == port
            and state.host == host
            and (settings.image is None or settings.image == state.active_image)
            and self._serving(state)
        ):
            progress(ProgressEvent("done", "already installed; nothing to do", 1.0))
            return DeployResult(name, "already-installed", self._status_of(state), "this bundle is already serving")
        image_ref = self._image_for(name, bundle_dir, manifest, settings, progress, cancel)
        release_id = releases.new_release_id(manifest.sha256)
        return self._switch(
            name,
            state,
            release_id,
            image_ref,
            host=host,
            port=port,
            env=dict(options.env),
            settings=settings,
            check_example=options.health.check_example,
            start_period_s=options.health.start_period_s,
            progress=progress,
            cancel=cancel,
            outcome="deployed",
        )

    def _image_for(
        self,
        name: str,
        bundle_dir: Path,
        manifest: Manifest,
        settings: DockerSettings,
        progress: Progress,
        cancel: threading.Event | None,
    ) -> str:
        """The image reference to run: ``settings.image`` (pulled if needed, checked) or a fresh build."""
        if settings.image:
            progress(ProgressEvent("image", f"using image {settings.image}", 0.1))
            image = self._ensure_image(settings.image, progress)
            got = (image.labels or {}).get(images.LABEL_SHA)
            if got != manifest.sha256:
                raise DeployError(
                    f"image {settings.image} holds bundle {str(got)[:12]}…, not {manifest.sha256[:12]}…",
                    hint="build the image from this bundle (`modeldeck build`)",
                )
            return settings.image if "@sha256:" in settings.image else str(image.id)
        version = re.sub(r"[^A-Za-z0-9_.-]", "-", str(manifest.model_version))
        tag = f"modeldeck/{name.lower()}:v{version}-{manifest.sha256[:12]}"

        def show(message: str, fraction: float | None) -> None:
            progress(ProgressEvent("build", message, None if fraction is None else 0.05 + 0.25 * fraction))

        result = images.build_image(
            self.client,
            bundle_dir,
            images.BuildOptions(tag=tag, base_image=settings.base_image, extra_labels={L_DEPLOYMENT: name}),
            progress=show,
            cancel=cancel,
        )
        return result.image_id

    def _ensure_image(self, ref: str, progress: Progress) -> Any:
        import docker.errors

        with self._engine(f"inspecting image {ref}"):
            try:
                return self.client.images.get(ref)
            except docker.errors.ImageNotFound:
                pass
        progress(ProgressEvent("pull", f"pulling {ref}", 0.1))
        try:
            repo, _, digest = ref.partition("@")
            if digest:
                self.client.api.pull(repo, tag=digest)
            else:
                r, t = images.split_tag(ref)
                self.client.api.pull(r, tag=t)
            return self.client.images.get(ref)
        except Exception as exc:
            err = engine_error(exc, spec=self.spec)
            raise DeployError(
                f"cannot pull image {ref}: {err.message}",
                hint="check the name/digest, that the registry is reachable from the engine, and `docker login`",
            ) from exc

    # -- the switch ------------------------------------------------------------------------------
    def _switch(
        self,
        name: str,
        state: DockerState | None,
        release_id: str,
        image_ref: str,
        *,
        host: str,
        port: int,
        env: dict[str, str],
        settings: DockerSettings,
        check_example: bool,
        start_period_s: float,
        progress: Progress,
        cancel: threading.Event | None,
        outcome: str,
        previous: tuple[str | None, str | None] | None = None,
    ) -> DeployResult:
        """Start ``image_ref`` as release ``release_id`` beside the serving one, gate, commit, retire the old."""
        old = self._runtime_containers(name, state.active_release) if state and state.active_release else []
        old_running = [c for c in old if c.status == "running"]
        with self._engine(f"inspecting image {image_ref}"):
            image = self.client.images.get(image_ref)
        labels_of_image = image.labels or {}
        expect_sha = labels_of_image.get(images.LABEL_SHA, "")
        pinned = False
        started: list[Any] = []
        summary = ""
        try:
            if (
                self.steer_port
                and len(old_running) == 1
                and settings.replicas == 1
                and state is not None
                and state.port == port
            ):
                pinned = self._pin(old_running[0])
            for i in range(settings.replicas):
                _check_cancel(cancel)
                progress(ProgressEvent("start", f"starting {release_id} replica {i + 1} on {host}:{port}", 0.35))
                started.append(
                    self._run_container(name, release_id, i, image_ref, labels_of_image, host, port, env, settings)
                )
            summaries = []
            for c in started:
                progress(ProgressEvent("health", f"waiting for {c.name} to be ready and answer the example", 0.5))
                summaries.append(self._gate(c, port, expect_sha, check_example, start_period_s, cancel))
            summary = summaries[0] if summaries else "healthy"
            _check_cancel(cancel)
        except (ModelDeckError, OSError) as exc:
            reason = exc.message if isinstance(exc, ModelDeckError) else str(exc)
            log.warning("release %s of %s failed: %s", release_id, name, reason)
            self._discard(started)
            if isinstance(exc, Cancelled):
                progress(ProgressEvent("done", "cancelled; the previous release is still serving", 1.0))
                raise
            if isinstance(exc, TargetError):
                raise  # the engine went away: not a verdict on the release
            serving = bool(old_running)
            result_outcome = "failed (rolled back)" if serving else "failed"
            progress(ProgressEvent("done", f"{result_outcome}: {reason}", 1.0))
            return DeployResult(name, result_outcome, self._status_of(state) if state and serving else None, reason)
        except BaseException:
            self._discard(started)
            raise

        progress(ProgressEvent("switch", f"committing release {release_id}", 0.85))
        if previous is None:
            previous = (
                (state.active_release, state.active_image)
                if state and state.active_release and state.active_release != release_id
                else ((state.previous_release, state.previous_image) if state else (None, None))
            )
        new_state = DockerState(
            name=name,
            host=host,
            port=port,
            active_release=release_id,
            active_image=image_ref,
            previous_release=previous[0],
            previous_image=previous[1],
            desired="running",
            started_at=_utc_now(),
            bundle_sha256=expect_sha or None,
            model_name=labels_of_image.get(images.LABEL_MODEL),
            model_version=labels_of_image.get(images.LABEL_VERSION),
            env=env,
            cpus=settings.cpus,
            memory=settings.memory,
            replicas=settings.replicas,
            restart_retries=settings.restart_retries,
            restart_unhealthy=settings.restart_unhealthy,
            generation=state.generation if state else 0,
        )
        try:
            new_state = self._write_state(new_state)
        except BaseException:
            self._discard(started)
            raise
        with self._engine("setting the restart policy"):
            for c in started:
                c.update(restart_policy={"Name": "on-failure", "MaximumRetryCount": settings.restart_retries})
        if old:
            progress(ProgressEvent("drain", "draining the old release", 0.9))
            self._retire(old, handover=pinned)
        self._prune_images(name, (new_state.active_image, new_state.previous_image))
        progress(ProgressEvent("done", f"{outcome}: {summary}", 1.0))
        return DeployResult(name, outcome, self._status_of(new_state), summary)

    def _run_container(
        self,
        name: str,
        release_id: str,
        replica: int,
        image_ref: str,
        image_labels: dict[str, str],
        host: str,
        port: int,
        env: dict[str, str],
        settings: DockerSettings,
    ) -> Any:
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        command = [
            "python", "-m", "modeldeck.core.targets.supervisor",
            "--pidfile", f"{images.RUN_DIR}/supervisor.pid", "--log", "/dev/stdout", "--max-restarts", "0",
            "--clear-file", images.READY_FILE, "--pin-file", images.PIN_FILE, "--public-port", str(port),
            "--stop-timeout", str(_STOP_TIMEOUT_S - 3),
            "--",
            "python", "-m", "modeldeck.core.runtime", "serve", images.BUNDLE_PATH,
            "--ready-file", images.READY_FILE, "--bind", bind, "--bind", "127.0.0.1:0", "--reuse-port",
        ]  # fmt: skip
        labels = {
            L_DEPLOYMENT: name,
            L_RELEASE: release_id,
            L_ROLE: "runtime",
            L_IMAGE: image_ref,
            L_REPLICA: str(replica),
            images.LABEL_MODEL: image_labels.get(images.LABEL_MODEL, ""),
            images.LABEL_VERSION: image_labels.get(images.LABEL_VERSION, ""),
            images.LABEL_SHA: image_labels.get(images.LABEL_SHA, ""),
        }
        kwargs: dict[str, Any] = {
            "name": f"modeldeck-{name}-{release_id}-{replica}",
            "entrypoint": command[:1],
            "command": command[1:],
            "labels": labels,
            "environment": {**env, "MODELDECK_DEPLOYMENT": name},  # the runtime's --deployment default
            "network_mode": "host",
            "user": _RUNTIME_UID,
            "cap_add": ["SYS_PTRACE"],  # pidfd_getfd for the port pin; see the module docs
            "stop_signal": "SIGTERM",
            "detach": True,
            "init": False,
        }
        if settings.cpus is not None:
            kwargs["nano_cpus"] = int(float(settings.cpus) * 1e9)
        if settings.memory is not None:
            kwargs["mem_limit"] = str(settings.memory)
        with self._engine(f"starting a container of {image_ref}"):
            return self.client.containers.run(image_ref, **kwargs)

    def _gate(
        self,
        container: Any,
        port: int,
        expect_sha: str,
        check_example: bool,
        start_period_s: float,
        cancel: threading.Event | None,
    ) -> str:
        """Poll the in-container probe until healthy (summary) or raise :class:`DeployError` saying why."""
        import docker.errors

        deadline = time.monotonic() + start_period_s
        argv = ["python", "-c", _PROBE, images.READY_FILE, str(port), expect_sha, "1" if check_example else "0"]
        while True:
            _check_cancel(cancel)
            with self._engine(f"checking {container.name}"):
                container.reload()
                if container.status not in ("running", "created"):
                    raise DeployError(f"the new runtime exited before it was ready{self._said(container)}")
                try:
                    code, output = container.exec_run(argv, user=_RUNTIME_UID)
                except docker.errors.APIError:
                    # It can exit between the reload and the exec (the engine then refuses the exec with
                    # "is not running"): report it like an exit seen above, with the runtime's own reason.
                    container.reload()
                    if container.status not in ("running", "created"):
                        raise DeployError(
                            f"the new runtime exited before it was ready{self._said(container)}"
                        ) from None
                    if container.status != "created":
                        raise
                    code, output = None, b""  # not started yet: look again
            text = (output or b"").decode(errors="replace").strip()
            try:
                info = json.loads(text.splitlines()[-1]) if text else {}
            except ValueError:
                info = {"message": text[-300:]}
            if code == 0:
                return str(info.get("message", "healthy"))
            if code == 1:
                raise DeployError(str(info.get("message") or text[-300:] or "health check failed"))
            if code not in (3,):
                # the exec itself failed (e.g. the container is stopping): look again, bounded by the deadline
                log.debug("probe exec in %s returned %s: %s", container.name, code, text[-200:])
            if time.monotonic() >= deadline:
                raise DeployError(f"the new runtime was not ready within {start_period_s:g} s{self._said(container)}")
            if cancel is not None:
                cancel.wait(0.2)
            else:
                time.sleep(0.2)

    def _said(self, container: Any) -> str:
        """``: <the runtime's error line>`` from the container's log, if it printed one."""
        with contextlib.suppress(Exception):
            lines = container.logs(tail=50).decode(errors="replace").splitlines()
            errors = [line[len("error: ") :] for line in lines if line.startswith("error: ")]
            if errors:
                return f": {errors[-1]}"
        return ""

    def _pin(self, container: Any) -> bool:
        """SIGUSR1 to the serving release's supervisor; True once its pin file appeared (within 2 s)."""
        with contextlib.suppress(Exception):
            container.exec_run(["rm", "-f", images.PIN_FILE], user=_RUNTIME_UID)
            container.kill(signal="SIGUSR1")
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                code, _ = container.exec_run(["test", "-f", images.PIN_FILE], user=_RUNTIME_UID)
                if code == 0:
                    return True
                time.sleep(0.05)
        log.info("%s did not confirm the port pin; switching with hash sharing", container.name)
        return False

    def _retire(self, containers: list[Any], *, handover: bool) -> None:
        """Stop the old release's containers (SIGUSR2 hand-over when pinned, else SIGTERM) and remove them."""
        for c in containers:
            with self._engine(f"stopping {c.name}"):
                c.reload()
                if c.status == "running":
                    # No restart policy may bring it back while it drains.
                    c.update(restart_policy={"Name": "no", "MaximumRetryCount": 0})
                    if handover:
                        c.kill(signal="SIGUSR2")
                        try:
                            c.wait(timeout=_STOP_TIMEOUT_S + 10)
                        except Exception:
                            c.stop(timeout=5)
                    else:
                        c.stop(timeout=_STOP_TIMEOUT_S)
                c.remove(force=True)

    def _prune_images(self, name: str, keep: tuple[str | None, ...]) -> None:
        """Remove images built for ``name`` other than the active and previous ones (best effort)."""
        try:
            keep_ids = {self.client.images.get(ref).id for ref in keep if ref}
            built = self.client.images.list(filters={"label": f"{L_DEPLOYMENT}={name}"})
        except Exception as exc:
            log.info("not pruning images of %s: %s", name, exc)
            return
        for img in built:
            if img.id not in keep_ids:
                try:
                    self.client.images.remove(img.id, force=False)
                except Exception as exc:  # used by a container or tagged elsewhere: keep it
                    log.info("keeping image %s: %s", img.id[:19], exc)

    def _discard(self, containers: list[Any]) -> None:
        """Remove candidate containers after a failed gate (best effort; the next operation retries)."""
        for c in containers:
            try:
                c.remove(force=True)
            except Exception as exc:
                log.warning("could not remove %s: %s (the next operation on the deployment will)", c.name, exc)

    # -- rollback, start, stop, undeploy ---------------------------------------------------------
    def _require_state(self, name: str) -> DockerState:
        releases.validate_name(name)
        state = self.read_state(name)
        if state is None:
            raise DeployError(f"no deployment named {name!r} on {self.url}", hint="see `modeldeck status`")
        return state

    def rollback(
        self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None
    ) -> DeployResult:
        """Switch back to the previous image (by ID/digest), with the same health-gated start-first switch."""
        state = self._require_state(name)
        self._remove_leftovers(state, name)
        if not state.previous_release or not state.previous_image:
            raise DeployError(f"deployment {name!r} has no previous release to roll back to")
        self._ensure_image(state.previous_image, progress)
        return self._switch_to_recorded(
            name,
            state,
            state.previous_release,
            state.previous_image,
            outcome="rolled-back",
            previous=(state.active_release, state.active_image),
            progress=progress,
            cancel=cancel,
        )

    def start(self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None) -> DeployResult:
        """Start a stopped deployment's active release again (fresh containers, health-gated)."""
        state = self._require_state(name)
        self._remove_leftovers(state, name)
        if self._serving(state):
            return DeployResult(name, "already-installed", self._status_of(state), "already running")
        if not state.active_release or not state.active_image:
            raise DeployError(f"deployment {name!r} has no release to start")
        for c in self._runtime_containers(name):
            with self._engine(f"removing {c.name}"):
                c.remove(force=True)
        stopped = replace(state, active_release=None)  # nothing of it runs: start without an old release
        return self._switch_to_recorded(
            name,
            stopped,
            state.active_release,
            state.active_image,
            outcome="deployed",
            previous=(state.previous_release, state.previous_image),
            progress=progress,
            cancel=cancel,
        )

    def _switch_to_recorded(
        self,
        name: str,
        state: DockerState,
        release_id: str,
        image_ref: str,
        *,
        outcome: str,
        previous: tuple[str | None, str | None],
        progress: Progress,
        cancel: threading.Event | None,
    ) -> DeployResult:
        """Health-gated switch to a release the state record already names, with the settings it ran with."""
        return self._switch(
            name,
            state,
            release_id,
            image_ref,
            host=state.host,
            port=state.port,
            env=state.env,
            settings=self._settings_of(state),
            check_example=True,
            start_period_s=30.0,
            progress=progress,
            cancel=cancel,
            outcome=outcome,
            previous=previous,
        )

    def stop(self, name: str) -> DeploymentStatus:
        """Stop the deployment's containers (they drain) and record that it should stay stopped."""
        state = self._require_state(name)
        for c in self._runtime_containers(name):
            with self._engine(f"stopping {c.name}"):
                c.update(restart_policy={"Name": "no", "MaximumRetryCount": 0})
                c.stop(timeout=_STOP_TIMEOUT_S)
        state = self._write_state(replace(state, desired="stopped"))
        return self._status_of(state)

    def undeploy(self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None) -> None:
        """Stop and remove every container of ``name`` and the images built for it (unless still used)."""
        state = self._require_state(name)
        containers = self._runtime_containers(name)
        for i, c in enumerate(containers):
            progress(ProgressEvent("stop", f"stopping {c.name}", (i + 1) / (len(containers) + 2)))
            with self._engine(f"stopping {c.name}"):
                c.update(restart_policy={"Name": "no", "MaximumRetryCount": 0})
                c.stop(timeout=_STOP_TIMEOUT_S)
                c.remove(force=True)
        for c in self._records(name):
            with self._engine(f"removing {c.name}"):
                c.remove(force=True)
        with self._engine("removing images"):
            built = self.client.images.list(filters={"label": f"{L_DEPLOYMENT}={name}"})
        for img in built:
            try:
                # the build cache survives: image.py tags its bundle-independent layers
                self.client.images.remove(img.id, force=False)
            except Exception as exc:  # still used by another deployment or container: keep it
                log.info("keeping image %s: %s", img.id[:19], exc)
        progress(ProgressEvent("done", f"{state.name} undeployed", 1.0))

    # -- status, logs ----------------------------------------------------------------------------
    def _settings_of(self, state: DockerState) -> DockerSettings:
        return DockerSettings(
            cpus=state.cpus,
            memory=state.memory,
            replicas=state.replicas,
            restart_retries=state.restart_retries,
            restart_unhealthy=state.restart_unhealthy,
        )

    def _serving(self, state: DockerState) -> bool:
        if not state.active_release:
            return False
        return any(c.status == "running" for c in self._runtime_containers(state.name, state.active_release))

    def status(self, name: str | None = None) -> list[DeploymentStatus]:
        """Every deployment on the engine (or one), with container health and CPU/memory stats."""
        if name:
            return [self._status_of(self._require_state(name), stats=True)]
        names = sorted({(c.labels or {}).get(L_DEPLOYMENT, "") for c in self._records()} - {""})
        states = [s for s in (self.read_state(n) for n in names) if s is not None]
        if not states:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(states))) as pool:  # stats take ~1 s each: in parallel
            return list(pool.map(lambda s: self._status_of(s, stats=True), states))

    def _status_of(self, state: DockerState, *, stats: bool = False) -> DeploymentStatus:
        """The deployment's status; ``stats`` adds CPU/memory (``stats(stream=False)`` takes ~1 s: two samples)."""
        containers = self._runtime_containers(state.name, state.active_release) if state.active_release else []
        running = [c for c in containers if c.status == "running"]
        health = [((c.attrs.get("State") or {}).get("Health") or {}).get("Status") for c in running]
        if state.desired == "stopped" and not running:
            st, msg = "stopped", "stopped"
        elif not running:
            st, msg = "failed", "no container is running (crashed, removed or restarting); see `modeldeck logs`"
        elif len(running) < len(containers) or "unhealthy" in health:
            st, msg = "failed", f"{len(running)}/{len(containers)} container(s) running, health: {health}"
        elif any(h == "starting" for h in health) and _restarted(running):
            st, msg = "starting", "the runtime is restarting"
        elif any(h == "starting" for h in health):
            # Not "running" until Docker agrees: the deploy gate passed, but Docker's own check has not yet.
            st, msg = "starting", "passed the deploy health gate; Docker's first health check is still pending"
        else:
            st, msg = "running", ""
        host = "127.0.0.1" if state.host in ("0.0.0.0", "::", "") else state.host
        if not self.spec.is_local and host == "127.0.0.1":
            from urllib.parse import urlsplit

            host = urlsplit(self.spec.base_url).hostname or host
        endpoint = f"http://{'[' + host + ']' if ':' in host else host}:{state.port}"
        return DeploymentStatus(
            name=state.name,
            target_url=self.url,
            state=st,
            endpoint=endpoint,
            model_name=state.model_name,
            model_version=state.model_version,
            bundle_sha256=state.bundle_sha256,
            release_id=state.active_release,
            previous_release_id=state.previous_release,
            since=state.started_at,
            message=msg,
            resources=self._stats(running) if running and stats else None,
        )

    def _stats(self, containers: list[Any]) -> dict[str, float] | None:
        """CPU % and memory summed over ``containers`` (one ``stats(stream=False)`` each, in parallel)."""

        def one(c: Any) -> dict[str, Any] | None:
            try:
                return c.stats(stream=False)
            except Exception as exc:
                log.info("no stats for %s: %s", c.name, exc)
                return None

        with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
            samples = [s for s in pool.map(one, containers) if s]
        if not samples:
            return None
        return container_usage(samples)

    def logs(self, name: str, lines: int = 200) -> str:
        """The last ``lines`` of the active release's container logs (each replica's, labelled if several)."""
        state = self._require_state(name)
        containers = self._runtime_containers(name, state.active_release) if state.active_release else []
        parts = []
        for c in containers:
            with self._engine(f"reading the logs of {c.name}"):
                text = c.logs(tail=max(1, lines)).decode(errors="replace")
            parts.append(text if len(containers) == 1 else f"==> {c.name} <==\n{text}")
        return "".join(parts)


def _restarted(containers: list[Any]) -> bool:
    """True if Docker restarted any of ``containers`` (restart policy) since ModelDeck started it."""
    return any(int(c.attrs.get("RestartCount") or 0) > 0 for c in containers)


def container_usage(samples: list[dict[str, Any]]) -> dict[str, float]:
    """``cpu_percent`` (of one core, as ``docker stats`` shows it), ``memory_bytes`` and ``memory_limit_bytes``
    summed over ``stats(stream=False)`` samples."""
    cpu = mem = limit = 0.0
    for s in samples:
        cpu_stats, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
        delta = (cpu_stats.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get(
            "total_usage", 0
        )
        system = cpu_stats.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
        cores = cpu_stats.get("online_cpus") or len((cpu_stats.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
        if delta > 0 and system > 0:
            cpu += delta / system * cores * 100.0
        memory = s.get("memory_stats") or {}
        cache = (memory.get("stats") or {}).get("inactive_file", 0) or (memory.get("stats") or {}).get("cache", 0)
        mem += max(0, memory.get("usage", 0) - cache)
        limit += memory.get("limit", 0)
    return {"cpu_percent": round(cpu, 2), "memory_bytes": mem, "memory_limit_bytes": limit}


def _started_ns(started_at: str) -> int:
    """Docker's RFC 3339 ``State.StartedAt`` (nanosecond fraction, ``Z``) as ns since the epoch; 0 if unreadable."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", started_at or "")
    if not m:
        return 0
    whole = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    return whole * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0")[:9])


def _close_stream(stream: Any) -> None:
    """End an engine event stream that may still be open, without raising.

    docker-py's ``CancellableStream.close`` raises over SSH ("Cancellable streams not supported") and can raise
    on a dead engine; in a ``finally`` that replaced the watch's events, or its real error. The response is
    closed instead, which takes its connection out of the pool.
    """
    try:
        stream.close()
    except Exception as exc:
        log.debug("closing the engine's event stream: %s", exc)
        response = getattr(stream, "_response", None)
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


def watch_health(
    target: DockerTarget,
    *,
    name: str | None = None,
    timeout_s: float = 60.0,
    restart_unhealthy: bool | None = None,
    on_event: Callable[[HealthEvent], None] | None = None,
    cancel: threading.Event | None = None,
    stop_after: int | None = None,
) -> list[HealthEvent]:
    """Watch ModelDeck containers' health for up to ``timeout_s`` (or until ``cancel``) and return what changed.

    Docker marks a container *unhealthy* but never restarts it; this does, for deployments
    recorded with ``restart_unhealthy`` (or all, when ``restart_unhealthy`` is True; none when
    False). The engine's event stream is read in windows of at most one second (``until``), so
    every call is bounded and ``cancel`` is noticed within a second. Events alone are not enough:
    Docker sends ``health_status`` only on a change and filters windows by whole seconds, so an
    event on a window's edge can be missed and then never comes again. After every window the
    unhealthy containers are therefore listed too; each run of a container (``StartedAt``) is
    reported unhealthy once, and an event older than the container's current run is stale (it
    was about the run a restart just replaced). ``stop_after`` ends the watch after that many events.
    """
    client = target.client
    seen: list[HealthEvent] = []
    policy: dict[str, bool] = {}
    reported: dict[str, int] = {}  # container id -> StartedAt (ns) of the run last reported unhealthy

    def wants_restart(deployment: str) -> bool:
        if restart_unhealthy is not None:
            return restart_unhealthy
        if deployment not in policy:
            state = target.read_state(deployment)
            policy[deployment] = bool(state and state.restart_unhealthy)
        return policy[deployment]

    def started_ns(container_id: str) -> int | None:
        try:
            return _started_ns(client.containers.get(container_id).attrs["State"]["StartedAt"])
        except Exception:  # gone since the event: nothing to report or restart
            return None

    def handle(container_id: str, deployment: str, container_name: str, status: str, started: int | None,
               event_ns: int | None = None) -> None:  # fmt: skip
        if started is None:
            return
        if event_ns is not None and started and event_ns < started:
            return  # about a run that has since been replaced
        if status == "unhealthy":
            if reported.get(container_id) == started:
                return
            reported[container_id] = started
        else:
            reported.pop(container_id, None)
        restarted = False
        if status == "unhealthy" and wants_restart(deployment):
            log.warning("restarting unhealthy container %s of %s", container_name, deployment)
            try:
                client.containers.get(container_id).restart(timeout=_STOP_TIMEOUT_S)
                restarted = True
            except Exception as exc:
                log.warning("could not restart %s: %s", container_name, engine_error(exc, spec=target.spec).message)
        event = HealthEvent(deployment, container_name, status, restarted, time.time())
        seen.append(event)
        if on_event:
            on_event(event)

    def sweep() -> None:
        with target._engine("listing unhealthy containers"):
            unhealthy = client.containers.list(filters={"label": labels, "health": "unhealthy"})
        for c in unhealthy:
            started = _started_ns(((c.attrs or {}).get("State") or {}).get("StartedAt", ""))
            handle(c.id, (c.labels or {}).get(L_DEPLOYMENT, ""), c.name, "unhealthy", started)

    def done() -> bool:
        return (stop_after is not None and len(seen) >= stop_after) or (cancel is not None and cancel.is_set())

    labels = [f"{L_ROLE}=runtime"] + ([f"{L_DEPLOYMENT}={name}"] if name else [])
    since = int(time.time())
    sweep()  # containers already unhealthy when the watch starts come first
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done():
        until = int(time.time()) + 1
        with target._engine("reading health events"):
            stream = client.events(
                since=since, until=until, decode=True, filters={"event": "health_status", "label": labels}
            )
            try:
                for ev in stream:
                    action = str(ev.get("Action") or ev.get("status") or "")
                    status = action.split(":", 1)[1].strip() if ":" in action else action
                    actor = ev.get("Actor") or {}
                    attrs = actor.get("Attributes") or {}
                    cid = str(ev.get("id") or actor.get("ID"))
                    handle(cid, attrs.get(L_DEPLOYMENT, ""), attrs.get("name", ""), status, started_ns(cid),
                           int(ev.get("timeNano") or 0) or None)  # fmt: skip
                    if done():
                        break
            finally:
                _close_stream(stream)
        since = until
        if not done():
            sweep()
    return seen
