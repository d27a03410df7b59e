"""Import hosts from an OpenSSH client configuration (``~/.ssh/config``).

Every ``Host`` alias without wildcards becomes an inventory host whose settings are what
OpenSSH would use for it (first obtained value wins; ``Host *`` defaults apply; ``IdentityFile``
accumulates; ``Include`` is followed). ModelDeck connects with paramiko and understands only
``HostName``, ``User``, ``Port``, ``IdentityFile`` and ``ProxyJump``: every other directive that
applies to a host is listed in that host's warnings with its file and line -- never dropped
silently -- because a config that relies on, say, ``ProxyCommand`` would connect differently.
``Match`` blocks are not evaluated; each host is warned that they were skipped.

A parse error (a bad ``Port``, an ``Include`` loop, an unreadable file) raises ConfigError naming
file and line, and nothing is imported.
"""

from __future__ import annotations

import fnmatch
import getpass
import glob
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from modeldeck.core.errors import ConfigError
from modeldeck.core.inventory.hosts import Host, validate_name

log = logging.getLogger(__name__)

SUPPORTED = {"hostname", "user", "port", "identityfile", "proxyjump"}
MAX_INCLUDE_DEPTH = 16

# Why some unsupported directives matter more than "ignored".
_CONSEQUENCE = {
    "proxycommand": "ModelDeck cannot run proxy commands; use ProxyJump, or the host may be unreachable",
    "stricthostkeychecking": "ModelDeck always verifies host keys (unknown keys must be accepted by fingerprint)",
    "userknownhostsfile": "ModelDeck reads ~/.ssh/known_hosts and its own pins only",
    "globalknownhostsfile": "ModelDeck reads ~/.ssh/known_hosts and its own pins only",
    "identityagent": "ModelDeck uses the agent in $SSH_AUTH_SOCK",
    "certificatefile": "SSH certificates are not supported; the plain key is offered",
    "pkcs11provider": "PKCS#11 tokens are not supported",
    "localforward": "port forwards are not set up",
    "remoteforward": "port forwards are not set up",
    "dynamicforward": "port forwards are not set up",
    "controlmaster": "connections are not shared with OpenSSH",
    "controlpath": "connections are not shared with OpenSSH",
    "controlpersist": "connections are not shared with OpenSSH",
    "ciphers": "paramiko negotiates its own algorithms",
    "macs": "paramiko negotiates its own algorithms",
    "kexalgorithms": "paramiko negotiates its own algorithms",
    "hostkeyalgorithms": "paramiko negotiates its own algorithms",
    "hostkeyalias": "keys are looked up under the real host name and port",
    "identitiesonly": "ssh-agent keys are offered too",
    "passwordauthentication": "passwords come only from the OS keyring (hosts set-password)",
}


@dataclass(frozen=True)
class _Line:
    path: Path
    lineno: int
    keyword: str  # lower case
    spelling: str  # as written, for messages
    args: tuple[str, ...]
    patterns: tuple[str, ...] | None  # the enclosing Host block's patterns; None inside a Match block

    @property
    def where(self) -> str:
        return f"{_display(self.path)}:{self.lineno}"


@dataclass
class SshConfigImport:
    """What an import found: hosts ready for :meth:`Inventory.add_many`, and file-level notes."""

    path: Path
    hosts: list[Host] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # file-level (skipped aliases, Match blocks)


def default_ssh_config() -> Path:
    return Path.home() / ".ssh" / "config"


def import_ssh_config(path: Path | None = None, *, groups: tuple[str, ...] = ()) -> SshConfigImport:
    """Read ``path`` (default ``~/.ssh/config``) and return one :class:`Host` per concrete alias."""
    path = (path or default_ssh_config()).expanduser()
    if not path.is_file():
        raise ConfigError(f"no SSH config at {path}")
    lines = _parse(path, depth=0, patterns=("*",), chain=[])
    result = SshConfigImport(path)
    match_lines = [line for line in lines if line.keyword == "match"]
    aliases: list[str] = []
    for line in lines:
        if line.keyword != "host":
            continue
        for pattern in line.args:
            if any(c in pattern for c in "*?!") or pattern in aliases:
                continue
            try:
                validate_name(pattern, "host")
            except ConfigError as exc:
                result.warnings.append(f"{line.where}: Host {pattern} skipped: {exc.message}")
                continue
            aliases.append(pattern)
    if not aliases:
        result.warnings.append(f"{_display(path)}: no Host alias without wildcards: nothing to import")
    blocks = _Blocks(lines)
    for alias in aliases:
        result.hosts.append(_host(alias, blocks.lines_for(alias), lines, match_lines, aliases, path, groups))
    return result


