"""The remote agent: LocalTarget's deploy logic run on an SSH host, driven over one SSH channel.

Run as ``python -m modeldeck.core.targets.agent COMMAND --root DEPLOY_ROOT ...`` from the
runtime venv on the host (the runtime wheel carries this module). The SSH target never
re-implements releases, supervision or the health-gated switch: it uploads the bundle's
files into a content-addressed store (``DEPLOY_ROOT/objects/<sha256>``) and asks the agent
to do what :class:`~modeldeck.core.targets.local.LocalTarget` does on this machine.

Protocol (stdout, one JSON object per line)::

    {"event": {"step": ..., "message": ..., "fraction": ...}}   progress, any number
    {"result": {...}}  or  {"error": {"type": ..., "message": ..., "hint": ...}}   exactly one, last

Commands that change things read one JSON request line from stdin and then keep stdin
open as a *lifeline*: a ``cancel`` line cancels, and end-of-file (the SSH connection dropped,
the deployer died) cancels too, and the agent exits if the operation does not stop in time.
A cancelled switch stops the candidate, and the supervisor's probation pipe guarantees the
same even if the agent is killed outright -- the previous release keeps serving.

Imports: stdlib and what LocalTarget imports (pure), so it runs wherever the runtime runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any

from modeldeck.core.errors import Cancelled, DeployError, ModelDeckError
from modeldeck.core.runtime.manifest import MANIFEST_NAME, bundle_digest, read_manifest
from modeldeck.core.targets import releases
from modeldeck.core.targets.base import DeployOptions, HealthGate, ProgressEvent

log = logging.getLogger(__name__)

DEPLOYMENTS = "deployments"
OBJECTS = "objects"
STAGING = "staging"
OBJECT_GRACE_S = 3600.0  # unreferenced objects younger than this may belong to an upload in flight
EXIT_GRACE_S = 60.0  # how long a cancelled operation may take to clean up after the lifeline broke
LIFELINE = "modeldeck-lifeline"
HOST_LOCK = ".lock"  # DEPLOY_ROOT/.lock: one push (upload, switch, garbage collection) at a time per deploy root
HOST_LOCK_WAIT_S = 30.0
# The resident agent (``serve``): one idle process per deploy root and runtime version, listening on
# DEPLOY_ROOT/runtime/VERSION/agent.sock (0600). The SSH target reaches it through a direct-streamlocal channel
# (no remote shell, no interpreter start, no imports per command) and falls back to exec when that is refused.
RESIDENT_SOCKET = "agent.sock"
RESIDENT_PID = "agent.pid"
RESIDENT_LOG = "agent.log"
RESIDENT_CHECK_S = 2.0  # how often an idle resident agent checks that it is still wanted
RESIDENT_HEADER_MAX = 65536


# -- (de)serialisation shared with the SSH target ---------------------------------------------------
def options_to_dict(options: DeployOptions) -> dict[str, Any]:
    data = asdict(options)
    data["cors_origins"] = list(options.cors_origins)
    return data


def options_from_dict(data: dict[str, Any]) -> DeployOptions:
    known = {f.name for f in fields(DeployOptions)}
    values = {k: v for k, v in data.items() if k in known}
    if isinstance(values.get("health"), dict):
        gate_known = {f.name for f in fields(HealthGate)}
        values["health"] = HealthGate(**{k: v for k, v in values["health"].items() if k in gate_known})
    if "cors_origins" in values:
        values["cors_origins"] = tuple(values["cors_origins"])
    return DeployOptions(**values)


def jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


# -- output -------------------------------------------------------------------------------------------
class _Output:
    """Writes protocol lines; a broken stdout (the connection is gone) cancels the operation."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.lock = threading.Lock()

    def line(self, obj: dict[str, Any]) -> None:
        text = json.dumps(obj, separators=(",", ":")) + "\n"
        with self.lock:
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except (OSError, ValueError):
                self.cancel.set()

    def progress(self, event: ProgressEvent) -> None:
        self.line({"event": {"step": event.step, "message": event.message, "fraction": event.fraction}})


def _watch_lifeline(cancel: threading.Event) -> None:
    """Cancel on a ``cancel`` line or end-of-file on stdin; exit hard if cleanup then takes too long."""
    stream = sys.stdin.buffer
    while True:
        try:
            line = stream.readline()
        except (OSError, ValueError):
            line = b""
        if not line:
            break
        if line.strip() == b"cancel":
            cancel.set()
    if not cancel.is_set():
        log.warning("lifeline closed (the deployer or its connection is gone): cancelling")
        cancel.set()
    time.sleep(EXIT_GRACE_S)
    os._exit(75)  # the supervisor's probation still protects the serving release


