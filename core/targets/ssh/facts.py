"""What a host is, learned in one SSH round trip before anything is transferred.

:func:`detect_facts` runs one POSIX shell script on the host (``uname -m``, the first
``python3.X``/``python3`` with its version and ``venv`` module, glibc or musl, systemd,
free disk and writability under the deploy root, installed ModelDeck runtimes) and returns
:class:`HostFacts`. :func:`check_compatible` refuses a host the runtime cannot run on --
no Python >= 3.10, no ``venv``, an architecture onnxruntime publishes no wheels for -- with
a :class:`TargetError` naming what is missing, so nothing is ever sent to such a host.
The inventory's ``hosts test`` shows the same facts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modeldeck.core.errors import TargetError

if TYPE_CHECKING:
    from modeldeck.core.targets.runtime_dist import TargetPlatform
    from modeldeck.core.targets.ssh.connection import SshConnection

log = logging.getLogger(__name__)

MIN_PYTHON = (3, 10)
# Architectures onnxruntime publishes Linux wheels for (uname -m spelling).
SUPPORTED_MACHINES = ("x86_64", "aarch64")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
RUNTIME_DIR = "runtime"
INSTALLED_MARKER = "installed.json"

# One script, one round trip. ``$1`` is the deploy root (``~`` already expanded by the shell below).
# Each fact is printed as ``key=value``; anything unknown stays empty.
_SCRIPT = r"""
root="$1"
case "$root" in "~") root="$HOME" ;; "~/"*) root="$HOME/${root#\~/}" ;; esac
echo "home=$HOME"
echo "deploy_root=$root"
echo "machine=$(uname -m 2>/dev/null)"
echo "kernel=$(uname -sr 2>/dev/null)"
first=""
out=""
for c in python3.13 python3.12 python3.11 python3.10 python3; do
  p=$(command -v "$c" 2>/dev/null) || continue
  # One interpreter start per candidate (shims such as pyenv's cost ~0.3 s each): it reports its real path.
  out=$("$p" - 2>/dev/null <<'PY'
import importlib.util, os, sys
print("python=" + os.path.realpath(sys.executable))
print("python_version=%d.%d.%d" % sys.version_info[:3])
found = all(importlib.util.find_spec(m) is not None for m in ("venv", "ensurepip"))
print("venv=" + ("yes" if found else "no"))
try:
    print("libc=" + os.confstr("CS_GNU_LIBC_VERSION").split()[0])
except (ValueError, OSError, AttributeError, IndexError):
    pass
print("python_ok=" + ("yes" if sys.version_info >= (3, 10) else "no"))
PY
)
  [ -n "$out" ] || continue
  [ -z "$first" ] && first="$out"
  case "$out" in *"python_ok=yes"*) first="$out"; break ;; esac
