"""Getting Imagenette and Imagewoof onto disk.

Imagenette and Imagewoof are the 10-class ImageNet subsets published by fast.ai
(https://github.com/fastai/imagenette). One archive holds both splits:
``<folder>/train/<wnid>/*.JPEG``, ``<folder>/val/<wnid>/*.JPEG`` and a ``noisy_*.csv``.

``prepare_dataset`` returns a folder holding ``train/`` and ``val/``. It gets there in one of
three ways, cheapest first:

1. ``source=`` (what scripts call DATA_PATH): an extracted folder (returned as is) or an
   archive file the user already has (checked and extracted into ``root``);
2. ``$VISION_HIST_MIRROR``: a base URL, or a local folder holding the archives under their
   official file names;
3. the official fast.ai URL.

A finished extraction carries a marker file, so asking again (once for train, once for val)
returns at once. Downloads resume, retry and are checked against MD5; extraction happens in a
temporary folder and is moved into place whole, so a folder without the marker was not made
by us or was damaged, and we refuse to touch it. Several processes (DDP ranks) take turns
through a lock file that names its holder, so one kept waiting says whom it waits for. Only the
standard library and tqdm are used.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import IO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from common.files import pid_running

log = logging.getLogger(__name__)

DATA_ROOT: Path = Path(__file__).resolve().parents[1] / "data"
MIRROR_ENV = "VISION_HIST_MIRROR"
MARKER = ".vision-hist-complete"  # JSON, written inside the folder before it is moved into place
TMP_PREFIX = ".tmp-extract-"  # temporary extraction folders under root; leftovers are ours
LOCK_NAME = ".vision-hist.lock"  # serialises downloads/extractions of several processes (DDP ranks)
LOCK_POLL = 0.2  # seconds between tries of a busy lock (polled, so the wait can say who holds it)
CHUNK = 1 << 20  # bytes per read/write while downloading and hashing


class DataError(RuntimeError):
    """A problem with the data a user can fix; the message says how."""


@dataclass(frozen=True)
class Archive:
    """One official archive; ``folder`` is the top folder inside it."""

    name: str
    size: str
    url: str
    md5: str
    folder: str

    @property
    def filename(self) -> str:
        """The archive's official file name (last part of its URL)."""
        return PurePosixPath(urlsplit(self.url).path).name


_BASE = "https://s3.amazonaws.com/fast-ai-imageclas"
# Full-file MD5s as torchvision/catalyst publish them.
ARCHIVES: dict[tuple[str, str], Archive] = {
    (name, size): Archive(name, size, f"{_BASE}/{folder}.tgz", md5, folder)
    for name, size, folder, md5 in [
        ("imagenette", "full", "imagenette2", "fe2fc210e6bb7c5664d602c3cd71e612"),
        ("imagenette", "320", "imagenette2-320", "3df6f0d01a2c9592104656642f5e78a3"),
        ("imagenette", "160", "imagenette2-160", "e793b78cc4c9e9a4ccc0c1155377a412"),
        ("imagewoof", "full", "imagewoof2", "9aafe18bcdb1632c4249a76c458465ba"),
        ("imagewoof", "320", "imagewoof2-320", "0f46d997ec2264e97609196c95897a44"),
        ("imagewoof", "160", "imagewoof2-160", "3d200a7be99704a0d7509be2a9fbfe15"),
    ]
}

IMAGENETTE_WNIDS: tuple[str, ...] = (
    "n01440764",  # tench
    "n02102040",  # English springer
    "n02979186",  # cassette player
    "n03000684",  # chain saw
    "n03028079",  # church
    "n03394916",  # French horn
    "n03417042",  # garbage truck
    "n03425413",  # gas pump
    "n03445777",  # golf ball
    "n03888257",  # parachute
)
IMAGEWOOF_WNIDS: tuple[str, ...] = (
    "n02086240",  # Shih-Tzu
    "n02087394",  # Rhodesian ridgeback
    "n02088364",  # beagle
    "n02089973",  # English foxhound
    "n02093754",  # Border terrier
    "n02096294",  # Australian terrier
    "n02099601",  # golden retriever
    "n02105641",  # Old English sheepdog
    "n02111889",  # Samoyed
    "n02115641",  # dingo
)
_WNIDS = {"imagenette": IMAGENETTE_WNIDS, "imagewoof": IMAGEWOOF_WNIDS}


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------


