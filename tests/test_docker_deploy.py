"""The Docker target on a real engine: run, predict, replace under load, broken versions, rollback, lifecycle."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from modeldeck.core.cli import main
from modeldeck.core.errors import DeployError
from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.docker.target import watch_health
from modeldeck.core.targets.health import load_example, request_json

from tests.fixtures.docker import ModelImages, bounded_load, free_port, run_unhealthy_container

pytestmark = [pytest.mark.server, pytest.mark.slow]


def options(target: Any, images: ModelImages, key: str, port: int, **extra: Any) -> DeployOptions:
    return DeployOptions(name=target.test_name(), port=port, extra={"image": images.ids[key], **extra})


def expected_predictions(bundle: Path) -> list[int]:
    """What the bundle's model says for its own input example, computed here with onnxruntime."""
    import onnxruntime

    example = json.loads((bundle / "input_example.json").read_text())
    session = onnxruntime.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.asarray(example["data"], dtype=np.float32)}
    return [int(v) for v in session.run(None, feed)[0]]


def served_version(port: int) -> str:
    return str(request_json("GET", f"http://127.0.0.1:{port}/version", timeout=5).body["model_version"])


def runtime_containers(target: Any, name: str) -> list[Any]:
    return target.client.containers.list(
        all=True, filters={"label": [f"io.modeldeck.deployment={name}", "io.modeldeck.role=runtime"]}
    )


