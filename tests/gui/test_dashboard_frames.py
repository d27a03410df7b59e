"""What keeps the Monitor page's frames short and its memory flat: sparklines drawn from a cached shape until a
new sample arrives, a drain tick that redraws the plots leaving its rows to the next slice, plots redrawn a row of
panels per tick with y ranges that stay put, one re-sort per update, and bounded records; and the health chip's word."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest
from modeldeck.core.monitor.collector import Sample
from modeldeck.core.monitor.config import MonitorConfig
from modeldeck.core.monitor.derive import SERIES, Derived
from modeldeck.core.monitor.health import HealthState, HealthStatus
from modeldeck.gui.dashboard import sparkline
from modeldeck.gui.dashboard.models import FleetModel, FleetRow
from modeldeck.gui.dashboard.page import UPDATE_TIMES_KEPT, MonitorPage
from modeldeck.gui.dashboard.plots import PANEL_ROWS, DetailPlots, nice_ceil
from modeldeck.gui.dashboard.source import Monitored, MonitorSource
from modeldeck.gui.workers import wait_for_workers
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QStyleOptionViewItem
from pytestqt.qtbot import QtBot

pytestmark = [pytest.mark.gui]

OK = HealthStatus(HealthState.OK, "")


def derived(at: float, rate: float) -> Derived:
    figures = dict.fromkeys(SERIES, 1.0) | {"request_rate": rate}
    return Derived(
        at=at, **figures, model_name="m", model_version="1", bundle_sha256="", restarted=False, version_changed=False
    )


# -- sparklines ------------------------------------------------------------------------------------------------
def test_a_sparkline_breaks_at_a_gap_keeps_its_spike_and_shows_a_lone_point() -> None:
    values = np.ones(600)  # four values per pixel column of 150
    values[101] = 40.0
    values[300:310] = np.nan
    lines, points = sparkline.spark_shape(values, 150, 20)
    assert len(lines) == 2  # two runs: one gap
    box = lines[0].boundingRect().united(lines[1].boundingRect())
    assert box.top() == pytest.approx(0.0) and box.bottom() == pytest.approx(20 - 20 / 40)  # the spike is the top
    assert points == []
    # a value alone between two failed scrapes is a point (a polyline of one point draws nothing)
    _lines, lone = sparkline.spark_shape(np.array([1.0, 1.0, np.nan, 3.0, np.nan, 1.0, 1.0]), 150, 20)
    assert [(p.x(), p.y()) for p in lone] == [(75.0, 0.0)]


def paint_rows(delegate: sparkline.SparklineDelegate, model: FleetModel) -> None:
    image = QImage(200, 30 * model.rowCount(), QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    for row in range(model.rowCount()):
        option = QStyleOptionViewItem()
        option.rect = QRect(0, 30 * row, 160, 28)
        delegate.paint(painter, option, model.index(row, FleetModel.TREND))
    painter.end()


def test_a_row_repainted_without_a_new_sample_reuses_its_sparkline_and_the_cache_holds_one_per_row(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[int] = []
    shape = sparkline.spark_shape
    monkeypatch.setattr(sparkline, "spark_shape", lambda v, w, h: computed.append(len(v)) or shape(v, w, h))
    model = FleetModel()
    delegate = sparkline.SparklineDelegate()

    def rows(at: float) -> list[FleetRow]:
        return [FleetRow(f"dep-{i}", OK, spark=np.arange(300.0) + at, spark_stamp=at) for i in range(3)]

    model.set_rows(rows(1.0))
    paint_rows(delegate, model)
    paint_rows(delegate, model)  # scrolled, selected, a neighbour repainted: nothing new to compute
    assert len(computed) == 3
    for at in range(2, 50):  # a new sample per row, painted
        model.set_rows(rows(float(at)))
        paint_rows(delegate, model)
    assert len(computed) == 3 * 49
    assert len(delegate._shapes) == 3


# -- the page ---------------------------------------------------------------------------------------------------
@pytest.fixture
def page(qtbot: QtBot) -> Iterator[MonitorPage]:
    """A page over a source that is fed by hand (its collection process is never started)."""
    source = MonitorSource(interval=1.0, drain_hz=5)
    page = MonitorPage(source, MonitorConfig(interval=1.0))
    qtbot.addWidget(page)
    page.resize(1300, 820)
    page.show()
    qtbot.waitExposed(page)
    for name in ("a", "b"):
        source.add(Monitored(name, f"http://127.0.0.1:9/{name}/metrics", None, "manual"))
    page.select("a")
    yield page
    source.stop()
    wait_for_workers(10)


def feed(page: MonitorPage, rate: float) -> None:
    """Samples of both endpoints, as a drain tick delivers them."""
    now = time.time()
    batch = [Sample(name, now, derived(now, rate), OK) for name in ("a", "b")]
    for sample in batch:
        page.source.collector.series.append(sample.endpoint, now, sample.derived.values())  # type: ignore[union-attr]
        page.source.latest[sample.endpoint] = sample
        page.source.health[sample.endpoint] = sample.health
    page.source.samplesArrived.emit(batch)


def shown_rate(page: MonitorPage, name: str) -> float:
    row = page.model.row_at(page.model.row_of(name))
    return math.nan if row is None else row.request_rate


def test_a_tick_that_redraws_the_plots_leaves_its_rows_to_the_next_slice(qtbot: QtBot, page: MonitorPage) -> None:
    feed(page, 5.0)  # the plots of 'a' are stale: this tick redraws them, and only them
    assert page.plots.curves[("a", "request_rate")].xData is not None
    assert math.isnan(shown_rate(page, "a")) and math.isnan(shown_rate(page, "b"))
    qtbot.waitUntil(lambda: shown_rate(page, "a") == 5.0 and shown_rate(page, "b") == 5.0, timeout=2_000)
    feed(page, 7.0)  # within the scrape interval: no redraw, so the rows are updated in this tick
    assert shown_rate(page, "a") == 7.0 and shown_rate(page, "b") == 7.0


def test_the_update_times_kept_for_the_benchmark_stay_bounded(page: MonitorPage) -> None:
    for _ in range(3 * UPDATE_TIMES_KEPT):
        page._record(time.perf_counter())
    assert UPDATE_TIMES_KEPT <= len(page.update_times) < 2 * UPDATE_TIMES_KEPT
    assert page.update_times.itemsize == 8  # floats in an array, not float objects in a list


# -- the plots --------------------------------------------------------------------------------------------------
def test_the_y_range_is_what_is_in_view_also_after_the_range_changes_without_new_data(qtbot: QtBot) -> None:
    plots = DetailPlots()
    qtbot.addWidget(plots)
    plots.resize(1000, 600)
    plots.show()
    qtbot.waitExposed(plots)
    plots.set_deployments(["a"])
    now = time.time()
    t = now - 3599 + np.arange(3600.0)
    v = np.ones(3600)
    v[-100], v[-1000] = 50.0, 500.0  # a spike in a 5-minute view, a bigger one before it
    v[-50:-40] = np.nan
    plots.set_range(300)
    plots.show_data({"a": {"cpu_percent": (t, v)}})
    cpu = plots.plots["cpu"].getViewBox()
    curve = plots.curves[("a", "cpu_percent")]
    assert curve.dataBounds(1) == (1.0, 50.0)  # what a paint asks for, from the extent show_data computed
    assert curve.dataBounds(0) == (curve.xData[0], curve.xData[-1])
    assert 50.0 <= cpu.viewRange()[1][1] < 60.0
    plots.set_range(60)  # paused plots: no new data, the curve still holds five minutes
    assert cpu.viewRange()[1][1] < 2.0


# -- sorting, redraw rounds, the health chip --------------------------------------------------------------------
def test_rows_sorted_by_a_figure_are_resorted_at_most_once_per_interval_and_keep_the_selection(
    qtbot: QtBot, page: MonitorPage
) -> None:
    names = [f"d{i}" for i in range(12)]
    for name in names:
        page.source.add(Monitored(name, f"http://127.0.0.1:9/{name}/metrics", None, "manual"))
    page.view.sortByColumn(FleetModel.RATE, Qt.SortOrder.DescendingOrder)
    page.select("d3")
    layouts: list[float] = []
    page.proxy.layoutChanged.connect(lambda *_: layouts.append(time.monotonic()))

    def update(rates: dict[str, float]) -> None:
        page._resort(page.model.set_rows([FleetRow(n, OK, request_rate=r) for n, r in rates.items()]))

    def shown() -> list[str]:
        return [page.proxy.index(r, FleetModel.NAME).data() for r in range(page.proxy.rowCount())]

    rates = {n: float(i) for i, n in enumerate(names)}
    update(rates)
    qtbot.waitUntil(lambda: shown()[:3] == ["d11", "d10", "d9"], timeout=3_000)
    sorted_at = layouts[-1]
    layouts.clear()
    update({n: 100.0 - r for n, r in rates.items()})  # every rate changed, within the interval: sorted later
    update({n: 90.0 - r for n, r in rates.items()})
    assert layouts == []
    qtbot.waitUntil(lambda: len(layouts) > 0, timeout=3_000)
    assert len(layouts) == 1 and layouts[0] - sorted_at >= 0.9 * page.source.collector.interval
    assert shown()[:3] == ["d0", "d1", "d2"]
    assert page.selected_names() == ["d3"]
    qtbot.wait(int(page.source.collector.interval * 1000))
    update({n: 200.0 - r for n, r in rates.items()})  # changed figures, same order: no relayout
    assert len(layouts) == 1


def test_a_redraw_round_refreshes_every_curve_within_the_scrape_interval_a_row_of_panels_per_tick(
    qtbot: QtBot, page: MonitorPage
) -> None:
    redrawn: list[tuple[str, ...] | None] = []
    show = page.plots.show_data
    page.plots.show_data = lambda data, panels=None: redrawn.append(panels) or show(data, panels)  # type: ignore[method-assign]
    started = time.monotonic()
    feed(page, 5.0)
    assert redrawn == [PANEL_ROWS[0]]  # the tick itself draws only the first row of panels
    qtbot.waitUntil(lambda: len(redrawn) == len(PANEL_ROWS), timeout=2_000)
    assert time.monotonic() - started < page.source.collector.interval
    assert sorted(k for row in redrawn for k in row) == sorted(page.plots.plots)  # each panel once
    assert all(curve.xData is not None and len(curve.xData) for curve in page.plots.curves.values())
    qtbot.waitUntil(lambda: shown_rate(page, "b") == 5.0, timeout=2_000)  # then the fleet rows


def test_the_y_range_keeps_its_nice_top_while_the_data_moves_inside_it(qtbot: QtBot) -> None:
    plots = DetailPlots()
    qtbot.addWidget(plots)
    plots.resize(1000, 600)
    plots.show()
    plots.set_deployments(["a"])
    plots.set_range(300)
    now = time.time()
    t = now - 299 + np.arange(300.0)
    cpu = plots.plots["cpu"].getViewBox()
    tops = []
    # inside 0-45 with 5 % headroom and above half of it; then touching the top (a line on the border is hard to
    # read), so the range grows
    for peak in (41.0, 42.5, 38.0, 30.0, 44.0):
        plots.show_data({"a": {"cpu_percent": (t, np.full(300, peak))}})
        tops.append(cpu.viewRange()[1][1])
    assert tops == [45.0, 45.0, 45.0, 45.0, 50.0]
    plots.show_data({"a": {"cpu_percent": (t, np.full(300, 12.0))}})  # below half: shrinks to fit
    assert cpu.viewRange()[1][1] == 14.0
    assert nice_ceil(0.0123) == pytest.approx(0.014) and nice_ceil(7.0) == 7.0 and nice_ceil(9.2) == 10.0


@pytest.mark.parametrize(
    ("health", "scraped", "stopped", "word"),
    [
        (HealthStatus(HealthState.UNKNOWN, "not scraped yet"), False, False, "…"),
        (HealthStatus(HealthState.UNKNOWN, "Prometheus did not answer within 2 s"), True, False, "UNKNOWN"),
        (HealthStatus(HealthState.UNKNOWN, "process died; gave up after 5 restarts"), True, True, "STOPPED"),
        (HealthStatus(HealthState.DOWN, "connection refused"), True, False, "DOWN"),
    ],
)
def test_the_health_chip_says_why_a_row_has_no_state_in_a_word_and_the_tooltip_in_full(
    health: HealthStatus, scraped: bool, stopped: bool, word: str
) -> None:
    model = FleetModel()
    model.set_rows([FleetRow("a", health, scraped=scraped, stopped=stopped)])
    cell = model.index(0, FleetModel.HEALTH)
    assert cell.data() == word
    assert health.reason in cell.data(Qt.ItemDataRole.ToolTipRole)
