"""The training loop every train.py calls.

``main(module, build_model)`` reads a train.py's constants (and ``--NAME=value`` overrides),
fetches and caches the data, and calls ``fit``; ``fit(model, train_set, val_set, cfg)`` trains
any model on any in-memory uint8 image set (common.cache.ImageSet), Imagenette or not.

Only this file knows about the device, bf16 autocast, channels_last, torch.compile and DDP; a
model.py stays plain PyTorch and every script runs unchanged on a CPU.

Each run writes to ``runs/<model>/<timestamp>/``: config.json (the effective constants),
log.csv (one row an epoch), curves.png (redrawn every epoch), last.pt and best.pt.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from common import config as config_lib
from common.cache import ImageSet, build_cache, typical_short_side
from common.datasets import DATA_ROOT, DataError, prepare_dataset
from common.loader import BatchLoader

log = logging.getLogger("vision-hist")
REPO = Path(__file__).resolve().parents[1]

# The loop's own switches. Every train.py may set any of them as a constant; those it does not
# set keep these values and can still be overridden on the command line.
DEFAULTS: dict[str, Any] = {
    # --- data
    "DATASET": "imagenette",  # imagenette or imagewoof
    "DATASET_SIZE": "160",  # archive: 160, 320 or full (pixels of the short side)
    "DATA_PATH": "",  # an archive or extracted folder you already have ('' = download)
    "DATA_DIR": "",  # where downloads and the decoded cache go ('' = data/ in this repository)
    "IMAGE_DIM": 128,  # training crop, pixels
    "EVAL_IMAGE_DIM": 0,  # evaluation size, pixels (0 = IMAGE_DIM)
    "CACHE_DIM": 0,  # side of the decoded uint8 cache, pixels (0 = 2 x the larger of the two, at most the photos' size)
    "MIN_SCALE": 0.35,  # random-resized-crop: smallest area fraction kept
    "HFLIP": True,  # random horizontal flips
    "EVAL_CROP": 0.875,  # evaluation centre crop as a fraction of the short side (224/256)
    # --- optimisation
    "NUM_EPOCHS": 5,
    "BATCH_SIZE": 128,  # per GPU
    "OPTIMIZER": "sgd",  # sgd or adamw
    "LEARNING_RATE": 0.1,  # peak learning rate
    "MOMENTUM": 0.9,  # sgd momentum
    "NESTEROV": False,  # sgd: Nesterov momentum
    "ADAM_BETAS": (0.9, 0.999),  # adamw
    "WEIGHT_DECAY": 5e-4,
    "DECAY_NORM_AND_BIAS": True,  # False: no weight decay on norm weights and biases
    "LR_SCHEDULE": "step",  # step, plateau, cosine, onecycle or constant
    "WARMUP_EPOCHS": 0.0,  # cosine/onecycle: epochs of warm-up
    "LEARNING_RATE_DECAY_FACTOR": 0.1,  # step/plateau: multiply the learning rate by this ...
    "LEARNING_RATE_DECAY_STEP_SIZE": 30,  # step: ... every this many epochs
    "PLATEAU_PATIENCE": 5,  # plateau: ... after this many epochs without a better val top-1
    "LABEL_SMOOTHING": 0.0,
    "GRAD_CLIP": 0.0,  # max gradient norm (0 = off)
    "EMA_DECAY": 0.0,  # exponential moving average of the weights, per step (0 = off)
    # --- system (the same for every model)
    "SEED": 0,
    "DEVICE": "auto",  # auto (cuda if present, else cpu), cuda, cuda:1, cpu
    "AMP": "bf16",  # autocast: bf16, fp16 (cuda) or off
    "CHANNELS_LAST": True,  # NHWC memory layout: faster convolutions (GPU and CPU)
    "COMPILE": False,  # torch.compile the model (slow first epoch, faster after)
    "DECODE_WORKERS": 0,  # processes decoding the image cache (0 = one per core)
    "RUNS_DIR": "",  # logs, plots, checkpoints: RUNS_DIR/<model>/<timestamp>/ ('' = runs/ in this repository)
    "RESUME": "",  # a checkpoint (last.pt) to continue from
}

SCHEDULES = ("step", "plateau", "cosine", "onecycle", "constant")

RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "DATASET": (lambda v: v in ("imagenette", "imagewoof"), "imagenette or imagewoof"),
    "DATASET_SIZE": (lambda v: v in ("160", "320", "full"), "160, 320 or full"),
    "NUM_EPOCHS": (lambda v: v >= 1, "at least 1"),
    "BATCH_SIZE": (lambda v: v >= 1, "at least 1"),
    "IMAGE_DIM": (lambda v: v >= 8, "at least 8 pixels"),
    "EVAL_IMAGE_DIM": (lambda v: v == 0 or v >= 8, "0 (= IMAGE_DIM) or at least 8 pixels"),
    "CACHE_DIM": (lambda v: v == 0 or v >= 8, "0 (automatic) or at least 8 pixels"),
    "MIN_SCALE": (lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
    "EVAL_CROP": (lambda v: 0 < v <= 1, "a fraction in (0, 1]"),
    "OPTIMIZER": (lambda v: v in ("sgd", "adamw"), "sgd or adamw"),
    "LEARNING_RATE": (lambda v: v > 0, "a positive number"),
    "MOMENTUM": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "WEIGHT_DECAY": (lambda v: v >= 0, "0 or more"),
    "LR_SCHEDULE": (lambda v: v in SCHEDULES, ", ".join(SCHEDULES)),
    "WARMUP_EPOCHS": (lambda v: v >= 0, "0 or more"),
    "LEARNING_RATE_DECAY_FACTOR": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "LEARNING_RATE_DECAY_STEP_SIZE": (lambda v: v >= 1, "at least 1 epoch"),
    "PLATEAU_PATIENCE": (lambda v: v >= 1, "at least 1 epoch"),
    "LABEL_SMOOTHING": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "GRAD_CLIP": (lambda v: v >= 0, "0 (off) or a positive norm"),
    "EMA_DECAY": (lambda v: 0 <= v < 1, "0 (off) or in (0, 1), e.g. 0.999"),
    "AMP": (lambda v: v in ("bf16", "fp16", "off"), "bf16, fp16 or off"),
    "DECODE_WORKERS": (lambda v: v >= 0, "0 (one per core) or more"),
}


class TrainingError(RuntimeError):
    """The run cannot go on (a diverged loss, a checkpoint that cannot be written or read)."""


# ----------------------------------------------------------------------------- command line

def main(module: ModuleType, build_model: Callable[[dict[str, Any], int], nn.Module],
         argv: list[str] | None = None, *, name: str | None = None,
         rules: dict[str, tuple[Callable[[Any], bool], str]] | None = None) -> dict[str, Any] | None:
    """Entry point of a train.py: constants -> overrides -> checks -> data -> model -> fit.

    ``build_model(cfg, num_classes)`` builds the network; ``rules`` adds the model's own checks
    (e.g. the smallest IMAGE_DIM its downsampling allows). Errors a user can cause end the
    program with one message, not a traceback.
    """
    argv = sys.argv[1:] if argv is None else argv
    own = config_lib.constants(module)
    defaults = {**DEFAULTS, **own}
    notes = {**_default_notes(), **config_lib.comments(module)}
    prog = os.path.relpath(module.__file__ or "train.py") if module.__file__ else "train.py"
    try:
        cfg = config_lib.parse_args(defaults, argv, prog=prog, doc=module.__doc__ or "", notes=notes)
        if cfg["RESUME"]:
            cfg = _resume_config(cfg, defaults, config_lib.given(argv))
        config_lib.check(cfg, {**RULES, **(rules or {})})
        return run(cfg, build_model, name=name or str(cfg.get("ARCH", Path(prog).parent.name)))
    except config_lib.ConfigError as e:
        print(f"error (bad constant): {e}", file=sys.stderr)
        sys.exit(2)
    except (DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # while preparing data, or a second Ctrl-C while training
        print("\ninterrupted: nothing saved since the last checkpoint (a partial download resumes "
              "on the next run)", file=sys.stderr)
        sys.exit(130)


def _default_notes() -> dict[str, str]:
    return config_lib.comments(sys.modules[__name__])


def _resume_config(cfg: dict[str, Any], defaults: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """A resumed run keeps its saved constants; what this command line sets (``names``) wins."""
    ckpt = load_checkpoint(_path(cfg["RESUME"]))
    saved = ckpt["config"]
    explicit = {k: cfg[k] for k in names}
    merged = {**defaults, **{k: v for k, v in saved.items() if k in defaults}, **explicit}
    for k in sorted(explicit):
        if k != "RESUME" and saved.get(k) != explicit[k]:
            print(f"resume: {k} changed from {saved.get(k)!r} to {explicit[k]!r}")
    return merged


def run(cfg: dict[str, Any], build_model: Callable[[dict[str, Any], int], nn.Module], *,
        name: str) -> dict[str, Any]:
    """Prepare the data named by cfg, build the model, train it; returns fit's summary."""
    rank, world, _ = _dist_env()
    _setup_logging(rank)
    # Every rank prepares the data before the process group exists: file locks let one process
    # download and decode while the others wait, with no collective timing out meanwhile (a
    # first download can take longer than NCCL's 10-minute timeout).
    train_set, val_set = load_data(cfg)
    torch.manual_seed(cfg["SEED"])  # the same initial weights on every rank and every run
    model = build_model(cfg, train_set.num_classes)
    # A forward pass on the meta device catches an IMAGE_DIM the network cannot take, before work.
    _check_input_size(model, cfg)
    try:
        return fit(model, train_set, val_set, cfg, name=name)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _dims(cfg: dict[str, Any]) -> tuple[int, int]:
    """(training, evaluation) image sides in pixels."""
    return cfg["IMAGE_DIM"], cfg["EVAL_IMAGE_DIM"] or cfg["IMAGE_DIM"]


