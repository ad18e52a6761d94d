"""MobileNet v1 (Howard et al. 2017, arXiv:1704.04861) and v2 (Sandler et al. 2018,
arXiv:1801.04381): Table 1's layer sequence, depthwise convs, the width multipliers and their
rounding, v2's residuals and linear bottlenecks, torchvision's weights, and mobilenet/train.py's
recipes and checks. The generic model tests (shape, gradients, parameter counts, MACs against
Tables 4, 6 and 7) run from tests/cases_mobilenet.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from common import recipe, script
from common.config import ConfigError
from common.optim import param_groups
from mobilenet import model as mobilenet
from mobilenet import train
from tests.helpers import randomised
from tests.model_cases import build_meta, count_macs, count_params
from tests.test_train_scripts import assert_refused

# Table 1 at 224 px, after the stem and each of the 13 blocks: (channels, output side).
TABLE1 = [(32, 112), (64, 112), (128, 56), (128, 56), (256, 28), (256, 28), (512, 14),
          *[(512, 14)] * 5, (1024, 7), (1024, 7)]


def convs(m: nn.Module) -> list[nn.Conv2d]:
    return [c for c in m.modules() if isinstance(c, nn.Conv2d)]


def output_sides(m: nn.Module, layers: list[nn.Module], size: int = 224) -> list[tuple[int, int]]:
    shapes: list[tuple[int, int]] = []
    hooks = [layer.register_forward_hook(lambda mod, i, out: shapes.append((out.shape[1], out.shape[2])))
             for layer in layers]
    m(torch.empty(1, 3, size, size, device="meta"))
    for h in hooks:
        h.remove()
    return shapes


# ---------------------------------------------------------------------------------------------
# v1: Table 1, Fig. 3, the multipliers, Table 4


def test_v1_table1_layer_sequence() -> None:
    """Table 1: conv s2, 13 (dw 3x3 + pw 1x1) pairs with channels 64..1024 and sides 112..7, a
    global average pool and a 1024 -> 1000 FC; the strides are Table 1's (the 13th dw at s1)."""
    m = build_meta(mobilenet.mobilenet_v1)
    assert output_sides(m, [m.stem, *m.blocks]) == TABLE1
    cs = convs(m)
    assert len(cs) == 1 + 2 * 13  # 28 layers with the FC, counting dw and pw separately (Sec. 3.1)
    assert cs[0].kernel_size == (3, 3) and cs[0].groups == 1 and cs[0].stride == (2, 2)
    dws, pws = cs[1::2], cs[2::2]
    assert [c.stride[0] for c in dws] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in dws)
    assert all(c.kernel_size == (1, 1) and c.stride == (1, 1) for c in pws)
    assert isinstance(m.pool, nn.AdaptiveAvgPool2d) and (m.fc.in_features, m.fc.out_features) == (1024, 1000)


def test_v1_blocks_are_depthwise_then_pointwise_each_with_bn_and_relu() -> None:
    """Fig. 3 right: 3x3 depthwise conv, BN, ReLU, 1x1 conv, BN, ReLU; the depthwise conv has
    one filter per input channel (groups == channels)."""
    m = build_meta(mobilenet.mobilenet_v1)
    for b in m.blocks:
        assert isinstance(b, mobilenet.DepthwiseSeparable)
        dw, pw = b.depthwise[0], b.pointwise[0]
        assert dw.groups == dw.in_channels == dw.out_channels and dw.weight.shape[1] == 1
        assert mobilenet.is_depthwise(dw) and not mobilenet.is_depthwise(pw) and pw.groups == 1
        for seq in (b.depthwise, b.pointwise):
            assert [type(x) for x in seq] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
            assert seq[0].bias is None  # BN's beta is the bias
    # the one full conv of the net is the stem
    assert [c for c in convs(m) if c.groups == 1 and c.kernel_size == (3, 3)] == [m.stem[0]]


def test_v1_depthwise_cost_is_eq5() -> None:
    """Sec. 3.1, Eq. 5: a block costs D_K^2 M D_F^2 + M N D_F^2 mult-adds; a full conv (Eq. 2)
    D_K^2 M N D_F^2, 1/N + 1/D_K^2 of it."""
    block = build_meta(mobilenet.DepthwiseSeparable, in_ch=512, out_ch=512, stride=1)
    full = build_meta(mobilenet.FullConv, in_ch=512, out_ch=512, stride=1)
    M = N = 512
    DK, DF = 3, 14
    from torch.utils.flop_counter import FlopCounterMode
    for mod, expect in ((block, DK ** 2 * M * DF ** 2 + M * N * DF ** 2), (full, DK ** 2 * M * N * DF ** 2)):
        with FlopCounterMode(display=False) as counter:
            mod(torch.empty(1, M, DF, DF, device="meta"))
        assert counter.get_total_flops() // 2 == expect
    ratio = (DK ** 2 * M * DF ** 2 + M * N * DF ** 2) / (DK ** 2 * M * N * DF ** 2)
    assert ratio == pytest.approx(1 / N + 1 / DK ** 2)


