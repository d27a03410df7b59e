"""Optional history: derived samples persisted to a local SQLite file, bounded by age and row count.

The live ring buffers forget everything on restart; this keeps the same series
for after-the-fact review ("what did p99 do last night"). Writes happen on the
:class:`HistoryWriter`'s own thread, in batches (one transaction per batch), so
neither the collector's scrape threads nor the UI thread ever wait on the disk.
One row per (endpoint, time) with every series as a column keeps the file
small and a range read one indexed scan.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from modeldeck.core.errors import ConfigError
from modeldeck.core.monitor.collector import Sample
from modeldeck.core.monitor.derive import SERIES

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 7.0
DEFAULT_MAX_ROWS = 2_000_000  # ~50 deployments at 1 Hz for 11 hours; ~200 MB
_COLUMNS = ", ".join(SERIES)


@dataclass(frozen=True)
class HistoryEvent:
    endpoint: str
    at: float
    kind: str
    detail: str


class HistoryStore:
    """The SQLite file. Not thread-safe by itself: one store per thread (the writer's, or a reader's)."""

    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout: float = 5.0,
    ) -> None:
        if retention_days <= 0 or max_rows < 1:
            raise ConfigError("history retention must be positive (days and rows)")
        self.path = path
        self.retention_days = retention_days
        self.max_rows = max_rows
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=timeout, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            cols = ", ".join(f"{name} REAL" for name in SERIES)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS samples (endpoint TEXT NOT NULL, at REAL NOT NULL, {cols})")
            self._db.execute("CREATE INDEX IF NOT EXISTS samples_by_endpoint ON samples (endpoint, at)")
            self._db.execute("CREATE INDEX IF NOT EXISTS samples_by_time ON samples (at)")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS events (endpoint TEXT NOT NULL, at REAL NOT NULL, kind TEXT, detail TEXT)"
            )
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"cannot open the monitoring history {path}: {exc}", hint="check the data dir") from exc

    def close(self) -> None:
        self._db.close()

    def write(self, samples: Sequence[Sample], events: Iterable[HistoryEvent] = ()) -> int:
        """Insert a batch in one transaction (failed scrapes become NaN rows: gaps); returns rows written."""
        rows = []
        for s in samples:
            values = s.derived.values() if s.derived is not None else dict.fromkeys(SERIES, math.nan)
            rows.append((s.endpoint, s.at, *(None if math.isnan(values[n]) else values[n] for n in SERIES)))
        marks = ", ".join("?" * (2 + len(SERIES)))
        with self._db:
            self._db.executemany(f"INSERT INTO samples (endpoint, at, {_COLUMNS}) VALUES ({marks})", rows)
            self._db.executemany(
                "INSERT INTO events (endpoint, at, kind, detail) VALUES (?, ?, ?, ?)",
                [(e.endpoint, e.at, e.kind, e.detail) for e in events],
            )
        return len(rows)

    def prune(self, now: float | None = None) -> int:
        """Drop rows older than the retention, then the oldest beyond ``max_rows``; returns rows removed."""
        cutoff = (now if now is not None else time.time()) - self.retention_days * 86400
        with self._db:
            removed = self._db.execute("DELETE FROM samples WHERE at < ?", (cutoff,)).rowcount
            self._db.execute("DELETE FROM events WHERE at < ?", (cutoff,))
            (count,) = self._db.execute("SELECT count(*) FROM samples").fetchone()
            if count > self.max_rows:
                (edge,) = self._db.execute(
                    "SELECT at FROM samples ORDER BY at LIMIT 1 OFFSET ?", (count - self.max_rows,)
                ).fetchone()
                removed += self._db.execute("DELETE FROM samples WHERE at < ?", (edge,)).rowcount
                self._db.execute("DELETE FROM events WHERE at < ?", (edge,))
        return removed

    def row_count(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM samples").fetchone()
        return int(count)

    def endpoints(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT endpoint FROM samples ORDER BY endpoint")]

    def load(
        self,
        endpoint: str,
        since: float = 0.0,
        until: float = math.inf,
        names: Iterable[str] | None = None,
        max_points: int = 5_000,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{series: (t, v)}`` like :meth:`Collector.snapshot`, oldest first (missing values are NaN).

        A week at 1 Hz is 600,000 rows per deployment: beyond ``max_points`` rows the span is cut into
        ``max_points`` buckets and each answers its peak (SQLite does the work; spikes stay visible and a
        bucket with no data stays a gap).
        """
        wanted = [n for n in SERIES if names is None or n in set(names)]
        if not wanted:
            return {}
        end = until if math.isfinite(until) else 1e18
        where = "FROM samples WHERE endpoint = ? AND at >= ? AND at <= ?"
        count, first, last = self._db.execute(
            f"SELECT count(*), min(at), max(at) {where}", (endpoint, since, end)
        ).fetchone()
        if count > max_points > 0 and last > first:
            bucket = (last - first) / max_points
            peaks = ", ".join(f"max({n})" for n in wanted)
            rows = self._db.execute(
                f"SELECT min(at), {peaks} {where} GROUP BY CAST((at - ?) / ? AS INTEGER) ORDER BY 1",
                (endpoint, since, end, first, bucket),
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT at, {', '.join(wanted)} {where} ORDER BY at", (endpoint, since, end)
            ).fetchall()
        data = np.array(rows, dtype=float).reshape(len(rows), 1 + len(wanted))  # None -> nan
        return {name: (data[:, 0].copy(), data[:, i + 1].copy()) for i, name in enumerate(wanted)}

    def events(self, endpoint: str, since: float = 0.0) -> list[HistoryEvent]:
        rows = self._db.execute(
            "SELECT endpoint, at, kind, detail FROM events WHERE endpoint = ? AND at >= ? ORDER BY at",
            (endpoint, since),
        ).fetchall()
        return [HistoryEvent(*r) for r in rows]


