"""Where a model comes from: resolve a model URI to a local MLflow model folder.

Registry refs (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``) and run refs
(``runs:/RUN_ID/path``) are resolved with an explicit tracking URI -- never the
process-global one MLflow keeps -- and downloaded into a scratch folder the
caller owns. A local folder with an ``MLmodel`` file is used in place.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeldeck.core.errors import BadTrackingURI, BundleError, NotFound, RegistryError

log = logging.getLogger(__name__)

_MODELS_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)/?$")
_MODELS_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z]+)/(?P<path>.+?)/?$")


@dataclass(frozen=True)
class ModelSource:
    """A model folder on local disk plus what is known about where it came from."""

    model_dir: Path
    source_uri: str
    mlmodel: dict[str, Any]
    model_name: str
    model_version: str
    run_id: str | None = None
    signature: dict[str, Any] | None = None  # {"inputs": [...], "outputs": [...] | None} parsed from MLmodel
    input_example: dict[str, Any] | None = None  # {"columns", "data"} or {"inputs": ...}
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def flavors(self) -> dict[str, Any]:
        return dict(self.mlmodel.get("flavors") or {})

    @property
    def input_kind(self) -> str | None:
        """``columns`` or ``tensor`` per the signature; None without a signature."""
        if not self.signature or not self.signature.get("inputs"):
            return None
        return "tensor" if self.signature["inputs"][0].get("type") == "tensor" else "columns"


def _is_local_model_dir(uri: str) -> Path | None:
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    if "://" in uri and not uri.startswith("file://"):
        return None
    if uri.startswith(("models:/", "runs:/")):
        return None
    return path


def fetch_model(
    model_uri: str, scratch: Path, *, tracking_uri: str | None = None, registry_uri: str | None = None
) -> ModelSource:
    """Resolve ``model_uri`` and make its files available locally.

    Raises :class:`NotFound` for an unknown model, version, alias or run,
    :class:`BundleError` for a folder that is not an MLflow model, and
    :class:`RegistryError` when the registry cannot be read.
    """
    local = _is_local_model_dir(model_uri)
    if local is not None:
        if not local.is_dir():
            raise BundleError(
                f"{model_uri}: no such model folder",
                hint="pass models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH or an MLflow model folder",
            )
        if not (local / "MLmodel").is_file():
            raise BundleError(f"{model_uri} is not an MLflow model folder: it has no MLmodel file")
        mlmodel = read_mlmodel(local)
        name, version = _registered_meta(local)
        return _source(
            local,
            str(local.resolve()),
            mlmodel,
            name or local.resolve().name,
            version or "local",
            mlmodel.get("run_id"),
        )

    if not tracking_uri:
        raise BadTrackingURI(f"{model_uri} needs a tracking URI", hint="pass --tracking-uri or set MLFLOW_TRACKING_URI")
    name, version, run_id = _resolve_ref(model_uri, tracking_uri, registry_uri)
    local = _download(model_uri, scratch, tracking_uri, registry_uri, name, version, run_id)
    mlmodel = read_mlmodel(local)
    if name is None:
        meta_name, meta_version = _registered_meta(local)
        m = _RUNS.match(model_uri)
        name = meta_name or (Path(m.group("path")).name if m else local.name)
        version = meta_version or f"run-{(run_id or '')[:8]}"
    return _source(local, model_uri, mlmodel, name, version or "0", run_id or mlmodel.get("run_id"))


def _resolve_ref(
    model_uri: str, tracking_uri: str, registry_uri: str | None
) -> tuple[str | None, str | None, str | None]:
    """(name, version, run_id) of a registry ref; (None, None, run_id) of a run ref."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
    try:
        if m := _MODELS_VERSION.match(model_uri):
            mv = client.get_model_version(m.group("name"), m.group("version"))
            return mv.name, str(mv.version), mv.run_id
        if m := _MODELS_ALIAS.match(model_uri):
            mv = client.get_model_version_by_alias(m.group("name"), m.group("alias"))
            return mv.name, str(mv.version), mv.run_id
        if m := _RUNS.match(model_uri):
            run = client.get_run(m.group("run_id"))
            return None, None, run.info.run_id
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise NotFound(f"{model_uri}: {_first_line(exc)}") from exc
        raise RegistryError(f"cannot resolve {model_uri}: {_first_line(exc)}") from exc
    raise BundleError(
        f"unsupported model URI {model_uri!r}",
        hint="use models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH or a local MLflow model folder",
    )


def _download(
    model_uri: str,
    scratch: Path,
    tracking_uri: str,
    registry_uri: str | None,
    name: str | None,
    version: str | None,
    run_id: str | None,
) -> Path:
    import mlflow.artifacts
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    dst = scratch / "model"
    dst.mkdir(parents=True, exist_ok=True)
    try:
        if name and version:
            # MLflow's models:/ repository reads the process-global registry URI, so resolve the
            # version's artifact location ourselves; the resolved version (not an alias that may
            # have moved meanwhile) is what gets downloaded.
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)
            uri = client.get_model_version_download_uri(name, version)
        else:
            uri = _run_artifact_uri(model_uri, tracking_uri)
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dst), tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri
        )
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise NotFound(f"{model_uri}: {_first_line(exc)}") from exc
        raise RegistryError(f"cannot download {model_uri}: {_first_line(exc)}") from exc
    except OSError as exc:
        raise RegistryError(f"cannot download {model_uri}: {exc}") from exc
    local = Path(path)
    if not (local / "MLmodel").is_file():
        raise BundleError(f"{model_uri} is not an MLflow model: it has no MLmodel file")
    return local


