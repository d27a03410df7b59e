"""Parity check: the ONNX model must answer like the original on the same rows.

Rows are the signature's input example plus ``n`` generated ones (fixed seed,
so a bundle build is reproducible): numeric columns uniform within the
example's range (widened a little so single-row examples still vary), string
columns drawn from the example's categories, tensors uniform of the right shape.
Generated floats are rounded to float32 first, so both models see exactly the
same numbers and only their arithmetic differs.

Classifier labels must agree on every row, except rows where the original's two
most likely classes are within the tolerance of each other (a genuine tie that
float32 arithmetic may break either way).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from modeldeck.core.errors import BundleError, ParityError
from modeldeck.core.runtime.manifest import ColumnSpec, Feed, Parity

log = logging.getLogger(__name__)

SEED = 20240611


@dataclass(frozen=True)
class Rows:
    """The rows parity runs on: a DataFrame (column signatures) or a dict of arrays (tensors)."""

    batch: Any
    count: int


def example_rows(example: dict[str, Any] | None, specs: Sequence[ColumnSpec], input_kind: str | None) -> Rows | None:
    from modeldeck.core.bundle.converters import example_frame

    if not example:
        return None
    if input_kind == "tensor" or "inputs" in example:
        inputs = example.get("inputs")
        if isinstance(inputs, dict):
            batch = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            name = specs[0].name if specs else "input"
            batch = {name: np.asarray(inputs)}
        first = next(iter(batch.values()))
        return Rows(batch, int(first.shape[0]) if first.ndim else 1)
    df = example_frame(example, specs)
    return Rows(df, len(df))


def generate_rows(
    example: Rows | None, specs: Sequence[ColumnSpec], input_kind: str | None, n: int, *, seed: int = SEED
) -> Rows | None:
    """``n`` deterministic rows shaped like the example (or the signature when there is no example)."""
    if n <= 0:
        return None
    rng = np.random.default_rng(seed)
    if input_kind == "tensor":
        batch = {}
        for spec in specs:
            ref = example.batch.get(spec.name) if example is not None and isinstance(example.batch, dict) else None
            shape = list(ref.shape if ref is not None else (spec.shape or (-1,)))
            shape[0] = n
            shape = [d if d > 0 else 1 for d in shape]
            dtype = np.dtype(spec.type if spec.type not in ("str", "object") else "float32")
            if ref is not None and ref.size and dtype.kind in "fiu":
                lo, hi = float(ref.min()), float(ref.max())
            else:
                lo, hi = 0.0, 1.0
            lo, hi = _widen(lo, hi)
            values = rng.uniform(lo, hi, size=shape)
            batch[spec.name] = values.astype(dtype) if dtype.kind != "f" else values.astype(np.float32).astype(dtype)
        return Rows(batch, n)

    import pandas as pd

    columns: dict[str, Any] = {}
    df = example.batch if example is not None else None
    for spec in specs:
        col = df[spec.name] if df is not None and spec.name in df.columns else None
        if spec.type in ("string", "binary"):
            cats = sorted({str(v) for v in col.dropna()}) if col is not None else []
            columns[spec.name] = rng.choice(np.array(cats or ["a", "b"], dtype=object), size=n)
        elif spec.type == "boolean":
            columns[spec.name] = rng.integers(0, 2, size=n).astype(bool)
        elif spec.type in ("long", "integer"):
            lo, hi = (int(col.min()), int(col.max())) if col is not None and len(col) else (0, 10)
            lo, hi = (lo - 1, hi + 1) if lo == hi else (lo, hi)
            columns[spec.name] = rng.integers(lo, hi + 1, size=n).astype("int64" if spec.type == "long" else "int32")
        elif spec.type in ("double", "float"):
            lo, hi = (float(col.min()), float(col.max())) if col is not None and len(col) else (0.0, 1.0)
            lo, hi = _widen(lo, hi)
            values = rng.uniform(lo, hi, size=n).astype(np.float32)
            columns[spec.name] = values.astype("float64" if spec.type == "double" else "float32")
        else:
            raise BundleError(f"cannot generate parity rows for column {spec.name!r} of type {spec.type}")
    return Rows(pd.DataFrame(columns), n)


def _widen(lo: float, hi: float) -> tuple[float, float]:
    span = hi - lo
    if span <= 0:
        pad = max(abs(lo) * 0.1, 1.0)
        return lo - pad, hi + pad
    return lo - 0.1 * span, hi + 0.1 * span


def concat(a: Rows | None, b: Rows | None) -> Rows:
    if a is None and b is None:
        raise BundleError(
            "nothing to check parity on: the model has no input example and no signature to generate rows from",
            hint="log the model with an input_example",
        )
    if a is None or b is None:
        return a or b  # type: ignore[return-value]
    if isinstance(a.batch, dict):
        return Rows(
            {k: np.concatenate([a.batch[k], b.batch[k].astype(a.batch[k].dtype)]) for k in a.batch}, a.count + b.count
        )
    import pandas as pd

    return Rows(pd.concat([a.batch, b.batch.astype(a.batch.dtypes.to_dict())], ignore_index=True), a.count + b.count)


def compare(
    expected: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    *,
    rows: int,
    rtol: float,
    atol: float,
    label_output: str | None,
) -> Parity:
    """Compare every output of ``expected`` with the ONNX outputs; raise :class:`ParityError` on a mismatch."""
    max_err = 0.0
    agreement: float | None = None
    worst: tuple[float, str, int, Any, Any] | None = None
    for name, exp in expected.items():
        if name not in actual:
            raise ParityError(f"the ONNX model has no output {name!r} to compare with the original")
        got = np.asarray(actual[name])
        exp = np.asarray(exp)
        if name == label_output:
            exp_flat, got_flat = exp.reshape(len(exp), -1)[:, 0], got.reshape(len(got), -1)[:, 0]
            same = exp_flat.astype(str) == got_flat.astype(str)
            ties = _ties(expected.get("probabilities"), rtol, atol)
            excused = ~same & ties if ties is not None else np.zeros_like(same)
            agreement = float(same.mean()) if len(same) else 1.0
            bad = np.flatnonzero(~same & ~excused)
            if bad.size:
                i = int(bad[0])
                raise ParityError(
                    f"parity failed: label differs on {bad.size} of {rows} rows (first: row {i}, "
                    f"original {exp_flat[i]!r}, ONNX {got_flat[i]!r}); label agreement {agreement:.2%}",
                    hint="the converted model does not reproduce the original; report the model to the ModelDeck team",
                )
            continue
        exp_f = exp.astype(np.float64).reshape(len(exp), -1)
        got_f = got.astype(np.float64).reshape(len(got), -1)
        if exp_f.shape != got_f.shape:
            raise ParityError(f"parity failed: output {name!r} has shape {got.shape}, the original {exp.shape}")
        err = np.abs(exp_f - got_f)
        if err.size:
            idx = np.unravel_index(int(np.argmax(err - (atol + rtol * np.abs(exp_f)))), err.shape)
            max_err = max(max_err, float(err.max()))
            excess = float(err[idx] - (atol + rtol * abs(exp_f[idx])))
            if worst is None or excess > worst[0]:
                worst = (excess, name, int(idx[0]), exp_f[idx], got_f[idx])
    if worst is not None and worst[0] > 0:
        _, name, row, e, g = worst
        raise ParityError(
            f"parity failed: output {name!r} row {row}: original {e:.9g}, ONNX {g:.9g} "
            f"(abs error {abs(e - g):.3g} > atol {atol:g} + rtol {rtol:g}·|original|); max abs error {max_err:.3g}",
            hint="loosen --rtol/--atol only if the difference is acceptable for this model",
        )
    return Parity(passed=True, rows=rows, rtol=rtol, atol=atol, max_abs_error=max_err, label_agreement=agreement)


def deviation(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], *, rows: int, label_output: str | None
) -> dict[str, Any]:
    """How far ``actual`` is from ``expected`` (no tolerance, no verdict): for reporting an optimised model."""
    max_err = 0.0
    agreement: float | None = None
    for name, exp in expected.items():
        got = actual.get(name)
        if got is None:
            continue
        exp, got = np.asarray(exp), np.asarray(got)
        if name == label_output:
            same = exp.reshape(len(exp), -1)[:, 0].astype(str) == got.reshape(len(got), -1)[:, 0].astype(str)
            agreement = float(same.mean()) if len(same) else 1.0
        elif exp.size == got.size and exp.dtype.kind in "fiub" and got.dtype.kind in "fiub":
            diff = np.abs(exp.astype(np.float64).ravel() - got.astype(np.float64).ravel())
            max_err = max(max_err, float(diff.max()) if diff.size else 0.0)
    return {"rows": rows, "max_abs_error": max_err, "label_agreement": agreement}


def _ties(proba: np.ndarray | None, rtol: float, atol: float) -> np.ndarray | None:
    if proba is None:
        return None
    p = np.sort(np.asarray(proba, dtype=np.float64).reshape(len(proba), -1), axis=1)
    if p.shape[1] < 2:
        return None
    return (p[:, -1] - p[:, -2]) <= 2 * (atol + rtol * p[:, -1])


def run_onnx(session: Any, feeds: Sequence[Feed], batch: Any) -> dict[str, np.ndarray]:
    """Run an onnxruntime session on a batch and return its outputs by name."""
    from modeldeck.core.bundle.converters import feed_arrays

    arrays = feed_arrays(feeds, batch)
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, arrays)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument classes
        raise BundleError(f"the ONNX model failed to run: {exc.__class__.__name__}: {exc}") from exc
    return dict(zip(names, values, strict=True))