class HistoryWriter:
    """Writes batches handed to :meth:`put` on its own thread; :meth:`put` never blocks.

    At most ``max_queue`` batches wait (the oldest is dropped beyond that, with a
    warning), so a slow disk cannot grow memory. Prunes every ``prune_every`` s.
    """

    def __init__(self, store_path: Path, *, prune_every: float = 600.0, max_queue: int = 1000, **store_args: float):
        self.path = store_path
        self._store_args = store_args
        self._prune_every = prune_every
        self._queue: queue.Queue[tuple[list[Sample], list[HistoryEvent]] | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self.error: str = ""
        self.written = 0
        self.dropped = 0
        self._ready = threading.Event()

    def start(self, timeout: float = 5.0) -> None:
        """Open the file on the writer thread; raises :class:`ConfigError` if it cannot be opened."""
        self._thread = threading.Thread(target=self._run, name="modeldeck-history", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ConfigError(f"the monitoring history {self.path} did not open within {timeout:g} s")
        if self.error:
            raise ConfigError(self.error)

    def put(self, samples: Sequence[Sample], events: Sequence[HistoryEvent] = ()) -> None:
        if not samples and not events:
            return
        item = (list(samples), list(events))
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._queue.get_nowait()
            self.dropped += 1
            log.warning("monitoring history cannot keep up with the disk; a batch was dropped")
            self._queue.put_nowait(item)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every batch put so far is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.warning("history writer queue full at shutdown; unwritten batches are lost")
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        try:
            store = HistoryStore(self.path, **self._store_args)  # type: ignore[arg-type]
        except ConfigError as exc:
            self.error = exc.one_line()
            self._ready.set()
            return
        self._ready.set()
        last_prune = 0.0
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    samples, events = item
                    try:
                        self.written += store.write(samples, events)
                        if time.monotonic() - last_prune > self._prune_every:
                            store.prune()
                            last_prune = time.monotonic()
                    except sqlite3.Error as exc:
                        self.error = f"cannot write the monitoring history {self.path}: {exc}"
                        log.warning("%s", self.error)
                finally:
                    self._queue.task_done()
        finally:
            store.close()
