"""Compare finished runs: tables (mean ± std over seeds), curves, and the results across architectures.

    python -m common.compare runs                          # every finished run: the results table
    python -m common.compare --record runs/resnet18/<run>  # keep a finished run's record in the repository
    python -m common.compare --readme README.md            # the README's table, from the records only
    python -m common.compare --readme README.md --check    # does the README's table match the records?
    python -m common.compare runs --pareto pareto.png --by-year years.png --plot val_top1 --out curves.png
    python -m common.compare runs/alexnet/* --group ACTIVATION --until-train-error 0.25 \
        --plot train_error --out alexnet/relu_vs_tanh.png

Each run folder's config.json names its constants. With --group, runs are grouped by the
constants named (seeds, or anything else left out, are pooled). Without it, runs are grouped by
every constant that differs between them except the seed and where the run happened (paths,
device, workers): runs of one configuration over several seeds read as mean ± std; runs of
other recipes or datasets stay apart, labelled by ARCH, RECIPE, dataset, IMAGE_DIM and epochs
(and the other constants that set them apart). A run's commands are in its config.json.
Only finished runs are counted: a run that stopped early (fewer epochs in log.csv than its
NUM_EPOCHS) and a damaged run folder are left out, each named in a warning, so no mean ever
pools an unfinished run with finished ones.

The README's table is written only from the committed run records, common/results/runs/<model>/<run>/
(config.json and log.csv, no checkpoints), so a clone regenerates it exactly; never from runs/.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from common import errors, registry
from common.config import ConfigError
from common.datasets import DataError
from common.files import atomic_write, atomic_write_text, rel

METRICS = {  # plot name -> (log column, transform, axis label)
    "train_error": ("train_top1", lambda v: 1 - v, "training error (augmented batches)"),
    "val_error": ("val_top1", lambda v: 1 - v, "validation error (centre crop)"),
    "val_top1": ("val_top1", lambda v: v, "validation top-1"),
    "train_loss": ("train_loss", lambda v: v, "training loss"),
}


class DamagedRun(ValueError):
    """A run folder whose config.json or log.csv cannot be read as the trainer writes them."""


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """(constants, log rows as numbers) of one run folder; DamagedRun if either file is not what
    the trainer writes (cut, random bytes, rows of the wrong length)."""
    try:
        made = json.loads((run_dir / "config.json").read_text())
        if not isinstance(made, dict) or not isinstance(made.get("constants", made), dict):
            raise ValueError("not a JSON object of constants")
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DamagedRun(f"config.json cannot be read ({type(e).__name__})") from None
    try:
        text = (run_dir / "log.csv").read_text()
        if text and not text.endswith("\n"):  # the trainer ends every line: this file was cut
            raise ValueError("its last line is cut short")
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if text and "epoch" not in (reader.fieldnames or []):
            raise ValueError("no 'epoch' column in its header")
        rows = []
        for r in reader:
            # A cut or garbled line has too few fields (None) or too many (the key None).
            if None in r or None in r.values():
                raise ValueError(f"line {reader.line_num} does not have the header's columns")
            rows.append({k: float(v) for k, v in r.items() if _is_number(v)})
    except (ValueError, csv.Error) as e:  # UnicodeDecodeError (random bytes) is a ValueError
        raise DamagedRun(f"log.csv cannot be read ({e})") from None
    return made.get("constants", made), rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def finished(cfg: dict[str, Any], rows: Sequence[dict[str, float]]) -> bool:
    """True unless the run stopped early: fewer epochs in its log than its NUM_EPOCHS, which is what
    an interrupted run shows. (A run whose config names no NUM_EPOCHS counts as finished.)"""
    planned = cfg.get("NUM_EPOCHS")
    return not (isinstance(planned, int) and len(rows) < planned)


def readable_runs(run_dirs: Sequence[Path]) -> list[tuple[Path, dict[str, Any], list[dict[str, float]]]]:
    """(folder, constants, log rows) of every finished run among ``run_dirs``; each folder left
    out (damaged, or stopped early) is named in a warning on stderr, so no table ever averages
    an unfinished run in with finished ones, and one damaged folder does not stop the rest."""
    kept, unfinished = [], []
    for run_dir in run_dirs:
        try:
            cfg, rows = read_run(run_dir)
        except DamagedRun as e:
            print(f"warning: skipping the damaged run folder {rel(run_dir)}: {e}", file=sys.stderr)
            continue
        if not finished(cfg, rows):
            unfinished.append(f"{rel(run_dir)} ({len(rows)} of {cfg.get('NUM_EPOCHS')} epochs)")
        elif rows:
            kept.append((run_dir, cfg, rows))
    if unfinished:
        print(f"warning: left out {len(unfinished)} unfinished run(s) (fewer epochs in log.csv than "
              f"NUM_EPOCHS; resume them to count them): {', '.join(unfinished)}", file=sys.stderr)
    return kept


def group_runs(run_dirs: Sequence[Path], keys: Sequence[str]) -> dict[str, list[list[dict[str, float]]]]:
    """Finished runs' logs by group label ("KEY=value, ..."), in the order first seen. Refuses
    (ConfigError) a key that is no constant of any run: it would pool every run into one group."""
    runs = readable_runs(run_dirs)
    unknown = [k for k in keys if runs and not any(k in cfg for _, cfg, _ in runs)]
    if unknown:
        raise ConfigError(f"--group {','.join(unknown)}: no run has such a constant, so every run would be "
                          f"pooled into one group. Name constants of config.json, e.g. ARCH,ACTIVATION.")
    groups: dict[str, list[list[dict[str, float]]]] = {}
    for run_dir, cfg, rows in runs:
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


# ----------------------------------------------------------------------------- across architectures

# Constants that say where or how a run happened, not what it trained: runs differing only in
# these (and SEED) are one configuration. DATA_PATH and DATASET_SIZE enter as the dataset label.
NOT_THE_CONFIGURATION = frozenset({
    "SEED", "SEEDS", "DATA_PATH", "DATA_DIR", "DATASET_SIZE", "DECODE_WORKERS", "DEVICE", "RUNS_DIR",
    "RESUME", "COMPILE", "CHANNELS_LAST", "PROGRESS_SECONDS", "SAVE_BEST"})
# What a label's base already says (model, distillation and teacher, recipe, dataset, size, epochs).
IN_THE_BASE = frozenset({"ARCH", "DISTILLATION", "TEACHER", "RECIPE", "DATASET", "DATASET_SIZE", "DATA_PATH",
                         "IMAGE_DIM", "NUM_EPOCHS"})
REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "common" / "results" / "runs"  # the committed run records the README's table is made from
NUM_CLASSES = 10  # Imagenette's and Imagewoof's: the class count of a run whose checkpoint is gone
README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclass
class Run:
    """One finished run folder, read."""

    path: Path
    cfg: dict[str, Any]
    rows: list[dict[str, float]]

    @property
    def best(self) -> float:
        return max(r["val_top1"] for r in self.rows)

    @property
    def final(self) -> float:
        return self.rows[-1]["val_top1"]

    @property
    def num_classes(self) -> int:
        """The checkpoint's class count (memory-mapped: its weights are not read)."""
        for name in ("last.pt", "best.pt"):
            try:
                ckpt = torch.load(self.path / name, map_location="cpu", weights_only=True, mmap=True)
                return int(ckpt.get("num_classes") or NUM_CLASSES)
            except Exception:  # noqa: BLE001 - missing or unreadable: the dataset's usual count
                continue
        return NUM_CLASSES

    @property
    def images_per_s(self) -> float | None:
        """The median epoch's training images/s (a resumed epoch has none; the median drops a
        first epoch slowed by compilation or a busy machine)."""
        rates = [r["images_per_s"] for r in self.rows if math.isfinite(r.get("images_per_s", math.nan))]
        return statistics.median(rates) if rates else None

    @property
    def train_time(self) -> float:
        """Seconds spent training (the epochs' own times: evaluation and restarts not counted)."""
        return sum(r.get("epoch_time_s", 0.0) for r in self.rows)

    def time_to(self, top1: float) -> float | None:
        """Training seconds until the end of the first epoch with val top-1 >= ``top1``."""
        spent = 0.0
        for r in self.rows:
            spent += r.get("epoch_time_s", 0.0)
            if r["val_top1"] >= top1:
                return spent
        return None


