"""Faults of data and comparisons (issue 15 items 3, 4, 6, 9, 10, 11, 14, 20), each as a user meets it.

A checkpoint scored or resumed on other classes; a comparison that averages an unfinished run in
or dies on one damaged folder; 16-bit and float images; links that lead nowhere; a damaged
cache; a cache folder that cannot be written; two processes writing AlexNet's PCA file. Every
case ends in the fixed behaviour or one clear line. Data is generated here (tiny trees, a tiny
ResNet trained for one epoch on the CPU), never downloaded.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common import cache, compare, evaluate, figures
from common.cache import build_cache
from common.checkpoint import TrainingError, check_classes
from common.config import ConfigError
from common.datasets import DataError
from common.runlog import write_log
from tests.helpers import make_image_tree

RES = 16  # cache side in the cache tests: every build well under a second
RED, CYAN = "n01440764", "n02102040"  # the trained classes (hues 0 and 0.5 in make_image_tree)
OTHER = ["n02979186", "n03000684"]  # as many classes, other names (cassette player, chain saw)


def refusal(call: Callable[[], object], capsys: pytest.CaptureFixture[str]) -> str:
    """The one-line refusal of ``call``: a project error raised, or the line an entry point
    printed before exiting non-zero (whichever boundary the entry point has)."""
    try:
        call()
    except SystemExit as end:
        assert end.code not in (0, None)
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err
    except (TrainingError, DataError, ConfigError) as e:
        assert len(str(e).splitlines()) == 1, str(e)
        return str(e)
    raise AssertionError("not refused")


# ----------------------------------------------------------------------------- 3: classes by name

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a tiny ResNet trained one epoch on two classes (red, cyan)."""
    from resnet import train as resnet_train

    root = tmp_path_factory.mktemp("trained")
    tree = make_image_tree(root / "src", wnids=[RED, CYAN], n_train=4, n_val=2, size=(40, 36))
    summary = resnet_train.main([f"--DATA_PATH={tree}", f"--DATA_DIR={root / 'data'}", f"--RUNS_DIR={root / 'runs'}",
                                 "--RECIPE=tiny", "--DEVICE=cpu", "--AMP=off", "--DECODE_WORKERS=1",
                                 "--NUM_EPOCHS=1", "--BATCH_SIZE=4"])
    assert summary is not None and not summary["interrupted"]
    return Path(summary["run_dir"])


