"""A run's folder and its human-readable files: config.json, log.csv, curves.png, progress lines.

``runs/<model>/<timestamp>/config.json`` holds the effective constants and what made the run
(git commit and whether the tree had uncommitted changes, versions, device, command line), so
a figure in the README can be traced to the code that produced it.
"""
from __future__ import annotations

import csv
import io
import json
import math
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import torch

from common.files import atomic_write, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def new_run_dir(runs: Path, name: str, create: bool = False) -> Path:
    """``runs/<name>/<timestamp>``, with a suffix when two runs start within the same second.

    ``create``: make it, atomically, so two processes starting at once never get one folder."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir, k = runs / name / stamp, 1
    while True:
        if create:
            try:
                run_dir.mkdir(parents=True)
                return run_dir
            except FileExistsError:
                pass
        elif not run_dir.exists():
            return run_dir
        k += 1
        run_dir = runs / name / f"{stamp}-{k}"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(device_name: str, world: int) -> dict[str, Any]:
    """What made this run: code, versions, hardware, command."""
    import torchvision

    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_uncommitted_changes": None if status is None else bool(status),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": device_name,
        "processes": world,
        "command": shlex.join([sys.executable, *sys.argv]),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def write_config(run_dir: Path, cfg: dict[str, Any], made_by: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.json",
                      json.dumps({"constants": cfg, "provenance": made_by}, indent=2, default=str))


def write_log(history: list[dict[str, Any]], path: Path) -> None:
    """log.csv, one row an epoch, rewritten whole (it stays right across a resume)."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    atomic_write_text(path, buf.getvalue())


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
    ax_acc.plot(epochs, [h["val_top1"] for h in history], "o-", label="val (centre crop)")
    if "ema_val_top1" in history[-1]:
        ax_acc.plot(epochs, [h.get("ema_val_top1") for h in history], "o--", label="val (EMA)")
    for ax, title in ((ax_loss, "loss"), (ax_acc, "top-1 accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=90, format="png"))
    plt.close(fig)


def duration(seconds: float) -> str:
    """45s, 3m10s, 2h05m: short enough for a progress line."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Plain progress lines for a log file, where tqdm's bar (meant for a terminal) shows nothing.

    When ``stream`` (stderr) is not a terminal, ``step`` prints at most one line every ``every``
    seconds: the epoch, step/steps, images/s since the epoch (re)started, and the ETA of the epoch
    and of the run (training time at this epoch's pace; evaluation not counted).
    """

    def __init__(self, every: float, epoch: int, num_epochs: int, steps: int, start_step: int,
                 images_per_step: int, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and not _is_terminal(self.stream)
        self.every, self.epoch, self.num_epochs = every, epoch, num_epochs
        self.steps, self.start_step, self.images_per_step = steps, start_step, images_per_step
        self.t0 = self.last = time.perf_counter()

    def step(self, step: int) -> None:
        """After step ``step`` (0-based) of the epoch."""
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.every:
            return
        self.last = now
        done = step + 1 - self.start_step
        per_step = (now - self.t0) / max(done, 1)
        left_epoch = self.steps - step - 1
        left_run = left_epoch + (self.num_epochs - self.epoch - 1) * self.steps
        print(f"epoch {self.epoch + 1}/{self.num_epochs}  step {step + 1}/{self.steps}  "
              f"{done * self.images_per_step / max(now - self.t0, 1e-9):.0f} img/s  "
              f"epoch ETA {duration(left_epoch * per_step)}  run ETA {duration(left_run * per_step)}",
              file=self.stream, flush=True)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: no terminal
        return False


def epoch_line(row: dict[str, Any], num_epochs: int) -> str:
    """The line printed after each epoch; it ends with the run's ETA (the remaining epochs at
    this epoch's training time; evaluation not counted)."""
    extra = f"  ema top-1 {row['ema_val_top1']:.4f}" if "ema_val_top1" in row else ""
    for key, value in row.items():  # other evaluation views, after the last epoch
        if key.startswith("val_top1_"):
            extra += f"  top-1 ({key[len('val_top1_'):]}) {value:.4f}"
    left = num_epochs - int(row["epoch"])
    eta = f"  run ETA {duration(left * row['epoch_time_s'])}" if left > 0 else ""
    return (f"epoch {row['epoch']}/{num_epochs}  train loss {row['train_loss']:.4f} "
            f"top-1 {row['train_top1']:.4f}  val loss {row['val_loss']:.4f} top-1 "
            f"{row['val_top1']:.4f} top-5 {row['val_top5']:.4f}{extra}  "
            f"{row['images_per_s']:.0f} img/s  {row['epoch_time_s']:.1f}s{eta}")
