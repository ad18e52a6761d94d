"""Atomic file writes and users' paths: the one way every run file is written.

A run's files (checkpoints, config.json, log.csv, curves.png) are each written to a temporary
file beside the target, flushed to disk, then renamed over it: a crash, a full disk or a
Ctrl-C leaves either the old file or the new one, never half of either.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary file ``.<name>.tmp`` beside ``path``, then rename it over
    ``path``. On any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def user_path(p: str | Path) -> Path:
    """A user's path: ``~`` expanded (a shell leaves it alone in --NAME=~/x), made absolute."""
    return Path(p).expanduser().resolve()


def rel(p: Path | str) -> str:
    """``p`` relative to the working folder when that is shorter to read (for messages)."""
    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)
