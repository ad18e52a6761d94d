"""Every */train.py end to end, as a user runs it: a real subprocess, a real download over
127.0.0.1, two epochs, the run's files, a resume, bad constants, --help, and DDP with two CPU
processes. Each script is tested at its own RECIPES["tiny"], declared beside its recipes, so a
new architecture's train.py is covered by being there."""
from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import make_archive, make_image_tree

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.parent.name for p in REPO.glob("*/train.py"))
SYSTEM_ARGS = ["--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1"]
N_CLASSES, N_TRAIN, N_VAL = 10, 4, 2  # per class


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VISION_HIST_MIRROR")}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


def assert_refused(train, cases: dict[str, str], data_dir: Path, capsys) -> None:
    """Each ``--NAME=value`` of ``cases`` ends ``train.main`` with exit 2 and its message."""
    for arg, message in cases.items():
        with pytest.raises(SystemExit) as exit_:
            train.main([arg, f"--DATA_DIR={data_dir}"])
        assert exit_.value.code == 2, arg
        assert message in capsys.readouterr().err, arg


def _module(folder: str):
    return importlib.import_module(f"{folder}.train")


def test_there_are_scripts_and_each_has_a_tiny_recipe() -> None:
    assert "resnet" in SCRIPTS
    for folder in SCRIPTS:
        recipes = getattr(_module(folder), "RECIPES", {})
        assert "tiny" in recipes, f"{folder}/train.py needs RECIPES['tiny'] for the tests"


