"""The worker pattern: results land on the UI thread, errors become one line, stale results are dropped."""

from __future__ import annotations

import logging
import threading

import pytest
from modeldeck.core.errors import Cancelled, RegistryUnreachable
from modeldeck.gui.workers import Channel, describe_error, run_task, wait_for_workers
from PySide6.QtCore import QThread
from pytestqt.qtbot import QtBot


def test_result_arrives_on_the_ui_thread(qtbot: QtBot) -> None:
    seen: dict[str, object] = {}

    def work(x: int) -> int:
        seen["worker_thread"] = QThread.currentThread()
        return x * 2

    def done(result: int) -> None:
        seen["result"] = result
        seen["delivery_thread"] = QThread.currentThread()

    run_task(work, 21, on_result=done)
    qtbot.waitUntil(lambda: "result" in seen, timeout=5000)
    assert seen["result"] == 42
    assert seen["delivery_thread"] is qtbot_app_thread()
    assert seen["worker_thread"] is not qtbot_app_thread()


def qtbot_app_thread() -> QThread:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    assert app is not None
    return app.thread()


def test_our_error_arrives_with_its_hint(qtbot: QtBot) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        raise RegistryUnreachable("Cannot reach http://127.0.0.1:9: connection refused", hint="is the server running?")

    run_task(work, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert describe_error(errors[0]) == "Cannot reach http://127.0.0.1:9: connection refused — is the server running?"


def test_a_bug_is_logged_with_traceback_and_shown_as_one_line(qtbot: QtBot, caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        raise KeyError("boom")

    with caplog.at_level(logging.ERROR, logger="modeldeck.gui.workers"):
        run_task(work, on_error=errors.append)
        qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert describe_error(errors[0]).startswith("Internal error: KeyError")
    assert "\n" not in describe_error(errors[0])
    assert any(r.exc_info for r in caplog.records)


def test_newer_request_on_a_channel_wins_over_a_slow_older_one(qtbot: QtBot) -> None:
    channel = Channel("details")
    release_slow = threading.Event()
    shown: list[str] = []

    def slow(cancel: threading.Event) -> str:
        release_slow.wait(5)
        return "A"

    run_task(slow, on_result=shown.append, channel=channel)
    run_task(lambda: "B", on_result=shown.append, channel=channel)
    qtbot.waitUntil(lambda: shown == ["B"], timeout=5000)
    release_slow.set()
    assert wait_for_workers(5)
    assert shown == ["B"]


def test_cancel_reaches_the_core_function_and_is_not_an_error(qtbot: QtBot) -> None:
    started = threading.Event()
    errors: list[BaseException] = []
    results: list[object] = []

    def long_job(cancel: threading.Event) -> None:
        started.set()
        if cancel.wait(5):
            raise Cancelled()

    handle = run_task(long_job, on_result=results.append, on_error=errors.append)
    assert started.wait(5)
    handle.cancel()
    assert wait_for_workers(5)
    assert (errors, results) == ([], [])


def test_progress_reports_reach_the_ui(qtbot: QtBot) -> None:
    steps: list[tuple[str, float | None]] = []

    def job(progress) -> str:  # type: ignore[no-untyped-def]
        for i in range(3):
            progress(f"step {i}", i / 2)
        return "done"

    result: list[str] = []
    run_task(job, on_result=result.append, on_progress=lambda m, f: steps.append((m, f)))
    qtbot.waitUntil(lambda: result == ["done"], timeout=5000)
    assert steps == [("step 0", 0.0), ("step 1", 0.5), ("step 2", 1.0)]
