"""The served model: request bodies in, validated ONNX feeds, predictions out.

Everything here is plain synchronous code over numpy and onnxruntime; the
HTTP layer (:mod:`.app`) and the batcher (:mod:`.batching`) call into it. Parsing
follows MLflow's scoring protocol (``dataframe_split``, ``dataframe_records``,
``instances``, ``inputs``, CSV) and the Open Inference Protocol v2, and every
malformed request becomes a :class:`RequestError` with an HTTP status and a
message a client can act on -- never an exception that reaches the server.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from modeldeck.core.errors import BundleError

try:  # 4x faster decoding of request bodies; the stdlib parser stays the reference (see _loads)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - a target without orjson still serves, just slower
    _fast_loads = None  # type: ignore[assignment]
from modeldeck.core.runtime.manifest import ColumnSpec, Feed, Manifest

log = logging.getLogger(__name__)

_NUMERIC_TYPES = {"double", "float"}
_INTEGER_TYPES = {"long", "integer"}
_DECODE = json.JSONDecoder().decode
_ENCODE = json.JSONEncoder().encode
# A run of 19+ digits may not fit 64 bits (see _loads); translate + find is ~4x faster than a regex here.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19
_MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")

# Open Inference Protocol v2 tensor datatypes <-> numpy.
V2_TO_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
_ORT_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class RequestError(Exception):
    """A request the runtime refuses: answered with ``status`` and an MLflow-style JSON error."""

    def __init__(self, message: str, status: int = 400, error_code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code


class InferenceError(Exception):
    """onnxruntime failed on input that passed validation (answered with 500)."""


@dataclass(frozen=True)
class TensorInfo:
    """One ONNX input or output as the v2 metadata endpoint describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass
class Batchable:
    """One validated request: ONNX feeds whose first axis is ``rows``."""

    feeds: dict[str, np.ndarray]
    rows: int
    deadline: float = 0.0  # set by the batcher: time.monotonic() after which it is answered 504
    group: tuple[Any, ...] | None = None  # key() when the parser knows it already

    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys can be concatenated into one ``session.run``."""
        if self.group is not None:
            return self.group
        if len(self.feeds) == 1:
            ((name, a),) = self.feeds.items()
            return (name, a.dtype.char, a.shape[1:])
        return tuple((name, a.dtype.char, a.shape[1:]) for name, a in sorted(self.feeds.items()))


def _dim(d: Any) -> int:
    return d if isinstance(d, int) else -1


class ServedModel:
    """A verified bundle and, once :meth:`load` ran, its onnxruntime session.

    Construction is cheap and only reads the manifest; :meth:`load` builds the
    session and runs the warm-up, which is what the runtime waits for before it
    reports ready.
    """

    def __init__(self, bundle_dir: Path, manifest: Manifest, *, intra_op_threads: int = 1) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.intra_op_threads = intra_op_threads
        self.session: Any = None
        self._run: Any = None
        self.output_names: list[str] = []
        self.inputs_meta: list[TensorInfo] = []
        self.outputs_meta: list[TensorInfo] = []
        self._columns = {c.name: c for c in manifest.inputs}
        self._feeds = {f.onnx_input: f for f in manifest.feeds}
        self._input_order = [c.name for c in manifest.inputs]
        self._plans: dict[tuple[str, ...] | None, tuple[list[str], list[tuple[str, Feed, list[int] | None]]]] = {}
        self._content_types: dict[str | None, tuple[str, str]] = {}
        self._required = [c.name for c in manifest.inputs if not c.optional]
        self._all_numeric = manifest.input_kind == "columns" and all(c.type in _NUMERIC_TYPES for c in manifest.inputs)
        # One float feed over numeric columns: numbers can go straight into it (see _from_rows).
        self._fast_dtype: np.dtype[Any] | None = None
        if self._all_numeric and len(manifest.feeds) == 1 and manifest.feeds[0].dtype in ("float32", "float64"):
            self._fast_dtype = np.dtype(manifest.feeds[0].dtype)
        if manifest.input_kind not in ("columns", "tensor"):
            raise BundleError(f"unsupported input kind {manifest.input_kind!r} in the bundle manifest")
        if not manifest.feeds:
            raise BundleError("bundle manifest lists no feeds")
        for feed in manifest.feeds:
            for col in feed.columns:
                if col not in self._columns:
                    raise BundleError(f"manifest feed {feed.onnx_input} names unknown column {col!r}")

    # -- loading -----------------------------------------------------------------------------------------------

    def load(self, warmup_runs: int = 3) -> None:
        """Create the session (CPU, ``intra_op_threads`` threads) and run the warm-up on the input example.

        Raises :class:`BundleError` if onnxruntime cannot load the model or the
        warm-up fails: a model that cannot answer its own example must not go live.
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # With intra_op_threads > 1, idle pool threads otherwise spin for a while after every run: on a small host
        # they take the core the event loop (or the neighbour) needs between requests. Blocking costs a wake-up.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = self.bundle_dir / self.manifest.model_file
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"onnxruntime cannot load {path.name}: {exc}") from exc
        self.output_names = [o.name for o in self.session.get_outputs()]
        # InferenceSession.run re-validates input names and OrtValue ownership on every call (~10 µs here);
        # our feeds are built from the session's own input names as plain numpy arrays on the CPU provider,
        # so call the underlying binding directly when this onnxruntime has it.
        inner = getattr(self.session, "_sess", None)
        self._run = inner.run if inner is not None and hasattr(inner, "run") else self.session.run
        self.inputs_meta = [
            TensorInfo(i.name, _ORT_TO_V2.get(i.type, i.type), tuple(_dim(d) for d in i.shape))
            for i in self.session.get_inputs()
        ]
        self.outputs_meta = [
            TensorInfo(o.name, _ORT_TO_V2.get(o.type, o.type), tuple(_dim(d) for d in o.shape))
            for o in self.session.get_outputs()
        ]
        missing = sorted(set(self._feeds) - {i.name for i in self.inputs_meta})
        if missing:
            raise BundleError(f"manifest feeds {missing} are not inputs of {path.name}")
        if self.manifest.prediction_output not in self.output_names:
            raise BundleError(f"manifest prediction output {self.manifest.prediction_output!r} is not an ONNX output")
        example = self._input_example()
        if example is not None and warmup_runs > 0:
            try:
                item = self.parse_invocations(example, "application/json")
                for _ in range(warmup_runs):
                    self.run(item.feeds)
            except (RequestError, InferenceError) as exc:
                raise BundleError(f"warm-up on the bundle's input example failed: {exc}") from exc
        log.info("model %s version %s loaded", self.manifest.model_name, self.manifest.model_version)

    def _input_example(self) -> bytes | None:
        name = self.manifest.input_example_file
        if not name:
            return None
        path = self.bundle_dir / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"cannot read the bundle's input example {name}: {exc}") from exc
        if isinstance(data, dict) and not any(k in data for k in _MLFLOW_KEYS):
            data = {"dataframe_split": data} if self.manifest.input_kind == "columns" else {"inputs": data}
        elif isinstance(data, list):
            data = {"inputs": data}
        return json.dumps(data).encode()

    # -- inference ---------------------------------------------------------------------------------------------

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One ``session.run``; any onnxruntime failure becomes :class:`InferenceError`."""
        try:
            return self._run(self.output_names, feeds, None)  # type: ignore[no-any-return]
        except Exception as exc:  # onnxruntime's exception types are not a public hierarchy
            raise InferenceError(f"inference failed: {exc.__class__.__name__}: {_short(str(exc))}") from exc

    def run_batch(self, items: Sequence[Batchable]) -> list[list[np.ndarray] | Exception]:
        """Run many requests in as few ``session.run`` calls as possible and split the outputs back.

        Requests with the same feed shapes are concatenated along the row axis;
        if a combined run fails (or an output is not row-aligned) each request
        is re-run alone, so one bad request never fails its neighbours.
        """
        if len(items) == 1:
            return [self.run_one(items[0])]
        results: list[list[np.ndarray] | Exception | None] = [None] * len(items)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.key(), []).append(i)
        for indices in groups.values():
            if len(indices) == 1:
                results[indices[0]] = self.run_one(items[indices[0]])
                continue
            group = [items[i] for i in indices]
            total = sum(it.rows for it in group)
            feeds = {name: np.concatenate([it.feeds[name] for it in group]) for name in group[0].feeds}
            try:
                outputs = self.run(feeds)
            except InferenceError:
                outputs = None
            if outputs is None or any(o.ndim == 0 or o.shape[0] != total for o in outputs):
                for i in indices:
                    results[i] = self.run_one(items[i])
                continue
            if total == len(indices):  # one row each (the usual case): numpy cuts the rows, not a Python loop
                parts = [list(o.reshape(total, 1, *o.shape[1:])) for o in outputs]
                for i, row in zip(indices, zip(*parts, strict=True), strict=True):
                    results[i] = list(row)
                continue
            start = 0
            for i in indices:
                end = start + items[i].rows
                results[i] = [o[start:end] for o in outputs]
                start = end
        return results  # type: ignore[return-value]

    def run_one(self, item: Batchable) -> list[np.ndarray] | Exception:
        """One request alone (what :meth:`run_batch` does for a batch of one); failures are returned."""
        try:
            return self.run(item.feeds)
        except InferenceError as exc:
            return exc

    # -- MLflow scoring protocol -------------------------------------------------------------------------------

    def parse_invocations(self, body: bytes, content_type: str | None) -> Batchable:
        """Validate an ``/invocations`` body (JSON or CSV) into ONNX feeds."""
        parsed = self._content_types.get(content_type)
        if parsed is None:
            parsed = _content_type(content_type)
            if len(self._content_types) >= 64:
                self._content_types.clear()
            self._content_types[content_type] = parsed
        mime, charset = parsed
        if charset not in ("utf-8", "utf8"):
            raise RequestError("the scoring server only supports UTF-8", 415)
        if mime == "text/csv":
            return self._from_csv(body)
        if mime != "application/json":
            raise RequestError(f"unsupported content type {content_type!r}; use application/json or text/csv", 415)
        payload = _loads(body)
        if not isinstance(payload, dict):
            raise RequestError("the request body must be a JSON object with one of the keys " + ", ".join(_MLFLOW_KEYS))
        keys = [k for k in _MLFLOW_KEYS if k in payload]
        if len(keys) != 1:
            found = ", ".join(sorted(map(str, payload))) or "none"
            raise RequestError(
                f"the request body must have exactly one of the keys {', '.join(_MLFLOW_KEYS)} (found: {found})"
            )
        key = keys[0]
        data = payload[key]
        if self.manifest.input_kind == "tensor":
            return self._from_tensor_payload(data, body)
        if key == "dataframe_split":
            if not isinstance(data, dict) or "data" not in data:
                raise RequestError('dataframe_split must be an object with "columns" and "data"')
            columns = data.get("columns")
            rows = data["data"]
            if columns is not None and not isinstance(columns, list):
                raise RequestError("dataframe_split columns must be a list of column names")
            return self._from_rows(columns, rows, body)
        if key == "dataframe_records":
            return self._from_records(data, body)
        # instances / inputs: records, a dict of columns, or rows by position
        if isinstance(data, dict):
            return self._from_column_dict(data, body)
        if isinstance(data, list) and data and isinstance(data[0], dict):
            return self._from_records(data, body)
        return self._from_rows(None, data, body)

    def _from_records(self, records: Any, body: bytes) -> Batchable:
        if not isinstance(records, list):
            raise RequestError("records must be a list of objects, one per row")
        if not records:
            raise RequestError("the request has no rows")
        names = self._input_order
        known = set(names)
        rows = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise RequestError(f"record {i} is not a JSON object")
            unknown = [k for k in rec if k not in known]
            if unknown:
                raise RequestError(f"unknown column {unknown[0]!r}; the model expects {_names(names)}")
            row = []
            for c in names:
                if c in rec:
                    row.append(rec[c])
                elif self._columns[c].optional:
                    row.append(None)
                else:
                    raise RequestError(f"missing column {c!r} in record {i}; the model expects {_names(names)}")
            rows.append(row)
        return self._from_rows(names, rows, body)

    def _from_column_dict(self, data: dict[str, Any], body: bytes) -> Batchable:
        names = list(data)
        cols = list(data.values())
        if not all(isinstance(c, list) for c in cols):
            raise RequestError("each column of inputs must be a list of values")
        lengths = {len(c) for c in cols}
        if len(lengths) > 1:
            raise RequestError("columns of inputs have different lengths")
        rows = [list(r) for r in zip(*cols, strict=True)] if cols else []
        return self._from_rows(names, rows, body)

    def _from_csv(self, body: bytes) -> Batchable:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"the CSV body is not valid UTF-8: {exc.reason}") from None
        try:
            table = list(csv.reader(io.StringIO(text)))
        except csv.Error as exc:
            raise RequestError(f"cannot parse the CSV body: {exc}") from None
        table = [r for r in table if r]
        if not table:
            raise RequestError("the CSV body is empty; send a header row and at least one data row")
        header, *raw = table
        if not raw:
            raise RequestError("the CSV body has a header but no rows")
        rows: list[list[Any]] = []
        for n, r in enumerate(raw, start=2):
            if len(r) != len(header):
                raise RequestError(f"CSV line {n} has {len(r)} fields, the header has {len(header)}")
            row: list[Any] = []
            for name, value in zip(header, r, strict=True):
                spec = self._columns.get(name)
                row.append(_csv_value(value, spec, name, n))
            rows.append(row)
        return self._from_rows(header, rows, None)  # CSV cells were type-checked while reading

    def _from_rows(self, columns: list[str] | None, rows: Any, body: bytes | None) -> Batchable:
        """The common path: a table of rows (by name or by position) to feeds.

        The column checks and the column-to-feed mapping are computed once per
        distinct column list and cached: clients send the same columns every time.
        """
        if not isinstance(rows, list):
            raise RequestError("data must be a list of rows")
        if not rows:
            raise RequestError("the request has no rows")
        if columns is None and not isinstance(rows[0], list):
            if len(self._input_order) != 1:
                raise RequestError(
                    f"each row must be a list of {len(self._input_order)} values ({_names(self._input_order)})"
                )
            rows = [[v] for v in rows]
        key = tuple(columns) if columns is not None else None
        try:
            plan = self._plans.get(key)
        except TypeError:  # unhashable entries: not column names
            raise RequestError("columns must be a list of column names") from None
        if plan is None:
            plan = self._plan(columns)
            if len(self._plans) >= 256:
                self._plans.clear()
            self._plans[key] = plan
        names, feed_plan = plan
        fast = self._fast_dtype
        if fast is not None and len(rows) <= _FAST_ROWS and feed_plan[0][2] is None and _numeric_rows(rows, len(names)):
            # The common request (a few rows of plain JSON numbers, every column in model order): straight into
            # the feed's dtype, skipping numpy's type discovery and the cast (~23 % of the parse's instructions).
            try:
                arr = np.array(rows, dtype=fast)
            except OverflowError:  # an integer beyond any float: the full path words the error
                arr = None
            if arr is not None:
                if (body is None or b"NaN" in body) and np.isnan(arr).any():
                    self._complain_nan(names, np.isnan(arr))
                name = feed_plan[0][0]
                return Batchable({name: arr}, arr.shape[0], group=(name, arr.dtype.char, (len(names),)))
        try:
            table = np.array(rows)
        except (ValueError, TypeError, OverflowError):
            raise RequestError(f"rows are ragged or nested: every row must have {len(names)} scalar values") from None
        if table.ndim != 2 or table.shape[1] != len(names):
            if table.ndim >= 1 and table.shape[0] == 0:
                raise RequestError("the request has no rows")
            raise RequestError(f"every row must have {len(names)} values ({_names(names)})")
        # JSON can only carry NaN as the literal NaN, and booleans as true/false: skip checks the body rules out
        if (
            self._all_numeric
            and table.dtype.kind in "fiu"
            and (body is None or (b"true" not in body and b"false" not in body))
        ):
            if table.dtype.kind == "f" and (body is None or b"NaN" in body) and np.isnan(table).any():
                self._complain_nan(names, np.isnan(table))
        else:
            table = self._check_cells(names, np.array(rows, dtype=object))
        n = table.shape[0]
        feeds: dict[str, np.ndarray] = {}
        for onnx_input, feed, idx in feed_plan:
            if idx is None:
                part = table
            elif -1 not in idx:
                part = table[:, idx]
            else:  # optional columns left out of the request
                part = np.empty((n, len(idx)), dtype=object)
                for j, i in enumerate(idx):
                    part[:, j] = table[:, i] if i >= 0 else None
                part = _fill_missing(part, feed.dtype)
            feeds[onnx_input] = _cast(part, feed)
        return Batchable(feeds, n)

    def _plan(self, columns: list[str] | None) -> tuple[list[str], list[tuple[str, Feed, list[int] | None]]]:
        names = self._input_order
        if columns is None:
            columns = names
        else:
            if not all(isinstance(c, str) for c in columns):
                raise RequestError("columns must be a list of column names")
            unknown = [c for c in columns if c not in self._columns]
            if unknown:
                raise RequestError(f"unknown column {unknown[0]!r}; the model expects {_names(names)}")
            if len(set(columns)) != len(columns):
                raise RequestError("duplicate column names in the request")
            missing = [c for c in self._required if c not in columns]
            if missing:
                raise RequestError(f"missing column {missing[0]!r}; the model expects {_names(names)}")
        position = {c: i for i, c in enumerate(columns)}
        feed_plan: list[tuple[str, Feed, list[int] | None]] = []
        for feed in self.manifest.feeds:
            idx = [position.get(c, -1) for c in feed.columns]
            feed_plan.append((feed.onnx_input, feed, None if idx == list(range(len(columns))) else idx))
        return list(columns), feed_plan

    def _complain_nan(self, columns: list[str], bad: np.ndarray) -> None:
        for j in np.flatnonzero(bad.any(axis=0)):
            spec = self._columns[columns[j]]
            if not spec.optional:
                raise RequestError(f"column {columns[j]!r} has a missing value (NaN) but is not optional")

    def _check_cells(self, columns: list[str], table: np.ndarray) -> np.ndarray:
        """Slow path for mixed-type tables: check every cell against its column type, naming the first bad one."""
        out = np.empty(table.shape, dtype=object)
        for j, name in enumerate(columns):
            spec = self._columns[name]
            for i in range(table.shape[0]):
                out[i, j] = _check_value(table[i, j], spec, i)
        return out

    def _from_tensor_payload(self, data: Any, body: bytes) -> Batchable:
        feeds_by_name = self._feeds
        if isinstance(data, dict):
            unknown = [k for k in data if k not in feeds_by_name]
            if unknown:
                raise RequestError(f"unknown input {unknown[0]!r}; the model expects {_names(list(feeds_by_name))}")
            arrays = data
        elif len(feeds_by_name) == 1:
            arrays = {next(iter(feeds_by_name)): data}
        else:
            raise RequestError(f"this model has several inputs; send an object keyed by {_names(list(feeds_by_name))}")
        feeds: dict[str, np.ndarray] = {}
        rows = None
        for name, feed in feeds_by_name.items():
            if name not in arrays:
                raise RequestError(f"missing input {name!r}")
            arr = _tensor(arrays[name], feed, name)
            if rows is not None and arr.shape[0] != rows:
                raise RequestError("inputs have different numbers of rows")
            rows = arr.shape[0]
            feeds[name] = arr
        return Batchable(feeds, int(rows or 0))

    def format_predictions(self, outputs: list[np.ndarray]) -> bytes:
        """MLflow's response: ``{"predictions": [...]}`` with the model's ``predict()`` result."""
        pred = outputs[self.output_names.index(self.manifest.prediction_output)]
        if pred.ndim == 2 and pred.shape[1] == 1 and self.manifest.input_kind == "columns":
            pred = pred[:, 0]
        if pred.ndim == 1 and pred.dtype.kind in "iu":  # class labels: skip the generic encoder
            return b'{"predictions": [' + ", ".join(map(str, pred.tolist())).encode() + b"]}"
        return b'{"predictions": ' + _ENCODE(_jsonable(pred)).encode() + b"}"

    # -- Open Inference Protocol v2 ----------------------------------------------------------------------------

    def parse_v2(self, body: bytes, content_type: str | None) -> tuple[Batchable, dict[str, Any]]:
        """Validate a v2 ``infer`` body; returns the feeds and the request's ``id``/``outputs`` selection."""
        mime, _ = _content_type(content_type or "application/json")
        if mime != "application/json":
            raise RequestError(f"unsupported content type {content_type!r}; v2 infer takes application/json", 415)
        payload = _loads(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
            raise RequestError('the request body must be an object with a non-empty "inputs" list')
        tensors: dict[str, np.ndarray] = {}
        for k, t in enumerate(payload["inputs"]):
            if not isinstance(t, dict):
                raise RequestError(f"inputs[{k}] must be an object with name, shape, datatype and data")
            name, shape, datatype, data = t.get("name"), t.get("shape"), t.get("datatype"), t.get("data")
            if not isinstance(name, str):
                raise RequestError(f"inputs[{k}].name must be a string")
            if name in tensors:
                raise RequestError(f"input {name!r} is given twice")
            if (
                not isinstance(shape, list)
                or not shape
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            ):
                raise RequestError(f"input {name!r}: shape must be a non-empty list of non-negative integers")
            if datatype not in V2_TO_NUMPY:
                raise RequestError(
                    f"input {name!r}: unknown datatype {datatype!r}; use one of {', '.join(V2_TO_NUMPY)}"
                )
            if not isinstance(data, list):
                raise RequestError(f"input {name!r}: data must be a list")
            tensors[name] = _v2_tensor(name, shape, datatype, data)
        extra: dict[str, Any] = {"id": payload.get("id")}
        requested = payload.get("outputs")
        if requested is not None:
            if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
                raise RequestError('"outputs" must be a list of objects with a "name"')
            names = [o["name"] for o in requested]
            unknown = [n for n in names if n not in self.output_names]
            if unknown:
                raise RequestError(f"unknown output {unknown[0]!r}; the model has {_names(self.output_names)}")
            extra["outputs"] = names
        if set(tensors) <= set(self._feeds):
            feeds: dict[str, np.ndarray] = {}
            for name, feed in self._feeds.items():
                if name not in tensors:
                    raise RequestError(f"missing input {name!r}; the model expects {_names(list(self._feeds))}")
                feeds[name] = _tensor(tensors[name], feed, name)
            rows = {a.shape[0] for a in feeds.values()}
            if len(rows) != 1:
                raise RequestError("inputs have different numbers of rows")
            return Batchable(feeds, rows.pop()), extra
        if self.manifest.input_kind == "columns" and set(tensors) <= set(self._columns):
            columns = list(tensors)
            cols = []
            for name in columns:
                arr = tensors[name]
                if arr.ndim == 2 and arr.shape[1] == 1:
                    arr = arr[:, 0]
                if arr.ndim != 1:
                    raise RequestError(f"column input {name!r} must have shape [N] or [N, 1]")
                cols.append(arr)
            if len({len(c) for c in cols}) != 1:
                raise RequestError("column inputs have different lengths")
            table = np.empty((len(cols[0]), len(cols)), dtype=object)
            for j, c in enumerate(cols):
                table[:, j] = c.tolist()
            return self._from_rows(columns, table.tolist(), body), extra
        unknown = sorted(set(tensors) - set(self._feeds) - set(self._columns))
        expected = _names(list(self._feeds)) + (
            f" or the columns {_names(self._input_order)}" if self.manifest.input_kind == "columns" else ""
        )
        if unknown:
            raise RequestError(f"unknown input {unknown[0]!r}; the model expects {expected}")
        raise RequestError(f"send either the ONNX inputs {expected}, not a mix")

    def format_v2(self, outputs: list[np.ndarray], extra: dict[str, Any]) -> bytes:
        wanted = extra.get("outputs") or self.output_names
        result: dict[str, Any] = {
            "model_name": self.manifest.model_name,
            "model_version": self.manifest.model_version,
        }
        if extra.get("id") is not None:
            result["id"] = extra["id"]
        result["outputs"] = [
            {
                "name": name,
                "datatype": _v2_datatype(arr),
                "shape": list(arr.shape),
                "data": _jsonable(arr.reshape(-1)),
            }
            for name, arr in zip(self.output_names, outputs, strict=True)
            if name in wanted
        ]
        return json.dumps(result).encode()


# -- helpers ------------------------------------------------------------------------------------------------------


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}]"


