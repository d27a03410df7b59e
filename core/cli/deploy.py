"""``modeldeck deploy/status/logs/start/stop/rollback/undeploy``: deployments from the command line.

Every command goes through :func:`~modeldeck.core.targets.base.open_target`, so new target
kinds need nothing here. Deploy progress goes to stderr (one line per step), results to
stdout (a table, or JSON with ``--json``); a failed or rolled-back deploy exits 1.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from modeldeck.core.cli import fleet
from modeldeck.core.errors import DeployError

DEFAULT_TARGET = "local://"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the top-level parser."""
    p = sub.add_parser(
        "deploy",
        help="deploy a model version or a bundle to a target",
        description="Deploy MODEL_URI (bundled first) or BUNDLE_DIR. The new release starts beside the old one and "
        "only takes over once healthy; on failure the old one keeps serving.",
    )
    p.add_argument("source", metavar="MODEL_URI|BUNDLE_DIR", help="e.g. models:/iris/3, models:/iris@prod or ./bundle")
    p.add_argument("--target", "-t", metavar="URL", help="where to deploy: local://PORT (or --hosts)")
    p.add_argument("--name", help="deployment name (default: the model name)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; change nothing")
    p.add_argument("--max-batch-size", type=int, default=32, metavar="N", help="requests batched per inference")
    p.add_argument("--max-batch-wait-ms", type=float, default=2.0, metavar="MS", help="longest wait to fill a batch")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="allowed CORS origin")
    p.add_argument("--start-period", type=float, default=20.0, metavar="S", help="seconds the new runtime may take")
    p.add_argument("--no-example-check", action="store_true", help="skip answering the input example at deploy")
    p.add_argument("--keep-releases", type=int, default=5, metavar="N", help="releases kept for rollback")
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow bundling a pickled sklearn model (only models you trust)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _docker_deploy_args(p)
    _ssh_args(p, deploy=True)
    fleet.add_hosts_args(p)
    p.set_defaults(handler=cmd_deploy)

    p = sub.add_parser("status", help="list deployments and their state")
    p.add_argument("name", nargs="?", help="only this deployment")
    _target_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    fleet.add_hosts_args(p, timeouts=False)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("logs", help="print the tail of a deployment's runtime log")
    p.add_argument("name")
    p.add_argument("-n", "--lines", type=int, default=100, metavar="LINES", help="how many lines (default 100)")
    _target_arg(p)
    p.set_defaults(handler=cmd_logs)

    for verb, text, handler in (
        ("stop", "stop a deployment (it stays installed)", cmd_stop),
        ("start", "start a stopped deployment again", cmd_start),
        ("rollback", "switch a deployment back to its previous release", cmd_rollback),
        ("undeploy", "stop a deployment and remove it", cmd_undeploy),
    ):
        p = sub.add_parser(verb, help=text)
        p.add_argument("name")
        _target_arg(p)
        if verb in ("start", "rollback"):
            p.add_argument("--json", action="store_true", help="print the result as JSON")
        if verb == "rollback":
            fleet.add_hosts_args(p, timeouts=False)
        p.set_defaults(handler=handler)


def _target_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", "-t", default=DEFAULT_TARGET, metavar="URL", help="target (default: local)")
    _tls_args(p)
    _ssh_args(p)


def _ssh_args(p: argparse.ArgumentParser, *, deploy: bool = False) -> None:
    g = p.add_argument_group("ssh:// targets")
    g.add_argument("--identity", metavar="FILE", help="private key (default: ssh-agent and ~/.ssh keys)")
    g.add_argument("--accept-host-key", metavar="SHA256:…", help="trust an unknown host key with this fingerprint")
    if deploy:
        g.add_argument(
            "--runtime-source",
            choices=("index", "wheelhouse"),
            help="install the runtime on the host from its package index (default) or from a wheelhouse uploaded "
            "by ModelDeck (air-gapped hosts)",
        )
        g.add_argument(
            "--no-warm-spare",
            action="store_true",
            help="keep no idle pre-imported runtime on the host for the next deploy (saves its memory, ~80 MB; "
            "rollback and start remember the choice)",
        )


def _tls_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("docker+tcp:// TLS (default: $DOCKER_CERT_PATH)")
    g.add_argument("--tls-ca", metavar="PEM", help="CA certificate of the engine")
    g.add_argument("--tls-cert", metavar="PEM", help="client certificate")
    g.add_argument("--tls-key", metavar="PEM", help="client key")


