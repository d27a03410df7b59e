"""Loading scikit-learn models safely: skops allow-list, tree checks, pickle only on request."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from modeldeck.core.bundle import BundleOptions, build_bundle
from modeldeck.core.bundle.trust import is_allowed_type
from modeldeck.core.errors import ConversionError
from sklearn.preprocessing import StandardScaler

from tests.fixtures.bundles import iris_pipeline, save_sklearn

pytestmark = pytest.mark.slow


class HomemadeScaler(StandardScaler):
    """A user's own class: code ModelDeck has never seen, so it must not be loaded."""


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("sklearn.neural_network._stochastic_optimizers.AdamOptimizer", True),
        ("numpy.float64", True),
        ("numpy.dtypes.Float64DType", True),
        ("scipy.sparse._csr.csr_matrix", True),
        ("numpy.object_", False),  # holds arbitrary Python objects
        ("sklearn.utils.shuffle", False),  # a function, not a class
        ("posix.system", False),
        ("builtins.eval", False),
        ("sklearn.no_such_module.Thing", False),
        ("tests.test_bundle_trust.HomemadeScaler", False),
    ],
)
def test_only_known_library_classes_are_trusted(name: str, allowed: bool) -> None:
    assert is_allowed_type(name) is allowed


def test_function_reference_in_skops_file_is_refused_even_if_mlmodel_trusts_it(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    _, x = iris_pipeline()
    y = (x.iloc[:, 0] > 5.8).astype(int)
    from mlflow.models import infer_signature

    # Never fitted or run: the point is that the file references os.system.
    evil = make_pipeline(FunctionTransformer(os.system), LogisticRegression().fit(x, y))
    signature = infer_signature(x.head(2))
    folder = save_sklearn(evil, tmp_path / "evil", signature=signature, skops_trusted_types=["posix.system"])
    with pytest.raises(ConversionError, match=r"types ModelDeck does not trust: posix\.system"):
        build_bundle(str(folder), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_custom_class_in_skops_file_is_refused_and_listed(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    _, x = iris_pipeline()
    y = (x.iloc[:, 0] > 5.8).astype(int)
    model = make_pipeline(HomemadeScaler(), LogisticRegression()).fit(x, y)
    name = f"{HomemadeScaler.__module__}.HomemadeScaler"
    folder = save_sklearn(model, tmp_path / "custom", input_example=x.head(2), skops_trusted_types=[name])
    with pytest.raises(ConversionError, match=rf"does not trust: {name}"):
        build_bundle(str(folder), tmp_path / "b")


def test_tree_with_out_of_range_node_index_is_refused_before_use(tmp_path: Path) -> None:
    import skops.io
    from sklearn.ensemble import RandomForestClassifier

    _, x = iris_pipeline()
    y = (x.iloc[:, 2] > 3).astype(int)
    forest = RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(x, y)
    folder = save_sklearn(
        forest, tmp_path / "forest", input_example=x.head(2), skops_trusted_types=["sklearn.tree._tree.Tree"]
    )
    tree = forest.estimators_[1].tree_
    state = tree.__getstate__()
    state["nodes"]["left_child"][0] = 10**6  # a crafted file: predict() would read out of bounds
    tree.__setstate__(state)
    skops.io.dump(forest, folder / "model.skops")
    with pytest.raises(ConversionError, match="out-of-range node indices"):
        build_bundle(str(folder), tmp_path / "b")


def test_pickled_model_needs_explicit_trust(tmp_path: Path) -> None:
    model, x = iris_pipeline()
    folder = save_sklearn(model, tmp_path / "pickled", input_example=x.head(3), serialization_format="cloudpickle")
    with pytest.raises(ConversionError, match="loading a pickle runs arbitrary code") as err:
        build_bundle(str(folder), tmp_path / "b")
    assert "--trust-pickle" in (err.value.hint or "")
    assert not (tmp_path / "b").exists()
    report = build_bundle(str(folder), tmp_path / "b", options=BundleOptions(trust_pickle=True))
    assert report.manifest.extra["converter_notes"]["trusted_pickle"] is True
    assert report.parity is not None and report.parity.passed


def test_missing_model_file_is_a_bundle_error(tmp_path: Path) -> None:
    model, x = iris_pipeline()
    folder = save_sklearn(model, tmp_path / "m", input_example=x.head(3))
    os.remove(folder / "model.skops")
    shutil.rmtree(tmp_path / "b", ignore_errors=True)
    with pytest.raises(Exception, match=r"model\.skops is missing"):
        build_bundle(str(folder), tmp_path / "b")


def test_hist_gradient_boosting_loads_and_a_crafted_one_is_refused(tmp_path: Path) -> None:
    import skops.io
    from modeldeck.core.bundle.trust import load_skops
    from sklearn.ensemble import HistGradientBoostingClassifier

    _, x = iris_pipeline()
    y = (x.iloc[:, 2] > 3).astype(int)
    model = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    path = tmp_path / "model.skops"
    skops.io.dump(model, path)
    loaded = load_skops(path)  # needs TreePredictor, an allow-listed sklearn class
    assert (loaded.predict(x) == model.predict(x)).all()

    model._predictors[3][0].nodes["feature_idx"][0] = 99  # predict() would read column 99 of a 4-column row
    skops.io.dump(model, path)
    with pytest.raises(ConversionError, match="histogram gradient-boosting tree with out-of-range node indices"):
        load_skops(path)
