"""Replace a file atomically through a private temporary file in the same directory.

Why: a fixed name such as ``<out>.tmp`` can be planted beforehand (say as a symlink to another file,
which the writer would then overwrite); ``mkstemp`` creates a fresh file with O_EXCL and mode 0600
that nobody else can have prepared, and ``os.replace`` swaps it in, so readers see the old content
or the new, never half of it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write_lines(path: str | Path, lines: Iterable[str], *, mode: int = 0o644) -> int:
    """Write ``lines`` (each already ending in a newline) to ``path``; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
                count += 1
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def atomic_write_text(path: str | Path, text: str, *, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    atomic_write_lines(path, [text], mode=mode)
