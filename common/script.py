"""The path of ``python X/train.py``: constants -> recipe -> overrides -> checks -> data -> fit.

Every check a user's constants can fail runs before any download or decode: unknown names and
impossible values, a recipe constant the file forgot, an IMAGE_DIM the network cannot take (a
forward pass on the meta device), a RESUME file that is not a checkpoint or holds another
network or another family's, the device, the folders written to, the cache's size against disk
and memory. Errors end the program with one line (common.errors: exit 2 for a constant, 1
otherwise).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from common import checkpoint as ckpt_lib
from common import config as config_lib
from common import errors, figures, pretrained, recipe, registry, runlog, system, trainer
from common.cache import IMAGE_EXTENSIONS, ImageSet, typical_short_side
from common.checkpoint import TrainingError
from common.data import cache_dim, load_data, split_training
from common.datasets import DATA_ROOT
from common.files import user_path
from common.loader import BatchLoader, BatchTransform, training_dims
from common.optim import ParamOptions
from common.trainer import fit

BuildModel = Callable[[dict[str, Any], int], nn.Module]
BatchTransforms = Callable[[dict[str, Any], ImageSet], Sequence[BatchTransform]]
Torchvision = tuple[pretrained.Table, pretrained.Rename]  # a model.py's TORCHVISION, from_torchvision
Criterion = Callable[[dict[str, Any]], nn.Module | None]  # the constants -> a loss for fit, or None


@errors.entry_point(interrupted="interrupted: nothing saved since the last checkpoint (a partial "
                                 "download resumes on the next run)")
def main(module: ModuleType, build_model: BuildModel, argv: list[str] | None = None, *,
         rules: recipe.Rules | None = None, param_options: ParamOptions | None = None,
         batch_transforms: BatchTransforms | None = None, name: str | None = None,
         torchvision: Torchvision | None = None, criterion: Criterion | None = None) -> dict[str, Any] | None:
    """Entry point of a train.py.

    ``build_model(cfg, num_classes)`` builds the network; ``rules`` adds the model's own checks
    (e.g. the smallest IMAGE_DIM its downsampling allows); ``param_options`` and
    ``batch_transforms(cfg, train_set)`` are the seams of common.optim and common.augment (the
    training set gives its class count, and statistics such as AlexNet's PCA lighting's);
    ``torchvision`` is the model.py's (TORCHVISION, from_torchvision), for PRETRAINED=True;
    ``criterion(cfg)`` a loss in place of the labels' cross-entropy (trainer.fit's), or None: it is
    made before any data work, so what it loads (DeiT's teacher, common/distill.py) is checked there.
    Returns the summary of the last run (of SEEDS runs). A run stopped by a signal exits, after
    its last line, as a shell expects of an interrupted program: 130 after Ctrl-C, 143 after
    SIGTERM (so ``python resnet/train.py && next`` does not go on).
    """
    argv = sys.argv[1:] if argv is None else argv
    prog = os.path.relpath(module.__file__) if module.__file__ else "train.py"
    cfg, ckpt = configure(module, argv, {**recipe.RULES, **(rules or {})}, prog)
    check_before_data(cfg, build_model, ckpt, torchvision)
    loss = criterion(cfg) if criterion else None
    summary = run(cfg, build_model, ckpt, name=name or str(cfg.get("ARCH", Path(prog).parent.name)),
                  param_options=param_options, batch_transforms=batch_transforms, torchvision=torchvision,
                  criterion=loss)
    if summary.get("interrupted"):
        # Another rank's request stops this one too (it got no signal of its own): as SIGTERM.
        sys.exit(128 + (summary.get("signal") or signal.SIGTERM))
    return summary


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
        check_family(ckpt, module, cfg["RESUME"])  # before its constants are merged into these
        cfg = ckpt_lib.resume_config(cfg, given, ckpt)
    cfg = recipe.complete(cfg, prog)  # the choices made may need more constants
    config_lib.check(cfg, recipe.RULES)  # the shared bounds, whatever ``rules`` replaced
    config_lib.check(cfg, rules)
    _check_training_dims(cfg, rules)
    if cfg["SEEDS"] > 1 and cfg["RESUME"]:
        raise config_lib.ConfigError(f"SEEDS={cfg['SEEDS']} with RESUME: a checkpoint continues one run; "
                                     f"resume each seed's run folder on its own (SEEDS=1)")
    cores = os.cpu_count() or 1
    if cfg["DECODE_WORKERS"] > cores:  # more processes than cores only cost memory and start-up
        print(f"warning: DECODE_WORKERS={cfg['DECODE_WORKERS']} is more than this machine's {cores} cores; "
              f"capped at {cores}")
        cfg["DECODE_WORKERS"] = cores
    return cfg, ckpt


def _check_training_dims(cfg: dict[str, Any], rules: recipe.Rules) -> None:
    """Progressive resizing's smaller crops obey the family's IMAGE_DIM rule too (ResNet's
    32 px: below it the last stages see only padding; a ViT's multiple of its patch)."""
    ok, need = rules.get("IMAGE_DIM", (lambda v: True, ""))
    for d in training_dims(cfg):
        if not ok(d):
            raise config_lib.ConfigError(f"START_IMAGE_DIM={cfg['START_IMAGE_DIM']} makes {d} px training crops on "
                                         f"the way to IMAGE_DIM, and a training crop must be {need}: use a "
                                         f"larger START_IMAGE_DIM, or 0 (off)")


def check_family(ckpt: dict[str, Any], module: ModuleType, path: str) -> None:
    """Refuse another family's checkpoint by whose it is, before its constants are merged (they
    would fail this file's rules for reasons that hide the real one)."""
    arch = ckpt["config"].get("ARCH")
    theirs = registry.folder_of(str(arch)) if arch is not None else None
    ours = Path(module.__file__).resolve().parent.name if module.__file__ else None
    if theirs and ours in set(registry.folders().values()) and theirs != ours:
        raise config_lib.ConfigError(f"RESUME={path} is a checkpoint of {arch}, a model of {theirs}/, not of "
                                     f"{ours}/: resume it with python {theirs}/train.py --RESUME={path}")


def check_before_data(cfg: dict[str, Any], build_model: BuildModel, ckpt: dict[str, Any] | None,
                      torchvision: Torchvision | None = None) -> None:
    """Everything that can fail before the download and decode, checked there: the sizes the
    constants ask for (on the meta device: no memory, no compute), a checkpoint's network, that
    torchvision's weights fit (PRETRAINED), the device, the folders written to, and the room the
    image cache needs on disk and in memory."""
    _check_cache_dim(cfg)
    # The class count does not change which input sizes a network takes; a checkpoint's does
    # change its last layer, so it is compared with the count it was trained on.
    num_classes = ckpt.get("num_classes", 10) if ckpt else 10
    with torch.device("meta"):
        model = build_model(cfg, num_classes).eval()
    if ckpt is not None:
        ckpt_lib.check_same_model(ckpt, model, cfg, recipe.LOOP_KEYS, cfg["RESUME"])
        if system.dist_env()[0] == 0:  # a run already training in that folder: now, not after the decode
            trainer.check_resume_folder_free(user_path(cfg["RESUME"]), ckpt)
    if cfg["PRETRAINED"] and not ckpt:  # a resumed run has its weights already
        if torchvision is None:
            raise config_lib.ConfigError("PRETRAINED=True: torchvision has no ImageNet weights for this "
                                         "file's models; set PRETRAINED=False")
        with torch.device("meta"):  # the classifier at ImageNet's size, as the weights have it
            pretrained.check(cfg, build_model(cfg, pretrained.IMAGENET_CLASSES), *torchvision)
    for dim, blame, fix in _input_sizes(cfg):
        try:
            with torch.no_grad():
                model(torch.empty(2, 3, dim, dim, device="meta"))
        except (RuntimeError, ValueError) as e:
            raise config_lib.ConfigError(f"{blame}, too small for this network "
                                         f"({str(e).splitlines()[0]}). Use {fix}.") from None
    device = open_device(cfg["DEVICE"])
    data_root = user_path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else DATA_ROOT
    config_lib.check_folder("DATA_DIR", data_root)
    config_lib.check_folder("RUNS_DIR", user_path(cfg["RUNS_DIR"]) if cfg["RUNS_DIR"] else runlog.REPO / "runs")
    check_cache_room(cfg, data_root, device)


def _input_sizes(cfg: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(side, the constant that makes it, what to change) for every input size a run feeds the
    network: IMAGE_DIM, progressive resizing's smaller crops, each evaluation scale."""
    sizes = [(cfg["IMAGE_DIM"], f"IMAGE_DIM={cfg['IMAGE_DIM']} gives {cfg['IMAGE_DIM']} px inputs",
              "a larger IMAGE_DIM")]
    sizes += [(d, f"START_IMAGE_DIM={cfg['START_IMAGE_DIM']} makes {d} px training crops on the way to "
                  f"IMAGE_DIM", "a START_IMAGE_DIM the network takes (0: off)")
              for d in training_dims(cfg) if d != cfg["IMAGE_DIM"]]
    eval_dim = cfg["EVAL_IMAGE_DIM"] or cfg["IMAGE_DIM"]
    for scale in tuple(cfg["EVAL_SCALES"]):
        d = round(eval_dim * scale)
        sizes.append((d, f"EVAL_IMAGE_DIM={cfg['EVAL_IMAGE_DIM']} gives {d} px inputs", "a larger EVAL_IMAGE_DIM")
                     if scale == 1.0 else
                     (d, f"EVAL_SCALES={tuple(cfg['EVAL_SCALES'])} makes {d} px inputs of the evaluation size "
                         f"{eval_dim}", "larger scales in EVAL_SCALES"))
    return sizes


def _check_cache_dim(cfg: dict[str, Any]) -> None:
    """A CACHE_DIM below the sizes the loader cuts from it would blow every image up."""
    if not cfg["CACHE_DIM"]:
        return
    eval_dim = round((cfg["EVAL_IMAGE_DIM"] or cfg["IMAGE_DIM"]) * max(cfg["EVAL_SCALES"]))
    for name, dim in (("IMAGE_DIM", cfg["IMAGE_DIM"]), ("the evaluation size", eval_dim)):
        if cfg["CACHE_DIM"] < dim:
            raise config_lib.ConfigError(f"CACHE_DIM={cfg['CACHE_DIM']} is below {name} ({dim} px): the cache "
                                         f"would be enlarged on every read. Use CACHE_DIM >= {dim}, or 0 "
                                         f"(automatic).")


def open_device(pref: str) -> torch.device:
    """The device DEVICE names, opened (a tensor made there), or a ConfigError naming DEVICE."""
    try:
        device = system.pick_device(pref, system.dist_env()[2])
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # an unknown name, a GPU index that is not there
        raise config_lib.ConfigError(f"DEVICE={pref!r} cannot be used here ({str(e).splitlines()[0]}); "
                                     f"use auto, cpu, cuda or cuda:N with N below the GPU count") from None
    return device


# Images per dataset, train + val (fast.ai's README: Imagenette 9,469 + 3,925, Imagewoof 9,025 +
# 3,929): the cache's size is known before the download.
DATASET_IMAGES = {"imagenette": 13394, "imagewoof": 12954}
ARCHIVE_SIDES = {"160": 160, "320": 320}  # the short side of each archive's photos ("full": larger)


def check_cache_room(cfg: dict[str, Any], data_root: Path, device: torch.device) -> None:
    """Refuse a cache that cannot fit: its size (images x side^2 x 3 bytes) against the free disk
    under DATA_DIR, the memory it is read into, and the GPU memory it is copied to."""
    images, side = DATASET_IMAGES.get(cfg["DATASET"], 0), ARCHIVE_SIDES.get(cfg["DATASET_SIZE"], 0)
    source = user_path(cfg["DATA_PATH"]) if cfg["DATA_PATH"] else None
    if source is not None and source.is_dir():  # a quick scan: names only, a few headers
        images = sum(1 for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if (source / "train").is_dir():
            side = typical_short_side(source, "train") or side
    if not images:
        return
    dim = cache_dim(cfg, side)  # side unknown ("full", an archive): 0, the least the cache can be
    need = images * dim * dim * 3
    size = f"the image cache needs about {need / 2**30:.1f} GiB ({images:,} images at {dim} px)"
    fix = "lower IMAGE_DIM, EVAL_IMAGE_DIM or CACHE_DIM"
    cache = data_root / "cache"
    built = cache.is_dir() and any(cache.glob(f"*-{dim}px-*.npy"))  # already on disk
    free = shutil.disk_usage(_existing(data_root)).free
    if not built and need > free:
        raise config_lib.ConfigError(f"{size} and DATA_DIR ({data_root}) has {free / 2**30:.1f} GiB free: "
                                     f"{fix}, free space, or set DATA_DIR to another disk.")
    memory = _available_memory()
    if memory is not None and need > memory:
        raise config_lib.ConfigError(f"{size} and this machine has {memory / 2**30:.1f} GiB of memory "
                                     f"available: {fix}.")
    if device.type == "cuda":
        gpu_free = torch.cuda.mem_get_info(device)[0]
        if need > gpu_free:
            raise config_lib.ConfigError(f"{size}, held on {device}, which has {gpu_free / 2**30:.1f} GiB "
                                         f"free: {fix}.")


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing folder above (where a folder to be made would go)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent


def _available_memory() -> int | None:
    """Bytes of memory available without swapping (Linux's MemAvailable), None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def run(cfg: dict[str, Any], build_model: BuildModel, ckpt: dict[str, Any] | None = None, *, name: str,
        param_options: ParamOptions | None = None, batch_transforms: BatchTransforms | None = None,
        torchvision: Torchvision | None = None, criterion: nn.Module | None = None) -> dict[str, Any]:
    """Prepare the data the constants name, then build and train the model SEEDS times (SEED,
    SEED + 1, ..., each in its own run folder); returns the last run's summary."""
    rank, _, _ = system.dist_env()
    system.setup_logging(rank)
    # Every rank prepares the data before the process group exists: file locks let one process
    # download and decode while the others wait, with no collective timing out meanwhile (a
    # first download can take longer than NCCL's 10-minute timeout).
    train_set, val_set = load_data(cfg, _trained_on(cfg, ckpt))
    try:
        for i in range(cfg["SEEDS"]):
            # The fastai leaderboard's protocol: the mean of several runs, which differ by about
            # +-1 % on 3,925 validation images. common.compare pools them (they differ in SEED).
            seed_cfg = {**cfg, "SEED": cfg["SEED"] + i}
            if cfg["SEEDS"] > 1:
                print(f"seed {seed_cfg['SEED']} ({i + 1} of {cfg['SEEDS']})", flush=True)
            fit_set, eval_set = split_training(seed_cfg, train_set, val_set)
            _say_split(seed_cfg, fit_set, eval_set, train_set, val_set)
            summary = _train_once(seed_cfg, build_model, fit_set, eval_set, name, param_options,
                                  batch_transforms, torchvision if not ckpt else None, criterion)
            if summary.get("interrupted"):
                break  # a stop request ends the whole series, not just this seed
        return summary
    finally:
        system.close_distributed()


def _say_split(cfg: dict[str, Any], fit_set: ImageSet, eval_set: ImageSet, train_set: ImageSet,
               val_set: ImageSet) -> None:
    """One line for each part of the training split in use (rank 0): what is trained on, and that
    the accuracies printed as "val" are then the held-out images'."""
    if system.dist_env()[0] != 0:
        return
    if cfg["HOLDOUT_FRACTION"]:
        print(f"HOLDOUT_FRACTION={cfg['HOLDOUT_FRACTION']}: evaluating on {len(eval_set)} held-out training "
              f"images (seed {cfg['SEED']}), not on the {len(val_set)} validation images; \"val\" below means "
              f"these", flush=True)
    if cfg["TRAIN_FRACTION"] < 1:
        pool = len(train_set) - (len(eval_set) if cfg["HOLDOUT_FRACTION"] else 0)
        print(f"TRAIN_FRACTION={cfg['TRAIN_FRACTION']}: training on {len(fit_set)} of {pool} training images "
              f"(class-balanced, seed {cfg['SEED']})", flush=True)


def _trained_on(cfg: dict[str, Any], ckpt: dict[str, Any] | None) -> list[tuple[dict[str, Any], str]]:
    """The classes of each checkpoint this run starts from or learns from, to be checked against
    the data by name (the same count of other classes would train on the wrong labels), and its
    constant: RESUME, or VGG's INIT_FROM (net A's last layer, fc8, is copied in class by class);
    and a distillation TEACHER (its outputs are read as the data's classes)."""
    found = [(ckpt, "RESUME")] if ckpt is not None else []
    read = ("TEACHER",) if ckpt is not None else ("INIT_FROM", "TEACHER")  # a resumed run has its weights
    found += [(ckpt_lib.load_checkpoint(user_path(cfg[name]), name), name) for name in read if cfg.get(name)]
    return [({k: c.get(k) for k in ("classes", "num_classes")}, f"{name}={cfg[name]}") for c, name in found]


def _train_once(cfg: dict[str, Any], build_model: BuildModel, train_set: ImageSet, val_set: ImageSet,
                name: str, param_options: ParamOptions | None, batch_transforms: BatchTransforms | None,
                torchvision: Torchvision | None, criterion: nn.Module | None = None) -> dict[str, Any]:
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
                  batch_transforms=transforms, criterion=criterion)
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
