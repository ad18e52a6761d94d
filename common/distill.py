"""DeiT's distillation (Touvron et al. 2020, arXiv:2012.12877, Sec. 4): a teacher, and the student's loss.

    python vit/train.py --ARCH=deit_tiny_distilled_16 --DISTILLATION=hard --TEACHER=runs/resnet18/<run>/best.pt

The teacher is any trained checkpoint of this repository: its own constants name its family
and rebuild it (common.registry), whatever the student is. It runs in eval mode, without
gradients, on the very batch the student sees, augmentation and mixup/cutmix included, as
DeiT's code does; the trainer places it beside the student (device, channels_last) and calls
the loss inside the student's autocast. The student is a distilled ViT (vit/model.py,
``distilled=True``), which in training returns its class head's and its distillation head's
logits: the class head learns the labels (with the recipe's label smoothing and soft mixup
targets), the distillation head the teacher. The teacher is no part of the student's
checkpoint; a resumed run reloads it from TEACHER, which its constants keep.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import registry, system
from common.config import ConfigError
from common.files import user_path

KINDS = ("none", "hard", "soft")
DATASET_CLASSES = {"imagenette": 10, "imagewoof": 10}  # the class count of each named dataset
TIMED_STEPS = 10  # the teacher's cost is measured over the steps after the first (which warms up)


def criterion(cfg: dict[str, Any]) -> "Distillation":
    """The loss DISTILLATION names, with TEACHER loaded and checked: before any data work."""
    if not cfg["TEACHER"]:
        raise ConfigError(f"DISTILLATION={cfg['DISTILLATION']} needs a TEACHER: a trained checkpoint, e.g. "
                          f"--TEACHER=runs/resnet18/<run>/best.pt")
    teacher, arch = load_teacher(cfg)
    return Distillation(teacher, cfg["DISTILLATION"], tau=cfg["DISTILLATION_TAU"], alpha=cfg["DISTILLATION_ALPHA"],
                        label_smoothing=cfg["LABEL_SMOOTHING"], name=arch)


def load_teacher(cfg: dict[str, Any]) -> tuple[nn.Module, str]:
    """(TEACHER's network with its weights, frozen, in eval mode, on the CPU; its ARCH). A missing
    or unreadable file is common.checkpoint's one-line TrainingError; a teacher of another class
    count than the data's is refused here (its names are checked against the data's folders
    before the decode, by common.script)."""
    path = user_path(cfg["TEACHER"])
    model, ckpt = registry.load_model(path, "cpu", constant="TEACHER")
    if ckpt.get("ema") is not None:  # the average is what best.pt was chosen by (common.trainer)
        model.load_state_dict(ckpt["ema"])
    theirs, ours = ckpt.get("num_classes") or len(ckpt.get("classes") or []), data_classes(cfg)
    if ours is not None and theirs != ours:
        raise ConfigError(f"TEACHER={cfg['TEACHER']} was trained on {theirs} classes and this data has {ours}: "
                          f"a teacher must answer in the data's classes; use one trained on this dataset")
    return model.requires_grad_(False), str(ckpt["config"].get("ARCH"))


def data_classes(cfg: dict[str, Any]) -> int | None:
    """The data's class count as far as it is known before any data work: the class folders of a
    DATA_PATH folder, else the named dataset's; None for an archive not yet extracted."""
    if not cfg["DATA_PATH"]:
        return DATASET_CLASSES.get(cfg["DATASET"])
    train = user_path(cfg["DATA_PATH"]) / "train"
    return sum(1 for d in train.iterdir() if d.is_dir()) if train.is_dir() else None


