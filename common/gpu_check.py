"""The GPU check: data, speed and a short training run of every architecture, in one results file.

    python -m common.gpu_check --data data/imagenette2-112                  # one GPU, < 8 minutes
    python -m common.gpu_check --data data/imagenette2-112 --readme README.md
    python -m common.gpu_check --table runs/gpu_check/<stamp>.json --readme README.md
    python -m common.gpu_check --make-small data/imagenette2-160 data/imagenette2-112 --size 112
    python -m common.gpu_check --tiny --data DIR                            # the test suite's, on a CPU

Made for one precious run on a GPU: the most wanted figures first, and nothing measured is
lost. In this order (the speed and train parts have a time budget, BUDGET_S: a model whose
turn comes after its part's budget is spent is listed as skipped, so the check ends in time):

  speed  common/bench.py for one or two builders of every architecture folder at 128 px, compile
         off: training images/s fed three ways, inference, the pipelines alone (with each
         train.py's batch transforms), and the host-device syncs of one training step
         (common/syncs.py; a GPU's only: on a CPU nothing waits for a device)
  speed  then compile on, for the builders in --compile
  data   common/bench_data.py's comparison at 128 px: a cold cache build, BatchLoader epochs,
         one epoch of ImageFolder + DataLoader
  train  every */train.py's default recipe as a subprocess, --NUM_EPOCHS short (ResNet-18 5,
         the others 2), on --data; its log.csv read back

One JSON file holds the device, versions, commit, command and every figure. It is written
again after every row, run and part, so a check cut short (a lost session, a crash) keeps what
it measured; a failure costs only its own row (a compile error leaves the compile-off rows).
``--readme`` writes the GPU table from it between the markers <!-- gpu:begin --> and
<!-- gpu:end -->, for a GPU run only: a CPU or --tiny run is never shown as a GPU's.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import io
import json
import math
import multiprocessing
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common import bench, bench_data, errors, registry, report, runlog, system
from common.files import atomic_write_text
from common.cache import IMAGE_EXTENSIONS
from common.datasets import IMAGENETTE_WNIDS

MARKERS = ("<!-- gpu:begin -->", "<!-- gpu:end -->")
CHECK_DIM = 128  # the speed and data parts' crop side: the targets are stated at 128 px
# One or two builders per folder for the speed part (names that a MODELS dict lacks are passed
# over; a folder with none of its names listed is represented by its train.py's ARCH).
REPRESENTATIVES: dict[str, tuple[str, ...]] = {
    "alexnet": ("alexnet_one_tower",),
    "vgg": ("vgg11_bn",),
    "resnet": ("resnet18", "resnet50"),
    "mobilenet": ("mobilenet_v1", "mobilenet_v2"),
    "vit": ("deit_tiny_16",),
}
TRAIN_EPOCHS: dict[str, int] = {"resnet": 5}  # the short run of each train.py's default recipe ...
DEFAULT_TRAIN_EPOCHS = 2  # ... and of every other folder's
# Seconds per part, on one H200-class GPU: the data part (no budget, about half a minute) and
# these keep the whole check under 8 minutes. A model or script whose turn comes after its
# part's budget is spent is skipped and listed; --budget-scale stretches both.
BUDGET_S = {"speed": 240, "train": 180}
TINY_SETTINGS = ["--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1"]  # train.py's, with --tiny
COMPILE_ON_FEEDS = ("bare", "cache")  # compile on: the step alone and fed by the shared pipeline


# ----------------------------------------------------------------------------- the parts

def data_part(data: Path, tiny: bool, device: torch.device, workers: int) -> dict[str, Any]:
    """bench_data's comparison, no model: cold cache build, BatchLoader, ImageFolder."""
    dim, batch = (32, 8) if tiny else (CHECK_DIM, 128)
    files = [p for p in (data / "train").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    for p in files:  # into the OS page cache: both ways then read from memory, not the disk
        p.read_bytes()
    n_a, s_a = bench_data.bench_torchvision(data, dim, batch, workers, device)
    build_s, setup_s, runs = bench_data.bench_cache(data, dim, batch, max(workers, 1), device, epochs=2)
    n_b, s_b = sum(n for n, _ in runs), sum(s for _, s in runs)
    return {"image_dim": dim, "batch": batch, "workers": workers, "train_images": len(files),
            "imagefolder_images_per_s": n_a / s_a, "imagefolder_epoch_s": s_a,
            "cache_build_s": build_s, "cache_build_images_per_s": len(files) / build_s,
            "batchloader_setup_s": setup_s, "batchloader_images_per_s": n_b / s_b,
            "batchloader_over_imagefolder": (n_b / s_b) / (n_a / s_a)}


def representatives(models: dict[str, dict[str, Any]], folders: list[str], one_each: bool = False) -> list[str]:
    """The speed part's builders, folder by folder (``one_each``: the first of each folder's)."""
    out = []
    for folder in folders:
        names = [n for n in REPRESENTATIVES.get(folder, ()) if n in models[folder]][:1 if one_each else None]
        if not names:
            arch = getattr(importlib.import_module(f"{folder}.train"), "ARCH", None)
            names = [arch if arch in models[folder] else next(iter(models[folder]))]
        out += names
    return out


def speed_part(names: list[str], data: Path, tiny: bool, compile_: bool, data_dir: str, budget_s: float,
               seconds: float, workers: int, results: dict[str, Any], save: Callable[[], None]) -> None:
    """common/bench.py for each builder with compile off (or on), until the budget is spent;
    every row into ``results`` and the file (``save``) as soon as it is measured."""
    start, speed = time.perf_counter(), results["speed"]
    setting = "compile on" if compile_ else "compile off"
    for name in names:
        if time.perf_counter() - start > budget_s:
            speed["skipped"].append(f"{name} ({setting})")
            save()
            continue
        print(f"speed: {name}, {setting}", flush=True)

        def keep(row: dict[str, Any]) -> None:
            speed["rows"].append(row)
            save()

        try:
            measured = bench.bench_model(
                name, data, size=0 if tiny else CHECK_DIM, compiles=(compile_,),
                feeds=COMPILE_ON_FEEDS if compile_ else bench.FEEDS, workers=workers, seconds=seconds,
                warmup=1 if tiny else 5, max_steps=20 if tiny else 1000, rounds=1 if tiny else 3,
                overrides=tuple(TINY_SETTINGS if tiny else []), data_dir=data_dir, data_rows=not compile_,
                on_row=keep)
        except (Exception, SystemExit) as e:  # its recipe refused, its data unreadable: this model only
            speed["failed"][f"{name} {setting}"] = bench.failure(e)
            print(f"  failed: {speed['failed'][f'{name} {setting}']}", flush=True)
            save()
            continue
        speed["failed"].update({f"{name} {what}": why for what, why in measured.failed.items()})
        if not compile_:
            speed["syncs"][name] = measured.syncs
            print(f"  {name}: host-device syncs per training step: {syncs_text(measured.syncs, results)}",
                  flush=True)
        speed["verdicts"][name] = bench.verdicts([r for r in speed["rows"] if r["model"] == name])
        save()


def syncs_text(syncs: dict[str, Any] | None, results: dict[str, Any]) -> str:
    if syncs is None:
        return f"not counted on {results['device_type']} (nothing there waits for a device)"
    return str(syncs["per_step"])


def train_part(folders: list[str], data: Path, tiny: bool, runs_dir: Path, data_dir: str,
               budget_s: float, out: dict[str, Any], save: Callable[[], None]) -> None:
    """Each train.py's default recipe, short, as a subprocess; what its log.csv says, into
    ``out`` and the file as soon as each run ends.

    --tiny calls each train.py's ``main`` in this process instead: a subprocess's start (an
    import of torch, 5 to 17 s on a busy 2-core machine) would be most of a tiny run's time, and
    tests/test_train_scripts.py runs every train.py as a subprocess already.
    """
    start = time.perf_counter()
    for folder in folders:
        left = budget_s - (time.perf_counter() - start)
        if left <= 0:
            out["skipped"].append(folder)
            save()
            continue
        epochs = 1 if tiny else TRAIN_EPOCHS.get(folder, DEFAULT_TRAIN_EPOCHS)
        where = runs_dir / folder
        cmd = [sys.executable, f"{folder}/train.py", f"--NUM_EPOCHS={epochs}",  # run in the repository
               f"--DATA_PATH={data}", f"--RUNS_DIR={where}", *([f"--DATA_DIR={data_dir}"] if data_dir else []),
               *(TINY_SETTINGS if tiny else [])]
        print(f"train: {shlex.join(cmd[1:])}{' (in this process)' if tiny else ''}", flush=True)
        t0 = time.perf_counter()
        if tiny:
            code, tail = _in_process(folder, cmd[2:])
        else:
            try:
                proc = subprocess.run(cmd, cwd=registry.REPO, capture_output=True, text=True,
                                      timeout=max(left, 30))
                code, tail = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            except subprocess.TimeoutExpired:
                code, tail = None, [f"stopped after {max(left, 30):.0f} s (the train part's budget)"]
        result: dict[str, Any] = {"command": shlex.join(cmd[1:]), "epochs": epochs, "returncode": code,
                                  "wall_s": time.perf_counter() - t0}
        logs = sorted(where.glob("*/*/log.csv"), key=lambda p: p.stat().st_mtime)
        rows = []
        if logs:
            with open(logs[-1]) as f:
                rows = list(csv.DictReader(f))
        if rows:
            last = rows[-1]
            result.update(arch=logs[-1].parent.parent.name, log=str(logs[-1]), epochs_done=len(rows),
                          val_top1=float(last["val_top1"]), val_top5=float(last["val_top5"]),
                          best_val_top1=max(float(r["score"]) for r in rows),
                          images_per_s=float(last["images_per_s"]), epoch_time_s=float(last["epoch_time_s"]))
        if code != 0 or not rows:
            result["error"] = " | ".join(tail)
            print(f"  failed: {result['error']}", flush=True)
        out["runs"][folder] = result
        save()


def _in_process(folder: str, argv: list[str]) -> tuple[int | None, list[str]]:
    """A train.py's ``main(argv)`` here: (its exit status, the last lines it printed)."""
    printed, code = io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            importlib.import_module(f"{folder}.train").main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if code == 130:  # Ctrl-C, which the script turned into its exit status: it stops the check too
            raise KeyboardInterrupt from None
    except Exception as e:  # noqa: BLE001 - one script's failure must not cost the others
        code = 1
        printed.write(f"\n{bench.failure(e)}")
    return code, printed.getvalue().strip().splitlines()[-3:]


# ----------------------------------------------------------------------------- the results

def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Both targets over every model the speed part measured: the worst case counts. Judged only
    when the check ran on the targets' device (bench.TARGET_DEVICE): ``*_met`` is None otherwise."""
    v = results.get("speed", {}).get("verdicts", {})
    judged = results.get("device_type") == bench.TARGET_DEVICE and not results.get("tiny")
    costs = {n: x["pipeline_cost"] for n, x in v.items() if "pipeline_cost" in x}
    ratios = {n: x["imagefolder_ratio"] for n, x in v.items() if "imagefolder_ratio" in x}
    out: dict[str, Any] = {"device": results.get("device_type", "?") + (" (--tiny)" if results.get("tiny") else "")}
    if costs:
        worst = max(costs, key=costs.get)
        out.update(pipeline_cost=costs[worst], pipeline_cost_model=worst,
                   pipeline_cost_met=costs[worst] < bench.PIPELINE_COST_TARGET if judged else None)
    if ratios:
        worst = min(ratios, key=ratios.get)
        out.update(imagefolder_ratio=ratios[worst], imagefolder_ratio_model=worst,
                   imagefolder_ratio_met=ratios[worst] >= bench.IMAGEFOLDER_RATIO_TARGET if judged else None)
    return out


def target_lines(t: dict[str, Any]) -> list[str]:
    out = []
    if "pipeline_cost" in t:
        out.append(f"target ({bench.TARGET_DEVICE}): shared pipeline costs < {bench.PIPELINE_COST_TARGET:.0%} of "
                   f"the bare step (worst: {t['pipeline_cost_model']} {t['pipeline_cost']:+.1%}): "
                   f"{bench.verdict(t['pipeline_cost_met'], t['device'])}")
    if "imagefolder_ratio" in t:
        out.append(f"target ({bench.TARGET_DEVICE}): shared pipeline >= {bench.IMAGEFOLDER_RATIO_TARGET:.0f}x "
                   f"ImageFolder's images/s (worst: {t['imagefolder_ratio_model']} {t['imagefolder_ratio']:.1f}x): "
                   f"{bench.verdict(t['imagefolder_ratio_met'], t['device'])}")
    return out


def is_gpu_run(results: dict[str, Any]) -> bool:
    """A check that ran on a GPU, not --tiny: the only kind the README's GPU section shows."""
    return results.get("device_type") == "cuda" and not results.get("tiny")


def _no_nan(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_no_nan(v) for v in x]
    return x


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def gpu_markdown(results: dict[str, Any]) -> str:
    """The GPU section from a results file (a partial one too: a check cut short). Every table
    names the device it was measured on."""
    p = results["provenance"]
    device = p["device"] + (" (--tiny)" if results.get("tiny") else "")
    wall = f"{results['wall_s'] / 60:.1f} min in all" if "wall_s" in results else "cut short before its end"
    out = [f"Measured by `python -m common.gpu_check` on {device}, torch {p['torch']}, torchvision "
           f"{p['torchvision']}, commit {str(p['git_commit'])[:10]}"
           f"{' (with uncommitted changes)' if p.get('git_uncommitted_changes') else ''}, {p['started']}; "
           f"data {results['data_path']}; {wall}.", ""]
    rows = results.get("speed", {}).get("rows", [])
    if rows:
        syncs = results.get("speed", {}).get("syncs", {})
        out += [f"Speed on {device} (images/s; in brackets the shared pipeline's cost over the bare step):", "",
                "| model | px | batch | compile | train (bare) | fed by the cache | fed by ImageFolder "
                "| inference | peak train MiB | syncs/step |", "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|"]
        rate = {(r["model"], r["compile"], r["mode"], r["feed"]): r for r in rows}
        for (model, comp, mode, feed), r in rate.items():
            if mode != "train" or feed != "bare":
                continue
            get = lambda m, f: rate.get((model, comp, m, f), {}).get("images_per_s")  # noqa: E731
            cache = get("train", "cache")
            cost = f" ({r['images_per_s'] / cache - 1:+.1%})" if cache else ""
            count = syncs.get(model) if comp == "off" else None
            out.append(f"| {model} | {r['size']} | {r['batch']} | {comp} | {_fmt(r['images_per_s'])} | "
                       f"{_fmt(cache)}{cost} | {_fmt(get('train', 'imagefolder'))} | "
                       f"{_fmt(get('infer', 'bare'))} | {_fmt(r['peak_mib'])} | "
                       f"{count['per_step'] if count else '-'} |")
        out.append("")
    d = results.get("data")
    if d and "error" not in d:
        out += [f"Data alone on {device} at {d['image_dim']} px, batch {d['batch']}: ImageFolder + DataLoader "
                f"({d['workers']} workers) {_fmt(d['imagefolder_images_per_s'])} images/s; the shared "
                f"pipeline {_fmt(d['batchloader_images_per_s'])} images/s "
                f"({d['batchloader_over_imagefolder']:.1f}x), after a cache build of "
                f"{d['cache_build_s']:.1f} s ({_fmt(d['cache_build_images_per_s'])} images/s decoded).", ""]
    runs = results.get("train", {}).get("runs", {})
    if runs:
        recipe_name = "RECIPE=tiny" if results.get("tiny") else "default recipe"
        out += [f"Short training runs on {device}:", "",
                f"| train.py ({recipe_name}) | model | epochs | val top-1 | train img/s | wall s |",
                "|---|---|--:|--:|--:|--:|"]
        for folder, r in runs.items():
            top1 = f"{r['val_top1']:.3f}" if "val_top1" in r else "failed"
            out.append(f"| {folder}/train.py | {r.get('arch', '?')} | {r.get('epochs_done', 0)}/{r['epochs']} | "
                       f"{top1} | {_fmt(r.get('images_per_s'))} | {r['wall_s']:.0f} |")
        out.append("")
    skipped = results.get("speed", {}).get("skipped", []) + results.get("train", {}).get("skipped", [])
    if skipped:
        out += [f"Skipped (time budget): {', '.join(skipped)}.", ""]
    failed = {**results.get("speed", {}).get("failed", {}),
              **({"data part": results["data"]["error"]} if d and "error" in d else {})}
    if failed:
        out += ["Failed: " + "; ".join(f"{what}: {why}" for what, why in failed.items()) + ".", ""]
    out += [f"- {line}" for line in target_lines(results.get("targets") or targets(results))]
    return "\n".join(out)


# ----------------------------------------------------------------------------- a small copy of the data

def _shrink(job: tuple[Path, Path, int]) -> None:
    from PIL import Image

    src, dst, size = job
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC).save(dst, "JPEG", quality=80)


def make_small(src: Path, dst: Path, size: int, workers: int = 0) -> int:
    """Copy the train/ and val/ image folders of ``src`` to ``dst``, each image resized so that its
    short side is ``size`` pixels (bicubic, RGB, JPEG quality 80); returns the image count."""
    if not (src / "train").is_dir() or not (src / "val").is_dir():
        raise SystemExit(f"error: {src} needs train/ and val/ folders of class folders (an extracted dataset)")
    jobs = []
    for p in sorted(src.glob("*/*/*")):
        if p.parts[-3] in ("train", "val") and p.suffix.lower() in IMAGE_EXTENSIONS:
            out = dst / p.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            jobs.append((p, out.with_suffix(".JPEG"), size))
    with multiprocessing.Pool(workers or os.cpu_count()) as pool:
        pool.map(_shrink, jobs, chunksize=64)
    return len(jobs)


def generated_data(root: Path, n_train: int = 160, n_val: int = 40) -> Path:
    """A small generated dataset (train/ and val/, 10 classes) for --tiny without --data."""
    for split, n in (("train", n_train), ("val", n_val)):
        made = bench_data.generate_jpegs(root / f"gen-{split}", n, seed=len(split))
        for k, folder in enumerate(sorted((made / "train").iterdir())):  # Imagenette's class names
            folder.rename(folder.with_name(IMAGENETTE_WNIDS[k]))
        (made / "train").rename(root / split)
    return root


