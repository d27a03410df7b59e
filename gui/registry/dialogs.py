"""Compare two versions side by side; move or set an alias with an explicit confirmation."""

from __future__ import annotations

import re
from typing import Any

from modeldeck.core.registry.types import ModelVersion, ValueDiff, VersionComparison
from modeldeck.gui import style
from modeldeck.gui.registry.models import RowsModel, format_number
from modeldeck.gui.widgets import fit_columns, readonly_table
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

# MLflow's alias rules: letters, digits, '_' and '-', not "latest", not "v<number>" (that means a version).
ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
SUGGESTED_ALIASES = ("champion", "challenger")


def alias_problem(alias: str) -> str | None:
    """Why ``alias`` cannot be used, or None if it can."""
    if not alias:
        return "Type or pick an alias."
    if not ALIAS_RE.match(alias):
        return "An alias may contain only letters, digits, '_' and '-' (at most 255)."
    if alias.lower() == "latest":
        return "'latest' is reserved by MLflow."
    if re.fullmatch(r"[vV]\d+", alias):
        return f"'{alias}' would read as a version number; choose another name."
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def _delta(d: ValueDiff) -> str:
    a, b = d.a, d.b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        diff = b - a
        if diff == 0:
            return "0"
        sign = "+" if diff > 0 else "−"
        rel = f" ({diff / abs(a) * 100:+.1f}%)" if a else ""
        return f"{sign}{format_number(abs(diff))}{rel}"
    return "changed" if d.changed else ""


