"""The Registry against a real ``mlflow server`` on loopback (REST client, proxied artifacts)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from modeldeck.core.errors import NotFound, PermissionDenied, RegistryError, RegistryUnreachable
from modeldeck.core.registry.client import Registry

from tests.fixtures.registry import MlflowServer, Store, copy_store, sqlite_uri, start_mlflow_server, stop_process

pytestmark = pytest.mark.server


def test_server_lists_the_demo_models_with_aliases(mlflow_server: str) -> None:
    registry = Registry(mlflow_server)
    registry.ping()
    models = {m.name: m for m in registry.list_models().items}
    assert set(models) == {"breast-cancer-classifier", "diabetes-regressor", "iris-classifier"}
    assert models["iris-classifier"].latest_version == "3"
    assert {"champion", "challenger"} <= set(models["iris-classifier"].aliases)
    assert registry.display_name == mlflow_server


def test_server_pages_versions_newest_first(mlflow_server: str) -> None:
    registry = Registry(mlflow_server)
    first = registry.list_versions("iris-classifier", max_results=2)
    assert [v.version for v in first.items] == ["3", "2"]
    assert first.next_token is not None
    rest = registry.list_versions("iris-classifier", page_token=first.next_token, max_results=2)
    assert [v.version for v in rest.items] == ["1"]
    assert rest.next_token is None


@pytest.mark.parametrize(
    "ref",
    [
        "iris-classifier/2",
        "models:/iris-classifier/2",
        "iris-classifier@challenger",
        "models:/iris-classifier@champion",
    ],
)
def test_server_resolves_every_reference_form(mlflow_server: str, ref: str) -> None:
    registry = Registry(mlflow_server)
    aliases = registry.get_model("iris-classifier").aliases
    expected = aliases.get(ref.rsplit("@", 1)[-1], "2") if "@" in ref else "2"
    assert registry.resolve(ref).version == expected
    assert registry.resolve("iris-classifier").version == "3"


def test_server_reports_missing_things_as_not_found(mlflow_server: str) -> None:
    registry = Registry(mlflow_server)
    for ref in ("ghost", "ghost/1", "iris-classifier/77", "iris-classifier@nobody"):
        with pytest.raises(NotFound):
            registry.resolve(ref)
    with pytest.raises(NotFound):
        registry.list_versions("ghost")


def test_server_version_details_and_compare(mlflow_server: str) -> None:
    registry = Registry(mlflow_server)
    d = registry.version_details("diabetes-regressor", "1")
    assert d.warnings == ()
    assert d.run is not None and {"rmse", "mae", "r2"} <= set(d.run.metrics)
    assert d.signature is not None and [c.name for c in d.signature.inputs][:3] == ["age", "sex", "bmi"]
    assert d.input_example is not None and d.input_example["columns"][0] == "age"
    cmp = registry.compare(
        registry.get_version("diabetes-regressor", "1"), registry.get_version("diabetes-regressor", "2")
    )
    assert {m.key for m in cmp.metrics} == {"rmse", "mae", "r2"}
    metrics = registry.run_metrics([v.run_id or "" for v in registry.list_versions("diabetes-regressor").items])
    assert len(metrics) == 3


def test_server_alias_and_tag_changes_round_trip(mlflow_server: str) -> None:
    registry = Registry(mlflow_server)
    alias = f"test-{uuid.uuid4().hex[:8]}"
    registry.set_alias("breast-cancer-classifier", alias, "1")
    try:
        assert registry.resolve(f"breast-cancer-classifier@{alias}").version == "1"
        assert alias in registry.get_model("breast-cancer-classifier").aliases
    finally:
        registry.delete_alias("breast-cancer-classifier", alias)
    assert alias not in registry.get_model("breast-cancer-classifier").aliases
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.set_alias("breast-cancer-classifier", "bad alias!", "1")

    key = f"note-{uuid.uuid4().hex[:8]}"
    registry.set_version_tag("breast-cancer-classifier", "1", key, "checked")
    try:
        assert registry.get_version("breast-cancer-classifier", "1").tags[key] == "checked"
    finally:
        registry.delete_version_tag("breast-cancer-classifier", "1", key)
    assert key not in registry.get_version("breast-cancer-classifier", "1").tags


_LOG_THROUGH_SERVER = r"""
import sys
import numpy as np, pandas as pd
import mlflow, mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.linear_model import LinearRegression
name = sys.argv[1]
mlflow.set_experiment(name)
X = pd.DataFrame({"x1": np.arange(10.0), "x2": np.arange(10.0) ** 2})
y = 3 * X["x1"] - X["x2"]
model = LinearRegression().fit(X, y)
with mlflow.start_run():
    mlflow.log_metric("r2", 1.0)
    mlflow.sklearn.log_model(model, name="model", registered_model_name=name, pip_requirements=["scikit-learn"],
                             signature=infer_signature(X, model.predict(X)), input_example=X.head(2))
