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
        ("resnet18", "-", "data", "cache"), ("resnet18", "-", "data", "imagefolder")]
    for r in rows:
        assert float(r["images_per_s"]) > 0 and int(r["steps"]) >= 3
        assert (r["device"], r["size"], r["batch"], r["peak_mib"]) == ("cpu", "32", "8", "")  # the tiny recipe's
    train_steps = sum(int(r["steps"]) + 1 for r in rows if r["mode"] == "train")  # + 1 warm-up each
    assert len(steps) == train_steps and set(steps) == {("Run", (8, 3, 32, 32))}
    # the table names its device; a CPU's figures are shown against the GPU targets, never judged
    assert "on cpu (" in out.split("model ")[0]
    assert "target (cuda): shared pipeline costs < 5% of the bare step" in out
    assert "target (cuda): shared pipeline >= 20x ImageFolder's images/s" in out
    assert out.count("not judged on cpu") == 2 and "NOT met" not in out and "-> met" not in out
    assert f"wrote {out_csv}" in out


def test_verdicts_and_targets() -> None:
    def rows_on(device: str) -> list[dict]:
        rates = [("off", "train", "bare", 1000), ("off", "train", "cache", 980), ("on", "train", "bare", 2000),
                 ("on", "train", "cache", 1800), ("-", "data", "cache", 50_000), ("-", "data", "imagefolder", 2000)]
        return [{"device": device, "compile": c, "mode": m, "feed": f, "images_per_s": r} for c, m, f, r in rates]

    v = bench.verdicts(rows_on("cuda:0"))
    assert v["pipeline_cost"] == pytest.approx(2000 / 1800 - 1) and v["pipeline_cost_met"] is False  # the worst
    assert v["imagefolder_ratio"] == 25 and v["imagefolder_ratio_met"] is True
    lines = bench.target_lines(v)
    assert "NOT met" in lines[0] and lines[1].endswith("-> met") and "on cuda:0" in lines[0]
    # the same figures from a CPU: shown, not judged (a GPU target says nothing about a CPU)
    v = bench.verdicts(rows_on("cpu"))
    assert v["pipeline_cost_met"] is None and v["imagefolder_ratio_met"] is None
    lines = bench.target_lines(v)
    assert all(line.endswith("not judged on cpu (a cuda target)") for line in lines) and len(lines) == 2
    with pytest.raises(SystemExit, match="--compile takes"):
        bench.parse_compiles("yes")


def test_gpu_check_tiny_writes_every_figure_but_never_into_the_readme(tree: Path, tmp_path: Path, capsys) -> None:
    out, readme = tmp_path / "check.json", tmp_path / "README.md"
    before = f"# x\n{gpu_check.MARKERS[0]}\nold\n{gpu_check.MARKERS[1]}\nrest\n"
    readme.write_text(before)
    common = ["--data", str(tree), "--folders", "resnet", "--models", "resnet18", "--out", str(out),
              "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")]
    with pytest.raises(SystemExit, match="is a --tiny run, not a GPU check"):  # refused before it runs
        gpu_check.main(["--tiny", *common, "--readme", str(readme)])
    assert not out.exists() and readme.read_text() == before
    gpu_check.main(["--tiny", *common])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert {"device", "torch", "torchvision", "git_commit", "command", "started"} <= set(res["provenance"])
    assert res["command"].endswith("--data-dir " + str(tmp_path / "data")) and res["folders"] == ["resnet"]
    data = res["data"]
    for key in ("imagefolder_images_per_s", "cache_build_s", "batchloader_images_per_s", "batchloader_over_imagefolder"):
        assert math.isfinite(data[key]) and data[key] > 0, key
    speed = res["speed"]
    assert {(r["model"], r["mode"], r["feed"]) for r in speed["rows"]} == {
        ("resnet18", "train", "bare"), ("resnet18", "infer", "bare"), ("resnet18", "train", "cache"),
        ("resnet18", "train", "imagefolder"), ("resnet18", "data", "cache"), ("resnet18", "data", "imagefolder")}
    assert not speed["failed"] and not speed["skipped"] and speed["syncs"] == {"resnet18": None}
    assert "resnet18: host-device syncs per training step: not counted on cpu" in printed
    run = res["train"]["runs"]["resnet"]
    assert run["returncode"] == 0 and run["epochs_done"] == 1 and run["arch"] == "resnet18"
    assert 0 <= run["val_top1"] <= 1 and run["images_per_s"] > 0 and "--NUM_EPOCHS=1" in run["command"]
    assert run["command"].startswith("resnet/train.py ")  # no path of this machine's repository
    t = res["targets"]
    assert {"pipeline_cost", "imagefolder_ratio"} <= set(t) and t["pipeline_cost_met"] is None
    assert t["imagefolder_ratio_met"] is None
    assert "not judged on cpu (--tiny)" in printed and "NOT met" not in printed
    assert "Speed on cpu" in printed and "Short training runs on cpu" in printed  # every table names it
    # --table: printed as a CPU run's; into the README's GPU section: refused
    gpu_check.main(["--table", str(out)])
    assert "| resnet18 | 32 | 8 | off |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not a GPU check"):
        gpu_check.main(["--table", str(out), "--readme", str(readme)])
    assert readme.read_text() == before
    # a GPU's results file (the same figures, said to come from a full run on cuda) is written in
    gpu = {**res, "device_type": "cuda", "tiny": False, "provenance": {**res["provenance"], "device": "GPU x1"}}
    gpu.pop("targets")
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    gpu_check.main(["--table", str(tmp_path / "gpu.json"), "--readme", str(readme)])
    table = readme.read_text()
    assert table.startswith(f"# x\n{gpu_check.MARKERS[0]}\nMeasured by") and table.endswith(f"{gpu_check.MARKERS[1]}\nrest\n")
    assert "| resnet18 | 32 | 8 | off |" in table and "| resnet/train.py | resnet18 | 1/1 |" in table
    assert "Speed on GPU x1" in table and "| train.py (default recipe) |" in table
    assert "not judged" not in table and ("-> met" in table or "NOT met" in table or ": met" in table)


