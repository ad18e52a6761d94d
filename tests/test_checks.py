"""What the script checks before any data work, each with one clear line and nothing lost:
an input size the network cannot take, a RESUME file that is not a checkpoint of this project,
a checkpoint of another network."""
from __future__ import annotations

import os
import time
import types
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from common import script, trainer
from common.config import constants
from resnet import train as resnet_train
from tests.helpers import unused_port
from tests.test_trainer import TINY, colour_set, tiny_model


def _main(argv: list[str], capsys, module=resnet_train, build=resnet_train.build_model) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        script.main(module, build, argv, rules=getattr(module, "RULES", None))
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return exit_.value.code, err


def test_an_input_size_the_network_cannot_take_fails_in_seconds_before_any_download(
        tmp_path: Path, capsys, monkeypatch) -> None:
    # An AlexNet-like stem without padding: 11x11 stride 4 then 5x5 needs at least 27 px.
    def build(cfg: dict, num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 8, 11, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 5), nn.Flatten(),
                             nn.LazyLinear(num_classes))

    m = types.ModuleType("alexnet_like")
    m.__file__ = "alexnet_like/train.py"
    for k, v in constants(resnet_train).items():
        setattr(m, k, v)
    # Were the data touched, this mirror would fail differently (nothing listens there).
    monkeypatch.setenv("VISION_HIST_MIRROR", f"http://127.0.0.1:{unused_port()}")
    data = tmp_path / "data"
    start = time.perf_counter()
    code, err = _main([f"--DATA_DIR={data}", "--IMAGE_DIM=20"], capsys, m, build)
    assert code == 2 and "IMAGE_DIM=20 gives 20 px inputs, too small for this network" in err
    code, err = _main([f"--DATA_DIR={data}", "--IMAGE_DIM=64", "--EVAL_SCALES=(1.0, 0.25)"], capsys, m, build)
    assert code == 2 and "EVAL_SCALES=(1.0, 0.25) makes 16 px inputs" in err
    assert time.perf_counter() - start < 10
    assert not data.exists()


def _checkpoint(tmp_path: Path) -> Path:
    cfg = {**TINY, "WIDTH": 4, "NUM_EPOCHS": 1, "RUNS_DIR": str(tmp_path / "runs")}
    summary = trainer.fit(tiny_model(num_classes=10), colour_set(32, classes=10), colour_set(16, classes=10),
                          cfg, name="resnet18")
    return Path(summary["run_dir"]) / "last.pt"


def test_resume_of_another_network_names_the_constants_that_differ(tmp_path: Path, capsys) -> None:
    last = _checkpoint(tmp_path)
    data = tmp_path / "data"
    code, err = _main([f"--RESUME={last}", "--ARCH=resnet34", f"--DATA_DIR={data}"], capsys)
    assert code == 2
    assert ("holds a different network than these constants build: "
            "ARCH is 'resnet18' there and 'resnet34' here") in err
    code, err = _main([f"--RESUME={last}", "--WIDTH=8", f"--DATA_DIR={data}"], capsys)
    assert code == 2 and "WIDTH is 4 there and 8 here" in err
    assert not data.exists()  # refused before any data work
    # The checkpoint itself is untouched and still resumable with its own constants.
    assert torch.load(last, weights_only=True)["config"]["WIDTH"] == 4


def test_resume_of_a_file_that_is_not_a_checkpoint_says_so_in_one_line(tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    code, err = _main([f"--RESUME={junk}", f"--DATA_DIR={tmp_path / 'data'}"], capsys)
    assert code == 1 and "is not a checkpoint of this project" in err
    assert "weights_only" not in err  # never the advice to load it unsafely
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)  # a real torch file, but not ours
    code, err = _main([f"--RESUME={other}", f"--DATA_DIR={tmp_path / 'data'}"], capsys)
    assert code == 1 and "is not a checkpoint of this project (it lacks" in err
    hello = tmp_path / "hello.pt"
    hello.write_bytes(b"hello")  # torch.load raises KeyError on these five bytes
    code, err = _main([f"--RESUME={hello}", f"--DATA_DIR={tmp_path / 'data'}"], capsys)
    assert code == 1 and "is not a checkpoint of this project" in err
    assert junk.read_bytes() and other.exists()  # nothing deleted
