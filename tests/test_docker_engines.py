"""Images through a registry, by digest, on another engine -- and an engine that dies mid-deploy."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from modeldeck.core.errors import TargetError
from modeldeck.core.targets.base import DeployOptions, ProgressEvent
from modeldeck.core.targets.docker import image as images
from modeldeck.core.targets.docker.engine import parse_engine_url
from modeldeck.core.targets.docker.target import DockerTarget
from modeldeck.core.targets.health import load_example, request_json

from tests.fixtures.docker import ModelImages, Registry, SpareEngine, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]

NAME = "iris-remote"


def pushed(docker_client: Any, model_images: ModelImages, registry: Registry, key: str) -> str:
    """Push the session image ``key`` to the registry; drop the registry tag locally; return REPO@sha256:…."""
    tag = f"{registry.address}/modeldeck-test/iris:{key}"
    docker_client.images.get(model_images.ids[key]).tag(tag)
    build = images.BuildResult(tag, model_images.ids[key], model_images.sizes[key], "", {}, 0.0)
    lines: list[str] = []
    result = images.push_image(docker_client, build, progress=lambda m, f: lines.append(m))
    docker_client.images.remove(tag)  # only the tag: the local copy stays for the other tests
    assert result.repo_digest and result.repo_digest.startswith(f"{registry.address}/modeldeck-test/iris@sha256:")
    return result.repo_digest


@pytest.fixture(scope="module")
def digests(docker_client: Any, model_images: ModelImages, image_registry: Registry) -> dict[str, str]:
    return {key: pushed(docker_client, model_images, image_registry, key) for key in ("v1", "v2")}


@pytest.fixture
def spare_target(spare_engine: SpareEngine) -> Any:
    if spare_engine.proc is None:
        spare_engine.start()
    target = DockerTarget(parse_engine_url(spare_engine.url), timeout=60)
    yield target
    target.close()


def test_pushed_image_deploys_by_digest_on_an_engine_that_pulls_it(
    spare_target: Any, digests: dict[str, str], model_images: ModelImages
) -> None:
    port = free_port()
    steps: list[str] = []
    result = spare_target.deploy(
        model_images.bundles["v1"],
        DeployOptions(name=NAME, port=port, extra={"image": digests["v1"]}),
        progress=lambda e: steps.append(e.step),
    )
    assert result.outcome == "deployed", result.message
    assert "pull" in steps  # the engine had never seen it
    answer = request_json(
        "POST",
        f"http://127.0.0.1:{port}/invocations",
        load_example(model_images.bundles["v1"], "input_example.json"),
        timeout=5,
    )
    assert answer.status == 200 and len(answer.body["predictions"]) == 2
    state = spare_target.read_state(NAME)
    assert state.active_image == digests["v1"]  # what runs is named by digest, so rollback restores exactly it
    (container,) = spare_target.client.containers.list(filters={"label": f"io.modeldeck.deployment={NAME}"})
    assert container.labels["io.modeldeck.image"] == digests["v1"]


def test_engine_killed_mid_deploy_is_a_clear_error_and_a_retry_leaves_nothing_half_created(
    spare_engine: SpareEngine, spare_target: Any, digests: dict[str, str], model_images: ModelImages
) -> None:
    port = free_port()
    first = spare_target.deploy(
        model_images.bundles["v1"], DeployOptions(name=NAME, port=port, extra={"image": digests["v1"]})
    )
    assert first.ok, first.message
    killed = threading.Event()

    def kill_at_health_check(event: ProgressEvent) -> None:
        if event.step == "health" and not killed.is_set():
            killed.set()
            spare_engine.kill()  # SIGKILL: the engine vanishes with the new container created and running

    options = DeployOptions(name=NAME, port=port, extra={"image": digests["v2"]})
    with pytest.raises(TargetError) as err:
        spare_target.deploy(model_images.bundles["v2"], options, progress=kill_at_health_check)
    assert killed.is_set()
    assert "cannot reach the Docker engine" in err.value.message and "\n" not in err.value.message
    assert err.value.hint

    spare_engine.start()  # same data root: the half-done candidate is still there
    retry = DockerTarget(parse_engine_url(spare_engine.url), timeout=60)
    try:
        result = retry.deploy(model_images.bundles["v2"], options)
        assert result.outcome == "deployed", result.message
        runtime = retry.client.containers.list(
            all=True, filters={"label": [f"io.modeldeck.deployment={NAME}", "io.modeldeck.role=runtime"]}
        )
        assert [c.labels["io.modeldeck.release"] for c in runtime] == [result.status.release_id]
        records = retry.client.containers.list(
            all=True, filters={"label": [f"io.modeldeck.deployment={NAME}", "io.modeldeck.role=state"]}
        )
        assert len(records) == 1
        assert request_json("GET", f"http://127.0.0.1:{port}/version", timeout=5).body["model_version"] == "2"
        retry.undeploy(NAME)
    finally:
        retry.close()
