"""The path of ``python X/train.py``: constants -> recipe -> overrides -> checks -> data -> fit.

Every check a user's constants can fail runs before any download or decode: unknown names and
impossible values, a recipe constant the file forgot, an IMAGE_DIM the network cannot take (a
forward pass on the meta device), a RESUME file that is not a checkpoint or holds another
network. Errors end the program with one line (exit 2 for a constant, 1 otherwise).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from common import checkpoint as ckpt_lib
from common import config as config_lib
from common import figures, pretrained, recipe, system
from common.cache import ImageSet
from common.checkpoint import TrainingError
from common.data import load_data
from common.datasets import DataError
from common.files import user_path
from common.loader import BatchLoader, BatchTransform
from common.optim import ParamOptions
from common.trainer import fit

BuildModel = Callable[[dict[str, Any], int], nn.Module]
BatchTransforms = Callable[[dict[str, Any], ImageSet], Sequence[BatchTransform]]
Torchvision = tuple[pretrained.Table, pretrained.Rename]  # a model.py's TORCHVISION, from_torchvision


def main(module: ModuleType, build_model: BuildModel, argv: list[str] | None = None, *,
         rules: recipe.Rules | None = None, param_options: ParamOptions | None = None,
         batch_transforms: BatchTransforms | None = None, name: str | None = None,
         torchvision: Torchvision | None = None) -> dict[str, Any] | None:
    """Entry point of a train.py.

    ``build_model(cfg, num_classes)`` builds the network; ``rules`` adds the model's own checks
    (e.g. the smallest IMAGE_DIM its downsampling allows); ``param_options`` and
    ``batch_transforms(cfg, train_set)`` are the seams of common.optim and common.augment (the
    training set gives its class count, and statistics such as AlexNet's PCA lighting's);
    ``torchvision`` is the model.py's (TORCHVISION, from_torchvision), for PRETRAINED=True.
    Returns the summary of the last run (of SEEDS runs).
    """
    argv = sys.argv[1:] if argv is None else argv
    prog = os.path.relpath(module.__file__) if module.__file__ else "train.py"
    try:
        cfg, ckpt = configure(module, argv, {**recipe.RULES, **(rules or {})}, prog)
        check_before_data(cfg, build_model, ckpt, torchvision)
        return run(cfg, build_model, ckpt, name=name or str(cfg.get("ARCH", Path(prog).parent.name)),
                   param_options=param_options, batch_transforms=batch_transforms, torchvision=torchvision)
    except config_lib.ConfigError as e:
        print(f"error (bad constant): {e}", file=sys.stderr)
        sys.exit(2)
    except (DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # while preparing data, or a second Ctrl-C while training
        print("\ninterrupted: nothing saved since the last checkpoint (a partial download resumes "
              "on the next run)", file=sys.stderr)
        sys.exit(130)


def configure(module: ModuleType, argv: Sequence[str], rules: recipe.Rules,
              prog: str = "train.py") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The effective constants (and the RESUME checkpoint, read once, if any).

    Precedence, lowest first: the loop's switches, the file's constants, the named RECIPE, a
    resumed checkpoint's constants, the command line.
    """
    own = config_lib.constants(module)  # the file's recipe first (--help lists it first), then the switches
    defaults = {**own, **{k: v for k, v in recipe.SWITCHES.items() if k not in own}}
    recipe.complete(defaults, prog)  # a forgotten recipe constant, before anything else
    recipes: dict[str, dict[str, Any]] = getattr(module, "RECIPES", {})
    notes = {**config_lib.comments(recipe), **config_lib.comments(module)}
    parsed = config_lib.parse_args(defaults, argv, prog=prog, doc=module.__doc__ or "", notes=notes,
                                   recipes=recipes)
    given = config_lib.given(argv)
    cfg = {**recipe.with_recipe(defaults, recipes, parsed["RECIPE"], prog), **{k: parsed[k] for k in given}}
    ckpt = None
    if cfg["RESUME"]:
        ckpt = ckpt_lib.load_checkpoint(user_path(cfg["RESUME"]))
        cfg = ckpt_lib.resume_config(cfg, given, ckpt)
    cfg = recipe.complete(cfg, prog)  # the choices made may need more constants
    config_lib.check(cfg, rules)
    if cfg["SEEDS"] > 1 and cfg["RESUME"]:
        raise config_lib.ConfigError(f"SEEDS={cfg['SEEDS']} with RESUME: a checkpoint continues one run; "
                                     f"resume each seed's run folder on its own (SEEDS=1)")
    return cfg, ckpt


