"""Human-readable figures shared by the CLI and the GUI, so both show the same units."""

from __future__ import annotations


def format_size(size: int | None, missing: str = "") -> str:
    """Bytes in IEC units (``512 B``, ``3.7 MiB``); ``missing`` when the size is unknown."""
    if size is None:
        return missing
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # unreachable: the loop always returns at GiB
