"""The dataset a run's constants name, as two in-memory uint8 sets: fetched, checked, decoded once.

``load_data(cfg)`` is the one way a train.py, common.evaluate, common.figures and the benchmarks
get their images, so each sees the same cache with the same size (``cache_dim``).
MAX_IMAGES_PER_CLASS=N takes the first N images of each class (train and val) before the
decode, so a smoke test decodes and trains on a few images of any dataset.

``split_training(cfg, train_set, val_set)`` then cuts the training split, never val:
HOLDOUT_FRACTION sets a part of it aside to evaluate on instead of val (to tune a recipe without
looking at the validation images), TRAIN_FRACTION trains on a part of the rest (ViT's claim that
it needs data, Sec. 4.3). Both parts are class-balanced and drawn from SEED.

The decoded caches stay under DATA_DIR/cache/ (one per dataset, split and size); list them, and
remove those of other sizes, with:

    python -m common.data --list [--DATA_DIR=path]
    python -m common.data --remove-unused --keep-px=128          # lists what it would remove
    python -m common.data --remove-unused --keep-px=128 --yes    # ... and removes it
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common.cache import ImageSet, build_cache, check_class_folders, scan, typical_short_side
from common.checkpoint import check_classes
from common.config import check_folder
from common.datasets import DATA_ROOT, DataError, locked, prepare_dataset
from common.files import rel, user_path


def cache_dim(cfg: dict[str, Any], source_side: int) -> int:
    """Side of the decoded cache: CACHE_DIM, or twice the larger image side, capped at the
    source's typical short side, never below the image side; rounded up to a multiple of 16.

    Twice: a random crop of a third of the image is then still downscaled, not blown up, so it
    stays sharp (on Imagenette at 64 px a 128 px cache did better than a 112 px one in our runs),
    and bilinear sampling at no more than 2x downscale needs no extra anti-aliasing. Capped:
    storing more pixels than the photos have buys nothing.
    """
    if cfg.get("CACHE_DIM"):
        return cfg["CACHE_DIM"]
    eval_dim = (cfg.get("EVAL_IMAGE_DIM") or cfg["IMAGE_DIM"]) * max(cfg.get("EVAL_SCALES", (1.0,)))
    need = max(cfg["IMAGE_DIM"], round(eval_dim))
    return 16 * math.ceil(max(need, min(2 * need, source_side)) / 16)


def load_data(cfg: dict[str, Any],
              trained_on: Sequence[tuple[dict[str, Any], str]] = ()) -> tuple[ImageSet, ImageSet]:
    """The dataset the constants name, as two in-memory uint8 sets (decoded once, then cached).

    ``trained_on``: (checkpoint, what names it in messages) of each checkpoint that meets this
    data; data whose classes are not the ones it was trained on, by name, is refused before the
    decode."""
    root = user_path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else DATA_ROOT
    check_folder("DATA_DIR", root)  # a file or a read-only folder: one line now, not a failed clean-up later
    source = user_path(cfg["DATA_PATH"]) if cfg["DATA_PATH"] else None
    folder = prepare_dataset(cfg["DATASET"], cfg["DATASET_SIZE"], root, source=source)
    classes = check_class_folders(folder)  # names and counts only: before a long decode, not after it
    for ckpt, what in trained_on:
        check_classes(ckpt, classes, what)
    if cfg.get("MAX_IMAGES_PER_CLASS"):
        folder = first_images(folder, cfg["MAX_IMAGES_PER_CLASS"], root / "subsets")
    res = cache_dim(cfg, typical_short_side(folder, "train"))
    cache_dir = root / "cache"
    train_set = build_cache(folder, "train", res, cache_dir, workers=cfg["DECODE_WORKERS"])
    val_set = build_cache(folder, "val", res, cache_dir, workers=cfg["DECODE_WORKERS"])
    return train_set, val_set


def split_training(cfg: dict[str, Any], train_set: ImageSet, val_set: ImageSet) -> tuple[ImageSet, ImageSet]:
    """(what to train on, what to evaluate on): with HOLDOUT_FRACTION, the held-out part of the
    training split in place of val; with TRAIN_FRACTION, a part of the (remaining) training split.

    Each class keeps round(fraction x its images), at least one image, so every class stays in
    both parts (the accuracies of a held-out set missing a class would not compare with val's).
    The draw depends on SEED only, one stream per purpose: the same SEED holds out the same
    images whatever TRAIN_FRACTION is, and trains on the same subset whatever the recipe."""
    if cfg.get("HOLDOUT_FRACTION", 0):
        held, kept = balanced_split(train_set.labels, cfg["HOLDOUT_FRACTION"], cfg["SEED"], HOLDOUT_STREAM,
                                    train_set.num_classes, "HOLDOUT_FRACTION")
        train_set, val_set = subset(train_set, kept), subset(train_set, held)
    if cfg.get("TRAIN_FRACTION", 1) < 1:
        chosen, _ = balanced_split(train_set.labels, cfg["TRAIN_FRACTION"], cfg["SEED"], TRAIN_STREAM,
                                   train_set.num_classes, "TRAIN_FRACTION")
        train_set = subset(train_set, chosen)
    return train_set, val_set


HOLDOUT_STREAM, TRAIN_STREAM = 0x601D0, 0x7A1F  # the two draws' own generators (any distinct numbers)


def balanced_split(labels: torch.Tensor, fraction: float, seed: int, stream: int, num_classes: int,
                   name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rest): sorted indices, round(fraction x n) of each class's n images chosen at random
    (seeded by ``seed`` and ``stream``), at least one, and at least one left when ``fraction`` < 1."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + stream)
    chosen = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        k = min(max(1, round(fraction * len(idx))), len(idx) - (fraction < 1))
        if k < 1:
            raise DataError(f"{name}={fraction}: class {c} has {len(idx)} training image"
                            f"{'s' if len(idx) != 1 else ''}, too few to split; use more images per class")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[torch.cat(chosen)] = True
    return mask.nonzero().flatten(), (~mask).nonzero().flatten()


def subset(data: ImageSet, idx: torch.Tensor) -> ImageSet:
    """The images ``idx`` of ``data``, copied into memory in the cache's channels-first layout
    (so the loader reads them as it reads a cache). ``source`` is dropped: statistics kept beside
    the cache file (AlexNet's PCA) are of the whole split, not of this part."""
    images = data.images.permute(0, 3, 1, 2)[idx].contiguous().permute(0, 2, 3, 1)
    return dataclasses.replace(data, images=images, labels=data.labels[idx], aspect=data.aspect[idx],
                               source=None)


def first_images(folder: Path, per_class: int, subsets: Path) -> Path:
    """A folder of links to the first ``per_class`` images (in name order) of each class of
    ``folder``'s train/ and val/: the same layout, so the cache decodes only these.

    Its name holds the cap and a hash of the source's path, so the cache key differs for every
    cap and source (the cache is keyed by the folder's name, and fingerprinted by the files).
    The links are brought up to date on every call (a changed source changes the set).
    """
    tag = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    out = subsets / f"{folder.name}-first{per_class}-{tag}"
    subsets.mkdir(parents=True, exist_ok=True)
    with locked(subsets, f".{out.name}.lock", what=f"linking the first {per_class} images per class"):
        for split in ("train", "val"):
            paths, labels, classes = scan(folder, split)
            wanted: dict[Path, Path] = {}
            taken = dict.fromkeys(range(len(classes)), 0)
            for path, label in zip(paths, labels):
                if taken[label] < per_class:
                    taken[label] += 1
                    wanted[out / split / classes[label] / path.name] = path.resolve()
            _sync_links(out / split, classes, wanted)
    return out


def _sync_links(split_dir: Path, classes: list[str], wanted: dict[Path, Path]) -> None:
    """Make ``split_dir/<class>/`` hold exactly the links ``wanted`` (link -> target)."""
    for cls in classes:
        (split_dir / cls).mkdir(parents=True, exist_ok=True)
    for d in split_dir.iterdir():
        if d.is_dir() and d.name not in classes:  # a class the source no longer has
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    for cls in classes:
        for link in (split_dir / cls).iterdir():
            if link not in wanted or not link.is_symlink() or Path(os.readlink(link)) != wanted[link]:
                link.unlink()
    for link, target in wanted.items():
        if not link.is_symlink():
            try:
                link.symlink_to(target)
            except OSError as e:
                raise DataError(f"MAX_IMAGES_PER_CLASS: could not link {link} to {target} ({e}); set "
                                f"MAX_IMAGES_PER_CLASS=0 or DATA_DIR to a folder that allows links.") from e


# ----------------------------------------------------------------------------- the caches on disk

CACHE_NAME = re.compile(r"(?P<stem>(?P<dataset>.+)-(?P<split>[^-]+)-(?P<px>\d+)px-(?P<fp>[0-9a-f]{16}))"
                        r"\.(npy|json|pca\.json|npy\.tmp)$")


@dataclass
class Cache:
    """One decoded cache: its .npy, .json and (if made) .pca.json files."""

    dataset: str
    split: str
    px: int
    fingerprint: str
    files: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.exists())


def caches(cache_dir: Path) -> list[Cache]:
    """The caches under ``cache_dir``, by dataset, split and size (the files of an unfinished
    decode, ``.npy.tmp``, count with theirs)."""
    found: dict[str, Cache] = {}
    for f in sorted(cache_dir.glob("*")) if cache_dir.is_dir() else ():
        m = CACHE_NAME.match(f.name)
        if m and f.is_file():
            c = found.setdefault(m["stem"], Cache(m["dataset"], m["split"], int(m["px"]), m["fp"]))
            c.files.append(f)
    return sorted(found.values(), key=lambda c: (c.dataset, c.px, c.split))


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m common.data",
                                description="List the decoded image caches, or remove those of other sizes.")
    p.add_argument("--DATA_DIR", default="", help="the DATA_DIR the runs used ('' = data/ in this repository)")
    p.add_argument("--list", action="store_true", help="list every cache with its size (the default)")
    p.add_argument("--remove-unused", action="store_true",
                   help="remove every cache whose size is not in --keep-px (with --yes; without, only list them)")
    p.add_argument("--keep-px", default="", help="cache sides to keep, e.g. 128 or 128,224")
    p.add_argument("--yes", action="store_true", help="really remove (--remove-unused)")
    args = p.parse_args(argv)
    cache_dir = (user_path(args.DATA_DIR) if args.DATA_DIR else DATA_ROOT) / "cache"
    found = caches(cache_dir)
    if not args.remove_unused:
        if not found:
            print(f"no decoded caches in {rel(cache_dir)}")
            return
        for c in found:
            print(f"{c.dataset:<32} {c.split:<6} {c.px:>5} px  {_mib(c.size):>12}  {c.fingerprint}")
        print(f"{len(found)} caches, {_mib(sum(c.size for c in found))} in {rel(cache_dir)}")
        return
    try:
        keep = {int(v) for v in args.keep_px.split(",") if v.strip()}
    except ValueError:
        p.error(f"--keep-px={args.keep_px!r}: give the sides to keep as whole numbers, e.g. --keep-px=128,224")
    if not keep:
        p.error("--remove-unused needs --keep-px (the cache sides your runs use, e.g. --keep-px=128); "
                "see them with --list")
    gone = [c for c in found if c.px not in keep]
    total = _mib(sum(c.size for c in gone))
    for c in gone:
        print(f"{'removing' if args.yes else 'would remove'} {c.dataset} {c.split} {c.px} px "
              f"({_mib(c.size)})")
        if args.yes:
            with locked(cache_dir, f".{c.dataset}-{c.split}-{c.px}px.lock", what="removing a cache"):
                for f in c.files:
                    f.unlink(missing_ok=True)
    if not gone:
        print(f"nothing to remove: every cache in {rel(cache_dir)} is {', '.join(map(str, sorted(keep)))} px")
    elif args.yes:
        print(f"removed {len(gone)} caches, {total}")
    else:
        print(f"{len(gone)} caches, {total}: add --yes to remove them")


if __name__ == "__main__":
    sys.exit(main())
