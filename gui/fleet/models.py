"""Thin Qt models of the "Deploy to hosts" dialog: which hosts are chosen, and how each one is doing.

Both hold data handed to them and never fetch. :class:`HostProgressModel` takes batches of
core :class:`ProgressEvent` s (drained by the dialog's timer) and emits one ``dataChanged``
per batch, not one per event; results replace a row's live state when they arrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from modeldeck.core.inventory.hosts import Host
from modeldeck.core.targets.base import ProgressEvent
from modeldeck.core.targets.fleet import HostPlan, HostResult
from modeldeck.gui import style
from modeldeck.gui.registry.models import ObjectRole, RawRole
from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor

Index = QModelIndex | QPersistentModelIndex
ProgressRole = Qt.ItemDataRole.UserRole + 30  # 0..1000 for the progress bar delegate, or -1 if unknown

OUTCOME_COLOURS = {
    "deployed": (style.OK_FG, "#dcfce7"),
    "already-installed": (style.OK_FG, "#dcfce7"),
    "rolled-back": (style.OK_FG, "#dcfce7"),
    "failed (rolled back)": (style.ERROR_FG, style.ERROR_BG),
    "failed": (style.ERROR_FG, style.ERROR_BG),
    "timed out": (style.ERROR_FG, style.ERROR_BG),
    "cancelled": (style.WARN_FG, style.WARN_BG),
    "can deploy": (style.OK_FG, "#dcfce7"),
    "cannot deploy": (style.ERROR_FG, style.ERROR_BG),
    "not started": (style.MUTED, "#eef1f5"),
    "skipped": (style.MUTED, "#eef1f5"),
}


def host_labels(host: Host) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(host.labels.items()))


class HostChoiceModel(QAbstractTableModel):
    """Inventory hosts with a check box each: Name (checkable), Address, Groups, Labels."""

    COLUMNS = ("Host", "Address", "Groups", "Labels")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._hosts: list[Host] = []
        self._checked: set[str] = set()

    def set_hosts(self, hosts: Sequence[Host], checked: Iterable[str] = ()) -> None:
        self.beginResetModel()
        self._hosts = list(hosts)
        names = {h.name for h in self._hosts}
        self._checked = {n for n in checked if n in names}
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._hosts)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 0:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._hosts):
            return None
        host = self._hosts[index.row()]
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, RawRole):
            return (host.name, host.address, ", ".join(host.groups), host_labels(host))[col]
        if role == Qt.ItemDataRole.CheckStateRole and col == 0:
            return Qt.CheckState.Checked if host.name in self._checked else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = f"{host.name}: {host.user + '@' if host.user else ''}{host.address}"
            if host.proxy_jump:
                tip += f" via {host.proxy_jump}"
            return tip
        if role == ObjectRole:
            return host
        return None

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or index.column() != 0 or role != Qt.ItemDataRole.CheckStateRole:
            return False
        name = self._hosts[index.row()].name
        if Qt.CheckState(value) == Qt.CheckState.Checked:
            self._checked.add(name)
        else:
            self._checked.discard(name)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.CheckStateRole])
        return True

    def set_checked(self, names: Iterable[str], checked: bool = True) -> None:
        """Check (or uncheck) these hosts; one ``dataChanged`` for the column."""
        names = set(names)
        if checked:
            self._checked |= names
        else:
            self._checked -= names
        if self._hosts:
            self.dataChanged.emit(
                self.index(0, 0), self.index(len(self._hosts) - 1, 0), [Qt.ItemDataRole.CheckStateRole]
            )

    def checked_hosts(self) -> list[Host]:
        return [h for h in self._hosts if h.name in self._checked]

    def hosts(self) -> list[Host]:
        return list(self._hosts)


class HostFilterProxy(QSortFilterProxyModel):
    """Filters hosts by text over name, address, groups and labels (case-insensitive)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setFilterKeyColumn(-1)
        self.setSortRole(RawRole)


@dataclass(frozen=True)
class HostRow:
    """Live state of one host in a run."""

    host: str
    step: str = "queued"
    fraction: float | None = 0.0
    message: str = ""
    outcome: str = ""
    duration_s: float | None = None
    release: str = ""
    result: HostResult | None = None


