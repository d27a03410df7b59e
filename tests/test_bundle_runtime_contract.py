"""The contract with the runtime: what the bundler writes, the serving runtime reads and answers correctly.

Uses the runtime's own request path (``ServedModel``) on bundles built here, so a
change on either side of ``manifest.json`` that breaks the other shows up here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modeldeck.core.bundle import build_bundle
from modeldeck.core.runtime.manifest import verify_bundle
from modeldeck.core.runtime.model import ServedModel

from tests.fixtures.bundles import diabetes_pipeline, iris_pipeline, save_sklearn

pytestmark = pytest.mark.slow


def predict(bundle: Path, body: dict[str, Any]) -> list[Any]:
    served = ServedModel(bundle, verify_bundle(bundle))
    served.load()
    (outputs,) = served.run_batch([served.parse_invocations(json.dumps(body).encode(), "application/json")])
    assert not isinstance(outputs, Exception), outputs
    return json.loads(served.format_predictions(outputs))["predictions"]


def test_runtime_serves_the_iris_bundle_like_sklearn(iris_bundle: Path) -> None:
    model, x = iris_pipeline()
    body = {"dataframe_split": {"columns": list(x.columns), "data": x.to_numpy().tolist()}}
    assert predict(iris_bundle, body) == model.predict(x).tolist()


def test_runtime_serves_the_regressor_bundle_like_sklearn(regressor_bundle: Path) -> None:
    model, x = diabetes_pipeline()
    body = {"dataframe_split": {"columns": list(x.columns), "data": x.to_numpy().tolist()}}
    np.testing.assert_allclose(predict(regressor_bundle, body), model.predict(x), rtol=1e-3, atol=1e-3)


def test_runtime_answers_the_bundles_own_input_example(iris_bundle: Path) -> None:
    example = json.loads((iris_bundle / "input_example.json").read_text())
    assert len(predict(iris_bundle, {"dataframe_split": example})) == len(example["data"])


def test_runtime_serves_a_mixed_type_pipeline_with_per_column_feeds(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"age": rng.uniform(18, 80, 200), "plan": rng.choice(["free", "pro", "team"], 200)})
    y = np.where((df.age > 50) | (df.plan == "team"), "keep", "churn")
    pre = ColumnTransformer([("n", StandardScaler(), ["age"]), ("c", OneHotEncoder(handle_unknown="ignore"), ["plan"])])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(df, y)
    save_sklearn(model, tmp_path / "m", input_example=df.head(4))
    build_bundle(str(tmp_path / "m"), tmp_path / "b")
    body = {"dataframe_split": {"columns": ["age", "plan"], "data": df.to_numpy().tolist()}}
    assert predict(tmp_path / "b", body) == model.predict(df).tolist()


def test_runtime_serves_an_int8_bundle(tmp_path: Path) -> None:
    from modeldeck.core.bundle import BundleOptions
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True, as_frame=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0).fit(x, y)
    adam = ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]
    save_sklearn(model, tmp_path / "m", input_example=x.head(4), skops_trusted_types=adam)
    options = BundleOptions(optimize=True, quantize="int8", max_accuracy_delta=0.1)
    report = build_bundle(str(tmp_path / "m"), tmp_path / "b", options=options)
    assert report.optimization is not None and report.optimization["steps"][-1]["applied"]
    body = {"dataframe_split": {"columns": list(x.columns), "data": x.to_numpy().tolist()}}
    agreement = np.mean(np.array(predict(tmp_path / "b", body)) == model.predict(x))
    assert agreement >= 0.9