@dataclass
class Group:
    """Runs of one configuration (several seeds), and what it costs."""

    label: str
    runs: list[Run]
    params: int | None = None
    macs: float | None = None

    @property
    def cfg(self) -> dict[str, Any]:
        return self.runs[0].cfg

    @property
    def year(self) -> int | None:
        return registry.year_of(str(self.cfg.get("ARCH")))


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders (config.json and log.csv) given, or found under the folders given, sorted."""
    found: list[Path] = []
    for p in paths:
        if (p / "config.json").is_file() and (p / "log.csv").is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(c.parent for c in p.rglob("log.csv") if (c.parent / "config.json").is_file())
    return list(dict.fromkeys(found))


def dataset_of(cfg: dict[str, Any]) -> str:
    """The data a run saw: DATA_PATH's name if given, else the archive DATASET and DATASET_SIZE name."""
    if cfg.get("DATA_PATH"):
        return re.sub(r"\.(tgz|tar\.gz|tar)$", "", Path(str(cfg["DATA_PATH"])).name)
    return f"{cfg.get('DATASET', '?')}2-{cfg.get('DATASET_SIZE', '?')}"


def _value(v: Any) -> Any:
    """A constant as it names a configuration: a checkpoint path by its model and file (seeds
    start from their own run of one configuration: runs/vgg11/<time>/last.pt -> vgg11/last.pt)."""
    if isinstance(v, str) and v.endswith(".pt"):
        p = Path(v)
        return f"{p.parent.parent.name}/{p.name}"
    return v