class HostProgressModel(QAbstractTableModel):
    """Per-host progress: Host, Progress (bar), Step, Outcome, Release, Duration, Message."""

    COLUMNS = ("Host", "Progress", "Step", "Outcome", "Release", "Duration", "Message")
    PROGRESS_COLUMN = 1

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[HostRow] = []
        self._index: dict[str, int] = {}

    def start(self, hosts: Sequence[str]) -> None:
        """A new run over ``hosts`` (one row each, queued)."""
        self.beginResetModel()
        self._rows = [HostRow(h) for h in hosts]
        self._index = {h: i for i, h in enumerate(hosts)}
        self.endResetModel()

    def apply_events(self, events: Sequence[ProgressEvent]) -> None:
        """Fold a batch of events into the rows; one ``dataChanged`` over the touched range."""
        touched: list[int] = []
        for event in events:
            i = self._index.get(event.host or "")
            if i is None:
                continue
            row = self._rows[i]
            if row.result is not None:  # the final result wins over late events
                continue
            # "done" says the host's run ended, not how far it got: the bar shows that from the result
            if event.fraction is None or event.step == "done":
                fraction = row.fraction
            else:
                fraction = max(event.fraction, row.fraction or 0.0)
            self._rows[i] = replace(row, step=event.step, fraction=fraction, message=event.message)
            touched.append(i)
        if touched:
            self.dataChanged.emit(self.index(min(touched), 0), self.index(max(touched), len(self.COLUMNS) - 1))

    def apply_results(self, results: Sequence[HostResult]) -> None:
        touched: list[int] = []
        for r in results:
            i = self._index.get(r.host)
            if i is None:
                continue
            untouched = r.outcome in ("not started", "skipped")
            self._rows[i] = HostRow(
                r.host,
                step="done",
                fraction=1.0 if r.ok else 0.0 if untouched else self._rows[i].fraction,
                message=r.message,
                outcome=r.outcome,
                duration_s=None if untouched else r.duration_s,
                release=r.release_id or "",
                result=r,
            )
            touched.append(i)
        if touched:
            self.dataChanged.emit(self.index(min(touched), 0), self.index(max(touched), len(self.COLUMNS) - 1))

    def apply_plans(self, plans: Sequence[HostPlan]) -> None:
        """A preview's answer per host: "can deploy" with what it would do, or "cannot deploy" and why
        (not "queued": nothing runs after a preview)."""
        touched: list[int] = []
        for hp in plans:
            i = self._index.get(hp.host)
            if i is None:
                continue
            if hp.plan is None:
                row = HostRow(hp.host, step="previewed", fraction=None, message=hp.error or "", outcome="cannot deploy")
            else:
                steps = "; ".join(step.description for step in hp.plan.steps)
                row = HostRow(hp.host, step="previewed", fraction=None, message=steps, outcome="can deploy")
            self._rows[i] = row
            touched.append(i)
        if touched:
            self.dataChanged.emit(self.index(min(touched), 0), self.index(max(touched), len(self.COLUMNS) - 1))

    def rows(self) -> list[HostRow]:
        return list(self._rows)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == self.PROGRESS_COLUMN:
                return "" if row.fraction is None else f"{row.fraction * 100:.0f} %"
            duration = f"{row.duration_s:.1f} s" if row.duration_s is not None else ""
            return (row.host, None, row.step, row.outcome, row.release, duration, row.message)[col]
        if role == RawRole:
            raw = (row.host, row.fraction, row.step, row.outcome, row.release, row.duration_s, row.message)
            return raw[col]
        if role == ProgressRole and col == self.PROGRESS_COLUMN:
            if row.step == "previewed":  # nothing runs: no bar (an unknown fraction would paint a busy one)
                return None
            return -1 if row.fraction is None else int(row.fraction * 1000)
        if role == Qt.ItemDataRole.ToolTipRole and col in (3, 6):
            return row.message or None
        if role == Qt.ItemDataRole.ToolTipRole and col == 4:
            return row.release or None
        if role in (Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.BackgroundRole) and col == 3 and row.outcome:
            colours = OUTCOME_COLOURS.get(row.outcome)
            if colours is None:
                return None
            return QColor(colours[0] if role == Qt.ItemDataRole.ForegroundRole else colours[1])
        if role == ObjectRole:
            return row
        return None
