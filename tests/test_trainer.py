"""The shared training loop: learning on real data, exact resume, interrupts, NaN, eval mode, config."""
from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from common import checkpoint, data, optim, recipe, script, system, trainer
from common.cache import ImageSet
from common.config import ConfigError, constants, parse_args, parse_value
from resnet import train as resnet_train
from resnet.model import resnet18

# Small and quick: a tiny ResNet at 32 px, bf16 autocast and channels_last as in real runs.
RESNET_RECIPE = constants(resnet_train)  # a whole recipe, which fit requires
TINY = {**RESNET_RECIPE, "IMAGE_DIM": 32, "EVAL_IMAGE_DIM": 32, "BATCH_SIZE": 16, "NUM_EPOCHS": 2,
        "LEARNING_RATE": 0.05, "LR_SCHEDULE": "onecycle", "WARMUP_EPOCHS": 0.5, "NESTEROV": True, "LABEL_SMOOTHING": 0.1,
        "EMA_DECAY": 0.9, "GRAD_CLIP": 5.0, "DEVICE": "cpu"}


def colour_set(n: int, classes: int = 4, size: int = 24, seed: int = 0) -> ImageSet:
    """Images whose mean colour says their class, with noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = torch.stack([torch.tensor([(c * 70) % 256, (c * 150 + 40) % 256, (255 - c * 60) % 256])
                        for c in range(classes)]).float()
    images = base[labels][:, None, None, :] + 40 * torch.randn(n, size, size, 3, generator=g)
    return ImageSet(images.clamp(0, 255).to(torch.uint8), labels)


def tiny_model(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return resnet18(num_classes=num_classes, width=4, zero_init_residual=True)


def test_learns_sklearn_digits(tmp_path: Path) -> None:
    """Real data shipped inside a package: 1,797 handwritten 8x8 digits -> >= 90 % val top-1."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images * (255 / 16), dtype=torch.float32)  # (N, 8, 8), 0..16 -> 0..255
    x = x.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 32x32: the ResNet downsamples 32x
    x = x[..., None].expand(-1, -1, -1, 3).round().to(torch.uint8).contiguous()
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:1400], perm[1400:]
    train_set, val_set = ImageSet(x[tr], y[tr]), ImageSet(x[va], y[va])
    torch.manual_seed(0)
    model = resnet18(num_classes=10, width=16, zero_init_residual=True)
    cfg = {**TINY, "NUM_EPOCHS": 6, "BATCH_SIZE": 64, "LEARNING_RATE": 0.2, "WARMUP_EPOCHS": 1.0,
           "EMA_DECAY": 0.0, "HFLIP": False, "MIN_SCALE": 0.6, "WEIGHT_DECAY": 5e-5,
           "DECAY_NORM_AND_BIAS": False, "RUNS_DIR": str(tmp_path)}
    summary = trainer.fit(model, train_set, val_set, cfg, name="digits")
    assert summary["final_val_top1"] >= 0.90, summary["history"]
    # The loop's own record of it: one log row an epoch, the plot, both checkpoints.
    run = Path(summary["run_dir"])
    assert len((run / "log.csv").read_text().strip().splitlines()) == 1 + 6
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert {"last.pt", "best.pt", "config.json"} <= {p.name for p in run.iterdir()}


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_after_sigterm_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGTERM mid-epoch saves a checkpoint; --RESUME ends bit-identical to never stopping."""
    train_set, val_set = colour_set(96), colour_set(32, seed=1)
    cfg = {**TINY, "RUNS_DIR": str(tmp_path / "a")}
    full = trainer.fit(tiny_model(), train_set, val_set, cfg, name="m")

    def interrupt(step: int) -> None:
        if step == 9:  # epoch 1 of 2 has 6 steps: stop in the middle of epoch 2
            os.kill(os.getpid(), signal.SIGTERM)

    cut = trainer.fit(tiny_model(), train_set, val_set, {**cfg, "RUNS_DIR": str(tmp_path / "b")},
                      name="m", on_step=interrupt)
    assert cut["interrupted"]
    ckpt = Path(cut["run_dir"]) / "last.pt"
    saved = _state(ckpt)
    assert (saved["epoch"], saved["step"]) == (1, 3)
    # Signal handlers are restored after the run.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    resumed = trainer.fit(tiny_model(), train_set, val_set, {**cfg, "RESUME": str(ckpt)}, name="m")
    a, b = _state(Path(full["run_dir"]) / "last.pt"), _state(ckpt)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k, st in a["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    assert resumed["final_val_top1"] == full["final_val_top1"]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    assert resumed["run_dir"] == cut["run_dir"]  # a resumed run goes on in its own folder


def test_checkpoint_holds_everything_and_loads_weights_only(tmp_path: Path) -> None:
    summary = trainer.fit(tiny_model(), colour_set(48), colour_set(16, seed=1),
                          {**TINY, "NUM_EPOCHS": 1, "RUNS_DIR": str(tmp_path)}, name="m")
    ckpt = _state(Path(summary["run_dir"]) / "last.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "ema", "epoch", "step", "rng", "config",
            "history"} <= ckpt.keys()
    assert not [k for k in ckpt["model"] if k.startswith(("module.", "_orig_mod."))]
    assert ckpt["config"]["BATCH_SIZE"] == TINY["BATCH_SIZE"]
    fresh = tiny_model()
    fresh.load_state_dict(ckpt["model"])  # the raw model's keys: loads into a plain model
    # No temporary files left beside the checkpoints.
    assert not [p for p in Path(summary["run_dir"]).iterdir() if p.name.startswith(".")]


class _Poisonable(nn.Module):
    """A model whose output turns NaN on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny_model()
        self.poisoned = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out * float("nan") if self.poisoned else out


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    model = _Poisonable()
    train_set = colour_set(64 * 4)  # 16 steps an epoch: the NaN check runs every 20 steps and at epoch end

    def poison(step: int) -> None:
        if step == 17:  # early in epoch 2, after epoch 1's checkpoint
            model.poisoned = True

    with pytest.raises(trainer.TrainingError, match=r"loss became nan.*last good checkpoint is intact"):
        trainer.fit(model, train_set, colour_set(16, seed=1), {**TINY, "RUNS_DIR": str(tmp_path)},
                    name="m", on_step=poison)
    (last,) = tmp_path.glob("m/*/last.pt")
    saved = _state(last)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


