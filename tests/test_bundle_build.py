"""Building bundles from a real MLflow store: sources, flavors, the manifest and its integrity."""

from __future__ import annotations

import json
from pathlib import Path

from modeldeck.core.bundle import verify_bundle


def test_iris_fixture_bundle_verifies_and_names_its_source(iris_bundle: Path) -> None:
    manifest = verify_bundle(iris_bundle)
    assert manifest.model_name == "iris-classifier"
    assert manifest.model_version == "1"
    assert manifest.task == "classification"
    assert manifest.prediction_output == "label"
    assert manifest.class_labels == (0, 1, 2)
    assert manifest.parity is not None and manifest.parity.passed
    example = json.loads((iris_bundle / "input_example.json").read_text())
    assert set(example) == {"columns", "data"}


def test_regressor_fixture_bundle_predicts_variable(regressor_bundle: Path) -> None:
    manifest = verify_bundle(regressor_bundle)
    assert manifest.task == "regression"
    assert manifest.prediction_output == "variable"
    assert manifest.feeds[0].onnx_input == "input"
    assert len(manifest.feeds[0].columns) == 10
