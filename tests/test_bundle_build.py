"""Building bundles from a real MLflow store: sources, flavors, the manifest and its integrity."""

from __future__ import annotations

import json
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from modeldeck.core.bundle import BundleOptions, build_bundle, verify_bundle
from modeldeck.core.bundle.converters import feed_arrays
from modeldeck.core.errors import BundleError, Cancelled, ConversionError, NotFound, TamperedBundle

from tests.fixtures.bundles import MlflowStore, diabetes_pipeline, iris_pipeline, save_sklearn

pytestmark = pytest.mark.slow


def run_bundle(bundle: Path, frame: Any) -> dict[str, np.ndarray]:
    """Serve-like use of a bundle: build the feeds from request columns as the manifest says, run ONNX."""
    manifest = verify_bundle(bundle)
    sess = ort.InferenceSession(str(bundle / manifest.model_file), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed_arrays(manifest.feeds, frame)), strict=True))


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- fixtures the runtime and deploy engineers use ----------------------------------------------


def test_iris_fixture_bundle_verifies_and_names_its_source(iris_bundle: Path) -> None:
    manifest = verify_bundle(iris_bundle)
    assert manifest.model_name == "iris-classifier"
    assert manifest.model_version == "1"
    assert manifest.source_uri == "models:/iris-classifier/1"
    assert manifest.run_id
    assert manifest.flavor == "sklearn"
    assert manifest.task == "classification"
    assert manifest.prediction_output == "label"
    assert manifest.class_labels == (0, 1, 2)
    assert manifest.opset == 17
    assert manifest.onnxruntime_version == ort.__version__
    assert manifest.parity is not None and manifest.parity.passed and manifest.parity.label_agreement == 1.0
    assert manifest.parity.rows == 5 + 200
    assert set(manifest.files) == {"model.onnx", "input_example.json"}
    example = json.loads((iris_bundle / "input_example.json").read_text())
    assert set(example) == {"columns", "data"} and len(example["data"]) == 5
    assert [c.name for c in manifest.inputs] == example["columns"]


def test_iris_bundle_answers_like_the_original_model(iris_bundle: Path) -> None:
    model, x = iris_pipeline()
    out = run_bundle(iris_bundle, x)
    assert (out["label"] == model.predict(x)).all()
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(x), rtol=1e-3, atol=1e-4)


def test_regressor_fixture_bundle_predicts_variable(regressor_bundle: Path) -> None:
    manifest = verify_bundle(regressor_bundle)
    assert manifest.task == "regression"
    assert manifest.prediction_output == "variable"
    assert manifest.class_labels is None
    (feed,) = manifest.feeds
    assert feed.onnx_input == "input" and feed.dtype == "float32" and len(feed.columns) == 10
    model, x = diabetes_pipeline()
    out = run_bundle(regressor_bundle, x)
    np.testing.assert_allclose(out["variable"].ravel(), model.predict(x), rtol=1e-3, atol=1e-3)


# --- sources ------------------------------------------------------------------------------------


def test_alias_ref_records_the_version_it_resolved_to(bundle_store: MlflowStore, tmp_path: Path) -> None:
    report = build_bundle("models:/iris-classifier@champion", tmp_path / "b", tracking_uri=bundle_store.tracking_uri)
    assert report.manifest.model_version == "1"
    assert report.manifest.source_uri == "models:/iris-classifier@champion"


def test_run_ref_bundles_the_model_logged_in_that_run(bundle_store: MlflowStore, tmp_path: Path) -> None:
    run_id = bundle_store.client().get_model_version("diabetes-regressor", "1").run_id
    report = build_bundle(f"runs:/{run_id}/model", tmp_path / "b", tracking_uri=bundle_store.tracking_uri)
    assert report.manifest.run_id == run_id
    assert report.manifest.task == "regression"
    verify_bundle(tmp_path / "b")


def test_local_model_folder_is_bundled_without_a_registry(tmp_path: Path) -> None:
    model, x = iris_pipeline()
    folder = save_sklearn(model, tmp_path / "iris-model", input_example=x.head(3))
    report = build_bundle(str(folder), tmp_path / "b")
    assert report.manifest.model_name == "iris-model"
    assert report.manifest.model_version == "local"
    assert report.parity is not None and report.parity.rows == 203


def test_unknown_version_is_not_found(bundle_store: MlflowStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="iris-classifier/99"):
        build_bundle("models:/iris-classifier/99", tmp_path / "b", tracking_uri=bundle_store.tracking_uri)
    assert not (tmp_path / "b").exists()
    assert leftovers(tmp_path) == []


def test_folder_without_mlmodel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(BundleError, match="no MLmodel"):
        build_bundle(str(tmp_path / "not-a-model"), tmp_path / "b")


# --- flavors ------------------------------------------------------------------------------------


