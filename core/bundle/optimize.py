"""Edge optimisation: offline graph optimisation and dynamic int8 quantisation.

Both steps are measured, not assumed: each reports the model size and the
median latency (bounded number of runs on the input example) before and after,
and how much the answers moved on the parity rows. The graph is optimised at
onnxruntime's *basic* level only -- constant folding and redundant-node
removal with standard ONNX ops -- because the extended/all levels fuse nodes
into onnxruntime- and hardware-specific ops that an older or differently built
runtime on a target may not have.

Dynamic int8 quantisation rewrites MatMul/Gemm weights. Models without them
(tree ensembles are ``ai.onnx.ml`` TreeEnsemble ops) have nothing to quantise;
that is reported as such instead of producing a "quantised" copy of the same model.

"Accuracy delta" compares the quantised model with the float model on the parity
rows (there are no ground-truth labels here): for classifiers, the share of rows
whose label changed; for regressors, the largest prediction change divided by
the spread (max - min) of the float model's predictions.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from modeldeck.core.errors import BundleError, Cancelled, ParityError
from modeldeck.core.runtime.manifest import Feed

log = logging.getLogger(__name__)

LATENCY_RUNS = 50
LATENCY_BUDGET_S = 2.0
QUANTIZABLE_OPS = ("MatMul", "Gemm")


def session(model_bytes: bytes, *, level: str = "disabled", save_to: Path | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if save_to is not None:
        so.optimized_model_filepath = str(save_to)
    try:
        return ort.InferenceSession(model_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises Fail/InvalidGraph/NotImplemented
        raise BundleError(f"onnxruntime cannot load the model: {exc.__class__.__name__}: {exc}") from exc


def median_latency_ms(sess: Any, feeds: Sequence[Feed], batch: Any) -> float:
    """Median wall time of one ``run`` on ``batch`` over at most LATENCY_RUNS runs / LATENCY_BUDGET_S seconds."""
    from modeldeck.core.bundle.converters import feed_arrays

    arrays = feed_arrays(feeds, batch)
    sess.run(None, arrays)  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + LATENCY_BUDGET_S
    while len(times) < LATENCY_RUNS and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        sess.run(None, arrays)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def quantizable_weights(model_bytes: bytes) -> int:
    """How many MatMul/Gemm nodes take a constant weight (what dynamic int8 quantisation can rewrite)."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return sum(
        1 for n in model.graph.node if n.op_type in QUANTIZABLE_OPS and len(n.input) > 1 and n.input[1] in consts
    )


def accuracy_delta(
    before: dict[str, np.ndarray], after: dict[str, np.ndarray], prediction_output: str, task: str | None
) -> tuple[float, float]:
    """(accuracy delta, max abs change of any numeric output) between two runs on the same rows."""
    max_abs = 0.0
    for name, b in before.items():
        a = after.get(name)
        if a is None or b.dtype.kind not in "fiub" or a.dtype.kind not in "fiub":
            continue
        if b.shape == a.shape and b.size:
            max_abs = max(max_abs, float(np.abs(b.astype(np.float64) - a.astype(np.float64)).max()))
    b, a = before[prediction_output], after[prediction_output]
    if task == "classification" or b.dtype.kind in "OUSb":
        return float(np.mean(b.astype(str).ravel() != a.astype(str).ravel())), max_abs
    bf, af = b.astype(np.float64).ravel(), a.astype(np.float64).ravel()
    spread = float(bf.max() - bf.min()) if bf.size else 0.0
    change = float(np.abs(bf - af).max()) if bf.size else 0.0
    return (change / spread if spread > 0 else change), max_abs


