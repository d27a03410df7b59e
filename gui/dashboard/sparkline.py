"""A sparkline painted by a delegate: one polyline per cell from the ring buffer's values.

Fifty small ``PlotWidget`` s would each own a scene, a view box and axes; a
delegate draws the same line with one ``drawPolyline`` per visible row and no
widgets at all. NaN (failed scrapes) breaks the line, as in the detail plots.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from modeldeck.gui import style
from modeldeck.gui.dashboard.models import SparkRole
from PySide6.QtCore import QModelIndex, QObject, QPersistentModelIndex, QPointF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem


def _segments(values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x index, value) runs between NaNs."""
    finite = np.isfinite(values)
    if not finite.any():
        return []
    idx = np.arange(len(values))
    breaks = np.flatnonzero(np.diff(finite.astype(np.int8)) != 0) + 1
    out = []
    for part_idx, part_ok in zip(np.split(idx, breaks), np.split(finite, breaks), strict=True):
        if part_ok[0]:
            out.append((part_idx, values[part_idx]))
    return out


def paint_cell_background(painter: QPainter, option: QStyleOptionViewItem) -> None:
    """Selection or alternate-row background only: the style sheet's full item drawing cost ~1 ms a cell."""
    if option.state & QStyle.StateFlag.State_Selected:
        painter.fillRect(option.rect, option.palette.highlight())
    elif option.features & QStyleOptionViewItem.ViewItemFeature.Alternate:
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
    def __init__(self, parent: QObject | None = None, colour: str = style.ACCENT) -> None:
        super().__init__(parent)
        self.pen = QPen(QColor(colour), 1)
        self.pen.setCosmetic(True)
        self.fill = QColor(colour)
        self.fill.setAlpha(28)

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
        values = np.asarray(values, dtype=float)
        rect = option.rect.adjusted(4, 4, -4, -4)
        columns = max(2, rect.width())
        if len(values) > columns:  # one point per pixel column: the peak of its bucket (spikes stay visible)
            cut = len(values) - len(values) % columns
            blocks = values[-cut:].reshape(columns, -1)
            peaks = np.where(np.isfinite(blocks), blocks, -np.inf).max(axis=1)
            values = np.where(np.isfinite(peaks), peaks, np.nan)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return
        top = max(float(finite.max()), 1e-9)
        n = len(values)
        x0, w, y0, h = rect.left(), rect.width(), rect.bottom(), rect.height()
        painter.save()
        # no antialiasing and a 1 px cosmetic pen: the raster engine's fast path (antialiased it was ~15 ms a row)
        painter.setPen(self.pen)
        for xs, ys in _segments(values):
            px = x0 + xs * (w / max(n - 1, 1))
            py = y0 - (np.clip(ys, 0, None) / top) * h
            if len(xs) > 1:
                painter.drawPath(pg.arrayToQPath(px, py))
            else:
                painter.drawPoint(QPointF(float(px[0]), float(py[0])))
        painter.restore()