def _read_request() -> dict[str, Any]:
    line = sys.stdin.buffer.readline()
    if not line:
        raise DeployError("the agent got no request on stdin")
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise DeployError(f"the agent got a malformed request: {exc}") from exc
    if not isinstance(data, dict):
        raise DeployError("the agent's request must be a JSON object")
    return data


# -- one deploy at a time per deploy root ---------------------------------------------------------------
@contextlib.contextmanager
def host_lock(deploy_root: Path, wait_s: float, out: _Output | None = None) -> Iterator[None]:
    """Hold ``DEPLOY_ROOT/.lock`` (``flock``) for a whole push or undeploy, waiting at most ``wait_s`` for it.

    Two deployers (two ModelDeck processes, the GUI and CI) would otherwise upload the same ``.part``
    files at once, and one's garbage collection could delete an object the other has just found present.
    The holder writes its pid and start time into the file, so a waiter can say who holds it; the lock
    itself is the kernel's, so it is released however the holder exits. Raises :class:`DeployError`
    after ``wait_s``.
    """
    deploy_root.mkdir(parents=True, exist_ok=True)
    path = deploy_root / HOST_LOCK
    fh = path.open("a+")
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _lock_holder(path)
                where = f"{socket.gethostname()}:{deploy_root}"
                if time.monotonic() >= deadline:
                    raise DeployError(
                        f"another deploy to {where} is in progress ({holder})",
                        hint=f"wait for it to finish and deploy again (waited {wait_s:g} s); nothing was changed",
                    ) from None
                if not told and out is not None:
                    out.progress(ProgressEvent("wait", f"waiting for another deploy to {where} ({holder})", None))
                    told = True
                time.sleep(0.05)
        fh.seek(0)
        fh.truncate()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        fh.write(json.dumps({"pid": os.getpid(), "started": started}) + "\n")
        fh.flush()
        yield
    finally:
        fh.close()  # releases the flock


def _lock_holder(path: Path) -> str:
    try:
        data = json.loads(path.read_text() or "{}")
        return f"pid {int(data['pid'])}, started {data['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


# -- the object store ----------------------------------------------------------------------------------
def missing_objects(deploy_root: Path, wanted: list[str]) -> list[str]:
    """The sha256s in ``wanted`` not yet in ``DEPLOY_ROOT/objects`` (complete objects only, never ``.part``)."""
    store = deploy_root / OBJECTS
    return sorted({sha for sha in wanted if not (store / sha).is_file()})


def stage_bundle(deploy_root: Path, files: dict[str, str]) -> Path:
    """Hard-link the bundle's objects into a fresh staging folder laid out like the bundle.

    Raises :class:`DeployError` if an object is missing or a path would escape the folder.
    """
    store = deploy_root / OBJECTS
    stage = deploy_root / STAGING / f"{os.getpid()}-{time.time_ns()}"
    stage.mkdir(parents=True)
    try:
        for rel, sha in files.items():
            target = (stage / rel).resolve()
            if not str(target).startswith(str(stage.resolve()) + os.sep) or ".." in Path(rel).parts:
                raise DeployError(f"refusing the bundle path {rel!r}")
            source = store / sha
            if not source.is_file():
                raise DeployError(f"the host is missing the uploaded file {rel} ({sha[:12]})", hint="deploy again")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return stage


def check_staged(stage: Path, files: dict[str, str]) -> None:
    """The staged manifest must list exactly the request's other files, with the same sha256s.

    With that, a push need not hash the bundle again: every object was checked against its name (its sha256)
    when it was uploaded, and the manifest is one of them. Raises :class:`DeployError` (or
    :class:`~modeldeck.core.errors.BundleError` for an unreadable manifest) before anything is installed.
    """
    manifest = read_manifest(stage)
    listed = {rel: sha for rel, sha in files.items() if rel != MANIFEST_NAME}
    if MANIFEST_NAME not in files or dict(manifest.files) != listed or manifest.model_file not in listed:
        raise DeployError(
            "the uploaded manifest does not list exactly the files sent with it; nothing was installed",
            hint="rebuild the bundle (`modeldeck bundle`) and deploy again",
        )


