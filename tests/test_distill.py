"""DeiT's distillation (Touvron et al. 2020, arXiv:2012.12877, Sec. 4): the distillation token's
parameters, the hard and soft losses, the fused prediction, the teacher refused in one line before
any work, and a tiny distilled run of vit/train.py taught by a tiny ResNet run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import resnet.train
from common import compare, distill, recipe, script
from common.checkpoint import save_checkpoint
from tests.model_cases import build_meta, count_params
from vit import model as vit
from vit import train

CLASSES = [f"n{i:08d}" for i in range(10)]
TINY_VIT = {"image_size": 32, "patch_size": 8, "width": 16, "layers": 2, "heads": 2, "init": "deit"}


def save_teacher(path: Path, classes: list[str] = CLASSES) -> Path:
    """A checkpoint of a tiny ResNet-18 (resnet/train.py's tiny recipe), as a run would save it."""
    cfg, _ = script.configure(resnet.train, ["--RECIPE=tiny"], {**recipe.RULES, **resnet.train.RULES})
    model = resnet.train.build_model(cfg, len(classes))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 1, "step": 0,
                     "rng": {}, "config": cfg, "history": [], "num_classes": len(classes), "classes": classes},
                    path)
    return path


class Answers(nn.Module):
    """A teacher that answers ``label`` for every image, and keeps the batch it was shown."""

    def __init__(self, label: int, num_classes: int = 10) -> None:
        super().__init__()
        self.label, self.num_classes, self.seen = label, num_classes, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return F.one_hot(torch.full((len(x),), self.label), self.num_classes).float() * 5.0


