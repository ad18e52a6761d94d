"""Figures the history needs: activation functions, and per run what the network learnt.

    python -m common.figures activations --out alexnet/activations.png
    python -m common.figures run runs/vgg11_bn/<run>/best.pt [--data PATH] [--out DIR]  # a run's, again

At the end of a run its train.py (common.script, rank 0) calls ``draw_run_figures``, which writes beside
curves.png, each from one pass over the validation images already in memory:

  confusion.png   the confusion matrix, classes by name (Imagenette's WordNet ids translated)
  filters.png     the first convolution's kernels as images (AlexNet Sec. 6.1, Fig. 3); for a
                  ViT its patch-embedding convolution (Dosovitskiy et al., arXiv:2010.11929, Fig. 7 left)
  attention.png   (models with ``attention_maps(x) -> [(B, heads, T, T)]``) attention rollout on a
                  few validation images (ViT Appendix D.8, Fig. 6)
  positions.png   (models with a ``pos_embedding`` parameter (1, [1 +] N, D)) the cosine
                  similarity of each patch's position embedding with every other's (ViT Fig. 7 centre)

A figure that fails to draw warns in one line; the run and its checkpoints are never lost to one.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import errors
from common.files import atomic_write, rel
from common.loader import IMAGENET_MEAN, IMAGENET_STD, BatchLoader
from common.registry import class_name

DPI = 100  # every figure is figsize x DPI pixels exactly (no tight bounding box): tests pin sizes
SIZES = {"activations": (10, 4), "confusion": (7, 6), "filters": (6, 6), "attention": (8, 4),
         "positions": (6, 6)}
N_FILTERS = 96  # AlexNet's Fig. 3 shows conv1's 96 kernels; a ViT's 768 are cut to these
N_ATTENTION_IMAGES = 4


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    atomic_write(path, lambda f: fig.savefig(f, dpi=DPI, format="png"))
    _pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------- activation functions

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,  # LeCun et al. 1998's squashing functions ...
    "tanh": torch.tanh,
    "ReLU": F.relu,  # AlexNet Sec. 3.1: "six times faster" to 25 % training error than tanh (Fig. 1)
    "GELU": F.gelu,  # Hendrycks & Gimpel 2016 (arXiv:1606.08415), ViT's MLP
}


def plot_activations(out: Path) -> Path:
    """The functions and their derivatives (by autograd) on [-4, 4]: why ReLU trains faster
    (its gradient does not vanish for positive inputs) and what GELU smooths."""
    plt = _pyplot()
    x = torch.linspace(-4, 4, 801, requires_grad=True)
    fig, (ax_f, ax_d) = plt.subplots(1, 2, figsize=SIZES["activations"])
    for name, f in ACTIVATIONS.items():
        y = f(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
        ax_f.plot(x.detach().numpy(), y.detach().numpy(), label=name)
        ax_d.plot(x.detach().numpy(), dy.numpy(), label=name)
    for ax, title in ((ax_f, "f(x)"), (ax_d, "f'(x)")):
        ax.set_title(title)
        ax.set_xlabel("x")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_f.set_ylim(-1.5, 4)
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- confusion matrix

def plot_confusion(matrix: torch.Tensor, classes: Sequence[str], out: Path, title: str = "") -> Path:
    """Rows: the true class; columns: the prediction; shade: the row's fraction, counts written."""
    plt = _pyplot()
    n = len(classes)
    frac = matrix.double() / matrix.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=SIZES["confusion"])
    ax.imshow(frac.numpy(), cmap="Blues", vmin=0, vmax=1)
    names = [class_name(c) for c in classes]
    if n <= 20:
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total, right = int(matrix.sum()), int(matrix.trace())
    ax.set_title(title or f"{right} of {total} right ({right / max(total, 1):.1%})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- first-layer filters

def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first Conv2d in registration order: conv1, or a ViT's patch embedding."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m
    raise ValueError("the model has no Conv2d")


def tile(images: torch.Tensor, cols: int, gap: int = 1, fill: float = 1.0) -> torch.Tensor:
    """(n, h, w, c) -> one (rows*(h+gap)-gap, cols*(w+gap)-gap, c) image, row by row."""
    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    out = torch.full((rows * (h + gap) - gap, cols * (w + gap) - gap, c), fill)
    for k in range(n):
        r, q = divmod(k, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = images[k]
    return out


def plot_filters(weight: torch.Tensor, out: Path, title: str = "") -> Path:
    """Kernels (out, in, k, k) as a grid, each stretched to [0, 1] on its own (Fig. 3 of AlexNet
    shows them so); RGB for a 3-channel input, else the first input channel in grey."""
    plt = _pyplot()
    w = weight.detach().float().cpu()[:N_FILTERS]
    w = w[:, :3] if w.shape[1] >= 3 else w[:, :1]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1)  # (n, k, k, c)
    grid = tile(w, cols=math.ceil(math.sqrt(len(w))))
    fig, ax = plt.subplots(figsize=SIZES["filters"])
    ax.imshow((grid.squeeze(-1) if grid.shape[-1] == 1 else grid).numpy(), cmap="gray", interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"first layer: {len(w)} of {weight.shape[0]} kernels, "
                          f"{weight.shape[-2]}x{weight.shape[-1]}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- ViT

def _square_tokens(t: int) -> tuple[int, int]:
    """(extra tokens in front, side of the patch grid) of a sequence of t tokens: a square
    number of patches, after no token, a class token, or a class and a distillation token (DeiT;
    a square plus 1 is never a square plus 2 or 0, so the count is unambiguous)."""
    for extra in (0, 1, 2):
        side = math.isqrt(t - extra)
        if side * side == t - extra and side > 0:
            return extra, side
    raise ValueError(f"{t} tokens are not a square grid of patches (after 0, 1 or 2 extra tokens)")


def attention_rollout(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020, arXiv:2005.00928; ViT Appendix D.8): heads
    averaged, the residual added as 0.5 I + 0.5 A, rows renormalised, layers multiplied.
    (B, heads, T, T) per layer -> (B, T, T): how much each token draws from each input token."""
    rollout = None
    for a in maps:
        a = a.float().mean(1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    if rollout is None:
        raise ValueError("attention_maps returned no layers")
    return rollout


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    """Normalised (B, 3, H, W) -> (B, H, W, 3) in [0, 1] for display."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).cpu()


@torch.no_grad()
def plot_attention(model: nn.Module, x: torch.Tensor, out: Path) -> Path:
    """Each image above its rollout map (the class token's, or for a model without one the
    mean over tokens), upsampled to the image and laid over it."""
    plt = _pyplot()
    was_training = model.training
    model.eval()
    maps = model.attention_maps(x)
    model.train(was_training)
    roll = attention_rollout(maps)
    extra, side = _square_tokens(roll.shape[-1])
    weights = roll[:, 0, extra:] if extra else roll.mean(1)
    heat = weights.reshape(-1, 1, side, side)
    heat = F.interpolate(heat, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0].cpu()
    heat = heat / heat.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    images = _unnormalise(x)
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=SIZES["attention"], squeeze=False)
    for k in range(n):
        axes[0, k].imshow(images[k].numpy())
        axes[1, k].imshow((images[k] * heat[k, ..., None]).numpy())
        for ax in axes[:, k]:
            ax.set_axis_off()
    fig.suptitle("attention rollout (Abnar & Zuidema 2020; ViT Fig. 6)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def plot_position_similarity(pos_embedding: torch.Tensor, out: Path) -> Path:
    """ViT Fig. 7 (centre): tile (i, j) shows the cosine similarity between patch (i, j)'s
    position embedding and every patch's; learnt embeddings show rows and columns."""
    plt = _pyplot()
    pe = pos_embedding.detach().float().cpu().reshape(-1, pos_embedding.shape[-1])  # (T, D)
    extra, side = _square_tokens(len(pe))
    pe = F.normalize(pe[extra:], dim=1)
    sim = (pe @ pe.T).view(side * side, side, side, 1)  # tile k: patch k against every patch
    grid = tile(sim, cols=side, fill=float("nan"))[..., 0]
    fig, ax = plt.subplots(figsize=SIZES["positions"])
    shown = ax.imshow(grid.numpy(), cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"position embedding similarity ({side}x{side} patches)", fontsize=10)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, out)


# ----------------------------------------------------------------------------- a run's figures

def draw_run_figures(model: nn.Module, loader: BatchLoader, classes: Sequence[str], run_dir: Path,
                     confusion: torch.Tensor | None) -> list[Path]:
    """Every figure this model allows, beside curves.png; each failure warns in one line.

    ``loader``: the validation loader (a few of its images for the attention maps);
    ``confusion``: the (true, predicted) counts of the last evaluation (common.trainer.evaluate
    with ``confusion_classes``; every rank's images), or None to skip that figure."""
    drawn: list[Path] = []

    def attempt(name: str, draw: Callable[[Path], Path]) -> None:
        try:
            drawn.append(draw(run_dir / name))
        except Exception as e:  # noqa: BLE001 - a figure must never cost the run
            print(f"warning: could not draw {name} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                  f"the run itself is saved")

    if confusion is not None:
        attempt("confusion.png", lambda path: plot_confusion(confusion, classes, path))
    attempt("filters.png", lambda path: plot_filters(first_conv(model).weight, path))
    if callable(getattr(model, "attention_maps", None)):
        def attention(path: Path) -> Path:
            x, _ = next(iter(loader))  # four images in float32: no autocast needed
            return plot_attention(model, x[:N_ATTENTION_IMAGES], path)
        attempt("attention.png", attention)
    if isinstance(getattr(model, "pos_embedding", None), torch.Tensor):
        attempt("positions.png", lambda path: plot_position_similarity(model.pos_embedding, path))
    return drawn


def redraw_run(checkpoint: Path, data_path: str = "", device: str = "auto", out: Path | None = None) -> list[Path]:
    """A finished run's figures from its checkpoint, beside it or in ``out`` (for runs made
    before the trainer drew them). Data with other classes than the checkpoint's is refused."""
    from common import registry, system
    from common.evaluate import val_loader_for

    dev = registry.device(device)
    model, ckpt = registry.load_model(checkpoint, dev)
    from common.trainer import evaluate

    loader = val_loader_for(ckpt["config"], dev, data_path, ckpt=ckpt, what=str(checkpoint))
    autocast = system.autocast(dev, system.amp_mode(dev, ckpt["config"].get("AMP", "off")))
    if out:
        out.mkdir(parents=True, exist_ok=True)
    classes = ckpt.get("classes") or [str(i) for i in range(ckpt["num_classes"])]
    confusion = evaluate(model, loader, autocast, confusion_classes=len(classes))["confusion"]
    return draw_run_figures(model, loader, classes, out or checkpoint.parent, confusion)


@errors.entry_point
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    act = sub.add_parser("activations", help="sigmoid, tanh, ReLU, GELU and their derivatives")
    act.add_argument("--out", type=Path, default=Path("alexnet/activations.png"))
    run = sub.add_parser("run", help="a finished run's confusion matrix, filters (and ViT maps)")
    run.add_argument("checkpoint", type=Path)
    run.add_argument("--DATA_PATH", "--data", dest="data", default="", help="the dataset, if not the run's")
    run.add_argument("--device", default="auto")
    run.add_argument("--out", type=Path, default=None, help="folder for the figures (default: the run's)")
    args = p.parse_args(argv)
    from common.checkpoint import TrainingError
    from common.datasets import DataError

    try:
        paths = ([plot_activations(args.out)] if args.what == "activations"
                 else redraw_run(args.checkpoint, args.data, args.device, args.out))
    except (TrainingError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for path in paths:
        print(f"wrote {rel(path)}")


if __name__ == "__main__":
    main()
