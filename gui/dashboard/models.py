"""The fleet table: a Qt model fed :class:`FleetRow` values by the page (it never fetches).

:meth:`FleetModel.set_rows` merges rows by name: only the cells whose values
changed are rewritten (one ``dataChanged`` each), new rows are appended and gone
ones removed, so the selection and the sort order survive updates; it returns
the columns it wrote, so the page re-sorts once per update and only when the
sorted column changed. The cells are ``QStandardItem`` s (see :class:`FleetModel` for why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from modeldeck.core.formatting import format_size
from modeldeck.core.monitor.health import HealthState, HealthStatus
from modeldeck.gui.registry.models import RawRole
from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel

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
    scraped: bool = True  # False until the endpoint's first sample arrives
    stopped: bool = False  # collection stopped for good (the banner offers to restart it)


_CHIP_FG = {state: QColor(fg) for state, (fg, _bg) in HEALTH_COLOURS.items()}
_CHIP_BG = {state: QColor(bg) for state, (_fg, bg) in HEALTH_COLOURS.items()}
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_DISPLAY, _TOOLTIP, _ALIGN = Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole, Qt.ItemDataRole.TextAlignmentRole
_FOREGROUND, _BACKGROUND = Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.BackgroundRole


@dataclass(frozen=True, eq=False)
class Spark:
    """A sparkline's values, compared by time stamp (numpy arrays do not compare to one bool)."""

    values: np.ndarray
    stamp: float

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spark) and other.stamp == self.stamp and len(other.values) == len(self.values)

    __hash__ = None  # type: ignore[assignment]


def _num(value: float, fmt: str) -> str:
    return "–" if value is None or math.isnan(value) else fmt.format(value)


def _sortable(value: float) -> float:
    return -1.0 if math.isnan(value) else value  # NaN breaks sorting; "no data" sorts first


