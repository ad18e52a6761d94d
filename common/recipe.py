"""The constants the loop reads: the shared switches (with defaults), and what a recipe must state.

A train.py states its whole recipe (data, optimisation, schedule) as UPPER_CASE constants; the
loop supplies defaults only for SWITCHES, which are the same for every model (device, autocast,
paths, seed, resume, the evaluation protocol). A recipe constant a train.py forgets is refused
when the script starts, by name: a silent default would train another recipe than the one read.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.config import ConfigError

Rules = dict[str, tuple[Callable[[Any], bool], str]]

# The loop's own switches: a train.py may set any of them; those it does not set keep these.
SWITCHES: dict[str, Any] = {
    # --- data and system
    "DATA_PATH": "",  # an archive or extracted folder you already have ('' = download)
    "DATA_DIR": "",  # where downloads and the decoded cache go ('' = data/ in this repository)
    "CACHE_DIM": 0,  # side of the decoded uint8 cache, pixels (0 = 2 x the image side, at most the photos')
    "DECODE_WORKERS": 0,  # processes decoding the image cache (0 = one per core)
    "SEED": 0,  # initial weights, epoch permutations and augmentations
    "DEVICE": "auto",  # auto (cuda if present, else cpu), cuda, cuda:1, cpu
    "AMP": "bf16",  # autocast: bf16, fp16 (cuda) or off
    "CHANNELS_LAST": True,  # NHWC memory layout: faster convolutions (GPU and CPU)
    "COMPILE": False,  # torch.compile the model (slow first epoch, faster after)
    "DETERMINISTIC": False,  # deterministic kernels, no cuDNN autotuning: exact resume on CUDA (slower)
    "RUNS_DIR": "",  # logs, plots, checkpoints: RUNS_DIR/<model>/<timestamp>/ ('' = runs/ in this repository)
    "RESUME": "",  # a checkpoint (last.pt) to continue from
    "RECIPE": "",  # a named recipe of the train.py's RECIPES ('' = the constants as written)
    "SEEDS": 1,  # train this many times, with SEED, SEED + 1, ... (a run folder each; mean +- std in common.compare)
    "PRETRAINED": False,  # start from torchvision's ImageNet weights of the same network (downloaded once)
    # --- progressive resizing (fastai's DAWNBench entry, 2018; FFCV's ResNet recipes, arXiv:2306.12517)
    "START_IMAGE_DIM": 0,  # training crop of the first epochs, pixels (0 = off: IMAGE_DIM throughout)
    "RESIZE_RAMP": (0.0, 0.75),  # ... kept until this fraction of the epochs, then grown linearly to IMAGE_DIM by this one
    # --- evaluation protocol (the usual one; a train.py may set its paper's)
    "EVAL_CROP": 0.875,  # evaluation centre crop as a fraction of the short side (224/256)
    "EVAL_VIEWS": "center",  # after the last epoch also: flip, 5crop, 10crop (softmax averaged)
    "EVAL_SCALES": (1.0,),  # ... each view at these multiples of EVAL_IMAGE_DIM (VGG's multi-scale test)
    # --- logs, disk, and the smoke test
    "PROGRESS_SECONDS": 30.0,  # when stderr is not a terminal (a log file): a progress line this often
    "SAVE_BEST": True,  # best.pt beside last.pt (False: only last.pt, half the disk of a run folder)
    "MAX_IMAGES_PER_CLASS": 0,  # 0 = every image; N = the first N of each class, train and val (smoke tests)
    # --- parts of the training split (class-balanced, drawn from SEED; val is never cut)
    "HOLDOUT_FRACTION": 0.0,  # evaluate on this part of the training images instead of val (tuning); 0 = val
    "TRAIN_FRACTION": 1.0,  # train on this part of the (remaining) training images (ViT Sec. 4.3)
}

# What every recipe states, whatever it chooses.
RECIPE_KEYS = (
    "DATASET", "DATASET_SIZE", "IMAGE_DIM", "EVAL_IMAGE_DIM", "MIN_SCALE", "SCALE_JITTER", "HFLIP",
    "NUM_EPOCHS", "BATCH_SIZE", "OPTIMIZER", "LEARNING_RATE", "WEIGHT_DECAY", "DECAY_NORM_AND_BIAS",
    "LR_SCHEDULE", "LABEL_SMOOTHING", "GRAD_CLIP", "EMA_DECAY",
)
# ... and what it states because of a choice it made.
OPTIMIZER_KEYS = {
    "sgd": ("MOMENTUM", "NESTEROV"),
    "adam": ("ADAM_BETAS",),
    "adamw": ("ADAM_BETAS",),
    "rmsprop": ("MOMENTUM", "RMSPROP_ALPHA", "RMSPROP_EPS"),
}
SCHEDULE_KEYS = {
    "step": ("LEARNING_RATE_DECAY_FACTOR", "LEARNING_RATE_DECAY_STEP_SIZE"),
    "plateau": ("LEARNING_RATE_DECAY_FACTOR", "PLATEAU_PATIENCE"),
    "cosine": ("WARMUP_EPOCHS",),
    "onecycle": ("WARMUP_EPOCHS",),
    "constant": (),
}
LOOP_KEYS = frozenset(SWITCHES) | set(RECIPE_KEYS) | {k for ks in (*OPTIMIZER_KEYS.values(),
                                                                  *SCHEDULE_KEYS.values()) for k in ks}


def _is_fraction(v: Any) -> bool:
    return 0 < v <= 1


# The largest side an image size may ask for: a bound against typos (IMAGE_DIM=100000 once began
# a 1 TB cache file). No recipe here goes past VGG's 480 px scale jitter; the cache's actual size
# is checked against the disk and the memory before the download (common.script).
MAX_DIM = 4096


# A train.py's own RULES add to these (common.script checks both): a family narrows a shared
# range (the smallest IMAGE_DIM its downsampling takes), it cannot lift a shared bound.
RULES: Rules = {
    "DATASET": (lambda v: v in ("imagenette", "imagewoof"), "imagenette or imagewoof"),
    "DATASET_SIZE": (lambda v: v in ("160", "320", "full"), "160, 320 or full"),
    "NUM_EPOCHS": (lambda v: v >= 1, "at least 1"),
    "BATCH_SIZE": (lambda v: v >= 1, "at least 1"),
    "IMAGE_DIM": (lambda v: 8 <= v <= MAX_DIM, f"from 8 to {MAX_DIM} pixels"),
    "EVAL_IMAGE_DIM": (lambda v: v == 0 or 8 <= v <= MAX_DIM, f"0 (= IMAGE_DIM) or from 8 to {MAX_DIM} pixels"),
    "CACHE_DIM": (lambda v: v == 0 or 8 <= v <= MAX_DIM, f"0 (automatic) or from 8 to {MAX_DIM} pixels"),
    "MIN_SCALE": (_is_fraction, "a fraction in (0, 1]"),
    "EVAL_CROP": (_is_fraction, "a fraction in (0, 1]"),
    "SCALE_JITTER": (lambda v: len(v) == 2 and (tuple(v) == (0, 0) or 1 <= v[0] <= v[1]),
                     "(0, 0) (off: random-resized-crop) or (lo, hi) with 1 <= lo <= hi, the short side "
                     "as a multiple of IMAGE_DIM"),
    "EVAL_VIEWS": (lambda v: v in ("center", "flip", "5crop", "10crop"), "center, flip, 5crop or 10crop"),
    "EVAL_SCALES": (lambda v: len(v) >= 1 and all(0 < s <= 4 for s in v), "one or more multiples in (0, 4] (VGG's test: 1 to 2)"),
    "OPTIMIZER": (lambda v: v in OPTIMIZER_KEYS, ", ".join(OPTIMIZER_KEYS)),
    "LEARNING_RATE": (lambda v: v > 0, "a positive number"),
    "MOMENTUM": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "ADAM_BETAS": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    "RMSPROP_ALPHA": (lambda v: 0 < v < 1, "in (0, 1), e.g. 0.9"),
    "RMSPROP_EPS": (lambda v: v > 0, "a positive number"),
    "WEIGHT_DECAY": (lambda v: v >= 0, "0 or more"),
    "LR_SCHEDULE": (lambda v: v in SCHEDULE_KEYS, ", ".join(SCHEDULE_KEYS)),
    "WARMUP_EPOCHS": (lambda v: v >= 0, "0 or more"),
    "LEARNING_RATE_DECAY_FACTOR": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "LEARNING_RATE_DECAY_STEP_SIZE": (lambda v: v >= 1, "at least 1 epoch"),
    "PLATEAU_PATIENCE": (lambda v: v >= 1, "at least 1 epoch"),
    "LABEL_SMOOTHING": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "GRAD_CLIP": (lambda v: v >= 0, "0 (off) or a positive norm"),
    "EMA_DECAY": (lambda v: 0 <= v < 1, "0 (off) or in (0, 1), e.g. 0.999"),
    "AMP": (lambda v: v in ("bf16", "fp16", "off"), "bf16, fp16 or off"),
    "DECODE_WORKERS": (lambda v: v >= 0, "0 (one per core) or more (more than the cores: capped at their number)"),
    "SEEDS": (lambda v: v >= 1, "at least 1 run"),
    "PROGRESS_SECONDS": (lambda v: v > 0, "a positive number of seconds"),
    "MAX_IMAGES_PER_CLASS": (lambda v: v >= 0, "0 (every image) or a positive count"),
    "START_IMAGE_DIM": (lambda v: v == 0 or 8 <= v <= MAX_DIM, f"0 (off) or from 8 to {MAX_DIM} pixels"),
    "RESIZE_RAMP": (lambda v: len(v) == 2 and 0 <= v[0] <= v[1] <= 1,
                    "two fractions of the epochs, 0 <= start <= end <= 1, e.g. (0.25, 0.75)"),
    "HOLDOUT_FRACTION": (lambda v: 0 <= v < 1, "0 (evaluate on val) or a fraction in (0, 1), e.g. 0.1"),
    "TRAIN_FRACTION": (_is_fraction, "a fraction in (0, 1] (1 = every training image)"),
}


def missing(cfg: dict[str, Any]) -> list[str]:
    """The recipe constants ``cfg`` lacks: the common ones, then those its choices need."""
    need = [k for k in RECIPE_KEYS if k not in cfg]
    need += [k for k in OPTIMIZER_KEYS.get(cfg.get("OPTIMIZER"), ()) if k not in cfg]
    need += [k for k in SCHEDULE_KEYS.get(cfg.get("LR_SCHEDULE"), ()) if k not in cfg]
    return list(dict.fromkeys(need))


def complete(cfg: dict[str, Any], where: str = "the configuration") -> dict[str, Any]:
    """``cfg`` with the switches' defaults filled in; refuses a recipe with a constant missing."""
    lacking = missing(cfg)
    if lacking:
        why = {k: f" (for OPTIMIZER={cfg.get('OPTIMIZER')!r})" for k in
               OPTIMIZER_KEYS.get(cfg.get("OPTIMIZER"), ())}
        why |= {k: f" (for LR_SCHEDULE={cfg.get('LR_SCHEDULE')!r})" for k in
                SCHEDULE_KEYS.get(cfg.get("LR_SCHEDULE"), ())}
        names = ", ".join(k + why.get(k, "") for k in lacking)
        raise ConfigError(f"{where} does not state {names}: every recipe states these itself "
                          f"(see resnet/train.py's constants for an example).")
    return {**SWITCHES, **cfg}


def with_recipe(constants: dict[str, Any], recipes: dict[str, dict[str, Any]], name: str,
                where: str) -> dict[str, Any]:
    """The file's constants with the named recipe's values over them ('' = none)."""
    if not name:
        return dict(constants)
    if name not in recipes:
        raise ConfigError(f"RECIPE={name!r} is not one of {where}'s recipes: "
                          f"{', '.join(recipes) or 'it has none'} (see --help)")
    unknown = [k for k in recipes[name] if k not in constants]
    if unknown:
        raise ConfigError(f"{where}'s recipe {name!r} sets {', '.join(unknown)}, which the file does "
                          f"not define as constants")
    return {**constants, **recipes[name]}
