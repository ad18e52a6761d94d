"""The training loop: ``fit`` trains any model on any in-memory uint8 image set.

    fit(model, train_set, val_set, cfg)  ->  setup  ->  for each epoch: train, then end the epoch

Setup places the model (device, channels_last, DDP, compile), builds the loaders, the optimiser
and the schedule, and restores a checkpoint when cfg["RESUME"] names one. The end of an epoch
evaluates, logs and saves. The rare paths have their own helpers: the ranks' joint decision to
stop or to give up on a NaN (``_agree_to_stop``), and the summary of an interrupted run.
``setup``, ``loaders``, ``train_step``, ``Run`` and ``DeviceSums`` are public: common/bench.py
times the loop's own step with them, so a benchmark measures what training runs.
"""
from __future__ import annotations

import contextlib
import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import checkpoint as ckpt_lib
from common import config as config_lib
from common import optim, recipe, runlog, system
from common.cache import ImageSet
from common.checkpoint import TrainingError
from common.files import FolderBusy, HeldLock, rel, remove_stale_tmp, user_path
from common.loader import BatchLoader, BatchTransform, train_dim

__all__ = ["fit", "evaluate", "TrainingError"]
CHECK_EVERY = 20  # steps between the loss checks that wait for the device (not every step)


@dataclass
class Run:
    """Everything one run holds between steps; what a checkpoint carries is marked."""

    cfg: dict[str, Any]
    name: str
    device: torch.device
    rank: int
    world: int
    model: nn.Module  # the raw model: what checkpoints hold, and what evaluation runs
    net: nn.Module  # what training runs: the model, maybe in DDP, maybe compiled
    eval_net: nn.Module
    train_loader: BatchLoader
    val_loader: BatchLoader
    optimizer: torch.optim.Optimizer
    schedule: optim.Schedule
    scaler: torch.amp.GradScaler
    ema: optim.EMA | None
    criterion: nn.Module  # (output, target, input) -> loss: LabelLoss, or fit's ``criterion``
    autocast: Any
    classes: list[str]
    run_dir: Path = Path()
    history: list[dict[str, Any]] = field(default_factory=list)  # checkpointed
    accum: dict[str, float] = field(default_factory=lambda: _new_accum())  # checkpointed: the epoch so far
    start_epoch: int = 0  # checkpointed
    start_step: int = 0  # checkpointed
    unfolded: dict[str, float] | None = None  # checkpointed: this rank's DeviceSums not yet folded
    confusion: torch.Tensor | None = None  # the last epoch's (true, predicted) counts, for confusion.png
    last_good: Path | None = None
    lr: float = 0.0
    lock: contextlib.AbstractContextManager = field(default_factory=contextlib.nullcontext)  # the run folder's

    @property
    def main_proc(self) -> bool:
        return self.rank == 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)


def fit(model: nn.Module, train_set: ImageSet, val_set: ImageSet, cfg: dict[str, Any], *,
        name: str = "model", on_step: Callable[[int], None] | None = None,
        param_options: optim.ParamOptions | None = None,
        batch_transforms: Sequence[BatchTransform] = (), criterion: nn.Module | None = None) -> dict[str, Any]:
    """Train ``model`` on ``train_set``, evaluating on ``val_set`` every epoch.

    ``cfg`` states a whole recipe (common.recipe.RECIPE_KEYS and what its choices need; the
    shared switches take their defaults). ``param_options`` gives parameters their own weight
    decay or learning-rate scale (common.optim); ``batch_transforms`` run on every training
    batch on the device (common.augment; they may turn labels into soft targets).
    ``criterion(output, target, input)`` replaces the loss on the labels (LabelLoss), e.g. DeiT's
    distillation with its teacher (common/distill.py); it is placed where the model is.
    ``on_step(global_step)`` is called after every optimiser step (tests interrupt runs with it).
    Returns a summary: best and final val top-1/top-5, images/s, the run folder, the history.
    """
    cfg = recipe.complete(cfg)
    config_lib.check(cfg, recipe.RULES)
    run = setup(model, train_set, val_set, cfg, name, param_options, batch_transforms, criterion)
    with run.lock, system.StopRequest() as stop:
        for epoch in range(run.start_epoch, cfg["NUM_EPOCHS"]):
            train_time = _train_epoch(run, epoch, stop, on_step)
            if train_time is None:  # stopped mid-epoch, checkpoint saved
                return {**_summary(run, interrupted=True), "signal": stop.signum}
            _end_epoch(run, epoch, train_time)
            if system.agree([stop.requested], run.device, run.world)[0]:  # saved with the epoch
                if run.main_proc and run.last_good is not None:
                    print(f"\ninterrupted after epoch {epoch + 1}: saved {rel(run.last_good)}; continue "
                          f"with --RESUME={rel(run.last_good)}")
                return {**_summary(run, interrupted=True), "signal": stop.signum}
    return _summary(run, interrupted=False)