def check_before_data(cfg: dict[str, Any], build_model: BuildModel, ckpt: dict[str, Any] | None,
                      torchvision: Torchvision | None = None) -> None:
    """On the meta device (no memory, no compute): the input sizes, a checkpoint's network, and
    that torchvision's weights fit (PRETRAINED)."""
    # The class count does not change which input sizes a network takes; a checkpoint's does
    # change its last layer, so it is compared with the count it was trained on.
    num_classes = ckpt.get("num_classes", 10) if ckpt else 10
    with torch.device("meta"):
        model = build_model(cfg, num_classes).eval()
    if ckpt is not None:
        ckpt_lib.check_same_model(ckpt, model, cfg, recipe.LOOP_KEYS, cfg["RESUME"])
    if cfg["PRETRAINED"] and not ckpt:  # a resumed run has its weights already
        if torchvision is None:
            raise config_lib.ConfigError("PRETRAINED=True: torchvision has no ImageNet weights for this "
                                         "file's models; set PRETRAINED=False")
        with torch.device("meta"):  # the classifier at ImageNet's size, as the weights have it
            pretrained.check(cfg, build_model(cfg, pretrained.IMAGENET_CLASSES), *torchvision)
    for dim_name in ("IMAGE_DIM", "EVAL_IMAGE_DIM"):
        for scale in (1.0,) if dim_name == "IMAGE_DIM" else tuple(cfg["EVAL_SCALES"]):
            dim = round((cfg[dim_name] or cfg["IMAGE_DIM"]) * scale)
            try:
                with torch.no_grad():
                    model(torch.empty(2, 3, dim, dim, device="meta"))
            except (RuntimeError, ValueError) as e:
                raise config_lib.ConfigError(f"{dim_name}={cfg[dim_name]} gives {dim} px inputs, too small "
                                             f"for this network ({str(e).splitlines()[0]}). Use a larger "
                                             f"{dim_name}.") from None


def run(cfg: dict[str, Any], build_model: BuildModel, ckpt: dict[str, Any] | None = None, *, name: str,
        param_options: ParamOptions | None = None, batch_transforms: BatchTransforms | None = None,
        torchvision: Torchvision | None = None) -> dict[str, Any]:
    """Prepare the data the constants name, then build and train the model SEEDS times (SEED,
    SEED + 1, ..., each in its own run folder); returns the last run's summary."""
    rank, _, _ = system.dist_env()
    system.setup_logging(rank)
    # Every rank prepares the data before the process group exists: file locks let one process
    # download and decode while the others wait, with no collective timing out meanwhile (a
    # first download can take longer than NCCL's 10-minute timeout).
    train_set, val_set = load_data(cfg)
    if ckpt is not None and ckpt.get("num_classes", train_set.num_classes) != train_set.num_classes:
        raise config_lib.ConfigError(f"RESUME={cfg['RESUME']} was trained on {ckpt['num_classes']} classes, "
                                     f"this dataset has {train_set.num_classes}: resume on the same data.")
    try:
        for i in range(cfg["SEEDS"]):
            # The fastai leaderboard's protocol: the mean of several runs, which differ by about
            # +-1 % on 3,925 validation images. common.compare pools them (they differ in SEED).
            seed_cfg = {**cfg, "SEED": cfg["SEED"] + i}
            if cfg["SEEDS"] > 1:
                print(f"seed {seed_cfg['SEED']} ({i + 1} of {cfg['SEEDS']})", flush=True)
            summary = _train_once(seed_cfg, build_model, train_set, val_set, name, param_options,
                                  batch_transforms, torchvision if not ckpt else None)
            if summary.get("interrupted"):
                break  # a stop request ends the whole series, not just this seed
        return summary
    finally:
        system.close_distributed()


def _train_once(cfg: dict[str, Any], build_model: BuildModel, train_set: ImageSet, val_set: ImageSet,
                name: str, param_options: ParamOptions | None, batch_transforms: BatchTransforms | None,
                torchvision: Torchvision | None) -> dict[str, Any]:
    """One seed: the model (from torchvision's weights if PRETRAINED), its transforms, fit."""
    torch.manual_seed(cfg["SEED"])  # the same initial weights on every rank and every run
    model = build_model(cfg, train_set.num_classes)
    system.seed_rank(cfg["SEED"], system.dist_env()[0])  # then each rank its own dropout/DropPath
    if cfg["PRETRAINED"] and torchvision is not None:
        kept = pretrained.load_torchvision(model, cfg, *torchvision)
        if system.dist_env()[0] == 0:
            print(f"PRETRAINED: torchvision's ImageNet weights loaded"
                  + (f"; {', '.join(kept)} kept at their own initialisation ({train_set.num_classes} "
                     f"classes, not 1,000)" if kept else ""), flush=True)
    transforms = batch_transforms(cfg, train_set) if batch_transforms else ()
    summary = fit(model, train_set, val_set, cfg, name=name, param_options=param_options,
                  batch_transforms=transforms)
    if not summary["interrupted"] and system.dist_env()[0] == 0:
        draw_figures(model, val_set, cfg, summary)
    return summary


def draw_figures(model: nn.Module, val_set: ImageSet, cfg: dict[str, Any], summary: dict[str, Any]) -> None:
    """A finished run's figures beside its curves: confusion matrix, first-layer filters (ViT:
    attention, positions). Never raises: a figure must not cost the run."""
    device = next(model.parameters()).device
    loader = BatchLoader(val_set, figures.N_ATTENTION_IMAGES, train=False, device=device,
                         image_dim=cfg["EVAL_IMAGE_DIM"] or cfg["IMAGE_DIM"], eval_crop=cfg["EVAL_CROP"])
    figures.draw_run_figures(model, loader, list(val_set.classes), Path(summary["run_dir"]),
                             summary.get("confusion"))
