"""common/figures.py: the activation figure, and a run's figures for any model (a ViT stand-in
here: the figures need only ``attention_maps`` and ``pos_embedding``, found by duck typing)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from PIL import Image

from common import figures, trainer
from common.cache import ImageSet
from common.loader import BatchLoader
from common.trainer import evaluate

CLASSES = ["n01440764", "n03888257", "n99999999"]  # tench, parachute, and an id no table knows


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.load()  # a truncated PNG fails here
        return im.size


class TinyViT(nn.Module):
    """A stand-in with a ViT's interface: a patch-embedding conv, a class token, a (1, 1 + N, D)
    ``pos_embedding``, and ``attention_maps(x) -> [(B, heads, T, T)]`` (here softmaxed token
    similarities, one per "layer")."""

    def __init__(self, num_classes: int = 3, dim: int = 8, patch: int = 4, side: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        n = (side // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 1 + n, dim))
        self.head = nn.Linear(dim, num_classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        return torch.cat([self.cls_token.expand(len(x), -1, -1), t], 1) + self.pos_embedding

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        t = self.tokens(x)
        a = (t @ t.transpose(1, 2)).softmax(-1)  # (B, T, T)
        return [a[:, None].expand(-1, 2, -1, -1)] * 3  # 3 layers of 2 heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(x)[:, 0])


def _loader(n: int = 6, side: int = 16) -> BatchLoader:
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=g),
                    torch.arange(n) % len(CLASSES))
    return BatchLoader(data, 4, train=False, image_dim=side)


def test_activation_figure(tmp_path: Path) -> None:
    figures.main(["activations", "--out", str(tmp_path / "act.png")])
    assert _size(tmp_path / "act.png") == (1000, 400)


def test_confusion_matrix_counts_true_against_predicted() -> None:
    m = trainer.confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def _confusion(model: nn.Module, loader: BatchLoader) -> torch.Tensor:
    """What the trainer's last evaluation hands to draw_run_figures."""
    return evaluate(model, loader, torch.autocast("cpu", enabled=False), confusion_classes=len(CLASSES))["confusion"]


def test_the_evaluation_counts_every_image_once_in_the_confusion_matrix() -> None:
    """One pass gives both the accuracy and the figure's counts, and they agree."""
    torch.manual_seed(0)
    loader = _loader(n=10)
    result = evaluate(TinyViT(), loader, torch.autocast("cpu", enabled=False), confusion_classes=len(CLASSES))
    m = result["confusion"]
    assert m.shape == (3, 3) and int(m.sum()) == result["images"] == 10
    assert int(m.trace()) == round(result["top1"] * 10)
    assert m.sum(1).tolist() == [4, 3, 3]  # each image counted under its true class


def test_a_vit_gets_all_four_figures_and_a_cnn_two(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vit_dir, cnn_dir = tmp_path / "vit", tmp_path / "cnn"
    vit_dir.mkdir(), cnn_dir.mkdir()
    loader = _loader()
    vit = TinyViT()
    drawn = figures.draw_run_figures(vit, loader, CLASSES, vit_dir, _confusion(vit, loader))
    sizes = {p.name: _size(p) for p in drawn}
    assert sizes == {"confusion.png": (700, 600), "filters.png": (600, 600), "attention.png": (800, 400),
                     "positions.png": (600, 600)}
    cnn = nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3))
    drawn = figures.draw_run_figures(cnn, loader, CLASSES, cnn_dir, _confusion(cnn, loader))
    assert sorted(p.name for p in drawn) == ["confusion.png", "filters.png"]


def test_rollout_of_uniform_attention_is_uniform_and_rows_sum_to_one() -> None:
    t = 5
    uniform = torch.full((2, 3, t, t), 1 / t)
    roll = figures.attention_rollout([uniform] * 4)
    assert roll.shape == (2, t, t) and torch.allclose(roll.sum(-1), torch.ones(2, t))
    assert torch.allclose(roll, torch.full_like(roll, 1 / t), atol=0.1)  # 0.5^4 of the identity is left


def test_a_figure_that_fails_warns_in_one_line_and_the_others_are_still_drawn(tmp_path: Path, capsys) -> None:
    class Broken(TinyViT):
        def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
            raise RuntimeError("no maps today\nsecond line")

    broken, loader = Broken(), _loader()
    drawn = figures.draw_run_figures(broken, loader, CLASSES, tmp_path, _confusion(broken, loader))
    assert sorted(p.name for p in drawn) == ["confusion.png", "filters.png", "positions.png"]
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["warning: could not draw attention.png (RuntimeError: no maps today); the run itself is saved"]
