"""Optimisers with parameter groups, the learning-rate schedules, and weight averaging (EMA).

A train.py can give parameters their own options without editing this file: it passes
``param_options(name, parameter, cfg) -> dict | None`` (e.g. ``{"weight_decay": 0.0}`` for ViT's
position embedding, ``{"lr_scale": 0.1}`` for a pre-trained backbone; ``cfg`` holds the run's
constants, so the choice can be one of them), applied after the DECAY_NORM_AND_BIAS rule. Parameters with the same options share one optimiser group.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

ParamOptions = Callable[[str, nn.Parameter, dict[str, Any]], "dict[str, float] | None"]


def param_groups(model: nn.Module, cfg: dict[str, Any],
                 param_options: ParamOptions | None = None) -> list[dict[str, Any]]:
    """Groups of parameters with the same ``weight_decay`` and ``lr_scale``, in model order."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        opts = {"weight_decay": cfg["WEIGHT_DECAY"], "lr_scale": 1.0}
        # 1-D tensors are biases and norm scales/shifts: decaying them only shrinks the
        # normalisation (Goyal et al. 2017; "Bag of Tricks", He et al. 2018, Sec. 3.1).
        if p.ndim <= 1 and not cfg["DECAY_NORM_AND_BIAS"]:
            opts["weight_decay"] = 0.0
        extra = param_options(name, p, cfg) if param_options is not None else None
        unknown = set(extra or {}) - set(opts)
        if unknown:
            raise ValueError(f"param_options({name!r}) returned {sorted(unknown)}; it may set "
                             f"weight_decay and lr_scale")
        opts.update(extra or {})
        groups.setdefault((opts["weight_decay"], opts["lr_scale"]), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr_scale": scale} for (wd, scale), ps in groups.items()]


def build_optimizer(model: nn.Module, cfg: dict[str, Any],
                    param_options: ParamOptions | None = None) -> torch.optim.Optimizer:
    """SGD (optionally Nesterov), Adam, AdamW or RMSprop over ``param_groups``, with the fastest
    update kernels the parameters' device has (``kernels``)."""
    groups, lr, kind = param_groups(model, cfg, param_options), cfg["LEARNING_RATE"], cfg["OPTIMIZER"]
    fast = kernels([p for g in groups for p in g["params"]], kind)
    opt: torch.optim.Optimizer
    if kind == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg["MOMENTUM"],
                              nesterov=cfg["NESTEROV"] and cfg["MOMENTUM"] > 0, **fast)
    elif kind in ("adam", "adamw"):
        # torch's Adam adds weight decay to the gradient (L2); AdamW decays the weights
        # directly (Loshchilov & Hutter, arXiv:1711.05101), which is what ViT/DeiT recipes mean.
        adam = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
        opt = adam(groups, lr=lr, betas=tuple(cfg["ADAM_BETAS"]), **fast)
    elif kind == "rmsprop":
        # The Inception/MobileNet recipes (TensorFlow): decay 0.9, momentum 0.9, epsilon 1.0.
        # TensorFlow adds epsilon inside the square root and torch outside it, so the same
        # RMSPROP_EPS is not the same optimiser: a train.py states which value it means.
        opt = torch.optim.RMSprop(groups, lr=lr, alpha=cfg["RMSPROP_ALPHA"], eps=cfg["RMSPROP_EPS"],
                                  momentum=cfg["MOMENTUM"])
    else:
        raise ValueError(f"unknown OPTIMIZER {kind!r}")
    opt.register_load_state_dict_pre_hook(_keep_kernels)
    return opt


FUSED_OPTIMIZERS = ("sgd", "adam", "adamw")  # those with a fused CUDA kernel in torch


def kernels(params: list[nn.Parameter], kind: str) -> dict[str, bool]:
    """The optimiser's kernel choice: ``fused=True`` on CUDA, torch's default elsewhere.

    A fused kernel updates every parameter (and its momentum or moments) in one pass over
    them, where the default on CUDA (``foreach``) launches kernels for each operation of the
    update in turn, each reading and writing every tensor again. Only where every parameter is
    a floating CUDA tensor, which fused kernels require. Elsewhere torch's default stands:
    foreach where the device has those kernels, and on the CPU the plain per-tensor loop,
    whose results the fused CPU kernel does not repeat bit for bit (a CPU run stays exactly
    what it was).
    """
    if kind in FUSED_OPTIMIZERS and params and all(p.is_cuda and p.is_floating_point() for p in params):
        return {"fused": True}
    return {}


