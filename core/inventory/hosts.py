"""The SSH host inventory: named hosts, groups and labels, stored by ModelDeck as TOML.

The inventory lives in ``<config dir>/inventory.toml``. Writes are atomic (temp file +
rename) and the previous version is kept as ``inventory.toml.bak``; a file that does not
parse is never overwritten -- every change is refused with the file's line and column
until the user fixes it (or restores the backup), so a typo cannot lose hosts.

Hosts imported from ``~/.ssh/config`` or an Ansible inventory keep where each value came
from (``origins``) and what could not be imported (``warnings``), so ``hosts show`` can
say why a host connects the way it does. Passwords are never stored here: see
:mod:`modeldeck.core.inventory.secrets`.
"""

from __future__ import annotations

import getpass
import logging
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modeldeck.core.errors import ConfigError
from modeldeck.core.fileio import atomic_write_text
from modeldeck.core.targets.ssh.connection import SshEndpoint

log = logging.getLogger(__name__)

INVENTORY_FILE = "inventory.toml"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]*$")
RESERVED = frozenset({"all"})
FIELDS = ("hostname", "port", "user", "identity_files", "proxy_jump", "deploy_root")


@dataclass(frozen=True)
class Host:
    """One named SSH host as the user (or an import) described it.

    Unset values (``None``/empty) fall back to defaults at :func:`resolve` time: port 22, the
    local user name, ssh-agent and ``~/.ssh/id_*`` keys. ``proxy_jump`` is another inventory
    host's name or ``[user@]host[:port]``, comma-separated for a chain (as OpenSSH's ProxyJump).
    """

    name: str
    hostname: str
    port: int | None = None
    user: str | None = None
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    deploy_root: str | None = None
    groups: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str = "manual"
    origins: Mapping[str, str] = field(default_factory=dict)  # field -> "~/.ssh/config:12" etc.
    warnings: tuple[str, ...] = ()  # what an import could not carry over (never silently dropped)

    @property
    def address(self) -> str:
        return self.hostname if self.port in (None, 22) else f"{self.hostname}:{self.port}"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (forms and files are checked alike)."""
        validate_name(self.name, "host")
        if not self.hostname or not self.hostname.strip() or any(c.isspace() for c in self.hostname):
            raise ConfigError(f"host {self.name!r}: the address (hostname) must be a non-empty name or IP")
        if self.port is not None and (isinstance(self.port, bool) or not 1 <= int(self.port) <= 65535):
            raise ConfigError(f"host {self.name!r}: port {self.port} is not between 1 and 65535")
        if self.user is not None and (not self.user or any(c.isspace() or c == "@" for c in self.user)):
            raise ConfigError(f"host {self.name!r}: user {self.user!r} is not a valid user name")
        for group in self.groups:
            validate_name(group, "group")
        for key in self.labels:
            if not _LABEL_KEY.match(key):
                raise ConfigError(f"host {self.name!r}: label key {key!r} may use letters, digits and _ . - / only")
        if self.proxy_jump is not None:
            for hop in split_list(self.proxy_jump):
                if hop == self.name:
                    raise ConfigError(f"host {self.name!r}: it cannot be its own proxy jump")
                parse_jump_spec(hop)
        if self.deploy_root is not None and not self.deploy_root.startswith(("/", "~")):
            raise ConfigError(f"host {self.name!r}: deploy root {self.deploy_root!r} must be an absolute path")


def validate_name(name: str, what: str) -> None:
    if not _NAME.match(name or ""):
        raise ConfigError(f"{what} name {name!r} may use letters, digits and _ . - only (and not start with . or -)")
    if name in RESERVED:
        raise ConfigError(f"{what} name {name!r} is reserved (it selects every host)")


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@dataclass(frozen=True)
class JumpSpec:
    """A proxy-jump hop written out as ``[user@]host[:port]``."""

    host: str
    user: str | None = None
    port: int | None = None


def parse_jump_spec(text: str) -> JumpSpec:
    """``user@host:port`` / ``host`` / ``[v6addr]:port`` -> :class:`JumpSpec`; ConfigError when malformed."""
    spec = text.strip()
    if spec.startswith("ssh://"):
        spec = spec[len("ssh://") :].rstrip("/")
    user = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
        if not user:
            raise ConfigError(f"proxy jump {text!r}: empty user name")
    port: int | None = None
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
        port = _port(port_text, text)
    else:
        host = spec
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"proxy jump {text!r}: no host name")
    return JumpSpec(host, user, port)


def _port(text: str, context: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"{context!r}: port {text!r} is not between 1 and 65535")
    return int(text)


# -- the stored inventory ---------------------------------------------------------------------------


def inventory_path(config_dir: Path) -> Path:
    return config_dir / INVENTORY_FILE


class Inventory:
    """The hosts of one ModelDeck configuration. Every change is validated, then written at once.

    The file is re-read before each change, so the CLI and the GUI editing the same inventory
    see each other's hosts (last writer wins per change, never a half-written file).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._hosts: dict[str, Host] = {}
        self.reload()

    @classmethod
    def for_config_dir(cls, config_dir: Path) -> Inventory:
        return cls(inventory_path(config_dir))

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    # -- reading ---------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the file again. Raises :class:`ConfigError` with line and column for a broken file."""
        self._hosts = _load(self.path, self.backup_path)

    @property
    def hosts(self) -> list[Host]:
        return [self._hosts[name] for name in sorted(self._hosts)]

    def get(self, name: str) -> Host:
        try:
            return self._hosts[name]
        except KeyError:
            raise ConfigError(
                f"no host named {name!r} in the inventory",
                hint="list hosts with: modeldeck hosts list" if self._hosts else "add one with: modeldeck hosts add",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._hosts

    def groups(self) -> dict[str, list[str]]:
        """Group name -> sorted host names (groups exist as long as a host is in them)."""
        out: dict[str, list[str]] = {}
        for host in self.hosts:
            for group in host.groups:
                out.setdefault(group, []).append(host.name)
        return dict(sorted(out.items()))

    def select(self, expr: str) -> list[Host]:
        """Hosts named by ``expr``: comma-separated host names, groups, ``label=value``, ``all``;
        a ``!`` prefix removes what the term selects. Raises ConfigError for a term that selects nothing.
        """
        terms = split_list(expr)
        if not terms:
            raise ConfigError("empty host selection", hint="name hosts, groups, label=value or all")
        groups = self.groups()
        chosen: dict[str, Host] = {}
        excluded: set[str] = set()
        for term in terms:
            negate = term.startswith("!")
            names = self._term(term[1:].strip() if negate else term, groups)
            if negate:
                excluded.update(names)
            else:
                for name in names:
                    chosen.setdefault(name, self._hosts[name])
        result = [h for name, h in chosen.items() if name not in excluded]
        if not result:
            raise ConfigError(f"{expr!r} selects no host")
        return result

    def _term(self, term: str, groups: dict[str, list[str]]) -> list[str]:
        if term == "all":
            if not self._hosts:
                raise ConfigError("the inventory is empty", hint="add hosts with: modeldeck hosts add / import-*")
            return sorted(self._hosts)
        if "=" in term:
            key, _, value = term.partition("=")
            key, value = key.strip(), value.strip()
            names = [h.name for h in self.hosts if h.labels.get(key) == value]
            if not names:
                known = sorted({f"{k}={v}" for h in self.hosts for k, v in h.labels.items()})
                raise ConfigError(
                    f"no host has the label {key}={value}", hint=f"labels: {', '.join(known)}" if known else None
                )
            return names
        names = list(groups.get(term, []))
        if term in self._hosts and term not in names:
            names.insert(0, term)
        if not names:
            hint = []
            if groups:
                hint.append(f"groups: {', '.join(groups)}")
            if self._hosts:
                hint.append(f"hosts: {', '.join(_first(sorted(self._hosts), 10))}")
            raise ConfigError(f"unknown host or group {term!r}", hint="; ".join(hint) or "the inventory is empty")
        return names

    # -- changing --------------------------------------------------------------------------------
    def add(self, host: Host, *, replace_existing: bool = False) -> Host:
        """Add ``host`` (or replace the one with its name when ``replace_existing``)."""
        return self.add_many([host], replace_existing=replace_existing)[0]

    def add_many(self, hosts: Iterable[Host], *, replace_existing: bool = False) -> list[Host]:
        """Add several hosts at once: all are validated first, then one write -- never half of them."""
        self.reload()
        new = list(hosts)
        merged = dict(self._hosts)
        seen: set[str] = set()
        for host in new:
            host.validate()
            if host.name in seen:
                raise ConfigError(f"host {host.name!r} appears twice")
            seen.add(host.name)
            if host.name in merged and not replace_existing:
                raise ConfigError(
                    f"a host named {host.name!r} already exists",
                    hint="remove it first, or replace it (hosts add --replace / import --replace)",
                )
            merged[host.name] = host
        _check_jumps(merged)
        self._write(merged)
        return new

    def update(self, name: str, /, **changes: Any) -> Host:
        """Change some fields of a host (``groups``/``labels`` are replaced as a whole; ``name=`` renames it)."""
        self.reload()
        host = replace(self.get(name), **changes)
        host.validate()
        merged = dict(self._hosts)
        if host.name != name:
            if host.name in merged:
                raise ConfigError(f"a host named {host.name!r} already exists")
            del merged[name]
        merged[host.name] = host
        _check_jumps(merged)
        self._write(merged)
        return host

    def remove(self, name: str) -> Host:
        """Remove a host; refused while another host jumps through it."""
        self.reload()
        host = self.get(name)
        users = [h.name for h in self.hosts if h.proxy_jump and name in split_list(h.proxy_jump)]
        if users:
            raise ConfigError(f"{', '.join(users)} jump through {name!r}", hint="change their proxy jump first")
        merged = {k: v for k, v in self._hosts.items() if k != name}
        self._write(merged)
        return host

    def _write(self, hosts: dict[str, Host]) -> None:
        text = dumps(hosts.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            # Keep the last good version (the file parsed: reload() ran before every change).
            atomic_write_text(self.backup_path, self.path.read_text(encoding="utf-8"))
        atomic_write_text(self.path, text)
        self._hosts = dict(hosts)
        log.info("inventory %s: %d hosts", self.path, len(hosts))


def _check_jumps(hosts: dict[str, Host]) -> None:
    """Every bare-name hop must be an inventory host; no jump cycles."""
    for host in hosts.values():
        _jump_chain(host, hosts, [])


def _jump_chain(host: Host, hosts: Mapping[str, Host], trail: list[str]) -> None:
    if host.name in trail:
        raise ConfigError(f"proxy jump loop: {' -> '.join([*trail, host.name])}")
    for hop in split_list(host.proxy_jump or ""):
        if hop in hosts:
            _jump_chain(hosts[hop], hosts, [*trail, host.name])
        elif not _looks_like_address(hop):
            raise ConfigError(
                f"host {host.name!r}: proxy jump {hop!r} is not a host in the inventory",
                hint="add it first, or write the hop as user@host:port",
            )


def _looks_like_address(hop: str) -> bool:
    """A hop that is not an inventory name must be written so that it cannot be a typo of one."""
    return any(c in hop for c in "@:.[")


def _first(items: list[str], n: int) -> list[str]:
    return items if len(items) <= n else [*items[:n], "…"]


# -- TOML (de)serialisation -------------------------------------------------------------------------


def dumps(hosts: Iterable[Host]) -> str:
    import tomli_w

    doc: dict[str, Any] = {}
    for host in sorted(hosts, key=lambda h: h.name):
        entry: dict[str, Any] = {"hostname": host.hostname}
        if host.port is not None:
            entry["port"] = int(host.port)
        for key in ("user", "proxy_jump", "deploy_root"):
            if getattr(host, key) is not None:
                entry[key] = getattr(host, key)
        if host.identity_files:
            entry["identity_files"] = list(host.identity_files)
        if host.groups:
            entry["groups"] = list(host.groups)
        if host.labels:
            entry["labels"] = dict(host.labels)
        entry["source"] = host.source
        if host.warnings:
            entry["warnings"] = list(host.warnings)
        if host.origins:
            entry["origins"] = dict(host.origins)
        doc[host.name] = entry
    header = "# ModelDeck SSH inventory (edit with `modeldeck hosts`; passwords live in the OS keyring only)\n"
    return header + tomli_w.dumps({"hosts": doc})


def _load(path: Path, backup: Path) -> dict[str, Host]:
    if not path.is_file():
        return {}
    hint = f"fix the file, or restore the last good version from {backup}" if backup.is_file() else "fix the file"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's message ends "(at line L, column C)"; keep it verbatim.
        raise ConfigError(f"inventory {path} is not valid TOML: {exc}", hint=hint) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read inventory {path}: {exc}", hint=hint) from exc
    raw = data.get("hosts", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"inventory {path}: [hosts] must be a table", hint=hint)
    hosts: dict[str, Host] = {}
    for name, entry in raw.items():
        try:
            hosts[name] = host_from_dict(name, entry)
        except ConfigError as exc:
            raise ConfigError(f"inventory {path}: {exc.message}", hint=hint) from exc
    try:
        _check_jumps(hosts)
    except ConfigError as exc:
        raise ConfigError(f"inventory {path}: {exc.message}", hint=hint) from exc
    return hosts


def host_from_dict(name: str, entry: Any) -> Host:
    if not isinstance(entry, dict):
        raise ConfigError(f"host {name!r} must be a table")
    unknown = set(entry) - {*FIELDS, "groups", "labels", "source", "origins", "warnings"}
    if unknown:
        raise ConfigError(f"host {name!r}: unknown keys {', '.join(sorted(unknown))}")

    def opt_str(key: str) -> str | None:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"host {name!r}: {key} must be a string")
        return value

    def str_list(key: str) -> tuple[str, ...]:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"host {name!r}: {key} must be a list of strings")
        return tuple(value)

    def str_table(key: str) -> dict[str, str]:
        value = entry.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"host {name!r}: {key} must be a table of strings")
        return dict(value)

    port = entry.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool)):
        raise ConfigError(f"host {name!r}: port must be an integer")
    host = Host(
        name=name,
        hostname=opt_str("hostname") or "",
        port=port,
        user=opt_str("user"),
        identity_files=str_list("identity_files"),
        proxy_jump=opt_str("proxy_jump"),
        deploy_root=opt_str("deploy_root"),
        groups=str_list("groups"),
        labels=str_table("labels"),
        source=opt_str("source") or "manual",
        origins=str_table("origins"),
        warnings=str_list("warnings"),
    )
    host.validate()
    return host


