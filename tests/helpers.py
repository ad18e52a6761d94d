"""Reusable test-data builders: tiny Imagenette-style trees, archives, and a local HTTP server.

Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import io
import random
import re
import socket
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
import torch.nn as nn
from PIL import Image

from common.datasets import IMAGENETTE_WNIDS, IMAGEWOOF_WNIDS

NOISY_COLUMNS = ("path", "noisy_labels_0", "noisy_labels_1", "noisy_labels_5",
                 "noisy_labels_25", "noisy_labels_50", "is_valid")
EXTRAS = ("grayscale", "cmyk", "corrupt")


# ---------------------------------------------------------------------------------------------
# Image trees and archives
# ---------------------------------------------------------------------------------------------


def class_colour(index: int, n_classes: int) -> tuple[int, int, int]:
    """A mean colour per class, spread around the hue circle so classes are easy to tell apart."""
    r, g, b = colorsys.hsv_to_rgb(index / max(n_classes, 1), 0.8, 0.9)
    return round(r * 255), round(g * 255), round(b * 255)


def make_image(colour: tuple[int, int, int], size: tuple[int, int],
               rng: random.Random) -> Image.Image:
    """An RGB image of ``size`` (width, height): ``colour`` plus uniform noise (75/25 blend)."""
    flat = Image.new("RGB", size, colour)
    noise = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    return Image.blend(flat, noise, 0.25)


def make_image_tree(
    root: Path,
    folder: str = "imagenette2-160",
    wnids: Sequence[str] | None = None,
    n_train: int = 3,
    n_val: int = 2,
    size: tuple[int, int] = (20, 16),
    seed: int = 0,
    extras: Sequence[str] = (),
    *,
    n_classes: int = 10,
) -> Path:
    """Build ``root/folder/{train,val}/<wnid>/<wnid>_<k>.JPEG`` plus the noisy-labels CSV.

    Classes are ``wnids`` if given, else the first ``n_classes`` Imagenette (or Imagewoof, when
    ``folder`` starts with "imagewoof") wnids. Each class has its own mean colour, so a model can
    learn them. ``size`` is (width, height) as in PIL. ``extras`` adds odd files to train of the
    first class: "grayscale" (L-mode JPEG), "cmyk" (CMYK JPEG), "corrupt" (first half of a JPEG's
    bytes). Returns ``root/folder``.
    """
    woof = folder.startswith("imagewoof")
    if wnids is None:
        wnids = (IMAGEWOOF_WNIDS if woof else IMAGENETTE_WNIDS)[:n_classes]
    unknown = set(extras) - set(EXTRAS)
    if unknown:
        raise ValueError(f"unknown extras {sorted(unknown)}; choose from {EXTRAS}")
    rng = random.Random(seed)
    top = Path(root) / folder
    rows: list[list[str]] = []
    for split, count in (("train", n_train), ("val", n_val)):
        for c, wnid in enumerate(wnids):
            d = top / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                path = d / f"{wnid}_{k}.JPEG"
                make_image(class_colour(c, len(wnids)), size, rng).save(path, "JPEG", quality=90)
                rows.append(_noisy_row(path, top, wnid, split))

    if extras:
        wnid, d = wnids[0], top / "train" / wnids[0]
        for k, kind in enumerate(extras, start=n_train):
            path = d / f"{wnid}_{k}.JPEG"
            img = make_image(class_colour(0, len(wnids)), size, rng)
            if kind == "grayscale":
                img.convert("L").save(path, "JPEG")
            elif kind == "cmyk":
                img.convert("CMYK").save(path, "JPEG")
            else:  # corrupt: a JPEG cut in half, as an interrupted copy leaves it
                buf = io.BytesIO()
                img.save(buf, "JPEG")
                path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
            rows.append(_noisy_row(path, top, wnid, "train"))

    csv_name = "noisy_imagewoof.csv" if woof else "noisy_imagenette.csv"
    with open(top / csv_name, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(NOISY_COLUMNS)
        writer.writerows(rows)
    return top


def _noisy_row(path: Path, top: Path, wnid: str, split: str) -> list[str]:
    # Every noise level keeps the true label: tests want clean labels, the columns want to exist.
    return [path.relative_to(top).as_posix(), *[wnid] * 5, str(split == "val")]


def make_archive(tree: Path, out: Path) -> str:
    """Write ``tree`` as a .tgz whose top member is the tree's folder name; return its MD5."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tf:
        tf.add(tree, arcname=Path(tree).name)
    return hashlib.md5(out.read_bytes()).hexdigest()


