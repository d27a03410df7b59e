"""The fleet table: a thin Qt model over :class:`FleetRow` values handed to it (it never fetches).

:meth:`FleetModel.set_rows` merges rows by name: ``dataChanged`` for changed
rows (one signal per contiguous block, so 50 rows updating at 1 Hz cost one
repaint), insert/remove for new and gone ones, so the selection survives updates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from modeldeck.core.formatting import format_size
from modeldeck.core.monitor.health import HealthState, HealthStatus
from modeldeck.gui.registry.models import ObjectRole, RawRole
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

Index = QModelIndex | QPersistentModelIndex
SparkRole = Qt.ItemDataRole.UserRole + 10  # numpy array of the sparkline's values (oldest first)

HEALTH_COLOURS = {  # (foreground, background), as the Deployments page's state chips
    HealthState.OK: ("#166534", "#dcfce7"),
    HealthState.DEGRADED: ("#8a5a00", "#fff7e0"),
    HealthState.DOWN: ("#9b1c1c", "#fdecec"),
    HealthState.UNKNOWN: ("#616e7c", "#eef1f5"),
}


@dataclass(frozen=True)
class FleetRow:
    name: str
    health: HealthStatus
    request_rate: float = math.nan
    error_rate: float = math.nan  # 5xx fraction
    latency_p99: float = math.nan  # seconds
    cpu_percent: float = math.nan
    resident_memory: float = math.nan  # bytes
    version: str = ""
    url: str = ""
    spark: np.ndarray = field(default_factory=lambda: np.empty(0), compare=False)
    spark_stamp: float = 0.0  # last sparkline time: rows compare equal only if the sparkline did not move


_CHIP_FG = {state: QColor(fg) for state, (fg, _bg) in HEALTH_COLOURS.items()}
_CHIP_BG = {state: QColor(bg) for state, (_fg, bg) in HEALTH_COLOURS.items()}
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)


def _num(value: float, fmt: str) -> str:
    return "–" if value is None or math.isnan(value) else fmt.format(value)


class FleetModel(QAbstractTableModel):
    NAME, HEALTH, RATE, ERRORS, P99, CPU, MEMORY, VERSION, TREND = range(9)
    HEADERS = ("Deployment", "Health", "Req/s", "5xx", "p99", "CPU", "Memory", "Version", "Throughput (5 min)")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[FleetRow] = []
        self._texts: list[tuple[str | None, ...]] = []  # display text per row and column, kept with _rows

    # -- data in -----------------------------------------------------------------------------------
    def set_rows(self, rows: list[FleetRow]) -> None:
        fresh = {r.name: r for r in rows}
        for i in reversed(range(len(self._rows))):
            if self._rows[i].name not in fresh:
                self.beginRemoveRows(QModelIndex(), i, i)
                del self._rows[i]
                del self._texts[i]
                self.endRemoveRows()
        known = {r.name: i for i, r in enumerate(self._rows)}
        changed: dict[int, tuple[int, int]] = {}  # row -> first and last column that changed
        for name, row in fresh.items():
            at = known.get(name)
            if at is not None and self._rows[at] != row:
                old, texts = self._rows[at], self._texts_of(row)
                cols = [c for c in range(len(texts)) if texts[c] != self._texts[at][c]]
                if old.spark_stamp != row.spark_stamp:
                    cols.append(self.TREND)
                if old.health != row.health:  # the reason (tooltip) can change while the text stays
                    cols.append(self.HEALTH)
                if old.url != row.url:
                    cols.append(self.NAME)
                self._rows[at] = row
                self._texts[at] = texts
                if cols:
                    changed[at] = (min(cols), max(cols))
        new = [r for n, r in fresh.items() if n not in known]
        if new:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self._rows.extend(new)
            self._texts.extend(self._texts_of(r) for r in new)
            self.endInsertRows()
        # Only the cells that changed: a range that includes the sort column makes the proxy re-sort (a layout
        # change: the whole table repaints), and the name column never changes.
        for start, end in _blocks(sorted(changed)):
            first = min(changed[r][0] for r in range(start, end + 1))
            last = max(changed[r][1] for r in range(start, end + 1))
            self.dataChanged.emit(self.index(start, first), self.index(end, last))

    def update_row(self, row: FleetRow) -> None:
        """Replace one row by name (e.g. a health event between two drains)."""
        for i, r in enumerate(self._rows):
            if r.name == row.name:
                if r != row:
                    self._rows[i] = row
                    self._texts[i] = self._texts_of(row)
                    self.dataChanged.emit(self.index(i, 0), self.index(i, len(self.HEADERS) - 1))
                return

    def row_of(self, name: str) -> int:
        return next((i for i, r in enumerate(self._rows) if r.name == name), -1)

    def row_at(self, row: int) -> FleetRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def rows(self) -> list[FleetRow]:
        return list(self._rows)

    # -- Qt model API -------------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and 0 <= section < len(self.HEADERS):
            if role == Qt.ItemDataRole.DisplayRole:
                return self.HEADERS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return _HEADER_TIPS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # Called ~8 times per cell per paint (every role the delegate asks for): one dict lookup per call,
        # display texts prepared once per update (they cost the UI thread's GIL share otherwise).
        handler = self._roles.get(role)
        if handler is None or not index.isValid():
            return None
        row = index.row()
        if not 0 <= row < len(self._rows):
            return None
        return handler(self, row, index.column())

    def _role_display(self, row: int, col: int) -> Any:
        return self._texts[row][col]

    def _role_raw(self, row: int, col: int) -> Any:
        return self._raw(self._rows[row], col)

    def _role_object(self, row: int, col: int) -> Any:
        return self._rows[row]

    def _role_spark(self, row: int, col: int) -> Any:
        return self._rows[row].spark if col == self.TREND else None

    def _role_tooltip(self, row: int, col: int) -> Any:
        r = self._rows[row]
        if col == self.HEALTH:
            return f"{r.health.state}: {r.health.reason}" if r.health.reason else str(r.health.state)
        return r.url if col == self.NAME else None

    def _role_foreground(self, row: int, col: int) -> Any:
        return _CHIP_FG[self._rows[row].health.state] if col == self.HEALTH else None

    def _role_background(self, row: int, col: int) -> Any:
        return _CHIP_BG[self._rows[row].health.state] if col == self.HEALTH else None

    def _role_alignment(self, row: int, col: int) -> Any:
        return _RIGHT if self.RATE <= col <= self.MEMORY else None

    _roles: dict[int, Callable[[FleetModel, int, int], Any]] = {  # noqa: RUF012
        Qt.ItemDataRole.DisplayRole: _role_display,
        RawRole: _role_raw,
        ObjectRole: _role_object,
        SparkRole: _role_spark,
        Qt.ItemDataRole.ToolTipRole: _role_tooltip,
        Qt.ItemDataRole.ForegroundRole: _role_foreground,
        Qt.ItemDataRole.BackgroundRole: _role_background,
        Qt.ItemDataRole.TextAlignmentRole: _role_alignment,
    }

    def _texts_of(self, r: FleetRow) -> tuple[str | None, ...]:
        return tuple(self._display(r, col) for col in range(len(self.HEADERS)))

    def _display(self, r: FleetRow, col: int) -> str | None:
        if col == self.NAME:
            return r.name
        if col == self.HEALTH:
            return str(r.health.state).upper() if r.health.state is not HealthState.UNKNOWN else "…"
        if col == self.RATE:
            return _num(r.request_rate, "{:.1f}")
        if col == self.ERRORS:
            return _num(r.error_rate * 100 if not math.isnan(r.error_rate) else math.nan, "{:.2f} %")
        if col == self.P99:
            return _num(r.latency_p99 * 1000 if not math.isnan(r.latency_p99) else math.nan, "{:.1f} ms")
        if col == self.CPU:
            return _num(r.cpu_percent, "{:.0f} %")
        if col == self.MEMORY:
            return "–" if math.isnan(r.resident_memory) else format_size(int(r.resident_memory))
        if col == self.VERSION:
            return r.version or "–"
        return None

    def _raw(self, r: FleetRow, col: int) -> Any:
        values = {
            self.NAME: r.name,
            self.HEALTH: int(r.health.state),
            self.RATE: r.request_rate,
            self.ERRORS: r.error_rate,
            self.P99: r.latency_p99,
            self.CPU: r.cpu_percent,
            self.MEMORY: r.resident_memory,
            self.VERSION: r.version,
            self.TREND: r.request_rate,
        }
        value = values.get(col)
        if isinstance(value, float) and math.isnan(value):
            return -1.0  # NaN breaks sorting; "no data" sorts first
        return value

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable


_HEADER_TIPS = (
    "Deployment name (tooltip: its metrics URL)",
    "OK / DEGRADED / DOWN from the health rules (tooltip: why)",
    "Requests per second over the last scrape interval (scrapes not counted)",
    "Share of requests answered 5xx over the last interval",
    "99th percentile request latency over the last minute",
    "CPU of the serving process (100 % = one core)",
    "Resident memory of the serving process",
    "Model version the endpoint serves",
    "Requests per second over the last five minutes",
)


def _blocks(rows: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for r in rows:
        if out and r == out[-1][1] + 1:
            out[-1] = (out[-1][0], r)
        else:
            out.append((r, r))
    return out
