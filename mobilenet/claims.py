"""Re-run MobileNet v1's efficiency claims: Table 4 (separable vs full convolutions), Table 6
(width multiplier alpha) and Table 7 (resolution multiplier rho).

    python mobilenet/claims.py                                # 8 networks x 2 seeds, 3 epochs, 56 px
    python mobilenet/claims.py --NUM_EPOCHS=10 --DATA_PATH=~/data/imagenette2-224 --TRAIN_ARGS=--DECODE_WORKERS=1

On ImageNet (top-1): Table 4, depthwise separable convolutions lose about a point against full
ones for 1/8.5 of the mult-adds (MobileNet 70.6 %, 569 M; Conv MobileNet 71.7 %, 4866 M);
Table 6, accuracy falls smoothly as alpha shrinks (70.6, 68.4, 63.7, 50.6 % for 1, 0.75, 0.5,
0.25); Table 7, and as rho does (70.6, 69.1, 67.2, 64.4 % at 224, 192, 160, 128 px).

Here IMAGE_DIM stands for 224 (56 px: Table 7's 192, 160, 128 px are 48, 40, 32, the same
ratios 6/7, 5/7, 4/7); Tables 7 and 4 at alpha = 0.25 (the cheapest net; alpha = 1 costs 4-5x
its CPU time). Prints the table (mult-adds and parameters at 10 classes, final val top-1) and
draws tables_4_6_7.png (accuracy against mult-adds) into this folder.
"""
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

from common import claims  # noqa: E402
from common.compare import cost  # noqa: E402

# --- scale
IMAGE_DIM = 56  # stands for the paper's 224 px
CACHE_DIM = 128  # decoded cache side, pixels
NUM_EPOCHS = 3  # budget, not convergence: the seed spread reaches +-3-4 points
BATCH_SIZE = 64
LEARNING_RATE = 0.1  # peak of the one-cycle schedule
WARMUP_EPOCHS = 1.0
SEEDS = 2  # runs per network (mean ± std)
# --- the comparison
WIDTHS = "1.0,0.75,0.5,0.25"  # Table 6's alphas, at IMAGE_DIM (comma-separated, largest first)
SIZES = "56,48,40,32"  # Table 7's inputs, pixels (IMAGE_DIM x 1, 6/7, 5/7, 4/7), at TABLE7_WIDTH
TABLE7_WIDTH = 0.25  # alpha of Table 7's sweep
TABLE4_WIDTH = 0.25  # alpha of Table 4's pair: Conv MobileNet against MobileNet
TABLE4_MAX_LOSS = 2.0  # points: "about a point" (the paper: 71.7 - 70.6 = 1.1), read generously

SAME_FOR_ALL = {"SAVE_BEST": False}


def main(argv: list[str] | None = None) -> list[str]:
    cfg = claims.configure(sys.modules[__name__], argv)
    session = claims.Session("mobilenet", cfg)
    scale = {k: cfg[k] for k in ("CACHE_DIM", "NUM_EPOCHS", "BATCH_SIZE", "LEARNING_RATE", "WARMUP_EPOCHS")}
    widths = [float(w) for w in cfg["WIDTHS"].split(",") if w.strip()]
    sizes = [int(s) for s in cfg["SIZES"].split(",") if s.strip()]
    nets = [("mobilenet_v1", w, cfg["IMAGE_DIM"]) for w in widths]  # Table 6
    nets += [("mobilenet_v1", cfg["TABLE7_WIDTH"], s) for s in sizes]  # Table 7
    nets += [("conv_mobilenet_v1", cfg["TABLE4_WIDTH"], cfg["IMAGE_DIM"]),  # Table 4
             ("mobilenet_v1", cfg["TABLE4_WIDTH"], cfg["IMAGE_DIM"])]
    planned = {(arch, width, dim): {**scale, **SAME_FOR_ALL, "ARCH": arch, "WIDTH_MULT": width, "IMAGE_DIM": dim}
               for arch, width, dim in nets}  # the shared points trained once
    session.check(planned.values())
    results = {(arch, width, dim): session.runs(f"{arch}-{width:g}-{dim}px", constants)
               for (arch, width, dim), constants in planned.items()}
    costs = {key: cost(runs[0].cfg) for key, runs in results.items()}  # (parameters, mult-adds)
    print_table(results, costs)
    plot(results, costs, cfg, session.figure("tables_4_6_7.png"))
    return judge(results, cfg, widths, sizes)