def prepare_dataset(
    name: str = "imagenette",
    size: str = "160",
    root: str | Path = DATA_ROOT,
    source: str | Path | None = None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 30.0,
) -> Path:
    """Return a folder holding train/ and val/ (class sub-folders of images), downloading and
    extracting if needed."""
    archive = _lookup(name, size)
    root = Path(root).expanduser()
    if source is not None and str(source) != "":  # an empty DATA_PATH means "not given"
        return _from_source(Path(source).expanduser(), archive, root)

    target = root / archive.folder
    if _is_complete(target):
        return target
    _refuse_incomplete(target)  # before a long download, not after it
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    where = _parse_mirror(mirror, archive) if mirror else None  # refuse a bad one before any write
    _make_root(root)
    with locked(root, what=f"downloading/extracting {archive.folder}"):
        if _is_complete(target):  # another process finished it while we waited
            return target
        _refuse_incomplete(target)
        _clean_leftovers(root)
        if isinstance(where, Path):
            path = _from_mirror_folder(mirror, where, archive)
            return extract(path, root, archive.folder, md5=archive.md5, source=str(path))
        url = f"{where.rstrip('/')}/{archive.filename}" if where else archive.url
        path = download(url, root / archive.filename, archive.md5,
                        retries=retries, backoff=backoff, timeout=timeout)
        return extract(path, root, archive.folder, md5=archive.md5, source=url)


# ---------------------------------------------------------------------------------------------
# Download
# ---------------------------------------------------------------------------------------------


class _ShortRead(Exception):
    """The connection closed before the announced number of bytes arrived."""


# Failures worth another try: the next attempt may well succeed.
_TRANSIENT = (URLError, ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException,
              _ShortRead)