# -- effective settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from (``inventory``, ``~/.ssh/config:12``, ``default``…)."""

    value: Any
    source: str

    def text(self) -> str:
        if isinstance(self.value, bool):
            return "stored" if self.value else "-"
        if self.value is None or self.value == ():
            return "-"
        if isinstance(self.value, tuple):
            return ", ".join(str(v) for v in self.value)
        return str(self.value)


@dataclass(frozen=True)
class ResolvedHost:
    """What ModelDeck will actually use to connect to a host, value by value, with the origin of each."""

    host: Host
    hostname: Setting
    port: Setting
    user: Setting
    identity_files: Setting
    proxy_jump: Setting
    password: Setting  # value is True/False (is there one in the keyring), never the secret
    jumps: tuple[ResolvedHost | JumpSpec, ...]
    endpoint: SshEndpoint
    notes: tuple[str, ...] = ()  # problems visible without connecting (a missing identity file)

    def settings(self) -> list[tuple[str, Setting]]:
        """(OpenSSH directive name, setting) rows as ``hosts show`` prints them."""
        return [
            ("HostName", self.hostname),
            ("Port", self.port),
            ("User", self.user),
            ("IdentityFile", self.identity_files),
            ("ProxyJump", self.proxy_jump),
            ("Password", self.password),
        ]

    def host_of(self, key_host: str) -> str | None:
        """Which inventory host (this one or a jump host) a host-key error is about, or None.

        ``key_host`` is what :class:`UnknownHostKey`/:class:`HostKeyChanged` carry: the known-hosts
        name (``[host]:port``) or the endpoint label (``user@host:port``). A refused jump host must be
        trusted under its own name, not the target's.
        """
        from modeldeck.core.inventory.known_hosts import host_key_name

        ep = self.endpoint
        if key_host in (host_key_name(ep.host, ep.port), ep.label):
            return self.host.name
        for hop in self.jumps:
            if isinstance(hop, ResolvedHost):
                found = hop.host_of(key_host)
                if found is not None:
                    return found
        return None


