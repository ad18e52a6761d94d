"""Train a VGG net (Simonyan & Zisserman 2014, arXiv:1409.1556) from scratch on Imagenette.

    python vgg/train.py                                   # the modern recipe below
    python vgg/train.py --RECIPE=paper                    # the paper's, Sec. 3.1-3.2 (net A first)
    python vgg/train.py --RECIPE=paper --ARCH=vgg16 --INIT_FROM=runs/vgg11/<run>/best.pt
    python vgg/train.py --RECIPE=writeup                  # the original write-up's settings
    python vgg/train.py --help                            # every constant, its value, the recipes

The constants are a modern single-GPU recipe (VGG-16 with batch norm, one-cycle SGD with
Nesterov momentum, label smoothing, no weight decay on BN/bias, random-resized-crop); it has not
been measured on a GPU yet. RECIPES["paper"] holds the paper's own: net A from a random init,
mini-batch SGD (batch 256, momentum 0.9, weight decay 5e-4, dropout 0.5), learning rate 1e-2
divided by 10 when val accuracy stops improving, scale jittering S in [256, 512] with 224 crops,
and the dense multi-scale test (Q = 256, 384, 512, with flips). A deeper net then starts from
the trained A with INIT_FROM, as Sec. 3.1 did.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

from common import checkpoint as ckpt_lib  # noqa: E402
from common import script  # noqa: E402
from common.config import ConfigError  # noqa: E402
from common.files import user_path  # noqa: E402
from vgg import model as vgg_model  # noqa: E402
from vgg.model import MODELS, TORCHVISION, copy_from_a, from_torchvision  # noqa: E402

# --- data
DATASET = "imagenette"  # imagenette or imagewoof
DATASET_SIZE = "320"  # fastai archive: 160, 320 or full (short side, pixels)
IMAGE_DIM = 224  # training crop, pixels (the paper's)
EVAL_IMAGE_DIM = 0  # evaluation size, pixels (0 = IMAGE_DIM)
MIN_SCALE = 0.35  # random-resized-crop's smallest area fraction (torchvision's default: 0.08)
SCALE_JITTER = (0.0, 0.0)  # instead: short side S ~ U(lo, hi) x IMAGE_DIM, then a crop (Sec. 3.1; 0 = off)
HFLIP = True  # random horizontal flips (Sec. 3.1, after AlexNet)

# --- model
ARCH = "vgg16_bn"  # vgg11 (A), vgg11_lrn (A-LRN), vgg13 (B), vgg16_1x1 (C), vgg16 (D), vgg19 (E), *_bn
WIDTH = 1.0  # width multiplier of every conv and FC layer (1 = Table 1; e.g. 0.125 on a CPU)
INIT = "kaiming"  # normal: N(0, INIT_STD) (Sec. 3.1), glorot (Sec. 3.1 note), kaiming (He et al. 2015)
INIT_STD = 0.01  # INIT=normal: std (the paper writes "10^-2 variance", i.e. 0.1 read literally)
INIT_FROM = ""  # net A's last.pt/best.pt (a vgg11/vgg11_bn run): its first 4 convs and 3 FCs (Sec. 3.1)
CLASSIFIER = "pool"  # pool: adaptive 7x7 average pool (torchvision); dense: FC as convs (Sec. 3.2, >= 224 px)
DROPOUT = 0.5  # on fc6 and fc7 (Sec. 3.1)

# --- optimisation
NUM_EPOCHS = 40
BATCH_SIZE = 128  # per GPU
OPTIMIZER = "sgd"  # sgd, adam, adamw or rmsprop
LEARNING_RATE = 0.05  # peak; the paper: 1e-2 for batch 256 without batch norm
MOMENTUM = 0.9  # the paper's
NESTEROV = True
WEIGHT_DECAY = 5e-4  # the paper's L2 multiplier, here on conv/fc weights only
DECAY_NORM_AND_BIAS = False  # no weight decay on BN and biases
LR_SCHEDULE = "onecycle"  # step, plateau (the paper's), cosine, onecycle, constant
WARMUP_EPOCHS = 2.0  # cosine/onecycle warm-up
LEARNING_RATE_DECAY_FACTOR = 0.1  # step/plateau: divide by 10 (Sec. 3.1) ...
LEARNING_RATE_DECAY_STEP_SIZE = 30  # step: ... every this many epochs
PLATEAU_PATIENCE = 3  # plateau: ... after this many epochs without progress (the paper does not say)
LABEL_SMOOTHING = 0.1  # Szegedy et al. 2016, arXiv:1512.00567, Sec. 7
GRAD_CLIP = 0.0  # max gradient norm (0 = off)
EMA_DECAY = 0.0  # weight averaging per step (0 = off)
ADAM_BETAS = (0.9, 0.999)  # adam/adamw (the write-up's recipe)

RECIPES = {
    # Sec. 3.1 "Training": "batch size was set to 256, momentum to 0.9 ... regularised by weight
    # decay (the L2 penalty multiplier set to 5e-4) and dropout regularisation for the first two
    # fully-connected layers (dropout ratio set to 0.5). The learning rate was initially set to
    # 1e-2, and then decreased by a factor of 10 when the validation set accuracy stopped
    # improving ... stopped after 370K iterations (74 epochs)". Net A is trained from a random
    # init N(0, 0.01); deeper nets add --ARCH=vgg16 --INIT_FROM=<net A's last.pt>. Not here: the
    # random RGB colour shift of Sec. 3.1 (AlexNet's PCA lighting), which common/ does not offer.
    "paper": {"ARCH": "vgg11", "INIT": "normal", "CLASSIFIER": "dense", "LEARNING_RATE": 0.01,
              "BATCH_SIZE": 256, "WEIGHT_DECAY": 5e-4, "DECAY_NORM_AND_BIAS": True, "NESTEROV": False,
              "LR_SCHEDULE": "plateau", "LABEL_SMOOTHING": 0.0, "WARMUP_EPOCHS": 0.0, "NUM_EPOCHS": 74,
              "IMAGE_DIM": 224, "DATASET_SIZE": "full",
              # Sec. 3.1 multi-scale training: S ~ U[256, 512], then a random 224 crop.
              "SCALE_JITTER": (256 / 224, 512 / 224),
              # Sec. 3.2 / Table 4: test at Q = {S_min, (S_min + S_max) / 2, S_max} = {256, 384,
              # 512}, the whole short side (EVAL_CROP 1), densely, with horizontal flips,
              # softmax averaged. Every epoch's val (and the plateau) uses Q = 256.
              "EVAL_IMAGE_DIM": 256, "EVAL_CROP": 1.0, "EVAL_SCALES": (1.0, 1.5, 2.0), "EVAL_VIEWS": "flip"},
    # The original write-up's settings for its VGG-16 (85.7 % top-1). What it did not state: no
    # label smoothing, no warm-up, decay on everything; the init stays this file's (torchvision's).
    "writeup": {"ARCH": "vgg16", "OPTIMIZER": "adamw", "LEARNING_RATE": 1e-4, "WEIGHT_DECAY": 0.1,
                "NUM_EPOCHS": 90, "LR_SCHEDULE": "step", "LEARNING_RATE_DECAY_STEP_SIZE": 30,
                "LEARNING_RATE_DECAY_FACTOR": 0.1, "BATCH_SIZE": 128, "IMAGE_DIM": 224,
                "LABEL_SMOOTHING": 0.0, "WARMUP_EPOCHS": 0.0, "DECAY_NORM_AND_BIAS": True},
    # The smoke test (and the test suite's setting for this script): about a minute on a CPU on
    # any data, the first 20 images of each class decoded. It shows that the code path runs end
    # to end (data, training, evaluation, checkpoints, figures), not accuracy (near chance).
    "tiny": {"MAX_IMAGES_PER_CLASS": 20,
             "ARCH": "vgg11_bn", "DATASET_SIZE": "160", "IMAGE_DIM": 32, "WIDTH": 0.0625, "BATCH_SIZE": 8,
             "NUM_EPOCHS": 2, "WARMUP_EPOCHS": 0.5},
}

# Net A's builder for each target's kind (with or without batch norm), for INIT_FROM.
NET_A = {False: "vgg11", True: "vgg11_bn"}


def net_a_weights(cfg: dict) -> dict:
    """INIT_FROM's model weights, refused in one line unless they are net A at this WIDTH."""
    path = cfg["INIT_FROM"]
    try:
        ckpt = ckpt_lib.load_checkpoint(user_path(path), constant="INIT_FROM")
    except ckpt_lib.TrainingError as e:  # a missing file or one that is not a checkpoint of ours
        raise ConfigError(str(e)) from None
    saved, want = ckpt["config"], NET_A[cfg["ARCH"].endswith("_bn")]
    if saved.get("ARCH") != want:
        raise ConfigError(f"INIT_FROM={path} holds ARCH={saved.get('ARCH')!r}, not net A: Sec. 3.1 "
                          f"starts {cfg['ARCH']} from a trained {want} (configuration A)")
    if saved.get("WIDTH") != cfg["WIDTH"]:
        raise ConfigError(f"INIT_FROM={path} has WIDTH={saved.get('WIDTH')!r}, this run "
                          f"WIDTH={cfg['WIDTH']!r}: the copied layers must have the same shapes")
    return ckpt["model"]


