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