# ----------------------------------------------------------------------------- setup

def setup(model: nn.Module, train_set: ImageSet, val_set: ImageSet, cfg: dict[str, Any], name: str,
           param_options: optim.ParamOptions | None, batch_transforms: Sequence[BatchTransform],
           criterion: nn.Module | None = None) -> Run:
    """Device, model placement, loaders, optimiser; then a checkpoint's state, or a new run folder."""
    rank, world, local_rank = system.dist_env()
    if world > 1:
        system.init_distributed(cfg["DEVICE"])
    device = system.pick_device(cfg["DEVICE"], local_rank)
    system.setup_device(device, cfg["DETERMINISTIC"])
    train_loader, val_loader = loaders(train_set, val_set, cfg, device, rank, world, batch_transforms)
    amp = system.amp_mode(device, cfg["AMP"])
    raw, net, eval_net = _place(model, cfg, device, world)
    run = Run(cfg=cfg, name=name, device=device, rank=rank, world=world, model=raw, net=net,
               eval_net=eval_net, train_loader=train_loader, val_loader=val_loader,
               optimizer=optim.build_optimizer(raw, cfg, param_options),
               schedule=optim.Schedule(cfg, len(train_loader)),
               scaler=torch.amp.GradScaler("cuda", enabled=amp == "fp16"),
               ema=optim.ema_model(raw, cfg["EMA_DECAY"]) if cfg["EMA_DECAY"] > 0 else None,
               criterion=(LabelLoss(label_smoothing=cfg["LABEL_SMOOTHING"]) if criterion is None else
                          criterion.to(device, memory_format=torch.channels_last if cfg["CHANNELS_LAST"]
                                       else torch.preserve_format)),  # a teacher runs as the model
               autocast=system.autocast(device, amp), classes=list(train_set.classes))
    if cfg["RESUME"]:
        _restore(run, user_path(cfg["RESUME"]))
    else:
        runs = user_path(cfg["RUNS_DIR"]) if cfg["RUNS_DIR"] else runlog.REPO / "runs"
        run.run_dir = runlog.new_run_dir(runs, name, create=run.main_proc)
    if run.main_proc:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        run.lock = _lock_run_dir(run.run_dir)
        runlog.write_config(run.run_dir, cfg, {**runlog.provenance(system.device_name(device), world),
                                                "train_images": len(train_set), "eval_images": len(val_set)})
        print(f"{name}: {sum(p.numel() for p in raw.parameters()):,} parameters on {device} "
              f"({world} process{'es' if world > 1 else ''}), {len(train_set)} train / {len(val_set)} "
              f"val images, {run.steps_per_epoch} steps/epoch; writing to {rel(run.run_dir)}")
    return run