def configuration(cfg: dict[str, Any]) -> dict[str, Any]:
    """The constants that make a run's configuration (what NOT_THE_CONFIGURATION leaves). A
    constant the run's config lacks (it is older than the constant) counts as the family's
    default, which is what it trained with: an old record and a new run of the same recipe are
    one configuration, and labels do not list the constants added since."""
    defaults = json.loads(json.dumps(family_defaults(cfg) or {}, default=str))  # tuples as JSON reads them
    cfg = {**{k: v for k, v in defaults.items() if k not in cfg}, **cfg}
    out = {k: _value(v) for k, v in cfg.items() if k not in NOT_THE_CONFIGURATION}
    out["dataset"] = dataset_of(cfg)
    return out


def _base_label(cfg: dict[str, Any]) -> str:
    recipe = f" ({cfg['RECIPE']})" if cfg.get("RECIPE") else ""
    # DeiT's distillation: its kind and the teacher's model, e.g. "deit_tiny_distilled_16 hard<-resnet18"
    # (the teacher's run folder runs/<model>/<run>/ names its model).
    teacher = (f" {cfg['DISTILLATION']}<-{Path(str(cfg.get('TEACHER'))).parent.parent.name}"
               if cfg.get("DISTILLATION", "none") != "none" else "")
    return (f"{cfg.get('ARCH', '?')}{teacher}{recipe}, {dataset_of(cfg)}, {cfg.get('IMAGE_DIM', '?')} px, "
            f"{cfg.get('NUM_EPOCHS', '?')} ep")


