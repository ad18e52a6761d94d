"""Parts of the training split (HOLDOUT_FRACTION, TRAIN_FRACTION) and progressive resizing."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from common import evaluate, recipe, trainer
from common.cache import ImageSet
from common.data import split_training
from common.loader import progressive_dim, training_dims
from resnet import train as resnet_train
from tests.helpers import make_image_tree
from tests.test_train_scripts import assert_refused
from tests.test_trainer import TINY, colour_set

SWITCHES = dict(recipe.SWITCHES)


def uneven_set(seed: int = 0) -> ImageSet:
    """4 classes of 40, 25, 11 and 3 images, shuffled: rounding and the smallest class matter."""
    labels = torch.tensor([0] * 40 + [1] * 25 + [2] * 11 + [3] * 3)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    images = torch.arange(len(labels), dtype=torch.uint8)[:, None, None, None].expand(-1, 4, 4, 3).contiguous()
    return ImageSet(images, labels, classes=["a", "b", "c", "d"])


def ids(data: ImageSet) -> set[int]:
    """Each image's identity: the value its pixels were filled with (its index in uneven_set)."""
    return {int(v) for v in data.images[:, 0, 0, 0]}


def split(seed: int = 0, **fractions: float) -> tuple[ImageSet, ImageSet]:
    full = uneven_set()
    return split_training({**SWITCHES, "SEED": seed, **fractions}, full, colour_set(8))


def test_train_fraction_keeps_every_class_and_depends_on_the_seed_only() -> None:
    part, val = split(TRAIN_FRACTION=0.25)
    counts = torch.bincount(part.labels, minlength=4).tolist()
    assert counts == [10, 6, 3, 1]  # round(0.25 x n), at least one: no class lost
    assert len(val) == 8  # val is never cut
    # The images still carry their labels (a subset, not a relabelling).
    full = uneven_set()
    assert all(int(full.labels[i]) == int(l) for i, l in zip(sorted(ids(part)), part.labels[torch.argsort(
        part.images[:, 0, 0, 0].long())]))
    assert ids(split(TRAIN_FRACTION=0.25)[0]) == ids(part)  # the same seed: the same images
    assert ids(split(seed=1, TRAIN_FRACTION=0.25)[0]) != ids(part)  # another seed: others
    assert ids(split(TRAIN_FRACTION=1.0)[0]) == ids(full)


def test_holdout_is_class_balanced_disjoint_and_replaces_val() -> None:
    kept, held = split(HOLDOUT_FRACTION=0.2)
    assert torch.bincount(held.labels, minlength=4).tolist() == [8, 5, 2, 1]
    assert torch.bincount(kept.labels, minlength=4).tolist() == [32, 20, 9, 2]  # every class on both sides
    assert not ids(kept) & ids(held)  # no image in both parts
    assert ids(kept) | ids(held) == ids(uneven_set())  # and none lost
    assert held.classes == kept.classes == ["a", "b", "c", "d"]
    assert ids(split(HOLDOUT_FRACTION=0.2)[1]) == ids(held)  # the same split for the same seed
    assert ids(split(seed=3, HOLDOUT_FRACTION=0.2)[1]) != ids(held)
    # TRAIN_FRACTION cuts what is left; the held-out part does not move with it (tuning a recipe
    # at another data size is judged on the same images).
    part, held_too = split(HOLDOUT_FRACTION=0.2, TRAIN_FRACTION=0.5)
    assert ids(held_too) == ids(held) and ids(part) < ids(kept)


def test_a_class_too_small_to_hold_out_from_is_one_clear_error() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    one = ImageSet(torch.zeros(4, 4, 4, 3, dtype=torch.uint8), labels)
    with pytest.raises(Exception, match="HOLDOUT_FRACTION=0.5: class 1 has 1 training image, too few"):
        split_training({**SWITCHES, "HOLDOUT_FRACTION": 0.5}, one, one)


def test_a_run_with_a_holdout_trains_and_evaluates_on_the_two_parts(tmp_path: Path, capsys) -> None:
    """Through train.py: the run trains on 80 images and evaluates on the 20 held out (not on
    val's 30), says so, and common.evaluate later picks the same 20 for its checkpoint."""
    tree = make_image_tree(tmp_path / "src", n_train=10, n_val=3, size=(40, 40))
    args = ["--RECIPE=tiny", "--MAX_IMAGES_PER_CLASS=0", "--NUM_EPOCHS=1", "--HOLDOUT_FRACTION=0.2",
            f"--DATA_PATH={tree}", f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}",
            "--DEVICE=cpu"]
    summary = resnet_train.main(args)
    out = capsys.readouterr().out
    assert "HOLDOUT_FRACTION=0.2: evaluating on 20 held-out training images" in out
    assert "80 train / 20 val images" in out
    ckpt = torch.load(Path(summary["run_dir"]) / "last.pt", map_location="cpu", weights_only=False)
    loader = evaluate.val_loader_for(ckpt["config"], torch.device("cpu"), ckpt=ckpt)
    assert len(loader.labels) == 20


@pytest.mark.parametrize(("epoch", "want"), [(0, 40), (1, 40), (2, 40), (3, 48), (4, 48), (5, 56), (6, 64),
                                              (7, 64)])
def test_progressive_dim_holds_then_ramps_in_steps_of_8(epoch: int, want: int) -> None:
    # 8 epochs, held at 40 until 25 % (epochs 0, 1), linear to 64 at 75 % (epoch 6).
    assert progressive_dim(epoch, 8, 64, 40, (0.25, 0.75)) == want
    assert progressive_dim(epoch, 8, 64, 0, (0.25, 0.75)) == 64  # off


def test_the_trainer_feeds_each_epoch_its_size(tmp_path: Path) -> None:
    seen: list[int] = []

    class Recorder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                seen.append(x.shape[-1])
            return self.fc(x.float().mean((2, 3)))

    cfg = {**TINY, "NUM_EPOCHS": 4, "IMAGE_DIM": 24, "EVAL_IMAGE_DIM": 24, "START_IMAGE_DIM": 8,
           "RESIZE_RAMP": (0.0, 0.75), "EMA_DECAY": 0.0, "RUNS_DIR": str(tmp_path)}
    trainer.fit(Recorder(), colour_set(32), colour_set(16, seed=1), cfg, name="sizes")
    per_epoch = [seen[i * 2] for i in range(4)]  # 32 images, batch 16: two steps an epoch
    assert per_epoch == [8, 16, 16, 24]
    assert training_dims(cfg) == [8, 16, 24]


def test_a_start_size_the_network_cannot_take_is_refused_before_data(tmp_path: Path, capsys) -> None:
    assert_refused(resnet_train, {"--START_IMAGE_DIM=16": "START_IMAGE_DIM=16 makes 16 px training crops"},
                   tmp_path, capsys)
