"""Dynamic batching: concurrent requests coalesced into one ``session.run``.

The batcher lives on the event loop. A request that finds the model idle is
flushed on the next loop iteration -- together with whatever other requests were
parsed in that same iteration -- so a lone request never waits. Requests that
arrive while a batch runs queue up and form the next batch. ``max_wait_s`` (off
by default) additionally holds a batch that already has company for up to that
long, to collect more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from modeldeck.core.runtime.model import Batchable

log = logging.getLogger(__name__)

RunBatch = Callable[[Sequence[Batchable]], list[Any]]
RunOne = Callable[[Batchable], Any]
Observe = Callable[[int, int, float], None]


class Reply(Protocol):
    """Where a queued request's outcome goes: an :class:`asyncio.Future`, or anything with the same three methods."""

    def done(self) -> bool: ...

    def set_result(self, result: Any) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


class Batcher:
    """Queue of validated requests drained into ``run_batch`` calls.

    ``max_batch_size`` bounds the rows per run (a single larger request still
    runs, alone). With ``in_thread`` the runs happen on one worker thread so the
    event loop keeps parsing requests meanwhile; otherwise inline on the loop,
    which is cheaper for models that answer in microseconds.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait_s: float = 0.0,
        in_thread: bool = False,
        timeout_s: float = 60.0,
        observe: Observe | None = None,
        run_one: RunOne | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._run_one = run_one or (lambda item: run_batch([item])[0])
        self._max_rows = max_batch_size
        self._max_wait = max_wait_s
        self._observe = observe
        self._timeout = timeout_s
        self._queue: deque[tuple[Batchable, Reply]] = deque()
        self._scheduled = False
        self._waited = False
        self._busy = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="inference") if in_thread else None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run_now(self, item: Batchable) -> Any:
        """Run one request immediately on the loop if nothing is queued or running; ``None`` if it must queue.

        The caller uses this when no other request is pending on the server: then
        there is nothing to coalesce with, and skipping the queue saves two event
        loop iterations (the flush and the future's wake-up) per request.
        """
        if self._executor is not None or self._busy or self._queue:
            return None
        start = time.perf_counter()
        try:
            result = self._run_one(item)
        except Exception as exc:  # a bug in batching itself: fail this request, keep serving
            log.exception("batch run failed")
            result = exc
        seconds = time.perf_counter() - start
        if self._observe is not None:
            self._observe(1, item.rows, seconds)
        return result

    def submit(self, item: Batchable) -> asyncio.Future[Any]:
        """Queue one request; the future resolves to its outputs or an :class:`InferenceError`."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.submit_to(item, fut)
        return fut

    def submit_to(self, item: Batchable, reply: Reply) -> None:
        """Queue one request whose outcome goes to ``reply`` when its batch has run.

        For callers with no task to wake: the outputs (or the :class:`InferenceError`, or a ``TimeoutError`` for a
        request queued past its deadline) are handed over inside the batch's delivery, with no future and no
        extra event loop iteration. ``reply.set_result``/``set_exception`` must not raise.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        item.deadline = time.monotonic() + self._timeout
        self._queue.append((item, reply))
        if not self._scheduled and not self._busy:
            self._scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        queue = self._queue
        while queue and queue[0][1].done():  # timed out while queued
            queue.popleft()
        if self._busy or not queue:
            return
        if self._max_wait > 0 and not self._waited and 1 < self._queued_rows() < self._max_rows:
            self._waited = True
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_later(self._max_wait, self._flush)
            return
        self._waited = False
        batch: list[tuple[Batchable, Reply]] = []
        rows = 0
        now = time.monotonic()
        while queue and (not batch or rows + queue[0][0].rows <= self._max_rows):
            item, fut = queue.popleft()
            if fut.done():
                continue
            if item.deadline < now:  # waited too long behind earlier batches
                fut.set_exception(TimeoutError())
                continue
            batch.append((item, fut))
            rows += item.rows
        if not batch:
            return
        if self._executor is None:
            try:
                results, seconds = self._timed_run([b[0] for b in batch])
            except Exception as exc:  # a bug in batching itself: fail these requests, keep serving
                log.exception("batch run failed")
                results, seconds = [exc] * len(batch), 0.0
            self._deliver(batch, results, seconds)
            if queue:
                self._schedule()
        else:
            self._busy = True
            assert self._loop is not None
            job = self._loop.run_in_executor(self._executor, self._timed_run, [b[0] for b in batch])
            job.add_done_callback(lambda j: self._finished(batch, j))

    def _finished(self, batch: list[tuple[Batchable, Reply]], job: asyncio.Future[Any]) -> None:
        self._busy = False
        exc = job.exception()
        if exc is not None:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            self._deliver(batch, *job.result())
        if self._queue:
            self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _timed_run(self, items: list[Batchable]) -> tuple[list[Any], float]:
        start = time.perf_counter()
        return self._run_batch(items), time.perf_counter() - start

    def _deliver(self, batch: list[tuple[Batchable, Reply]], results: list[Any], seconds: float) -> None:
        """Resolve the futures and record the batch (on the loop thread, so metrics need no lock)."""
        if self._observe is not None:
            self._observe(len(batch), sum(item.rows for item, _ in batch), seconds)
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def _queued_rows(self) -> int:
        return sum(item.rows for item, _ in self._queue)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