def collect_garbage(deploy_root: Path, grace_s: float = OBJECT_GRACE_S) -> int:
    """Remove objects no installed release uses and old staging folders (older than ``grace_s``); return how many.

    The grace period protects files another deploy to this host has just uploaded but not yet installed.
    """
    now = time.time()
    staging = deploy_root / STAGING
    for stage in staging.iterdir() if staging.is_dir() else []:
        with contextlib.suppress(OSError):
            if now - stage.stat().st_mtime > OBJECT_GRACE_S:
                shutil.rmtree(stage, ignore_errors=True)
    store = deploy_root / OBJECTS
    if not store.is_dir():
        return 0
    used: set[str] = set()
    root = deploy_root / DEPLOYMENTS
    for name in releases.list_deployments(root):
        for rid in releases.list_releases(root, name):
            manifest = releases.bundle_path(root, name, rid) / "manifest.json"
            with contextlib.suppress(OSError, ValueError):
                data = manifest.read_bytes()
                used.add(hashlib.sha256(data).hexdigest())
                used.update(str(v) for v in json.loads(data).get("files", {}).values())
    removed = 0
    for path in store.iterdir():
        sha = path.name.removesuffix(".part")
        if sha in used:
            continue
        with contextlib.suppress(OSError):
            if now - path.stat().st_mtime >= grace_s:
                path.unlink()
                removed += 1
    return removed


# -- commands --------------------------------------------------------------------------------------------
def _target(deploy_root: Path) -> Any:
    from modeldeck.core.targets.local import LocalTarget

    # A warm spare by default on hosts (servers: ~80 MB of idle memory buys a deploy without interpreter start-up
    # and imports); DeployOptions.extra["warm_spare"] = False turns it off per deployment.
    return LocalTarget(deploy_root / DEPLOYMENTS, python=sys.executable, warm_spare=True)


