"""The PySide6 desktop application. Depends on ``modeldeck.core``; never the reverse."""
