"""The details pane: everything known about one model version, read-only."""

from __future__ import annotations

import html
from typing import Any

from modeldeck.core.formatting import format_size
from modeldeck.core.registry.types import SignatureColumn, VersionDetails
from modeldeck.gui import style
from modeldeck.gui.registry.models import RowsModel, format_number, format_time
from modeldeck.gui.widgets import MessageBanner, fit_columns, pretty_json, readonly_table
from PySide6.QtCore import Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QFrame,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

SIGNATURE_HEADERS = ("Name", "Type", "Optional", "Shape")


def format_shape(shape: tuple[int, ...] | None) -> str:
    """``(-1,)`` → "n", ``(-1, 4)`` → "n × 4": the batch axis reads as "any number of rows" (see the note)."""
    if shape is None:
        return ""
    if not shape:
        return "scalar"
    dims = ["n" if i == 0 and d == -1 else "any" if d == -1 else str(d) for i, d in enumerate(shape)]
    return " × ".join(dims)


def signature_rows(columns: tuple[SignatureColumn, ...], kind: str) -> list[tuple[str, ...]]:
    """Rows for a signature table; unnamed tensors are called "input"/"output" (numbered if several)."""
    rows = []
    for i, c in enumerate(columns, start=1):
        name = c.name or (kind if len(columns) == 1 else f"{kind} {i}")
        rows.append((name, c.type, "yes" if c.optional else "no", format_shape(c.shape)))
    return rows


def _chip(text: str) -> str:
    return (
        f'<span style="background:{style.ALIAS_BG}; color:{style.ALIAS_FG}; font-weight:600;">'
        f"&nbsp;@{html.escape(text)}&nbsp;</span>"
    )


def _titled(title: str, widget: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 4, 0, 0)
    layout.setSpacing(4)
    label = QLabel(title)
    label.setProperty("role", "pane-title")
    layout.addWidget(label)
    layout.addWidget(widget, 1)
    return box


def _facts_table(facts: list[tuple[str, str]], description: str, per_row: int = 2) -> str:
    """Label/value pairs ``per_row`` to a row (the source run, often long, gets a row of its own), then the
    description. One per row, values may wrap: a narrow pane shows every value instead of clipping the right half."""
    label_style = f'style="color:{style.MUTED}; padding-right:6px; white-space:nowrap;"'
    value_style = 'style="padding-right:18px; white-space:nowrap;"' if per_row > 1 else 'style="padding-right:6px;"'

    def pair(label: str, value: str, span: int = 1) -> str:
        colspan = f' colspan="{span}"' if span > 1 else ""
        return f"<td {label_style}>{html.escape(label)}</td><td{colspan} {value_style}>{html.escape(value)}</td>"

    rows: list[str] = []
    pending: list[str] = []
    for label, value in facts:
        if label == "Source run":
            if pending:
                rows.append("".join(pending))
                pending = []
            rows.append(pair(label, value, span=2 * per_row - 1))
            continue
        pending.append(pair(label, value))
        if len(pending) == per_row:
            rows.append("".join(pending))
            pending = []
    if pending:
        rows.append("".join(pending))
    table = '<table cellspacing="0" cellpadding="1">' + "".join(f"<tr>{r}</tr>" for r in rows) + "</table>"
    desc = f'<p style="margin-top:4px;">{html.escape(description)}</p>' if description else ""
    return table + desc


FACTS_TWO_COLUMNS_MIN_WIDTH = 520  # below it the header facts go one pair per row


