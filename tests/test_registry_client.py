"""The Registry against real SQLite MLflow stores: the demo, a store made by plain MLflow, bad URIs."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import pytest
from modeldeck.core.errors import BadTrackingURI, NotFound, RegistryError, RegistryUnreachable
from modeldeck.core.registry.client import Registry, redact_uri
from modeldeck.core.settings import load_settings

from tests.fixtures.registry import BigStore, Store, empty_store_template

# --- listing and resolving --------------------------------------------------------------------


def test_models_are_listed_by_name_with_aliases_and_latest_version(demo_store: Store) -> None:
    page = Registry(demo_store.tracking_uri).list_models()
    assert [m.name for m in page.items] == ["breast-cancer-classifier", "diabetes-regressor", "iris-classifier"]
    iris = page.items[2]
    assert iris.latest_version == "3"
    assert set(iris.aliases) == {"champion", "challenger"}
    assert page.next_token is None


def test_filter_text_matches_part_of_the_name_ignoring_case(demo_store: Store) -> None:
    registry = Registry(demo_store.tracking_uri)
    assert [m.name for m in registry.list_models("IRIS").items] == ["iris-classifier"]
    assert [m.name for m in registry.list_models("classifier").items] == [
        "breast-cancer-classifier",
        "iris-classifier",
    ]
    assert registry.list_models("no-such-thing").items == ()


def test_versions_are_newest_first_and_carry_their_aliases(demo_store: Store) -> None:
    registry = Registry(demo_store.tracking_uri)
    versions = registry.list_versions("iris-classifier").items
    assert [v.version for v in versions] == ["3", "2", "1"]
    champion = registry.get_model("iris-classifier").aliases["champion"]
    assert next(v for v in versions if v.version == champion).aliases == ("champion",)
    assert all(v.run_id and v.status == "READY" for v in versions)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("iris-classifier", "3"),
        ("iris-classifier/2", "2"),
        ("iris-classifier/latest", "3"),
        ("models:/iris-classifier/1", "1"),
        ("  iris-classifier/2 ", "2"),
    ],
)
def test_every_reference_form_resolves(demo_store: Store, ref: str, expected: str) -> None:
    mv = Registry(demo_store.tracking_uri).resolve(ref)
    assert (mv.name, mv.version) == ("iris-classifier", expected)


def test_alias_references_resolve_to_the_aliased_version(demo_store: Store) -> None:
    registry = Registry(demo_store.tracking_uri)
    aliases = registry.get_model("diabetes-regressor").aliases
    assert registry.resolve("diabetes-regressor@champion").version == aliases["champion"]
    assert registry.resolve("models:/diabetes-regressor@challenger").version == aliases["challenger"]
    assert "champion" in registry.resolve("diabetes-regressor@champion").aliases


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no-such-model", "model 'no-such-model' does not exist"),
        ("no-such-model/1", "version no-such-model/1 does not exist"),
        ("iris-classifier/99", "version iris-classifier/99 does not exist"),
        ("iris-classifier@nobody", "alias iris-classifier@nobody does not exist"),
    ],
)
def test_missing_model_version_or_alias_is_not_found(demo_store: Store, ref: str, message: str) -> None:
    with pytest.raises(NotFound) as info:
        Registry(demo_store.tracking_uri).resolve(ref)
    assert info.value.message == message


@pytest.mark.parametrize("ref", ["iris-classifier/x", "iris-classifier/0", "iris-classifier/Production", "", "a:b"])
def test_malformed_references_are_refused_before_asking_mlflow(demo_store: Store, ref: str) -> None:
    with pytest.raises(RegistryError) as info:
        Registry(demo_store.tracking_uri).resolve(ref)
    assert not isinstance(info.value, NotFound)
    assert "\n" not in info.value.one_line()


def test_listing_versions_of_a_missing_model_is_not_found(demo_store: Store) -> None:
    with pytest.raises(NotFound):
        Registry(demo_store.tracking_uri).list_versions("ghost")


# --- details and comparison -------------------------------------------------------------------


def test_version_details_show_run_signature_example_flavors_and_artifacts(demo_store: Store) -> None:
    d = Registry(demo_store.tracking_uri).version_details("iris-classifier", "2")
    assert d.warnings == ()
    assert d.run is not None and d.run.params["model_type"] == "RandomForestClassifier"
    assert set(d.run.metrics) == {"accuracy", "f1_macro"}
    assert d.signature is not None and d.signature.input_kind == "columns"
    names = [c.name for c in d.signature.inputs]
    assert names == ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]
    assert d.input_example is not None
    assert d.input_example["columns"] == names and len(d.input_example["data"]) == 5
    assert set(d.flavors) == {"python_function", "sklearn"}
    paths = {a.path for a in d.artifacts}
    assert {"MLmodel", "model.skops", "input_example.json"} <= paths
    assert d.size_bytes == sum(a.size or 0 for a in d.artifacts)
    assert d.model_uri.startswith("file://")


def test_compare_lines_up_metrics_params_and_tags(demo_store: Store) -> None:
    registry = Registry(demo_store.tracking_uri)
    a, b = registry.get_version("iris-classifier", "1"), registry.get_version("iris-classifier", "2")
    cmp = registry.compare(a, b)
    by_key = {d.key: d for d in cmp.params}
    assert by_key["model_type"].a == "LogisticRegression" and by_key["model_type"].b == "RandomForestClassifier"
    assert by_key["C"].b is None and by_key["max_depth"].a is None
    assert not by_key["test_size"].changed
    assert {d.key for d in cmp.metrics} == {"accuracy", "f1_macro"}
    assert {d.key: d.changed for d in cmp.tags}["estimator"] is True


def test_run_metrics_are_fetched_in_one_batch_and_skip_unknown_runs(demo_store: Store) -> None:
    registry = Registry(demo_store.tracking_uri)
    versions = registry.list_versions("diabetes-regressor").items
    metrics = registry.run_metrics([v.run_id or "" for v in versions] + ["0" * 32])
    assert set(metrics) == {v.run_id for v in versions}
    assert all({"rmse", "mae", "r2"} <= set(m) for m in metrics.values())


# --- changing aliases and tags ----------------------------------------------------------------


def test_alias_can_be_set_moved_and_deleted(demo_tracking_uri: str) -> None:
    registry = Registry(demo_tracking_uri)
    registry.set_alias("iris-classifier", "staging", "1")
    assert registry.resolve("iris-classifier@staging").version == "1"
    registry.set_alias("iris-classifier", "staging", "2")
    assert registry.resolve("iris-classifier@staging").version == "2"
    assert "staging" in registry.get_version("iris-classifier", "2").aliases
    registry.delete_alias("iris-classifier", "staging")
    with pytest.raises(NotFound):
        registry.resolve("iris-classifier@staging")


@pytest.mark.parametrize("alias", ["bad alias!", "", "latest", "v3", "a/b"])
def test_invalid_alias_is_refused_with_a_clear_message(demo_tracking_uri: str, alias: str) -> None:
    registry = Registry(demo_tracking_uri)
    with pytest.raises(RegistryError) as info:
        registry.set_alias("iris-classifier", alias, "1")
    assert "alias" in info.value.message
    assert (
        registry.get_model("iris-classifier").aliases
        == Registry(demo_tracking_uri).get_model("iris-classifier").aliases
    )


def test_alias_on_a_missing_version_or_non_number_is_refused(demo_tracking_uri: str) -> None:
    registry = Registry(demo_tracking_uri)
    with pytest.raises(NotFound):
        registry.set_alias("iris-classifier", "staging", "42")
    with pytest.raises(RegistryError, match="positive whole number"):
        registry.set_alias("iris-classifier", "staging", "two")


def test_deleting_a_missing_alias_is_not_found(demo_tracking_uri: str) -> None:
    with pytest.raises(NotFound, match="no alias 'nobody'"):
        Registry(demo_tracking_uri).delete_alias("iris-classifier", "nobody")


def test_version_tags_can_be_set_and_deleted(demo_tracking_uri: str) -> None:
    registry = Registry(demo_tracking_uri)
    registry.set_version_tag("diabetes-regressor", "2", "reviewed-by", "ana")
    assert registry.get_version("diabetes-regressor", "2").tags["reviewed-by"] == "ana"
    registry.delete_version_tag("diabetes-regressor", "2", "reviewed-by")
    assert "reviewed-by" not in registry.get_version("diabetes-regressor", "2").tags
    with pytest.raises(NotFound):
        registry.delete_version_tag("diabetes-regressor", "2", "reviewed-by")


# --- stores ModelDeck did not create ----------------------------------------------------------


def test_a_model_without_signature_or_example_is_shown_with_warnings(foreign_store: Store) -> None:
    d = Registry(foreign_store.tracking_uri).version_details("plain-model", "1")
    assert d.version.source.startswith("models:/m-")  # MLflow 3 logged-model source
    assert d.run is not None and d.run.params == {"fit_intercept": "True"}
    assert d.signature is None and d.input_example is None
    assert "sklearn" in d.flavors and any(a.path == "MLmodel" for a in d.artifacts)
    assert "the model has no signature" in d.warnings
    assert "the model has no input example" in d.warnings


def test_a_tensor_signature_and_numpy_example_are_read(foreign_store: Store) -> None:
    d = Registry(foreign_store.tracking_uri).version_details("plain-model", "2")
    assert d.signature is not None and d.signature.input_kind == "tensor"
    assert d.signature.inputs[0].shape == (-1, 2)
    assert d.input_example == {"inputs": [[0.0, 1.0], [2.0, 3.0]]}
    assert d.warnings == ()


def test_a_version_without_run_or_files_still_has_details(foreign_store: Store) -> None:
    d = Registry(foreign_store.tracking_uri).version_details("orphan-model", "1")
    assert d.run is None and d.artifacts == () and d.flavors == () and d.size_bytes is None
    assert any("not linked to a run" in w for w in d.warnings)
    assert any("no artifacts" in w for w in d.warnings)


def test_a_version_whose_run_was_deleted_says_so(foreign_store: Store) -> None:
    d = Registry(foreign_store.tracking_uri).version_details("deleted-run-model", "1")
    assert any("is deleted" in w for w in d.warnings)
    assert d.run is not None and d.run.metrics == {"r2": 0.5}


def test_a_model_without_versions_lists_an_empty_page(foreign_store: Store) -> None:
    registry = Registry(foreign_store.tracking_uri)
    assert registry.list_versions("empty-model").items == ()
    assert registry.get_model("empty-model").latest_version is None
    with pytest.raises(NotFound, match="no versions"):
        registry.resolve("empty-model")


# --- bad URIs ---------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("uri", ["foo://x", "not a uri", "file:///tmp/mlruns", "/tmp/mlruns", "http://", "http://[::1"])
def test_malformed_or_unsupported_uri_is_bad_tracking_uri(uri: str) -> None:
    with pytest.raises(BadTrackingURI):
        Registry(uri).ping()


def test_closed_port_fails_fast_as_unreachable() -> None:
    registry = Registry(f"http://127.0.0.1:{_closed_port()}", timeout_s=5)
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as info:
        registry.ping()
    assert time.monotonic() - started < 5
    assert "did not answer" in info.value.message


def test_silent_server_times_out_within_the_timeout(tmp_path: Path) -> None:
    """A server that accepts but never answers must not hang a worker for MLflow's default 2 minutes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        registry = Registry(f"http://127.0.0.1:{port}", timeout_s=2)
        started = time.monotonic()
        with pytest.raises(RegistryUnreachable):
            registry.list_models()
        elapsed = time.monotonic() - started
    assert elapsed < 2 * 2 + 1  # two attempts of ceil(timeout/2) s each, plus slack


