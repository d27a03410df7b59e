"""The parity check: ONNX must answer like the original, or there is no bundle."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from modeldeck.core.bundle import BundleOptions, build_bundle, register_converter, unregister_converter
from modeldeck.core.bundle.converters import ConvertOptions, SklearnConverter
from modeldeck.core.bundle.parity import Rows, compare, generate_rows
from modeldeck.core.bundle.source import ModelSource
from modeldeck.core.errors import ParityError
from modeldeck.core.runtime.manifest import ColumnSpec

from tests.fixtures.bundles import MlflowStore

pytestmark = pytest.mark.slow


def test_float32_error_beyond_zero_tolerance_is_a_parity_error_and_no_bundle(
    bundle_store: MlflowStore, tmp_path: Path
) -> None:
    exact = BundleOptions(rtol=0.0, atol=0.0)
    with pytest.raises(
        ParityError, match=r"parity failed: output 'variable' row \d+: original .* max abs error"
    ) as err:
        build_bundle(
            "models:/diabetes-regressor/1", tmp_path / "b", tracking_uri=bundle_store.tracking_uri, options=exact
        )
    assert "--rtol/--atol" in (err.value.hint or "")
    assert list(tmp_path.iterdir()) == []


class ShuffledLabelsConverter(SklearnConverter):
    """Converts faithfully, then ships an ONNX model trained on shuffled labels: a broken converter."""

    def convert(self, source: ModelSource, options: ConvertOptions) -> Any:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        good = super().convert(source, options)
        x, y = load_iris(return_X_y=True)
        wrong = LogisticRegression(max_iter=300).fit(x, np.random.default_rng(0).permutation(y))
        onx = to_onnx(wrong, initial_types=[("input", FloatTensorType([None, 4]))], options={"zipmap": False})
        return dataclasses.replace(good, model=onx)


def test_converter_producing_a_wrong_model_fails_parity_on_labels(bundle_store: MlflowStore, tmp_path: Path) -> None:
    broken = ShuffledLabelsConverter()
    register_converter(broken, first=True)
    try:
        with pytest.raises(ParityError, match=r"parity failed: label differs on \d+ of 205 rows \(first: row \d+"):
            build_bundle("models:/iris-classifier/1", tmp_path / "b", tracking_uri=bundle_store.tracking_uri)
    finally:
        unregister_converter(broken)
    assert list(tmp_path.iterdir()) == []


def test_parity_rows_zero_checks_only_the_example(bundle_store: MlflowStore, tmp_path: Path) -> None:
    report = build_bundle(
        "models:/iris-classifier/1",
        tmp_path / "b",
        tracking_uri=bundle_store.tracking_uri,
        options=BundleOptions(parity_rows=0),
    )
    assert report.parity is not None and report.parity.rows == 5


def test_generated_rows_are_deterministic_and_shaped_like_the_example() -> None:
    example = Rows(pd.DataFrame({"x": [1.0, 2.0, 3.0], "city": ["oslo", "rome", "oslo"], "n": [5, 5, 5]}), 3)
    specs = [ColumnSpec("x", "double"), ColumnSpec("city", "string"), ColumnSpec("n", "long")]
    a = generate_rows(example, specs, "columns", 500)
    b = generate_rows(example, specs, "columns", 500)
    assert a is not None and b is not None
    pd.testing.assert_frame_equal(a.batch, b.batch)
    df = a.batch
    assert df["x"].between(0.8, 3.2).all() and df["x"].nunique() > 100
    assert set(df["city"]) == {"oslo", "rome"}
    assert df["n"].between(4, 6).all() and df["n"].dtype == np.int64
    assert (df["x"].astype(np.float32).astype(np.float64) == df["x"]).all()  # float32-exact, so both models agree


def test_generated_tensors_have_the_example_shape() -> None:
    example = Rows({"pixels": np.zeros((2, 3, 4), dtype=np.float32)}, 2)
    rows = generate_rows(example, [ColumnSpec("pixels", "float32", shape=(-1, 3, 4))], "tensor", 7)
    assert rows is not None and rows.batch["pixels"].shape == (7, 3, 4) and rows.batch["pixels"].dtype == np.float32


def test_label_flip_on_a_tie_is_excused_but_not_elsewhere() -> None:
    proba = np.array([[0.5, 0.5], [0.1, 0.9]])
    tie = compare(
        {"label": np.array([0, 1]), "probabilities": proba},
        {"label": np.array([1, 1]), "probabilities": proba.astype(np.float32)},
        rows=2,
        rtol=1e-3,
        atol=1e-4,
        label_output="label",
    )
    assert tie.passed and tie.label_agreement == 0.5
    with pytest.raises(ParityError, match="label differs on 1 of 2 rows"):
        compare(
            {"label": np.array([0, 1]), "probabilities": proba},
            {"label": np.array([0, 0]), "probabilities": proba},
            rows=2,
            rtol=1e-3,
            atol=1e-4,
            label_output="label",
        )


@given(
    values=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    rel=st.floats(0, 0.9),
)
def test_differences_within_tolerance_always_pass_and_beyond_always_fail(values: np.ndarray, rel: float) -> None:
    rtol, atol = 1e-3, 1e-4
    close = values + np.sign(values) * rel * (atol + rtol * np.abs(values))
    parity = compare(
        {"variable": values}, {"variable": close}, rows=len(values), rtol=rtol, atol=atol, label_output=None
    )
    assert parity.passed and parity.max_abs_error <= (atol + rtol * np.abs(values)).max()
    far = values.copy()
    far[-1] += 3 * (atol + rtol * abs(values[-1]))
    with pytest.raises(ParityError, match=f"row {len(values) - 1}:"):
        compare({"variable": values}, {"variable": far}, rows=len(values), rtol=rtol, atol=atol, label_output=None)
