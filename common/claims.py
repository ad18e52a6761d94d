"""Re-run a paper's claim with one command: train the runs it compares, draw its figure, print the verdict.

    python alexnet/claims.py                          # Fig. 1: ReLU against tanh
    python vgg/claims.py --SEEDS=1 --NUM_EPOCHS=5     # the scale is constants, --NAME=value
    python resnet/claims.py --DATA_PATH=~/data/imagenette2-224 --RUNS_DIR=/big/disk
    python mobilenet/claims.py --help                 # every constant, its value, its comment

Each ``<family>/claims.py`` states its scale as UPPER_CASE constants (IMAGE_DIM, NUM_EPOCHS,
SEEDS, ...) and says which runs its claim compares and how to judge them. This module parses
the constants as a train.py's are parsed (common.config), trains every run through the family's
own ``train.main`` into ``RUNS_DIR/claims/<family>/<group>/<model>/<timestamp>/``, and prints
one verdict line per claim: holds or does not hold, with the numbers and their seed spread.

A finished run with the same constants (and seed, and data) is reused, not trained again: an
interrupted re-run continues where it stopped, and changing one constant retrains only what it
changes. Delete a run's folder to train it again.
"""
from __future__ import annotations

import importlib
import json
import shlex
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from common import config as config_lib
from common import recipe
from common.compare import METRICS, RECORDS, Run, read_run
from common.files import atomic_write, rel, user_path

REPO = Path(__file__).resolve().parents[1]

# What every claims.py takes besides its own scale (a claims.py may set them itself).
SWITCHES: dict[str, Any] = {
    "SEED": 0,  # the first seed; the runs use SEED, SEED + 1, ... (SEEDS of them)
    "DATA_PATH": "",  # an archive or extracted folder you already have ('' = download)
    "DATA_DIR": "",  # where downloads and the decoded cache go ('' = data/ in this repository)
    "RUNS_DIR": "",  # the runs go to RUNS_DIR/claims/<family>/ ('' = runs/ in this repository)
    "TRAIN_ARGS": "",  # more --NAME=value for every run, e.g. "--DEVICE=cpu --DECODE_WORKERS=1"
    "FIGURES_DIR": "",  # where the figures go ('' = the family's folder, over the published ones)
}
# Where a run happened and what it kept on disk, not what it trained: not compared when a
# finished run is reused.
NOT_COMPARED = frozenset({"DATA_DIR", "RUNS_DIR", "SAVE_BEST"})  # (TRAIN_ARGS are not compared either)

Results = dict[str, list[Run]]  # group label -> its runs (one per seed)


class RunFailed(SystemExit):
    """A run that ended with an error (train.main has printed it, in one line); its exit code."""


