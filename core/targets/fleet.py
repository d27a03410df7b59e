"""Many targets at once: deploy, roll back and ask status on a fleet with bounded concurrency.

Target-agnostic: every member is a :class:`~modeldeck.core.targets.base.Target` (SSH hosts
today, edge devices later), run on a pool of ``forks`` threads. Each host gets its own
cancel event, set when the whole run is cancelled or when the host exceeds its deadline, so
one hung host can never hold the run: it is reported as a failure and the others go on.
Hosts not yet started when the run is cancelled are not touched at all; running ones are
cancelled through their target, which keeps their previous release serving.

A run follows a :class:`Rollout` -- an ordered list of :class:`Wave` s, each with an abort
threshold. Today's callers use one wave; staged rollouts (canary wave first, stop when too
many hosts fail, roll back) build on the same seam.

Progress events from the targets are forwarded with ``host=`` set to the member's label, and
the callback is called under a lock, so callers see one event at a time even though hosts
run in parallel (the GUI still batches them before they reach widgets).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from modeldeck.core.errors import Cancelled, ModelDeckError
from modeldeck.core.targets.base import (
    DeploymentStatus,
    DeployOptions,
    DeployResult,
    Plan,
    Progress,
    ProgressEvent,
    Target,
    no_progress,
)

log = logging.getLogger(__name__)

DEFAULT_FORKS = 8
_TICK_S = 0.1  # how often the coordinator looks at cancel and deadlines
ABANDON_GRACE_S = 20.0  # a host task told to stop gets this long before the run stops waiting for it

# Outcomes a host can end with, besides the target's own DeployResult outcomes.
CANCELLED = "cancelled"  # cancelled while running: the target left its previous release serving
NOT_STARTED = "not started"  # cancelled (or aborted) before this host was touched
SKIPPED = "skipped"  # a previous wave failed beyond its threshold: this host was not touched
FAILED = "failed"
TIMED_OUT = "timed out"


@dataclass(frozen=True)
class StepTimeouts:
    """Per-step limits for one host, in seconds.

    ``connect`` and ``auth`` go to the transport (SSH: the endpoint's connect/auth timeouts),
    ``transfer`` bounds the upload, ``install`` a first-time runtime install on the host,
    ``health`` the new release's start period. The fleet itself adds a last-resort deadline
    per host (their sum plus a margin): a target that ignores its own timeouts is cancelled
    there and reported as timed out.
    """

    connect_s: float = 10.0
    auth_s: float = 15.0
    transfer_s: float = 300.0
    health_s: float = 60.0
    install_s: float = 900.0
    margin_s: float = 60.0
    host_s: float | None = None  # the whole host's limit; None: the sum of the steps plus the margin

    @property
    def host_deadline_s(self) -> float:
        if self.host_s is not None:
            return self.host_s
        return self.connect_s + self.auth_s + self.transfer_s + self.install_s + self.health_s + self.margin_s

    def apply(self, options: DeployOptions) -> DeployOptions:
        """``options`` with the health start period bounded by ``health_s``."""
        health = options.health
        if health.start_period_s > self.health_s:
            health = replace(health, start_period_s=self.health_s)
        return replace(options, health=health)


@dataclass(frozen=True)
class Wave:
    """Hosts deployed together; if more than ``max_failures`` of them fail, later waves are skipped."""

    hosts: tuple[str, ...]
    max_failures: int | None = None  # None: never abort the rollout because of this wave
    name: str = ""


@dataclass(frozen=True)
class Rollout:
    """The order hosts are deployed in: waves, each run to completion before the next starts."""

    waves: tuple[Wave, ...]

    @classmethod
    def single(cls, hosts: Sequence[str]) -> Rollout:
        """Every host in one wave (today's ``--hosts GROUP``)."""
        return cls((Wave(tuple(hosts), name="all"),))

    @classmethod
    def staged(cls, hosts: Sequence[str], sizes: Sequence[int], max_failures: int | None = 0) -> Rollout:
        """Waves of the given sizes (the rest in a last wave), each aborting the rollout after ``max_failures``."""
        waves: list[Wave] = []
        rest = list(hosts)
        for i, size in enumerate(sizes):
            if not rest:
                break
            waves.append(Wave(tuple(rest[:size]), max_failures, name=f"wave {i + 1}"))
            rest = rest[size:]
        if rest:
            waves.append(Wave(tuple(rest), max_failures, name=f"wave {len(waves) + 1}"))
        return cls(tuple(waves))

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h for w in self.waves for h in w.hosts)


@dataclass(frozen=True)
class HostResult:
    """What happened on one host."""

    host: str
    target_url: str
    outcome: str  # a DeployResult outcome, or cancelled / not started / skipped / failed / timed out
    message: str = ""
    duration_s: float = 0.0
    bytes_sent: int | None = None
    release_id: str | None = None
    result: DeployResult | None = None
    error: str | None = None  # the error class name when the host failed with an error

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def changed(self) -> bool:
        """True if this host now serves something else than before (what a rollback would undo)."""
        return self.result is not None and self.result.outcome in ("deployed", "rolled-back")


@dataclass(frozen=True)
class FleetResult:
    action: str  # "deploy" or "rollback"
    hosts: tuple[HostResult, ...]
    duration_s: float
    cancelled: bool = False
    aborted_after: str | None = None  # the wave after which the rollout stopped, if it did

    @property
    def ok(self) -> bool:
        return bool(self.hosts) and all(h.ok for h in self.hosts)

    @property
    def failed(self) -> tuple[HostResult, ...]:
        return tuple(h for h in self.hosts if not h.ok)

    @property
    def succeeded(self) -> tuple[HostResult, ...]:
        return tuple(h for h in self.hosts if h.ok)

    def by_host(self) -> dict[str, HostResult]:
        return {h.host: h for h in self.hosts}


@dataclass(frozen=True)
class HostStatus:
    """``status`` of one host: its deployments, or why they could not be read."""

    host: str
    target_url: str
    statuses: tuple[DeploymentStatus, ...] = ()
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class HostPlan:
    host: str
    target_url: str
    plan: Plan | None = None
    error: str | None = None


Members = Sequence[Target] | Mapping[str, Target]


def host_label(target: Target) -> str:
    """A short name for a target: its ``label`` if it has one (SSH: ``user@host:port``), else its URL."""
    label = getattr(target, "label", None)
    return str(label) if label else target.url


def members(targets: Members) -> dict[str, Target]:
    """Targets keyed by a unique label (a mapping is taken as is; duplicate labels get ``#2``, ``#3``)."""
    if isinstance(targets, Mapping):
        return dict(targets)
    out: dict[str, Target] = {}
    for target in targets:
        label = host_label(target)
        unique, n = label, 1
        while unique in out:
            n += 1
            unique = f"{label}#{n}"
        out[unique] = target
    return out


T = TypeVar("T")


@dataclass
class _Run:
    """Bookkeeping of one host's task while the coordinator waits."""

    host: str
    cancel: threading.Event
    started: float | None = None
    timed_out: bool = False
    stop_asked: float | None = None
    future: Future[Any] | None = None


@dataclass
class _Coordinator:
    """Runs one callable per host on a bounded pool, with cancel and per-host deadlines."""

    forks: int
    deadline_s: float | None
    cancel: threading.Event | None
    runs: dict[str, _Run] = field(default_factory=dict)

    def run(
        self, hosts: Sequence[str], work: Callable[[str, threading.Event, _Run], T]
    ) -> dict[str, tuple[_Run, T | BaseException | None]]:
        """``work(host, host_cancel, run)`` for each host; returns the value or exception per host.

        A host whose task never started (cancelled first) maps to ``None``. A task still running
        ``ABANDON_GRACE_S`` after it was told to stop (deadline or cancel) is reported as timed out
        and left to finish in its own thread: the caller is never held by one host.
        """
        results: dict[str, tuple[_Run, T | BaseException | None]] = {}
        if not hosts:
            return results
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.forks, len(hosts))), thread_name_prefix="fleet")
        pending: dict[Future[T], _Run] = {}
        try:
            for host in hosts:
                run = _Run(host, threading.Event())
                self.runs[host] = run
                run.future = pool.submit(self._guarded, work, host, run)
                pending[run.future] = run
            cancelled_at: float | None = None
            while pending:
                done, _ = wait(list(pending), timeout=_TICK_S, return_when=FIRST_COMPLETED)
                for fut in done:
                    run = pending.pop(fut)
                    if fut.cancelled():
                        results[run.host] = (run, None)
                        continue
                    exc = fut.exception()
                    if isinstance(exc, _NotStarted):
                        results[run.host] = (run, None)
                    else:
                        results[run.host] = (run, exc if exc is not None else fut.result())
                now = time.monotonic()
                if cancelled_at is None and self.cancel is not None and self.cancel.is_set():
                    cancelled_at = now
                    for fut, run in pending.items():
                        run.cancel.set()
                        fut.cancel()  # never started: stays untouched
                for fut, run in list(pending.items()):
                    if run.started is None:
                        continue
                    if self.deadline_s is not None and not run.timed_out and now - run.started > self.deadline_s:
                        log.warning("%s: no result after %.0f s; cancelling it", run.host, self.deadline_s)
                        run.timed_out = True
                        run.stop_asked = now
                        run.cancel.set()
                    if cancelled_at is not None and run.stop_asked is None:
                        run.stop_asked = cancelled_at
                    if run.stop_asked is not None and now - run.stop_asked > ABANDON_GRACE_S:
                        log.error(
                            "%s: still running %.0f s after it was told to stop; abandoned", run.host, ABANDON_GRACE_S
                        )
                        run.timed_out = True
                        pending.pop(fut)
                        results[run.host] = (run, Cancelled("abandoned"))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return results

    @staticmethod
    def _guarded(work: Callable[[str, threading.Event, _Run], T], host: str, run: _Run) -> T:
        if run.cancel.is_set():
            raise _NotStarted()
        run.started = time.monotonic()
        return work(host, run.cancel, run)


