"""The Deployments table: a thin Qt model over :class:`DeploymentStatus` values handed to it.

It never fetches; :meth:`DeploymentTableModel.set_statuses` merges a fresh listing row by
row (``dataChanged`` for changed rows, insert/remove for new and gone ones), so a periodic
refresh keeps the selection and the scroll position.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from modeldeck.core.targets.base import DeploymentStatus
from modeldeck.gui.registry.models import ObjectRole, RawRole
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor

STATE_COLOURS = {
    "running": ("#166534", "#dcfce7"),
    "starting": ("#8a5a00", "#fff7e0"),
    "stopped": ("#616e7c", "#eef1f5"),
    "failed": ("#9b1c1c", "#fdecec"),
    "unknown": ("#8a5a00", "#fff7e0"),
}

Index = QModelIndex | QPersistentModelIndex


def format_since(iso: str | None) -> str:
    """``2026-11-27T14:20:00Z`` -> ``2026-11-27 14:20`` in local time ('' if unknown)."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


class DeploymentTableModel(QAbstractTableModel):
    NAME, MODEL, VERSION, STATE, URL, SINCE = range(6)
    HEADERS = ("Name", "Model", "Version", "State", "URL", "Since")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[DeploymentStatus] = []

    # -- data in ---------------------------------------------------------------------------------
    def set_statuses(self, statuses: list[DeploymentStatus]) -> None:
        """Merge a fresh listing: changed rows are updated in place, new ones appended, gone ones removed."""
        fresh = {s.name: s for s in statuses}
        for row in reversed(range(len(self._rows))):
            if self._rows[row].name not in fresh:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._rows[row]
                self.endRemoveRows()
        known = {s.name: i for i, s in enumerate(self._rows)}
        for name, status in fresh.items():
            at = known.get(name)
            if at is not None and self._rows[at] != status:
                self._rows[at] = status
                self.dataChanged.emit(self.index(at, 0), self.index(at, len(self.HEADERS) - 1))
        new = [s for name, s in fresh.items() if name not in known]
        if new:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            self._rows.extend(new)
            self.endInsertRows()

    def status_at(self, row: int) -> DeploymentStatus | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def row_of(self, name: str) -> int:
        return next((i for i, s in enumerate(self._rows) if s.name == name), -1)

    def statuses(self) -> list[DeploymentStatus]:
        return list(self._rows)

    # -- Qt model API ----------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        horizontal = orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole
        return self.HEADERS[section] if horizontal and 0 <= section < len(self.HEADERS) else None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        s = self._rows[index.row()]
        col = index.column()
        if role == ObjectRole:
            return s
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                s.name,
                s.model_name or "",
                s.model_version or "",
                s.state,
                s.endpoint or "",
                format_since(s.since),
            )[col]
        if role == RawRole:
            if col == self.VERSION:
                return int(s.model_version) if (s.model_version or "").isdigit() else -1
            return (s.name, s.model_name or "", s.model_version or "", s.state, s.endpoint or "", s.since or "")[col]
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.STATE:
                return s.message or s.state
            if col == self.NAME:
                return f"release {s.release_id or '-'} (previous {s.previous_release_id or '-'})\n{s.target_url}"
            if col == self.URL:
                return s.endpoint
            return None
        if col == self.STATE and role in (Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.BackgroundRole):
            fg, bg = STATE_COLOURS.get(s.state, STATE_COLOURS["unknown"])
            return QColor(fg if role == Qt.ItemDataRole.ForegroundRole else bg)
        return None
