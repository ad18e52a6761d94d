"""Start from torchvision's ImageNet weights (PRETRAINED=True): download, rename, check, load.

A model.py whose builders share an architecture with a torchvision model says so in two names:

    TORCHVISION = {"resnet50": ("resnet50", {"STRIDE_IN_1X1": False})}  # ours -> torchvision's,
    def from_torchvision(state): ...                                     # (+ constants it needs)

``TORCHVISION`` maps a builder of ours to a torchvision builder (a plain string, or the string
and the constants the weights assume: torchvision's ResNet-50 strides on the 3x3, "v1.5");
``from_torchvision`` renames torchvision's state_dict into ours. Everything that can be wrong
is found on the meta device before any download (no such model, a constant the weights
contradict, a WIDTH that changes a shape), with one line that says what to change. The weights
are downloaded only when PRETRAINED asks for them, into torch's cache (TORCH_HOME, by default
~/.cache/torch/hub/checkpoints), and reused from there offline.

The classifier keeps its own initialisation when the class count is not ImageNet's 1,000
(Imagenette: 10): the only tensors allowed to differ in shape are those whose first dimension
is the class count, and those a model adapts itself when it loads them (it lists their names in
``resized_on_load``: a ViT interpolates 224 px position embeddings to its own grid, Sec. 3.2).
"""
from __future__ import annotations

import pickle
import urllib.error
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torchvision

from common.config import ConfigError
from common.datasets import DataError

State = dict[str, torch.Tensor]
Rename = Callable[[State], State]
Table = Mapping[str, "str | tuple[str, dict[str, Any]]"]
IMAGENET_CLASSES = 1000


def entry(table: Table, arch: str) -> tuple[str, dict[str, Any]]:
    """(torchvision builder name, the constants its weights assume) for our ``arch``."""
    if arch not in table:
        have = ", ".join(table) or "none of this file's models"
        raise ConfigError(f"PRETRAINED=True: torchvision has no ImageNet weights for ARCH={arch!r} "
                          f"(weights exist for {have}); choose one of those or set PRETRAINED=False")
    value = table[arch]
    return (value, {}) if isinstance(value, str) else (value[0], dict(value[1]))


def check(cfg: dict[str, Any], model: nn.Module, table: Table, mapping: Rename) -> str:
    """Before any download, on ``model`` as built on the meta device: the weights fit. Returns
    the torchvision name."""
    arch = cfg.get("ARCH", "")
    tv_name, needs = entry(table, arch)
    wrong = [f"--{k}={v!r}" for k, v in needs.items() if cfg.get(k) != v]
    if wrong:
        raise ConfigError(f"PRETRAINED=True: torchvision's {tv_name} weights assume {' '.join(wrong)} "
                          f"(see the TORCHVISION table in the model.py); add that to the command")
    with torch.device("meta"):
        tv_model = torchvision.models.get_model(tv_name, weights=None)
    fit_into(model, mapping(tv_model.state_dict()), f"torchvision's {tv_name}", check_only=True)
    return tv_name


def fit_into(model: nn.Module, state: State, what: str, check_only: bool = False) -> list[str]:
    """Load ``state`` into ``model`` (or only check that it fits); returns the names kept at the
    model's own initialisation (the classifier, when the class counts differ)."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        # A mapping that misses a name is this project's bug, not the user's: say which names.
        raise ConfigError(f"{what} does not map onto this model: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]} (a bug in the model.py's from_torchvision)")
    head = [k for k, v in state.items() if v.shape != own[k].shape and v.ndim >= 1
            and v.shape[0] == IMAGENET_CLASSES and v.shape[1:] == own[k].shape[1:]]
    adapted = set(getattr(model, "resized_on_load", ()))
    other = [k for k, v in state.items() if v.shape != own[k].shape and k not in head and k not in adapted]
    if other:
        k = other[0]
        raise ConfigError(f"{what}'s {k} is {tuple(state[k].shape)}, this model's is {tuple(own[k].shape)}: "
                          f"its weights need the network at its published size (WIDTH and similar "
                          f"constants at their defaults)")
    if not check_only:
        model.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
    return head


def download(tv_name: str) -> State:
    """torchvision's default ImageNet weights for ``tv_name``, from torch's cache or the network."""
    weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    try:
        return weights.get_state_dict(progress=True, weights_only=True)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        raise DataError(f"could not download torchvision's {tv_name} weights from {weights.url} "
                        f"({getattr(e, 'reason', e)}): run once with network access (the file is kept in "
                        f"{torch.hub.get_dir()}/checkpoints), copy it there, or set PRETRAINED=False") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # a truncated or foreign file
        path = f"{torch.hub.get_dir()}/checkpoints/{weights.url.rsplit('/', 1)[-1]}"
        raise DataError(f"torchvision's {tv_name} weights at {path} cannot be read ({str(e).splitlines()[0]}): "
                        f"delete that file and run again to download it afresh") from None


def load_torchvision(model: nn.Module, cfg: dict[str, Any], table: Table, mapping: Rename) -> list[str]:
    """Initialise ``model`` from torchvision's ImageNet weights of the matching builder; returns
    the names kept at their own initialisation (the classifier for a new class count)."""
    tv_name = check(cfg, model, table, mapping)
    return fit_into(model, mapping(download(tv_name)), f"torchvision's {tv_name}")
