"""Faults at the command line (issue 15, items 8, 12-15, 17): each ends in one line that names
what to change, with the exit code a shell expects, before any data work where it can.

The one mechanism behind them: common/errors.py's boundary around every entry point's main,
and common.script.check_before_data, where everything that can fail before the download and
decode is checked. Most cases here need no data at all: the checks run first.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import struct
import subprocess
import sys
import time
import types
import zlib
from pathlib import Path

import pytest
import torch

from common import predict, recipe, script
from common.config import ConfigError
from resnet import train as resnet_train
from tests.helpers import unused_port

REPO = Path(__file__).resolve().parents[1]
# A device that cannot be opened here: "cuda" on a machine without a GPU, an index past the last
# GPU on one with GPUs.
NO_GPU = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
ENTRY_POINTS = ("common.predict", "common.evaluate", "common.compare", "common.report", "common.figures",
                "common.bench", "common.bench_data", "common.gpu_check")


def one_line(err: str) -> str:
    """The single line ``err`` holds (no traceback, no second line)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def train(argv: list[str], capsys, module: types.ModuleType = resnet_train) -> tuple[int, str, str]:
    """(exit code, stdout, the one stderr line) of ``module.main(argv)``, which must exit."""
    with pytest.raises(SystemExit) as end:
        module.main(argv)
    out, err = capsys.readouterr()
    return end.value.code, out, one_line(err)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Were the data touched, the download would fail on this mirror (nothing listens there)."""
    monkeypatch.setenv("VISION_HIST_MIRROR", f"http://127.0.0.1:{unused_port()}")


# ----------------------------------------------------------------------------- the boundary

@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_turns_os_faults_and_ctrl_c_into_one_line_and_keeps_bugs_loud(
        name: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Each main is inside the boundary: a full disk says where and what to do (exit 1), Ctrl-C
    exits 130, a bug keeps its traceback (it is raised, not turned into a line)."""
    main = importlib.import_module(name).main
    faults = {OSError(errno.ENOSPC, "No space left on device", "/some/disk/file"): (1, "no space left on the "
                                                                                       "disk holding /some/disk/file"),
              PermissionError(errno.EACCES, "Permission denied", "/locked"): (1, "/locked cannot be written"),
              NotADirectoryError(errno.ENOTDIR, "Not a directory", "/a/file/x"): (1, "is a file, not a folder"),
              KeyboardInterrupt(): (130, "interrupted")}
    for fault, (code, said) in faults.items():
        def parse(*a, fault=fault, **k):
            raise fault
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
        with pytest.raises(SystemExit) as end:
            main([])
        assert end.value.code == code, name
        assert said in one_line(capsys.readouterr().err), name

    def bug(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", bug)
    with pytest.raises(ZeroDivisionError):
        main([])


def test_ctrl_c_while_an_entry_point_imports_ends_in_one_line(tmp_path: Path) -> None:
    """A Ctrl-C while torch loads (seconds on a cold disk): one line, and the process ends by
    SIGINT as a shell expects. A stand-in torch that waits makes the moment certain."""
    slow = tmp_path / "slow" / "torch"
    slow.mkdir(parents=True)
    ready = tmp_path / "importing"
    slow.joinpath("__init__.py").write_text(f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\n"
                                            f"time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "slow"), str(REPO)])}
    for command in ([sys.executable, "-m", "common.predict", "x.pt", "y.png"],
                    [sys.executable, str(REPO / "resnet" / "train.py")]):
        ready.unlink(missing_ok=True)
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 30
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode in (-signal.SIGINT, 130), err
        assert one_line(err) == "interrupted while starting: nothing was done"


# ----------------------------------------------------------------------------- item 8: before data

@pytest.mark.parametrize("arg, said", [
    ("--LEARNING_RATE=inf", "LEARNING_RATE=inf is not possible: a finite number is needed"),
    ("--LEARNING_RATE=nan", "LEARNING_RATE=nan is not possible"),
    ("--WARMUP_EPOCHS=inf", "WARMUP_EPOCHS=inf is not possible"),
    ("--EVAL_SCALES=(1.0,1e999)", "EVAL_SCALES=(1.0, inf) is not possible"),  # literal_eval: inf
    ("--IMAGE_DIM=100000", f"IMAGE_DIM=100000 is not possible: from 8 to {recipe.MAX_DIM} pixels"),
    ("--EVAL_IMAGE_DIM=100000", "EVAL_IMAGE_DIM=100000 is not possible"),
    ("--CACHE_DIM=100000", "CACHE_DIM=100000 is not possible"),
    ("--DEVICE=foo", "DEVICE='foo' cannot be used here"),
    (f"--DEVICE={NO_GPU}", f"DEVICE={NO_GPU}"),
    ("--CACHE_DIM=48", "CACHE_DIM=48 is below IMAGE_DIM (64 px)"),
    ("--CACHE_DIM=64 --EVAL_IMAGE_DIM=80", "CACHE_DIM=64 is below the evaluation size (80 px)"),
    (f"--IMAGE_DIM={recipe.MAX_DIM}", "the image cache needs about"),  # 13,394 images at 4096 px: 627 GiB
])
def test_constants_are_refused_before_any_data_work(arg: str, said: str, tmp_path: Path, capsys,
                                                    no_network) -> None:
    data = tmp_path / "data"
    code, _, err = train(["--RECIPE=tiny", "--IMAGE_DIM=64", *arg.split(" "), f"--DATA_DIR={data}",
                          f"--RUNS_DIR={tmp_path / 'runs'}"], capsys)
    assert code == 2 and err.startswith("error (bad constant): ") and said in err, err
    assert not data.exists()  # refused before the download


def test_data_dir_and_runs_dir_must_be_folders_this_process_can_write(tmp_path: Path, capsys,
                                                                      no_network) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes through a mode; sysfs refuses everyone a new file
        read_only = Path("/sys/kernel")
    cases = {"is a file, not a folder": a_file,
             "cannot be made: " + str(a_file) + " is a file": a_file / "sub",
             "is not writable": read_only,
             "cannot be made: " + str(read_only) + " is not writable": read_only / "sub"}
    for name in ("DATA_DIR", "RUNS_DIR"):
        for said, path in cases.items():
            other = "RUNS_DIR" if name == "DATA_DIR" else "DATA_DIR"
            code, _, err = train(["--RECIPE=tiny", f"--{name}={path}", f"--{other}={tmp_path / other}"], capsys)
            assert code == 2 and f"{name}={path} {said}" in err, err
    assert a_file.read_text() == "x" and not (tmp_path / "DATA_DIR").exists()


def test_a_data_dir_that_is_a_file_is_one_line_wherever_the_data_is_loaded(tmp_path: Path) -> None:
    """common.evaluate and common.figures load data by the checkpoint's DATA_DIR: the same check."""
    from common.data import load_data

    a_file = tmp_path / "data"
    a_file.write_text("x")
    cfg, _ = script.configure(resnet_train, ["--RECIPE=tiny", f"--DATA_DIR={a_file}"], recipe.RULES)
    with pytest.raises(ConfigError, match="DATA_DIR=.* is a file, not a folder"):
        load_data(cfg)
    assert a_file.read_text() == "x"


def test_the_cache_is_sized_from_a_quick_scan_of_data_path(tmp_path: Path, tiny_imagenette: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """DATA_PATH's 50 images at 4096 px need 2.3 GiB: refused when the disk has less, before decoding."""
    cfg, _ = script.configure(resnet_train, ["--RECIPE=tiny", f"--DATA_PATH={tiny_imagenette}",
                                             "--IMAGE_DIM=4096"], recipe.RULES)
    script.check_cache_room(cfg, tmp_path, torch.device("cpu"))  # this machine has the room
    monkeypatch.setattr(script.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=2**30))
    with pytest.raises(ConfigError, match=r"2\.3 GiB \(50 images at 4096 px\) and DATA_DIR .* has 1\.0 GiB free"):
        script.check_cache_room(cfg, tmp_path, torch.device("cpu"))
    monkeypatch.setattr(script, "_available_memory", lambda: 2**30)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "imagenette2-160-train-4096px-0.npy").touch()  # built already: no disk needed
    with pytest.raises(ConfigError, match=r"1\.0 GiB of memory available"):
        script.check_cache_room(cfg, tmp_path, torch.device("cpu"))


# ----------------------------------------------------------------------------- item 17

@pytest.mark.parametrize("folder, arg, said", [
    ("vgg", "--WIDTH=0.0001", "WIDTH=0.0001 is not possible: at least 1/64"),
    ("alexnet", "--WIDTH=0.001", "WIDTH=0.001 is not possible: at least 1/48"),
    ("mobilenet", "--WIDTH_MULT=1e-09", "WIDTH_MULT=1e-09 is not possible: a positive width multiplier of at "
                                        "least 1/32"),
])
def test_widths_that_leave_layers_without_a_channel_are_refused(folder: str, arg: str, said: str,
                                                               tmp_path: Path, capsys, no_network) -> None:
    module = importlib.import_module(f"{folder}.train")
    code, _, err = train(["--RECIPE=tiny", arg, f"--DATA_DIR={tmp_path}"], capsys, module)
    assert code == 2 and said in err, err


def test_decode_workers_beyond_the_cores_are_capped_with_a_warning(capsys) -> None:
    cores = os.cpu_count() or 1
    cfg, _ = script.configure(resnet_train, ["--RECIPE=tiny", f"--DECODE_WORKERS={cores * 50}"], recipe.RULES)
    assert cfg["DECODE_WORKERS"] == cores
    assert f"DECODE_WORKERS={cores * 50} is more than this machine's {cores} cores; capped at {cores}" \
        in capsys.readouterr().out


# ----------------------------------------------------------------------------- items 13, 14

def _fake_checkpoint(path: Path, arch: str) -> Path:
    """A file load_checkpoint accepts, of ``arch``: enough to be refused by family."""
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "epoch": 1, "step": 0, "rng": {}, "history": [],
                "config": {"ARCH": arch, "IMAGE_DIM": 32, "OPTIMIZER": "sgd"}}, path)
    return path


