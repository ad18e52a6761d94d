"""Classify images with a trained checkpoint: the top-5 classes by name, with probabilities.

    python -m common.predict runs/resnet18/<run>/best.pt photo.jpg scan.png

Any JPEG or PNG (any size; grayscale, palette or CMYK become RGB) goes through the validation
path exactly: decoded as the cache decodes (common/cache.decode: squashed to a square, its
aspect kept), then the loader's resize + centre crop (EVAL_CROP of the short side, to
EVAL_IMAGE_DIM or IMAGE_DIM) and ImageNet normalisation (common/loader.BatchLoader).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from common import errors, registry
from common.cache import ImageSet, decode
from common.config import ConfigError
from common.loader import BatchLoader
from common.registry import class_name, load_model


class NotAnImage(ValueError):
    """A file PIL cannot read as an image."""


def prepare(path: Path, cfg: dict[str, Any], device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, d, d) normalised, as the run's validation images were."""
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError

    from common.data import cache_dim

    if not path.is_file():
        raise NotAnImage(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            short = min(im.size)
        pixels, aspect, _ = decode(path, cache_dim(cfg, short))
    except DecompressionBombError as e:  # a header claiming billions of pixels: refused, not decoded
        raise NotAnImage(f"{path} is refused: {e} (a possible decompression bomb); pass a smaller "
                         f"image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise NotAnImage(f"{path} is not an image PIL can read ({type(e).__name__}): pass a JPEG or PNG") from None
    one = ImageSet(torch.from_numpy(pixels.copy())[None], torch.zeros(1, dtype=torch.int64),
                   torch.tensor([aspect], dtype=torch.float32))
    loader = BatchLoader(one, 1, train=False, image_dim=cfg["EVAL_IMAGE_DIM"] or cfg["IMAGE_DIM"], device=device,
                         eval_crop=cfg["EVAL_CROP"])
    x, _ = next(iter(loader))
    return x


@torch.no_grad()
def top_k(model: nn.Module, x: torch.Tensor, classes: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable (class, probability) of one prepared image."""
    probs = model(x).float().softmax(1)[0]
    p, i = probs.topk(min(k, len(probs)))
    return [(classes[j] if j < len(classes) else str(j), v) for v, j in zip(p.tolist(), i.tolist())]


@errors.entry_point
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="a last.pt or best.pt")
    p.add_argument("images", nargs="+", type=Path, help="JPEG or PNG files")
    p.add_argument("--top", type=int, default=5, help="how many classes to list (at least 1)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda")
    args = p.parse_args(argv)
    if args.top < 1:
        raise ConfigError(f"--top={args.top}: list at least 1 class (default 5)")
    device = registry.device(args.device, flag="--device")
    model, ckpt = load_model(args.checkpoint, device)
    classes = list(ckpt.get("classes") or [str(i) for i in range(ckpt["num_classes"])])
    failed = False
    for path in args.images:
        try:
            x = prepare(path, ckpt["config"], device)
        except NotAnImage as e:
            print(f"error: {e}", file=sys.stderr)
            failed = True
            continue
        print(path)
        for wnid, prob in top_k(model, x, classes, args.top):
            name = class_name(wnid)
            print(f"  {prob:6.1%}  {name}" + (f" ({wnid})" if name != wnid else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
