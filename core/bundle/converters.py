"""Converters from MLflow model flavors to ONNX, behind one small interface.

A :class:`Converter` says whether it can handle a model (by its ``MLmodel``) and
turns it into a :class:`Conversion`: the ONNX model, the :class:`Feed` list that
tells the runtime how request columns become ONNX inputs, which output is
MLflow's ``predict()``, and -- when the original model can be run here -- a
``reference`` function the parity check compares the ONNX model against.

Converters are tried in registration order; :func:`register_converter` adds one
(e.g. a future PyTorch exporter) without touching the bundler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modeldeck.core.bundle.source import ModelSource
from modeldeck.core.errors import BundleError, ConversionError
from modeldeck.core.runtime.manifest import ColumnSpec, Feed

if TYPE_CHECKING:
    import numpy as np
    import onnx

log = logging.getLogger(__name__)

# ONNX opsets chosen for reach, not novelty: opset 17 / ai.onnx.ml 3 run on onnxruntime >= 1.14,
# which is what edge devices (Jetson, Raspberry Pi wheels) commonly have.
TARGET_OPSET = 17
TARGET_ML_OPSET = 3

Batch = Any  # a pandas DataFrame for column signatures, dict[str, np.ndarray] for tensor signatures
Reference = Callable[[Batch], dict[str, "np.ndarray"]]


@dataclass(frozen=True)
class ConvertOptions:
    """What a converter may do on the user's behalf."""

    trust_pickle: bool = False


@dataclass(frozen=True)
class Conversion:
    """An ONNX model plus everything needed to feed it and to check it against the original."""

    model: onnx.ModelProto
    flavor: str
    feeds: tuple[Feed, ...]
    outputs: tuple[ColumnSpec, ...]
    prediction_output: str
    task: str | None = None
    class_labels: tuple[Any, ...] | None = None
    reference: Reference | None = None  # original model's outputs keyed by ONNX output name; None: nothing to compare
    parity_skipped_reason: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


class Converter(Protocol):
    """Turns one MLflow flavor into ONNX."""

    flavor: str

    def can_convert(self, mlmodel: dict[str, Any]) -> bool: ...

    def convert(self, source: ModelSource, options: ConvertOptions) -> Conversion: ...


_CONVERTERS: list[Converter] = []


def register_converter(converter: Converter, *, first: bool = False) -> None:
    """Add a converter; ``first=True`` lets it take precedence over the built-in ones."""
    if first:
        _CONVERTERS.insert(0, converter)
    else:
        _CONVERTERS.append(converter)


def unregister_converter(converter: Converter) -> None:
    _CONVERTERS.remove(converter)


def converters() -> tuple[Converter, ...]:
    return tuple(_CONVERTERS)


def converter_for(source: ModelSource) -> Converter:
    """The first registered converter that accepts the model; :class:`ConversionError` naming its flavor otherwise."""
    for conv in _CONVERTERS:
        if conv.can_convert(source.mlmodel):
            return conv
    flavors = [f for f in source.flavors if f != "python_function"] or list(source.flavors) or ["(none)"]
    supported = ", ".join(sorted({c.flavor for c in _CONVERTERS}))
    raise ConversionError(
        f"cannot convert flavor {', '.join(flavors)} to ONNX: ModelDeck has converters for {supported} only",
        hint="log the model with mlflow.onnx or mlflow.sklearn, or export it to ONNX yourself",
    )


# --------------------------------------------------------------------------------------------- helpers


_MLFLOW_TO_NUMPY = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
    "binary": "object",
    "datetime": "datetime64[ns]",
}


def column_specs(signature: dict[str, Any] | None) -> tuple[ColumnSpec, ...]:
    """The signature's inputs as :class:`ColumnSpec` (tensor specs carry dtype and shape)."""
    if not signature:
        return ()
    specs = []
    for i, col in enumerate(signature["inputs"]):
        if col.get("type") == "tensor":
            ts = col.get("tensor-spec") or {}
            specs.append(
                ColumnSpec(
                    name=str(col.get("name") or f"input_{i}"),
                    type=str(ts.get("dtype", "float32")),
                    optional=not col.get("required", True),
                    shape=tuple(int(d) for d in ts.get("shape", ())),
                )
            )
        else:
            specs.append(
                ColumnSpec(
                    name=str(col.get("name") or f"column_{i}"),
                    type=str(col.get("type", "double")),
                    optional=not col.get("required", True),
                )
            )
    return tuple(specs)


