"""Import hosts from an Ansible inventory file (INI or YAML).

Groups, ``:children`` nesting and ``:vars`` are applied as Ansible does (``all`` vars, then
parent groups before child groups, then host vars); each host gets every group it belongs to
directly or through a parent (``all``/``ungrouped`` aside). Connection variables map onto the
inventory (``ansible_host``, ``ansible_port``, ``ansible_user``, ``ansible_ssh_private_key_file``);
other ``ansible_*`` variables that change how SSH connects (``ansible_ssh_common_args``,
``ansible_password``…) are reported per host, never silently dropped. Plain scalar variables
become labels, so ``gpu=a100`` in an inventory selects hosts as ``--hosts gpu=a100``.

Errors (a malformed line, a bad port, YAML syntax) raise ConfigError naming file and line;
nothing is imported from a file with an error.
"""

from __future__ import annotations

import logging
import re
import shlex
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeck.core.errors import ConfigError
from modeldeck.core.inventory.hosts import Host, validate_name

log = logging.getLogger(__name__)

HOST_VARS = {
    "ansible_host": "hostname",
    "ansible_ssh_host": "hostname",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity_files",
    "ansible_private_key_file": "identity_files",
}
# Variables that only matter to Ansible itself (not to how an SSH connection is made): no warning.
ANSIBLE_ONLY = {"ansible_python_interpreter", "ansible_connection_timeout"}
_WHY = {
    "ansible_password": "passwords are not imported; store one with: modeldeck hosts set-password NAME",
    "ansible_ssh_pass": "passwords are not imported; store one with: modeldeck hosts set-password NAME",
    "ansible_ssh_common_args": "extra ssh arguments are not applied (a ProxyJump there must be set with --proxy-jump)",
    "ansible_ssh_extra_args": "extra ssh arguments are not applied",
    "ansible_become": "privilege escalation is not used; the deploy root must be writable by the user",
    "ansible_connection": "ModelDeck connects over SSH only",
}
# Variables never copied into labels (the inventory file is plain text).
_SECRET = re.compile(r"pass|secret|token|credential|private|api_?key", re.IGNORECASE)
_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")


@dataclass(frozen=True)
class _Value:
    value: Any
    where: str  # "FILE:LINE"


@dataclass
class _Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, _Value] = field(default_factory=dict)


@dataclass
class AnsibleImport:
    path: Path
    hosts: list[Host] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Parsed:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.host_vars: dict[str, dict[str, _Value]] = {}
        self.host_order: list[str] = []

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(name, _Group(name))

    def add_host(self, group: str, name: str, variables: dict[str, _Value]) -> None:
        if name not in self.host_vars:
            self.host_vars[name] = {}
            self.host_order.append(name)
        self.host_vars[name].update(variables)
        members = self.group(group).hosts
        if name not in members:
            members.append(name)


def import_ansible(path: Path) -> AnsibleImport:
    """Read an Ansible INI or YAML inventory (chosen by suffix, else by content)."""
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read Ansible inventory {path}: {exc}") from exc
    if path.suffix in (".yml", ".yaml") or (path.suffix != ".ini" and _looks_like_yaml(text)):
        parsed = _parse_yaml(path, text)
    else:
        parsed = _parse_ini(path, text)
    return _build(parsed)


def _looks_like_yaml(text: str) -> bool:
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(("#", ";")):
            continue
        return s == "---" or (s.endswith(":") and not s.startswith("["))
    return False


# -- INI ----------------------------------------------------------------------------------------------


def _parse_ini(path: Path, text: str) -> _Parsed:
    parsed = _Parsed(path)
    section, kind = "ungrouped", "hosts"
    for lineno, raw in enumerate(text.splitlines(), start=1):
        where = f"{path}:{lineno}"
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ConfigError(f"{where}: section header {line!r} has no closing ]")
            name, _, suffix = line[1:-1].strip().partition(":")
            if suffix not in ("", "vars", "children"):
                raise ConfigError(f"{where}: unknown section kind :{suffix} (expected :vars or :children)")
            _group_name(name, where)
            section, kind = name, suffix or "hosts"
            parsed.group(section)
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if not tokens:
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"{where}: expected key=value in [{section}:vars], got {line!r}")
            parsed.group(section).vars[key.strip()] = _Value(_ini_value(value.strip()), where)
        elif kind == "children":
            if len(tokens) != 1:
                raise ConfigError(f"{where}: one group name per line in [{section}:children]")
            child = _group_name(tokens[0], where)
            if child == section:
                raise ConfigError(f"{where}: group {section} cannot be its own child")
            parsed.group(child)
            if child not in parsed.groups[section].children:
                parsed.groups[section].children.append(child)
        else:
            pattern, *assignments = tokens
            variables: dict[str, _Value] = {}
            for item in assignments:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise ConfigError(f"{where}: expected key=value after the host name, got {item!r}")
                variables[key] = _Value(_ini_value(value), where)
            name, port = _split_host_port(pattern, where)
            if port is not None:
                variables.setdefault("ansible_port", _Value(port, where))
            for host in _expand(name, where):
                parsed.add_host(section, host, variables)
    return parsed