def download(url: str, dest: Path, md5: str, *, retries: int = 4, backoff: float = 1.0,
             timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` via ``<dest>.part``, resuming and retrying; return ``dest``.

    The file is renamed to ``dest`` only once its MD5 matches. A mismatching file is moved aside
    to ``<dest>.md5-mismatch`` and downloaded once more from scratch.
    """
    dest = Path(dest)
    if urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"Cannot download {url!r}: only http:// and https:// URLs are supported. "
                        + _alternatives(dest.name))
    part = dest.with_suffix(dest.suffix + ".part")
    if dest.exists():
        if md5sum(dest) == md5:
            log.info("Using %s (already downloaded, MD5 ok)", dest)
            return dest
        aside = _move_aside(dest)
        log.warning("%s has the wrong MD5; moved it to %s and downloading again", dest, aside)

    asides: list[Path] = []
    for attempt in (1, 2):
        _fetch(url, part, retries=retries, backoff=backoff, timeout=timeout)
        got = md5sum(part)
        if got == md5:
            os.replace(part, dest)
            log.info("Downloaded %s (MD5 ok)", dest)
            return dest
        asides.append(_move_aside(part, dest.name + ".md5-mismatch"))
        if attempt == 1:
            log.warning("%s from %s has MD5 %s, expected %s; moved it to %s and downloading "
                        "once more", dest.name, url, got, md5, asides[-1])
    raise DataError(
        f"{dest.name} from {url} failed its MD5 check twice (got {got}, expected {md5}). "
        f"Both copies are kept: {asides[0]} and {asides[1]}. The upstream archive may have "
        "changed, or a proxy alters it. If you trust the file, extract it yourself and pass "
        "the extracted folder (with train/ and val/) as DATA_PATH.")


def _fetch(url: str, part: Path, *, retries: int, backoff: float, timeout: float) -> None:
    """Bring ``part`` to the full size of ``url``, resuming with HTTP Range; no MD5 check."""
    failures = 0
    best = part.stat().st_size if part.exists() else 0
    reached = False  # did any server answer? Decides "no network" vs "server keeps failing".
    while True:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "vision-hist"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with urlopen(Request(url, headers=headers), timeout=timeout) as resp:
                reached = True
                _receive(resp, part, offset, url)
            return
        except HTTPError as e:
            reached = True
            if e.code == 416 and offset:
                total = _range_total(e.headers.get("Content-Range"))
                if total == offset:  # .part already holds everything; the MD5 check decides
                    return
                log.warning("%s does not fit %s (%s bytes); starting over", part, url, total)
                part.unlink()
                continue
            if e.code in (401, 403, 404, 410):
                raise DataError(f"{url} answered HTTP {e.code} ({e.reason}): the file is not "
                                f"there or not public. " + _alternatives(part.name[:-5])) from e
            if not (e.code >= 500 or e.code in (408, 429)):
                raise DataError(f"{url} answered HTTP {e.code} ({e.reason}). "
                                + _alternatives(part.name[:-5])) from e
            error: BaseException = e
        except _TRANSIENT as e:
            error = e

        now = part.stat().st_size if part.exists() else 0
        if now > best:  # progress: a flaky link that keeps moving forward is not a failure
            best, failures = now, 0
        else:
            failures += 1
        if failures > retries:
            host = urlsplit(url).netloc
            if reached:
                why = f"the server at {host} kept failing ({_describe(error)})"
            else:
                why = (f"no network or host unreachable: could not connect to {host} "
                       f"({_describe(error)})")
            raise DataError(f"Download of {url} failed after {retries + 1} attempts: {why}. "
                            + (f"The partial file {part} is kept; the next run resumes it. "
                               if now else "") + _alternatives(part.name[:-5])) from error
        delay = backoff * 2 ** max(failures - 1, 0)
        log.warning("Download of %s interrupted (%s); retrying in %.1f s", url, _describe(error),
                    delay)
        time.sleep(delay)


def _receive(resp: http.client.HTTPResponse, part: Path, offset: int, url: str) -> None:
    """Write one response body to ``part``: append on 206, start over on 200."""
    length = resp.headers.get("Content-Length")
    length = int(length) if length is not None else None
    if resp.status == 206:
        start = _range_start(resp.headers.get("Content-Range"))
        if start != offset:  # cannot splice this body onto our file; begin again next attempt
            part.unlink()
            raise _ShortRead(f"server sent bytes from {start}, expected {offset}")
        mode = "ab"
        total = _range_total(resp.headers.get("Content-Range"))
    else:
        if offset:
            log.info("%s ignored the Range request; starting the download over", url)
        offset, mode, total = 0, "wb", length
    if total is None and length is not None:
        total = offset + length

    part.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(part.parent).free
    if length is not None and length > free:
        raise _disk_full(part, length, free, total)

    received = 0
    try:
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                         unit_divisor=1024, desc=part.name[:-5], leave=False,
                                         disable=not sys.stderr.isatty()) as bar:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except OSError as e:
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            needed = (length - received) if length is not None else 0
            raise _disk_full(part, needed, shutil.disk_usage(part.parent).free, total) from e
        raise
    if length is not None and received < length:
        raise _ShortRead(f"connection closed after {received} of {length} bytes")


def _disk_full(part: Path, needed: int, free: int, total: int | None) -> DataError:
    size = (f" (the whole archive is {_fmt(total)}; extracting needs about as much again)"
            if total else "")
    return DataError(
        f"Not enough disk space for {part}: about {_fmt(needed)} more is needed in {part.parent}, "
        f"{_fmt(free)} is free{size}. Free some space there, or pass root= on a bigger disk. "
        f"The partial download is kept at {part}; the next run resumes it.")


def _range_start(content_range: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-\d+/", content_range or "")
    return int(m.group(1)) if m else None


def _range_total(content_range: str | None) -> int | None:
    m = re.search(r"/(\d+)\s*$", content_range or "")
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------


def extract(archive: Path, root: Path, folder: str, *, md5: str | None = None,
            source: str | None = None) -> Path:
    """Extract ``folder`` from ``archive`` into ``root`` safely; return ``root/folder``.

    Every member is checked before anything is written. The archive is extracted into
    ``root/.tmp-extract-*``, the marker is written inside the finished folder, and the folder is
    then moved into place with one ``os.replace``: a folder at ``root/folder`` is either complete
    or was not made by us. ``md5`` and ``source`` are recorded in the marker (the MD5 is
    computed if not given; checking it is the caller's job). Leftover temporary folders from a
    killed run are deleted; callers running several processes should hold the root's lock, as
    ``prepare_dataset`` does.
    """
    archive, root = Path(archive), Path(root)
    target = root / folder
    if _is_complete(target):
        return target
    _refuse_incomplete(target)
    _make_root(root)
    _clean_leftovers(root)

    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
    members: list[tarfile.TarInfo] = []
    try:
        try:
            with tarfile.open(archive, "r:*") as tf:
                members = tf.getmembers()  # reads the whole archive: all checks come first
                _check_members(members, folder, archive, tmp)
                needed = sum(m.size for m in members)
                free = shutil.disk_usage(root).free
                if needed > free:
                    raise DataError(
                        f"Not enough disk space to extract {archive}: about {_fmt(needed)} is "
                        f"needed in {root}, {_fmt(free)} is free. Free some space there or pass "
                        "root= on a bigger disk.")
                log.info("Extracting %s into %s", archive, root)
                if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuses the same and more
                    tf.extractall(tmp, members=members, filter="data")
                else:
                    tf.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, OSError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
                raise DataError(f"Disk full while extracting {archive} into {root}: about "
                                f"{_fmt(sum(m.size for m in members))} is needed there. Free some "
                                "space or pass root= on a bigger disk.") from e
            if isinstance(e, (tarfile.TarError, EOFError)) or e.filename == str(archive):
                raise DataError(f"Cannot read {archive} as a tar archive ({_describe(e)}). It is "
                                "damaged or not an archive: move it away and run again to "
                                "download a fresh copy, or pass an extracted folder as "
                                "DATA_PATH.") from e
            raise

        done = tmp / folder
        if not _looks_extracted(done):
            raise DataError(f"{archive} has no {folder}/train and {folder}/val with class folders "
                            "inside; it is not an Imagenette-style archive. Pass an extracted "
                            "folder with train/ and val/ as DATA_PATH instead.")
        marker = {"md5": md5 or md5sum(archive), "source": source or str(archive),
                  "archive": archive.name, "created": datetime.now(timezone.utc).isoformat()}
        (done / MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        os.replace(done, target)  # the commit point: the folder appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Dataset ready in %s", target)
    return target


def _check_members(members: list[tarfile.TarInfo], folder: str, archive: Path, tmp: Path) -> None:
    """Refuse the archive if any member could write outside ``tmp/folder`` or is not plain."""
    base = (tmp / folder).resolve()
    for m in members:
        name = m.name
        parts = PurePosixPath(name).parts
        why = None
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            why = "has an absolute path"
        elif ".." in parts or ".." in name.split("\\"):
            why = "contains '..'"
        elif not (m.isfile() or m.isdir()):
            why = "is a link or device, not a plain file or folder"
        elif not parts:  # the "." entry some tar tools write
            continue
        elif parts[0] != folder:
            why = f"lies outside the archive's top folder {folder!r}"
        elif not (tmp / name).resolve().is_relative_to(base):
            why = "would land outside the target folder"
        if why:
            raise DataError(
                f"Refusing to extract {archive}: member {name!r} {why}. Nothing was extracted. "
                "This is not a plain Imagenette archive: get a fresh copy, or check and extract "
                "it yourself and pass the folder as DATA_PATH.")


def _top_folder(archive: Path) -> str:
    """The single top folder of an archive we know nothing about."""
    try:
        with tarfile.open(archive, "r:*") as tf:
            tops = {PurePosixPath(n).parts[0] for n in tf.getnames() if PurePosixPath(n).parts}
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"Cannot read {archive} as a tar archive ({_describe(e)}). Pass an "
                        "Imagenette .tgz or an extracted folder with train/ and val/ as "
                        "DATA_PATH.") from e
    if len(tops) != 1 or tops == {".."} or any(t.startswith("/") for t in tops):
        raise DataError(f"{archive} should hold one top folder with train/ and val/ inside, but "
                        f"its top level is {sorted(tops)[:5]}. Pass an extracted folder as "
                        "DATA_PATH instead.")
    return tops.pop()


# ---------------------------------------------------------------------------------------------
# Sources other than the official URL
# ---------------------------------------------------------------------------------------------


def _from_source(src: Path, archive: Archive, root: Path) -> Path:
    """Use a folder or archive file the user has (DATA_PATH)."""
    if not src.exists():
        raise DataError(f"DATA_PATH {src} does not exist. Give an extracted folder (with train/ "
                        f"and val/) or an archive such as {archive.filename}, or leave DATA_PATH "
                        "empty to download.")
    if src.is_dir():
        for folder in (src, src / archive.folder):  # also accept the folder above the extraction
            if _looks_extracted(folder):
                _warn_if_foreign(folder, archive.name)
                log.info("Using extracted dataset %s", folder)
                return folder
        raise DataError(f"DATA_PATH {src} is a folder but not an extracted dataset: it needs "
                        "train/ and val/, each with one sub-folder of images per class.")

    known = {a.filename: a for a in ARCHIVES.values()}
    if src.name in known:
        found = known[src.name]
        if found != archive:
            raise DataError(f"DATA_PATH {src} is the {found.name} {found.size} archive, but "
                            f"{archive.name} {archive.size} was asked for. Pass "
                            f"{archive.filename}, or ask for {found.name} {found.size}.")
        folder, md5 = archive.folder, archive.md5
    else:
        log.warning("%s is not an official archive name; its MD5 cannot be checked", src)
        folder, md5 = _top_folder(src), None

    target = root / folder
    if _is_complete(target):
        return target
    _refuse_incomplete(target)
    if md5 is not None:
        got = md5sum(src)
        if got != md5:
            raise DataError(f"DATA_PATH {src} has MD5 {got}, expected {md5}: the file is "
                            "damaged or incomplete, or the upstream archive has changed. Get a "
                            "fresh copy, or extract it yourself and pass the folder as DATA_PATH.")
    _make_root(root)
    with locked(root, what=f"extracting {src}"):
        return extract(src, root, folder, md5=md5, source=str(src))


def _parse_mirror(mirror: str, archive: Archive) -> str | Path:
    """``$VISION_HIST_MIRROR`` as an http(s) base URL (a str) or a local folder (a Path).

    A value with a scheme (``name:``, two letters or more) is a URL; ``C:\\mirror`` (a drive
    letter) and anything without one is a path. Only http(s) URLs with a host and local
    ``file://`` URLs are usable: any other URL used to be taken for a folder name, and the
    message then showed it with its ``//`` collapsed.
    """
    parts = urlsplit(mirror)
    if len(parts.scheme) < 2:
        return Path(mirror).expanduser()
    if parts.scheme in ("http", "https") and parts.netloc:
        return mirror
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(url2pathname(parts.path))
    if parts.scheme in ("http", "https"):
        why = "the URL names no host"
    elif parts.scheme == "file":
        why = f"a file:// URL must name a folder on this machine, not on {parts.netloc}"
    else:
        why = f"{parts.scheme}:// URLs cannot be downloaded"
    raise DataError(f"{MIRROR_ENV}={mirror} is not supported: {why}. Supported are http:// and "
                    f"https:// URLs (the base under which {archive.filename} lies) or a local "
                    f"folder path holding {archive.filename}. Fix or unset {MIRROR_ENV}, or pass "
                    "the archive or its extracted folder as DATA_PATH.")


def _from_mirror_folder(mirror: str, folder: Path, archive: Archive) -> Path:
    """The archive inside a local mirror folder, MD5 checked (the user's file is never moved)."""
    path = folder / archive.filename
    if not path.is_file():
        raise DataError(f"{MIRROR_ENV}={mirror} names the local folder {folder}, which must hold "
                        f"{archive.filename}, but {path} does not exist. Put the archive there, "
                        f"fix or unset {MIRROR_ENV}, or pass an extracted folder as DATA_PATH.")
    got = md5sum(path)
    if got != archive.md5:
        raise DataError(f"{path} (from {MIRROR_ENV}) has MD5 {got}, expected {archive.md5}: it "
                        "is damaged or incomplete, or the upstream archive has changed. Replace "
                        "it, or extract it yourself and pass the folder as DATA_PATH.")
    return path


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def md5sum(path: Path) -> str:
    """MD5 of a file, read in chunks so that large archives fit in memory."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _lookup(name: str, size: str) -> Archive:
    key = (str(name).lower(), str(size).lower())
    if key not in ARCHIVES:
        choices = ", ".join(f"{n}/{s}" for n, s in ARCHIVES)
        raise DataError(f"Unknown dataset {name!r} size {size!r}; choose one of {choices}.")
    return ARCHIVES[key]


def _is_complete(folder: Path) -> bool:
    """True if ``folder`` carries a readable completion marker."""
    try:
        return "md5" in json.loads((folder / MARKER).read_text())
    except (OSError, ValueError, TypeError):
        return False


def _refuse_incomplete(target: Path) -> None:
    """Never build over, nor delete, a folder we cannot vouch for."""
    if target.exists():
        raise DataError(
            f"{target} exists but has no completion marker ({MARKER}): it looks incomplete, or "
            "it was not made by vision-hist. Delete or move it and run again, or, if it is a "
            "complete extracted copy, pass it as DATA_PATH.")


def _looks_extracted(folder: Path) -> bool:
    """True if ``folder`` has train/ and val/, each with at least one class sub-folder."""
    def has_class_dirs(split: Path) -> bool:
        try:
            with os.scandir(split) as it:
                return any(e.is_dir() and not e.name.startswith(".") for e in it)
        except OSError:
            return False
    return has_class_dirs(folder / "train") and has_class_dirs(folder / "val")


def _warn_if_foreign(folder: Path, name: str) -> None:
    classes = {p.name for p in (folder / "train").iterdir() if p.is_dir()}
    if not classes <= set(_WNIDS[name]):
        log.warning("%s has class folders that are not %s classes (e.g. %s)", folder, name,
                    sorted(classes - set(_WNIDS[name]))[:3])


def _make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"Cannot create the data folder {root} ({_describe(e)}). Pass root= a "
                        "writable folder, or an extracted dataset as DATA_PATH.") from e


def _clean_leftovers(root: Path) -> None:
    """Delete temporary extraction folders a killed run left behind (they are only ours)."""
    for tmp in root.glob(TMP_PREFIX + "*"):
        if tmp.is_dir():
            log.info("Removing %s left by an interrupted extraction", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def locked(root: Path, name: str = LOCK_NAME, what: str = "preparing data") -> Iterator[None]:
    """Hold an exclusive lock (the file ``root/name``) so that parallel processes (DDP ranks,
    two runs at once) download, extract or decode only once and never over each other.

    ``what`` says what the holder is doing; it is written into the lock file with the holder's
    PID and command line, so that a process kept waiting can say who it waits for.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock; one process at a time is up to the user
        yield
        return
    path = Path(root) / name
    with open(path, "a+") as f:
        _wait_for_lock(f, path, fcntl)
        _held_locks.add(f.fileno())
        try:
            _write_holder(f, what)
            yield
        finally:
            _held_locks.discard(f.fileno())
            with contextlib.suppress(OSError):
                f.truncate(0)  # a record in an unlocked file would name a process that is done
            fcntl.flock(f, fcntl.LOCK_UN)


def _wait_for_lock(f: IO[str], path: Path, fcntl: ModuleType) -> None:
    """Take the lock on ``f``; while it is busy, say who holds it, and again whenever that changes
    (the holder dies but a process that inherited the lock keeps it, a new holder takes over)."""
    said, start = "", time.monotonic()
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = _read_holder(path)
        # An empty record for a moment is a holder that has the lock but not yet written it.
        if holder is not None or time.monotonic() - start > 1.0:
            message = _holder_message(path, holder)
            if message != said:
                log.warning("%s", message)
                said = message
        time.sleep(LOCK_POLL)


def _write_holder(f: IO[str], what: str) -> None:
    """Record who holds the lock: only for messages, so a failure (disk full) is ignored."""
    record = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "command": _command_line(), "since": datetime.now().isoformat(timespec="seconds")}
    try:
        f.truncate(0)  # "a+" appends, so after the truncation the record starts the file
        f.write(json.dumps(record) + "\n")
        f.flush()
    except OSError:
        pass


def _read_holder(path: Path) -> dict | None:
    """The record ``locked`` wrote into a lock file, or None if there is none (yet)."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _holder_message(path: Path, holder: dict | None) -> str:
    """What a process waiting for the lock ``path`` tells the user."""
    find = f"`fuser -v {path}` lists the processes that have it open"
    if holder is None:
        return f"Waiting for the lock {path}: another process holds it ({find})."
    pid = holder["pid"]
    who = (f"PID {pid} ({holder.get('what', '?')}, since {holder.get('since', '?')}; command: "
           f"{holder.get('command', '?')})")
    if holder.get("host", socket.gethostname()) != socket.gethostname():
        return (f"Waiting for the lock {path}: held by {who} on host {holder['host']}. This run "
                "goes on when that one is done.")
    if not pid_running(pid):
        return (f"Waiting for the lock {path}: it was taken by {who}, which no longer exists, yet "
                f"the lock is still held: a process that inherited it from PID {pid} (a leftover "
                f"worker) keeps it. Stop that process ({find}) and this run goes on.")
    return f"Waiting for the lock {path}: held by {who}. This run goes on when that one is done."


def _command_line(most: int = 200) -> str:
    """This process's command line on one line (``python -c`` code has newlines), shortened."""
    line = " ".join(" ".join(sys.orig_argv).split())
    return line if len(line) <= most else line[: most - 3] + "..."


# File descriptors of the locks this process holds now (see _drop_locks_in_child).
_held_locks: set[int] = set()


def _drop_locks_in_child() -> None:
    """In a forked child (a decode worker), let go of the parent's locks.

    An flock belongs to the open file description, which a fork shares: a child that outlived
    its parent used to keep the lock, and the next run waited for ever. Closing the child's copy
    never releases the parent's lock (it ends with the last descriptor, or an explicit unlock).
    dup2 of /dev/null closes it and keeps the number valid, so the child's copy of the lock file
    object, should it ever be closed or unlocked, only touches /dev/null.
    """
    if not _held_locks:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in _held_locks:
        os.dup2(null, fd, inheritable=False)
    os.close(null)
    _held_locks.clear()


if hasattr(os, "register_at_fork"):  # POSIX; subprocess's fork+exec does not call it (no need)
    os.register_at_fork(after_in_child=_drop_locks_in_child)


def _move_aside(path: Path, name: str | None = None) -> Path:
    """Rename ``path`` to ``name`` (default ``<name>.md5-mismatch``) without overwriting."""
    base = path.with_name(name or path.name + ".md5-mismatch")
    aside, k = base, 1
    while aside.exists():
        aside, k = base.with_name(f"{base.name}.{k}"), k + 1
    os.replace(path, aside)
    return aside


def _alternatives(filename: str) -> str:
    return (f"Ways around it: set {MIRROR_ENV} to a mirror base URL or to a local folder holding "
            f"{filename}; or get {filename} some other way and pass it, or its extracted folder "
            "(with train/ and val/), as DATA_PATH.")


def _describe(e: BaseException) -> str:
    if isinstance(e, URLError) and not isinstance(e, HTTPError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _fmt(n: int | None) -> str:
    if n is None:
        return "an unknown amount"
    value, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
