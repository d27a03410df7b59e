"""The runtime as a process: start-up refusals, the ready-file contract, SO_REUSEPORT, SIGTERM drain,
readiness during warm-up, and running with the app's heavy libraries blocked."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from modeldeck.core.runtime.manifest import read_manifest

from tests.fixtures.runtime import (
    ROOT,
    RuntimeProcess,
    make_mlp_bundle,
    make_slow_bundle,
    runtime_command,
    start_runtime,
    wait_ready,
)

pytestmark = pytest.mark.server

ROW = [5.1, 3.5, 1.4, 0.2]
BLOCKED = ("mlflow", "pandas", "sklearn", "PySide6", "shiboken6", "pyqtgraph", "paramiko", "docker", "skl2onnx")


def _run_to_exit(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _predict(url: str) -> httpx.Response:
    return httpx.post(f"{url}/invocations", json={"inputs": [ROW]}, timeout=10)


@pytest.fixture(scope="module")
def mlp_bundle(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_mlp_bundle(tmp_path_factory.mktemp("mlp") / "mlp")


def test_ready_file_names_the_actual_ports_and_the_model(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    port = _free_port()
    rp = start_runtime(runtime_bundles["iris"].path, tmp_path, "--bind", f"127.0.0.1:{port}", "--bind", "127.0.0.1:0")
    runtime_processes.append(rp)
    manifest = read_manifest(runtime_bundles["iris"].path)
    ready = rp.ready
    assert ready["pid"] == rp.proc.pid
    assert ready["binds"][0] == f"127.0.0.1:{port}"
    private = ready["binds"][1]
    assert private.startswith("127.0.0.1:") and not private.endswith(":0")
    assert ready["private_binds"] == [private]  # the port-0 bind, named as such (not guessed from port numbers)
    assert (ready["model_name"], ready["model_version"], ready["bundle_sha256"]) == ("iris", "3", manifest.sha256)
    for url in (rp.url_of(0), rp.url_of(1)):
        assert _predict(url).json() == {"predictions": [0]}
    assert rp.terminate() == 0
    assert not rp.ready_file.exists()  # a stopped runtime leaves no stale ready-file behind


def test_tampered_bundle_is_refused_at_start(runtime_bundles: dict[str, Any], tmp_path: Path) -> None:
    bundle = tmp_path / "iris"
    shutil.copytree(runtime_bundles["iris"].path, bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    result = _run_to_exit(runtime_command(bundle, "--port", "0"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "model.onnx does not match the manifest" in lines[0]


def test_extra_file_in_bundle_is_refused(runtime_bundles: dict[str, Any], tmp_path: Path) -> None:
    bundle = tmp_path / "iris"
    shutil.copytree(runtime_bundles["iris"].path, bundle)
    (bundle / "evil.py").write_text("print('hi')")
    result = _run_to_exit(runtime_command(bundle, "--port", "0"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "evil.py is not listed" in result.stderr


def test_port_in_use_is_a_one_line_error(runtime_bundles: dict[str, Any]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _run_to_exit(runtime_command(runtime_bundles["iris"].path, "--port", str(port)))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: port {port} on 127.0.0.1 is already in use "
        "(hint: stop the other process, pick another --port, or start both with --reuse-port)"
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"binds": ["localhost"]}, "invalid bind address 'localhost'"),
        ({"cors_origins": ["example.com"]}, "invalid CORS origin 'example.com'"),
        ({"max_batch_sise": 8}, "unknown setting 'max_batch_sise'"),
    ],
)
def test_invalid_runtime_config_is_refused_before_binding(
    runtime_bundles: dict[str, Any], tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    path = tmp_path / "runtime.json"
    path.write_text(json.dumps(config))
    result = _run_to_exit(runtime_command(runtime_bundles["iris"].path, "--config", str(path)))
    assert result.returncode == 1
    assert result.stderr.startswith("error: runtime config") and message in result.stderr


def test_two_runtimes_share_a_port_with_reuse_port(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    port = _free_port()
    args = ("--bind", f"127.0.0.1:{port}", "--bind", "127.0.0.1:0", "--reuse-port")
    old = start_runtime(runtime_bundles["iris"].path, tmp_path / "old", *args)
    runtime_processes.append(old)
    new = start_runtime(runtime_bundles["diabetes"].path, tmp_path / "new", *args)
    runtime_processes.append(new)
    assert old.ready["binds"][0] == new.ready["binds"][0] == f"127.0.0.1:{port}"
    # health-gate the new process on its private port only
    assert httpx.get(f"{new.url_of(1)}/version", timeout=5).json()["model_name"] == "diabetes"
    assert old.terminate() == 0
    # the shared port keeps answering, now from the new release
    for _ in range(5):
        assert httpx.get(f"http://127.0.0.1:{port}/version", timeout=5).json()["model_name"] == "diabetes"
    assert new.terminate() == 0


def test_a_warming_runtime_takes_no_shared_connections_so_no_request_sees_503(
    runtime_bundles: dict[str, Any], mlp_bundle: Any, tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    """Start-first switch: while the new runtime warms up, every new connection to the shared port reaches the old
    one (the new socket is bound but not listening yet); its private port already answers probes with 503."""
    port = _free_port()
    args = ("--bind", f"127.0.0.1:{port}", "--bind", "127.0.0.1:0", "--reuse-port")
    old = start_runtime(runtime_bundles["iris"].path, tmp_path / "old", *args)
    runtime_processes.append(old)
    new = start_runtime(
        mlp_bundle.path, tmp_path / "new", *args, "--log-level", "info", config={"warmup_runs": 50000}, wait=False
    )
    runtime_processes.append(new)
    deadline = time.monotonic() + 60
    bound = None
    while bound is None and time.monotonic() < deadline and new.proc.poll() is None:
        bound = re.search(r"serving mlp on \S+, (127\.0\.0\.1:\d+)", new.stderr())  # logged after binding
        time.sleep(0.01)
    assert bound is not None, new.stderr()
    private = f"http://{bound.group(1)}"
    shared = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    answers: list[tuple[int, str]] = []
    probes: list[int] = []
    while time.monotonic() < deadline and new.proc.poll() is None and not new.ready_file.exists():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # a new connection: the kernel picks
        try:
            conn.request("GET", "/version")
            r = conn.getresponse()
            answers.append((r.status, json.loads(r.read()).get("model_name", "")))
        finally:
            conn.close()
        if len(answers) % 10 == 0:
            probes.append(httpx.get(f"{private}/health", timeout=5).status_code)
    warm_up_s = time.monotonic() - started
    wait_ready(new)
    assert len(answers) >= 20, f"the warm-up ended too soon to observe the shared port ({warm_up_s:.2f} s)"
    assert set(answers) == {(200, "iris")}
    assert 503 in probes and set(probes) <= {503, 200}
    assert old.terminate() == 0
    assert httpx.get(f"{shared}/version", timeout=5).json()["model_name"] == "mlp"
    assert new.terminate() == 0


def test_without_reuse_port_a_second_runtime_cannot_take_the_port(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    first = start_runtime(runtime_bundles["iris"].path, tmp_path)
    runtime_processes.append(first)
    port = first.ready["binds"][0].rsplit(":", 1)[1]
    result = _run_to_exit(runtime_command(runtime_bundles["iris"].path, "--port", port))
    assert result.returncode == 1 and "already in use" in result.stderr


def test_sigterm_drains_in_flight_requests_and_exits_zero(
    tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    bundle = make_slow_bundle(tmp_path / "slow")
    rp = start_runtime(
        bundle,
        tmp_path,
        config={"inference_in_thread": True, "max_batch_size": 1, "graceful_shutdown_timeout_s": 60},
    )
    runtime_processes.append(rp)
    rows = 1000  # ~0.1-0.3 s of onnxruntime each: long enough to have all of them inside the server at once
    body = json.dumps({"dataframe_split": {"columns": ["a", "b", "c", "d"], "data": [[1, 2, 3, 4]] * rows}})
    n = 6

    with httpx.Client(timeout=120, limits=httpx.Limits(max_connections=n + 2)) as client:

        def one(_: int) -> httpx.Response:
            return client.post(f"{rp.url}/invocations", content=body, headers={"content-type": "application/json"})

        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(one, i) for i in range(n)]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # all n requests inside the server (the scrape itself is one more)
                text = httpx.get(f"{rp.url}/metrics", timeout=10).text
                line = next(x for x in text.splitlines() if x.startswith("modeldeck_requests_in_flight "))
                if float(line.split()[1]) - 1 >= n:
                    break
                time.sleep(0.005)
            else:
                pytest.fail("requests never became in flight together")
            code = rp.terminate(timeout=120)
            responses = [f.result(timeout=120) for f in futures]
    assert [r.status_code for r in responses] == [200] * n
    assert all(len(r.json()["predictions"]) == rows for r in responses)
    assert code == 0


def test_health_is_503_until_warm_up_is_done(
    mlp_bundle: Any, tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    """The server answers probes while the model warms up (a long warm-up makes that window observable)."""
    port = _free_port()
    rp = start_runtime(mlp_bundle.path, tmp_path, "--port", str(port), config={"warmup_runs": 10000}, wait=False)
    runtime_processes.append(rp)
    url = f"http://127.0.0.1:{port}"
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and rp.proc.poll() is None:
        file_written = rp.ready_file.exists()  # read before asking: the file is written only after ready flips
        try:
            r = httpx.get(f"{url}/health", timeout=5)
        except httpx.TransportError:  # not listening yet
            time.sleep(0.01)
            continue
        seen.append(r.status_code)
        if file_written:
            assert r.status_code == 200
        if r.status_code == 200:
            break
        assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200
        assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code in (503, 200)
        time.sleep(0.01)
    assert seen and seen[0] == 503 and seen[-1] == 200
    wait_ready(rp)
    assert rp.terminate() == 0


BLOCKER = """
import runpy, sys
BLOCKED = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked in the runtime test: ' + name)
sys.meta_path.insert(0, Block())
sys.argv = ['modeldeck.core.runtime', *sys.argv[1:]]
runpy.run_module('modeldeck.core.runtime', run_name='__main__', alter_sys=True)
"""


def test_runtime_serves_with_the_apps_heavy_libraries_blocked(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    prefix = [sys.executable, "-c", BLOCKER.format(blocked=BLOCKED)]
    rp = start_runtime(runtime_bundles["iris"].path, tmp_path, prefix=prefix)
    runtime_processes.append(rp)
    assert _predict(rp.url).json() == {"predictions": [0]}
    assert httpx.get(f"{rp.url}/metrics", timeout=5).status_code == 200
    assert rp.terminate() == 0
    assert "blocked in the runtime test" not in rp.stderr()


def test_runtime_gets_ready_and_predicts_before_anything_imports_prometheus_client(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    """prometheus_client (with the http.server, email and urllib it imports) is for scrapes: the start, readiness
    and predictions go without it, which keeps 27-40 ms out of every cold start."""
    prefix = [sys.executable, "-c", BLOCKER.format(blocked=("prometheus_client",))]
    rp = start_runtime(runtime_bundles["iris"].path, tmp_path, prefix=prefix)
    runtime_processes.append(rp)
    assert httpx.get(f"{rp.url}/v2/health/ready", timeout=5).status_code == 200
    assert _predict(rp.url).json() == {"predictions": [0]}
    assert rp.terminate() == 0
    assert "blocked in the runtime test" not in rp.stderr()


def test_modeldeck_serve_runs_the_same_runtime_without_importing_mlflow(
    runtime_bundles: dict[str, Any], tmp_path: Path, runtime_processes: list[RuntimeProcess]
) -> None:
    code = BLOCKER.format(blocked=("mlflow", "PySide6", "pyqtgraph")).replace(
        "sys.argv = ['modeldeck.core.runtime', *sys.argv[1:]]\n"
        "runpy.run_module('modeldeck.core.runtime', run_name='__main__', alter_sys=True)",
        "from modeldeck.core.cli import main\nsys.exit(main(['serve', *sys.argv[2:]]))",
    )
    ready = tmp_path / "ready.json"
    cmd = [sys.executable, "-c", code, "serve", str(runtime_bundles["iris"].path), "--host", "127.0.0.1"]
    cmd += ["--port", "0", "--ready-file", str(ready)]
    started = time.monotonic()
    with (tmp_path / "err.log").open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=err, stdout=subprocess.DEVNULL)
    rp = RuntimeProcess(proc, ready, stderr_path=tmp_path / "err.log")
    runtime_processes.append(rp)
    wait_ready(rp, timeout=60)
    startup = time.monotonic() - started
    assert _predict(rp.url).json() == {"predictions": [0]}
    assert rp.terminate() == 0
    print(f"modeldeck serve: ready after {startup:.2f} s")


def test_model_that_onnxruntime_cannot_load_exits_with_one_error_line(
    runtime_bundles: dict[str, Any], tmp_path: Path
) -> None:
    from dataclasses import replace

    from modeldeck.core.runtime.manifest import hash_tree, write_manifest

    bundle = tmp_path / "iris"
    shutil.copytree(runtime_bundles["iris"].path, bundle)
    (bundle / "model.onnx").write_bytes(b"not an onnx model")
    write_manifest(bundle, replace(read_manifest(bundle), files=hash_tree(bundle)))  # consistent, just broken
    result = _run_to_exit([*runtime_command(bundle, "--port", "0"), "--log-level", "error"])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "onnxruntime cannot load model.onnx" in errors[0]
