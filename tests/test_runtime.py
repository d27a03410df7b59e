"""The serving runtime over real HTTP: MLflow scoring protocol, Open Inference Protocol v2, errors, metrics, CORS.

Every test talks to a real ``python -m modeldeck.core.runtime serve`` process on
127.0.0.1 and compares answers with the original scikit-learn model.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from modeldeck.core.runtime.manifest import read_manifest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.runtime import RuntimeProcess, start_runtime

pytestmark = pytest.mark.server

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = [5.1, 3.5, 1.4, 0.2]


def post(url: str, body: Any, content_type: str = "application/json", **kw: Any) -> httpx.Response:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return httpx.post(url, content=content, headers={"content-type": content_type}, timeout=10, **kw)


def _iris_bodies(X: np.ndarray) -> dict[str, tuple[Any, str]]:
    rows = X.tolist()
    records = [dict(zip(IRIS_COLUMNS, r, strict=True)) for r in rows]
    csv = ",".join(IRIS_COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"
    return {
        "dataframe_split": ({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}}, "application/json"),
        "dataframe_split_reordered": (
            {"dataframe_split": {"columns": IRIS_COLUMNS[::-1], "data": [r[::-1] for r in rows]}},
            "application/json",
        ),
        "dataframe_records": ({"dataframe_records": records}, "application/json"),
        "instances": ({"instances": records}, "application/json"),
        "inputs_records": ({"inputs": records}, "application/json"),
        "inputs_columns": (
            {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(IRIS_COLUMNS)}},
            "application/json",
        ),
        "inputs_positional": ({"inputs": rows}, "application/json; charset=utf-8"),
        "csv": (csv, "text/csv"),
    }


@pytest.mark.parametrize(
    "form",
    [
        "dataframe_split",
        "dataframe_split_reordered",
        "dataframe_records",
        "instances",
        "inputs_records",
        "inputs_columns",
        "inputs_positional",
        "csv",
    ],
)
def test_every_mlflow_input_format_predicts_what_sklearn_predicts(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any], form: str
) -> None:
    bundle = runtime_bundles["iris"]
    X = bundle.X[::10]
    body, ctype = _iris_bodies(X)[form]
    r = post(f"{iris_runtime.url}/invocations", body, ctype)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"predictions": bundle.model.predict(X).tolist()}


def test_regressor_predictions_are_floats_close_to_sklearn(
    diabetes_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    bundle = runtime_bundles["diabetes"]
    X = bundle.X[:25]
    r = post(
        f"{diabetes_runtime.url}/invocations",
        {"dataframe_split": {"columns": bundle.feature_names, "data": X.tolist()}},
    )
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert all(isinstance(p, float) for p in predictions)  # a flat list, as sklearn's predict() gives
    np.testing.assert_allclose(predictions, bundle.model.predict(X), rtol=1e-4, atol=1e-3)


def test_v2_infer_by_onnx_input_name(iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]) -> None:
    bundle = runtime_bundles["iris"]
    X = bundle.X[:7]
    body = {
        "id": "req-1",
        "inputs": [{"name": "float_input", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}],
    }
    r = post(f"{iris_runtime.url}/v2/models/iris/infer", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "iris" and out["model_version"] == "3" and out["id"] == "req-1"
    by_name = {o["name"]: o for o in out["outputs"]}
    assert by_name["label"]["datatype"] == "INT64" and by_name["label"]["shape"] == [7]
    assert by_name["label"]["data"] == bundle.model.predict(X).tolist()
    assert by_name["probabilities"]["shape"] == [7, 3]
    np.testing.assert_allclose(
        np.array(by_name["probabilities"]["data"]).reshape(7, 3), bundle.model.predict_proba(X), atol=1e-5
    )


def test_v2_infer_by_signature_columns_and_output_selection(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    bundle = runtime_bundles["iris"]
    X = bundle.X[40:60]
    inputs = [
        {"name": c, "shape": [len(X)], "datatype": "FP64", "data": X[:, i].tolist()} for i, c in enumerate(IRIS_COLUMNS)
    ]
    r = post(f"{iris_runtime.url}/v2/models/iris/versions/3/infer", {"inputs": inputs, "outputs": [{"name": "label"}]})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert [o["name"] for o in outputs] == ["label"]
    assert outputs[0]["data"] == bundle.model.predict(X).tolist()


def test_v2_metadata_describes_the_onnx_model(iris_runtime: RuntimeProcess) -> None:
    meta = httpx.get(f"{iris_runtime.url}/v2/models/iris", timeout=5).json()
    assert meta["name"] == "iris" and meta["versions"] == ["3"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"label": "INT64", "probabilities": "FP32"}
    server = httpx.get(f"{iris_runtime.url}/v2", timeout=5).json()
    assert server["name"] == "modeldeck"
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/iris/ready", "/ping", "/health"):
        assert httpx.get(f"{iris_runtime.url}{path}", timeout=5).status_code == 200, path
    assert httpx.get(f"{iris_runtime.url}/ping", timeout=5).text == "\n"


def test_version_reports_model_identity(iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]) -> None:
    info = httpx.get(f"{iris_runtime.url}/version", timeout=5).json()
    manifest = read_manifest(runtime_bundles["iris"].path)
    assert info["model_name"] == "iris" and info["model_version"] == "3"
    assert info["bundle_sha256"] == manifest.sha256


def test_openapi_document_derives_the_request_schema_from_the_signature(iris_runtime: RuntimeProcess) -> None:
    doc = httpx.get(f"{iris_runtime.url}/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.")
    assert {"/invocations", "/v2/models/iris/infer", "/metrics", "/ping"} <= set(doc["paths"])
    schema = doc["paths"]["/invocations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    records = schema["oneOf"][1]["properties"]["dataframe_records"]["items"]
    assert sorted(records["properties"]) == sorted(IRIS_COLUMNS)
    assert records["properties"]["sepal_length"]["type"] == "number"


SPLIT = "dataframe_split"
MALFORMED: list[tuple[str, str, str, Any, str, int, str]] = [
    # id, path, content type, body, method, expected status, expected message fragment
    ("not_json", "/invocations", "application/json", b"{not json", "POST", 400, "not valid JSON"),
    ("not_utf8", "/invocations", "application/json", b'{"inputs": "\xff"}', "POST", 400, "not valid UTF-8"),
    ("empty_body", "/invocations", "application/json", b"", "POST", 400, "empty"),
    ("json_list", "/invocations", "application/json", [1, 2], "POST", 400, "JSON object"),
    ("no_known_key", "/invocations", "application/json", {"rows": [ROW]}, "POST", 400, "exactly one of the keys"),
    ("two_keys", "/invocations", "application/json", {"inputs": [ROW], "instances": [ROW]}, "POST", 400, "exactly one"),
    ("unknown_column", "/invocations", "application/json",
     {SPLIT: {"columns": [*IRIS_COLUMNS[:3], "colour"], "data": [ROW]}}, "POST", 400, "unknown column 'colour'"),
    ("missing_column", "/invocations", "application/json",
     {SPLIT: {"columns": IRIS_COLUMNS[:3], "data": [ROW[:3]]}}, "POST", 400, "missing column 'petal_width'"),
    ("missing_in_record", "/invocations", "application/json",
     {"dataframe_records": [dict(zip(IRIS_COLUMNS[:3], ROW, strict=False))]}, "POST", 400, "missing column"),
    ("string_for_double", "/invocations", "application/json",
     {SPLIT: {"columns": IRIS_COLUMNS, "data": [[5.1, "wide", 1.4, 0.2]]}}, "POST", 400,
     "column 'sepal_width' expects double, got string"),
    ("bool_for_double", "/invocations", "application/json",
     {SPLIT: {"columns": IRIS_COLUMNS, "data": [[5.1, True, 1.4, 0.2]]}}, "POST", 400, "expects double, got boolean"),
    ("null_value", "/invocations", "application/json",
     {SPLIT: {"columns": IRIS_COLUMNS, "data": [[5.1, None, 1.4, 0.2]]}}, "POST", 400, "missing value (null)"),
    ("nan_value", "/invocations", "application/json",
     b'{"dataframe_split": {"columns": ["sepal_length","sepal_width","petal_length","petal_width"],'
     b' "data": [[5.1, NaN, 1.4, 0.2]]}}', "POST", 400, "missing value (NaN)"),
    ("ragged_rows", "/invocations", "application/json",
     {SPLIT: {"columns": IRIS_COLUMNS, "data": [ROW, ROW[:3]]}}, "POST", 400, "ragged"),
    ("short_rows", "/invocations", "application/json",
     {SPLIT: {"columns": IRIS_COLUMNS, "data": [ROW[:3]]}}, "POST", 400, "every row must have 4 values"),
    ("nested_cells", "/invocations", "application/json",
     {SPLIT: {"columns": IRIS_COLUMNS, "data": [[[1], [2], [3], [4]]]}}, "POST", 400, "row"),
    ("no_rows", "/invocations", "application/json", {SPLIT: {"columns": IRIS_COLUMNS, "data": []}}, "POST", 400,
     "no rows"),
    ("empty_records", "/invocations", "application/json", {"dataframe_records": []}, "POST", 400, "no rows"),
    ("wrong_content_type", "/invocations", "text/plain", b"5.1,3.5,1.4,0.2", "POST", 415, "unsupported content type"),
    ("latin1_charset", "/invocations", "application/json; charset=latin-1", {"inputs": [ROW]}, "POST", 415, "UTF-8"),
    ("csv_bad_number", "/invocations", "text/csv", ",".join(IRIS_COLUMNS) + "\n5.1,x,1.4,0.2\n", "POST", 400,
     "expects double"),
    ("csv_header_only", "/invocations", "text/csv", ",".join(IRIS_COLUMNS) + "\n", "POST", 400, "no rows"),
    ("v2_no_inputs", "/v2/models/iris/infer", "application/json", {"outputs": []}, "POST", 400, '"inputs"'),
    ("v2_bad_datatype", "/v2/models/iris/infer", "application/json",
     {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP99", "data": ROW}]}, "POST", 400,
     "unknown datatype"),
    ("v2_shape_mismatch", "/v2/models/iris/infer", "application/json",
     {"inputs": [{"name": "float_input", "shape": [2, 4], "datatype": "FP32", "data": ROW}]}, "POST", 400,
     "needs 8 values"),
    ("v2_wrong_width", "/v2/models/iris/infer", "application/json",
     {"inputs": [{"name": "float_input", "shape": [1, 3], "datatype": "FP32", "data": ROW[:3]}]}, "POST", 400,
     "the model expects [N, 4]"),
    ("v2_unknown_input", "/v2/models/iris/infer", "application/json",
     {"inputs": [{"name": "pixels", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}, "POST", 400,
     "unknown input 'pixels'"),
    ("v2_strings_as_fp32", "/v2/models/iris/infer", "application/json",
     {"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]},
     "POST", 400, "must be numbers"),
    ("v2_unknown_model", "/v2/models/cats/infer", "application/json", {"inputs": []}, "POST", 404, "no model 'cats'"),
    ("unknown_route", "/predict", "application/json", {"inputs": [ROW]}, "POST", 404, "no route /predict"),
    ("wrong_method", "/invocations", "application/json", b"", "GET", 405, "GET is not allowed on /invocations"),
    ("wrong_method_ping", "/ping", "application/json", b"", "DELETE", 405, "use GET"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "ctype", "body", "method", "status", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_requests_get_a_json_error_naming_the_problem(
    iris_runtime: RuntimeProcess, path: str, ctype: str, body: Any, method: str, status: int, message: str
) -> None:
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    r = httpx.request(method, f"{iris_runtime.url}{path}", content=content, headers={"content-type": ctype}, timeout=10)
    assert r.status_code == status, r.text
    error = r.json()
    assert set(error) == {"error_code", "message"}
    assert message in error["message"]
    if status in (400, 415):
        assert error["error_code"] == "BAD_REQUEST"
    # and the server keeps serving
    assert post(f"{iris_runtime.url}/invocations", {"inputs": [ROW]}).status_code == 200


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    iris_runtime: RuntimeProcess, runtime_bundles: dict[str, Any]
) -> None:
    bundle = runtime_bundles["iris"]
    slices = [bundle.X[i : i + 1 + i % 5] for i in range(0, 150, 3)]
    expected = [bundle.model.predict(X).tolist() for X in slices]  # sklearn itself stays on this thread

    def one(X: np.ndarray) -> list[int]:
        with httpx.Client(timeout=10) as client:
            r = client.post(
                f"{iris_runtime.url}/invocations",
                content=json.dumps({"dataframe_split": {"columns": IRIS_COLUMNS, "data": X.tolist()}}),
                headers={"content-type": "application/json"},
            )
        return r.json()["predictions"]  # type: ignore[no-any-return]

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, slices)) == expected


def test_onnxruntime_failure_is_a_500_and_the_server_keeps_serving(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    rp = start_runtime(runtime_bundles["fragile"], tmp_path)
    runtime_processes.append(rp)
    cols = ["a", "b", "c", "d"]
    bad = post(f"{rp.url}/invocations", {"dataframe_split": {"columns": cols, "data": [[1, 2, 3, 4]]}})
    assert bad.status_code == 500
    assert bad.json()["error_code"] == "INTERNAL_ERROR"
    assert "inference failed" in bad.json()["message"]
    good = post(f"{rp.url}/invocations", {"dataframe_split": {"columns": cols, "data": [[1, 2, 3, 4]] * 3}})
    assert good.status_code == 200
    assert len(good.json()["predictions"]) == 4  # 3 rows x 4 values reshaped to [-1, 3]
    # a failing request batched together with good ones fails alone
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda n: (
                    post(
                        f"{rp.url}/invocations", {"dataframe_split": {"columns": cols, "data": [[1, 2, 3, 4]] * n}}
                    ).status_code
                ),
                [1, 3, 6, 1, 3, 6, 1, 3],
            )
        )
    assert statuses == [500, 200, 200, 500, 200, 200, 500, 200]
    metrics = _metrics(rp.url)
    assert metrics["modeldeck_inference_errors_total"][()] >= 4
    rp.terminate()


def _metrics(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_metrics_count_what_was_sent(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    rp = start_runtime(runtime_bundles["iris"].path, tmp_path, config={"deployment_name": "iris-prod"})
    runtime_processes.append(rp)
    for _ in range(5):
        assert post(f"{rp.url}/invocations", {"inputs": [ROW, ROW]}).status_code == 200
    for _ in range(3):
        assert post(f"{rp.url}/invocations", {"inputs": [["x"] * 4]}).status_code == 400
    for _ in range(2):
        assert httpx.get(f"{rp.url}/nowhere/{_}", timeout=5).status_code == 404
    m = _metrics(rp.url)
    requests = m["modeldeck_requests_total"]
    assert requests[(("route", "/invocations"), ("status", "200"))] == 5
    assert requests[(("route", "/invocations"), ("status", "400"))] == 3
    assert requests[(("route", "other"), ("status", "404"))] == 2  # raw paths never become labels
    assert m["modeldeck_request_duration_seconds_count"][(("route", "/invocations"),)] == 8
    assert m["modeldeck_batch_size_sum"][()] >= 10  # 5 requests x 2 rows (+ nothing else: warm-up is not counted)
    assert m["modeldeck_batch_size_sum"][()] == 10
    assert m["modeldeck_inference_duration_seconds_count"][()] >= 1
    assert m["modeldeck_requests_in_flight"][()] == 1  # the scrape itself
    info = next(iter(m["modeldeck_model_info"]))
    labels = dict(info)
    manifest = read_manifest(runtime_bundles["iris"].path)
    assert labels["name"] == "iris" and labels["version"] == "3" and labels["bundle_sha256"] == manifest.sha256
    assert labels["deployment"] == "iris-prod" and labels["runtime_version"]
    assert m["process_resident_memory_bytes"][()] > 10_000_000
    assert m["process_cpu_seconds_total"][()] > 0
    assert m["modeldeck_uptime_seconds"][()] >= 0
    assert m["modeldeck_ready"][()] == 1
    rp.terminate()


@pytest.fixture(scope="module")
def strict_runtime(runtime_bundles: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Any:
    rp = start_runtime(
        runtime_bundles["iris"].path,
        tmp_path_factory.mktemp("strict"),
        config={"cors_origins": ["https://app.example"], "max_body_bytes": 2048},
    )
    yield rp
    rp.terminate()


def test_oversize_body_is_refused_with_413(strict_runtime: RuntimeProcess) -> None:
    big = {"inputs": [ROW] * 200}
    r = post(f"{strict_runtime.url}/invocations", big)
    assert r.status_code == 413
    assert r.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert "2048" in r.json()["message"]


def test_oversize_chunked_body_is_refused_while_reading(strict_runtime: RuntimeProcess) -> None:
    def chunks() -> Any:
        yield b'{"inputs": ['
        for _ in range(400):
            yield b"[5.1, 3.5, 1.4, 0.2],"
        yield b"[5.1, 3.5, 1.4, 0.2]]}"

    r = httpx.post(
        f"{strict_runtime.url}/invocations", content=chunks(), headers={"content-type": "application/json"}, timeout=10
    )
    assert r.status_code == 413
    assert post(f"{strict_runtime.url}/invocations", {"inputs": [ROW]}).status_code == 200


def test_cors_allows_only_configured_origins(strict_runtime: RuntimeProcess) -> None:
    url = f"{strict_runtime.url}/invocations"
    r = httpx.post(
        url,
        content=json.dumps({"inputs": [ROW]}),
        headers={"content-type": "application/json", "origin": "https://app.example"},
        timeout=5,
    )
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    r = httpx.post(
        url,
        content=json.dumps({"inputs": [ROW]}),
        headers={"content-type": "application/json", "origin": "https://evil.example"},
        timeout=5,
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = httpx.options(
        url,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
        timeout=5,
    )
    assert pre.status_code == 204
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    denied = httpx.options(url, headers={"origin": "https://evil.example", "access-control-request-method": "POST"})
    assert denied.status_code == 403


def test_cors_is_off_by_default(iris_runtime: RuntimeProcess) -> None:
    url = f"{iris_runtime.url}/invocations"
    r = httpx.post(
        url,
        content=json.dumps({"inputs": [ROW]}),
        headers={"content-type": "application/json", "origin": "https://app.example"},
        timeout=5,
    )
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = httpx.options(url, headers={"origin": "https://app.example", "access-control-request-method": "POST"})
    assert pre.status_code == 405