def _ini_value(text: str) -> Any:
    """Ansible reads INI values as Python literals when they are ones (numbers, quoted strings)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _split_host_port(pattern: str, where: str) -> tuple[str, int | None]:
    if pattern.count(":") == 1 and "[" not in pattern:
        name, port = pattern.split(":")
        if not port.isdigit():
            raise ConfigError(f"{where}: bad port in {pattern!r}")
        return name, int(port)
    return pattern, None


def _expand(pattern: str, where: str) -> list[str]:
    """Ansible host ranges: ``web[01:03]`` -> web01 web02 web03; ``db-[a:c]``; ``[0:10:2]``."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    start, end, step_text = match.group(1), match.group(2), match.group(3)
    step = int(step_text or 1)
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start in string.ascii_letters and end in string.ascii_letters:
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise ConfigError(f"{where}: bad host range {match.group(0)!r}")
    if not values:
        raise ConfigError(f"{where}: host range {match.group(0)!r} is empty")
    return [name for v in values for name in _expand(head + v + tail, where)]


def _group_name(name: str, where: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*", name):
        raise ConfigError(f"{where}: bad group name {name!r}")
    return name


# -- YAML ---------------------------------------------------------------------------------------------


def _parse_yaml(path: Path, text: str) -> _Parsed:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc.problem or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    parsed = _Parsed(path)
    if root is None:
        return parsed
    for key, node in _mapping(root, path, "the top level"):
        _yaml_group(parsed, _scalar(key, path), node, path, trail=[])
    return parsed


def _where(node: Any, path: Path) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(node: Any, path: Path, what: str) -> list[tuple[Any, Any]]:
    import yaml

    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(node, path)}: {what} must be a mapping")
    return list(node.value)


def _scalar(node: Any, path: Path) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"{_where(node, path)}: expected a name")
    return str(node.value)


@dataclass(frozen=True)
class _Opaque:
    """A value ModelDeck will not read (an ``!vault`` secret or another custom tag)."""

    tag: str


def _plain(node: Any) -> Any:
    import yaml

    if any(n.tag.startswith("!") for n in _walk(node)):
        return _Opaque(next(n.tag for n in _walk(node) if n.tag.startswith("!")))
    return yaml.SafeLoader(yaml.serialize(node)).get_single_data()


def _walk(node: Any) -> Iterator[Any]:
    import yaml

    yield node
    if isinstance(node, yaml.SequenceNode):
        for child in node.value:
            yield from _walk(child)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _walk(key)
            yield from _walk(value)


def _yaml_group(parsed: _Parsed, name: str, node: Any, path: Path, trail: list[str]) -> None:
    where = _where(node, path)
    _group_name(name, where)
    if name in trail:
        raise ConfigError(f"{where}: group {name} is its own ancestor")
    group = parsed.group(name)
    for key_node, value in _mapping(node, path, f"group {name}"):
        key = _scalar(key_node, path)
        if key == "hosts":
            for host_node, host_vars in _mapping(value, path, f"{name}.hosts"):
                host_where = _where(host_node, path)
                raw_name = _scalar(host_node, path)
                host_name, port = _split_host_port(raw_name, host_where)
                variables = {
                    _scalar(k, path): _Value(_plain(v), _where(k, path))
                    for k, v in _mapping(host_vars, path, f"host {raw_name}")
                }
                if port is not None:
                    variables.setdefault("ansible_port", _Value(port, host_where))
                for host in _expand(host_name, host_where):
                    parsed.add_host(name, host, variables)
        elif key == "vars":
            for k, v in _mapping(value, path, f"{name}.vars"):
                group.vars[_scalar(k, path)] = _Value(_plain(v), _where(k, path))
        elif key == "children":
            for child_node, child in _mapping(value, path, f"{name}.children"):
                child_name = _scalar(child_node, path)
                if child_name == name:
                    raise ConfigError(f"{_where(child_node, path)}: group {name} cannot be its own child")
                if child_name not in group.children:
                    group.children.append(child_name)
                _yaml_group(parsed, child_name, child, path, [*trail, name])
        else:
            raise ConfigError(
                f"{_where(key_node, path)}: unexpected key {key!r} in group {name} (expected hosts, vars, children)"
            )