def _content_type(value: str | None) -> tuple[str, str]:
    if not value:
        raise RequestError("missing Content-Type; use application/json or text/csv", 415)
    mime, *params = (p.strip() for p in value.split(";"))
    charset = "utf-8"
    for p in params:
        key, _, val = p.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"').lower()
    return mime.lower(), charset


def _loads(body: bytes) -> Any:
    """Parse a JSON body exactly as the stdlib parser (MLflow's) does.

    orjson parses the common case ~4x faster, but it refuses what the stdlib
    accepts (``NaN`` literals that mean a missing value, lone surrogates, integers
    beyond 64 bits) and words its errors differently; whatever it refuses goes
    through :mod:`json`, so results and error messages are the stdlib's. It also
    turns integers beyond 64 bits into floats without complaint, so a body with a
    run of 19+ digits goes to the stdlib parser too.
    """
    if not body:
        raise RequestError("the request body is empty")
    if _fast_loads is not None and _LONG_DIGITS not in body.translate(_DIGITS_AS_ZERO):
        try:
            return _fast_loads(body)
        except ValueError:  # orjson.JSONDecodeError: let the reference parser accept or explain it
            pass
    try:
        return _DECODE(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(f"the request body is not valid UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply") from None


_FAST_ROWS = 64  # large tables skip the per-value Python check and take numpy's own pass


def _numeric_rows(rows: list[Any], width: int) -> bool:
    """Every row a list of ``width`` plain JSON numbers (bool is not one here: it is refused by the full path)."""
    for row in rows:
        if type(row) is not list or len(row) != width:
            return False
        for v in row:
            t = type(v)
            if t is not float and t is not int:
                return False
    return True


def _type_error(name: str, spec_type: str, value: Any, row: int) -> RequestError:
    got = "null" if value is None else "boolean" if isinstance(value, bool) else type(value).__name__
    if isinstance(value, str):
        got = "string"
    return RequestError(f"column {name!r} expects {spec_type}, got {got} {_short(json.dumps(value), 40)} in row {row}")


def _check_value(value: Any, spec: ColumnSpec, row: int) -> Any:
    t = spec.type
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if spec.optional:
            return None
        raise RequestError(
            f"column {spec.name!r} has a missing value ({'null' if value is None else 'NaN'}) in row {row}"
            " but is not optional"
        )
    if isinstance(value, np.generic):
        value = value.item()
    if t in _NUMERIC_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(spec.name, t, value, row)
        return value
    if t in _INTEGER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _type_error(spec.name, t, value, row)
        return value
    if t == "boolean":
        if not isinstance(value, bool):
            raise _type_error(spec.name, t, value, row)
        return value
    if t in ("string", "str", "binary"):
        if not isinstance(value, str):
            raise _type_error(spec.name, t, value, row)
        return value
    if isinstance(value, list | dict):
        raise _type_error(spec.name, t, value, row)
    return value


def _csv_value(value: str, spec: ColumnSpec | None, name: str, line: int) -> Any:
    if spec is None:
        return value  # unknown column: reported by the common path
    if value == "":
        return None
    if spec.type in _NUMERIC_TYPES:
        try:
            return float(value)
        except ValueError:
            raise RequestError(f"column {name!r} expects {spec.type}, got {value[:40]!r} on CSV line {line}") from None
    if spec.type in _INTEGER_TYPES:
        try:
            return int(value)
        except ValueError:
            raise RequestError(f"column {name!r} expects {spec.type}, got {value[:40]!r} on CSV line {line}") from None
    if spec.type == "boolean":
        low = value.strip().lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise RequestError(f"column {name!r} expects boolean, got {value[:40]!r} on CSV line {line}")
    return value


def _fill_missing(part: np.ndarray, dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return np.where(part == None, np.nan, part)  # noqa: E711 -- elementwise comparison
    if any(v is None for v in part.ravel()):
        raise RequestError("a missing optional value cannot be passed to this model input")
    return part


@functools.cache
def _feed_dtype(name: str) -> np.dtype[Any]:
    return np.dtype(object) if name in ("str", "string", "object") else np.dtype(name)


def _cast(part: np.ndarray, feed: Feed) -> np.ndarray:
    dtype = _feed_dtype(feed.dtype)
    if dtype.kind == "O":
        return part.astype(str).astype(object)
    if dtype.kind == "f" and part.dtype.kind == "O":
        part = np.where(part == None, np.nan, part)  # noqa: E711
    try:
        return part.astype(dtype, order="C")
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"values do not fit the model input {feed.onnx_input!r} ({feed.dtype}): {exc}") from None


def _tensor(data: Any, feed: Feed, name: str) -> np.ndarray:
    """A tensor-signature input (or a v2 tensor addressed by ONNX name) checked against the feed."""
    dtype = np.dtype(object) if feed.dtype in ("str", "string", "object") else np.dtype(feed.dtype)
    if isinstance(data, np.ndarray):
        arr = data
    else:
        try:
            arr = np.array(data)
        except (ValueError, TypeError, OverflowError):
            raise RequestError(f"input {name!r} is ragged: every row must have the same shape") from None
    if arr.size == 0 or arr.ndim == 0:
        raise RequestError(f"input {name!r} is empty" if arr.size == 0 else f"input {name!r} must be an array of rows")
    if dtype.kind in "fiub" and arr.dtype.kind not in "fiub":
        raise RequestError(
            f"input {name!r} expects numbers ({feed.dtype}), "
            f"got {(arr.dtype.kind == 'U' and 'strings') or 'mixed values'}"
        )
    if dtype.kind in "iu" and arr.dtype.kind == "f":
        raise RequestError(f"input {name!r} expects integers ({feed.dtype}), got floating-point values")
    if dtype.kind == "O" and arr.dtype.kind not in "UO":
        raise RequestError(f"input {name!r} expects strings")
    expected = feed.shape if feed.shape is not None else ((-1, len(feed.columns)) if feed.columns else None)
    if expected is not None:
        if arr.ndim == len(expected) - 1 and len(expected) >= 2 and all(d != -1 for d in expected[1:]):
            arr = arr.reshape((1, *arr.shape)) if arr.shape == tuple(expected[1:]) else arr
        if arr.ndim != len(expected) or any(
            e not in (-1, None) and e != a for e, a in zip(expected, arr.shape, strict=True)
        ):
            want = "[" + ", ".join("N" if e in (-1, None) else str(e) for e in expected) + "]"
            raise RequestError(f"input {name!r} has shape {list(arr.shape)}, the model expects {want}")
    if dtype.kind == "f" and arr.dtype.kind == "f" and np.isnan(arr).any():
        raise RequestError(f"input {name!r} contains NaN")
    try:
        return np.ascontiguousarray(arr.astype(dtype))
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"input {name!r} does not fit {feed.dtype}: {exc}") from None


