"""The detail plots on their own: what a curve holds for a long ring buffer, and what a steady second repaints."""

from __future__ import annotations

import time

import numpy as np
import pytest
from modeldeck.gui.dashboard.plots import DetailPlots, decimate
from pytestqt.qtbot import QtBot

pytestmark = [pytest.mark.gui]


def hour_of_cpu(now: float) -> tuple[np.ndarray, np.ndarray]:
    """3,600 points at 1 Hz ending now: flat, one spike and a 10 s gap inside the last five minutes."""
    t = now - 3599 + np.arange(3600.0)
    v = np.ones(3600)
    v[-100] = 50.0
    v[-200:-190] = np.nan
    return t, v


@pytest.fixture
def plots(qtbot: QtBot) -> DetailPlots:
    widget = DetailPlots()
    qtbot.addWidget(widget)
    widget.resize(1000, 600)
    widget.show()
    qtbot.waitExposed(widget)
    widget.set_deployments(["a"])
    return widget


def test_a_five_minute_range_plots_only_the_points_in_view_with_spike_and_gap(plots: DetailPlots) -> None:
    plots.set_range(300)
    plots.show_data({"a": {"cpu_percent": hour_of_cpu(time.time())}})
    curve = plots.curves[("a", "cpu_percent")]
    x0, x1 = plots.x_range()
    # not the 3,600 retained: the view (whose right edge is up to a step of 10 s ahead) and one point before it
    assert 290 <= len(curve.xData) <= 302
    assert curve.xData[0] <= x0 and curve.xData[-1] <= x1
    assert np.nanmax(curve.yData) == 50.0 and np.isnan(curve.yData).sum() == 10


def test_everything_retained_is_decimated_to_the_width_keeping_spike_and_gap(plots: DetailPlots) -> None:
    t, v = hour_of_cpu(time.time())
    plots.set_range(None)
    plots.show_data({"a": {"cpu_percent": (t, v)}})
    curve = plots.curves[("a", "cpu_percent")]
    assert len(curve.xData) <= 2 * plots.graphics.width() < len(t)
    assert np.nanmax(curve.yData) == 50.0 and np.isnan(curve.yData).any()
    assert curve.xData[0] == t[0] and curve.xData[-1] == t[-1]
    x0, x1 = plots.x_range()
    assert x0 <= t[0] and x1 >= t[-1]


def test_decimation_keeps_the_minimum_and_maximum_of_every_bin() -> None:
    t = np.arange(10.0)
    v = np.array([3, 1, 2, 9, 0, 5, 5, 7, 6, 4], dtype=float)
    dt, dv = decimate(t, v, 4)  # two bins of five points
    assert dt.tolist() == [0, 4, 5, 9] and dv.tolist() == [0, 9, 4, 7]
    assert decimate(t, v, 10)[0] is t  # short enough: untouched


def test_the_time_axes_stay_put_between_steps_of_a_scrolling_range(plots: DetailPlots, qtbot: QtBot) -> None:
    # the right edge moves in steps of range/30, so a redraw a second later reuses every axis picture
    plots.set_range(300)
    step = 300 / 30
    while time.time() % step > step - 1.5:  # not just before a step
        qtbot.wait(100)
    plots.show_data({"a": {"cpu_percent": hour_of_cpu(time.time())}})
    before = plots.x_range()
    qtbot.wait(1000)
    plots.show_data({"a": {"cpu_percent": hour_of_cpu(time.time())}})
    assert plots.x_range() == before
    assert before[1] >= time.time() and before[1] - time.time() <= step
