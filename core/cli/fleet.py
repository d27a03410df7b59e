"""``--hosts GROUP`` for ``modeldeck deploy``, ``rollback`` and ``status``: many inventory hosts at once.

Not a command group of its own: :mod:`modeldeck.core.cli.deploy` adds these flags to its
commands and hands over when ``--hosts`` is given. Per-host progress goes to stderr as
``[host] step: message`` lines, the results table (or ``--json``) to stdout; the exit code is
1 if any host failed, 130 if the run was cancelled (Ctrl-C: running hosts keep their previous
release, hosts not yet started are left alone).
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from typing import Any

from modeldeck.core.errors import ConfigError

HOSTS_HELP = "inventory hosts: names, groups, label=value, all; comma-separated, !TERM excludes"


def add_hosts_args(p: argparse.ArgumentParser, *, timeouts: bool = True) -> None:
    """``--hosts``, ``--forks`` and the per-step timeouts."""
    g = p.add_argument_group("many hosts (the SSH inventory: modeldeck hosts …)")
    g.add_argument("--hosts", metavar="GROUP|LABEL_EXPR", help=HOSTS_HELP)
    g.add_argument("--forks", type=int, default=8, metavar="N", help="hosts worked on at once (default 8)")
    if timeouts:
        g.add_argument("--connect-timeout", type=float, default=10.0, metavar="S", help="TCP connect + banner")
        g.add_argument("--auth-timeout", type=float, default=15.0, metavar="S", help="SSH authentication")
        g.add_argument("--transfer-timeout", type=float, default=300.0, metavar="S", help="the whole upload")
        # --accept-host-key / --runtime-source / --identity come from the SSH target's own deploy flags
        # when they exist (read with getattr), so the two never register the same option twice.


def _step_timeouts(args: argparse.Namespace) -> Any:
    from modeldeck.core.targets.fleet import StepTimeouts

    health = float(getattr(args, "start_period", 20.0) or 20.0)
    return StepTimeouts(
        connect_s=getattr(args, "connect_timeout", 10.0),
        auth_s=getattr(args, "auth_timeout", 15.0),
        transfer_s=getattr(args, "transfer_timeout", 300.0),
        health_s=max(health, 1.0),
    )


def _forks(args: argparse.Namespace) -> int:
    if args.forks < 1:
        raise ConfigError(f"--forks must be at least 1, not {args.forks}")
    return int(args.forks)


def open_hosts(args: argparse.Namespace) -> dict[str, Any]:
    """SSH targets for ``--hosts`` (validated before anything connects)."""
    from modeldeck.core.targets.ssh_hosts import default_inventory, select_hosts, targets_for_hosts

    inventory = default_inventory()
    hosts = select_hosts(inventory, args.hosts)
    kwargs: dict[str, Any] = {}
    accept = getattr(args, "accept_host_key", None)
    if accept:
        kwargs["accept_fingerprint"] = accept
    if getattr(args, "runtime_source", None):
        kwargs["runtime_source"] = args.runtime_source
    return targets_for_hosts(inventory, hosts, step_timeouts=_step_timeouts(args), **kwargs)


class _Lines:
    """Per-host progress lines on stderr: every step change, fractions only when they move by 10 %."""

    def __init__(self) -> None:
        self.last: dict[str, tuple[str, int]] = {}
        self.width = 0

    def __call__(self, event: Any) -> None:
        host = str(event.host or "-")
        bucket = int((event.fraction or 0) * 10)
        if self.last.get(host) == (event.step, bucket) and event.step not in ("done", "health"):
            return
        self.last[host] = (event.step, bucket)
        self.width = max(self.width, len(host))
        print(f"[{host:<{self.width}}] {event.step}: {event.message}", file=sys.stderr, flush=True)


def _run(fn: Any) -> Any:
    from modeldeck.core.cli.deploy import _with_cancel_on_sigint

    return _with_cancel_on_sigint(fn)


def deploy_options(args: argparse.Namespace) -> Any:
    """The DeployOptions every host gets (the same flags as a single-target deploy)."""
    from modeldeck.core.cli.deploy import _docker_extra, _env_pairs
    from modeldeck.core.targets.base import DeployOptions, HealthGate

    extra = _docker_extra(args)
    if extra:
        raise ConfigError(f"--{next(iter(extra)).replace('_', '-')} only applies to docker targets, not --hosts")
    return DeployOptions(
        name=args.name,
        host=args.publish_address,
        port=args.port,
        env=_env_pairs(args.env),
        max_batch_size=args.max_batch_size,
        max_batch_wait_ms=args.max_batch_wait_ms,
        cors_origins=tuple(args.cors_origin),
        health=HealthGate(start_period_s=args.start_period, check_example=not args.no_example_check),
        keep_releases=args.keep_releases,
        extra={"warm_spare": False} if getattr(args, "no_warm_spare", False) else {},
    )


def cmd_deploy_hosts(args: argparse.Namespace) -> int:
    """``modeldeck deploy SOURCE --hosts EXPR``: bundle once, then push to every host."""
    from modeldeck.core.cli.deploy import resolve_source
    from modeldeck.core.targets.fleet import deploy_many, plan_many

    if args.target and args.hosts:
        raise ConfigError("give either --target or --hosts, not both")
    if not args.hosts:
        raise ConfigError("where to? give --target URL or --hosts GROUP", hint="e.g. --target local://8080")
    options = deploy_options(args)
    targets = open_hosts(args)
    forks = _forks(args)
    steps = _step_timeouts(args)

    def run(cancel: threading.Event) -> int:
        bundle = resolve_source(args.source, args, cancel)
        if args.dry_run:
            plans = plan_many(targets, bundle, options, forks=forks, step_timeouts=steps, cancel=cancel)
            if args.json:
                _print_json(plans)
            else:
                for hp in plans:
                    if hp.plan is None:
                        print(f"{hp.host}: cannot plan: {hp.error}")
                        continue
                    print(f"{hp.host}: plan for {hp.plan.name} on {hp.target_url}")
                    for i, step in enumerate(hp.plan.steps, 1):
                        print(f"  {i}. {step.step}: {step.description}")
            return 0 if all(hp.plan is not None for hp in plans) else 1
        print(f"deploying to {len(targets)} host(s), {forks} at a time", file=sys.stderr, flush=True)
        result = deploy_many(
            targets, bundle, options, forks=forks, step_timeouts=steps, progress=_Lines(), cancel=cancel
        )
        return report_fleet(result, args.json)

    return int(_run(run))


def cmd_rollback_hosts(args: argparse.Namespace) -> int:
    from modeldeck.core.targets.fleet import rollback_many

    targets = open_hosts(args)
    result = _run(
        lambda c: rollback_many(
            targets, args.name, forks=_forks(args), step_timeouts=_step_timeouts(args), progress=_Lines(), cancel=c
        )
    )
    return report_fleet(result, getattr(args, "json", False))


def cmd_status_hosts(args: argparse.Namespace) -> int:
    from modeldeck.core.targets.fleet import status_many

    targets = open_hosts(args)
    statuses = _run(
        lambda c: status_many(targets, args.name, forks=_forks(args), step_timeouts=_step_timeouts(args), cancel=c)
    )
    if args.json:
        _print_json(statuses)
        return 0 if all(s.ok for s in statuses) else 1
    rows = [("HOST", "NAME", "STATE", "MODEL", "VERSION", "URL", "RELEASE")]
    for hs in statuses:
        if hs.error is not None:
            rows.append((hs.host, "-", "unreachable", "-", "-", "-", hs.error))
            continue
        if not hs.statuses:
            rows.append((hs.host, "-", "no deployments", "-", "-", "-", "-"))
        for s in hs.statuses:
            rows.append(
                (
                    hs.host,
                    s.name,
                    s.state,
                    s.model_name or "-",
                    s.model_version or "-",
                    s.endpoint or "-",
                    s.release_id or "-",
                )
            )
    _print_table(rows)
    return 0 if all(s.ok for s in statuses) else 1


def report_fleet(result: Any, as_json: bool) -> int:
    """The results table (or JSON) on stdout; a summary of failures on stderr; the exit code."""
    if as_json:
        _print_json(
            {
                "ok": result.ok,
                "action": result.action,
                "cancelled": result.cancelled,
                "aborted_after": result.aborted_after,
                "duration_s": round(result.duration_s, 3),
                "hosts": [
                    {
                        "host": h.host,
                        "target": h.target_url,
                        "ok": h.ok,
                        "outcome": h.outcome,
                        "release": h.release_id,
                        "duration_s": round(h.duration_s, 3),
                        "bytes_sent": h.bytes_sent,
                        "message": h.message,
                        "error": h.error,
                    }
                    for h in result.hosts
                ],
            }
        )
    else:
        rows = [("HOST", "OUTCOME", "RELEASE", "DURATION", "MESSAGE")]
        for h in result.hosts:
            rows.append((h.host, h.outcome, h.release_id or "-", f"{h.duration_s:.1f} s", _one_line(h.message)))
        _print_table(rows)
        done = len(result.succeeded)
        print(
            f"{result.action}: {done}/{len(result.hosts)} host(s) ok in {result.duration_s:.1f} s"
            + (" (cancelled)" if result.cancelled else ""),
            file=sys.stderr,
        )
        for h in result.failed:
            print(f"error: {h.host}: {h.outcome}: {_one_line(h.message)}", file=sys.stderr)
    if result.cancelled:
        return 130
    return 0 if result.ok else 1


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _print_json(obj: Any) -> None:
    from modeldeck.core.cli import print_json

    print_json(obj)
