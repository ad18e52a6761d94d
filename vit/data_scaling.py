"""Re-run, in miniature, the ViT paper's claim that a Transformer needs data (Dosovitskiy et al.
2020, arXiv:2010.11929, Sec. 4.3 and Fig. 4): trained on small subsets, ResNets beat ViTs; as
the training set grows the ViT catches up.

    python vit/data_scaling.py --DATA_PATH=~/data/imagenette2-160   # 8 runs, the CPU rows' size
    python vit/data_scaling.py --BUDGET=steps --SEEDS=2              # the same steps on every subset

The paper pre-trains on random subsets of JFT-300M (9M, 30M, 90M, 300M images) with the same
hyper-parameters for all sizes, and compares ViT with ResNets by few-shot accuracy. Here the
"large" data is Imagenette's 9,469 training images: deit_tiny_16 and resnet18 (each with its
train.py's recipe) train on 1/8, 1/4, 1/2 and all of them (TRAIN_FRACTION: a class-balanced,
seeded subset; the validation split is never cut) and are scored on the whole validation split.
Draws data_scaling.png (val top-1 against training images, one line per network) into this
folder and prints one verdict line: does the ResNet's lead shrink as the data grows?

BUDGET: "epochs" gives every subset NUM_EPOCHS passes, so 1/8 of the data also gets 1/8 of the
compute (the paper's JFT subsets were trained for a fixed number of passes too, and it keeps the
whole re-run at 1.9 full runs per network); "steps" gives every subset the full run's steps
(NUM_EPOCHS / fraction passes, 4 full runs per network), which separates data from compute.
"""
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

import torch  # noqa: E402

from common import claims  # noqa: E402
from common.cache import scan  # noqa: E402
from common.config import ConfigError  # noqa: E402
from common.data import TRAIN_STREAM, balanced_split  # noqa: E402
from common.files import user_path  # noqa: E402

# --- the two networks, at the size of the README's CPU rows (64 px, 10 epochs)
VIT_ARCH = "deit_tiny_16"
PATCH_SIZE = 8  # pixels: an 8 x 8 grid of tokens at 64 px
VIT_WARMUP_EPOCHS = 1.0  # the ViT recipe's 10 warm-up epochs would fill a 10-epoch run
CNN_ARCH = "resnet18"
IMAGE_DIM = 64
NUM_EPOCHS = 10
BATCH_SIZE = 128
SEEDS = 1  # runs per point (mean ± std)
# --- the data sizes and the budget
FRACTIONS = (0.125, 0.25, 0.5, 1.0)  # of Imagenette's training images (TRAIN_FRACTION)
BUDGET = "epochs"  # epochs: NUM_EPOCHS on every subset; steps: the full run's steps on every subset
VIT_ARGS = ""  # more --NAME=value for the ViT's runs only, e.g. "--DROP_PATH=0"
CNN_ARGS = ""  # ... for the ResNet's runs only

SAME_FOR_ALL = {"SAVE_BEST": False}


def plan(cfg: dict, fraction: float) -> dict:
    """The constants every run at ``fraction`` of the data shares (BUDGET decides its epochs)."""
    if cfg["BUDGET"] not in ("epochs", "steps"):
        raise ConfigError(f"BUDGET={cfg['BUDGET']!r} is not possible: epochs or steps")
    epochs = cfg["NUM_EPOCHS"] if cfg["BUDGET"] == "epochs" else max(1, round(cfg["NUM_EPOCHS"] / fraction))
    return {"IMAGE_DIM": cfg["IMAGE_DIM"], "BATCH_SIZE": cfg["BATCH_SIZE"], "NUM_EPOCHS": epochs,
            "TRAIN_FRACTION": fraction} | SAME_FOR_ALL


def main(argv: list[str] | None = None) -> list[str]:
    cfg = claims.configure(sys.modules[__name__], argv)
    try:
        fractions = sorted({float(f) for f in cfg["FRACTIONS"]})
        runs = {f: plan(cfg, f) for f in fractions}
    except (ConfigError, TypeError, ValueError) as e:
        print(f"error (bad constant): {e}", file=sys.stderr)
        raise SystemExit(2) from None
    # The ViT's warm-up is a share of its run: one epoch of ten, or as many more as BUDGET=steps adds.
    vit_runs = {f: {**c, "ARCH": cfg["VIT_ARCH"], "PATCH_SIZE": cfg["PATCH_SIZE"],
                    "WARMUP_EPOCHS": cfg["VIT_WARMUP_EPOCHS"] * c["NUM_EPOCHS"] / cfg["NUM_EPOCHS"]}
                for f, c in runs.items()}
    cnn_runs = {f: {**c, "ARCH": cfg["CNN_ARCH"]} for f, c in runs.items()}
    vit = claims.Session("vit", {**cfg, "TRAIN_ARGS": f"{cfg['TRAIN_ARGS']} {cfg['VIT_ARGS']}"})
    cnn = claims.Session("resnet", {**cfg, "TRAIN_ARGS": f"{cfg['TRAIN_ARGS']} {cfg['CNN_ARGS']}"})
    vit.check(vit_runs.values())  # every run's constants, before the first one trains
    cnn.check(cnn_runs.values())
    results: dict[str, dict[float, list[claims.Run]]] = {cfg["CNN_ARCH"]: {}, cfg["VIT_ARCH"]: {}}
    for f in fractions:  # the cheap network first, smallest subset first: the figure's cheap end early
        results[cfg["CNN_ARCH"]][f] = cnn.runs(f"data-{f:g}", cnn_runs[f])
    for f in fractions:
        results[cfg["VIT_ARCH"]][f] = vit.runs(f"data-{f:g}", vit_runs[f])
    draw(results, vit.figure("data_scaling.png"), cfg)
    return [judge(results, cfg)]