def onnx_outputs(model: onnx.ModelProto) -> tuple[ColumnSpec, ...]:
    """The ONNX graph's outputs as tensor :class:`ColumnSpec` (numpy dtype name, -1 for free dims)."""
    return tuple(ColumnSpec(name=o.name, type=_elem_dtype(o.type), shape=_dims(o.type)) for o in model.graph.output)


def _elem_dtype(type_proto: Any) -> str:
    from onnx import helper

    if not type_proto.HasField("tensor_type"):
        return "object"
    np_type = helper.tensor_dtype_to_np_dtype(type_proto.tensor_type.elem_type)
    return "str" if np_type.kind == "O" else np_type.name


def _dims(type_proto: Any) -> tuple[int, ...] | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in type_proto.tensor_type.shape.dim)


def example_frame(example: dict[str, Any], specs: Sequence[ColumnSpec]) -> Any:
    """A ``dataframe_split`` example as a DataFrame typed per the signature (what MLflow's pyfunc would see)."""
    import pandas as pd

    df = pd.DataFrame(example["data"], columns=example["columns"])
    for spec in specs:
        if spec.name in df.columns and spec.type in _MLFLOW_TO_NUMPY and spec.type != "datetime":
            df[spec.name] = df[spec.name].astype(_MLFLOW_TO_NUMPY[spec.type])
    return df


def feed_arrays(feeds: Sequence[Feed], batch: Batch) -> dict[str, np.ndarray]:
    """Build the ONNX input tensors from a batch the way the runtime does from a request."""
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    for feed in feeds:
        if feed.columns:
            dtype = object if feed.dtype == "str" else np.dtype(feed.dtype)
            cols = [np.asarray(batch[c]).astype(dtype) for c in feed.columns]
            arrays[feed.onnx_input] = np.stack(cols, axis=1).astype(dtype)
        else:
            value = batch[feed.onnx_input] if isinstance(batch, dict) else np.asarray(batch)
            arr = np.asarray(value, dtype=object if feed.dtype == "str" else feed.dtype)
            if feed.shape is not None:
                arr = arr.reshape(tuple(-1 if d is None or d < 0 else d for d in feed.shape))
            arrays[feed.onnx_input] = arr
    return arrays


# --------------------------------------------------------------------------------------------- ONNX


class OnnxPassthrough:
    """An ``onnx`` flavor model is bundled as is; there is no original to compare against."""

    flavor = "onnx"

    def can_convert(self, mlmodel: dict[str, Any]) -> bool:
        return "onnx" in (mlmodel.get("flavors") or {})

    def convert(self, source: ModelSource, options: ConvertOptions) -> Conversion:
        import onnx

        conf = source.flavors["onnx"] or {}
        path = source.model_dir / str(conf.get("data", "model.onnx"))
        try:
            model = onnx.load(str(path), load_external_data=True)
        except Exception as exc:  # onnx raises DecodeError/OSError/ValidationError variants
            raise ConversionError(f"cannot read the ONNX model {path.name}: {exc.__class__.__name__}: {exc}") from exc
        initializers = {i.name for i in model.graph.initializer}
        graph_inputs = [i for i in model.graph.input if i.name not in initializers]
        specs = column_specs(source.signature)
        if source.input_kind == "columns":
            names = [s.name for s in specs]
            by_name = {i.name: i for i in graph_inputs}
            if set(names) == set(by_name):
                feeds = tuple(
                    Feed(onnx_input=n, dtype=_elem_dtype(by_name[n].type), columns=(n,), shape=(-1, 1)) for n in names
                )
            elif len(graph_inputs) == 1:
                gi = graph_inputs[0]
                feeds = (
                    Feed(onnx_input=gi.name, dtype=_elem_dtype(gi.type), columns=tuple(names), shape=(-1, len(names))),
                )
            else:
                raise ConversionError(
                    f"cannot map the signature's columns {names} to the ONNX inputs {sorted(by_name)}",
                    hint="log the ONNX model with a tensor signature, or name its inputs after the columns",
                )
        else:
            feeds = tuple(Feed(onnx_input=i.name, dtype=_elem_dtype(i.type), shape=_dims(i.type)) for i in graph_inputs)
        outputs = onnx_outputs(model)
        names = [o.name for o in outputs]
        task = "classification" if "label" in names else "regression" if names == ["variable"] else None
        return Conversion(
            model=model,
            flavor="onnx",
            feeds=feeds,
            outputs=outputs,
            prediction_output=names[0],
            task=task,
            parity_skipped_reason="onnx passthrough: there is no original model to compare with",
        )


