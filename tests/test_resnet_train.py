"""resnet/train.py end to end, as a user runs it: a real subprocess, a real download over
127.0.0.1, two epochs, the run's files, a resume, and DDP with two CPU processes."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import make_archive, make_image_tree

REPO = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--IMAGE_DIM=32", "--EVAL_IMAGE_DIM=32", "--WIDTH=4", "--BATCH_SIZE=8", "--DEVICE=cpu",
             "--DECODE_WORKERS=1", "--WARMUP_EPOCHS=0.5"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VISION_HIST_MIRROR")}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "log.csv") as f:
        return list(csv.DictReader(f))


def test_train_py_downloads_trains_logs_checkpoints_and_resumes(tmp_path: Path, http_server) -> None:
    tree = make_image_tree(tmp_path / "src", "imagenette2-160", n_train=4, n_val=2, size=(40, 36))
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
    script = str(REPO / "resnet" / "train.py")
    common = [f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}", *TINY_ARGS]
    env = _env(VISION_HIST_MIRROR=http_server.url)

    first = _run([sys.executable, "-c", launcher, str(REPO), script, "--NUM_EPOCHS=2", *common], work, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [r.path for r in http_server.requests] == ["/imagenette2-160.tgz"]
    assert (tmp_path / "data" / "imagenette2-160" / "train" / "n01440764").is_dir()
    assert list((tmp_path / "data" / "cache").glob("*.npy"))
    (run_dir,) = (tmp_path / "runs" / "resnet18").iterdir()
    assert {"config.json", "log.csv", "curves.png", "last.pt", "best.pt"} <= {p.name for p in run_dir.iterdir()}
    rows = _rows(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(0 <= float(r["val_top1"]) <= 1 for r in rows)
    assert "epoch 2/2" in first.stdout

    # Resume with one more epoch: same folder, no new download, three rows, epoch 3 trained.
    again = _run([sys.executable, "-c", launcher, str(REPO), script, f"--RESUME={run_dir / 'last.pt'}",
                  "--NUM_EPOCHS=3", *common], work, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(http_server.requests) == 1
    assert [r["epoch"] for r in _rows(run_dir)] == ["1", "2", "3"]
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 3


def test_bad_constants_are_refused_before_any_work(tmp_path: Path, capsys) -> None:
    from resnet import train

    cases = {
        "--BATCH_SIZE=0": "BATCH_SIZE=0 is not possible",
        "--IMAGE_DIM=16": "IMAGE_DIM=16 is not possible: at least 32 pixels",
        "--NUM_EPOCHS=two": "NUM_EPOCHS takes a whole number",
        "--LEARNING_RATES=0.1": "unknown constant LEARNING_RATES",
        "--ARCH=resnet19": "ARCH='resnet19' is not possible: resnet18, resnet34",
    }
    for arg, message in cases.items():
        with pytest.raises(SystemExit) as exit_:
            train.main([arg, f"--DATA_DIR={tmp_path}"])
        assert exit_.value.code == 2, arg
        assert message in capsys.readouterr().err, arg
    # The same from the command line: one line of error, no traceback.
    out = _run([sys.executable, str(REPO / "resnet" / "train.py"), "--BATCH_SIZE=0", f"--DATA_DIR={tmp_path}"],
               tmp_path, _env(), timeout=60)
    assert out.returncode == 2 and "BATCH_SIZE=0 is not possible" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())  # nothing downloaded or written


def test_help_lists_constants_from_any_folder_and_as_a_module(tmp_path: Path) -> None:
    out = _run([sys.executable, str(REPO / "resnet" / "train.py"), "--help"], tmp_path, _env(), timeout=60)
    assert out.returncode == 0, out.stderr
    for name in ("LEARNING_RATE", "NUM_EPOCHS", "BATCH_SIZE", "IMAGE_DIM", "LEARNING_RATE_DECAY_FACTOR",
                 "LEARNING_RATE_DECAY_STEP_SIZE", "WEIGHT_DECAY", "ARCH", "RESUME", "COMPILE"):
        assert f"--{name}" in out.stdout
    assert "plain18/plain34" in out.stdout  # the comment beside ARCH
    as_module = _run([sys.executable, "-m", "resnet.train", "--help"], REPO, _env(), timeout=60)
    assert as_module.returncode == 0 and "--ARCH" in as_module.stdout, as_module.stderr


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    """DDP on the gloo backend: each rank trains on its shard; only rank 0 prints and saves."""
    tree = make_image_tree(tmp_path / "src", "imagenette2-160", n_train=4, n_val=3, size=(40, 36))
    out = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(REPO / "resnet" / "train.py"), f"--DATA_PATH={tree}", "--NUM_EPOCHS=1",
                f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}", *TINY_ARGS],
               tmp_path, _env(OMP_NUM_THREADS="1"), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("epoch 1/1") == 1  # rank 0 alone reports
    assert "(2 processes)" in out.stdout
    (run_dir,) = (tmp_path / "runs" / "resnet18").iterdir()
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert not [k for k in ckpt["model"] if k.startswith("module.")]  # the raw model, not DDP's
    (row,) = _rows(run_dir)
    # 40 train images, 2 ranks x 2 full batches of 8 = 32 trained (drop_last); all 30 val evaluated.
    assert float(row["val_top1"]) * 30 == round(float(row["val_top1"]) * 30)