def build_model(cfg: dict, num_classes: int):
    """The network the constants describe; with INIT_FROM, net A's layers copied in (Sec. 3.1).

    common/script.py calls this first on the meta device, before any data work: there
    INIT_FROM is read and checked (names and shapes), and the copy happens in the real call.
    """
    model = MODELS[cfg["ARCH"]](num_classes=num_classes, width=cfg["WIDTH"], init=cfg["INIT"],
                                init_std=cfg["INIT_STD"], classifier=cfg["CLASSIFIER"],
                                dropout=cfg["DROPOUT"])
    # A resumed run gets every weight from its checkpoint: INIT_FROM is not read again.
    if cfg["INIT_FROM"] and not cfg["RESUME"]:
        state, on_meta = net_a_weights(cfg), next(model.parameters()).is_meta
        try:  # on the meta device the class count is a stand-in: fc8's rows are checked later
            copy_from_a(model, state, check_only=on_meta, ignore_classes=on_meta)
        except ValueError as e:
            raise ConfigError(f"INIT_FROM={cfg['INIT_FROM']} does not fit {cfg['ARCH']}: {e}") from None
    return model


# Five 2x2 max pools (Table 1) halve the input five times: 32 px leaves a 1x1 map (31 px would
# leave none); the dense classifier (Sec. 3.2) needs fc6's 7x7 map, i.e. 224 px (script.py's
# meta-device check refuses that case in one line).
_MIN_IMAGE_DIM = 2 ** 5
# Below 1/64 every layer sits at the one-channel floor of model.scaled (WIDTH=0.0001 built a
# 164-parameter network without a word).
_NARROWEST = min(e if isinstance(e, int) else e[0] for config in vgg_model.VGG_CONFIGS.values()
                 for e in config if not isinstance(e, str))

