"""Thin Qt models over the inventory's :class:`Host` values and the outcome of testing them.

:class:`HostTableModel` holds what it is handed (:meth:`set_hosts` merges a fresh listing row by
row; :meth:`set_outcome` updates one row's "Last test" cell) and never reads files or the network.
:class:`HostFilterProxy` filters on every visible column, so typing a group, a label or an
address narrows the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modeldeck.core.inventory.hosts import Host
from modeldeck.core.inventory.probe import HostCheck
from modeldeck.gui import style
from modeldeck.gui.registry.models import ObjectRole, RawRole
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor

Index = QModelIndex | QPersistentModelIndex
_ROOT = QModelIndex()


@dataclass(frozen=True)
class CheckOutcome:
    """The last test of one host, as the table shows it (``state``: testing / ok / warning / failed)."""

    state: str
    text: str
    detail: str = ""
    check: HostCheck | None = None


_STATE_COLOURS = {
    "ok": (style.OK_FG, "#dcfce7"),
    "warning": (style.WARN_FG, style.WARN_BG),
    "failed": (style.ERROR_FG, style.ERROR_BG),
    "testing": (style.MUTED, style.WINDOW),
}


def labels_text(host: Host) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(host.labels.items()))


class HostTableModel(QAbstractTableModel):
    NAME, ADDRESS, USER, GROUPS, LABELS, LAST_TEST = range(6)
    HEADERS = ("Name", "Address", "User", "Groups", "Labels", "Last test")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._hosts: list[Host] = []
        self._outcomes: dict[str, CheckOutcome] = {}

    # -- data in ---------------------------------------------------------------------------------
    def set_hosts(self, hosts: Sequence[Host]) -> None:
        """Merge a fresh listing: changed rows update in place, new ones are appended, gone ones removed."""
        fresh = {h.name: h for h in hosts}
        for row in reversed(range(len(self._hosts))):
            if self._hosts[row].name not in fresh:
                self.beginRemoveRows(_ROOT, row, row)
                gone = self._hosts.pop(row)
                self._outcomes.pop(gone.name, None)
                self.endRemoveRows()
        known = {h.name: i for i, h in enumerate(self._hosts)}
        for name, host in fresh.items():
            at = known.get(name)
            if at is not None and self._hosts[at] != host:
                self._hosts[at] = host
                self.dataChanged.emit(self.index(at, 0), self.index(at, len(self.HEADERS) - 1))
        new = [h for name, h in fresh.items() if name not in known]
        if new:
            first = len(self._hosts)
            self.beginInsertRows(_ROOT, first, first + len(new) - 1)
            self._hosts.extend(new)
            self.endInsertRows()

    def set_outcome(self, name: str, outcome: CheckOutcome) -> None:
        row = self.row_of(name)
        if row < 0:
            return
        self._outcomes[name] = outcome
        cell = self.index(row, self.LAST_TEST)
        self.dataChanged.emit(cell, cell)

    def outcome(self, name: str) -> CheckOutcome | None:
        return self._outcomes.get(name)

    def host_at(self, row: int) -> Host | None:
        return self._hosts[row] if 0 <= row < len(self._hosts) else None

    def row_of(self, name: str) -> int:
        return next((i for i, h in enumerate(self._hosts) if h.name == name), -1)

    def hosts(self) -> list[Host]:
        return list(self._hosts)

    # -- Qt model API ----------------------------------------------------------------------------
    def rowCount(self, parent: Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._hosts)

    def columnCount(self, parent: Index = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        horizontal = orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole
        return self.HEADERS[section] if horizontal and 0 <= section < len(self.HEADERS) else None

    def _cells(self, host: Host) -> tuple[str, ...]:
        outcome = self._outcomes.get(host.name)
        return (
            host.name,
            host.address,
            host.user or "",
            ", ".join(host.groups),
            labels_text(host),
            outcome.text if outcome else "",
        )

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._hosts):
            return None
        col = index.column()
        if not 0 <= col < len(self.HEADERS):
            return None
        host = self._hosts[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, RawRole):
            return self._cells(host)[col]
        if role == ObjectRole:
            return host
        outcome = self._outcomes.get(host.name)
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.LAST_TEST and outcome is not None:
                return outcome.detail or outcome.text
            if col == self.NAME:
                extra = f"\n{len(host.warnings)} import warning(s)" if host.warnings else ""
                return f"source: {host.source}{extra}"
            return None
        if (
            col == self.LAST_TEST
            and outcome is not None
            and role
            in (
                Qt.ItemDataRole.ForegroundRole,
                Qt.ItemDataRole.BackgroundRole,
            )
        ):
            fg, bg = _STATE_COLOURS.get(outcome.state, _STATE_COLOURS["testing"])
            return QColor(fg if role == Qt.ItemDataRole.ForegroundRole else bg)
        if col == self.NAME and role == Qt.ItemDataRole.ForegroundRole and host.warnings:
            return QColor(style.WARN_FG)
        return None


class HostFilterProxy(QSortFilterProxyModel):
    """Case-insensitive substring filter over every column (name, address, user, groups, labels, result)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
        self.setSortRole(RawRole)
