"""What a run leaves on disk (issue 17, items 7 and 9): SAVE_BEST, the decoded caches listed and
removed by common.data, and MAX_IMAGES_PER_CLASS's small cache for the smoke test."""
from __future__ import annotations

from pathlib import Path

import pytest

from common import data


def _cfg(tiny: Path, root: Path, **change) -> dict:
    return {"DATA_PATH": str(tiny), "DATA_DIR": str(root), "DATASET": "imagenette", "DATASET_SIZE": "160",
            "IMAGE_DIM": 16, "EVAL_IMAGE_DIM": 0, "CACHE_DIM": 16, "DECODE_WORKERS": 1, "MAX_IMAGES_PER_CLASS": 0,
            **change}


def test_max_images_per_class_decodes_only_the_first_images_and_keys_its_own_cache(tiny_imagenette: Path,
                                                                                     tmp_path: Path) -> None:
    root = tmp_path / "data"
    full_train, full_val = data.load_data(_cfg(tiny_imagenette, root))
    two_train, two_val = data.load_data(_cfg(tiny_imagenette, root, MAX_IMAGES_PER_CLASS=2))
    one_train, _ = data.load_data(_cfg(tiny_imagenette, root, MAX_IMAGES_PER_CLASS=1))
    assert (len(full_train), len(full_val), len(two_train), len(two_val), len(one_train)) == (30, 20, 20, 20, 10)
    assert two_train.classes == full_train.classes
    # the first images of each class in name order: the same pixels as the full cache's
    assert (two_train.images[:2] == full_train.images[:2]).all() and (two_train.images[2:4] == full_train.images[3:5]).all()
    names = sorted(p.name for p in (root / "cache").glob("*.npy"))
    assert len(names) == 6 and len({n.rsplit("-", 1)[0] for n in names}) == 6  # a key per cap and split
    assert sum("first2" in n for n in names) == 2 and sum("first1" in n for n in names) == 2


def test_caches_are_listed_and_those_of_other_sizes_removed_only_when_confirmed(tiny_imagenette: Path,
                                                                               tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    for side in (16, 32):
        data.load_data(_cfg(tiny_imagenette, root, CACHE_DIM=side, IMAGE_DIM=16))
    data.main([f"--DATA_DIR={root}", "--list"])
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 5 and listed[-1].startswith("4 caches,")
    assert sorted((c.split, c.px) for c in data.caches(root / "cache")) == [
        ("train", 16), ("train", 32), ("val", 16), ("val", 32)]

    data.main([f"--DATA_DIR={root}", "--remove-unused", "--keep-px=16"])  # without --yes: only says what
    assert "2 caches" in capsys.readouterr().out.splitlines()[-1] and len(data.caches(root / "cache")) == 4
    data.main([f"--DATA_DIR={root}", "--remove-unused", "--keep-px=16", "--yes"])
    assert [c.px for c in data.caches(root / "cache")] == [16, 16]
    assert data.load_data(_cfg(tiny_imagenette, root))[0].images.shape[1] == 16  # the kept one still loads
    with pytest.raises(SystemExit):  # nothing to keep named: refused, nothing removed
        data.main([f"--DATA_DIR={root}", "--remove-unused", "--yes"])
    assert len(data.caches(root / "cache")) == 2


def test_save_best_false_keeps_only_last_pt(tiny_imagenette: Path, tmp_path: Path) -> None:
    from resnet import train

    summary = train.main(["--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1", "--SAVE_BEST=False",
                          f"--DATA_PATH={tiny_imagenette}", f"--DATA_DIR={tmp_path / 'data'}",
                          f"--RUNS_DIR={tmp_path / 'runs'}"])
    files = {p.name for p in Path(summary["run_dir"]).iterdir()}
    assert "last.pt" in files and "best.pt" not in files and "log.csv" in files
