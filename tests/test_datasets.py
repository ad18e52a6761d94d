"""Tests of common/datasets.py against archives built here and a server on 127.0.0.1."""

from __future__ import annotations

import builtins
import csv
import dataclasses
import errno
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from common import datasets
from common.datasets import ARCHIVES, MARKER, DataError, extract, md5sum, prepare_dataset
from tests.helpers import (NOISY_COLUMNS, LocalHTTPServer, make_archive, make_image_tree,
                           pid_alive, unused_port)

FAST = {"retries": 2, "backoff": 0.01, "timeout": 5.0}  # keep failures quick
KEY = ("imagenette", "160")
FOLDER = "imagenette2-160"
FILENAME = "imagenette2-160.tgz"


@dataclass
class Served:
    server: LocalHTTPServer
    archive: Path  # the file the server hands out
    md5: str
    root: Path  # where prepare_dataset puts things


def use_md5(monkeypatch: pytest.MonkeyPatch, md5: str, key: tuple[str, str] = KEY) -> None:
    """Point one ARCHIVES entry at a test archive's MD5 (the module keeps the official ones)."""
    patched = dict(ARCHIVES)
    patched[key] = dataclasses.replace(ARCHIVES[key], md5=md5)
    monkeypatch.setattr(datasets, "ARCHIVES", patched)


@pytest.fixture
def served(http_server: LocalHTTPServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Served:
    """A 3-class imagenette2-160.tgz served under /some/path, with VISION_HIST_MIRROR set."""
    tree = make_image_tree(tmp_path / "build", FOLDER, n_classes=3)
    archive = http_server.root / "some" / "path" / FILENAME
    md5 = make_archive(tree, archive)
    use_md5(monkeypatch, md5)
    monkeypatch.setenv(datasets.MIRROR_ENV, http_server.url + "/some/path/")
    return Served(http_server, archive, md5, tmp_path / "data")


def assert_complete(folder: Path, n_classes: int = 3) -> None:
    for split, n in (("train", 3), ("val", 2)):
        classes = sorted(p.name for p in (folder / split).iterdir())
        assert len(classes) == n_classes
        assert all(len(list((folder / split / c).glob("*.JPEG"))) == n for c in classes)
    assert (folder / "noisy_imagenette.csv").is_file()
    assert "md5" in json.loads((folder / MARKER).read_text())


def no_leftovers(root: Path) -> bool:
    return not list(root.glob(".tmp-extract-*")) and not list(root.glob("*.part"))


# --- downloading ------------------------------------------------------------------------------


def test_download_extract_then_reuse(served: Served) -> None:
    out = prepare_dataset("imagenette", "160", served.root, **FAST)
    assert out == served.root / FOLDER
    assert_complete(out)
    marker = json.loads((out / MARKER).read_text())
    assert marker["md5"] == served.md5
    assert marker["source"] == f"{served.server.url}/some/path/{FILENAME}"
    assert [r.path for r in served.server.requests] == [f"/some/path/{FILENAME}"]
    assert md5sum(served.root / FILENAME) == served.md5  # the archive is kept beside the folder
    assert no_leftovers(served.root)

    # Train and val ask separately: the second call returns at once, without the network.
    assert prepare_dataset("imagenette", "160", served.root, **FAST) == out
    assert len(served.server.requests) == 1


def test_resume_after_dropped_connection(served: Served) -> None:
    half = served.archive.stat().st_size // 2
    served.server.cut_after(half, times=1)
    out = prepare_dataset("imagenette", "160", served.root, **FAST)
    assert_complete(out)
    reqs = served.server.requests
    assert len(reqs) == 2
    assert reqs[0].headers.get("Range") is None
    assert reqs[1].headers.get("Range") == f"bytes={half}-"
    assert md5sum(served.root / FILENAME) == served.md5


def test_restarts_when_server_ignores_range(served: Served) -> None:
    served.server.ignore_range = True
    served.server.cut_after(served.archive.stat().st_size // 3, times=1)
    out = prepare_dataset("imagenette", "160", served.root, **FAST)
    assert_complete(out)
    assert served.server.requests[1].headers.get("Range")  # asked to resume, got 200, started over
    assert md5sum(served.root / FILENAME) == served.md5


def test_parallel_callers_download_once(served: Served) -> None:
    # DDP ranks all call prepare_dataset; the lock on root makes the others wait and reuse.
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: prepare_dataset("imagenette", "160", served.root, **FAST),
                             range(2)))
    assert outs[0] == outs[1] == served.root / FOLDER
    assert_complete(outs[0])
    assert len(served.server.requests) == 1