def heads(batch: int = 6, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = (torch.randn(batch, 10, generator=g), torch.randn(batch, 10, generator=g))
    return out, torch.arange(batch) % 10, torch.randn(batch, 3, 8, 8, generator=g)


# --- the model


@pytest.mark.parametrize("plain,distilled", [("deit_tiny_16", "deit_tiny_distilled_16"),
                                             ("deit_small_16", "deit_small_distilled_16")])
def test_the_distillation_token_adds_one_token_its_position_and_one_head(plain: str, distilled: str) -> None:
    """On the meta device at 1000 classes: the distilled model has exactly one token (D), one
    position more (D: DeiT's and timm's pos_embed has num_patches + 2 positions) and one head
    (D x 1000 + 1000); the plain model is DeiT Table 1's 5M / 22M."""
    a, b = build_meta(vit.MODELS[plain]), build_meta(vit.MODELS[distilled])
    d = a.config.width
    assert count_params(b) - count_params(a) == d + d + d * 1000 + 1000
    assert b.dist_token.shape == (1, 1, d) and b.head_dist.weight.shape == (1000, d)
    assert b.pos_embedding.shape[1] == a.pos_embedding.shape[1] + 1
    table1 = {"deit_tiny_16": 5e6, "deit_small_16": 22e6}[plain]  # whole millions (Ti's 5.72 M printed "5M")
    assert 0 <= count_params(a) - table1 < 1e6


def test_fused_prediction_is_the_mean_of_the_two_heads_softmax() -> None:
    """DeiT Sec. 4: in training two heads; at test time "we add the softmax output by the two
    classifiers": the eval output's softmax is their mean (it is returned as a log)."""
    torch.manual_seed(0)
    m = vit.deit_tiny_distilled_16(num_classes=10, **TINY_VIT)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        cls_logits, dist_logits = m.train()(x)  # no dropout, no drop-path: the same function
        fused = m.eval()(x)
    assert not torch.allclose(cls_logits, dist_logits)
    assert torch.allclose(fused.softmax(1), (cls_logits.softmax(1) + dist_logits.softmax(1)) / 2, atol=1e-6)
    assert torch.allclose(fused.exp().sum(1), torch.ones(3), atol=1e-6)  # log-probabilities already


def test_a_distilled_model_resizes_with_both_tokens_kept() -> None:
    """Sec. 3.2's interpolation keeps both prefix tokens' positions and moves only the grid's."""
    torch.manual_seed(0)
    m = vit.deit_tiny_distilled_16(num_classes=10, **TINY_VIT).eval()
    before = m.pos_embedding.detach().clone()
    m.resize_pos_embedding(48)
    assert m.pos_embedding.shape == (1, 2 + 36, 16)
    assert torch.equal(m.pos_embedding.detach()[:, :2], before[:, :2])
    assert m(torch.randn(1, 3, 48, 48)).shape == (1, 10)


# --- the loss


def test_hard_distillation_targets_are_the_teachers_argmax() -> None:
    """DeiT's Eq. 3: 1/2 CE(class head, y) with the recipe's smoothing + 1/2 CE(distillation head,
    the teacher's argmax), unsmoothed; the teacher sees the student's very batch."""
    teacher = Answers(label=7)
    loss = distill.Distillation(teacher, "hard", tau=3.0, alpha=0.1, label_smoothing=0.1)
    (cls_logits, dist_logits), y, x = heads()
    want = 0.5 * F.cross_entropy(cls_logits, y, label_smoothing=0.1) + 0.5 * F.cross_entropy(
        dist_logits, torch.full((6,), 7))
    assert torch.allclose(loss((cls_logits, dist_logits), y, x), want)
    assert teacher.seen is x and not teacher.training
    soft_y = F.one_hot(y, 10).float() * 0.6 + 0.04  # mixup's soft targets reach the class head
    want = 0.5 * F.cross_entropy(cls_logits, soft_y, label_smoothing=0.1) + 0.5 * F.cross_entropy(
        dist_logits, torch.full((6,), 7))
    assert torch.allclose(loss((cls_logits, dist_logits), soft_y, x), want)


def test_soft_distillation_is_eq_2_by_hand() -> None:
    """DeiT's Eq. 2: (1 - lambda) CE(class head, y) + lambda tau^2 KL(teacher || distillation head),
    both softened at tau, the KL summed over classes and averaged over the batch."""
    tau, lam = 3.0, 0.1
    g = torch.Generator().manual_seed(1)
    teacher_logits = torch.randn(6, 10, generator=g)
    teacher = nn.Identity()
    loss = distill.Distillation(teacher, "soft", tau=tau, alpha=lam, label_smoothing=0.0)
    (cls_logits, dist_logits), y, _ = heads()
    p_t = (teacher_logits / tau).softmax(1)
    p_s = (dist_logits / tau).softmax(1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    ce = -cls_logits.log_softmax(1)[torch.arange(6), y].mean()
    want = (1 - lam) * ce + lam * tau**2 * kl
    assert torch.allclose(loss((cls_logits, dist_logits), y, teacher_logits), want, atol=1e-6)


# --- the teacher refused before any work


def _refused(argv: list[str], tmp_path: Path, capsys) -> tuple[int, str]:
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_:
        train.main([*argv, f"--DATA_DIR={data}", f"--RUNS_DIR={tmp_path / 'runs'}", "--DEVICE=cpu"])
    err = capsys.readouterr().err.strip()
    assert not data.exists() and not (tmp_path / "runs").exists()  # nothing downloaded, decoded or made
    assert len(err.splitlines()) == 1, err
    return exit_.value.code, err


def test_a_refused_teacher_gives_one_line(tmp_path: Path, capsys) -> None:
    not_a_checkpoint = tmp_path / "notes.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    five = save_teacher(tmp_path / "five" / "best.pt", CLASSES[:5])
    good = save_teacher(tmp_path / "good" / "best.pt")
    distilled = ["--ARCH=deit_tiny_distilled_16", "--DISTILLATION=hard"]
    cases = [
        ([*distilled, f"--TEACHER={tmp_path / 'missing.pt'}"], 1, "missing.pt: no such checkpoint file"),
        ([*distilled, f"--TEACHER={not_a_checkpoint}"], 1, "is not a checkpoint of this project"),
        ([*distilled, f"--TEACHER={five}"], 2, "was trained on 5 classes and this data has 10"),
        ([*distilled], 2, "DISTILLATION=hard needs a TEACHER"),
        (["--DISTILLATION=soft", f"--TEACHER={good}"], 2, "needs a distilled ARCH"),
        (["--ARCH=deit_tiny_distilled_16"], 2, "has a distillation head, which learns from a teacher"),
        ([f"--TEACHER={good}"], 2, "DISTILLATION=none"),
        (["--DISTILLATION=warm"], 2, "DISTILLATION='warm' is not possible"),
    ]
    for argv, code, message in cases:
        got, err = _refused(argv, tmp_path, capsys)
        assert (got, message in err) == (code, True), (argv, err)


# --- a tiny distilled run, end to end


def test_a_tiny_run_taught_by_a_tiny_resnet_run(tiny_imagenette: Path, tmp_path: Path, capsys,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny ResNet run's best.pt teaches a tiny distilled DeiT through vit/train.py (hard
    distillation, the tiny recipe's mixup and RandAugment): the teacher's cost is printed once,
    the student's checkpoint holds no teacher, and compare's label names the teacher."""
    where = [f"--DATA_PATH={tiny_imagenette}", f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}",
             "--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1"]
    resnet.train.main([*where, "--NUM_EPOCHS=1"])
    (teacher_run,) = (tmp_path / "runs" / "resnet18").iterdir()
    monkeypatch.setattr(distill, "TIMED_STEPS", 2)  # 3 steps an epoch here
    capsys.readouterr()
    summary = train.main([*where, "--ARCH=deit_tiny_distilled_16", "--DISTILLATION=hard",
                          f"--TEACHER={teacher_run / 'best.pt'}"])
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("teacher resnet18: ")][0].endswith("steps 2-3")
    assert len(summary["history"]) == 2 and 0 <= summary["final_val_top1"] <= 1
    run_dir = Path(summary["run_dir"])
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert "head_dist.weight" in state["model"] and not any(k.startswith("teacher") for k in state["model"])
    cfg = json.loads((run_dir / "config.json").read_text())["constants"]
    assert compare.label(cfg).startswith("deit_tiny_distilled_16 hard<-resnet18 (tiny), ")