def test_deployed_container_predicts_like_the_bundle_with_limits_labels_and_stats(
    docker_target: Any, model_images: ModelImages
) -> None:
    port = free_port()
    bundle = model_images.bundles["v1"]
    result = docker_target.deploy(
        bundle, options(docker_target, model_images, "v1", port, cpus=1.0, memory="256m", restart_retries=2)
    )
    assert result.outcome == "deployed", result.message
    assert "the example answered 2 prediction(s)" in result.message
    answer = request_json(
        "POST", f"http://127.0.0.1:{port}/invocations", load_example(bundle, "input_example.json"), timeout=5
    )
    assert answer.status == 200
    assert answer.body["predictions"] == expected_predictions(bundle)

    (container,) = runtime_containers(docker_target, result.name)
    host_config = container.attrs["HostConfig"]
    assert host_config["NanoCpus"] == 1_000_000_000
    assert host_config["Memory"] == 256 * 1024 * 1024
    assert host_config["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert container.attrs["Config"]["User"] == "10001:10001"
    labels = container.labels
    assert labels["io.modeldeck.release"] == result.status.release_id
    assert labels["io.modeldeck.image"] == model_images.ids["v1"]
    assert labels["io.modeldeck.bundle-sha256"] == result.status.bundle_sha256

    (status,) = docker_target.status(result.name)
    # "starting" until Docker's own first health check (every 10 s) has passed
    assert status.state in ("starting", "running") and status.endpoint == f"http://127.0.0.1:{port}"
    assert (status.model_name, status.model_version) == ("iris", "1")
    assert status.resources is not None and status.resources["memory_bytes"] > 0
    assert status.resources["memory_limit_bytes"] == 256 * 1024 * 1024
    assert "ready: iris version 1" in docker_target.logs(result.name, 50)


def test_replacing_a_version_under_load_fails_no_request(docker_target: Any, model_images: ModelImages) -> None:
    port = free_port()
    first = docker_target.deploy(model_images.bundles["v1"], options(docker_target, model_images, "v1", port))
    assert first.ok, first.message
    body = load_example(model_images.bundles["v1"], "input_example.json")
    stop = threading.Event()
    results: list[Any] = []
    loader = threading.Thread(
        target=lambda: results.append(bounded_load(f"http://127.0.0.1:{port}/invocations", body, stop)), daemon=True
    )
    loader.start()
    try:
        time.sleep(0.5)  # load is flowing before the switch
        second = docker_target.deploy(model_images.bundles["v2"], options(docker_target, model_images, "v2", port))
        time.sleep(0.5)  # and after it
    finally:
        stop.set()
        loader.join(timeout=30)
    assert second.outcome == "deployed", second.message
    (load,) = results
    assert not load.stopped_early  # the load covered the whole switch
    assert load.failed == [], f"{len(load.failed)} failed of {load.ok + len(load.failed)}: {load.failed[:3]}"
    assert load.ok > 20
    assert served_version(port) == "2"
    # The old release's containers are gone; the new one runs; the record names the old one as previous.
    containers = runtime_containers(docker_target, second.name)
    assert [c.labels["io.modeldeck.release"] for c in containers] == [second.status.release_id]
    assert second.status.previous_release_id == first.status.release_id


def test_broken_versions_are_rolled_back_and_the_old_one_keeps_serving(
    docker_target: Any, model_images: ModelImages
) -> None:
    port = free_port()
    first = docker_target.deploy(model_images.bundles["v1"], options(docker_target, model_images, "v1", port))
    assert first.ok, first.message
    body = load_example(model_images.bundles["v1"], "input_example.json")
    stop = threading.Event()
    results: list[Any] = []
    loader = threading.Thread(
        target=lambda: results.append(bounded_load(f"http://127.0.0.1:{port}/invocations", body, stop)), daemon=True
    )
    loader.start()
    try:
        crash = docker_target.deploy(model_images.bundles["crash"], options(docker_target, model_images, "crash", port))
        bad = docker_target.deploy(model_images.bundles["bad"], options(docker_target, model_images, "bad", port))
    finally:
        stop.set()
        loader.join(timeout=30)
    assert crash.outcome == "failed (rolled back)"
    assert "exited before it was ready" in crash.message
    assert bad.outcome == "failed (rolled back)"
    assert "input example failed" in bad.message
    assert not results[0].stopped_early and results[0].failed == []
    assert served_version(port) == "1"
    (status,) = docker_target.status(first.name)
    assert status.state in ("starting", "running") and status.release_id == first.status.release_id
    assert len(runtime_containers(docker_target, first.name)) == 1  # no candidate left behind


def test_rollback_returns_to_the_previous_image_and_back(docker_target: Any, model_images: ModelImages) -> None:
    port = free_port()
    first = docker_target.deploy(model_images.bundles["v1"], options(docker_target, model_images, "v1", port))
    second = docker_target.deploy(model_images.bundles["v2"], options(docker_target, model_images, "v2", port))
    assert first.ok and second.ok
    back = docker_target.rollback(first.name)
    assert back.outcome == "rolled-back", back.message
    assert served_version(port) == "1"
    assert back.status.release_id == first.status.release_id
    (container,) = runtime_containers(docker_target, first.name)
    assert container.image.id == model_images.ids["v1"]  # exactly the image that ran before
    again = docker_target.rollback(first.name)
    assert again.outcome == "rolled-back" and served_version(port) == "2"


def test_cancelled_deploy_removes_the_candidate_and_the_old_one_keeps_serving(
    docker_target: Any, model_images: ModelImages
) -> None:
    from modeldeck.core.errors import Cancelled

    port = free_port()
    first = docker_target.deploy(model_images.bundles["v1"], options(docker_target, model_images, "v1", port))
    assert first.ok, first.message
    cancel = threading.Event()

    def cancel_at_health(event: Any) -> None:
        if event.step == "health":
            cancel.set()

    with pytest.raises(Cancelled):
        docker_target.deploy(
            model_images.bundles["v2"],
            options(docker_target, model_images, "v2", port),
            progress=cancel_at_health,
            cancel=cancel,
        )
    assert [c.labels["io.modeldeck.release"] for c in runtime_containers(docker_target, first.name)] == [
        first.status.release_id
    ]
    assert served_version(port) == "1"


def test_stop_start_and_undeploy(docker_target: Any, model_images: ModelImages) -> None:
    port = free_port()
    result = docker_target.deploy(model_images.bundles["v1"], options(docker_target, model_images, "v1", port))
    assert result.ok, result.message
    assert docker_target.stop(result.name).state == "stopped"
    with pytest.raises(OSError):
        request_json("GET", f"http://127.0.0.1:{port}/health", timeout=2)
    started = docker_target.start(result.name)
    assert started.ok and served_version(port) == "1"
    assert docker_target.deploy(
        model_images.bundles["v1"], options(docker_target, model_images, "v1", port)
    ).outcome == ("already-installed")
    docker_target.undeploy(result.name)
    assert runtime_containers(docker_target, result.name) == []
    assert result.name not in [s.name for s in docker_target.status()]
    with pytest.raises(DeployError, match="no deployment named"):
        docker_target.status(result.name)


def test_port_in_use_is_refused_before_anything_starts(docker_target: Any, model_images: ModelImages) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        with pytest.raises(DeployError, match=f"port {port} on 127.0.0.1 is already in use"):
            docker_target.deploy(model_images.bundles["v1"], options(docker_target, model_images, "v1", port))
    assert runtime_containers(docker_target, docker_target.test_name()) == []


def test_replicas_share_the_port(docker_target: Any, model_images: ModelImages) -> None:
    port = free_port()
    result = docker_target.deploy(
        model_images.bundles["v1"], options(docker_target, model_images, "v1", port, replicas=2)
    )
    assert result.ok, result.message
    assert len([c for c in runtime_containers(docker_target, result.name) if c.status == "running"]) == 2
    pids = {request_json("GET", f"http://127.0.0.1:{port}/version", timeout=5).status for _ in range(10)}
    assert pids == {200}


def test_cli_deploys_to_docker_and_reports_status(
    docker_target: Any, model_images: ModelImages, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    name = docker_target.test_name("cli")
    bundle = str(model_images.bundles["v1"])
    args = ["deploy", bundle, "--target", "docker://", "--name", name, "--port", str(port)]
    assert main([*args, "--image", model_images.ids["v1"], "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"plan for {name} on docker:// (127.0.0.1:{port})" in plan and "health:" in plan
    assert runtime_containers(docker_target, name) == []  # a plan changes nothing
    code = main([*args, "--image", model_images.ids["v1"], "--env", "OMP_NUM_THREADS=1", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert json.loads(out)["outcome"] == "deployed"
    (container,) = runtime_containers(docker_target, name)
    assert "OMP_NUM_THREADS=1" in container.attrs["Config"]["Env"]
    assert main(["status", name, "--target", "docker://", "--json"]) == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert status["state"] in ("starting", "running") and status["resources"]["memory_bytes"] > 0
    assert main(["deploy", bundle, "--target", "local://", "--cpus", "1"]) == 1
    assert "only applies to docker targets" in capsys.readouterr().err


def test_health_watcher_restarts_an_unhealthy_container(
    docker_target: Any, docker_client: Any, docker_base_image: str
) -> None:
    name = docker_target.test_name("sick")
    container = run_unhealthy_container(docker_client, docker_base_image, name)
    try:
        started_at = container.attrs["State"]["StartedAt"]
        # Each run of the container is reported (and restarted) once: the restarted run turns unhealthy
        # again and is caught again, while the first run's stale event is not counted twice.
        events = watch_health(docker_target, name=name, timeout_s=30, restart_unhealthy=True, stop_after=2)
        assert [(e.deployment, e.status, e.restarted) for e in events] == [(name, "unhealthy", True)] * 2
        container.reload()
        assert container.status == "running" and container.attrs["State"]["StartedAt"] != started_at
        # Without the user's consent it is reported, never restarted.
        events = watch_health(docker_target, name=name, timeout_s=30, restart_unhealthy=False, stop_after=1)
        assert [(e.status, e.restarted) for e in events] == [("unhealthy", False)]
    finally:
        container.remove(force=True)


def test_image_that_cannot_be_pulled_is_a_one_line_error_before_anything_starts(
    docker_target: Any, model_images: ModelImages
) -> None:
    missing = "127.0.0.1:9/nothing/iris@sha256:" + "0" * 64
    opts = DeployOptions(name=docker_target.test_name(), port=free_port(), extra={"image": missing})
    with pytest.raises(DeployError) as err:
        docker_target.deploy(model_images.bundles["v1"], opts)
    assert err.value.message.startswith(f"cannot pull image {missing}: ")
    assert "\n" not in err.value.message and err.value.hint
    assert runtime_containers(docker_target, opts.name) == []
