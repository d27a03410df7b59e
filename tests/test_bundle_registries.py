"""Bundling from the registries ModelDeck meets: the demo store it seeds, and a real ``mlflow server``."""

from __future__ import annotations

from pathlib import Path

import pytest
from modeldeck.core.bundle import build_bundle, verify_bundle

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("ref", "task"),
    [
        ("models:/iris-classifier@champion", "classification"),
        ("models:/iris-classifier/2", "classification"),  # the RandomForest: skops + sklearn.tree._tree.Tree
        ("models:/diabetes-regressor/1", "regression"),
        ("models:/breast-cancer-classifier/1", "classification"),
    ],
)
def test_every_demo_model_bundles_with_parity(demo_store, ref: str, task: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report = build_bundle(ref, tmp_path / "b", tracking_uri=demo_store.tracking_uri)
    assert report.manifest.task == task
    assert report.parity is not None and report.parity.passed
    verify_bundle(tmp_path / "b")


@pytest.mark.server
def test_bundle_from_a_real_mlflow_server_over_http(mlflow_server: str, tmp_path: Path) -> None:
    report = build_bundle("models:/iris-classifier/1", tmp_path / "b", tracking_uri=mlflow_server)
    assert report.manifest.source_uri == "models:/iris-classifier/1"
    assert report.manifest.extra["tracking_uri"] == mlflow_server
    verify_bundle(tmp_path / "b")