def test_onnx_model_is_passed_through_and_says_why_parity_was_skipped(
    bundle_store: MlflowStore, tmp_path: Path
) -> None:
    from skl2onnx import to_onnx

    model, x = iris_pipeline()
    sample = x.to_numpy(np.float32)
    onx = to_onnx(model, sample[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
    bundle_store.log_onnx(onx, "iris-onnx", input_example=sample[:4])
    report = build_bundle("models:/iris-onnx/1", tmp_path / "b", tracking_uri=bundle_store.tracking_uri)
    m = report.manifest
    assert m.flavor == "onnx" and m.input_kind == "tensor"
    assert m.parity is None
    assert "no original model" in m.extra["parity_skipped"]
    (feed,) = m.feeds
    assert feed.columns == () and feed.onnx_input == "X" and feed.dtype == "float32"
    assert json.loads((tmp_path / "b" / "input_example.json").read_text())["inputs"] == sample[:4].tolist()
    out = run_bundle(tmp_path / "b", {"X": sample})
    assert (out["label"] == model.predict(x)).all()


def test_string_column_pipeline_gets_one_feed_per_column(tmp_path: Path) -> None:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, 300),
            "city": rng.choice(["berlin", "lisbon", "oslo"], 300),
            "visits": rng.integers(0, 20, 300),
        }
    )
    y = np.where((df.age > 40) ^ (df.city == "oslo"), "churn", "stay")
    pre = ColumnTransformer(
        [("num", StandardScaler(), ["age", "visits"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"])]
    )
    model = Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(df, y)
    folder = save_sklearn(model, tmp_path / "churn", input_example=df.head(6))
    report = build_bundle(str(folder), tmp_path / "b")
    m = report.manifest
    assert {(f.onnx_input, f.dtype, f.columns) for f in m.feeds} == {
        ("age", "float32", ("age",)),
        ("city", "str", ("city",)),
        ("visits", "float32", ("visits",)),
    }
    assert m.class_labels == ("churn", "stay")
    assert m.parity is not None and m.parity.label_agreement == 1.0
    out = run_bundle(tmp_path / "b", df)
    assert (out["label"] == model.predict(df)).all()


def test_tree_ensemble_loads_trusting_only_the_tree_type(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    _, x = iris_pipeline()
    y = (x.iloc[:, 2] > 3).astype(int)
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(x, y)
    folder = save_sklearn(
        forest, tmp_path / "forest", input_example=x.head(4), skops_trusted_types=["sklearn.tree._tree.Tree"]
    )
    report = build_bundle(str(folder), tmp_path / "b")
    notes = report.manifest.extra["converter_notes"]
    assert notes["serialization_format"] == "skops"
    assert notes["trusted_types"] == ["sklearn.tree._tree.Tree"]
    assert report.parity is not None and report.parity.label_agreement == 1.0


def test_gradient_boosting_regressor_converts(tmp_path: Path) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    _, x = diabetes_pipeline()
    y = x["bmi"] * 100 + x["bp"] * 50
    gbr = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0).fit(x, y)
    folder = save_sklearn(
        gbr, tmp_path / "gbr", input_example=x.head(4), skops_trusted_types=["sklearn.tree._tree.Tree"]
    )
    report = build_bundle(str(folder), tmp_path / "b")
    assert report.manifest.task == "regression" and report.parity is not None


def test_estimator_skl2onnx_cannot_convert_is_a_conversion_error_naming_it(tmp_path: Path) -> None:
    from sklearn.kernel_ridge import KernelRidge

    _model, x = diabetes_pipeline()
    folder = save_sklearn(KernelRidge().fit(x, x["bmi"]), tmp_path / "kr", input_example=x.head(3))
    with pytest.raises(ConversionError, match=r"flavor sklearn: skl2onnx cannot convert KernelRidge"):
        build_bundle(str(folder), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_python_function_only_model_is_a_conversion_error_naming_the_flavor(tmp_path: Path) -> None:
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]  # untyped: MLflow reads hints
            return model_input

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.pyfunc.save_model(str(tmp_path / "echo"), python_model=Echo(), pip_requirements=["mlflow"])
    with pytest.raises(ConversionError, match=r"cannot convert flavor python_function to ONNX") as err:
        build_bundle(str(tmp_path / "echo"), tmp_path / "b")
    assert "onnx, sklearn" in err.value.message


# --- writing and integrity ----------------------------------------------------------------------


def test_non_empty_out_dir_is_refused_unless_overwrite(
    bundle_store: MlflowStore, iris_bundle: Path, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(iris_bundle, tmp_path / "b"))
    before = (out / "manifest.json").read_text()
    with pytest.raises(BundleError, match="is not empty") as err:
        build_bundle("models:/diabetes-regressor/1", out, tracking_uri=bundle_store.tracking_uri)
    assert "--force" in (err.value.hint or "")
    assert (out / "manifest.json").read_text() == before
    build_bundle(
        "models:/diabetes-regressor/1",
        out,
        tracking_uri=bundle_store.tracking_uri,
        options=BundleOptions(overwrite=True),
    )
    assert verify_bundle(out).model_name == "diabetes-regressor"
    assert leftovers(tmp_path) == []


def test_force_never_replaces_a_folder_that_is_not_a_bundle(bundle_store: MlflowStore, tmp_path: Path) -> None:
    out = tmp_path / "documents"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a ModelDeck bundle; refusing to replace it"):
        build_bundle(
            "models:/iris-classifier/1",
            out,
            tracking_uri=bundle_store.tracking_uri,
            options=BundleOptions(overwrite=True),
        )
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["documents"]


def test_modified_model_file_is_refused_as_tampered(iris_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(iris_bundle, tmp_path / "copy"))
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(TamperedBundle, match=r"model\.onnx does not match the manifest"):
        verify_bundle(copy)


def test_unlisted_extra_file_is_refused_as_tampered(iris_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(iris_bundle, tmp_path / "copy"))
    (copy / "sitecustomize.py").write_text("print('hi')")
    with pytest.raises(TamperedBundle, match="not listed"):
        verify_bundle(copy)


def test_cancelled_build_leaves_no_out_dir(bundle_store: MlflowStore, tmp_path: Path) -> None:
    cancel = threading.Event()
    seen: list[str] = []

    def progress(message: str, fraction: float | None) -> None:
        seen.append(message)
        if message.startswith("checking parity"):
            cancel.set()

    with pytest.raises(Cancelled):
        build_bundle(
            "models:/iris-classifier/1",
            tmp_path / "b",
            tracking_uri=bundle_store.tracking_uri,
            progress=progress,
            cancel=cancel,
        )
    assert seen[-1].startswith("checking parity")
    assert not (tmp_path / "b").exists()
    assert leftovers(tmp_path) == []


def test_report_prints_as_text_and_json(iris_bundle: Path, bundle_store: MlflowStore, tmp_path: Path) -> None:
    report = build_bundle("models:/iris-classifier/1", tmp_path / "b", tracking_uri=bundle_store.tracking_uri)
    text = report.to_text()
    assert "parity   passed on 205 rows" in text and report.manifest.sha256 in text
    data = json.loads(report.to_json())
    assert data["parity"]["passed"] is True
    assert data["manifest"]["model_name"] == "iris-classifier"
    assert set(data["timings"]) >= {"fetch", "convert", "parity", "write"}


def test_numpy_example_gives_a_tensor_bundle(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    folder = save_sklearn(LogisticRegression(max_iter=300).fit(x, y), tmp_path / "m", input_example=x[:3])
    report = build_bundle(str(folder), tmp_path / "b")
    assert report.manifest.input_kind == "tensor"
    (feed,) = report.manifest.feeds
    assert feed.columns == () and feed.shape == (-1, 4)
    assert json.loads((tmp_path / "b" / "input_example.json").read_text()) == {"inputs": x[:3].tolist()}


def test_sklearn_model_without_signature_or_example_is_refused_with_a_hint(tmp_path: Path) -> None:
    model, _ = iris_pipeline()
    folder = save_sklearn(model, tmp_path / "m")
    with pytest.raises(ConversionError, match="no signature") as err:
        build_bundle(str(folder), tmp_path / "b")
    assert "input_example" in (err.value.hint or "")


def test_onnx_model_with_only_a_dataframe_example_maps_columns_to_its_input(tmp_path: Path) -> None:
    import mlflow
    import pandas as pd
    from skl2onnx import to_onnx

    model, x = iris_pipeline()
    onx = to_onnx(model, x.to_numpy(np.float32)[:1], options={"zipmap": False})
    frame = pd.DataFrame(x.to_numpy(np.float32)[:3], columns=["a", "b", "c", "d"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlflow.onnx.save_model(onx, str(tmp_path / "m"), input_example=frame, pip_requirements=["onnx"])  # no signature
    report = build_bundle(str(tmp_path / "m"), tmp_path / "b")
    m = report.manifest
    assert m.extra["signature_inferred_from_example"] is True
    assert m.input_kind == "columns" and [c.type for c in m.inputs] == ["double"] * 4
    (feed,) = m.feeds
    assert feed.onnx_input == "X" and feed.columns == ("a", "b", "c", "d")


def test_bundle_folder_is_readable_by_other_users(iris_bundle: Path) -> None:
    assert iris_bundle.stat().st_mode & 0o755 == 0o755


def test_pytorch_model_is_a_conversion_error_naming_pytorch(tmp_path: Path) -> None:
    folder = tmp_path / "torch-model"
    folder.mkdir()
    (folder / "MLmodel").write_text(
        "flavors:\n"
        "  python_function: {loader_module: mlflow.pytorch, data: data}\n"
        "  pytorch: {model_data: data, pytorch_version: 2.5.0}\n"
    )
    with pytest.raises(ConversionError, match=r"^cannot convert flavor pytorch to ONNX") as err:
        build_bundle(str(folder), tmp_path / "b")
    assert "mlflow.onnx" in (err.value.hint or "")


def test_registry_refs_never_touch_mlflows_default_store_in_the_cwd(
    bundle_store: MlflowStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's models:/ and runs:/ repositories fall back to ./mlflow.db; the bundler must not (a bug that was)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run_id = bundle_store.client().get_model_version("iris-classifier", "1").run_id
    for i, ref in enumerate(["models:/iris-classifier@champion", f"runs:/{run_id}/model"]):
        build_bundle(ref, tmp_path / f"b{i}", tracking_uri=bundle_store.tracking_uri)
    assert list(cwd.iterdir()) == []