def cache_dim(cfg: dict[str, Any], source_side: int) -> int:
    """Side of the decoded cache: CACHE_DIM, or twice the larger image side, capped at the
    source's typical short side, never below the image side; rounded up to a multiple of 16.

    Twice: a random crop of a third of the image is then still downscaled, not blown up, so it
    stays sharp (on Imagenette at 64 px a 128 px cache did better than a 112 px one in our runs),
    and bilinear sampling at no more than 2x downscale needs no extra anti-aliasing. Capped:
    storing more pixels than the photos have buys nothing.
    """
    if cfg["CACHE_DIM"]:
        return cfg["CACHE_DIM"]
    need = max(_dims(cfg))
    return 16 * math.ceil(max(need, min(2 * need, source_side)) / 16)


def load_data(cfg: dict[str, Any]) -> tuple[ImageSet, ImageSet]:
    """The dataset the constants name, as two in-memory uint8 sets (decoded once, then cached)."""
    root = _path(cfg["DATA_DIR"]) if cfg["DATA_DIR"] else DATA_ROOT
    source = _path(cfg["DATA_PATH"]) if cfg["DATA_PATH"] else None
    folder = prepare_dataset(cfg["DATASET"], cfg["DATASET_SIZE"], root, source=source)
    res = cache_dim(cfg, typical_short_side(folder, "train"))
    cache_dir = root / "cache"
    train_set = build_cache(folder, "train", res, cache_dir, workers=cfg["DECODE_WORKERS"])
    val_set = build_cache(folder, "val", res, cache_dir, workers=cfg["DECODE_WORKERS"])
    if train_set.classes != val_set.classes:
        raise DataError(f"train and val of {folder} have different class folders "
                        f"({len(train_set.classes)} vs {len(val_set.classes)}).")
    return train_set, val_set


