"""``python -m modeldeck.core.runtime serve BUNDLE_DIR ...``: the runtime's own entry point.

``modeldeck serve`` (core/cli/serve.py) uses the same argument set and the same
:func:`run_serve`, so both behave identically; this one needs nothing but the
runtime's dependencies.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from modeldeck.core.errors import ModelDeckError
from modeldeck.core.runtime.config import Bind, RuntimeConfig


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``serve``; flags override values from ``--config``."""
    parser.add_argument("bundle", type=Path, metavar="BUNDLE_DIR", help="a bundle built by `modeldeck bundle`")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks a free one)")
    parser.add_argument(
        "--bind",
        action="append",
        metavar="HOST:PORT",
        help="listen on this address; repeat for several (replaces --host/--port)",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        default=None,
        help="set SO_REUSEPORT so another runtime can listen on the same port (zero-downtime switch)",
    )
    parser.add_argument("--config", type=Path, metavar="runtime.json", help="runtime settings (JSON)")
    parser.add_argument(
        "--deployment",
        metavar="NAME",
        default=os.environ.get("MODELDECK_DEPLOYMENT") or None,
        help="the deployment this runtime serves, reported by /version and metrics (default: $MODELDECK_DEPLOYMENT, "
        "which container targets set, so images of older runtimes still start)",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help="once ready, atomically write JSON with pid, actual binds and model identity here",
    )
    parser.add_argument(
        "--log-level", choices=("critical", "error", "warning", "info", "debug"), help="runtime log level"
    )
    parser.add_argument(
        "--wait-for-bundle",
        type=float,
        metavar="SECONDS",
        help="import the serving stack first, then wait up to SECONDS for BUNDLE_DIR to appear (a deployer starts "
        "the process while the bundle is still on its way; it is verified as always once it is there)",
    )


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    """``--config`` file (or defaults) with command-line flags applied on top."""
    config = RuntimeConfig.load(args.config) if args.config else RuntimeConfig()
    binds: tuple[Bind, ...] | None = None
    if args.bind:
        if args.host is not None or args.port is not None:
            from modeldeck.core.errors import ConfigError

            raise ConfigError("use either --bind or --host/--port, not both")
        binds = tuple(Bind.parse(b) for b in args.bind)
    elif args.host is not None or args.port is not None:
        first = config.binds[0]
        binds = (Bind(args.host or first.host, first.port if args.port is None else args.port),)
        Bind.parse(str(binds[0]))  # range check
    return config.with_overrides(
        binds=binds, reuse_port=args.reuse_port, log_level=args.log_level, deployment_name=args.deployment
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; raises :class:`ModelDeckError` for the caller to print."""
    from modeldeck.core.runtime.server import Phases, serve

    phases = getattr(args, "phases", None) or Phases()
    if getattr(args, "wait_for_bundle", None):
        # Python, numpy, onnxruntime and uvicorn take ~0.3 s of CPU to import: done while the bundle is uploaded.
        # prometheus_client too: the metrics import it only at the first scrape, which here need not pay for it.
        _import_serving_stack()
        if "imported" not in phases.marks:
            phases.mark("imported")
        _wait_for_bundle(Path(args.bundle), args.wait_for_bundle)
        phases.mark("bundle_arrived")
    config = config_from_args(args)
    return serve(args.bundle, config, ready_file=args.ready_file, phases=phases)


def _import_serving_stack() -> None:
    import onnxruntime  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
    from modeldeck.core.runtime import http_protocol  # noqa: F401


def run_spare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """A warm spare: import the serving stack, say so in ``--ready-file``, then wait on stdin for the ``serve``
    arguments of the release that claims it (one JSON line ``{"argv": [...]}`` from the supervisor).

    End-of-file (the supervisor is gone, or it stops the spare) exits quietly with 0. The claimed release is
    then served exactly as ``serve`` would, verification included; its ready file's phases show ``claimed``.
    """
    import json

    from modeldeck.core.runtime.server import Phases

    phases = Phases()
    _import_serving_stack()
    phases.mark("imported")
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "spare": True, "phases_s": phases.marks}))
        tmp.replace(args.ready_file)
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return 0
    try:
        argv = json.loads(line)["argv"]
        if not isinstance(argv, list) or not argv or argv[0] != "serve":
            raise ValueError("argv must start with 'serve'")
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelDeckError(f"the spare got a malformed claim: {exc}") from exc
    phases.mark("claimed")
    serve_args = parser.parse_args([str(a) for a in argv])
    serve_args.phases = phases
    return run_serve(serve_args)


def _wait_for_bundle(bundle: Path, timeout_s: float) -> None:
    """Wait for a release folder being installed (it appears complete: installed under a temporary name, renamed).

    Gives up with :class:`ModelDeckError` after ``timeout_s`` or when the parent (the supervisor) is gone; a
    SIGTERM meanwhile ends the process at once (no handler is installed yet).
    """
    parent = os.getppid()
    deadline = time.monotonic() + timeout_s
    while not bundle.is_dir():
        if time.monotonic() > deadline:
            raise ModelDeckError(f"the bundle {bundle} did not arrive within {timeout_s:g} s")
        if os.getppid() != parent:
            raise ModelDeckError("the supervisor went away while the bundle was on its way")
        time.sleep(0.02)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeldeck.core.runtime", description="ModelDeck serving runtime")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_arguments(sub.add_parser("serve", help="serve a bundle over HTTP"))
    spare = sub.add_parser("spare", help="import the serving stack and wait on stdin for the release to serve")
    spare.add_argument("--ready-file", type=Path, metavar="PATH", help="written once the stack is imported")
    args = parser.parse_args(argv)
    level = getattr(logging, (getattr(args, "log_level", None) or "info").upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run_spare(args, parser) if args.command == "spare" else run_serve(args)
    except ModelDeckError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
