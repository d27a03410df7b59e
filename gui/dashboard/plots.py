"""The detail plots: throughput, errors, latency percentiles, CPU and memory of the selected deployments.

A pure view: :meth:`DetailPlots.show_data` takes whole arrays per deployment
(from the ring buffers, the history file or a Prometheus server — the page
decides) and hands each curve to ``setData`` once; nothing here fetches. The x
axes are linked and show wall-clock time; version changes and restarts are
vertical lines with a label; a crosshair follows the mouse and a readout line
above the plots says every curve's value at that time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from modeldeck.core.monitor.collector import MonitorEvent
from modeldeck.gui import style
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QGraphicsItem, QLabel, QVBoxLayout, QWidget

Series = Mapping[str, tuple[np.ndarray, np.ndarray]]

# one colour per deployment, in selection order (colour-blind-friendly, readable on white)
PALETTE = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626")
MARKER_COLOURS = {"version": "#7c3aed", "restart": "#9b1c1c"}


@dataclass(frozen=True)
class Line:
    series: str
    scale: float
    label: str  # '' when the panel has one line per deployment
    style: Qt.PenStyle = Qt.PenStyle.SolidLine
    width: float = 1.0  # wider lines go through Qt's stroker: ~20x slower to draw than the 1 px fast path


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    unit: str
    lines: tuple[Line, ...]
    fmt: str = "{:.1f}"


PANELS = (
    Panel("throughput", "Throughput", "req/s", (Line("request_rate", 1.0, ""),)),
    Panel(
        "errors",
        "Errors",
        "%",
        (Line("error_rate", 100.0, "5xx"), Line("client_error_rate", 100.0, "4xx", Qt.PenStyle.DashLine)),
        "{:.2f}",
    ),
    Panel(
        "latency",
        "Latency",
        "ms",
        (
            Line("latency_p50", 1000.0, "p50", Qt.PenStyle.DotLine),
            Line("latency_p95", 1000.0, "p95", Qt.PenStyle.DashLine),
            Line("latency_p99", 1000.0, "p99"),
        ),
        "{:.2f}",
    ),
    Panel("cpu", "CPU", "%", (Line("cpu_percent", 1.0, ""),), "{:.0f}"),
    Panel("memory", "Resident memory", "MiB", (Line("resident_memory", 1.0 / 2**20, ""),)),
)
PLOTTED_SERIES = tuple(line.series for p in PANELS for line in p.lines)
_PANEL_OF = {line.series: p.key for p in PANELS for line in p.lines}
_SCALE_OF = {line.series: line.scale for p in PANELS for line in p.lines}
# where each panel sits in the grid: (row, column, column span)
_GRID = {"throughput": (0, 0, 1), "errors": (0, 1, 1), "latency": (1, 0, 2), "cpu": (2, 0, 1), "memory": (2, 1, 1)}
_BOTTOM_ROW = frozenset(k for k, (row, _c, _s) in _GRID.items() if row == max(r for r, _c2, _s2 in _GRID.values()))
# A scrolling time range moves its right edge in steps of range/_X_STEPS (10 s for 5 min): between steps the
# view matrix and the axes stay as they are, so their cached pictures are reused and a paint draws only the
# curves (regenerating five date axes' ticks and text every second was ~60 % of each paint).
_X_STEPS = 30
# The panels by grid row: the page redraws one row per tick, so a paint covers a third of the curves (the scene
# repaints only what changed) and an x step re-lays two axes at a time instead of all of them.
PANEL_ROWS: tuple[tuple[str, ...], ...] = tuple(
    tuple(k for k, (row, _c, _s) in _GRID.items() if row == r) for r in sorted({g[0] for g in _GRID.values()})
)
# "Nice" tops of a y range (times a power of ten): the range changes only when the data outgrows it or falls below
# half of it, so the left axes keep their cached pictures instead of re-laying their ticks every second.
_NICE = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0, 9.0, 10.0)


def nice_ceil(value: float) -> float:
    """The smallest of 1, 1.2, 1.4 … 9, 10 times a power of ten that is at least ``value`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in _NICE if m * power >= value * (1 - 1e-12))


def decimate(t: np.ndarray, v: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``max_points`` points that draw like all of them: each bin of consecutive points becomes its
    minimum and maximum (pyqtgraph's "peak" mode), the newest points fill whole bins; an all-NaN bin stays a gap."""
    n, bins = len(t), max(1, max_points // 2)
    if n <= max_points:
        return t, v
    per = -(-n // bins)
    head = n % per
    tb, vb = t[head:].reshape(-1, per), v[head:].reshape(-1, per)
    tt = np.column_stack((tb[:, 0], tb[:, -1])).ravel()
    vv = np.column_stack((np.fmin.reduce(vb, axis=1), np.fmax.reduce(vb, axis=1))).ravel()
    return np.concatenate((t[:head], tt)), np.concatenate((v[:head], vv))


class Curve(pg.PlotCurveItem):
    """A curve that knows its data's extent from :meth:`DetailPlots.show_data`, which computes it once for the y
    range: pyqtgraph would scan the arrays again (``nanmin``/``nanmax`` of both axes) in the next paint."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.extent: tuple[float, float, float, float] | None = None  # x0, x1, y min, y max (NaN: no finite y)
        self.extent_span: tuple[float, float] | None = None  # the time span the data was clipped to
        super().__init__(*args, **kwargs)

    def setData(self, *args: object, **kwargs: object) -> None:
        self.extent = self.extent_span = None
        super().setData(*args, **kwargs)

    def show_points(self, t: np.ndarray, v: np.ndarray, span: tuple[float, float] | None) -> None:
        """``setData`` of what is in view, remembering its extent."""
        self.setData(t, v, connect="finite")
        if len(t):
            self.extent = (float(t[0]), float(t[-1]), float(np.fmin.reduce(v)), float(np.fmax.reduce(v)))
            self.extent_span = span

    def dataBounds(self, ax: int, frac: float = 1.0, orthoRange: object = None) -> tuple[float | None, float | None]:
        extent = self.extent
        if extent is None or frac != 1.0 or orthoRange is not None:
            return super().dataBounds(ax, frac, orthoRange)  # type: ignore[no-any-return]
        lo, hi = extent[:2] if ax == 0 else extent[2:]
        return (None, None) if math.isnan(lo) else (lo, hi)


def value_at(t: np.ndarray, v: np.ndarray, at: float) -> float:
    """The value of the sample nearest to ``at`` (NaN when there is none or it is a gap)."""
    if len(t) == 0:
        return math.nan
    i = int(np.searchsorted(t, at))
    if i >= len(t) or (i > 0 and abs(t[i - 1] - at) <= abs(t[i] - at)):
        i -= 1
    return float(v[i])


_STYLE_KEY = {Qt.PenStyle.SolidLine: "───", Qt.PenStyle.DashLine: "╌╌╌", Qt.PenStyle.DotLine: "┈┈┈"}


def _title(panel: Panel) -> str:
    """Title, unit, and a key of the line styles when a panel has several lines per deployment."""
    title = f"{panel.title} ({panel.unit})"
    if len(panel.lines) > 1:
        key = "&nbsp;&nbsp;".join(f"{_STYLE_KEY[line.style]} {line.label}" for line in panel.lines)
        title += f'&nbsp;&nbsp;&nbsp;<span style="color:{style.MUTED}; font-size:8pt">{key}</span>'
    return title


def _label_opts(colour: str) -> dict[str, object]:
    return {"position": 0.9, "color": colour, "fill": pg.mkBrush(255, 255, 255, 220), "anchors": [(1, 0), (1, 0)]}


class DetailPlots(QWidget):
    """Five linked time plots; ``show_data({deployment: {series: (t, v)}})`` redraws them."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.readout = QLabel("Move the mouse over a plot to read values.")
        self.readout.setProperty("role", "muted")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setWordWrap(True)
        layout.addWidget(self.readout)
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground(style.BASE)
        self.graphics.ci.layout.setSpacing(6)
        layout.addWidget(self.graphics, 1)
        self.range_s: float | None = 300.0  # None: everything retained
        self.names: list[str] = []
        self.plots: dict[str, pg.PlotItem] = {}
        # PlotCurveItems, not PlotDataItems: the latter's clip/downsample/bounds bookkeeping cost ~0.5 ms per
        # setData (16 ms for 32 curves every second); show_data clips to the range and decimates itself
        self.curves: dict[tuple[str, str], Curve] = {}  # (deployment, series)
        self.crosshairs: dict[str, pg.InfiniteLine] = {}
        self.markers: list[tuple[pg.PlotItem, pg.InfiniteLine]] = []
        self._marker_key: tuple[tuple[str, float, str], ...] = ()
        self.crosshair_t: float | None = None
        self._y_shown: dict[str, tuple[float, float]] = {}  # per panel: the y range it shows
        self.last_update_s = 0.0  # seconds the last show_data took (benchmarks read it)
        tick_font = QFont(self.font())
        tick_font.setPointSizeF(max(8.0, self.font().pointSizeF() - 1))
        for panel in PANELS:
            row, col, span = _GRID[panel.key]
            plot = self.graphics.addPlot(row=row, col=col, colspan=span, axisItems={"bottom": pg.DateAxisItem()})
            plot.setTitle(_title(panel), color=style.TEXT, size="10pt")
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setMenuEnabled(False)
            plot.hideButtons()
            plot.getViewBox().setMouseEnabled(x=False, y=False)
            plot.disableAutoRange()  # ranges are set once per redraw (auto-range costs a second paint each time)
            for axis in ("left", "bottom"):
                ax = plot.getAxis(axis)
                # tick labels are re-rendered only when the axis changes (text drawing dominated every paint)
                ax.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
                ax.setTextPen(pg.mkPen(style.MUTED))
                ax.setPen(pg.mkPen(style.BORDER))
                ax.setStyle(tickFont=tick_font)
            plot.getAxis("left").setWidth(48)
            if panel.key not in _BOTTOM_ROW:
                # the x axes are aligned, so time is shown once, under the bottom row: three date axes fewer to
                # regenerate (ticks, text, vertical grid) each time the range steps on
                plot.hideAxis("bottom")
            line = pg.InfiniteLine(
                angle=90, movable=False, pen=pg.mkPen("#9aa5b1", width=1, style=Qt.PenStyle.DashLine)
            )
            line.setVisible(False)
            line.setZValue(50)
            plot.addItem(line, ignoreBounds=True)
            self.crosshairs[panel.key] = line
            self.plots[panel.key] = plot
        self._mouse = pg.SignalProxy(self.graphics.scene().sigMouseMoved, rateLimit=30, slot=self._mouse_moved)

    # -- what to show ---------------------------------------------------------------------------------------------
    def set_range(self, seconds: float | None) -> None:
        """Show the last ``seconds`` (None: everything the data covers)."""
        self.range_s = seconds
        self._y_shown.clear()
        self._apply_range()

    def set_deployments(self, names: Sequence[str]) -> None:
        """Which deployments to overlay (in this order: colours and legend follow it)."""
        names = list(names)
        if names == self.names:
            return
        self.names = names
        self._y_shown.clear()
        for (_name, series), curve in self.curves.items():
            self.plots[_PANEL_OF[series]].removeItem(curve)
        self.curves.clear()
        for panel in PANELS:
            plot = self.plots[panel.key]
            for i, name in enumerate(names):
                colour = QColor(self.colour_of(i))
                for line in panel.lines:
                    pen = pg.mkPen(colour, width=line.width, style=line.style)
                    curve = Curve(pen=pen, connect="finite")
                    plot.addItem(curve)
                    self.curves[(name, line.series)] = curve
        self._marker_key = ()
        self._clear_markers()

    @staticmethod
    def colour_of(position: int) -> str:
        return PALETTE[position % len(PALETTE)]

    def legend_html(self) -> str:
        """The deployments in their colours (one legend for all plots, instead of a box over each)."""
        return "&nbsp;&nbsp;".join(
            f'<span style="color:{self.colour_of(i)}">&#9632;</span>&nbsp;{name}' for i, name in enumerate(self.names)
        )

    def show_data(self, data: Mapping[str, Series], panels: Iterable[str] | None = None) -> None:
        """Redraw from whole arrays ``{deployment: {series: (t, v)}}`` (one ``setData`` per curve); only the
        curves and ranges of ``panels`` (keys of :data:`PANELS`) when given."""
        started = time.perf_counter()
        keys = set(self.plots) if panels is None else set(panels)
        span = self._scrolling_span()
        max_points = 2 * max(100, self.graphics.width())  # a min and a max per pixel column
        for (name, series), curve in self.curves.items():
            if _PANEL_OF[series] not in keys:
                continue
            t, v = data.get(name, {}).get(series, (None, None))
            if t is None or v is None or len(t) == 0:
                curve.setData([], [])
                continue
            if span is not None:  # what is in view, plus one point either side so lines run to the edges
                i, j = np.searchsorted(t, span)
                t, v = t[max(0, i - 1) : j + 1], v[max(0, i - 1) : j + 1]
            t, v = decimate(t, v, max_points)
            curve.show_points(t, v * _SCALE_OF[series], span)
        self._apply_range(keys)
        if self.crosshair_t is not None:
            self.readout.setText(self.describe_at(self.crosshair_t))
        self.last_update_s = time.perf_counter() - started

    def show_markers(self, events: Iterable[MonitorEvent]) -> None:
        """Vertical lines for version changes and restarts (labelled on the top plots only); rebuilt on change."""
        events = [e for e in events if e.kind in MARKER_COLOURS and e.endpoint in self.names]
        key = tuple((e.endpoint, e.at, e.kind) for e in events)
        if key == self._marker_key:
            return
        self._marker_key = key
        self._clear_markers()
        many = len(self.names) > 1
        for e in events:
            colour = MARKER_COLOURS[e.kind]
            text = e.detail.replace(" version ", " v") if e.kind == "version" else "restart"
            if many:
                text = f"{e.endpoint}: {text}"
            for key_, plot in self.plots.items():
                labelled = key_ in ("throughput", "errors")
                line = pg.InfiniteLine(
                    pos=e.at,
                    angle=90,
                    movable=False,
                    pen=pg.mkPen(colour, width=1.2, style=Qt.PenStyle.DashDotLine),
                    label=text if labelled else None,
                    labelOpts=_label_opts(colour) if labelled else None,
                )
                line.setZValue(40)
                plot.addItem(line, ignoreBounds=True)
                self.markers.append((plot, line))

    def marker_labels(self) -> list[str]:
        return [line.label.toPlainText() for _plot, line in self.markers if getattr(line, "label", None) is not None]

    # -- crosshair ------------------------------------------------------------------------------------------------
    def describe_at(self, at: float) -> str:
        """The readout line: every curve's value at time ``at``."""
        parts = [time.strftime("%H:%M:%S", time.localtime(at))]
        for name in self.names:
            values = []
            for panel in PANELS:
                for line in panel.lines:
                    curve = self.curves.get((name, line.series))
                    if curve is None or curve.xData is None:
                        continue
                    value = value_at(curve.xData, curve.yData, at)
                    text = "–" if math.isnan(value) else panel.fmt.format(value)
                    label = line.label or panel.title.lower().replace("resident ", "")
                    unit = panel.unit if panel.unit in ("%", "MiB") else f" {panel.unit}"
                    values.append(f"{label} {text}{unit}")
            parts.append(f"<b>{name}</b>: " + ", ".join(values))
        return "  ·  ".join(parts)

    def crosshair_to(self, at: float) -> str:
        """Put the crosshair at time ``at`` (what the mouse does); returns the readout text."""
        self.crosshair_t = at
        for line in self.crosshairs.values():
            line.setPos(at)
            line.setVisible(True)
        text = self.describe_at(at)
        self.readout.setText(text)
        return text

    def _mouse_moved(self, event: tuple[QPointF]) -> None:
        pos = event[0]
        for plot in self.plots.values():
            if plot.sceneBoundingRect().contains(pos):
                self.crosshair_to(plot.getViewBox().mapSceneToView(pos).x())
                return

    # -- helpers --------------------------------------------------------------------------------------------------
    def x_range(self) -> tuple[float, float]:
        (x0, x1), _ = self.plots["throughput"].getViewBox().viewRange()
        return x0, x1

    def _apply_range(self, keys: set[str] | None = None) -> None:
        # Every plot gets the same range explicitly: pyqtgraph's x-link keeps the pixel scale between views,
        # which misaligns the time axes of plots of different widths (the latency plot spans two columns).
        # Only ``keys``' plots (default: all) — the others follow when their row is redrawn, a tick later.
        if self.range_s is None:
            lo, hi = math.inf, -math.inf
            for curve in self.curves.values():
                if curve.xData is not None and len(curve.xData):
                    lo, hi = min(lo, float(curve.xData[0])), max(hi, float(curve.xData[-1]))
            if not lo < hi:
                return
            pad = 0.01
        else:
            (lo, hi), pad = self._scrolling_span(), 0.0  # type: ignore[misc]
        for key, plot in self.plots.items():
            if keys is not None and key not in keys:
                continue
            plot.setRange(xRange=(lo, hi), yRange=self._y_range(key, lo, hi), padding=0)
            if pad:
                plot.setXRange(lo, hi, padding=pad)
            # apply the new range now: left to the paint, it changes the view matrix there and asks for a
            # second paint of everything
            plot.getViewBox().prepareForPaint()

    def _scrolling_span(self) -> tuple[float, float] | None:
        """The time span of a scrolling range (None for 'everything'), its right edge moved in steps."""
        if self.range_s is None:
            return None
        step = self.range_s / _X_STEPS
        hi = math.ceil(time.time() / step) * step
        return hi - self.range_s, hi

    def _y_range(self, key: str, lo: float, hi: float) -> tuple[float, float]:
        """What the panel's curves reach inside the time span [lo, hi] (from 0, except memory), plus headroom; the
        range shown so far while the data stays inside it and fills at least half of it."""
        wanted = self._y_wanted(key, lo, hi)
        need = wanted  # what the range shown so far must hold to be kept: the data plus some headroom
        if wanted is None:
            fresh = (0.0, 1.0)
        elif key == "memory":  # not from 0: 8 % headroom either side, at least 1 MiB
            pad = max((wanted[1] - wanted[0]) * 0.08, 1.0)
            fresh = (wanted[0] - pad, wanted[1] + pad)
            need = (wanted[0] - pad / 2, wanted[1] + pad / 2)
        else:
            fresh = (0.0, nice_ceil(wanted[1] * 1.05) if wanted[1] > 0 else 1.0)
            need = (wanted[0], wanted[1] * 1.05)  # a line drawn on the top border is hard to read
        shown = self._y_shown.get(key)
        if (
            shown is None
            or need is None
            or not shown[0] <= need[0] <= need[1] <= shown[1]
            or (fresh[1] - fresh[0]) * 2 < shown[1] - shown[0]
        ):
            shown = fresh
        self._y_shown[key] = shown
        return shown

    def _y_wanted(self, key: str, lo: float, hi: float) -> tuple[float, float] | None:
        """What the panel's curves reach inside the time span [lo, hi] (from 0, except memory); None: nothing."""
        top, bottom = -math.inf, math.inf
        for (_name, series), curve in self.curves.items():
            if _PANEL_OF[series] != key or curve.xData is None or not len(curve.xData):
                continue
            extent = curve.extent
            if (
                extent is not None
                and curve.extent_span == (None if self.range_s is None else (lo, hi))
                and (math.isnan(extent[2]) or math.isfinite(extent[2] + extent[3]))
            ):
                # show_data clipped the curve to this span: its extent is what is visible (NaN: nothing finite)
                if not math.isnan(extent[2]):
                    top, bottom = max(top, extent[3]), min(bottom, extent[2])
                continue
            i, j = np.searchsorted(curve.xData, (lo, hi))
            visible = curve.yData[max(0, i - 1) : j + 1]
            visible = visible[np.isfinite(visible)]
            if visible.size:
                top, bottom = max(top, float(visible.max())), min(bottom, float(visible.min()))
        if not math.isfinite(top):
            return None
        return (bottom if key == "memory" else 0.0, top)

    def _clear_markers(self) -> None:
        for plot, line in self.markers:
            plot.removeItem(line)
        self.markers.clear()