def family_defaults(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The constants a run of ``cfg``'s ARCH gets when nothing is overridden: its train.py's
    constants (with the run's RECIPE over them) and the loop's switches; None for an ARCH no
    folder knows."""
    import importlib

    from common import config as config_lib
    from common import recipe

    folder = registry.folder_of(str(cfg.get("ARCH")))
    if folder is None:
        return None
    train = importlib.import_module(f"{folder}.train")
    own = config_lib.constants(train)
    return {**recipe.SWITCHES, **own, **getattr(train, "RECIPES", {}).get(cfg.get("RECIPE") or "", {})}


def label(cfg: dict[str, Any], peers: Sequence[dict[str, Any]] = ()) -> str:
    """The base (ARCH, RECIPE, dataset, IMAGE_DIM, epochs), then every constant that differs from
    the family's defaults (family_defaults) or between ``peers`` (the configurations that share
    the base), except those of the base and where the run happened (NOT_THE_CONFIGURATION).
    A constant the run's config lacks (older than it) counts as its default."""
    defaults = family_defaults(cfg) or {}
    mine = configuration(cfg)
    differ = {k for k, v in mine.items() if k in defaults and _value(defaults[k]) != v
              and not (isinstance(v, (list, tuple)) and tuple(v) == tuple(defaults[k]))}
    differ |= {k for k in mine if any(o.get(k) != mine[k] for o in peers)}
    differ -= IN_THE_BASE | {"dataset"}
    return _base_label(cfg) + "".join(f", {k}={mine[k] if mine[k] != '' else repr('')}" for k in sorted(differ))


def group_by_configuration(runs: Sequence[Run]) -> list[Group]:
    """Runs with the same configuration pooled; labelled by ARCH, RECIPE, dataset, IMAGE_DIM and
    epochs, plus the constants that tell apart groups that share those."""
    keyed: dict[str, list[Run]] = {}
    for run in runs:
        keyed.setdefault(json.dumps(configuration(run.cfg), sort_keys=True, default=str), []).append(run)
    by_base: dict[str, list[dict[str, Any]]] = {}
    for members in keyed.values():
        by_base.setdefault(_base_label(members[0].cfg), []).append(configuration(members[0].cfg))
    groups = []
    for members in keyed.values():
        groups.append(Group(label(members[0].cfg, by_base[_base_label(members[0].cfg)]), members))
    return groups


def cost(cfg: dict[str, Any], num_classes: int = NUM_CLASSES) -> tuple[int | None, float | None]:
    """(parameters, multiply-adds of one image at the evaluation size), counted on the meta
    device (no memory, no compute) with today's model code; (None, None) for an ARCH no folder
    knows. FlopCounterMode counts 2 FLOPs per multiply-add of convolutions and matmuls.
    (A stand-in until common/report.py offers the same counts.)"""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        model = registry.build(cfg, num_classes, "meta").eval()
    except Exception:  # noqa: BLE001 - an unknown or changed model: its cost is not known
        return None, None
    params = sum(p.numel() for p in model.parameters())
    side = cfg.get("EVAL_IMAGE_DIM") or cfg.get("IMAGE_DIM") or 224
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.empty(1, 3, side, side, device="meta"))
    except Exception:  # noqa: BLE001
        return params, None
    return params, counter.get_total_flops() / 2


def read_runs(paths: Sequence[Path]) -> list[Run]:
    """The finished runs under ``paths`` (damaged and unfinished ones left out with a warning)."""
    runs = []
    for path, cfg, rows in readable_runs(find_runs(paths)):
        rows = [r for r in rows if "val_top1" in r]
        if rows:
            runs.append(Run(path, cfg, rows))
    return runs


def _fmt(values: Sequence[float | None], digits: int = 1, scale: float = 1.0, unit: str = "") -> str:
    """mean ± std (over the runs that have a value) scaled, or – if none has one."""
    got = [v * scale for v in values if v is not None]
    if not got:
        return "–"
    text = f"{statistics.fmean(got):,.{digits}f}"
    if len(got) > 1:
        text += f" ± {statistics.stdev(got):,.{digits}f}"
    return text + unit


def _si(x: float | None) -> str:
    """3 significant digits with k, M or G."""
    if x is None:
        return "–"
    for scale, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{prefix}"
    return f"{x:.3g}"


