"""Re-run the ViT paper's data claim (Sec. 4.2-4.3, Figs. 3-4): on a small data set, a ViT pre-trained
on more data beats the same network trained from scratch by a wide margin.

    python vit/claims.py                                       # ViT-B/16 at 224 px: a GPU's job
    python vit/claims.py --NUM_EPOCHS=10 --SEEDS=1 --DATA_PATH=~/data/imagenette2-320

Figs. 3-4: with ImageNet-sized data a ViT trails ResNets; it pays off only when pre-trained on
more (ImageNet-21k, JFT-300M). On Imagenette the comparison is the same network, once from
scratch and once from torchvision's ImageNet weights (PRETRAINED=True; the classifier is
re-initialised for 10 classes). The weights are downloaded once into torch's cache, which needs
the network; without it the pre-trained run fails in one line and the claim stays undecided.
Draws scratch_vs_pretrained.png (validation top-1 and training error per epoch) into this folder.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

from common import claims  # noqa: E402

# --- scale
ARCH = "vit_b_16"  # a network torchvision has ImageNet weights for (vit_b_16, vit_b_32, vit_l_16, ...)
PATCH_SIZE = 16  # pixels: the weights' own
IMAGE_DIM = 224  # the weights' size (another interpolates the position embeddings, Sec. 3.2)
DATASET_SIZE = "320"  # fastai archive whose short side covers IMAGE_DIM
WIDTH = 0  # hidden size D (0 = the table's; the weights need it)
LAYERS = 0  # encoder blocks (0 = the table's)
HEADS = 0  # attention heads (0 = the table's)
NUM_EPOCHS = 30
BATCH_SIZE = 128
SEEDS = 2  # runs per side (mean ± std)
# --- the comparison
MIN_LEAD = 5.0  # points of val top-1: "a wide margin", read as at least this, beyond the seed spread

SAME_FOR_ALL = {"SAVE_BEST": False}


def main(argv: list[str] | None = None) -> list[str]:
    cfg = claims.configure(sys.modules[__name__], argv)
    session = claims.Session("vit", cfg)
    scale = {k: cfg[k] for k in ("ARCH", "PATCH_SIZE", "IMAGE_DIM", "DATASET_SIZE", "WIDTH", "LAYERS", "HEADS",
                                  "NUM_EPOCHS", "BATCH_SIZE")} | SAME_FOR_ALL
    session.check([{**scale, "PRETRAINED": False}])
    results = {}
    try:  # first: a failed download then costs no training
        results["pre-trained (PRETRAINED=True)"] = session.runs("pretrained", {**scale, "PRETRAINED": True})
    except claims.RunFailed:
        print("vit claims: the PRETRAINED=True run could not start (the error above; its ImageNet weights are "
              "downloaded once, which needs the network): training from scratch only", file=sys.stderr, flush=True)
    results["from scratch"] = session.runs("scratch", {**scale, "PRETRAINED": False})
    claims.plot(results, ["val_top1", "train_error"], session.figure("scratch_vs_pretrained.png"),
                f"ViT re-run: {cfg['ARCH']}, {cfg['IMAGE_DIM']} px, {cfg['NUM_EPOCHS']} epochs, from scratch "
                f"vs ImageNet weights")
    return [judge(results, cfg)]


def judge(results: dict, cfg: dict) -> str:
    scratch = claims.final(results["from scratch"])
    claim = f"pre-trained beats from scratch by at least {cfg['MIN_LEAD']:g} points (Figs. 3-4)"
    if "pre-trained (PRETRAINED=True)" not in results:
        return claims.verdict(claim, None, f"from scratch {claims.spread(scratch)} val top-1; no pre-trained run")
    pre = claims.final(results["pre-trained (PRETRAINED=True)"])
    lead = 100 * (sum(pre) / len(pre) - sum(scratch) / len(scratch))
    holds = lead >= cfg["MIN_LEAD"] and claims.above(pre, scratch)
    return claims.verdict(claim, holds, f"pre-trained {claims.spread(pre)}, from scratch {claims.spread(scratch)} "
                                        f"val top-1, a lead of {lead:.1f} points")


if __name__ == "__main__":
    main()
