"""The entry every model has in the tests' one list of models, and the meta-device counters."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Case:
    name: str  # the builder's name in its MODELS dict (variants with options: name-option)
    builder: Callable[..., nn.Module]
    tiny: dict[str, Any]  # kwargs that make the model small enough for a fast CPU step
    params: int  # parameter count at num_classes=1000
    macs: float  # multiply-adds of one 1x3xNxN forward at the native N, as the paper reports them
    macs_tol: float  # allowed |measured - macs|; each architecture says why its value
    tiny_input: int = 64  # side of the square input for the tiny model
    native_input: int = 224  # the paper's input side (AlexNet: 227), where MACs are compared


def build_meta(builder: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    """Build a full-size model on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return builder(**kwargs)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count_macs(m: nn.Module, size: int = 224) -> float:
    """Multiply-adds of one forward. FlopCounterMode counts 2 FLOPs per multiply-add for
    convolutions and matmuls (and nothing for BN, ReLU, pooling or additions)."""
    x = torch.empty(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        m(x)
    return counter.get_total_flops() / 2
