"""The ``modeldeck`` entry point: the GUI without a subcommand, the core CLI otherwise.

Kept free of Qt imports at module level so that CLI subcommands work (and start
fast) on machines where Qt cannot load.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from modeldeck.core import cli


def _add_gui_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("gui", help="open the desktop app (the default without a command)")
    p.add_argument("--screenshot", metavar="FILE", help="render the main window offscreen, save a PNG and exit")
    p.add_argument("--size", metavar="WxH", default="1400x860", help="window size for --screenshot (default 1400x860)")
    p.add_argument(
        "--select",
        metavar="REF",
        help="open on this model version: NAME (latest), NAME/VERSION or NAME@ALIAS (default: where you left off)",
    )
    p.set_defaults(handler=_run_gui)


def _run_gui(args: argparse.Namespace) -> int:
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    if getattr(args, "screenshot", None):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from modeldeck.gui.app import run_app

    return run_app(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    _add_gui_command(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        args.command, args.handler, args.screenshot, args.size, args.select = "gui", _run_gui, None, "1400x860", None
    cli.configure_logging(args.verbose)
    return cli.run_handler(args, parser)


if __name__ == "__main__":
    sys.exit(main())
