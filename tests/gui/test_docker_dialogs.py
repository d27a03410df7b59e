"""The Docker dialogs clicked through offscreen: every bad field flagged under itself with nothing sent to
the engine, the build log streamed in batches, a failing build's step highlighted, and a real build +
deploy on the local engine that then shows up in the Deployments page beside the local target."""

from __future__ import annotations

import io
import select
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from modeldeck.core.registry.types import ModelVersion
from modeldeck.core.settings import load_settings
from modeldeck.core.targets import catalog
from modeldeck.core.targets.base import DeployOptions
from modeldeck.core.targets.docker.target import DockerSettings
from modeldeck.core.targets.local import free_port
from modeldeck.gui.deploy.docker_dialogs import BuildImageDialog, DockerDeployDialog, parse_env
from modeldeck.gui.deploy.logview import StreamingLogView
from modeldeck.gui.main_window import MainWindow
from modeldeck.gui.workers import default_pool
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.gui.conftest import settle

pytestmark = [pytest.mark.gui]

SHOTS = Path("/tmp/shots")
VERSION = ModelVersion("iris-classifier", "1", 0, 0, "READY", "models:/iris-classifier/1", None)
BUILD_TIMEOUT_MS = 300_000


def shot(widget: Any, name: str) -> Path:
    QApplication.processEvents()
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"docker-{name}.png"
    widget.grab().save(str(path))
    return path