class DetailsPane(QWidget):
    """Header (name, version, aliases, status, run) over tabs: signature, metrics & params, artifacts, example."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.details: VersionDetails | None = None
        self._facts: tuple[list[tuple[str, str]], str] | None = None
        self._facts_per_row = 0
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.banner = MessageBanner()
        outer.addWidget(self.banner)
        self.stack = QStackedWidget()
        outer.addWidget(self.stack, 1)

        self.empty_label = QLabel("Select a version to see its signature, metrics, parameters and artifacts.")
        self.empty_label.setProperty("role", "empty")
        self.empty_label.setWordWrap(True)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        # Titled like the Models and Versions panes, so the three empty-state messages line up.
        self.empty_page = _titled("Details", self.empty_label)
        self.empty_page.layout().setContentsMargins(0, 6, 0, 0)
        self.stack.addWidget(self.empty_page)

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary = QLabel()
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for label in (self.title, self.summary):  # clipped rather than widening the window
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.warnings = MessageBanner()
        layout.addWidget(self.title)
        layout.addWidget(self.summary)
        layout.addWidget(self.warnings)

        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(False)
        layout.addWidget(self.tabs, 1)

        self.inputs_model = RowsModel(SIGNATURE_HEADERS, self)
        self.outputs_model = RowsModel(SIGNATURE_HEADERS, self)
        self.inputs_view = readonly_table(self.inputs_model)
        self.outputs_view = readonly_table(self.outputs_model)
        self.signature_note = QLabel()
        self.signature_note.setProperty("role", "muted")
        self.signature_note.setWordWrap(True)  # a long note must not set the window's minimum width
        sig = QWidget()
        sig_layout = QVBoxLayout(sig)
        sig_layout.setContentsMargins(6, 6, 6, 6)
        sig_layout.addWidget(self.signature_note)
        sig_split = QSplitter(Qt.Orientation.Vertical)
        sig_split.addWidget(_titled("Inputs", self.inputs_view))
        sig_split.addWidget(_titled("Outputs", self.outputs_view))
        sig_split.setStretchFactor(0, 3)
        sig_split.setStretchFactor(1, 1)
        sig_layout.addWidget(sig_split, 1)
        self.tabs.addTab(sig, "Signature")

        self.metrics_model = RowsModel(("Metric", "Value"), self)
        self.params_model = RowsModel(("Parameter", "Value"), self)
        self.metrics_view = readonly_table(self.metrics_model)
        self.params_view = readonly_table(self.params_model)
        run = QWidget()
        run_layout = QVBoxLayout(run)
        run_layout.setContentsMargins(6, 6, 6, 6)
        run_split = QSplitter(Qt.Orientation.Vertical)
        run_split.addWidget(_titled("Metrics", self.metrics_view))
        run_split.addWidget(_titled("Parameters", self.params_view))
        run_layout.addWidget(run_split, 1)
        self.tabs.addTab(run, "Metrics && params")

        self.tags_model = RowsModel(("Tag", "Value", "On"), self)
        self.tags_view = readonly_table(self.tags_model)
        self.tabs.addTab(self._padded(self.tags_view), "Tags")

        self.artifacts = QTreeWidget()
        self.artifacts.setObjectName("artifacts")
        self.artifacts.setHeaderLabels(["Artifact", "Size"])
        self.artifacts.setUniformRowHeights(True)
        self.artifacts.header().setStretchLastSection(False)
        self.artifacts.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.artifacts.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.tabs.addTab(self._padded(self.artifacts), "Artifacts")

        self.example = QPlainTextEdit()
        self.example.setReadOnly(True)
        self.example.setFont(style.monospace_font())
        self.example.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.tabs.addTab(self._padded(self.example), "Example")
        self.stack.addWidget(body)

    @staticmethod
    def _padded(widget: QWidget) -> QWidget:
        box = QFrame()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(widget)
        return box

    # -- states -----------------------------------------------------------------------------------
    def _layout_facts(self) -> None:
        per_row = 2 if self.width() >= FACTS_TWO_COLUMNS_MIN_WIDTH else 1
        if self._facts is not None and per_row != self._facts_per_row:
            self._facts_per_row = per_row
            self.summary.setText(_facts_table(*self._facts, per_row=per_row))

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._layout_facts()

    def show_empty(self, text: str | None = None) -> None:
        self.details = None
        self.empty_label.setText(text or "Select a version to see its signature, metrics, parameters and artifacts.")
        self.stack.setCurrentWidget(self.empty_page)

    def show_loading(self, ref: str) -> None:
        self.banner.hide()
        if self.details is None:
            self.empty_label.setText(f"Loading {ref}…")
            self.stack.setCurrentWidget(self.empty_page)

    def show_error(self, text: str, retry: Any = None) -> None:
        self.banner.show_message(text, action_text="Retry" if retry else None, action=retry)

    def show_details(self, d: VersionDetails) -> None:
        self.details = d
        self.banner.hide()
        v = d.version
        chips = " ".join(_chip(a) for a in v.aliases)
        self.title.setText(
            f'<span style="font-size:13pt; font-weight:600;">{html.escape(v.name)}</span>'
            f'&nbsp;&nbsp;<span style="font-size:13pt; color:{style.MUTED};">version {html.escape(v.version)}</span>'
            f"&nbsp;&nbsp;{chips}"
        )
        facts: list[tuple[str, str]] = [
            ("Status", v.status.replace("_", " ").title()),
            ("Created", format_time(v.creation_time)),
        ]
        if d.run is not None:
            run_label = d.run.run_name or d.run.run_id[:12]
            facts.append(("Source run", f"{run_label} ({d.run.run_id[:12]})"))
        elif v.run_id:
            facts.append(("Source run", v.run_id[:12]))
        facts.append(("Flavors", ", ".join(d.flavors) or "none recorded"))
        if d.size_bytes is not None:
            facts.append(("Size", format_size(d.size_bytes)))
        self._facts = (facts, v.description)
        self._facts_per_row = 0
        self._layout_facts()
        self.summary.setToolTip(d.model_uri)

        if d.warnings:
            self.warnings.show_message("Some parts could not be read: " + "; ".join(d.warnings), kind="warning")
        else:
            self.warnings.hide()

        if d.signature is None:
            self.signature_note.setText("This version was logged without a signature.")
            self.inputs_model.set_rows([])
            self.outputs_model.set_rows([])
        else:
            kind = "named columns" if d.signature.input_kind == "columns" else "a tensor"
            columns = (*d.signature.inputs, *d.signature.outputs)
            batch = "  Shape n = any number of rows." if any(c.shape and c.shape[0] == -1 for c in columns) else ""
            self.signature_note.setText(
                f"Takes {kind}: {len(d.signature.inputs)} input(s), {len(d.signature.outputs)} output(s).{batch}"
            )
            self.inputs_model.set_rows(signature_rows(d.signature.inputs, "input"))
            self.outputs_model.set_rows(signature_rows(d.signature.outputs, "output"))
        # Column-based inputs have no shape: an all-empty Shape column only raises questions.
        shape_col = SIGNATURE_HEADERS.index("Shape")
        for view, model in ((self.inputs_view, self.inputs_model), (self.outputs_view, self.outputs_model)):
            view.setColumnHidden(shape_col, not any(model.cell(r, shape_col) for r in range(model.rowCount())))

        run = d.run
        metrics = sorted((run.metrics if run else {}).items())
        self.metrics_model.set_rows([(k, format_number(val)) for k, val in metrics], raw=metrics)
        self.params_model.set_rows(sorted((run.params if run else {}).items()))
        tag_rows = [(k, val, "version") for k, val in sorted(v.tags.items())]
        if run:
            tag_rows += [(k, val, "run") for k, val in sorted(run.tags.items()) if not k.startswith("mlflow.")]
        self.tags_model.set_rows(tag_rows)
        self._fill_artifacts(d)
        if d.input_example is None:
            self.example.setPlainText("No input example was logged with this version.")
        else:
            self.example.setPlainText(pretty_json(d.input_example))
        for view in (self.inputs_view, self.outputs_view, self.metrics_view, self.params_view, self.tags_view):
            fit_columns(view)
        self.stack.setCurrentIndex(1)

    def _fill_artifacts(self, d: VersionDetails) -> None:
        self.artifacts.clear()
        nodes: dict[str, QTreeWidgetItem] = {}
        for entry in sorted(d.artifacts, key=lambda e: e.path):
            parent_path, _, leaf = entry.path.rstrip("/").rpartition("/")
            parent = nodes.get(parent_path)
            name = leaf if parent is not None and leaf else entry.path
            item = QTreeWidgetItem([name, "" if entry.is_dir else format_size(entry.size)])
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if parent is None:
                self.artifacts.addTopLevelItem(item)
            else:
                parent.addChild(item)
            if entry.is_dir:
                nodes[entry.path.rstrip("/")] = item
        self.artifacts.setRootIsDecorated(any(e.is_dir for e in d.artifacts))
        self.artifacts.expandAll()
        if not d.artifacts:
            self.artifacts.addTopLevelItem(QTreeWidgetItem(["No artifacts listed", ""]))