def print_table(results: dict, costs: dict) -> None:
    print("| network | alpha | input | mult-adds | parameters (10 classes) | runs | final val top-1 |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(results, key=lambda k: -(costs[k][1] or 0)):
        (arch, width, dim), (params, macs) = key, costs[key]
        print(f"| `{arch}` | {width:g} | {dim} px | {(macs or 0) / 1e6:.1f} M | {params or 0:,} | "
              f"{len(results[key])} | {claims.spread(claims.final(results[key]))} |")


def judge(results: dict, cfg: dict, widths: list[float], sizes: list[int]) -> list[str]:
    top1 = {key: claims.final(runs) for key, runs in results.items()}

    def falls(keys: list, name: str, what: str) -> str:
        steps = [claims.above(top1[a], top1[b]) for a, b in zip(keys, keys[1:])]
        numbers = ", ".join(f"{what(k)} {claims.spread(top1[k])}" for k in keys)
        if not all(steps):
            end = claims.above(top1[keys[0]], top1[keys[-1]])
            numbers += f"; end to end: {'falls' if end else 'does not fall'} beyond the seed spread"
        return claims.verdict(name, all(steps), numbers)

    lines = []
    t6 = sorted((("mobilenet_v1", w, cfg["IMAGE_DIM"]) for w in widths), key=lambda k: -k[1])
    if len(t6) >= 2:
        lines.append(falls(t6, "Table 6, accuracy falls with each smaller alpha", lambda k: f"alpha {k[1]:g}"))
    t7 = sorted((("mobilenet_v1", cfg["TABLE7_WIDTH"], s) for s in sizes), key=lambda k: -k[2])
    if len(t7) >= 2:
        lines.append(falls(t7, "Table 7, accuracy falls with each smaller input", lambda k: f"{k[2]} px"))
    full, separable = (("conv_mobilenet_v1", cfg["TABLE4_WIDTH"], cfg["IMAGE_DIM"]),
                       ("mobilenet_v1", cfg["TABLE4_WIDTH"], cfg["IMAGE_DIM"]))
    lead = 100 * (statistics.fmean(top1[full]) - statistics.fmean(top1[separable]))
    lines.append(claims.verdict(
        f"Table 4, separable convolutions lose at most {cfg['TABLE4_MAX_LOSS']:g} points against full ones",
        lead <= cfg["TABLE4_MAX_LOSS"], f"alpha {cfg['TABLE4_WIDTH']:g}: full {claims.spread(top1[full])}, "
                                        f"separable {claims.spread(top1[separable])}, a lead of {lead:.1f} points"))
    return lines


def plot(results: dict, costs: dict, cfg: dict, out: Path) -> None:
    """Final val top-1 (mean ± std) against mult-adds: Table 6's alphas, Table 7's inputs, Table 4's pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [  # label, which runs, the note beside each point
        (f"width multiplier alpha at {cfg['IMAGE_DIM']} px (Table 6)",
         lambda k: k[0] == "mobilenet_v1" and k[2] == cfg["IMAGE_DIM"], lambda k: f"alpha {k[1]:g}"),
        (f"input size at alpha = {cfg['TABLE7_WIDTH']:g} (Table 7's rho)",
         lambda k: k[0] == "mobilenet_v1" and k[1] == cfg["TABLE7_WIDTH"],
         lambda k: "" if k[2] == cfg["IMAGE_DIM"] else f"{k[2]} px"),  # IMAGE_DIM: named by Table 6's note
        (f"Conv MobileNet, alpha = {cfg['TABLE4_WIDTH']:g} (Table 4)", lambda k: k[0] == "conv_mobilenet_v1",
         lambda k: "full convs"),
    ]
    for (label, pick, note), style in zip(series, ("o-", "s--", "^")):
        points = sorted(((costs[k][1] or 0) / 1e6, 100 * statistics.fmean(claims.final(runs)),
                         100 * (statistics.stdev(claims.final(runs)) if len(runs) > 1 else 0.0), k)
                        for k, runs in results.items() if pick(k))
        if not points:
            continue
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], fmt=style,
                    capsize=3, label=label)
        for x, y, _, key in points:
            ax.annotate(note(key), (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("mult-adds per image at the run's input size (millions, log scale)")
    ax.set_ylabel("final val top-1 (%), mean ± std")
    ax.set_title(f"MobileNet v1 re-run: accuracy against mult-adds ({cfg['NUM_EPOCHS']} epochs, "
                 f"{cfg['SEEDS']} seed(s))", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    claims.save(fig, out)


if __name__ == "__main__":
    main()
