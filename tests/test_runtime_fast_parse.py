"""The parser's fast path (plain numbers straight into the float feed) answers exactly as the full path:
same feeds, same dtype, same refusals with the same words."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from modeldeck.core.runtime.manifest import verify_bundle
from modeldeck.core.runtime.model import RequestError, ServedModel

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CASES: list[Any] = [
    [[5.1, 3.5, 1.4, 0.2]],
    [[5, 3, 1, 0], [6.7, 3.0, 5.2, 2.3]],
    [[10**30, 1, 1, 1]],
    [[10**400, 1, 1, 1]],
    [[True, 1, 1, 1]],
    [["1.5", 1, 1, 1]],
    [[None, 1, 1, 1]],
    [[1, 2, 3]],
    [[1, 2, 3, 4], [1, 2, 3]],
    [[[1], 2, 3, 4]],
    [[0.25 * i, 1, 2, 3] for i in range(100)],  # above the fast path's row limit
]


@pytest.fixture(scope="module")
def served(runtime_bundles: dict[str, Any]) -> ServedModel:
    path = runtime_bundles["iris"].path
    model = ServedModel(path, verify_bundle(path))
    model.load()
    return model


def _outcome(model: ServedModel, body: bytes) -> Any:
    try:
        item = model.parse_invocations(body, "application/json")
    except RequestError as exc:
        return ("refused", exc.status, exc.message)
    ((name, arr),) = item.feeds.items()
    return (name, arr.dtype.str, arr.shape, arr.tolist(), item.rows, item.key())


@pytest.mark.parametrize("data", CASES, ids=range(len(CASES)))
@pytest.mark.parametrize("form", ["dataframe_split", "inputs"])
def test_fast_path_and_full_path_agree(served: ServedModel, data: Any, form: str) -> None:
    payload = {"dataframe_split": {"columns": COLUMNS, "data": data}} if form == "dataframe_split" else {form: data}
    body = json.dumps(payload).encode()
    fast = _outcome(served, body)
    dtype, served._fast_dtype = served._fast_dtype, None
    try:
        full = _outcome(served, body)
    finally:
        served._fast_dtype = dtype
    assert dtype == np.dtype("float32")
    assert fast == full


def test_nan_literal_in_a_required_column_is_refused_on_the_fast_path(served: ServedModel) -> None:
    body = b'{"inputs": [[NaN, 1, 2, 3]]}'
    with pytest.raises(RequestError, match="missing value \\(NaN\\)"):
        served.parse_invocations(body, "application/json")
