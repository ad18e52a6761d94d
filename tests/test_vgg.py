"""VGG (Simonyan & Zisserman 2014, arXiv:1409.1556): Table 1, LRN, init, init from net A, the
dense classifier, the input-size rule, the width multiplier and vgg/train.py's recipes. The
generic model tests (shape, gradients, parameter counts, MACs) run from tests/cases_vgg.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from common import recipe, script
from common.checkpoint import REQUIRED_KEYS
from common.config import ConfigError
from tests.model_cases import build_meta, count_params
from tests.test_train_scripts import assert_refused
from vgg import model as vgg
from vgg import train

# Table 1 / Table 2: weight layers (convs + 3 FC) and 1x1 convs per configuration.
WEIGHT_LAYERS = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}
CONV_1X1 = {"A": 0, "A-LRN": 0, "B": 0, "C": 3, "D": 0, "E": 0}
# Table 1, conv widths in order (conv1-n written as n): the columns read top to bottom.
CONV_WIDTHS = {
    "A": [64, 128, 256, 256, 512, 512, 512, 512],
    "B": [64, 64, 128, 128, 256, 256, 512, 512, 512, 512],
    "D": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    "E": [64, 64, 128, 128] + [256] * 4 + [512] * 8,
}
COPIED = ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")


def convs(m: nn.Module) -> list[nn.Conv2d]:
    return [c for c in m.modules() if isinstance(c, nn.Conv2d)]


@pytest.mark.parametrize("name", list(vgg.MODELS))
def test_table1_layers(name: str) -> None:
    """Weight layers 11/11/13/16/16/19; every conv stride 1, 'same' padding, followed by a ReLU;
    five 2x2/2 max pools; C's three 1x1 convs close stages 3-5; LRN only in A-LRN, after relu1_1."""
    config = vgg.CONFIG_OF[name]
    m = build_meta(vgg.MODELS[name])
    cs = convs(m)
    fcs = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(cs) + len(fcs) == WEIGHT_LAYERS[config] and len(fcs) == 3
    assert [f.out_features for f in fcs] == [4096, 4096, 1000]
    assert all(c.stride == (1, 1) and c.padding == (c.kernel_size[0] // 2,) * 2 for c in cs)
    ones = [n for n, c in m.features.named_children() if isinstance(c, nn.Conv2d) and c.kernel_size == (1, 1)]
    assert len(ones) == CONV_1X1[config]
    if config == "C":
        assert ones == ["conv3_3", "conv4_3", "conv5_3"]
    else:
        assert [c.out_channels for c in cs] == CONV_WIDTHS[config.removesuffix("-LRN")]
    pools = [p for p in m.modules() if isinstance(p, nn.MaxPool2d)]
    assert len(pools) == 5 and all(p.kernel_size == 2 and p.stride == 2 for p in pools)
    names = list(m.features._modules)
    for i, n in enumerate(names):  # a ReLU after every conv (after its BN in the *_bn nets)
        if n.startswith("conv"):
            after = names[i + 2] if name.endswith("_bn") else names[i + 1]
            assert after == "relu" + n.removeprefix("conv")
    lrns = [n for n, x in m.features.named_children() if isinstance(x, nn.LocalResponseNorm)]
    assert lrns == (["norm1"] if config == "A-LRN" else [])
    if lrns:
        assert names[names.index("norm1") - 1] == "relu1_1"
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert len(bns) == (len(cs) if name.endswith("_bn") else 0)
    assert all((c.bias is None) == name.endswith("_bn") for c in cs)


def test_classifier_fc_dropout_order() -> None:
    """Sec. 2.1 / 3.1: FC-4096, FC-4096, FC-classes; dropout 0.5 after the first two only."""
    m = vgg.vgg11(num_classes=10, width=1 / 16)
    kinds = [type(x).__name__ for x in m.classifier]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [x.p for x in m.classifier if isinstance(x, nn.Dropout)] == [0.5, 0.5]


def alexnet_lrn(a: torch.Tensor, k: float = 2, n: int = 5, alpha: float = 1e-4,
                beta: float = 0.75) -> torch.Tensor:
    """Krizhevsky et al. 2012, Sec. 3.3, written out: b_i = a_i / (k + alpha * sum_{j = max(0,
    i - n/2)}^{min(N - 1, i + n/2)} a_j^2)^beta, over channels at each position."""
    out = torch.empty_like(a)
    channels = a.shape[1]
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        s = (a[:, lo:hi + 1] ** 2).sum(dim=1)
        out[:, i] = a[:, i] / (k + alpha * s) ** beta
    return out


def test_a_lrn_is_alexnet_formula() -> None:
    """A-LRN's LRN (Sec. 2.3: Krizhevsky et al.'s parameters) against the formula by hand; the
    values are large enough that alpha matters (torch's alpha is per n terms: 5e-4 = 5 x 1e-4)."""
    m = vgg.vgg11_lrn(num_classes=10, width=1 / 16)
    torch.manual_seed(0)
    a = torch.relu(torch.randn(2, 7, 5, 5, dtype=torch.float64) * 30)
    got = m.features.norm1.double()(a)
    assert torch.allclose(got, alexnet_lrn(a), rtol=1e-12)
    assert not torch.allclose(got, alexnet_lrn(a, alpha=1e-4 / 5), rtol=1e-3)  # torch's alpha as is
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # in the network: conv1_1, relu1_1, then LRN
        h = torch.relu(m.features.conv1_1(x))
        assert torch.allclose(m.features[:3](x), alexnet_lrn(h.double()).float(), atol=1e-6)


def test_init_normal_std_and_zero_biases() -> None:
    """Sec. 3.1: weights N(0, 0.01), biases 0 (INIT_STD reads the paper's "10^-2 variance")."""
    torch.manual_seed(0)
    m = vgg.vgg11(num_classes=1000, width=0.25, init="normal")
    for layer in (*convs(m), *[x for x in m.modules() if isinstance(x, nn.Linear)]):
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    big = torch.cat([m.features.conv5_2.weight.flatten(), m.classifier.fc6.weight.flatten()])
    assert abs(big.std().item() - 0.01) < 0.0002 and abs(big.mean().item()) < 0.0002
    literal = vgg.vgg11(num_classes=10, width=0.25, init="normal", init_std=0.1)
    assert abs(literal.classifier.fc6.weight.std().item() - 0.1) < 0.002


def test_init_glorot_bound() -> None:
    """Sec. 3.1 note, Glorot & Bengio 2010: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), biases 0."""
    torch.manual_seed(0)
    m = vgg.vgg16(num_classes=10, width=0.25, init="glorot")
    for layer in (m.features.conv4_2, m.classifier.fc6):
        w = layer.weight
        fan_in, fan_out = w[0].numel(), w.shape[0] * w[0, 0].numel()
        a = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= a and w.abs().max() > 0.99 * a
        assert abs(w.std().item() - a / math.sqrt(3)) < 0.02 * a
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_init_kaiming_and_batch_norm() -> None:
    """He et al. 2015 (not in the paper): convs std sqrt(2 / fan_out), FC N(0, 0.01); BN 1/0."""
    torch.manual_seed(0)
    m = vgg.vgg16_bn(num_classes=10, width=0.5, init="kaiming")
    w = m.features.conv4_2.weight  # 256 x 256 x 3 x 3
    assert abs(w.std().item() - math.sqrt(2 / (256 * 9))) < 0.02 * math.sqrt(2 / (256 * 9))
    assert abs(m.classifier.fc6.weight.std().item() - 0.01) < 0.0003
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    with pytest.raises(ValueError, match="Sec. 3.1"):
        vgg.vgg11(init="xavier")


def test_width_multiplier_scales_every_layer() -> None:
    """width w: every conv and FC layer w times as wide (FC 4096w); the parameters about w^2."""
    full, half = build_meta(vgg.vgg16), build_meta(vgg.vgg16, width=0.5)
    assert [c.out_channels // 2 for c in convs(full)] == [c.out_channels for c in convs(half)]
    assert (half.classifier.fc6.in_features, half.classifier.fc6.out_features) == (256 * 49, 2048)
    assert half.classifier.fc8.out_features == 1000  # the classes are not scaled
    assert 0.24 < count_params(half) / count_params(full) < 0.26
    tiny = build_meta(vgg.vgg11, width=1 / 128)  # never below one channel
    assert min(c.out_channels for c in convs(tiny)) == 1
    with pytest.raises(ValueError):
        vgg.vgg11(width=0)


def test_dense_classifier_is_the_fc_net_on_every_7x7_window() -> None:
    """Sec. 3.2: FC layers as 7x7 / 1x1 convolutions over the whole map, scores averaged. At 224
    px (a 7x7 map) it is the FC net itself; at 256 px (8x8) the mean over the four 7x7 windows."""
    torch.manual_seed(0)
    pool = vgg.vgg11(num_classes=10, width=1 / 16, init="glorot").eval()
    dense = vgg.vgg11(num_classes=10, width=1 / 16, init="glorot", classifier="dense").eval()
    dense.load_state_dict(pool.state_dict())
    with torch.no_grad():
        x = torch.randn(2, 3, 224, 224)
        assert pool(x).abs().max() > 1e-3  # logits that are not all near zero
        assert torch.allclose(dense(x), pool(x), atol=1e-5)
        x = torch.randn(2, 3, 256, 256)
        fmap = pool.features(x)  # (2, 32, 8, 8)
        windows = [pool.classifier(fmap[:, :, i:i + 7, j:j + 7].flatten(1)) for i in (0, 1) for j in (0, 1)]
        assert torch.allclose(dense(x), torch.stack(windows).mean(0), atol=1e-5)
        assert not torch.allclose(pool(x), dense(x), atol=1e-3)  # the pool head is another function
        assert dense.dense_scores(fmap).shape == (2, 10, 2, 2)


@pytest.mark.parametrize("name", list(vgg.MODELS))
def test_smallest_image_dim_rule_is_what_the_network_takes(name: str) -> None:
    """RULES' smallest IMAGE_DIM equals what a forward on the meta device accepts: 32 px
    (five 2x2 max pools, a 1x1 map), 224 px with the dense classifier (fc6's 7x7 map)."""
    ok, _ = train.RULES["IMAGE_DIM"]
    smallest = next(d for d in range(8, 64) if ok(d))
    for classifier, least in (("pool", smallest), ("dense", 224)):
        m = build_meta(vgg.MODELS[name], num_classes=10, classifier=classifier)
        m(torch.empty(1, 3, least, least, device="meta"))
        with pytest.raises((RuntimeError, ValueError)):
            m(torch.empty(1, 3, least - 1, least - 1, device="meta"))
    assert smallest == 32


def test_rules_refuse_what_table_1_cannot_take(tmp_path: Path, capsys) -> None:
    cases = {
        "--IMAGE_DIM=31": "IMAGE_DIM=31 is not possible: at least 32 pixels",
        "--EVAL_IMAGE_DIM=16": "EVAL_IMAGE_DIM=16 is not possible",
        "--ARCH=vgg15": "ARCH='vgg15' is not possible: vgg11, vgg11_lrn",
        "--INIT=xavier": "INIT='xavier' is not possible: normal, glorot, kaiming",
        "--WIDTH=0": "WIDTH=0.0 is not possible",
        "--CLASSIFIER=fc": "CLASSIFIER='fc' is not possible",
        "--CLASSIFIER=dense": "IMAGE_DIM=64 gives 64 px inputs, too small",  # with --IMAGE_DIM=64 below
    }
    for arg, message in cases.items():
        with pytest.raises(SystemExit) as exit_:
            train.main([arg, "--IMAGE_DIM=64" if "dense" in arg else "--SEED=0", f"--DATA_DIR={tmp_path}"])
        assert exit_.value.code == 2, arg
        assert message in capsys.readouterr().err, arg
    assert not list(tmp_path.iterdir())  # refused before any data work
    assert_refused(train, {"--DROPOUT=1.0": "DROPOUT=1.0 is not possible"}, tmp_path, capsys)


# --- Sec. 3.1: deeper nets initialised from net A


def save_net_a(path: Path, arch: str = "vgg11", width: float = 1 / 16, num_classes: int = 10,
               seed: int = 1) -> dict:
    """A checkpoint as this project writes one (the keys load_checkpoint asks for)."""
    torch.manual_seed(seed)
    state = vgg.MODELS[arch](num_classes=num_classes, width=width).state_dict()
    for v in state.values():  # "trained": no zero bias or unit gamma left to match by chance
        if v.is_floating_point():
            v.add_(torch.rand_like(v))
    payload = {k: None for k in REQUIRED_KEYS}
    payload |= {"model": state, "config": {"ARCH": arch, "WIDTH": width}, "epoch": 1, "step": 0,
                "num_classes": num_classes}
    torch.save(payload, path)
    return state


def cfg_for(arch: str, init_from: Path | str, width: float = 1 / 16) -> dict:
    cfg, _ = script.configure(train, [f"--ARCH={arch}", f"--WIDTH={width}", f"--INIT_FROM={init_from}",
                                      "--INIT=glorot"], {**recipe.RULES, **train.RULES})
    return cfg


@pytest.mark.parametrize("arch, source", [("vgg16", "vgg11"), ("vgg19", "vgg11"), ("vgg16_1x1", "vgg11"),
                                          ("vgg13_bn", "vgg11_bn")])
def test_init_from_a_copies_exactly_the_named_layers(arch: str, source: str, tmp_path: Path) -> None:
    """Sec. 3.1: "the first four convolutional layers and the last three fully-connected layers
    with the layers of net A (the intermediate layers were initialised randomly)"."""
    a = save_net_a(tmp_path / "a.pt", source)
    torch.manual_seed(0)
    m = train.build_model(cfg_for(arch, tmp_path / "a.pt"), 10)
    torch.manual_seed(0)
    fresh = train.build_model(cfg_for(arch, ""), 10)
    own = m.state_dict()
    copied = {k for k in own if k.split(".")[1].replace("bn", "conv") in COPIED}
    # conv weight and bias (BN nets: conv weight, BN's weight, bias, running mean/var, count), FC's
    assert len(copied) == (4 * (1 + 5) + 3 * 2 if arch.endswith("_bn") else 7 * 2)
    for k, v in own.items():
        if k in copied:
            assert torch.equal(v, a[k]), k
        elif k in a and v.is_floating_point():  # same name in A, not copied: random (conv4_1, ...)
            assert not torch.equal(v, a[k]), k
        if v.is_floating_point() and k not in copied and v.ndim > 1:
            assert torch.equal(v, fresh.state_dict()[k]), k  # the intermediate layers: the random init
    assert "features.conv4_1.weight" in a and "features.conv4_1.weight" not in copied


def test_init_from_a_checks_on_the_meta_device_and_copies_nothing_there(tmp_path: Path) -> None:
    save_net_a(tmp_path / "a.pt", num_classes=7)
    cfg = cfg_for("vgg16", tmp_path / "a.pt")
    with torch.device("meta"):  # script.check_before_data's call: class count is a stand-in
        m = train.build_model(cfg, 10)
    assert all(p.is_meta for p in m.parameters())
    with pytest.raises(ConfigError, match="classifier.fc8.weight has shape"):
        train.build_model(cfg, 10)  # the real call knows the classes: 7 there, 10 here
    assert train.build_model(cfg, 7) is not None


@pytest.mark.parametrize("what, make, message", [
    ("another net", lambda p: save_net_a(p, "vgg16"), "holds ARCH='vgg16', not net A"),
    ("A without BN for a BN net", lambda p: save_net_a(p, "vgg11"), "from a trained vgg11_bn"),
    ("another width", lambda p: save_net_a(p, width=1 / 8), "has WIDTH=0.125"),
    ("not a checkpoint", lambda p: p.write_text("hello"), "is not a checkpoint of this project"),
    ("text", lambda p: p.write_text(Path(__file__).read_text()), "is not a checkpoint"),
    ("no file", lambda p: None, "no such checkpoint file"),
])
def test_init_from_refuses_a_wrong_checkpoint_in_one_line(what: str, make, message: str, tmp_path: Path,
                                                          capsys) -> None:
    path = tmp_path / "ckpt.pt"
    make(path)
    arch = "vgg16_bn" if "BN" in what else "vgg16"
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_:
        train.main([f"--ARCH={arch}", "--WIDTH=0.0625", f"--INIT_FROM={path}", f"--DATA_DIR={data}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and f"INIT_FROM={path}" in err, what
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not data.exists()  # before any download or decode


# --- recipes


def configure(*argv: str) -> dict:
    cfg, _ = script.configure(train, list(argv), {**recipe.RULES, **train.RULES})
    return cfg


def test_paper_recipe_is_section_3() -> None:
    """Sec. 3.1 training and Sec. 3.2 / Table 4 testing."""
    cfg = configure("--RECIPE=paper")
    assert (cfg["OPTIMIZER"], cfg["BATCH_SIZE"], cfg["MOMENTUM"]) == ("sgd", 256, 0.9)
    assert cfg["WEIGHT_DECAY"] == 5e-4
    assert not cfg["NESTEROV"] and cfg["DECAY_NORM_AND_BIAS"] and cfg["DROPOUT"] == 0.5
    assert cfg["LEARNING_RATE"] == 1e-2 and cfg["LR_SCHEDULE"] == "plateau"
    assert cfg["LEARNING_RATE_DECAY_FACTOR"] == 0.1 and cfg["NUM_EPOCHS"] == 74
    assert cfg["LABEL_SMOOTHING"] == 0 and cfg["WARMUP_EPOCHS"] == 0
    assert cfg["ARCH"] == "vgg11" and cfg["INIT"] == "normal" and cfg["INIT_STD"] == 0.01  # net A first
    # S ~ U[256, 512] around 224 crops; test at Q = 256, 384, 512, densely, with flips.
    assert cfg["IMAGE_DIM"] == 224 and [round(s * 224) for s in cfg["SCALE_JITTER"]] == [256, 512]
    assert [round(cfg["EVAL_IMAGE_DIM"] * s) for s in cfg["EVAL_SCALES"]] == [256, 384, 512]
    assert cfg["EVAL_CROP"] == 1.0 and cfg["CLASSIFIER"] == "dense" and cfg["EVAL_VIEWS"] == "flip"
    assert configure("--RECIPE=paper", "--NUM_EPOCHS=3")["NUM_EPOCHS"] == 3  # the command line wins


def test_writeup_recipe() -> None:
    cfg = configure("--RECIPE=writeup")
    assert (cfg["OPTIMIZER"], cfg["LEARNING_RATE"]) == ("adamw", 1e-4)
    assert (cfg["WEIGHT_DECAY"], cfg["NUM_EPOCHS"]) == (0.1, 90)
    assert (cfg["LR_SCHEDULE"], cfg["LEARNING_RATE_DECAY_STEP_SIZE"], cfg["LEARNING_RATE_DECAY_FACTOR"]) == (
        "step", 30, 0.1)
    assert (cfg["BATCH_SIZE"], cfg["IMAGE_DIM"], cfg["ARCH"]) == (128, 224, "vgg16")


def test_every_recipe_builds_on_the_meta_device() -> None:
    """Each recipe's network takes its own training and evaluation sizes (script's pre-data check)."""
    for name in ("", *train.RECIPES):
        cfg = configure(f"--RECIPE={name}")
        script.check_before_data(cfg, train.build_model, None)
