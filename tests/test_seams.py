"""The seams a train.py uses without editing common/: recipes, parameter groups, optimisers,
batch transforms with soft labels, evaluation views. Each with a tiny model on CPU."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from common import augment, optim, recipe, script, trainer
from common.config import ConfigError, constants
from resnet import train as resnet_train
from tests.test_trainer import TINY, colour_set, tiny_model


def _module(**consts) -> types.ModuleType:
    """A stand-in train.py holding ``consts`` (and RECIPES, if given)."""
    m = types.ModuleType("fake_train")
    m.__file__ = "fake/train.py"
    for k, v in consts.items():
        setattr(m, k, v)
    return m


def test_a_recipe_constant_the_file_forgets_is_named(capsys) -> None:
    consts = constants(resnet_train)
    del consts["HFLIP"], consts["WARMUP_EPOCHS"]  # WARMUP_EPOCHS: needed by LR_SCHEDULE=onecycle
    with pytest.raises(ConfigError, match=r"does not state HFLIP, WARMUP_EPOCHS \(for LR_SCHEDULE='onecycle'\)"):
        script.configure(_module(**consts), [], recipe.RULES)
    # A choice made on the command line that needs a constant the file lacks.
    with pytest.raises(ConfigError, match=r"RMSPROP_ALPHA \(for OPTIMIZER='rmsprop'\)"):
        script.configure(resnet_train, ["--OPTIMIZER=rmsprop"], recipe.RULES)
    with pytest.raises(ConfigError, match="does not state NUM_EPOCHS"):
        without_epochs = {k: v for k, v in TINY.items() if k != "NUM_EPOCHS"}
        trainer.fit(tiny_model(), colour_set(16), colour_set(8), without_epochs)


def test_named_recipes_apply_under_the_command_line() -> None:
    consts = constants(resnet_train)
    m = _module(**consts, RECIPES={"short": {"NUM_EPOCHS": 3, "LEARNING_RATE": 0.01}, "bad": {"NUM_EPOCH": 3}})
    cfg, _ = script.configure(m, ["--RECIPE=short", "--LEARNING_RATE=0.5"], recipe.RULES)
    assert (cfg["NUM_EPOCHS"], cfg["LEARNING_RATE"], cfg["RECIPE"]) == (3, 0.5, "short")
    cfg, _ = script.configure(m, [], recipe.RULES)
    assert cfg["NUM_EPOCHS"] == consts["NUM_EPOCHS"]
    with pytest.raises(ConfigError, match="recipe 'bad' sets NUM_EPOCH, which the file does not define"):
        script.configure(m, ["--RECIPE=bad"], recipe.RULES)


def test_param_options_give_parameters_their_own_decay_and_learning_rate() -> None:
    model = tiny_model()

    def options(name: str, p: nn.Parameter, cfg: dict) -> dict | None:
        if name.startswith("fc."):  # e.g. ViT's position embedding / a pre-trained backbone
            return {"weight_decay": 0.0, "lr_scale": 0.1}
        return None

    cfg = {**TINY, "WEIGHT_DECAY": 1e-3, "DECAY_NORM_AND_BIAS": False}
    opt = optim.build_optimizer(model, cfg, options)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        g = by_param[id(p)]
        if name.startswith("fc."):
            assert (g["weight_decay"], g["lr_scale"]) == (0.0, 0.1), name
        else:
            assert g["weight_decay"] == (1e-3 if p.ndim > 1 else 0.0) and g["lr_scale"] == 1.0, name
    sched = optim.Schedule({**cfg, "LR_SCHEDULE": "constant", "LEARNING_RATE": 0.2}, 10)
    sched.set_lr(opt, 0)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.02, 0.2])
    with pytest.raises(ValueError, match="may set weight_decay and lr_scale"):
        optim.build_optimizer(model, cfg, lambda n, p, c: {"momentum": 0.5})


@pytest.mark.parametrize("kind,cls,extra", [
    ("sgd", torch.optim.SGD, {}),
    ("adam", torch.optim.Adam, {"ADAM_BETAS": (0.9, 0.999)}),
    ("adamw", torch.optim.AdamW, {"ADAM_BETAS": (0.9, 0.95)}),
    ("rmsprop", torch.optim.RMSprop, {"RMSPROP_ALPHA": 0.9, "RMSPROP_EPS": 1.0}),
])
def test_optimisers(kind: str, cls: type, extra: dict, tmp_path: Path) -> None:
    cfg = {**TINY, **extra, "OPTIMIZER": kind, "LEARNING_RATE": 1e-3 if kind != "sgd" else 0.05,
           "NUM_EPOCHS": 1, "EMA_DECAY": 0.0, "RUNS_DIR": str(tmp_path)}
    opt = optim.build_optimizer(tiny_model(), cfg)
    assert type(opt) is cls
    if kind == "rmsprop":  # the Inception/MobileNet settings reach torch
        assert (opt.defaults["alpha"], opt.defaults["eps"], opt.defaults["momentum"]) == (0.9, 1.0, 0.9)
    if kind == "adamw":
        assert opt.defaults["betas"] == (0.9, 0.95)
    summary = trainer.fit(tiny_model(), colour_set(48), colour_set(16, seed=1), cfg, name=kind)
    assert torch.isfinite(torch.tensor(summary["history"][-1]["train_loss"]))


def test_soft_labels_end_to_end_and_resume_stays_exact(tmp_path: Path) -> None:
    """Mixup/cutmix through fit: soft targets reach the loss and the train accuracy; a run
    interrupted mid-epoch and resumed ends bit-identical (the transforms draw only from g)."""
    import os
    import signal

    train_set, val_set = colour_set(96), colour_set(32, seed=1)
    mix = [augment.mixup_or_cutmix(0.4, 1.0, num_classes=4), augment.random_erasing(0.5)]
    cfg = {**TINY, "RUNS_DIR": str(tmp_path / "a")}
    full = trainer.fit(tiny_model(), train_set, val_set, cfg, name="m", batch_transforms=mix)
    for h in full["history"]:  # hits counted against each mixed image's main label
        assert h["train_images"] == 96 and h["train_top1"] * 96 == pytest.approx(round(h["train_top1"] * 96))
        assert h["train_top1"] > 0.25  # four colours: better than chance even through the mixing

    def interrupt(step: int) -> None:
        if step == 8:
            os.kill(os.getpid(), signal.SIGTERM)

    cut = trainer.fit(tiny_model(), train_set, val_set, {**cfg, "RUNS_DIR": str(tmp_path / "b")}, name="m",
                      on_step=interrupt, batch_transforms=mix)
    assert cut["interrupted"]
    again = {**cfg, "RUNS_DIR": str(tmp_path / "b"), "RESUME": str(Path(cut["run_dir"]) / "last.pt")}
    resumed = trainer.fit(tiny_model(), train_set, val_set, again, name="m", batch_transforms=mix)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    a = torch.load(Path(full["run_dir"]) / "last.pt", weights_only=True)["model"]
    b = torch.load(Path(cut["run_dir"]) / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_soft_targets_change_the_loss_as_they_should() -> None:
    """The criterion takes (B, C) probabilities: one-hot targets give the index loss exactly."""
    out, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    assert ce(out, augment.soft_targets(y, 4)) == pytest.approx(ce(out, y).item(), rel=1e-6)


def test_eval_views_are_logged_by_name_after_the_last_epoch(tmp_path: Path) -> None:
    cfg = {**TINY, "NUM_EPOCHS": 2, "EVAL_VIEWS": "10crop", "EVAL_SCALES": (1.0, 1.25), "RUNS_DIR": str(tmp_path)}
    summary = trainer.fit(tiny_model(), colour_set(48), colour_set(16, seed=1), cfg, name="m")
    first, last = summary["history"]
    assert not [k for k in first if k.endswith("10crop@1,1.25")]  # only at the end: 20x the cost
    assert {"val_top1_10crop@1,1.25", "val_top5_10crop@1,1.25", "val_loss_10crop@1,1.25"} <= last.keys()
    assert last["val_images_10crop@1,1.25"] == 16
    header = (Path(summary["run_dir"]) / "log.csv").read_text().splitlines()[0]
    assert "val_top1_10crop@1,1.25" in header


def test_evaluate_views_average_probabilities() -> None:
    """With views, the prediction is the mean softmax over views: a model that sees every view
    of an image alike scores as the centre crop does; loss is that of the averaged probabilities."""
    from common.loader import BatchLoader

    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    data = colour_set(20, classes=4, size=16)
    plain = BatchLoader(data, 8, train=False, image_dim=16)
    flips = BatchLoader(data, 8, train=False, image_dim=16, views="flip")
    ctx = torch.autocast("cpu", enabled=False)
    a = trainer.evaluate(model, plain, ctx)
    b = trainer.evaluate(model, flips, ctx, views=True)  # a mirror has the same mean colour
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_seeds_repeat_the_run_in_folders_of_their_own(tiny_imagenette: Path, tmp_path: Path) -> None:
    """SEEDS=2: two runs, SEED 0 and 1, each its own folder with its own weights; the data is
    decoded once. SEEDS with RESUME is refused (a checkpoint continues one run)."""
    import json
    args = [f"--DATA_PATH={tiny_imagenette}", f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}",
            "--RECIPE=tiny", "--NUM_EPOCHS=1", "--DEVICE=cpu", "--DECODE_WORKERS=1", "--SEEDS=2", "--SEED=5"]
    last = resnet_train.main(args)
    runs = sorted((tmp_path / "runs" / "resnet18").iterdir())
    assert len(runs) == 2 and Path(last["run_dir"]) in runs
    seeds = sorted(json.loads((r / "config.json").read_text())["constants"]["SEED"] for r in runs)
    assert seeds == [5, 6]
    a, b = (torch.load(r / "last.pt", weights_only=True)["model"]["conv1.weight"] for r in runs)
    assert not torch.equal(a, b)
    with pytest.raises(SystemExit) as exit_:
        resnet_train.main([*args, f"--RESUME={runs[0] / 'last.pt'}"])
    assert exit_.value.code == 2


def test_pretrained_through_train_py_from_torchs_cache(tiny_imagenette: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """PRETRAINED=True end to end, offline: the weights file in torch's cache (torchvision's
    resnet18 with weights of our own) becomes the run's starting point, all but the new head."""
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    tv = torchvision.models.resnet18(weights=None)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    seen = {}
    real_fit = script.fit

    def spy(model, *a, **k):  # the model fit receives, before its first step
        seen["conv1"] = model.conv1.weight.detach().clone()
        return real_fit(model, *a, **k)

    monkeypatch.setattr(script, "fit", spy)
    resnet_train.main([f"--DATA_PATH={tiny_imagenette}", f"--DATA_DIR={tmp_path / 'data'}",
                       f"--RUNS_DIR={tmp_path / 'runs'}", "--RECIPE=tiny", "--WIDTH=64", "--NUM_EPOCHS=1",
                       "--DEVICE=cpu", "--DECODE_WORKERS=1", "--PRETRAINED=True"])
    assert torch.equal(seen["conv1"], tv.conv1.weight)
    assert "fc.weight, fc.bias kept at their own initialisation (10 classes" in capsys.readouterr().out
