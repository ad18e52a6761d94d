"""No host-device sync in a training step, one per evaluation pass: every family, both recipes.

The step runs on the ``meta`` device (shapes, no data: a CPU-only build has it), where
common/syncs.py's SyncCounter sees what would make the host wait for a GPU: ``.item()`` and
its kin, ops with data-dependent output sizes, and copies between the host and the device.
The real code path: the family's train.py constants (its default recipe, then its paper
recipe) at the tiny recipe's width and batch (the recipe's own image sizes: on meta they cost
nothing), the training loop's own setup (common/trainer.py), BatchLoader with the family's
batch transforms, the model, loss, optimiser, EMA, DeviceSums, and trainer.evaluate.

Allowed: the loader's host-to-device copies, all made by common/loader.py ``to_device`` (the
batch's indices, its crop boxes, and the batch transforms' per-image draws), which are pinned
and non-blocking on CUDA and so queue behind the GPU's work instead of waiting for it. On
``meta`` they are plain copies, so the counter is told to let exactly that function's through.
"""
from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch

from common import augment, optim, recipe, script, trainer
from common import config as config_lib
from common.cache import ImageSet
from common.syncs import SyncCounter

FAMILIES = ("alexnet", "vgg", "resnet", "mobilenet", "vit")
ALLOWED_COPIES = ("common/loader.py:to_device",)
# The tiny recipe's widths and batch on top of the recipe under test. Image sizes stay the
# recipe's (on meta they cost nothing, and VGG's dense classifier needs its 224 px); what else is
# left out changes the run's length or data, not its code path.
NOT_TINY = ("ARCH", "NUM_EPOCHS", "WARMUP_EPOCHS", "DATASET_SIZE", "IMAGE_DIM", "EVAL_IMAGE_DIM", "PATCH_SIZE")
CLASSES = 10
VAL_BATCHES = 2  # an evaluation pass of two batches: one sync per pass, not per batch


def tiny_set(n: int, size: int = 40, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8)
    aspect = torch.linspace(0.75, 1.33, n)  # landscape and portrait sources: both crop paths
    return ImageSet(images, torch.arange(n) % CLASSES, aspect)


def configure(family: str, recipe_name: str, tmp_path: Path, argv: tuple[str, ...] = ()) -> tuple[dict[str, Any], Any]:
    """The family's constants with ``recipe_name`` ('' = its defaults) and ``argv``, shrunk to a
    tiny run on meta."""
    module = importlib.import_module(f"{family}.train")
    tiny = {k: v for k, v in module.RECIPES["tiny"].items() if k not in NOT_TINY}
    argv = ([f"--RECIPE={recipe_name}"] if recipe_name else []) + list(argv)
    cfg, _ = script.configure(module, argv, {**recipe.RULES, **getattr(module, "RULES", {})},
                              f"{family}/train.py")
    cfg.update(tiny)
    # AMP off: autocast has no meta device type (it makes no sync on any device)
    cfg.update(DEVICE="meta", AMP="off", COMPILE=False, RUNS_DIR=str(tmp_path), RESUME="", SEEDS=1)
    config_lib.check(cfg, {**recipe.RULES, **getattr(module, "RULES", {})})
    return cfg, module


def setup_run(family: str, recipe_name: str, tmp_path: Path, argv: tuple[str, ...] = ()) -> trainer.Run:
    cfg, module = configure(family, recipe_name, tmp_path, argv)
    train_set = tiny_set(2 * cfg["BATCH_SIZE"])
    val_set = tiny_set(VAL_BATCHES * cfg["BATCH_SIZE"], seed=1)
    torch.manual_seed(0)
    model = module.build_model(cfg, CLASSES)
    seam = getattr(module, "batch_transforms", None)
    transforms = seam(cfg, train_set) if callable(seam) else ()
    loss = module.criterion(cfg) if callable(getattr(module, "criterion", None)) else None  # DeiT's teacher
    with contextlib.redirect_stdout(io.StringIO()):
        return trainer.setup(model, train_set, val_set, cfg, family, getattr(module, "param_options", None),
                             transforms, loss)


def assert_no_syncs(counter: SyncCounter, what: str, most: int = 0) -> None:
    assert counter.count <= most, f"{what}: {counter.count} host-device syncs (at most {most}):\n{counter.report()}"


def train_step_syncs(run: trainer.Run, step: int = 1) -> SyncCounter:
    """The syncs of one training step: its batch (crops, batch transforms) and train_step."""
    sums = trainer.DeviceSums(run.device)
    batches = run.train_loader.iterate(step)
    with SyncCounter(allow=ALLOWED_COPIES) as counter:
        x, y = next(batches)
        trainer.train_step(run, x, y, step, sums)
    return counter


