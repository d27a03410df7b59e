"""The registry browser, driven like a user would against real MLflow stores."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from modeldeck.core.settings import load_settings
from modeldeck.core.state import parse_selection
from modeldeck.gui.main_window import MainWindow
from modeldeck.gui.registry.details import SIGNATURE_HEADERS
from modeldeck.gui.registry.models import VersionTableModel
from modeldeck.gui.registry.page import RegistryPage
from modeldeck.gui.widgets import home_abbreviated
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from tests.fixtures.registry import free_port
from tests.gui.conftest import FIRST_SCREEN_TIMEOUT_MS, settle

OpenWindow = Callable[..., MainWindow]
pytestmark = pytest.mark.gui


def visible_models(page: RegistryPage) -> list[str]:
    proxy = page.model_proxy
    return [proxy.index(r, 0).data() for r in range(proxy.rowCount())]


def version_cells(page: RegistryPage, column: int) -> list[str]:
    proxy = page.version_proxy
    return [proxy.index(r, column).data() for r in range(proxy.rowCount())]


def click_model(qtbot: QtBot, page: RegistryPage, name: str) -> None:
    row = visible_models(page).index(name)
    rect = page.model_view.visualRect(page.model_proxy.index(row, 0))
    current = page.current_model()
    if current is not None and current.name == name:
        qtbot.mouseClick(page.model_view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        return
    with qtbot.waitSignal(page.versionsLoaded, timeout=30_000):
        qtbot.mouseClick(page.model_view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def click_version(
    qtbot: QtBot, page: RegistryPage, version: str, modifier: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier
) -> None:
    row = version_cells(page, VersionTableModel.VERSION).index(version)
    rect = page.version_view.visualRect(page.version_proxy.index(row, VersionTableModel.VERSION))
    qtbot.mouseClick(page.version_view.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())


def select_version(qtbot: QtBot, page: RegistryPage, version: str) -> None:
    """Click a version and wait until the details pane shows it (not an earlier selection)."""
    click_version(qtbot, page, version)
    name = page.current_model().name  # type: ignore[union-attr]
    qtbot.waitUntil(lambda: shown_version(page) == f"{name}/{version}", timeout=30_000)


def shown_version(page: RegistryPage) -> str | None:
    d = page.details.details
    return f"{d.version.name}/{d.version.version}" if d else None


def aliases_by_version(page: RegistryPage) -> dict[str, str]:
    return dict(
        zip(
            version_cells(page, VersionTableModel.VERSION),
            version_cells(page, VersionTableModel.ALIASES),
            strict=True,
        )
    )


def test_first_screen_shows_models_versions_and_details(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    window = open_window(demo_tracking_uri)
    page = window.registry_page
    assert {"iris-classifier", "diabetes-regressor", "breast-cancer-classifier"} <= set(visible_models(page))
    assert page.current_model() is not None
    versions = version_cells(page, VersionTableModel.VERSION)
    assert versions and versions == sorted(versions, key=int, reverse=True), "newest version first"
    details = page.details
    assert details.details is not None and details.details.version == page.current_version()
    assert details.inputs_model.rowCount() > 0, "signature inputs are listed"
    assert details.metrics_model.rowCount() > 0, "run metrics are listed"
    assert f"version {versions[0]}" in details.title.text()
    assert window.registry_label.text() == home_abbreviated(window.registry.display_name)  # type: ignore[union-attr]
    assert page.banner.text() == ""
    # The metric column shows the metric picked in the combo box, with values.
    qtbot.waitUntil(lambda: page.metric_combo.currentText() != "", timeout=30_000)
    header = page.version_model.headerData(VersionTableModel.METRIC, Qt.Orientation.Horizontal)
    assert header == page.metric_combo.currentText()
    assert all(version_cells(page, VersionTableModel.METRIC)), "every demo version has the metric"


def test_clicking_a_model_and_version_shows_its_signature_and_metrics(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "iris-classifier")
    select_version(qtbot, page, "1")
    inputs = [page.details.inputs_model.cell(r, 0) for r in range(page.details.inputs_model.rowCount())]
    assert len(inputs) == 4 and all("sepal" in n or "petal" in n for n in inputs)
    shape = SIGNATURE_HEADERS.index("Shape")
    assert page.details.inputs_view.isColumnHidden(shape), "named columns have no shape to show"
    outputs = page.details.outputs_model
    assert (outputs.cell(0, 0), outputs.cell(0, shape)) == ("output", "n"), "an unnamed 1-D tensor of n rows"
    assert not page.details.outputs_view.isColumnHidden(shape)
    metrics = {page.details.metrics_model.cell(r, 0) for r in range(page.details.metrics_model.rowCount())}
    assert "accuracy" in metrics
    assert page.details.example.toPlainText().strip().startswith("{")
    settle(qtbot)


def test_filter_narrows_the_model_list(qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str) -> None:
    window = open_window(demo_tracking_uri)
    page = window.registry_page
    qtbot.keyClick(window, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert page.filter_edit.hasFocus()
    qtbot.keyClicks(page.filter_edit, "DIAB")
    assert visible_models(page) == ["diabetes-regressor"]
    page.filter_edit.clear()
    qtbot.keyClicks(page.filter_edit, "no-such-model")
    assert visible_models(page) == []
    settle(qtbot)
    # no blank list: the pane says nothing matches and how to get the models back
    assert page.models_empty.isVisible()
    assert "No model matches “no-such-model”" in page.models_empty.text() and "Esc" in page.models_empty.text()
    assert page.models_count.text() == "0 of 3 model(s)"
    # the deploy actions follow: no version is shown, so there is nothing to bundle or deploy
    ui = window.deploy_ui
    assert page.current_version() is None
    assert not ui.deploy_action.isEnabled() and not ui.bundle_action.isEnabled()
    qtbot.keyClick(page.filter_edit, Qt.Key.Key_Escape)
    assert page.filter_edit.text() == "" and page.model_view.isVisible()
    assert page.models_count.text() == "3 model(s)"
    settle(qtbot)


def test_the_metric_combo_offers_only_the_shown_models_metrics(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "diabetes-regressor")
    qtbot.waitUntil(lambda: page.metric_combo.currentText() == "r2", timeout=30_000)
    click_model(qtbot, page, "iris-classifier")
    combo = page.metric_combo
    qtbot.waitUntil(lambda: "accuracy" in [combo.itemText(i) for i in range(combo.count())], timeout=30_000)
    names = [combo.itemText(i) for i in range(combo.count())]
    assert "r2" not in names, "a regressor's metric is not offered for a classifier"
    assert combo.currentText() in names
    assert all(version_cells(page, VersionTableModel.METRIC)), "the chosen metric has a value in every row"
    settle(qtbot)


def test_a_small_window_keeps_the_model_names_readable(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    window = open_window(demo_tracking_uri)
    window.resize(1024, 640)
    QApplication.processEvents()
    for index in range(window.pages.count()):  # no page sets a minimum wider than a 1024 screen
        window.pages.setCurrentIndex(index)
        QApplication.processEvents()
        assert window.width() == 1024, window.pages.tabText(index)
    window.pages.setCurrentIndex(0)
    page = window.registry_page
    assert page.splitter.sizes()[0] >= 180
    assert not page.model_view.horizontalScrollBar().isVisible(), "long names elide instead"
    click_model(qtbot, page, "breast-cancer-classifier")
    settle(qtbot)
    # a title that does not fit ends in "…" (full text in its tooltip) rather than being cut mid-word
    title = page.versions_title
    assert title.toolTip() == "Versions of breast-cancer-classifier"
    shown = title.shown_text()
    assert shown == title.text() or (shown.endswith("…") and title.text().startswith(shown[:-1]))
    # the narrow details pane lists its facts one per row, so none is cut at the pane's edge
    assert page.details.width() < 520
    assert page.details.summary.text().count("<tr>") == 5  # status, created, source run, flavors, size
    window.resize(1600, 860)
    page.splitter.setSizes([200, 600, 800])
    QApplication.processEvents()
    assert page.details.summary.text().count("<tr>") == 3  # two pairs a row; the source run on its own


def test_versions_sort_by_the_chosen_metric(qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "diabetes-regressor")
    qtbot.waitUntil(lambda: page.metric_combo.findText("rmse") >= 0, timeout=30_000)
    page.metric_combo.setCurrentText("rmse")
    header = page.version_view.horizontalHeader()
    assert page.version_model.headerData(VersionTableModel.METRIC, Qt.Orientation.Horizontal) == "rmse"
    qtbot.mouseClick(
        header.viewport(),
        Qt.MouseButton.LeftButton,
        pos=QPoint(header.sectionViewportPosition(VersionTableModel.METRIC) + 8, header.height() // 2),
    )
    values = [float(v) for v in version_cells(page, VersionTableModel.METRIC)]
    assert len(values) >= 3
    assert values in (sorted(values), sorted(values, reverse=True))
    page.version_view.sortByColumn(VersionTableModel.METRIC, Qt.SortOrder.AscendingOrder)
    assert [float(v) for v in version_cells(page, VersionTableModel.METRIC)] == sorted(values)
    settle(qtbot)


def test_compare_two_versions_shows_metrics_side_by_side(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "iris-classifier")
    click_version(qtbot, page, "1")
    click_version(qtbot, page, "2", Qt.KeyboardModifier.ControlModifier)
    assert page.compare_button.isEnabled()
    qtbot.mouseClick(page.compare_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.compare_dialog is not None and page.compare_dialog.isVisible(), timeout=30_000)
    dialog = page.compare_dialog
    assert dialog is not None
    metrics = dialog.models["Metrics"]
    assert [metrics.headerData(c, Qt.Orientation.Horizontal) for c in range(1, 3)] == ["v1", "v2"]
    names = [metrics.cell(r, 0) for r in range(metrics.rowCount())]
    assert "accuracy" in names
    params = dialog.models["Parameters"]
    assert params.highlighted_rows(), "a LogisticRegression and a RandomForest differ in their params"
    dialog.close()
    settle(qtbot)


def test_promote_moves_champion_and_the_table_shows_it(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "iris-classifier")
    before = aliases_by_version(page)
    champion_was = next(v for v, a in before.items() if "@champion" in a)
    target = next(v for v in before if v != champion_was)
    select_version(qtbot, page, target)
    qtbot.mouseClick(page.promote_button, Qt.MouseButton.LeftButton)
    dialog = page.promote_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.alias_box.setCurrentText("")
    qtbot.keyClicks(dialog.alias_box, "latest")
    assert not dialog.ok_button.isEnabled(), "reserved alias is refused"
    dialog.alias_box.setCurrentText("")
    qtbot.keyClicks(dialog.alias_box, "champion")
    assert dialog.confirmation_text().startswith(
        f"Move alias 'champion' from version {champion_was} to version {target} of iris-classifier?"
    )
    with qtbot.waitSignal(page.aliasChanged, timeout=30_000):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "@champion" in aliases_by_version(page).get(target, ""), timeout=30_000)
    assert "@champion" not in aliases_by_version(page)[champion_was]
    qtbot.waitUntil(lambda: "@champion" in page.details.title.text(), timeout=30_000)
    assert shown_version(page) == f"iris-classifier/{target}", "the selection survives the refresh"
    settle(qtbot)


def test_remove_alias_after_confirmation(qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "iris-classifier")
    challenger = next(v for v, a in aliases_by_version(page).items() if "@challenger" in a)
    select_version(qtbot, page, challenger)
    page.remove_alias("challenger")
    box = page.remove_alias_box
    assert box is not None and box.isVisible()
    assert f"Remove alias 'challenger' from version {challenger} of iris-classifier?" in box.text()
    remove = next(b for b in box.buttons() if b.text() == "Remove alias")
    with qtbot.waitSignal(page.aliasChanged, timeout=30_000):
        qtbot.mouseClick(remove, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "@challenger" not in "".join(aliases_by_version(page).values()), timeout=30_000)
    settle(qtbot)


def test_unreachable_registry_is_an_error_in_the_window_and_the_ui_stays_usable(
    qtbot: QtBot, open_window: OpenWindow
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    window = open_window(url, wait=False)
    page = window.registry_page
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=60_000)
    text = page.banner.text()
    assert "127.0.0.1" in text and "\n" not in text and "Traceback" not in text
    assert page.banner.action_button.text() == "Retry"
    assert window.registry_label.text() == "Registry not reachable"
    assert not QApplication.activeModalWidget()
    # Still responsive: the filter takes input, the Settings dialog opens.
    qtbot.keyClicks(page.filter_edit, "iris")
    assert page.filter_edit.text() == "iris"
    window.open_settings()
    assert window.settings_dialog is not None and window.settings_dialog.isVisible()
    window.settings_dialog.reject()
    # Retry fails the same way, without piling up dialogs or exceptions.
    qtbot.mouseClick(page.banner.action_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.banner.isVisible(), timeout=60_000)
    settle(qtbot, 60)


def test_quickly_changing_selection_ends_on_the_last_one(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "iris-classifier")
    shown: list[str] = []
    page.detailsShown.connect(lambda d: shown.append(d.version.version))
    for version in ("1", "2", "3", "1", "2"):
        click_version(qtbot, page, version)
    page._load_current_details()  # force a request for the current row without waiting for the debounce
    qtbot.waitUntil(lambda: shown_version(page) == "iris-classifier/2", timeout=30_000)
    settle(qtbot)
    assert shown_version(page) == "iris-classifier/2"
    assert shown[-1] == "2"


def test_arrow_keys_move_through_versions_and_update_details(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "iris-classifier")
    settle(qtbot)
    first = page.current_version()
    assert first is not None
    page.version_view.setFocus()
    with qtbot.waitSignal(page.detailsShown, timeout=30_000) as blocker:
        qtbot.keyClick(page.version_view, Qt.Key.Key_Down)
    assert blocker.args[0].version.version != first.version
    assert page.details.details is not None and page.details.details.version == page.current_version()
    qtbot.keyClick(page.version_view, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: page.details.tabs.hasFocus(), timeout=5000)
    # Up in the model list selects the previous model and loads its versions.
    page.model_view.setFocus()
    with qtbot.waitSignal(page.versionsLoaded, timeout=30_000):
        qtbot.keyClick(page.model_view, Qt.Key.Key_Up)
    assert page.current_model() is not None and page.current_model().name != "iris-classifier"
    settle(qtbot)


@pytest.mark.server
def test_switching_to_an_mlflow_server_via_settings_reloads_the_browser(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str, mlflow_server: str
) -> None:
    window = open_window(demo_tracking_uri)
    window.open_settings()
    dialog = window.settings_dialog
    assert dialog is not None
    qtbot.mouseClick(dialog.uri_radio, Qt.MouseButton.LeftButton, pos=QPoint(8, dialog.uri_radio.height() // 2))
    dialog.uri_box.setCurrentText("")
    qtbot.keyClicks(dialog.uri_box, mlflow_server)
    with qtbot.waitSignal(dialog.connectionTested, timeout=60_000) as tested:
        qtbot.mouseClick(dialog.test_button, Qt.MouseButton.LeftButton)
    assert tested.args[0] is True, dialog.result_text()
    assert dialog.result_text().startswith("Connected")
    with qtbot.waitSignal(window.registry_page.firstScreenReady, timeout=60_000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    assert window.registry is not None and window.registry.tracking_uri == mlflow_server
    assert "127.0.0.1" in window.registry_label.text()
    assert "iris-classifier" in visible_models(window.registry_page)
    from modeldeck.core.settings import load_settings

    saved = load_settings()
    assert saved.tracking_uri == mlflow_server and mlflow_server in saved.recent_tracking_uris
    settle(qtbot)


def test_settings_dialog_refuses_credentials_in_the_uri(qtbot: QtBot) -> None:
    from modeldeck.core.settings import load_settings
    from modeldeck.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(load_settings())
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.mouseClick(dialog.uri_radio, Qt.MouseButton.LeftButton, pos=QPoint(8, dialog.uri_radio.height() // 2))
    qtbot.keyClicks(dialog.uri_box, "https://bob:secret@mlflow.example.com")
    assert not dialog.save_button.isEnabled()
    assert "credentials" in dialog.result_text()
    dialog.uri_box.setCurrentText("")
    qtbot.keyClicks(dialog.uri_box, "https://mlflow.example.com")
    assert dialog.save_button.isEnabled()


def test_the_big_model_pages_in_to_the_last_version_while_scrolling(
    qtbot: QtBot, open_window: OpenWindow, big_store
) -> None:  # type: ignore[no-untyped-def]
    page = open_window(big_store.tracking_uri).registry_page
    click_model(qtbot, page, big_store.big_model)
    assert page.version_model.rowCount() == 200 and page.version_model.canFetchMore()
    bar = page.version_view.verticalScrollBar()

    def scrolled_to_end() -> bool:
        bar.setValue(bar.maximum())
        return page.version_model.rowCount() == big_store.big_model_versions

    qtbot.waitUntil(scrolled_to_end, timeout=120_000)
    assert version_cells(page, VersionTableModel.VERSION)[-1] == "1"
    assert not page.version_model.canFetchMore()
    settle(qtbot)


def open_on(qtbot: QtBot, tracking_uri: str, select: str | None = None) -> MainWindow:
    """A main window opened with ``modeldeck gui --select`` semantics (None: as a plain start)."""
    window = MainWindow(load_settings(tracking_uri=tracking_uri), select=parse_selection(select) if select else None)
    qtbot.addWidget(window)
    window.resize(1400, 860)
    window.show()
    with qtbot.waitSignal(window.registry_page.firstScreenReady, timeout=FIRST_SCREEN_TIMEOUT_MS):
        window.open_current_registry()
    settle(qtbot)
    return window


def test_a_first_start_opens_on_a_model_with_a_champion_and_the_most_versions(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    models = page.model_list_model.models()
    current = page.current_model()
    assert current is not None and "champion" in current.aliases
    most = max(int(m.latest_version or 0) for m in models if "champion" in m.aliases)
    assert current.latest_version == str(most)
    assert current.name != "breast-cancer-classifier", "not simply the first name alphabetically"


def test_reopening_shows_the_version_that_was_selected_last(qtbot: QtBot, demo_tracking_uri: str) -> None:
    first = open_on(qtbot, demo_tracking_uri)
    click_model(qtbot, first.registry_page, "iris-classifier")
    select_version(qtbot, first.registry_page, "1")
    settle(qtbot)
    first.close()
    again = open_on(qtbot, demo_tracking_uri)
    assert shown_version(again.registry_page) == "iris-classifier/1"
    assert again.registry_page.current_version().version == "1"  # type: ignore[union-attr]


@pytest.mark.parametrize(("ref", "expected"), [("iris-classifier@challenger", "1"), ("iris-classifier/2", "2")])
def test_select_opens_on_the_requested_version(qtbot: QtBot, demo_tracking_uri: str, ref: str, expected: str) -> None:
    page = open_on(qtbot, demo_tracking_uri, ref).registry_page
    challenger = page.current_model().aliases.get("challenger")  # type: ignore[union-attr]
    assert shown_version(page) == f"iris-classifier/{challenger if '@' in ref else expected}"


def test_select_of_a_missing_model_says_so_and_opens_the_default(qtbot: QtBot, demo_tracking_uri: str) -> None:
    window = open_on(qtbot, demo_tracking_uri, "no-such-model@champion")
    assert window.registry_page.current_model() is not None
    assert window.registry_page.banner.text() == "No model named 'no-such-model' in this registry."


def test_compare_with_one_version_selected_offers_two_versions_to_pick(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    window = open_window(demo_tracking_uri)
    page = window.registry_page
    click_model(qtbot, page, "iris-classifier")
    champion = page.current_model().aliases["champion"]  # type: ignore[union-attr]
    other = next(v for v in ("1", "2", "3") if v != champion)
    select_version(qtbot, page, other)
    assert page.compare_button.isEnabled() and window.compare_action.isEnabled()
    window.compare_action.trigger()
    picker = page.compare_picker
    assert picker is not None and picker.isVisible()
    assert (picker.a_box.currentData(), picker.b_box.currentData()) == (other, champion)
    picker.b_box.setCurrentIndex(picker.b_box.findData(other))
    assert not picker.ok_button.isEnabled(), "a version is not compared with itself"
    picker.b_box.setCurrentIndex(picker.b_box.findData(champion))
    qtbot.mouseClick(picker.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.compare_dialog is not None and page.compare_dialog.isVisible(), timeout=30_000)
    dialog = page.compare_dialog
    assert dialog is not None
    a, b = sorted((other, champion), key=int)
    headers = [dialog.models["Metrics"].headerData(c, Qt.Orientation.Horizontal) for c in range(1, 4)]
    assert headers == [f"v{a}", f"v{b}", f"Δ v{b} − v{a}"]
    dialog.close()
    settle(qtbot)


def test_versions_table_fits_without_a_horizontal_scrollbar_and_tags_have_tooltips(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    page = open_window(demo_tracking_uri).registry_page
    click_model(qtbot, page, "iris-classifier")
    settle(qtbot)
    view = page.version_view
    assert not view.horizontalScrollBar().isVisible()
    tags = page.version_proxy.index(0, VersionTableModel.TAGS)
    assert view.columnWidth(VersionTableModel.TAGS) >= 80
    tooltip = tags.data(Qt.ItemDataRole.ToolTipRole)
    assert tooltip and "dataset = iris" in tooltip


def test_select_of_an_older_version_pages_down_to_it(qtbot: QtBot, big_store) -> None:  # type: ignore[no-untyped-def]
    page = open_on(qtbot, big_store.tracking_uri, f"{big_store.big_model}@champion").registry_page
    champion = page.current_model().aliases["champion"]  # type: ignore[union-attr]
    assert int(champion) < big_store.big_model_versions - page.versions_page_size, "not on the first page"
    qtbot.waitUntil(lambda: shown_version(page) == f"{big_store.big_model}/{champion}", timeout=60_000)
    assert page.current_version().version == champion  # type: ignore[union-attr]
    assert page.banner.text() == ""
    settle(qtbot)


def test_settings_dialog_keeps_a_separate_registry_uri_and_tests_it(qtbot: QtBot, demo_tracking_uri: str) -> None:
    from modeldeck.core.settings import load_settings, save_settings
    from modeldeck.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(load_settings())
    qtbot.addWidget(dialog)
    dialog.show()
    assert not dialog.registry_uri_edit.isEnabled()  # the embedded registry has no separate one
    dialog.uri_radio.setChecked(True)
    dialog.uri_box.setCurrentText(demo_tracking_uri)
    dialog.registry_uri_edit.setText("https://alice:pw@registry.example.com")
    assert not dialog.save_button.isEnabled() and "credentials" in dialog.result_text()
    dialog.registry_uri_edit.setText(demo_tracking_uri)
    assert dialog.save_button.isEnabled()
    with qtbot.waitSignal(dialog.connectionTested, timeout=30_000) as answer:
        dialog.test_connection()
    assert answer.args[0] is True, answer.args
    chosen = dialog.chosen_settings()
    assert (chosen.tracking_uri, chosen.registry_uri) == (demo_tracking_uri, demo_tracking_uri)
    save_settings(chosen)
    assert load_settings().registry_uri == demo_tracking_uri
    dialog.embedded_radio.setChecked(True)
    assert dialog.chosen_settings().registry_uri is None


def test_settings_dialog_opens_wide_enough_for_a_long_uri_and_shows_its_start(qtbot: QtBot, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from modeldeck.gui.settings_dialog import SettingsDialog

    uri = f"sqlite:///{tmp_path}/team-registries/fraud-detection/mlflow.db"
    dialog = SettingsDialog(replace(load_settings(), tracking_uri=uri))
    qtbot.addWidget(dialog)
    dialog.show()
    QApplication.processEvents()
    assert dialog.width() >= 720
    line = dialog.uri_box.lineEdit()
    assert line.text() == uri and line.cursorPosition() == 0, "the scheme is in view, not the tail"


def test_keyboard_reaches_the_pages_and_the_deploy_dialogs(
    qtbot: QtBot, open_window: OpenWindow, demo_tracking_uri: str
) -> None:
    window = open_window(demo_tracking_uri)
    qtbot.waitExposed(window)
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    assert window.pages.currentWidget() is window.inventory_ui.page
    qtbot.keyClick(window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert window.pages.currentWidget() is window.deploy_ui.page
    assert window.pages.tabToolTip(1) == "Deployments (Ctrl+2)"
    qtbot.keyClick(window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert window.pages.currentWidget() is window.registry_page
    version = window.registry_page.current_version()
    assert version is not None
    qtbot.keyClick(window, Qt.Key.Key_D, Qt.KeyboardModifier.ControlModifier)
    dialog = window.deploy_ui.deploy_dialog
    assert dialog is not None and dialog.isVisible() and f"version {version.version}" in dialog.heading.text()
    dialog.close()
    settle(qtbot)


def test_a_signature_without_shapes_fits_its_table_without_a_scroll_bar(qtbot: QtBot, demo_tracking_uri: str) -> None:
    page = open_on(qtbot, demo_tracking_uri, "iris-classifier@champion").registry_page
    QApplication.processEvents()
    inputs = page.details.inputs_view
    assert inputs.isColumnHidden(SIGNATURE_HEADERS.index("Shape"))
    assert inputs.horizontalHeader().length() <= inputs.viewport().width()
    assert not inputs.horizontalScrollBar().isVisible()
