"""Model bundles: MLflow model -> verified ONNX bundle (conversion, parity check, optimisation, manifest).

``build_bundle`` is the one entry point; converters for more flavors plug in
through :func:`register_converter`. The bundle format itself is defined in
:mod:`modeldeck.core.runtime.manifest`, which the serving runtime shares.
"""

from __future__ import annotations

from modeldeck.core.bundle.build import BundleOptions, BundleReport, build_bundle
from modeldeck.core.bundle.converters import (
    Conversion,
    Converter,
    ConvertOptions,
    converters,
    register_converter,
    unregister_converter,
)
from modeldeck.core.runtime.manifest import read_manifest, verify_bundle

__all__ = [
    "BundleOptions",
    "BundleReport",
    "Conversion",
    "ConvertOptions",
    "Converter",
    "build_bundle",
    "converters",
    "read_manifest",
    "register_converter",
    "unregister_converter",
    "verify_bundle",
]
