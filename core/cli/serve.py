"""``modeldeck serve BUNDLE_DIR``: run the serving runtime in the foreground.

Delegates to the runtime's own entry point (same flags, same behaviour) and
imports nothing beyond the runtime, so it starts fast and never loads MLflow.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``serve`` to the top-level parser."""
    from modeldeck.core.runtime.__main__ import add_serve_arguments

    parser = sub.add_parser(
        "serve",
        help="serve a bundle over HTTP (MLflow scoring protocol + Open Inference Protocol v2)",
        description="Serve a ModelDeck bundle until SIGTERM/Ctrl-C. Exits non-zero with one error line "
        "if the bundle is tampered with or the port is taken.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from modeldeck.core.runtime.__main__ import run_serve

    return run_serve(args)