def results_table(groups: Sequence[Group], target: float) -> str:
    """The markdown table across architectures, oldest paper first."""
    head = ["model", "year", "parameters", "MACs", "train images/s", "epochs", "train time",
            f"time to {target:.0%} val top-1", "best val top-1", "final val top-1", "runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in sorted(groups, key=lambda g: (g.year or 9999, g.label)):
        reached = [r.time_to(target) for r in g.runs]
        got = [t for t in reached if t is not None]
        to_target = "not reached" if not got else _fmt(got, scale=1 / 60, unit=" min")
        if 0 < len(got) < len(g.runs):
            to_target += f" ({len(got)} of {len(g.runs)} runs)"
        epochs = {len(r.rows) for r in g.runs}
        planned = g.cfg.get("NUM_EPOCHS")
        ep = "/".join(str(e) for e in sorted(epochs)) + ("" if epochs == {planned} else f" of {planned}")
        cells = [g.label, str(g.year or "–"), _si(g.params), _si(g.macs),
                 _fmt([r.images_per_s for r in g.runs], digits=0), ep,
                 _fmt([r.train_time for r in g.runs], scale=1 / 60, unit=" min"), to_target,
                 _fmt([r.best for r in g.runs], scale=100, unit=" %"),
                 _fmt([r.final for r in g.runs], scale=100, unit=" %"), str(len(g.runs))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def record(run_dirs: Sequence[Path]) -> list[Path]:
    """Copy each finished run's config.json and log.csv to RECORDS/<model>/<run>/ (what the
    README's table is made from; checkpoints stay behind). Refuses, before copying any, a folder
    that is not a finished run."""
    if not run_dirs:
        _fail("--record needs run folders, e.g. --record runs/resnet18/20261130-034230")
    for d in run_dirs:
        if not ((d / "config.json").is_file() and (d / "log.csv").is_file()):
            _fail(f"{d} is not a run folder (no config.json and log.csv): give runs/<model>/<run>")
        cfg, rows = read_run(d)
        if len(rows) < int(cfg.get("NUM_EPOCHS", 0)) or not rows:
            _fail(f"{d} is unfinished ({len(rows)} of {cfg.get('NUM_EPOCHS')} epochs): record a run "
                  f"that has finished (or resume it first)")
        if cfg.get("HOLDOUT_FRACTION"):  # its "val" columns are training images: not a val result
            _fail(f"{d} was evaluated on held-out training images (HOLDOUT_FRACTION={cfg['HOLDOUT_FRACTION']}), "
                  f"not on val: run the recipe again with HOLDOUT_FRACTION=0 and record that run")
    out = []
    for d in run_dirs:
        texts = {name: without_machine_paths((d / name).read_text()) for name in ("config.json", "log.csv")}
        dest = base = RECORDS / d.resolve().parent.name / d.resolve().name
        k = 1  # two runs started in the same second (in two RUNS_DIRs) must not overwrite each other
        while (dest / "config.json").is_file() and (dest / "config.json").read_text() != texts["config.json"]:
            k += 1
            dest = base.with_name(f"{base.name}-{k}")
        dest.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            atomic_write_text(dest / name, text)
        print(f"recorded {rel(d)} -> {rel(dest)}")
        out.append(dest)
    return out


def without_machine_paths(text: str) -> str:
    """``text`` with every absolute path made shareable: relative to the repository when inside it,
    else ``.../`` and its last part (the dataset's folder name, which labels use, survives; the
    layout of the machine that ran it does not belong in a committed record), or for a checkpoint
    its last three (``.../resnet18/<run>/best.pt``: a distilled run's label names its teacher)."""
    repo = str(registry.REPO)

    def short(m: re.Match[str]) -> str:
        path = m.group(0)
        if path == repo or path.startswith(repo + "/"):
            return path[len(repo) + 1:] or "."
        # A checkpoint (a TEACHER, a RESUME) keeps <model>/<run>/<file>: its model names it in labels.
        keep = 3 if path.endswith(".pt") else 1
        return ".../" + "/".join(path.rstrip("/").split("/")[-keep:])
    return re.sub(r"(?<![\w.~:/-])/(?:[^\s/\"',;:]+/)*[^\s/\"',;:]+", short, text)


def readme_table(readme: Path, paths: Sequence[Path], target: float, check: bool = False) -> bool:
    """Write (or with ``check``, compare) the README's table from RECORDS alone; True if it
    changed (or, checking, differs). Run folders given with it are refused: the published table
    never comes from whatever runs/ holds."""
    if paths:
        _fail(f"--readme writes the table from the committed records ({rel(RECORDS)}) only, not from "
              f"{' '.join(map(str, paths))}: drop the folders, or record them first with --record")
    try:
        write_readme(readme, "", check_only=True)  # a README that cannot take the table: before any work
    except (OSError, ValueError) as e:
        _fail(str(e))
    found, text = overview([RECORDS], target) if RECORDS.is_dir() else ([], "")
    if not found:
        _fail(f"{rel(RECORDS)} holds no run records: add some with --record runs/<model>/<run>")
    text += (f"\n\n{sum(len(g.runs) for g in found)} runs in {len(found)} configurations, from "
             "common/results/runs/; `python -m common.compare --readme README.md`")
    if check:
        old = readme.read_text()
        now = old[old.find(README_BEGIN) + len(README_BEGIN):old.find(README_END)].strip()
        if now != text.strip():
            print(f"{rel(readme)}: the table differs from the records; rewrite it with "
                  f"python -m common.compare --readme {rel(readme)}", file=sys.stderr)
            sys.exit(1)
        print(f"{rel(readme)}: the table matches the records")
        return False
    try:
        changed = write_readme(readme, text)
    except (OSError, ValueError) as e:
        _fail(str(e))
    print(f"{rel(readme)}: {'table written' if changed else 'unchanged'}")
    return changed


def _fail(message: str) -> NoReturn:
    """A refused command: one line and exit 1, through common.errors' boundary around main."""
    raise DataError(message)


def write_readme(readme: Path, text: str, check_only: bool = False) -> bool:
    """Put ``text`` between the README's results markers (the same text twice changes nothing);
    True if the file changed. Refuses (ValueError) a README without both markers, in order;
    ``check_only`` does only that."""
    old = readme.read_text()
    begin, end = old.find(README_BEGIN), old.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} markers: add both, on lines "
                         f"of their own, where the results table goes")
    if check_only:
        return False
    new = old[:begin + len(README_BEGIN)] + "\n" + text.strip() + "\n" + old[end:]
    if new != old:
        atomic_write_text(readme, new)
    return new != old


