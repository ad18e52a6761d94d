"""The table and plot of the Table 4 / 6 / 7 re-run (mobilenet/rerun_tables.sh): final val top-1
(mean ± std over seeds) against each network's mult-adds at its input size.

    python mobilenet/table_plot.py runs/mobilenet_tables/*/* --out mobilenet/tables_4_6_7.png
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from any folder, no PYTHONPATH

from common.compare import read_run  # noqa: E402
from mobilenet.model import MODELS  # noqa: E402
from tests.model_cases import build_meta, count_macs, count_params  # noqa: E402

Key = tuple[str, float, int]  # ARCH, WIDTH_MULT, IMAGE_DIM


def collect(run_dirs: list[Path]) -> dict[Key, list[float]]:
    """Final val top-1 of each finished run, by (ARCH, WIDTH_MULT, IMAGE_DIM)."""
    out: dict[Key, list[float]] = {}
    for d in run_dirs:
        if not (d / "config.json").exists() or not (d / "log.csv").exists():
            continue
        cfg, rows = read_run(d)
        if not rows or rows[-1]["epoch"] < cfg["NUM_EPOCHS"]:
            continue  # unfinished
        key = (cfg["ARCH"], float(cfg["WIDTH_MULT"]), int(cfg["IMAGE_DIM"]))
        out.setdefault(key, []).append(rows[-1]["val_top1"])
    return out


def cost(key: Key) -> tuple[float, int]:
    """(mult-adds at the run's input size, parameters), both at 10 classes."""
    arch, width, dim = key
    m = build_meta(MODELS[arch], num_classes=10, width=width).eval()  # eval: a 1x1 map at batch 1
    return count_macs(m, dim), count_params(m)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("tables_4_6_7.png"))
    args = ap.parse_args()
    results = collect(args.runs)
    rows = []
    print("| network | alpha | input | mult-adds | parameters | runs | final val top-1 |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(results, key=lambda k: -cost(k)[0]):
        macs, params = cost(key)
        accs = results[key]
        mean, std = statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append((key, macs, mean, std))
        acc = f"{100 * mean:.1f} ± {100 * std:.1f} %" if len(accs) > 1 else f"{100 * mean:.1f} %"
        print(f"| {key[0]} | {key[1]:g} | {key[2]} px | {macs / 1e6:.1f} M | {params:,} | {len(accs)} "
              f"| {acc} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = {
        "width multiplier alpha at 56 px (Table 6)": lambda k: k[0] == "mobilenet_v1" and k[2] == 56,
        "input size at alpha = 0.25 (Table 7's rho)": lambda k: k[0] == "mobilenet_v1" and k[1] == 0.25,
        "Conv MobileNet, alpha = 0.25, 56 px (Table 4)": lambda k: k[0] == "conv_mobilenet_v1",
    }
    for (label, pick), style in zip(series.items(), ("o-", "s--", "^")):
        pts = sorted((macs, acc, std, key) for key, macs, acc, std in rows if pick(key))
        if not pts:
            continue
        xs, ys, es = [p[0] / 1e6 for p in pts], [100 * p[1] for p in pts], [100 * p[2] for p in pts]
        ax.errorbar(xs, ys, yerr=es, fmt=style, capsize=3, label=label)
        for x, y, (_, _, _, key) in zip(xs, ys, pts):
            if "Table 6" in label:
                note = f"alpha {key[1]:g}"
            elif "Table 7" in label:
                note = "" if key[2] == 56 else f"{key[2]} px"  # 56 px is labelled by the alpha series
            else:
                note = "full convs"
            ax.annotate(note, (x, y), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("mult-adds per image at the run's input size (millions, log scale)")
    ax.set_ylabel("final val top-1 (%), mean ± std")
    ax.set_title("MobileNet v1 re-run: accuracy against mult-adds (3 epochs, 2 seeds, CPU)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
