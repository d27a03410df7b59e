"""The ModelDeck serving runtime: what runs on targets.

This package is a small world of its own. It imports only the standard library,
numpy, onnxruntime, its declared server dependencies, ``modeldeck.core.errors``
and itself -- never MLflow, Qt, paramiko or docker -- because it is shipped to
hosts, containers and edge devices that have none of those.

Start it with ``python -m modeldeck.core.runtime serve BUNDLE_DIR`` (or
``modeldeck serve``); see :mod:`.server` for the process contract (binds,
``--ready-file``, SIGTERM drain).
"""

from __future__ import annotations

RUNTIME_VERSION = "0.1.0"

# What a target must `pip install` to run this package (kept in step with pyproject.toml).
RUNTIME_REQUIREMENTS: tuple[str, ...] = (
    "numpy>=1.26,<3",
    "onnxruntime>=1.20,<2",
    "uvicorn>=0.30,<0.60",
    "httptools>=0.6,<1",
    "uvloop>=0.19,<1; sys_platform != 'win32'",
    "prometheus-client>=0.20,<1",
    "orjson>=3.9,<4",
)

__all__ = ["RUNTIME_REQUIREMENTS", "RUNTIME_VERSION"]
