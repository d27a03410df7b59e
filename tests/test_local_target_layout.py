"""The release layout, the supervisor and the port steering, each on its own (no runtime needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modeldeck.core.errors import DeployError, TargetError
from modeldeck.core.targets import releases
from modeldeck.core.targets.local import parse_local_url, pid_alive
from modeldeck.core.targets.releases import DeploymentState
from modeldeck.core.targets.reuseport import SharedPort


def test_names_are_validated_and_derived_from_model_names() -> None:
    assert releases.validate_name("iris-classifier") == "iris-classifier"
    assert releases.name_from_model("Iris Classifier / prod") == "Iris-Classifier-prod"
    for bad in ("", "../etc", "a/b", "-x", "x" * 65):
        with pytest.raises(DeployError, match="invalid deployment name"):
            releases.validate_name(bad)


def test_current_switches_atomically_and_state_round_trips(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.onnx").write_bytes(b"x")
    ids = [releases.new_release_id("ab" * 32, now=1_700_000_000 + i) for i in range(3)]
    for rid in ids:
        releases.install_release(tmp_path / "root", "iris", bundle, rid, "{}")
        releases.switch_current(tmp_path / "root", "iris", rid)
        assert releases.current_release(tmp_path / "root", "iris") == rid
    assert releases.list_releases(tmp_path / "root", "iris") == ids  # ids sort by time
    assert not (tmp_path / "root" / "iris" / "current.tmp").exists()

    state = DeploymentState(name="iris", host="127.0.0.1", port=8080, active_release=ids[-1], pid=123)
    releases.write_state(tmp_path / "root", state)
    assert releases.read_state(tmp_path / "root", "iris") == state
    assert releases.list_deployments(tmp_path / "root") == ["iris"]


def test_prune_keeps_the_newest_and_never_the_active_or_previous(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "f").write_text("x")
    ids = [releases.new_release_id("cd" * 32, now=1_700_000_000 + i) for i in range(6)]
    for rid in ids:
        releases.install_release(tmp_path, "m", bundle, rid, "{}")
    removed = releases.prune_releases(tmp_path, "m", keep=3, protect=(ids[0], ids[5]))
    assert removed == ids[1:4]
    assert releases.list_releases(tmp_path, "m") == [ids[0], ids[4], ids[5]]


def test_a_half_copied_release_is_not_listed(tmp_path: Path) -> None:
    (tmp_path / "m" / "releases" / "20260101T000000000Z-abc.tmp").mkdir(parents=True)
    assert releases.list_releases(tmp_path, "m") == []


def test_a_second_operation_on_the_same_deployment_is_refused(tmp_path: Path) -> None:
    with releases.deployment_lock(tmp_path, "m", create=True):
        releases.write_state(tmp_path, DeploymentState(name="m", host="127.0.0.1", port=1))
        with pytest.raises(DeployError, match="in progress"), releases.deployment_lock(tmp_path, "m"):
            pass


def test_operations_on_a_missing_deployment_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="no deployment named 'ghost'"), releases.deployment_lock(tmp_path, "ghost"):
        pass
    assert not (tmp_path / "ghost").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("local://", ("127.0.0.1", None)),
        ("local://8080", ("127.0.0.1", 8080)),
        ("local://0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("local://[::1]:9000", ("::1", 9000)),
    ],
)
def test_local_urls_parse(url: str, expected: tuple[str, int | None]) -> None:
    assert parse_local_url(url) == expected


@pytest.mark.parametrize("url", ["local://abc", "local://0", "local://70000", "ssh://x"])
def test_bad_local_urls_are_target_errors(url: str) -> None:
    with pytest.raises(TargetError):
        parse_local_url(url)


def _supervise(tmp_path: Path, *command: str, extra: tuple[str, ...] = ()) -> tuple[int, Path]:
    pidfile, log = tmp_path / "sup.pid", tmp_path / "logs" / "runtime.log"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "modeldeck.core.targets.supervisor",
            "--daemon",
            "--pidfile",
            str(pidfile),
            "--log",
            str(log),
            "--backoff",
            "0.1",
            *extra,
            "--",
            *command,
        ],
        check=True,
        timeout=30,
    )
    return int(pidfile.read_text()), log


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_supervisor_gives_up_after_bounded_restarts(tmp_path: Path) -> None:
    pid, log = _supervise(
        tmp_path, sys.executable, "-c", "raise SystemExit(3)", extra=("--max-restarts", "2", "--restart-window", "60")
    )
    _wait(lambda: not pid_alive(pid))
    text = log.read_text()
    assert text.count("exited unexpectedly with 3") == 3
    assert "giving up after 2 restarts" in text
    assert not (tmp_path / "sup.pid").exists()


def test_supervisor_forwards_sigterm_and_rotates_its_log(tmp_path: Path) -> None:
    chatter = "import sys, time\nfor i in range(100000): print('x' * 200, flush=True)\ntime.sleep(60)"
    pid, log = _supervise(tmp_path, sys.executable, "-c", chatter, extra=("--log-max-bytes", "100000"))
    _wait(lambda: log.with_name("runtime.log.1").is_file())
    os.kill(pid, signal.SIGTERM)
    _wait(lambda: not pid_alive(pid))
    assert log.stat().st_size < 200_000 and log.with_name("runtime.log.1").stat().st_size < 200_000
    both = log.with_name("runtime.log.1").read_text() + log.read_text()
    assert "stopping (SIGTERM)" in both and "runtime exited with -15" in both


def test_candidate_stops_itself_when_its_deployer_goes_away(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    pidfile, log = tmp_path / "sup.pid", tmp_path / "runtime.log"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "modeldeck.core.targets.supervisor",
            "--daemon",
            "--pidfile",
            str(pidfile),
            "--log",
            str(log),
            "--probation-fd",
            str(read_fd),
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
        ],
        check=True,
        timeout=30,
        pass_fds=(read_fd,),
    )
    os.close(read_fd)
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    os.close(write_fd)  # the deployer "crashes" before committing
    _wait(lambda: not pid_alive(pid))
    assert "deployer went away before committing" in log.read_text()


def test_port_steering_needs_a_process_listening_on_the_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening
        assert SharedPort.borrow(os.getpid(), port) is None