done
[ -n "$first" ] && echo "$first"
if ldd --version 2>&1 | grep -qi musl; then echo "musl=yes"; fi
if [ -d /run/systemd/system ]; then echo "systemd=system"; fi
if [ -n "$XDG_RUNTIME_DIR" ] && [ -S "$XDG_RUNTIME_DIR/systemd/private" ]; then echo "systemd_user=yes"; fi
probe="$root"
while [ ! -d "$probe" ] && [ "$probe" != "/" ] && [ -n "$probe" ]; do probe=$(dirname "$probe"); done
echo "existing_parent=$probe"
echo "free_kib=$(df -Pk "$probe" 2>/dev/null | awk 'NR==2 {print $4}')"
if [ -d "$root" ]; then [ -w "$root" ] && echo "writable=yes" || echo "writable=no";
else [ -w "$probe" ] && echo "writable=yes" || echo "writable=no"; fi
for m in "$root"/runtime/*/installed.json; do [ -f "$m" ] && echo "runtime=$(basename "$(dirname "$m")")"; done
shift
for sha in "$@"; do [ -f "$root/objects/$sha" ] || echo "missing=$sha"; done
exit 0
"""


@dataclass(frozen=True)
class HostFacts:
    """One host as detected (``None``/empty where the host would not say)."""

    host: str
    machine: str
    kernel: str
    home: str
    deploy_root: str  # absolute, ``~`` expanded
    python: str | None  # absolute path of the chosen interpreter
    python_version: str | None  # "3.11.2"
    has_venv: bool
    libc: str  # "glibc", "musl" or ""
    systemd: str | None  # "system", "user" or None
    free_bytes: int | None  # under the deploy root (or its nearest existing parent)
    deploy_root_writable: bool
    runtime_versions: tuple[str, ...]  # complete runtime installs under DEPLOY_ROOT/runtime
    missing_objects: tuple[str, ...] = ()  # of the sha256s asked about, those not in DEPLOY_ROOT/objects

    @property
    def python_tuple(self) -> tuple[int, ...] | None:
        if not self.python_version:
            return None
        try:
            return tuple(int(x) for x in self.python_version.split("."))
        except ValueError:
            return None

    def platform(self) -> TargetPlatform:
        """The :class:`TargetPlatform` a wheelhouse for this host must match."""
        from modeldeck.core.targets.runtime_dist import TargetPlatform

        version = self.python_tuple or (0, 0)
        return TargetPlatform(f"{version[0]}.{version[1]}", self.machine, self.libc or "glibc")

    def problems(self) -> list[str]:
        """Why the runtime cannot run here (empty when it can)."""
        found = []
        if not self.python:
            found.append("no python3 on the PATH")
        elif (self.python_tuple or (0,)) < MIN_PYTHON:
            found.append(
                f"{self.python} is Python {self.python_version or '?'}; the runtime needs "
                f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer"
            )
        elif not self.has_venv:
            found.append(f"{self.python} has no venv/ensurepip module")
        if self.machine not in SUPPORTED_MACHINES:
            found.append(
                f"architecture {self.machine or '?'} has no onnxruntime wheels "
                f"(supported: {', '.join(SUPPORTED_MACHINES)})"
            )
        if not self.deploy_root_writable:
            found.append(f"{self.deploy_root} is not writable for this user")
        return found


def parse_facts(host: str, text: str) -> HostFacts:
    """Build :class:`HostFacts` from the script's ``key=value`` lines (unknown keys ignored)."""
    values: dict[str, str] = {}
    runtimes: list[str] = []
    missing: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "runtime":
            runtimes.append(value.strip())
        elif key == "missing":
            missing.append(value.strip())
        else:
            values[key] = value.strip()
    libc = "musl" if values.get("musl") == "yes" else values.get("libc", "")
    if libc not in ("glibc", "musl"):
        libc = "glibc" if libc.lower().startswith("glibc") else libc
    systemd = "system" if values.get("systemd") == "system" else ("user" if values.get("systemd_user") else None)
    free = values.get("free_kib", "")
    return HostFacts(
        host=host,
        machine=values.get("machine", ""),
        kernel=values.get("kernel", ""),
        home=values.get("home", ""),
        deploy_root=values.get("deploy_root", ""),
        python=values.get("python") or None,
        python_version=values.get("python_version") or None,
        has_venv=values.get("venv") == "yes",
        libc=libc,
        systemd=systemd,
        free_bytes=int(free) * 1024 if free.isdigit() else None,
        deploy_root_writable=values.get("writable") == "yes",
        runtime_versions=tuple(sorted(runtimes)),
        missing_objects=tuple(sorted(set(missing))),
    )


def detect_facts(
    conn: SshConnection, deploy_root: str = "~/modeldeck", *, timeout: float = 30.0, objects: Sequence[str] = ()
) -> HostFacts:
    """Detect a host's facts in one round trip; raises :class:`HostUnreachable`/:class:`TargetError` on failure.

    ``deploy_root`` may start with ``~`` (the login user's home on the host). ``objects`` (sha256s) are
    checked against the host's object store in the same round trip (``missing_objects``): every remote
    command pays for the login shell's start-up files, so a no-change redeploy saves one.
    """
    from modeldeck.core.targets.ssh.connection import quote

    shas = [o for o in objects if _SHA256.match(o)]
    args = " ".join(quote(a) for a in [deploy_root, *shas])
    result = conn.run(f"sh -s -- {args}", stdin=_SCRIPT.encode(), timeout=timeout)
    if not result.ok:
        raise TargetError(
            f"{conn.endpoint.label}: cannot inspect the host (exit {result.exit_status})",
            hint=result.stderr.strip()[-300:] or "the host needs a POSIX sh",
        )
    facts = parse_facts(conn.endpoint.host, result.stdout)
    log.info("facts of %s: %s", conn.endpoint.label, facts)
    return facts


def check_compatible(facts: HostFacts, label: str | None = None) -> None:
    """Raise :class:`TargetError` listing every reason the runtime cannot run on this host."""
    problems = facts.problems()
    if problems:
        raise TargetError(
            f"{label or facts.host}: cannot run the ModelDeck runtime: {'; '.join(problems)}",
            hint="install Python 3.10+ with its venv module (e.g. apt install python3-venv) on an x86_64/aarch64 "
            "host, or choose another host",
        )