class LabelLoss(nn.CrossEntropyLoss):
    """The loss of a step, (output, target, input) -> loss: cross-entropy on the labels (indices or
    soft targets). The input is for a loss that needs it (DeiT's teacher, common/distill.py)."""

    def forward(self, out: torch.Tensor, y: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(out, y)


def loaders(train_set: ImageSet, val_set: ImageSet, cfg: dict[str, Any], device: torch.device, rank: int,
             world: int, batch_transforms: Sequence[BatchTransform]) -> tuple[BatchLoader, BatchLoader]:
    """This rank's training batches (augmented) and validation batches (the evaluation views)."""
    channels_last = cfg["CHANNELS_LAST"]
    train = BatchLoader(train_set, cfg["BATCH_SIZE"], train=True, image_dim=cfg["IMAGE_DIM"], device=device,
                        seed=cfg["SEED"], rank=rank, world_size=world, scale=(cfg["MIN_SCALE"], 1.0),
                        hflip=cfg["HFLIP"], channels_last=channels_last, extras=batch_transforms,
                        scale_jitter=tuple(cfg["SCALE_JITTER"]) if any(cfg["SCALE_JITTER"]) else None)
    eval_dim = cfg["EVAL_IMAGE_DIM"] or cfg["IMAGE_DIM"]
    val = BatchLoader(val_set, cfg["BATCH_SIZE"], train=False, image_dim=eval_dim, device=device, rank=rank,
                      world_size=world, eval_crop=cfg["EVAL_CROP"], channels_last=channels_last,
                      views=cfg["EVAL_VIEWS"], scales=tuple(cfg["EVAL_SCALES"]))
    if len(train) == 0:
        raise config_lib.ConfigError(
            f"BATCH_SIZE={cfg['BATCH_SIZE']} is larger than the training set's share per process "
            f"({len(train_set) // world} images): use a smaller BATCH_SIZE.")
    return train, val


def _place(model: nn.Module, cfg: dict[str, Any], device: torch.device,
           world: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(raw model on the device, what training runs, what evaluation runs)."""
    raw = model.to(device)
    # NHWC is faster for convolutions on CUDA tensor cores and, with bf16, on this CPU's oneDNN
    # too (ResNet-18 at 64 px on 2 cores: about 280 images/s against 165 in NCHW).
    if cfg["CHANNELS_LAST"]:
        raw = raw.to(memory_format=torch.channels_last)
    net: nn.Module = raw
    if world > 1:
        # gradient_as_bucket_view: the gradients are views into DDP's all-reduce buckets, so
        # they are not copied into the buckets and back every step (and not held twice).
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda"
                                                  else None, gradient_as_bucket_view=True)
    # compile(DDP(model)), PyTorch's recommended order: Dynamo splits the graph at DDP's gradient
    # buckets so communication overlaps the backward. Evaluation runs the un-wrapped model.
    eval_net = torch.compile(raw) if cfg["COMPILE"] else raw
    if cfg["COMPILE"]:
        net = torch.compile(net) if world > 1 else eval_net
    return raw, net, eval_net


def _restore(run: Run, path: Path) -> None:
    """Continue from a checkpoint exactly where it stopped: in its own folder when it is the latest
    there, else in a new folder beside it (``_resume_dir``)."""
    ckpt = ckpt_lib.load_checkpoint(path)
    ckpt_lib.check_resumable(ckpt, run.cfg, run.world)
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.schedule.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") and run.scaler.is_enabled():  # a disabled scaler saves {}: nothing to load
        run.scaler.load_state_dict(ckpt["scaler"])
    if run.ema is not None:  # no average saved (EMA newly switched on): start it from the weights
        run.ema.module.load_state_dict(ckpt["ema"] if ckpt.get("ema") is not None else run.model.state_dict())
    run.start_epoch, run.start_step, run.history = ckpt["epoch"], ckpt["step"], ckpt["history"]
    # A mid-epoch checkpoint carries each rank's sums as they were, folded and not yet folded: the
    # resumed run adds and folds them at the same steps, so its losses match to the last bit.
    carried = ckpt.get("rank_sums")
    if carried and len(carried) == run.world:
        run.accum, run.unfolded = dict(carried[run.rank]["accum"]), carried[run.rank]["unfolded"]
    else:  # older checkpoints: the folded sums of all ranks, which rank 0 carries
        run.accum = ckpt["accum"] if run.main_proc else _new_accum()
    ckpt_lib.set_rng(ckpt["rng"], run.device)
    # The checkpoint holds rank 0's random state: the others would draw rank 0's dropout masks
    # from here on. Each takes its own stream again, mixed with where the run resumes.
    system.seed_rank(run.cfg["SEED"], run.rank, ckpt["epoch"], ckpt["step"])
    run.run_dir = _resume_dir(path, ckpt, run.main_proc)
    run.last_good = path if path.name == "last.pt" else None
    if run.main_proc:
        print(f"resumed from {rel(path)} at epoch {run.start_epoch + 1}, step {run.start_step}")


def _resume_dir(path: Path, ckpt: dict[str, Any], say: bool) -> Path:
    """The folder a resumed run writes to: the checkpoint's own when nothing there is later than
    it; else a new folder beside it, named after where it came from, so that a later last.pt,
    later rows of log.csv and config.json are never overwritten."""
    folder = path.parent
    later = _later_than(folder, path, ckpt)
    if later is None:
        return folder
    where = f"e{ckpt['epoch']}" + (f"s{ckpt['step']}" if ckpt["step"] else "")
    new, k = folder.with_name(f"{folder.name}-from-{path.stem}-{where}"), 1
    while new.exists():
        k += 1
        new = folder.with_name(f"{folder.name}-from-{path.stem}-{where}-{k}")
    if say:
        print(f"resume: {rel(path)} is older than {later}; continuing in a new folder {rel(new)} "
              f"and leaving {rel(folder)} as it is")
    return new


def _later_than(folder: Path, path: Path, ckpt: dict[str, Any]) -> str | None:
    """What ``folder`` holds that is later than the checkpoint ``path`` (or cannot be read), or None."""
    here = (ckpt["epoch"], ckpt["step"])
    last = folder / "last.pt"
    if last.is_file() and not last.samefile(path):
        try:
            other = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
            there = (other["epoch"], other["step"])
        except Exception:  # noqa: BLE001 - unreadable: never overwrite what cannot be vouched for
            return f"{rel(last)} (which cannot be read)"
        if there > here:
            return f"{rel(last)} (epoch {there[0]}, step {there[1]})"
    log = folder / "log.csv"
    if log.is_file():
        try:
            with open(log, newline="") as f:
                rows = sum(1 for _ in csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError):
            return f"{rel(log)} (which cannot be read)"
        if rows > len(ckpt["history"]):
            return f"{rel(log)} ({rows} epochs logged, {len(ckpt['history'])} in the checkpoint)"
    return None


def check_resume_folder_free(path: Path, ckpt: dict[str, Any]) -> None:
    """Before any data work: refuse (TrainingError) to resume into a folder another process is
    training in. Only where the run would continue in place (``_resume_dir``); the lock is taken
    and let go at once (the run takes it for good after the decode, whose workers must not
    inherit it)."""
    if _later_than(path.parent, path, ckpt) is None:
        _lock_run_dir(path.parent, tidy=False).release()


def _lock_run_dir(run_dir: Path, tidy: bool = True) -> HeldLock:
    """The run folder belongs to this process until the run ends: a second one is refused at once."""
    try:
        lock = HeldLock(run_dir / "run.lock").acquire()
    except FolderBusy as e:
        raise TrainingError(f"{rel(run_dir)} is in use by {e.who()}: two runs in one folder would "
                            f"overwrite each other's checkpoints. Wait for it to end or stop it, or "
                            f"start a new run without RESUME.") from None
    if tidy:
        remove_stale_tmp(run_dir)  # from a process killed mid-save: nobody else writes here now
    return lock


def _checkpoint(run: Run, epoch: int, step: int, filename: str = "last.pt",
                rank_sums: list[dict[str, Any]] | None = None) -> Path:
    """Save the run; ``rank_sums`` (mid-epoch only) are every rank's sums as ``_gather_sums`` gives them."""
    payload = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
               "scheduler": run.schedule.state_dict(), "scaler": run.scaler.state_dict(),
               "ema": run.ema.module.state_dict() if run.ema is not None else None,
               "epoch": epoch, "step": step, "history": run.history, "rank_sums": rank_sums,
               "accum": _total(rank_sums) if rank_sums else run.accum,
               "rng": ckpt_lib.get_rng(run.device), "config": run.cfg, "world_size": run.world,
               "num_classes": len(run.classes), "classes": run.classes}
    return ckpt_lib.save_checkpoint(payload, run.run_dir / filename)


# ----------------------------------------------------------------------------- one epoch

def _train_epoch(run: Run, epoch: int, stop: system.StopRequest,
                 on_step: Callable[[int], None] | None) -> float | None:
    """Train one epoch (from run.start_step); its training seconds, or None if it was stopped."""
    from tqdm import tqdm

    run.train_loader.set_epoch(epoch)
    run.train_loader.image_dim = train_dim(run.cfg, epoch)  # progressive resizing (IMAGE_DIM when off)
    run.net.train()
    spe, t0 = run.steps_per_epoch, time.perf_counter()
    bar = tqdm(total=spe, initial=run.start_step, disable=not run.main_proc or None,
               desc=f"epoch {epoch + 1}/{run.cfg['NUM_EPOCHS']}", leave=False, mininterval=1.0)
    # The bar is for a terminal; in a log file (nohup, tee) a plain line every PROGRESS_SECONDS.
    progress = runlog.Progress(run.cfg["PROGRESS_SECONDS"], epoch, run.cfg["NUM_EPOCHS"], spe, run.start_step,
                               run.cfg["BATCH_SIZE"] * run.world, enabled=run.main_proc)
    sums, run.unfolded = DeviceSums(run.device, run.unfolded), None
    for step, (x, y) in enumerate(run.train_loader.iterate(run.start_step), start=run.start_step):
        train_step(run, x, y, epoch * spe + step, sums)
        bar.update(1)
        progress.step(step)
        last = step + 1 == spe
        check = (step + 1) % CHECK_EVERY == 0 or last  # a device sync: not every step
        if check:
            sums.fold_into(run.accum)
            rate = run.accum["n"] / max(time.perf_counter() - t0, 1e-9) * run.world
            n = max(run.accum["n"], 1)
            bar.set_postfix(loss=f"{run.accum['loss'] / n:.3f}", acc=f"{run.accum['correct'] / n:.3f}",
                            lr=f"{run.lr:.3g}", img_s=f"{rate:.0f}", refresh=False)
        if on_step is not None:
            on_step(epoch * spe + step + 1)
        if (check or run.world == 1) and _agree_to_stop(run, stop, check, epoch, step, sums):
            return None
    bar.close()
    if run.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, global_step: int, sums: DeviceSums) -> None:
    """One optimiser step. ``y`` is class indices, or (B, C) soft targets (mixup, cutmix)."""
    run.lr = run.schedule.set_lr(run.optimizer, global_step)
    with run.autocast:
        out = run.net(x)
        loss = run.criterion(out, y, x)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg["GRAD_CLIP"] > 0:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg["GRAD_CLIP"])
    run.scaler.step(run.optimizer)
    run.scaler.update()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    # Soft targets count as their largest class: a mixed image is "right" for its main label. A
    # distilled ViT answers with two heads in training: its class head's answer is counted.
    label = y if y.ndim == 1 else y.argmax(1)
    logits = out[0] if isinstance(out, tuple) else out
    sums.add(loss.detach().float() * len(y), (logits.detach().argmax(1) == label).sum(), len(y))


