"""--optimize / --quantize int8: measured, reported, and refused when accuracy would suffer."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from modeldeck.core.bundle import BundleOptions, build_bundle, verify_bundle
from modeldeck.core.errors import ParityError

from tests.fixtures.bundles import save_sklearn

pytestmark = pytest.mark.slow

ADAM = ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]


@pytest.fixture(scope="module")
def mlp_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits MLP classifier: real MatMul weights, so int8 has something to do."""
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True, as_frame=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a short fit is enough here
        model = make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=15, random_state=0)
        ).fit(x, y)
    return save_sklearn(
        model, tmp_path_factory.mktemp("mlp") / "clf", input_example=x.head(16), skops_trusted_types=ADAM
    )


@pytest.fixture(scope="module")
def mlp_regressor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_diabetes(return_X_y=True, as_frame=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(
            StandardScaler(), MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=100, random_state=0)
        ).fit(x, y)
    return save_sklearn(
        model, tmp_path_factory.mktemp("mlp") / "reg", input_example=x.head(8), skops_trusted_types=ADAM
    )


def test_optimize_and_quantize_report_size_latency_and_accuracy(mlp_classifier_dir: Path, tmp_path: Path) -> None:
    options = BundleOptions(optimize=True, quantize="int8", max_accuracy_delta=0.1)
    report = build_bundle(str(mlp_classifier_dir), tmp_path / "b", options=options)
    opt = report.optimization
    assert opt is not None and opt == report.manifest.optimization
    graph, quant = opt["steps"]
    assert graph["step"] == "graph" and graph["applied"] and graph["level"] == "basic"
    assert quant["step"] == "quantize" and quant["applied"] and quant["weights_quantized"] >= 3
    assert quant["size_bytes_after"] < quant["size_bytes_before"] / 2  # float32 -> int8 weights
    for step in (graph, quant):
        assert step["latency_ms_before"] > 0 and step["latency_ms_after"] > 0
        assert 0 <= step["accuracy_delta"] <= 0.1
    assert opt["size_bytes_after"] == (tmp_path / "b" / "model.onnx").stat().st_size
    verify_bundle(tmp_path / "b")
    vs = opt["vs_original"]  # parity is for the float model; this is the model actually shipped
    assert vs["rows"] == report.parity.rows and vs["label_agreement"] >= 0.9  # type: ignore[union-attr]
    text = report.to_text()
    assert "quantize dynamic int8: size" in text and "latency" in text
    assert "shipped  model vs original on 216 rows" in text


def test_quantisation_beyond_the_accuracy_bound_is_refused_with_figures(
    mlp_regressor_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        ParityError, match=r"refusing int8 quantisation: accuracy delta [0-9.e-]+ exceeds the bound 0 "
    ) as err:
        build_bundle(
            str(mlp_regressor_dir), tmp_path / "b", options=BundleOptions(quantize="int8", max_accuracy_delta=0.0)
        )
    assert "bytes" in err.value.message and "--max-accuracy-delta" in (err.value.hint or "")
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_quantising_a_tree_ensemble_says_there_is_nothing_to_quantise(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True, as_frame=True)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    folder = save_sklearn(
        forest, tmp_path / "forest", input_example=x.head(3), skops_trusted_types=["sklearn.tree._tree.Tree"]
    )
    plain = build_bundle(str(folder), tmp_path / "plain")
    report = build_bundle(str(folder), tmp_path / "b", options=BundleOptions(quantize="int8"))
    (step,) = report.optimization["steps"]  # type: ignore[index]
    assert step["applied"] is False
    assert step["reason"].startswith("nothing to quantise: model has no MatMul/Gemm weights")
    assert (tmp_path / "b" / "model.onnx").read_bytes() == (tmp_path / "plain" / "model.onnx").read_bytes()
    assert plain.manifest.optimization is None
    assert "quantize not applied: nothing to quantise" in report.to_text()