def optimize(
    model_bytes: bytes,
    *,
    feeds: Sequence[Feed],
    example_batch: Any,
    parity_batch: Any,
    prediction_output: str,
    task: str | None,
    graph: bool,
    quantize: str | None,
    max_accuracy_delta: float,
    cancel: threading.Event | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Apply the requested steps in order (graph, then quantise); return the final model and the report.

    Raises :class:`ParityError` when quantisation moves the answers more than
    ``max_accuracy_delta`` (the figures are in the message), and nothing is applied.
    """
    from modeldeck.core.bundle.parity import run_onnx

    if quantize not in (None, "int8"):
        raise BundleError(f"unsupported quantisation {quantize!r}", hint="the only supported value is int8")
    base_sess = session(model_bytes)
    base_out = run_onnx(base_sess, feeds, parity_batch)
    report: dict[str, Any] = {
        "size_bytes_before": len(model_bytes),
        "latency_ms_before": round(median_latency_ms(base_sess, feeds, example_batch), 4),
        "steps": [],
    }
    current = model_bytes
    with tempfile.TemporaryDirectory(prefix="modeldeck-opt-") as tmpdir:
        tmp = Path(tmpdir)
        if graph:
            _check(cancel)
            out_path = tmp / "optimized.onnx"
            before_size = len(current)
            before_lat = median_latency_ms(session(current), feeds, example_batch)
            session(current, level="basic", save_to=out_path)
            optimized = out_path.read_bytes()
            sess = session(optimized)
            delta, max_abs = accuracy_delta(base_out, run_onnx(sess, feeds, parity_batch), prediction_output, task)
            report["steps"].append(
                {
                    "step": "graph",
                    "applied": True,
                    "level": "basic",
                    "size_bytes_before": before_size,
                    "size_bytes_after": len(optimized),
                    "latency_ms_before": round(before_lat, 4),
                    "latency_ms_after": round(median_latency_ms(sess, feeds, example_batch), 4),
                    "accuracy_delta": delta,
                    "max_abs_delta": max_abs,
                }
            )
            current = optimized
        if quantize == "int8":
            _check(cancel)
            n_weights = quantizable_weights(current)
            if n_weights == 0:
                report["steps"].append(
                    {
                        "step": "quantize",
                        "applied": False,
                        "scheme": "dynamic int8",
                        "reason": "nothing to quantise: model has no MatMul/Gemm weights "
                        "(tree-ensemble and other ai.onnx.ml ops have no int8 path)",
                    }
                )
            else:
                current = _quantize(
                    current,
                    tmp,
                    feeds,
                    example_batch,
                    parity_batch,
                    base_out,
                    prediction_output,
                    task,
                    max_accuracy_delta,
                    n_weights,
                    report,
                )
    final_sess = session(current)
    report["size_bytes_after"] = len(current)
    report["latency_ms_after"] = round(median_latency_ms(final_sess, feeds, example_batch), 4)
    report["accuracy_delta"], report["max_abs_delta"] = accuracy_delta(
        base_out, run_onnx(final_sess, feeds, parity_batch), prediction_output, task
    )
    report["max_accuracy_delta"] = max_accuracy_delta
    return current, report


def _quantize(
    current: bytes,
    tmp: Path,
    feeds: Sequence[Feed],
    example_batch: Any,
    parity_batch: Any,
    base_out: dict[str, np.ndarray],
    prediction_output: str,
    task: str | None,
    max_accuracy_delta: float,
    n_weights: int,
    report: dict[str, Any],
) -> bytes:
    import onnx
    from modeldeck.core.bundle.parity import run_onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp / "float.onnx", tmp / "int8.onnx"
    src.write_bytes(current)
    quiet = _DropPreprocessAdvice()
    logging.getLogger().addFilter(quiet)  # the quantizer logs advice on the root logger
    try:
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTIZABLE_OPS),
            # ai.onnx.ml ops (Scaler, ...) defeat ONNX shape inference; everything quantised here is float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    except Exception as exc:  # the quantizer raises ValueError/RuntimeError/onnx errors
        raise BundleError(f"int8 quantisation failed: {exc.__class__.__name__}: {exc}") from exc
    finally:
        logging.getLogger().removeFilter(quiet)
    quantized = dst.read_bytes()
    sess = session(quantized)
    delta, max_abs = accuracy_delta(base_out, run_onnx(sess, feeds, parity_batch), prediction_output, task)
    step = {
        "step": "quantize",
        "applied": True,
        "scheme": "dynamic int8",
        "weights_quantized": n_weights,
        "size_bytes_before": len(current),
        "size_bytes_after": len(quantized),
        "latency_ms_before": round(median_latency_ms(session(current), feeds, example_batch), 4),
        "latency_ms_after": round(median_latency_ms(sess, feeds, example_batch), 4),
        "accuracy_delta": delta,
        "max_abs_delta": max_abs,
    }
    if delta > max_accuracy_delta:
        what = "labels changed on" if task == "classification" else "largest prediction change is"
        raise ParityError(
            f"refusing int8 quantisation: accuracy delta {delta:.4g} exceeds the bound {max_accuracy_delta:g} "
            f"({what} {delta:.2%} {'of rows' if task == 'classification' else 'of the prediction range'}; "
            f"max abs change {max_abs:.3g}; size {len(current)} -> {len(quantized)} bytes)",
            hint="raise --max-accuracy-delta if that loss is acceptable, or bundle without --quantize",
        )
    report["steps"].append(step)
    return quantized


class _DropPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()