def test_sqlite_store_in_a_missing_directory_is_refused_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(BadTrackingURI, match="no such directory"):
        Registry(f"sqlite:///{missing}/mlflow.db")
    assert not missing.exists()


def test_sqlite_store_under_a_file_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    with pytest.raises(BadTrackingURI):
        Registry(f"sqlite:///{a_file}/mlflow.db")


def test_sqlite_file_that_is_not_a_database_is_unreachable(tmp_path: Path) -> None:
    bogus = tmp_path / "mlflow.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryUnreachable):
        Registry(f"sqlite:///{bogus}").ping()


def test_credentials_never_show_in_the_display_name() -> None:
    registry = Registry("https://alice:s3cret@mlflow.example.com:8443/base")
    assert registry.display_name == "https://mlflow.example.com:8443/base"
    assert "s3cret" not in repr(registry)
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_a_new_embedded_registry_keeps_default_artifacts_in_the_data_dir() -> None:
    """MLflow would point the default experiment at ./mlruns of the current directory."""
    from mlflow import MlflowClient

    settings = load_settings()
    registry = Registry.from_settings(settings)
    registry.ping()
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    location = client.get_experiment("0").artifact_location
    assert location.startswith(settings.embedded_artifact_root.resolve().as_uri())


def test_embedded_registry_is_opened_from_empty_settings() -> None:
    settings = load_settings()
    settings.embedded_registry_dir.mkdir(parents=True)
    shutil.copyfile(empty_store_template(), settings.embedded_registry_dir / "mlflow.db")  # skip migrations
    registry = Registry.from_settings(settings)
    assert registry.tracking_uri == settings.embedded_tracking_uri
    assert registry.display_name == f"Local registry ({settings.embedded_registry_dir})"
    assert registry.list_models().items == ()  # not seeded: that is ensure_embedded_registry's job


