"""Container images of bundles: the generated Dockerfile, a live-streamed build, and push by digest.

An image holds the runtime wheel (:func:`~modeldeck.core.targets.runtime_dist.runtime_wheel`)
installed into ``/opt/modeldeck/venv`` with its dependencies, and the bundle in
``/opt/modeldeck/bundle`` -- no MLflow, no Qt. It runs as the non-root uid 10001 (the same uid in
every image, so two versions can share a port with ``SO_REUSEPORT``), under the runtime's small
supervisor (SIGUSR1/SIGUSR2 steer the shared port during a switch, SIGTERM drains), with a
``HEALTHCHECK`` on the runtime's readiness using only Python's ``urllib``.

Two Dockerfile shapes, chosen from the base image:

* a *warm* base (label ``io.modeldeck.python`` names a Python whose environment already has the
  runtime's dependencies, e.g. the test base image) only gets the wheel -- one small layer;
* any other base (default ``python:3.11-slim``) gets a build stage that creates the venv from a
  wheelhouse in the build context (no network needed during the build), and the final stage
  copies only the venv, so the wheel files do not stay in a layer.

The build uses docker-py's low-level ``APIClient.build(decode=True)`` generator: every line goes
to ``progress`` as it arrives, and a failing build raises :class:`DeployError` naming the failing
step and its last output lines. Results name the image by ID (and by registry digest after a
push), so a rollback restores exactly the bytes that ran.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modeldeck.core.errors import BundleError, Cancelled, DeployError
from modeldeck.core.runtime.manifest import Manifest, verify_bundle

log = logging.getLogger(__name__)

DEFAULT_BASE_IMAGE = "python:3.11-slim"
APP_DIR = "/opt/modeldeck"
VENV = f"{APP_DIR}/venv"
BUNDLE_PATH = f"{APP_DIR}/bundle"
RUN_DIR = f"{APP_DIR}/run"
READY_FILE = f"{RUN_DIR}/ready.json"
PIN_FILE = f"{RUN_DIR}/pinned"
RUNTIME_UID = 10001
DEFAULT_PORT = 8080
WARM_PYTHON_LABEL = "io.modeldeck.python"

# Labels every image and container carries (OCI keys + ours).
LABEL_MODEL = "io.modeldeck.model.name"
LABEL_VERSION = "io.modeldeck.model.version"
LABEL_SHA = "io.modeldeck.bundle-sha256"
LABEL_RUNTIME = "io.modeldeck.runtime.version"

# The HEALTHCHECK: the runtime's private bind (last in the ready file) answers /v2/health/ready.
_HEALTH_PROBE = (
    "import json,sys,urllib.request as u;"
    f"b=json.load(open({READY_FILE!r}))['binds'][-1];"
    "u.urlopen('http://'+b.replace('0.0.0.0','127.0.0.1')+'/v2/health/ready',timeout=3);"
)

Progress = Callable[[str, float | None], None]


@dataclass(frozen=True)
class BuildOptions:
    tag: str  # REPO:TAG
    base_image: str = DEFAULT_BASE_IMAGE
    warm_python: str | None = None  # None: ask the engine (the base image's io.modeldeck.python label)
    pull_base: bool = False  # pull the base image even if present
    health_start_period_s: float = 30.0
    health_interval_s: float = 10.0
    extra_labels: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 900.0  # the whole build


@dataclass(frozen=True)
class BuildResult:
    tag: str
    image_id: str  # sha256:…
    size_bytes: int
    dockerfile: str
    labels: dict[str, str]
    seconds: float
    repo_digest: str | None = None  # REPO@sha256:… once pushed

    @property
    def reference(self) -> str:
        """What deployments should run: the registry digest if pushed, else the image ID."""
        return self.repo_digest or self.image_id


def image_labels(manifest: Manifest, *, runtime_version: str, base_image: str) -> dict[str, str]:
    """OCI annotations plus ModelDeck's own labels for an image of ``manifest``'s bundle."""
    return {
        "org.opencontainers.image.title": f"{manifest.model_name} {manifest.model_version}",
        "org.opencontainers.image.description": f"ModelDeck runtime serving {manifest.source_uri}",
        "org.opencontainers.image.version": str(manifest.model_version),
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.source": manifest.source_uri,
        "org.opencontainers.image.revision": manifest.sha256,
        "org.opencontainers.image.vendor": "ModelDeck",
        "org.opencontainers.image.base.name": base_image,
        LABEL_MODEL: manifest.model_name,
        LABEL_VERSION: str(manifest.model_version),
        LABEL_SHA: manifest.sha256,
        LABEL_RUNTIME: runtime_version,
    }


def render_dockerfile(
    *,
    base_image: str,
    wheel_name: str,
    labels: dict[str, str],
    warm_python: str | None,
    health_start_period_s: float = 30.0,
    health_interval_s: float = 10.0,
) -> str:
    """The Dockerfile for a build context holding ``wheels/`` and ``bundle/`` (see module docs)."""
    install = (
        "python -m pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /tmp/wheels "
        f"/tmp/wheels/{wheel_name}"
    )
    label_lines = " \\\n      ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    user = (
        f"RUN mkdir -p {RUN_DIR} && chown {RUNTIME_UID}:{RUNTIME_UID} {RUN_DIR} \\\n"
        f" && (grep -q '^modeldeck:' /etc/passwd || echo 'modeldeck:x:{RUNTIME_UID}:{RUNTIME_UID}:ModelDeck runtime:"
        f"{APP_DIR}:/usr/sbin/nologin' >> /etc/passwd) \\\n"
        f" && (grep -q '^modeldeck:' /etc/group || echo 'modeldeck:x:{RUNTIME_UID}:' >> /etc/group)"
    )
    if warm_python:
        head = (
            f"FROM {base_image}\n"
            "USER 0:0\n"
            "COPY wheels/ /tmp/wheels/\n"
            f"RUN PATH={Path(warm_python).parent}:$PATH {install} && rm -rf /tmp/wheels\n"
            f"ENV PATH={Path(warm_python).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        )
    else:
        head = (
            f"FROM {base_image} AS install\n"
            "COPY wheels/ /tmp/wheels/\n"
            f"RUN python3 -m venv {VENV} && PATH={VENV}/bin:$PATH {install}\n"
            "\n"
            f"FROM {base_image}\n"
            "USER 0:0\n"
            f"COPY --from=install {VENV} {VENV}\n"
            f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        )
    entry = [
        "python", "-m", "modeldeck.core.targets.supervisor",
        "--pidfile", f"{RUN_DIR}/supervisor.pid", "--log", "/dev/stdout", "--max-restarts", "0",
        "--clear-file", READY_FILE, "--pin-file", PIN_FILE, "--",
        "python", "-m", "modeldeck.core.runtime", "serve", BUNDLE_PATH, "--ready-file", READY_FILE,
    ]  # fmt: skip
    health = ["python", "-c", _HEALTH_PROBE]
    # Everything that does not depend on the bundle comes first, so the engine's build cache serves it
    # for every model on the same base and runtime; a new bundle adds two steps (COPY, LABEL).
    return (
        "# Generated by ModelDeck: the runtime and one bundle, nothing else.\n"
        + head
        + user
        + "\n"
        + "ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1\n"
        + f"WORKDIR {APP_DIR}\n"
        + f"EXPOSE {DEFAULT_PORT}\n"
        + "STOPSIGNAL SIGTERM\n"
        + f"HEALTHCHECK --interval={health_interval_s:g}s --timeout=5s --start-period={health_start_period_s:g}s "
        + f"--retries=3 CMD {json.dumps(health)}\n"
        + f"ENTRYPOINT {json.dumps(entry)}\n"
        + f'CMD ["--bind", "0.0.0.0:{DEFAULT_PORT}", "--bind", "127.0.0.1:0"]\n'
        + f"USER {RUNTIME_UID}:{RUNTIME_UID}\n"
        + f"COPY bundle/ {BUNDLE_PATH}/\n"
        + f"LABEL {label_lines}\n"
    )


def prepare_context(
    bundle_dir: Path,
    out_dir: Path,
    options: BuildOptions,
    *,
    warm_python: str | None,
    python_version: str = "3.11",
    machine: str = "x86_64",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> tuple[str, dict[str, str]]:
    """Write a build context (``Dockerfile``, ``wheels/``, ``bundle/``) into ``out_dir``.

    Verifies the bundle first (a tampered bundle is never built). For a cold base the
    runtime's dependencies are downloaded into ``wheels/`` for ``python_version``/``machine``.
    Returns the Dockerfile text and the image labels.
    """
    from modeldeck.core.targets.runtime_dist import TargetPlatform, runtime_version, runtime_wheel, wheelhouse

    try:
        manifest = verify_bundle(Path(bundle_dir))
    except BundleError as exc:
        raise DeployError(f"cannot build an image of {bundle_dir}: {exc.message}", hint=exc.hint) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = out_dir / "wheels"
    wheel = runtime_wheel(wheels)
    if not warm_python:
        wheelhouse(
            wheels, TargetPlatform(python_version=python_version, machine=machine), progress=progress, cancel=cancel
        )
    shutil.rmtree(out_dir / "bundle", ignore_errors=True)
    shutil.copytree(bundle_dir, out_dir / "bundle")
    labels = image_labels(manifest, runtime_version=runtime_version(), base_image=options.base_image)
    labels.update(options.extra_labels)
    dockerfile = render_dockerfile(
        base_image=options.base_image,
        wheel_name=wheel.name,
        labels=labels,
        warm_python=warm_python,
        health_start_period_s=options.health_start_period_s,
        health_interval_s=options.health_interval_s,
    )
    (out_dir / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    (out_dir / ".dockerignore").write_text("Dockerfile\n.dockerignore\n", encoding="utf-8")
    return dockerfile, labels


def _base_facts(client: Any, base_image: str, pull: bool, progress: Progress | None) -> tuple[str | None, str, str]:
    """(warm python or None, python version, machine) of the base image, pulling it when absent or asked."""
    import docker.errors
    from modeldeck.core.targets.docker.engine import engine_error

    image = None
    if not pull:
        try:
            image = client.images.get(base_image)
        except docker.errors.ImageNotFound:
            image = None
        except Exception as exc:
            raise engine_error(exc, what=f"inspecting base image {base_image}") from exc
    if image is None:
        if progress:
            progress(f"pulling base image {base_image}", None)
        try:
            image = client.images.pull(base_image)
        except Exception as exc:
            raise DeployError(
                f"cannot pull the base image {base_image}: {engine_error(exc).message}",
                hint="check the name and network access to its registry, or pass --base-image with a local image",
            ) from exc
    attrs = image.attrs or {}
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    env = dict(e.split("=", 1) for e in (attrs.get("Config") or {}).get("Env") or [] if "=" in e)
    version = ".".join(str(env.get("PYTHON_VERSION", "3.11")).split(".")[:2])
    arch = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l"}.get(attrs.get("Architecture", ""), "x86_64")
    return labels.get(WARM_PYTHON_LABEL), version, arch


def build_image(
    client: Any,
    bundle_dir: Path,
    options: BuildOptions,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    workdir: Path | None = None,
) -> BuildResult:
    """Build an image of ``bundle_dir`` tagged ``options.tag`` on the engine behind ``client``.

    Build output streams to ``progress`` line by line. Raises :class:`DeployError` (naming the
    failing step and its output) if the build fails, :class:`Cancelled` if ``cancel`` is set
    (the stream is closed, which stops the engine's build), :class:`TargetError` if the engine
    cannot be reached.
    """
    from modeldeck.core.targets.docker.engine import engine_error

    _validate_tag(options.tag)
    started = time.monotonic()
    warm, python_version, machine = _base_facts(client, options.base_image, options.pull_base, progress)
    if options.warm_python is not None:
        warm = options.warm_python or None
    tmp = Path(tempfile.mkdtemp(prefix="modeldeck-build-", dir=workdir))
    try:
        dockerfile, labels = prepare_context(
            bundle_dir,
            tmp,
            options,
            warm_python=warm,
            python_version=python_version,
            machine=machine,
            progress=progress,
            cancel=cancel,
        )
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        if progress:
            progress(f"building {options.tag} on {options.base_image}", 0.1)
        api = client.api
        image_id: str | None = None
        step = "(before the first step)"
        step_output: list[str] = []
        last_layer: str | None = None  # the image after the latest finished step
        cache_anchor: str | None = None  # the image after the last bundle-independent step
        try:
            stream = api.build(
                path=str(tmp), tag=options.tag, rm=True, forcerm=True, decode=True, timeout=int(options.timeout_s)
            )
            try:
                for chunk in stream:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("build cancelled")
                    if "error" in chunk:
                        detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                        tail = "\n".join(step_output[-10:])
                        raise DeployError(
                            f"image build failed at {step}: {detail.strip()}",
                            hint=("last output:\n" + tail) if tail else None,
                        )
                    text = chunk.get("stream")
                    if text:
                        for line in text.splitlines():
                            if line.startswith("Step "):
                                step, step_output = line.strip(), []
                                if " : COPY bundle/" in line:
                                    cache_anchor = last_layer
                            elif line.startswith(" ---> ") and not line.startswith(" ---> Running in"):
                                last_layer = line[len(" ---> ") :].strip()
                            elif line.strip():
                                step_output.append(line.rstrip())
                            if line.strip() and progress:
                                progress(line.rstrip(), None)
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("ID"):
                        image_id = str(aux["ID"])
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
            image = client.images.get(image_id or options.tag)
        except (DeployError, Cancelled):
            raise
        except Exception as exc:
            raise engine_error(exc, what=f"building {options.tag}") from exc
        if cache_anchor:
            _keep_build_cache(client, cache_anchor, dockerfile)
        seconds = time.monotonic() - started
        size = int(image.attrs.get("Size") or 0)
        if progress:
            progress(f"built {options.tag} ({image.id[:19]}, {_mib(size)}) in {seconds:.1f} s", 1.0)
        return BuildResult(options.tag, image.id, size, dockerfile, labels, seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


CACHE_REPOSITORY = "modeldeck/build-cache"


def _keep_build_cache(client: Any, layer: str, dockerfile: str) -> None:
    """Tag the image of the bundle-independent steps (``modeldeck/build-cache:<hash>``), so removing model
    images (undeploy, pruning) stops there and the next model on this base and runtime builds from cache."""
    import hashlib

    static = dockerfile.split(f"COPY bundle/ {BUNDLE_PATH}/", 1)[0]
    tag = hashlib.sha256(static.encode()).hexdigest()[:16]
    try:
        client.api.tag(layer, CACHE_REPOSITORY, tag=tag)
    except Exception as exc:  # only an optimisation
        log.info("could not tag the build cache %s: %s", layer, exc)


def push_image(
    client: Any,
    result: BuildResult,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float = 600.0,
) -> BuildResult:
    """Push ``result.tag`` and return the result with ``repo_digest`` (``REPO@sha256:…``) set.

    Raises :class:`DeployError` with the registry's message when the push fails.
    """
    from modeldeck.core.targets.docker.engine import engine_error

    repo, tag = split_tag(result.tag)
    deadline = time.monotonic() + timeout_s
    digest: str | None = None
    if progress:
        progress(f"pushing {result.tag}", None)
    try:
        stream = client.api.push(repo, tag=tag, stream=True, decode=True)
        try:
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("push cancelled")
                if time.monotonic() > deadline:
                    raise DeployError(f"pushing {result.tag} took over {timeout_s:.0f} s")
                if "error" in chunk:
                    raise DeployError(
                        f"cannot push {result.tag}: {chunk['error']}",
                        hint="check the registry address and your login (`docker login`)",
                    )
                aux = chunk.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = str(aux["Digest"])
                if progress and chunk.get("status") and not chunk.get("progressDetail"):
                    progress(f"{chunk.get('id', '')} {chunk['status']}".strip(), None)
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
    except (DeployError, Cancelled):
        raise
    except Exception as exc:
        raise engine_error(exc, what=f"pushing {result.tag}") from exc
    if not digest:
        raise DeployError(f"the registry did not return a digest for {result.tag}")
    repo_digest = f"{repo}@{digest}"
    if progress:
        progress(f"pushed {repo_digest}", 1.0)
    return BuildResult(
        result.tag, result.image_id, result.size_bytes, result.dockerfile, result.labels, result.seconds, repo_digest
    )


def split_tag(tag: str) -> tuple[str, str]:
    """``REPO[:TAG]`` -> (repo, tag); a port in the registry host is not a tag."""
    repo, sep, name = tag.rpartition(":")
    if sep and "/" not in name:
        return repo, name
    return tag, "latest"


def _validate_tag(tag: str) -> None:
    import re

    if not re.fullmatch(r"[a-z0-9]+([._/:-][a-zA-Z0-9_.-]+)*", tag or "") or len(tag) > 255:
        raise DeployError(f"invalid image tag {tag!r}", hint="use REPO:TAG, e.g. iris:3 or 127.0.0.1:5000/iris:3")


def _mib(size: int) -> str:
    from modeldeck.core.formatting import format_size

    return format_size(size)
