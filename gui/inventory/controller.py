"""Wires the Hosts page into the main window (a page, loaded in a worker when installed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modeldeck.gui.inventory.page import InventoryPage
from PySide6.QtCore import QObject

if TYPE_CHECKING:
    from modeldeck.gui.main_window import MainWindow


class InventoryUI(QObject):
    """Owns the Hosts page."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.page = InventoryPage(window.settings.config_dir)
        self.page_index = window.add_page("Hosts", self.page, refresh=self.page.reload)
        self.page.statusMessage.connect(window.show_status)
        window.destroyed.connect(self.page.stop_watching)
        self.page.reload()


def install_inventory_ui(window: MainWindow) -> InventoryUI:
    """Add the Hosts page to ``window``."""
    return InventoryUI(window)
