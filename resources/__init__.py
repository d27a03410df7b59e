"""Icons, styles and demo data shipped with ModelDeck (read with importlib.resources)."""