class _Blocks:
    """Directive lines grouped by the ``Host`` block they are in, indexed for fast per-alias lookup.

    Blocks whose patterns are all plain names are found by dictionary lookup; only wildcard or
    negated blocks are matched per alias (a 1,000-host config imports in well under a second).
    """

    def __init__(self, lines: list[_Line]) -> None:
        self.blocks: list[tuple[tuple[str, ...], list[_Line]]] = []
        for line in lines:
            if line.keyword in ("host", "match", "include") or line.patterns is None:
                continue
            if self.blocks and self.blocks[-1][0] is line.patterns:
                self.blocks[-1][1].append(line)
            else:
                self.blocks.append((line.patterns, [line]))
        self.exact: dict[str, list[int]] = {}
        self.generic: list[int] = []
        for i, (patterns, _) in enumerate(self.blocks):
            if any(c in p for p in patterns for c in "*?[!"):
                self.generic.append(i)
            else:
                for p in dict.fromkeys(patterns):
                    self.exact.setdefault(p, []).append(i)

    def lines_for(self, alias: str) -> list[_Line]:
        found = self.exact.get(alias, []) + [i for i in self.generic if _matches(alias, self.blocks[i][0])]
        return [line for i in sorted(found) for line in self.blocks[i][1]]


def _host(
    alias: str,
    applicable: list[_Line],
    lines: list[_Line],
    match_lines: list[_Line],
    aliases: list[str],
    path: Path,
    groups: tuple[str, ...],
) -> Host:
    """``applicable``: the directive lines whose Host patterns match ``alias``, in file order."""
    values: dict[str, _Line] = {}
    identity: list[_Line] = []
    warnings: list[str] = []
    for line in applicable:
        if line.keyword == "identityfile":
            identity.append(line)
        elif line.keyword in SUPPORTED:
            values.setdefault(line.keyword, line)
        else:
            why = _CONSEQUENCE.get(line.keyword, "ignored")
            warnings.append(f"{line.where}: {line.spelling} {' '.join(line.args)} is not supported: {why}")
    for line in match_lines:
        warnings.append(f"{line.where}: Match {' '.join(line.args)} is not evaluated: its settings were not applied")

    origins: dict[str, str] = {}
    hostname = alias
    if "hostname" in values:
        line = values["hostname"]
        hostname = _tokens(line, line.args[0], alias=alias, warnings=warnings)
        origins["hostname"] = line.where
    user = None
    if "user" in values:
        user = values["user"].args[0]
        origins["user"] = values["user"].where
    port = None
    if "port" in values:
        line = values["port"]
        port = int(line.args[0])  # checked while parsing
        origins["port"] = line.where
    identity_files: list[str] = []
    for line in identity:
        value = line.args[0]
        if value.lower() == "none":
            continue
        expanded = _tokens(line, value, alias=alias, hostname=hostname, user=user, warnings=warnings)
        if expanded not in identity_files:
            identity_files.append(expanded)
        origins.setdefault("identity_files", line.where)
    proxy_jump = None
    if "proxyjump" in values:
        line = values["proxyjump"]
        value = line.args[0]
        if value.lower() != "none":
            hops = []
            for hop in value.split(","):
                hop = hop.strip()
                if hop in aliases or any(c in hop for c in "@:.["):
                    hops.append(hop)
                else:
                    # A hop OpenSSH would look up in the config but that is no concrete alias here:
                    # spell it out so the inventory does not mistake it for a missing host.
                    hops.append(_spelled_out(hop, lines))
            proxy_jump = ",".join(hops)
            origins["proxy_jump"] = line.where
    return Host(
        name=alias,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=tuple(identity_files),
        proxy_jump=proxy_jump,
        groups=groups,
        source=f"ssh_config:{_display(path)}",
        origins=origins,
        warnings=tuple(warnings),
    )