def evaluation_syncs(run: trainer.Run) -> dict[str, SyncCounter]:
    """The syncs of each evaluation pass the end of an epoch makes, the last epoch's included."""
    passes = {"centre + confusion": dict(model=run.eval_net, confusion_classes=CLASSES)}
    if run.ema is not None:
        passes["EMA"] = dict(model=run.ema.module)
    if run.val_loader.view_name != "center":
        passes[run.val_loader.view_name] = dict(model=run.eval_net, views=True)
    counters = {}
    for name, kwargs in passes.items():
        with SyncCounter(allow=ALLOWED_COPIES) as counters[name]:
            trainer.evaluate(loader=run.val_loader, autocast=run.autocast, world=1, **kwargs)
    return counters


# Every family's default and paper recipe, and the choices no recipe makes by default:
# TrivialAugment, and an EMA on a family with batch norm and dropout.
CASES = [(family, recipe_name, ()) for family in FAMILIES for recipe_name in ("", "paper")] + [
    ("vit", "", ("--AUTO_AUGMENT=trivial",)), ("alexnet", "", ("--EMA_DECAY=0.99",))]


@pytest.mark.parametrize("family,recipe_name,argv", CASES,
                         ids=[f"{f}-{r or 'default'}{'-' + a[0][2:] if a else ''}" for f, r, a in CASES])
def test_no_sync_in_a_training_step_and_one_per_evaluation_pass(family: str, recipe_name: str,
                                                                argv: tuple[str, ...], tmp_path: Path) -> None:
    run = setup_run(family, recipe_name, tmp_path, argv)
    what = f"{family} {recipe_name or 'default'} {' '.join(argv)}"
    for step in (0, 1):  # the second step: nothing sent once at the first (tables) is sent again
        assert_no_syncs(train_step_syncs(run, step), f"{what} training step {step}")
    for name, counter in evaluation_syncs(run).items():
        assert_no_syncs(counter, f"{what} evaluation ({name}, {VAL_BATCHES} batches)", most=1)


def test_no_sync_in_a_distilled_step(tmp_path: Path) -> None:
    """DeiT's hard and soft distillation: the teacher (a ResNet checkpoint, moved to meta with the
    student) runs on the augmented batch inside the step, and its timing makes no sync either."""
    from tests.test_distill import save_teacher

    teacher = save_teacher(tmp_path / "teacher" / "best.pt")
    for kind in ("hard", "soft"):
        run = setup_run("vit", "", tmp_path, ("--ARCH=deit_tiny_distilled_16", f"--DISTILLATION={kind}",
                                              f"--TEACHER={teacher}"))
        assert next(run.criterion.teacher.parameters()).device.type == "meta"
        for step in (0, 1):  # the teacher's cost is timed from the second step on
            assert_no_syncs(train_step_syncs(run, step), f"distilled {kind} training step {step}")
        for name, counter in evaluation_syncs(run).items():
            assert_no_syncs(counter, f"distilled evaluation ({name})", most=1)


def test_the_recipes_under_test_cover_every_batch_transform_and_the_ema(tmp_path: Path) -> None:
    """The parametrised test above reaches what it claims: each kind of batch transform and the
    EMA appear in some family's default or paper recipe."""
    names, ema = set(), False
    for family in FAMILIES:
        for recipe_name in ("", "paper"):
            cfg, module = configure(family, recipe_name, tmp_path)
            seam = getattr(module, "batch_transforms", None)
            names |= {t.__qualname__.split(".")[0] for t in (seam(cfg, tiny_set(8)) if callable(seam) else ())}
            ema |= cfg["EMA_DECAY"] > 0
    assert {"_policy", "random_erasing", "mixup_or_cutmix", "pca_lighting"} <= names, names
    assert ema