RULES = {
    "ARCH": (lambda v: v in MODELS, ", ".join(MODELS)),
    "INIT": (lambda v: v in vgg_model.INITS, ", ".join(vgg_model.INITS)),
    "INIT_STD": (lambda v: v > 0, "a positive std"),
    "CLASSIFIER": (lambda v: v in vgg_model.CLASSIFIERS, ", ".join(vgg_model.CLASSIFIERS)),
    "WIDTH": (lambda v: v * _NARROWEST >= 1, f"at least 1/{_NARROWEST} = {1 / _NARROWEST:g}, so that Table 1's "
              f"narrowest layer ({_NARROWEST} channels) keeps a channel of its own (1 = the paper)"),
    "DROPOUT": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "IMAGE_DIM": (lambda v: v >= _MIN_IMAGE_DIM, f"at least {_MIN_IMAGE_DIM} pixels (five 2x2 max pools)"),
    "EVAL_IMAGE_DIM": (lambda v: v == 0 or v >= _MIN_IMAGE_DIM,
                       f"0 (= IMAGE_DIM) or at least {_MIN_IMAGE_DIM} pixels (five 2x2 max pools)"),
}


def main(argv: list[str] | None = None) -> dict | None:
    return script.main(sys.modules[__name__], build_model, argv, rules=RULES,
                       torchvision=(TORCHVISION, from_torchvision))


if __name__ == "__main__":
    main()
