"""The embedded local registry (SQLite + a local artifact folder) and its demo models.

With no tracking URI configured, ModelDeck opens a registry of its own under the
data dir so a first start shows something real. The demo is trained on data
scikit-learn ships (no downloads), deterministically, in a few seconds.

Seeding is idempotent and survives interruption: every demo version carries a
``modeldeck.demo_key`` tag, a version that already exists is skipped, a finished
run whose registration was cut off is reused, and the "seeded" marker file is
written only at the very end. Models are logged through ``MlflowClient`` on the
given URI only -- never the process-global tracking URI -- so seeding can run in
the GUI process next to another open registry.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modeldeck.core.errors import Cancelled, RegistryError
from modeldeck.core.settings import Settings

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, "float | None"], None]

DEMO_TAG = "modeldeck.demo"
DEMO_KEY_TAG = "modeldeck.demo_key"
SEEDED_MARKER = ".demo-seeded"
_SEED = 42


@dataclass(frozen=True)
class _DemoVersion:
    key: str
    model: str
    dataset: str
    estimator: str
    description: str


@dataclass(frozen=True)
class _DemoModel:
    name: str
    task: str  # "classification" or "regression"
    dataset: str
    description: str
    team: str


DEMO_MODELS: tuple[_DemoModel, ...] = (
    _DemoModel(
        "iris-classifier",
        "classification",
        "iris",
        "Iris species from sepal and petal measurements (scikit-learn's iris data).",
        "botany",
    ),
    _DemoModel(
        "diabetes-regressor",
        "regression",
        "diabetes",
        "Disease progression one year after baseline (scikit-learn's diabetes data).",
        "clinical",
    ),
    _DemoModel(
        "breast-cancer-classifier",
        "classification",
        "breast_cancer",
        "Malignant (0) or benign (1) tumour from cell nuclei features (scikit-learn's breast cancer data).",
        "clinical",
    ),
)

DEMO_VERSIONS: tuple[_DemoVersion, ...] = (
    _DemoVersion("iris-1", "iris-classifier", "iris", "logreg", "StandardScaler + LogisticRegression baseline."),
    _DemoVersion("iris-2", "iris-classifier", "iris", "random_forest", "RandomForest, 50 shallow trees."),
    _DemoVersion("iris-3", "iris-classifier", "iris", "gradient_boosting", "GradientBoosting, 50 stages."),
    _DemoVersion("diabetes-1", "diabetes-regressor", "diabetes", "ridge", "StandardScaler + Ridge baseline."),
    _DemoVersion("diabetes-2", "diabetes-regressor", "diabetes", "random_forest", "RandomForestRegressor, 50 trees."),
    _DemoVersion(
        "diabetes-3", "diabetes-regressor", "diabetes", "gradient_boosting", "GradientBoostingRegressor, 100 stages."
    ),
    _DemoVersion(
        "breast-cancer-1",
        "breast-cancer-classifier",
        "breast_cancer",
        "logreg",
        "StandardScaler + LogisticRegression.",
    ),
)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("demo seeding cancelled")


def _column_name(raw: str) -> str:
    """``'sepal length (cm)'`` -> ``'sepal_length_cm'``: names that survive JSON, SQL and ONNX."""
    return re.sub(r"[^0-9a-z]+", "_", raw.lower()).strip("_")


def _load_dataset(dataset: str) -> tuple[Any, Any]:
    from sklearn import datasets

    loader = {
        "iris": datasets.load_iris,
        "diabetes": datasets.load_diabetes,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
    }[dataset]
    bunch = loader(as_frame=True)
    X = bunch.data.rename(columns=_column_name).astype("float64")
    y = bunch.target
    return X, y


def _estimator(kind: str, task: str) -> tuple[Any, dict[str, str]]:
    """The estimator and the params logged for it (deterministic: fixed random_state)."""
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = task == "classification"
    if kind == "logreg":
        params = {"model_type": "LogisticRegression", "C": "1.0", "max_iter": "1000", "scaler": "StandardScaler"}
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)), params
    if kind == "ridge":
        params = {"model_type": "Ridge", "alpha": "1.0", "scaler": "StandardScaler"}
        return make_pipeline(StandardScaler(), Ridge(alpha=1.0)), params
    if kind == "random_forest":
        depth = 4 if clf else 6
        params = {
            "model_type": "RandomForestClassifier" if clf else "RandomForestRegressor",
            "n_estimators": "50",
            "max_depth": str(depth),
            "random_state": str(_SEED),
        }
        cls = RandomForestClassifier if clf else RandomForestRegressor
        return cls(n_estimators=50, max_depth=depth, random_state=_SEED), params
    if kind == "gradient_boosting":
        n = 50 if clf else 100
        params = {
            "model_type": "GradientBoostingClassifier" if clf else "GradientBoostingRegressor",
            "n_estimators": str(n),
            "learning_rate": "0.1",
            "max_depth": "3",
            "random_state": str(_SEED),
        }
        gcls = GradientBoostingClassifier if clf else GradientBoostingRegressor
        return gcls(n_estimators=n, learning_rate=0.1, max_depth=3, random_state=_SEED), params
    raise ValueError(f"unknown demo estimator {kind!r}")


def _score(task: str, model: Any, X_test: Any, y_test: Any) -> dict[str, float]:
    from sklearn import metrics

    pred = model.predict(X_test)
    if task == "classification":
        return {
            "accuracy": round(float(metrics.accuracy_score(y_test, pred)), 6),
            "f1_macro": round(float(metrics.f1_score(y_test, pred, average="macro")), 6),
        }
    return {
        "rmse": round(float(metrics.mean_squared_error(y_test, pred) ** 0.5), 6),
        "mae": round(float(metrics.mean_absolute_error(y_test, pred)), 6),
        "r2": round(float(metrics.r2_score(y_test, pred)), 6),
    }


def _quality(task: str, metrics: dict[str, float]) -> tuple[float, float]:
    """Bigger is better: how the champion is picked."""
    if task == "classification":
        return (metrics["accuracy"], metrics["f1_macro"])
    return (-metrics["rmse"], metrics["r2"])


def _experiment_id(client: Any, name: str, artifact_root: Path) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return str(exp.experiment_id)
    location = (artifact_root / name).resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location, tags={DEMO_TAG: "true"}))


def _existing_demo_versions(client: Any, model: str) -> dict[str, Any]:
    """demo_key -> MLflow ModelVersion for versions seeded earlier (the idempotency check)."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{model}'", max_results=200)
    except MlflowException:
        return {}
    return {v.tags[DEMO_KEY_TAG]: v for v in versions if DEMO_KEY_TAG in v.tags}