def test_gpu_check_keeps_every_row_measured_before_a_cut(tree: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The results file is written after every row: a check cut short (here: Ctrl-C in the data
    part, after the speed part) keeps the rows it measured."""
    def cut(*args, **kwargs):  # noqa: ANN002, ANN003
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "data_part", cut)
    out = tmp_path / "check.json"
    with pytest.raises((KeyboardInterrupt, SystemExit)):  # SystemExit(130) behind an error boundary
        gpu_check.main(["--tiny", "--data", str(tree), "--folders", "resnet", "--models", "resnet18", "--out", str(out),
                        "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data")])
    res = json.loads(out.read_text())
    assert len(res["speed"]["rows"]) == 6 and "resnet18" in res["speed"]["verdicts"]
    assert "wall_s" not in res and not res["train"]["runs"]
    assert "cut short before its end" in gpu_check.gpu_markdown(res)


def test_a_failing_feed_or_compile_costs_only_its_rows(tree: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """compile on failing (as Dynamo fails: at the first call) leaves every compile-off row; a
    feed that fails leaves the other feeds' rows."""
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("compile failed\nlong details")

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: Broken())

    def no_imagefolder(*args, **kwargs):  # noqa: ANN002, ANN003
        raise OSError("DataLoader worker died")

    monkeypatch.setattr(bench, "imagefolder", no_imagefolder)
    seen = []
    measured = bench.bench_model("resnet18", tree, compiles=(False, True), workers=1, seconds=0, warmup=1,
                                 rounds=1, overrides=("--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1"),
                                 data_dir=str(tmp_path / "data"), on_row=seen.append, log=lambda line: None)
    assert [(r["compile"], r["mode"], r["feed"]) for r in measured.rows] == [
        ("off", "train", "bare"), ("off", "infer", "bare"), ("off", "train", "cache"), ("-", "data", "cache")]
    assert seen == measured.rows  # each handed on as it was measured
    assert measured.failed == {
        "compile off train imagefolder": "OSError: DataLoader worker died",
        "compile on train bare": "RuntimeError: compile failed",
        "compile on infer bare": "RuntimeError: compile failed",
        "compile on train cache": "RuntimeError: compile failed",
        "compile on train imagefolder": "OSError: DataLoader worker died",
        "data imagefolder": "OSError: DataLoader worker died"}


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


def test_both_pipelines_include_the_train_scripts_batch_transforms(tree: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Mixup, RandAugment and PCA lighting are often the pipeline's dearest part: every fed
    training step and every batch of the pipelines alone goes through them."""
    from resnet import train as resnet_train

    calls = []

    def counting(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(x))
        return x, y

    monkeypatch.setattr(resnet_train, "batch_transforms", lambda cfg, train_set: [counting], raising=False)
    measured = bench.bench_model("resnet18", tree, compiles=(False,), feeds=("cache", "imagefolder"), workers=1,
                                 seconds=0, warmup=1, rounds=1, data_dir=str(tmp_path / "data"),
                                 overrides=("--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1"),
                                 log=lambda line: None)
    assert [(r["mode"], r["feed"]) for r in measured.rows] == [
        ("train", "cache"), ("train", "imagefolder"), ("data", "cache"), ("data", "imagefolder")]
    assert len(calls) == sum(r["steps"] + 1 for r in measured.rows)  # + 1: the warm-up step of each


def test_a_distilled_vit_is_benched_with_its_loss_or_refused_in_one_line(tree: Path, tmp_path: Path) -> None:
    """The bench sets up the train.py's own loss (vit's criterion seam): a distilled ARCH with no
    teacher is the train.py's one-line refusal, not a crash on the two heads' output."""
    with pytest.raises(SystemExit) as end:
        bench.main(["deit_tiny_distilled_16", "--data", str(tree), "--recipe", "tiny", *CPU, "--compile", "off",
                    "--seconds", "0", "--warmup", "1", "--feeds", "bare", "--data-dir", str(tmp_path / "data"),
                    "--csv", str(tmp_path / "b.csv")])
    assert "has a distillation head, which learns from a teacher" in str(end.value.code)
