"""`modeldeck bundle`, `verify-bundle` and `inspect-bundle` as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.bundles import MlflowStore

pytestmark = pytest.mark.slow

MODELDECK = str(Path(sys.executable).with_name("modeldeck"))


def modeldeck(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([MODELDECK, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def test_bundle_command_builds_and_prints_the_report(bundle_store: MlflowStore, tmp_path: Path) -> None:
    out = tmp_path / "iris"
    result = modeldeck(
        "--tracking-uri", bundle_store.tracking_uri, "bundle", "models:/iris-classifier@champion", "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "parity   passed on 205 rows" in result.stdout
    assert "model    iris-classifier version 1 (sklearn -> ONNX opset 17)" in result.stdout
    assert "bundle: " in result.stderr  # progress goes to stderr
    verify = modeldeck("verify-bundle", str(out))
    assert verify.returncode == 0 and verify.stdout.startswith(f"ok: {out} is an intact bundle of iris-classifier")

    again = modeldeck(
        "--tracking-uri", bundle_store.tracking_uri, "bundle", "models:/iris-classifier/1", "-o", str(out)
    )
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"error: {out} is not empty (hint: pass --force to replace it, or choose another -o DIR)"
    ]


def test_bundle_json_report_parses(bundle_store: MlflowStore, tmp_path: Path) -> None:
    uri = bundle_store.tracking_uri
    result = modeldeck(
        "--tracking-uri", uri, "bundle", "models:/diabetes-regressor/1", "-o", str(tmp_path / "r"),
        "--json", "--parity-rows", "50", "--rtol", "1e-3", "--atol", "1e-3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["parity"]["rows"] == 55 and report["parity"]["atol"] == 1e-3
    assert report["manifest"]["prediction_output"] == "variable"
    assert result.stderr == ""


def test_unknown_model_is_a_one_line_error(bundle_store: MlflowStore, tmp_path: Path) -> None:
    result = modeldeck(
        "--tracking-uri", bundle_store.tracking_uri, "bundle", "models:/nope/1", "-o", str(tmp_path / "x")
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: models:/nope/1: ") and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_tampered_bundle_fails_verification_and_inspect_still_reads_it(iris_bundle: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(iris_bundle, tmp_path / "copy"))
    example = copy / "input_example.json"
    example.write_text(example.read_text().replace("5.1", "9.9"))
    result = modeldeck("verify-bundle", str(copy))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: bundle {copy}: input_example.json does not match the manifest")
    inspect = modeldeck("inspect-bundle", str(copy))
    assert inspect.returncode == 0
    assert "prediction: label" in inspect.stdout and "parity     passed on 205 rows" in inspect.stdout


def test_bad_option_values_are_refused_before_any_work(tmp_path: Path) -> None:
    result = modeldeck("bundle", str(tmp_path / "missing-model"), "-o", str(tmp_path / "o"), "--rtol", "-1")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: rtol and atol must not be negative"
    quant = modeldeck("bundle", "x", "-o", str(tmp_path / "o"), "--quantize", "int4")
    assert quant.returncode == 2 and "invalid choice: 'int4'" in quant.stderr


@pytest.fixture(scope="module")
def mlp_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import warnings

    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tests.fixtures.bundles import save_sklearn

    x, y = load_diabetes(return_X_y=True, as_frame=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64,), max_iter=50, random_state=0))
        model.fit(x, y)
    adam = ["sklearn.neural_network._stochastic_optimizers.AdamOptimizer"]
    return save_sklearn(
        model, tmp_path_factory.mktemp("cli-mlp") / "mlp", input_example=x.head(8), skops_trusted_types=adam
    )


def test_optimize_and_quantize_flags_print_sizes_and_latencies(mlp_folder: Path, tmp_path: Path) -> None:
    args = ("bundle", str(mlp_folder), "-o", str(tmp_path / "q"), "--optimize", "--quantize", "int8")
    result = modeldeck(*args, "--max-accuracy-delta", "0.5", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    graph = next(line for line in result.stdout.splitlines() if line.startswith("graph    basic: size "))
    quant = next(line for line in result.stdout.splitlines() if line.startswith("quantize dynamic int8: size "))
    assert "latency" in graph and "ms (median)" in quant and "accuracy delta" in quant

    refused = modeldeck(
        "bundle", str(mlp_folder), "-o", str(tmp_path / "r"), "--quantize", "int8", "--max-accuracy-delta", "0"
    )
    assert refused.returncode == 1
    assert refused.stderr.splitlines()[-1].startswith("error: refusing int8 quantisation: accuracy delta ")
    assert not (tmp_path / "r").exists()
