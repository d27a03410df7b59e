"""The release layout every target keeps for a deployment, as pure functions over a root folder.

One deployment ``NAME`` lives in ``ROOT/NAME/``::

    releases/<release-id>/bundle/     a verified copy of the bundle
    releases/<release-id>/runtime.json  the runtime config this release was started with
    current -> releases/<release-id>  switched atomically (symlink to current.tmp, then rename)
    state.json                        which release serves, which one it replaced, pid, port, ...
    logs/runtime.log                  the supervisor's log of the runtime's stdout/stderr
    run/                              pidfiles and ready files of the running processes

This is Capistrano's layout: installing a release never touches the serving one,
and switching or rolling back is one rename. Only stdlib and ``pathlib`` are used,
so the SSH target can run the same logic against a remote root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeck.core.errors import DeployError

if TYPE_CHECKING:
    from modeldeck.core.runtime.manifest import Manifest

RELEASES = "releases"
CURRENT = "current"
STATE_FILE = "state.json"
LOG_DIR = "logs"
RUN_DIR = "run"
BUNDLE_DIR = "bundle"
RUNTIME_CONFIG = "runtime.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class DeploymentState:
    """What ``state.json`` records about one deployment (the source of truth for ``status``).

    ``pid`` is the supervisor of the active release; ``retiring_pid`` is a supervisor that was
    replaced and may still be draining (a switch does not wait for it) or was never told to stop
    (a deploy interrupted right after its commit), so the next operation can finish the job.
    """

    name: str
    host: str
    port: int
    active_release: str | None = None
    previous_release: str | None = None
    desired: str = "running"  # "running" or "stopped": what the user last asked for
    pid: int | None = None
    retiring_pid: int | None = None
    started_at: str | None = None  # ISO-8601 UTC
    bundle_sha256: str | None = None
    model_name: str | None = None
    model_version: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def serves_bundle(
    bundle_sha256: str | None, model_name: str | None, model_version: str | None, manifest: Manifest
) -> bool:
    """Whether a deployment recorded as serving these files *as this registered version* already serves ``manifest``.

    The bundle digest covers the files, not the manifest, so a new registry version with
    identical weights has the same digest; it is still a new release (its ``/version`` and
    ``status`` must name the version the user deployed). Older records without a name or
    version compare by files alone.
    """
    if bundle_sha256 != manifest.sha256:
        return False
    if model_name is None and model_version is None:
        return True
    return (model_name, str(model_version)) == (manifest.model_name, str(manifest.model_version))


def validate_name(name: str) -> str:
    """Return ``name`` if it can be a folder name on every target, else raise :class:`DeployError`."""
    if not _NAME_RE.match(name):
        raise DeployError(
            f"invalid deployment name {name!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def name_from_model(model_name: str) -> str:
    """A valid deployment name derived from a registered model name (spaces and slashes become '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", model_name).strip("-._")[:64]
    return cleaned or "model"


def deployment_dir(root: Path, name: str) -> Path:
    return Path(root) / validate_name(name)


def release_dir(root: Path, name: str, release_id: str) -> Path:
    return deployment_dir(root, name) / RELEASES / release_id


def bundle_path(root: Path, name: str, release_id: str) -> Path:
    return release_dir(root, name, release_id) / BUNDLE_DIR


def log_path(root: Path, name: str) -> Path:
    return deployment_dir(root, name) / LOG_DIR / "runtime.log"


def run_dir(root: Path, name: str) -> Path:
    return deployment_dir(root, name) / RUN_DIR


def pin_file(root: Path, name: str, release: str) -> Path:
    """Written by a release's supervisor once SIGUSR1 has pinned the public port to it."""
    return run_dir(root, name) / f"{release}.pinned"


def handover_file(root: Path, name: str, release: str) -> Path:
    """Written by a release's supervisor once SIGUSR2 has sent new connections to the newer release."""
    return run_dir(root, name) / f"{release}.handed"


def new_release_id(bundle_sha256: str, now: float | None = None) -> str:
    """A sortable, unique-enough id: UTC timestamp (to the millisecond) plus the bundle's short sha."""
    t = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int((t % 1) * 1000):03d}Z"
    return f"{stamp}-{bundle_sha256[:8]}"


