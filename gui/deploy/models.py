"""The Deployments table: a thin Qt model over the deployments of every known target, handed to it.

It never fetches; :meth:`DeploymentTableModel.set_listings` merges fresh per-target listings row
by row (``dataChanged`` for changed rows, insert/remove for new and gone ones), so a periodic
refresh keeps the selection and the scroll position. Rows are keyed by (target URL, deployment
name); a target that could not be asked is one "unreachable" row carrying the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from modeldeck.core.formatting import format_size
from modeldeck.core.targets.base import DeploymentStatus
from modeldeck.core.targets.catalog import TargetListing, kind_of
from modeldeck.gui.registry.models import ObjectRole, RawRole
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

STATE_COLOURS = {
    "running": ("#166534", "#dcfce7"),
    "starting": ("#8a5a00", "#fff7e0"),
    "stopped": ("#616e7c", "#eef1f5"),
    "failed": ("#9b1c1c", "#fdecec"),
    "unknown": ("#8a5a00", "#fff7e0"),
    "unreachable": ("#9b1c1c", "#fdecec"),
}
KIND_ORDER = {"local": 0, "docker": 1, "ssh": 2}
TargetRole = Qt.ItemDataRole.UserRole + 20  # the row's target URL (as listed, e.g. "local://", "docker://")

Index = QModelIndex | QPersistentModelIndex


def format_since(iso: str | None, *, seconds: bool = False, now: datetime | None = None) -> str:
    """``2026-11-27T14:20:00Z`` in local time, as short as the table needs: ``14:20`` today, ``11-27 14:20``
    this year, ``2025-11-27`` before; ``seconds`` gives the full ``2026-11-27 14:20:00`` (tooltips). '' if unknown."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return iso
    if seconds:
        return when.strftime("%Y-%m-%d %H:%M:%S")
    today = (now or datetime.now(when.tzinfo)).astimezone(when.tzinfo).date()
    if when.date() == today:
        return when.strftime("%H:%M")
    return when.strftime("%m-%d %H:%M" if when.year == today.year else "%Y-%m-%d")


def target_label(url: str) -> str:
    """What the Target column shows: "this machine" for the local target, else the URL."""
    return "this machine" if kind_of(url) == "local" else url


@dataclass(frozen=True)
class DeploymentRow:
    """One table row: a deployment on ``target``, or (``status`` None) a target that could not be asked."""

    target: str
    kind: str
    status: DeploymentStatus | None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.target, self.status.name if self.status is not None else "")

    @property
    def resources(self) -> dict[str, float]:
        return dict(self.status.resources or {}) if self.status is not None else {}


def rows_of(listings: Sequence[TargetListing]) -> list[DeploymentRow]:
    rows: list[DeploymentRow] = []
    for listing in listings:
        if listing.error is not None:
            rows.append(DeploymentRow(listing.url, listing.kind, None, listing.error))
        else:
            rows.extend(DeploymentRow(listing.url, listing.kind, s) for s in listing.statuses)
    return rows


def format_cpu(resources: dict[str, float]) -> str:
    cpu = resources.get("cpu_percent")
    return "" if cpu is None or math.isnan(cpu) else f"{cpu:.1f} %"


def format_memory(resources: dict[str, float]) -> str:
    used = resources.get("memory_bytes")
    if used is None or math.isnan(used):
        return ""
    limit = resources.get("memory_limit_bytes")
    if limit and not math.isnan(limit) and limit < 2**50:
        used_text, limit_text = format_size(int(used)), format_size(int(limit))
        value, _, unit = used_text.partition(" ")
        if limit_text.endswith(f" {unit}"):  # "44.4 / 512.0 MiB": one unit, so it fits the column
            return f"{value} / {limit_text}"
        return f"{used_text} / {limit_text}"
    return format_size(int(used))