@pytest.mark.parametrize("arch, theirs, ours", [("resnet18", "resnet", "vit"), ("deit_tiny_16", "vit", "mobilenet"),
                                                ("mobilenet_v1", "mobilenet", "alexnet")])
def test_another_familys_checkpoint_is_refused_by_whose_it_is(arch: str, theirs: str, ours: str, tmp_path: Path,
                                                              capsys) -> None:
    ckpt = _fake_checkpoint(tmp_path / "last.pt", arch)
    module = importlib.import_module(f"{ours}.train")
    code, _, err = train([f"--RESUME={ckpt}", f"--DATA_DIR={tmp_path / 'data'}"], capsys, module)
    assert code == 2
    assert f"is a checkpoint of {arch}, a model of {theirs}/, not of {ours}/" in err, err
    assert f"python {theirs}/train.py --RESUME={ckpt}" in err


def test_eval_scales_error_names_eval_scales(tmp_path: Path, capsys, no_network) -> None:
    code, _, err = train(["--RECIPE=tiny", "--IMAGE_DIM=32", "--EVAL_SCALES=(1.0, 0.5)", "--ARCH=resnet18",
                          f"--DATA_DIR={tmp_path}"], capsys, _strict_resnet())
    assert code == 2 and err.startswith("error (bad constant): EVAL_SCALES=(1.0, 0.5) makes 16 px inputs"), err
    assert "larger scales in EVAL_SCALES" in err and "EVAL_IMAGE_DIM=" not in err