def test_retries_server_errors(served: Served) -> None:
    served.server.fail_next(503, times=2)
    assert_complete(prepare_dataset("imagenette", "160", served.root, **FAST))
    assert len(served.server.requests) == 3


def test_server_errors_exhaust_retries(served: Served) -> None:
    served.server.fail_next(500, times=10)
    with pytest.raises(DataError, match="kept failing"):
        prepare_dataset("imagenette", "160", served.root, **FAST)
    assert len(served.server.requests) == FAST["retries"] + 1


def test_checksum_mismatch_once_recovers(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    served.server.corrupt_next(times=1)
    with caplog.at_level(logging.WARNING, logger="common.datasets"):
        out = prepare_dataset("imagenette", "160", served.root, **FAST)
    assert_complete(out)
    aside = served.root / (FILENAME + ".md5-mismatch")
    assert aside.is_file() and md5sum(aside) != served.md5
    assert str(aside) in caplog.text
    assert len(served.server.requests) == 2
    assert served.server.requests[1].headers.get("Range") is None  # fresh download, not resumed


def test_checksum_mismatch_twice_raises(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    use_md5(monkeypatch, "0" * 32)
    with pytest.raises(DataError) as info:
        prepare_dataset("imagenette", "160", served.root, **FAST)
    first = served.root / (FILENAME + ".md5-mismatch")
    second = served.root / (FILENAME + ".md5-mismatch.1")
    assert first.is_file() and second.is_file()
    msg = str(info.value)
    assert str(first) in msg and str(second) in msg
    assert "changed" in msg and "DATA_PATH" in msg
    assert len(served.server.requests) == 2
    assert not (served.root / FOLDER).exists() and not (served.root / FILENAME).exists()


def test_404_is_not_retried(served: Served) -> None:
    served.archive.unlink()
    with pytest.raises(DataError) as info:
        prepare_dataset("imagenette", "160", served.root, **FAST)
    msg = str(info.value)
    assert f"{served.server.url}/some/path/{FILENAME}" in msg and "404" in msg
    assert datasets.MIRROR_ENV in msg and "DATA_PATH" in msg
    assert len(served.server.requests) == 1


def test_unreachable_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(datasets.MIRROR_ENV, f"http://127.0.0.1:{unused_port()}/mirror")
    with pytest.raises(DataError) as info:
        prepare_dataset("imagenette", "160", tmp_path / "data", **FAST)
    msg = str(info.value)
    assert "no network" in msg and "unreachable" in msg
    assert datasets.MIRROR_ENV in msg and "DATA_PATH" in msg
    assert no_leftovers(tmp_path / "data")


def test_disk_full_keeps_part_and_resumes(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = served.archive.stat().st_size // 2
    real_open = builtins.open

    class FullDisk:
        """Accepts ``limit`` bytes, then fails as a full disk does."""

        def __init__(self, f: io.BufferedWriter) -> None:
            self.f, self.written = f, 0

        def write(self, data: bytes) -> int:
            room = limit - self.written
            self.f.write(data[:room])
            self.written += min(room, len(data))
            if len(data) > room:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(data)

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

    def fake_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f) if str(path).endswith(".part") and "b" in mode and "r" not in mode else f

    monkeypatch.setattr(datasets, "open", fake_open, raising=False)
    part = served.root / (FILENAME + ".part")
    with pytest.raises(DataError) as info:
        prepare_dataset("imagenette", "160", served.root, **FAST)
    msg = str(info.value)
    assert "disk space" in msg and str(part) in msg and "resumes" in msg
    assert part.stat().st_size == limit

    monkeypatch.undo()  # space freed; the ARCHIVES/env patches went too, so set them again
    use_md5(monkeypatch, served.md5)
    monkeypatch.setenv(datasets.MIRROR_ENV, served.server.url + "/some/path")
    assert_complete(prepare_dataset("imagenette", "160", served.root, **FAST))
    assert served.server.requests[-1].headers.get("Range") == f"bytes={limit}-"


# --- extraction -------------------------------------------------------------------------------


def evil_archive(path: Path, kind: str, outside: Path) -> Path:
    """A valid tree plus one hostile member of the given kind."""
    tree = make_image_tree(path.parent / "evil-build", FOLDER, n_classes=2)
    with tarfile.open(path, "w:gz") as tf:
        tf.add(tree, arcname=FOLDER)
        info = tarfile.TarInfo()
        payload = b"pwned"
        if kind == "traversal":
            info.name = f"{FOLDER}/../../{outside.name}"
        elif kind == "absolute":
            info.name = str(outside)
        elif kind == "symlink":
            info.name, info.type, info.linkname = f"{FOLDER}/link", tarfile.SYMTYPE, str(outside)
            payload = b""
        elif kind == "hardlink":
            info.name, info.type, info.linkname = f"{FOLDER}/link", tarfile.LNKTYPE, "/etc/passwd"
            payload = b""
        elif kind == "device":
            info.name, info.type = f"{FOLDER}/dev", tarfile.CHRTYPE
            payload = b""
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "hardlink", "device"])
def test_refuses_hostile_members(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "evil"
    archive = evil_archive(tmp_path / "evil.tgz", kind, outside)
    root = tmp_path / "sub" / "data"
    with pytest.raises(DataError, match="Refusing"):
        extract(archive, root, FOLDER)
    assert not outside.exists() and not (tmp_path / "sub" / "evil").exists()
    assert not (root / FOLDER).exists()
    assert no_leftovers(root)


def test_refuses_hostile_archive_given_as_source(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    archive = evil_archive(tmp_path / FILENAME, "traversal", tmp_path / "evil")
    use_md5(monkeypatch, md5sum(archive))
    with pytest.raises(DataError, match="contains '..'"):
        prepare_dataset("imagenette", "160", tmp_path / "data", source=archive)
    assert not (tmp_path / "evil").exists()


def test_interrupted_extraction_leaves_nothing_complete(served: Served,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real_makefile = tarfile.TarFile.makefile
    calls = {"n": 0}

    def dying_makefile(self, tarinfo, targetpath):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of extraction
        return real_makefile(self, tarinfo, targetpath)

    monkeypatch.setattr(tarfile.TarFile, "makefile", dying_makefile)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("imagenette", "160", served.root, **FAST)
    assert calls["n"] > 3
    assert not (served.root / FOLDER).exists()
    assert no_leftovers(served.root)

    monkeypatch.setattr(tarfile.TarFile, "makefile", real_makefile)
    assert_complete(prepare_dataset("imagenette", "160", served.root, **FAST))
    assert len(served.server.requests) == 1  # the verified archive was reused


def test_leftover_temp_folder_is_cleaned(served: Served) -> None:
    # What a hard kill (no finally) leaves: a half-filled temporary folder.
    leftover = served.root / ".tmp-extract-killed" / FOLDER / "train" / "n01440764"
    leftover.mkdir(parents=True)
    (leftover / "half.JPEG").write_bytes(b"\xff\xd8")
    assert_complete(prepare_dataset("imagenette", "160", served.root, **FAST))
    assert not (served.root / ".tmp-extract-killed").exists()


def test_existing_folder_without_marker_is_refused(served: Served) -> None:
    foreign = served.root / FOLDER / "train" / "n01440764"
    foreign.mkdir(parents=True)
    (foreign / "mine.JPEG").write_bytes(b"user data")
    with pytest.raises(DataError) as info:
        prepare_dataset("imagenette", "160", served.root, **FAST)
    msg = str(info.value)
    assert str(served.root / FOLDER) in msg and "incomplete" in msg and "DATA_PATH" in msg
    assert (foreign / "mine.JPEG").read_bytes() == b"user data"  # never deleted
    assert served.server.requests == []  # refused before downloading


# --- ways around the network ------------------------------------------------------------------


def test_local_folder_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    md5 = make_archive(make_image_tree(tmp_path / "build", FOLDER, n_classes=3), mirror / FILENAME)
    use_md5(monkeypatch, md5)
    monkeypatch.setenv(datasets.MIRROR_ENV, str(mirror))
    out = prepare_dataset("imagenette", "160", tmp_path / "data")
    assert_complete(out)
    assert json.loads((out / MARKER).read_text())["source"] == str(mirror / FILENAME)
    assert (mirror / FILENAME).is_file()  # used in place, not moved or copied
    assert not (tmp_path / "data" / FILENAME).exists()


def test_local_folder_mirror_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mirror").mkdir()
    monkeypatch.setenv(datasets.MIRROR_ENV, str(tmp_path / "mirror"))
    with pytest.raises(DataError, match=FILENAME):
        prepare_dataset("imagenette", "160", tmp_path / "data")


def test_source_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "downloads" / FILENAME
    tree = make_image_tree(tmp_path / "b", FOLDER, n_classes=3)
    use_md5(monkeypatch, make_archive(tree, archive))
    out = prepare_dataset("imagenette", "160", tmp_path / "data", source=str(archive))
    assert out == tmp_path / "data" / FOLDER
    assert_complete(out)
    assert prepare_dataset("imagenette", "160", tmp_path / "data", source=archive) == out


def test_source_archive_bad_md5_is_left_alone(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / FILENAME
    make_archive(make_image_tree(tmp_path / "b", FOLDER, n_classes=2), archive)
    use_md5(monkeypatch, "0" * 32)
    with pytest.raises(DataError, match="MD5"):
        prepare_dataset("imagenette", "160", tmp_path / "data", source=archive)
    assert archive.is_file()
    assert not (tmp_path / "data" / FOLDER).exists()


def test_source_archive_of_other_dataset(tmp_path: Path) -> None:
    archive = tmp_path / "imagewoof2-160.tgz"
    archive.write_bytes(b"not used")
    with pytest.raises(DataError, match="imagewoof 160"):
        prepare_dataset("imagenette", "160", tmp_path / "data", source=archive)


def test_source_archive_unknown_name(tmp_path: Path) -> None:
    archive = tmp_path / "my-copy.tar.gz"
    make_archive(make_image_tree(tmp_path / "b", "my-imagenette", n_classes=3), archive)
    out = prepare_dataset("imagenette", "160", tmp_path / "data", source=archive)
    assert out == tmp_path / "data" / "my-imagenette"
    assert_complete(out)


def test_source_extracted_folder_returned_as_is(tmp_path: Path) -> None:
    tree = make_image_tree(tmp_path, "imagenette2-224", n_classes=3)
    root = tmp_path / "data"
    assert prepare_dataset("imagenette", "160", root, source=tree) == tree
    assert not (tree / MARKER).exists() and not root.exists()  # nothing written anywhere


def test_source_parent_of_extracted_folder(tmp_path: Path) -> None:
    tree = make_image_tree(tmp_path, FOLDER, n_classes=3)
    assert prepare_dataset("imagenette", "160", tmp_path / "data", source=tmp_path) == tree


def test_source_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="train/ and val/"):
        prepare_dataset(source=tmp_path, root=tmp_path / "data")
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset(source=tmp_path / "nope", root=tmp_path / "data")


@pytest.mark.parametrize("mirror, why", [
    ("ftp://host/x/", "ftp:// URLs cannot be downloaded"),
    ("file://otherhost/x/", "a file:// URL must name a folder on this machine, not on otherhost"),
    ("https:///x/", "the URL names no host"),
])
def test_unsupported_mirror_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               mirror: str, why: str) -> None:
    """ftp:// used to be taken for a folder, named in the message as 'ftp:/host/x'."""
    monkeypatch.setenv(datasets.MIRROR_ENV, mirror)
    with pytest.raises(DataError) as info:
        prepare_dataset("imagenette", "160", tmp_path / "data", **FAST)
    assert str(info.value) == (
        f"{datasets.MIRROR_ENV}={mirror} is not supported: {why}. Supported are http:// and "
        f"https:// URLs (the base under which {FILENAME} lies) or a local folder path holding "
        f"{FILENAME}. Fix or unset {datasets.MIRROR_ENV}, or pass the archive or its extracted "
        "folder as DATA_PATH.")
    assert not (tmp_path / "data").exists()  # refused before anything was written


def test_file_url_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local file:// URL is a folder, percent-escapes decoded (a space used to stay '%20')."""
    mirror = tmp_path / "my mirror"
    md5 = make_archive(make_image_tree(tmp_path / "build", FOLDER, n_classes=3), mirror / FILENAME)
    use_md5(monkeypatch, md5)
    monkeypatch.setenv(datasets.MIRROR_ENV, mirror.as_uri())
    assert "%20" in mirror.as_uri()
    assert_complete(prepare_dataset("imagenette", "160", tmp_path / "data"))


def test_drive_letter_mirror_is_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'C:' parses as a one-letter URL scheme; it is a Windows folder, not an unsupported URL."""
    monkeypatch.setenv(datasets.MIRROR_ENV, "C:\\mirror")
    with pytest.raises(DataError, match=r"names the local folder C:\\mirror, which must hold"):
        prepare_dataset("imagenette", "160", tmp_path / "data")


# --- the lock between processes ---------------------------------------------------------------


def waiting_message(caplog: pytest.LogCaptureFixture, timeout: float = 10.0) -> str:
    """The first "Waiting for the lock" message logged (by another thread) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r.getMessage() for r in caplog.records if "Waiting for the lock" in r.getMessage()]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no waiting message within {timeout} s")


def take_lock_in_thread(root: Path, name: str) -> threading.Thread:
    """Start a thread that takes the lock, then lets go at once."""
    def take() -> None:
        with datasets.locked(root, name):
            pass
    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    return thread


def test_busy_lock_names_its_holder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = tmp_path / "x.lock"
    with caplog.at_level(logging.WARNING, logger="common.datasets"):
        with datasets.locked(tmp_path, "x.lock", what="decoding demo-train"):
            record = json.loads(lock.read_text())
            assert record["pid"] == os.getpid() and record["what"] == "decoding demo-train"
            waiter = take_lock_in_thread(tmp_path, "x.lock")
            msg = waiting_message(caplog)
            assert waiter.is_alive()
        waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert msg.startswith(f"Waiting for the lock {lock}: held by PID {os.getpid()} "
                          f"(decoding demo-train, since {record['since']}; command: ")
    assert msg.endswith("). This run goes on when that one is done.")
    assert "no longer exists" not in msg
    assert lock.read_text() == ""  # a released lock names nobody


def test_lock_kept_after_its_holder_died_says_so(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """What a killed run's leftover worker did: the lock held, its recorded holder gone."""
    import fcntl

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(gone.stdout)
    lock = tmp_path / "x.lock"
    with open(lock, "a+") as f, caplog.at_level(logging.WARNING, logger="common.datasets"):
        fcntl.flock(f, fcntl.LOCK_EX)  # held here, through a descriptor of our own
        f.write(json.dumps({"pid": pid, "host": os.uname().nodename, "what": "decoding demo-train",
                            "command": "python train.py", "since": "2024-01-01T00:00:00"}))
        f.flush()
        waiter = take_lock_in_thread(tmp_path, "x.lock")
        msg = waiting_message(caplog)
        fcntl.flock(f, fcntl.LOCK_UN)
        waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert msg == (
        f"Waiting for the lock {lock}: it was taken by PID {pid} (decoding demo-train, since "
        "2024-01-01T00:00:00; command: python train.py), which no longer exists, yet the lock is "
        f"still held: a process that inherited it from PID {pid} (a leftover worker) keeps it. "
        f"Stop that process (`fuser -v {lock}` lists the processes that have it open) and this "
        "run goes on.")


FORK_AND_DIE = """
import multiprocessing as mp, os, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from common.datasets import locked
with locked(Path(sys.argv[2]), "x.lock"):
    child = mp.get_context("fork").Process(target=time.sleep, args=(60,))
    child.start()
    Path(sys.argv[3]).write_text(str(child.pid))
    os._exit(0)  # the parent ends at once, as a killed one does; the child lives on
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork and /proc")
def test_forked_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    """flock belongs to the open file, which a fork shares: a child forked while the lock was
    held used to keep it after its parent died."""
    import fcntl

    repo = str(Path(__file__).resolve().parents[1])
    pid_file, errors = tmp_path / "child.pid", tmp_path / "stderr.txt"
    with open(errors, "w") as err:  # a file, not a pipe: the child would hold a pipe open
        subprocess.run([sys.executable, "-c", FORK_AND_DIE, repo, str(tmp_path), str(pid_file)],
                       stdout=err, stderr=err, timeout=60)
    assert pid_file.exists(), errors.read_text()[-2000:]
    child = int(pid_file.read_text())
    try:
        assert pid_alive(child)
        with open(tmp_path / "x.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child kept it
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_unknown_dataset_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="imagewoof/320"):
        prepare_dataset("imagenet", "160", tmp_path)


def test_official_table_untouched() -> None:
    a = ARCHIVES[("imagenette", "160")]
    assert a.url == "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
    assert a.md5 == "e793b78cc4c9e9a4ccc0c1155377a412" and a.filename == FILENAME
    assert len(ARCHIVES) == 6 and ARCHIVES[("imagewoof", "full")].folder == "imagewoof2"
    assert list(datasets.IMAGENETTE_WNIDS) == sorted(datasets.IMAGENETTE_WNIDS)
    assert list(datasets.IMAGEWOOF_WNIDS) == sorted(datasets.IMAGEWOOF_WNIDS)


# --- helpers other tests rely on --------------------------------------------------------------


def test_make_image_tree_extras(tmp_path: Path) -> None:
    top = make_image_tree(tmp_path, n_classes=2, extras=("grayscale", "cmyk", "corrupt"))
    first = top / "train" / "n01440764"
    modes = {}
    for p in sorted(first.glob("*.JPEG")):
        try:
            with Image.open(p) as im:
                im.load()
                modes[p.name] = im.mode
        except OSError:
            modes[p.name] = "corrupt"
    assert list(modes.values()) == ["RGB"] * 3 + ["L", "CMYK", "corrupt"]
    with open(top / "noisy_imagenette.csv") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == NOISY_COLUMNS
    assert len(rows) - 1 == 2 * (3 + 2) + 3
    assert {r[-1] for r in rows[1:]} == {"True", "False"}
    woof = make_image_tree(tmp_path, "imagewoof2-160", n_classes=2)
    assert (woof / "noisy_imagewoof.csv").is_file()
    assert sorted(p.name for p in (woof / "val").iterdir()) == list(datasets.IMAGEWOOF_WNIDS[:2])
