"""Speed of one model on this device: training and inference images/s, peak memory, and what the
data costs the training.

    python -m common.bench resnet18 --data data/imagenette2-112             # its train.py's recipe
    python -m common.bench resnet50 --data DIR --size 128 --compile off,on  # options, see --help
    python -m common.bench resnet18 --data DIR --recipe tiny --set WIDTH=8  # any train.py constant

The model, optimiser, schedule, loss, autocast, channels_last and compile are those of the
model's own train.py (its constants, ``--recipe``, ``--set NAME=value``), put together by the
training loop's own setup (common/trainer.py ``setup``) and run by its own step (``train_step``).
The same step is then fed three ways, each warmed up for ``--warmup`` steps, then timed for
``--seconds`` in all, in ``--rounds`` turns that alternate between the feeds (so a drifting load
on a shared machine slows each alike):

  bare         one batch already on the device, again and again: the step alone
  cache        the shared pipeline: the decoded uint8 cache on the device, BatchLoader's crops,
               then the train.py's batch transforms (mixup, RandAugment, PCA lighting ...)
  imagefolder  torchvision's ImageFolder + PIL transforms + DataLoader with ``--workers`` (the
               same crop scale and flip), then the same batch transforms on the device

and each pipeline alone (no step, batch transforms included) gives the data's own images/s.
Inference is the evaluation forward (eval mode, no_grad, autocast) on the bare batch. Peak
memory is the CUDA allocator's (none on a CPU). On a GPU, one cache-fed step also runs under
common/syncs.py's counter: the host-device syncs per training step.

The targets are a GPU's (TARGET_DEVICE): the shared pipeline costs < 5 % of the bare step, and
alone delivers >= 20x the images/s of the ImageFolder pipeline. Rows measured on any other
device are shown, never judged against them. A failure costs only its own rows: a feed that
fails leaves the other feeds' rows, and compile on failing leaves compile off's.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import io
import itertools
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common import config as config_lib
from common import errors, recipe, registry, report, script, system, trainer
from common.bench_data import torchvision_loader
from common.cache import ImageSet
from common.data import load_data

PIPELINE_COST_TARGET = 0.05  # the shared pipeline's cost, a fraction of the bare step's time
IMAGEFOLDER_RATIO_TARGET = 20.0  # the shared pipeline's images/s over ImageFolder's, at least
TARGET_DEVICE = "cuda"  # the device both targets are about: a CPU's figures are not judged
FEEDS = ("bare", "cache", "imagefolder")
CSV_FIELDS = ("model", "device", "size", "batch", "compile", "mode", "feed", "images_per_s", "peak_mib",
              "steps", "warmup_s")
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------- the model's recipe

def configure(name: str, overrides: list[str]) -> tuple[dict[str, Any], Callable[..., torch.nn.Module], Any]:
    """(constants, build_model(cfg, classes), the train.py module) for builder ``name``.

    Reads the train.py of the folder whose MODELS holds ``name``, with ``--ARCH=name`` and
    ``overrides`` (``--NAME=value``) on its command line, checked by its own rules.
    """
    folder, builder = report.find(name)
    module = importlib.import_module(f"{folder}.train")
    own = config_lib.constants(module)
    argv = ([f"--ARCH={name}"] if "ARCH" in own else []) + overrides
    try:
        cfg, _ = script.configure(module, argv, {**recipe.RULES, **getattr(module, "RULES", {})},
                                  f"{folder}/train.py")
    except config_lib.ConfigError as e:
        raise SystemExit(f"error (bad constant): {e}") from None
    if "ARCH" in own:
        build = module.build_model
    else:  # a train.py with one network: its builder as MODELS has it
        build = lambda cfg, n: builder(num_classes=n)  # noqa: E731
    return cfg, build, module


def small_set(data: ImageSet, n: int) -> ImageSet:
    """The first n images: the validation set the loop's setup wants (never evaluated here)."""
    return ImageSet(data.images[:n], data.labels[:n], data.aspect[:n], list(data.classes))