class _NotStarted(Exception):
    """A queued host's task found the run cancelled before it began."""


def _locked(progress: Progress) -> Progress:
    lock = threading.Lock()

    def emit(event: ProgressEvent) -> None:
        with lock:
            try:
                progress(event)
            except Exception:  # a broken progress sink must not fail a deploy
                log.exception("progress callback failed")

    return emit


def _for_host(progress: Progress, host: str) -> Progress:
    """Events tagged with the member's name (a target's own ``host=`` may be an address, not the fleet name)."""

    def emit(event: ProgressEvent) -> None:
        progress(event if event.host == host else replace(event, host=host))

    return emit


def _bytes_sent(result: DeployResult, target: Target) -> int | None:
    value = getattr(result, "bytes_sent", None)
    if value is None:
        value = getattr(target, "last_bytes_sent", None)
    return int(value) if isinstance(value, int) else None


def _host_result(
    host: str, target: Target, run: _Run, outcome: DeployResult | BaseException | None, cancelled: bool
) -> HostResult:
    duration = time.monotonic() - run.started if run.started is not None else 0.0
    if outcome is None:
        return HostResult(host, target.url, NOT_STARTED, "the run was cancelled before this host was reached")
    if isinstance(outcome, DeployResult):
        status = outcome.status
        return HostResult(
            host,
            target.url,
            outcome.outcome,
            outcome.message,
            duration,
            _bytes_sent(outcome, target),
            status.release_id if status is not None else None,
            outcome,
        )
    if isinstance(outcome, Cancelled):
        if run.timed_out:
            return HostResult(
                host, target.url, TIMED_OUT, f"no result within {duration:.0f} s; cancelled", duration, error="Timeout"
            )
        return HostResult(
            host,
            target.url,
            CANCELLED,
            "the previous release keeps serving" if cancelled else outcome.message,
            duration,
            error="Cancelled",
        )
    if isinstance(outcome, ModelDeckError):
        return HostResult(host, target.url, FAILED, outcome.one_line(), duration, error=type(outcome).__name__)
    log.error("%s: unexpected error", host, exc_info=outcome)
    return HostResult(
        host,
        target.url,
        FAILED,
        f"internal error: {type(outcome).__name__}: {outcome}",
        duration,
        error=type(outcome).__name__,
    )