@pytest.fixture
def engine_listener() -> Iterator[tuple[str, Callable[[], bool]]]:
    """A docker+tcp:// URL on a loopback port, and a check whether anything connected to it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.setblocking(False)

        def contacted() -> bool:
            return bool(select.select([server], [], [], 0.2)[0])

        yield f"docker+tcp://127.0.0.1:{server.getsockname()[1]}", contacted


def visible_errors(dialog: Any) -> dict[str, str]:
    return {k: label.text() for k, label in dialog.field_errors.items() if dialog.form.isRowVisible(label)}


def test_every_bad_field_is_flagged_under_itself_and_nothing_reaches_the_engine(
    qtbot: QtBot, engine_listener: tuple[str, Callable[[], bool]]
) -> None:
    url, contacted = engine_listener
    dialog = DockerDeployDialog(load_settings(), VERSION)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.engine_combo.setEditText(url)
    dialog.name_edit.setText("iris classifier!")
    dialog.address_edit.setText("localhost")
    dialog.cpus_edit.setText("lots")
    dialog.memory_edit.setText("12 parsecs")
    dialog.env_edit.setPlainText("MODE=fast\n# a comment\nnot a pair")
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)

    errors = visible_errors(dialog)
    assert set(errors) == {"name", "address", "cpus", "memory", "env"}
    assert errors["name"].startswith("invalid deployment name 'iris classifier!'")
    assert errors["address"].startswith("Enter an IP address to publish on")
    assert errors["cpus"] == "“lots” is not a number of CPUs; use e.g. 0.5 or 2 (blank: no limit)."
    assert errors["memory"].startswith("“12 parsecs” is not a memory size")
    assert errors["env"] == "Line 3: “not a pair” is not KEY=VALUE."
    assert dialog.handle is None and dialog.run_button.isEnabled() and not dialog.log_view.isVisible()
    assert "deploy" not in " ".join(default_pool().pending)
    assert not contacted()
    shot(dialog, "deploy-invalid")

    # fixing a field clears its message on the next try; the engine URL is checked the same way
    dialog.engine_combo.setEditText("docker+tcp://no-port-here")
    dialog.name_edit.setText("iris")
    dialog.address_edit.setText("0.0.0.0")
    dialog.cpus_edit.setText("0")
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    errors = visible_errors(dialog)
    assert set(errors) == {"engine", "cpus", "memory", "env"}
    assert "needs HOST:PORT" in errors["engine"]
    assert errors["cpus"] == "CPUs must be more than 0 and at most 1024."
    settle(qtbot)
    dialog.close()


def test_build_dialog_refuses_a_bad_tag_and_an_unknown_engine_scheme(qtbot: QtBot) -> None:
    dialog = BuildImageDialog(load_settings(), VERSION)
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.tag_edit.text() == "modeldeck/iris-classifier:v1"
    dialog.tag_edit.setText("Iris Classifier:latest")
    dialog.engine_combo.setEditText("kubernetes://cluster")
    assert dialog.start() is None
    errors = visible_errors(dialog)
    assert set(errors) == {"engine", "tag"}
    assert errors["tag"].startswith("Use REPO:TAG in lower case")
    assert "not a docker target URL" in errors["engine"] or "unsupported docker target" in errors["engine"]
    settle(qtbot)
    dialog.close()


def test_a_valid_form_becomes_deploy_options_the_docker_target_accepts(qtbot: QtBot) -> None:
    dialog = DockerDeployDialog(load_settings(), VERSION)
    qtbot.addWidget(dialog)
    dialog.name_edit.setText("iris-prod")
    dialog.port_spin.setValue(18080)
    dialog.address_edit.setText("0.0.0.0")
    dialog.cpus_edit.setText("1.5")
    dialog.memory_edit.setText("512m")
    dialog.replicas_spin.setValue(2)
    dialog.env_edit.setPlainText("OMP_NUM_THREADS=1\nGREETING=a=b\n")
    assert dialog.errors() == {}
    options = dialog.options()
    assert (options.name, options.host, options.port) == ("iris-prod", "0.0.0.0", 18080)
    assert options.env == {"OMP_NUM_THREADS": "1", "GREETING": "a=b"}
    settings = DockerSettings.from_extra(options.extra)
    assert (settings.cpus, settings.memory, settings.replicas) == (1.5, "512m", 2)
    settle(qtbot)
    dialog.close()


def test_docker_contexts_are_offered_as_engines(qtbot: QtBot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    meta = tmp_path / "docker" / "contexts" / "meta" / "0123abcd"
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {
                "Name": "gpu-box",
                "Metadata": {"Description": "the GPU VM"},
                "Endpoints": {"docker": {"Host": "ssh://ops@10.0.0.9"}},
            }
        )
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    dialog = DockerDeployDialog(load_settings(), VERSION)
    qtbot.addWidget(dialog)
    combo = dialog.engine_combo
    qtbot.waitUntil(lambda: combo.count() == 2, timeout=10_000)
    assert [combo.itemData(i) for i in range(combo.count())] == ["docker://", "docker+ssh://ops@10.0.0.9"]
    assert combo.itemData(1, Qt.ItemDataRole.ToolTipRole) == "docker context “gpu-box”: the GPU VM"
    assert dialog.engine_url() == "docker://"  # the current context stays the default
    settle(qtbot)
    dialog.close()


def test_only_a_build_that_did_not_finish_gets_a_failing_step(qtbot: QtBot) -> None:
    view = StreamingLogView()
    qtbot.addWidget(view)
    for line in ("Step 1/2 : FROM base", " ---> 1234", "Step 2/2 : RUN make", "make: *** [all] Error 2"):
        view.sink(line)
    view.stop()
    assert view.highlight_failing_step() == "Step 2/2 : RUN make"
    assert view.highlighted_lines() == ["Step 2/2 : RUN make", "make: *** [all] Error 2"]
    view.clear_log()
    for line in ("Step 1/1 : FROM base", "Successfully built 1234", "[start] starting"):
        view.sink(line)
    view.stop()
    assert view.highlight_failing_step() is None and view.highlighted_lines() == []


def test_env_lines_name_the_first_bad_line() -> None:
    assert parse_env("A=1\n\n1BAD=2") == ({}, "Line 3: “1BAD” is not a valid variable name (letters, digits, _).")


def test_a_flood_of_log_lines_reaches_the_view_in_a_few_capped_batches(qtbot: QtBot) -> None:
    view = StreamingLogView(drain_ms=50, max_lines=1000)
    qtbot.addWidget(view)
    ticks: list[int] = []
    view.drained.connect(ticks.append)
    view.start()
    total = 20_000
    feeder = threading.Thread(target=lambda: [view.sink(f"line {i}") for i in range(total)])
    feeder.start()
    feeder.join(timeout=30)
    qtbot.waitUntil(lambda: view.received == total, timeout=20_000)
    view.stop()
    assert len(ticks) <= total // view.max_batch + 10  # batches, not a signal per line
    assert view.document().blockCount() <= 1000
    assert view.toPlainText().splitlines()[-1] == f"line {total - 1}"


# -- with a real engine ----------------------------------------------------------------------------


def select_version(qtbot: QtBot, window: MainWindow, model: str, version: str) -> None:
    page = window.registry_page
    if page.current_model() is None or page.current_model().name != model:
        with qtbot.waitSignal(page.versionsLoaded, timeout=30_000):
            assert page.select_model(model)
    assert page.select_version(version)
    settle(qtbot)


@pytest.fixture
def shell_less_base(docker_client: Any) -> Iterator[str]:
    """An image claiming a warm Python but holding no shell: the build's RUN step fails."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"none\n"))
    tag = f"modeldeck-test-noshell:{free_port()}"
    repo, _, name = tag.partition(":")
    docker_client.api.import_image_from_data(
        data.getvalue(),
        repository=repo,
        tag=name,
        changes=["LABEL io.modeldeck.python=/opt/nothing/bin/python", "LABEL io.modeldeck.test=1"],
    )
    yield tag
    docker_client.images.remove(tag, force=True)