def test_evaluate_runs_in_eval_mode_and_leaves_the_model_as_it_was() -> None:
    """The original write-up forgot model.eval(): dropout stayed on and BN used batch statistics."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Dropout(0.5), nn.LazyLinear(3))
    model(torch.randn(2, 3, 16, 16))  # materialise the lazy layer
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = colour_set(20, classes=3, size=16)
    from common.loader import BatchLoader

    loader = BatchLoader(data, 8, train=False, image_dim=16)
    ctx = system.autocast(torch.device("cpu"), "off")
    first = trainer.evaluate(model, loader, ctx)
    second = trainer.evaluate(model, loader, ctx)
    assert first == second  # deterministic: no dropout, no batch statistics
    assert model.training  # mode restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"evaluate changed {k}"  # BN running stats untouched
    assert first["images"] == 20  # every image once, none padded or repeated
    assert first["top1"] * 20 == pytest.approx(round(first["top1"] * 20)) and first["top1"] <= first["top5"]


def test_schedules() -> None:
    cfg = {**RESNET_RECIPE, "NUM_EPOCHS": 10, "LEARNING_RATE": 1.0}
    step = optim.Schedule({**cfg, "LR_SCHEDULE": "step", "LEARNING_RATE_DECAY_STEP_SIZE": 3}, 5)
    assert [step.lr(e * 5) for e in (0, 2, 3, 6, 9)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])
    cos = optim.Schedule({**cfg, "LR_SCHEDULE": "cosine", "WARMUP_EPOCHS": 2.0}, 5)
    assert cos.lr(0) == pytest.approx(0.1) and cos.lr(9) == pytest.approx(1.0)
    assert cos.lr(49) < 0.01
    one = optim.Schedule({**cfg, "LR_SCHEDULE": "onecycle", "WARMUP_EPOCHS": 2.0}, 5)
    assert one.lr(0) == pytest.approx(1 / 25) and one.lr(10) == pytest.approx(1.0)
    assert max(one.lr(s) for s in range(50)) == pytest.approx(1.0)
    plateau = optim.Schedule({**cfg, "LR_SCHEDULE": "plateau", "PLATEAU_PATIENCE": 2}, 5)
    for acc in (0.5, 0.6, 0.6, 0.59):  # two epochs without a better val top-1 -> divide by 10
        plateau.end_epoch(acc)
    assert plateau.lr(0) == pytest.approx(0.1)
    again = optim.Schedule({**cfg, "LR_SCHEDULE": "plateau"}, 5)
    again.load_state_dict(plateau.state_dict())
    assert again.lr(0) == pytest.approx(0.1)


def test_weight_decay_can_skip_norms_and_biases() -> None:
    model = tiny_model()
    groups = optim.build_optimizer(model, {**RESNET_RECIPE, "DECAY_NORM_AND_BIAS": False}).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name
    adamw = optim.build_optimizer(model, {**RESNET_RECIPE, "OPTIMIZER": "adamw", "ADAM_BETAS": (0.9, 0.999)})
    assert isinstance(adamw, torch.optim.AdamW)


def test_config_overrides_are_type_checked() -> None:
    defaults = {"NUM_EPOCHS": 5, "LEARNING_RATE": 0.1, "NESTEROV": False, "ARCH": "resnet18",
                "ADAM_BETAS": (0.9, 0.999)}
    cfg = parse_args(defaults, ["--NUM_EPOCHS=7", "--LEARNING_RATE=3e-4", "--NESTEROV=true",
                                "--ARCH=resnet50", "--ADAM_BETAS=(0.9, 0.95)"])
    assert cfg == {"NUM_EPOCHS": 7, "LEARNING_RATE": 3e-4, "NESTEROV": True, "ARCH": "resnet50",
                   "ADAM_BETAS": (0.9, 0.95)}
    with pytest.raises(ConfigError, match="unknown constant NUM_EPOCH.*NUM_EPOCHS"):
        parse_args(defaults, ["--NUM_EPOCH=3"])
    with pytest.raises(ConfigError, match="whole number"):
        parse_args(defaults, ["--NUM_EPOCHS=2.5"])
    with pytest.raises(ConfigError, match="True or False"):
        parse_value("NESTEROV", "maybe", False)
    with pytest.raises(ConfigError, match="--NAME=value"):
        parse_args(defaults, ["NUM_EPOCHS=3"])
    assert math.isclose(parse_value("LEARNING_RATE", "1", 0.1), 1.0)


def test_cache_dim_doubles_the_image_side_but_never_exceeds_the_photos(tiny_imagenette: Path) -> None:
    from common.cache import typical_short_side

    cfg = {**recipe.SWITCHES, **RESNET_RECIPE, "IMAGE_DIM": 64, "EVAL_IMAGE_DIM": 0}
    assert data.cache_dim(cfg, source_side=224) == 128
    assert data.cache_dim({**cfg, "EVAL_IMAGE_DIM": 80}, source_side=224) == 160
    assert data.cache_dim({**cfg, "IMAGE_DIM": 128, "EVAL_IMAGE_DIM": 160}, source_side=160) == 160
    assert data.cache_dim(cfg, source_side=50) == 64  # small photos: never below the image side
    assert data.cache_dim({**cfg, "CACHE_DIM": 96}, source_side=224) == 96
    assert typical_short_side(tiny_imagenette, "train") == 16  # make_image_tree's 20x16 JPEGs


def test_resume_keeps_saved_constants_but_the_command_line_wins_even_at_a_default(tmp_path: Path) -> None:
    """Extending a 10-epoch run to the file's default of 20 must not be mistaken for 'not given'."""
    defaults = {**recipe.SWITCHES, **RESNET_RECIPE, "NUM_EPOCHS": 20, "BATCH_SIZE": 128}
    ckpt = {"config": {**defaults, "NUM_EPOCHS": 10, "BATCH_SIZE": 32}}
    argv = [f"--RESUME={tmp_path / 'last.pt'}", "--NUM_EPOCHS=20"]
    from common import config

    cfg = config.parse_args(defaults, argv)
    merged = checkpoint.resume_config(cfg, config.given(argv), ckpt)
    assert merged["NUM_EPOCHS"] == 20  # given (equal to the default, still given)
    assert merged["BATCH_SIZE"] == 32  # not given: the saved run's value


def test_help_shows_the_comment_of_every_shared_switch() -> None:
    from common.config import comments

    notes = comments(recipe)
    assert notes["CACHE_DIM"].startswith("side of the decoded uint8 cache")
    assert {"AMP", "COMPILE", "RESUME", "EVAL_VIEWS"} <= notes.keys()
