"""Train a Vision Transformer (Dosovitskiy et al. 2020, arXiv:2010.11929) from scratch on Imagenette.

    python vit/train.py                                      # the data-efficient recipe below
    python vit/train.py --RECIPE=paper                       # the paper's, Sec. 4.1 / Table 3
    python vit/train.py --ARCH=deit_small_16 --NUM_EPOCHS=100  # any constant, --NAME=value
    python vit/train.py --ARCH=deit_tiny_distilled_16 --DISTILLATION=hard --TEACHER=runs/resnet18/<run>/best.pt
    python vit/train.py --help                               # every constant, its value, the recipes

The constants are a data-efficient recipe in the spirit of DeiT (Touvron et al. 2020,
arXiv:2012.12877, Table 9) for 9,469 training images: a DeiT-Tiny-sized ViT with 8x8 patches at
128 px (a 16 x 16 grid of tokens), AdamW, warm-up then cosine, label smoothing, stochastic depth,
no weight decay on position embedding, class token, norms and biases, and strong augmentation:
RandAugment, mixup / cutmix with soft labels, random erasing. Its target, >= 85 % top-1 from
scratch on one GPU, is not measured yet. RECIPES["paper"] holds the paper's ImageNet training
(Adam, weight decay, linear warm-up then cosine decay, dropout 0.1, batch 4096, ViT-B/16 at 224
px, Inception crops and flips only); RECIPES["deit"] DeiT's own hyperparameters where they
differ from the constants. DISTILLATION trains a distilled DeiT against a TEACHER, any trained
checkpoint of this repository (DeiT Sec. 4; common/distill.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

import torch.nn as nn  # noqa: E402

from common import augment, distill, script  # noqa: E402
from common.config import ConfigError  # noqa: E402
from vit.model import DISTILLED, INITS, MODELS, TORCHVISION, VARIANTS, VIT_CONFIGS, from_torchvision  # noqa: E402

# --- data
DATASET = "imagenette"  # imagenette or imagewoof
DATASET_SIZE = "160"  # fastai archive: 160, 320 or full (short side, pixels)
IMAGE_DIM = 128  # training crop, pixels; a multiple of the patch size (the paper: 224)
EVAL_IMAGE_DIM = 0  # evaluation size, pixels (0 = IMAGE_DIM); another size interpolates E_pos (Sec. 3.2)
MIN_SCALE = 0.25  # random-resized-crop's smallest area fraction (DeiT and the paper's Inception crop: 0.08)
SCALE_JITTER = (0.0, 0.0)  # instead: short side S ~ U(lo, hi) x IMAGE_DIM, then a crop ((0, 0) = off)
HFLIP = True  # random horizontal flips
AUTO_AUGMENT = "rand"  # rand (RandAugment, DeiT's), trivial (TrivialAugment) or none
AUGMENT_OPS = 2  # RandAugment's N, operations per image (DeiT: 2)
AUGMENT_MAGNITUDE = 9  # RandAugment's M, a bin of 0..30, torchvision's scale (DeiT's "m9" of timm is 27 here)
MIXUP_ALPHA = 0.8  # lam ~ Beta(alpha, alpha) (DeiT: 0.8; 0 = off)
CUTMIX_ALPHA = 1.0  # (DeiT: 1.0; 0 = off)
CUTMIX_PROB = 0.5  # per batch: cutmix with this probability, else mixup (DeiT's switch)
RANDOM_ERASING = 0.25  # probability per image (DeiT: 0.25; 0 = off)

# --- model
ARCH = "deit_tiny_16"  # vit_b_16 ... vit_h_14 (Table 1), deit_tiny_16, deit_small_16, deit_*_distilled_16
PATCH_SIZE = 8  # pixels (0 = the builder's); 8 at 128 px gives the 16 x 16 grid that 16 gives at 256 px
WIDTH = 0  # hidden size D (0 = the table's)
LAYERS = 0  # encoder blocks L (0 = the table's)
HEADS = 0  # attention heads k (0 = the table's); must divide the width
DROPOUT = 0.0  # after the position embedding and every dense layer but qkv (Appendix B.1; DeiT: 0)
DROP_PATH = 0.1  # stochastic depth at the last block, 0 at the first (DeiT: 0.1; the paper: 0)
INIT = "deit"  # deit (timm's, DeiT's) or jax (the official code's: zero head, Xavier, see model.py)
DECAY_TOKENS = False  # weight decay on the position embedding and class token (DeiT: no)

# --- optimisation
NUM_EPOCHS = 300  # DeiT's schedule length; 9,469 images make an epoch a few seconds on a GPU
BATCH_SIZE = 128  # per GPU (DeiT: 1024 over 8 GPUs; a small set wants more steps)
OPTIMIZER = "adamw"  # decoupled weight decay (Loshchilov & Hutter), DeiT's
ADAM_BETAS = (0.9, 0.999)
# Peak rate. DeiT's rule, 5e-4 x batch / 512, gives 1.25e-4 at batch 128; small data sets are trained
# higher (Lee, Lee, Song, "Vision Transformer for Small-Size Datasets", arXiv:2112.13492: 1e-3 at 128).
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.05  # DeiT's
DECAY_NORM_AND_BIAS = False  # no weight decay on LayerNorms and biases (DeiT)
LR_SCHEDULE = "cosine"  # linear warm-up from 0, then cosine to 0
WARMUP_EPOCHS = 10.0  # (DeiT: 5 of 300 epochs at 1,250 steps each; ours have 74)
LABEL_SMOOTHING = 0.1  # Szegedy et al. 2016 (DeiT: 0.1)
GRAD_CLIP = 1.0  # global norm (the paper's Appendix B.1: 1)
EMA_DECAY = 0.0  # weight averaging per step (0 = off)

# --- distillation (DeiT Sec. 4; common/distill.py): a distilled ARCH learns from a trained teacher
DISTILLATION = "none"  # hard (Eq. 3: the teacher's argmax), soft (Eq. 2: KL at TAU) or none
TEACHER = ""  # a checkpoint of any family, e.g. runs/resnet18/<run>/best.pt (DeiT's best: a convnet)
DISTILLATION_TAU = 3.0  # soft: the temperature tau (DeiT: 3.0)
DISTILLATION_ALPHA = 0.1  # soft: lambda, the teacher's weight (DeiT: 0.1); hard weighs both 1/2 (Eq. 3)

RECIPES = {
    # Sec. 4.1: "Adam with beta1 = 0.9, beta2 = 0.999, a batch size of 4096 ... high weight decay",
    # "linear learning rate warmup and decay"; Table 3's ImageNet row for ViT-B/16: 300 epochs,
    # base LR 3e-3, cosine decay, weight decay 0.3, dropout 0.1; Appendix B.1: 10k warm-up steps
    # (of 93k: 32 of 300 epochs), gradient clipping at global norm 1, Inception crops and flips
    # only, 224 px, the official code's init (zero head). Every parameter decayed. The paper does
    # not say whether its weight decay is L2 in the gradient or decoupled; we read it as decoupled
    # (AdamW), the form whose value does not depend on Adam's scaling. BATCH_SIZE is per GPU:
    # torchrun --nproc_per_node=8 makes the paper's 4096 (4096 ViT-B/16 images at 224 px need
    # more memory than one GPU has).
    "paper": {"ARCH": "vit_b_16", "PATCH_SIZE": 16, "IMAGE_DIM": 224, "DATASET_SIZE": "320",
              "MIN_SCALE": 0.08, "AUTO_AUGMENT": "none", "MIXUP_ALPHA": 0.0, "CUTMIX_ALPHA": 0.0,
              "RANDOM_ERASING": 0.0, "DROPOUT": 0.1, "DROP_PATH": 0.0, "INIT": "jax", "DECAY_TOKENS": True,
              "NUM_EPOCHS": 300, "BATCH_SIZE": 512, "OPTIMIZER": "adamw", "ADAM_BETAS": (0.9, 0.999),
              "LEARNING_RATE": 3e-3, "WEIGHT_DECAY": 0.3, "DECAY_NORM_AND_BIAS": True, "LR_SCHEDULE": "cosine",
              "WARMUP_EPOCHS": 32.0, "LABEL_SMOOTHING": 0.0, "GRAD_CLIP": 1.0},
    # DeiT's Table 9 where it differs from the constants: 16x16 patches at 224 px, Inception
    # crops (0.08), 5 warm-up epochs, no gradient clipping, RandAugment "m9" out of timm's 10
    # (27 of 30 here; its magnitude noise "mstd0.5" is not implemented). Batch 1024 is 8 GPUs x
    # 128 (torchrun), where 5e-4 x 1024 / 512 = 1e-3, the constants' rate. Not available here:
    # repeated augmentation (each image three times per batch). Distillation: DISTILLATION below.
    "deit": {"PATCH_SIZE": 16, "IMAGE_DIM": 224, "DATASET_SIZE": "320", "MIN_SCALE": 0.08,
             "WARMUP_EPOCHS": 5.0, "GRAD_CLIP": 0.0, "AUGMENT_MAGNITUDE": 27},
    # The smoke test (and the test suite's setting for this script): about a minute on a CPU on
    # any data, the first 20 images of each class decoded. It shows that the code path runs end
    # to end (data, training, evaluation, checkpoints, figures), not accuracy (near chance).
    "tiny": {"MAX_IMAGES_PER_CLASS": 20,
             "IMAGE_DIM": 32, "PATCH_SIZE": 8, "WIDTH": 16, "LAYERS": 2, "HEADS": 2, "BATCH_SIZE": 8,
             "NUM_EPOCHS": 2, "WARMUP_EPOCHS": 0.5},
}


def check_shapes(cfg: dict) -> None:
    """The constants that must agree with each other, one line each (a RULE sees one at a time).
    Runs on the meta device before any data work (common/script.py builds the model there first)."""
    row, builder_patch = VARIANTS[cfg["ARCH"]]
    patch = cfg["PATCH_SIZE"] or builder_patch
    for name in ("IMAGE_DIM", "EVAL_IMAGE_DIM"):
        if cfg[name] % patch:
            raise ConfigError(f"{name}={cfg[name]} is not divisible by the patch size {patch}: the image "
                              f"must cut into whole patches (Sec. 3.1); change {name} or PATCH_SIZE")
    width, heads = cfg["WIDTH"] or VIT_CONFIGS[row].width, cfg["HEADS"] or VIT_CONFIGS[row].heads
    if width % heads:
        raise ConfigError(f"HEADS={heads} does not divide the width {width} (D_h = D / k must be whole); "
                          f"change HEADS or WIDTH")


# The model's own parameters that are not weights of a layer: DeiT gives them no weight decay
# (its no_weight_decay() names pos_embed, cls_token and dist_token). They are 3-D, so DECAY_NORM_AND_BIAS,
# which reads 1-D tensors as norms and biases, does not catch them.
_TOKEN_PARAMETERS = ("pos_embedding", "class_token", "dist_token")


def build_model(cfg: dict, num_classes: int):
    """The network the constants describe."""
    check_shapes(cfg)
    return MODELS[cfg["ARCH"]](num_classes=num_classes, image_size=cfg["IMAGE_DIM"], patch_size=cfg["PATCH_SIZE"],
                               width=cfg["WIDTH"], layers=cfg["LAYERS"], heads=cfg["HEADS"],
                               dropout=cfg["DROPOUT"], drop_path=cfg["DROP_PATH"], init=cfg["INIT"])


def param_options(name: str, p: nn.Parameter, cfg: dict) -> dict | None:
    """common.optim's seam: no weight decay on the position embedding and class token unless
    DECAY_TOKENS (the paper decays everything)."""
    return {"weight_decay": 0.0} if name in _TOKEN_PARAMETERS and not cfg["DECAY_TOKENS"] else None


# AUTO_AUGMENT's per-image policies, by name: (cfg) -> BatchTransform (common/augment.py).
# RandAugment: Cubuk, Zoph, Shlens, Le, arXiv:1909.13719; TrivialAugment: Muller, Hutter,
# arXiv:2103.10129 (its magnitude is drawn per image, so AUGMENT_MAGNITUDE does not apply).
AUTO_AUGMENTS = {
    "rand": lambda cfg: augment.rand_augment(num_ops=cfg["AUGMENT_OPS"], magnitude=cfg["AUGMENT_MAGNITUDE"]),
    "trivial": lambda cfg: augment.trivial_augment(),
}


def batch_transforms(cfg: dict, train_set) -> list:
    """DeiT's augmentation after crop and flip, in its order: RandAugment (or TrivialAugment) per
    image, random erasing per image, then mixup or cutmix per batch (soft labels)."""
    transforms = []
    if cfg["AUTO_AUGMENT"] != "none":
        transforms.append(AUTO_AUGMENTS[cfg["AUTO_AUGMENT"]](cfg))
    if cfg["RANDOM_ERASING"] > 0:
        transforms.append(augment.random_erasing(p=cfg["RANDOM_ERASING"]))
    if cfg["MIXUP_ALPHA"] > 0 or cfg["CUTMIX_ALPHA"] > 0:
        transforms.append(augment.mixup_or_cutmix(cfg["MIXUP_ALPHA"], cfg["CUTMIX_ALPHA"], train_set.num_classes,
                                                  switch_prob=cfg["CUTMIX_PROB"]))
    return transforms


RULES = {
    "ARCH": (lambda v: v in MODELS, ", ".join(MODELS)),
    "PATCH_SIZE": (lambda v: v >= 0, "0 (the builder's) or a positive number of pixels"),
    "WIDTH": (lambda v: v >= 0, "0 (the table's) or a positive hidden size"),
    "LAYERS": (lambda v: v >= 0, "0 (the table's) or a positive number of blocks"),
    "HEADS": (lambda v: v >= 0, "0 (the table's) or a positive number of heads"),
    "DROPOUT": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "DROP_PATH": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "INIT": (lambda v: v in INITS, " or ".join(INITS)),
    "AUTO_AUGMENT": (lambda v: v in (*AUTO_AUGMENTS, "none"), ", ".join((*AUTO_AUGMENTS, "none"))),
    "AUGMENT_OPS": (lambda v: v >= 1, "at least 1 operation"),
    "AUGMENT_MAGNITUDE": (lambda v: 0 <= v <= 30, "in [0, 30]"),
    "MIXUP_ALPHA": (lambda v: v >= 0, "0 (off) or a positive alpha"),
    "CUTMIX_ALPHA": (lambda v: v >= 0, "0 (off) or a positive alpha"),
    "CUTMIX_PROB": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "RANDOM_ERASING": (lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    "DISTILLATION": (lambda v: v in distill.KINDS, ", ".join(distill.KINDS)),
    "DISTILLATION_TAU": (lambda v: v > 0, "a positive temperature"),
    "DISTILLATION_ALPHA": (lambda v: 0 <= v <= 1, "a weight in [0, 1]"),
}


def criterion(cfg: dict) -> nn.Module | None:
    """common.script's seam, before any data work: DeiT's distillation loss with its teacher when
    DISTILLATION asks for it, else None (the labels' cross-entropy). The distillation token and
    head are what the teacher trains, so DISTILLATION and a distilled ARCH come together."""
    distilled = cfg["ARCH"] in DISTILLED
    if cfg["DISTILLATION"] == "none":
        if distilled:
            raise ConfigError(f"ARCH={cfg['ARCH']} has a distillation head, which learns from a teacher: set "
                              f"DISTILLATION=hard or soft and TEACHER, or use {cfg['ARCH'].replace('_distilled', '')}")
        if cfg["TEACHER"]:
            raise ConfigError(f"TEACHER={cfg['TEACHER']} is set and DISTILLATION=none: set DISTILLATION=hard "
                              f"or soft (with a distilled ARCH), or leave TEACHER empty")
        return None
    if not distilled:
        raise ConfigError(f"DISTILLATION={cfg['DISTILLATION']} needs a distilled ARCH ({', '.join(DISTILLED)}), "
                          f"not {cfg['ARCH']}: its distillation token and head learn the teacher")
    return distill.criterion(cfg)


def main(argv: list[str] | None = None) -> dict | None:
    return script.main(sys.modules[__name__], build_model, argv, rules=RULES, param_options=param_options,
                       batch_transforms=batch_transforms, torchvision=(TORCHVISION, from_torchvision),
                       criterion=criterion)


if __name__ == "__main__":
    main()