def _finished_run(client: Any, experiment_id: str, key: str) -> Any | None:
    """A run that logged this demo version completely but was not registered (seeding cut off)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{DEMO_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0] if runs else None


def _train_and_log(client: Any, experiment_id: str, spec: _DemoVersion, model_spec: _DemoModel) -> Any:
    """Train one demo version, log it as a finished run with the model under ``model/``."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from modeldeck.core.registry.trust import skops_trusted_types
    from sklearn.model_selection import train_test_split

    X, y = _load_dataset(spec.dataset)
    stratify = y if model_spec.task == "classification" else None
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=_SEED, stratify=stratify)
    estimator, params = _estimator(spec.estimator, model_spec.task)
    estimator.fit(X_train, y_train)
    scores = _score(model_spec.task, estimator, X_test, y_test)
    params = {**params, "test_size": "0.3", "split_seed": str(_SEED), "n_train": str(len(X_train))}

    run = client.create_run(
        experiment_id,
        run_name=f"{spec.model}-{spec.estimator}",
        tags={
            DEMO_TAG: "true",
            DEMO_KEY_TAG: spec.key,
            "team": model_spec.team,
            "dataset": spec.dataset,
            "mlflow.note.content": spec.description,
        },
    )
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        client.log_batch(
            run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in scores.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        example = X_test.head(5)
        signature = infer_signature(X_train, estimator.predict(X_train))
        with tempfile.TemporaryDirectory(prefix="modeldeck-demo-") as tmp:
            path = Path(tmp) / "model"
            mlflow.sklearn.save_model(
                estimator,
                str(path),
                signature=signature,
                input_example=example,
                skops_trusted_types=skops_trusted_types(estimator),
                # explicit requirements: inferring them spawns a slow subprocess
                pip_requirements=_pip_requirements(),
            )
            client.log_artifacts(run_id, str(path), artifact_path="model")
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return client.get_run(run_id)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"mlflow=={version('mlflow')}", f"scikit-learn=={version('scikit-learn')}", f"skops=={version('skops')}"]