def test_conv_mobilenet_is_table1_with_full_convs() -> None:
    """Table 4: the same stack, channels and strides, each block one full 3x3 conv + BN + ReLU."""
    m = build_meta(mobilenet.conv_mobilenet_v1)
    assert all(isinstance(b, mobilenet.FullConv) for b in m.blocks)
    assert output_sides(m, [m.stem, *m.blocks]) == TABLE1
    assert all(c.groups == 1 and c.kernel_size == (3, 3) for c in convs(m))
    # Table 4: 4866 / 569 = 8.6 times the mult-adds of MobileNet, 29.3 / 4.2 = 7 times the parameters
    ratio = count_macs(m) / count_macs(build_meta(mobilenet.mobilenet_v1))
    assert 8.5 < ratio < 8.6
    with pytest.raises(ValueError, match="Table 4"):
        mobilenet.mobilenet_v1(conv="grouped")


@pytest.mark.parametrize("alpha,builder", [(0.75, "mobilenet_v1_075"), (0.5, "mobilenet_v1_050"),
                                           (0.25, "mobilenet_v1_025")])
def test_v1_width_multiplier(alpha: float, builder: str) -> None:
    """Sec. 3.3: every layer's channels times alpha (the stem's 32 too); the variants are the
    width kwarg; cost "roughly by alpha^2": the 1x1s (95 % of it, Table 2) scale by alpha^2, the
    depthwise convs by alpha."""
    m = build_meta(mobilenet.MODELS[builder])
    assert output_sides(m, [m.stem, *m.blocks]) == [(int(c * alpha), s) for c, s in TABLE1]
    assert count_params(m) == count_params(build_meta(mobilenet.mobilenet_v1, width=alpha))
    full = count_macs(build_meta(mobilenet.mobilenet_v1))
    assert alpha ** 2 * full < count_macs(m) < 1.2 * alpha ** 2 * full


def test_v1_width_rounding_and_refusal() -> None:
    """int() truncation as TF-slim (no min_depth floor), at least one channel; alpha <= 0 refused."""
    assert mobilenet.scale_v1(32, 0.1) == 3 and mobilenet.scale_v1(1024, 0.001) == 1
    m = mobilenet.mobilenet_v1_050(num_classes=10, width=0.25)  # alpha 0.125
    assert [b.pointwise[0].out_channels for b in m.blocks][:3] == [8, 16, 16]
    for bad in (0, -0.5):
        with pytest.raises(ValueError, match="positive"):
            mobilenet.mobilenet_v1(width=bad)
        with pytest.raises(ValueError, match="positive"):
            mobilenet.mobilenet_v2(width=bad)