# ----------------------------------------------------------------------------- the command

def run_check(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    device = torch.device("cpu") if args.tiny else system.pick_device("auto", 0)
    if args.tiny:  # tiny steps gain nothing from threads, and on a busy machine threads that
        torch.set_num_threads(1)  # wait for each other make them several times slower
    system.setup_device(device)
    models = report.discover()
    folders = [f for f in models if (registry.REPO / f / "train.py").exists()]
    if args.folders:
        unknown = set(args.folders) - set(folders)
        if unknown:
            raise SystemExit(f"error: --folders {', '.join(sorted(unknown))}: not among {', '.join(folders)}")
        folders = [f for f in folders if f in args.folders]
    # --tiny: one builder per folder (a row for every family, in a test's time)
    names = args.models or representatives(models, folders, one_each=args.tiny)
    compile_names = set(names) if args.compile == "all" else set(filter(None, args.compile.split(",")))
    workers = args.workers or (0 if args.tiny else min(8, os.cpu_count() or 1))
    seconds = args.seconds if args.seconds is not None else (0.0 if args.tiny else 1.5)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out or registry.REPO / "runs" / "gpu_check" / f"{stamp}.json"
    runs_dir = args.runs_dir or out_path.parent / f"{stamp}-runs"
    budget = {k: v * args.budget_scale for k, v in BUDGET_S.items()}
    results: dict[str, Any] = {
        "provenance": runlog.provenance(system.device_name(device), 1), "device_type": device.type,
        "command": shlex.join([sys.executable, "-m", "common.gpu_check", *args.argv]),
        "data_path": str(args.data), "tiny": args.tiny, "budgets_s": budget, "folders": folders,
        "speed": {"rows": [], "verdicts": {}, "syncs": {}, "skipped": [], "failed": {}},
        "train": {"runs": {}, "skipped": []}}

    def save() -> None:  # after every row and run: a check cut short keeps what it measured
        results["targets"] = targets(results)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_path, json.dumps(_no_nan(results), indent=2, default=str))  # strict JSON

    save()
    print(f"gpu_check on {results['provenance']['device']}: folders {', '.join(folders)}; data {args.data}; "
          f"results (kept after every row) in {out_path}", flush=True)
    speed_start = time.perf_counter()
    speed_args = (args.data, args.tiny)
    speed_part(names, *speed_args, False, args.data_dir, budget["speed"], seconds, workers, results, save)
    if not args.tiny:  # compile on: what is left of the speed budget
        left = budget["speed"] - (time.perf_counter() - speed_start)
        speed_part([n for n in names if n in compile_names], *speed_args, True, args.data_dir, left, seconds,
                   workers, results, save)
    print("data: cache build, BatchLoader, ImageFolder + DataLoader", flush=True)
    try:
        results["data"] = data_part(args.data, args.tiny, device, workers)
    except Exception as e:  # noqa: BLE001 - the other parts' figures stand
        results["data"] = {"error": bench.failure(e)}
        print(f"  failed: {results['data']['error']}", flush=True)
    save()
    train_part(folders, args.data, args.tiny, runs_dir, args.data_dir, budget["train"], results["train"], save)
    results["wall_s"] = time.perf_counter() - t0
    save()
    print(gpu_markdown(results))
    print(f"wrote {out_path}")
    return results