def _register(client: Any, run: Any, spec: _DemoVersion, model_spec: _DemoModel) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(spec.model)
    except MlflowException:
        client.create_registered_model(
            spec.model,
            tags={DEMO_TAG: "true", "task": model_spec.task, "dataset": model_spec.dataset, "team": model_spec.team},
            description=model_spec.description,
        )
    source = f"{run.info.artifact_uri.rstrip('/')}/model"
    return client.create_model_version(
        spec.model,
        source=source,
        run_id=run.info.run_id,
        tags={DEMO_KEY_TAG: spec.key, "team": model_spec.team, "dataset": spec.dataset, "estimator": spec.estimator},
        description=spec.description,
    )


def seed_demo(
    tracking_uri: str,
    artifact_root: Path | str,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Create the demo models in the registry at ``tracking_uri`` (idempotent, cancellable).

    Artifacts go under ``artifact_root`` (one experiment folder per demo model),
    never the current directory. Raises :class:`Cancelled` between versions when
    ``cancel`` is set; calling again finishes the job without duplicates.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    artifact_root = Path(artifact_root)
    report = progress or (lambda _m, _f: None)
    total = len(DEMO_VERSIONS) + 1
    _check(cancel)
    report("loading MLflow and scikit-learn", 0.0)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    by_name = {m.name: m for m in DEMO_MODELS}
    try:
        for i, spec in enumerate(DEMO_VERSIONS):
            _check(cancel)
            model_spec = by_name[spec.model]
            if spec.key in _existing_demo_versions(client, spec.model):
                continue
            report(f"training {spec.model} ({spec.estimator})", i / total)
            exp_id = _experiment_id(client, f"{spec.model}-demo", artifact_root)
            run = _finished_run(client, exp_id, spec.key) or _train_and_log(client, exp_id, spec, model_spec)
            _register(client, run, spec, model_spec)
            log.info("seeded demo version %s", spec.key)
        _check(cancel)
        report("setting aliases", len(DEMO_VERSIONS) / total)
        _set_demo_aliases(client)
    except MlflowException as exc:
        raise RegistryError(f"could not create the demo models in {tracking_uri}: {exc.message}") from exc
    report("demo registry ready", 1.0)


def _set_demo_aliases(client: Any) -> None:
    """``champion`` on the best version of each demo model, ``challenger`` on the runner-up."""
    for model_spec in DEMO_MODELS:
        versions = list(_existing_demo_versions(client, model_spec.name).values())
        if not versions:
            continue
        scored = []
        for v in versions:
            metrics = client.get_run(v.run_id).data.metrics
            scored.append((_quality(model_spec.task, metrics), int(v.version), v))
        scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
        client.set_registered_model_alias(model_spec.name, "champion", scored[0][2].version)
        if len(scored) > 1:
            client.set_registered_model_alias(model_spec.name, "challenger", scored[1][2].version)


def create_store(tracking_uri: str, default_artifact_root: Path) -> None:
    """Create (or migrate) a SQL store whose default experiment keeps artifacts under ``default_artifact_root``.

    ``MlflowClient`` would create the store with the default experiment pointing
    at ``./mlruns`` of whatever the current directory is; the embedded registry
    must never write there.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    default_artifact_root.mkdir(parents=True, exist_ok=True)
    SqlAlchemyStore(tracking_uri, default_artifact_root.resolve().as_uri())


def ensure_embedded_registry(
    settings: Settings,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> str:
    """Make sure the embedded registry exists (and holds the demo); return its tracking URI.

    The demo is seeded when the store has no registered models, and finished when
    an earlier seeding was cut off (no marker file yet and only demo models
    present). Once seeded, models the user deleted are not brought back.
    """
    root = settings.embedded_registry_dir
    try:
        settings.embedded_artifact_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RegistryError(
            f"cannot create the local registry in {root}: {exc.strerror or exc}",
            hint="set MODELDECK_DATA_DIR to a writable directory",
        ) from exc
    uri = settings.embedded_tracking_uri
    marker = root / SEEDED_MARKER
    if marker.exists():
        return uri
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        if not (root / "mlflow.db").exists():
            if progress:
                progress("creating the local registry", None)
            create_store(uri, settings.embedded_artifact_root)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        models = client.search_registered_models(max_results=100)
    except MlflowException as exc:
        raise RegistryError(f"cannot open the local registry {root}: {exc.message}") from exc
    if all(m.tags.get(DEMO_TAG) == "true" for m in models):
        seed_demo(uri, settings.embedded_artifact_root, progress=progress, cancel=cancel)
    marker.write_text("demo models seeded\n", encoding="utf-8")
    return uri
