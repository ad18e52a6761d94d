"""A train.py's UPPER_CASE constants, overridden from the command line (nanoGPT's way, without exec).

    python resnet/train.py --NUM_EPOCHS=5 --BATCH_SIZE=128 --LR_SCHEDULE=step

Each override is parsed to the type of the constant it replaces and refused, before any work
starts, when the name is unknown, the value does not parse, or a check says it is impossible.
``--help`` lists every constant with its value and the comment written beside it.
"""
from __future__ import annotations

import ast
import inspect
import math
import tempfile
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ALLOWED_TYPES = (bool, int, float, str, tuple)


class ConfigError(ValueError):
    """A constant that cannot be used; the message says which and what would work."""


def constants(module: ModuleType) -> dict[str, Any]:
    """The module's UPPER_CASE constants of plain types, in the order they are written."""
    return {k: v for k, v in vars(module).items()
            if k.isupper() and not k.startswith("_") and isinstance(v, ALLOWED_TYPES)}


def comments(module: ModuleType) -> dict[str, str]:
    """The comment written beside each constant (for --help)."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return {}
    # NAME = value  # comment      (a train.py)   and   "NAME": value,  # comment   (a dict)
    found = re.findall(r'^\s*"?([A-Z][A-Z0-9_]*)"?\s*[=:].*?#\s*(.*)$', source, flags=re.M)
    return {name: text.strip() for name, text in found}


def given(argv: Sequence[str]) -> set[str]:
    """The constants this command line sets (whatever their values)."""
    return {m.group(1) for a in argv if (m := re.fullmatch(r"--([A-Za-z_][A-Za-z0-9_]*)=.*", a, flags=re.S))}


def parse_value(name: str, text: str, default: Any) -> Any:
    """Parse ``text`` to the type of ``default``; raise ConfigError naming the constant."""
    kind = type(default)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is tuple:
            value = ast.literal_eval(text)
            value = tuple(value) if isinstance(value, (list, tuple)) else None
            # Any length: a rule checks it where one length is meant (ADAM_BETAS).
            if value is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                        for v in value):
                raise ValueError
            return value
        return text
    except (ValueError, SyntaxError):
        example = {bool: "True or False", int: "a whole number", float: "a number",
                   tuple: f"a tuple like {default!r}"}.get(kind, "text")
        raise ConfigError(f"--{name}={text!r}: {name} takes {example} (default {default!r})") from None


def parse_args(defaults: dict[str, Any], argv: Sequence[str], *, prog: str = "train.py",
               doc: str = "", notes: dict[str, str] | None = None,
               recipes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return ``defaults`` with the ``--NAME=value`` overrides of ``argv`` applied."""
    cfg = dict(defaults)
    for arg in argv:
        if arg in ("-h", "--help"):
            print(usage(defaults, prog, doc, notes or {}, recipes or {}))
            sys.exit(0)
        m = re.fullmatch(r"--([A-Za-z_][A-Za-z0-9_]*)=(.*)", arg, flags=re.S)
        if not m:
            raise ConfigError(f"cannot read argument {arg!r}: write overrides as --NAME=value, "
                              f"e.g. --NUM_EPOCHS=5 (see --help)")
        name, text = m.groups()
        if name not in defaults:
            close = [k for k in defaults if k.upper() == name.upper() or name.upper() in k]
            hint = f" Did you mean {', '.join(close[:3])}?" if close else ""
            raise ConfigError(f"unknown constant {name}.{hint} See --help for the list.")
        cfg[name] = parse_value(name, text, defaults[name])
    return cfg


def usage(defaults: dict[str, Any], prog: str, doc: str, notes: dict[str, str],
          recipes: dict[str, dict[str, Any]] | None = None) -> str:
    lines = [f"usage: python {prog} [--NAME=value ...]", ""]
    if doc:
        lines += [doc.strip().splitlines()[0], ""]
    lines.append("constants (default value, then the comment beside it in the file):")
    width = max(map(len, defaults), default=0)
    for k, v in defaults.items():
        note = notes.get(k, "")
        lines.append(f"  --{k.ljust(width)} = {v!r:<14} {note}".rstrip())
    if recipes:
        lines += ["", "recipes (--RECIPE=name sets these constants; what the command line sets still wins):"]
        for name, values in recipes.items():
            lines.append(f"  {name}: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return "\n".join(lines)


def check(cfg: dict[str, Any], rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Refuse impossible values: inf and nan in any number (no rule needs to think of them, and a
    comparison with nan is always false), then ``rules[NAME] = (is_ok, what_is_allowed)``."""
    for name, value in cfg.items():
        numbers = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise ConfigError(f"{name}={value!r} is not possible: a finite number is needed")
    for name, (ok, allowed) in rules.items():
        if name in cfg and not ok(cfg[name]):
            raise ConfigError(f"{name}={cfg[name]!r} is not possible: {allowed}")


def check_folder(name: str, path: Path) -> None:
    """Refuse a constant naming a folder the run writes into (DATA_DIR, RUNS_DIR) that is a file,
    is read-only, or cannot be made: tried with a real temporary file, since permissions alone
    do not tell (root writes through them, a read-only mount refuses everyone)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={path} is a file, not a folder: set {name} to a folder (or move the file)")
    above = path
    while not above.exists():  # the nearest existing folder: where the missing ones would be made
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"{name}={path} cannot be made: {above} is a file, not a folder. Set {name} to "
                          f"another path.")
    try:
        with tempfile.TemporaryFile(dir=above):
            pass
    except OSError as e:
        what = "is not writable" if above == path else f"cannot be made: {above} is not writable"
        raise ConfigError(f"{name}={path} {what} ({e.strerror or e}). Set {name} to a folder you can "
                          f"write to.") from None