def cmd_deploy(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    request = _read_request()
    threading.Thread(target=_watch_lifeline, args=(cancel,), name=LIFELINE, daemon=True).start()
    deploy_root = Path(args.deploy_root)
    with host_lock(deploy_root, _lock_wait(request), out):
        return _deploy_staged(deploy_root, request, out, cancel)


def _lock_wait(request: dict[str, Any]) -> float:
    try:
        return max(0.0, float(request.get("lock_wait_s", HOST_LOCK_WAIT_S)))
    except (TypeError, ValueError):
        return HOST_LOCK_WAIT_S


def _deploy_staged(deploy_root: Path, request: dict[str, Any], out: _Output, cancel: threading.Event) -> Any:
    files = {str(k): str(v) for k, v in request["files"].items()}
    options = options_from_dict(request.get("options") or {})
    out.progress(ProgressEvent("stage", "staging the uploaded files", 0.01))
    stage = stage_bundle(deploy_root, files)
    try:
        result = _target(deploy_root).deploy(stage, options, progress=out.progress, cancel=cancel)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    with contextlib.suppress(OSError):
        collect_garbage(deploy_root)
    return result


def _free_bytes(path: Path) -> int | None:
    """Free bytes for this user on the file system holding ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _store_object(part: Path, final: Path) -> None:
    """Move a checked upload into the store, read-only: releases hard-link the stored objects, so a write in place
    would change a serving release."""
    os.chmod(part, 0o444)
    os.replace(part, final)


def _promote_uploads(deploy_root: Path, shas: list[str]) -> list[str]:
    """Check each uploaded ``objects/<sha>.part`` against its name; rename the good ones into place.

    Returns the sha256s that failed (their ``.part`` files are deleted: nothing damaged ever counts).
    """
    store = deploy_root / OBJECTS
    bad = []
    for sha in shas:
        final, part = store / sha, store / f"{sha}.part"
        if final.is_file():
            continue
        try:
            ok = _file_sha256(part) == sha
        except OSError:
            ok = False
        if ok:
            _store_object(part, final)
        else:
            bad.append(sha)
            with contextlib.suppress(OSError):
                part.unlink()
    return bad


def _part_sizes(deploy_root: Path, shas: list[str]) -> dict[str, int]:
    """Sizes of the partial uploads (``objects/<sha>.part``) already on the host: a streamed upload resumes there."""
    sizes = {}
    for sha in shas:
        with contextlib.suppress(OSError):
            sizes[sha] = (deploy_root / OBJECTS / f"{sha}.part").stat().st_size
    return sizes


STREAM_BLOCK = 1 << 20


def _receive_object(deploy_root: Path, header: bytes, wanted: set[str]) -> tuple[str, bool]:
    """Receive one object sent on stdin after its header line ``{"put": {"sha", "offset", "size", "name"}}``.

    The bytes go into ``objects/<sha>.part`` (from ``offset``: the size of the part already there, so an
    interrupted upload resumes) and through sha256 as they arrive -- the file is never read back, except for a
    resumed part's first ``offset`` bytes. A complete object that matches its name is made read-only and renamed
    into place; one that does not is deleted. Returns (sha256, whether it was good). End-of-file before ``size``
    bytes keeps what arrived (for the next try to resume) and cancels; a failed write raises :class:`DeployError`.
    """
    try:
        put = json.loads(header)["put"]
        sha, offset, size, name = str(put["sha"]), int(put["offset"]), int(put["size"]), str(put.get("name") or "")
    except (ValueError, KeyError, TypeError) as exc:
        raise DeployError(f"the agent got a malformed upload header: {exc}") from exc
    if sha not in wanted or offset < 0 or size < 0:
        raise DeployError(f"the agent was sent an object it did not ask for ({sha[:12]})")
    label = name or sha[:12]
    store = deploy_root / OBJECTS
    part = store / f"{sha}.part"
    digest = hashlib.sha256()
    try:
        store.mkdir(parents=True, exist_ok=True)
        if offset:
            have = part.stat().st_size if part.is_file() else -1
            if have != offset:
                raise DeployError(f"cannot resume {label} at {offset} bytes: the host holds {max(have, 0)}")
            with part.open("rb") as fh:
                for block in iter(lambda: fh.read(STREAM_BLOCK), b""):
                    digest.update(block)
        with part.open("ab" if offset else "wb") as fh:
            left = size
            stdin = sys.stdin.buffer
            while left:
                block = stdin.read(min(left, STREAM_BLOCK))
                if not block:
                    raise Cancelled("the deployer stopped before the upload finished; nothing was installed")
                fh.write(block)
                digest.update(block)
                left -= len(block)
    except OSError as exc:
        with contextlib.suppress(OSError):
            part.unlink()
        raise DeployError(
            f"uploading {label} failed on the host: {exc}",
            hint="check free disk on the host; the previous release still serves",
        ) from exc
    if digest.hexdigest() != sha:
        with contextlib.suppress(OSError):
            part.unlink()
        return sha, False
    _store_object(part, store / sha)
    return sha, True


def _runtime_complete() -> bool:
    """Whether this interpreter's runtime install finished (``runtime/<version>/installed.json`` exists)."""
    marker = Path(sys.prefix).parent / "installed.json"
    return marker.is_file() or Path(sys.prefix).name != "venv"


def cmd_push(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    """A whole deploy in one agent process: what is missing, wait for the upload, verify, switch.

    Protocol on top of the usual lines: while objects are missing the agent prints
    ``{"need": {"missing": [...], "bad": [...], "free_bytes": N}}`` and waits for an ``uploaded``
    line on stdin (``bad``: uploads that failed their sha256 and were deleted). Anything else,
    or end-of-file, cancels before anything is installed. Then stdin becomes the lifeline.
    """
    global RESIDENT_WANTED
    request = _read_request()
    RESIDENT_WANTED = bool(request.get("resident", False))
    deploy_root = Path(args.deploy_root)
    with host_lock(deploy_root, _lock_wait(request), out):
        return _push_locked(deploy_root, request, out, cancel)


def _push_locked(deploy_root: Path, request: dict[str, Any], out: _Output, cancel: threading.Event) -> Any:
    files = {str(k): str(v) for k, v in request["files"].items()}
    options = options_from_dict(request.get("options") or {})
    missing = missing_objects(deploy_root, sorted(set(files.values())))
    target = None
    early = None
    try:
        bad: list[str] = []
        while missing:
            need: dict[str, Any] = {"missing": missing, "bad": bad, "free_bytes": _free_bytes(deploy_root)}
            if request.get("stream"):
                need["stream"] = True
                need["parts"] = _part_sizes(deploy_root, missing)
            out.line({"need": need})
            if target is None:  # imported while the upload runs, not before it starts
                target = _target(deploy_root)
                # The new release's runtime imports its stack while the upload runs (it waits for the release
                # folder, then verifies the bundle as always): measured, imports were ~70 % of its start-up.
                early = target.prestart(bundle_digest(files), options)
            streamed: dict[str, bool] = {}
            while True:
                reply = sys.stdin.buffer.readline()
                if reply.startswith(b"{") and request.get("stream"):
                    sha, ok = _receive_object(deploy_root, reply, set(missing))
                    streamed[sha] = ok
                    continue
                if reply.strip() != b"uploaded":
                    raise Cancelled("the deployer stopped before the upload finished; nothing was installed")
                break
            bad = [sha for sha in missing if streamed.get(sha) is False]
            bad += _promote_uploads(deploy_root, [sha for sha in missing if sha not in streamed])  # sent by SFTP
            missing = sorted(bad)
        threading.Thread(target=_watch_lifeline, args=(cancel,), name=LIFELINE, daemon=True).start()
        if target is None:  # nothing to upload: still overlaps the imports with staging and installing
            target = _target(deploy_root)
            early = target.prestart(bundle_digest(files), options)
        out.progress(ProgressEvent("stage", "staging the uploaded files", 0.01))
        stage = stage_bundle(deploy_root, files)
        try:
            check_staged(stage, files)
            result = target.deploy(
                stage, options, progress=out.progress, cancel=cancel, prestarted=early, verified=True
            )
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        if target is not None and early is not None:
            target.discard(early)  # a no-op once the switch took it over
    with contextlib.suppress(OSError):
        collect_garbage(deploy_root)
    return result


def cmd_have(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    request = _read_request()
    return {"missing": missing_objects(Path(args.deploy_root), [str(s) for s in request.get("objects", [])])}


def cmd_plan(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    """What a deploy would find: the objects the host lacks and the deployment's status (one round trip)."""
    request = _read_request()
    deploy_root = Path(args.deploy_root)
    missing = missing_objects(deploy_root, [str(s) for s in request.get("objects", [])])
    target = _target(deploy_root)
    names = set(releases.list_deployments(target.root))
    status = target.status(args.name) if args.name and args.name in names else []
    return {"missing": missing, "status": status}


def cmd_status(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    return _target(Path(args.deploy_root)).status(args.name)


def cmd_rollback(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    threading.Thread(target=_watch_lifeline, args=(cancel,), name=LIFELINE, daemon=True).start()
    return _target(Path(args.deploy_root)).rollback(args.name, progress=out.progress, cancel=cancel)


def cmd_start(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    threading.Thread(target=_watch_lifeline, args=(cancel,), name=LIFELINE, daemon=True).start()
    return _target(Path(args.deploy_root)).start(args.name, progress=out.progress, cancel=cancel)


def cmd_stop(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    return _target(Path(args.deploy_root)).stop(args.name)


def cmd_undeploy(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    deploy_root = Path(args.deploy_root)
    _target(deploy_root).undeploy(args.name, progress=out.progress, cancel=cancel)
    try:
        with host_lock(deploy_root, HOST_LOCK_WAIT_S, out):
            collect_garbage(deploy_root, grace_s=0.0)  # undeploy leaves none of its files behind
    except (DeployError, OSError) as exc:  # the deployment is gone; its objects go with the next push's collection
        log.warning("unused objects left for the next deploy to collect: %s", exc)
    if not releases.list_deployments(deploy_root / DEPLOYMENTS):
        stop_resident()  # nothing left to deploy to: no idle process stays behind
    return None


def cmd_logs(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    target = _target(Path(args.deploy_root))
    target.status(args.name)  # an unknown name is an error, not an empty log
    return {"text": target.logs(args.name, args.lines)}


def cmd_input_example(args: argparse.Namespace, out: _Output, cancel: threading.Event) -> Any:
    return {"example": _target(Path(args.deploy_root)).input_example(args.name)}


# -- the resident agent -------------------------------------------------------------------------------------
RESIDENT_WANTED = False  # set by a push whose deployer asked for a resident agent (one process: one command)


def resident_files() -> tuple[Path, Path, Path]:
    """Socket, pid file and log of this runtime version's resident agent (beside its venv)."""
    base = Path(sys.prefix).parent
    return base / RESIDENT_SOCKET, base / RESIDENT_PID, base / RESIDENT_LOG


def _resident_pid() -> int | None:
    """The live resident agent's pid (its pid file names a process running ``agent serve`` from this venv)."""
    _, pid_path, _ = resident_files()
    try:
        pid = int(pid_path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if state == "Z" or AGENT_MODULE_B not in cmdline or b"serve" not in cmdline:
        return None
    return pid


AGENT_MODULE_B = b"modeldeck.core.targets.agent"


def keep_resident(deploy_root: Path) -> None:
    """Start this runtime version's resident agent for ``deploy_root`` unless one runs; never fails the caller.

    Called after a successful push, once its answer is written: the start (an interpreter and the deploy code's
    imports) happens while the deployer is already done, and every later command to this host skips it.
    """
    sock_path, _, log_path = resident_files()
    if _resident_pid() is not None and sock_path.exists():
        return
    if len(str(sock_path).encode()) >= 100:  # sshd connects by path: sun_path holds 108 bytes
        return
    try:
        with log_path.open("ab") as log_fh:
            subprocess.Popen(
                [sys.executable, "-m", AGENT_MODULE_B.decode(), "serve",
                 "--deploy-root", str(deploy_root)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_fh, start_new_session=True,
                close_fds=True,
            )  # fmt: skip
    except OSError as exc:
        log.warning("no resident agent: %s", exc)


def stop_resident(wait_s: float = 5.0) -> None:
    """Stop this runtime version's resident agent, if one runs, and wait (bounded) until it is gone.

    A command run by the resident agent itself (its forked child) may call this: it then stops its own parent,
    which is fine, the child finishes on its own."""
    pid = _resident_pid()
    if pid is None:
        return
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and _resident_pid() == pid:
        time.sleep(0.01)


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: Any) -> None:
    raise _Stop


def serve(deploy_root: Path) -> int:
    """Be the resident agent: accept connections on ``agent.sock`` and run each as one agent command in a forked
    child (this process has imported the deploy code already; a fork costs milliseconds of CPU).

    The connection carries a header line ``{"argv": [...], "env": {...}}`` and then exactly what an exec'd agent
    would see on stdin and write to stdout, so the lock, the lifeline (end-of-file cancels) and probation work as
    they do for an exec'd agent. It ends on SIGTERM, when its socket is removed or replaced, when its runtime
    install goes away, or when no deployment is left under ``deploy_root``.
    """
    # Imported once here, not in every forked command (measured: ~0.02 CPU-s per push for the lazy ones).
    import modeldeck.core.runtime.config
    import modeldeck.core.targets.supervisor  # noqa: F401
    from modeldeck.core.targets import local  # noqa: F401

    sock_path, pid_path, _ = resident_files()
    marker = Path(sys.prefix).parent / "installed.json"
    for fd in (0, 1):  # the children's stdin/stdout are replaced by the connection: make sure both exist
        try:
            os.fstat(fd)
        except OSError:
            os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = sock_path.with_name(f"{sock_path.name}.{os.getpid()}")
    old_umask = os.umask(0o177)  # 0600 from the start: only this user may ask the agent anything
    try:
        listener.bind(str(tmp))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    os.replace(tmp, sock_path)
    inode = sock_path.stat().st_ino
    pid_tmp = pid_path.with_name(f"{pid_path.name}.{os.getpid()}")
    pid_tmp.write_text(f"{os.getpid()}\n")
    os.replace(pid_tmp, pid_path)
    signal.signal(signal.SIGTERM, _raise_stop)
    log.info("resident agent %d for %s on %s", os.getpid(), deploy_root, sock_path)
    children: set[int] = set()
    last_check = 0.0
    try:
        while True:
            ready, _, _ = select.select([listener], [], [], RESIDENT_CHECK_S)
            while children:
                try:
                    done, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    children.clear()
                    break
                if not done:
                    break
                children.discard(done)
            if ready:
                with contextlib.suppress(OSError):
                    conn, _ = listener.accept()
                    pid = os.fork()
                    if pid == 0:
                        _serve_one(listener, conn)  # never returns
                    children.add(pid)
                    conn.close()
            if time.monotonic() - last_check >= RESIDENT_CHECK_S:
                last_check = time.monotonic()
                try:
                    ours = sock_path.stat().st_ino == inode
                except OSError:
                    ours = False
                if not ours:
                    return 0
                if not marker.is_file() or not releases.list_deployments(deploy_root / DEPLOYMENTS):
                    break
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        listener.close()
    with contextlib.suppress(OSError):
        if sock_path.stat().st_ino == inode:
            sock_path.unlink()
    with contextlib.suppress(OSError, ValueError):
        if int(pid_path.read_text().strip()) == os.getpid():
            pid_path.unlink()
    return 0


def _serve_one(listener: socket.socket, conn: socket.socket) -> None:
    """In the forked child: the connection becomes stdin and stdout, then one agent command runs as if exec'd."""
    code = 70
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        listener.close()
        os.dup2(conn.fileno(), 0)
        os.dup2(conn.fileno(), 1)
        conn.close()
        header = json.loads(sys.stdin.buffer.readline(RESIDENT_HEADER_MAX) or b"{}")
        argv = header.get("argv")
        env = header.get("env") or {}
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) for a in argv)
            or argv[0] not in COMMANDS
            or not isinstance(env, dict)
        ):
            sys.stdout.write(json.dumps({"error": {"type": "DeployError", "message": "bad resident request"}}) + "\n")
            code = 2
        else:
            os.environ.update({str(k): str(v) for k, v in env.items()})
            sys.stdout.write(json.dumps({"hello": {"pid": os.getpid()}}) + "\n")
            sys.stdout.flush()
            code = main(argv)
    except BaseException:  # a forked child must never return into the server's loop
        log.exception("resident agent command failed")
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


COMMANDS = {
    "deploy": cmd_deploy,
    "push": cmd_push,
    "have": cmd_have,
    "plan": cmd_plan,
    "status": cmd_status,
    "rollback": cmd_rollback,
    "start": cmd_start,
    "stop": cmd_stop,
    "undeploy": cmd_undeploy,
    "logs": cmd_logs,
    "input-example": cmd_input_example,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modeldeck.core.targets.agent", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=sorted([*COMMANDS, "serve"]))
    parser.add_argument("name", nargs="?", help="deployment name (all but deploy/push/have; optional for status)")
    parser.add_argument("--deploy-root", required=True, help="the host's DEPLOY_ROOT (deployments/, objects/ below)")
    parser.add_argument("--lines", type=int, default=200, help="logs: how many lines")
    return parser


PROFILE_ENV = "MODELDECK_AGENT_PROFILE"  # benchmarks: a folder where the agent writes its cProfile and CPU marks


def main(argv: list[str] | None = None) -> int:
    profile_dir = os.environ.get(PROFILE_ENV)
    code = _run(argv) if not profile_dir else _profiled_run(argv, Path(profile_dir))
    if any(t.name == LIFELINE for t in threading.enumerate()):
        # The lifeline thread sits in stdin's readline holding its buffer lock: a normal interpreter exit would
        # wait 1 s for that lock and then abort (SIGABRT) -- measured, it cost every deploy a second. Its work is
        # done once the answer is written, so leave at once.
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


def _profiled_run(argv: list[str] | None, folder: Path) -> int:
    """``_run`` under cProfile; writes ``agent-PID.prof`` and the process's CPU seconds (``agent-PID.json``, from
    interpreter start: what the profile cannot see) into ``folder``. For benchmarks only."""
    import cProfile

    def cpu() -> float:
        t = os.times()
        return t.user + t.system

    at_start = cpu()
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(_run, argv)
    finally:
        profiler.disable()
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(folder / f"agent-{os.getpid()}.prof")
            marks = {"cpu_before_main_s": at_start, "cpu_total_s": cpu(), "argv": argv or sys.argv[1:]}
            (folder / f"agent-{os.getpid()}.json").write_text(json.dumps(marks))


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return serve(Path(args.deploy_root))
    if args.command == "push" and not _runtime_complete():
        print("this runtime install is incomplete", file=sys.stderr)
        return 127  # like a missing interpreter: the deployer falls back to inspecting the host
    needs_name = args.command not in ("deploy", "push", "have", "status", "plan")
    if needs_name and not args.name:
        print(f"{args.command} needs a deployment name", file=sys.stderr)
        return 2
    cancel = threading.Event()
    out = _Output(cancel)
    try:
        result = COMMANDS[args.command](args, out, cancel)
    except ModelDeckError as exc:
        out.line({"error": {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}})
        return 3 if isinstance(exc, Cancelled) else 1
    except Exception as exc:  # a bug: report it on the protocol, with the traceback on stderr
        log.exception("agent %s failed", args.command)
        out.line({"error": {"type": "DeployError", "message": f"the host agent failed: {exc!r}", "hint": None}})
        return 1
    out.line({"result": jsonable(result)})
    if args.command == "push" and RESIDENT_WANTED:  # only a push's request asks for one
        keep_resident(Path(args.deploy_root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
