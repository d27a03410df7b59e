"""Writing ModelDeck's own files safely (settings, inventory, pins, catalog, scrape targets)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new one, never part of either.

    The temp file lives in the same folder (a rename is atomic only within one file system) under a
    unique name (two writers never share one), is fsynced before the rename (a crash cannot leave an
    empty file behind) and gets ``mode`` first -- 0o600 by default, since these files name hosts,
    users and URLs; pass 0o644 for files another user's process must read (Prometheus' file_sd).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