# -- hosts out ----------------------------------------------------------------------------------------


def _build(parsed: _Parsed) -> AnsibleImport:
    result = AnsibleImport(parsed.path)
    groups = parsed.groups
    for group in groups.values():
        for child in group.children:
            if child not in groups:
                groups[child] = _Group(child)
    parents: dict[str, set[str]] = {name: set() for name in groups}
    for group in groups.values():
        for child in group.children:
            parents[child].add(group.name)

    def ancestors(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        if name in seen:
            raise ConfigError(f"{parsed.path}: group {name} is its own ancestor (a :children loop)")
        out: set[str] = set()
        for parent in parents[name]:
            out |= {parent} | ancestors(parent, seen | {name})
        return out

    depth = {name: len(ancestors(name)) for name in groups}
    direct: dict[str, set[str]] = {h: set() for h in parsed.host_order}
    for group in groups.values():
        for host in group.hosts:
            direct[host].add(group.name)
    if not parsed.host_order:
        result.warnings.append(f"{parsed.path}: no hosts in this inventory")
    for name in parsed.host_order:
        member_of = set(direct[name])
        for g in list(member_of):
            member_of |= ancestors(g)
        member_of.add("all")
        variables: dict[str, _Value] = {}
        for g in sorted(member_of, key=lambda g: (0 if g == "all" else depth[g] + 1, g)):
            variables.update(groups[g].vars)
        variables.update(parsed.host_vars[name])
        result.hosts.append(_host(parsed.path, name, variables, member_of - {"all", "ungrouped"}))
    return result


def _host(path: Path, name: str, variables: dict[str, _Value], groups: set[str]) -> Host:
    where_host = next(iter(variables.values())).where if variables else str(path)
    try:
        validate_name(name, "host")
    except ConfigError as exc:
        raise ConfigError(f"{where_host}: {exc.message}") from exc
    fields: dict[str, Any] = {}
    origins: dict[str, str] = {}
    labels: dict[str, str] = {}
    warnings: list[str] = []
    for key, item in sorted(variables.items()):
        target = HOST_VARS.get(key)
        if target is not None:
            if target == "port":
                if not (isinstance(item.value, int) or str(item.value).isdigit()) or not 1 <= int(item.value) <= 65535:
                    raise ConfigError(f"{item.where}: {key} {item.value!r} is not a port between 1 and 65535")
                fields["port"] = int(item.value)
            elif target == "identity_files":
                fields["identity_files"] = (str(Path(str(item.value)).expanduser()),)
            else:
                fields[target] = str(item.value)
            origins[target] = item.where
        elif isinstance(item.value, _Opaque):
            warnings.append(
                f"{item.where}: {key} ({item.value.tag}) not imported: encrypted or custom values are skipped"
            )
        elif _SECRET.search(key) and not key.startswith("ansible_"):
            warnings.append(f"{item.where}: {key} looks like a secret; not imported (labels are stored in plain text)")
        elif key.startswith("ansible_"):
            if key in ANSIBLE_ONLY:
                continue
            if key == "ansible_connection" and item.value in ("ssh", "paramiko", "smart"):
                continue
            why = _WHY.get(key) or _WHY.get(key.rsplit("_", 1)[0]) or "not supported by ModelDeck"
            shown = "***" if "pass" in key else repr(item.value)
            warnings.append(f"{item.where}: {key}={shown} ignored: {why}")
        elif isinstance(item.value, (str, int, float, bool)):
            labels[key] = str(item.value).lower() if isinstance(item.value, bool) else str(item.value)
        else:
            warnings.append(f"{item.where}: variable {key} is not a plain value; not kept as a label")
    return Host(
        name=name,
        hostname=fields.get("hostname", name),
        port=fields.get("port"),
        user=fields.get("user"),
        identity_files=fields.get("identity_files", ()),
        groups=tuple(sorted(groups)),
        labels=labels,
        source=f"ansible:{path}",
        origins=origins,
        warnings=tuple(warnings),
    )