def _check_input_size(model: nn.Module, cfg: dict[str, Any]) -> None:
    meta = copy.deepcopy(model).to("meta").eval()  # one copy, no real memory or compute
    train_dim, eval_dim = _dims(cfg)
    for dim_name, dim in (("IMAGE_DIM", train_dim), ("EVAL_IMAGE_DIM", eval_dim)):
        try:
            with torch.no_grad():
                meta(torch.empty(2, 3, dim, dim, device="meta"))
        except (RuntimeError, ValueError) as e:
            raise config_lib.ConfigError(f"{dim_name}={dim} is too small for this network ({e}). "
                                         f"Use a larger {dim_name}.") from None


# ----------------------------------------------------------------------------- the loop

def fit(model: nn.Module, train_set: ImageSet, val_set: ImageSet, cfg: dict[str, Any], *,
        name: str = "model", on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train ``model`` on ``train_set``, evaluating on ``val_set`` every epoch.

    ``cfg`` holds any of DEFAULTS' keys (missing ones take the default). ``on_step(global_step)``
    is called after every optimiser step (tests use it to interrupt a run).
    Returns a summary: best and final val top-1/top-5, images/s, the run folder.
    """
    cfg = {**DEFAULTS, **cfg}
    config_lib.check(cfg, RULES)
    rank, world, local_rank = _dist_env()
    if world > 1 and not dist.is_initialized():
        _init_distributed(cfg)
    device = _pick_device(cfg["DEVICE"], local_rank)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    main_proc = rank == 0
    train_dim, eval_dim = _dims(cfg)

    raw_model = model.to(device)
    # NHWC is faster for convolutions on CUDA tensor cores and, with bf16, on this CPU's oneDNN
    # too (ResNet-18 at 64 px on 2 cores: about 280 images/s against 165 in NCHW).
    channels_last = cfg["CHANNELS_LAST"]
    if channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    train_loader = BatchLoader(train_set, cfg["BATCH_SIZE"], train=True, image_dim=train_dim, device=device,
                               seed=cfg["SEED"], rank=rank, world_size=world,
                               scale=(cfg["MIN_SCALE"], 1.0), hflip=cfg["HFLIP"], channels_last=channels_last)
    val_loader = BatchLoader(val_set, cfg["BATCH_SIZE"], train=False, image_dim=eval_dim, device=device,
                             rank=rank, world_size=world, eval_crop=cfg["EVAL_CROP"],
                             channels_last=channels_last)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise config_lib.ConfigError(
            f"BATCH_SIZE={cfg['BATCH_SIZE']} is larger than the training set's share per process "
            f"({len(train_set) // world} images): use a smaller BATCH_SIZE.")

    amp = _amp_mode(device, cfg["AMP"])
    optimizer = build_optimizer(raw_model, cfg)
    schedule = Schedule(cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    ema = EMA(raw_model, cfg["EMA_DECAY"]) if cfg["EMA_DECAY"] > 0 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["LABEL_SMOOTHING"])

    net: nn.Module = raw_model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if cuda else None)
    # compile(DDP(model)), PyTorch's recommended order: Dynamo splits the graph at DDP's gradient
    # buckets so communication overlaps the backward. Evaluation runs the un-wrapped model.
    eval_net = torch.compile(raw_model) if cfg["COMPILE"] else raw_model
    if cfg["COMPILE"]:
        net = torch.compile(net) if world > 1 else eval_net

    # --- state that a checkpoint carries
    start_epoch, start_step, history, accum = 0, 0, [], _new_accum()
    run_dir: Path | None = None
    if cfg["RESUME"]:
        ckpt = load_checkpoint(_path(cfg["RESUME"]))
        _check_resumable(ckpt, cfg, world)
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] and scaler.is_enabled():  # a disabled scaler saves {}: nothing to load
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:  # no average saved (EMA newly switched on): start it from the weights
            ema.load_state_dict(ckpt["ema"] if ckpt["ema"] is not None else raw_model.state_dict())
        start_epoch, start_step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        # A mid-epoch checkpoint holds the partial epoch's sums of all ranks: rank 0 carries them.
        accum = ckpt["accum"] if main_proc else _new_accum()
        _set_rng(ckpt["rng"], device)
        run_dir = _path(cfg["RESUME"]).parent
        if main_proc:
            print(f"resumed from {cfg['RESUME']} at epoch {start_epoch + 1}, step {start_step}")
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        runs = _path(cfg["RUNS_DIR"]) if cfg["RUNS_DIR"] else REPO / "runs"
        run_dir = runs / name / stamp
        k = 1
        while run_dir.exists():  # two runs started within the same second
            k += 1
            run_dir = runs / name / f"{stamp}-{k}"
    if main_proc:
        run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(run_dir / "config.json", json.dumps(cfg, indent=2, default=str))
        print(f"{name}: {sum(p.numel() for p in raw_model.parameters()):,} parameters on {device} "
              f"({world} process{'es' if world > 1 else ''}), {len(train_set)} train / {len(val_set)} "
              f"val images, {steps_per_epoch} steps/epoch; writing to {_rel(run_dir)}")

    autocast = _autocast(device, amp)
    state = {"stop": False}
    restore = _install_signal_handlers(state)
    last_good: Path | None = run_dir / "last.pt" if (run_dir / "last.pt").exists() else None
    summary: dict[str, Any] = {"run_dir": str(run_dir), "interrupted": False}

    def checkpoint(epoch: int, step: int, filename: str = "last.pt") -> Path:
        payload = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(),
                   "ema": ema.state_dict() if ema is not None else None, "epoch": epoch, "step": step,
                   "history": history, "accum": accum, "rng": _get_rng(device), "config": cfg,
                   "world_size": world}
        return save_checkpoint(payload, run_dir / filename)

    try:
        from tqdm import tqdm

        for epoch in range(start_epoch, cfg["NUM_EPOCHS"]):
            train_loader.set_epoch(epoch)
            net.train()
            t0 = time.perf_counter()
            bar = tqdm(total=steps_per_epoch, initial=start_step, disable=not main_proc or None,
                       desc=f"epoch {epoch + 1}/{cfg['NUM_EPOCHS']}", leave=False, mininterval=1.0)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            seen_this_run = 0
            for step, (x, y) in enumerate(train_loader.iterate(start_step), start=start_step):
                lr = schedule.set_lr(optimizer, epoch * steps_per_epoch + step)
                with autocast:
                    out = net(x)
                    loss = criterion(out, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg["GRAD_CLIP"] > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(raw_model.parameters(), cfg["GRAD_CLIP"])
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update(raw_model)
                loss_sum += loss.detach().float() * len(y)
                if y.dtype == torch.int64:
                    correct += (out.detach().argmax(1) == y).sum()
                seen_this_run += len(y)
                bar.update(1)
                last_step = step + 1 == steps_per_epoch
                check = (step + 1) % 20 == 0 or last_step  # a device sync: not every step
                if check:
                    _fold(accum, loss_sum, correct, seen_this_run)
                    loss_sum.zero_(), correct.zero_()
                    seen_this_run = 0
                    rate = accum["n"] / max(time.perf_counter() - t0, 1e-9) * world
                    bar.set_postfix(loss=f"{accum['loss'] / max(accum['n'], 1):.3f}",
                                    acc=f"{accum['correct'] / max(accum['n'], 1):.3f}",
                                    lr=f"{lr:.3g}", img_s=f"{rate:.0f}", refresh=False)
                if on_step is not None:
                    on_step(epoch * steps_per_epoch + step + 1)
                # Ranks decide together, at the same steps, so none is left waiting in a collective.
                if check or world == 1:
                    stop, diverged = _agree([state["stop"], check and not math.isfinite(accum["loss"])],
                                            device, world)
                    if diverged:
                        raise TrainingError(_diverged_message(accum, epoch, step, cfg, last_good))
                    if stop and not last_step:
                        _fold(accum, loss_sum, correct, seen_this_run)
                        if not math.isfinite(accum["loss"]):  # never save over the last good weights
                            raise TrainingError(_diverged_message(accum, epoch, step, cfg, last_good))
                        accum = _reduce_accum(accum, device, world)
                        if main_proc:
                            path = checkpoint(epoch, step + 1)
                            print(f"\ninterrupted: saved {_rel(path)}; continue with --RESUME={_rel(path)}")
                        summary["interrupted"] = True
                        return summary
            bar.close()
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_time = time.perf_counter() - t0
            tot = _reduce_accum(accum, device, world)
            row = {"epoch": epoch + 1, "lr": lr,
                   "train_loss": tot["loss"] / tot["n"],
                   "train_top1": tot["correct"] / tot["n"],
                   "images_per_s": tot["n"] / train_time if start_step == 0 else float("nan"),
                   "epoch_time_s": train_time}
            if world > 1:  # DDP syncs BN statistics at each forward's start: make them final
                for module in (raw_model, ema.module if ema is not None else None):
                    for buf in module.buffers() if module is not None else ():
                        dist.broadcast(buf, 0)
            metrics = evaluate(eval_net, val_loader, autocast, world)
            row.update({f"val_{k}": v for k, v in metrics.items()})
            if ema is not None:
                row.update({f"ema_val_{k}": v for k, v in evaluate(ema.module, val_loader, autocast, world).items()})
            score = row["ema_val_top1"] if ema is not None else row["val_top1"]
            schedule.end_epoch(score)
            is_best = not history or score > max(h.get("score", -1) for h in history)
            row["score"] = score
            history.append(row)
            accum, start_step = _new_accum(), 0
            if main_proc:
                last_good = checkpoint(epoch + 1, 0)
                if is_best:
                    checkpoint(epoch + 1, 0, "best.pt")
                write_log(history, run_dir / "log.csv")
                plot_history(history, run_dir / "curves.png")
                ema_txt = f"  ema top-1 {row['ema_val_top1']:.4f}" if ema is not None else ""
                print(f"epoch {epoch + 1}/{cfg['NUM_EPOCHS']}  train loss {row['train_loss']:.4f} "
                      f"top-1 {row['train_top1']:.4f}  val loss {row['val_loss']:.4f} top-1 "
                      f"{row['val_top1']:.4f} top-5 {row['val_top5']:.4f}{ema_txt}  "
                      f"{row['images_per_s']:.0f} img/s  {train_time:.1f}s")
            if _agree([state["stop"]], device, world)[0]:  # a signal late in the epoch: it is saved
                summary["interrupted"] = True
                return summary
    finally:
        restore()
    if history:
        best = max(history, key=lambda h: h["score"])
        summary.update(best_val_top1=best["score"], final_val_top1=history[-1]["val_top1"],
                       final_val_top5=history[-1]["val_top5"], history=history,
                       images_per_s=history[-1]["images_per_s"])
    if main_proc:
        print(f"done: best val top-1 {summary.get('best_val_top1', float('nan')):.4f}; "
              f"logs and checkpoints in {_rel(run_dir)}")
    return summary


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, autocast: contextlib.AbstractContextManager,
             world: int = 1) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy in eval mode (dropout off, BN running statistics).

    The original write-up of this project forgot ``model.eval()`` and reported accuracy with
    dropout and batch statistics live; tests pin that this function cannot.
    """
    was_training = model.training
    model.eval()
    device = loader.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    for x, y in loader:
        with autocast:
            out = model(x)
        out = out.float()
        k = min(5, out.shape[1])
        top = out.topk(k, dim=1).indices
        hit = top == y[:, None]
        sums += torch.stack([F.cross_entropy(out, y, reduction="sum").double(),
                             hit[:, 0].sum().double(), hit.any(1).sum().double(),
                             torch.tensor(len(y), dtype=torch.float64, device=device)])
    sums = _all_reduce(sums, world)
    model.train(was_training)
    n = max(sums[3].item(), 1)
    return {"loss": sums[0].item() / n, "top1": sums[1].item() / n, "top5": sums[2].item() / n}


def _new_accum() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "n": 0}


