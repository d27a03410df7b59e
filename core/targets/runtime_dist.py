"""What a remote target installs to run bundles: the runtime wheel and its dependencies.

Targets (SSH hosts, container images, edge devices) never get the whole of
ModelDeck -- no MLflow, no Qt. They get ``modeldeck_runtime``, a pure-Python
wheel built here from the runtime package, the error types and the process
supervisor, and ``pip install`` its declared dependencies either from the
host's package index or from a *wheelhouse* ModelDeck downloads for the
target's Python and platform (air-gapped hosts).

The wheel is written directly with :mod:`zipfile` (a wheel is a zip with three
metadata files), so building it takes milliseconds and needs no build backend.
Its version carries a hash of its contents (``0.1.0+g1a2b3c4d``): a host whose
installed runtime has the same version already runs exactly this code.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modeldeck.core.errors import Cancelled, DeployError
from modeldeck.core.runtime import RUNTIME_REQUIREMENTS, RUNTIME_VERSION

log = logging.getLogger(__name__)

DIST_NAME = "modeldeck_runtime"
_CORE = Path(__file__).resolve().parent.parent  # the modeldeck.core package folder

# (path inside the wheel, file on disk) -- exactly what targets need, see test_layout's runtime contract.
_MODULE_FILES = ("__init__.py", "errors.py")
_PACKAGES = ("runtime",)
# The remote agent runs the local target's release logic on SSH hosts, so it ships with its pure imports.
_TARGET_FILES = (
    "__init__.py", "supervisor.py", "reuseport.py", "agent.py", "local.py", "base.py", "health.py", "releases.py",
)  # fmt: skip


@dataclass(frozen=True)
class TargetPlatform:
    """The Python a target runs, as detected on it (``python3 -c ...``) before anything is transferred."""

    python_version: str  # "3.11"
    machine: str  # uname -m: "x86_64", "aarch64", "armv7l"
    libc: str = "glibc"  # "glibc" or "musl"

    def pip_platforms(self) -> list[str]:
        """``pip download --platform`` tags that can run on this target (manylinux wheels first)."""
        arch = {"armv7l": "armv7l", "arm64": "aarch64"}.get(self.machine, self.machine)
        if self.libc == "musl":
            return [f"musllinux_1_2_{arch}", f"musllinux_1_1_{arch}"]
        tags = [f"manylinux_2_{minor}_{arch}" for minor in (28, 27, 17)]
        return [*tags, f"manylinux2014_{arch}", "linux_" + arch]


def _wheel_sources() -> list[tuple[str, Path]]:
    # ``modeldeck`` stays a namespace package, as in the app's own install.
    files: list[tuple[str, Path]] = []
    files += [(f"modeldeck/core/{name}", _CORE / name) for name in _MODULE_FILES]
    for package in _PACKAGES:
        for path in sorted((_CORE / package).rglob("*.py")):
            files.append((f"modeldeck/core/{path.relative_to(_CORE).as_posix()}", path))
    files += [(f"modeldeck/core/targets/{name}", _CORE / "targets" / name) for name in _TARGET_FILES]
    return files


def runtime_version() -> str:
    """``RUNTIME_VERSION`` plus a hash of the files the wheel carries (a PEP 440 local version)."""
    digest = hashlib.sha256()
    for arcname, path in _wheel_sources():
        digest.update(arcname.encode())
        digest.update(path.read_bytes())
    return f"{RUNTIME_VERSION}+g{digest.hexdigest()[:8]}"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def runtime_wheel(out_dir: Path) -> Path:
    """Write the runtime wheel into ``out_dir`` (reused if already there) and return its path.

    The wheel is reproducible: same sources, same bytes (fixed zip timestamps), so a
    checksum comparison with a host's copy tells whether anything needs sending.
    """
    version = runtime_version()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{DIST_NAME}-{version}-py3-none-any.whl"
    if path.is_file():
        return path
    dist_info = f"{DIST_NAME}-{version}.dist-info"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            f"Name: {DIST_NAME}",
            f"Version: {version}",
            "Summary: The ModelDeck serving runtime (what runs on deploy targets)",
            "Requires-Python: >=3.10",
            *(f"Requires-Dist: {req}" for req in RUNTIME_REQUIREMENTS),
            "",
        ]
    )
    wheel = "Wheel-Version: 1.0\nGenerator: modeldeck\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries: list[tuple[str, bytes]] = [(arc, src.read_bytes()) for arc, src in _wheel_sources()]
    entries += [(f"{dist_info}/METADATA", metadata.encode()), (f"{dist_info}/WHEEL", wheel.encode())]
    record = "".join(f"{arc},{_record_hash(data)},{len(data)}\n" for arc, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode()))
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arc, data in entries:
            info = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    tmp.replace(path)
    log.info("built %s", path.name)
    return path


def wheelhouse(
    out_dir: Path,
    platform: TargetPlatform,
    *,
    progress: Callable[[str, float | None], None] | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float = 600.0,
) -> list[Path]:
    """Download the runtime's dependencies for ``platform`` into ``out_dir``; return every wheel there.

    Only binary wheels are accepted (``--only-binary=:all:``): a target without a compiler
    must not be asked to build anything. The folder is a cache: pip skips what is present.
    Raises :class:`DeployError` when a dependency has no wheel for the target.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--dest", str(out_dir),
        "--python-version", platform.python_version, "--implementation", "cp",
    ]  # fmt: skip
    for tag in platform.pip_platforms():
        cmd += ["--platform", tag]
    cmd += list(RUNTIME_REQUIREMENTS)
    if progress:
        progress(f"downloading runtime dependencies for Python {platform.python_version} {platform.machine}", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = timeout_s
        while True:
            try:
                out, _ = proc.communicate(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                deadline -= 0.5
                if (cancel is not None and cancel.is_set()) or deadline <= 0:
                    proc.kill()
                    proc.communicate()
                    if deadline <= 0:
                        raise DeployError(f"downloading runtime dependencies took over {timeout_s:.0f} s") from None
                    raise Cancelled("wheelhouse download cancelled") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-3:])
        raise DeployError(
            f"cannot download the runtime's dependencies for Python {platform.python_version} on {platform.machine}",
            hint=tail or "check the package index settings (pip config) on this machine",
        )
    return sorted(out_dir.glob("*.whl"))
