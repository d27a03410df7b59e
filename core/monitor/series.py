"""Fixed-size ring buffers of (time, value) points, so a dashboard open for a week uses the memory of an hour."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

DEFAULT_RETENTION = 3600  # points: an hour at 1 Hz


class RingBuffer:
    """The last ``capacity`` points of one series; preallocated numpy arrays, never reallocated."""

    __slots__ = ("_n", "_next", "_t", "_v", "capacity")

    def __init__(self, capacity: int = DEFAULT_RETENTION) -> None:
        if capacity < 1:
            raise ValueError("a ring buffer needs room for at least one point")
        self.capacity = capacity
        self._t = np.full(capacity, np.nan)
        self._v = np.full(capacity, np.nan)
        self._next = 0
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return int(self._t.nbytes + self._v.nbytes)

    def append(self, t: float, value: float) -> None:
        self._t[self._next] = t
        self._v[self._next] = value
        self._next = (self._next + 1) % self.capacity
        self._n = min(self._n + 1, self.capacity)

    def extend(self, t: np.ndarray, v: np.ndarray) -> None:
        """Append many points at once (a backfill); only the last ``capacity`` of them are kept."""
        n = len(t)
        if n > self.capacity:
            t, v, n = t[-self.capacity :], v[-self.capacity :], self.capacity
        first = min(n, self.capacity - self._next)
        self._t[self._next : self._next + first], self._v[self._next : self._next + first] = t[:first], v[:first]
        self._t[: n - first], self._v[: n - first] = t[first:], v[first:]
        self._next = (self._next + n) % self.capacity
        self._n = min(self._n + n, self.capacity)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the points, oldest first: ready for ``PlotDataItem.setData(t, v)`` (NaN gaps stay gaps)."""
        if self._n < self.capacity:
            return self._t[: self._n].copy(), self._v[: self._n].copy()
        order = np.r_[self._next : self.capacity, 0 : self._next]
        return self._t[order], self._v[order]

    def last(self) -> tuple[float, float] | None:
        if not self._n:
            return None
        i = (self._next - 1) % self.capacity
        return float(self._t[i]), float(self._v[i])


class SeriesStore:
    """Ring buffers per (endpoint, series name); thread-safe, so a collector appends while a UI thread snapshots."""

    def __init__(self, retention: int = DEFAULT_RETENTION) -> None:
        self.retention = retention
        self._buffers: dict[tuple[str, str], RingBuffer] = {}
        self._lock = threading.Lock()

    def append(self, endpoint: str, t: float, values: dict[str, float]) -> None:
        with self._lock:
            for name, value in values.items():
                buf = self._buffers.get((endpoint, name))
                if buf is None:
                    buf = self._buffers[(endpoint, name)] = RingBuffer(self.retention)
                buf.append(t, value)

    def extend(self, endpoint: str, t: np.ndarray, values: dict[str, np.ndarray]) -> int:
        """Append a block of points (``t`` ascending) newer than the endpoint's last one; returns how many.

        Older points are dropped, so a backfill that overlaps what is already held never makes time go back.
        """
        with self._lock:
            last = -np.inf
            for name in values:
                buf = self._buffers.get((endpoint, name))
                if buf is not None and (point := buf.last()) is not None:
                    last = max(last, point[0])
            keep = t > last
            if not keep.any():
                return 0
            t = t[keep]
            for name, v in values.items():
                buf = self._buffers.get((endpoint, name))
                if buf is None:
                    buf = self._buffers[(endpoint, name)] = RingBuffer(self.retention)
                buf.extend(t, v[keep])
            return len(t)

    def snapshot(self, endpoint: str, names: Iterable[str] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        with self._lock:
            if names is not None:  # direct lookups: a dashboard asks for a few series of one endpoint often
                found = ((name, self._buffers.get((endpoint, name))) for name in dict.fromkeys(names))
                return {name: buf.snapshot() for name, buf in found if buf is not None}
            return {name: buf.snapshot() for (ep, name), buf in self._buffers.items() if ep == endpoint}

    def forget(self, endpoint: str) -> None:
        with self._lock:
            for key in [k for k in self._buffers if k[0] == endpoint]:
                del self._buffers[key]

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(b.nbytes for b in self._buffers.values())
