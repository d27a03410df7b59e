"""``modeldeck registry list|show|alias``: browse and promote models from the shell.

Works on any MLflow store (models ModelDeck did not create show what they have;
what is missing is said as a warning). Without a configured tracking URI the
embedded local registry is used and seeded with the demo models on first use
(progress goes to stderr, so ``--json`` output stays clean).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from modeldeck.core.formatting import format_size

if TYPE_CHECKING:
    from modeldeck.core.registry.client import Registry
    from modeldeck.core.registry.types import ModelVersion, Page, RegisteredModel, VersionDetails

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the top-level parser."""
    parser = sub.add_parser("registry", help="browse models in the MLflow registry, move aliases")
    cmds = parser.add_subparsers(dest="registry_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda _args: _usage(parser))

    p = cmds.add_parser("list", help="every model with its versions and aliases")
    p.add_argument("--filter", metavar="TEXT", default="", help="only models whose name contains TEXT")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_list)

    p = cmds.add_parser("show", help="one version: signature, metrics, params, tags, aliases, flavors, artifacts")
    p.add_argument(
        "ref", metavar="NAME[/VERSION|@ALIAS]", help="e.g. iris-classifier, iris-classifier/2, iris@champion"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_show)

    p = cmds.add_parser("alias", help="point ALIAS at VERSION of NAME (or remove it with --delete)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("version", metavar="VERSION", nargs="?", help="version number (not needed with --delete)")
    p.add_argument("alias", metavar="ALIAS")
    p.add_argument("--delete", action="store_true", help="remove ALIAS from NAME instead")
    p.set_defaults(handler=cmd_alias)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _stderr_progress(message: str, fraction: float | None) -> None:
    pct = f"{fraction * 100:3.0f}% " if fraction is not None else ""
    print(f"demo registry: {pct}{message}", file=sys.stderr, flush=True)


def open_registry(args: argparse.Namespace) -> Registry:
    """The registry for this invocation; the embedded one is created and seeded if needed."""
    from modeldeck.core import cli
    from modeldeck.core.registry.client import Registry

    if not getattr(args, "verbose", 0):
        # urllib3 logs every retry of a dead server as a warning; the one-line error says it all
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    settings = cli.settings_for(args)
    if settings.tracking_uri is None:
        from modeldeck.core.registry.embedded import ensure_embedded_registry

        ensure_embedded_registry(settings, progress=_stderr_progress)
    return Registry.from_settings(settings)


# --- list -------------------------------------------------------------------------------------


def _all_models(registry: Registry, filter_text: str) -> list[RegisteredModel]:
    return _every_page(lambda token: registry.list_models(filter_text, page_token=token, max_results=500))


def _all_versions(registry: Registry, name: str) -> list[ModelVersion]:
    return _every_page(lambda token: registry.list_versions(name, page_token=token, max_results=1000))


def _every_page(fetch: Callable[[str | None], Page[T]]) -> list[T]:
    """Follow ``next_token`` until the last page (the CLI prints whole listings)."""
    items: list[T] = []
    token: str | None = None
    while True:
        page = fetch(token)
        items += page.items
        token = page.next_token
        if not token:
            return items


def cmd_list(args: argparse.Namespace) -> int:
    from modeldeck.core import cli

    registry = open_registry(args)
    models = _all_models(registry, args.filter)
    rows = [(m, _all_versions(registry, m.name)) for m in models]
    if args.json:
        cli.print_json(
            {
                "registry": registry.display_name,
                "tracking_uri": _shown_uri(registry),
                "models": [_model_json(m, versions) for m, versions in rows],
            }
        )
        return 0
    if not rows:
        suffix = f" matching {args.filter!r}" if args.filter else ""
        print(f"no registered models{suffix} in {registry.display_name}")
        return 0
    print(registry.display_name)
    print()
    table = [("MODEL", "VERSIONS", "LATEST", "ALIASES", "UPDATED", "DESCRIPTION")]
    for m, versions in rows:
        table.append(
            (
                m.name,
                _version_span(versions),
                max((v.version for v in versions), key=int, default="-"),
                _aliases_text(m.aliases),
                _time(m.last_updated),
                _first_line(m.description, 50),
            )
        )
    _print_table(table)
    return 0


def _model_json(model: RegisteredModel, versions: Sequence[ModelVersion]) -> dict[str, Any]:
    from modeldeck.core.registry.types import to_jsonable

    data = to_jsonable(model)
    data["versions"] = to_jsonable(list(versions))
    return data


def _version_span(versions: Sequence[ModelVersion]) -> str:
    if not versions:
        return "0"
    numbers = sorted(int(v.version) for v in versions)
    span = f"{numbers[0]}" if len(numbers) == 1 else f"{numbers[0]}..{numbers[-1]}"
    return f"{len(numbers)} ({span})"


def _aliases_text(aliases: dict[str, str]) -> str:
    if not aliases:
        return "-"
    return ", ".join(f"{a}={v}" for a, v in sorted(aliases.items(), key=lambda kv: (-int(kv[1]), kv[0])))


# --- show -------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    from modeldeck.core import cli
    from modeldeck.core.registry.types import to_jsonable

    registry = open_registry(args)
    mv = registry.resolve(args.ref)
    details = registry.version_details(mv.name, mv.version)
    if args.json:
        data = to_jsonable(details)
        data["registry"] = registry.display_name
        cli.print_json(data)
        return 0
    _print_details(details)
    return 0


def _print_details(d: VersionDetails) -> None:
    v = d.version
    print(f"{v.name}/{v.version}  ({v.uri})")
    fields = [
        ("aliases", ", ".join(v.aliases) or "-"),
        ("status", v.status or "-"),
        ("created", _time(v.creation_time)),
        ("description", _first_line(v.description, 100) or "-"),
        ("run", f"{d.run.run_id}  {d.run.run_name or ''}  {d.run.status}".rstrip() if d.run else v.run_id or "-"),
        ("flavors", ", ".join(d.flavors) or "-"),
        ("size", _size(d.size_bytes)),
        ("artifacts at", d.model_uri),
    ]
    _print_pairs(fields, indent=2)

    print()
    if d.signature is None:
        print("Signature: none")
    else:
        print(f"Signature ({d.signature.input_kind})")
        for label, cols in (("inputs", d.signature.inputs), ("outputs", d.signature.outputs)):
            print(f"  {label}:")
            _print_table(
                [
                    (c.name or "-", c.type + (f" {list(c.shape)}" if c.shape else ""), "optional" if c.optional else "")
                    for c in cols
                ]
                or [("-", "", "")],
                indent=4,
            )
    if d.input_example is not None:
        ex = d.input_example
        rows = len(ex.get("data") or []) if "data" in ex else None
        print(f"Input example: {rows} row(s)" if rows is not None else "Input example: tensor input")
    else:
        print("Input example: none")

    run = d.run
    for title, mapping in (
        ("Metrics", {k: _number(x) for k, x in sorted(run.metrics.items())} if run else {}),
        ("Params", dict(sorted(run.params.items())) if run else {}),
        ("Version tags", dict(sorted(v.tags.items()))),
        ("Run tags", dict(sorted(run.tags.items())) if run else {}),
    ):
        print()
        print(f"{title}" if mapping else f"{title}: none")
        _print_pairs(list(mapping.items()), indent=2)

    print()
    print(f"Artifacts ({len(d.artifacts)})" if d.artifacts else "Artifacts: none")
    _print_table(
        [(a.path + ("/" if a.is_dir else ""), "" if a.is_dir else _size(a.size)) for a in d.artifacts], indent=2
    )
    if d.warnings:
        print()
        print("Warnings")
        for w in d.warnings:
            print(f"  - {w}")


# --- alias ------------------------------------------------------------------------------------


def cmd_alias(args: argparse.Namespace) -> int:
    from modeldeck.core.errors import ConfigError
    from modeldeck.core.registry.client import validate_alias, validate_model_name, validate_version

    validate_model_name(args.name)
    validate_alias(args.alias)
    if args.delete:
        if args.version is not None:
            raise ConfigError(
                "--delete takes NAME and ALIAS only", hint=f"modeldeck registry alias {args.name} {args.alias} --delete"
            )
        registry = open_registry(args)
        registry.delete_alias(args.name, args.alias)
        print(f"removed alias {args.name}@{args.alias}")
        return 0
    if args.version is None:
        raise ConfigError("missing VERSION", hint=f"modeldeck registry alias {args.name} <version> {args.alias}")
    version = validate_version(args.version)
    registry = open_registry(args)
    before = registry.get_model(args.name).aliases.get(args.alias)
    registry.set_alias(args.name, args.alias, version)
    moved = f" (was {before})" if before and before != version else ""
    print(f"{args.name}@{args.alias} -> version {version}{moved}")
    return 0


# --- formatting -------------------------------------------------------------------------------


def _shown_uri(registry: Registry) -> str:
    from modeldeck.core.registry.client import redact_uri

    return redact_uri(registry.tracking_uri)


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(n: int | None) -> str:
    return format_size(n, missing="-")


def _number(x: float) -> str:
    return f"{x:.6g}"


def _first_line(text: str, width: int) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _print_pairs(pairs: Iterable[tuple[str, str]], indent: int = 0) -> None:
    pairs = list(pairs)
    if not pairs:
        return
    width = max(len(k) for k, _ in pairs)
    for k, val in pairs:
        print(f"{' ' * indent}{k + ':':<{width + 1}}  {val}")


def _print_table(rows: Sequence[Sequence[str]], indent: int = 0) -> None:
    if not rows:
        return
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [f"{c!s:<{w}}" for c, w in zip(r, widths, strict=True)]
        print((" " * indent + "  ".join(cells)).rstrip())