def _reduce_accum(accum: dict[str, float], device: torch.device, world: int) -> dict[str, float]:
    """The epoch's running sums over all ranks (a collective under DDP)."""
    t = _all_reduce(torch.tensor([accum["loss"], accum["correct"], accum["n"]], dtype=torch.float64,
                                 device=device), world)
    return {"loss": t[0].item(), "correct": t[1].item(), "n": int(t[2].item())}


def _fold(accum: dict[str, float], loss_sum: torch.Tensor, correct: torch.Tensor, n: int) -> None:
    if n:
        accum["loss"] += loss_sum.item()
        accum["correct"] += correct.item()
        accum["n"] += n


# ----------------------------------------------------------------------------- optimiser, schedule, EMA

def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW; weight decay optionally off for norms/biases."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            # 1-D tensors are biases and norm scales/shifts: decaying them only shrinks the
            # normalisation (Goyal et al. 2017; "Bag of Tricks", He et al. 2018, Sec. 3.1).
            (no_decay if p.ndim <= 1 and not cfg["DECAY_NORM_AND_BIAS"] else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg["WEIGHT_DECAY"]},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg["OPTIMIZER"] == "sgd":
        return torch.optim.SGD(groups, lr=cfg["LEARNING_RATE"], momentum=cfg["MOMENTUM"],
                               nesterov=cfg["NESTEROV"] and cfg["MOMENTUM"] > 0)
    return torch.optim.AdamW(groups, lr=cfg["LEARNING_RATE"], betas=tuple(cfg["ADAM_BETAS"]))


