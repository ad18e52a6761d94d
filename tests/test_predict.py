"""Using a trained model: common/predict.py (top-5 of any image), common/evaluate.py (views,
ensembles), and the figures the trainer draws at the end of a run.

One tiny ResNet is trained once for the whole module (red against cyan images, a few steps on
the CPU) through resnet/train.py as a user runs it; every test reuses its checkpoint."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from common import compare, evaluate, predict, registry
from resnet import train as resnet_train
from tests.helpers import make_image_tree

RED, CYAN = "n01440764", "n02102040"  # tench, English springer: hues 0 and 0.5 in make_image_tree
TRAIN_ARGS = ["--RECIPE=tiny", "--DEVICE=cpu", "--AMP=off", "--DECODE_WORKERS=1", "--NUM_EPOCHS=4",
              "--BATCH_SIZE=8", "--LEARNING_RATE=0.03", "--LABEL_SMOOTHING=0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny ResNet that tells red from cyan images."""
    root = tmp_path_factory.mktemp("use")
    tree = make_image_tree(root / "src", "imagenette2-160", wnids=[RED, CYAN], n_train=16, n_val=4, size=(40, 36))
    torch.manual_seed(0)
    summary = resnet_train.main([f"--DATA_PATH={tree}", f"--DATA_DIR={root / 'data'}",
                                 f"--RUNS_DIR={root / 'runs'}", *TRAIN_ARGS])
    assert summary is not None and summary["final_val_top1"] == 1.0, summary
    return Path(summary["run_dir"])


def test_the_trainer_draws_the_confusion_matrix_and_filters_beside_the_curves(trained: Path) -> None:
    for name, size in (("confusion.png", (700, 600)), ("filters.png", (600, 600))):
        with Image.open(trained / name) as im:
            assert im.size == size, name
    assert not (trained / "attention.png").exists()  # a ResNet has no attention maps


def test_predict_names_the_class_the_model_learnt_for_any_image_mode(trained: Path, tmp_path: Path,
                                                                       capsys) -> None:
    red, cyan, grey = tmp_path / "red.png", tmp_path / "cyan.jpg", tmp_path / "grey.png"
    Image.new("RGB", (90, 50), (230, 20, 20)).save(red)
    Image.new("RGB", (31, 77), (20, 220, 220)).convert("CMYK").save(cyan, "JPEG")
    Image.new("L", (64, 64), 128).save(grey)
    predict.main([str(trained / "best.pt"), str(red), str(cyan), str(grey)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(red) and out[1].endswith("tench (n01440764)") and len(out) == 9  # 3 x (path + 2)
    assert out[3] == str(cyan) and out[4].endswith("English springer (n02102040)")
    probs = [float(line.split("%")[0]) for line in out[1:3]]
    assert probs[0] > 50 and sum(probs) == pytest.approx(100, abs=0.2)


def test_predict_refuses_in_one_line(trained: Path, tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(SystemExit) as end:
        predict.main([str(trained / "best.pt"), str(text)])
    assert end.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not an image" in err

    for ckpt, message in ((tmp_path / "none.pt", "no such checkpoint file"), (text, "not a checkpoint")):
        with pytest.raises(SystemExit):
            predict.main([str(ckpt), str(text)])
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err

    other = torch.load(trained / "best.pt", weights_only=True)
    other["config"]["ARCH"] = "lenet5"
    torch.save(other, tmp_path / "lenet.pt")
    with pytest.raises(SystemExit):
        predict.main([str(tmp_path / "lenet.pt"), str(text)])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ARCH='lenet5' is not a model of this repository" in err


def test_evaluate_matches_the_trainer_and_an_ensemble_of_one_net_twice_equals_it(trained: Path, capsys) -> None:
    ckpt = trained / "best.pt"
    with open(trained / "log.csv") as f:
        final = list(csv.DictReader(f))[-1]
    alone = evaluate.evaluate([ckpt], views="center")
    assert alone[str(ckpt)]["top1"] == pytest.approx(float(final["val_top1"]))
    assert alone[str(ckpt)]["images"] == int(final["val_images"]) == 8

    model, saved = registry.load_model(ckpt)
    loader = evaluate.val_loader_for(saved["config"], torch.device("cpu"), views="10crop", scales=(1.0, 1.25))
    p1, labels = evaluate.probabilities(model, loader, torch.autocast("cpu", enabled=False))
    assert p1.shape == (8, 2) and torch.allclose(p1.sum(1), torch.ones(8))
    both = evaluate.evaluate([ckpt, ckpt], views="10crop", scales=(1.0, 1.25))
    assert both["ensemble"] == both[str(ckpt)] == evaluate.accuracy(p1, labels)

    evaluate.main([str(ckpt), str(ckpt), "--views", "flip"])
    out = capsys.readouterr().out.splitlines()
    assert "(flip, 8 images)" in out[0] and out[-1].startswith("ensemble") and len(out) == 4


def test_compare_counts_the_parameters_of_the_checkpoint(trained: Path) -> None:
    (group,), _ = compare.overview([trained.parent], target=0.5)
    state = torch.load(trained / "best.pt", weights_only=True)["model"]
    model, _ = registry.load_model(trained / "best.pt")
    assert group.params == sum(p.numel() for p in model.parameters()) > 0
    assert set(state) == set(model.state_dict())
    assert group.macs and group.macs > 0 and group.runs[0].time_to(0.5) is not None