@pytest.fixture(scope="module")
def other_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset with as many classes as the trained one, under other names."""
    return make_image_tree(tmp_path_factory.mktemp("other") / "src", wnids=OTHER, n_train=4, n_val=2,
                           size=(40, 36))


def test_evaluate_refuses_data_with_other_class_names(trained: Path, other_classes: Path, capsys) -> None:
    ckpt = trained / "best.pt"
    for call in (lambda: evaluate.evaluate([ckpt], data_path=str(other_classes), device="cpu"),
                 lambda: evaluate.main([str(ckpt), "--data", str(other_classes), "--device", "cpu"])):
        line = refusal(call, capsys)
        assert str(ckpt) in line and OTHER[0] in line and RED in line, line
    assert evaluate.evaluate([ckpt], device="cpu")[str(ckpt)]["images"] == 4  # its own data: scored


def test_figures_redraw_refuses_data_with_other_class_names(trained: Path, other_classes: Path, tmp_path: Path,
                                                           capsys) -> None:
    out = tmp_path / "figures"
    line = refusal(lambda: figures.redraw_run(trained / "best.pt", str(other_classes), "cpu", out), capsys)
    assert OTHER[1] in line and CYAN in line
    assert not out.exists() or not list(out.glob("*.png"))  # nothing drawn


def test_resume_refuses_data_with_other_class_names_and_touches_nothing(trained: Path, other_classes: Path,
                                                                       capsys) -> None:
    from resnet import train as resnet_train

    before = {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()}
    data_dir = trained.parents[2] / "data"
    cached = sorted(p.name for p in (data_dir / "cache").iterdir())
    line = refusal(lambda: resnet_train.main([f"--RESUME={trained / 'last.pt'}", f"--DATA_PATH={other_classes}",
                                              f"--DATA_DIR={data_dir}", "--DEVICE=cpu"]), capsys)
    assert "RESUME=" in line and OTHER[0] in line and "only in the checkpoint" in line, line
    assert {p.name: p.read_bytes() for p in trained.iterdir() if p.is_file()} == before
    # refused before the decode: the other data was not decoded over the run's own cache
    assert sorted(p.name for p in (data_dir / "cache").iterdir()) == cached


def test_check_classes_by_name_and_by_count_for_old_checkpoints() -> None:
    check_classes({"classes": ["a", "b"], "num_classes": 2}, ["a", "b"], "X")
    with pytest.raises(TrainingError, match=r"X was trained on other classes .*only in the checkpoint: b; "
                                            r"only in the data: c"):
        check_classes({"classes": ["a", "b"], "num_classes": 2}, ["a", "c"], "X")
    with pytest.raises(TrainingError, match="the same names in another order"):
        check_classes({"classes": ["a", "b"]}, ["b", "a"], "X")
    check_classes({"num_classes": 2}, ["x", "y"], "old.pt")  # no names saved: the count is all there is
    with pytest.raises(TrainingError, match="old.pt was trained on 2 classes, this data has 3"):
        check_classes({"num_classes": 2}, ["x", "y", "z"], "old.pt")


# ----------------------------------------------------------------------------- 4, 11: compare

def _run(root: Path, name: str, val_top1: list[float], epochs: int = 2, seed: int = 0) -> Path:
    """A run folder of ``epochs`` planned epochs, with a log row per value of ``val_top1``."""
    d = root / name
    d.mkdir(parents=True)
    cfg = {"ARCH": "resnet18", "NUM_EPOCHS": epochs, "SEED": seed, "IMAGE_DIM": 32, "ACTIVATION": "relu"}
    (d / "config.json").write_text(json.dumps({"constants": cfg, "provenance": {}}))
    write_log([{"epoch": e + 1, "train_top1": 0.5, "val_top1": v, "val_top5": 0.9, "train_loss": 1.0,
                "epoch_time_s": 60.0} for e, v in enumerate(val_top1)], d / "log.csv")
    return d


def test_compare_never_pools_an_unfinished_run_with_finished_ones(tmp_path: Path, capsys,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    _run(runs, "a", [0.3, 0.5], seed=0)
    _run(runs, "b", [0.4, 0.5], seed=1)
    stopped = _run(runs, "c", [0.9], seed=2)  # stopped after 1 of 2 epochs (best 90 %: would lift the mean)
    groups, text = compare.overview([runs], target=0.6)
    err = capsys.readouterr().err
    assert "unfinished" in err and str(stopped.name) in err and "1 of 2 epochs" in err
    (group,) = groups
    assert [r.path.name for r in group.runs] == ["a", "b"]
    assert text.splitlines()[2].endswith("| 50.0 ± 0.0 % | 50.0 ± 0.0 % | 2 |")

    readme = tmp_path / "README.md"
    readme.write_text("<!-- results:begin -->\n<!-- results:end -->\n")
    monkeypatch.setattr(compare, "RECORDS", runs)  # an unfinished run among the records, copied by hand
    compare.main(["--readme", str(readme)])
    written = readme.read_text()
    assert "50.0 ± 0.0 %" in written and "63.3" not in written and "90.0" not in written

    by_seed = compare.group_runs(compare.find_runs([runs]), ["ACTIVATION"])  # --group: the same rule
    assert [len(g) for g in by_seed.values()] == [2]


def test_compare_refuses_a_group_constant_no_run_has(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _run(runs, "a", [0.3, 0.5])
    line = refusal(lambda: compare.main([str(runs), "--group", "NOPE"]), capsys)
    assert "--group NOPE" in line and "no run has" in line
    compare.main([str(runs), "--group", "ACTIVATION"])  # a constant of the runs: a table
    assert "ACTIVATION=relu" in capsys.readouterr().out


DAMAGE: dict[str, Callable[[Path], None]] = {
    "cut config.json": lambda d: (d / "config.json").write_text((d / "config.json").read_text()[:20]),
    "random-bytes log.csv": lambda d: (d / "log.csv").write_bytes(bytes(range(256)) * 4),
    "cut log.csv": lambda d: (d / "log.csv").write_text((d / "log.csv").read_text()[:-9]),
    "log.csv cut in its last number": lambda d: (d / "log.csv").write_text((d / "log.csv").read_text()[:-2]),
    "log.csv line cut in two": lambda d: (d / "log.csv").write_text(
        "\n".join(line[:15] if i == 1 else line for i, line in enumerate((d / "log.csv").read_text().split("\n")))),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_one_damaged_run_folder_is_skipped_with_a_warning_naming_it(tmp_path: Path, damage: str, capsys) -> None:
    runs = tmp_path / "runs"
    _run(runs, "good", [0.3, 0.5])
    bad = _run(runs, "bad", [0.2, 0.7], seed=1)
    DAMAGE[damage](bad)
    groups, text = compare.overview([runs], target=0.6)
    err = capsys.readouterr().err
    assert "damaged" in err and "bad" in err and len(err.strip().splitlines()) == 1, err
    assert [r.path.name for g in groups for r in g.runs] == ["good"]
    assert compare.group_runs(compare.find_runs([runs]), ["ACTIVATION"]) == {
        "ACTIVATION=relu": [compare.read_run(runs / "good")[1]]}


def test_compare_writes_its_figures_into_a_folder_it_makes(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    _run(runs, "a", [0.3, 0.5])
    out = tmp_path / "not" / "yet" / "curves.png"
    compare.main([str(runs), "--plot", "val_top1", "--out", str(out), "--pareto", str(tmp_path / "no" / "p.png")])
    assert out.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "no" / "p.png").is_file()


# ----------------------------------------------------------------------------- 6: 16-bit and float images

def _decoded(tmp_path: Path, name: str, array: np.ndarray, **save) -> tuple[np.ndarray, str]:
    path = tmp_path / name
    Image.fromarray(array).save(path, **save)
    pixels, _, mode = cache.decode(path, 8)
    return pixels, mode


def test_16_bit_png_is_scaled_not_saturated(tmp_path: Path) -> None:
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 257 * 4)  # 0, 1028, ... 64764: 8-bit 0, 4, ... 252
    pixels, mode = _decoded(tmp_path, "ramp16.png", ramp)
    with Image.open(tmp_path / "ramp16.png") as im:
        assert im.mode in ("I;16", "I")  # what a 16-bit PNG opens as
    assert mode.endswith("(0..65535)") and pixels.dtype == np.uint8
    assert np.array_equal(pixels[..., 0], (ramp // 257).astype(np.uint8)) and (pixels[..., 0] == pixels[..., 2]).all()
    grey, _ = _decoded(tmp_path, "grey16.png", np.full((8, 8), 25700, np.uint16))  # 25700 / 257 = 100
    assert (grey == 100).all()


def test_32_bit_integer_image_is_scaled_as_16_bit_within_that_range(tmp_path: Path) -> None:
    pixels, mode = _decoded(tmp_path, "i32.tif", np.full((8, 8), 51400, np.int32))  # mode I
    assert mode == "I (0..65535)" and (pixels == 200).all()


def test_float_tiff_in_0_1_is_scaled_and_out_of_range_is_stretched(tmp_path: Path) -> None:
    half = np.full((8, 8), 0.5, np.float32)
    half[:4] = 0.25
    pixels, mode = _decoded(tmp_path, "f.tif", half)
    assert mode == "F (0..1)" and (pixels[:4] == 64).all() and (pixels[4:] == 128).all()  # not near black
    wide = np.linspace(-10, 1000, 64, dtype=np.float32).reshape(8, 8)
    pixels, mode = _decoded(tmp_path, "wide.tif", wide)
    assert mode == "F (own min..max)" and pixels.min() == 0 and pixels.max() == 255


# ----------------------------------------------------------------------------- 9: links that lead nowhere

def test_a_dangling_link_and_a_link_loop_are_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    tree = make_image_tree(tmp_path / "src", n_classes=2)
    folder = next((tree / "train").iterdir())
    os.symlink(tmp_path / "gone.JPEG", folder / "dangling.JPEG")
    os.symlink("loop.JPEG", folder / "loop.JPEG")  # a link to itself: ELOOP on stat
    with caplog.at_level(logging.WARNING, logger="common.cache"):
        data = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    assert len(data) == 6 and sorted(Path(p).name for p in data.skipped) == ["dangling.JPEG", "loop.JPEG"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "skipping unreadable image" in warned and "dangling.JPEG" in warned and "loop.JPEG" in warned


# ----------------------------------------------------------------------------- 10, 14: the cache

def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


CACHE_DAMAGE: dict[str, Callable[[Path, Path], None]] = {
    ".npy cut short": lambda npy, meta: _cut(npy),
    ".npy header cut": lambda npy, meta: _cut(npy, 0.001),
    ".json cut": lambda npy, meta: _cut(meta),
    ".json not JSON": lambda npy, meta: meta.write_bytes(os.urandom(64)),
    ".json a list": lambda npy, meta: meta.write_text("[]"),
    "shape that disagrees": lambda npy, meta: np.save(npy, np.zeros((2, RES, RES, 3), np.uint8)),
    "another resolution": lambda npy, meta: np.save(npy, np.zeros((12, 8, 8, 3), np.uint8)),
    ".npy missing": lambda npy, meta: npy.unlink(),
}


@pytest.mark.parametrize("damage", sorted(CACHE_DAMAGE))
def test_a_damaged_cache_is_said_in_one_line_removed_and_decoded_again(tmp_path: Path, damage: str,
                                                                       caplog) -> None:
    tree = make_image_tree(tmp_path / "src", n_classes=2, n_train=6)
    first = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    assert first.source is not None
    images = first.images.clone()  # a copy: the map of a file cut short faults (SIGBUS) when read
    CACHE_DAMAGE[damage](first.source, first.source.with_suffix(".json"))
    with caplog.at_level(logging.INFO, logger="common.cache"):
        again = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and "damaged" in said[0] and first.source.name in said[0], said
    assert not any("source changed" in r.getMessage() for r in caplog.records)
    assert torch.equal(again.images, images) and torch.equal(again.labels, first.labels)
    assert build_cache(tree, "train", RES, tmp_path / "cache", workers=1).source == first.source  # sound now


def test_a_damaged_pca_file_is_computed_again(tmp_path: Path, caplog) -> None:
    tree = make_image_tree(tmp_path / "src", n_classes=2)
    data = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    want = cache.rgb_pca(data)
    saved = data.source.with_suffix(".pca.json")
    _cut(saved)
    with caplog.at_level(logging.WARNING, logger="common.cache"):
        got = cache.rgb_pca(data)
    assert all(torch.equal(a, b) for a, b in zip(got, want)) and "damaged" in caplog.text
    assert json.loads(saved.read_text())["eigval"] == want[0].tolist()


def test_an_interrupted_decode_is_not_called_a_source_change(tmp_path: Path, monkeypatch, caplog) -> None:
    tree = make_image_tree(tmp_path / "src", n_classes=2)
    real, calls = cache.decode, []

    def stopped(path: Path, resolution: int):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the decode
        return real(path, resolution)

    monkeypatch.setattr(cache, "decode", stopped)
    with pytest.raises(KeyboardInterrupt):
        build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    monkeypatch.setattr(cache, "decode", real)
    with caplog.at_level(logging.INFO, logger="common.cache"):
        build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    assert "interrupted decode" in caplog.text and "source changed" not in caplog.text


@pytest.mark.parametrize("code, said, unsaid", [
    (errno.EACCES, "make that folder writable", "free"),
    (errno.EROFS, "set DATA_DIR to a folder you can write", "free"),
    (errno.ENOSPC, "It needs about 4.5 KiB free there", "writable"),  # 6 images of 16 x 16 x 3 bytes
])
def test_a_cache_that_cannot_be_written_is_told_apart_by_errno(tmp_path: Path, monkeypatch, code: int, said: str,
                                                                unsaid: str) -> None:
    tree = make_image_tree(tmp_path / "src", n_classes=2)

    def refused(*args, **kwargs) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(cache, "_write", refused)
    with pytest.raises(DataError) as e:
        build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    line = str(e.value)
    assert len(line.splitlines()) == 1 and said in line and unsaid not in line, line


# ----------------------------------------------------------------------------- 20: one PCA writer

def test_two_processes_asking_for_the_pca_at_once_write_it_once(tmp_path: Path, monkeypatch) -> None:
    tree = make_image_tree(tmp_path / "src", n_classes=2)
    data = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    real_pca, real_write, computed, written = cache._rgb_pca, cache.atomic_write_text, [], []

    def slow_pca(*args, **kwargs):
        computed.append(1)
        time.sleep(0.3)  # long enough for the other to arrive while this one computes
        return real_pca(*args, **kwargs)

    def counted_write(path: Path, text: str) -> Path:
        written.append(path)
        return real_write(path, text)

    monkeypatch.setattr(cache, "_rgb_pca", slow_pca)
    monkeypatch.setattr(cache, "atomic_write_text", counted_write)
    results: list[tuple[torch.Tensor, torch.Tensor]] = []
    ranks = [threading.Thread(target=lambda: results.append(cache.rgb_pca(data))) for _ in range(2)]
    for t in ranks:
        t.start()
    for t in ranks:
        t.join()
    assert len(results) == 2 and len(computed) == 1 and len(written) == 1
    assert torch.equal(results[0][1], results[1][1])


def test_vgg_init_from_a_net_a_of_other_classes_is_refused(tmp_path: Path, capsys) -> None:
    """VGG's INIT_FROM copies net A's last layer (fc8) row by row: its classes must be the data's."""
    from common.config import constants
    from common.recipe import SWITCHES
    from vgg import train as vgg_train

    cfg = {**SWITCHES, **constants(vgg_train), **vgg_train.RECIPES["tiny"], "RECIPE": "tiny"}
    net_a = vgg_train.build_model({**cfg, "ARCH": "vgg11_bn"}, 2)
    ckpt = {"model": net_a.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 2, "step": 0, "rng": {},
            "config": {**cfg, "ARCH": "vgg11_bn"}, "history": [], "num_classes": 2, "classes": OTHER}
    torch.save(ckpt, tmp_path / "a.pt")
    tree = make_image_tree(tmp_path / "src", wnids=[RED, CYAN], n_train=2, n_val=1, size=(40, 36))
    line = refusal(lambda: vgg_train.main([f"--INIT_FROM={tmp_path / 'a.pt'}", "--ARCH=vgg13_bn", "--RECIPE=tiny",
                                           f"--DATA_PATH={tree}", f"--DATA_DIR={tmp_path / 'data'}",
                                           f"--RUNS_DIR={tmp_path / 'runs'}", "--DEVICE=cpu"]), capsys)
    assert "INIT_FROM=" in line and OTHER[0] in line and RED in line, line
    assert not (tmp_path / "runs").exists()
