"""A read-only log view fed from worker threads: lines are queued, and a QTimer drains them in batches.

A build can print thousands of lines a second; one signal (and one repaint) per line would swamp
the UI thread. Workers call :meth:`StreamingLogView.sink` (a thread-safe ``queue.put``); the
UI thread appends whatever has accumulated every ``drain_ms``, at most ``max_batch`` lines per
tick, and the document keeps only the last ``max_lines`` lines.
"""

from __future__ import annotations

import queue
import re

from modeldeck.gui import style
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor, QTextCharFormat, QTextCursor, QTextFormat
from PySide6.QtWidgets import QPlainTextEdit, QTextEdit, QWidget

DRAIN_MS = 50
MAX_BATCH = 500
MAX_LINES = 5000
_STEP = re.compile(r"^(Step \d+/\d+ :|#\d+ \[)")
FAILED_STEP_BG = "#fdecec"
FAILED_STEP_FG = "#9b1c1c"


class StreamingLogView(QPlainTextEdit):
    """Read-only, monospace, capped at ``max_lines``; follows the end unless the user scrolled up."""

    drained = Signal(int)  # lines appended by one tick

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        drain_ms: int = DRAIN_MS,
        max_batch: int = MAX_BATCH,
        max_lines: int = MAX_LINES,
    ) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setFont(style.monospace_font())
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setMaximumBlockCount(max_lines)
        self.setPlaceholderText("The build log appears here.")
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.received = 0  # lines drained so far (including ones since scrolled out of the cap)
        self.timer = QTimer(self)
        self.timer.setInterval(drain_ms)
        self.timer.timeout.connect(self.drain)

    def sink(self, line: str) -> None:
        """Queue one line; safe to call from any thread."""
        self._queue.put(line)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> None:
        """Stop draining after taking everything queued so far."""
        self.timer.stop()
        while self.drain():
            pass

    def drain(self) -> int:
        """Append up to ``max_batch`` queued lines in one edit; returns how many."""
        lines: list[str] = []
        while len(lines) < self.max_batch:
            try:
                lines.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not lines:
            return 0
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.appendPlainText("\n".join(line.rstrip("\n") for line in lines))
        if at_end:
            bar.setValue(bar.maximum())
        self.received += len(lines)
        self.drained.emit(len(lines))
        return len(lines)

    def highlight_failing_step(self) -> str | None:
        """Mark the last build step and the lines after it (the step that failed); returns that step's line.

        None (nothing marked) if the log has no step, or the build finished ("Successfully built").
        """
        doc = self.document()
        block = doc.lastBlock()
        while block.isValid() and not _STEP.match(block.text()):
            block = block.previous()
        if not block.isValid():
            return None
        after = block.next()
        while after.isValid():
            if after.text().startswith("Successfully built"):
                return None  # the build passed: whatever failed came later, no step to blame
            after = after.next()
        selections = []
        fmt = QTextCharFormat()
        fmt.setBackground(QColor(FAILED_STEP_BG))
        fmt.setForeground(QColor(FAILED_STEP_FG))
        fmt.setProperty(QTextFormat.Property.FullWidthSelection, True)
        b = block
        while b.isValid():
            selection = QTextEdit.ExtraSelection()
            selection.cursor = QTextCursor(b)  # type: ignore[attr-defined]
            selection.format = fmt  # type: ignore[attr-defined]
            selections.append(selection)
            b = b.next()
        self.setExtraSelections(selections)
        cursor = QTextCursor(block)
        self.setTextCursor(cursor)
        self.centerCursor()
        return block.text()

    def highlighted_lines(self) -> list[str]:
        return [s.cursor.block().text() for s in self.extraSelections()]

    def clear_log(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self.setExtraSelections([])
        self.clear()
        self.received = 0
