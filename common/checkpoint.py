"""Checkpoints: written atomically, read safely, and checked against the run that resumes them.

A checkpoint (last.pt, best.pt) holds the raw model's weights (no ``module.`` or ``_orig_mod.``
prefixes), the optimiser, schedule, AMP scaler and EMA states, the epoch and step, the partial
epoch's sums, every RNG state and the constants; it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from common.config import ConfigError
from common.files import atomic_write, rel

# What a checkpoint of this project holds at the least (the model's classes came later).
REQUIRED_KEYS = {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "history"}


class TrainingError(RuntimeError):
    """The run cannot go on (a diverged loss, a checkpoint that cannot be written or read)."""


def save_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write atomically: the previous file stays intact until the new one is complete."""
    try:
        return atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as e:
        raise TrainingError(f"could not write checkpoint {path} ({e}); the previous one, if any, "
                            f"is intact. Free disk space or set RUNS_DIR to another disk.") from e


def load_checkpoint(path: Path, constant: str = "RESUME") -> dict[str, Any]:
    """Load with ``weights_only=True`` (no code in the file runs); refuse what is not ours.

    ``constant`` names the setting that gave the path, for the messages (RESUME, INIT_FROM)."""
    if not path.is_file():
        raise TrainingError(f"{constant}={path}: no such checkpoint file. Runs keep theirs in "
                            f"runs/<model>/<timestamp>/last.pt.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - random bytes raise UnpicklingError, KeyError, RuntimeError, ...
        # torch's own message would suggest weights_only=False, i.e. running whatever the file
        # holds: never the advice for a file that is not what it claims to be.
        raise TrainingError(f"{constant}={path} is not a checkpoint of this project (it cannot be read "
                            f"as one: {type(e).__name__}). Pass a last.pt or best.pt from runs/.") from None
    lacking = sorted(REQUIRED_KEYS - set(ckpt) if isinstance(ckpt, dict) else REQUIRED_KEYS)
    if lacking:
        raise TrainingError(f"{constant}={path} is not a checkpoint of this project (it lacks "
                            f"{', '.join(lacking)}). Pass a last.pt or best.pt from runs/.")
    return ckpt


def get_rng(device: torch.device) -> dict[str, Any]:
    """RNG states (this process's GPU only: a resume may run on another number of GPUs)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def resume_config(cfg: dict[str, Any], names: set[str], ckpt: dict[str, Any]) -> dict[str, Any]:
    """A resumed run keeps the checkpoint's constants; those this command line sets (``names``) win."""
    saved = ckpt["config"]
    explicit = {k: cfg[k] for k in names}
    merged = {**cfg, **{k: v for k, v in saved.items() if k in cfg}, **explicit}
    for k in sorted(explicit):
        if k != "RESUME" and saved.get(k) != explicit[k]:
            print(f"resume: {k} changed from {saved.get(k)!r} to {explicit[k]!r}")
    return merged


def check_same_model(ckpt: dict[str, Any], meta_model: nn.Module, cfg: dict[str, Any],
                     loop_keys: frozenset[str] | set[str], path: str) -> None:
    """Refuse, before any data work, a checkpoint whose network these constants do not build.

    ``meta_model`` is the network built from ``cfg`` on the meta device; the message names the
    model constants (those the loop does not read) whose values differ from the checkpoint's.
    """
    want = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
    if want == have:
        return
    saved = ckpt["config"]
    differ = [f"{k} is {saved.get(k, '(unset)')!r} there and {cfg.get(k, '(unset)')!r} here"
              for k in sorted(set(saved) | set(cfg)) if k not in loop_keys and saved.get(k) != cfg.get(k)]
    if differ:
        why = "; ".join(differ)
    else:
        extra, lost = sorted(have.keys() - want.keys()), sorted(want.keys() - have.keys())
        shape = [k for k in want.keys() & have.keys() if want[k] != have[k]]
        why = (f"no model constant differs, but the layers do (e.g. {(extra or lost or shape)[0]}): it "
               f"was made by another model.py or another train.py")
    raise ConfigError(f"RESUME={path} holds a different network than these constants build: {why}. "
                      f"Resume with the checkpoint's constants, or start a new run without RESUME.")


def check_resumable(ckpt: dict[str, Any], cfg: dict[str, Any], world: int) -> None:
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


def check_classes(ckpt: dict[str, Any], classes: Sequence[str], what: str) -> None:
    """Refuse (TrainingError) data whose classes are not, by name and order, those the checkpoint
    was trained on: its output ``i`` means its class ``i``, so any other list scores or trains it
    against the wrong labels. ``what`` names the checkpoint in the message (e.g. "RESUME=<path>").

    Checkpoints saved before the class names were kept (no "classes") are compared by count.
    """
    classes = [str(c) for c in classes]
    saved = ckpt.get("classes")
    if not saved:  # an old checkpoint: the count is all it says
        count = ckpt.get("num_classes")
        if count is not None and int(count) != len(classes):
            raise TrainingError(f"{what} was trained on {count} classes, this data has {len(classes)}: "
                                f"use the dataset it was trained on (DATA_PATH).")
        return
    saved = [str(c) for c in saved]
    if saved == classes:
        return
    only_ckpt = [c for c in saved if c not in classes]
    only_data = [c for c in classes if c not in saved]
    why = (f"only in the checkpoint: {_few(only_ckpt)}; only in the data: {_few(only_data)}"
           if only_ckpt or only_data else "the same names in another order")
    raise TrainingError(f"{what} was trained on other classes than this data's ({why}; {len(saved)} "
                        f"there, {len(classes)} here): use the dataset it was trained on (DATA_PATH).")


def _few(names: Sequence[str], most: int = 5) -> str:
    """``names`` for a one-line message: a few, then a count."""
    if not names:
        return "none"
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def diverged_message(loss: float, epoch: int, step: int, cfg: dict[str, Any], last_good: Path | None,
                     what: str = "loss") -> str:
    where = f" at {rel(last_good)}" if last_good else " (none was written yet)"
    warmup = " add warm-up (WARMUP_EPOCHS)," if cfg["LR_SCHEDULE"] in ("cosine", "onecycle") else ""
    return (f"the {what} became {loss} at epoch {epoch + 1}, step {step + 1}. Stopped; the "
            f"last good checkpoint is intact{where}. Lower LEARNING_RATE (now {cfg['LEARNING_RATE']}),"
            f"{warmup} or clip gradients (GRAD_CLIP), then start again or --RESUME from it.")