def _agree_to_stop(run: Run, stop: system.StopRequest, check: bool, epoch: int, step: int,
                   sums: DeviceSums) -> bool:
    """Stop or give up, decided by every rank together at the same steps (so none is left
    waiting in a collective). A NaN raises and never saves over the last good checkpoint; a
    stop request saves a mid-epoch checkpoint and returns True (at the epoch's last step the
    end of the epoch saves instead)."""
    stop_now, diverged = system.agree([stop.requested, check and not math.isfinite(run.accum["loss"])],
                                      run.device, run.world)
    if diverged:
        raise TrainingError(ckpt_lib.diverged_message(run.accum["loss"], epoch, step, run.cfg, run.last_good))
    if not stop_now or step + 1 == run.steps_per_epoch:
        return False
    # No fold here: the checkpoint carries the sums as they are (see _restore).
    rank_sums = _gather_sums(run, sums)
    total = _total(rank_sums)
    if not math.isfinite(total["loss"]):  # every rank sees the same total: all raise together
        raise TrainingError(ckpt_lib.diverged_message(total["loss"], epoch, step, run.cfg, run.last_good))
    if run.main_proc:
        path = _checkpoint(run, epoch, step + 1, rank_sums=rank_sums)
        print(f"\ninterrupted: saved {rel(path)}; continue with --RESUME={rel(path)}")
    return True