@pytest.mark.parametrize("folder", SCRIPTS)
def test_train_py_downloads_trains_logs_checkpoints_and_resumes(folder: str, tmp_path: Path, http_server) -> None:
    tree = make_image_tree(tmp_path / "src", "imagenette2-160", n_train=N_TRAIN, n_val=N_VAL, size=(40, 36))
    md5 = make_archive(tree, http_server.root / "imagenette2-160.tgz")
    # The one thing the test changes: the expected checksum of its own archive. The script
    # itself runs unmodified, as __main__, from a folder outside the repository.
    launcher = (
        "import sys, runpy, dataclasses; sys.path.insert(0, sys.argv.pop(1));"
        "import common.datasets as d; key = ('imagenette', '160');"
        f"d.ARCHIVES[key] = dataclasses.replace(d.ARCHIVES[key], md5='{md5}');"
        "sys.argv[0] = sys.argv[1]; del sys.argv[1];"
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = str(REPO / folder / "train.py")
    common = [f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}", *SYSTEM_ARGS]
    env = _env(VISION_HIST_MIRROR=http_server.url)

    first = _run([sys.executable, "-c", launcher, str(REPO), script, "--NUM_EPOCHS=2", *common], work, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r.path for r in http_server.requests] == ["/imagenette2-160.tgz"]
    assert (tmp_path / "data" / "imagenette2-160" / "train" / "n01440764").is_dir()
    assert list((tmp_path / "data" / "cache").glob("*.npy"))
    (model_dir,) = (tmp_path / "runs").iterdir()
    (run_dir,) = model_dir.iterdir()
    assert {"config.json", "log.csv", "curves.png", "last.pt", "best.pt"} <= {p.name for p in run_dir.iterdir()}
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    batch = _module(folder).RECIPES["tiny"].get("BATCH_SIZE", _module(folder).BATCH_SIZE)
    for r in rows:
        # Every full batch trained once (drop_last), every val image evaluated once.
        assert int(r["train_images"]) == N_CLASSES * N_TRAIN // batch * batch
        assert int(r["val_images"]) == N_CLASSES * N_VAL
        hits1, hits5 = float(r["val_top1"]) * N_CLASSES * N_VAL, float(r["val_top5"]) * N_CLASSES * N_VAL
        assert hits1 == pytest.approx(round(hits1)) and hits1 <= hits5 + 1e-9
        assert float(r["train_loss"]) > 0 and float(r["val_loss"]) > 0
    assert "epoch 2/2" in first.stdout
    made = json.loads((run_dir / "config.json").read_text())
    assert made["constants"]["NUM_EPOCHS"] == 2 and made["constants"]["RECIPE"] == "tiny"
    made_by = made["provenance"]
    assert made_by["torch"] == torch.__version__ and "--NUM_EPOCHS=2" in made_by["command"]
    assert len(made_by["git_commit"]) == 40 and isinstance(made_by["git_uncommitted_changes"], bool)
    assert made_by["device"].startswith("cpu") and made_by["processes"] == 1

    # Resume with one more epoch: same folder, no new download, three rows, epoch 3 trained.
    again = _run([sys.executable, "-c", launcher, str(REPO), script, f"--RESUME={run_dir / 'last.pt'}",
                  "--NUM_EPOCHS=3", *common], work, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(http_server.requests) == 1
    assert [r["epoch"] for r in _rows(run_dir)] == ["1", "2", "3"]
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 3


@pytest.mark.parametrize("folder", SCRIPTS)
def test_bad_constants_are_refused_before_any_work(folder: str, tmp_path: Path, capsys) -> None:
    train = _module(folder)
    cases = {
        "--BATCH_SIZE=0": "BATCH_SIZE=0 is not possible",
        "--IMAGE_DIM=4": "IMAGE_DIM=4 is not possible",
        "--NUM_EPOCHS=two": "NUM_EPOCHS takes a whole number",
        "--LEARNING_RATES=0.1": "unknown constant LEARNING_RATES",
        "--RECIPE=nosuchrecipe": "RECIPE='nosuchrecipe' is not one of",
        "--OPTIMIZER=lbfgs": "OPTIMIZER='lbfgs' is not possible",
        "--EVAL_VIEWS=12crop": "EVAL_VIEWS='12crop' is not possible",
    }
    assert_refused(train, cases, tmp_path, capsys)
    # The same from the command line: one line of error, no traceback.
    out = _run([sys.executable, str(REPO / folder / "train.py"), "--BATCH_SIZE=0", f"--DATA_DIR={tmp_path}"],
               tmp_path, _env(), timeout=60)
    assert out.returncode == 2 and "BATCH_SIZE=0 is not possible" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing downloaded or written


@pytest.mark.parametrize("folder", SCRIPTS)
def test_help_lists_constants_and_recipes_from_any_folder_and_as_a_module(folder: str, tmp_path: Path) -> None:
    out = _run([sys.executable, str(REPO / folder / "train.py"), "--help"], tmp_path, _env(), timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("LEARNING_RATE", "NUM_EPOCHS", "BATCH_SIZE", "IMAGE_DIM", "WEIGHT_DECAY", "RESUME",
                 "COMPILE", "RECIPE", "EVAL_VIEWS"):
        assert f"--{name}" in out.stdout
    for recipe in _module(folder).RECIPES:
        assert f"\n  {recipe}: " in out.stdout
    as_module = _run([sys.executable, "-m", f"{folder}.train", "--help"], REPO, _env(), timeout=60)
    assert as_module.returncode == 0 and "--NUM_EPOCHS" in as_module.stdout, as_module.stderr


@pytest.mark.parametrize("folder", SCRIPTS)
def test_torchrun_two_cpu_processes(folder: str, tmp_path: Path) -> None:
    """DDP on the gloo backend: each rank trains on its shard; only rank 0 prints and saves."""
    tree = make_image_tree(tmp_path / "src", "imagenette2-160", n_train=4, n_val=3, size=(40, 36))
    out = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(REPO / folder / "train.py"), f"--DATA_PATH={tree}", "--NUM_EPOCHS=1", "--BATCH_SIZE=8",
                f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}", *SYSTEM_ARGS],
               tmp_path, _env(OMP_NUM_THREADS="1"), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("epoch 1/1") == 1  # rank 0 alone reports
    assert "(2 processes)" in out.stdout
    (model_dir,) = (tmp_path / "runs").iterdir()
    (run_dir,) = model_dir.iterdir()
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert not [k for k in ckpt["model"] if k.startswith("module.")]  # the raw model, not DDP's
    (row,) = _rows(run_dir)
    # 40 train images: 2 ranks x 2 full batches of 8 = 32 trained (drop_last), summed over ranks;
    # all 30 val images evaluated exactly once across the two shards.
    assert int(row["train_images"]) == 32
    assert int(row["val_images"]) == 30
    assert float(row["val_top1"]) * 30 == pytest.approx(round(float(row["val_top1"]) * 30))