@pytest.mark.parametrize("plant", ["item", "pageable copy", "bool", "nonzero", "torch.tensor", "host index"])
def test_a_planted_sync_fails_the_check(plant: str, tmp_path: Path) -> None:
    """The detector's own test: one sync planted in the step (in a batch transform, as a user's
    would be) is seen, and the check fails, naming the line that made it."""
    run = setup_run("resnet", "", tmp_path)

    def planted(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if plant == "item":
            x = x * x.mean().item()
        elif plant == "pageable copy":
            x = x + torch.ones(3).view(1, 3, 1, 1).to(x.device)
        elif plant == "bool":
            x = x * 2 if bool(x.amax() > 0) else x
        elif plant == "nonzero":
            x = x + (y == 0).nonzero().sum()
        elif plant == "host index":
            x = x[torch.arange(len(x)).flip(0)]
        else:
            x = x + torch.tensor([1.0], device=x.device)
        return x, y

    run.train_loader.extras.append(planted)
    counter = train_step_syncs(run)
    assert counter.count == 1, counter.report()
    assert "planted" in counter.events[0].where and "tests/test_syncs.py" in counter.events[0].where
    with pytest.raises(AssertionError, match="1 host-device syncs"):
        assert_no_syncs(counter, "planted")


def test_an_evaluation_sync_per_batch_fails_the_check(tmp_path: Path) -> None:
    """One sync per batch is more than one per pass: the evaluation check sees the difference."""
    run = setup_run("resnet", "", tmp_path)
    forward = run.eval_net.forward
    run.eval_net.forward = lambda x: forward(x) * float(x.amax())  # type: ignore[method-assign]
    counter = evaluation_syncs(run)["centre + confusion"]
    assert counter.count == VAL_BATCHES + 1, counter.report()
    with pytest.raises(AssertionError):
        assert_no_syncs(counter, "planted", most=1)


def test_every_augment_op_runs_without_a_sync() -> None:
    """Each RandAugment / TrivialAugment op on a whole batch (the recipes' draws reach only some
    of them in one step), and the allowed copy is the only one _apply_ops makes."""
    x = torch.zeros(6, 3, 16, 16, device="meta")
    for table in (augment.RAND_AUGMENT_OPS, augment.TRIVIAL_AUGMENT_OPS):
        for k, name in enumerate(table):
            mags = augment._bin_magnitudes(name, table[name], 31, 16, 16)[[0, 9, 20, 30, 30, 9]]
            with SyncCounter() as everything, SyncCounter(allow=ALLOWED_COPIES) as counter:
                out = augment._apply_ops(x, table, torch.full((6,), k), mags)
            assert_no_syncs(counter, name)
            assert everything.count == 1 and "to_device" in everything.events[0].where, everything.report()
            assert out.shape == x.shape and out.device == x.device


def test_the_loader_moves_every_batch_to_its_device(tmp_path: Path) -> None:
    """Any torch device, not only CUDA: the batch, its labels and every evaluation view arrive
    on the loader's device (meta here; MPS and XPU take the same plain copy)."""
    run = setup_run("alexnet", "paper", tmp_path)  # scale jitter, PCA lighting, 10-crop views
    x, y = next(iter(run.train_loader))
    assert (x.device.type, y.device.type) == ("meta", "meta")
    x, y = next(iter(run.val_loader))
    assert (x.device.type, y.device.type) == ("meta", "meta")
    xs, y = next(run.val_loader.iterate_views())
    assert len(xs) == 10 and {v.device.type for v in xs} | {y.device.type} == {"meta"}


def test_the_ema_is_averaged_models_bit_for_bit_without_a_sync() -> None:
    """optim.EMA against torch's AveragedModel with the same decay: every weight and buffer
    (BN statistics and batch count included) equal after several steps, the checkpoint keys the
    same (an AveragedModel's saved average loads as it is), and no sync per update."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(0)  # weights, BN statistics and its integer batch count: every kind of state
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.BatchNorm1d(16),
                                torch.nn.ReLU(), torch.nn.Linear(16, 4))
    ours = optim.ema_model(model, 0.9)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    theirs.update_parameters(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(4):
        model.train()
        loss = model(torch.randn(8, 3, 4, 4)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.update_parameters(model)
        theirs.update_parameters(model)
    mine, ref = ours.module.state_dict(), theirs.module.state_dict()
    assert list(mine) == list(ref)
    assert all(torch.equal(mine[k], ref[k]) for k in ref), [k for k in ref if not torch.equal(mine[k], ref[k])]
    assert not torch.equal(mine["4.weight"], model.state_dict()["4.weight"])  # an average, not a copy
    assert mine["2.num_batches_tracked"].dtype == torch.long
    assert int(ours.n_averaged) == int(theirs.n_averaged) == 5
    ours.module.load_state_dict(ref)  # a checkpoint written with AveragedModel resumes as it is

    meta_model = model.to("meta")
    ema = optim.ema_model(meta_model, 0.999)
    with SyncCounter() as counter:
        ema.update_parameters(meta_model)
    assert_no_syncs(counter, "EMA update")
    assert ema.n_averaged.device.type == "meta"


def test_allowed_copies_are_only_those_of_the_named_function() -> None:
    """The allowance is by function: the same copy made elsewhere still counts, and nothing but
    a copy can be allowed."""
    from common.loader import to_device

    host = torch.arange(4)
    with SyncCounter(allow=ALLOWED_COPIES) as counter:
        to_device(host, torch.device("meta"))
        host.to("meta")
        to_device(torch.ones((), device="meta"), torch.device("meta")).item()
    assert [e.op.split(" ")[0] for e in counter.events] == ["aten._to_copy", ".item()"], counter.report()
