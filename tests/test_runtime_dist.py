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


def test_wheel_carries_the_ssh_agent_and_it_imports_without_the_app(tmp_path: Path) -> None:
    """The SSH target runs the agent from the runtime venv on hosts that have no MLflow, Qt, paramiko or docker."""
    wheel = runtime_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("agent", "local", "base", "health", "releases"):
        assert f"modeldeck/core/targets/{module}.py" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        timeout=120,
    )
    code = (
        "import sys\n"
        "BLOCKED = ('mlflow', 'PySide6', 'shiboken6', 'pyqtgraph', 'paramiko', 'docker', 'sklearn', 'platformdirs')\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import modeldeck.core.targets.agent as a, modeldeck.core.targets.local\n"
        "print(a.__file__)\n"
        "sys.exit(a.main(['status', '--deploy-root', sys.argv[1]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "empty-root")],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    path, answer = out.stdout.splitlines()
    assert path.startswith(str(target))
    assert answer == '{"result":[]}'