def test_two_registries_can_be_open_at_once(demo_store: Store, foreign_store: Store) -> None:
    demo, foreign = Registry(demo_store.tracking_uri), Registry(foreign_store.tracking_uri)
    assert "iris-classifier" in [m.name for m in demo.list_models().items]
    assert "plain-model" in [m.name for m in foreign.list_models().items]
    assert "iris-classifier" in [m.name for m in demo.list_models().items]


# --- paging on a big store --------------------------------------------------------------------


def test_paging_walks_thousands_of_versions_newest_first_without_gaps(big_store: BigStore) -> None:
    registry = Registry(big_store.tracking_uri)
    seen: list[int] = []
    token = None
    pages = 0
    while True:
        page = registry.list_versions(big_store.big_model, page_token=token, max_results=200)
        seen += [int(v.version) for v in page.items]
        pages += 1
        token = page.next_token
        if token is None:
            break
    assert seen == list(range(big_store.big_model_versions, 0, -1))
    assert pages == -(-big_store.big_model_versions // 200)
    aliased = {int(v.version): v.aliases for v in [registry.get_version(big_store.big_model, "1000")]}
    assert aliased == {1000: ("champion",)}


def test_models_page_through_the_big_store(big_store: BigStore) -> None:
    registry = Registry(big_store.tracking_uri)
    names: list[str] = []
    token = None
    while True:
        page = registry.list_models(page_token=token, max_results=20)
        names += [m.name for m in page.items]
        token = page.next_token
        if token is None:
            break
    assert len(names) == big_store.model_count == len(set(names))
    assert names == sorted(names)


def test_run_metrics_for_a_full_page_of_versions(big_store: BigStore) -> None:
    registry = Registry(big_store.tracking_uri)
    page = registry.list_versions(big_store.big_model, max_results=200)
    metrics = registry.run_metrics([v.run_id or "" for v in page.items])
    assert len(metrics) == 100  # the store's 100 shared runs
    assert all(set(m) == {"accuracy", "rmse"} for m in metrics.values())


def test_a_database_from_an_older_mlflow_gets_an_upgrade_hint(tmp_path: Path) -> None:
    """MLflow refuses an out-of-date schema; the user is told the command that fixes it."""
    import sqlite3

    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    db = tmp_path / "mlflow.db"
    shutil.copyfile(empty_store_template(), db)
    uri = f"sqlite:///{db}"
    with sqlite3.connect(db) as conn:
        (head,) = conn.execute("select version_num from alembic_version").fetchone()
        previous = ScriptDirectory.from_config(_get_alembic_config(uri)).get_revision(head).down_revision
        conn.execute("update alembic_version set version_num = ?", (previous,))
    with pytest.raises(RegistryError) as info:
        Registry(uri).ping()
    assert "older MLflow" in info.value.message
    assert info.value.hint == f"back it up, then run `mlflow db upgrade {uri}`"