def setup_run(name: str, cfg: dict[str, Any], build: Callable[..., torch.nn.Module], module: Any,
              train_set: ImageSet, compile_: bool, runs_dir: Path) -> trainer.Run:
    """The training loop's own setup of this model (placement, compile, loaders, optimiser)."""
    cfg = {**cfg, "COMPILE": compile_, "RUNS_DIR": str(runs_dir), "RESUME": ""}
    torch.manual_seed(cfg["SEED"])
    model = build(cfg, train_set.num_classes)
    seam = getattr(module, "batch_transforms", None)
    transforms = seam(cfg, train_set) if callable(seam) else ()
    loss = getattr(module, "criterion", None)  # DeiT's distillation: its teacher runs in every step
    try:
        criterion = loss(cfg) if callable(loss) else None
    except config_lib.ConfigError as e:
        raise SystemExit(f"error (bad constant): {e}") from None
    with contextlib.redirect_stdout(io.StringIO()):  # its "writing to ..." line: not a run
        return trainer.setup(model, train_set, small_set(train_set, cfg["BATCH_SIZE"]), cfg, name,
                              getattr(module, "param_options", None), transforms, criterion)


# ----------------------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """The allocator's peak since reset_peak, MiB; NaN on a CPU (no allocator statistics)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan


@dataclass
class Meter:
    """Images/s of ``work(step) -> images``, timed in several rounds that interleave with the
    other meters' (so a machine whose load drifts slows every feed alike, not the first one)."""

    work: Callable[[int], int]
    device: torch.device
    enter: Callable[[], Any] = lambda: None  # e.g. the model to eval mode, for inference
    leave: Callable[[], Any] = lambda: None
    images: int = 0
    seconds: float = 0.0
    steps: int = 0
    warmup_s: float = 0.0
    peak: float = math.nan
    step0: int = 0  # the training step numbers go on after the warm-up's
    error: str = ""  # why this meter failed ('' = it did not): the other meters go on

    def warm(self, steps: int) -> None:
        """Untimed steps first: cuDNN autotuning, the allocator, compilation."""
        self.enter()
        t0 = time.perf_counter()
        for i in range(steps):
            self.work(i)
        sync(self.device)
        self.warmup_s, self.step0 = time.perf_counter() - t0, steps
        self.leave()

    def measure(self, seconds: float, min_steps: int, max_steps: int) -> None:
        """One round: at least ``min_steps``, then until ``seconds`` have passed or ``max_steps``."""
        self.enter()
        reset_peak(self.device)
        t0, steps = time.perf_counter(), 0
        while steps < max_steps and (steps < min_steps or time.perf_counter() - t0 < seconds):
            self.images += self.work(self.step0 + self.steps + steps)  # no sync: the queue runs ahead
            steps += 1
        sync(self.device)
        self.seconds += time.perf_counter() - t0
        self.steps += steps
        peak = peak_mib(self.device)  # NaN on a CPU
        self.peak = peak if math.isnan(self.peak) else max(self.peak, peak)
        self.leave()

    def row(self) -> dict[str, float]:
        return {"images_per_s": self.images / self.seconds, "peak_mib": self.peak, "steps": self.steps,
                "warmup_s": self.warmup_s}