def unused_port() -> int:
    """A local port nothing listens on (bound, then closed), for "host unreachable" tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Local HTTP server
# ---------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request the server saw; ``headers.get`` is case-insensitive."""

    method: str
    path: str
    headers: Message


class LocalHTTPServer:
    """Serve ``root`` on 127.0.0.1 (a free port) from a daemon thread, with fault injection.

    Supports ``Range: bytes=N-`` (206 + Content-Range, 416 past the end) and 404 for missing
    files, and records every request in ``requests``. Faults, each for the next ``times``
    requests: ``cut_after`` (send the full Content-Length, then only that many body bytes, then
    close), ``fail_next`` (answer an HTTP error), ``corrupt_next`` (flip the body's last byte).
    ``ignore_range`` makes it answer 200 with the whole file, as some servers do.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[RecordedRequest] = []
        self.ignore_range = False
        self._lock = threading.Lock()
        self._cut: list[int] = [0, 0]  # [bytes, times left]
        self._fail: list[int] = [0, 0]  # [status, times left]
        self._corrupt = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        # A short poll interval makes shutdown at fixture teardown quick (default 0.5 s).
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def cut_after(self, nbytes: int, times: int = 1) -> None:
        """Drop the connection after ``nbytes`` of the body on the next ``times`` requests."""
        with self._lock:
            self._cut = [nbytes, times]

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        """Answer HTTP ``status`` to the next ``times`` requests."""
        with self._lock:
            self._fail = [status, times]

    def corrupt_next(self, times: int = 1) -> None:
        """Flip the last body byte of the next ``times`` responses (a checksum mismatch)."""
        with self._lock:
            self._corrupt = times

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalHTTPServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _faults(self) -> tuple[int | None, int | None, bool]:
        """Take this request's share of the pending faults: (fail status, cut bytes, corrupt)."""
        with self._lock:
            fail = cut = None
            if self._fail[1] > 0:
                fail, self._fail[1] = self._fail[0], self._fail[1] - 1
            elif self._cut[1] > 0:
                cut, self._cut[1] = self._cut[0], self._cut[1] - 1
            corrupt = fail is None and self._corrupt > 0
            if corrupt:
                self._corrupt -= 1
            return fail, cut, corrupt


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        owner: LocalHTTPServer = self.server.owner  # type: ignore[attr-defined]
        with owner._lock:
            owner.requests.append(RecordedRequest("GET", self.path, self.headers))
        fail, cut, corrupt = owner._faults()
        if fail is not None:
            self.send_error(fail)
            return
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        file = (owner.root / rel).resolve()
        if not file.is_relative_to(owner.root.resolve()) or not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
        if m and not owner.ignore_range:
            start, status = int(m.group(1)), 206
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        if corrupt and body:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if cut is not None:  # a dropped connection: promised len(body), deliver fewer
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


# ---------------------------------------------------------------------------------------------
# Processes (Linux /proc: psutil is not a dependency)
# ---------------------------------------------------------------------------------------------


def child_pids(pid: int) -> set[int]:
    """The PIDs of the live processes whose parent is ``pid``."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _proc_field(int(entry.name), "PPid") == str(pid):
            children.add(int(entry.name))
    return {c for c in children if pid_alive(c)}


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (dead, not yet reaped by an init that may never) is not."""
    state = _proc_field(pid, "State")
    return state is not None and not state.startswith(("Z", "X"))


def _proc_field(pid: int, name: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    except OSError:  # gone meanwhile
        pass
    return None


def randomised(model: nn.Module, seed: int = 0, scale: float = 0.05) -> nn.Module:
    """Every float tensor of the state (BN statistics too, so that they matter) drawn at random,
    in eval mode: for tests that torchvision's weights, renamed, compute the same here.
    A model built on the meta device is given memory first (skipping its own init, which costs
    seconds for VGG's 100 M-weight fc6)."""
    if any(t.is_meta for t in model.state_dict().values()):
        model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * scale)
    return model.eval()
