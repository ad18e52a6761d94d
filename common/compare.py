"""Compare finished runs: a table (mean ± std over the runs of each group) and a curve plot.

    python -m common.compare runs/alexnet/* --group ACTIVATION --until-train-error 0.25 \
        --plot train_error --out alexnet/relu_vs_tanh.png

Each run folder's config.json names its constants; runs are grouped by the constants given to
--group (seeds, or anything else left out, are pooled), so a claim measured over several
seeds reads as mean ± std, with the runs' commands in their config.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.files import atomic_write

METRICS = {  # plot name -> (log column, transform, axis label)
    "train_error": ("train_top1", lambda v: 1 - v, "training error (augmented batches)"),
    "val_error": ("val_top1", lambda v: 1 - v, "validation error (centre crop)"),
    "val_top1": ("val_top1", lambda v: v, "validation top-1"),
    "train_loss": ("train_loss", lambda v: v, "training loss"),
}


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """(constants, log rows as numbers) of one run folder."""
    made = json.loads((run_dir / "config.json").read_text())
    with open(run_dir / "log.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if _is_number(v)} for r in csv.DictReader(f)]
    return made.get("constants", made), rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def group_runs(run_dirs: Sequence[Path], keys: Sequence[str]) -> dict[str, list[list[dict[str, float]]]]:
    """Runs' logs by group label ("KEY=value, ..."), in the order first seen."""
    groups: dict[str, list[list[dict[str, float]]]] = {}
    for run_dir in run_dirs:
        cfg, rows = read_run(run_dir)
        if rows:
            label = ", ".join(f"{k}={cfg.get(k)}" for k in keys) or run_dir.name
            groups.setdefault(label, []).append(rows)
    return groups


def _mean_std(values: list[float], scale: float = 100.0, unit: str = " %") -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.1f}{unit}"
    return f"{mean:.1f} ± {statistics.stdev(values) * scale:.1f}{unit}"


def table(groups: dict[str, list[list[dict[str, float]]]], until_train_error: float | None = None) -> str:
    """A markdown table: per group, the runs, and final train error / val top-1 / top-5."""
    head = ["group", "runs", "epochs", "final train error", "final val top-1", "final val top-5"]
    if until_train_error is not None:
        head.append(f"first epoch with train error ≤ {until_train_error:.0%}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, runs in groups.items():
        last = [r[-1] for r in runs]
        cells = [label, str(len(runs)), str(int(last[0]["epoch"])),
                 _mean_std([1 - x["train_top1"] for x in last]), _mean_std([x["val_top1"] for x in last]),
                 _mean_std([x["val_top5"] for x in last])]
        if until_train_error is not None:
            reached = [next((x["epoch"] for x in r if 1 - x["train_top1"] <= until_train_error), None)
                       for r in runs]
            got = [e for e in reached if e is not None]
            cells.append((_mean_std(got, 1.0, "") if got else "not reached")
                         + (f" ({len(got)} of {len(runs)} runs)" if 0 < len(got) < len(runs) else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(groups: dict[str, list[list[dict[str, float]]]], metric: str, out: Path, title: str = "") -> None:
    """One curve per run (thin) and the group's mean (thick), against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column, transform, axis = METRICS[metric]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, runs) in enumerate(groups.items()):
        colour = f"C{i % 10}"
        for rows in runs:
            ax.plot([r["epoch"] for r in rows], [transform(r[column]) for r in rows], color=colour, alpha=0.3, lw=1)
        n = min(len(rows) for rows in runs)
        mean = [statistics.fmean(transform(rows[e][column]) for rows in runs) for e in range(n)]
        ax.plot([runs[0][e]["epoch"] for e in range(n)], mean, "o-", color=colour, lw=2,
                label=f"{label} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(axis)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with config.json and log.csv)")
    p.add_argument("--group", default="", help="comma-separated constants that name a group, e.g. ARCH,ACTIVATION")
    p.add_argument("--until-train-error", type=float, default=None,
                   help="also report the first epoch whose training error is at most this (e.g. 0.25)")
    p.add_argument("--plot", choices=sorted(METRICS), default=None, help="draw this metric against epochs")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="where the plot goes")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    runs = [r for r in args.runs if (r / "log.csv").is_file() and (r / "config.json").is_file()]
    if not runs:
        p.error("none of these folders holds a finished run (config.json and log.csv)")
    groups = group_runs(runs, [k for k in args.group.split(",") if k])
    print(table(groups, args.until_train_error))
    if args.plot:
        plot(groups, args.plot, args.out, args.title)
        print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
