"""Decode an image folder once into a uint8 cache that every later run memory-maps.

Layout read: ``<folder>/<split>/<class>/<image>`` (ImageFolder's layout, and Imagenette's).
Layout written, under ``data/cache/``:

    <dataset>-<split>-<res>px-<fingerprint>.npy   images, (N, 3, res, res) uint8, memory-mappable
    <dataset>-<split>-<res>px-<fingerprint>.json  labels, source aspect ratios, class names, skipped files
    <dataset>-<split>-<res>px-<fingerprint>.pca.json  the split's RGB principal components, once
                                                      asked for (``rgb_pca``: AlexNet's lighting)

``check_class_folders`` runs first, on names and listings only: class folders that differ
between train/ and val/, or a train/ class without images, are refused before a long decode.
The JSON is written last, so an interrupted build never leaves a cache that looks complete.
The fingerprint hashes every source file's path, size and mtime: a changed source gives a new
key, the stale cache is deleted and the cache is rebuilt; an unchanged one is reused as is.

Why squash to a square instead of cropping the centre square: every image is resized to
res x res *whole* and its original width/height ratio is kept beside it. The augmentations in
common/loader.py compute their crops in the original geometry and undo the squash, so nothing
is cut away (a centre-square cache would drop the sides of every wide image) and nothing is
seen distorted. The cost: the long side is stored at res pixels instead of res * aspect, i.e.
a wide image loses some horizontal resolution, which the later downscale to IMAGE_DIM loses
anyway.
"""
from __future__ import annotations

import ctypes
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

import numpy as np
import torch

from common.datasets import DATA_ROOT, DataError, locked
from common.files import atomic_write_text

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the decode or the layout below changes, so old caches are rebuilt
# (2: channels-first, (N, 3, res, res), so the loader maps the file without a copy)
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


def check_class_folders(folder: Path) -> None:
    """Check a dataset's class folders before anything is decoded (names and listings only).

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
    """Hash of every file's relative path, size and mtime, plus the cache format."""
    h = hashlib.sha1(f"v{CACHE_VERSION}:{resolution}".encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def decode(path: Path, resolution: int) -> tuple[np.ndarray, float, str]:
    """Decode one image to (res, res, 3) uint8 RGB; return it, its width/height and its mode."""
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        aspect = im.width / im.height
        # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients,
        # never below the size asked for: several times faster on the full-size archive.
        im.draft("RGB", (resolution, resolution))
        rgb = im.convert("RGB")  # grayscale (L), CMYK and palette images become RGB here
        rgb = rgb.resize((resolution, resolution), Image.BILINEAR)  # PIL's filter antialiases
        return np.asarray(rgb, dtype=np.uint8), aspect, mode


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
    if meta_path.exists() and npy.exists():
        return _load(npy, meta_path)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # another run may be decoding the same split
        with locked(cache_dir, f".{key}.lock", what=f"decoding {key} into {cache_dir}"):
            if not (meta_path.exists() and npy.exists()):  # ... and may have finished meanwhile
                for stale in cache_dir.glob(f"{key}-*"):  # same dataset/split/size, older source
                    log.info("source changed: removing stale cache %s", stale.name)
                    stale.unlink(missing_ok=True)
                _write(npy, meta_path, paths, labels, classes, resolution, workers, key)
    except OSError as e:
        for p in (npy, meta_path, npy.with_suffix(".npy.tmp")):
            p.unlink(missing_ok=True)
        need = len(paths) * resolution * resolution * 3 / 2**20
        raise DataError(f"Could not write the image cache {npy} ({e}). It needs about {need:.0f} MiB "
                        f"free there; free some space or move data/ elsewhere, then run again.") from e
    return _load(npy, meta_path)


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


def _load(npy: Path, meta_path: Path) -> ImageSet:
    meta = json.loads(meta_path.read_text())
    # copy-on-write map: pages load lazily, and torch gets a writable array (no warning)
    # (N, 3, H, W) on disk, seen as ImageSet's (N, H, W, 3): a view, nothing copied
    images = torch.from_numpy(np.load(npy, mmap_mode="c")).permute(0, 2, 3, 1)
    if meta["keep"] is not None:  # drop the rows of skipped files (their slots are zeros)
        images = images[torch.tensor(meta["keep"], dtype=torch.int64)]
    return ImageSet(images=images, labels=torch.tensor(meta["labels"], dtype=torch.int64),
                    aspect=torch.tensor(meta["aspect"], dtype=torch.float32),
                    classes=meta["classes"], skipped=meta["skipped"], source=npy)


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
    each time.
    """
    saved = data.source.with_suffix(".pca.json") if data.source is not None else None
    how = {"pixels_per_image": pixels_per_image, "seed": seed, "scale": "pixel / 255"}
    if saved is not None and saved.exists():
        meta = json.loads(saved.read_text())
        if all(meta.get(k) == v for k, v in how.items()):
            return torch.tensor(meta["eigval"]), torch.tensor(meta["eigvec"])
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
    eigval, eigvec = eigval.float(), eigvec.float()
    if saved is not None:
        atomic_write_text(saved, json.dumps({**how, "pixels": len(pixels), "eigval": eigval.tolist(),
                                             "eigvec": eigvec.tolist()}))
    return eigval, eigvec
