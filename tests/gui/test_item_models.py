"""The registry item models obey Qt's model contract and sort the way people expect."""

from __future__ import annotations

from modeldeck.core.registry.types import ModelVersion, Page, RegisteredModel
from modeldeck.gui.registry.models import (
    RawRole,
    RegisteredModelListModel,
    RowsModel,
    VersionSortProxy,
    VersionTableModel,
)
from PySide6.QtCore import QModelIndex, Qt


def _version(n: int, run: str | None = None, aliases: tuple[str, ...] = ()) -> ModelVersion:
    return ModelVersion(
        name="m",
        version=str(n),
        creation_time=1_700_000_000_000 + n * 60_000,
        last_updated=1_700_000_000_000 + n * 60_000,
        status="READY",
        source=f"file:///x/{n}",
        run_id=run,
        tags={"n": str(n)},
        aliases=aliases,
    )


def test_model_list_passes_the_model_tester(qtmodeltester) -> None:  # type: ignore[no-untyped-def]
    model = RegisteredModelListModel()
    model.set_models(
        [
            RegisteredModel("iris", "", 1, 2, aliases={"champion": "2"}, latest_version="3"),
            RegisteredModel("diabetes", "desc", 1, 2, latest_version=None),
        ]
    )
    qtmodeltester.check(model)
    assert model.data(model.index(0, 0), Qt.ItemDataRole.ToolTipRole).endswith("latest v3 · @champion v2")


def test_versions_model_pages_in_and_passes_the_model_tester(qtmodeltester) -> None:  # type: ignore[no-untyped-def]
    model = VersionTableModel()
    requested: list[str] = []
    model.moreRequested.connect(requested.append)
    model.reset(Page(tuple(_version(n, f"r{n}") for n in range(10, 5, -1)), next_token="t1"))
    assert model.canFetchMore(QModelIndex())
    model.fetchMore(QModelIndex())
    assert requested == ["t1"]
    assert not model.canFetchMore(QModelIndex()), "one request at a time"
    model.append_page(Page(tuple(_version(n, f"r{n}") for n in range(5, 0, -1)), next_token=None))
    assert model.rowCount() == 10 and not model.canFetchMore(QModelIndex())
    model.set_metrics({f"r{n}": {"accuracy": n / 10} for n in range(1, 11)})
    model.set_metric_name("accuracy")
    qtmodeltester.check(model)
    assert model.headerData(VersionTableModel.METRIC, Qt.Orientation.Horizontal) == "accuracy"


def test_versions_sort_numerically_and_by_metric_with_missing_values_last(qtmodeltester) -> None:  # type: ignore[no-untyped-def]
    model = VersionTableModel()
    model.reset(Page((_version(9, "a"), _version(10, "b"), _version(2, None), _version(100, "c"))))
    model.set_metrics({"a": {"rmse": 0.5}, "b": {"rmse": 0.1}, "c": {"rmse": 0.3}})
    model.set_metric_name("rmse")
    proxy = VersionSortProxy()
    proxy.setSourceModel(model)
    qtmodeltester.check(proxy)

    def column(col: int) -> list[str]:
        return [proxy.index(r, col).data() for r in range(proxy.rowCount())]

    proxy.sort(VersionTableModel.VERSION, Qt.SortOrder.AscendingOrder)
    assert column(VersionTableModel.VERSION) == ["2", "9", "10", "100"]
    proxy.sort(VersionTableModel.METRIC, Qt.SortOrder.AscendingOrder)
    assert column(VersionTableModel.VERSION) == ["10", "100", "9", "2"]
    proxy.sort(VersionTableModel.METRIC, Qt.SortOrder.DescendingOrder)
    assert column(VersionTableModel.VERSION) == ["9", "100", "10", "2"]


def test_rows_model_passes_the_model_tester_and_marks_changes(qtmodeltester) -> None:  # type: ignore[no-untyped-def]
    model = RowsModel(("Name", "a", "b"))
    model.set_rows([("acc", 0.9, 0.95), ("n", 1, 1)], highlight={0})
    qtmodeltester.check(model)
    assert model.index(0, 1).data() == "0.9"
    assert model.index(0, 1).data(RawRole) == 0.9
    assert model.highlighted_rows() == {0}
    assert model.index(0, 0).data(Qt.ItemDataRole.BackgroundRole) is not None
    assert model.index(1, 0).data(Qt.ItemDataRole.BackgroundRole) is None


def test_model_filter_proxy_passes_the_model_tester_and_ignores_case(qtmodeltester) -> None:  # type: ignore[no-untyped-def]
    from modeldeck.gui.registry.models import ModelFilterProxy

    source = RegisteredModelListModel()
    source.set_models([RegisteredModel(n, "", 1, 2) for n in ("iris-classifier", "Diabetes-Regressor", "big-model")])
    proxy = ModelFilterProxy()
    proxy.setSourceModel(source)
    proxy.setFilterFixedString("DIAB")
    qtmodeltester.check(proxy)
    assert [proxy.index(r, 0).data() for r in range(proxy.rowCount())] == ["Diabetes-Regressor"]
