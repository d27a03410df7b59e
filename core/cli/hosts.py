"""``modeldeck hosts …``: the SSH host inventory from the command line.

``list``/``show`` read the inventory (``show`` prints every effective connection setting with
where it came from, the host keys on record and what an import could not carry over);
``add``/``remove``/``import-*`` change it; ``test`` connects (host key verified first, nothing
runs on a refused key) and prints the host's facts; ``trust`` shows a host's key and pins it
only when given the same fingerprint; ``set-password`` stores a password in the OS keyring.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeldeck.core.errors import ConfigError, ModelDeckError

if TYPE_CHECKING:
    from modeldeck.core.inventory.hosts import Host, Inventory
    from modeldeck.core.inventory.known_hosts import KnownHosts

MAX_PARALLEL_TESTS = 8


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``hosts`` and its subcommands to the top-level parser."""
    top = sub.add_parser(
        "hosts",
        help="the SSH host inventory: add, import, show, test and trust hosts",
        description="Named SSH hosts with groups and labels (stored in the config dir). Select hosts elsewhere with "
        "comma lists of names, groups, label=value, all, and !TERM to exclude.",
    )
    hs = top.add_subparsers(dest="hosts_command", metavar="SUBCOMMAND")
    top.set_defaults(handler=lambda args: _usage(top))

    p = hs.add_parser("list", help="list hosts (optionally a selection)")
    p.add_argument("selection", nargs="?", help="e.g. web,gpu=a100,!web3 (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_list)

    p = hs.add_parser("add", help="add a host (or replace one with --replace)")
    p.add_argument("name")
    p.add_argument("--host", required=True, metavar="ADDRESS", help="host name or IP address (HostName)")
    p.add_argument("--port", type=int, help="SSH port (default 22)")
    p.add_argument("--user", help="login user (default: your local user name)")
    p.add_argument("--identity", action="append", default=[], metavar="FILE", help="private key file (repeatable)")
    p.add_argument("--proxy-jump", metavar="HOST", help="inventory host or user@host:port to jump through")
    p.add_argument("--deploy-root", metavar="DIR", help="where releases live on the host (default ~/modeldeck)")
    p.add_argument("--group", action="append", default=[], metavar="GROUP", help="group (repeatable)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label (repeatable)")
    p.add_argument("--replace", action="store_true", help="replace a host of the same name")
    p.set_defaults(handler=cmd_add)

    p = hs.add_parser("remove", help="remove a host (and its keyring password)")
    p.add_argument("name")
    p.set_defaults(handler=cmd_remove)

    p = hs.add_parser("show", help="effective connection settings (with their origin), host keys, warnings")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_show)

    p = hs.add_parser("import-ssh-config", help="import the Host aliases of an OpenSSH config")
    p.add_argument("file", nargs="?", type=Path, help="default ~/.ssh/config")
    p.add_argument("--group", action="append", default=[], metavar="GROUP", help="put every imported host in GROUP")
    p.add_argument("--replace", action="store_true", help="replace hosts of the same name")
    p.add_argument("--dry-run", action="store_true", help="show what would be imported; change nothing")
    p.set_defaults(handler=cmd_import_ssh_config)

    p = hs.add_parser("import-ansible", help="import hosts and groups of an Ansible INI or YAML inventory")
    p.add_argument("file", type=Path)
    p.add_argument("--replace", action="store_true", help="replace hosts of the same name")
    p.add_argument("--dry-run", action="store_true", help="show what would be imported; change nothing")
    p.set_defaults(handler=cmd_import_ansible)

    p = hs.add_parser("test", help="connect (host key verified first), authenticate and report facts")
    p.add_argument("selection", metavar="NAME|GROUP", help="host, group, label=value, all, or a comma list")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_test)

    p = hs.add_parser(
        "trust",
        help="show a host's key fingerprint; pin it with --fingerprint",
        description="Without --fingerprint, prints the key the host presents. With it, pins that key in ModelDeck's "
        "own known_hosts only if the host presents exactly that fingerprint. A changed key also needs --replace.",
    )
    p.add_argument("name")
    p.add_argument("--fingerprint", metavar="SHA256:…", help="the fingerprint you checked out of band")
    p.add_argument("--replace", action="store_true", help="re-pin a host whose key changed (re-installed host)")
    p.set_defaults(handler=cmd_trust)

    p = hs.add_parser("set-password", help="store a host's SSH password in the OS keyring (never in a file)")
    p.add_argument("name")
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin (CI)")
    p.add_argument("--delete", action="store_true", help="forget the stored password")
    p.set_defaults(handler=cmd_set_password)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