def _keep_kernels(opt: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's optimiser state with this optimiser's own kernel choice.

    torch's load_state_dict takes every group option from the file, ``fused`` and ``foreach``
    included: a run saved on the CPU and resumed on a GPU would lose its fused kernel, and one
    saved on a GPU would take the fused kernel to the CPU. The choice belongs to the device
    the run resumes on; the state itself (momenta, moments, steps) is the file's.
    """
    own = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in opt.param_groups]
    if len(own) != len(state["param_groups"]):  # torch refuses this load with its own message
        return state
    return {**state, "param_groups": [{**saved, **mine} for saved, mine in zip(state["param_groups"], own)]}


class Schedule:
    """Learning rate as a function of the global step, set before every step.

    step:     LEARNING_RATE x DECAY_FACTOR ** (epoch // DECAY_STEP_SIZE)   (the papers' recipe)
    plateau:  x DECAY_FACTOR each time val top-1 stalls PLATEAU_PATIENCE epochs (ResNet Sec. 3.4)
    cosine:   linear warm-up from 0, then cosine to 0 (Loshchilov & Hutter, arXiv:1608.03983)
    onecycle: cosine warm-up from LR/25, cosine down to LR/25e4 (Smith, arXiv:1708.07120)
    constant: LEARNING_RATE throughout
    Each parameter group gets the rate times its ``lr_scale``.

    Not torch.optim.lr_scheduler: those are stateful step counters, whereas a pure function of
    the global step resumes exactly at any step, stretches when NUM_EPOCHS grows on a resume,
    and needs no scheduler state beyond plateau's three numbers.
    """

    def __init__(self, cfg: dict[str, Any], steps_per_epoch: int) -> None:
        self.kind, self.base = cfg["LR_SCHEDULE"], cfg["LEARNING_RATE"]
        self.steps_per_epoch = steps_per_epoch
        self.total = cfg["NUM_EPOCHS"] * steps_per_epoch
        self.warmup = min(int(cfg.get("WARMUP_EPOCHS", 0) * steps_per_epoch), self.total - 1)
        self.factor = cfg.get("LEARNING_RATE_DECAY_FACTOR", 1.0)
        self.step_size = cfg.get("LEARNING_RATE_DECAY_STEP_SIZE", 1)
        self.patience = cfg.get("PLATEAU_PATIENCE", 1)
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
            g["lr"] = lr * g.get("lr_scale", 1.0)
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


class EMA(nn.Module):
    """An exponential moving average of a model's weights and buffers (BN statistics):
    ema <- decay x ema + (1 - decay) x model after every step, starting from the model's weights.

    What torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn(decay) and use_buffers
    computes, bit for bit (the same foreach lerp; integer buffers such as BN's batch count the
    same float expression, truncated), without its host-device syncs: AveragedModel keeps its
    update count on the CPU, copies it to the device every update and branches on it. Here the
    count (``n_averaged``, 1 after the copy at creation, as AveragedModel's) lives on the
    model's device and is never read back. ``.module`` is the averaged copy: checkpoints hold
    its ``state_dict()``, the same keys as AveragedModel's ``.module``.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model)  # the average starts from the weights
        device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
        self.register_buffer("n_averaged", torch.ones((), dtype=torch.long, device=device))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights and buffers; nothing read back."""
        pairs = list(zip([*self.module.parameters(), *self.module.buffers()],
                         [*model.parameters(), *model.buffers()], strict=True))
        floats = [(a.detach(), m.detach()) for a, m in pairs if a.is_floating_point() or a.is_complex()]
        if floats:
            averaged, current = zip(*floats)
            torch._foreach_lerp_(list(averaged), list(current), 1 - self.decay)
        for a, m in pairs:  # integer buffers (BN's num_batches_tracked): AveragedModel's rule
            if not (a.is_floating_point() or a.is_complex()):
                a.copy_(a * self.decay + m * (1 - self.decay))
        self.n_averaged += 1


def ema_model(model: nn.Module, decay: float) -> EMA:
    """An exponential moving average of the weights and BN statistics, updated every step.

    Polyak & Juditsky 1992; for image classifiers since Inception-v3 (Szegedy et al.,
    arXiv:1512.00567). The average starts from the weights, and every later update is an EMA
    step (``EMA``: no host-device sync). Checkpoints hold ``.module.state_dict()``: the averaged
    model's own keys.
    """
    ema = EMA(model, decay)
    ema.module.eval()
    return ema