# --------------------------------------------------------------------------------------------- scikit-learn


class SklearnConverter:
    """scikit-learn estimators and pipelines, converted with skl2onnx.

    Classifiers get ``zipmap=False`` so probabilities are a plain tensor. Inputs
    are one float tensor of all numeric columns, or -- when a column is a string
    or the model selects columns by name (``ColumnTransformer``) -- one
    ``[N, 1]`` input per column, named after it.
    """

    flavor = "sklearn"

    def can_convert(self, mlmodel: dict[str, Any]) -> bool:
        return "sklearn" in (mlmodel.get("flavors") or {})

    def convert(self, source: ModelSource, options: ConvertOptions) -> Conversion:
        from modeldeck.core.bundle import trust
        from sklearn.base import is_classifier, is_regressor

        conf = source.flavors["sklearn"] or {}
        fmt = str(conf.get("serialization_format", "pickle"))
        path = source.model_dir / str(conf.get("pickled_model", "model.pkl"))
        if not path.is_file():
            raise BundleError(f"the sklearn model file {path.name} is missing from {source.source_uri}")
        notes: dict[str, Any] = {"serialization_format": fmt}
        if fmt == "skops":
            notes["trusted_types"] = trust.trusted_types(path)
            model = trust.load_skops(path)
        elif fmt in ("pickle", "cloudpickle"):
            model = trust.load_pickle(path, trust_pickle=options.trust_pickle)
            notes["trusted_pickle"] = True
        else:
            raise ConversionError(f"unknown sklearn serialization format {fmt!r} in {source.source_uri}")

        estimator_name = type(model).__name__
        if is_classifier(model):
            task = "classification"
        elif is_regressor(model):
            task = "regression"
        else:
            raise ConversionError(
                f"sklearn model {estimator_name} is neither a classifier nor a regressor; ModelDeck bundles only those"
            )

        specs = column_specs(source.signature)
        if source.input_kind == "tensor":
            feeds, initial_types, make_frame = _tensor_inputs(specs)
        else:
            feeds, initial_types, make_frame = _column_inputs(model, specs)

        onx = _skl2onnx(model, initial_types, task, estimator_name)
        outputs = onnx_outputs(onx)
        names = [o.name for o in outputs]
        class_labels = tuple(_plain(c) for c in model.classes_) if task == "classification" else None
        prediction_output = "label" if task == "classification" else names[0]
        if prediction_output not in names:
            raise ConversionError(f"the converted {estimator_name} has no {prediction_output!r} output ({names})")
        has_proba = task == "classification" and hasattr(model, "predict_proba") and "probabilities" in names

        def reference(batch: Batch) -> dict[str, np.ndarray]:
            import numpy as np

            x = make_frame(batch)
            out = {prediction_output: np.asarray(model.predict(x))}
            if has_proba:
                out["probabilities"] = np.asarray(model.predict_proba(x))
            return out

        notes["estimator"] = estimator_name
        return Conversion(
            model=onx,
            flavor="sklearn",
            feeds=feeds,
            outputs=outputs,
            prediction_output=prediction_output,
            task=task,
            class_labels=class_labels,
            reference=reference,
            notes=notes,
        )


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _tensor_inputs(specs: Sequence[ColumnSpec]) -> tuple[tuple[Feed, ...], list[Any], Callable[[Batch], Any]]:
    from skl2onnx.common.data_types import FloatTensorType

    if len(specs) != 1 or not specs[0].shape:
        raise ConversionError("a sklearn model with a tensor signature must have exactly one input tensor")
    spec = specs[0]
    n = spec.shape[-1] if spec.shape and len(spec.shape) == 2 else None
    feed = Feed(onnx_input="input", dtype="float32", shape=(-1, n) if n and n > 0 else None)

    def make(batch: Batch) -> Any:
        import numpy as np

        value = batch["input"] if isinstance(batch, dict) else batch
        return np.asarray(value, dtype=np.float64)

    return (feed,), [("input", FloatTensorType([None, n if n and n > 0 else None]))], make