class DeploymentTableModel(QAbstractTableModel):
    NAME, MODEL, VERSION, STATE, URL, TARGET, CPU, MEMORY, SINCE = range(9)
    HEADERS = ("Name", "Model", "Version", "State", "URL", "Target", "CPU", "Memory", "Since")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[DeploymentRow] = []

    # -- data in ---------------------------------------------------------------------------------
    def set_listings(self, listings: Sequence[TargetListing]) -> None:
        """Merge the listings of every target (an unreachable target becomes one row with its reason)."""
        self.set_rows(rows_of(listings))

    def set_statuses(self, statuses: list[DeploymentStatus]) -> None:
        """Merge one target's listing (rows keyed by each status' own ``target_url``)."""
        self.set_rows([DeploymentRow(s.target_url, kind_of(s.target_url), s) for s in statuses])

    def set_rows(self, rows: list[DeploymentRow]) -> None:
        """Changed rows are updated in place, new ones appended, gone ones removed."""
        fresh = {r.key: r for r in rows}
        for at in reversed(range(len(self._rows))):
            if self._rows[at].key not in fresh:
                self.beginRemoveRows(QModelIndex(), at, at)
                del self._rows[at]
                self.endRemoveRows()
        known = {r.key: i for i, r in enumerate(self._rows)}
        for key, row in fresh.items():
            at = known.get(key)
            if at is not None and self._rows[at] != row:
                self._rows[at] = row
                self.dataChanged.emit(self.index(at, 0), self.index(at, len(self.HEADERS) - 1))
        new = [r for key, r in fresh.items() if key not in known]
        if new:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self._rows.extend(new)
            self.endInsertRows()

    def row_at(self, row: int) -> DeploymentRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def status_at(self, row: int) -> DeploymentStatus | None:
        r = self.row_at(row)
        return r.status if r is not None else None

    def row_of(self, name: str, target: str | None = None) -> int:
        """Row of deployment ``name`` (on ``target`` if given, else on any target); -1 if absent."""
        return next(
            (
                i
                for i, r in enumerate(self._rows)
                if r.status is not None and r.status.name == name and (target is None or r.target == target)
            ),
            -1,
        )

    def statuses(self) -> list[DeploymentStatus]:
        return [r.status for r in self._rows if r.status is not None]

    def rows(self) -> list[DeploymentRow]:
        return list(self._rows)

    # -- Qt model API ----------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        horizontal = orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole
        return self.HEADERS[section] if horizontal and 0 <= section < len(self.HEADERS) else None

    def _display(self, r: DeploymentRow) -> tuple[str, ...]:
        s = r.status
        if s is None:
            return ("", "", "", "unreachable", r.error or "", target_label(r.target), "", "", "")
        res = r.resources
        return (
            s.name,
            s.model_name or "",
            s.model_version or "",
            s.state,
            s.endpoint or "",
            target_label(r.target),
            format_cpu(res),
            format_memory(res),
            format_since(s.since),
        )

    def _raw(self, r: DeploymentRow, col: int) -> Any:
        s = r.status
        group = f"{KIND_ORDER.get(r.kind, 9)}{r.target}\x00"
        if col == self.TARGET:
            return group + (s.name if s else "")
        if s is None:
            return "" if col != self.STATE else "unreachable"
        if col == self.VERSION:
            return int(s.model_version) if (s.model_version or "").isdigit() else -1
        if col == self.CPU:
            return float(r.resources.get("cpu_percent", -1.0))
        if col == self.MEMORY:
            return float(r.resources.get("memory_bytes", -1.0))
        return (s.name, s.model_name or "", s.model_version or "", s.state, s.endpoint or "", "", 0, 0, s.since or "")[
            col
        ]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        r = self._rows[index.row()]
        s = r.status
        col = index.column()
        if role == ObjectRole:
            return s
        if role == TargetRole:
            return r.target
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r)[col]
        if role == RawRole:
            return self._raw(r, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            if s is None:
                return f"{r.target} could not be asked for its deployments:\n{r.error}"
            if col == self.STATE:
                return s.message or s.state
            if col == self.NAME:
                return f"release {s.release_id or '-'} (previous {s.previous_release_id or '-'})\n{s.target_url}"
            if col == self.URL:
                return s.endpoint
            if col == self.TARGET:
                return f"{r.kind} target {r.target}"
            if col == self.SINCE and s.since:
                return f"{s.state} since {format_since(s.since, seconds=True)} (local time)"
            if col in (self.CPU, self.MEMORY) and r.resources:
                source = "container stats" if r.kind == "docker" else "the runtime's /metrics"
                return f"CPU {format_cpu(r.resources) or '-'}, memory {format_memory(r.resources) or '-'} ({source})"
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.CPU, self.MEMORY):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        state = s.state if s is not None else "unreachable"
        if col == self.STATE and role in (Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.BackgroundRole):
            fg, bg = STATE_COLOURS.get(state, STATE_COLOURS["unknown"])
            return QColor(fg if role == Qt.ItemDataRole.ForegroundRole else bg)
        if s is None and col == self.URL and role == Qt.ItemDataRole.ForegroundRole:
            return QColor(STATE_COLOURS["unreachable"][0])
        return None
