"""The one error boundary of every entry point: a user's fault ends in one line and an exit code.

    @errors.entry_point
    def main(argv: list[str] | None = None) -> None: ...

    ConfigError (a bad constant or flag)           "error (bad constant): ..."   exit 2
    DataError, TrainingError, OSError (no space,   "error: ..." naming the path  exit 1
      permission, not a folder, no such file),       and what to do
      PIL's DecompressionBombError
    KeyboardInterrupt (Ctrl-C)                     "interrupted: ..."            exit 130
    anything else: a bug, whose traceback is shown as Python shows it.

Importing this module (common/__init__.py does, so before torch loads) also makes a Ctrl-C that
arrives while an entry point is still importing end in one line: the process still ends by
SIGINT, as a shell expects of an interrupted program. Only the standard library is imported
here, so that this hook is in place before the slow imports start.
"""
from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from common.config import ConfigError  # the standard library only: no torch behind it

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONSTANT, EXIT_ERROR, EXIT_INTERRUPTED = 2, 1, 130
INTERRUPTED = "interrupted: stopped before it finished (files are written whole or not at all)"

# What to do about an OSError, by errno; "{path}" is the file or folder it names.
_ADVICE = {
    errno.ENOSPC: "no space left on the disk holding {path}: free some space, or point DATA_DIR / "
                  "RUNS_DIR at another disk",
    errno.EDQUOT: "disk quota exceeded at {path}: free some space, or point DATA_DIR / RUNS_DIR elsewhere",
    errno.EACCES: "{path} cannot be written or read by this user: fix its permissions or choose another path",
    errno.EPERM: "{path} cannot be written or read by this user: fix its permissions or choose another path",
    errno.EROFS: "{path} is on a read-only file system: choose a path on a writable disk",
    errno.ENOTDIR: "a part of {path} is a file, not a folder: choose another path or move that file",
    errno.EISDIR: "{path} is a folder where a file was expected: give the file's path",
    errno.ENOENT: "{path} does not exist: check the path",
}


# Exceptions a user's data or run can raise, by module: looked up only where that module is
# loaded already (an exception of a module never imported cannot be raised), so this module
# itself loads neither torch nor PIL.
_ONE_LINERS = (("common.datasets", "DataError"), ("common.checkpoint", "TrainingError"))
_BOMB = ("PIL.Image", "DecompressionBombError")


def _loaded(module: str, name: str) -> type[BaseException] | None:
    return getattr(sys.modules.get(module), name, None)


def os_message(e: OSError) -> str:
    """One line for an OS-level failure: the path it names and what to do."""
    path = e.filename
    if path is None:  # no path to name (a socket, a pipe): the system's own words
        return e.strerror or str(e)
    advice = _ADVICE.get(e.errno or 0)
    return advice.format(path=os.fsdecode(path)) if advice else f"{os.fsdecode(path)}: {e.strerror or e}"


def message(e: BaseException) -> tuple[str, int] | None:
    """(the line to print, the exit code) for a user's fault; None for a bug (its traceback shows)."""
    if isinstance(e, ConfigError):
        return f"error (bad constant): {e}", EXIT_CONSTANT
    if isinstance(e, KeyboardInterrupt):
        return INTERRUPTED, EXIT_INTERRUPTED
    if isinstance(e, OSError):
        return f"error: {os_message(e)}", EXIT_ERROR
    bomb = _loaded(*_BOMB)
    if bomb is not None and isinstance(e, bomb):
        return (f"error: {e}. An image that large is refused as a possible decompression bomb: "
                f"pass a smaller image"), EXIT_ERROR
    if any(kind is not None and isinstance(e, kind) for kind in (_loaded(*k) for k in _ONE_LINERS)):
        return f"error: {e}", EXIT_ERROR
    return None


def entry_point(main: F | None = None, *, interrupted: str = INTERRUPTED) -> Any:
    """Run ``main`` inside the boundary: a user's fault is one line on stderr and ``sys.exit``
    with its code; a bug propagates with its traceback. ``@entry_point`` or, with the line a
    Ctrl-C prints, ``@entry_point(interrupted="interrupted: ...")``."""
    if main is None:
        return functools.partial(entry_point, interrupted=interrupted)

    @functools.wraps(main)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - sorted by message(), bugs re-raised
            said = message(e)
            if said is None:
                raise
            line, code = said
            if code == EXIT_INTERRUPTED:
                line = "\n" + interrupted  # after a progress bar's half line
            print(line, file=sys.stderr, flush=True)
            sys.exit(code)

    return guarded


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """A Ctrl-C that reaches the top (an entry point still importing torch): one line, no traceback."""
    if issubclass(kind, KeyboardInterrupt):
        print("\ninterrupted while starting: nothing was done", file=sys.stderr, flush=True)
        return  # Python then ends by SIGINT (exit status 130 in a shell)
    _previous_hook(kind, value, tb)


if getattr(sys.excepthook, "__module__", None) != __name__:  # a reload keeps the first one's
    _previous_hook = sys.excepthook
sys.excepthook = _excepthook
