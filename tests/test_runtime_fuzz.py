"""Bounded fuzzing of the runtime's request parsing over real HTTP: whatever a client sends, the answer is
a JSON 2xx/4xx (never a 5xx -- the only documented 5xx is an onnxruntime failure, which a valid iris request
cannot cause) and the server stays up."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.runtime import RuntimeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(COLUMNS),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(COLUMNS), children, max_size=5)
    ),
    max_leaves=30,
)
rows = st.lists(st.lists(st.one_of(st.floats(allow_nan=False, width=32), scalars), min_size=0, max_size=6), max_size=5)
mlflow_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "dataframe_split": st.fixed_dictionaries(
                {"columns": st.lists(st.sampled_from(COLUMNS) | st.text(max_size=4), max_size=5), "data": rows}
            )
        }
    ),
    st.fixed_dictionaries(
        {"dataframe_records": st.lists(st.dictionaries(st.sampled_from(COLUMNS), scalars), max_size=4)}
    ),
    st.fixed_dictionaries({"instances": json_values}),
    st.fixed_dictionaries(
        {
            "inputs": st.one_of(
                rows, json_values, st.dictionaries(st.sampled_from(COLUMNS), st.lists(scalars, max_size=4))
            )
        }
    ),
)
v2_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["float_input", *COLUMNS, "x"]),
        "shape": st.lists(st.integers(min_value=-1, max_value=5), max_size=3) | json_values,
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "UINT8", "FP16", "nope"]),
        "data": st.lists(st.one_of(st.floats(width=32), scalars), max_size=12) | json_values,
    }
)
v2_bodies = st.one_of(json_values, st.fixed_dictionaries({"inputs": st.lists(v2_tensor, max_size=4)}))


def _check(rp: RuntimeProcess, path: str, content: bytes, ctype: str) -> None:
    r = httpx.post(f"{rp.url}{path}", content=content, headers={"content-type": ctype}, timeout=10)
    assert r.status_code < 500, (content[:300], r.text)
    assert r.headers["content-type"] == "application/json"
    r.json()


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(body=mlflow_bodies)
def test_fuzzed_invocations_bodies_never_cause_a_server_error(iris_runtime: RuntimeProcess, body: Any) -> None:
    _check(iris_runtime, "/invocations", json.dumps(body).encode(), "application/json")


@FUZZ
@given(body=v2_bodies)
def test_fuzzed_v2_infer_bodies_never_cause_a_server_error(iris_runtime: RuntimeProcess, body: Any) -> None:
    _check(iris_runtime, "/v2/models/iris/infer", json.dumps(body).encode(), "application/json")


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=200), ctype=st.sampled_from(["application/json", "text/csv", "text/csv; charset=utf-8"]))
def test_fuzzed_raw_bytes_never_cause_a_server_error(iris_runtime: RuntimeProcess, body: bytes, ctype: str) -> None:
    _check(iris_runtime, "/invocations", body, ctype)


def test_server_is_alive_after_fuzzing(iris_runtime: RuntimeProcess) -> None:
    assert iris_runtime.proc.poll() is None
    r = httpx.post(f"{iris_runtime.url}/invocations", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10)
    assert r.json() == {"predictions": [0]}


_STDLIB = json.JSONDecoder()


def _stdlib_parse(body: bytes) -> tuple[str, Any]:
    try:
        return "ok", _STDLIB.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return "error", type(exc).__name__


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [[5.1, NaN, Infinity, -Infinity]]}',  # MLflow clients send NaN for a missing value
        b'{"a": "\\ud800"}',  # a lone surrogate
        b'{"a": 123456789012345678901234567890}',  # beyond 64 bits
        b'{"a": 1e400, "b": -0.0, "c": 18446744073709551615}',
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM
        b'{"a": "\xff"}',  # not UTF-8
        b'{"a": 1, "a": 2}',
        b"[" * 3000 + b"]" * 3000,
        b'{"a": 1} x',
    ],
)
def test_request_bodies_parse_exactly_as_the_stdlib_json_parser_does(body: bytes) -> None:
    """The fast parser is an optimisation only: what it refuses goes to the stdlib, so results never differ."""
    from modeldeck.core.runtime.model import RequestError, _loads

    expected = _stdlib_parse(body)
    try:
        got: tuple[str, Any] = ("ok", _loads(body))
    except RequestError:
        got = ("error", expected[1])
    assert got[0] == expected[0]
    if got[0] == "ok":
        assert repr(got[1]) == repr(expected[1])


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_any_json_value_parses_as_the_stdlib_would(value: Any) -> None:
    from modeldeck.core.runtime.model import _loads

    body = json.dumps(value).encode()
    assert repr(_loads(body)) == repr(json.loads(body))