def _family_colours(groups: Sequence[Group]) -> dict[str, str]:
    families = sorted({registry.folder_of(str(g.cfg.get("ARCH"))) or "?" for g in groups},
                      key=lambda f: (registry.PAPERS.get(f, ("", 9999))[1], f))
    return {f: f"C{i % 10}" for i, f in enumerate(families)}


def _scatter(groups: Sequence[Group], x_of: Callable[[Group], float | None], out: Path, xlabel: str,
             title: str, log_x: bool = False, front: bool = False) -> None:
    """Best val top-1 (mean, ± std bars) of each group against ``x_of``, one colour per paper,
    one marker per dataset/size/epochs setting; with ``front``, each setting's Pareto front
    (no other point of the setting is both cheaper and more accurate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    colours = _family_colours(groups)
    settings = sorted({(dataset_of(g.cfg), g.cfg.get("IMAGE_DIM"), g.cfg.get("NUM_EPOCHS")) for g in groups},
                      key=str)
    markers = dict(zip(settings, "osD^v<>ph*"))
    fig, ax = plt.subplots(figsize=(8, 5))
    for setting in settings:
        points = []
        for g in groups:
            if (dataset_of(g.cfg), g.cfg.get("IMAGE_DIM"), g.cfg.get("NUM_EPOCHS")) != setting:
                continue
            x = x_of(g)
            if x is None:
                continue
            best = [r.best for r in g.runs]
            y = statistics.fmean(best)
            family = registry.folder_of(str(g.cfg.get("ARCH"))) or "?"
            ax.errorbar(x, y, yerr=statistics.stdev(best) if len(best) > 1 else None, fmt=markers[setting],
                        color=colours[family], capsize=3)
            ax.annotate(str(g.cfg.get("ARCH")), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
            points.append((x, y))
        if front and len(points) > 1:
            points.sort(key=lambda p: (p[0], -p[1]))
            frontier, best_y = [], -math.inf
            for x, y in points:
                if y > best_y:
                    frontier.append((x, y))
                    best_y = y
            ax.step(*zip(*frontier), where="post", color="grey", lw=1, alpha=0.7)
    # The legend: a colour per paper, a marker per setting (a front joins one setting's points).
    handles = [Line2D([], [], color=c, marker="o", ls="", label=f) for f, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=markers[s], ls="", label=f"{s[0]}, {s[1]} px, {s[2]} ep")
                for s in settings]
    ax.legend(handles=handles, fontsize=8)
    if log_x:
        ax.set_xscale("log")
    else:  # years
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("best validation top-1 (centre crop)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda f: fig.savefig(f, dpi=100, format="png"))
    plt.close(fig)


def plot_pareto(groups: Sequence[Group], out: Path) -> None:
    _scatter(groups, lambda g: g.macs, out, "multiply-adds per image at the evaluation size (log)",
             "accuracy against compute", log_x=True, front=True)


def plot_by_year(groups: Sequence[Group], out: Path) -> None:
    _scatter(groups, lambda g: g.year, out, "year of the paper", "accuracy against year")


_COSTS: dict[str, tuple[int | None, float | None]] = {}  # configuration -> cost, once a process


def overview(paths: Sequence[Path], target: float) -> tuple[list[Group], str]:
    """The groups of every finished run under ``paths``, their cost counted, and the table."""
    groups = group_by_configuration(read_runs(paths))
    for g in groups:
        key = json.dumps(configuration(g.cfg), sort_keys=True, default=str)
        if key not in _COSTS:
            _COSTS[key] = cost(g.cfg, g.runs[0].num_classes)
        g.params, g.macs = _COSTS[key]
    return groups, results_table(groups, target)


@errors.entry_point
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path,
                   help="run folders (each with config.json and log.csv), or folders holding them (runs/)")
    p.add_argument("--record", action="store_true",
                   help=f"copy each finished run's config.json and log.csv to {rel(RECORDS)}/<model>/<run>/")
    p.add_argument("--group", default="",
                   help="comma-separated constants that name a group, e.g. ARCH,ACTIVATION (default: every "
                        "constant that differs, except the seed)")
    p.add_argument("--until-train-error", type=float, default=None,
                   help="with --group: also the first epoch whose training error is at most this (e.g. 0.25)")
    p.add_argument("--target", type=float, default=0.6, help="the table's 'time to' this val top-1 (default 0.6)")
    p.add_argument("--readme", type=Path, default=None,
                   help=f"write the table of the committed records ({rel(RECORDS)}) between {README_BEGIN} "
                        f"and {README_END} in this file (no run folders with it)")
    p.add_argument("--check", action="store_true",
                   help="with --readme: only say whether the file's table matches the records (exit 1 if not)")
    p.add_argument("--pareto", type=Path, default=None, help="plot best val top-1 against MACs here")
    p.add_argument("--by-year", type=Path, default=None, help="plot best val top-1 against the paper's year here")
    p.add_argument("--plot", choices=sorted(METRICS), default=None, help="draw this metric against epochs")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="where the --plot goes")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    if args.record:
        record(args.runs)
        return
    if args.readme:
        readme_table(args.readme, args.runs, args.target, check=args.check)
        if not (args.pareto or args.by_year or args.plot):
            return
        args.runs = [RECORDS]  # the figures beside the table: of the same records
    elif args.check:
        p.error("--check compares a README's table with the records: give --readme FILE")
    if not args.runs:
        p.error("give run folders (or folders holding them, e.g. runs), or --readme FILE, or --record RUN...")
    runs = find_runs(args.runs)
    if not runs:
        p.error("none of these folders holds a finished run (config.json and log.csv)")
    # The figures' folders exist before any table is printed (a missing one is made; one that
    # cannot be made fails here, with nothing done yet).
    for out in (args.out if args.plot else None, args.pareto, args.by_year):
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
    if args.group:  # the claims' re-runs: groups named by the caller
        groups = group_runs(runs, [k for k in args.group.split(",") if k])
        print(table(groups, args.until_train_error))
    else:  # across architectures
        found, text = overview(runs, args.target)
        if not args.readme:
            print(text)
        groups = {g.label: [r.rows for r in g.runs] for g in found}
        if args.pareto:
            plot_pareto(found, args.pareto)
            print(f"plot: {args.pareto}")
        if args.by_year:
            plot_by_year(found, args.by_year)
            print(f"plot: {args.by_year}")
    if args.plot:
        plot(groups, args.plot, args.out, args.title)
        print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
