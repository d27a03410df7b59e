"""``modeldeck targets``: the targets ModelDeck lists (local, deployed-to, inventory hosts) and their deployments.

``targets`` asks every known target at once (one deadline; an unreachable one is a line with its
reason, exit 1 if any is unreachable); ``targets forget URL`` stops listing a target.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``targets`` and ``targets forget`` to the top-level parser."""
    p = sub.add_parser(
        "targets",
        help="list known targets and their deployments",
        description="Every target ModelDeck knows: this machine, every target a deploy succeeded to, and the "
        "inventory's hosts, each asked for its deployments concurrently.",
    )
    p.add_argument("--timeout", type=float, default=8.0, metavar="S", help="longest wait for any target (default 8)")
    p.add_argument("--no-status", action="store_true", help="only list the targets; ask none of them")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_targets)
    tsub = p.add_subparsers(dest="targets_command", metavar="COMMAND")
    f = tsub.add_parser("forget", help="stop listing a target (its deployments are not touched)")
    f.add_argument("url")
    f.set_defaults(handler=cmd_forget)


def cmd_targets(args: argparse.Namespace) -> int:
    from modeldeck.core.cli import print_json, settings_for
    from modeldeck.core.errors import ConfigError
    from modeldeck.core.targets import catalog

    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, not {args.timeout:g}")
    known = catalog.known_targets()
    if args.no_status:
        if args.json:
            print_json([_known_json(t) for t in known])
        else:
            for t in known:
                print(f"{t.url}  ({t.source}{', host ' + t.host if t.host else ''})")
        return 0
    settings = settings_for(args)
    hosts = {t.url: t.host for t in known}

    def opener(url: str) -> Any:
        return catalog.open_known(url, deployments_dir=settings.deployments_dir, host=hosts.get(url))

    listings = catalog.status_all([t.url for t in known], timeout=args.timeout, opener=opener)
    if args.json:
        print_json(
            [
                {**_known_json(t), "reachable": lst.reachable, "error": lst.error, "deployments": list(lst.statuses)}
                for t, lst in zip(known, listings, strict=True)
            ]
        )
    else:
        for lst in listings:
            if lst.error is not None:
                print(f"{lst.url}: unreachable: {lst.error}")
                continue
            print(f"{lst.url}: {len(lst.statuses)} deployment{'s' * (len(lst.statuses) != 1)}")
            for s in lst.statuses:
                where = f" at {s.endpoint}" if s.endpoint else ""
                print(f"  {s.name}  {s.state}  {s.model_name or '-'} v{s.model_version or '-'}{where}")
    unreachable = [lst.url for lst in listings if lst.error is not None]
    if unreachable:
        print(f"error: {len(unreachable)} target(s) unreachable: {', '.join(unreachable)}", file=sys.stderr)
        return 1
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from modeldeck.core.errors import TargetError
    from modeldeck.core.targets import catalog

    if not catalog.forget(args.url):
        raise TargetError(f"{args.url} is not in the target list", hint="see `modeldeck targets --no-status`")
    print(f"forgot {args.url}")
    return 0


def _known_json(t: Any) -> dict[str, Any]:
    return {"url": t.url, "kind": t.kind, "source": t.source, "host": t.host, "last_deployed": t.last_deployed}