# ----------------------------------------------------------------------------- the end of an epoch

def _end_epoch(run: Run, epoch: int, train_time: float) -> None:
    """Evaluate, update the schedule, then (rank 0) save last.pt/best.pt, log.csv, curves.png."""
    tot = _reduce_accum(run.accum, run.device, run.world)
    row = {"epoch": epoch + 1, "lr": run.lr, "train_loss": tot["loss"] / tot["n"],
           "train_top1": tot["correct"] / tot["n"], "train_images": tot["n"],
           "images_per_s": tot["n"] / train_time if run.start_step == 0 else float("nan"),
           "epoch_time_s": train_time}
    system.broadcast_buffers([run.model] + ([run.ema.module] if run.ema is not None else []), run.world)
    last = epoch + 1 == run.cfg["NUM_EPOCHS"]
    # The last epoch's evaluation also counts (true, predicted) pairs over every rank's images:
    # the confusion figure then costs no second pass over the validation set.
    centre = evaluate(run.eval_net, run.val_loader, run.autocast, run.world,
                      confusion_classes=len(run.classes) if last else 0)
    run.confusion = centre.pop("confusion", None)
    row.update({f"val_{k}": v for k, v in centre.items()})
    if run.ema is not None:
        ema = evaluate(run.ema.module, run.val_loader, run.autocast, run.world)
        row.update({f"ema_val_{k}": v for k, v in ema.items()})
    view = run.val_loader.view_name
    if last and view != "center":  # the paper's test, once, at the end
        views = evaluate(run.eval_net, run.val_loader, run.autocast, run.world, views=True)
        row.update({f"val_{k}_{view}": v for k, v in views.items()})
    _check_val_loss(run, row, epoch)
    score = row["ema_val_top1"] if run.ema is not None else row["val_top1"]
    run.schedule.end_epoch(score)
    is_best = not run.history or score > max(h.get("score", -1) for h in run.history)
    row["score"] = score
    run.history.append(row)
    run.accum, run.start_step = _new_accum(), 0
    if run.main_proc:
        run.last_good = _checkpoint(run, epoch + 1, 0)
        if is_best and run.cfg["SAVE_BEST"]:  # False: last.pt only, half the disk
            _checkpoint(run, epoch + 1, 0, "best.pt")
        runlog.write_log(run.history, run.run_dir / "log.csv")
        runlog.plot_history(run.history, run.run_dir / "curves.png")
        print(runlog.epoch_line(row, run.cfg["NUM_EPOCHS"]))


