"""Atomic file writes, a run folder's lock and users' paths: the one way every run file is written.

A run's files (checkpoints, config.json, log.csv, curves.png) are each written to a temporary
file beside the target, flushed to disk, then renamed over it: a crash, a full disk or a
Ctrl-C leaves either the old file or the new one, never half of either. The temporary name is
unique to the process and the call (``.<name>.<pid>.<random>.tmp``), so two writers never share one.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


class _Recorded:
    """A file that remembers what its ``write``/``flush`` raised: a writer such as torch's zip
    writer turns a full disk (OSError) or a second Ctrl-C (KeyboardInterrupt) into its own
    ``RuntimeError: [enforce fail ...]``, and ``atomic_write`` raises the original instead."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: BaseException | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except BaseException as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except BaseException as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str) -> Any:  # tell, seek, fileno, ... as the file has them
        return getattr(self._f, name)


def tmp_name(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or call uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path`` (see ``tmp_name``), then rename it
    over ``path``. On any error the temporary file is removed and ``path`` is left as it was; an
    error of the file itself (OSError, KeyboardInterrupt) is raised as itself even when ``write``
    turned it into another exception."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as raw:
            f = _Recorded(raw)
            try:
                write(f)  # type: ignore[arg-type]
            except BaseException as e:
                if f.error is not None and f.error is not e:
                    raise f.error from e
                raise
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Delete the temporary files in ``folder`` that a process killed mid-write left (their writer,
    named in the file name, no longer runs on this machine); the removed paths."""
    removed = []
    for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
        pid = p.name.rsplit(".", 3)[-3] if p.name.count(".") >= 4 else ""
        if pid.isdigit() and not pid_running(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def pid_running(pid: int) -> bool:
    """True if process ``pid`` exists on this machine and is not a zombie (its files closed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:  # Linux: "pid (name) S ..."; Z is a zombie
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


class FolderBusy(Exception):
    """Another process holds the lock: ``holder`` is what it recorded (pid, host, command, since)."""

    def __init__(self, path: Path, holder: dict[str, Any] | None) -> None:
        super().__init__(str(path))
        self.path, self.holder = path, holder

    def who(self) -> str:
        h = self.holder
        if not h:
            return f"another process (`fuser -v {self.path}` names it)"
        host = f" on {h['host']}" if h.get("host") not in (None, socket.gethostname()) else ""
        command = _one_line(str(h.get("command", "?")))
        return f"PID {h.get('pid', '?')}{host} (since {h.get('since', '?')}; command: {command})"


class HeldLock:
    """An exclusive lock on the file ``path``, taken at once or refused (``FolderBusy``), never
    waited for; held until ``release()`` or the end of the process (the kernel drops it then).

    The holder writes who it is into the file, so the one refused can name it. A child forked
    while it is held shares it: take it after the data's decode workers are done."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._f: IO[str] | None = None

    def acquire(self) -> HeldLock:
        try:
            import fcntl
        except ImportError:  # Windows: no lock; one process per run folder is up to the user
            return self
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise FolderBusy(self.path, _read_holder(self.path)) from None
        self._f = f
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": _one_line(" ".join(sys.orig_argv)),
                  "since": datetime.now().isoformat(timespec="seconds")}
        try:  # only for the message of a process refused: a full disk must not stop the run
            f.truncate(0)
            f.write(json.dumps(record) + "\n")
            f.flush()
        except OSError:
            pass
        return self

    def release(self) -> None:
        if self._f is not None:
            try:
                self._f.truncate(0)  # a record in a free lock would name a process that is done
            except OSError:
                pass
            self._f.close()  # closing drops the flock
            self._f = None

    def __enter__(self) -> HeldLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _one_line(text: str, most: int = 200) -> str:
    """``text`` on one line (``python -c`` code has newlines), shortened, for a message."""
    line = " ".join(text.split())
    return line if len(line) <= most else line[: most - 3] + "..."


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else None
    except (OSError, ValueError):
        return None


def user_path(p: str | Path) -> Path:
    """A user's path: ``~`` expanded (a shell leaves it alone in --NAME=~/x), made absolute."""
    return Path(p).expanduser().resolve()


def rel(p: Path | str) -> str:
    """``p`` relative to the working folder when that is shorter to read (for messages)."""
    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)
