"""torchvision's ImageNet weights in our models (common/pretrained.py, PRETRAINED=True), proved
without a download: torchvision's own models with random weights, mapped by each model.py's
``from_torchvision``, give the same outputs here; every TORCHVISION entry of every model.py maps
name for name on the meta device; the download's failures are one line each."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from common import pretrained
from common.config import ConfigError
from common.datasets import DataError
from tests.helpers import randomised

REPO = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p.parent.name for p in REPO.glob("*/model.py")
                 if hasattr(importlib.import_module(f"{p.parent.name}.model"), "TORCHVISION"))
ENTRIES = [(folder, arch) for folder in FOLDERS
           for arch in importlib.import_module(f"{folder}.model").TORCHVISION]


def _same_outputs(ours: nn.Module, tv: nn.Module, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return ours.eval()(x), tv.eval()(x)


def test_the_tables_exist_for_the_folders_torchvision_has() -> None:
    assert {"resnet", "alexnet", "vgg"} <= set(FOLDERS)


@pytest.mark.parametrize("folder,arch", ENTRIES, ids=[f"{f}-{a}" for f, a in ENTRIES])
def test_every_torchvision_entry_maps_name_for_name_on_meta(folder: str, arch: str) -> None:
    model_py = importlib.import_module(f"{folder}.model")
    tv_name, needs = pretrained.entry(model_py.TORCHVISION, arch)
    kwargs = {"stride_in_1x1": False} if needs.get("STRIDE_IN_1X1") is False else {}
    with torch.device("meta"):
        ours = model_py.MODELS[arch](num_classes=1000, **kwargs)
        tv = torchvision.models.get_model(tv_name, weights=None)
    assert pretrained.fit_into(ours, model_py.from_torchvision(tv.state_dict()), tv_name, check_only=True) == []


# The equivalence itself on a model of each family, at an input size where it is fast on a CPU.
EQUIVALENT = [("resnet", "resnet18", "resnet18", {}, 64),
              ("resnet", "resnet50", "resnet50", {"stride_in_1x1": False}, 64),
              ("alexnet", "alexnet_2014", "alexnet", {}, 224),
              ("vgg", "vgg11", "vgg11", {}, 64),
              ("vgg", "vgg11_bn", "vgg11_bn", {}, 64)]


@pytest.mark.parametrize("folder,arch,tv_name,kwargs,size", EQUIVALENT, ids=[e[1] for e in EQUIVALENT])
def test_torchvision_weights_give_torchvisions_outputs(folder: str, arch: str, tv_name: str,
                                                       kwargs: dict, size: int) -> None:
    model_py = importlib.import_module(f"{folder}.model")
    with torch.device("meta"):
        tv = torchvision.models.get_model(tv_name, weights=None)
        ours = model_py.MODELS[arch](num_classes=1000, **kwargs).to_empty(device="cpu")
    tv = randomised(tv)
    ours.load_state_dict(model_py.from_torchvision(tv.state_dict()), strict=True)
    a, b = _same_outputs(ours, tv, size)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_the_papers_bottleneck_stride_is_another_function_of_the_same_weights() -> None:
    """Why TORCHVISION asks resnet50 for STRIDE_IN_1X1=False: with the paper's stride on the
    first 1x1 the same tensors compute something else (torchvision's nets are 'v1.5')."""
    from resnet import model as resnet
    with torch.device("meta"):
        tv, ours = torchvision.models.resnet50(weights=None), resnet.resnet50(stride_in_1x1=True)
    tv, ours = randomised(tv), ours.to_empty(device="cpu")
    ours.load_state_dict(resnet.from_torchvision(tv.state_dict()))
    a, b = _same_outputs(ours, tv, 64)
    assert not torch.allclose(a, b, atol=1e-5)


# --- the checks before any download, and loading into a 10-class model

def _cfg(**kw) -> dict:
    return {"ARCH": "resnet18", "SHORTCUT": "B", "STRIDE_IN_1X1": True, **kw}


def test_checks_before_download_say_what_to_change() -> None:
    from resnet import model as resnet
    table, rename = resnet.TORCHVISION, resnet.from_torchvision
    with torch.device("meta"):
        with pytest.raises(ConfigError, match="no ImageNet weights for ARCH='plain18'"):
            pretrained.check(_cfg(ARCH="plain18"), resnet.plain18(), table, rename)
        with pytest.raises(ConfigError, match="--STRIDE_IN_1X1=False"):
            pretrained.check(_cfg(ARCH="resnet50"), resnet.resnet50(), table, rename)
        with pytest.raises(ConfigError, match="published size"):
            pretrained.check(_cfg(), resnet.resnet18(width=8), table, rename)
        assert pretrained.check(_cfg(), resnet.resnet18(num_classes=10), table, rename) == "resnet18"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch's cache in a fresh folder, and every https request sent to a closed local port: a
    download fails as it does without network, and nothing leaves the machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_no_network_is_one_line_that_says_what_to_do(torch_home: Path) -> None:
    from resnet import model as resnet
    with pytest.raises(DataError, match="could not download torchvision's resnet18 weights") as e:
        pretrained.load_torchvision(resnet.resnet18(num_classes=10), _cfg(), resnet.TORCHVISION,
                                    resnet.from_torchvision)
    assert "PRETRAINED=False" in str(e.value) and "\n" not in str(e.value)


def test_weights_from_the_cache_load_offline_and_keep_a_new_head(torch_home: Path) -> None:
    """The file torchvision would download, already in torch's cache (here: torchvision's model
    with random weights): loaded with no network, every tensor but the 10-class head."""
    from resnet import model as resnet
    tv = randomised(torchvision.models.resnet18(weights=None))
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    torch_home.mkdir(parents=True)
    torch.save(tv.state_dict(), torch_home / url.rsplit("/", 1)[-1])
    ours = resnet.resnet18(num_classes=10)
    head_before = ours.fc.weight.clone()
    kept = pretrained.load_torchvision(ours, _cfg(), resnet.TORCHVISION, resnet.from_torchvision)
    assert kept == ["fc.weight", "fc.bias"]
    assert torch.equal(ours.conv1.weight, tv.conv1.weight)
    assert torch.equal(ours.layer4[1].bn2.running_var, tv.layer4[1].bn2.running_var)
    assert torch.equal(ours.fc.weight, head_before)


def test_a_damaged_cached_file_names_itself(torch_home: Path) -> None:
    from resnet import model as resnet
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    torch_home.mkdir(parents=True)
    (torch_home / url.rsplit("/", 1)[-1]).write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="delete that file"):
        pretrained.load_torchvision(resnet.resnet18(num_classes=10), _cfg(), resnet.TORCHVISION,
                                    resnet.from_torchvision)


def test_train_py_refuses_before_any_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """PRETRAINED with a network that has no weights, or a constant they contradict: exit 2 and
    one line, before a download of the dataset is even tried (DATA_DIR stays empty)."""
    resnet_train = importlib.import_module("resnet.train")
    for args, message in {("--ARCH=plain34",): "no ImageNet weights for ARCH='plain34'",
                          ("--ARCH=resnet50",): "--STRIDE_IN_1X1=False",
                          ("--WIDTH=16",): "published size"}.items():
        with pytest.raises(SystemExit) as exit_:
            resnet_train.main([*args, "--PRETRAINED=True", f"--DATA_DIR={tmp_path}"])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
