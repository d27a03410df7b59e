"""The headless ``modeldeck`` command line, over the same core the GUI uses.

Each command group lives in its own module with a ``register(subparsers)``
function; handlers import heavy libraries (MLflow, onnx) lazily so that
``modeldeck serve`` starts fast and works where only the runtime is installed.
Handlers return an exit code or raise :class:`ModelDeckError`; :func:`main`
turns errors into one ``error: …`` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from modeldeck.core.errors import Cancelled, ModelDeckError

log = logging.getLogger(__name__)

# Command-group modules under modeldeck.core.cli, registered in this order.
COMMAND_MODULES = ("registry", "bundle", "serve", "deploy", "build", "hosts", "targets")

Handler = Callable[[argparse.Namespace], int]


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("modeldeck")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeck",
        description="Browse an MLflow registry, bundle models to ONNX, deploy and monitor them.",
    )
    parser.add_argument("--version", action="version", version=f"modeldeck {version()}")
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, the settings file, or the embedded local registry)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"modeldeck.core.cli.{name}")
        module.register(sub)
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def settings_for(args: argparse.Namespace) -> Any:
    """The settings for this invocation (file < env < ``--tracking-uri``)."""
    from modeldeck.core.settings import load_settings

    return load_settings(tracking_uri=getattr(args, "tracking_uri", None))


def print_json(obj: Any) -> None:
    from modeldeck.core.registry.types import to_jsonable

    json.dump(to_jsonable(obj), sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def run_handler(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the chosen handler, mapping every failure to a one-line error and exit code."""
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args) or 0)
    except Cancelled:
        print("error: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except ModelDeckError as exc:
        log.debug("command failed", exc_info=True)
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: say so in one line, keep the traceback in the log
        log.error("internal error", exc_info=True)
        print(f"error: internal error: {exc.__class__.__name__}: {exc} (run with -vv for details)", file=sys.stderr)
        return 70


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    return run_handler(args, parser)


if __name__ == "__main__":
    sys.exit(main())