PasswordLookup = Callable[[str], "str | None"]


def resolve(
    inventory: Inventory,
    name: str,
    *,
    password_lookup: PasswordLookup | None = None,
    connect_timeout_s: float = 10.0,
) -> ResolvedHost:
    """The effective connection settings of host ``name``, and the :class:`SshEndpoint` chain to reach it.

    ``password_lookup(host_name) -> str | None`` supplies a keyring password (default: the OS keyring,
    treating "no keyring backend" as "no password"). Raises ConfigError for an unknown host or a jump loop.
    """
    if password_lookup is None:
        from modeldeck.core.inventory.secrets import password_if_any

        password_lookup = password_if_any
    return _resolve(inventory, inventory.get(name), password_lookup, connect_timeout_s, [])


def _resolve(
    inventory: Inventory, host: Host, lookup: PasswordLookup, timeout: float, trail: list[str]
) -> ResolvedHost:
    if host.name in trail:
        raise ConfigError(f"proxy jump loop: {' -> '.join([*trail, host.name])}")

    def origin(key: str) -> str:
        return host.origins.get(key) or ("inventory" if host.source == "manual" else host.source)

    hostname = Setting(host.hostname, origin("hostname"))
    port = Setting(host.port, origin("port")) if host.port is not None else Setting(22, "default")
    user = Setting(host.user, origin("user")) if host.user else Setting(getpass.getuser(), "default (local user name)")
    identities = tuple(str(Path(p).expanduser()) for p in host.identity_files)
    identity = (
        Setting(identities, origin("identity_files"))
        if identities
        else Setting((), "default (ssh-agent, then ~/.ssh/id_*)")
    )
    secret = lookup(host.name)
    password = Setting(secret is not None, "OS keyring" if secret is not None else "none (keys and ssh-agent only)")

    hops: list[ResolvedHost | JumpSpec] = []
    jump_endpoint: SshEndpoint | None = None
    for hop in split_list(host.proxy_jump or ""):
        if hop in inventory:
            resolved = _resolve(inventory, inventory.get(hop), lookup, timeout, [*trail, host.name])
            hops.append(resolved)
            # The first hop keeps its own jump chain; later hops are reached through the previous one.
            ep = resolved.endpoint if jump_endpoint is None else replace(resolved.endpoint, proxy_jump=jump_endpoint)
        else:
            spec = parse_jump_spec(hop)
            hops.append(spec)
            ep = SshEndpoint(spec.host, spec.port or 22, spec.user, proxy_jump=jump_endpoint, connect_timeout_s=timeout)
        jump_endpoint = ep
    jump = Setting(host.proxy_jump, origin("proxy_jump")) if host.proxy_jump else Setting(None, "none (direct)")
    endpoint = SshEndpoint(
        host=host.hostname,
        port=int(port.value),
        user=str(user.value),
        identity_files=tuple(Path(p) for p in identities),
        proxy_jump=jump_endpoint,
        password=secret,
        connect_timeout_s=timeout,
    )
    notes = tuple(f"identity file {p} does not exist" for p in identities if not Path(p).is_file())
    return ResolvedHost(host, hostname, port, user, identity, jump, password, tuple(hops), endpoint, notes)