class CompareDialog(QDialog):
    """Metrics, params and tags of two versions side by side, changed values highlighted."""

    def __init__(self, comparison: VersionComparison, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        a, b = comparison.a, comparison.b
        self.setWindowTitle(f"Compare {a.name} v{a.version} and v{b.version}")
        self.comparison = comparison
        layout = QVBoxLayout(self)
        changed = sum(d.changed for d in (*comparison.metrics, *comparison.params, *comparison.tags))
        summary = QLabel(
            f"<b>{a.name}</b>: version {a.version} ({', '.join('@' + x for x in a.aliases) or 'no alias'}) "
            f"against version {b.version} ({', '.join('@' + x for x in b.aliases) or 'no alias'}) — "
            f"{changed} value(s) differ, highlighted."
        )
        summary.setWordWrap(True)
        layout.addWidget(summary)
        self.tabs = QTabWidget()
        layout.addWidget(self.tabs, 1)
        self.models: dict[str, RowsModel] = {}
        for title, diffs, with_delta in (
            ("Metrics", comparison.metrics, True),
            ("Parameters", comparison.params, False),
            ("Tags", comparison.tags, False),
        ):
            delta = f"Δ v{b.version} − v{a.version}"
            headers = ["Name", f"v{a.version}", f"v{b.version}"] + ([delta] if with_delta else [])
            model = RowsModel(headers, self)
            rows = []
            for d in diffs:
                row = [d.key, _fmt(d.a), _fmt(d.b)]
                if with_delta:
                    row.append(_delta(d))
                rows.append(row)
            model.set_rows(
                rows,
                highlight={i for i, d in enumerate(diffs) if d.changed},
                align_right={1, 2, 3} if with_delta else set(),
            )
            view = readonly_table(model, stretch_last=False)
            fit_columns(view)
            header = view.horizontalHeader()
            header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
            for col in range(1, len(headers)):
                header.resizeSection(col, max(header.sectionSize(col), 110))
            self.models[title] = model
            self.tabs.addTab(view, f"{title} ({sum(d.changed for d in diffs)} changed)")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(720, 460)


class PromoteDialog(QDialog):
    """Pick or type an alias for a version; the dialog states exactly what will change before OK."""

    def __init__(
        self,
        version: ModelVersion,
        model_aliases: dict[str, str],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.version = version
        self.model_aliases = dict(model_aliases)
        self.setWindowTitle(f"Promote {version.name} version {version.version}")
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.alias_box = QComboBox()
        self.alias_box.setEditable(True)
        self.alias_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        names = list(SUGGESTED_ALIASES) + sorted(a for a in self.model_aliases if a not in SUGGESTED_ALIASES)
        for name in names:
            where = self.model_aliases.get(name)
            self.alias_box.addItem(name)
            if where:
                self.alias_box.setItemData(
                    self.alias_box.count() - 1, f"now on version {where}", Qt.ItemDataRole.ToolTipRole
                )
        self.alias_box.setCurrentText("champion" if "champion" not in version.aliases else "challenger")
        form.addRow("Alias:", self.alias_box)
        current = ", ".join(f"@{a} → v{v}" for a, v in sorted(self.model_aliases.items())) or "none"
        existing = QLabel(current)
        existing.setProperty("role", "muted")
        existing.setWordWrap(True)
        form.addRow("Current aliases:", existing)
        layout.addLayout(form)
        self.confirmation = QLabel()
        self.confirmation.setWordWrap(True)
        self.confirmation.setMinimumHeight(self.fontMetrics().height() * 3)
        layout.addWidget(self.confirmation)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = QPushButton("Set alias")
        self.ok_button.setDefault(True)
        self.buttons.addButton(self.ok_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.alias_box.editTextChanged.connect(self._update)
        self._update()
        self.setMinimumWidth(460)

    @property
    def alias(self) -> str:
        return self.alias_box.currentText().strip()

    def confirmation_text(self) -> str:
        return self.confirmation.text()

    def _update(self) -> None:
        alias, v = self.alias, self.version
        problem = alias_problem(alias)
        if problem:
            self.confirmation.setText(problem)
            self.confirmation.setStyleSheet(f"color: {style.ERROR_FG};")
            self.ok_button.setEnabled(False)
            return
        self.confirmation.setStyleSheet("")
        where = self.model_aliases.get(alias)
        if where == v.version:
            self.confirmation.setText(f"Alias '{alias}' is already on version {v.version} of {v.name}.")
            self.ok_button.setEnabled(False)
            return
        if where:
            text = f"Move alias '{alias}' from version {where} to version {v.version} of {v.name}?"
            self.ok_button.setText("Move alias")
        else:
            text = f"Set alias '{alias}' on version {v.version} of {v.name}?"
            self.ok_button.setText("Set alias")
        self.confirmation.setText(text + " Deployments that follow this alias will pick up the new version.")
        self.ok_button.setEnabled(True)


def default_pair(versions: list[ModelVersion], selected: ModelVersion | None) -> tuple[str, str]:
    """Which two versions to propose: the selected one against the champion, or else the one before it."""
    numbers = [v.version for v in versions]
    a = selected.version if selected is not None and selected.version in numbers else numbers[0]
    champion = next((v.version for v in versions if "champion" in v.aliases), None)
    if champion is not None and champion != a:
        return a, champion
    older = [n for n in numbers if n != a and (not (n.isdigit() and a.isdigit()) or int(n) < int(a))]
    others = [n for n in numbers if n != a]
    b = max(older, key=lambda n: (n.isdigit(), int(n) if n.isdigit() else 0, n)) if older else others[0]
    return a, b


class ComparePickerDialog(QDialog):
    """Choose two versions to compare — the Compare button's path when fewer than two rows are selected."""

    def __init__(self, versions: list[ModelVersion], selected: ModelVersion | None, parent: QWidget | None = None):
        super().__init__(parent)
        if len(versions) < 2:
            raise ValueError("need at least two versions to compare")
        self.setWindowTitle(f"Compare versions of {versions[0].name}")
        layout = QVBoxLayout(self)
        intro = QLabel("Pick two versions. (Tip: Ctrl+click two rows in the table and press Compare.)")
        intro.setWordWrap(True)
        intro.setProperty("role", "muted")
        layout.addWidget(intro)
        form = QFormLayout()
        self.a_box, self.b_box = QComboBox(), QComboBox()
        for box in (self.a_box, self.b_box):
            for v in versions:
                aliases = "  " + " ".join(f"@{a}" for a in v.aliases) if v.aliases else ""
                box.addItem(f"version {v.version}{aliases}", v.version)
        self._by_number = {v.version: v for v in versions}
        a, b = default_pair(versions, selected)
        self.a_box.setCurrentIndex(self.a_box.findData(a))
        self.b_box.setCurrentIndex(self.b_box.findData(b))
        form.addRow("Compare:", self.a_box)
        form.addRow("with:", self.b_box)
        layout.addLayout(form)
        self.problem = QLabel()
        self.problem.setStyleSheet(f"color: {style.ERROR_FG};")
        layout.addWidget(self.problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = QPushButton("Compare")
        self.ok_button.setDefault(True)
        self.buttons.addButton(self.ok_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)
        self.a_box.currentIndexChanged.connect(self._update)
        self.b_box.currentIndexChanged.connect(self._update)
        self._update()
        self.setMinimumWidth(380)

    def chosen(self) -> tuple[ModelVersion, ModelVersion]:
        return self._by_number[self.a_box.currentData()], self._by_number[self.b_box.currentData()]

    def _update(self) -> None:
        same = self.a_box.currentData() == self.b_box.currentData()
        self.problem.setText("Choose two different versions." if same else "")
        self.problem.setVisible(same)
        self.ok_button.setEnabled(not same)
