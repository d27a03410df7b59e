"""``modeldeck registry …`` run as a user runs it: the real entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.registry import Store

MODELDECK = str(Path(sys.executable).with_name("modeldeck"))


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [MODELDECK, *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def test_list_json_has_every_model_with_versions_and_aliases(demo_tracking_uri: str) -> None:
    out = run_cli("--tracking-uri", demo_tracking_uri, "registry", "list", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    models = {m["name"]: m for m in data["models"]}
    assert set(models) == {"breast-cancer-classifier", "diabetes-regressor", "iris-classifier"}
    iris = models["iris-classifier"]
    assert [v["version"] for v in iris["versions"]] == ["3", "2", "1"]
    assert set(iris["aliases"]) == {"champion", "challenger"}
    champion = iris["aliases"]["champion"]
    assert "champion" in next(v for v in iris["versions"] if v["version"] == champion)["aliases"]


def test_list_text_is_an_aligned_table(demo_tracking_uri: str) -> None:
    out = run_cli("--tracking-uri", demo_tracking_uri, "registry", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("MODEL"))
    rows = lines[header + 1 :]
    assert [r.split()[0] for r in rows] == ["breast-cancer-classifier", "diabetes-regressor", "iris-classifier"]
    column = lines[header].index("VERSIONS")
    assert all(r[column - 2 : column] == "  " and r[column] != " " for r in rows)  # columns line up
    assert "champion=" in out.stdout


def test_list_filter_narrows_by_name(demo_tracking_uri: str) -> None:
    out = run_cli("--tracking-uri", demo_tracking_uri, "registry", "list", "--json", "--filter", "diabetes")
    assert [m["name"] for m in json.loads(out.stdout)["models"]] == ["diabetes-regressor"]


def test_show_prints_signature_metrics_params_and_artifacts(demo_tracking_uri: str) -> None:
    out = run_cli("--tracking-uri", demo_tracking_uri, "registry", "show", "iris-classifier/2")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("iris-classifier/2  (models:/iris-classifier/2)")
    for needle in (
        "Signature (columns)",
        "sepal_length_cm",
        "Metrics",
        "accuracy:",
        "Params",
        "RandomForestClassifier",
    ):
        assert needle in text
    assert "model.skops" in text and "flavors:" in text and "sklearn" in text


def test_show_json_by_alias(demo_tracking_uri: str) -> None:
    out = run_cli("--tracking-uri", demo_tracking_uri, "registry", "show", "diabetes-regressor@champion", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "champion" in data["version"]["aliases"]
    assert data["signature"]["input_kind"] == "columns"
    assert {"rmse", "mae", "r2"} <= set(data["run"]["metrics"])
    assert data["input_example"]["columns"][0] == "age"
    assert data["warnings"] == []


def test_alias_moves_and_deletes(demo_tracking_uri: str) -> None:
    out = run_cli("--tracking-uri", demo_tracking_uri, "registry", "alias", "iris-classifier", "1", "champion")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("iris-classifier@champion -> version 1")
    shown = json.loads(
        run_cli("--tracking-uri", demo_tracking_uri, "registry", "show", "iris-classifier@champion", "--json").stdout
    )
    assert shown["version"]["version"] == "1"
    out = run_cli("--tracking-uri", demo_tracking_uri, "registry", "alias", "iris-classifier", "champion", "--delete")
    assert out.returncode == 0, out.stderr
    gone = run_cli("--tracking-uri", demo_tracking_uri, "registry", "show", "iris-classifier@champion")
    assert gone.returncode == 1
    assert gone.stderr.strip() == "error: alias iris-classifier@champion does not exist"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("registry", "show", "no-such-model"), "error: model 'no-such-model' does not exist"),
        (("registry", "show", "iris-classifier/42"), "error: version iris-classifier/42 does not exist"),
        (("registry", "alias", "iris-classifier", "two", "champion"), "error: invalid version 'two'"),
        (("registry", "alias", "iris-classifier", "1", "bad alias!"), "error: invalid alias 'bad alias!'"),
    ],
)
def test_failures_are_one_line_errors_with_exit_1(demo_tracking_uri: str, args: tuple[str, ...], message: str) -> None:
    out = run_cli("--tracking-uri", demo_tracking_uri, *args)
    assert out.returncode == 1
    assert out.stderr.startswith(message)
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_unreachable_server_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run_cli("--tracking-uri", f"http://127.0.0.1:{port}", "registry", "list", timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: cannot list models: the registry at http://127.0.0.1:{port} did not answer "
        "(hint: check that the MLflow server is running and the host/port are right)"
    ]


def test_bad_uri_scheme_is_a_one_line_error() -> None:
    out = run_cli("--tracking-uri", "foo://x", "registry", "list")
    assert out.returncode == 1
    assert out.stderr.startswith("error: unsupported tracking URI scheme 'foo'")


def test_tracking_uri_from_the_environment_is_used(demo_tracking_uri: str) -> None:
    out = run_cli("registry", "list", "--json", env={"MLFLOW_TRACKING_URI": demo_tracking_uri})
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["models"]) == 3


def test_works_on_a_store_modeldeck_did_not_create(foreign_store: Store) -> None:
    out = run_cli("--tracking-uri", foreign_store.tracking_uri, "registry", "list", "--json")
    assert out.returncode == 0, out.stderr
    models = {m["name"]: m for m in json.loads(out.stdout)["models"]}
    assert models["empty-model"]["versions"] == []
    assert [v["version"] for v in models["plain-model"]["versions"]] == ["2", "1"]

    text = run_cli("--tracking-uri", foreign_store.tracking_uri, "registry", "list")
    assert text.returncode == 0 and "empty-model" in text.stdout

    shown = run_cli("--tracking-uri", foreign_store.tracking_uri, "registry", "show", "plain-model/1")
    assert shown.returncode == 0, shown.stderr
    assert "Signature: none" in shown.stdout
    assert "Warnings" in shown.stdout and "the model has no signature" in shown.stdout

    orphan = run_cli("--tracking-uri", foreign_store.tracking_uri, "registry", "show", "orphan-model", "--json")
    assert orphan.returncode == 0, orphan.stderr
    assert json.loads(orphan.stdout)["run"] is None


@pytest.mark.server
def test_list_and_show_against_a_real_server(mlflow_server: str) -> None:
    out = run_cli("--tracking-uri", mlflow_server, "registry", "list", "--json")
    assert out.returncode == 0, out.stderr
    assert "iris-classifier" in {m["name"] for m in json.loads(out.stdout)["models"]}
    shown = run_cli("--tracking-uri", mlflow_server, "registry", "show", "models:/iris-classifier/1")
    assert shown.returncode == 0, shown.stderr
    assert "LogisticRegression" in shown.stdout


def test_without_configuration_the_embedded_registry_is_seeded_and_used(tmp_path: Path) -> None:
    env = {"MODELDECK_DATA_DIR": str(tmp_path / "data"), "MODELDECK_CONFIG_DIR": str(tmp_path / "config")}
    out = run_cli("registry", "list", "--json", env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert {m["name"] for m in json.loads(out.stdout)["models"]} == {
        "breast-cancer-classifier",
        "diabetes-regressor",
        "iris-classifier",
    }
    assert "demo registry:" in out.stderr  # progress on stderr, stdout stays JSON
    assert (tmp_path / "data" / "registry" / "mlflow.db").is_file()
    again = run_cli("registry", "list", "--json", env=env)
    assert again.returncode == 0 and "demo registry:" not in again.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "registry" / "mlflow.db") as db:
        locations = [row[0] for row in db.execute("select artifact_location from experiments")]
    artifacts = (tmp_path / "data" / "registry" / "artifacts").resolve().as_uri()
    assert locations and all(loc.startswith(artifacts) for loc in locations)  # nothing goes to ./mlruns