def configure(module: ModuleType, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The claims.py's constants (and SWITCHES) with the command line's ``--NAME=value`` over them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    own = config_lib.constants(module)
    defaults = {**own, **{k: v for k, v in SWITCHES.items() if k not in own}}
    notes = {**config_lib.comments(sys.modules[__name__]), **config_lib.comments(module)}
    prog = rel(module.__file__) if module.__file__ else "claims.py"
    try:
        return config_lib.parse_args(defaults, argv, prog=prog, doc=module.__doc__ or "", notes=notes)
    except config_lib.ConfigError as e:
        print(f"error (bad constant): {e}", file=sys.stderr)
        raise SystemExit(2) from None


class Session:
    """One claims.py's runs: trains (or reuses) each group's seeds through the family's train.main."""

    def __init__(self, family: str, cfg: dict[str, Any]) -> None:
        self.family, self.cfg = family, cfg
        self.train = importlib.import_module(f"{family}.train")
        runs = user_path(cfg["RUNS_DIR"]) if cfg["RUNS_DIR"] else REPO / "runs"
        self.root = runs / "claims" / family

    def figure(self, name: str) -> Path:
        """Where the figure ``name`` goes: FIGURES_DIR, or the family's folder."""
        folder = user_path(self.cfg["FIGURES_DIR"]) if self.cfg["FIGURES_DIR"] else REPO / self.family
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def check(self, planned: Iterable[dict[str, Any]]) -> None:
        """Refuse, before any training, a planned run whose constants its train.py would refuse
        (an unknown name, an impossible value): one line and exit 2, not hours into the claim."""
        from common import recipe

        own = config_lib.constants(self.train)
        defaults = {**own, **{k: v for k, v in recipe.SWITCHES.items() if k not in own}}
        rules = {**recipe.RULES, **getattr(self.train, "RULES", {})}
        for constants in planned:
            argv = [f"--{k}={_arg(v)}" for k, v in constants.items()] + shlex.split(self.cfg["TRAIN_ARGS"])
            try:
                config_lib.check(config_lib.parse_args(defaults, argv, prog=f"{self.family}/train.py"), rules)
            except config_lib.ConfigError as e:
                print(f"error (bad constant): {self.family}/train.py would refuse a run of this claim: {e}",
                      file=sys.stderr)
                raise SystemExit(2) from None

    def runs(self, group: str, constants: dict[str, Any],
             per_seed: Callable[[int], dict[str, Any]] | None = None) -> list[Run]:
        """SEEDS runs of the family's train.py with ``constants`` (SEED, SEED + 1, ...), in
        ``root/<group>/``; a finished run with the same constants is reused. ``per_seed(i)``
        adds the constants of the i-th seed's run (VGG: start from that seed's net A)."""
        folder = self.root / group
        out = []
        for i in range(self.cfg["SEEDS"]):
            wanted = {**constants, **(per_seed(i) if per_seed else {}), "SEED": self.cfg["SEED"] + i,
                      "DATA_PATH": self.cfg["DATA_PATH"]}
            run = _finished(folder, wanted) or _finished(RECORDS / str(wanted.get("ARCH")), wanted)
            if run is not None:
                kind = "the committed record " if RECORDS in run.path.parents else ""
                print(f"{self.family} claims: {group}, seed {wanted['SEED']}: reusing {kind}{rel(run.path)}",
                      flush=True)
            else:
                print(f"{self.family} claims: {group}, seed {wanted['SEED']}: training", flush=True)
                run = self._train(folder, wanted)
            out.append(run)
        return out

    def _train(self, folder: Path, constants: dict[str, Any]) -> Run:
        argv = [f"--{k}={_arg(v)}" for k, v in constants.items()]
        argv += [f"--RUNS_DIR={folder}"] + ([f"--DATA_DIR={self.cfg['DATA_DIR']}"] if self.cfg["DATA_DIR"] else [])
        argv += shlex.split(self.cfg["TRAIN_ARGS"])
        try:
            summary = self.train.main(argv)
        except SystemExit as e:
            if e.code in (0, None):
                raise
            raise RunFailed(e.code) from None
        if not summary or summary.get("interrupted"):
            print(f"{self.family} claims: interrupted; the same command continues (finished runs are reused)",
                  file=sys.stderr)
            raise SystemExit(130)
        cfg, rows = read_run(Path(summary["run_dir"]))
        return Run(Path(summary["run_dir"]), cfg, rows)


def _arg(v: Any) -> str:
    return repr(v) if isinstance(v, tuple) else str(v)


_ABSENT = object()
SWITCH_DEFAULTS = {k: json.loads(json.dumps(v)) for k, v in recipe.SWITCHES.items()}


def _json(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _finished(folder: Path, wanted: dict[str, Any]) -> Run | None:
    """The newest finished run under ``folder`` whose constants include ``wanted``. A switch a
    run's config lacks (it is older than the switch) counts as the switch's default, which is
    what that run trained with. ``folder`` may be RECORDS/<ARCH>: a run committed to the
    repository (config.json and log.csv; common.compare --record) is as good as a local one."""
    for config in sorted(folder.rglob("config.json"), reverse=True) if folder.is_dir() else ():
        try:
            cfg, rows = read_run(config.parent)
        except (OSError, ValueError):  # a damaged folder: not reused, trained again
            continue
        same = all(cfg.get(k, SWITCH_DEFAULTS.get(k, _ABSENT)) == _json(v) for k, v in wanted.items()
                   if k not in NOT_COMPARED)
        if same and rows and len(rows) >= int(cfg.get("NUM_EPOCHS", 0)) and "val_top1" in rows[-1]:
            return Run(config.parent, cfg, rows)
    return None


# ----------------------------------------------------------------------------- numbers and verdicts

def final(runs: Sequence[Run], column: str = "val_top1") -> list[float]:
    """Each run's last-epoch value of ``column``."""
    return [r.rows[-1][column] for r in runs]


def train_error(runs: Sequence[Run]) -> list[float]:
    """Each run's last-epoch training error (augmented batches)."""
    return [1 - v for v in final(runs, "train_top1")]


def first_epoch(runs: Sequence[Run], below_train_error: float) -> list[float | None]:
    """Each run's first epoch with training error at most ``below_train_error`` (None: not reached)."""
    return [next((r["epoch"] for r in run.rows if 1 - r["train_top1"] <= below_train_error), None) for run in runs]


def spread(values: Sequence[float], scale: float = 100.0, unit: str = " %", digits: int = 1) -> str:
    """mean ± std over the seeds (one run: says so)."""
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}{unit} (1 run)"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}{unit}"


def above(a: Sequence[float], b: Sequence[float]) -> bool:
    """Is ``a``'s mean above ``b``'s by more than the larger seed spread (std)? One run each:
    by any margin (no spread to compare with)."""
    std = max((statistics.stdev(v) for v in (a, b) if len(v) > 1), default=0.0)
    return statistics.fmean(a) - statistics.fmean(b) > std


def verdict(claim: str, holds: bool | None, numbers: str) -> str:
    """One line: the claim, holds / does not hold (None: not decided at this scale), the numbers."""
    word = {True: "holds", False: "does not hold", None: "not decided at this scale"}[holds]
    line = f"verdict: {claim}: {word} ({numbers})"
    print(line, flush=True)
    return line


# ----------------------------------------------------------------------------- figures

def plot(results: Results, metrics: Sequence[str], out: Path, title: str = "") -> None:
    """One panel per metric against epochs: a thin line per run, the seeds' mean thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        column, transform, axis = METRICS[metric]
        for i, (label, runs) in enumerate(results.items()):
            colour = f"C{i % 10}"
            for run in runs:
                ax.plot([r["epoch"] for r in run.rows], [transform(r[column]) for r in run.rows], color=colour,
                        alpha=0.3, lw=1)
            n = min(len(run.rows) for run in runs)
            ax.plot([runs[0].rows[e]["epoch"] for e in range(n)],
                    [statistics.fmean(transform(run.rows[e][column]) for run in runs) for e in range(n)], "o-",
                    color=colour, lw=2, label=f"{label} ({len(runs)} run{'s' if len(runs) > 1 else ''})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(axis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, out)


def save(fig: Any, out: Path) -> None:
    """Write a matplotlib figure as PNG (atomically) and say where."""
    import matplotlib.pyplot as plt

    atomic_write(out, lambda f: fig.savefig(f, dpi=110, format="png"))
    plt.close(fig)
    print(f"figure: {rel(out)}", flush=True)