def _spelled_out(hop: str, lines: list[_Line]) -> str:
    found: dict[str, str] = {}
    for line in lines:
        if line.patterns is not None and line.keyword in ("hostname", "user", "port") and _matches(hop, line.patterns):
            found.setdefault(line.keyword, line.args[0])
    user = found.get("user") or getpass.getuser()
    return f"{user}@{found.get('hostname', hop)}:{found.get('port', '22')}"


def _matches(alias: str, patterns: tuple[str, ...]) -> bool:
    """OpenSSH semantics: some positive pattern matches and no negated one does."""
    positive = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if fnmatch.fnmatchcase(alias, pattern[1:]):
                return False
        elif fnmatch.fnmatchcase(alias, pattern):
            positive = True
    return positive


def _tokens(
    line: _Line,
    value: str,
    *,
    alias: str,
    hostname: str | None = None,
    user: str | None = None,
    warnings: list[str],
) -> str:
    """Expand the ``%`` tokens and ``~`` ModelDeck can know before connecting; warn about the rest."""
    table = {"%": "%", "h": hostname or alias, "n": alias, "d": os.path.expanduser("~"), "u": getpass.getuser()}
    if user is not None or hostname is not None:
        table["r"] = user or getpass.getuser()
    out = []
    i = 0
    while i < len(value):
        if value[i] == "%" and i + 1 < len(value):
            token = value[i + 1]
            if token in table:
                out.append(table[token])
            else:
                warnings.append(f"{line.where}: token %{token} in {line.spelling} is not expanded")
                out.append(value[i : i + 2])
            i += 2
        else:
            out.append(value[i])
            i += 1
    text = "".join(out)
    return os.path.expanduser(text) if text.startswith("~") else text


def _parse(path: Path, *, depth: int, patterns: tuple[str, ...] | None, chain: list[Path]) -> list[_Line]:
    if depth > MAX_INCLUDE_DEPTH or path.resolve() in chain:
        raise ConfigError(f"{_display(path)}: Include loop ({' -> '.join(_display(p) for p in [*chain, path])})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read SSH config {path}: {exc}") from exc
    out: list[_Line] = []
    current = patterns
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, args = _split(stripped, path, lineno)
        key = keyword.lower()
        line = _Line(path, lineno, key, keyword, args, current)
        if key == "host":
            if not args:
                raise ConfigError(f"{_display(path)}:{lineno}: Host without a pattern")
            current = args
            out.append(_Line(path, lineno, key, keyword, args, current))
        elif key == "match":
            current = None  # not evaluated: the block's lines apply to no host, each host is warned
            out.append(line)
        elif key == "include":
            for pattern in args:
                full = Path(pattern).expanduser()
                if not full.is_absolute():
                    full = Path.home() / ".ssh" / full
                for name in sorted(glob.glob(str(full))):
                    out += _parse(Path(name), depth=depth + 1, patterns=current, chain=[*chain, path.resolve()])
        else:
            if not args:
                raise ConfigError(f"{_display(path)}:{lineno}: {keyword} has no value")
            if key == "port" and not (args[0].isdigit() and 1 <= int(args[0]) <= 65535):
                raise ConfigError(f"{_display(path)}:{lineno}: Port {args[0]!r} is not between 1 and 65535")
            out.append(line)
    return out


def _split(line: str, path: Path, lineno: int) -> tuple[str, tuple[str, ...]]:
    """``Keyword value…`` or ``Keyword=value``, with OpenSSH's double-quote rules."""
    head, sep, rest = line.partition("=") if "=" in line.split(None, 1)[0] else ("", "", "")
    if sep:
        keyword, rest = head.strip(), rest
    else:
        parts = line.split(None, 1)
        keyword, rest = parts[0], parts[1] if len(parts) > 1 else ""
        rest = rest.lstrip()
        if rest.startswith("="):
            rest = rest[1:]
    try:
        lexer = shlex.shlex(rest, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        lexer.quotes = '"'
        lexer.escape = ""
        args = tuple(lexer)
    except ValueError as exc:
        raise ConfigError(f"{_display(path)}:{lineno}: {exc}") from exc
    return keyword, args


def _display(path: Path) -> str:
    """``/home/me/.ssh/config`` -> ``~/.ssh/config`` (called for every reported line: plain strings, no pathlib)."""
    text, home = str(path), os.path.expanduser("~").rstrip("/")
    return "~" + text[len(home) :] if home and text.startswith(home + "/") else text
