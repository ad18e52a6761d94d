"""Decode an image folder once into a uint8 cache that every later run memory-maps.

Layout read: ``<folder>/<split>/<class>/<image>`` (ImageFolder's layout, and Imagenette's).
Layout written, under ``data/cache/``:

    <dataset>-<split>-<res>px-<fingerprint>.npy   images, (N, 3, res, res) uint8, memory-mappable
    <dataset>-<split>-<res>px-<fingerprint>.json  labels, source aspect ratios, class names, skipped files
    <dataset>-<split>-<res>px-<fingerprint>.pca.json  the split's RGB principal components, once
                                                      asked for (``rgb_pca``: AlexNet's lighting)

``check_class_folders`` runs first, on names and listings only: class folders that differ
between train/ and val/, or a train/ class without images, are refused before a long decode.
The JSON is written last, so an interrupted build never leaves a cache that looks complete
(its leftovers are removed on the next run, and said to be). A cache damaged later (a file cut
short, invalid JSON, shapes that disagree) is found when it is loaded, named in one warning,
removed and decoded again. The fingerprint hashes every source file's path, size and mtime: a
changed source gives a new key, the stale cache is deleted and the cache is rebuilt; an
unchanged one is reused as is. Files that cannot be read (corrupt, a dangling link, a loop of
links) are skipped with a warning and listed in the JSON. 16-bit and float images are scaled to
8 bits by their range (``to_8bit``), not clipped.

Why squash to a square instead of cropping the centre square: every image is resized to
res x res *whole* and its original width/height ratio is kept beside it. The augmentations in
common/loader.py compute their crops in the original geometry and undo the squash, so nothing
is cut away (a centre-square cache would drop the sides of every wide image) and nothing is
seen distorted. The cost: the long side is stored at res pixels instead of res * aspect, i.e.
a wide image loses some horizontal resolution, which the later downscale to IMAGE_DIM loses
anyway.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.datasets import DATA_ROOT, DataError, _fmt, locked
from common.files import atomic_write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when the decode or the layout below changes, so old caches are rebuilt
# (2: 16-bit and float images scaled, not clipped; 3: channels-first, (N, 3, res, res), so the
# loader maps the file without a copy)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


@dataclass
class ImageSet:
    """A whole split in memory: what the loader and the training loop consume.

    Any labelled uint8 image set fits (not only Imagenette): build one with ``ImageSet(images,
    labels)`` from a (N, H, W, 3) uint8 tensor and (N,) integer labels.
    """

    images: torch.Tensor  # (N, H, W, 3) uint8, H == W; any strides (a cache's: (N, 3, H, W) underneath)
    labels: torch.Tensor  # (N,) int64
    aspect: torch.Tensor | None = None  # (N,) float32: the source's width / height (None: 1)
    classes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    source: Path | None = None  # the cache file it was loaded from (None: built in memory)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        negative = len(self.labels) and self.labels.min() < 0
        if self.labels.ndim != 1 or self.labels.is_floating_point() or negative:
            raise ValueError(f"labels must be (N,) integers >= 0, got {tuple(self.labels.shape)} "
                             f"{self.labels.dtype}")
        if self.aspect is None:
            self.aspect = torch.ones(len(self.images))
        if self.aspect.shape != (len(self.images),):
            raise ValueError(f"{len(self.images)} images but aspect of shape {tuple(self.aspect.shape)}")
        if not self.classes:
            self.classes = [str(c) for c in range(int(self.labels.max()) + 1 if len(self.labels) else 0)]
        if len(self.labels) and int(self.labels.max()) >= len(self.classes):
            raise ValueError(f"label {int(self.labels.max())} but only {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def scan(folder: Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """List a split's images and labels; classes are the sorted sub-folder names.

    Sorted WordNet ids give the same class order as torchvision's ImageFolder and Imagenette.
    A class folder without images is refused in train/ (a class no image teaches) but allowed
    in any other split (check_class_folders warns about it in val/).
    """
    root, classes = _class_folders(Path(folder), split)
    paths, labels, empty = [], [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            empty.append(root / cls)
        paths += files
        labels += [label] * len(files)
    if split == "train" and empty:
        raise _empty_train_classes(empty)
    if not paths:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
    return paths, labels, classes


def check_class_folders(folder: Path) -> list[str]:
    """Check a dataset's class folders before anything is decoded (names and listings only);
    return the class names, in label order.

    Refuses (DataError) train/ and val/ with different class folders, and a class folder in
    train/ without images; warns about a class folder in val/ without images.
    """
    folder = Path(folder)
    train, train_classes = _class_folders(folder, "train")
    val, val_classes = _class_folders(folder, "val")
    only_train = sorted(set(train_classes) - set(val_classes))
    only_val = sorted(set(val_classes) - set(train_classes))
    if only_train or only_val:
        raise DataError(
            f"train/ and val/ of {folder} hold different class folders. Only in train/: "
            f"{_names(only_train)}. Only in val/: {_names(only_val)}. Each split numbers its "
            "labels by sorted class name, so any difference gives val images the label of "
            "another class, and a class only in val/ has no training images at all. Add, rename "
            "or remove class folders so that both splits hold the same ones.")
    empty = [train / c for c in train_classes if not _has_images(train / c)]
    if empty:
        raise _empty_train_classes(empty)
    for c in val_classes:
        if not _has_images(val / c):
            log.warning("%s holds no images (%s): class %s is trained but never validated",
                        val / c, ", ".join(IMAGE_EXTENSIONS), c)
    return train_classes


def _class_folders(folder: Path, split: str) -> tuple[Path, list[str]]:
    """``folder/split`` and its sorted class folder names (hidden folders are not classes)."""
    root = folder / split
    if not root.is_dir():
        raise DataError(f"No '{split}' folder in {folder}. Expected {folder}/{split}/<class>/<image>; "
                        f"point DATA_PATH at a folder holding train/ and val/.")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/<class>/<image>.")
    return root, classes


def _has_images(folder: Path) -> bool:
    """True if ``folder`` holds an image file (stops at the first: no full listing needed)."""
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def _empty_train_classes(empty: list[Path]) -> DataError:
    """The error for train/ class folders without images (a class the model can never learn)."""
    one = len(empty) == 1
    return DataError(
        f"{_names([str(p) for p in empty])} {'holds' if one else 'hold'} no images "
        f"({', '.join(IMAGE_EXTENSIONS)}; sub-folders are not searched), so training would add "
        f"{'a class' if one else 'classes'} the model can never learn. Remove "
        f"{'this folder' if one else 'these folders'} or add images to {'it' if one else 'them'}.")


def _names(names: list[str], most: int = 10) -> str:
    """``names`` for a message: all of a few, or the first ``most`` and a count."""
    if not names:
        return "none"
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def typical_short_side(folder: Path, split: str = "train", samples: int = 32) -> int:
    """Median short side of a spread of the split's images (headers only: no decoding)."""
    from PIL import Image

    paths = scan(folder, split)[0]
    sides = []
    for p in paths[:: max(1, len(paths) // samples)][:samples]:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
        except Exception:  # unreadable files are reported when the cache is built
            continue
    return sorted(sides)[len(sides) // 2] if sides else 0


def fingerprint(paths: list[Path], folder: Path, resolution: int) -> str:
    """Hash of every file's relative path, size and mtime, plus the cache format.

    A file that cannot be stat'ed (a dangling symbolic link, a loop of links) is hashed as
    unreadable, by its error: the decode then skips it with a warning, as any unreadable image.
    """
    h = hashlib.sha1(f"v{CACHE_VERSION}:{resolution}".encode())
    for p in paths:
        try:
            st = p.stat()
            stamp = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError as e:
            stamp = f"unreadable:{e.errno}"
        h.update(f"{p.relative_to(folder)}\0{stamp}\n".encode())
    return h.hexdigest()[:16]


def decode(path: Path, resolution: int) -> tuple[np.ndarray, float, str]:
    """Decode one image to (res, res, 3) uint8 RGB; return it, its width/height and its mode
    (for 16-bit and float images, also how their values were scaled: ``to_8bit``)."""
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        aspect = im.width / im.height
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients,
        # never below the size asked for: several times faster on the full-size archive.
        im.draft("RGB", (resolution, resolution))
        if mode in WIDE_MODES:
            im, mode = to_8bit(im)
        rgb = im.convert("RGB")  # grayscale (L), CMYK and palette images become RGB here
        rgb = rgb.resize((resolution, resolution), Image.BILINEAR)  # PIL's filter antialiases
        return np.asarray(rgb, dtype=np.uint8), aspect, mode


# Single-channel modes wider than 8 bits: PIL's convert("RGB") clips their values to 0..255
# instead of scaling them (a 16-bit PNG comes out almost white, a float TIFF in [0, 1] black).
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
SIXTEEN_BIT = 65535


def to_8bit(im: Any) -> tuple[Any, str]:
    """A 16-bit or float grey image as 8-bit grey (mode L), scaled by the range of its mode, and
    its mode with the scaling used (for the decode's log).

    I;16 (16-bit PNG, TIFF): 0..65535 -> 0..255. I (32-bit integers, as PIL opens some 16-bit
    PNGs): the same when its values lie in 0..65535, else its own min..max. F (float TIFF):
    0..1 -> 0..255 when its values lie in [0, 1], else its own min..max.
    """
    from PIL import Image

    a = np.asarray(im, dtype=np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if im.mode.startswith("I;16") or (im.mode == "I" and lo >= 0 and hi <= SIXTEEN_BIT):
        scaled, how = a / SIXTEEN_BIT, "0..65535"
    elif im.mode == "F" and lo >= 0 and hi <= 1:
        scaled, how = a, "0..1"
    else:  # outside the mode's usual range: stretch what is there
        scaled, how = (a - lo) / (hi - lo) if hi > lo else np.clip(a, 0, 1), "own min..max"
    grey = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(grey), f"{im.mode} ({how})"


def _decode_chunk(args: tuple[str, list[tuple[int, str]], int]) -> list[tuple[int, float, str]]:
    """Worker: decode a chunk straight into the shared .npy memmap; report per-image results."""
    npy, items, resolution = args
    out = np.load(npy, mmap_mode="r+")
    results = []
    for i, path in items:
        try:
            image, aspect, mode = decode(Path(path), resolution)
            out[i] = image.transpose(2, 0, 1)  # (res, res, 3) -> the cache's (3, res, res)
            results.append((i, aspect, mode))
        except Exception as e:  # a truncated or corrupt file must not stop the run
            results.append((i, -1.0, f"{type(e).__name__}: {e}"))
    out.flush()
    return results


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _worker_init(parent: int) -> None:
    """Decode worker set-up: end with the parent, leave Ctrl-C to it.

    A parent killed by SIGTERM runs no clean-up, and its fork workers used to live on (waiting
    for work that never comes), keeping the cache lock and so stalling the next run for ever.
    On Linux the kernel now sends SIGKILL to the worker when the parent dies. (Strictly: when the
    thread that forked it ends; the pool forks from the thread calling build_cache.)
    """
    if sys.platform == "linux":
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no usable libc: the parent's clean-up still applies
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    # Ctrl-C reaches the whole process group; the parent ends the workers (_stop_workers), and a
    # worker's own KeyboardInterrupt would only print a traceback per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the decode now: cancel queued chunks and terminate the workers.

    ``with ProcessPoolExecutor`` would instead wait for every submitted chunk to be decoded.
    """
    if hasattr(pool, "terminate_workers"):  # Python 3.14+
        pool.terminate_workers()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public way before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=5)


def build_cache(folder: Path, split: str, resolution: int, cache_dir: Path = DATA_ROOT / "cache",
                workers: int = 0, name: str | None = None) -> ImageSet:
    """Return the split as an ImageSet, decoding it into the cache first if needed.

    ``workers``: decode processes (0 = one per CPU core). ``name``: the dataset part of the key
    (default: the folder's name).
    """
    folder = Path(folder)
    paths, labels, classes = scan(folder, split)
    key = f"{name or folder.name}-{split}-{resolution}px"
    fp = fingerprint(paths, folder, resolution)
    cache_dir = Path(cache_dir)
    npy, meta_path = cache_dir / f"{key}-{fp}.npy", cache_dir / f"{key}-{fp}.json"
    expect = (len(paths), resolution, classes)
    try:
        if meta_path.exists() and npy.exists():
            return _load(npy, meta_path, expect)
    except DamagedCache:
        pass  # removed and decoded again below, under the lock (another run may be doing it)
    writing = False
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # another run may be decoding the same split
        with locked(cache_dir, f".{key}.lock", what=f"decoding {key} into {cache_dir}"):
            if not _intact(npy, meta_path, expect):  # ... and may have finished meanwhile
                writing = True
                damaged = meta_path.exists()  # _intact said why; a complete cache is no leftover
                for old in cache_dir.glob(f"{key}-*"):  # same dataset/split/size
                    if not old.name.startswith(f"{key}-{fp}."):
                        log.info("source changed: removing stale cache %s", old.name)
                    elif not damaged:  # ours, but never completed: no source changed
                        log.info("removing %s, left by an interrupted decode", old.name)
                    old.unlink(missing_ok=True)
                import time

                # Plain lines before and after: in a log file the decode's bar shows nothing.
                log.info("decoding %d images of %s into a %d px cache (once; later runs reuse it) ...",
                         len(paths), key, resolution)
                started = time.perf_counter()
                _write(npy, meta_path, paths, labels, classes, resolution, workers, key)
                log.info("decoded %s in %.0f s: %s (%.0f MiB)", key, time.perf_counter() - started,
                         npy.name, npy.stat().st_size / 2**20)
    except OSError as e:
        if writing:
            for p in (npy, meta_path, npy.with_suffix(".npy.tmp")):
                with contextlib.suppress(OSError):  # a read-only folder refuses this too: keep the first error
                    p.unlink(missing_ok=True)
        raise _cache_write_error(e, npy, len(paths) * resolution * resolution * 3) from e
    return _load(npy, meta_path, expect)


def _intact(npy: Path, meta_path: Path, expect: tuple[int, int, list[str]]) -> bool:
    """True if the cache is complete and sound; a damaged one is named in a warning (and False)."""
    if not meta_path.exists():  # none, or an interrupted decode's (the record is written last)
        return False
    try:
        if not npy.exists():
            raise DamagedCache(f"{npy.name} is missing")
        _load(npy, meta_path, expect)
    except DamagedCache as e:
        log.warning("the image cache %s is damaged (%s): removing it and decoding again", npy.name, e)
        return False
    except OSError as e:  # not a write: kept apart from build_cache's handling of those
        raise DataError(f"Could not read the image cache {npy} ({e}); check that folder's permissions, "
                        f"or set DATA_DIR to another folder.") from e
    return True


def _cache_write_error(e: OSError, npy: Path, need: int) -> DataError:
    """The one line for a cache that cannot be written: a full disk is told how much to free, a
    folder without write permission to change it (errno tells them apart, not the free space)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DataError(f"Could not write the image cache {npy} ({e}). It needs about {_fmt(need)} free "
                         f"there; free some space or set DATA_DIR to another disk, then run again.")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataError(f"Could not write the image cache into {npy.parent} ({e.strerror}): make that "
                         f"folder writable, or set DATA_DIR to a folder you can write, then run again.")
    return DataError(f"Could not write the image cache {npy} ({e}); set DATA_DIR to another folder, "
                     f"then run again.")


def _write(npy: Path, meta_path: Path, paths: list[Path], labels: list[int], classes: list[str],
           resolution: int, workers: int, key: str) -> None:
    tmp = npy.with_suffix(".npy.tmp")
    n = len(paths)
    # A new file, not the old one truncated: anything still mapping a killed run's file
    # writes into that one, never into ours.
    tmp.unlink(missing_ok=True)
    # Channels-first, as the loader's grid_sample reads it: the loader then maps this file as it
    # is (a (N, H, W, 3) file made it copy the whole set, so building peaked at twice its size).
    # The workers decode straight into it: no image set is ever held in memory here.
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, resolution, resolution)).flush()
    workers = workers or os.cpu_count() or 1
    chunks = [(str(tmp), [(i, str(paths[i])) for i in range(s, min(s + 256, n))], resolution)
              for s in range(0, n, 256)]
    results: list[tuple[int, float, str]] = []
    from tqdm import tqdm

    bar = tqdm(total=n, desc=f"decoding {key}", unit="img", leave=False, disable=None)
    if workers == 1:
        for c in chunks:
            results += _decode_chunk(c)
            bar.update(len(c[1]))
    else:
        # fork: workers need no re-import of the caller (train.py), so they start instantly.
        ctx = mp.get_context("fork") if sys.platform == "linux" else None
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                                   initargs=(os.getpid(),))
        try:
            for r in pool.map(_decode_chunk, chunks):
                results += r
                bar.update(len(r))
        except BaseException:  # Ctrl-C, SystemExit, a broken pool: stop now, not after the decode
            _stop_workers(pool)
            raise
        pool.shutdown()
    bar.close()

    results.sort()
    aspect = [a for _, a, _ in results]
    bad = [(str(paths[i]), msg) for i, a, msg in results if a < 0]
    converted: dict[str, int] = {}
    for _, a, mode in results:
        if a >= 0 and mode != "RGB":
            converted[mode] = converted.get(mode, 0) + 1
    for path, msg in bad:
        log.warning("skipping unreadable image %s (%s)", path, msg)
    if converted:
        log.info("%s: converted to RGB: %s", key, ", ".join(f"{v} {k}" for k, v in sorted(converted.items())))
    if bad:
        log.warning("%s: skipped %d unreadable image(s) of %d", key, len(bad), n)
    keep = [i for i in range(n) if aspect[i] >= 0]
    meta = {"version": CACHE_VERSION, "resolution": resolution, "classes": classes,
            "keep": keep if bad else None, "labels": [labels[i] for i in keep],
            "aspect": [round(aspect[i], 5) for i in keep], "skipped": [p for p, _ in bad],
            "converted": converted}
    os.replace(tmp, npy)
    atomic_write_text(meta_path, json.dumps(meta))  # last: its presence marks the cache complete


class DamagedCache(ValueError):
    """A cache file cut short, not valid JSON, or whose parts disagree with each other or the source."""


def _load(npy: Path, meta_path: Path, expect: tuple[int, int, list[str]] | None = None) -> ImageSet:
    """The cached set; DamagedCache (saying what is wrong) for files cut short, invalid, or that
    disagree: with each other, or with ``expect`` = (source images, resolution, class names)."""
    try:
        meta = json.loads(meta_path.read_text())
        # copy-on-write map: pages load lazily, and torch gets a writable array (no warning)
        array = np.load(npy, mmap_mode="c")
        n, res, classes = expect if expect is not None else (len(array), meta["resolution"], meta["classes"])
        if array.dtype != np.uint8 or array.shape != (n, 3, res, res):
            raise ValueError(f"images of shape {array.shape} {array.dtype}, expected ({n}, 3, {res}, {res}) uint8")
        if meta["version"] != CACHE_VERSION or meta["resolution"] != res or meta["classes"] != classes:
            raise ValueError("its record names another format, size or classes")
        # (N, 3, H, W) on disk, seen as ImageSet's (N, H, W, 3): a view, nothing copied
        images = torch.from_numpy(array).permute(0, 2, 3, 1)
        if meta["keep"] is not None:  # drop the rows of skipped files (their slots are zeros)
            keep = torch.tensor(meta["keep"], dtype=torch.int64)
            if len(keep) and not 0 <= int(keep.min()) <= int(keep.max()) < n:
                raise ValueError("its record keeps images it does not hold")
            images = images[keep]
        return ImageSet(images=images, labels=torch.tensor(meta["labels"], dtype=torch.int64),
                        aspect=torch.tensor(meta["aspect"], dtype=torch.float32),
                        classes=meta["classes"], skipped=meta["skipped"], source=npy)
    except (ValueError, KeyError, TypeError, EOFError) as e:  # JSONDecodeError, a cut .npy: ValueError
        raise DamagedCache(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


PCA_PIXELS_PER_IMAGE = 64  # rgb_pca's sample: this many pixels of every image
PCA_SEED = 0  # ... at positions drawn from this seed


def rgb_pca(data: ImageSet, pixels_per_image: int = PCA_PIXELS_PER_IMAGE,
            seed: int = PCA_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the set's RGB pixel values, for AlexNet's lighting augmentation.

    Krizhevsky et al. 2012, Sec. 4.1: "we perform PCA on the set of RGB pixel values throughout
    the ImageNet training set". Returns ``(eigval, eigvec)``: the eigenvalues (3,), largest
    first, and the eigenvectors as the columns of (3, 3) (eigvec[:, i] belongs to eigval[i]), of
    the 3x3 covariance of pixel values scaled to [0, 1] (pixel / 255), in float32.

    Not every pixel: ``pixels_per_image`` positions of every image, drawn once from ``seed``
    (Imagenette's train split: 606k pixels; the components agree with a full pass to about three
    decimals). Pixels of the cached image, i.e. the whole photo squashed to a square: the same
    pixels as the photo's, resampled. Each eigenvector's largest entry is made positive, so the
    result is one definite set of numbers.

    Computed once per cache: a set loaded from the cache (``data.source``) keeps the result
    beside it as ``<cache>.pca.json`` and later runs read it; a set built in memory is computed
    each time. One process writes the file (the first to take its lock; DDP ranks and parallel
    runs share the cache); the others wait and read the complete file.
    """
    saved = data.source.with_suffix(".pca.json") if data.source is not None else None
    how = {"pixels_per_image": pixels_per_image, "seed": seed, "scale": "pixel / 255"}
    if saved is None:
        return _rgb_pca(data, pixels_per_image, seed)
    found = _read_pca(saved, how)
    if found is not None:
        return found
    # One writer per file: DDP ranks (and parallel runs) share the cache, so the first to take
    # the lock computes and writes it, and the others then read the complete file.
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(locked(saved.parent, f".{saved.name}.lock", what=f"computing {saved.name}"))
        except OSError:  # a cache folder we cannot write: compute it, keep nothing
            return _rgb_pca(data, pixels_per_image, seed)
        found = _read_pca(saved, how)  # written while this process waited
        if found is not None:
            return found
        eigval, eigvec = _rgb_pca(data, pixels_per_image, seed)
        with contextlib.suppress(OSError):  # a full disk costs only the saving, not the run
            atomic_write_text(saved, json.dumps({**how, "pixels": len(data.images) * pixels_per_image,
                                                 "eigval": eigval.tolist(), "eigvec": eigvec.tolist()}))
        return eigval, eigvec


def _read_pca(saved: Path, how: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The components saved at ``saved`` if they were computed ``how``; None if absent, made
    otherwise, or damaged (a damaged file is then computed and written again)."""
    try:
        meta = json.loads(saved.read_text())
        if all(meta.get(k) == v for k, v in how.items()):
            eigval, eigvec = torch.tensor(meta["eigval"]), torch.tensor(meta["eigvec"])
            if eigval.shape == (3,) and eigvec.shape == (3, 3):
                return eigval, eigvec
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s is damaged (%s): computing it again", saved.name, type(e).__name__)
    return None


def _rgb_pca(data: ImageSet, pixels_per_image: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb_pca's computation, on the images in memory."""
    images = data.images
    n, h, w, _ = images.shape
    if n == 0:
        raise ValueError("rgb_pca needs at least one image")
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(h, (n * pixels_per_image,), generator=g)
    cols = torch.randint(w, (n * pixels_per_image,), generator=g)
    which = torch.arange(n).repeat_interleave(pixels_per_image)
    dev = images.device
    pixels = images[which.to(dev), rows.to(dev), cols.to(dev)].cpu().double() / 255  # (n * k, 3)
    eigval, eigvec = torch.linalg.eigh(torch.cov(pixels.T))  # ascending, columns are vectors
    eigval, eigvec = eigval.flip(0).clamp(min=0), eigvec.flip(1)  # largest first
    biggest = eigvec.abs().argmax(0)
    eigvec = eigvec * eigvec[biggest, torch.arange(3)].sign()  # a definite sign per column
    return eigval.float(), eigvec.float()
