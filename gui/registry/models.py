"""Qt item models over the registry dataclasses: they hold what they are given, they never fetch.

Paging: :class:`VersionTableModel` answers ``canFetchMore`` from the last page's
``next_token`` and, on ``fetchMore``, only emits :attr:`VersionTableModel.moreRequested`;
the page widget fetches in a worker and hands the result to :meth:`append_page`
(``beginInsertRows``), so thousands of versions arrive in smooth steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modeldeck.core.registry.types import ModelVersion, Page, RegisteredModel
from modeldeck.gui import style
from PySide6.QtCore import (
    QAbstractListModel,
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont

RawRole = Qt.ItemDataRole.UserRole + 1  # the value to sort by (int, float, None)
ObjectRole = Qt.ItemDataRole.UserRole + 2  # the dataclass behind the row
SubtitleRole = Qt.ItemDataRole.UserRole + 3  # second line in the model list

AnyIndex = QModelIndex | QPersistentModelIndex
_ROOT = QModelIndex()


def format_time(ms: int | None) -> str:
    """Local time, minutes precision — what people compare when they scan a list of versions."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def format_number(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e12):
        return str(int(value))
    return f"{value:.6g}" if abs(value) >= 1e-3 else f"{value:.4e}"


def format_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _version_number(version: str) -> int | str:
    return int(version) if version.isdigit() else version


class RegisteredModelListModel(QAbstractListModel):
    """The models of a registry: name, with "N versions · aliases" as a subtitle."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._items: list[RegisteredModel] = []

    def set_models(self, models: Sequence[RegisteredModel]) -> None:
        self.beginResetModel()
        self._items = list(models)
        self.endResetModel()

    def models(self) -> list[RegisteredModel]:
        return list(self._items)

    def row_of(self, name: str) -> int:
        return next((i for i, m in enumerate(self._items) if m.name == name), -1)

    def rowCount(self, parent: AnyIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._items)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._items):
            return None
        model = self._items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return model.name
        if role == SubtitleRole:
            return self.subtitle(model)
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [model.name]
            if model.description:
                lines.append(model.description)
            lines.append(self.subtitle(model))
            return "\n".join(lines)
        if role == RawRole:
            return model.name.lower()
        if role == ObjectRole:
            return model
        return None

    @staticmethod
    def subtitle(model: RegisteredModel) -> str:
        parts = [f"latest v{model.latest_version}" if model.latest_version else "no versions"]
        if model.aliases:
            parts.append(", ".join(f"@{a} v{v}" for a, v in sorted(model.aliases.items())))
        return " · ".join(parts)


class VersionTableModel(QAbstractTableModel):
    """Versions of one model, newest first, plus one metric column chosen by the user."""

    moreRequested = Signal(object)  # the opaque next_token (MLflow's sqlite store hands out bytes)

    VERSION, ALIASES, METRIC, CREATED, STATUS, RUN, TAGS = range(7)
    HEADERS = ("Version", "Aliases", "Metric", "Created", "Status", "Run", "Tags")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[ModelVersion] = []
        self._next_token: object | None = None
        self._fetching = False
        self.metric_name: str | None = None
        self._metrics: dict[str, dict[str, float]] = {}  # run_id -> metrics

    # -- data handed in ---------------------------------------------------------------------------
    def reset(self, page: Page[ModelVersion] | None = None) -> None:
        self.beginResetModel()
        self._rows = list(page.items) if page else []
        self._next_token = page.next_token if page else None
        self._fetching = False
        self.endResetModel()

    def append_page(self, page: Page[ModelVersion]) -> None:
        self._fetching = False
        known = {v.version for v in self._rows}
        new = [v for v in page.items if v.version not in known]
        if new:
            first = len(self._rows)
            self.beginInsertRows(_ROOT, first, first + len(new) - 1)
            self._rows.extend(new)
            self.endInsertRows()
        self._next_token = page.next_token

    def fetch_failed(self) -> None:
        """Let the view ask again later (e.g. after the user pressed Retry)."""
        self._fetching = False

    def set_metrics(self, metrics: dict[str, dict[str, float]]) -> None:
        self._metrics.update(metrics)
        self._metric_column_changed()

    def set_metric_name(self, name: str | None) -> None:
        self.metric_name = name or None
        self.headerDataChanged.emit(Qt.Orientation.Horizontal, self.METRIC, self.METRIC)
        self._metric_column_changed()

    def _metric_column_changed(self) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, self.METRIC), self.index(len(self._rows) - 1, self.METRIC))

    def metric_names(self) -> list[str]:
        return sorted({k for m in self._metrics.values() for k in m})

    def versions(self) -> list[ModelVersion]:
        return list(self._rows)

    def version_at(self, row: int) -> ModelVersion:
        return self._rows[row]

    def row_of(self, version: str) -> int:
        return next((i for i, v in enumerate(self._rows) if v.version == version), -1)

    @property
    def next_token(self) -> object | None:
        return self._next_token

    # -- Qt model API -----------------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def canFetchMore(self, parent: AnyIndex = _ROOT) -> bool:
        return not parent.isValid() and self._next_token is not None and not self._fetching

    def fetchMore(self, parent: AnyIndex = _ROOT) -> None:
        if self.canFetchMore(parent):
            self._fetching = True
            assert self._next_token is not None
            self.moreRequested.emit(self._next_token)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.HEADERS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            if section == self.METRIC:
                return self.metric_name or "Metric"
            return self.HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole and section == self.METRIC:
            return "Metric of the version's source run — choose which one above the table"
        return None

    def _metric(self, v: ModelVersion) -> float | None:
        if not self.metric_name or not v.run_id:
            return None
        return self._metrics.get(v.run_id, {}).get(self.metric_name)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        v, col = self._rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(v, col)
        if role == RawRole:
            return self._raw(v, col)
        if role == ObjectRole:
            return v
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == self.TAGS and v.tags:
                return "\n".join(f"{k} = {val}" for k, val in sorted(v.tags.items()))
            if col == self.RUN:
                return v.run_id or "no source run"
            if col == self.VERSION and v.description:
                return v.description
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (self.VERSION, self.METRIC):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == self.ALIASES and v.aliases:
                return QColor(style.ALIAS_FG)
            if col == self.STATUS and v.status != "READY":
                return QColor(style.WARN_FG)
            if col in (self.RUN, self.CREATED):
                return QColor(style.MUTED)
        if role == Qt.ItemDataRole.FontRole and col == self.ALIASES and v.aliases:
            font = QFont()
            font.setBold(True)
            return font
        return None

    def _display(self, v: ModelVersion, col: int) -> str:
        if col == self.VERSION:
            return v.version
        if col == self.CREATED:
            return format_time(v.creation_time)
        if col == self.STATUS:
            return v.status.replace("_", " ").title()
        if col == self.ALIASES:
            return "  ".join(f"@{a}" for a in v.aliases)
        if col == self.METRIC:
            return format_number(self._metric(v))
        if col == self.TAGS:
            return ", ".join(f"{k}={val}" for k, val in sorted(v.tags.items()))
        if col == self.RUN:
            return (v.run_id or "")[:8]
        return ""

    def _raw(self, v: ModelVersion, col: int) -> Any:
        if col == self.VERSION:
            return _version_number(v.version)
        if col == self.CREATED:
            return v.creation_time
        if col == self.METRIC:
            return self._metric(v)
        return self._display(v, col).lower()


class ModelFilterProxy(QSortFilterProxyModel):
    """Case-insensitive substring filter on the model name."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setSortRole(RawRole)


