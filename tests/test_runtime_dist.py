"""The runtime wheel targets install: what it holds, that it is reproducible and runs without the app."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from modeldeck.core.runtime import RUNTIME_REQUIREMENTS
from modeldeck.core.targets.runtime_dist import TargetPlatform, runtime_version, runtime_wheel


def test_wheel_holds_the_runtime_and_supervisor_but_not_the_app(tmp_path: Path) -> None:
    wheel = runtime_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "modeldeck/core/runtime/server.py" in names
    assert "modeldeck/core/targets/supervisor.py" in names
    assert not any(n.startswith(("modeldeck/gui", "modeldeck/core/registry", "modeldeck/core/bundle")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(f"modeldeck_runtime-{runtime_version()}.dist-info/METADATA").decode()
    for req in RUNTIME_REQUIREMENTS:
        assert f"Requires-Dist: {req}" in metadata


def test_wheel_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    a = runtime_wheel(tmp_path / "a").read_bytes()
    b = runtime_wheel(tmp_path / "b").read_bytes()
    assert a == b


def test_installed_wheel_serves_help_without_the_app_on_the_path(tmp_path: Path) -> None:
    wheel = runtime_wheel(tmp_path / "dist")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        timeout=120,
    )
    # The installed copy wins over the editable app install because PYTHONPATH comes first.
    code = (
        "import modeldeck.core.runtime.server as s, modeldeck.core.targets.supervisor as v;"
        "print(s.__file__); print(v.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert all(line.startswith(str(target)) for line in out)
    help_out = subprocess.run(
        [sys.executable, "-m", "modeldeck.core.runtime", "serve", "--help"],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_out.returncode == 0, help_out.stderr
    assert "--reuse-port" in help_out.stdout


def test_platform_tags_prefer_manylinux_for_glibc_and_musllinux_for_musl() -> None:
    assert TargetPlatform("3.11", "x86_64").pip_platforms()[0] == "manylinux_2_28_x86_64"
    assert TargetPlatform("3.12", "aarch64", "musl").pip_platforms()[0] == "musllinux_1_2_aarch64"
    assert "manylinux2014_armv7l" in TargetPlatform("3.11", "armv7l").pip_platforms()