def _docker_deploy_args(p: argparse.ArgumentParser) -> None:
    """Deploy flags: where to publish (any target that takes them) and the Docker target's own settings."""
    _tls_args(p)
    p.add_argument("--port", type=int, metavar="N", help="public port (default: keep the current one, else a free one)")
    p.add_argument("--publish-address", default="127.0.0.1", metavar="ADDR", help="address to listen on (127.0.0.1)")
    p.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable for the runtime")
    g = p.add_argument_group("docker targets")
    g.add_argument("--image", metavar="REF", help="run this prebuilt image (tag or REPO@sha256:…) instead of building")
    g.add_argument("--base-image", metavar="IMAGE", help="base image for the build (default python:3.11-slim)")
    g.add_argument("--cpus", type=float, metavar="X", help="CPU limit per container")
    g.add_argument("--memory", metavar="M", help="memory limit per container, e.g. 512m")
    g.add_argument("--replicas", type=int, metavar="K", help="containers sharing the port (default 1)")
    g.add_argument("--restart-retries", type=int, metavar="N", help="restart policy on-failure:N (default 3)")
    g.add_argument(
        "--restart-unhealthy", action="store_true", default=None, help="let `modeldeck docker watch` restart it"
    )


def _docker_extra(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("image", "base_image", "cpus", "memory", "replicas", "restart_retries", "restart_unhealthy")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DeployError(f"invalid --env {pair!r}", hint="use --env KEY=VALUE")
        env[key] = value
    return env


def _target(args: argparse.Namespace) -> Any:
    from modeldeck.core.cli import settings_for
    from modeldeck.core.targets.base import open_target

    settings = settings_for(args)
    tls = {k: getattr(args, k, None) for k in ("tls_ca", "tls_cert", "tls_key")}
    if any(tls.values()):
        if not args.target.startswith("docker+tcp://"):
            raise DeployError("--tls-ca/--tls-cert/--tls-key only apply to docker+tcp:// targets")
        return open_target(args.target, root=settings.deployments_dir, **tls)
    if (args.target or "").startswith(("ssh://", "docker+ssh://")):
        ssh = {"identity": args.identity, "accept_host_key": args.accept_host_key}
        if getattr(args, "runtime_source", None):
            ssh["runtime_source"] = args.runtime_source
        return open_target(args.target, root=settings.deployments_dir, **ssh)
    return open_target(args.target, root=settings.deployments_dir)


def _progress_printer() -> Any:
    def show(event: Any) -> None:
        pct = f"{event.fraction * 100:3.0f}%" if event.fraction is not None else "  … "
        print(f"[{pct}] {event.step}: {event.message}", file=sys.stderr, flush=True)

    return show


def _with_cancel_on_sigint(fn: Any) -> Any:
    """Run ``fn(cancel)`` with Ctrl-C setting the cancel event, so an interrupted deploy cleans up."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return fn(cancel)
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        return fn(cancel)
    finally:
        signal.signal(signal.SIGINT, previous)


def _bundle_slug(uri: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", uri.split(":", 1)[-1]).strip("-._") or "bundle"


def resolve_source(source: str, args: argparse.Namespace, cancel: threading.Event) -> Path:
    """A bundle folder for ``source``: used as is if it holds a manifest, else bundled from the registry."""
    path = Path(source)
    if path.is_dir():
        if not (path / "manifest.json").is_file():
            raise DeployError(
                f"{path} is not a ModelDeck bundle (no manifest.json)", hint="build one with `modeldeck bundle`"
            )
        return path
    if "://" not in source and ":/" not in source:
        raise DeployError(
            f"{source!r} is neither a bundle folder nor a model URI", hint="use models:/NAME/VERSION or a bundle dir"
        )
    from modeldeck.core.bundle import BundleOptions, build_bundle
    from modeldeck.core.cli import settings_for

    settings = settings_for(args)
    out = settings.bundles_dir / _bundle_slug(source)

    def show(message: str, fraction: float | None) -> None:
        pct = f"{fraction * 100:3.0f}%" if fraction is not None else "  … "
        print(f"[{pct}] bundle: {message}", file=sys.stderr, flush=True)

    report = build_bundle(
        source,
        out,
        tracking_uri=settings.effective_tracking_uri,
        registry_uri=settings.registry_uri,
        options=BundleOptions(overwrite=True, trust_pickle=args.trust_pickle),
        progress=show,
        cancel=cancel,
    )
    print(report.to_text(), file=sys.stderr)
    return Path(report.out_dir)


def cmd_deploy(args: argparse.Namespace) -> int:
    from modeldeck.core.targets.base import DeployOptions, HealthGate

    if args.hosts or not args.target:
        return fleet.cmd_deploy_hosts(args)
    target = _target(args)
    extra = _docker_extra(args)
    if extra and getattr(target, "kind", "") != "docker":
        raise DeployError(f"--{next(iter(extra)).replace('_', '-')} only applies to docker targets")
    if getattr(args, "no_warm_spare", False):
        if getattr(target, "kind", "") not in ("ssh", "local"):
            raise DeployError("--no-warm-spare only applies to ssh:// and local targets")
        extra["warm_spare"] = False
    options = DeployOptions(
        name=args.name,
        host=args.publish_address,
        port=args.port,
        env=_env_pairs(args.env),
        extra=extra,
        max_batch_size=args.max_batch_size,
        max_batch_wait_ms=args.max_batch_wait_ms,
        cors_origins=tuple(args.cors_origin),
        health=HealthGate(start_period_s=args.start_period, check_example=not args.no_example_check),
        keep_releases=args.keep_releases,
    )

    def run(cancel: threading.Event) -> int:
        bundle = resolve_source(args.source, args, cancel)
        if args.dry_run:
            plan = target.plan(bundle, options)
            if args.json:
                _print_json(plan)
            else:
                print(
                    f"plan for {plan.name} on {plan.target_url}"
                    + (f" (replaces {plan.replaces})" if plan.replaces else "")
                )
                for i, step in enumerate(plan.steps, 1):
                    print(f"  {i}. {step.step}: {step.description}")
            return 0
        result = target.deploy(bundle, options, progress=_progress_printer(), cancel=cancel)
        if result.ok:
            _remember_target(args.target)
        return _report(result, args.json)

    return int(_with_cancel_on_sigint(run))


def _remember_target(url: str) -> None:
    """List the target in the GUI's Deployments page from now on; failing to record it never fails the deploy."""
    from modeldeck.core.errors import ModelDeckError
    from modeldeck.core.targets import catalog

    try:
        catalog.remember(url)
    except (ModelDeckError, OSError) as exc:
        print(f"warning: could not record target {url} in the target list: {exc}", file=sys.stderr)


def _report(result: Any, as_json: bool) -> int:
    if as_json:
        _print_json({"ok": result.ok, **_jsonable(result)})
    else:
        status = result.status
        where = f" at {status.endpoint}" if status is not None and status.endpoint else ""
        what = f" ({status.model_name} v{status.model_version}, release {status.release_id})" if status else ""
        print(f"{result.name}: {result.outcome}{where}{what}" + (f" — {result.message}" if result.message else ""))
    if not result.ok:
        if not as_json:
            print(f"error: {result.name}: {result.outcome}: {result.message}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if args.hosts:
        return fleet.cmd_status_hosts(args)
    statuses = _target(args).status(args.name)
    if args.json:
        _print_json(statuses)
        return 0
    if not statuses:
        print("no deployments")
        return 0
    rows = [("NAME", "STATE", "MODEL", "VERSION", "URL", "RELEASE", "SINCE")]
    for s in statuses:
        rows.append(
            (
                s.name,
                s.state,
                s.model_name or "-",
                s.model_version or "-",
                s.endpoint or "-",
                s.release_id or "-",
                s.since or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    failed = [s for s in statuses if s.state in ("failed", "unknown") and s.message]
    for s in failed:
        print(f"{s.name}: {s.message}", file=sys.stderr)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    target = _target(args)
    target.status(args.name)  # a one-line error for an unknown name
    sys.stdout.write(target.logs(args.name, args.lines))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    status = _target(args).stop(args.name)
    print(f"{status.name}: {status.state}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    target = _target(args)
    if not hasattr(target, "start"):
        raise DeployError(f"target {args.target} cannot start a stopped deployment", hint="deploy it again")
    result = _with_cancel_on_sigint(lambda c: target.start(args.name, progress=_progress_printer(), cancel=c))
    return _report(result, args.json)


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.hosts:
        return fleet.cmd_rollback_hosts(args)
    target = _target(args)
    result = _with_cancel_on_sigint(lambda c: target.rollback(args.name, progress=_progress_printer(), cancel=c))
    return _report(result, args.json)


def cmd_undeploy(args: argparse.Namespace) -> int:
    target = _target(args)
    _with_cancel_on_sigint(lambda c: target.undeploy(args.name, progress=_progress_printer(), cancel=c))
    print(f"{args.name}: undeployed")
    return 0


def _jsonable(obj: Any) -> Any:
    from modeldeck.core.registry.types import to_jsonable

    return to_jsonable(obj)


def _print_json(obj: Any) -> None:
    from modeldeck.core.cli import print_json

    print_json(obj)