def _run_rollout(
    action: str,
    targets: Members,
    call: Callable[[Target, Progress, threading.Event], DeployResult],
    *,
    forks: int,
    rollout: Rollout | None,
    deadline_s: float | None,
    progress: Progress,
    cancel: threading.Event | None,
) -> FleetResult:
    fleet = members(targets)
    plan = rollout or Rollout.single(list(fleet))
    unknown = [h for h in plan.hosts if h not in fleet]
    if unknown:
        raise ModelDeckError(f"the rollout names hosts that are not in the fleet: {', '.join(unknown)}")
    emit = _locked(progress)
    started = time.monotonic()
    results: dict[str, HostResult] = {}
    aborted_after: str | None = None
    for wave in plan.waves:
        if aborted_after is not None or (cancel is not None and cancel.is_set()):
            why = SKIPPED if aborted_after is not None else NOT_STARTED
            text = (
                f"{aborted_after} failed beyond its threshold"
                if aborted_after
                else "the run was cancelled before this host was reached"
            )
            for host in wave.hosts:
                results[host] = HostResult(host, fleet[host].url, why, text)
            continue
        for host in wave.hosts:
            emit(ProgressEvent("queued", f"{action} queued", 0.0, host=host))

        def work(host: str, host_cancel: threading.Event, _run: _Run) -> DeployResult:
            sink = _for_host(emit, host)
            sink(ProgressEvent("start", f"{action} started", 0.0))
            result = call(fleet[host], sink, host_cancel)
            sink(ProgressEvent("done", f"{result.outcome}" + (f": {result.message}" if result.message else ""), 1.0))
            return result

        coordinator = _Coordinator(forks, deadline_s, cancel)
        outcomes = coordinator.run(wave.hosts, work)
        was_cancelled = cancel is not None and cancel.is_set()
        for host in wave.hosts:
            run, value = outcomes[host]
            results[host] = _host_result(host, fleet[host], run, value, was_cancelled)  # type: ignore[arg-type]
            if not isinstance(value, DeployResult):
                text = results[host].outcome + (f": {results[host].message}" if results[host].message else "")
                emit(ProgressEvent("done", text, 1.0, host=host))
        failures = sum(1 for h in wave.hosts if not results[h].ok)
        if wave.max_failures is not None and failures > wave.max_failures:
            aborted_after = wave.name or "a wave"
            log.warning(
                "%s: %d host(s) failed (threshold %d); stopping the rollout", aborted_after, failures, wave.max_failures
            )
    ordered = tuple(results[h] for h in plan.hosts)
    return FleetResult(
        action,
        ordered,
        time.monotonic() - started,
        cancelled=cancel is not None and cancel.is_set(),
        aborted_after=aborted_after,
    )


