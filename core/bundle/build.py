"""Build a bundle: fetch, convert to ONNX, check parity, optimise, write, verify, install.

Everything is written into a scratch folder next to ``out_dir`` (same
filesystem), hashed, committed with ``manifest.json`` last, verified, and only
then renamed into place -- so ``out_dir`` is either absent, the previous bundle,
or the complete new one. Any failure or cancellation removes the scratch folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modeldeck.core.bundle import converters as conv
from modeldeck.core.bundle import parity as par
from modeldeck.core.bundle.source import fetch_model
from modeldeck.core.errors import BundleError, Cancelled
from modeldeck.core.formatting import format_size
from modeldeck.core.runtime.manifest import MANIFEST_NAME, Manifest, Parity, hash_tree, verify_bundle, write_manifest

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, "float | None"], None]

MODEL_FILE = "model.onnx"
EXAMPLE_FILE = "input_example.json"


@dataclass(frozen=True)
class BundleOptions:
    """How to build a bundle.

    ``rtol``/``atol`` are float32-sized by default; ``parity_rows`` generated rows
    are checked on top of the input example. ``quantize`` is ``None`` or
    ``"int8"``; ``max_accuracy_delta`` bounds what quantisation may change (see
    :mod:`modeldeck.core.bundle.optimize`). ``trust_pickle`` allows loading
    pickled sklearn models, which runs arbitrary code from the model file.
    """

    overwrite: bool = False
    optimize: bool = False
    quantize: str | None = None
    max_accuracy_delta: float = 0.01
    rtol: float = 1e-3
    atol: float = 1e-4
    parity_rows: int = 200
    trust_pickle: bool = False
    model_name: str | None = None  # override the manifest's model name (default: the registered name)

    def validate(self) -> None:
        if self.quantize not in (None, "int8"):
            raise BundleError(f"unsupported quantisation {self.quantize!r}", hint="the only supported value is int8")
        if self.rtol < 0 or self.atol < 0:
            raise BundleError("rtol and atol must not be negative")
        if self.parity_rows < 0 or self.parity_rows > 1_000_000:
            raise BundleError("parity rows must be between 0 and 1000000")
        if not 0 <= self.max_accuracy_delta <= 1:
            raise BundleError("max accuracy delta must be between 0 and 1")


@dataclass(frozen=True)
class BundleReport:
    """What was built and how it measured up."""

    out_dir: Path
    manifest: Manifest
    parity: Parity | None
    optimization: dict[str, Any] | None
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "sha256": self.manifest.sha256,
            "manifest": json.loads(self.manifest.to_json()),
            "parity": asdict(self.parity) if self.parity else None,
            "optimization": self.optimization,
            "timings": self.timings,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_text(self) -> str:
        m = self.manifest
        lines = [
            f"bundle   {self.out_dir}",
            f"model    {m.model_name} version {m.model_version} ({m.flavor} -> ONNX opset {m.opset})",
            f"source   {m.source_uri}" + (f"  run {m.run_id}" if m.run_id else ""),
            f"task     {m.task or 'unknown'}; predicts {m.prediction_output!r}; "
            f"inputs {', '.join(f.onnx_input + ':' + f.dtype for f in m.feeds)}",
            f"size     {_size(m.files, self.out_dir / m.model_file)}",
        ]
        if self.parity:
            p = self.parity
            agree = f", label agreement {p.label_agreement:.2%}" if p.label_agreement is not None else ""
            lines.append(
                f"parity   passed on {p.rows} rows (rtol {p.rtol:g}, atol {p.atol:g}): "
                f"max abs error {p.max_abs_error:.3g}{agree}"
            )
        else:
            lines.append(f"parity   skipped: {m.extra.get('parity_skipped', 'no reason recorded')}")
        if self.optimization:
            o = self.optimization
            vs = o.get("vs_original")
            for step in o.get("steps", []):
                if not step.get("applied"):
                    lines.append(f"{step['step']:<8} not applied: {step.get('reason', '')}")
                    continue
                lines.append(
                    f"{step['step']:<8} {step.get('level') or step.get('scheme')}: size "
                    f"{step['size_bytes_before']} -> {step['size_bytes_after']} bytes, latency "
                    f"{step['latency_ms_before']:.3f} -> {step['latency_ms_after']:.3f} ms (median), "
                    f"accuracy delta {step['accuracy_delta']:.4g}, max abs change {step['max_abs_delta']:.3g}"
                )
            if vs:
                agree = (
                    f", label agreement {vs['label_agreement']:.2%}" if vs.get("label_agreement") is not None else ""
                )
                lines.append(
                    f"shipped  model vs original on {vs['rows']} rows: max abs error {vs['max_abs_error']:.3g}{agree}"
                )
        lines.append(f"sha256   {m.sha256}")
        lines.append("timings  " + ", ".join(f"{k} {v:.2f}s" for k, v in self.timings.items()))
        return "\n".join(lines)


def _size(files: dict[str, str], model_path: Path) -> str:
    try:
        return f"{format_size(model_path.stat().st_size)} model, {len(files)} files"
    except OSError:
        return f"{len(files)} files"


def build_bundle(
    model_uri: str,
    out_dir: Path,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
    options: BundleOptions = BundleOptions(),
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> BundleReport:
    """Build a verified ONNX bundle of ``model_uri`` at ``out_dir``.

    ``model_uri`` is ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``,
    ``runs:/RUN_ID/PATH`` or a local MLflow model folder. Raises
    :class:`BundleError` (``out_dir`` not empty without ``overwrite``),
    :class:`ConversionError` (flavor or estimator ModelDeck cannot convert, or
    untrusted serialized types), :class:`ParityError` (ONNX answers differ, or
    quantisation costs more accuracy than allowed), registry errors, or
    :class:`Cancelled`. On any of them nothing is left at ``out_dir``
    (a previous bundle there stays untouched).
    """
    options.validate()
    out_dir = Path(out_dir).expanduser().absolute()
    report_progress = progress or (lambda _msg, _frac: None)
    _check_target(out_dir, options.overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it 0700; a bundle is read by runtimes running as other users
    try:
        with tempfile.TemporaryDirectory(prefix="modeldeck-fetch-") as scratch:
            t = time.perf_counter()
            report_progress(f"resolving {model_uri}", 0.0)
            _check(cancel)
            source = fetch_model(model_uri, Path(scratch), tracking_uri=tracking_uri, registry_uri=registry_uri)
            timings["fetch"] = time.perf_counter() - t
            _check(cancel)

            t = time.perf_counter()
            converter = conv.converter_for(source)
            report_progress(f"converting {converter.flavor} model to ONNX", 0.2)
            conversion = converter.convert(source, conv.ConvertOptions(trust_pickle=options.trust_pickle))
            timings["convert"] = time.perf_counter() - t
            _check(cancel)

            t = time.perf_counter()
            report_progress("checking parity", 0.45)
            model_bytes = conversion.model.SerializeToString()
            specs = conv.column_specs(source.signature)
            example = par.example_rows(source.input_example, specs, source.input_kind)
            example = _key_tensors(example, conversion)
            generated = par.generate_rows(
                example, specs or _specs_from_feeds(conversion), source.input_kind or "tensor", options.parity_rows
            )
            generated = _key_tensors(generated, conversion)
            rows = None if (example is None and generated is None) else par.concat(example, generated)
            parity, parity_note, expected = _check_parity(model_bytes, conversion, rows, options)
            timings["parity"] = time.perf_counter() - t
            _check(cancel)

            optimization = None
            if options.optimize or options.quantize:
                t = time.perf_counter()
                report_progress("optimising", 0.65)
                if rows is None:
                    raise BundleError("cannot measure an optimisation without an input example or signature")
                from modeldeck.core.bundle.optimize import optimize

                model_bytes, optimization = optimize(
                    model_bytes,
                    feeds=conversion.feeds,
                    example_batch=(example or rows).batch,
                    parity_batch=rows.batch,
                    prediction_output=conversion.prediction_output,
                    task=conversion.task,
                    graph=options.optimize,
                    quantize=options.quantize,
                    max_accuracy_delta=options.max_accuracy_delta,
                    cancel=cancel,
                )
                if expected is not None and rows is not None and any(s["applied"] for s in optimization["steps"]):
                    # The parity above is for the float model; say how far the model actually shipped is.
                    from modeldeck.core.bundle.optimize import session

                    shipped = par.run_onnx(session(model_bytes), conversion.feeds, rows.batch)
                    label = conversion.prediction_output if conversion.task == "classification" else None
                    optimization["vs_original"] = par.deviation(expected, shipped, rows=rows.count, label_output=label)
                timings["optimize"] = time.perf_counter() - t
                _check(cancel)

            t = time.perf_counter()
            report_progress("writing bundle", 0.85)
            import onnxruntime

            (staging / MODEL_FILE).write_bytes(model_bytes)
            example_json, example_generated = _example_json(source.input_example, example, generated, conversion)
            if example_json is not None:
                (staging / EXAMPLE_FILE).write_text(json.dumps(example_json, default=_plain), encoding="utf-8")
            extra: dict[str, Any] = {
                **source.notes,
                "converter": type(converter).__name__,
                "converter_notes": conversion.notes,
                "signature_outputs": (source.signature or {}).get("outputs"),
                "registry_uri": registry_uri,
                "tracking_uri": _redact(tracking_uri),
            }
            if parity_note:
                extra["parity_skipped"] = parity_note
            if example_generated:
                extra["input_example_generated"] = True
            manifest = Manifest(
                model_name=options.model_name or source.model_name,
                model_version=source.model_version,
                source_uri=source.source_uri,
                flavor=conversion.flavor,
                created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                inputs=specs,
                outputs=conversion.outputs,
                input_kind=source.input_kind or "tensor",
                feeds=conversion.feeds,
                prediction_output=conversion.prediction_output,
                opset=conv.model_opset(conversion.model),
                onnxruntime_version=onnxruntime.__version__,
                files=hash_tree(staging),
                parity=parity,
                run_id=source.run_id,
                model_file=MODEL_FILE,
                input_example_file=EXAMPLE_FILE if example_json is not None else None,
                task=conversion.task,
                class_labels=conversion.class_labels,
                optimization=optimization,
                extra={k: v for k, v in extra.items() if v is not None},
            )
            write_manifest(staging, manifest)
            verify_bundle(staging)
            _check(cancel)
            _install(staging, out_dir, options.overwrite)
            timings["write"] = time.perf_counter() - t
            report_progress("done", 1.0)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("built bundle %s (%s)", out_dir, manifest.sha256[:12])
    return BundleReport(
        out_dir=out_dir,
        manifest=manifest,
        parity=parity,
        optimization=optimization,
        timings={k: round(v, 3) for k, v in timings.items()},
    )


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def _check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``; even then, replace only a previous bundle.

    ``--force`` pointed at the wrong folder (a home directory, a project) must not delete it.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise BundleError(f"{out_dir} exists and is not a directory")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise BundleError(f"{out_dir} is not empty", hint="pass --force to replace it, or choose another -o DIR")
    if not (out_dir / MANIFEST_NAME).is_file():
        raise BundleError(
            f"{out_dir} is not empty and is not a ModelDeck bundle; refusing to replace it",
            hint="--force only replaces a previous bundle; choose an empty or new -o DIR",
        )


def _install(staging: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished bundle into place; an old bundle is moved aside first and removed after."""
    _check_target(out_dir, overwrite)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        out_dir.rename(old)
    try:
        staging.rename(out_dir)
    except OSError as exc:
        if old is not None:
            old.rename(out_dir)
        raise BundleError(f"cannot move the bundle into {out_dir}: {exc}") from exc
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_parity(
    model_bytes: bytes, conversion: conv.Conversion, rows: par.Rows | None, options: BundleOptions
) -> tuple[Parity | None, str | None, dict[str, Any] | None]:
    """(parity, why it was skipped, the original model's outputs on the rows)."""
    from modeldeck.core.bundle.optimize import session

    sess = session(model_bytes)
    if rows is None:
        return None, (conversion.parity_skipped_reason or "no input example") + "; no input example to run", None
    actual = par.run_onnx(sess, conversion.feeds, rows.batch)
    if conversion.reference is None:
        reason = conversion.parity_skipped_reason or "there is no original model to compare with"
        return None, f"{reason}; the ONNX model ran without error on {rows.count} rows", None
    try:
        expected = conversion.reference(rows.batch)
    except Exception as exc:  # the original model's own predict failing is the model's problem, said plainly
        raise BundleError(f"the original model failed to predict: {exc.__class__.__name__}: {exc}") from exc
    label = conversion.prediction_output if conversion.task == "classification" else None
    return (
        par.compare(expected, actual, rows=rows.count, rtol=options.rtol, atol=options.atol, label_output=label),
        None,
        expected,
    )