def _run_artifact_uri(model_uri: str, tracking_uri: str) -> str:
    """Where ``runs:/RUN_ID/NAME[/sub]`` lives: the run's logged model NAME (MLflow 3) or its artifact folder.

    Resolved here because MLflow's runs:/ repository looks logged models up
    through the process-global tracking URI.
    """
    from mlflow import MlflowClient

    m = _RUNS.match(model_uri)
    if m is None:
        raise BundleError(f"unsupported model URI {model_uri!r}")
    run_id, path = m.group("run_id"), m.group("path")
    name, _, rest = path.partition("/")
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    token: str | None = None
    for _page in range(100):  # bounded: a run does not log thousands of models of one name
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"name = '{name}'", page_token=token
        )
        for logged in page:
            if logged.source_run_id == run_id:
                return logged.artifact_location.rstrip("/") + (f"/{rest}" if rest else "")
        token = page.token
        if not token:
            break
    return f"{run.info.artifact_uri.rstrip('/')}/{path}"


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise BundleError(f"cannot read {model_dir / 'MLmodel'}: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{model_dir / 'MLmodel'} is not a YAML mapping")
    return data


def _registered_meta(model_dir: Path) -> tuple[str | None, str | None]:
    import yaml

    meta = model_dir / "registered_model_meta"
    if not meta.is_file():
        return None, None
    try:
        data = yaml.safe_load(meta.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        log.warning("ignoring unreadable %s", meta)
        return None, None
    name, version = data.get("model_name"), data.get("model_version")
    return (str(name) if name else None), (str(version) if version else None)


def _source(
    model_dir: Path, source_uri: str, mlmodel: dict[str, Any], name: str, version: str, run_id: str | None
) -> ModelSource:
    signature = _signature(mlmodel)
    example = _input_example(model_dir, mlmodel)
    notes: dict[str, Any] = {}
    if signature is None and example is not None:
        signature = _signature_from_example(example)
        notes["signature_inferred_from_example"] = signature is not None
    return ModelSource(
        model_dir=model_dir,
        source_uri=source_uri,
        mlmodel=mlmodel,
        model_name=name,
        model_version=version,
        run_id=run_id,
        signature=signature,
        input_example=example,
        notes=notes,
    )


def _signature_from_example(example: dict[str, Any]) -> dict[str, Any] | None:
    """A signature (MLflow JSON form) guessed from the input example, for models logged without one."""
    import numpy as np

    if "columns" in example:
        inputs = []
        for i, name in enumerate(example["columns"]):
            values = [row[i] for row in example["data"] if i < len(row) and row[i] is not None]
            if values and all(isinstance(v, bool) for v in values):
                kind = "boolean"
            elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                kind = "long"
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                kind = "double"
            else:
                kind = "string"
            inputs.append({"name": str(name), "type": kind, "required": True})
        return {"inputs": inputs, "outputs": None}
    inputs_value = example.get("inputs")
    tensors = inputs_value if isinstance(inputs_value, dict) else {None: inputs_value}
    specs = []
    for name, value in tensors.items():
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            return None
        dtype = "float32" if arr.dtype.kind == "f" else arr.dtype.name
        spec = {"type": "tensor", "tensor-spec": {"dtype": dtype, "shape": [-1, *arr.shape[1:]]}}
        if name is not None:
            spec["name"] = str(name)
        specs.append(spec)
    return {"inputs": specs, "outputs": None}


def _signature(mlmodel: dict[str, Any]) -> dict[str, Any] | None:
    sig = mlmodel.get("signature")
    if not isinstance(sig, dict) or not sig.get("inputs"):
        return None
    try:
        inputs = json.loads(sig["inputs"])
        outputs = json.loads(sig["outputs"]) if sig.get("outputs") else None
    except (TypeError, ValueError) as exc:
        raise BundleError(f"the model's signature cannot be parsed: {exc}") from exc
    return {"inputs": inputs, "outputs": outputs}


def _input_example(model_dir: Path, mlmodel: dict[str, Any]) -> dict[str, Any] | None:
    """The saved input example in ``dataframe_split`` form (``{"columns", "data"}``) or ``{"inputs": ...}``."""
    info = mlmodel.get("saved_input_example_info") or {}
    rel = info.get("artifact_path")
    if not rel:
        return None
    path = model_dir / rel
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("ignoring unreadable input example %s: %s", path, exc)
        return None
    kind = info.get("type")
    if kind == "dataframe" and isinstance(data, dict) and "columns" in data and "data" in data:
        return {"columns": list(data["columns"]), "data": [list(r) for r in data["data"]]}
    if kind == "dataframe" and isinstance(data, dict) and "dataframe_split" in data:
        split = data["dataframe_split"]
        return {"columns": list(split["columns"]), "data": [list(r) for r in split["data"]]}
    if kind == "ndarray":
        inputs = data.get("inputs", data) if isinstance(data, dict) else data
        return {"inputs": inputs}
    log.warning("input example of type %r is not supported; ignoring it", kind)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


__all__ = ["ModelSource", "fetch_model", "read_mlmodel"]