@pytest.mark.server
@pytest.mark.slow
def test_a_failing_build_highlights_its_failing_step(
    qtbot: QtBot, open_window: Callable[..., MainWindow], demo_tracking_uri: str, shell_less_base: str
) -> None:
    window = open_window(demo_tracking_uri)
    select_version(qtbot, window, "iris-classifier", "1")
    ui = window.deploy_ui
    assert ui.build_image_action.isEnabled()
    dialog = ui.open_build_image_dialog()
    assert dialog is not None
    dialog.base_edit.setText(shell_less_base)
    dialog.tag_edit.setText(f"modeldeck-test/gui-broken:{free_port()}")
    qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.banner.isVisible(), timeout=BUILD_TIMEOUT_MS)
    assert "image build failed at Step" in dialog.banner.text()
    highlighted = dialog.log_view.highlighted_lines()
    assert highlighted and highlighted[0].startswith("Step ") and "RUN" in highlighted[0]
    assert dialog.step_label.text() == f"Failed at {highlighted[0]}"
    assert dialog.run_button.isEnabled()
    shot(dialog, "build-failed")
    settle(qtbot)
    dialog.close()


@pytest.mark.server
@pytest.mark.slow
def test_build_and_push_shows_the_image_id_size_and_digest(
    qtbot: QtBot,
    open_window: Callable[..., MainWindow],
    demo_tracking_uri: str,
    docker_client: Any,
    docker_base_image: str,
    image_registry: Any,
) -> None:
    window = open_window(demo_tracking_uri)
    select_version(qtbot, window, "iris-classifier", "2")
    dialog = window.deploy_ui.open_build_image_dialog()
    assert dialog is not None
    tag = f"{image_registry.address}/modeldeck-test/gui-iris:v2-{free_port()}"
    dialog.tag_edit.setText(tag)
    dialog.base_edit.setText(docker_base_image)
    dialog.push_check.setChecked(True)
    try:
        with qtbot.waitSignal(dialog.built, timeout=BUILD_TIMEOUT_MS) as blocker:
            qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        image = blocker.args[0].image
        assert image.repo_digest.startswith(tag.rsplit(":", 1)[0] + "@sha256:")
        text = dialog.outcome.text()
        assert text.startswith(f"Built {tag}: {image.image_id[:19]}… (")
        assert text.endswith(f"MiB), pushed as {image.repo_digest}")
        assert "Successfully built" in dialog.log_view.toPlainText()
        shot(dialog, "build-pushed")
    finally:
        settle(qtbot)
        dialog.close()
        docker_client.images.remove(tag, force=True)


@pytest.mark.server
@pytest.mark.slow
def test_deploy_to_docker_through_the_dialog_then_list_and_stop_it_on_the_deployments_page(
    qtbot: QtBot,
    open_window: Callable[..., MainWindow],
    demo_tracking_uri: str,
    docker_target: Any,
    docker_base_image: str,
    deploy_bundles: dict[str, Path],
) -> None:
    window = open_window(demo_tracking_uri)
    select_version(qtbot, window, "iris-classifier", "1")
    ui = window.deploy_ui
    ui.page.timer.setInterval(1000)
    ui.target.deploy(deploy_bundles["v1"], DeployOptions(name="flowers", port=free_port()))  # a local row too
    try:
        deploy_and_stop_on_docker(qtbot, window, docker_target, docker_base_image)
    finally:
        ui.page.timer.stop()
        settle(qtbot)
        ui.target.undeploy("flowers")


