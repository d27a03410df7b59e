"""The runtime serving bundles made by the real bundle builder (core/bundle) from an MLflow registry:
predictions over both protocols match the original scikit-learn pipelines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from modeldeck.core.runtime.manifest import read_manifest

from tests.fixtures.bundles import diabetes_pipeline, iris_pipeline
from tests.fixtures.runtime import RuntimeProcess, start_runtime

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def served_iris(iris_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    rp = start_runtime(iris_bundle, tmp_path_factory.mktemp("served-iris"))
    yield rp
    rp.terminate()


@pytest.fixture(scope="module")
def served_regressor(regressor_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    rp = start_runtime(regressor_bundle, tmp_path_factory.mktemp("served-regressor"))
    yield rp
    rp.terminate()


def test_built_classifier_bundle_serves_sklearn_labels(served_iris: RuntimeProcess, iris_bundle: Path) -> None:
    model, x = iris_pipeline()
    sample = x.iloc[::7]
    manifest = read_manifest(iris_bundle)
    columns = [c.name for c in manifest.inputs]
    body = {"dataframe_split": {"columns": columns, "data": sample[columns].to_numpy().tolist()}}
    r = httpx.post(f"{served_iris.url}/invocations", json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": model.predict(sample).tolist()}
    records = sample[columns].to_dict(orient="records")
    r = httpx.post(f"{served_iris.url}/invocations", json={"dataframe_records": records}, timeout=10)
    assert r.json()["predictions"] == model.predict(sample).tolist()


def test_built_classifier_bundle_over_v2(served_iris: RuntimeProcess, iris_bundle: Path) -> None:
    model, x = iris_pipeline()
    sample = x.iloc[:9]
    manifest = read_manifest(iris_bundle)
    meta = httpx.get(f"{served_iris.url}/v2/models/{manifest.model_name}", timeout=5).json()
    assert meta["platform"] == "onnxruntime_onnx"
    inputs = [
        {"name": c.name, "shape": [len(sample)], "datatype": "FP64", "data": sample[c.name].tolist()}
        for c in manifest.inputs
    ]
    r = httpx.post(f"{served_iris.url}/v2/models/{manifest.model_name}/infer", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 200, r.text
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert outputs[manifest.prediction_output]["data"] == model.predict(sample).tolist()


def test_built_regressor_bundle_serves_close_floats(served_regressor: RuntimeProcess, regressor_bundle: Path) -> None:
    model, x = diabetes_pipeline()
    sample = x.iloc[:40]
    columns = [c.name for c in read_manifest(regressor_bundle).inputs]
    csv = sample[columns].to_csv(index=False)
    r = httpx.post(f"{served_regressor.url}/invocations", content=csv, headers={"content-type": "text/csv"}, timeout=10)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], model.predict(sample), rtol=1e-4, atol=1e-3)
    bad = httpx.post(
        f"{served_regressor.url}/invocations",
        content=json.dumps({"dataframe_split": {"columns": columns[:-1], "data": [[0.0] * (len(columns) - 1)]}}),
        headers={"content-type": "application/json"},
        timeout=10,
    )
    assert bad.status_code == 400 and f"missing column {columns[-1]!r}" in bad.json()["message"]
