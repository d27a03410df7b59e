"""Qt item models over the registry dataclasses: they hold what they are given, they never fetch.

Paging: :class:`VersionTableModel` answers ``canFetchMore`` from the last page's
``next_token`` and, on ``fetchMore``, only emits :attr:`VersionTableModel.moreRequested`;
the page widget fetches in a worker and hands the result to :meth:`append_page`
(``beginInsertRows``), so thousands of versions arrive in smooth steps.
"""

from __future__ import annotations

import functools
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
from PySide6.QtGui import QColor, QFont, QStandardItem, QStandardItemModel

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


@functools.cache
def _brushes() -> dict[str, Any]:
    """Colours and fonts the models hand out, made once (after the QApplication exists)."""
    bold = QFont()
    bold.setBold(True)
    return {"alias": QColor(style.ALIAS_FG), "warn": QColor(style.WARN_FG), "muted": QColor(style.MUTED), "bold": bold}


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
            # champion first: it is what the model list is scanned for
            ordered = sorted(model.aliases.items(), key=lambda kv: (kv[0] != "champion", kv[0]))
            parts.append(", ".join(f"@{a} v{v}" for a, v in ordered))
        return " · ".join(parts)


class VersionTableModel(QStandardItemModel):
    """Versions of one model, newest first, plus one metric column chosen by the user.

    A :class:`QStandardItemModel` on purpose: cells are filled once per page from Python, then
    painting, sorting and scrolling through thousands of rows run in C++ without calling back
    into Python (each such call needs the GIL, which the workers loading the next page hold
    much of the time — with a Python ``data()`` scrolling 1,500 versions stalled for 100s of ms).
    """

    moreRequested = Signal(object)  # the opaque next_token (MLflow's sqlite store hands out bytes)

    VERSION, ALIASES, METRIC, CREATED, STATUS, RUN, TAGS = range(7)
    HEADERS = ("Version", "Aliases", "Metric", "Created", "Status", "Run", "Tags")

    def __init__(self, parent: Any = None) -> None:
        super().__init__(0, len(self.HEADERS), parent)
        self.setHorizontalHeaderLabels(list(self.HEADERS))
        metric_header = self.horizontalHeaderItem(self.METRIC)
        metric_header.setToolTip("Metric of the version's source run — choose which one above the table")
        self._rows: list[ModelVersion] = []
        self._next_token: object | None = None
        self._fetching = False
        self.metric_name: str | None = None
        self._metrics: dict[str, dict[str, float]] = {}  # run_id -> metrics
        # Set by the sort proxy: +inf when sorting ascending, -inf descending, so missing values go last.
        self.missing_metric_sorts_as = math.inf

    # -- data handed in ---------------------------------------------------------------------------
    def reset(self, page: Page[ModelVersion] | None = None) -> None:
        self.beginResetModel()
        blocked = self.blockSignals(True)  # one modelReset instead of a signal per row
        try:
            self.setRowCount(0)
            self._rows = []
            for v in page.items if page else ():
                self._append(v)
        finally:
            self.blockSignals(blocked)
        self._next_token = page.next_token if page else None
        self._fetching = False
        self.endResetModel()

    def append_page(self, page: Page[ModelVersion]) -> None:
        """Add the page's versions and take its ``next_token``: the fetch is over."""
        self.append_versions(page.items)
        self._fetching = False
        self._next_token = page.next_token

    def append_versions(self, versions: Sequence[ModelVersion]) -> None:
        """Add part of a page (the page widget feeds big pages in slices so painting can interleave)."""
        known = {v.version for v in self._rows}
        for v in versions:
            if v.version not in known:
                self._append(v)

    def _append(self, v: ModelVersion) -> None:
        texts = self._texts(v)
        raws: tuple[Any, ...] = (
            _version_number(v.version),
            texts[self.ALIASES].lower(),
            self._metric_raw(v),
            v.creation_time,
            texts[self.STATUS].lower(),
            texts[self.RUN].lower(),
            texts[self.TAGS].lower(),
        )
        b = _brushes()
        items = []
        for text, raw in zip(texts, raws, strict=True):
            item = QStandardItem(text)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            item.setData(raw, RawRole)
            item.setData(v, ObjectRole)
            items.append(item)
        for col in (self.VERSION, self.METRIC):
            items[col].setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if v.aliases:
            items[self.ALIASES].setForeground(b["alias"])
            items[self.ALIASES].setFont(b["bold"])
        if v.status != "READY":
            items[self.STATUS].setForeground(b["warn"])
        items[self.RUN].setForeground(b["muted"])
        items[self.RUN].setToolTip(v.run_id or "no source run")
        run = f"source run {v.run_id}" if v.run_id else "no source run"
        items[self.VERSION].setToolTip(f"{v.description}\n{run}" if v.description else run)
        items[self.CREATED].setForeground(b["muted"])
        if v.tags:
            items[self.TAGS].setToolTip("\n".join(f"{k} = {val}" for k, val in sorted(v.tags.items())))
        self.appendRow(items)
        self._rows.append(v)

    def fetch_failed(self) -> None:
        """Let the view ask again later (e.g. after the user pressed Retry)."""
        self._fetching = False

    def set_metrics(self, metrics: dict[str, dict[str, float]]) -> None:
        """Merge run metrics; only the rows of those runs are rewritten (pages arrive one by one)."""
        rows = self.merge_metrics(metrics)
        if rows:
            self._refresh_metric_column(rows)

    def merge_metrics(self, metrics: dict[str, dict[str, float]]) -> list[int]:
        """Store run metrics without touching cells; returns the rows to pass to :meth:`refresh_metric_rows`."""
        self._metrics.update(metrics)
        return [r for r, v in enumerate(self._rows) if v.run_id in metrics]

    def refresh_metric_rows(self, rows: list[int]) -> None:
        """Rewrite the metric cells of ``rows`` (callers slice big updates so painting can interleave)."""
        rows = [r for r in rows if r < len(self._rows)]
        if rows:
            self._refresh_metric_column(rows)

    def set_metric_name(self, name: str | None) -> None:
        self.metric_name = name or None
        self.horizontalHeaderItem(self.METRIC).setText(self.metric_name or "Metric")
        self._refresh_metric_column()

    def set_missing_metric_sort(self, value: float) -> None:
        if value != self.missing_metric_sorts_as:
            self.missing_metric_sorts_as = value
            self._refresh_metric_column()

    def _refresh_metric_column(self, rows: list[int] | None = None) -> None:
        """Rewrite metric cells with signals blocked, then announce one dataChanged for the span."""
        if not self._rows:
            return
        rows = list(range(len(self._rows))) if rows is None else rows
        if not rows:
            return
        blocked = self.blockSignals(True)
        try:
            for row in rows:
                v = self._rows[row]
                item = self.item(row, self.METRIC)
                item.setText(format_number(self._metric(v)))
                item.setData(self._metric_raw(v), RawRole)
        finally:
            self.blockSignals(blocked)
        self.dataChanged.emit(self.index(min(rows), self.METRIC), self.index(max(rows), self.METRIC))

    def metric_names(self) -> list[str]:
        """Metrics of the runs behind the loaded versions (the cache also holds other models' runs)."""
        return sorted({k for v in self._rows if v.run_id for k in self._metrics.get(v.run_id, {})})

    def versions(self) -> list[ModelVersion]:
        return list(self._rows)

    def version_at(self, row: int) -> ModelVersion:
        return self._rows[row]

    def row_of(self, version: str) -> int:
        return next((i for i, v in enumerate(self._rows) if v.version == version), -1)

    @property
    def next_token(self) -> object | None:
        return self._next_token

    # -- paging (the only Python the view calls while scrolling) --------------------------------
    def canFetchMore(self, parent: AnyIndex = _ROOT) -> bool:
        return not parent.isValid() and self._next_token is not None and not self._fetching

    def fetchMore(self, parent: AnyIndex = _ROOT) -> None:
        if self.canFetchMore(parent):
            self._fetching = True
            self.moreRequested.emit(self._next_token)

    # -- cell contents ----------------------------------------------------------------------------
    def _metric(self, v: ModelVersion) -> float | None:
        if not self.metric_name or not v.run_id:
            return None
        return self._metrics.get(v.run_id, {}).get(self.metric_name)

    def _metric_raw(self, v: ModelVersion) -> float:
        value = self._metric(v)
        return self.missing_metric_sorts_as if value is None else float(value)

    def _texts(self, v: ModelVersion) -> list[str]:
        return [
            v.version,
            "  ".join(f"@{a}" for a in v.aliases),
            format_number(self._metric(v)),
            format_time(v.creation_time),
            v.status.replace("_", " ").title(),
            (v.run_id or "")[:8],
            ", ".join(f"{k}={val}" for k, val in sorted(v.tags.items())),
        ]


class ModelFilterProxy(QSortFilterProxyModel):
    """Case-insensitive substring filter on the model name."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setSortRole(RawRole)


class VersionSortProxy(QSortFilterProxyModel):
    """Sorts on :data:`RawRole`: versions numerically, dates by time, metrics as numbers (missing ones last).

    No Python ``lessThan``: the source model answers RawRole with plain ints/floats/strings that Qt
    compares in C++, which keeps sorting and paging in 2,000 versions cheap. Missing metrics sort
    last in either direction because :meth:`sort` tells the source which sentinel to use.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setSortRole(RawRole)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        source = self.sourceModel()
        if isinstance(source, VersionTableModel):
            source.set_missing_metric_sort(math.inf if order == Qt.SortOrder.AscendingOrder else -math.inf)
        super().sort(column, order)


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
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._headers[section] if 0 <= section < len(self._headers) else None
        if role == Qt.ItemDataRole.TextAlignmentRole:  # numbers and their headers line up on the right
            side = Qt.AlignmentFlag.AlignRight if section in self._align_right else Qt.AlignmentFlag.AlignLeft
            return int(side | Qt.AlignmentFlag.AlignVCenter)
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
