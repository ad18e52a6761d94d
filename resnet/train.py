"""Train a ResNet (He et al. 2015, arXiv:1512.03385) from scratch on Imagenette.

    python resnet/train.py                                  # the modern recipe below
    python resnet/train.py --RECIPE=paper                   # the paper's, Sec. 3.4
    python resnet/train.py --ARCH=resnet34 --NUM_EPOCHS=20  # any constant, --NAME=value
    python resnet/train.py --help                           # every constant, its value, the recipes

The constants are a modern single-GPU recipe (one-cycle SGD with Nesterov momentum, label
smoothing, zero-init residuals, no weight decay on BN/bias, a light random-resized-crop).
RECIPES["paper"] holds the paper's own: SGD, momentum 0.9, weight decay 1e-4 on everything,
learning rate 0.1 divided by 10 when the error plateaus, batch 256, 224 px crops, 10-crop
testing, and its scale augmentation (a 224 crop of the image resized to a short side drawn
from [256, 480]: SCALE_JITTER).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

from common import script  # noqa: E402
from resnet.model import MODELS, TORCHVISION, from_torchvision  # noqa: E402

# --- data
DATASET = "imagenette"  # imagenette or imagewoof
DATASET_SIZE = "160"  # fastai archive: 160, 320 or full (short side, pixels)
IMAGE_DIM = 128  # training crop, pixels (the paper: 224)
EVAL_IMAGE_DIM = 0  # evaluation size, pixels (0 = IMAGE_DIM; larger: "FixRes", arXiv:1906.06423)
MIN_SCALE = 0.35  # random-resized-crop's smallest area fraction (torchvision's default, from Inception: 0.08)
SCALE_JITTER = (0.0, 0.0)  # instead: short side S ~ U(lo, hi) x IMAGE_DIM, then a crop ((0, 0) = off)
HFLIP = True  # random horizontal flips (Sec. 3.4, after AlexNet)

# --- model
ARCH = "resnet18"  # resnet18/34/50/101/152, or plain18/plain34 (no shortcuts, Sec. 4.1)
SHORTCUT = "B"  # Table 3: A zero-pads (Fig. 4's nets), B projects where shapes change, C everywhere
STRIDE_IN_1X1 = True  # bottleneck stride on the first 1x1 (paper); False: on the 3x3 ("ResNet v1.5")
ZERO_INIT_RESIDUAL = True  # last BN of each residual branch starts at 0 (Goyal et al. 2017, Sec. 5.1)
WIDTH = 64  # channels of conv1 and conv2_x; later stages x2, x4, x8 (Table 1)

# --- optimisation
NUM_EPOCHS = 20
BATCH_SIZE = 128  # per GPU
OPTIMIZER = "sgd"  # sgd, adam, adamw or rmsprop
LEARNING_RATE = 0.4  # peak; the paper: 0.1 for batch 256
MOMENTUM = 0.9  # the paper's
NESTEROV = True
WEIGHT_DECAY = 5e-5  # per step on conv/fc weights only (the paper: 1e-4 on all)
DECAY_NORM_AND_BIAS = False  # no weight decay on BN and biases
LR_SCHEDULE = "onecycle"  # step, plateau (the paper's), cosine, onecycle, constant
WARMUP_EPOCHS = 1.5  # cosine/onecycle warm-up
LEARNING_RATE_DECAY_FACTOR = 0.1  # step/plateau: divide by 10 (Sec. 3.4) ...
LEARNING_RATE_DECAY_STEP_SIZE = 30  # step: ... every this many epochs
PLATEAU_PATIENCE = 3  # plateau: ... after this many epochs without progress
LABEL_SMOOTHING = 0.1  # Szegedy et al. 2016, arXiv:1512.00567, Sec. 7
GRAD_CLIP = 0.0  # max gradient norm (0 = off)
EMA_DECAY = 0.0  # weight averaging per step (0 = off; e.g. 0.999 for long runs)

RECIPES = {
    # Sec. 3.4: "The learning rate starts from 0.1 and is divided by 10 when the error plateaus
    # ... weight decay of 0.0001 and a momentum of 0.9"; 10-crop testing for the comparisons.
    "paper": {"LR_SCHEDULE": "plateau", "LEARNING_RATE": 0.1, "BATCH_SIZE": 256, "WEIGHT_DECAY": 1e-4,
              "DECAY_NORM_AND_BIAS": True, "NESTEROV": False, "LABEL_SMOOTHING": 0.0,
              "ZERO_INIT_RESIDUAL": False, "WARMUP_EPOCHS": 0.0, "IMAGE_DIM": 224, "DATASET_SIZE": "320",
              "NUM_EPOCHS": 90, "EVAL_VIEWS": "10crop",
              # "resized with its shorter side randomly sampled in [256, 480]", then a 224 crop
              "SCALE_JITTER": (256 / 224, 480 / 224)},
    # The most accuracy per second of training on a 2-core CPU at 64 px (README, "A fast recipe"):
    # 16 epochs instead of 14 in the same time, by progressive resizing (fastai's DAWNBench entry;
    # FFCV, arXiv:2306.12517): 40-56 px crops while the weights are coarse, the last 6 epochs
    # at 64 px. Tuned on a held-out tenth of the training images (HOLDOUT_FRACTION=0.1), not
    # on val; there, evaluating at 72 px ("FixRes", arXiv:1906.06423) cost 9 points and flip
    # views gave +1.2 and -0.4 points in two runs, so neither is part of it.
    "fast": {"IMAGE_DIM": 64, "CACHE_DIM": 128, "NUM_EPOCHS": 16, "START_IMAGE_DIM": 40,
             "RESIZE_RAMP": (0.0, 0.75)},
    # The smoke test (and the test suite's setting for this script): about a minute on a CPU on
    # any data, the first 20 images of each class decoded. It shows that the code path runs end
    # to end (data, training, evaluation, checkpoints, figures), not accuracy (near chance).
    "tiny": {"MAX_IMAGES_PER_CLASS": 20,
             "IMAGE_DIM": 32, "WIDTH": 4, "BATCH_SIZE": 8, "NUM_EPOCHS": 2, "WARMUP_EPOCHS": 0.5},
}


def build_model(cfg: dict, num_classes: int):
    """The network the constants describe."""
    plain = cfg["ARCH"].startswith("plain")  # no residual branch to zero-initialise
    return MODELS[cfg["ARCH"]](num_classes=num_classes, shortcut=cfg["SHORTCUT"],
                               stride_in_1x1=cfg["STRIDE_IN_1X1"],
                               zero_init_residual=cfg["ZERO_INIT_RESIDUAL"] and not plain, width=cfg["WIDTH"])


RULES = {
    "ARCH": (lambda v: v in MODELS, ", ".join(MODELS)),
    # Table 1 downsamples by 32 (conv1, max pool, conv3_1, conv4_1, conv5_1): below 32 px the
    # last stages would only see padding.
    "IMAGE_DIM": (lambda v: v >= 32, "at least 32 pixels (the network downsamples 32x)"),
    "EVAL_IMAGE_DIM": (lambda v: v == 0 or v >= 32, "0 (= IMAGE_DIM) or at least 32 pixels"),
    "WIDTH": (lambda v: v >= 1, "at least 1 channel"),
    "SHORTCUT": (lambda v: v in ("A", "B", "C"), "A, B or C (Table 3)"),
}


def main(argv: list[str] | None = None) -> dict | None:
    return script.main(sys.modules[__name__], build_model, argv, rules=RULES,
                       torchvision=(TORCHVISION, from_torchvision))


if __name__ == "__main__":
    main()
