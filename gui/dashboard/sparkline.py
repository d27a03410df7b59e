"""The fleet table's sparklines and health chips, drawn by delegates without the style.

Fifty small ``PlotWidget`` s would each own a scene, a view box and axes; a
delegate draws the same line with one ``drawPolyline`` per run of values and no
widgets at all. NaN (failed scrapes) breaks the line, as in the detail plots.
Text cells keep the style's drawing (~45 µs a cell): a Python delegate drawing
the text itself measured no faster (its per-call overhead ate the difference).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from modeldeck.gui import style
from modeldeck.gui.dashboard.models import SparkRole
from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QPointF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem


def spark_shape(values: np.ndarray, width: int, height: int) -> tuple[list[QPolygonF], list[QPointF]]:
    """The sparkline in a ``width`` x ``height`` box (origin at its top left): one polyline per run of values
    between NaNs (failed scrapes), plus the isolated points between two gaps (a polyline of one point draws nothing).
    Polylines filled straight from numpy: ``drawPolyline`` is ~4x faster than ``drawPath`` of the same line.

    Longer than ``width``, the values become one per pixel column: the peak of its bucket, so spikes stay visible.
    """
    values = np.asarray(values, dtype=float)
    columns = max(2, width)
    if len(values) > columns:
        cut = len(values) - len(values) % columns
        blocks = values[-cut:].reshape(columns, -1)
        peaks = np.where(np.isfinite(blocks), blocks, -np.inf).max(axis=1)
        values = np.where(np.isfinite(peaks), peaks, np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return [], []
    top = max(float(values[finite].max()), 1e-9)
    n = len(values)
    xs = np.arange(n) * (width / max(n - 1, 1))
    ys = height - (np.clip(values, 0, None) / top) * height
    padded = np.concatenate(([False], finite, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # start, end (exclusive) of each run of finite values
    lines, points = [], []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start == 1:
            points.append(QPointF(float(xs[start]), float(ys[start])))
            continue
        line = pg.functions.create_qpolygonf(int(end - start))
        memory = pg.functions.ndarray_from_qpolygonf(line)
        memory[:, 0] = xs[start:end]
        memory[:, 1] = ys[start:end]
        lines.append(line)
    return lines, points


_SELECTED = QStyle.StateFlag.State_Selected
_ALTERNATE = QStyleOptionViewItem.ViewItemFeature.Alternate


def paint_cell_background(painter: QPainter, option: QStyleOptionViewItem) -> None:
    """Selection or alternate-row background only (the style sheet's full item drawing cost ~45 µs a cell).
    Flags are tested with ``in``: ``state & flag`` builds enum objects, ~9 µs a test, a fifth of a cell."""
    if _SELECTED in option.state:
        painter.fillRect(option.rect, option.palette.highlight())
    elif _ALTERNATE in option.features:
        painter.fillRect(option.rect, option.palette.alternateBase())


class HealthChipDelegate(QStyledItemDelegate):
    """OK / DEGRADED / DOWN as a coloured chip (as the Deployments page's states), drawn without the style."""

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        paint_cell_background(painter, option)
        text = index.data(Qt.ItemDataRole.DisplayRole)
        fg = index.data(Qt.ItemDataRole.ForegroundRole)
        bg = index.data(Qt.ItemDataRole.BackgroundRole)
        if not text or fg is None or bg is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(option.font)
        font.setBold(True)
        metrics = QFontMetrics(font)
        rect = option.rect.adjusted(4, 4, 0, -4)
        rect.setWidth(metrics.horizontalAdvance(text) + 16)
        painter.setPen(QPen(QColor(fg).lighter(170), 1))
        painter.setBrush(bg)
        painter.drawRoundedRect(rect, 4, 4)
        painter.setFont(font)
        painter.setPen(fg)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()


class SparklineDelegate(QStyledItemDelegate):
    """The trend column: a polyline per cell, computed once per new sample and cell size."""

    MAX_SHAPES = 1024

    def __init__(self, parent: QObject | None = None, colour: str = style.ACCENT) -> None:
        super().__init__(parent)
        self.pen = QPen(QColor(colour), 1)
        self.pen.setCosmetic(True)
        self.fill = QColor(colour)
        self.fill.setAlpha(28)
        # per row (by the name in its first column): the values it was computed from, the cell size, the shape. A row
        # repainted without a new sample (scrolling, selection, a neighbour's update) redraws the cached path
        # instead of recomputing it (~0.4 ms a row); a new sample replaces the row's entry, so it never grows.
        self._shapes: dict[object, tuple[object, int, int, tuple[list[QPolygonF], list[QPointF]]]] = {}

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return QSize(160, option.fontMetrics.height() + 8)

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        paint_cell_background(painter, option)
        spark = index.data(SparkRole)
        values = getattr(spark, "values", spark)
        if values is None or len(values) < 2:
            return
        rect = option.rect.adjusted(4, 4, -4, -4)
        row = index.siblingAtColumn(0).data()
        cached = self._shapes.get(row)
        if cached is not None and cached[0] is spark and cached[1:3] == (rect.width(), rect.height()):
            shape = cached[3]
        else:
            shape = spark_shape(values, rect.width(), rect.height())
            if row not in self._shapes and len(self._shapes) >= self.MAX_SHAPES:
                self._shapes.clear()  # rows come and go: forget the gone ones now and then
            self._shapes[row] = (spark, rect.width(), rect.height(), shape)
        lines, points = shape
        painter.save()
        painter.translate(rect.left(), rect.top())
        # no antialiasing and a 1 px cosmetic pen: the raster engine's fast path (antialiased it was ~15 ms a row)
        painter.setPen(self.pen)
        for line in lines:
            painter.drawPolyline(line)
        for point in points:
            painter.drawPoint(point)
        painter.restore()
