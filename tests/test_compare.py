"""common/compare.py: groups runs by constants, pools seeds as mean ± std, plots curves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from common import compare
from common.runlog import write_log


def _run(root: Path, name: str, activation: str, seed: int, train_top1: list[float]) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"constants": {"ACTIVATION": activation, "SEED": seed}}))
    write_log([{"epoch": e + 1, "train_top1": t, "val_top1": t - 0.1, "val_top5": 0.9, "train_loss": 1.0}
               for e, t in enumerate(train_top1)], d / "log.csv")
    return d


def test_table_pools_seeds_and_finds_the_epoch_a_threshold_is_reached(tmp_path: Path, capsys) -> None:
    runs = [_run(tmp_path, "a", "relu", 0, [0.5, 0.8]), _run(tmp_path, "b", "relu", 1, [0.6, 0.7]),
            _run(tmp_path, "c", "tanh", 0, [0.3, 0.5])]
    groups = compare.group_runs(runs, ["ACTIVATION"])
    assert list(groups) == ["ACTIVATION=relu", "ACTIVATION=tanh"] and len(groups["ACTIVATION=relu"]) == 2
    text = compare.table(groups, until_train_error=0.25)
    relu, tanh = text.splitlines()[2:]
    # relu final train error: 20 % and 30 % -> 25.0 ± 7.1 %; train error <= 25 % only in run a, epoch 2
    assert "| 2 | 2 | 25.0 ± 7.1 % | 65.0 ± 7.1 % |" in relu and relu.endswith("| 2.0 (1 of 2 runs) |")
    assert tanh.endswith("| not reached |")
    compare.main([str(r) for r in runs] + ["--group", "ACTIVATION", "--plot", "train_error",
                                           "--out", str(tmp_path / "p.png")])
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert "ACTIVATION=tanh" in capsys.readouterr().out


# ----------------------------------------------------------------------------- across architectures

def _resnet_run(root: Path, name: str, seed: int, val_top1: list[float], **change) -> Path:
    """A finished tiny resnet18 run's folder (no checkpoint: 10 classes assumed), 60 s an epoch."""
    from common.config import constants
    from common.recipe import SWITCHES
    from resnet import train

    cfg = {**SWITCHES, **constants(train), **train.RECIPES["tiny"], "RECIPE": "tiny", "SEED": seed,
           "DATA_PATH": f"/data/{name}/imagenette2-160", **change}  # DATA_PATH differs: not the configuration
    d = root / "resnet18" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"constants": cfg, "provenance": {}}))
    write_log([{"epoch": e + 1, "train_top1": 0.5, "val_top1": v, "val_top5": 0.9, "train_loss": 1.0,
                "images_per_s": 100.0 * (seed + 1), "epoch_time_s": 60.0} for e, v in enumerate(val_top1)],
              d / "log.csv")
    return d


def test_results_across_architectures_pool_seeds_and_keep_recipes_apart(tmp_path: Path, capsys,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from resnet.model import resnet18
    runs = tmp_path / "runs"
    _resnet_run(runs, "a", 0, [0.4, 0.7])
    _resnet_run(runs, "b", 1, [0.5, 0.6])
    _resnet_run(runs, "c", 0, [0.3, 0.35], LEARNING_RATE=0.01)
    groups, text = compare.overview([runs], target=0.6)
    head, _, other, pooled = text.splitlines()  # sorted by year, then label
    assert "time to 60% val top-1" in head and len(groups) == 2
    # two seeds pooled: best 70 and 60 -> 65.0 ± 7.1 %; 60 % reached after 2 and 2 epochs of 60 s
    assert pooled.startswith("| resnet18 (tiny), imagenette2-160, 32 px, 2 ep, LEARNING_RATE=0.4 | 2015 |")
    assert pooled.endswith("| 150 ± 71 | 2 | 2.0 ± 0.0 min | 2.0 ± 0.0 min | 65.0 ± 7.1 % | 65.0 ± 7.1 % | 2 |")
    assert other.endswith("| not reached | 35.0 % | 35.0 % | 1 |") and "LEARNING_RATE=0.01" in other
    params = sum(p.numel() for p in resnet18(num_classes=10, width=4).parameters())
    assert all(g.params == params for g in groups) and f"| {params / 1e3:.3g} k |" in pooled

    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- results:begin -->\nold\n<!-- results:end -->\n\nafter\n")
    monkeypatch.setattr(compare, "RECORDS", runs)  # the README's table: from the records only
    args = ["--readme", str(readme), "--pareto", str(tmp_path / "p.png"), "--by-year",
            str(tmp_path / "y.png"), "--plot", "val_top1", "--out", str(tmp_path / "c.png")]
    compare.main(args)
    assert "README.md: table written" in capsys.readouterr().out
    once = readme.read_text()
    compare.main(args[:2])  # the same runs again: the same text, the file untouched
    assert "README.md: unchanged" in capsys.readouterr().out
    assert readme.read_text() == once and "old" not in once and once.endswith("<!-- results:end -->\n\nafter\n")
    assert pooled in once and once.count("<!-- results:begin -->") == 1
    for png, size in (("p.png", (800, 500)), ("y.png", (800, 500)), ("c.png", (700, 450))):
        with Image.open(tmp_path / png) as im:
            assert im.size == size

    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit) as end:
        compare.main(["--readme", str(readme)])
    err = capsys.readouterr().err.strip()
    assert end.value.code == 1 and len(err.splitlines()) == 1 and "<!-- results:begin -->" in err
