"""Run slow core calls off the UI thread and deliver their outcome back to it.

The Picard/napari pattern: :func:`run_task` puts a :class:`QRunnable` on a
:class:`QThreadPool`; the runnable emits ``progress``, ``finished(result)`` or
``failed(error)`` from the worker thread, and Qt's queued connections deliver
them to slots living in the UI thread, which then call plain Python callbacks.

Core functions that accept ``progress`` and/or ``cancel`` keyword arguments get
a progress callback and the task's :class:`threading.Event`; they raise
:class:`~modeldeck.core.errors.Cancelled` when it is set.

Stale results are dropped through a :class:`Channel`: a new task on a channel
cancels the previous one and bumps its generation, and results tagged with an
older generation are never delivered (a slow call must not overwrite a newer
selection).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from modeldeck.core.errors import Cancelled, ModelDeckError
from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QRunnable, QThreadPool, Signal, Slot

log = logging.getLogger(__name__)

ResultCallback = Callable[[Any], None]
ErrorCallback = Callable[[BaseException], None]
ProgressCallback = Callable[[str, "float | None"], None]


def describe_error(exc: BaseException) -> str:
    """One line a user can read: message + hint for our errors, the class and text for bugs."""
    if isinstance(exc, ModelDeckError):
        return f"{exc.message} — {exc.hint}" if exc.hint else exc.message
    return f"Internal error: {exc.__class__.__name__}: {exc} (details in the log)"


class Channel:
    """A stream of requests of which only the newest one matters (e.g. "details of the selection")."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.generation = 0
        self._current: TaskHandle | None = None

    def next(self, handle: TaskHandle) -> int:
        """Cancel the running request, make ``handle`` the current one; return its generation."""
        self.invalidate()
        self._current = handle
        return self.generation

    def invalidate(self) -> None:
        """Drop whatever is in flight (e.g. the registry was switched)."""
        self.generation += 1
        if self._current is not None:
            self._current.cancel()
            self._current = None

    def is_current(self, generation: int) -> bool:
        return generation == self.generation


