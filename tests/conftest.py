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


# Session fixtures that build a cache on a fresh machine (a debootstrapped base image, the SSH
# hosts' runtime wheelhouse): the first test that needs one also pays for building it, which may
# exceed the suite's per-test timeout in CI. Later tests reuse the cache and keep the normal bound.
_CACHE_BUILDING_FIXTURES = ("docker_base_image", "model_images", "ssh_runtime_seed")
_CACHE_BUILD_TIMEOUT_S = 1200


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    pending = set(_CACHE_BUILDING_FIXTURES)
    for item in items:
        needed = pending.intersection(getattr(item, "fixturenames", ()))
        if needed:
            item.add_marker(pytest.mark.timeout(_CACHE_BUILD_TIMEOUT_S))
            pending -= needed
        if not pending:
            break
