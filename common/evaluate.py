"""Evaluate checkpoints on the validation set, alone and as an ensemble that averages their softmax.

    python -m common.evaluate runs/vgg16/<run>/best.pt
    python -m common.evaluate A/best.pt B/best.pt --views 10crop --scales 1,1.25 [--data PATH]

Each checkpoint is evaluated with its own constants (image size, centre crop) on the validation
set its train.py used, loaded through the same decoded cache (common/data.load_data), with any
of the trainer's evaluation views (common/loader.py: center, flip, 5crop, 10crop, at several
scales). Several checkpoints are also combined as VGG's paper combined its nets (Simonyan &
Zisserman, arXiv:1409.1556, Sec. 4.3: "we combine the outputs of several models by averaging
their soft-max class posteriors"): each member's probabilities, averaged over its views, are
averaged over the members. Members must share the validation set (the same classes and images),
and each member's classes must be the data's, by name (common.checkpoint.check_classes).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from common import errors, recipe, system
from common.checkpoint import TrainingError
from common.config import ConfigError
from common.data import load_data, split_training
from common.datasets import DataError
from common.loader import EVAL_VIEWS, BatchLoader
from common import registry
from common.registry import load_model

BATCH_SIZE = 100  # validation images per forward (memory, not results: evaluation is per image)


def val_loader_for(cfg: dict[str, Any], device: torch.device, data_path: str = "", views: str = "center",
                   scales: Sequence[float] = (1.0,), batch_size: int = BATCH_SIZE, *,
                   ckpt: dict[str, Any] | None = None, what: str = "the checkpoint") -> BatchLoader:
    """The validation images of the run ``cfg`` describes, as its trainer evaluated them (the same
    cache, eval size and crop), with ``views`` at ``scales``; DATA_PATH overridable.

    With ``ckpt`` (named ``what`` in messages), data whose classes are not the checkpoint's, by
    name, is refused (TrainingError) before it is decoded."""
    # The run's own cache (sized for its EVAL_SCALES), unless a larger scale needs more pixels.
    cfg = {**cfg, "EVAL_SCALES": (*cfg.get("EVAL_SCALES", (1.0,)), *scales)}
    if data_path:
        cfg["DATA_PATH"] = data_path
    # A run that held out part of its training images (HOLDOUT_FRACTION) is evaluated on those,
    # as it was during training: a recipe tuned on them is then not judged on val by accident.
    train_set, val_set = load_data(cfg, [(ckpt, what)] if ckpt is not None else [])
    _, val_set = split_training({**recipe.SWITCHES, **cfg}, train_set, val_set)
    return BatchLoader(val_set, batch_size, train=False, image_dim=cfg["EVAL_IMAGE_DIM"] or cfg["IMAGE_DIM"],
                       device=device, eval_crop=cfg["EVAL_CROP"], channels_last=cfg.get("CHANNELS_LAST", False),
                       views=views, scales=tuple(scales))


@torch.no_grad()
def probabilities(model: nn.Module, loader: BatchLoader, autocast: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax probabilities (N, C) averaged over the loader's views, labels (N,)), on the CPU,
    in the validation set's order."""
    model.eval()
    probs, labels = [], []
    for xs, y in loader.iterate_views():
        p = torch.zeros((), device=loader.device)
        for x in xs:
            with autocast:
                p = p + model(x).float().softmax(1)
        probs.append((p / len(xs)).cpu())
        labels.append(y.cpu())
    return torch.cat(probs), torch.cat(labels)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 and top-5 (top-k for fewer than 5 classes) of (N, C) scores."""
    hit = probs.topk(min(5, probs.shape[1]), dim=1).indices == labels[:, None]
    return {"top1": hit[:, 0].double().mean().item(), "top5": hit.any(1).double().mean().item(),
            "images": len(labels)}


def evaluate(checkpoints: Sequence[Path], views: str = "center", scales: Sequence[float] = (1.0,),
             data_path: str = "", device: str = "auto") -> dict[str, dict[str, float]]:
    """Each checkpoint's top-1/top-5 with these views, and (for several) the ensemble's."""
    dev = registry.device(device)
    results: dict[str, dict[str, float]] = {}
    total: torch.Tensor | None = None
    first: tuple[Path, list[str], torch.Tensor] | None = None
    for path in checkpoints:
        model, ckpt = load_model(path, dev)
        cfg = ckpt["config"]
        loader = val_loader_for(cfg, dev, data_path, views, scales, ckpt=ckpt, what=str(path))
        autocast = system.autocast(dev, system.amp_mode(dev, cfg.get("AMP", "off")))
        probs, labels = probabilities(model, loader, autocast)
        classes = list(ckpt.get("classes") or [])
        if first is None:
            first = (path, classes, labels)
        elif classes != first[1] or not torch.equal(labels, first[2]):
            raise TrainingError(f"{path} was trained on other classes or is evaluated on other images than "
                                f"{first[0]}: an ensemble needs members of the same dataset.")
        name = str(path) if str(path) not in results else f"{path} (#{len(results) + 1})"
        results[name] = accuracy(probs, labels)
        total = probs if total is None else total + probs
        del model
    if len(checkpoints) > 1 and total is not None and first is not None:
        results["ensemble"] = accuracy(total / len(checkpoints), first[2])
    return results


@errors.entry_point
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path, help="last.pt or best.pt files (several: an ensemble)")
    p.add_argument("--views", choices=EVAL_VIEWS, default="center", help="views of each image, softmax averaged")
    p.add_argument("--scales", default="1", help="comma-separated multiples of the eval size, e.g. 1,1.25")
    p.add_argument("--data", "--DATA_PATH", dest="data", default="", help="the dataset, if not the runs' DATA_PATH")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    args = p.parse_args(argv)
    try:
        scales = tuple(float(s) for s in args.scales.split(",") if s)
    except ValueError:
        p.error(f"--scales takes numbers separated by commas, e.g. 1,1.25; got {args.scales!r}")
    try:
        results = evaluate(args.checkpoints, args.views, scales, args.data, args.device)
    except (TrainingError, DataError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    view = args.views + ("" if scales == (1.0,) else "@" + ",".join(f"{s:g}" for s in scales))
    width = max(len(k) for k in results)
    print(f"{'':{width}}  top-1   top-5   ({view}, {next(iter(results.values()))['images']} images)")
    for name, r in results.items():
        print(f"{name:{width}}  {r['top1']:.4f}  {r['top5']:.4f}")


if __name__ == "__main__":
    main()
