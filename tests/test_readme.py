"""The READMEs run as written: Python snippets run, commands name flags that exist, paths are portable.

Every Markdown file a reader is sent to (the front door, the five chapters, common/ and data/) is
read here. ```python blocks run in a fresh interpreter from the repository root, as a reader
would paste them. In ```bash blocks, each `<family>/train.py` (or `python -m <family>.train`)
may only be given `--NAME=value` for a constant of that file or a shared switch, with a value
that parses to the constant's type; each `python -m common.X` only flags its argparse declares;
each script named exists. A `<family>/claims.py` that is not in this checkout yet is the only
command left unchecked. No tracked file may carry an absolute path of one machine.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.config import ConfigError, constants, parse_value
from common.recipe import SWITCHES

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("alexnet", "vgg", "resnet", "mobilenet", "vit")
DOCS = ("README.md", "common/README.md", "data/README.md", *(f"{f}/README.md" for f in FAMILIES))

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[tuple[str, int, str]]:
    """(document, block number, text) of every fenced block in ``language``."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        found += [(doc, i, m.group(2)) for i, m in enumerate(FENCE.finditer(text)) if m.group(1) == language]
    return found


def commands(block: str) -> list[str]:
    """The shell commands of a bash block: continuation lines joined, comments dropped, split
    at ; && || and |."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)  # a comment (no '#' is quoted in our commands)
        out += [c.strip() for c in re.split(r";|&&|\|\|?", line) if c.strip()]
    return out


PYTHON = blocks("python")
BASH = [(doc, i, cmd) for doc, i, text in blocks("bash") for cmd in commands(text)]


def test_the_readmes_have_snippets_and_commands_to_check():
    """The extraction itself: a change of fence style must not silently check nothing."""
    assert len(PYTHON) >= 6 and len(BASH) >= 40
    assert {doc for doc, _, _ in PYTHON} >= {f"{f}/README.md" for f in FAMILIES}


@pytest.mark.parametrize("doc,index,code", PYTHON, ids=[f"{d}#{i}" for d, i, _ in PYTHON])
def test_python_snippet_runs(doc, index, code):
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{doc}, python block {index} fails as written:\n{done.stderr[-3000:]}"


SCRIPT = re.compile(r"(?:^|\s)(?:python\s+(?:-m\s+)?)?((\w+)[/.](train|claims))(?:\.py)?(?=\s|$)")
FLAG = re.compile(r"--([A-Z][A-Z0-9_]*)=(\S*)")


def _entry_point(cmd: str) -> tuple[str, str] | None:
    """(family, 'train' or 'claims') if ``cmd`` runs a family's script."""
    for m in SCRIPT.finditer(cmd):
        if m.group(2) in FAMILIES:
            return m.group(2), m.group(3)
    return None


TRAIN_COMMANDS = [(d, i, c) for d, i, c in BASH if _entry_point(c)]


@pytest.mark.parametrize("doc,index,cmd", TRAIN_COMMANDS, ids=[f"{d}#{i}:{c[:60]}" for d, i, c in TRAIN_COMMANDS])
def test_train_flags_exist(doc, index, cmd):
    family, script = _entry_point(cmd)
    assert (ROOT / family / f"{script}.py").is_file(), f"{doc}: {cmd!r} names {family}/{script}.py, which does not exist"
    module = importlib.import_module(f"{family}.{script}")
    known = {**SWITCHES, **constants(module)}
    for name, value in FLAG.findall(cmd):
        assert name in known, f"{doc}: {cmd!r} gives --{name}, which {family}/{script}.py does not have"
        if any(ch in value for ch in "$<"):  # a shell variable or a placeholder
            continue
        try:
            parsed = parse_value(name, value, known[name])
        except ConfigError as e:
            pytest.fail(f"{doc}: {cmd!r}: {e}")
        if name == "RECIPE" and parsed:
            assert parsed in getattr(module, "RECIPES", {}), f"{doc}: {cmd!r}: no recipe {parsed!r}"


def _argparse_flags(path: Path) -> set[str]:
    """Every option string a module's argparse declares (``add_argument("--x", ...)``)."""
    flags = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            flags |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return flags


MODULE = re.compile(r"python\s+-m\s+common\.(\w+)(.*)")
COMMON_COMMANDS = [(d, i, c) for d, i, c in BASH if MODULE.search(c)]


@pytest.mark.parametrize("doc,index,cmd", COMMON_COMMANDS, ids=[f"{d}#{i}:{c[:60]}" for d, i, c in COMMON_COMMANDS])
def test_common_module_flags_exist(doc, index, cmd):
    name, rest = MODULE.search(cmd).groups()
    path = ROOT / "common" / f"{name}.py"
    assert path.exists(), f"{doc}: {cmd!r}: there is no common/{name}.py"
    declared = _argparse_flags(path) | {"--help", "-h"}
    for flag in re.findall(r"(?:^|\s)(--[a-z][a-z0-9-]*)", rest):
        assert flag in declared, f"{doc}: {cmd!r} gives {flag}, which common/{name}.py's argparse does not declare"


def test_scripts_the_commands_name_exist():
    missing = []
    for doc, _, cmd in BASH:
        for path in re.findall(r"(?:python|bash)\s+([\w/.-]+\.(?:py|sh))", cmd):
            if not (ROOT / path).exists() and not path.endswith("/claims.py"):
                missing.append(f"{doc}: {cmd}")
    assert not missing, "commands name scripts that are not in the repository:\n" + "\n".join(missing)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(text: str) -> str:
    """The text without its fenced blocks and inline code (where brackets are code, not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def test_links_between_readmes_resolve():
    """Relative links ([text](path#anchor) and images) point at files of the repository, and an
    anchor at a heading of the file it names."""
    broken = []
    for doc in DOCS:
        here = (ROOT / doc).parent
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose((ROOT / doc).read_text(encoding="utf-8"))):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (here / path) if path else ROOT / doc
            if Path(path).name == "claims.py" and not file.exists():
                continue  # a family's claims.py arrives with its own change
            if not file.exists():
                broken.append(f"{doc}: {target}")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", FENCE.sub("", file.read_text(encoding="utf-8")), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append(f"{doc}: {target} (no such heading)")
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_data_folders_the_readmes_name_exist_or_are_explained():
    """A folder under data/ is not in a clone (git ignores data/): data/README.md says how each
    one the READMEs name comes to be (a download, a run's cache, --make-small)."""
    explained = (ROOT / "data/README.md").read_text(encoding="utf-8")
    missing = []
    for doc in DOCS:
        for folder in sorted(set(re.findall(r"\bdata/([\w.-]+)", (ROOT / doc).read_text(encoding="utf-8")))):
            if folder != "README.md" and not (ROOT / "data" / folder).exists() and f"`{folder}/" not in explained:
                missing.append(f"{doc}: data/{folder}")
    assert not missing, "data folders a clone lacks and data/README.md does not explain:\n" + "\n".join(missing)
    assert re.search(r"--make-small \S+ data/imagenette2-112", explained)


# One machine's home or work folders, spelled so that this file does not match itself.
MACHINE_PATHS = tuple("/" + name + "/" for name in ("work", "home", "Users", "root"))


def test_no_absolute_path_of_one_machine():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in tracked:
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # images and other binaries
        for n, line in enumerate(text.splitlines(), 1):
            if any(p in line for p in MACHINE_PATHS):
                found.append(f"{name}:{n}: {line.strip()}")
    assert not found, "absolute paths of one machine (use a relative path or /path/to/...):\n" + "\n".join(found)