"""


def test_details_of_a_model_whose_artifacts_are_proxied_by_the_server(
    mlflow_server_process: MlflowServer,
) -> None:
    """Models logged through a server live behind mlflow-artifacts:/ and are read over HTTP."""
    name = f"proxied-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = mlflow_server_process.url
    out = subprocess.run(
        [sys.executable, "-c", _LOG_THROUGH_SERVER, name],
        env=env,
        cwd=mlflow_server_process.store.root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    d = Registry(mlflow_server_process.url).version_details(name, "1")
    assert d.warnings == ()
    assert d.input_example == {"columns": ["x1", "x2"], "data": [[0.0, 0.0], [1.0, 1.0]]}
    assert d.signature is not None and [c.name for c in d.signature.inputs] == ["x1", "x2"]
    assert any(a.path == "MLmodel" for a in d.artifacts) and d.size_bytes
    served = mlflow_server_process.store.root / "served-artifacts"
    assert list(served.rglob("MLmodel")), "artifacts should live behind the server's proxy"


def test_a_server_that_went_away_is_unreachable_quickly(demo_store: Store, tmp_path: Path) -> None:
    copy_store(demo_store, tmp_path)
    store = Store(sqlite_uri(tmp_path / "mlflow.db"), tmp_path, demo_store.artifact_root)
    server = start_mlflow_server(store, tmp_path / "server.log", artifacts_destination=tmp_path / "served")
    registry = Registry(server.url, timeout_s=4)
    try:
        registry.ping()
    finally:
        stop_process(server.process)
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable):
        registry.list_models()
    assert time.monotonic() - started < 4


def test_refused_credentials_are_permission_denied_with_a_hint(
    demo_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ``mlflow server --app-name basic-auth``: no or wrong credentials give 401."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF (mlflow[auth])")
    copy_store(demo_store, tmp_path)
    store = Store(sqlite_uri(tmp_path / "mlflow.db"), tmp_path, demo_store.artifact_root)
    auth_ini = tmp_path / "basic_auth.ini"
    auth_ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {sqlite_uri(tmp_path / 'auth.db')}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        encoding="utf-8",
    )
    server = start_mlflow_server(
        store,
        tmp_path / "server.log",
        artifacts_destination=tmp_path / "served",
        extra_args=("--app-name", "basic-auth"),
        extra_env={
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": "correct-horse-42",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        },
    )
    try:
        registry = Registry(server.url, timeout_s=5)
        with pytest.raises(PermissionDenied) as info:
            registry.list_models()
        assert "MLFLOW_TRACKING_TOKEN" in (info.value.hint or "")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
        with pytest.raises(PermissionDenied):
            registry.ping()
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "correct-horse-42")
        assert "iris-classifier" in {m.name for m in registry.list_models().items}
        assert "correct-horse-42" not in registry.display_name
    finally:
        stop_process(server.process)