class TaskHandle:
    """What :func:`run_task` returns: cancel the task, or ask whether it is done."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cancel_event = threading.Event()
        self.done = False
        self.owner: QObject | None = None

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


class _Delivery(QObject):
    """Lives in the UI thread; its slots run there because the signals cross threads queued."""

    progress = Signal(str, object)
    finished = Signal(object)
    failed = Signal(object)

    def __init__(
        self,
        pool: WorkerPool,
        handle: TaskHandle,
        on_result: ResultCallback | None,
        on_error: ErrorCallback | None,
        on_progress: ProgressCallback | None,
        is_current: Callable[[], bool],
    ) -> None:
        super().__init__()
        self._pool, self._handle = pool, handle
        self._on_result, self._on_error, self._on_progress = on_result, on_error, on_progress
        self._is_current = is_current
        self.progress.connect(self._deliver_progress)
        self.finished.connect(self._deliver_result)
        self.failed.connect(self._deliver_error)

    def _wanted(self) -> bool:
        return not self._handle.cancelled and self._is_current()

    @Slot(str, object)
    def _deliver_progress(self, message: str, fraction: object) -> None:
        if self._on_progress is not None and self._wanted():
            self._on_progress(message, fraction)  # type: ignore[arg-type]

    @Slot(object)
    def _deliver_result(self, result: object) -> None:
        try:
            if self._on_result is not None and self._wanted():
                self._on_result(result)
        finally:
            self._pool._retire(self)

    @Slot(object)
    def _deliver_error(self, error: object) -> None:
        try:
            assert isinstance(error, BaseException)
            if isinstance(error, Cancelled) or not self._wanted():
                log.debug("dropped %s outcome of %s", type(error).__name__, self._handle.name)
            elif self._on_error is not None:
                self._on_error(error)
            else:
                log.error("%s failed: %s", self._handle.name, describe_error(error))
        finally:
            self._pool._retire(self)


class _Runnable(QRunnable):
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], delivery: _Delivery):
        super().__init__()
        self.setAutoDelete(True)
        self._fn, self._args, self._kwargs, self._delivery = fn, args, kwargs, delivery

    def run(self) -> None:  # worker thread: never touch widgets here
        name = self._delivery._handle.name
        try:
            result = self._fn(*self._args, **self._kwargs)
        except ModelDeckError as exc:
            log.debug("%s raised %s", name, exc.__class__.__name__, exc_info=True)
            self._delivery.failed.emit(exc)
        except Exception as exc:  # a bug: keep the traceback in the log, show one line
            log.error("unexpected error in %s", name, exc_info=True)
            self._delivery.failed.emit(exc)
        else:
            self._delivery.finished.emit(result)


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class WorkerPool(QObject):
    """A thread pool plus the set of tasks whose outcome has not been delivered yet.

    ``busyChanged(bool)`` fires when the first task starts and when the last one is delivered
    (the main window's busy indicator).
    """

    busyChanged = Signal(bool)

    def __init__(self, max_threads: int = 4) -> None:
        super().__init__()
        self.pool = QThreadPool()
        self.pool.setMaxThreadCount(max_threads)
        self._pending: set[_Delivery] = set()

    def _retire(self, delivery: _Delivery) -> None:
        handle = delivery._handle
        handle.done = True
        if handle.owner is not None and not handle.cancelled:
            with contextlib.suppress(RuntimeError, TypeError):  # the owner may already be gone
                handle.owner.destroyed.disconnect(handle.cancel)
            handle.owner = None
        self._pending.discard(delivery)
        delivery.deleteLater()
        if not self._pending:
            self.busyChanged.emit(False)

    @property
    def pending(self) -> list[str]:
        """Names of tasks still running or waiting for their outcome to be delivered."""
        return sorted(d._handle.name for d in self._pending)

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        on_result: ResultCallback | None = None,
        on_error: ErrorCallback | None = None,
        on_progress: ProgressCallback | None = None,
        channel: Channel | None = None,
        name: str | None = None,
        owner: QObject | None = None,
        **kwargs: Any,
    ) -> TaskHandle:
        handle = TaskHandle(name or getattr(fn, "__qualname__", repr(fn)))
        if owner is not None:
            # A result for a widget that is gone is dropped, not delivered into a deleted C++ object.
            owner.destroyed.connect(handle.cancel)
            handle.owner = owner
        if channel is not None:
            generation = channel.next(handle)
            is_current: Callable[[], bool] = functools.partial(channel.is_current, generation)
        else:
            is_current = _always
        delivery = _Delivery(self, handle, on_result, on_error, on_progress, is_current)
        if _accepts(fn, "cancel"):
            kwargs.setdefault("cancel", handle.cancel_event)
        if _accepts(fn, "progress"):
            kwargs.setdefault("progress", delivery.progress.emit)
        self._pending.add(delivery)
        if len(self._pending) == 1:
            self.busyChanged.emit(True)
        self.pool.start(_Runnable(fn, args, kwargs, delivery))
        return handle

    def wait(self, timeout_s: float = 30.0) -> bool:
        """Process events until every task has run and its outcome was delivered; False on timeout."""
        deadline = time.monotonic() + timeout_s
        app = QCoreApplication.instance()
        while self._pending and time.monotonic() < deadline:
            if app is not None:
                app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            self.pool.waitForDone(20)
        return not self._pending

    def cancel_all(self) -> None:
        for delivery in list(self._pending):
            delivery._handle.cancel()


def _always() -> bool:
    return True


@functools.cache
def default_pool() -> WorkerPool:
    """The application's worker pool (created on first use, in the UI thread)."""
    return WorkerPool()


def run_task(
    fn: Callable[..., Any],
    *args: Any,
    on_result: ResultCallback | None = None,
    on_error: ErrorCallback | None = None,
    on_progress: ProgressCallback | None = None,
    channel: Channel | None = None,
    name: str | None = None,
    owner: QObject | None = None,
    **kwargs: Any,
) -> TaskHandle:
    """Run ``fn(*args, **kwargs)`` on the worker pool; call back in the UI thread.

    Exactly one of ``on_result``/``on_error`` is called unless the task was
    cancelled, superseded on its ``channel``, or its ``owner`` widget was
    destroyed (then neither is). ``Cancelled`` is never reported as an error.
    """
    return default_pool().submit(
        fn,
        *args,
        on_result=on_result,
        on_error=on_error,
        on_progress=on_progress,
        channel=channel,
        name=name,
        owner=owner,
        **kwargs,
    )


def wait_for_workers(timeout_s: float = 30.0) -> bool:
    """Block (processing events) until all tasks are delivered — for tests, shutdown and --screenshot."""
    return default_pool().wait(timeout_s)