def _check_val_loss(run: Run, row: dict[str, Any], epoch: int) -> None:
    """A NaN validation loss is a diverged run like a NaN training loss: raise before anything is
    saved over the last good checkpoint (every rank evaluated the same sums: all raise)."""
    for key, value in row.items():
        if "val_loss" in key and not math.isfinite(value):
            what = key.replace("ema_val_loss", "EMA validation loss").replace("val_loss", "validation loss")
            raise TrainingError(ckpt_lib.diverged_message(value, epoch, run.steps_per_epoch - 1, run.cfg,
                                                          run.last_good, what=what.replace("_", " ")))


def _summary(run: Run, interrupted: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {"run_dir": str(run.run_dir), "interrupted": interrupted}
    if interrupted:
        return summary
    if run.confusion is not None:  # for the caller's confusion figure (common.figures)
        summary["confusion"] = run.confusion
    if run.history:
        best = max(run.history, key=lambda h: h["score"])
        summary.update(best_val_top1=best["score"], final_val_top1=run.history[-1]["val_top1"],
                       final_val_top5=run.history[-1]["val_top5"], history=run.history,
                       images_per_s=run.history[-1]["images_per_s"])
    if run.main_proc:
        print(f"done: best val top-1 {summary.get('best_val_top1', float('nan')):.4f}; "
              f"logs and checkpoints in {rel(run.run_dir)}")
    return summary


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, autocast: Any, world: int = 1,
             views: bool = False, confusion_classes: int = 0) -> dict[str, Any]:
    """Loss, top-1 and top-5 accuracy in eval mode (dropout off, BN running statistics).

    ``views=False``: the centre crop. ``views=True``: every view of the loader (flip, 10-crop,
    several scales), softmax probabilities averaged, the loss that of the averaged probabilities.
    ``confusion_classes=C`` > 0 adds "confusion": the (C, C) counts of (true, predicted) class,
    summed over all ranks, on the CPU.
    One host-device sync per pass, none per batch: the sums and the counts stay on the device
    in one tensor, reduced over the ranks and read back once at the end.
    The original write-up of this project forgot ``model.eval()`` and reported accuracy with
    dropout and batch statistics live; tests pin that this function cannot.
    """
    was_training = model.training
    model.eval()
    device = loader.device
    # loss, top1, top5, n, then the (true, predicted) counts: float64 holds counts exactly
    sums = torch.zeros(4 + confusion_classes**2, dtype=torch.float64, device=device)
    batches = loader.iterate_views() if views else (([x], y) for x, y in loader)
    for xs, y in batches:
        if len(xs) == 1:
            with autocast:
                out = model(xs[0])
            out = out.float()
            loss = F.cross_entropy(out, y, reduction="sum")
        else:
            probs = torch.zeros((), device=device)
            for x in xs:
                with autocast:
                    probs = probs + model(x).float().softmax(1)
            out = (probs / len(xs)).clamp_min(1e-12).log()  # log of the averaged probabilities
            loss = F.nll_loss(out, y, reduction="sum")
        hit = out.topk(min(5, out.shape[1]), dim=1).indices == y[:, None]
        if confusion_classes:
            confusion_matrix(out.argmax(1), y, confusion_classes, into=sums[4:])
        sums[:3] += torch.stack([loss.double(), hit[:, 0].sum().double(), hit.any(1).sum().double()])
        sums[3] += len(y)  # a number the host knows: an add, not a copy to the device
    totals = system.all_reduce(sums, world).tolist()  # the pass's one sync
    model.train(was_training)
    n = max(totals[3], 1)
    result: dict[str, Any] = {"loss": totals[0] / n, "top1": totals[1] / n, "top5": totals[2] / n,
                              "images": int(totals[3])}
    if confusion_classes:
        result["confusion"] = torch.tensor(totals[4:], dtype=torch.int64).view(confusion_classes, confusion_classes)
    return result


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     into: torch.Tensor | None = None) -> torch.Tensor:
    """(true, predicted) counts (C, C), on the tensors' device, added to ``into`` (C * C,) if
    given (``evaluate`` keeps its counts there). Counted into a tensor of the known size: a
    bincount's size depends on the data, which costs a device sync on a GPU."""
    cells = labels * num_classes + preds
    if into is None:
        into = torch.zeros(num_classes**2, dtype=torch.int64, device=cells.device)
    into.scatter_add_(0, cells, torch.ones_like(cells, dtype=into.dtype))
    return into.view(num_classes, num_classes)