def list_deployments(root: Path) -> list[str]:
    """Names of deployments under ``root`` (folders holding a ``state.json``), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file() and _NAME_RE.match(p.name))


def list_releases(root: Path, name: str) -> list[str]:
    """Installed release ids, oldest first (ids sort by time); half-copied ``*.tmp`` folders are skipped."""
    base = deployment_dir(root, name) / RELEASES
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))


def read_state(root: Path, name: str) -> DeploymentState | None:
    """The recorded state, or None if ``name`` was never deployed; raises :class:`DeployError` if unreadable."""
    path = deployment_dir(root, name) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return DeploymentState.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as exc:
        raise DeployError(f"cannot read {path}: {exc}", hint="fix or delete the file") from exc


def write_state(root: Path, state: DeploymentState) -> None:
    """Write ``state.json`` atomically (tmp + fsync + rename), so a crash leaves the old or the new state."""
    path = deployment_dir(root, state.name) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, state.to_json())


def update_state(root: Path, name: str, **changes: Any) -> DeploymentState:
    state = read_state(root, name)
    if state is None:
        raise DeployError(f"no deployment named {name!r}")
    new = replace(state, **changes)
    write_state(root, new)
    return new


def install_release(
    root: Path, name: str, bundle_dir: Path, release_id: str, runtime_config: str, *, link: bool = False
) -> Path:
    """Copy a bundle into a new release folder and return it.

    The copy goes to ``<id>.tmp`` first and is renamed when complete, so a crash
    never leaves a half-copied release that looks installed. ``link``: hard-link the files
    instead where the file system allows (the SSH agent's staged, content-addressed objects
    are never written again, so a release may share them; copied otherwise).
    """
    base = deployment_dir(root, name) / RELEASES
    base.mkdir(parents=True, exist_ok=True)
    final = base / release_id
    if final.exists():
        raise DeployError(f"release {release_id} already exists in {base}")
    tmp = base / f"{release_id}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(bundle_dir, tmp / BUNDLE_DIR, copy_function=_link_or_copy if link else shutil.copy2)
        _atomic_write(tmp / RUNTIME_CONFIG, runtime_config)
        tmp.rename(final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DeployError(f"cannot install release into {base}: {exc}") from exc
    return final


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def remove_release(root: Path, name: str, release_id: str) -> None:
    shutil.rmtree(release_dir(root, name, release_id), ignore_errors=True)


def switch_current(root: Path, name: str, release_id: str) -> None:
    """Point ``current`` at a release atomically: a new symlink renamed over the old one."""
    ddir = deployment_dir(root, name)
    tmp = ddir / f"{CURRENT}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(Path(RELEASES) / release_id)
    tmp.replace(ddir / CURRENT)


def current_release(root: Path, name: str) -> str | None:
    """The release id ``current`` points at, or None."""
    link = deployment_dir(root, name) / CURRENT
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None


def prune_releases(root: Path, name: str, keep: int, protect: tuple[str | None, ...] = ()) -> list[str]:
    """Remove the oldest releases beyond ``keep`` (never one in ``protect``); return the removed ids."""
    ids = list_releases(root, name)
    removable = [r for r in ids if r not in protect]
    removed = removable[: max(len(ids) - max(keep, 1), 0)]
    for rid in removed:
        remove_release(root, name, rid)
    return removed


def remove_deployment(root: Path, name: str) -> None:
    shutil.rmtree(deployment_dir(root, name), ignore_errors=True)


@contextlib.contextmanager
def deployment_lock(root: Path, name: str, *, create: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on one deployment for the length of an operation.

    Non-blocking: a second deploy/rollback/stop of the same name while one runs
    fails at once with :class:`DeployError` instead of racing it. Only ``create``
    (a deploy) makes the deployment's folder; for anything else a missing
    deployment is a :class:`DeployError` and nothing is written.
    """
    ddir = deployment_dir(root, name)
    if create:
        ddir.mkdir(parents=True, exist_ok=True)
    elif not (ddir / STATE_FILE).is_file():
        raise DeployError(f"no deployment named {name!r}", hint="see `modeldeck status`")
    fh = (ddir / ".lock").open("a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DeployError(
                f"another operation on deployment {name!r} is in progress", hint="wait for it to finish"
            ) from exc
        yield
    finally:
        fh.close()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
