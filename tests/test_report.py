"""common/report.py: the layer table, the all-models table and its README markers, on ``meta``."""
from __future__ import annotations

from pathlib import Path

import pytest

from common import report
from resnet import model as resnet

RESNET18_PARAMS = 11_689_512  # torchvision's resnet18, as tests/test_models.py pins it


@pytest.fixture(scope="module")
def every_model() -> list[report.ModelLine]:
    """Every builder of every MODELS dict, measured once (a few seconds: all on meta)."""
    return report.all_models()


def test_resnet18_totals_and_rows_sum_to_them() -> None:
    r = report.measure(resnet.resnet18, 224, batch=2, name="resnet18")
    assert r.params == RESNET18_PARAMS
    assert abs(r.macs - 1.8e9) < 0.07e9  # Table 1's "1.8 x 10^9"
    assert sum(row.params for row in r.rows) == r.params
    assert sum(row.macs for row in r.rows) == pytest.approx(r.macs)  # every MAC is in a conv or fc
    first = r.rows[0]
    assert (first.name, first.kind, first.shape, first.params) == ("conv1", "Conv2d", (64, 112, 112), 3 * 64 * 49)
    assert first.macs == 64 * 112 * 112 * 3 * 49
    assert first.act_bytes == 2 * 64 * 112 * 112 * 2  # batch 2, bf16
    assert r.rows[-1].name == "fc" and r.rows[-1].shape == (1000,)
    # Blocks instead of leaves: the same totals, the five stages of Table 1 as rows.
    blocks = report.measure(resnet.resnet18, 224, batch=2, depth=1)
    assert [row.name for row in blocks.rows] == ["conv1", "bn1", "maxpool", "layer1", "layer2", "layer3",
                                                 "layer4", "avgpool", "fc"]
    assert sum(row.params for row in blocks.rows) == r.params
    assert sum(row.macs for row in blocks.rows) == pytest.approx(r.macs)
    assert sum(row.act_bytes for row in blocks.rows) == r.act_bytes


def test_activation_memory_scales_with_the_batch_and_the_dtype() -> None:
    import torch

    a = report.measure(resnet.resnet18, 64, batch=2)
    b = report.measure(resnet.resnet18, 64, batch=6)
    c = report.measure(resnet.resnet18, 64, batch=2, dtype=torch.float32)
    assert b.act_bytes == 3 * a.act_bytes and c.act_bytes == 2 * a.act_bytes
    assert b.macs == a.macs  # per image
    assert a.param_bytes == 4 * a.params


def test_every_builder_is_in_the_table_and_its_rows_sum(every_model: list[report.ModelLine]) -> None:
    found = report.discover()
    assert [m.name for m in every_model] == [n for models in found.values() for n in models]
    for m in every_model:
        assert sum(row.params for row in m.report.rows) == m.params, m.name
        assert m.size == (227 if m.folder == "alexnet" else 224)
        assert m.macs > 0
        assert m.year == report.paper(m.folder, m.name)[1]
    resnet18 = next(m for m in every_model if m.name == "resnet18")
    assert (resnet18.params, resnet18.year) == (RESNET18_PARAMS, 2015)
    text = report.models_markdown(every_model)
    assert "| resnet18 | resnet/ | He et al., arXiv:1512.03385 | 2015 | 11.69 M | 1.81 G (224 px) |" in text
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == len(every_model) + 1


def test_unknown_folder_gets_a_question_mark() -> None:
    assert report.paper("newnet", "newnet_s") == ("?", 0)
    line = report.ModelLine("newnet_s", "newnet", "?", 0, 224, 10, 1e9, report.Report("newnet_s", 224, 1))
    assert "| newnet_s | newnet/ | ? | ? |" in report.models_markdown([line])


def test_readme_markers_rewritten_idempotently(tmp_path: Path, every_model, monkeypatch, capsys) -> None:
    readme = tmp_path / "README.md"
    before, after = "# Title\n\nintro\n\n", "\n\n## Next\ntext\n"
    readme.write_text(f"{before}{report.MARKERS[0]}\nold table\n{report.MARKERS[1]}{after}")
    monkeypatch.setattr(report, "all_models", lambda: every_model)
    report.main(["--readme", str(readme)])
    first = readme.read_text()
    assert first.startswith(before + report.MARKERS[0] + "\n| model |") and first.endswith(report.MARKERS[1] + after)
    assert "old table" not in first and "| resnet50 |" in first
    report.main(["--readme", str(readme)])
    assert readme.read_text() == first
    assert "already up to date" in capsys.readouterr().out
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="has no <!-- models:begin -->"):
        report.main(["--readme", str(readme)])
    assert readme.read_text() == "# no markers\n"


def test_command_prints_the_layer_table(capsys) -> None:
    report.main(["resnet18", "--size", "224", "--batch", "128"])
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "11,689,512" in out and "1.81 G" in out
    assert "for a batch of 128 in bf16" in out
    with pytest.raises(SystemExit, match="no model named 'resnet19'"):
        report.main(["resnet19"])
    with pytest.raises(SystemExit, match="cannot take 40 px inputs"):
        report.main(["alexnet", "--size", "40"])