class FleetModel(QStandardItemModel):
    """Fleet rows as Qt items: the cells live on the C++ side, so painting the table never calls into Python.

    A Python ``data()`` is called ~8 times per cell per paint, and each call needs the GIL — which the
    collector's scrape threads hold most of the time under load (50 rows x 9 cells x 8 roles = 3,600 GIL
    waits per full repaint). Here :meth:`set_rows` writes only the cells whose values changed, one
    ``setItemData`` (one ``dataChanged``) per cell; the view and the sort proxy then stay in C++.
    ``row_at``/``rows`` hand out the :class:`FleetRow` values the model was given (by source row; a
    deployment's name is the display text of its first column). ``SparkRole`` holds a :class:`Spark`.
    """

    NAME, HEALTH, RATE, ERRORS, P99, CPU, MEMORY, VERSION, TREND = range(9)
    HEADERS = ("Deployment", "Health", "Req/s", "5xx", "p99", "CPU", "Memory", "Version", "Throughput (5 min)")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(list(self.HEADERS))
        for col, tip in enumerate(_HEADER_TIPS):
            self.setHeaderData(col, Qt.Orientation.Horizontal, tip, Qt.ItemDataRole.ToolTipRole)
        self._rows: list[FleetRow] = []
        self._cells: list[list[dict[int, Any]]] = []  # per row and column: the roles last written

    # -- data in -----------------------------------------------------------------------------------
    def set_rows(self, rows: list[FleetRow]) -> set[int]:
        """Merge ``rows`` by name; returns the columns written (every column when a row was added)."""
        written: set[int] = set()
        fresh = {r.name: r for r in rows}
        for i in reversed(range(len(self._rows))):
            if self._rows[i].name not in fresh:
                del self._rows[i]
                del self._cells[i]
                self.removeRow(i)
        known = {r.name: i for i, r in enumerate(self._rows)}
        for name, row in fresh.items():
            at = known.get(name)
            if at is None:
                cells = self._cells_of(row)
                items = []
                for roles in cells:
                    item = QStandardItem()
                    item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
                    for role, value in roles.items():
                        item.setData(value, role)
                    items.append(item)
                self._rows.append(row)
                self._cells.append(cells)
                self.appendRow(items)
                written.update(range(len(self.HEADERS)))
            elif self._rows[at] != row:
                written |= self._write(at, row)
        return written

    def update_row(self, row: FleetRow) -> set[int]:
        """Replace one row by name (e.g. a health event between two drains); returns the columns written."""
        at = self.row_of(row.name)
        if at >= 0 and self._rows[at] != row:
            return self._write(at, row)
        return set()

    def _write(self, at: int, row: FleetRow) -> set[int]:
        """Only the cells that changed: the name never does."""
        cells = self._cells_of(row)
        written = set()
        for col, roles in enumerate(cells):
            if roles != self._cells[at][col]:
                self.setItemData(self.index(at, col), roles)
                written.add(col)
        self._rows[at] = row
        self._cells[at] = cells
        return written

    def _cells_of(self, r: FleetRow) -> list[dict[int, Any]]:
        """Every cell's roles in one pass over the row (a slice writes ~7 rows a tick, and on a busy machine each
        Python operation here costs many times its usual time: building each column's values once, not 9 x 9)."""
        mem = r.resident_memory
        displays = (
            r.name,
            chip_text(r),
            _num(r.request_rate, "{:.1f}"),
            _num(r.error_rate * 100, "{:.2f} %"),
            _num(r.latency_p99 * 1000, "{:.1f} ms"),
            _num(r.cpu_percent, "{:.0f} %"),
            "–" if math.isnan(mem) else format_size(int(mem)),
            r.version or "–",
            None,
        )
        rate = _sortable(r.request_rate)
        raws = (
            r.name,
            int(r.health.state),
            rate,
            _sortable(r.error_rate),
            _sortable(r.latency_p99),
            _sortable(r.cpu_percent),
            _sortable(mem),
            r.version,
            rate,
        )
        cells: list[dict[int, Any]] = [{_DISPLAY: d, RawRole: v} for d, v in zip(displays, raws, strict=True)]
        for col in range(self.RATE, self.MEMORY + 1):
            cells[col][_ALIGN] = _RIGHT
        cells[self.NAME][_TOOLTIP] = r.url
        health = cells[self.HEALTH]
        health[_TOOLTIP] = f"{r.health.state}: {r.health.reason}" if r.health.reason else str(r.health.state)
        health[_FOREGROUND] = _CHIP_FG[r.health.state]
        health[_BACKGROUND] = _CHIP_BG[r.health.state]
        cells[self.TREND][SparkRole] = Spark(r.spark, r.spark_stamp)
        return cells

    def row_of(self, name: str) -> int:
        return next((i for i, r in enumerate(self._rows) if r.name == name), -1)

    def row_at(self, row: int) -> FleetRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def rows(self) -> list[FleetRow]:
        return list(self._rows)


def chip_text(row: FleetRow) -> str:
    """The health chip's word: the state, or for an unknown one what a user can tell apart — "…" while the
    first scrape is pending, "STOPPED" when collection gave up, otherwise "UNKNOWN" (the tooltip says why)."""
    if row.health.state is not HealthState.UNKNOWN:
        return str(row.health.state).upper()
    if row.stopped:
        return "STOPPED"
    return "UNKNOWN" if row.scraped else "…"


_HEADER_TIPS = (
    "Deployment name (tooltip: its metrics URL)",
    "OK / DEGRADED / DOWN from the health rules; UNKNOWN without figures, STOPPED when monitoring stopped,"
    " … before the first scrape (tooltip: why)",
    "Requests per second over the last scrape interval (scrapes not counted)",
    "Share of requests answered 5xx over the last interval",
    "99th percentile request latency over the last minute",
    "CPU of the serving process (100 % = one core)",
    "Resident memory of the serving process",
    "Model version the endpoint serves",
    "Requests per second over the last five minutes",
)