# -- shared helpers ---------------------------------------------------------------------------------


def _inventory() -> Inventory:
    from modeldeck.core.inventory.hosts import Inventory
    from modeldeck.core.settings import config_dir

    return Inventory.for_config_dir(config_dir())


def _known_hosts() -> KnownHosts:
    from modeldeck.core.inventory.known_hosts import KnownHosts
    from modeldeck.core.settings import config_dir

    return KnownHosts(config_dir() / "known_hosts")


def _passphrase_prompt() -> Any:
    if not sys.stdin.isatty():
        return None
    return lambda path: getpass.getpass(f"passphrase for {path}: ") or None


def _host_json(host: Host) -> dict[str, Any]:
    return {
        "name": host.name,
        "hostname": host.hostname,
        "port": host.port,
        "user": host.user,
        "identity_files": list(host.identity_files),
        "proxy_jump": host.proxy_jump,
        "deploy_root": host.deploy_root,
        "groups": list(host.groups),
        "labels": dict(host.labels),
        "source": host.source,
        "warnings": list(host.warnings),
    }


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _labels(host: Host) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(host.labels.items()))


# -- commands ---------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    inv = _inventory()
    hosts = inv.select(args.selection) if args.selection else inv.hosts
    if args.json:
        json.dump([_host_json(h) for h in hosts], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not hosts:
        print("no hosts (add one with: modeldeck hosts add NAME --host ADDRESS, or import-ssh-config/import-ansible)")
        return 0
    rows = [["NAME", "ADDRESS", "USER", "GROUPS", "LABELS", "SOURCE", "WARNINGS"]]
    for h in hosts:
        rows.append(
            [
                h.name,
                h.address,
                h.user or "-",
                ",".join(h.groups) or "-",
                _labels(h) or "-",
                h.source,
                str(len(h.warnings)) if h.warnings else "-",
            ]
        )
    _table(rows)
    return 0


def _parse_labels(items: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--label {item!r}: expected KEY=VALUE")
        labels[key.strip()] = value.strip()
    return labels


def cmd_add(args: argparse.Namespace) -> int:
    from modeldeck.core.inventory.hosts import Host

    host = Host(
        name=args.name,
        hostname=args.host,
        port=args.port,
        user=args.user,
        identity_files=tuple(args.identity),
        proxy_jump=args.proxy_jump,
        deploy_root=args.deploy_root,
        groups=tuple(dict.fromkeys(args.group)),
        labels=_parse_labels(args.label),
    )
    _inventory().add(host, replace_existing=args.replace)
    print(f"{'replaced' if args.replace else 'added'} {host.name} ({host.address})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from modeldeck.core.inventory.secrets import delete_password

    host = _inventory().remove(args.name)
    forgot = False
    with contextlib.suppress(ConfigError):  # no keyring: there cannot be a password to forget
        forgot = delete_password(host.name)
    print(f"removed {host.name}" + (" and its keyring password" if forgot else ""))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from modeldeck.core.inventory.hosts import resolve

    inv = _inventory()
    resolved = resolve(inv, args.name)
    host = resolved.host
    known = _known_hosts().known(resolved.endpoint.host, resolved.endpoint.port)
    if args.json:
        out = _host_json(host)
        out["resolved"] = {name: {"value": s.value, "source": s.source} for name, s in resolved.settings()}
        out["notes"] = list(resolved.notes)
        out["known_host_keys"] = [
            {"name": k.name, "type": k.key_type, "fingerprint": k.fingerprint, "file": str(k.source)} for k in known
        ]
        json.dump(out, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
        return 0
    print(f"{host.name}  (source: {host.source})")
    rows = [["  SETTING", "VALUE", "FROM"]]
    rows += [[f"  {name}", s.text(), s.source] for name, s in resolved.settings()]
    hops = []
    ep = resolved.endpoint.proxy_jump
    while ep is not None:
        hops.append(ep.label)
        ep = ep.proxy_jump
    if hops:
        rows.append(["  Route", " -> ".join([*reversed(hops), resolved.endpoint.label]), ""])
    rows.append(["  DeployRoot", host.deploy_root or "~/modeldeck", "inventory" if host.deploy_root else "default"])
    rows.append(["  Groups", ",".join(host.groups) or "-", ""])
    rows.append(["  Labels", _labels(host) or "-", ""])
    _table(rows)
    for note in resolved.notes:
        print(f"warning: {note}")
    print("host keys on record:")
    if known:
        for k in known:
            print(f"  {k.key_type} {k.fingerprint}  ({k.source})")
    else:
        print(f"  none: the first connection will show the key; trust it with: modeldeck hosts trust {host.name}")
    if host.warnings:
        print(f"warnings ({len(host.warnings)}):")
        for w in host.warnings:
            print(f"  {w}")
    return 0


def _report_import(kind: str, result: Any, dry_run: bool, replace: bool) -> int:
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    verb = "would import" if dry_run else ("imported/replaced" if replace else "imported")
    print(f"{verb} {len(result.hosts)} hosts from {kind} {result.path}")
    for h in result.hosts:
        groups = f"  groups: {','.join(h.groups)}" if h.groups else ""
        print(f"  {h.name}  {h.user + '@' if h.user else ''}{h.address}{groups}")
        for w in h.warnings:
            print(f"    warning: {w}")
    return 0


def cmd_import_ssh_config(args: argparse.Namespace) -> int:
    from modeldeck.core.inventory.ssh_config import import_ssh_config

    result = import_ssh_config(args.file, groups=tuple(dict.fromkeys(args.group)))
    if not args.dry_run:
        _inventory().add_many(result.hosts, replace_existing=args.replace)
    return _report_import("ssh config", result, args.dry_run, args.replace)


def cmd_import_ansible(args: argparse.Namespace) -> int:
    from modeldeck.core.inventory.ansible import import_ansible

    result = import_ansible(args.file)
    if not args.dry_run:
        _inventory().add_many(result.hosts, replace_existing=args.replace)
    return _report_import("Ansible inventory", result, args.dry_run, args.replace)


def probe_one(inv: Inventory, host: Host, known: KnownHosts, passphrase: Any = None) -> dict[str, Any]:
    """Test one host; a failure is a result (with the error's message and hint), not an exception."""
    from modeldeck.core.errors import HostKeyChanged, UnknownHostKey
    from modeldeck.core.inventory.hosts import resolve
    from modeldeck.core.inventory.probe import check_host

    resolved = None
    try:
        resolved = resolve(inv, host.name)
        check = check_host(resolved.endpoint, known, deploy_root=host.deploy_root, passphrase=passphrase)
    except ModelDeckError as exc:
        out: dict[str, Any] = {"host": host.name, "ok": False, "error": exc.message, "hint": exc.hint}
        via = ""
        if isinstance(exc, (UnknownHostKey, HostKeyChanged)):
            # The refused key may be a jump host's: name the host to trust.
            owner = resolved.host_of(exc.host) if resolved is not None else None
            via = "" if owner == host.name else f" (jump host {owner or exc.host})"
            out["key_of"] = owner or exc.host
            if owner is None:
                out["hint"] = "add the jump host to the inventory, then trust it there"
            elif isinstance(exc, UnknownHostKey):
                out["hint"] = (
                    f"check it out of band, then: modeldeck hosts trust {owner} --fingerprint {exc.fingerprint}"
                )
            else:
                out["hint"] = f"if {owner} was re-installed: modeldeck hosts trust {owner} --replace " + (
                    f"--fingerprint {exc.presented}"
                )
        if isinstance(exc, UnknownHostKey):
            out.update(status=f"unknown host key{via}", fingerprint=exc.fingerprint, key_type=exc.key_type)
        elif isinstance(exc, HostKeyChanged):
            out.update(status=f"HOST KEY CHANGED{via}", fingerprint=exc.presented, expected=exc.expected)
        else:
            out["status"] = type(exc).__name__
        return out
    return {
        "host": host.name,
        "ok": not check.problems,
        "status": "ok" if not check.problems else "not deployable",
        "address": check.label,
        "key_type": check.key_type,
        "fingerprint": check.fingerprint,
        "facts": check.facts,
        "problems": list(check.problems),
        "elapsed_s": round(check.elapsed_s, 3),
        "summary": check.summary(),
    }


def cmd_test(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor, as_completed

    inv = _inventory()
    hosts = inv.select(args.selection)
    known = _known_hosts()
    prompt = _passphrase_prompt() if len(hosts) == 1 else None
    results: list[dict[str, Any]] = []
    width = max(len(h.name) for h in hosts)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_TESTS, len(hosts))) as pool:
        futures = [pool.submit(probe_one, inv, h, known, prompt) for h in hosts]
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            if args.json:
                continue
            if r["ok"]:
                print(f"{r['host'].ljust(width)}  ok    {r['address']}  {r['summary']}  ({r['elapsed_s']:.2f} s)")
            else:
                detail = r.get("summary") or r["error"]
                print(f"{r['host'].ljust(width)}  FAIL  {detail}")
                if r.get("hint"):
                    print(f"{''.ljust(width)}        {r['hint']}")
    if args.json:
        order = {h.name: i for i, h in enumerate(hosts)}
        json.dump(sorted(results, key=lambda r: order[r["host"]]), sys.stdout, indent=2)
        sys.stdout.write("\n")
    failed = sum(not r["ok"] for r in results)
    if len(hosts) > 1 and not args.json:
        print(f"{len(hosts) - failed}/{len(hosts)} hosts ok")
    return 1 if failed else 0


def cmd_trust(args: argparse.Namespace) -> int:
    from modeldeck.core.inventory.hosts import resolve
    from modeldeck.core.inventory.trust import check_key, trust

    inv = _inventory()
    resolved = resolve(inv, args.name)
    endpoint = resolved.endpoint
    known = _known_hosts()
    prompt = _passphrase_prompt()
    if args.fingerprint is None:
        check = check_key(endpoint, known, passphrase=prompt)
        key = check.presented
        print(f"{args.name} ({endpoint.label}) presents {key.key_type} {key.fingerprint}")
        if check.state == "trusted":
            print("this key is already trusted")
        elif check.state == "unknown":
            print("this key is in no known_hosts file: check the fingerprint out of band, then run")
            print(f"  modeldeck hosts trust {args.name} --fingerprint {key.fingerprint}")
        else:
            print(f"WARNING: the key on record is {check.expected}: the host key CHANGED (possibly an attack).")
            print("only if the host was re-installed and you verified the new fingerprint out of band, run")
            print(f"  modeldeck hosts trust {args.name} --replace --fingerprint {key.fingerprint}")
        return 0
    result = trust(endpoint, args.fingerprint, known, replace=args.replace, passphrase=prompt)
    if not result.pinned:
        print(f"{args.name}: {result.key_type} {result.fingerprint} is already trusted; nothing changed")
    elif result.before == "changed":
        print(f"{args.name}: re-pinned {result.key_type} {result.fingerprint} (old key dropped) in {known.pins_file}")
    else:
        print(f"{args.name}: pinned {result.key_type} {result.fingerprint} in {known.pins_file}")
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    from modeldeck.core.inventory.secrets import delete_password, set_password

    host = _inventory().get(args.name)  # only inventory hosts get a keyring entry
    if args.delete:
        found = delete_password(host.name)
        print(f"{host.name}: password {'forgotten' if found else 'was not stored'}")
        return 0
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"SSH password for {host.name}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ; nothing was stored")
    set_password(host.name, password)
    print(f"{host.name}: password stored in the OS keyring")
    return 0