def deploy_many(
    targets: Members,
    bundle_dir: Path,
    options: DeployOptions,
    *,
    forks: int = DEFAULT_FORKS,
    step_timeouts: StepTimeouts | None = None,
    rollout: Rollout | None = None,
    progress: Progress = no_progress,
    cancel: threading.Event | None = None,
) -> FleetResult:
    """Deploy ``bundle_dir`` to every target, at most ``forks`` at a time; one :class:`HostResult` per host.

    Never raises for a host's failure: an unreachable host, a refused host key or a failed
    health gate is that host's result, and the others carry on. Cancelling stops scheduling
    new hosts (``not started``) and cancels running ones (``cancelled``, previous release still
    serving); the result then has ``cancelled=True`` instead of raising :class:`Cancelled`,
    because hosts that switched before the cancel must still be reported (and maybe rolled back).
    Raises :class:`ModelDeckError` only for a bad call (e.g. a rollout naming unknown hosts).
    """
    timeouts = step_timeouts or StepTimeouts()
    host_options = timeouts.apply(options)

    def call(target: Target, sink: Progress, host_cancel: threading.Event) -> DeployResult:
        return target.deploy(bundle_dir, host_options, progress=sink, cancel=host_cancel)

    return _run_rollout(
        "deploy",
        targets,
        call,
        forks=forks,
        rollout=rollout,
        deadline_s=timeouts.host_deadline_s,
        progress=progress,
        cancel=cancel,
    )