def _specs_from_feeds(conversion: conv.Conversion) -> tuple[Any, ...]:
    from modeldeck.core.runtime.manifest import ColumnSpec

    return tuple(
        ColumnSpec(name=f.onnx_input, type=f.dtype if f.dtype != "str" else "float32", shape=f.shape)
        for f in conversion.feeds
        if not f.columns
    )


def _key_tensors(rows: par.Rows | None, conversion: conv.Conversion) -> par.Rows | None:
    """Name a single unnamed signature tensor after the single ONNX input it feeds."""
    if rows is None or not isinstance(rows.batch, dict) or len(conversion.feeds) != 1 or len(rows.batch) != 1:
        return rows
    feed = conversion.feeds[0]
    if feed.columns:
        return rows
    return par.Rows({feed.onnx_input: next(iter(rows.batch.values()))}, rows.count)


def _example_json(
    saved: dict[str, Any] | None, example: par.Rows | None, generated: par.Rows | None, conversion: conv.Conversion
) -> tuple[dict[str, Any] | None, bool]:
    """The example as ``dataframe_split`` (or ``{"inputs": ...}``); made from parity rows if none was saved."""
    if saved is not None and "columns" in saved:
        return {"columns": saved["columns"], "data": saved["data"]}, False
    if saved is not None:
        return {"inputs": saved["inputs"]}, False
    rows = example or generated
    if rows is None:
        return None, False
    if isinstance(rows.batch, dict):
        batch = {k: v[:3].tolist() for k, v in rows.batch.items()}
        return {"inputs": next(iter(batch.values())) if len(batch) == 1 else batch}, True
    head = rows.batch.head(3)
    return {"columns": list(head.columns), "data": [[_plain(v) for v in r] for r in head.itertuples(index=False)]}, True


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _redact(uri: str | None) -> str | None:
    """A tracking URI without credentials (user:password@ is dropped)."""
    if not uri or "@" not in uri or "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    host = rest.split("@", 1)[1] if "@" in rest.split("/", 1)[0] else rest
    return f"{scheme}://{host}"
