"""``modeldeck bundle``, ``verify-bundle`` and ``inspect-bundle``: build and check ONNX bundles.

``modeldeck bundle MODEL_URI -o DIR`` is the build command the issue names; as
argparse cannot mix a positional model URI with sub-verbs, checking and reading
a bundle are the sibling commands ``verify-bundle DIR`` and ``inspect-bundle DIR``.
Progress goes to stderr so ``--json`` output stays clean.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

_EPILOG = """\
MODEL_URI is models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH or a local MLflow model folder.
Related commands: `modeldeck verify-bundle DIR` checks a bundle's files against its manifest;
`modeldeck inspect-bundle DIR` prints its manifest.
"""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this module's subcommands to the top-level parser."""
    p = sub.add_parser(
        "bundle",
        help="convert a model to a verified ONNX bundle (see also verify-bundle, inspect-bundle)",
        description="Convert an MLflow model to ONNX, check it answers like the original, and write a bundle.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_uri", metavar="MODEL_URI", help="the model to bundle")
    p.add_argument("-o", "--output", metavar="DIR", required=True, type=Path, help="bundle directory to create")
    p.add_argument("--force", action="store_true", help="replace DIR if it is not empty")
    p.add_argument("--optimize", action="store_true", help="apply onnxruntime's portable (basic) graph optimisation")
    p.add_argument("--quantize", choices=["int8"], help="dynamic int8 quantisation of MatMul/Gemm weights")
    p.add_argument(
        "--max-accuracy-delta",
        type=float,
        default=0.01,
        metavar="X",
        help="refuse quantisation that changes more than this share of labels / of the prediction range (default 0.01)",
    )
    p.add_argument("--rtol", type=float, default=1e-3, metavar="X", help="parity relative tolerance (default 1e-3)")
    p.add_argument("--atol", type=float, default=1e-4, metavar="X", help="parity absolute tolerance (default 1e-4)")
    p.add_argument(
        "--parity-rows", type=int, default=200, metavar="N", help="generated rows checked besides the example (200)"
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading a pickled sklearn model (runs code from the file: only for models you trust)",
    )
    p.add_argument("--name", metavar="NAME", help="model name to record in the manifest (default: registered name)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=cmd_bundle)

    p = sub.add_parser("verify-bundle", help="check a bundle's files against its manifest (sha256)")
    p.add_argument("directory", metavar="DIR", type=Path)
    p.add_argument("--json", action="store_true", help="print the verified manifest as JSON")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("inspect-bundle", help="print a bundle's manifest: source, inputs, parity, optimisation")
    p.add_argument("directory", metavar="DIR", type=Path)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=cmd_inspect)


def _progress(message: str, fraction: float | None) -> None:
    pct = f"{fraction * 100:3.0f}% " if fraction is not None else ""
    print(f"bundle: {pct}{message}", file=sys.stderr, flush=True)


def _tracking_uri(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The tracking/registry URIs for registry and run refs; a local folder needs none."""
    uri = args.model_uri
    if not uri.startswith(("models:/", "runs:/")):
        return None, None
    from modeldeck.core import cli

    settings = cli.settings_for(args)
    if settings.tracking_uri is None:
        from modeldeck.core.registry.embedded import ensure_embedded_registry

        ensure_embedded_registry(settings, progress=None if args.quiet else _progress)
    return settings.effective_tracking_uri, settings.registry_uri


def cmd_bundle(args: argparse.Namespace) -> int:
    from modeldeck.core.bundle import BundleOptions, build_bundle
    from modeldeck.core.errors import BundleError

    try:
        options = BundleOptions(
            overwrite=args.force,
            optimize=args.optimize,
            quantize=args.quantize,
            max_accuracy_delta=args.max_accuracy_delta,
            rtol=args.rtol,
            atol=args.atol,
            parity_rows=args.parity_rows,
            trust_pickle=args.trust_pickle,
            model_name=args.name,
        )
        options.validate()
    except (TypeError, ValueError) as exc:
        raise BundleError(f"invalid option: {exc}") from exc
    tracking_uri, registry_uri = _tracking_uri(args)
    report = build_bundle(
        args.model_uri,
        args.output,
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        options=options,
        progress=None if args.quiet or args.json else _progress,
        cancel=threading.Event(),
    )
    print(report.to_json() if args.json else report.to_text())
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from modeldeck.core.runtime.manifest import verify_bundle

    manifest = verify_bundle(args.directory)
    if args.json:
        print(json.dumps({"ok": True, "sha256": manifest.sha256, "manifest": json.loads(manifest.to_json())}, indent=2))
    else:
        print(
            f"ok: {args.directory} is an intact bundle of {manifest.model_name} version {manifest.model_version} "
            f"({len(manifest.files)} files, sha256 {manifest.sha256[:12]})"
        )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from modeldeck.core.runtime.manifest import read_manifest

    m = read_manifest(args.directory)
    if args.json:
        print(m.to_json())
        return 0
    print(f"model      {m.model_name} version {m.model_version} ({m.flavor}, task {m.task or 'unknown'})")
    print(f"source     {m.source_uri}" + (f"  run {m.run_id}" if m.run_id else ""))
    print(f"created    {m.created_at} with onnxruntime {m.onnxruntime_version}, opset {m.opset}")
    print(f"inputs     {', '.join(f'{c.name}:{c.type}' for c in m.inputs) or '(no signature)'}")
    for f in m.feeds:
        cols = f"columns {', '.join(f.columns)}" if f.columns else "tensor passed through"
        print(f"feed       {f.onnx_input} ({f.dtype}, shape {list(f.shape) if f.shape else '?'}) <- {cols}")
    print(f"outputs    {', '.join(o.name for o in m.outputs)}; prediction: {m.prediction_output}")
    if m.class_labels is not None:
        print(f"classes    {', '.join(map(str, m.class_labels))}")
    if m.parity:
        print(
            f"parity     passed on {m.parity.rows} rows, max abs error {m.parity.max_abs_error:.3g}"
            + (f", label agreement {m.parity.label_agreement:.2%}" if m.parity.label_agreement is not None else "")
        )
    else:
        print(f"parity     skipped: {m.extra.get('parity_skipped', 'no reason recorded')}")
    if m.optimization:
        for step in m.optimization.get("steps", []):
            state = "applied" if step.get("applied") else f"not applied ({step.get('reason', '')})"
            print(f"optimise   {step['step']}: {state}")
    print(f"sha256     {m.sha256}")
    return 0