def timed_together(meters: list[Meter], warmup: int, seconds: float, max_steps: int, rounds: int) -> None:
    """Warm every meter, then ``rounds`` rounds of each in turn: ``seconds`` each in all, at
    least 3 steps each in all. A meter that raises keeps its error and drops out; the others go on."""
    for m in meters:
        if not m.error:
            _guarded(m, m.warm, warmup)
    for _ in range(rounds):
        for m in meters:
            if not m.error:
                _guarded(m, m.measure, seconds / rounds, max(1, math.ceil(3 / rounds)), max(1, max_steps // rounds))


def _guarded(m: Meter, call: Callable[..., None], *args: Any) -> None:
    try:
        call(*args)
    except Exception as e:  # noqa: BLE001 - a compile error, an OOM, a worker's crash: this row only
        m.error = failure(e)
        with contextlib.suppress(Exception):
            m.leave()  # e.g. the model back to training mode
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def failure(e: BaseException) -> str:
    """An error as one line for a results file: its type and its first line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def forever(loader: Any, to_device: Callable[[torch.Tensor, torch.Tensor], tuple] | None = None) -> Batches:
    """Batches of ``loader`` epoch after epoch (BatchLoader: a new permutation each epoch)."""
    for epoch in itertools.count():
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        for x, y in loader:
            yield to_device(x, y) if to_device else (x, y)


def train_work(run: trainer.Run, batches: Batches) -> Callable[[int], int]:
    """One step of the training loop's own ``train_step`` on the next batch."""
    sums = trainer.DeviceSums(run.device)

    def work(step: int) -> int:
        x, y = next(batches)
        trainer.train_step(run, x, y, step % run.steps_per_epoch, sums)
        return len(x)
    return work


def infer_work(run: trainer.Run, x: torch.Tensor) -> Callable[[int], int]:
    """The evaluation forward (as trainer.evaluate runs it) on one batch."""
    def work(step: int) -> int:
        with torch.no_grad(), run.autocast:
            run.eval_net(x)
        return len(x)
    return work


def data_work(batches: Batches) -> Callable[[int], int]:
    def work(step: int) -> int:
        return len(next(batches)[0])
    return work


# ----------------------------------------------------------------------------- one model

@dataclass
class Measured:
    """What bench_model measured of one model: its rows, the rows that failed and why, and the
    host-device syncs of one training step (None where they cannot be seen: on a CPU)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "compile on train cache" -> the error
    syncs: dict[str, Any] | None = None  # {"per_step": n, "where": [one line per sync]}


def bench_model(name: str, data: Path, *, size: int = 0, batch: int = 0, compiles: tuple[bool, ...] = (False, True),
                feeds: tuple[str, ...] = FEEDS, workers: int = 0, seconds: float = 3.0, warmup: int = 5,
                max_steps: int = 1000, rounds: int = 3, overrides: tuple[str, ...] = (), data_dir: str = "",
                data_rows: bool = True, log: Callable[[str], None] = print,
                on_row: Callable[[dict[str, Any]], None] = lambda row: None) -> Measured:
    """Every measurement of one model as rows (CSV_FIELDS); see the module's docstring.

    Each compile setting is set up and timed on its own, then the pipelines alone
    (``data_rows``); ``on_row`` gets every row as soon as it is measured (a results file can keep
    it before the next measurement starts). A failed setup or feed is in ``failed``, not raised.
    """
    argv = [f"--DATA_PATH={data}", *overrides]
    argv += [f"--IMAGE_DIM={size}"] if size else []
    argv += [f"--BATCH_SIZE={batch}"] if batch else []
    argv += [f"--DATA_DIR={data_dir}"] if data_dir else []
    cfg, build, module = configure(name, argv)
    with contextlib.redirect_stdout(io.StringIO()):
        train_set, _ = load_data(cfg)
    workers = workers or min(8, os.cpu_count() or 1)
    out = Measured()
    timing = {"warmup": warmup, "seconds": seconds, "max_steps": max_steps, "rounds": rounds}

    def keep(row: dict[str, Any]) -> None:
        out.rows.append(row)
        log(_line(row))
        on_row(row)

    with tempfile.TemporaryDirectory(prefix="bench-runs-") as runs_dir:
        device = None
        for compile_ in compiles:
            setting = f"compile {'on' if compile_ else 'off'}"
            try:
                run = setup_run(name, cfg, build, module, train_set, compile_, Path(runs_dir))
                meters = _step_meters(run, cfg, data, feeds, workers)
            except Exception as e:  # noqa: BLE001 - this setting's rows only
                out.failed[setting] = failure(e)
                log(f"  {name} {setting}: failed: {out.failed[setting]}")
                _release(compile_)
                continue
            device = run.device
            base = {"model": name, "device": str(run.device), "size": cfg["IMAGE_DIM"],
                    "batch": cfg["BATCH_SIZE"], "compile": "on" if compile_ else "off"}
            timed_together(list(meters.values()), **timing)
            for (mode, feed), m in meters.items():
                if m.error:
                    out.failed[f"{setting} {mode} {feed}"] = m.error
                    log(f"  {name} {setting} {mode} {feed}: failed: {m.error}")
                else:
                    keep({**base, "mode": mode, "feed": feed, **m.row()})
            if not compile_ and out.syncs is None:
                try:
                    out.syncs = count_syncs(run)
                except Exception as e:  # noqa: BLE001
                    out.failed[f"{setting} syncs"] = failure(e)
                if out.syncs is not None:
                    log(f"  {name}: {out.syncs['per_step']} host-device syncs per training step")
            del run, meters
            _release(compile_)
        if data_rows:
            _data_rows(name, cfg, module, train_set, data, feeds, workers, device or _device(cfg), timing,
                       out, keep)
    return out


def _device(cfg: dict[str, Any]) -> torch.device:
    return system.pick_device(cfg["DEVICE"], 0)


def _step_meters(run: trainer.Run, cfg: dict[str, Any], data: Path, feeds: tuple[str, ...],
                 workers: int) -> dict[tuple[str, str], Meter]:
    """The training step fed each way (and inference on the bare batch). A feed that cannot be
    set up is a meter with its error: that row fails, the others are measured."""
    meters: dict[tuple[str, str], Meter] = {}
    for feed in feeds:
        try:
            if feed == "bare":
                x, y = next(iter(run.train_loader))
                meters["train", feed] = Meter(train_work(run, itertools.repeat((x, y))), run.device)
                meters["infer", feed] = Meter(infer_work(run, x), run.device, enter=run.net.eval,
                                              leave=run.net.train)
            elif feed == "cache":
                meters["train", feed] = Meter(train_work(run, forever(run.train_loader)), run.device)
            else:
                loader = imagefolder(data, cfg, workers, run.device)
                place = _placer(run.device, cfg, run.train_loader.extras)
                meters["train", feed] = Meter(train_work(run, forever(loader, place)), run.device)
        except Exception as e:  # noqa: BLE001
            meters["train", feed] = Meter(lambda step: 0, run.device, error=failure(e))
    return meters


def _data_rows(name: str, cfg: dict[str, Any], module: Any, train_set: ImageSet, data: Path,
               feeds: tuple[str, ...], workers: int, device: torch.device, timing: dict[str, Any],
               out: Measured, keep: Callable[[dict[str, Any]], None]) -> None:
    """The pipelines alone at the model's image size and batch, with its train.py's batch
    transforms (often the pipeline's dearest part): what the data can deliver."""
    base = {"model": name, "device": str(device), "size": cfg["IMAGE_DIM"], "batch": cfg["BATCH_SIZE"],
            "compile": "-", "mode": "data"}
    try:
        seam = getattr(module, "batch_transforms", None)
        extras = list(seam(cfg, train_set)) if callable(seam) else []
    except Exception as e:  # noqa: BLE001
        out.failed["data"] = failure(e)
        return
    meters: dict[str, Meter] = {}
    for feed in ("cache", "imagefolder"):
        if feed not in feeds:
            continue
        try:
            if feed == "cache":
                with contextlib.redirect_stdout(io.StringIO()):
                    loader = trainer.loaders(train_set, small_set(train_set, 1), cfg, device, 0, 1, extras)[0]
                meters[feed] = Meter(data_work(forever(loader)), device)
            else:
                meters[feed] = Meter(data_work(forever(imagefolder(data, cfg, workers, device),
                                                       _placer(device, cfg, extras))), device)
        except Exception as e:  # noqa: BLE001
            meters[feed] = Meter(lambda step: 0, device, error=failure(e))
    timed_together(list(meters.values()), **timing)
    for feed, m in meters.items():
        if m.error:
            out.failed[f"data {feed}"] = m.error
        else:
            keep({**base, "feed": feed, **m.row()})


def count_syncs(run: trainer.Run, warm: int = 2) -> dict[str, Any] | None:
    """The host-device syncs of one cache-fed training step (batch, transforms, step), counted by
    common/syncs.py after ``warm`` steps (first calls set things up); None on a CPU, where
    nothing waits for a device and the counter sees nothing."""
    if run.device.type == "cpu":
        return None
    from common.syncs import SyncCounter

    work = train_work(run, forever(run.train_loader))
    for i in range(warm):
        work(i)
    sync(run.device)
    with SyncCounter() as counter:
        work(warm)
    sync(run.device)
    return {"per_step": counter.count, "where": [str(e) for e in counter.events]}


def imagefolder(data: Path, cfg: dict[str, Any], workers: int, device: torch.device) -> Any:
    """torchvision's usual pipeline with the recipe's crop size, crop scale and batch."""
    return torchvision_loader(Path(data), cfg["IMAGE_DIM"], cfg["BATCH_SIZE"], workers, device,
                              scale=(cfg["MIN_SCALE"], 1.0))


def _placer(device: torch.device, cfg: dict[str, Any],
            extras: list[Any]) -> Callable[[torch.Tensor, torch.Tensor], tuple]:
    """A DataLoader batch to the device, through the train.py's batch transforms, in the layout
    the loop's own loader yields: the same work after the crops as the shared pipeline does."""
    g = torch.Generator().manual_seed(cfg["SEED"])

    def place(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for extra in extras:
            x, y = extra(x, y, g)
        return (x.contiguous(memory_format=torch.channels_last) if cfg["CHANNELS_LAST"] else x), y
    return place


def _release(compiled: bool) -> None:
    if compiled:
        torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _line(row: dict[str, Any]) -> str:
    peak = "" if math.isnan(row["peak_mib"]) else f", peak {row['peak_mib']:,.0f} MiB"
    return (f"  {row['model']:>16} compile {row['compile']:>3} {row['mode']:>5} {row['feed']:>11}: "
            f"{row['images_per_s']:10,.0f} images/s ({row['steps']} steps{peak})")


# ----------------------------------------------------------------------------- summaries

def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The two targets from one model's rows: the pipeline's cost over the bare step (per compile
    setting; the worst counts) and the pipelines' own images/s. ``*_met`` is None (not judged)
    when the rows were measured on another device than the targets' (TARGET_DEVICE)."""
    rate = {(r["compile"], r["mode"], r["feed"]): r["images_per_s"] for r in rows}
    devices = sorted({str(r["device"]) for r in rows})
    judged = bool(devices) and all(torch.device(d).type == TARGET_DEVICE for d in devices)
    costs = {c: rate[(c, "train", "bare")] / rate[(c, "train", "cache")] - 1
             for c in ("off", "on") if (c, "train", "bare") in rate and (c, "train", "cache") in rate}
    out: dict[str, Any] = {f"pipeline_cost_compile_{c}": v for c, v in costs.items()}
    out["device"] = ", ".join(devices)
    if costs:
        out["pipeline_cost"] = max(costs.values())
        out["pipeline_cost_met"] = out["pipeline_cost"] < PIPELINE_COST_TARGET if judged else None
    if ("-", "data", "cache") in rate and ("-", "data", "imagefolder") in rate:
        out["imagefolder_ratio"] = rate[("-", "data", "cache")] / rate[("-", "data", "imagefolder")]
        out["imagefolder_ratio_met"] = out["imagefolder_ratio"] >= IMAGEFOLDER_RATIO_TARGET if judged else None
    return out


def verdict(met: bool | None, device: str) -> str:
    """met / NOT met on the targets' device; on any other, what was measured is not judged."""
    if met is None:
        return f"not judged on {device or 'this device'} (a {TARGET_DEVICE} target)"
    return "met" if met else "NOT met"


def target_lines(v: dict[str, Any]) -> list[str]:
    out = []
    if "pipeline_cost" in v:
        out.append(f"target ({TARGET_DEVICE}): shared pipeline costs < {PIPELINE_COST_TARGET:.0%} of the bare "
                   f"step: {v['pipeline_cost']:+.1%} on {v['device']} -> "
                   f"{verdict(v['pipeline_cost_met'], v['device'])}")
    if "imagefolder_ratio" in v:
        out.append(f"target ({TARGET_DEVICE}): shared pipeline >= {IMAGEFOLDER_RATIO_TARGET:.0f}x ImageFolder's "
                   f"images/s: {v['imagefolder_ratio']:.1f}x on {v['device']} -> "
                   f"{verdict(v['imagefolder_ratio_met'], v['device'])}")
    return out


def table(rows: list[dict[str, Any]], device: str = "") -> str:
    """The rows as an aligned text table, under a line that names the device they ran on."""
    where = device or ", ".join(sorted({str(r["device"]) for r in rows})) or "no device"
    head = ("model", "compile", "mode", "feed", "images/s", "peak MiB", "steps")
    lines = [(r["model"], r["compile"], r["mode"], r["feed"], f"{r['images_per_s']:,.0f}",
              "-" if math.isnan(r["peak_mib"]) else f"{r['peak_mib']:,.0f}", str(r["steps"])) for r in rows]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    return f"on {where}:\n" + "\n".join(
        "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        for cells in [head, *lines])


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "peak_mib": "" if math.isnan(r["peak_mib"]) else round(r["peak_mib"], 1),
                        "images_per_s": round(r["images_per_s"], 1), "warmup_s": round(r["warmup_s"], 3)})


def parse_compiles(text: str) -> tuple[bool, ...]:
    choices = {"off": False, "on": True}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(p not in choices for p in parts):
        raise SystemExit(f"error: --compile takes off, on or off,on; got {text!r}")
    return tuple(choices[p] for p in parts)


@errors.entry_point
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a builder name of any MODELS dict (e.g. resnet18)")
    parser.add_argument("--data", type=Path, required=True,
                        help="an extracted dataset (train/ and val/ of class folders), e.g. data/imagenette2-112")
    parser.add_argument("--size", type=int, default=0, help="training crop, pixels (0: the recipe's IMAGE_DIM)")
    parser.add_argument("--batch", type=int, default=0, help="batch (0: the recipe's BATCH_SIZE)")
    parser.add_argument("--compile", default="off,on", help="off, on, or off,on (default)")
    parser.add_argument("--feeds", default=",".join(FEEDS), help=f"some of {','.join(FEEDS)}")
    parser.add_argument("--workers", type=int, default=0, help="ImageFolder's DataLoader workers (0: min(8, cores))")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile happens here)")
    parser.add_argument("--rounds", type=int, default=3, help="the feeds are timed in turn, this many rounds "
                        "each (a drifting machine load then slows all alike)")
    parser.add_argument("--recipe", default="", help="a named recipe of the model's train.py (e.g. tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=value",
                        help="any constant of the model's train.py (repeatable), e.g. --set DEVICE=cpu")
    parser.add_argument("--data-dir", default="", help="where the decoded cache goes ('' = data/)")
    parser.add_argument("--csv", type=Path, help="CSV file (default runs/bench/<model>_<size>px.csv)")
    args = parser.parse_args(argv)
    if not (args.data / "train").is_dir():
        raise SystemExit(f"error: {args.data} has no train/ folder; give an extracted dataset "
                         f"(e.g. data/imagenette2-160, or a smaller copy made by "
                         f"python -m common.gpu_check --make-small)")
    feeds = tuple(f for f in args.feeds.split(",") if f)
    if not feeds or set(feeds) - set(FEEDS):
        raise SystemExit(f"error: --feeds takes some of {', '.join(FEEDS)}; got {args.feeds!r}")
    overrides = ([f"--RECIPE={args.recipe}"] if args.recipe else []) + [f"--{s}" for s in args.set]
    measured = bench_model(args.model, args.data, size=args.size, batch=args.batch,
                           compiles=parse_compiles(args.compile), feeds=feeds, workers=args.workers,
                           seconds=args.seconds, warmup=args.warmup, rounds=args.rounds,
                           overrides=tuple(overrides), data_dir=args.data_dir)
    rows = measured.rows
    devices = sorted({r["device"] for r in rows})
    print(table(rows, ", ".join(system.device_name(torch.device(d)) for d in devices)))
    for line in target_lines(verdicts(rows)):
        print(line)
    if measured.syncs is not None:
        print(f"host-device syncs per training step: {measured.syncs['per_step']}")
        for where in measured.syncs["where"]:
            print(f"  {where}")
    for what, why in measured.failed.items():
        print(f"failed: {args.model} {what}: {why}")
    if not rows:
        raise SystemExit(f"error: no measurement of {args.model} succeeded (see the failures above)")
    path = args.csv or registry.REPO / "runs" / "bench" / f"{args.model}_{rows[0]['size']}px.csv"
    write_csv(rows, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