def refuse_unless_gpu(results: dict[str, Any], where: str) -> None:
    """The README's GPU section shows GPU runs only: a CPU or --tiny run is refused, by name."""
    if not is_gpu_run(results):
        kind = "a --tiny run" if results.get("tiny") else f"a run on {results.get('device_type', 'an unknown device')}"
        raise SystemExit(f"error: {where} is {kind}, not a GPU check: the README's GPU section takes only a "
                         f"full run on a GPU. Print its table without --readme instead.")


@errors.entry_point
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="an extracted dataset (train/, val/), e.g. data/imagenette2-112")
    parser.add_argument("--tiny", action="store_true", help="tiny recipes, 1 epoch, CPU (the test suite's)")
    parser.add_argument("--folders", type=lambda s: [f for f in s.split(",") if f],
                        help="only these architecture folders (default: every one with a train.py)")
    parser.add_argument("--models", type=lambda s: [m for m in s.split(",") if m],
                        help="the speed part's builders (default: one or two per folder, REPRESENTATIVES)")
    parser.add_argument("--compile", default="resnet18",
                        help="builders benchmarked with compile on as well as off: names, or all")
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per speed measurement (default 1.5; --tiny: 0, i.e. 3 steps)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help=f"multiplies every part's time budget ({BUDGET_S} s)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: min(8, cores))")
    parser.add_argument("--data-dir", default="", help="where decoded caches go ('' = data/)")
    parser.add_argument("--out", type=Path, help="results JSON (default runs/gpu_check/<time>.json)")
    parser.add_argument("--runs-dir", type=Path, help="the training runs' RUNS_DIR (default beside --out)")
    parser.add_argument("--readme", type=Path, help=f"write the GPU table between {MARKERS[0]} and {MARKERS[1]}")
    parser.add_argument("--table", type=Path, help="no check: the table from this results JSON")
    parser.add_argument("--make-small", nargs=2, type=Path, metavar=("SRC", "DST"),
                        help="no check: copy dataset SRC to DST with images resized to --size")
    parser.add_argument("--size", type=int, default=112, help="--make-small's short side, pixels")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # for the results' "command"
    if args.make_small:
        src, dst = args.make_small
        n = make_small(src, dst, args.size, args.workers)
        mib = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file()) / 2**20
        print(f"wrote {n} images to {dst} ({mib:.1f} MiB), short side {args.size} px")
        return
    if args.table:
        results = json.loads(args.table.read_text())
        if args.readme:
            refuse_unless_gpu(results, str(args.table))
    else:
        if args.readme and (args.tiny or not torch.cuda.is_available()):  # refused now, not after the check
            refuse_unless_gpu({"tiny": args.tiny, "device_type": "cpu"}, "this check")
        with tempfile.TemporaryDirectory(prefix="gpu-check-data-") as tmp:
            if args.data is None:
                if not args.tiny:
                    raise SystemExit("error: give --data (an extracted dataset such as data/imagenette2-112; "
                                     "see --make-small), or --tiny to run on generated images")
                args.data = generated_data(Path(tmp))
            elif not (args.data / "train").is_dir() or not (args.data / "val").is_dir():
                raise SystemExit(f"error: {args.data} needs train/ and val/ folders: give an extracted "
                                 f"dataset, or make a small copy of one with --make-small")
            results = run_check(args)
    if args.readme:
        refuse_unless_gpu(results, "this check")
        changed = report.rewrite_between(args.readme, gpu_markdown(results), MARKERS)
        print(f"{args.readme}: {'GPU table rewritten' if changed else 'already up to date'}")
    elif args.table:
        print(gpu_markdown(results))


if __name__ == "__main__":
    main()
