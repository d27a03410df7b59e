"""Suite-wide setup: offscreen Qt, an isolated data/config dir, no ambient MLflow settings.

Fixtures that start real servers live in ``tests/fixtures/*`` (one module per
concern) and are loaded here as plugins.
"""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"
os.environ["PYQTGRAPH_QT_LIB"] = "PySide6"
for _var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN"):
    os.environ.pop(_var, None)

import pytest  # noqa: E402

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.runtime",
    "tests.fixtures.bundles",
    "tests.fixtures.deploy",
    "tests.fixtures.monitor",
    "tests.fixtures.docker",
    "tests.fixtures.sshd",
    "tests.fixtures.ssh_target",
]


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own ModelDeck data and config dirs, never the user's."""
    base = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MODELDECK_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("MODELDECK_CONFIG_DIR", str(base / "config"))
