"""common/compare.py: groups runs by constants, pools seeds as mean ± std, plots curves."""
from __future__ import annotations

import json
from pathlib import Path

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
