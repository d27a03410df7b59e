"""The bundle manifest: what a bundle is, where it came from, and how to feed it.

A bundle is a folder::

    manifest.json        this file's data (written last, so a half-built bundle has none)
    model.onnx           the model the runtime serves
    input_example.json   the signature's input example, in MLflow ``dataframe_split`` form
    ...                  anything else listed in ``files``

The manifest lists the sha256 of every other file; :func:`load_bundle` refuses a
bundle whose files differ, are missing or are unlisted, so a tampered or
truncated bundle is never served. Stdlib-only: the runtime and the bundler share it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modeldeck.core.errors import BundleError, TamperedBundle

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ColumnSpec:
    """One input or output column of the model signature, in MLflow's vocabulary.

    ``type`` is an MLflow data type (``double``, ``float``, ``long``, ``integer``,
    ``boolean``, ``string``) for column signatures, or a numpy dtype name for tensor
    signatures; ``shape`` is only set for tensors (``-1`` for a free dimension).
    """

    name: str
    type: str
    optional: bool = False
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Feed:
    """How request columns become one ONNX input tensor.

    ``columns`` are stacked side by side (in this order) into a 2-D array of
    ``dtype`` (a numpy dtype name, e.g. ``float32``, ``int64``, ``str``); for a
    tensor signature ``columns`` is empty and the request's tensor of the same
    name is passed through, reshaped to ``shape``.
    """

    onnx_input: str
    dtype: str
    columns: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Parity:
    """Result of comparing the ONNX model with the original on the same rows."""

    passed: bool
    rows: int
    rtol: float
    atol: float
    max_abs_error: float
    label_agreement: float | None = None  # classifiers: share of identical labels


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime and the deploy targets need to know about a bundle."""

    model_name: str
    model_version: str
    source_uri: str
    flavor: str  # the flavor it was built from: "onnx", "sklearn", ...
    created_at: str  # ISO-8601 UTC
    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[ColumnSpec, ...]
    input_kind: str  # "columns" (dataframe) or "tensor"
    feeds: tuple[Feed, ...]
    prediction_output: str  # the ONNX output that is MLflow's ``predict()`` result
    opset: int
    onnxruntime_version: str
    files: dict[str, str]  # relative path -> sha256, every file but the manifest
    parity: Parity | None = None
    run_id: str | None = None
    model_file: str = "model.onnx"
    input_example_file: str | None = "input_example.json"
    task: str | None = None  # "classification", "regression", or None if unknown
    class_labels: tuple[Any, ...] | None = None
    optimization: dict[str, Any] | None = None  # report of --optimize/--quantize
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """A digest of the whole bundle: the sha256 of its sorted file list and sums."""
        return bundle_digest(self.files)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build a manifest from parsed JSON; raises :class:`BundleError` naming the bad field."""
        try:
            version = int(data.get("format_version", 0))
            if version != FORMAT_VERSION:
                raise BundleError(
                    f"unsupported bundle format version {version} (this ModelDeck reads {FORMAT_VERSION})",
                    hint="rebuild the bundle with this version of ModelDeck",
                )
            parity = data.get("parity")
            return cls(
                model_name=str(data["model_name"]),
                model_version=str(data["model_version"]),
                source_uri=str(data["source_uri"]),
                flavor=str(data["flavor"]),
                created_at=str(data["created_at"]),
                inputs=tuple(_column(c) for c in data["inputs"]),
                outputs=tuple(_column(c) for c in data["outputs"]),
                input_kind=str(data["input_kind"]),
                feeds=tuple(
                    Feed(
                        onnx_input=str(f["onnx_input"]),
                        dtype=str(f["dtype"]),
                        columns=tuple(f.get("columns") or ()),
                        shape=tuple(f["shape"]) if f.get("shape") is not None else None,
                    )
                    for f in data["feeds"]
                ),
                prediction_output=str(data["prediction_output"]),
                opset=int(data["opset"]),
                onnxruntime_version=str(data["onnxruntime_version"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                parity=Parity(**parity) if parity else None,
                run_id=data.get("run_id"),
                model_file=str(data.get("model_file", "model.onnx")),
                input_example_file=data.get("input_example_file"),
                task=data.get("task"),
                class_labels=tuple(data["class_labels"]) if data.get("class_labels") is not None else None,
                optimization=data.get("optimization"),
                format_version=version,
                extra=dict(data.get("extra") or {}),
            )
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"invalid manifest: {exc.__class__.__name__}: {exc}") from exc


def _column(c: dict[str, Any]) -> ColumnSpec:
    shape = c.get("shape")
    return ColumnSpec(
        name=str(c["name"]),
        type=str(c["type"]),
        optional=bool(c.get("optional", False)),
        shape=tuple(shape) if shape is not None else None,
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under ``root`` except the manifest, keyed by POSIX relative path."""
    sums: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            sums[path.relative_to(root).as_posix()] = sha256_file(path)
    return sums


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (tmp + rename): it is the bundle's commit marker."""
    tmp = root / (MANIFEST_NAME + ".tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    tmp.replace(root / MANIFEST_NAME)


def read_manifest(root: Path) -> Manifest:
    """Parse a bundle's manifest without checking its files (cheap; for listings)."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(
            f"{root} is not a ModelDeck bundle: no {MANIFEST_NAME}",
            hint="build one with `modeldeck bundle MODEL_URI -o DIR`",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"invalid manifest {path}: not a JSON object")
    return Manifest.from_dict(data)


def bundle_digest(files: dict[str, str]) -> str:
    """:attr:`Manifest.sha256` from a ``path -> sha256`` map (the manifest's own entry, if present, is left out),
    so a deployer can name a release before the manifest itself has arrived."""
    digest = hashlib.sha256()
    for path in sorted(files):
        if path != MANIFEST_NAME:
            digest.update(f"{path}\0{files[path]}\n".encode())
    return digest.hexdigest()


def verify_bundle(root: Path) -> Manifest:
    """Read the manifest and check every file against it.

    Raises :class:`TamperedBundle` naming the first file that is missing,
    changed, or present but not listed (an extra file could be loaded by
    accident, so it is refused too).
    """
    root = Path(root)
    manifest = read_manifest(root)
    actual = hash_tree(root)
    for rel, expected in sorted(manifest.files.items()):
        got = actual.get(rel)
        if got is None:
            raise TamperedBundle(f"bundle {root}: file {rel} listed in the manifest is missing")
        if got != expected:
            raise TamperedBundle(
                f"bundle {root}: {rel} does not match the manifest (sha256 {got[:12]}…, expected {expected[:12]}…)",
                hint="the bundle was modified or corrupted in transit; rebuild or re-copy it",
            )
    extra = sorted(set(actual) - set(manifest.files))
    if extra:
        raise TamperedBundle(f"bundle {root}: file {extra[0]} is not listed in the manifest")
    for rel in (manifest.model_file,):
        if rel not in manifest.files:
            raise BundleError(f"bundle {root}: manifest does not list its model file {rel}")
    return manifest
