"""The look: Fusion, a light neutral palette with one accent, and a short stylesheet.

Restrained on purpose — a tool people stare at for hours: no gradients, few
colours, colour only where it carries meaning (aliases, errors, changes).
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

ACCENT = "#2563eb"
TEXT = "#1f2933"
MUTED = "#616e7c"
BORDER = "#d5dbe3"
WINDOW = "#f5f7fa"
BASE = "#ffffff"
ALT = "#f8fafc"
ERROR_BG = "#fdecec"
ERROR_FG = "#9b1c1c"
WARN_BG = "#fff7e0"
WARN_FG = "#8a5a00"
OK_FG = "#166534"
CHANGED_BG = "#fff4ce"
ALIAS_BG = "#e0ebff"
ALIAS_FG = "#1e40af"

STYLESHEET = f"""
QToolBar {{ background: {WINDOW}; border: none; border-bottom: 1px solid {BORDER}; spacing: 4px; padding: 3px 6px; }}
QToolBar QToolButton {{ padding: 4px 10px; border-radius: 4px; }}
QToolBar QToolButton:hover {{ background: #e6ebf2; }}
QToolBar QToolButton:disabled {{ color: #a0a9b4; }}
QStatusBar {{ border-top: 1px solid {BORDER}; color: {MUTED}; }}
QTabWidget::pane {{ border: 1px solid {BORDER}; border-radius: 3px; top: -1px; background: {BASE}; }}
QTabBar::tab {{ padding: 5px 14px; border: 1px solid transparent; color: {MUTED}; }}
QTabBar::tab:selected {{ color: {TEXT}; border: 1px solid {BORDER}; border-bottom-color: {BASE};
    background: {BASE}; border-top-left-radius: 3px; border-top-right-radius: 3px; }}
QTableView, QListView, QTreeView, QTreeWidget {{ border: 1px solid {BORDER}; border-radius: 3px;
    selection-background-color: #dbe7fd; selection-color: {TEXT}; gridline-color: #edf0f4; }}
QHeaderView::section {{ background: {WINDOW}; color: {MUTED}; border: none; border-bottom: 1px solid {BORDER};
    border-right: 1px solid #e8ecf1; padding: 4px 6px; }}
QLineEdit, QComboBox, QPlainTextEdit {{ border: 1px solid {BORDER}; border-radius: 3px; padding: 3px 6px;
    background: {BASE}; }}
QTreeWidget#artifacts::item {{ padding: 3px 0px; }}
QLineEdit:focus, QComboBox:focus, QPlainTextEdit:focus {{ border-color: {ACCENT}; }}
QPushButton {{ border: 1px solid {BORDER}; border-radius: 4px; padding: 4px 12px; background: {BASE}; }}
QPushButton:hover {{ border-color: #aab4c0; }}
QPushButton:default {{ border-color: {ACCENT}; }}
QPushButton:disabled {{ color: #a0a9b4; }}
QLabel[role="pane-title"] {{ font-weight: 600; color: {TEXT}; }}
QLabel[role="muted"] {{ color: {MUTED}; }}
QLabel[role="empty"] {{ color: {MUTED}; padding: 24px; }}
QFrame[role="banner-error"] {{ background: {ERROR_BG}; border: 1px solid #f5c2c2; border-radius: 4px; }}
QFrame[role="banner-error"] QLabel {{ color: {ERROR_FG}; }}
QFrame[role="banner-warning"] {{ background: {WARN_BG}; border: 1px solid #f1dca0; border-radius: 4px; }}
QFrame[role="banner-warning"] QLabel {{ color: {WARN_FG}; }}
QSplitter::handle {{ background: transparent; }}
"""


def apply_style(app: QApplication) -> None:
    """Fusion with a light palette; independent of the desktop theme so screenshots are stable."""
    app.setStyle("Fusion")
    pal = QPalette()
    pal.setColor(QPalette.ColorRole.Window, QColor(WINDOW))
    pal.setColor(QPalette.ColorRole.WindowText, QColor(TEXT))
    pal.setColor(QPalette.ColorRole.Base, QColor(BASE))
    pal.setColor(QPalette.ColorRole.AlternateBase, QColor(ALT))
    pal.setColor(QPalette.ColorRole.Text, QColor(TEXT))
    pal.setColor(QPalette.ColorRole.Button, QColor(BASE))
    pal.setColor(QPalette.ColorRole.ButtonText, QColor(TEXT))
    pal.setColor(QPalette.ColorRole.Highlight, QColor("#dbe7fd"))
    pal.setColor(QPalette.ColorRole.HighlightedText, QColor(TEXT))
    pal.setColor(QPalette.ColorRole.ToolTipBase, QColor(BASE))
    pal.setColor(QPalette.ColorRole.ToolTipText, QColor(TEXT))
    pal.setColor(QPalette.ColorRole.PlaceholderText, QColor("#9aa5b1"))
    pal.setColor(QPalette.ColorRole.Link, QColor(ACCENT))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor("#a0a9b4"))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor("#a0a9b4"))
    app.setPalette(pal)
    font = app.font()
    if font.pointSizeF() < 9.5:
        font.setPointSizeF(9.5)
    app.setFont(font)
    app.setStyleSheet(STYLESHEET)


def monospace_font() -> QFont:
    font = QFont("DejaVu Sans Mono")
    font.setStyleHint(QFont.StyleHint.Monospace)
    return font
