"""common/bench.py and common/gpu_check.py on a CPU: tiny recipes, generated images, short clocks."""
from __future__ import annotations

import csv
from collections.abc import Iterator
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from common import bench, gpu_check, trainer
from tests.helpers import make_image_tree

CPU = ["--set", "DEVICE=cpu", "--set", "DECODE_WORKERS=1"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One thread here and in the training subprocess: on a shared 2-core machine two threads
    that wait for each other make tiny steps many times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 classes x 8 train / 2 val images, 40 x 36 px: a few batches of the tiny recipes' 8."""
    return make_image_tree(tmp_path_factory.mktemp("bench"), "imagenette2-160", n_train=8, n_val=2, size=(40, 36))


def test_bench_command_prints_a_table_and_writes_its_csv(tree: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    steps = []  # the training loop's own step runs every training measurement
    real = trainer.train_step

    def counting(run, x, y, step, sums):  # noqa: ANN001
        steps.append((type(run).__name__, tuple(x.shape)))
        real(run, x, y, step, sums)

    monkeypatch.setattr(trainer, "train_step", counting)
    out_csv = tmp_path / "bench.csv"
    bench.main(["resnet18", "--data", str(tree), "--recipe", "tiny", *CPU, "--compile", "off",
                "--seconds", "0", "--warmup", "1", "--workers", "0", "--data-dir", str(tmp_path / "data"),
                "--csv", str(out_csv)])
    out = capsys.readouterr().out
    rows = list(csv.DictReader(open(out_csv)))
    assert [(r["model"], r["compile"], r["mode"], r["feed"]) for r in rows] == [
        ("resnet18", "off", "train", "bare"), ("resnet18", "off", "infer", "bare"),
        ("resnet18", "off", "train", "cache"), ("resnet18", "off", "train", "imagefolder"),
        ("-", "-", "data", "cache"), ("-", "-", "data", "imagefolder")]
    for r in rows:
        assert float(r["images_per_s"]) > 0 and int(r["steps"]) >= 3
        assert (r["device"], r["size"], r["batch"], r["peak_mib"]) == ("cpu", "32", "8", "")  # the tiny recipe's
    train_steps = sum(int(r["steps"]) + 1 for r in rows if r["mode"] == "train")  # + 1 warm-up each
    assert len(steps) == train_steps and set(steps) == {("Run", (8, 3, 32, 32))}
    assert "target: shared pipeline costs < 5% of the bare step" in out
    assert "target: shared pipeline >= 20x ImageFolder's images/s" in out
    assert f"wrote {out_csv}" in out


def test_verdicts_and_targets() -> None:
    def row(compile_: str, mode: str, feed: str, rate: float) -> dict:
        return {"compile": compile_, "mode": mode, "feed": feed, "images_per_s": rate}

    rows = [row("off", "train", "bare", 1000), row("off", "train", "cache", 980), row("on", "train", "bare", 2000),
            row("on", "train", "cache", 1800), row("-", "data", "cache", 50_000), row("-", "data", "imagefolder", 2000)]
    v = bench.verdicts(rows)
    assert v["pipeline_cost"] == pytest.approx(2000 / 1800 - 1) and not v["pipeline_cost_met"]  # the worst
    assert v["imagefolder_ratio"] == 25 and v["imagefolder_ratio_met"]
    lines = bench.target_lines(v)
    assert "NOT met" in lines[0] and lines[1].endswith("-> met")
    with pytest.raises(SystemExit, match="--compile takes"):
        bench.parse_compiles("yes")


def test_gpu_check_tiny_writes_every_figure_and_the_readme_table(tree: Path, tmp_path: Path, capsys) -> None:
    out, readme = tmp_path / "check.json", tmp_path / "README.md"
    readme.write_text(f"# x\n{gpu_check.MARKERS[0]}\nold\n{gpu_check.MARKERS[1]}\nrest\n")
    gpu_check.main(["--tiny", "--data", str(tree), "--folders", "resnet", "--models", "resnet18",
                    "--seconds", "0", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
                    "--data-dir", str(tmp_path / "data"), "--readme", str(readme)])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert {"device", "torch", "torchvision", "git_commit", "command", "started"} <= set(res["provenance"])
    assert res["command"].endswith("--readme " + str(readme)) and res["folders"] == ["resnet"]
    data = res["data"]
    for key in ("imagefolder_images_per_s", "cache_build_s", "batchloader_images_per_s", "batchloader_over_imagefolder"):
        assert math.isfinite(data[key]) and data[key] > 0, key
    speed = res["speed"]
    assert {(r["model"], r["mode"], r["feed"]) for r in speed["rows"]} == {
        ("resnet18", "train", "bare"), ("resnet18", "infer", "bare"), ("resnet18", "train", "cache"),
        ("resnet18", "train", "imagefolder"), ("-", "data", "cache"), ("-", "data", "imagefolder")}
    assert not speed["failed"] and not speed["skipped"]
    run = res["train"]["runs"]["resnet"]
    assert run["returncode"] == 0 and run["epochs_done"] == 1 and run["arch"] == "resnet18"
    assert 0 <= run["val_top1"] <= 1 and run["images_per_s"] > 0 and "--NUM_EPOCHS=1" in run["command"]
    assert {"pipeline_cost", "pipeline_cost_met", "imagefolder_ratio", "imagefolder_ratio_met"} <= set(res["targets"])
    assert "target: shared pipeline costs < 5% of the bare step" in printed
    table = readme.read_text()
    assert table.startswith(f"# x\n{gpu_check.MARKERS[0]}\nMeasured by") and table.endswith(f"{gpu_check.MARKERS[1]}\nrest\n")
    assert "| resnet18 | 32 | 8 | off |" in table and "| resnet/train.py | resnet18 | 1/1 |" in table
    assert "| train.py (RECIPE=tiny) |" in table
    gpu_check.main(["--table", str(out), "--readme", str(readme)])  # from the JSON alone: the same text
    assert readme.read_text() == table


def test_make_small_keeps_the_split_and_sets_the_short_side(tree: Path, tmp_path: Path) -> None:
    dst = tmp_path / "small"
    n = gpu_check.make_small(tree, dst, 18, workers=1)
    src = sorted(p.relative_to(tree) for p in tree.glob("*/*/*.JPEG"))
    assert n == len(src) and sorted(p.relative_to(dst) for p in dst.glob("*/*/*.JPEG")) == src
    with Image.open(dst / src[0]) as im:
        assert im.size == (20, 18)  # 40 x 36 with its short side at 18


def test_gpu_check_refuses_missing_data(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="give --data"):
        gpu_check.main([])
    with pytest.raises(SystemExit, match="needs train/ and val/"):
        gpu_check.main(["--data", str(tmp_path)])


def test_generated_data_is_an_imagenette_shaped_tree(tmp_path: Path) -> None:
    from common.cache import check_class_folders
    from common.datasets import IMAGENETTE_WNIDS

    root = gpu_check.generated_data(tmp_path, n_train=20, n_val=10)
    check_class_folders(root)
    assert sorted(p.name for p in (root / "val").iterdir()) == sorted(IMAGENETTE_WNIDS)
    assert len(list(root.glob("train/*/*.JPEG"))) == 20
