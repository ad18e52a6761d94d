"""The dataset a run's constants name, as two in-memory uint8 sets: fetched, checked, decoded once.

``load_data(cfg)`` is the one way a train.py, common.evaluate, common.figures and the benchmarks
get their images, so each sees the same cache with the same size (``cache_dim``).
"""
from __future__ import annotations

import math
from typing import Any

from common.cache import ImageSet, build_cache, check_class_folders, typical_short_side
from common.checkpoint import check_classes
from common.config import check_folder
from common.datasets import DATA_ROOT, prepare_dataset
from common.files import user_path


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


def load_data(cfg: dict[str, Any], ckpt: dict[str, Any] | None = None,
              what: str = "the checkpoint") -> tuple[ImageSet, ImageSet]:
    """The dataset the constants name, as two in-memory uint8 sets (decoded once, then cached).

    ``ckpt``: the checkpoint that meets this data (named ``what`` in messages); data whose
    classes are not the ones it was trained on, by name, is refused before the decode."""
    root = user_path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else DATA_ROOT
    check_folder("DATA_DIR", root)  # a file or a read-only folder: one line now, not a failed clean-up later
    source = user_path(cfg["DATA_PATH"]) if cfg["DATA_PATH"] else None
    folder = prepare_dataset(cfg["DATASET"], cfg["DATASET_SIZE"], root, source=source)
    classes = check_class_folders(folder)  # names and counts only: before a long decode, not after it
    if ckpt is not None:
        check_classes(ckpt, classes, what)
    res = cache_dim(cfg, typical_short_side(folder, "train"))
    cache_dir = root / "cache"
    train_set = build_cache(folder, "train", res, cache_dir, workers=cfg["DECODE_WORKERS"])
    val_set = build_cache(folder, "val", res, cache_dir, workers=cfg["DECODE_WORKERS"])
    return train_set, val_set
