"""resnet/train.py's own constants and recipes (the generic script tests are in test_train_scripts.py)."""
from __future__ import annotations

from pathlib import Path

from common import recipe, script
from resnet import train
from tests.test_train_scripts import assert_refused


def test_resnet_rules_refuse_what_table_1_cannot_take(tmp_path: Path, capsys) -> None:
    cases = {
        "--IMAGE_DIM=16": "IMAGE_DIM=16 is not possible: at least 32 pixels",
        "--ARCH=resnet19": "ARCH='resnet19' is not possible: resnet18, resnet34",
        "--SHORTCUT=D": "SHORTCUT='D' is not possible: A, B or C",
    }
    assert_refused(train, cases, tmp_path, capsys)


def test_paper_recipe_is_section_3_4() -> None:
    cfg, _ = script.configure(train, ["--RECIPE=paper"], {**recipe.RULES, **train.RULES})
    assert (cfg["LEARNING_RATE"], cfg["MOMENTUM"], cfg["WEIGHT_DECAY"], cfg["BATCH_SIZE"]) == (0.1, 0.9, 1e-4, 256)
    assert cfg["LR_SCHEDULE"] == "plateau" and cfg["LEARNING_RATE_DECAY_FACTOR"] == 0.1
    assert cfg["DECAY_NORM_AND_BIAS"] and not cfg["NESTEROV"] and not cfg["ZERO_INIT_RESIDUAL"]
    assert cfg["LABEL_SMOOTHING"] == 0 and cfg["IMAGE_DIM"] == 224 and cfg["EVAL_VIEWS"] == "10crop"
    # The command line still wins over the recipe.
    cfg, _ = script.configure(train, ["--RECIPE=paper", "--NUM_EPOCHS=3"], {**recipe.RULES, **train.RULES})
    assert cfg["NUM_EPOCHS"] == 3 and cfg["LEARNING_RATE"] == 0.1


def test_fast_recipe_is_the_holdout_tuned_schedule() -> None:
    """RECIPES["fast"] (README, "A fast recipe"): 16 epochs growing from 40 to 64 px, evaluated at
    the training size (72 px cost 9 points on the holdout), every size one the network takes."""
    from common.loader import progressive_dim

    cfg, _ = script.configure(train, ["--RECIPE=fast"], {**recipe.RULES, **train.RULES})
    assert (cfg["IMAGE_DIM"], cfg["EVAL_IMAGE_DIM"], cfg["NUM_EPOCHS"]) == (64, 0, 16)
    sizes = [progressive_dim(e, 16, 64, cfg["START_IMAGE_DIM"], tuple(cfg["RESIZE_RAMP"])) for e in range(16)]
    assert sizes == [40, 40, 48, 48, 48, 48, 48, 56, 56, 56] + [64] * 6
    assert cfg["HOLDOUT_FRACTION"] == 0  # the recipe is scored on val; it was tuned with 0.1
