"""The repository's models by ARCH name: their folder, paper year, and a checkpoint's network rebuilt.

Every ``<folder>/model.py`` has a ``MODELS`` dict whose names are unique across folders, and
every ``<folder>/train.py`` a ``build_model(cfg, num_classes)``; so a checkpoint's constants
(``config["ARCH"]``) name the folder whose train.py rebuilds its network. Folders are found
by listing, so a new architecture is known by existing (as in tests/test_models.py).
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from common import checkpoint as ckpt_lib
from common.checkpoint import TrainingError

REPO = Path(__file__).resolve().parents[1]

# Paper and year of each architecture folder (the README's table); a builder-name prefix can
# name a later paper kept in the same folder.
PAPERS: dict[str, tuple[str, int]] = {
    "alexnet": ("Krizhevsky et al., NeurIPS 2012", 2012),
    "vgg": ("Simonyan & Zisserman, arXiv:1409.1556", 2014),
    "resnet": ("He et al., arXiv:1512.03385", 2015),
    "mobilenet": ("Howard et al., arXiv:1704.04861", 2017),
    "vit": ("Dosovitskiy et al., arXiv:2010.11929", 2020),
}
PAPER_BY_PREFIX: dict[str, tuple[str, int]] = {
    "mobilenet_v2": ("Sandler et al., arXiv:1801.04381", 2018),
    "deit": ("Touvron et al. (DeiT), arXiv:2012.12877", 2020),
}
UNKNOWN_PAPER = ("?", 0)


# Imagenette's classes: its WordNet ids and the ImageNet names of those synsets.
CLASS_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}


def class_name(wnid: str) -> str:
    """A class's name (an unknown id, or a folder that is already a name, is shown as it is)."""
    return CLASS_NAMES.get(wnid, wnid)


def models() -> dict[str, dict[str, Callable[..., nn.Module]]]:
    """{folder: its model.py's MODELS} for every ``*/model.py`` of the repository, in name order."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return {p.parent.name: importlib.import_module(f"{p.parent.name}.model").MODELS
            for p in sorted(REPO.glob("*/model.py"))}


@cache
def folders() -> dict[str, str]:
    """ARCH name -> the folder whose model.py MODELS holds it."""
    return {name: folder for folder, builders in models().items() for name in builders}


def folder_of(arch: str) -> str | None:
    return folders().get(arch)


def paper(folder: str, name: str) -> tuple[str, int]:
    """(paper, year) of a builder: its prefix's if listed, else its folder's, else ("?", 0)."""
    for prefix, entry in PAPER_BY_PREFIX.items():
        if name.startswith(prefix):
            return entry
    return PAPERS.get(folder, UNKNOWN_PAPER)


def year_of(arch: str) -> int | None:
    folder = folder_of(arch)
    return paper(folder, arch)[1] if folder else None


def device(pref: str = "auto", flag: str = "--device") -> torch.device:
    """A device for using a model, opened: auto is the GPU if there is one, else the CPU (no
    warning: evaluating on a CPU is no mistake); anything else as DEVICE takes it. A device that
    cannot be used is a ConfigError naming ``flag``, the option that gave it."""
    from common import system
    from common.config import ConfigError

    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if pref.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("no CUDA GPU is visible")
        dev = system.pick_device(pref, 0)
        torch.empty(0, device=dev)  # opened: an index past the GPU count fails here, not later
    except (RuntimeError, AssertionError, ConfigError) as e:
        raise ConfigError(f"{flag} {pref}: {str(e).splitlines()[0]}; use {flag} cpu, auto, cuda or "
                          f"cuda:N with N below the GPU count") from None
    return dev


def build(cfg: dict[str, Any], num_classes: int, device: torch.device | str = "cpu") -> nn.Module:
    """The network ``cfg`` describes, by its folder's train.build_model, on ``device``.

    RESUME is set for the call: the weights will come from a checkpoint (or are not wanted, on
    the meta device), so a builder that copies weights in when a run starts (VGG's INIT_FROM)
    does not read them."""
    arch = cfg.get("ARCH")
    folder = folder_of(str(arch))
    if folder is None:
        raise TrainingError(f"ARCH={arch!r} is not a model of this repository (known: "
                            f"{', '.join(sorted(folders())) or 'none'}): the checkpoint was made by "
                            f"another version or project.")
    train = importlib.import_module(f"{folder}.train")
    with torch.device(device):
        return train.build_model({**cfg, "RESUME": cfg.get("RESUME") or "(rebuilt)"}, num_classes)


def load_model(path: Path, device: torch.device | str = "cpu",
               constant: str = "CHECKPOINT") -> tuple[nn.Module, dict[str, Any]]:
    """(the checkpoint's network with its weights, in eval mode, the checkpoint)."""
    ckpt = ckpt_lib.load_checkpoint(path, constant)
    cfg = ckpt["config"]
    num_classes = ckpt.get("num_classes") or len(ckpt.get("classes") or []) or 10
    model = build(cfg, num_classes)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise TrainingError(f"{constant}={path} does not fit today's {cfg.get('ARCH')} "
                            f"({str(e).splitlines()[0]} ...): the model code changed since it was saved.") from None
    model = model.to(device)
    if cfg.get("CHANNELS_LAST"):  # as the trainer ran it: the same kernels, the same bf16 roundings
        model = model.to(memory_format=torch.channels_last)
    return model.eval(), ckpt