def images(results: dict[str, dict[float, list[claims.Run]]], cfg: dict) -> dict[float, int] | None:
    """The training images at each fraction: as a trainer recorded them in config.json, else (a
    run older than that record, e.g. a committed one) counted from DATA_PATH's class folders
    the way common.data draws the subset; None when neither can tell (the figure then plots
    fractions)."""
    counts: dict[float, int] = {}
    for by_fraction in results.values():
        for f, runs in by_fraction.items():
            for run in runs:
                made = json.loads((run.path / "config.json").read_text()).get("provenance", {})
                if "train_images" in made:
                    counts[f] = made["train_images"]
    missing = [f for f in results[cfg["CNN_ARCH"]] if f not in counts]
    folder = user_path(cfg["DATA_PATH"]) / "train" if cfg["DATA_PATH"] else None
    if missing and folder is not None and folder.is_dir():
        _, labels, classes = scan(folder.parent, "train")
        labels_t = torch.tensor(labels)
        for f in missing:  # the count does not depend on the seed, only which images
            counts[f] = len(labels) if f >= 1 else len(balanced_split(labels_t, f, 0, TRAIN_STREAM, len(classes),
                                                                        "TRAIN_FRACTION")[0])
    return counts if all(f in counts for f in results[cfg["CNN_ARCH"]]) else None


def judge(results: dict[str, dict[float, list[claims.Run]]], cfg: dict) -> str:
    cnn, vit = results[cfg["CNN_ARCH"]], results[cfg["VIT_ARCH"]]
    lo, hi = min(cnn), max(cnn)
    lead = {f: 100 * (statistics.fmean(claims.final(cnn[f])) - statistics.fmean(claims.final(vit[f]))) for f in cnn}
    pairs = ", ".join(f"{f:g}: {cfg['CNN_ARCH']} {claims.spread(claims.final(cnn[f]))} / {cfg['VIT_ARCH']} "
                      f"{claims.spread(claims.final(vit[f]))}" for f in sorted(cnn))
    claim = (f"{cfg['CNN_ARCH']}'s lead over {cfg['VIT_ARCH']} shrinks as the training data grows (Fig. 4), "
             f"{cfg['BUDGET']} budget")
    holds = None if lo == hi else lead[hi] < lead[lo]
    return claims.verdict(claim, holds, f"lead {lead[lo]:+.1f} points at {lo:g} of the data, {lead[hi]:+.1f} at "
                                        f"{hi:g}; val top-1 by fraction: {pairs}")


def draw(results: dict[str, dict[float, list[claims.Run]]], out: Path, cfg: dict) -> None:
    """Val top-1 (final epoch, mean ± std over seeds) against training images, one line per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = images(results, cfg)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (name, by_fraction) in enumerate(results.items()):
        xs = sorted(by_fraction)
        finals = [claims.final(by_fraction[f]) for f in xs]
        ax.errorbar([counts[f] if counts else f for f in xs], [100 * statistics.fmean(v) for v in finals],
                    yerr=[100 * statistics.stdev(v) if len(v) > 1 else 0 for v in finals], fmt="o-", color=f"C{i}",
                    capsize=3, label=f"{name} ({len(finals[0])} run{'s' if len(finals[0]) > 1 else ''} a point)")
    ax.set_xscale("log", base=2)
    if counts:
        ax.set_xticks(sorted(counts.values()), [f"{n:,}" for n in sorted(counts.values())])
        ax.minorticks_off()
    ax.set_xlabel("training images (class-balanced subsets)" if counts else "fraction of the training images")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Does a ViT need data? {cfg['IMAGE_DIM']} px, {cfg['NUM_EPOCHS']} epochs, "
                 f"{cfg['BUDGET']} budget", fontsize=10)
    fig.tight_layout()
    claims.save(fig, out)


if __name__ == "__main__":
    main()
