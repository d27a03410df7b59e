"""The MLflow model registry as ModelDeck sees it: one :class:`Registry` per tracking URI.

Every method is synchronous and returns the plain dataclasses of
:mod:`modeldeck.core.registry.types`; every failure is a :class:`RegistryError`
subclass (never an MLflow or requests exception):

* :class:`BadTrackingURI` -- malformed URI, unsupported scheme, sqlite file in a missing directory;
* :class:`RegistryUnreachable` -- server down, DNS/TLS failure, timeout, not an MLflow server;
* :class:`PermissionDenied` -- HTTP 401/403 (hint: ``MLFLOW_TRACKING_TOKEN`` / ``..._USERNAME``);
* :class:`NotFound` -- missing model, version, alias or run.

Each instance owns its own ``MlflowClient``; the process-global tracking URI is
never touched, so several registries can be open at once (the GUI switches
registries at runtime). MLflow's REST client would retry a dead server for
minutes; :func:`bound_http_retries` caps that so a call fails within about
``timeout_s`` -- unless the user set MLflow's own environment variables.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from modeldeck.core.errors import (
    BadTrackingURI,
    NotFound,
    PermissionDenied,
    RegistryError,
    RegistryUnreachable,
)
from modeldeck.core.registry.types import (
    ArtifactEntry,
    ModelVersion,
    Page,
    RegisteredModel,
    RunInfo,
    Signature,
    SignatureColumn,
    ValueDiff,
    VersionComparison,
    VersionDetails,
)

if TYPE_CHECKING:
    from modeldeck.core.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

_SUPPORTED_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_RESERVED_ALIAS_RE = re.compile(r"^(latest|[vV]\d+)$", re.IGNORECASE)
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,17}$")
_TAG_KEY_MAX = 250
_CREDENTIAL_HINT = "set MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
_MAX_ARTIFACT_ENTRIES = 500
_MAX_EXAMPLE_BYTES = 2_000_000
_RUN_BATCH = 100

# MLflow's own knobs; values the user set win over ours.
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")
_USER_HTTP_ENV = frozenset(k for k in HTTP_ENV if k in os.environ)


def bound_http_retries(timeout_s: float) -> None:
    """Make MLflow's REST calls give up within about ``timeout_s`` (one quick retry, no long backoff).

    MLflow reads these environment variables on every request, so this is
    process-wide: the last :class:`Registry` created decides. Variables the user
    set before ModelDeck started are left alone.
    """
    values = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",  # one immediate retry (urllib3 sleeps 0 before the first)
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s / 2))),  # per attempt: 2 attempts ~ timeout_s
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    for key, value in values.items():
        # Write only on change: putenv from a worker thread races getenv in C code (Qt, libc) elsewhere.
        if key not in _USER_HTTP_ENV and os.environ.get(key) != value:
            os.environ[key] = value


def redact_uri(uri: str) -> str:
    """The URI without user:password@ (for titles, logs and error messages)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def validate_tracking_uri(uri: str) -> str:
    """Check a tracking URI's shape before any I/O; return it stripped. Raises :class:`BadTrackingURI`."""
    uri = (uri or "").strip()
    if not uri:
        raise BadTrackingURI("the tracking URI is empty")
    shown = redact_uri(uri)
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise BadTrackingURI(f"malformed tracking URI {shown!r}: {exc}") from exc
    scheme = parts.scheme.lower().split("+", 1)[0]
    if not scheme or scheme == "file":
        raise BadTrackingURI(
            f"{shown!r} is a file-store path, which ModelDeck does not open",
            hint="use a database store such as sqlite:///path/to/mlflow.db (see `mlflow migrate-filestore`)",
        )
    if scheme not in _SUPPORTED_SCHEMES:
        raise BadTrackingURI(
            f"unsupported tracking URI scheme {parts.scheme!r} in {shown!r}",
            hint="use http(s)://host:port, sqlite:///path/to/mlflow.db or a database URL",
        )
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise BadTrackingURI(f"tracking URI {shown!r} has no host", hint="e.g. http://127.0.0.1:5000")
        if port == 0:
            raise BadTrackingURI(f"tracking URI {shown!r} has port 0")
    if scheme == "sqlite":
        path = sqlite_path(uri)
        if path is not None and not path.parent.is_dir():
            raise BadTrackingURI(
                f"no such directory for the sqlite store: {path.parent}",
                hint="create the directory first, or check the path (sqlite:////absolute/path/mlflow.db)",
            )
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for in-memory)."""
    rest = uri.split(":", 1)[1]
    if not rest.startswith("///"):
        return None
    path = rest[3:].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def _mlflow_error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def translate_error(exc: BaseException, what: str, uri: str) -> RegistryError:
    """Map an MLflow/requests/SQLAlchemy exception to ModelDeck's registry errors."""
    import requests

    shown = redact_uri(uri)
    message = getattr(exc, "message", None) or str(exc)
    first_line = message.strip().splitlines()[0] if message.strip() else exc.__class__.__name__
    code = _mlflow_error_code(exc)
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or (
        code == "INVALID_PARAMETER_VALUE" and re.search(r"\bnot found\b", first_line)
    ):
        return NotFound(f"{what}: not found" if what.startswith("cannot") else f"{what} does not exist")
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED") or re.search(r"error code 40[13]\b", message):
        return PermissionDenied(f"{what}: {shown} refused the credentials ({first_line[:200]})", hint=_CREDENTIAL_HINT)
    if "out-of-date database schema" in message:
        return RegistryError(
            f"{what}: the database {shown} was made by an older MLflow",
            hint=f"back it up, then run `mlflow db upgrade {shown}`",
        )
    for inner in _chain(exc):
        if isinstance(inner, requests.exceptions.SSLError):
            return RegistryUnreachable(f"{what}: TLS failure talking to {shown}", hint="check the certificate")
        if isinstance(inner, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return RegistryUnreachable(
                f"{what}: the registry at {shown} did not answer",
                hint="check that the MLflow server is running and the host/port are right",
            )
        if isinstance(inner, requests.exceptions.InvalidURL):
            return BadTrackingURI(f"malformed tracking URI {shown!r}")
        if inner.__class__.__name__ == "UnsupportedModelRegistryStoreURIException":
            return BadTrackingURI(f"unsupported tracking URI {shown!r}")
        if inner.__class__.__name__ in ("OperationalError", "DatabaseError", "InterfaceError"):
            return RegistryUnreachable(f"{what}: cannot open the database {shown}: {str(inner).splitlines()[0][:200]}")
        if isinstance(inner, OSError) and not isinstance(inner, requests.exceptions.RequestException):
            return RegistryUnreachable(f"{what}: {inner.strerror or inner} ({shown})")
    if "API request to" in message and ("failed with exception" in message or "timeout" in message):
        return RegistryUnreachable(f"{what}: the registry at {shown} did not answer", hint="is the server running?")
    if code == "ENDPOINT_NOT_FOUND" or re.search(r"error code 404\b", message):
        return RegistryUnreachable(
            f"{what}: {shown} does not look like an MLflow tracking server (404)", hint="check the URL and its path"
        )
    return RegistryError(f"{what}: {first_line[:300]}")


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise RegistryError("model name is empty")
    if name != name.strip():
        raise RegistryError(f"model name {name!r} has leading or trailing spaces")
    if any(c in name for c in "/:") or any(ord(c) < 32 for c in name):
        raise RegistryError(f"invalid model name {name!r}: names cannot contain '/', ':' or control characters")
    if "'" in name and '"' in name:
        raise RegistryError(f"invalid model name {name!r}: it contains both kinds of quotes")
    return name


def validate_version(version: str | int) -> str:
    text = str(version).strip()
    if not _VERSION_RE.match(text):
        raise RegistryError(f"invalid version {version!r}: a version is a positive whole number, like 3")
    return text


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_RE.match(alias) or len(alias) > 255:
        raise RegistryError(
            f"invalid alias {alias!r}: use letters, digits, '_' and '-' only (e.g. champion)",
        )
    if _RESERVED_ALIAS_RE.match(alias):
        raise RegistryError(f"alias {alias!r} is reserved by MLflow ('latest' and v<number> name versions)")
    return alias


def validate_tag_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > _TAG_KEY_MAX:
        raise RegistryError(f"invalid tag key {key!r}: it must be 1..{_TAG_KEY_MAX} characters")
    if key != key.strip() or any(ord(c) < 32 for c in key):
        raise RegistryError(f"invalid tag key {key!r}: no leading/trailing spaces or control characters")
    return key


def _quote(value: str) -> str:
    """A string literal for MLflow's search filter language."""
    return f'"{value}"' if "'" in value else f"'{value}'"


def _tags(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(t.key): str(t.value) for t in (raw or [])}


def _to_version(mv: Any) -> ModelVersion:
    return ModelVersion(
        name=str(mv.name),
        version=str(mv.version),
        creation_time=int(mv.creation_timestamp or 0),
        last_updated=int(mv.last_updated_timestamp or mv.creation_timestamp or 0),
        status=str(mv.status or ""),
        source=str(mv.source or ""),
        run_id=mv.run_id or None,
        description=mv.description or "",
        tags=_tags(mv.tags),
        aliases=tuple(sorted(getattr(mv, "aliases", None) or ())),
    )


def _to_model(rm: Any) -> RegisteredModel:
    latest = [int(v.version) for v in (rm.latest_versions or [])]
    return RegisteredModel(
        name=str(rm.name),
        description=rm.description or "",
        creation_time=int(rm.creation_timestamp or 0),
        last_updated=int(rm.last_updated_timestamp or rm.creation_timestamp or 0),
        tags=_tags(rm.tags),
        aliases={str(k): str(v) for k, v in (rm.aliases or {}).items()},
        latest_version=str(max(latest)) if latest else None,
    )


def _to_run(run: Any) -> RunInfo:
    info, data = run.info, run.data
    return RunInfo(
        run_id=str(info.run_id),
        experiment_id=str(info.experiment_id),
        run_name=info.run_name or None,
        status=str(info.status),
        start_time=info.start_time,
        end_time=info.end_time,
        params=dict(data.params),
        metrics={k: float(v) for k, v in data.metrics.items()},
        tags={k: v for k, v in data.tags.items() if not k.startswith("mlflow.")},
    )


def _columns(schema: Any) -> tuple[SignatureColumn, ...]:
    if schema is None:
        return ()
    out = []
    for spec in schema.inputs:
        shape = getattr(spec, "shape", None)
        out.append(
            SignatureColumn(
                name=spec.name,
                type=str(getattr(spec.type, "name", None) or spec.type),
                optional=not getattr(spec, "required", True),
                shape=tuple(int(d) for d in shape) if shape is not None else None,
            )
        )
    return tuple(out)


def _to_signature(sig: Any) -> Signature | None:
    if sig is None:
        return None
    inputs = sig.inputs
    kind = "tensor" if inputs is not None and inputs.is_tensor_spec() else "columns"
    params = ()
    if getattr(sig, "params", None) is not None:
        params = tuple(
            SignatureColumn(name=p.name, type=str(getattr(p.dtype, "name", p.dtype)), optional=True, shape=p.shape)
            for p in sig.params.params
        )
    return Signature(inputs=_columns(inputs), outputs=_columns(sig.outputs), input_kind=kind, params=params)


def _example_payload(raw: Any, info: dict[str, Any]) -> dict[str, Any] | None:
    """MLflow's stored example in ``dataframe_split`` form (columns/data) when tabular."""
    if not isinstance(raw, dict):
        return {"inputs": raw}
    if "columns" in raw and "data" in raw:
        return {"columns": list(raw["columns"]), "data": raw["data"]}
    if "dataframe_split" in raw and isinstance(raw["dataframe_split"], dict):
        return _example_payload(raw["dataframe_split"], info)
    if "data" in raw and info.get("type") == "dataframe":  # orient=split without columns
        return {"columns": None, "data": raw["data"]}
    if "inputs" in raw:
        return {"inputs": raw["inputs"]}
    return {"inputs": raw}


def _create_embedded_store(settings: Settings) -> None:
    """Create the embedded store so its default experiment keeps artifacts in the data dir, not ./mlruns."""
    from modeldeck.core.registry.embedded import create_store

    uri = settings.embedded_tracking_uri
    try:
        create_store(uri, settings.embedded_artifact_root)
    except Exception as exc:
        raise translate_error(exc, "cannot create the local registry", uri) from exc


class Registry:
    """One MLflow registry (tracking + model registry), opened by URI.

    Construction does no network I/O (MLflow opens -- and creates or migrates -- a
    SQL store right away); use :meth:`ping` to check the registry answers. Instances are safe to use from one worker
    thread at a time.
    """

    def __init__(self, tracking_uri: str, registry_uri: str | None = None, *, timeout_s: float = 10.0) -> None:
        self.tracking_uri = validate_tracking_uri(tracking_uri)
        self.registry_uri = validate_tracking_uri(registry_uri) if registry_uri else self.tracking_uri
        self.timeout_s = float(timeout_s)
        self._experiment_ids: list[str] | None = None
        bound_http_retries(self.timeout_s)
        from mlflow import MlflowClient

        try:
            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        except Exception as exc:
            raise translate_error(exc, "cannot open the registry", self.tracking_uri) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The configured registry, or the embedded local one when none is configured.

        Creates the embedded registry's folder but does not seed the demo models:
        call :func:`modeldeck.core.registry.embedded.ensure_embedded_registry` (slow,
        with progress) first for that.
        """
        if settings.tracking_uri is None:
            try:
                settings.embedded_artifact_root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(
                    f"cannot create the local registry in {settings.embedded_registry_dir}: {exc.strerror or exc}",
                    hint="set MODELDECK_DATA_DIR to a writable directory",
                ) from exc
            if not (settings.embedded_registry_dir / "mlflow.db").exists():
                _create_embedded_store(settings)
        return cls(settings.effective_tracking_uri, settings.registry_uri)

    @property
    def display_name(self) -> str:
        """``Local registry (<path>)`` for sqlite stores, else the URI without credentials."""
        if self.tracking_uri.startswith("sqlite:"):
            path = sqlite_path(self.tracking_uri)
            return f"Local registry ({path.parent if path and path.name == 'mlflow.db' else path or 'in memory'})"
        return redact_uri(self.tracking_uri)

    def __repr__(self) -> str:
        return f"Registry({redact_uri(self.tracking_uri)!r})"

    # --- plumbing -----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except RegistryError:
            raise
        except Exception as exc:  # MLflow, requests and SQLAlchemy errors all end here
            log.debug("%s failed on %s", what, redact_uri(self.tracking_uri), exc_info=True)
            raise translate_error(exc, what, self.tracking_uri) from exc

    # --- reading ------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check the registry answers (one cheap call); raises the mapped error if not."""
        self._call("cannot reach the registry", self._client.search_registered_models, max_results=1)

    def list_models(
        self, filter_text: str = "", page_token: str | None = None, max_results: int = 100
    ) -> Page[RegisteredModel]:
        """Registered models by name; ``filter_text`` matches part of the name, case-insensitively."""
        text = filter_text.strip()
        filter_string = None
        if text:
            if "'" in text and '"' in text:
                raise RegistryError("the filter cannot contain both kinds of quotes")
            filter_string = f"name ILIKE {_quote('%' + text + '%')}"
        page = self._call(
            "cannot list models",
            self._client.search_registered_models,
            filter_string=filter_string,
            max_results=max_results,
            order_by=["name ASC"],
            page_token=page_token,
        )
        return Page(tuple(_to_model(m) for m in page), page.token or None)

    def get_model(self, name: str) -> RegisteredModel:
        validate_model_name(name)
        return _to_model(self._call(f"model {name!r}", self._client.get_registered_model, name))

    def list_versions(self, name: str, page_token: str | None = None, max_results: int = 200) -> Page[ModelVersion]:
        """One page of ``name``'s versions, newest first (server-side paging, fast with thousands)."""
        model = self.get_model(name)  # NotFound for a missing model; aliases, which search results lack
        by_version: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            by_version.setdefault(version, []).append(alias)
        page = self._call(
            f"cannot list versions of {name!r}",
            self._client.search_model_versions,
            filter_string=f"name = {_quote(name)}",
            max_results=max_results,
            order_by=["version_number DESC"],
            page_token=page_token,
        )
        items = tuple(
            replace(mv, aliases=tuple(sorted(set(mv.aliases) | set(by_version.get(mv.version, ())))))
            for mv in map(_to_version, page)
        )
        return Page(items, page.token or None)

    def get_version(self, name: str, version: str) -> ModelVersion:
        validate_model_name(name)
        version = validate_version(version)
        return _to_version(self._call(f"version {name}/{version}", self._client.get_model_version, name, version))

    def get_version_by_alias(self, name: str, alias: str) -> ModelVersion:
        validate_model_name(name)
        validate_alias(alias)
        return _to_version(self._call(f"alias {name}@{alias}", self._client.get_model_version_by_alias, name, alias))

    def latest_version(self, name: str) -> ModelVersion:
        page = self.list_versions(name, max_results=1)
        if not page.items:
            raise NotFound(f"model {name!r} has no versions")
        return page.items[0]

    def resolve(self, ref: str) -> ModelVersion:
        """``NAME``, ``NAME/3``, ``NAME/latest``, ``NAME@alias``, ``models:/NAME/3`` or ``models:/NAME@alias``.

        A bare name means its latest (highest) version.
        """
        text = (ref or "").strip()
        if text.startswith("models:/"):
            text = text[len("models:/") :]
        if not text:
            raise RegistryError(
                f"empty model reference {ref!r}", hint="e.g. iris-classifier/3 or iris-classifier@champion"
            )
        if "@" in text:
            name, alias = text.rsplit("@", 1)
            return self.get_version_by_alias(name, alias)
        if "/" in text:
            name, version = text.rsplit("/", 1)
            if version.lower() == "latest":
                return self.latest_version(validate_model_name(name))
            if not _VERSION_RE.match(version):
                raise RegistryError(
                    f"invalid model reference {ref!r}: {version!r} is not a version number",
                    hint="use NAME/<number>, NAME@<alias> or NAME (latest); stages are not supported",
                )
            return self.get_version(name, version)
        return self.latest_version(validate_model_name(text))

    def version_details(self, name: str, version: str) -> VersionDetails:
        """Run, signature, input example, flavors and artifact tree of one version.

        Works on models ModelDeck did not create: whatever cannot be read (no run,
        deleted run, no MLmodel, unreachable artifacts) is left empty and said in
        ``warnings`` instead of failing the whole call.
        """
        mv = self.get_version(name, version)
        warnings: list[str] = []
        run = self._details_run(mv, warnings)
        try:
            model_uri = self._call(
                f"artifact location of {mv.ref}", self._client.get_model_version_download_uri, mv.name, mv.version
            )
        except RegistryError as exc:
            warnings.append(f"artifact location unknown: {exc.message}")
            model_uri = mv.source
        signature: Signature | None = None
        example: dict[str, Any] | None = None
        flavors: tuple[str, ...] = ()
        artifacts: tuple[ArtifactEntry, ...] = ()
        size: int | None = None
        repo = self._artifact_repo(model_uri, warnings)
        if repo is not None:
            artifacts, size = self._artifact_tree(repo, warnings)
            signature, example, flavors = self._mlmodel(repo, artifacts, warnings)
        return VersionDetails(
            version=mv,
            run=run,
            signature=signature,
            input_example=example,
            flavors=flavors,
            artifacts=artifacts,
            size_bytes=size,
            model_uri=model_uri,
            warnings=tuple(warnings),
        )

    def _details_run(self, mv: ModelVersion, warnings: list[str]) -> RunInfo | None:
        if not mv.run_id:
            warnings.append("this version is not linked to a run (no params or metrics)")
            return None
        try:
            run = self._call(f"run {mv.run_id}", self._client.get_run, mv.run_id)
        except NotFound:
            warnings.append(f"run {mv.run_id} no longer exists")
            return None
        except RegistryError as exc:
            warnings.append(f"run {mv.run_id} could not be read: {exc.message}")
            return None
        if run.info.lifecycle_stage == "deleted":
            warnings.append(f"run {mv.run_id} is deleted")
        return _to_run(run)

    def _artifact_repo(self, uri: str, warnings: list[str]) -> Any | None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        try:
            return get_artifact_repository(uri, tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        except Exception as exc:
            log.debug("no artifact repository for %s", uri, exc_info=True)
            warnings.append(
                f"artifacts at {redact_uri(uri)} cannot be opened: {translate_error(exc, 'artifacts', uri)}"
            )
            return None

    def _artifact_tree(self, repo: Any, warnings: list[str]) -> tuple[tuple[ArtifactEntry, ...], int | None]:
        entries: list[ArtifactEntry] = []
        pending: list[str | None] = [None]
        try:
            while pending and len(entries) < _MAX_ARTIFACT_ENTRIES:
                path = pending.pop(0)
                for info in repo.list_artifacts(path):
                    entries.append(ArtifactEntry(info.path, bool(info.is_dir), info.file_size))
                    if info.is_dir:
                        pending.append(info.path)
        except Exception as exc:
            log.debug("listing artifacts failed", exc_info=True)
            warnings.append(f"artifacts could not be listed: {translate_error(exc, 'artifacts', self.tracking_uri)}")
            return tuple(entries), None
        if pending:
            warnings.append(f"artifact listing stopped after {_MAX_ARTIFACT_ENTRIES} entries")
        if not entries:
            warnings.append("the model has no artifacts (or they are not where the registry says)")
            return (), None
        entries.sort(key=lambda e: e.path)
        return tuple(entries), sum(e.size or 0 for e in entries if not e.is_dir)

    def _mlmodel(
        self, repo: Any, artifacts: tuple[ArtifactEntry, ...], warnings: list[str]
    ) -> tuple[Signature | None, dict[str, Any] | None, tuple[str, ...]]:
        if not artifacts:
            return None, None, ()  # already said why
        if not any(e.path == "MLmodel" for e in artifacts):
            warnings.append("no MLmodel file: flavors and signature unknown")
            return None, None, ()
        from mlflow.models import Model

        with tempfile.TemporaryDirectory(prefix="modeldeck-mlmodel-") as tmp:
            try:
                local = repo.download_artifacts("MLmodel", dst_path=tmp)
                model = Model.load(local)
            except Exception as exc:
                log.debug("reading MLmodel failed", exc_info=True)
                warnings.append(f"MLmodel could not be read: {translate_error(exc, 'MLmodel', self.tracking_uri)}")
                return None, None, ()
            flavors = tuple(model.flavors)
            signature = None
            try:
                signature = _to_signature(model.signature)
            except Exception as exc:  # an MLmodel from another MLflow version
                warnings.append(f"signature could not be read: {exc}")
            if signature is None:
                warnings.append("the model has no signature")
            example = None
            info = model.saved_input_example_info or {}
            example_path = info.get("artifact_path")
            if not example_path:
                warnings.append("the model has no input example")
            else:
                example = self._input_example(repo, example_path, info, artifacts, tmp, warnings)
        return signature, example, flavors

    def _input_example(
        self,
        repo: Any,
        path: str,
        info: dict[str, Any],
        artifacts: tuple[ArtifactEntry, ...],
        tmp: str,
        warnings: list[str],
    ) -> dict[str, Any] | None:
        size = next((e.size for e in artifacts if e.path == path), None)
        if size is not None and size > _MAX_EXAMPLE_BYTES:
            warnings.append(f"input example is too large to show ({size} bytes)")
            return None
        try:
            local = repo.download_artifacts(path, dst_path=tmp)
            raw = json.loads(Path(local).read_text(encoding="utf-8"))
        except Exception as exc:
            log.debug("reading input example failed", exc_info=True)
            warnings.append(f"input example could not be read: {exc.__class__.__name__}")
            return None
        return _example_payload(raw, info)

    def _all_experiment_ids(self, refresh: bool = False) -> list[str]:
        if self._experiment_ids is None or refresh:
            from mlflow.entities import ViewType

            ids: list[str] = []
            token = None
            while True:
                page = self._call(
                    "cannot list experiments",
                    self._client.search_experiments,
                    view_type=ViewType.ALL,
                    max_results=1000,
                    page_token=token,
                )
                ids += [str(e.experiment_id) for e in page]
                token = page.token
                if not token:
                    break
            self._experiment_ids = ids
        return self._experiment_ids

    def run_metrics(self, run_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Latest metrics of many runs in a few batched queries (for sorting versions by a metric).

        Runs that do not exist are simply absent from the result.
        """
        wanted = sorted({r for r in run_ids if r and re.fullmatch(r"[0-9A-Za-z_\-]+", r)})
        if not wanted:
            return {}
        from mlflow.entities import ViewType

        out: dict[str, dict[str, float]] = {}
        for refresh in (False, True):
            missing = [r for r in wanted if r not in out]
            if not missing:
                break
            exp_ids = self._all_experiment_ids(refresh=refresh)
            for start in range(0, len(missing), _RUN_BATCH):
                batch = missing[start : start + _RUN_BATCH]
                ids = ", ".join(f"'{r}'" for r in batch)
                for exp_start in range(0, max(len(exp_ids), 1), 100):
                    exps = exp_ids[exp_start : exp_start + 100]
                    if not exps:
                        break
                    runs = self._call(
                        "cannot read run metrics",
                        self._client.search_runs,
                        exps,
                        filter_string=f"attributes.run_id IN ({ids})",
                        run_view_type=ViewType.ALL,
                        max_results=len(batch),
                    )
                    for run in runs:
                        out[run.info.run_id] = {k: float(v) for k, v in run.data.metrics.items()}
        return out

    def compare(self, a: ModelVersion, b: ModelVersion) -> VersionComparison:
        """Metric, param and tag differences between two versions (missing on one side = None)."""
        runs: dict[str, RunInfo | None] = {}
        for mv in (a, b):
            if mv.run_id and mv.run_id not in runs:
                try:
                    runs[mv.run_id] = _to_run(self._call(f"run {mv.run_id}", self._client.get_run, mv.run_id))
                except NotFound:
                    runs[mv.run_id] = None
        ra = runs.get(a.run_id) if a.run_id else None
        rb = runs.get(b.run_id) if b.run_id else None

        def diff(x: dict[str, Any], y: dict[str, Any]) -> tuple[ValueDiff, ...]:
            return tuple(ValueDiff(k, x.get(k), y.get(k)) for k in sorted(set(x) | set(y)))

        user_tags = lambda mv: {k: v for k, v in mv.tags.items() if not k.startswith("mlflow.")}  # noqa: E731
        return VersionComparison(
            a=a,
            b=b,
            metrics=diff(ra.metrics if ra else {}, rb.metrics if rb else {}),
            params=diff(ra.params if ra else {}, rb.params if rb else {}),
            tags=diff(user_tags(a), user_tags(b)),
        )

    # --- changing -----------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (moving it if it pointed elsewhere)."""
        validate_model_name(name)
        validate_alias(alias)
        version = validate_version(version)
        self.get_version(name, version)  # a clear NotFound instead of MLflow's generic message
        self._call(f"cannot set alias {name}@{alias}", self._client.set_registered_model_alias, name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias``; :class:`NotFound` if the model has no such alias."""
        model = self.get_model(name)
        validate_alias(alias)
        if alias not in model.aliases:
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        self._call(f"cannot delete alias {name}@{alias}", self._client.delete_registered_model_alias, name, alias)

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        validate_model_name(name)
        version = validate_version(version)
        validate_tag_key(key)
        self._call(f"cannot tag {name}/{version}", self._client.set_model_version_tag, name, version, key, str(value))

    def delete_version_tag(self, name: str, version: str, key: str) -> None:
        mv = self.get_version(name, version)
        validate_tag_key(key)
        if key not in mv.tags:
            raise NotFound(f"version {mv.ref} has no tag {key!r}")
        self._call(
            f"cannot delete tag {key!r} of {mv.ref}", self._client.delete_model_version_tag, name, mv.version, key
        )
