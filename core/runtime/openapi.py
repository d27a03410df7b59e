"""The OpenAPI 3 document of a runtime's own HTTP API, with request schemas derived from the signature."""

from __future__ import annotations

from typing import Any

from modeldeck.core.runtime.manifest import Manifest

_JSON_TYPES = {
    "double": {"type": "number"},
    "float": {"type": "number"},
    "long": {"type": "integer"},
    "integer": {"type": "integer"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
}


def _error() -> dict[str, Any]:
    return {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(manifest: Manifest, runtime_version: str) -> dict[str, Any]:
    """Describe ``/invocations`` (MLflow scoring protocol), the v2 endpoints and the probes."""
    columns = {c.name: dict(_JSON_TYPES.get(c.type, {}), nullable=c.optional) for c in manifest.inputs}
    names = [c.name for c in manifest.inputs]
    required = [c.name for c in manifest.inputs if not c.optional]
    cell = {"oneOf": [v for v in {str(s): s for s in columns.values()}.values()]} if columns else {}
    record = {"type": "object", "properties": columns, "required": required, "additionalProperties": False}
    split = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string", "enum": names}},
            "data": {"type": "array", "minItems": 1, "items": {"type": "array", "items": cell}},
        },
    }
    invocation: dict[str, Any]
    if manifest.input_kind == "columns":
        invocation = {
            "oneOf": [
                {"type": "object", "required": ["dataframe_split"], "properties": {"dataframe_split": split}},
                {
                    "type": "object",
                    "required": ["dataframe_records"],
                    "properties": {"dataframe_records": {"type": "array", "minItems": 1, "items": record}},
                },
                {
                    "type": "object",
                    "required": ["instances"],
                    "properties": {"instances": {"type": "array", "minItems": 1, "items": record}},
                },
                {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "inputs": {
                            "oneOf": [
                                {"type": "array", "minItems": 1, "items": record},
                                {
                                    "type": "object",
                                    "properties": {k: {"type": "array", "items": v} for k, v in columns.items()},
                                },
                            ]
                        }
                    },
                },
            ]
        }
    else:
        invocation = {
            "type": "object",
            "properties": {"inputs": {}, "instances": {}},
            "description": "tensors: "
            + ", ".join(f"{f.onnx_input} ({f.dtype}, shape {f.shape})" for f in manifest.feeds),
        }
    v2_tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string"},
            "data": {"type": "array"},
        },
    }
    ok_json = {"description": "OK", "content": {"application/json": {}}}
    model_path = f"/v2/models/{manifest.model_name}"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"ModelDeck runtime: {manifest.model_name} version {manifest.model_version}",
            "version": runtime_version,
            "description": "MLflow scoring protocol and Open Inference Protocol v2 for one ONNX bundle "
            f"(sha256 {manifest.sha256}).",
        },
        "paths": {
            "/invocations": {
                "post": {
                    "summary": "Predict (MLflow scoring protocol)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": invocation},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Predictions",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"predictions": {"type": "array"}},
                                    }
                                }
                            },
                        },
                        "400": _error(),
                        "413": _error(),
                        "415": _error(),
                        "500": _error(),
                        "503": _error(),
                    },
                }
            },
            "/ping": {
                "get": {"summary": "200 once the model is ready", "responses": {"200": ok_json, "503": _error()}}
            },
            "/health": {"get": {"summary": "Same as /ping", "responses": {"200": ok_json, "503": _error()}}},
            "/version": {"get": {"summary": "Runtime and model versions", "responses": {"200": ok_json}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "OK"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": ok_json}}},
            "/v2": {"get": {"summary": "Server metadata", "responses": {"200": ok_json}}},
            "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": ok_json}}},
            "/v2/health/ready": {"get": {"summary": "Readiness", "responses": {"200": ok_json, "503": _error()}}},
            model_path: {"get": {"summary": "Model metadata", "responses": {"200": ok_json, "404": _error()}}},
            f"{model_path}/ready": {"get": {"summary": "Model readiness", "responses": {"200": ok_json}}},
            f"{model_path}/infer": {
                "post": {
                    "summary": "Predict (Open Inference Protocol v2)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["inputs"],
                                    "properties": {
                                        "id": {"type": "string"},
                                        "inputs": {"type": "array", "minItems": 1, "items": v2_tensor},
                                        "outputs": {"type": "array"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": ok_json, "400": _error(), "413": _error(), "500": _error()},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error_code", "message"],
                    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
                }
            }
        },
    }
