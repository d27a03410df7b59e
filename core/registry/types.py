"""Registry data as ModelDeck sees it: plain frozen dataclasses, no MLflow objects.

The GUI's Qt models and the CLI's JSON output are thin views over these, so
neither needs to know MLflow's entity classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a paged listing; ``next_token`` is None on the last page."""

    items: tuple[T, ...]
    next_token: str | None = None


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    description: str
    creation_time: int  # ms since epoch, as MLflow stores it
    last_updated: int
    tags: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> version
    latest_version: str | None = None


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str  # MLflow versions are numbers but travel as strings
    creation_time: int
    last_updated: int
    status: str
    source: str
    run_id: str | None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class SignatureColumn:
    name: str | None
    type: str
    optional: bool = False
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Signature:
    inputs: tuple[SignatureColumn, ...]
    outputs: tuple[SignatureColumn, ...]
    input_kind: str  # "columns" or "tensor"
    params: tuple[SignatureColumn, ...] = ()


@dataclass(frozen=True)
class ArtifactEntry:
    path: str
    is_dir: bool
    size: int | None


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    run_name: str | None
    status: str
    start_time: int | None
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionDetails:
    """Everything the details pane and ``registry show`` display about one version."""

    version: ModelVersion
    run: RunInfo | None
    signature: Signature | None
    input_example: dict[str, Any] | None  # MLflow "dataframe_split" or {"inputs": ...}
    flavors: tuple[str, ...]
    artifacts: tuple[ArtifactEntry, ...]
    size_bytes: int | None
    model_uri: str  # where the model files are (artifact URI)
    warnings: tuple[str, ...] = ()  # parts that could not be read, said rather than hidden


@dataclass(frozen=True)
class ValueDiff:
    key: str
    a: Any
    b: Any

    @property
    def changed(self) -> bool:
        return self.a != self.b


@dataclass(frozen=True)
class VersionComparison:
    a: ModelVersion
    b: ModelVersion
    metrics: tuple[ValueDiff, ...]
    params: tuple[ValueDiff, ...]
    tags: tuple[ValueDiff, ...]


def to_jsonable(obj: Any) -> Any:
    """Dataclasses (and containers of them) as JSON-ready dicts for ``--json`` output."""
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj
