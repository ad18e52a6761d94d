"""Every <family>/claims.py end to end at a tiny scale (issue 17, item 4): it trains the runs its
claim compares through the family's train.main, draws its figure, prints a verdict line, and on
a second call reuses the finished runs."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

from tests.helpers import make_image_tree

REPO = Path(__file__).resolve().parents[1]
FAMILIES = sorted(p.parent.name for p in REPO.glob("*/claims.py") if (p.parent / "train.py").is_file())
# Each family's scale at its smallest: 1 epoch, 1 seed, a few steps on 2 classes.
TINY = {
    "alexnet": ["--IMAGE_DIM=67", "--CACHE_DIM=0", "--WIDTH=0.0625", "--BATCH_SIZE=4"],
    "vgg": ["--IMAGE_DIM=32", "--WIDTH=0.0625", "--BATCH_SIZE=4", "--ARCHS=vgg11,vgg13"],
    "resnet": ["--IMAGE_DIM=32", "--WIDTH=4", "--BATCH_SIZE=4"],
    "mobilenet": ["--IMAGE_DIM=32", "--CACHE_DIM=0", "--BATCH_SIZE=4", "--WIDTHS=0.25,0.125",
                  "--SIZES=32", "--TABLE4_WIDTH=0.125"],
    "vit": ["--IMAGE_DIM=32", "--PATCH_SIZE=8", "--WIDTH=16", "--LAYERS=1", "--HEADS=2", "--BATCH_SIZE=4"],
}
FIGURES = {"alexnet": ["relu_vs_tanh.png", "relu_vs_tanh_val.png"], "vgg": ["table3.png", "table3_from_a.png"],
           "resnet": ["plain_vs_residual.png"], "mobilenet": ["tables_4_6_7.png"], "vit": ["scratch_vs_pretrained.png"]}


@pytest.fixture(scope="module")
def two_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("claims"), "imagenette2-160", n_classes=2, n_train=8,
                           n_val=4, size=(32, 32))


def test_every_family_has_a_claims_py() -> None:
    assert FAMILIES == ["alexnet", "mobilenet", "resnet", "vgg", "vit"]


@pytest.mark.parametrize("family", FAMILIES)
def test_claims_py_trains_draws_and_judges(family: str, two_classes: Path, tmp_path: Path, capsys,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if family == "vit":  # no network: the pre-trained weights' download fails, as offline
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(var, "http://127.0.0.1:9")
    claims_py = importlib.import_module(f"{family}.claims")
    args = [*TINY[family], "--NUM_EPOCHS=1", "--SEEDS=1", f"--DATA_PATH={two_classes}",
            f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}", f"--FIGURES_DIR={tmp_path / 'fig'}",
            "--TRAIN_ARGS=--DEVICE=cpu --DECODE_WORKERS=1"]
    lines = claims_py.main(args)
    out, err = capsys.readouterr()
    assert lines and all(re.fullmatch(r"verdict: .+: (holds|does not hold|not decided at this scale) \(.+\)", v)
                         for v in lines), lines
    assert all(v in out for v in lines)
    for name in FIGURES[family]:
        assert (tmp_path / "fig" / name).read_bytes()[:4] == b"\x89PNG", name
    if family == "vit":  # the pre-trained run cannot start here: one line says so, the claim stays open
        assert "the PRETRAINED=True run could not start" in err and "not decided at this scale" in lines[0]
    runs = list((tmp_path / "runs" / "claims" / family).rglob("log.csv"))
    assert runs and not list((tmp_path / "runs" / "claims" / family).rglob("best.pt"))  # SAVE_BEST=False
    if family == "resnet":  # a second call trains nothing: the finished runs are reused
        assert claims_py.main(args) == lines
        assert ": training" not in capsys.readouterr().out
        assert sorted((tmp_path / "runs" / "claims" / family).rglob("log.csv")) == sorted(runs)


def test_a_bad_constant_is_one_line_and_exit_2_before_any_run(tmp_path: Path, capsys) -> None:
    from mobilenet import claims as mobilenet_claims
    from resnet import claims as resnet_claims
    with pytest.raises(SystemExit) as end:
        resnet_claims.main(["--NUM_EPOCH=3"])
    err = capsys.readouterr().err.strip()
    assert end.value.code == 2 and len(err.splitlines()) == 1 and "NUM_EPOCHS" in err
    # A run the train.py would refuse (Table 7's 24 px: MobileNet downsamples 32x), refused before
    # the first of the claim's runs trains, not hours into it.
    with pytest.raises(SystemExit) as end:
        mobilenet_claims.main(["--SIZES=56,24", f"--RUNS_DIR={tmp_path}", "--DATA_PATH=/nowhere"])
    err = capsys.readouterr().err.strip()
    assert end.value.code == 2 and len(err.splitlines()) == 1 and "IMAGE_DIM=24" in err
    assert not list(tmp_path.iterdir())


def test_vit_data_scaling_trains_both_networks_on_each_subset(two_classes: Path, tmp_path: Path, capsys) -> None:
    """vit/data_scaling.py: each network on each TRAIN_FRACTION (the images recorded by the
    trainer: 8 of 16, then 16), one figure, one verdict line with every pair; reused on a rerun."""
    from vit import data_scaling

    args = ["--FRACTIONS=(0.5, 1.0)", "--NUM_EPOCHS=1", "--IMAGE_DIM=32", "--BATCH_SIZE=4",
            "--VIT_ARGS=--WIDTH=16 --LAYERS=1 --HEADS=2", "--CNN_ARGS=--WIDTH=4", f"--DATA_PATH={two_classes}",
            f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}", f"--FIGURES_DIR={tmp_path / 'fig'}",
            "--TRAIN_ARGS=--DEVICE=cpu --DECODE_WORKERS=1"]
    lines = data_scaling.main(args)
    assert len(lines) == 1 and re.fullmatch(r"verdict: resnet18's lead over deit_tiny_16 shrinks .+: "
                                            r"(holds|does not hold) \(lead .+ at 0.5 of the data, .+ at 1; .+\)",
                                            lines[0]), lines
    assert "0.5: resnet18" in lines[0] and "1: resnet18" in lines[0]
    assert (tmp_path / "fig" / "data_scaling.png").read_bytes()[:4] == b"\x89PNG"
    for family, arch in (("vit", "deit_tiny_16"), ("resnet", "resnet18")):
        for fraction, n in (("0.5", 8), ("1", 16)):
            (config,) = (tmp_path / "runs" / "claims" / family / f"data-{fraction}").rglob("config.json")
            made = json.loads(config.read_text())
            assert made["constants"]["ARCH"] == arch and made["provenance"]["train_images"] == n
    capsys.readouterr()
    assert data_scaling.main(args) == lines  # a rerun reuses the finished runs
    assert ": training" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as end:
        data_scaling.main([*args, "--BUDGET=compute"])
    assert end.value.code == 2 and "BUDGET='compute' is not possible" in capsys.readouterr().err


def test_a_committed_record_with_the_same_constants_is_reused(two_classes: Path, tmp_path: Path, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of the claim's constants kept in the repository's records (config.json and log.csv,
    older than a switch it lacks, with SAVE_BEST on) stands for that run: nothing is trained."""
    import shutil

    from common import claims
    from resnet import claims as resnet_claims

    args = [*TINY["resnet"], "--NUM_EPOCHS=1", "--SEEDS=1", f"--DATA_PATH={two_classes}",
            f"--DATA_DIR={tmp_path / 'data'}", f"--RUNS_DIR={tmp_path / 'runs'}", f"--FIGURES_DIR={tmp_path / 'fig'}",
            "--TRAIN_ARGS=--DEVICE=cpu --DECODE_WORKERS=1"]
    lines = resnet_claims.main(args)
    records = tmp_path / "records"
    for log in (tmp_path / "runs").rglob("log.csv"):  # each run, as --record keeps it, made older
        made = json.loads((log.parent / "config.json").read_text())
        made["constants"].pop("TRAIN_FRACTION")
        made["constants"]["SAVE_BEST"] = True
        kept = records / made["constants"]["ARCH"] / log.parent.name
        kept.mkdir(parents=True, exist_ok=True)
        (kept / "config.json").write_text(json.dumps(made))
        shutil.copy(log, kept / "log.csv")
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setattr(claims, "RECORDS", records)
    capsys.readouterr()
    assert resnet_claims.main(args) == lines
    out = capsys.readouterr().out
    assert ": training" not in out and "reusing the committed record" in out