def _column_inputs(
    model: Any, specs: Sequence[ColumnSpec]
) -> tuple[tuple[Feed, ...], list[Any], Callable[[Batch], Any]]:
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if not specs:
        raise ConversionError(
            "the sklearn model has no signature, so ModelDeck cannot tell which columns it takes",
            hint="log the model with an input_example (or signature=) and bundle the new version",
        )
    order = [s.name for s in specs]
    fitted = getattr(model, "feature_names_in_", None)
    if fitted is not None:
        fitted = [str(c) for c in fitted]
        missing = sorted(set(fitted) - set(order))
        if missing:
            raise ConversionError(f"the model was fitted on columns {missing} that its signature does not have")
        order = fitted
    by_name = {s.name: s for s in specs}
    per_column = any(by_name[c].type in ("string", "binary") for c in order) or _uses_column_names(model)
    if any(by_name[c].type in ("binary", "datetime") for c in order):
        raise ConversionError("columns of type binary or datetime cannot be fed to an ONNX model")

    def make(batch: Batch) -> Any:
        return batch[order]

    if per_column:
        feeds = []
        initial = []
        for c in order:
            if by_name[c].type == "string":
                feeds.append(Feed(onnx_input=c, dtype="str", columns=(c,), shape=(-1, 1)))
                initial.append((c, StringTensorType([None, 1])))
            else:
                feeds.append(Feed(onnx_input=c, dtype="float32", columns=(c,), shape=(-1, 1)))
                initial.append((c, FloatTensorType([None, 1])))
        return tuple(feeds), initial, make
    feed = Feed(onnx_input="input", dtype="float32", columns=tuple(order), shape=(-1, len(order)))
    return (feed,), [("input", FloatTensorType([None, len(order)]))], make


def _uses_column_names(model: Any) -> bool:
    """Whether a ColumnTransformer anywhere in the model selects columns (by name or index)."""
    from sklearn.compose import ColumnTransformer

    if isinstance(model, ColumnTransformer):
        return True
    for attr in ("steps", "transformer_list"):
        for _, step in getattr(model, attr, None) or ():
            if _uses_column_names(step):
                return True
    return False


def _skl2onnx(model: Any, initial_types: list[Any], task: str, estimator_name: str) -> onnx.ModelProto:
    from skl2onnx import to_onnx

    final = model.steps[-1][1] if hasattr(model, "steps") else model
    options = {type(final): {"zipmap": False}} if task == "classification" else None
    try:
        return to_onnx(
            model,
            initial_types=initial_types,
            options=options,
            target_opset={"": TARGET_OPSET, "ai.onnx.ml": TARGET_ML_OPSET},
        )
    except Exception as exc:  # skl2onnx raises RuntimeError, MissingShapeCalculator, NotImplementedError, ...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConversionError(
            f"flavor sklearn: skl2onnx cannot convert {estimator_name}: {reason}",
            hint="use estimators skl2onnx supports, or log the model as ONNX yourself",
        ) from exc


register_converter(OnnxPassthrough())
register_converter(SklearnConverter())


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def save_onnx(model: onnx.ModelProto, path: Path) -> None:
    import onnx

    try:
        onnx.save_model(model, str(path))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot write {path}: {exc}") from exc