def _v2_tensor(name: str, shape: list[int], datatype: str, data: list[Any]) -> np.ndarray:
    try:
        arr = np.array(data, dtype=object if datatype == "BYTES" else None)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(f"input {name!r}: data is ragged") from None
    if datatype == "BYTES":
        flat = arr.reshape(-1)
        if not all(isinstance(v, str) for v in flat):
            raise RequestError(f"input {name!r}: BYTES data must be strings")
    elif arr.dtype.kind not in "fiub":
        raise RequestError(f"input {name!r}: {datatype} data must be numbers")
    elif datatype.startswith(("INT", "UINT")) and arr.dtype.kind == "f":
        raise RequestError(f"input {name!r}: {datatype} data must be integers")
    elif datatype == "BOOL" and arr.dtype.kind != "b":
        raise RequestError(f"input {name!r}: BOOL data must be true/false")
    size = math.prod(shape)
    if arr.size != size:
        raise RequestError(f"input {name!r}: shape {shape} needs {size} values, data has {arr.size}")
    if size == 0:
        raise RequestError(f"input {name!r} is empty")
    try:
        return arr.reshape(shape).astype(V2_TO_NUMPY[datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"input {name!r}: data does not fit {datatype}: {exc}") from None


def _v2_datatype(arr: np.ndarray) -> str:
    if arr.dtype.kind in "OUS":
        return "BYTES"
    for name, t in V2_TO_NUMPY.items():
        if t is not np.object_ and np.dtype(t) == arr.dtype:
            return name
    return "BYTES"


def _jsonable(arr: np.ndarray) -> list[Any]:
    if arr.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in arr.tolist()]
    return arr.tolist()  # type: ignore[no-any-return]