class Schedule:
    """Learning rate as a function of the global step, set before every step.

    step:     LEARNING_RATE x DECAY_FACTOR ** (epoch // DECAY_STEP_SIZE)   (the papers' recipe)
    plateau:  x DECAY_FACTOR each time val top-1 stalls PLATEAU_PATIENCE epochs (ResNet Sec. 3.4)
    cosine:   linear warm-up from 0, then cosine to 0 (Loshchilov & Hutter, arXiv:1608.03983)
    onecycle: cosine warm-up from LR/25, cosine down to LR/25e4 (Smith, arXiv:1708.07120)
    """

    def __init__(self, cfg: dict[str, Any], steps_per_epoch: int) -> None:
        self.kind, self.base = cfg["LR_SCHEDULE"], cfg["LEARNING_RATE"]
        self.steps_per_epoch = steps_per_epoch
        self.total = cfg["NUM_EPOCHS"] * steps_per_epoch
        self.warmup = min(int(cfg["WARMUP_EPOCHS"] * steps_per_epoch), self.total - 1)
        self.factor, self.step_size = cfg["LEARNING_RATE_DECAY_FACTOR"], cfg["LEARNING_RATE_DECAY_STEP_SIZE"]
        self.patience = cfg["PLATEAU_PATIENCE"]
        self.best, self.bad_epochs, self.reductions = -math.inf, 0, 0  # plateau's state

    def lr(self, step: int) -> float:
        if self.kind == "step":
            return self.base * self.factor ** (step // self.steps_per_epoch // self.step_size)
        if self.kind == "plateau":
            return self.base * self.factor ** self.reductions
        if self.kind == "constant":
            return self.base
        if self.kind == "cosine":
            if step < self.warmup:
                return self.base * (step + 1) / self.warmup
            t = (step - self.warmup) / max(self.total - self.warmup, 1)
            return self.base * 0.5 * (1 + math.cos(math.pi * t))
        # onecycle
        lo, end = self.base / 25, self.base / 25e4
        if step < self.warmup:
            t = step / self.warmup
            return lo + (self.base - lo) * 0.5 * (1 - math.cos(math.pi * t))
        t = (step - self.warmup) / max(self.total - self.warmup, 1)
        return end + (self.base - end) * 0.5 * (1 + math.cos(math.pi * t))

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    def end_epoch(self, val_top1: float) -> None:
        if self.kind != "plateau":
            return
        if val_top1 > self.best:
            self.best, self.bad_epochs = val_top1, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.reductions, self.bad_epochs = self.reductions + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "reductions": self.reductions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.bad_epochs, self.reductions = state["best"], state["bad_epochs"], state["reductions"]


class EMA:
    """Exponential moving average of the weights (and BN statistics), updated every step.

    Polyak & Juditsky 1992; as used for image classifiers since Szegedy et al. 2015
    (Inception-v3, arXiv:1512.00567) and timm's ModelEmaV2.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(m, 1.0 - self.decay)
            else:
                e.copy_(m)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)


# ----------------------------------------------------------------------------- checkpoints and logs

def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write atomically: a temporary file in the same folder, then rename over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TrainingError(f"could not write checkpoint {path} ({e}); the previous one, if any, "
                            f"is intact. Free disk space or set RUNS_DIR to another disk.") from e
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs on load)."""
    if not path.is_file():
        raise TrainingError(f"RESUME={path}: no such checkpoint file. Runs keep theirs in "
                            f"runs/<model>/<timestamp>/last.pt.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(f"RESUME={path}: cannot read this checkpoint ({type(e).__name__}: {e}). "
                            f"Try best.pt in the same folder.") from e


def write_log(history: list[dict[str, Any]], path: Path) -> None:
    """log.csv, one row an epoch, rewritten whole (it stays right across a resume)."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """curves.png: loss and top-1, train and val, against epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    ax_acc.plot(epochs, [h["train_top1"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["val_top1"] for h in history], "o-", label="val")
    if "ema_val_top1" in history[-1]:
        ax_acc.plot(epochs, [h.get("ema_val_top1") for h in history], "o--", label="val (EMA)")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "top-1 accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".tmp-{path.name}")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- device, DDP, signals, RNG

def _pick_device(pref: str, local_rank: int) -> torch.device:
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if not getattr(_pick_device, "warned", False):
            print("warning: no CUDA GPU found; training on the CPU (slow, but the same code)")
            _pick_device.warned = True  # type: ignore[attr-defined]
        return torch.device("cpu")
    device = torch.device(pref)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise config_lib.ConfigError(f"DEVICE={pref} but no CUDA GPU is visible; use DEVICE=auto or cpu.")
        if device.index is not None and _dist_env()[1] > 1:
            raise config_lib.ConfigError(f"DEVICE={pref} would put every torchrun process on one GPU; "
                                         f"use DEVICE=cuda (each process takes its LOCAL_RANK's GPU).")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def _amp_mode(device: torch.device, amp: str) -> str:
    """The autocast this device can do: bf16 needs a CPU or an Ampere-or-newer GPU, fp16 a GPU."""
    if amp == "fp16" and device.type != "cuda":
        print("warning: AMP=fp16 needs CUDA; using bf16 on this device")
        return "bf16"
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        print("warning: this GPU has no native bf16 (it predates Ampere); using AMP=fp16 with loss scaling")
        return "fp16"
    return amp


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``amp`` (as _amp_mode settled it); a no-op for AMP=off."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def _init_distributed(cfg: dict[str, Any]) -> None:
    if dist.is_initialized():
        return
    _, _, local_rank = _dist_env()
    use_cuda = torch.cuda.is_available() and cfg.get("DEVICE", "auto") != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")


def _all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(t)
    return t


def _agree(flags: list[bool], device: torch.device, world: int) -> list[bool]:
    """Each flag, true if it is true on any rank (a collective: every rank must call it)."""
    if world == 1:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t)
    return [v > 0 for v in t.tolist()]


def _diverged_message(accum: dict[str, float], epoch: int, step: int, cfg: dict[str, Any],
                      last_good: Path | None) -> str:
    where = f" at {_rel(last_good)}" if last_good else " (none was written yet)"
    warmup = " add warm-up (WARMUP_EPOCHS)," if cfg["LR_SCHEDULE"] in ("cosine", "onecycle") else ""
    return (f"the loss became {accum['loss']} at epoch {epoch + 1}, step {step + 1}. Stopped; the "
            f"last good checkpoint is intact{where}. Lower LEARNING_RATE (now {cfg['LEARNING_RATE']}),"
            f"{warmup} or clip gradients (GRAD_CLIP), then start again or --RESUME from it.")


def _install_signal_handlers(state: dict[str, bool]) -> Callable[[], None]:
    """Ctrl-C / SIGTERM: finish the current step, save a checkpoint, exit cleanly."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if state["stop"]:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        state["stop"] = True
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              f"(press Ctrl-C again to quit without saving)", file=sys.stderr)

    for s in old:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def _get_rng(device: torch.device) -> dict[str, Any]:
    """RNG states (this process's GPU only: a resume may run on another number of GPUs)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_resumable(ckpt: dict[str, Any], cfg: dict[str, Any], world: int) -> None:
    """Refuse a mid-epoch resume whose batches would not line up; warn about schedule changes."""
    saved = ckpt["config"]
    if ckpt["step"]:
        for what, old, new in (("BATCH_SIZE", saved["BATCH_SIZE"], cfg["BATCH_SIZE"]),
                               ("number of processes", ckpt.get("world_size", 1), world)):
            if old != new:
                raise TrainingError(
                    f"this checkpoint stopped in the middle of epoch {ckpt['epoch'] + 1} with {what} "
                    f"{old}; resuming with {new} would skip or repeat images. Resume with {what} {old}, "
                    f"or from a checkpoint saved at the end of an epoch.")
    if cfg["LR_SCHEDULE"] in ("cosine", "onecycle") and saved["NUM_EPOCHS"] != cfg["NUM_EPOCHS"]:
        print(f"warning: NUM_EPOCHS changed from {saved['NUM_EPOCHS']} to {cfg['NUM_EPOCHS']}: the "
              f"{cfg['LR_SCHEDULE']} schedule is stretched to the new length from here on (the "
              f"learning rate jumps to where the longer schedule would be)")


def _setup_logging(rank: int) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font-cache chatter


def _path(p: str | Path) -> Path:
    """A user's path: ``~`` expanded (a shell leaves it alone in --NAME=~/x), made absolute."""
    return Path(p).expanduser().resolve()


def _rel(p: Path) -> str:
    try:
        return os.path.relpath(p)
    except ValueError:
        return str(p)
