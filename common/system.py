"""The device, bf16 autocast, DDP and signal handling: the only place a model meets the hardware.

A model.py stays plain PyTorch; every script runs unchanged on a CPU, one GPU, or several GPUs
under torchrun (each process takes its LOCAL_RANK's GPU and its shard of every epoch).
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import threading
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from common.config import ConfigError


def dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(pref: str, local_rank: int) -> torch.device:
    """DEVICE=auto takes this process's GPU when there is one, else the CPU (with a warning)."""
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if not getattr(pick_device, "warned", False):
            print("warning: no CUDA GPU found; training on the CPU (slow, but the same code)")
            pick_device.warned = True  # type: ignore[attr-defined]
        return torch.device("cpu")
    device = torch.device(pref)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"DEVICE={pref} but no CUDA GPU is visible; use DEVICE=auto or cpu.")
        if device.index is not None and dist_env()[1] > 1:
            raise ConfigError(f"DEVICE={pref} would put every torchrun process on one GPU; "
                              f"use DEVICE=cuda (each process takes its LOCAL_RANK's GPU).")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_device(device: torch.device, deterministic: bool = False) -> None:
    """Make ``device`` this process's current one, with fast defaults on a GPU (cuDNN autotuning,
    TF32 matmuls for what runs outside autocast), or deterministic kernels (DETERMINISTIC).

    ``DEVICE=cuda:1`` in one process must also be the current device: otherwise anything that
    allocates on "the" GPU (a new CUDA stream, NCCL, ``torch.cuda.*`` without an index, a
    ``pin_memory`` context) lands on GPU 0 and costs it memory and a context.
    """
    # Deterministic kernels where torch has them; a warning names each op that has none
    # (e.g. adaptive_avg_pool2d's CUDA backward), rather than stopping a run at its first step.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        # cuBLAS reuses its workspace across streams nondeterministically unless told its size
        # (read when cuBLAS starts, so before the first matmul): torch's documented setting.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # Autotuning picks kernels by timing them, so two runs may pick different ones.
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_rank(seed: int, rank: int, *more: int) -> None:
    """Give this DDP rank its own random stream, after the model is built from the shared one.

    Every rank seeds SEED before building the model, so the initial weights agree (DDP would
    broadcast rank 0's anyway). If they went on drawing from that one stream, every rank would
    draw the same dropout and DropPath masks (and any augmentation drawn from the global
    generator): N GPUs would train like one with N copies of the same noise. Rank 0 keeps the
    stream as it is, so a one-process run is the same as before for a given SEED; rank r > 0
    continues from a seed mixed from (SEED, r, *more). torch.manual_seed seeds every CUDA device too.
    ``more``: a resume passes its global step, since a checkpoint holds rank 0's random state only.
    """
    if rank > 0:
        # numpy's SeedSequence: a documented, well-mixed seed from several integers
        stream = int(np.random.SeedSequence([seed % 2**64, rank, *more]).generate_state(1, np.uint64)[0])
        torch.manual_seed(stream)
        random.seed(stream)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    return f"cpu ({os.cpu_count()} cores)"


def amp_mode(device: torch.device, amp: str) -> str:
    """The autocast this device can do: bf16 needs a CPU or an Ampere-or-newer GPU, fp16 a GPU."""
    if amp == "fp16" and device.type != "cuda":
        print("warning: AMP=fp16 needs CUDA; using bf16 on this device")
        return "bf16"
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        print("warning: this GPU has no native bf16 (it predates Ampere); using AMP=fp16 with loss scaling")
        return "fp16"
    return amp


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``amp`` (as amp_mode settled it); a no-op for AMP=off."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def init_distributed(device_pref: str) -> None:
    """Join torchrun's process group: NCCL between GPUs, gloo between CPU processes."""
    if dist.is_initialized():
        return
    _, _, local_rank = dist_env()
    use_cuda = torch.cuda.is_available() and device_pref != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (a collective under DDP; nothing to do alone)."""
    if world > 1:
        dist.all_reduce(t)
    return t


def agree(flags: list[bool], device: torch.device, world: int) -> list[bool]:
    """Each flag, true if it is true on any rank (a collective: every rank must call it)."""
    if world == 1:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t)
    return [v > 0 for v in t.tolist()]


def broadcast_buffers(modules: list[torch.nn.Module], world: int) -> None:
    """Rank 0's BN statistics everywhere (DDP syncs them only at each forward's start)."""
    if world > 1:
        for module in modules:
            for buf in module.buffers():
                dist.broadcast(buf, 0)


class StopRequest:
    """Ctrl-C / SIGTERM set ``requested``: the loop finishes its step, saves, and exits.

    ``signum`` records which signal asked (the script exits with 128 + it, as a shell expects of
    an interrupted program). A second Ctrl-C quits at once. Use as a context manager: the old
    handlers come back after.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step "
              f"(press Ctrl-C again to quit without saving)", file=sys.stderr)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def setup_logging(rank: int) -> None:
    """INFO from rank 0 only (the others would repeat it), warnings from every rank."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font-cache chatter

