"""The embedded registry and its demo: seeded once, idempotent, cancellable, loadable."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from modeldeck.core.errors import Cancelled
from modeldeck.core.registry.embedded import DEMO_VERSIONS, ensure_embedded_registry, seed_demo
from modeldeck.core.settings import load_settings

from tests.fixtures.registry import Store


def _versions(uri: str) -> dict[str, list[str]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out: dict[str, list[str]] = {}
    for v in client.search_model_versions(max_results=1000):
        out.setdefault(v.name, []).append(str(v.version))
    return {k: sorted(vs, key=int) for k, vs in out.items()}


def test_demo_has_versioned_models_with_champion_and_challenger(demo_store: Store) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=demo_store.tracking_uri, registry_uri=demo_store.tracking_uri)
    assert _versions(demo_store.tracking_uri) == {
        "iris-classifier": ["1", "2", "3"],
        "diabetes-regressor": ["1", "2", "3"],
        "breast-cancer-classifier": ["1"],
    }
    for name in ("iris-classifier", "diabetes-regressor"):
        aliases = client.get_registered_model(name).aliases
        assert set(aliases) == {"champion", "challenger"}
        assert aliases["champion"] != aliases["challenger"]
    v = client.get_model_version("iris-classifier", "2")
    run = client.get_run(v.run_id)
    assert {"accuracy", "f1_macro"} <= set(run.data.metrics)
    assert run.data.params["model_type"] == "RandomForestClassifier"
    assert run.data.tags["team"] == "botany"


def test_demo_artifacts_stay_under_the_artifact_root_not_the_working_directory(demo_store: Store) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=demo_store.tracking_uri, registry_uri=demo_store.tracking_uri)
    root_uri = demo_store.artifact_root.resolve().as_uri()
    assert all(v.source.startswith(root_uri) for v in client.search_model_versions(max_results=1000))
    assert len(list(demo_store.artifact_root.rglob("MLmodel"))) == len(DEMO_VERSIONS)


def test_seeded_tree_model_loads_with_mlflow_sklearn(demo_store: Store) -> None:
    """The bundle step loads demo models; skops must be told exactly which tree types to trust."""
    code = (
        "import mlflow, mlflow.sklearn, sys\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "m = mlflow.sklearn.load_model('models:/iris-classifier/2')\n"
        "import pandas as pd\n"
        "print(type(m).__name__, m.predict(pd.DataFrame([[5.1, 3.5, 1.4, 0.2]],"
        " columns=m.feature_names_in_))[0])\n"
    )
    env = {**os.environ, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true"}
    out = subprocess.run(
        [sys.executable, "-c", code, demo_store.tracking_uri], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["RandomForestClassifier", "0"]


def test_seeding_twice_creates_no_duplicates(demo_tracking_uri: str, tmp_path: Path, demo_store: Store) -> None:
    before = _versions(demo_tracking_uri)
    seed_demo(demo_tracking_uri, demo_store.artifact_root)
    assert _versions(demo_tracking_uri) == before


def test_cancelled_seeding_is_finished_by_the_next_run(tmp_path: Path, empty_tracking_uri: str) -> None:
    uri = empty_tracking_uri
    cancel = threading.Event()
    seen: list[str] = []

    def progress(message: str, _fraction: float | None) -> None:
        seen.append(message)
        if len(seen) == 3:  # after the first version was trained
            cancel.set()

    with pytest.raises(Cancelled):
        seed_demo(uri, tmp_path / "artifacts", progress=progress, cancel=cancel)
    partial = _versions(uri)
    assert 0 < sum(len(v) for v in partial.values()) < len(DEMO_VERSIONS)
    seed_demo(uri, tmp_path / "artifacts")
    assert _versions(uri) == {
        "iris-classifier": ["1", "2", "3"],
        "diabetes-regressor": ["1", "2", "3"],
        "breast-cancer-classifier": ["1"],
    }


def test_embedded_registry_is_seeded_once_under_the_data_dir(tmp_path: Path, demo_store: Store) -> None:
    from mlflow import MlflowClient

    settings = load_settings()
    # pretend a previous seeding happened by starting from a copy of the demo db
    settings.embedded_registry_dir.mkdir(parents=True)
    (settings.embedded_registry_dir / "mlflow.db").write_bytes(demo_store.db_path.read_bytes())
    uri = ensure_embedded_registry(settings)
    assert uri == settings.embedded_tracking_uri
    assert settings.embedded_artifact_root.is_dir()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.delete_registered_model("breast-cancer-classifier")
    ensure_embedded_registry(settings)
    assert "breast-cancer-classifier" not in _versions(uri)  # a deleted demo model is not brought back


def test_trusted_types_are_exactly_what_each_model_needs(demo_store: Store) -> None:
    """Never trust everything: a linear pipeline needs nothing extra, a forest needs only the tree type."""
    import yaml
    from modeldeck.core.registry.trust import skops_trusted_types
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], [0, 1, 1, 0]
    assert skops_trusted_types(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)) == []
    assert skops_trusted_types(RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)) == [
        "sklearn.tree._tree.Tree"
    ]
    recorded = {}
    for mlmodel in demo_store.artifact_root.rglob("MLmodel"):
        flavor = yaml.safe_load(mlmodel.read_text())["flavors"]["sklearn"]
        recorded[flavor["serialization_format"]] = recorded.get(flavor["serialization_format"], 0) + 1
        assert flavor["skops_trusted_types"] in (None, [], ["sklearn.tree._tree.Tree"])
    assert recorded == {"skops": len(DEMO_VERSIONS)}
