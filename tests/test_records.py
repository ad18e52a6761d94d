"""The README's results table regenerates exactly from the committed run records (issue 17, items 3, 10)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import compare
from common.config import constants
from common.recipe import SWITCHES
from common.runlog import write_log


def _finished_run(runs: Path, name: str, seed: int, epochs: int = 2, **change) -> Path:
    """A resnet18 run folder as the trainer leaves it (config.json, log.csv, a checkpoint)."""
    from resnet import train

    cfg = {**SWITCHES, **constants(train), "IMAGE_DIM": 64, "NUM_EPOCHS": 2, "SEED": seed,
           "DATA_PATH": "/somewhere/imagenette2-224", "RUNS_DIR": "/somewhere/runs", **change}
    d = runs / "resnet18" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"constants": cfg, "provenance": {"git_commit": "x"}}))
    write_log([{"epoch": e + 1, "train_top1": 0.5, "val_top1": 0.5 + 0.1 * e + 0.01 * seed, "val_top5": 0.9,
                "train_loss": 1.0, "images_per_s": 100.0, "epoch_time_s": 30.0} for e in range(epochs)],
              d / "log.csv")
    (d / "last.pt").write_bytes(b"not copied")
    return d


def test_readme_table_regenerates_exactly_from_the_records(tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    records = tmp_path / "repo" / "common" / "results" / "runs"
    monkeypatch.setattr(compare, "RECORDS", records)
    runs = tmp_path / "runs"
    a = _finished_run(runs, "20260101-000000", seed=0, WIDTH=8)
    b = _finished_run(runs, "20260101-000100", seed=1, WIDTH=8)
    unfinished = _finished_run(runs, "20260101-000200", seed=2, epochs=1)

    with pytest.raises(SystemExit) as end:  # refused before anything is copied
        compare.main(["--record", str(a), str(unfinished)])
    assert end.value.code == 1 and "unfinished (1 of 2 epochs)" in capsys.readouterr().err
    assert not records.exists()
    # A run scored on held-out training images is a tuning run, not a val result.
    tuning = _finished_run(runs, "20260101-000400", seed=0, HOLDOUT_FRACTION=0.1)
    with pytest.raises(SystemExit) as end:
        compare.main(["--record", str(a), str(tuning)])
    assert end.value.code == 1 and "held-out training images (HOLDOUT_FRACTION=0.1)" in capsys.readouterr().err
    assert not records.exists()
    compare.main(["--record", str(a), str(b)])
    kept = sorted(p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file())
    assert kept == [f"resnet18/{r}/{f}" for r in (a.name, b.name) for f in ("config.json", "log.csv")]
    # Another run of the same name (started in the same second elsewhere) is kept beside it, and
    # recording the same run again changes nothing.
    twin = _finished_run(tmp_path / "elsewhere", a.name, seed=5, WIDTH=8)
    compare.main(["--record", str(twin), str(a)])
    assert (records / "resnet18" / f"{a.name}-2" / "config.json").read_text() != \
        (records / "resnet18" / a.name / "config.json").read_text()
    assert not (records / "resnet18" / f"{a.name}-3").exists()
    import shutil
    shutil.rmtree(records / "resnet18" / f"{a.name}-2")
    # No path of the machine that ran it in a committed record; the dataset's name survives.
    saved = json.loads((records / "resnet18" / a.name / "config.json").read_text())
    assert saved["constants"]["DATA_PATH"] == ".../imagenette2-224" and "/somewhere" not in str(saved)
    # A checkpoint keeps its model and run folder: a distilled run's label names its teacher by them.
    teacher = {"ARCH": "deit_tiny_distilled_16", "DISTILLATION": "hard", "IMAGE_DIM": 64, "NUM_EPOCHS": 10,
               "TEACHER": compare.without_machine_paths("/somewhere/runs/resnet18/20260101-000000/best.pt")}
    assert teacher["TEACHER"] == ".../resnet18/20260101-000000/best.pt"
    assert compare.label(teacher).startswith("deit_tiny_distilled_16 hard<-resnet18, ")

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:begin -->\nold\n<!-- results:end -->\n\nafter\n")
    compare.main(["--readme", str(readme)])
    written = readme.read_text()
    # The label names the constant that differs from resnet/train.py's defaults; the seed and the
    # data's path (bookkeeping) and the base's constants are not repeated.
    row = next(line for line in written.splitlines() if line.startswith("| resnet18"))
    assert row.startswith("| resnet18, imagenette2-224, 64 px, 2 ep, WIDTH=8 | 2015 |")
    assert row.endswith("| 60.5 ± 0.7 % | 60.5 ± 0.7 % | 2 |")
    assert "2 runs in 1 configurations, from common/results/runs/" in written

    # The table regenerates exactly: from the records alone, whatever runs/ holds meanwhile.
    _finished_run(runs, "20260101-000300", seed=3)
    capsys.readouterr()
    compare.main(["--readme", str(readme)])
    assert readme.read_text() == written and "unchanged" in capsys.readouterr().out
    compare.main(["--readme", str(readme), "--check"])
    assert "matches" in capsys.readouterr().out

    readme.write_text(written.replace("60.5 ± 0.7 %", "99.0 %"))
    with pytest.raises(SystemExit) as end:
        compare.main(["--readme", str(readme), "--check"])
    assert end.value.code == 1 and "differs from the records" in capsys.readouterr().err

    # Run folders given with --readme: refused in one line, the README untouched.
    before = readme.read_text()
    with pytest.raises(SystemExit) as end:
        compare.main([str(runs), "--readme", str(readme)])
    err = capsys.readouterr().err.strip()
    assert end.value.code == 1 and len(err.splitlines()) == 1 and "committed records" in err
    assert readme.read_text() == before


def test_labels_name_every_constant_that_differs_from_the_family_defaults() -> None:
    from alexnet import train

    cfg = {**SWITCHES, **constants(train), "ARCH": "alexnet_one_tower", "WIDTH": 0.25, "IMAGE_DIM": 99,
           "NUM_EPOCHS": 14, "SEED": 1, "DATA_PATH": "/x/imagenette2-224", "RUNS_DIR": "/somewhere/r",
           "SCALE_JITTER": [0.0, 0.0], "SAVE_BEST": False}  # a tuple reads back from JSON as a list
    assert compare.label(cfg) == "alexnet_one_tower, imagenette2-224, 99 px, 14 ep, WIDTH=0.25"
    tiny = {**cfg, "RECIPE": "tiny", **train.RECIPES["tiny"], "IMAGE_DIM": 99, "NUM_EPOCHS": 14}
    assert compare.label(tiny) == "alexnet_one_tower (tiny), imagenette2-224, 99 px, 14 ep"  # the recipe's own


def test_the_readmes_table_is_the_one_the_committed_records_make(capsys) -> None:
    """The README in this repository: its table is what `compare --readme README.md` writes from
    common/results/runs/ (a record added or a number edited by hand without the other fails)."""
    compare.main(["--readme", str(Path(compare.__file__).resolve().parents[1] / "README.md"), "--check"])
    assert "matches" in capsys.readouterr().out