class Distillation(nn.Module):
    """The student's loss, (the two heads' logits, labels, the input batch) -> loss.

    hard, DeiT's Eq. 3: 1/2 CE(class head, y) + 1/2 CE(distillation head, the teacher's argmax).
    soft, DeiT's Eq. 2 on the distillation head (as DeiT's code applies it):
        (1 - lambda) CE(class head, y) + lambda tau^2 KL(softmax(teacher / tau) || softmax(dist / tau)).
    CE on y is the recipe's (label smoothing, soft mixup/cutmix targets); the teacher's label is
    not smoothed (DeiT smooths only the true labels). The KL is summed over classes and averaged
    over the batch; DeiT's code divides its sum by batch x classes instead, which scales lambda
    down by the class count.
    """

    def __init__(self, teacher: nn.Module, kind: str, *, tau: float, alpha: float, label_smoothing: float,
                 name: str = "teacher") -> None:
        super().__init__()
        if kind not in KINDS[1:]:
            raise ValueError(f"kind must be one of {', '.join(KINDS[1:])}, got {kind!r}")
        self.teacher, self.kind, self.tau, self.alpha, self.name = teacher.eval(), kind, tau, alpha, name
        self.labels = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.cost = TeacherCost(name)

    def forward(self, out: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        cls_logits, dist_logits = out  # (B, C) each: the student in training mode
        with torch.no_grad():
            self.cost.start_teacher(x.device)
            teacher_logits = self.teacher(x).float()  # (B, C), in the student's autocast
            self.cost.end_teacher(x.device)
        base = self.labels(cls_logits, y)
        if self.kind == "hard":
            return 0.5 * base + 0.5 * F.cross_entropy(dist_logits, teacher_logits.argmax(1))
        t = self.tau
        kl = F.kl_div(F.log_softmax(dist_logits.float() / t, 1), F.log_softmax(teacher_logits / t, 1),
                      reduction="batchmean", log_target=True)
        return (1 - self.alpha) * base + self.alpha * t * t * kl

    def train(self, mode: bool = True) -> "Distillation":
        super().train(mode)
        self.teacher.eval()  # always: its BN statistics and dropout are the trained net's
        return self


class TeacherCost:
    """What the teacher costs a training step, measured once, over TIMED_STEPS steps after the first,
    and printed in one line (rank 0). No host-device sync: on CUDA, events recorded in the stream
    and read once the last is done (``Event.query`` does not wait); elsewhere the host's clock (a
    CPU's work is done when its call returns). A step runs from one loss call to the next: the
    data, the forward, the backward and the optimiser."""

    def __init__(self, name: str) -> None:
        self.name, self.calls, self.teacher_marks, self.steps, self.line = name, 0, [], [], ""

    def start_teacher(self, device: torch.device) -> None:
        self.calls += 1
        if 2 <= self.calls <= TIMED_STEPS + 2:  # the step boundaries of steps 2 .. TIMED_STEPS + 1
            self.steps.append(_mark(device))
        if 2 <= self.calls <= TIMED_STEPS + 1:
            self.teacher_marks.append(_mark(device))
        if len(self.steps) == TIMED_STEPS + 1 and not self.line and _done(self.steps[-1]):
            self._report()

    def end_teacher(self, device: torch.device) -> None:
        if 2 <= self.calls <= TIMED_STEPS + 1:
            self.teacher_marks.append(_mark(device))

    def _report(self) -> None:
        marks = self.teacher_marks
        teacher = sum(_seconds(marks[i], marks[i + 1]) for i in range(0, len(marks), 2)) / TIMED_STEPS
        step = _seconds(self.steps[0], self.steps[-1]) / TIMED_STEPS
        self.line = (f"teacher {self.name}: {teacher * 1e3:.1f} ms of {step * 1e3:.1f} ms per step "
                     f"({teacher / max(step, 1e-12):.0%}), over steps 2-{TIMED_STEPS + 1}")
        if system.dist_env()[0] == 0:
            print(self.line, flush=True)


def _mark(device: torch.device) -> Any:
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def _done(mark: Any) -> bool:
    return mark.query() if isinstance(mark, torch.cuda.Event) else True


def _seconds(start: Any, end: Any) -> float:
    return start.elapsed_time(end) / 1e3 if isinstance(start, torch.cuda.Event) else end - start