def test_v1_resolution_multiplier_is_the_input_side() -> None:
    """Sec. 3.4: rho scales the input, not the net; the maps end at 224 rho / 32 (Table 7's 192,
    160, 128 give 6, 5, 4) and the cost scales by rho^2 (up to the FC)."""
    m = build_meta(mobilenet.mobilenet_v1)
    for side in (192, 160, 128):
        assert output_sides(m, [m.blocks[-1]], side) == [(1024, side // 32)]
    fc = 1024 * 1000
    assert count_macs(m, 160) - fc == pytest.approx((160 / 224) ** 2 * (count_macs(m, 224) - fc), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# v2: Table 2, inverted residuals, linear bottlenecks, the width rounding


def blocks_v2(m: nn.Module) -> list[mobilenet.InvertedResidual]:
    return [b for b in m.blocks if isinstance(b, mobilenet.InvertedResidual)]


def test_v2_table2_sequence() -> None:
    """Table 2: conv 32 s2; bottlenecks (t, c, n, s) with outputs 16..320 and sides 112..7;
    conv 1x1 to 1280; pool; classifier. Expansion t x the block's input channels."""
    m = build_meta(mobilenet.mobilenet_v2)
    bs = blocks_v2(m)
    assert len(bs) == 17
    expect = [(c, s_out) for (t, c, n, s), s_out in zip(mobilenet.V2_BLOCKS, (112, 56, 28, 14, 14, 7, 7))
              for _ in range(n)]
    assert output_sides(m, bs) == expect
    assert output_sides(m, [m.stem, m.last]) == [(32, 112), (1280, 7)]
    in_ch = 32
    for b, (t, c, n, s) in zip(bs, [row for row in mobilenet.V2_BLOCKS for _ in range(row[2])]):
        assert b.depthwise[0].out_channels == t * in_ch and mobilenet.is_depthwise(b.depthwise[0])
        assert (b.expand is None) == (t == 1)
        in_ch = c
    assert [b.depthwise[0].stride[0] for b in bs] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]


def test_v2_residual_only_where_stride_1_and_same_channels() -> None:
    """Fig. 4d / Sec. 3.3: a shortcut only between bottlenecks of the same shape; counted as
    additions in the forward pass."""
    torch.manual_seed(0)
    m = mobilenet.mobilenet_v2(num_classes=10, width=0.25).eval()
    for b in blocks_v2(m):
        stride = b.depthwise[0].stride[0]
        in_ch, out_ch = (b.expand or b.depthwise)[0].in_channels, b.project[0].out_channels
        assert b.use_residual == (stride == 1 and in_ch == out_ch)
    # n - 1 per row of Table 2 at width 1 (the first row, 32 -> 16, has none; at width 0.25 it
    # has one: 8 -> 8 channels after rounding)
    assert sum(b.use_residual for b in blocks_v2(build_meta(mobilenet.mobilenet_v2))) == 10
    # the block adds its input exactly where it has a shortcut
    for b in blocks_v2(m):
        x = torch.randn(1, (b.expand or b.depthwise)[0].in_channels, 8, 8)
        with torch.no_grad():
            branch = b.project(b.depthwise(x if b.expand is None else b.expand(x)))
            assert torch.equal(b(x), x + branch if b.use_residual else branch)


def test_v2_linear_bottleneck() -> None:
    """Sec. 3.2: no non-linearity after the projection; ReLU6 after the expansion and depthwise
    convs (Table 1). Its output takes negative values, which a ReLU6 would clip."""
    m = mobilenet.mobilenet_v2(num_classes=10, width=0.25)
    for b in blocks_v2(m):
        assert [type(x) for x in b.project] == [nn.Conv2d, nn.BatchNorm2d]
        assert b.project[0].kernel_size == (1, 1)
        for seq in filter(None, (b.expand, b.depthwise)):
            assert [type(x) for x in seq] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]
    b = blocks_v2(m)[1]  # stride 2: no shortcut, so the output is the projection itself
    with torch.no_grad():
        y = b(torch.randn(2, b.expand[0].in_channels, 8, 8))
    assert (y < 0).any()
    assert [type(x) for x in m.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]


def test_v2_width_rounds_to_multiples_of_8() -> None:
    """The authors' _make_divisible: nearest multiple of 8, at least 8, never 10 % below; the
    last conv keeps 1280 below width 1 (Sec. 4), grows above it."""
    md = mobilenet.make_divisible
    values = (32 * 0.35, 16 * 0.35, 24 * 0.5, 96 * 0.75, 1, 20, 11)
    assert [md(v) for v in values] == [16, 8, 16, 72, 8, 24, 16]
    assert md(92) == 96 and md(91) == 88 and md(12) == 16  # 12 -> 8 would be 33 % below, so 16
    for width in (0.35, 0.5, 0.75, 1.4):
        m = build_meta(mobilenet.mobilenet_v2, width=width)
        chans = [m.stem[0].out_channels] + [b.project[0].out_channels for b in blocks_v2(m)]
        assert all(c % 8 == 0 for c in chans)
        assert m.last[0].out_channels == (1280 if width <= 1 else md(1280 * width))
    assert build_meta(mobilenet.mobilenet_v2, width=0.5).blocks[0].project[0].out_channels == 8
    # round_to=1 lets the tests build narrower nets than the paper's rule allows
    assert build_meta(mobilenet.mobilenet_v2, width=0.1, round_to=1).stem[0].out_channels == 3


def test_v2_torchvision_width_multiplier_agrees() -> None:
    """The same rounding as torchvision's width_mult: the same parameter count at 0.5 and 1.4."""
    for width in (0.5, 1.4):
        with torch.device("meta"):
            tv = torchvision.models.mobilenet_v2(weights=None, width_mult=width)
        assert count_params(build_meta(mobilenet.mobilenet_v2, width=width)) == count_params(tv)


# ---------------------------------------------------------------------------------------------
# init and torchvision's weights


def test_init() -> None:
    """torchvision's MobileNet init (the papers state none): He fan_out convs, BN 1/0, FC N(0, 0.01)."""
    torch.manual_seed(0)
    m = mobilenet.mobilenet_v1(num_classes=1000)
    w = m.blocks[10].pointwise[0].weight  # 512x512x1x1: fan_out 512
    assert w.std().item() == pytest.approx((2 / 512) ** 0.5, rel=0.02)
    assert abs(m.fc.weight.std().item() - 0.01) < 0.0005 and not m.fc.bias.any()
    for bn in (x for x in m.modules() if isinstance(x, nn.BatchNorm2d)):
        assert bn.weight.eq(1).all() and not bn.bias.any()


def test_torchvision_weights_give_the_same_outputs() -> None:
    """TORCHVISION / from_torchvision: torchvision's mobilenet_v2 (random weights, no download),
    renamed into ours with strict=True, computes the same logits."""
    assert mobilenet.TORCHVISION == {"mobilenet_v2": "mobilenet_v2"}
    tv = randomised(torchvision.models.mobilenet_v2(weights=None), scale=0.1)
    ours = mobilenet.mobilenet_v2(num_classes=1000)
    ours.load_state_dict(mobilenet.from_torchvision(tv.state_dict()), strict=True)
    ours.eval()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ours(x), tv(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * max(1.0, b.abs().max().item()))
    with pytest.raises(KeyError):
        mobilenet.from_torchvision({"features.0.conv.weight": torch.zeros(1), "extra.weight": torch.zeros(1)})


# ---------------------------------------------------------------------------------------------
# train.py


def test_every_recipe_passes_the_checks_before_data() -> None:
    """Each recipe names only the file's constants, states what its choices need, and builds
    a network that takes its input size (on the meta device, as train.py does before any data)."""
    rules = {**recipe.RULES, **train.RULES}
    for name in ("", *train.RECIPES):
        cfg, _ = script.configure(train, [f"--RECIPE={name}"] if name else [], rules)
        script.check_before_data(cfg, train.build_model, None, (train.TORCHVISION, train.from_torchvision))
    paper = train.RECIPES["paper"]
    assert paper["OPTIMIZER"] == "rmsprop" and paper["DEPTHWISE_WEIGHT_DECAY"] == 0.0
    assert paper["MIN_SCALE"] > train.MIN_SCALE  # "less ... data augmentation"


def test_depthwise_filters_get_their_own_weight_decay() -> None:
    """Sec. 4: little or no weight decay on depthwise filters, through common.optim's seam."""
    cfg = {**recipe.SWITCHES, **{k: v for k, v in vars(train).items() if k.isupper()},
           "WIDTH_MULT": 0.25, "DEPTHWISE_WEIGHT_DECAY": 1e-6}
    m = train.build_model(cfg, 10)
    groups = {g["weight_decay"]: g["params"] for g in param_groups(m, cfg, train.param_options)}
    dw = [c.weight for c in m.modules() if mobilenet.is_depthwise(c)]
    assert len(dw) == 13
    assert {id(p) for p in groups[1e-6]} == {id(p) for p in dw}
    assert {p.ndim for p in groups[train.WEIGHT_DECAY]} == {2, 4}  # the full/pointwise convs and the FC
    assert m.stem[0].weight in groups[train.WEIGHT_DECAY]


def test_conv_constant_builds_conv_mobilenet() -> None:
    cfg = {**recipe.SWITCHES, **{k: v for k, v in vars(train).items() if k.isupper()}, "CONV": "full"}
    with torch.device("meta"):
        m = train.build_model(cfg, 10)
        assert all(isinstance(b, mobilenet.FullConv) for b in m.blocks)
        assert count_params(m) == count_params(mobilenet.conv_mobilenet_v1(num_classes=10))
        with pytest.raises(ConfigError, match="mobilenet_v2"):
            train.build_model({**cfg, "ARCH": "mobilenet_v2"}, 10)


def test_bad_constants_fail_before_any_data_work(tmp_path, capsys) -> None:
    """One clear line, exit 2, nothing downloaded."""
    assert_refused(train, {
        "--WIDTH_MULT=0": "positive width multiplier",
        "--WIDTH_MULT=-1": "positive width multiplier",
        "--ARCH=mobilenet_v3": "mobilenet_v1, mobilenet_v1_075",
        "--CONV=grouped": "depthwise or full",
        "--IMAGE_DIM=16": "at least 32 pixels",
    }, tmp_path, capsys)
    with pytest.raises(SystemExit) as exit_:
        train.main(["--ARCH=mobilenet_v2", "--CONV=full", f"--DATA_DIR={tmp_path}"])
    assert exit_.value.code == 2
    assert "CONV='full' is for MobileNet v1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