def _strict_resnet() -> types.ModuleType:
    """resnet/train.py's constants with a network that refuses inputs under 32 px (an unpadded
    32x32 conv), as a fixed-size network does."""
    m = types.ModuleType("strict")
    m.__file__ = "strict/train.py"
    for k, v in vars(resnet_train).items():
        if k.isupper():
            setattr(m, k, v)

    def build(cfg: dict, num_classes: int) -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 32), torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))

    m.main = lambda argv: script.main(m, build, argv)
    return m


def test_report_asks_a_patch_model_for_a_multiple_of_its_patch_size(capsys) -> None:
    from common import report

    with pytest.raises(SystemExit) as end:
        report.main(["vit_b_16", "--size", "100"])
    said = str(end.value.code)
    assert "the size must be a multiple of its patch size (16), e.g. --size 112 or 96" in said
    assert "larger" not in said


# ----------------------------------------------------------------------------- item 12: predict, bench_data

def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says width x height (and whose data is one empty row: never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny ResNet saved as a checkpoint (predict only needs it to load)."""
    cfg, _ = script.configure(resnet_train, ["--RECIPE=tiny"], {**recipe.RULES, **resnet_train.RULES})
    model = resnet_train.build_model(cfg, 10)
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    torch.save({"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 1, "step": 0, "rng": {},
                "history": [], "config": cfg, "num_classes": 10}, path)
    return path


def test_predict_refuses_in_one_line_each(checkpoint: Path, tmp_path: Path, capsys) -> None:
    bomb = _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(SystemExit) as end:
        predict.main([str(checkpoint), str(bomb)])
    assert end.value.code == 1
    err = one_line(capsys.readouterr().err)
    assert str(bomb) in err and "decompression bomb" in err and "pass a smaller image" in err
    for args, code, said in ((["--top=-1"], 2, "--top=-1: list at least 1 class"),
                             (["--device", NO_GPU], 2, f"--device {NO_GPU}:"),
                             (["--device", "foo"], 2, "--device foo:")):
        with pytest.raises(SystemExit) as end:
            predict.main([str(checkpoint), str(bomb), *args])
        assert end.value.code == code and said in one_line(capsys.readouterr().err)


def test_bench_data_refuses_a_missing_folder_in_one_line(tmp_path: Path, capsys) -> None:
    from common import bench_data

    with pytest.raises(SystemExit) as end:
        bench_data.main(["--folder", str(tmp_path / "nowhere")])
    assert end.value.code == 1
    assert f"--folder {tmp_path / 'nowhere'} has no train/ folder" in one_line(capsys.readouterr().err)


def test_ctrl_c_during_evaluate_is_one_line_and_exit_130(checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys) -> None:
    from common import evaluate

    def interrupted(*a, **k):
        raise KeyboardInterrupt  # as Ctrl-C raises it in the middle of the evaluation
    monkeypatch.setattr(evaluate, "evaluate", interrupted)
    with pytest.raises(SystemExit) as end:
        evaluate.main([str(checkpoint)])
    assert end.value.code == 130 and one_line(capsys.readouterr().err).startswith("interrupted")


# ----------------------------------------------------------------------------- item 15: stops exit non-zero

@pytest.mark.parametrize("sig, batch, where", [(signal.SIGINT, 8, "mid-epoch"), (signal.SIGTERM, 8, "mid-epoch"),
                                               (signal.SIGTERM, 30, "epoch end")])
def test_a_stopped_run_exits_128_plus_the_signal_and_says_how_to_resume(
        sig: signal.Signals, batch: int, where: str, tiny_imagenette: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """130 after Ctrl-C, 143 after SIGTERM (``train.py && next`` stops), and the --RESUME line
    whether the stop came mid-epoch or at an epoch's end (30 images in one batch: one step)."""
    real_fit = script.fit

    def fit_with_signal(*a, **k):
        return real_fit(*a, on_step=lambda step: step == 1 and os.kill(os.getpid(), sig), **k)
    monkeypatch.setattr(script, "fit", fit_with_signal)
    code, out, _ = train([f"--DATA_PATH={tiny_imagenette}", f"--DATA_DIR={tmp_path / 'data'}",
                          f"--RUNS_DIR={tmp_path / 'runs'}", "--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1",
                          f"--BATCH_SIZE={batch}", "--NUM_EPOCHS=2"], capsys)
    assert code == 128 + sig
    resume = out.strip().splitlines()[-1]  # the last line: what to type next
    last = next((tmp_path / "runs" / "resnet18").iterdir()) / "last.pt"
    assert resume.endswith(f"continue with --RESUME={os.path.relpath(last)}"), out
    assert ("after epoch 1" in resume) == (where == "epoch end")
    assert torch.load(last, weights_only=True)["step"] == (0 if where == "epoch end" else 1)