def deploy_and_stop_on_docker(qtbot: QtBot, window: MainWindow, docker_target: Any, docker_base_image: str) -> None:
    ui = window.deploy_ui
    dialog = ui.open_docker_dialog()
    assert dialog is not None
    name = docker_target.test_name("gui")
    port = free_port()
    dialog.name_edit.setText(name)
    dialog.base_edit.setText(docker_base_image)
    dialog.port_spin.setValue(port)
    dialog.memory_edit.setText("512m")
    dialog.env_edit.setPlainText("MODELDECK_TEST=1")
    assert dialog.engine_url() == "docker://"
    with qtbot.waitSignal(dialog.deployed, timeout=BUILD_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
        assert dialog.log_view.isVisible() and not dialog.run_button.isEnabled()
    result, url = blocker.args
    assert result.ok, result.message
    assert url == "docker://"
    assert dialog.outcome.text() == f"{name}: deployed at http://127.0.0.1:{port}"
    log_text = dialog.log_view.toPlainText()
    assert "Step 1/" in log_text and "[health]" in log_text
    shot(dialog, "deploy-done")
    dialog.close()
    assert "docker://" in [t.url for t in catalog.known_targets()]

    page = ui.page
    window.pages.setCurrentWidget(page)

    def docker_row() -> int:
        return page.table_model.row_of(name, "docker://")

    qtbot.waitUntil(lambda: docker_row() >= 0, timeout=30_000)
    model = page.table_model
    qtbot.waitUntil(lambda: model.index(docker_row(), model.MEMORY).data().endswith(" / 512.0 MiB"), timeout=30_000)
    # "starting" until Docker's own first health check has passed (its interval is 10 s)
    qtbot.waitUntil(lambda: model.index(docker_row(), model.STATE).data() == "running", timeout=40_000)
    cells = [model.index(docker_row(), c).data() for c in range(model.columnCount())]
    assert cells[:6] == [name, "iris-classifier", "1", "running", f"http://127.0.0.1:{port}", "docker://"]
    assert cells[6].endswith(" %")
    assert page.current_target_url() in ("local://", "docker://")
    assert page.select(name, "docker://")
    qtbot.waitUntil(lambda: model.row_of("flowers", "local://") >= 0, timeout=30_000)

    # Try it on the docker row: the example comes from the app's own bundle of the deployed sha
    try_it = page.try_it
    qtbot.waitUntil(lambda: "dataframe_split" in try_it.request_edit.toPlainText(), timeout=20_000)
    with qtbot.waitSignal(try_it.answered, timeout=20_000) as answered:
        qtbot.mouseClick(try_it.send_button, Qt.MouseButton.LeftButton)
    assert answered.args[0].status == 200
    local_cpu = model.index(model.row_of("flowers", "local://"), model.CPU)
    qtbot.waitUntil(lambda: str(local_cpu.data()).endswith(" %"), timeout=30_000)  # from the runtime's /metrics
    shot(page, "deployments-page")
    window.grab().save("/tmp/deploys-window.png")

    viewer = page.show_logs()  # the docker row's own logs (the container's output)
    assert viewer is not None and viewer.target_url == "docker://"
    qtbot.waitUntil(lambda: "supervisor" in viewer.text.toPlainText(), timeout=20_000)
    viewer.close()

    # a new version that cannot start (8 MiB is too little for the runtime) is rolled back; v1 keeps serving
    select_version(qtbot, window, "iris-classifier", "2")
    dialog = ui.open_docker_dialog()
    assert dialog is not None
    dialog.name_edit.setText(name)
    dialog.base_edit.setText(docker_base_image)
    dialog.port_spin.setValue(port)
    dialog.memory_edit.setText("8m")
    with qtbot.waitSignal(dialog.deployed, timeout=BUILD_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(dialog.run_button, Qt.MouseButton.LeftButton)
    failed = blocker.args[0]
    assert failed.outcome == "failed (rolled back)"
    assert dialog.outcome.text() == f"{name}: failed (rolled back) — {failed.message}"
    assert dialog.step_label.text() == "The previous release keeps serving."
    shot(dialog, "deploy-rolled-back")
    dialog.close()
    [still] = docker_target.status(name)
    assert (still.state, still.model_version) == ("running", "1")

    with qtbot.waitSignal(page.operationFinished, timeout=120_000) as stopped:
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    assert stopped.args[1].state == "stopped"
    assert [s.state for s in docker_target.status(name)] == ["stopped"]
    qtbot.waitUntil(lambda: model.index(docker_row(), model.STATE).data() == "stopped", timeout=30_000)
