"""The local target (``local://PORT``, ``local://HOST:PORT``): deployments on this machine.

Each deployment is a release layout (see :mod:`modeldeck.core.targets.releases`) under
``settings.deployments_dir``, served by a runtime process under a small supervisor
(:mod:`modeldeck.core.targets.supervisor`) that outlives the CLI or GUI that started it.

Switching releases is health-gated and start-first: the new runtime starts beside the
old one on the same public port (``SO_REUSEPORT``) plus a private port, must pass the
:class:`HealthGate` on the private port (ready, ``/health``, the bundle's own input
example), and only then is it recorded as active and the old one drained with SIGTERM.
Any failure or cancellation before that point stops the new process and leaves the old
release serving and ``current`` unchanged. The new supervisor is on probation until the
deployer commits through a pipe, so even a deployer that crashes mid-switch cannot leave
an uncommitted release serving.

A *warm spare* (on by default for SSH hosts, off for this machine; ``DeployOptions.extra["warm_spare"]``) is
one idle runtime per deployment whose Python, numpy, onnxruntime and uvicorn are already imported, started
after each successful switch. The next switch claims it through its supervisor's unix socket (see
:mod:`modeldeck.core.targets.supervisor`) instead of starting a process, and that connection is the new
release's probation channel. A missing, dead or stale spare is simply not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modeldeck.core.errors import BundleError, Cancelled, DeployError, ModelDeckError, TargetError
from modeldeck.core.runtime.manifest import Manifest, read_manifest, verify_bundle
from modeldeck.core.targets import health, releases
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
from modeldeck.core.targets.releases import DeploymentState

log = logging.getLogger(__name__)

SUPERVISOR_MODULE = "modeldeck.core.targets.supervisor"
RUNTIME_MODULE = "modeldeck.core.runtime"
_STOP_MARGIN_S = 10.0  # on top of the runtime's graceful drain before SIGKILL


def parse_local_url(url: str) -> tuple[str, int | None]:
    """``local://``, ``local://PORT`` or ``local://HOST:PORT`` -> (host, port); raises :class:`TargetError`."""
    if not url.startswith("local://"):
        raise TargetError(f"not a local target URL: {url!r}", hint="use local://PORT or local://HOST:PORT")
    rest = url[len("local://") :].strip("/")
    if not rest:
        return "127.0.0.1", None
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", rest
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise TargetError(f"invalid port in target {url!r}", hint="use local://PORT, e.g. local://8080") from None
    if not 1 <= port <= 65535:
        raise TargetError(f"port {port} in target {url!r} is out of range 1..65535")
    return host, port


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free right now (for defaults; a later bind may still race)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` (a plain bind, as a foreign server would see it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int | None) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it happens to be our child
        if done:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_our_supervisor(pid: int | None) -> bool:
    """Guards against pid reuse: the pid must still be a ModelDeck supervisor."""
    if not pid_alive(pid):
        return False
    try:
        return SUPERVISOR_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid


def _supervisor_can_steer(pid: int) -> bool:
    """Only supervisors started with ``--public-port`` handle SIGUSR1/2 (for others they would be fatal)."""
    try:
        return b"--public-port" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


SPARE = "spare"  # run/spare.pid, run/spare.sock, run/spare.ready.json: the deployment's warm spare
SPARE_OFF = "spare.off"  # run/spare.off: the last deploy turned the spare off (rollback and start respect it)
CLAIM_TIMEOUT_S = 5.0
# A new spare waits this long before its runtime imports anything: right after a switch the host's CPU belongs to
# the new release's first requests and the old release's drain. A claim during the wait starts the release at once.
SPARE_START_DELAY_S = 2.0
PRESTART_WAIT_S = 900.0  # how long a pre-started runtime waits for its release (the probation pipe ends it sooner)


@dataclass
class Prestarted:
    """A supervisor and runtime started before their release is installed (see :meth:`LocalTarget.prestart`)."""

    name: str
    release_id: str
    bundle_sha256: str
    host: str
    port: int
    pid: int
    commit_w: int
    ready_file: Path
    pidfile: Path
    taken: bool = False  # a switch took it over (and owns its clean-up from then on)
    from_spare: bool = False  # the deployment's warm spare was claimed for it (no process was started)


class LocalTarget:
    """Deployments on this machine, under ``root`` (default: ``settings.deployments_dir``)."""

    kind = "local"

    def __init__(
        self,
        root: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        python: str | None = None,
        steer_port: bool = True,
        warm_spare: bool = False,
    ) -> None:
        if root is None:
            from modeldeck.core.settings import load_settings

            root = load_settings().deployments_dir
        self.root = Path(root)
        self.host = host
        self.port = port
        self.python = python or sys.executable
        self.steer_port = steer_port  # False: share the port by hash during switches (for comparison)
        # Default for deploys that do not say (extra["warm_spare"]): off here, where a second idle runtime per
        # deployment would double a laptop's memory for little gain; the SSH agent turns it on for servers.
        self.warm_spare = warm_spare

    @classmethod
    def from_url(cls, url: str, *, root: Path | None = None, python: str | None = None) -> LocalTarget:
        host, port = parse_local_url(url)
        return cls(root, host=host, port=port, python=python)

    @property
    def url(self) -> str:
        return f"local://{self.host}:{self.port}" if self.port else "local://"

    # -- planning --------------------------------------------------------------------------------
    def _name_for(self, manifest: Manifest, options: DeployOptions) -> str:
        return releases.validate_name(options.name or releases.name_from_model(manifest.model_name))

    def plan(self, bundle_dir: Path, options: DeployOptions) -> Plan:
        """What :meth:`deploy` would do; validates the bundle, name and port without changing anything."""
        manifest = self._checked_bundle(bundle_dir)
        name = self._name_for(manifest, options)
        state = releases.read_state(self.root, name)
        host, port = self._choose_port(name, state, options, check=True)
        url = f"local://{host}:{port}"
        if state is not None and self._serves(state, manifest) and self._serving(state):
            return Plan(
                url,
                name,
                (PlannedStep("noop", "this bundle is already installed and serving"),),
                replaces=state.active_release,
            )
        steps = [
            PlannedStep(
                "verify", f"verify bundle {manifest.model_name} v{manifest.model_version} ({manifest.sha256[:12]})"
            ),
            PlannedStep("install", f"copy it into a new release under {releases.deployment_dir(self.root, name)}"),
            PlannedStep("start", f"start the runtime beside the current one on {host}:{port} plus a private port"),
            PlannedStep("health", "wait until ready, check /health and answer the bundle's input example"),
        ]
        if state is not None and self._serving(state):
            steps.append(PlannedStep("switch", f"make it current and drain the old release {state.active_release}"))
        else:
            steps.append(PlannedStep("switch", "make it current"))
        return Plan(url, name, tuple(steps), replaces=state.active_release if state and self._serving(state) else None)

    # -- deploy ----------------------------------------------------------------------------------
    def deploy(
        self,
        bundle_dir: Path,
        options: DeployOptions,
        progress: Progress = no_progress,
        cancel: threading.Event | None = None,
        *,
        prestarted: Prestarted | None = None,
        verified: bool = False,
    ) -> DeployResult:
        """Install ``bundle_dir`` as a new release and switch to it, health-gated and start-first.

        Validation errors (missing or tampered bundle, bad name, port in use) raise before
        anything changes. A failed health gate returns ``failed (rolled back)`` (or ``failed``
        when nothing was serving) with the reason, the old release still serving. Cancelling
        raises :class:`Cancelled` after the same clean-up. ``prestarted`` (from :meth:`prestart`)
        is used if it was started for this bundle, name, host and port; the caller still
        :meth:`discard`\\ s it afterwards (a no-op once a switch took it over).

        ``verified``: the caller has checked every file of ``bundle_dir`` against the manifest and nothing writes
        to them any more (the SSH agent's staged objects, each checked against its sha256 when uploaded): they are
        not hashed again here but hard-linked into the release. The runtime still verifies the release before
        it serves.
        """
        _check_cancel(cancel)
        _check_warm_spare(options)
        progress(ProgressEvent("verify", "verifying the bundle", 0.02))
        manifest = read_manifest(Path(bundle_dir)) if verified else self._checked_bundle(bundle_dir)
        name = self._name_for(manifest, options)
        if prestarted is not None and prestarted.name == name and not options.port and not self.port:
            # No port asked for: the one the pre-started runtime was given (a first deploy would pick another
            # free port, and the pre-started runtime would be wasted -- measured: +3 s at 8 SSH hosts).
            options = replace(options, port=prestarted.port)
        # Validate port and options before anything is written (re-checked under the lock below).
        host, port = self._choose_port(name, releases.read_state(self.root, name), options, check=True)
        self._runtime_config(name, host, port, options)
        with releases.deployment_lock(self.root, name, create=True):
            first = releases.read_state(self.root, name) is None
            try:
                return self._deploy_locked(
                    bundle_dir, manifest, name, options, progress, cancel, prestarted, verified=verified
                )
            except BaseException:
                if first and releases.read_state(self.root, name) is None:
                    releases.remove_deployment(self.root, name)  # a first deploy that stopped early leaves nothing
                raise

    def _deploy_locked(
        self,
        bundle_dir: Path,
        manifest: Manifest,
        name: str,
        options: DeployOptions,
        progress: Progress,
        cancel: threading.Event | None,
        prestarted: Prestarted | None = None,
        *,
        verified: bool = False,
    ) -> DeployResult:
        """The body of :meth:`deploy`, run while holding the deployment's lock."""
        state = releases.read_state(self.root, name)
        if state is not None:
            state = self._finish_interrupted(state)
        host, port = self._choose_port(name, state, options, check=True)
        if prestarted is not None and (prestarted.name, prestarted.bundle_sha256, prestarted.host, prestarted.port) != (
            name,
            manifest.sha256,
            host,
            port,
        ):
            log.info("the pre-started runtime was for another bundle or port; starting a new one")
            self.discard(prestarted)
            prestarted = None
        if state is not None and self._serves(state, manifest) and state.active_release:
            installed = releases.release_dir(self.root, name, state.active_release).is_dir()
            if installed and self._serving(state) and state.port == port and state.host == host:
                progress(ProgressEvent("done", "already installed; nothing to do", 1.0))
                return DeployResult(
                    name,
                    "already-installed",
                    self._status_of(state),
                    f"bundle {manifest.sha256[:12]} is already serving as {state.active_release}",
                )
            if installed and not self._serving(state):
                state = replace(state, host=host, port=port)
                return self._switch(
                    state, state.active_release, options, progress, cancel, outcome="deployed", fresh=False
                )
        _check_cancel(cancel)
        release_id = prestarted.release_id if prestarted is not None else releases.new_release_id(manifest.sha256)
        pinned: bool | None = None
        if prestarted is not None:
            # The pre-started runtime listens on the shared port as soon as the release below exists and its model
            # is warm: pin the port to the serving release first, so no request reaches it before its gate passed.
            serving = state is not None and self._serving(state) and state.port == port
            pinned = self._pin_serving_release(state) if state is not None and serving else False
        progress(ProgressEvent("install", f"installing release {release_id}", 0.1))
        runtime_config = self._runtime_config(name, host, port, options)
        rdir = releases.install_release(self.root, name, Path(bundle_dir), release_id, runtime_config, link=verified)
        try:
            if not verified:  # a linked release holds the very files the caller checked
                verify_bundle(rdir / releases.BUNDLE_DIR)  # the copy, not just the source
        except BundleError as exc:
            releases.remove_release(self.root, name, release_id)
            raise DeployError(f"the installed copy of the bundle is damaged: {exc}") from exc
        first = state is None
        if state is None:
            state = DeploymentState(name=name, host=host, port=port, desired="stopped")
            releases.write_state(self.root, state)
        elif not self._serving(state):
            state = replace(state, host=host, port=port)
        try:
            result = self._switch(
                state,
                release_id,
                options,
                progress,
                cancel,
                outcome="deployed",
                fresh=True,
                new_port=(host, port),
                prestarted=prestarted,
                pinned=pinned,
            )
        except Cancelled:
            if first:
                releases.remove_deployment(self.root, name)
            raise
        if first and not result.ok:  # nothing was ever serving: leave no trace
            releases.remove_deployment(self.root, name)
            result = replace(result, status=None)
        return result

    def rollback(
        self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None
    ) -> DeployResult:
        """Switch back to the recorded previous release, with the same health-gated start-first switch."""
        with releases.deployment_lock(self.root, name):
            state = self._require_state(name)
            state = self._finish_interrupted(state)
            prev = state.previous_release
            if not prev or not releases.release_dir(self.root, name, prev).is_dir():
                raise DeployError(f"deployment {name!r} has no previous release to roll back to")
            try:
                verify_bundle(releases.bundle_path(self.root, name, prev))
            except BundleError as exc:
                raise DeployError(f"the previous release {prev} is damaged: {exc}") from exc
            options = DeployOptions(name=name, host=state.host, port=state.port)
            return self._switch(state, prev, options, progress, cancel, outcome="rolled-back", fresh=False)

    def start(self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None) -> DeployResult:
        """Start a stopped deployment's active release again (health-gated); a running one is left alone."""
        with releases.deployment_lock(self.root, name):
            state = self._finish_interrupted(self._require_state(name))
            if self._serving(state):
                return DeployResult(name, "already-installed", self._status_of(state), "already running")
            if not state.active_release:
                raise DeployError(f"deployment {name!r} has no release to start")
            if not port_is_free(state.host, state.port):
                raise DeployError(
                    f"port {state.port} is in use by another program", hint="stop it, or deploy again with another port"
                )
            options = DeployOptions(name=name, host=state.host, port=state.port)
            return self._switch(state, state.active_release, options, progress, cancel, outcome="deployed", fresh=False)

    # -- the switch ------------------------------------------------------------------------------
    def _switch(
        self,
        state: DeploymentState,
        release_id: str,
        options: DeployOptions,
        progress: Progress,
        cancel: threading.Event | None,
        *,
        outcome: str,
        fresh: bool,
        new_port: tuple[str, int] | None = None,
        prestarted: Prestarted | None = None,
        pinned: bool | None = None,
    ) -> DeployResult:
        name = state.name
        host, port = new_port or (state.host, state.port)
        old_serving = self._serving(state)
        bundle = releases.bundle_path(self.root, name, release_id)
        manifest = read_manifest(bundle)
        example = health.load_example(bundle, manifest.input_example_file) if options.health.check_example else None
        # An old release keeps its runtime.json (batching, CORS as deployed); the binds come from the command line.
        run = releases.run_dir(self.root, name)
        run.mkdir(parents=True, exist_ok=True)
        ready_file = run / f"{release_id}.ready.json"
        pidfile = run / f"{release_id}.pid"
        proc_pid: int | None = None
        commit_w: int | None = None
        if pinned is None:
            pinned = self._pin_serving_release(state) if old_serving and state.port == port else False
        if prestarted is not None:
            prestarted.taken = True  # from here on its clean-up is this switch's
            proc_pid, commit_w = prestarted.pid, prestarted.commit_w
        try:
            _check_cancel(cancel)
            claimed = None
            if prestarted is None and self._wants_spare(name, options):
                claimed = self._claim_spare(name, release_id, host, port, ready_file, pidfile, options.env)
            if claimed is not None:
                proc_pid, commit_w = claimed
                progress(ProgressEvent("start", f"release {release_id} on {host}:{port} (warm spare runtime)", 0.3))
            elif prestarted is None:
                progress(ProgressEvent("start", f"starting release {release_id} on {host}:{port}", 0.3))
                proc_pid, commit_w = self._launch(name, release_id, host, port, ready_file, pidfile, options.env)
            else:
                how = "warm spare runtime" if prestarted.from_spare else "runtime pre-started"
                progress(ProgressEvent("start", f"release {release_id} on {host}:{port} ({how})", 0.3))
            progress(ProgressEvent("health", "waiting for the new runtime to be ready", 0.45))
            ready = health.wait_for_ready_file(
                ready_file, options.health, alive=lambda: pid_alive(proc_pid), cancel=cancel
            )
            private = _private_bind(ready, host, port)
            progress(ProgressEvent("health", f"checking the new runtime on its private port {private}", 0.7))
            summary = health.check_release(
                f"http://{private}", options.health, example=example, expect_sha256=manifest.sha256, cancel=cancel
            )
            _check_cancel(cancel)
        except (ModelDeckError, OSError) as exc:
            reason = exc.message if isinstance(exc, ModelDeckError) else str(exc)
            said = self._runtime_error(name, proc_pid) if not isinstance(exc, Cancelled) else None
            if said:
                reason = f"{reason}: {said}"
            log.warning("release %s of %s failed its health gate: %s", release_id, name, reason)
            self._abort(proc_pid, commit_w, ready_file, pidfile)
            if fresh:
                releases.remove_release(self.root, name, release_id)
            if isinstance(exc, Cancelled):
                progress(ProgressEvent("done", "cancelled; the previous release is still serving", 1.0))
                raise
            result_outcome = "failed (rolled back)" if old_serving else "failed"
            progress(ProgressEvent("done", f"{result_outcome}: {reason}", 1.0))
            return DeployResult(name, result_outcome, self._status_of(state), reason)
        except BaseException:  # a bug or KeyboardInterrupt: still never leave the candidate behind
            self._abort(proc_pid, commit_w, ready_file, pidfile)
            if fresh:
                releases.remove_release(self.root, name, release_id)
            raise

        # Commit: the new supervisor stays, the state names it, current points at it, the old one drains.
        progress(ProgressEvent("switch", f"switching to release {release_id}", 0.85))
        old_pid = state.pid if old_serving else None
        previous = state.active_release if state.active_release != release_id else state.previous_release
        new_state = replace(
            state,
            host=host,
            port=port,
            active_release=release_id,
            previous_release=previous,
            desired="running",
            pid=proc_pid,
            retiring_pid=old_pid,
            started_at=_utc_now(),
            bundle_sha256=manifest.sha256,
            model_name=manifest.model_name,
            model_version=manifest.model_version,
        )
        releases.write_state(self.root, new_state)
        assert commit_w is not None
        with contextlib.suppress(OSError):
            os.write(commit_w, b"commit\n")
        os.close(commit_w)
        releases.switch_current(self.root, name, release_id)
        if old_pid:
            progress(ProgressEvent("drain", "handing the port over; the old release drains in the background", 0.9))
            # Pinned: SIGUSR2 makes the old supervisor hand the port over (new connections go to the new
            # release, its accept queue empties) before it drains; otherwise a plain SIGTERM drain.
            # Once new connections reach the new release the deploy is done: the drain is not waited for (it
            # cost 0.46 s per host at 8 SSH hosts). The old supervisor finishes on its own (its runtime's graceful
            # drain, SIGKILL after --stop-timeout); ``retiring_pid`` stays recorded so the next operation on this
            # deployment waits for it if it is somehow still there, and undeploy stops it.
            if not (pinned and self._hand_over(name, state.active_release, old_pid)):
                self._stop_pid(old_pid, sig=signal.SIGUSR2 if pinned else signal.SIGTERM)
                new_state = replace(new_state, retiring_pid=None)
                releases.write_state(self.root, new_state)
        releases.prune_releases(
            self.root, name, options.keep_releases, protect=(new_state.active_release, new_state.previous_release)
        )
        self._keep_spare(new_state, options)
        progress(ProgressEvent("done", f"{outcome}: {summary}", 1.0))
        return DeployResult(name, outcome, self._status_of(new_state), summary)

    def _runtime_error(self, name: str, supervisor_pid: int | None) -> str | None:
        """The ``error: …`` line the candidate's runtime printed, if any (from the shared log)."""
        if not supervisor_pid:
            return None
        lines = self.logs(name, 200).splitlines()
        marker = f"supervisor[{supervisor_pid}]: started runtime"
        start = max((i for i, line in enumerate(lines) if marker in line), default=None)
        if start is None:
            return None
        errors = [line[len("error: ") :] for line in lines[start:] if line.startswith("error: ")]
        return errors[-1] if errors else None

    def _pin_serving_release(self, state: DeploymentState) -> bool:
        """Ask the serving release's supervisor to keep every new public connection while a new one starts.

        True once it confirmed (its pin file appeared within 2 s); False means the port will be
        shared by hash during the switch (still correct, but a few requests may fail).
        """
        if not self.steer_port or not state.pid or not state.active_release or not _supervisor_can_steer(state.pid):
            return False
        pin_file = releases.pin_file(self.root, state.name, state.active_release)
        with contextlib.suppress(FileNotFoundError):
            pin_file.unlink()
        try:
            os.kill(state.pid, signal.SIGUSR1)
        except OSError:
            return False
        deadline = time.monotonic() + 2.0
        while not pin_file.is_file():
            if time.monotonic() > deadline:
                log.info("release %s did not confirm the port pin; switching with hash sharing", state.active_release)
                return False
            time.sleep(0.01)
        pin_file.unlink()
        return True

    def prestart(self, bundle_sha256: str, options: DeployOptions) -> Prestarted | None:
        """Start the runtime of a release that is not installed yet: it imports its serving stack (~0.3 s of CPU)
        and waits for the release folder, while the caller still receives the bundle.

        For callers that know the bundle's digest and deployment name (``options.name``) before they have the
        bundle, e.g. the SSH agent during an upload. Returns None when there is nothing to gain or it cannot be
        done now (the same bundle already serves, the port is taken): :meth:`deploy` then starts the runtime
        itself and reports any error properly. The runtime is on
        probation as usual and verifies the bundle once it is there. Pass the result to :meth:`deploy`, then
        always to :meth:`discard`.
        """
        if not options.name:
            return None
        try:
            name = releases.validate_name(options.name)
            state = releases.read_state(self.root, name)
            if state is not None and state.bundle_sha256 == bundle_sha256 and self._serving(state):
                return None  # already serving: the deploy will do nothing
            host, port = self._choose_port(name, state, options, check=True)
            release_id = releases.new_release_id(bundle_sha256)
            run = releases.run_dir(self.root, name)
            run.mkdir(parents=True, exist_ok=True)
            ready_file, pidfile = run / f"{release_id}.ready.json", run / f"{release_id}.pid"
            claimed = None
            if self._wants_spare(name, options):
                claimed = self._claim_spare(
                    name, release_id, host, port, ready_file, pidfile, options.env, wait_for_bundle=PRESTART_WAIT_S
                )
            pid, commit_w = claimed or self._launch(
                name, release_id, host, port, ready_file, pidfile, options.env, wait_for_bundle=PRESTART_WAIT_S
            )
        except (ModelDeckError, OSError) as exc:
            log.info("not pre-starting the runtime: %s", exc)
            return None
        return Prestarted(
            name, release_id, bundle_sha256, host, port, pid, commit_w, ready_file, pidfile, from_spare=bool(claimed)
        )

    def discard(self, prestarted: Prestarted) -> None:
        """Stop a pre-started runtime no switch took over (a failed upload, another bundle); a first deploy that
        never happened leaves no folder behind."""
        if prestarted.taken:
            return
        prestarted.taken = True
        self._abort(prestarted.pid, prestarted.commit_w, prestarted.ready_file, prestarted.pidfile)
        if releases.read_state(self.root, prestarted.name) is None:
            releases.remove_deployment(self.root, prestarted.name)

    # -- the warm spare --------------------------------------------------------------------------------
    def _spare_files(self, name: str) -> tuple[Path, Path, Path]:
        run = releases.run_dir(self.root, name)
        return run / f"{SPARE}.pid", run / f"{SPARE}.sock", run / f"{SPARE}.ready.json"

    def _wants_spare(self, name: str, options: DeployOptions) -> bool:
        """The deploy's own choice, else (rollback, start) the last deploy's, else this target's default."""
        if "warm_spare" in options.extra:
            return bool(options.extra["warm_spare"])
        if (releases.run_dir(self.root, name) / SPARE_OFF).is_file():
            return False
        return self.warm_spare

    def _spare_key(self, host: str, port: int, env: dict[str, str]) -> str:
        """What makes a spare usable: same interpreter, same runtime and supervisor code, address, environment."""
        data = json.dumps([self.python, _runtime_fingerprint(), host, port, sorted(env.items())])
        return hashlib.sha256(data.encode()).hexdigest()[:32]

    def spare_pid(self, name: str) -> int | None:
        """The pid of the deployment's idle warm spare's supervisor, if one is running."""
        pid_path = self._spare_files(name)[0]
        try:
            pid = int(pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_deployment_supervisor(name, pid) and _is_spare(pid) else None

    def stop_spare(self, name: str) -> None:
        """Stop the deployment's warm spare, if any (an idle runtime: no drain to wait for)."""
        pid = self.spare_pid(name)
        if pid:
            self._stop_pid(pid, timeout=10.0)
        for f in self._spare_files(name):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()

    def _keep_spare(self, state: DeploymentState, options: DeployOptions) -> None:
        """After a committed switch: make sure one fresh spare waits for the next one (or none, if turned off).

        Never fails the switch: a spare that cannot start is logged and the next switch starts its runtime itself.
        """
        name = state.name
        run = releases.run_dir(self.root, name)
        wanted = self._wants_spare(name, options)
        try:
            if "warm_spare" in options.extra:
                off = run / SPARE_OFF
                if wanted:
                    off.unlink(missing_ok=True)
                else:
                    off.write_text("the last deploy turned the warm spare off\n")
            key = self._spare_key(state.host, state.port, options.env)
            pid = self.spare_pid(name)
            if pid and wanted and _spare_key_of(pid) == key:
                return
            self.stop_spare(name)
            if wanted:
                self._launch_spare(name, state.port, key, options.env)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("no warm spare for %s: %s", name, exc)

    def _launch_spare(self, name: str, port: int, key: str, env: dict[str, str]) -> None:
        """Start an idle supervisor + runtime (``runtime spare``); not waited for, so the switch returns at once.

        The launcher writes the pid file itself, before it returns (under the deployment's lock), so an undeploy or
        stop that comes next finds the spare even if its Python has not started yet.
        """
        pid_path, sock_path, ready = self._spare_files(name)
        logfile = releases.log_path(self.root, name)
        cmd = [
            self.python, "-m", SUPERVISOR_MODULE,
            "--pidfile", str(pid_path), "--log", str(logfile), "--clear-file", str(ready),
            "--state-file", str(releases.deployment_dir(self.root, name) / releases.STATE_FILE),
            "--public-port", str(port),
            "--pin-file", str(releases.pin_file(self.root, name, SPARE)),
            "--handover-file", str(releases.handover_file(self.root, name, SPARE)),
            "--stop-timeout", str(30.0 + 5.0),
            "--spare-socket", str(sock_path), "--spare-key", key, "--start-delay", f"{SPARE_START_DELAY_S:g}",
            "--",
            self.python, "-m", RUNTIME_MODULE, "spare", "--ready-file", str(ready),
        ]  # fmt: skip
        with logfile.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True,
                env={**os.environ, **env},
            )  # fmt: skip
        tmp = pid_path.with_name(pid_path.name + ".tmp")
        tmp.write_text(f"{proc.pid}\n")
        tmp.replace(pid_path)
        # Reaped when it ends (it is our child until we exit; pid_alive() may reap it first, which wait() tolerates).
        threading.Thread(target=proc.wait, name=f"reap-spare-{proc.pid}", daemon=True).start()
        log.info("started warm spare %d for %s", proc.pid, name)

    def _claim_spare(
        self,
        name: str,
        release_id: str,
        host: str,
        port: int,
        ready_file: Path,
        pidfile: Path,
        env: dict[str, str],
        *,
        wait_for_bundle: float | None = None,
    ) -> tuple[int, int] | None:
        """Claim the deployment's warm spare for ``release_id``: its supervisor pid and the probation channel (a
        connected unix socket's descriptor: ``commit`` commits, closing it stops the release), or None if there
        is no usable spare (the caller then starts a runtime as always)."""
        _, sock_path, _ = self._spare_files(name)
        if not sock_path.exists():
            return None
        from modeldeck.core.targets.supervisor import unix_address

        command = self._release_command(name, release_id, host, port, ready_file, wait_for_bundle)
        claim = {
            "key": self._spare_key(host, port, env),
            "release": release_id,
            "pidfile": str(pidfile),
            "clear_file": str(ready_file),
            "pin_file": str(releases.pin_file(self.root, name, release_id)),
            "handover_file": str(releases.handover_file(self.root, name, release_id)),
            "command": command,
            "argv": command[command.index(RUNTIME_MODULE) + 1 :],
        }
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CLAIM_TIMEOUT_S)
            with unix_address(sock_path) as address:
                sock.connect(address)
            sock.sendall(json.dumps({"claim": claim}).encode() + b"\n")
            reply = b""
            while b"\n" not in reply and len(reply) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            answer = json.loads(reply.split(b"\n", 1)[0] or b"{}")
            if not answer.get("claimed"):
                log.info("not using the warm spare of %s: %s", name, answer.get("refused", "no answer"))
                sock.close()
                return None
            pid = int(answer["pid"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.info("not using the warm spare of %s: %s", name, exc)
            sock.close()
            return None
        sock.settimeout(None)
        log.info("release %s of %s runs in the warm spare %d", release_id, name, pid)
        return pid, sock.detach()

    def _launch(
        self,
        name: str,
        release_id: str,
        host: str,
        port: int,
        ready_file: Path,
        pidfile: Path,
        env: dict[str, str],
        *,
        wait_for_bundle: float | None = None,
    ) -> tuple[int, int]:
        """Start a supervisor (on probation) for one release; return its pid and the commit pipe."""
        logfile = releases.log_path(self.root, name)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        read_fd, write_fd = os.pipe()
        cmd = [
            self.python, "-m", SUPERVISOR_MODULE, "--daemon",
            "--pidfile", str(pidfile), "--log", str(logfile), "--clear-file", str(ready_file),
            "--probation-fd", str(read_fd),
            "--state-file", str(releases.deployment_dir(self.root, name) / releases.STATE_FILE),
            "--release", release_id, "--public-port", str(port),
            "--pin-file", str(releases.pin_file(self.root, name, release_id)),
            "--handover-file", str(releases.handover_file(self.root, name, release_id)),
            "--stop-timeout", str(30.0 + 5.0),
            "--",
            *self._release_command(name, release_id, host, port, ready_file, wait_for_bundle),
        ]  # fmt: skip
        try:
            with logfile.open("ab") as out:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(read_fd,),
                    start_new_session=True, close_fds=True, env={**os.environ, **env},
                )  # fmt: skip
            code = proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            os.close(write_fd)
            raise DeployError(f"cannot start the runtime supervisor: {exc}") from exc
        finally:
            os.close(read_fd)
        if code != 0 or not pidfile.is_file():
            os.close(write_fd)
            raise DeployError(f"the runtime supervisor failed to start (exit {code})", hint=f"see {logfile}")
        pid = int(pidfile.read_text().strip())
        log.info("started supervisor %d for %s release %s", pid, name, release_id)
        return pid, write_fd

    def _release_command(
        self, name: str, release_id: str, host: str, port: int, ready_file: Path, wait_for_bundle: float | None
    ) -> list[str]:
        """The runtime command of one release, waiting (pre-started) up to ``wait_for_bundle`` s for its files."""
        command = self.runtime_command(releases.release_dir(self.root, name, release_id), host, port, ready_file)
        if wait_for_bundle:
            command += ["--wait-for-bundle", f"{wait_for_bundle:g}"]
        return command

    def runtime_command(self, release: Path, host: str, port: int, ready_file: Path) -> list[str]:
        """The runtime's command line: the public port (shared via SO_REUSEPORT) plus a private health port."""
        return [
            self.python, "-m", RUNTIME_MODULE, "serve", str(release / releases.BUNDLE_DIR),
            "--config", str(release / releases.RUNTIME_CONFIG),
            "--bind", _bind_text(host, port), "--bind", "127.0.0.1:0", "--reuse-port",
            "--ready-file", str(ready_file),
        ]  # fmt: skip

    def _runtime_config(self, name: str, host: str, port: int, options: DeployOptions) -> str:
        from modeldeck.core.runtime.config import RuntimeConfig

        try:
            cfg = RuntimeConfig.from_dict(
                {
                    "deployment_name": name,
                    "binds": [_bind_text(host, port), "127.0.0.1:0"],
                    "reuse_port": True,
                    "max_batch_size": options.max_batch_size,
                    "max_batch_wait_ms": options.max_batch_wait_ms,
                    "cors_origins": list(options.cors_origins),
                }
            )
        except ModelDeckError as exc:
            raise DeployError(f"invalid deploy options: {exc.message}", hint=exc.hint) from exc
        return json.dumps(cfg.to_dict(), indent=2)

    def _abort(self, pid: int | None, commit_w: int | None, ready_file: Path, pidfile: Path) -> None:
        """Stop a candidate that did not pass: close its commit pipe (it stops itself), then make sure."""
        if commit_w is not None:
            with contextlib.suppress(OSError):
                os.close(commit_w)
        if pid:
            self._stop_pid(pid, timeout=10.0)
        for f in (ready_file, pidfile):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()

    def _stop_pid(self, pid: int, timeout: float = 30.0 + _STOP_MARGIN_S, sig: int = signal.SIGTERM) -> None:
        """Signal a supervisor to stop (its runtime drains), wait, then SIGKILL its whole process group."""
        if not _is_our_supervisor(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            log.warning("supervisor %d did not stop within %.0f s; killing its process group", pid, timeout)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def _hand_over(self, name: str, old_release: str | None, pid: int) -> bool:
        """SIGUSR2 to a pinned old supervisor; True once it confirmed new connections go to the new release.

        False (nothing confirmed within 2 s, or a supervisor started before ``--handover-file`` existed): the
        caller then waits for the old supervisor to exit, as every switch used to.
        """
        if not old_release or not self._is_deployment_supervisor(name, pid):
            return False
        try:
            if b"--handover-file" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return False
        except OSError:
            return False
        handed = releases.handover_file(self.root, name, old_release)
        with contextlib.suppress(FileNotFoundError):
            handed.unlink()
        try:
            os.kill(pid, signal.SIGUSR2)
        except OSError:
            return False
        deadline = time.monotonic() + 2.0
        while not handed.is_file():
            if time.monotonic() > deadline or not pid_alive(pid):
                return False
            time.sleep(0.005)
        with contextlib.suppress(FileNotFoundError):
            handed.unlink()
        return True

    def _is_deployment_supervisor(self, name: str, pid: int | None) -> bool:
        """A live supervisor of *this* deployment (its state file on the command line): a recorded pid may have
        been reused by another process, even another deployment's supervisor, since it was written."""
        if not _is_our_supervisor(pid):
            return False
        state_file = str(releases.deployment_dir(self.root, name) / releases.STATE_FILE).encode()
        try:
            return state_file in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return True  # no /proc: trust the pid

    def _finish_interrupted(self, state: DeploymentState) -> DeploymentState:
        """Finish what a switch left: a replaced supervisor still draining (or never stopped, if interrupted)."""
        if (
            state.retiring_pid
            and state.retiring_pid != state.pid
            and self._is_deployment_supervisor(state.name, state.retiring_pid)
        ):
            log.info("waiting for the replaced supervisor %d to stop", state.retiring_pid)
            self._stop_pid(state.retiring_pid)
        if state.retiring_pid:
            state = replace(state, retiring_pid=None)
            releases.write_state(self.root, state)
        return state

    # -- status, logs, stop, undeploy ---------------------------------------------------------------
    def status(self, name: str | None = None) -> list[DeploymentStatus]:
        """All deployments (or one), their state derived from the supervisor's liveness and ``/health``."""
        names = [name] if name else releases.list_deployments(self.root)
        out = []
        for n in names:
            state = releases.read_state(self.root, n)
            if state is None:
                if name:
                    raise DeployError(f"no deployment named {name!r}", hint="see `modeldeck status`")
                continue
            out.append(self._status_of(state))
        return out

    def _status_of(self, state: DeploymentState) -> DeploymentStatus:
        endpoint = f"http://{_url_host(state.host)}:{state.port}"
        alive = _is_our_supervisor(state.pid)
        if state.desired == "stopped" and not alive:
            st, msg = "stopped", "stopped" if state.active_release else "never started"
        elif not alive:
            st, msg = "failed", "the runtime is not running (crashed or killed); see `modeldeck logs`"
        elif health.is_healthy(endpoint, timeout=1.0):
            st, msg = "running", ""
        elif (
            state.active_release
            and not (releases.run_dir(self.root, state.name) / f"{state.active_release}.ready.json").is_file()
        ):
            st, msg = "starting", "the runtime is (re)starting"
        else:
            st, msg = "unknown", "the runtime process is up but /health does not answer 200"
        return DeploymentStatus(
            name=state.name,
            target_url=f"local://{state.host}:{state.port}",
            state=st,
            endpoint=endpoint,
            model_name=state.model_name,
            model_version=state.model_version,
            bundle_sha256=state.bundle_sha256,
            release_id=state.active_release,
            previous_release_id=state.previous_release,
            since=state.started_at,
            message=msg,
            pid=state.pid if alive else None,
        )

    def logs(self, name: str, lines: int = 200) -> str:
        """The last ``lines`` lines of the deployment's runtime log ('' if it has none yet)."""
        path = releases.log_path(self.root, name)
        chunks: list[bytes] = []
        for p in (path.with_name(path.name + ".1"), path):
            if p.is_file():
                with p.open("rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    size = fh.tell()
                    fh.seek(max(0, size - max(lines, 1) * 512))
                    chunks.append(fh.read())
        text = b"".join(chunks).decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else "") if lines > 0 else ""

    def stop(self, name: str) -> DeploymentStatus:
        """Drain and stop the deployment's runtime; it stays installed (``start`` or ``deploy`` again)."""
        with releases.deployment_lock(self.root, name):
            state = self._finish_interrupted(self._require_state(name))
            self.stop_spare(name)
            if state.pid:
                self._stop_pid(state.pid)
            state = replace(state, desired="stopped", pid=None)
            releases.write_state(self.root, state)
            return self._status_of(state)

    def undeploy(self, name: str, progress: Progress = no_progress, cancel: threading.Event | None = None) -> None:
        """Stop every process of the deployment and remove its folder (releases, logs, state)."""
        with releases.deployment_lock(self.root, name):
            state = self._require_state(name)
            progress(ProgressEvent("stop", f"stopping {name}", 0.2))
            for pid in {state.pid, state.retiring_pid, *self._pidfile_pids(name)}:
                if pid and self._is_deployment_supervisor(name, pid):
                    self._stop_pid(pid)
            progress(ProgressEvent("remove", f"removing {releases.deployment_dir(self.root, name)}", 0.8))
        releases.remove_deployment(self.root, name)
        progress(ProgressEvent("done", f"{name} undeployed", 1.0))

    def check_port(self, name: str, options: DeployOptions) -> tuple[str, int]:
        """The host and port a deploy of ``name`` would use; raises :class:`DeployError` if it is taken.

        Cheap, so a UI can refuse a busy port before spending time on bundling.
        """
        releases.validate_name(name)
        return self._choose_port(name, releases.read_state(self.root, name), options, check=True)

    def input_example(self, name: str) -> dict[str, Any] | None:
        """The active release's input example as an ``/invocations`` body (None if it has none)."""
        state = self._require_state(name)
        if not state.active_release:
            return None
        bundle = releases.bundle_path(self.root, name, state.active_release)
        try:
            manifest = read_manifest(bundle)
        except BundleError as exc:
            raise DeployError(f"cannot read the active release of {name!r}: {exc.message}") from exc
        return health.load_example(bundle, manifest.input_example_file)

    # -- helpers ---------------------------------------------------------------------------------
    def _pidfile_pids(self, name: str) -> list[int]:
        run = releases.run_dir(self.root, name)
        pids = []
        for p in run.glob("*.pid") if run.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(p.read_text().strip()))
        return pids

    def _require_state(self, name: str) -> DeploymentState:
        state = releases.read_state(self.root, name)
        if state is None:
            raise DeployError(f"no deployment named {name!r}", hint="see `modeldeck status`")
        return state

    @staticmethod
    def _serves(state: DeploymentState, manifest: Manifest) -> bool:
        return releases.serves_bundle(state.bundle_sha256, state.model_name, state.model_version, manifest)

    def _serving(self, state: DeploymentState) -> bool:
        return state.desired == "running" and _is_our_supervisor(state.pid)

    def _checked_bundle(self, bundle_dir: Path) -> Manifest:
        path = Path(bundle_dir)
        if not path.is_dir():
            raise DeployError(f"bundle {path} does not exist", hint="build one with `modeldeck bundle MODEL_URI`")
        return verify_bundle(path)

    def _choose_port(
        self, name: str, state: DeploymentState | None, options: DeployOptions, *, check: bool
    ) -> tuple[str, int]:
        """The host and port to serve on; refuses a port another program or deployment holds."""
        host = options.host if options.host else self.host
        port = options.port or self.port or (state.port if state else None) or free_port(host)
        if not 1 <= port <= 65535:
            raise DeployError(f"port {port} is out of range 1..65535")
        if not check:
            return host, port
        for other in releases.list_deployments(self.root):
            if other == name:
                continue
            try:
                st = releases.read_state(self.root, other)
            except DeployError:
                continue  # an unreadable neighbour does not block this deploy
            if st is not None and st.port == port and self._serving(st):
                raise DeployError(
                    f"port {port} is used by deployment {other!r}", hint="choose another port with local://PORT"
                )
        ours = state is not None and state.port == port and self._serving(state)
        if not ours and not port_is_free(host, port):
            raise DeployError(f"port {port} on {host} is in use by another program", hint="choose another port")
        return host, port


def _bind_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _private_bind(ready: dict[str, Any], host: str, port: int) -> str:
    """The bind from the ready file that is not the public one (the private health port)."""
    binds = [str(b) for b in ready.get("binds") or []]
    if "private_binds" in ready:  # the runtime says which binds were port 0; older runtimes: by elimination
        private = [str(b) for b in ready.get("private_binds") or []]
    else:
        public = {_bind_text(host, port), f"{_url_host(host)}:{port}"}
        private = [b for b in binds if b not in public and not b.endswith(f":{port}")]
    if not private:
        raise DeployError(f"the new runtime reported no private port (binds: {binds})")
    return private[0]


def _check_warm_spare(options: DeployOptions) -> None:
    """``extra["warm_spare"]``, the one target-specific setting the local and SSH targets read, is a bool."""
    if "warm_spare" in options.extra and not isinstance(options.extra["warm_spare"], bool):
        raise DeployError("the warm_spare setting must be true or false")


def _runtime_fingerprint() -> str:
    """Sizes and mtimes of the runtime's and the supervisor's sources: a spare started before they changed is stale."""
    import modeldeck.core.runtime as runtime_pkg

    parts = []
    here = Path(__file__).resolve().parent
    sources = sorted(Path(runtime_pkg.__file__).resolve().parent.glob("*.py"))
    for path in [*sources, here / "supervisor.py", here / "reuseport.py"]:
        with contextlib.suppress(OSError):
            st = path.stat()
            parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _is_spare(pid: int) -> bool:
    return b"--spare-socket" in _cmdline(pid)


def _spare_key_of(pid: int) -> str | None:
    args = _cmdline(pid)
    try:
        return args[args.index(b"--spare-key") + 1].decode()
    except (ValueError, IndexError):
        return None


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()
