"""Small widgets every pane uses: the non-modal message banner and read-only tables."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QSortFilterProxyModel, Qt
from PySide6.QtGui import QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableView,
    QWidget,
)


def home_abbreviated(text: str) -> str:
    """``/home/me/.local/share/…`` → ``~/.local/share/…``: shorter, and no user name in screenshots."""
    home = str(Path.home()).rstrip("/")
    if not home:
        return text
    return text.replace(home + "/", "~/").replace(f"({home})", "(~)")


def pretty_json(value: Any, indent: int = 2) -> str:
    """Indented JSON whose innermost lists (rows, predictions) stay on one line, so tables stay readable."""

    def flat(v: Any) -> bool:
        return isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v)

    def render(v: Any, level: int) -> str:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        if isinstance(v, dict) and v:
            items = [f"{inner}{json.dumps(k)}: {render(x, level + 1)}" for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(v, list) and v and not flat(v):
            return "[\n" + ",\n".join(inner + render(x, level + 1) for x in v) + "\n" + pad + "]"
        return json.dumps(v, default=str)

    return render(value, 0)


class ElidedLabel(QLabel):
    """A one-line label that ends in "…" when its pane is narrow (full text in the tooltip) instead of being
    cut mid-word, and that never sets its pane's minimum width."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setToolTip(text)

    def shown_text(self) -> str:
        """The text as painted at the current width."""
        return self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight, self.contentsRect().width())

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.drawText(self.contentsRect(), int(self.alignment() | Qt.AlignmentFlag.AlignVCenter), self.shown_text())


class MessageBanner(QFrame):
    """An inline error/warning strip inside the pane that caused it, with an optional action (Retry).

    Never modal: the rest of the window stays usable while it is shown.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBanner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton()
        self.close_button = QPushButton("Dismiss")
        layout.addWidget(self.label, 1)
        layout.addWidget(self.action_button)
        layout.addWidget(self.close_button)
        self.close_button.clicked.connect(self.hide)
        self.action_button.clicked.connect(self._run_action)
        self._action: Callable[[], None] | None = None
        self.hide()

    def show_message(
        self,
        text: str,
        *,
        kind: str = "error",
        action_text: str | None = None,
        action: Callable[[], None] | None = None,
    ) -> None:
        self.setProperty("role", f"banner-{kind}")
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        self._action = action
        self.action_button.setVisible(action is not None)
        self.action_button.setText(action_text or "Retry")
        self.show()

    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""

    def _run_action(self) -> None:
        action = self._action
        self.hide()
        if action is not None:
            action()


def readonly_table(model: QAbstractItemModel, *, stretch_last: bool = True) -> QTableView:
    """A compact, read-only, row-selecting table with no vertical header."""
    view = QTableView()
    view.setModel(model)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setAlternatingRowColors(True)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 8)
    header = view.horizontalHeader()
    header.setHighlightSections(False)
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setStretchLastSection(stretch_last)
    model.modelReset.connect(lambda: fit_columns(view))
    return view


def sortable_table(
    model: QAbstractItemModel,
    *,
    sort_role: int,
    sort_column: int,
    widths: Sequence[int] = (),
    multi_select: bool = False,
) -> tuple[QSortFilterProxyModel, QTableView]:
    """A read-only, row-selecting table sorted through a proxy on ``sort_role`` (raw values, not text).

    Column widths are fixed starting points rather than fitted to contents: these tables fill in
    live, and refitting on every refresh would make the columns jump under the user's eyes.
    """
    proxy = QSortFilterProxyModel(model)
    proxy.setSourceModel(model)
    proxy.setSortRole(sort_role)
    view = QTableView()
    view.setModel(proxy)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setSelectionMode(
        QAbstractItemView.SelectionMode.ExtendedSelection
        if multi_select
        else QAbstractItemView.SelectionMode.SingleSelection
    )
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setAlternatingRowColors(True)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.setSortingEnabled(True)
    view.sortByColumn(sort_column, Qt.SortOrder.AscendingOrder)
    view.verticalHeader().hide()
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 10)
    header = view.horizontalHeader()
    header.setHighlightSections(False)
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    header.setStretchLastSection(True)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    for col, width in enumerate(widths):
        view.setColumnWidth(col, width)
    return proxy, view


def fit_columns(view: QTableView, max_width: int = 320) -> None:
    """Size columns to their contents (bounded), so headers and values are not truncated."""
    header = view.horizontalHeader()
    model = view.model()
    if model is None:
        return
    # The stretched section is the last *visible* one (e.g. a signature without shapes hides Shape).
    visible = [c for c in range(model.columnCount()) if not view.isColumnHidden(c)]
    last = visible[-1] if visible else -1
    for col in visible:
        if col == last and header.stretchLastSection():
            continue
        view.resizeColumnToContents(col)
        header.resizeSection(col, min(max(header.sectionSize(col), header.sectionSizeHint(col)), max_width))
    if header.stretchLastSection() and last >= 0:
        # A stretched last section keeps its old width when the others overflow; shrink it so it
        # only takes the room that is left (Qt re-stretches it when there is any).
        header.setStretchLastSection(False)
        header.resizeSection(last, max(header.minimumSectionSize(), 60))
        header.setStretchLastSection(True)