# ----------------------------------------------------------------------------- the epoch's sums

def _new_accum() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "n": 0}


def _reduce_accum(accum: dict[str, float], device: torch.device, world: int) -> dict[str, float]:
    """The epoch's running sums over all ranks (a collective under DDP)."""
    t = system.all_reduce(torch.tensor([accum["loss"], accum["correct"], accum["n"]], dtype=torch.float64,
                                       device=device), world)
    return {"loss": t[0].item(), "correct": t[1].item(), "n": int(t[2].item())}


def _gather_sums(run: Run, sums: DeviceSums) -> list[dict[str, Any]]:
    """Every rank's sums, folded (float64) and not yet folded (float32, exact in float64), on
    every rank (a collective under DDP: each rank fills its own row of a zero table)."""
    t = torch.zeros(run.world, 6, dtype=torch.float64, device=run.device)
    u = sums.state()
    t[run.rank] = torch.tensor([run.accum["loss"], run.accum["correct"], run.accum["n"],
                                u["loss"], u["correct"], u["n"]], dtype=torch.float64)
    system.all_reduce(t, run.world)
    return [{"accum": {"loss": r[0], "correct": r[1], "n": int(r[2])},
             "unfolded": {"loss": r[3], "correct": r[4], "n": int(r[5])}} for r in t.tolist()]


def _total(rank_sums: list[dict[str, Any]]) -> dict[str, float]:
    """All of it, folded and not, over all ranks (for the NaN check and older readers)."""
    return {k: sum(r["accum"][k] + r["unfolded"][k] for r in rank_sums) for k in ("loss", "correct", "n")}


class DeviceSums:
    """Loss and hits summed on the device between checks, so a step never waits for the GPU.

    The float32 sums are folded into float64 only at fixed steps of the epoch; a checkpoint
    carries them unfolded (``state``/``carried``), so an interrupted run adds and folds the same
    numbers in the same order as an uninterrupted one.
    """

    def __init__(self, device: torch.device, carried: dict[str, float] | None = None) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.n = 0
        if carried:
            self.loss.fill_(carried["loss"]), self.correct.fill_(carried["correct"])
            self.n = int(carried["n"])

    def state(self) -> dict[str, float]:
        """The sums as they are (a device sync), for a checkpoint."""
        return {"loss": self.loss.item(), "correct": self.correct.item(), "n": self.n}

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.loss += loss_sum
        self.correct += correct
        self.n += n

    def fold_into(self, accum: dict[str, float]) -> None:
        """Move the sums into ``accum`` (a device sync) and start again from zero."""
        if self.n:
            accum["loss"] += self.loss.item()
            accum["correct"] += self.correct.item()
            accum["n"] += self.n
        self.loss.zero_(), self.correct.zero_()
        self.n = 0
