"""The design card as executable contracts: core never imports Qt or gui, the runtime
imports only what targets have, and every package is installed.

(import-linter cannot see packages installed through setuptools' package-dir
mapping, so the contracts are checked here on the source with ``ast``.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QT = {"PySide6", "shiboken6", "pyqtgraph", "qtpy", "PyQt5", "PyQt6"}
# What a target has: stdlib, numpy, onnxruntime and the runtime's declared server deps.
RUNTIME_ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "uvicorn", "httptools", "uvloop", "prometheus_client", "orjson"}
RUNTIME_ALLOWED_OWN = ("modeldeck.core.runtime", "modeldeck.core.errors")


def _imports(path: Path) -> list[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    package = ["modeldeck", *rel.parts[:-1]] if rel.parts[0] in ("core", "gui") else list(rel.parts[:-1])
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
    return names


def _py_files(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def test_core_never_imports_gui_or_qt() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}: {name}"
        for p in _py_files("core")
        for name in _imports(p)
        if name.split(".")[0] in QT or name.startswith("modeldeck.gui")
    ]
    assert offenders == []


def test_runtime_imports_only_what_targets_have() -> None:
    stdlib = set(sys.stdlib_module_names)
    offenders = []
    for p in _py_files("core/runtime"):
        for name in _imports(p):
            top = name.split(".")[0]
            if top in stdlib or top in RUNTIME_ALLOWED_THIRD_PARTY or name.startswith(RUNTIME_ALLOWED_OWN):
                continue
            offenders.append(f"{p.relative_to(ROOT)}: {name}")
    assert offenders == []


def test_core_cli_imports_without_qt() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('PySide6','shiboken6','pyqtgraph'): raise ImportError('blocked '+name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from modeldeck.core import cli\n"
        "cli.build_parser()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_package_directory_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, dotted in (("core", "modeldeck.core"), ("gui", "modeldeck.gui"), ("resources", "modeldeck.resources")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((dotted, *rel)))
    missing = found - listed
    assert missing == set(), f"add these to [tool.setuptools] packages: {sorted(missing)}"


@pytest.mark.parametrize("top", ["core", "gui"])
def test_imports_parse(top: str) -> None:
    for p in _py_files(top):
        _imports(p)


def test_target_modules_shipped_in_the_runtime_wheel_import_only_what_the_wheel_has() -> None:
    """The SSH agent runs LocalTarget's logic on hosts from the runtime wheel, so those modules stay pure."""
    from modeldeck.core.targets.runtime_dist import _TARGET_FILES

    stdlib = set(sys.stdlib_module_names)
    shipped = {f"modeldeck.core.targets.{name[:-3]}" for name in _TARGET_FILES if name != "__init__.py"}
    allowed_own = (*RUNTIME_ALLOWED_OWN, "modeldeck.core.targets")
    # Lazy imports on paths the agent never takes: LocalTarget reads the app's settings only when given no
    # root (the agent always passes one); open_target's branches for the other target kinds.
    lazy_app_only = {
        ("core/targets/local.py", "modeldeck.core.settings"),
        ("core/targets/base.py", "modeldeck.core.targets.docker.target"),
        ("core/targets/base.py", "modeldeck.core.targets.ssh.target"),
    }
    offenders = []
    for name in _TARGET_FILES:
        p = ROOT / "core" / "targets" / name
        for imported in _imports(p):
            top = imported.split(".")[0]
            rel = str(p.relative_to(ROOT))
            if top in stdlib or top in RUNTIME_ALLOWED_THIRD_PARTY or (rel, imported) in lazy_app_only:
                continue
            if imported.startswith(RUNTIME_ALLOWED_OWN) or imported in shipped or imported == "modeldeck.core.targets":
                continue
            if imported.startswith(allowed_own) and imported.rsplit(".", 1)[0] in shipped:
                continue  # ``from modeldeck.core.targets.x import Name`` resolves to a shipped module
            offenders.append(f"{rel}: {imported}")
    assert offenders == []
