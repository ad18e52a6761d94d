"""Train a MobileNet (v1, Howard et al. 2017; v2, Sandler et al. 2018) from scratch on Imagenette.

v1: arXiv:1704.04861; v2: arXiv:1801.04381.

    python mobilenet/train.py                                    # the modern recipe below
    python mobilenet/train.py --RECIPE=paper                     # v1's, Sec. 4 (after Inception v3)
    python mobilenet/train.py --WIDTH_MULT=0.5 --IMAGE_DIM=160   # alpha (Sec. 3.3), rho (Sec. 3.4)
    python mobilenet/train.py --CONV=full                        # Table 4's Conv MobileNet
    python mobilenet/train.py --ARCH=mobilenet_v2                # any constant, --NAME=value
    python mobilenet/train.py --help                             # every constant, its value, the recipes

The constants are a modern single-GPU recipe (one-cycle SGD with Nesterov momentum, label
smoothing, weight decay 4e-5 as in the authors' TF-slim code but none on BN, biases and the
depthwise filters, random-resized crops). RECIPES["paper"] holds v1's Sec. 4: RMSprop as for
Inception v3 (decay 0.9, momentum 0.9, epsilon 1.0, learning rate 0.045 times 0.94 every two
epochs, gradient clipping at 2, a moving average of the weights), "less regularization and data
augmentation", "very little or no weight decay" on the depthwise filters, 224 px.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

import torch.nn as nn  # noqa: E402

from common import script  # noqa: E402
from common.config import ConfigError  # noqa: E402
from mobilenet.model import CONV_KINDS, MODELS, V1_STEM, TORCHVISION, from_torchvision  # noqa: E402

# --- data
DATASET = "imagenette"  # imagenette or imagewoof
DATASET_SIZE = "160"  # fastai archive: 160, 320 or full (short side, pixels)
IMAGE_DIM = 128  # training crop, pixels: 224 rho, the resolution multiplier of Sec. 3.4 (the paper: 224)
EVAL_IMAGE_DIM = 0  # evaluation size, pixels (0 = IMAGE_DIM)
MIN_SCALE = 0.25  # random-resized-crop's smallest area fraction (torchvision's default, from Inception: 0.08)
SCALE_JITTER = (0.0, 0.0)  # instead: short side S ~ U(lo, hi) x IMAGE_DIM, then a crop ((0, 0) = off)
HFLIP = True  # random horizontal flips

# --- model
ARCH = "mobilenet_v1"  # mobilenet_v1, _075, _050, _025 (Table 6), conv_mobilenet_v1 (Table 4), mobilenet_v2
WIDTH_MULT = 1.0  # times the ARCH's own alpha (Sec. 3.3): mobilenet_v1 at 0.5 is mobilenet_v1_050
CONV = "depthwise"  # v1's 13 blocks: depthwise (separable, Fig. 3) or full (Table 4's Conv MobileNet)

# --- optimisation
NUM_EPOCHS = 30
BATCH_SIZE = 128  # per GPU
OPTIMIZER = "sgd"  # sgd, adam, adamw or rmsprop (the paper's)
LEARNING_RATE = 0.1  # peak (0.2 left MobileNet v1 at chance after its first epoch at 64 px)
MOMENTUM = 0.9
NESTEROV = True
RMSPROP_ALPHA = 0.9  # rmsprop: decay of the squared-gradient average (Inception v3 Sec. 8)
RMSPROP_EPS = 1.0  # rmsprop: epsilon (Inception v3 Sec. 8; torch adds it outside the square root)
WEIGHT_DECAY = 4e-5  # on conv/fc weights (TF-slim's MobileNet value, also torchvision's recipe)
# Sec. 4: "very little or no weight decay ... on the depthwise filters since there are so few
# parameters in them"; TF-slim: regularize_depthwise=False.
DEPTHWISE_WEIGHT_DECAY = 0.0  # on depthwise filters instead of WEIGHT_DECAY (Sec. 4)
DECAY_NORM_AND_BIAS = False  # no weight decay on BN and biases
LR_SCHEDULE = "onecycle"  # step, plateau, cosine, onecycle, constant
WARMUP_EPOCHS = 1.5  # cosine/onecycle warm-up
LEARNING_RATE_DECAY_FACTOR = 0.94  # step: multiply by this ... (Inception v3 Sec. 8)
LEARNING_RATE_DECAY_STEP_SIZE = 2  # step: ... every this many epochs
LABEL_SMOOTHING = 0.1  # Szegedy et al. 2016, arXiv:1512.00567, Sec. 7
GRAD_CLIP = 0.0  # max gradient norm (0 = off)
EMA_DECAY = 0.0  # weight averaging per step (0 = off)

RECIPES = {
    # v1 Sec. 4: "trained in TensorFlow using RMSprop with asynchronous gradient descent similar to
    # Inception V3". Inception v3 (arXiv:1512.00567) Sec. 8: RMSProp "with decay of 0.9 and
    # epsilon = 1.0", learning rate 0.045 "decayed every two epoch using an exponential rate of
    # 0.94", batch 32 per replica, "gradient clipping with threshold 2.0", evaluation on a running
    # average of the parameters. One synchronous worker stands in for the 50 asynchronous ones.
    # TF puts epsilon inside the square root, torch outside: with epsilon 1.0 both denominators
    # are about 1 while the squared gradients are small, so 1.0 is kept. MobileNet Sec. 4: "less
    # regularization and data augmentation techniques because small models have less trouble
    # with overfitting" (no label smoothing, larger crops: MIN_SCALE 0.5 is our value, the paper
    # gives none), "very little or no weight decay (l2 regularization) on the depthwise filters";
    # the other weights get TF-slim's 4e-5. Epochs: not stated (Inception v3's ~100).
    "paper": {"OPTIMIZER": "rmsprop", "LEARNING_RATE": 0.045, "RMSPROP_ALPHA": 0.9, "RMSPROP_EPS": 1.0,
              "MOMENTUM": 0.9, "NESTEROV": False, "BATCH_SIZE": 32, "LR_SCHEDULE": "step",
              "LEARNING_RATE_DECAY_FACTOR": 0.94, "LEARNING_RATE_DECAY_STEP_SIZE": 2, "WARMUP_EPOCHS": 0.0,
              "GRAD_CLIP": 2.0, "EMA_DECAY": 0.9999, "WEIGHT_DECAY": 4e-5, "DEPTHWISE_WEIGHT_DECAY": 0.0,
              "LABEL_SMOOTHING": 0.0, "MIN_SCALE": 0.5, "IMAGE_DIM": 224, "DATASET_SIZE": "320",
              "NUM_EPOCHS": 100},
    # The smoke test (and the test suite's setting for this script): about a minute on a CPU on
    # any data, the first 20 images of each class decoded. It shows that the code path runs end
    # to end (data, training, evaluation, checkpoints, figures), not accuracy (near chance).
    "tiny": {"MAX_IMAGES_PER_CLASS": 20,
             "IMAGE_DIM": 32, "WIDTH_MULT": 0.125, "BATCH_SIZE": 8, "NUM_EPOCHS": 2, "WARMUP_EPOCHS": 0.5},
}


def build_model(cfg: dict, num_classes: int) -> nn.Module:
    """The network the constants describe."""
    arch, conv = cfg["ARCH"], cfg["CONV"]
    if arch == "mobilenet_v2" and conv != "depthwise":
        raise ConfigError(f"CONV={conv!r} is for MobileNet v1's blocks (Table 4); "
                          f"mobilenet_v2 takes CONV=depthwise")
    # conv_mobilenet_v1 is CONV=full already; the other v1 builders take CONV
    options = {"conv": conv} if arch.startswith("mobilenet_v1") else {}
    return MODELS[arch](num_classes=num_classes, width=cfg["WIDTH_MULT"], **options)


def param_options(name: str, p: nn.Parameter, cfg: dict) -> dict | None:
    """Sec. 4: the depthwise filters (model.py names them ``depthwise``) get DEPTHWISE_WEIGHT_DECAY."""
    return {"weight_decay": cfg["DEPTHWISE_WEIGHT_DECAY"]} if ".depthwise." in name and p.ndim == 4 else None


RULES = {
    "ARCH": (lambda v: v in MODELS, ", ".join(MODELS)),
    "CONV": (lambda v: v in CONV_KINDS, " or ".join(CONV_KINDS) + " (Table 4)"),
    # v1's 32-channel stem keeps a channel of its own at 1/32; below, every layer sits at the
    # one-channel floor (WIDTH_MULT=1e-9 built a network of a few hundred weights).
    "WIDTH_MULT": (lambda v: v * V1_STEM[0] >= 1, f"a positive width multiplier of at least 1/{V1_STEM[0]} "
                   f"(1 = the ARCH's own alpha, Sec. 3.3)"),
    "DEPTHWISE_WEIGHT_DECAY": (lambda v: v >= 0, "0 or more (Sec. 4: very little or none)"),
    # Five stride-2 layers (Table 1, Table 2) downsample 32x: below 32 px the last blocks would
    # see only padding.
    "IMAGE_DIM": (lambda v: v >= 32, "at least 32 pixels (the network downsamples 32x)"),
    "EVAL_IMAGE_DIM": (lambda v: v == 0 or v >= 32, "0 (= IMAGE_DIM) or at least 32 pixels"),
}


def main(argv: list[str] | None = None) -> dict | None:
    return script.main(sys.modules[__name__], build_model, argv, rules=RULES, param_options=param_options,
                       torchvision=(TORCHVISION, from_torchvision))


if __name__ == "__main__":
    main()