class VersionSortProxy(QSortFilterProxyModel):
    """Sorts on :data:`RawRole`: versions numerically, dates by time, metrics as numbers (missing ones last)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(RawRole)

    def lessThan(self, left: AnyIndex, right: AnyIndex) -> bool:
        a, b = left.data(RawRole), right.data(RawRole)
        if a is None or b is None:
            # Missing values sort after present ones in either direction.
            descending = self.sortOrder() == Qt.SortOrder.DescendingOrder
            if a is None and b is None:
                return False
            return (a is None) == descending
        if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return str(a) < str(b)
        return bool(a < b)


class RowsModel(QAbstractTableModel):
    """A read-only table of plain rows (signature columns, metrics, params, comparisons).

    ``highlight`` marks rows (e.g. changed values in a comparison) with a background colour.
    """

    def __init__(self, headers: Sequence[str], parent: Any = None) -> None:
        super().__init__(parent)
        self._headers = list(headers)
        self._rows: list[tuple[Any, ...]] = []
        self._raw: list[tuple[Any, ...]] = []
        self._highlight: set[int] = set()
        self._align_right: set[int] = set()

    def set_rows(
        self,
        rows: Sequence[Sequence[Any]],
        *,
        raw: Sequence[Sequence[Any]] | None = None,
        highlight: set[int] | None = None,
        align_right: set[int] | None = None,
    ) -> None:
        self.beginResetModel()
        self._rows = [tuple("" if c is None else str(c) for c in r) for r in rows]
        self._raw = [tuple(r) for r in (raw if raw is not None else rows)]
        self._highlight = set(highlight or ())
        self._align_right = set(align_right or ())
        self.endResetModel()

    def rowCount(self, parent: AnyIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._headers)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self._headers[section] if 0 <= section < len(self._headers) else None
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row, col = index.row(), index.column()
        if not 0 <= col < len(self._headers):
            return None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self._rows[row][col] if col < len(self._rows[row]) else ""
        if role == RawRole:
            return self._raw[row][col] if col < len(self._raw[row]) else None
        if role == Qt.ItemDataRole.BackgroundRole and row in self._highlight:
            return QColor(style.CHANGED_BG)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in self._align_right:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def cell(self, row: int, col: int) -> str:
        return self._rows[row][col]

    def highlighted_rows(self) -> set[int]:
        return set(self._highlight)