def rollback_many(
    targets: Members,
    name: str,
    *,
    forks: int = DEFAULT_FORKS,
    step_timeouts: StepTimeouts | None = None,
    progress: Progress = no_progress,
    cancel: threading.Event | None = None,
) -> FleetResult:
    """Roll deployment ``name`` back to its previous release on every target (same rules as :func:`deploy_many`)."""
    timeouts = step_timeouts or StepTimeouts()

    def call(target: Target, sink: Progress, host_cancel: threading.Event) -> DeployResult:
        return target.rollback(name, progress=sink, cancel=host_cancel)

    return _run_rollout(
        "rollback",
        targets,
        call,
        forks=forks,
        rollout=None,
        deadline_s=timeouts.host_deadline_s,
        progress=progress,
        cancel=cancel,
    )


def _query_many(
    targets: Members,
    fn: Callable[[Target], T],
    *,
    forks: int,
    deadline_s: float,
    cancel: threading.Event | None,
) -> tuple[dict[str, Target], dict[str, tuple[_Run, T | BaseException | None]]]:
    fleet = members(targets)

    def work(host: str, _cancel: threading.Event, _run: _Run) -> T:
        return fn(fleet[host])

    return fleet, _Coordinator(forks, deadline_s, cancel).run(list(fleet), work)


def _error_text(value: BaseException | None, run: _Run) -> str:
    if value is None:
        return "not asked: cancelled"
    if run.timed_out or isinstance(value, Cancelled):
        return "timed out" if run.timed_out else "cancelled"
    if isinstance(value, ModelDeckError):
        return value.one_line()
    log.error("unexpected error", exc_info=value)
    return f"internal error: {type(value).__name__}: {value}"


def status_many(
    targets: Members,
    name: str | None = None,
    *,
    forks: int = DEFAULT_FORKS,
    step_timeouts: StepTimeouts | None = None,
    cancel: threading.Event | None = None,
) -> list[HostStatus]:
    """Every target's deployments (only ``name`` if given), read in parallel; a host that fails says why.

    A host that does not answer within its connect + auth timeouts (plus margin) is reported, not waited for.
    """
    timeouts = step_timeouts or StepTimeouts()
    fleet, outcomes = _query_many(
        targets,
        lambda t: t.status(name),
        forks=forks,
        deadline_s=timeouts.connect_s + timeouts.auth_s + timeouts.margin_s,
        cancel=cancel,
    )
    out = []
    for host, target in fleet.items():
        run, value = outcomes[host]
        duration = time.monotonic() - run.started if run.started is not None else 0.0
        if isinstance(value, list):
            out.append(HostStatus(host, target.url, tuple(value), duration_s=duration))
        else:
            out.append(HostStatus(host, target.url, error=_error_text(value, run), duration_s=duration))
    return out


def plan_many(
    targets: Members,
    bundle_dir: Path,
    options: DeployOptions,
    *,
    forks: int = DEFAULT_FORKS,
    step_timeouts: StepTimeouts | None = None,
    cancel: threading.Event | None = None,
) -> list[HostPlan]:
    """What :func:`deploy_many` would do on each host (validates, changes nothing); failures are per host."""
    timeouts = step_timeouts or StepTimeouts()
    fleet, outcomes = _query_many(
        targets,
        lambda t: t.plan(bundle_dir, options),
        forks=forks,
        deadline_s=timeouts.connect_s + timeouts.auth_s + timeouts.margin_s,
        cancel=cancel,
    )
    out = []
    for host, target in fleet.items():
        run, value = outcomes[host]
        if isinstance(value, Plan):
            out.append(HostPlan(host, target.url, plan=value))
        else:
            out.append(HostPlan(host, target.url, error=_error_text(value, run)))
    return out
