"""Model tests, driven by one list of models (STYLE.md point 9).

Every entry of MODEL_CASES gets: output shape, gradient-reaches-every-parameter and no-NaN on a
tiny CPU model, and parameter count and multiply-adds (at 1x3x224x224) against its paper,
both measured on the ``meta`` device so that no real weights or activations are allocated.
Later architectures append to MODEL_CASES. Below the generic tests, each paper's deviations and
options are pinned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from resnet import model as resnet


@dataclass(frozen=True)
class Case:
    name: str
    builder: Callable[..., nn.Module]
    tiny: dict[str, Any]  # kwargs that make the model small enough for a fast CPU step
    params: int  # parameter count at num_classes=1000
    macs: float  # multiply-adds of one 1x3x224x224 forward, as the paper reports them
    macs_tol: float  # allowed |measured - macs|; each architecture says why its value
    tiny_input: int = 64  # side of the square input for the tiny model


# ResNet, He et al. 2015 (arXiv:1512.03385).
# Parameter counts: torchvision.models.resnetXX(weights=None) has exactly these (checked once by
# hand); the paper gives none. Plain nets: the ResNet count less its three projection shortcuts
# (1x1 conv + BN at conv3_1, conv4_1, conv5_1: 172,032 + 1,792 = 173,824 parameters), which a
# plain net does not have. MACs: Table 1's "FLOPs" row, which Sec. 3.3 calls multiply-adds; the
# plain-34 value is Sec. 3.3's "3.6 billion FLOPs", plain-18 shares Table 1's 18-layer column.
# Tolerance: Table 1 prints one decimal, which alone allows 0.05e9, but two columns sit a little
# beyond that: we count 3.664e9 for ResNet-34 and 3.858e9 for ResNet-50 (conv + fc), so the
# paper's count must differ slightly in convention. 0.07e9 covers every paper-stride model and
# still rejects every "v1.5" bottleneck net (+0.20e9 to +0.23e9), see test_v15_stride_placement.
RESNET_MAC_TOL = 0.07e9
RESNET_TINY = {"width": 8}

MODEL_CASES: list[Case] = [
    Case("resnet18", resnet.resnet18, RESNET_TINY, 11_689_512, 1.8e9, RESNET_MAC_TOL),
    Case("resnet34", resnet.resnet34, RESNET_TINY, 21_797_672, 3.6e9, RESNET_MAC_TOL),
    Case("resnet50", resnet.resnet50, RESNET_TINY, 25_557_032, 3.8e9, RESNET_MAC_TOL),
    Case("resnet101", resnet.resnet101, RESNET_TINY, 44_549_160, 7.6e9, RESNET_MAC_TOL),
    Case("resnet152", resnet.resnet152, RESNET_TINY, 60_192_808, 11.3e9, RESNET_MAC_TOL),
    Case("plain18", resnet.plain18, RESNET_TINY, 11_689_512 - 173_824, 1.8e9, RESNET_MAC_TOL),
    Case("plain34", resnet.plain34, RESNET_TINY, 21_797_672 - 173_824, 3.6e9, RESNET_MAC_TOL),
]
CASE_IDS = [c.name for c in MODEL_CASES]


# ---------------------------------------------------------------------------------------------
# helpers


def build_meta(builder: Callable[..., nn.Module], **kwargs: Any) -> nn.Module:
    """Build a full-size model on the meta device: shapes only, no memory, no init cost."""
    with torch.device("meta"):
        return builder(**kwargs)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count_macs(m: nn.Module, size: int = 224) -> float:
    """Multiply-adds of one forward. FlopCounterMode counts 2 FLOPs per multiply-add for
    convolutions and matmuls (and nothing for BN, ReLU, pooling or additions)."""
    x = torch.empty(1, 3, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        m(x)
    return counter.get_total_flops() / 2


def tiny_model(case: Case, num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return case.builder(num_classes=num_classes, **case.tiny)


class CountOps(TorchDispatchMode):
    """Counts calls of one aten op during a forward."""

    def __init__(self, op: Any) -> None:
        super().__init__()
        self.op, self.n = op, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func is self.op:
            self.n += 1
        return func(*args, **(kwargs or {}))


# ---------------------------------------------------------------------------------------------
# generic tests, one per entry of MODEL_CASES


@pytest.mark.parametrize("case", MODEL_CASES, ids=CASE_IDS)
def test_output_shape_and_finite(case: Case) -> None:
    m = tiny_model(case, num_classes=10)
    x = torch.randn(2, 3, case.tiny_input, case.tiny_input)
    y = m(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    m.eval()
    with torch.no_grad():
        assert torch.isfinite(m(x)).all()


@pytest.mark.parametrize("case", MODEL_CASES, ids=CASE_IDS)
def test_gradient_reaches_every_parameter(case: Case) -> None:
    m = tiny_model(case, num_classes=10)  # default init: zero_init_residual would zero some
    x = torch.randn(4, 3, case.tiny_input, case.tiny_input)
    loss = nn.functional.cross_entropy(m(x), torch.arange(4) % 10)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"no grad for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite grad for {name}"
        assert p.grad.abs().sum() > 0, f"all-zero grad for {name}"


@pytest.mark.parametrize("case", MODEL_CASES, ids=CASE_IDS)
def test_parameter_count(case: Case) -> None:
    m = build_meta(case.builder, num_classes=1000)
    assert count_params(m) == case.params


@pytest.mark.parametrize("case", MODEL_CASES, ids=CASE_IDS)
def test_macs_match_paper(case: Case) -> None:
    m = build_meta(case.builder, num_classes=1000)
    macs = count_macs(m)
    assert abs(macs - case.macs) <= case.macs_tol, f"{macs / 1e9:.3f}e9 vs {case.macs / 1e9}e9"


# ---------------------------------------------------------------------------------------------
# ResNet: He et al. 2015. Table 1, options and deviations


def test_every_resnet_builder_is_in_the_model_list() -> None:
    assert set(resnet.MODELS) <= set(CASE_IDS)
    for name, builder in resnet.MODELS.items():
        assert builder is getattr(resnet, name)


def test_resnet_table1_output_sizes() -> None:
    """Table 1 "output size" column: 112, 56, 28, 14, 7, and widths 64..512 (x4 bottleneck)."""
    for depth, expansion in ((34, 1), (50, 4)):
        m = build_meta(resnet.MODELS[f"resnet{depth}"])
        shapes: dict[str, tuple[int, ...]] = {}
        for name in ("conv1", "layer1", "layer2", "layer3", "layer4"):
            getattr(m, name).register_forward_hook(
                lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape))
            )
        m(torch.empty(1, 3, 224, 224, device="meta"))
        e = expansion
        assert shapes == {
            "conv1": (1, 64, 112, 112),
            "layer1": (1, 64 * e, 56, 56),
            "layer2": (1, 128 * e, 28, 28),
            "layer3": (1, 256 * e, 14, 14),
            "layer4": (1, 512 * e, 7, 7),
        }


def test_projection_shortcuts_only_where_shape_changes() -> None:
    """Sec. 3.3 option B: a 1x1 conv + BN where the shape changes, identity elsewhere."""
    m50 = build_meta(resnet.resnet50)
    m18 = build_meta(resnet.resnet18)
    # ResNet-50: every stage's first block changes channels (64->256, 256->512, ...).
    for m, first_has_proj in ((m50, [True] * 4), (m18, [False, True, True, True])):
        for stage, has_proj in zip((m.layer1, m.layer2, m.layer3, m.layer4), first_has_proj):
            assert (stage[0].shortcut is not None) == has_proj
            assert all(b.shortcut is None for b in list(stage)[1:])
    conv, bn = m50.layer2[0].shortcut
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
    assert isinstance(bn, nn.BatchNorm2d)


@pytest.mark.parametrize(
    "depth, v15_macs",  # v1.5 costs ~4.1/7.8/11.5 GMACs (torchvision's own resnets measure this)
    [(50, 4.1e9), (101, 7.8e9), (152, 11.5e9)],
)
def test_v15_stride_placement(depth: int, v15_macs: float) -> None:
    """Deviation (opt-in): stride_in_1x1=False strides the 3x3, as torchvision's "v1.5"."""
    builder = resnet.MODELS[f"resnet{depth}"]
    paper = build_meta(builder)
    v15 = build_meta(builder, stride_in_1x1=False)
    for stage in (paper.layer2, paper.layer3, paper.layer4):
        assert stage[0].conv1.stride == (2, 2) and stage[0].conv2.stride == (1, 1)
    for stage in (v15.layer2, v15.layer3, v15.layer4):
        assert stage[0].conv1.stride == (1, 1) and stage[0].conv2.stride == (2, 2)
    assert count_params(v15) == count_params(paper)  # same weights, different placement
    macs = count_macs(v15)
    assert abs(macs - v15_macs) <= 0.05e9
    assert macs - count_macs(paper) > 0.2e9  # the 3x3 now runs at 4x the positions


def test_plain_nets_have_no_shortcuts_and_no_additions() -> None:
    """Sec. 4.1 plain nets: same stacked layers, no shortcut modules, no Eq. 1 additions."""
    torch.manual_seed(0)
    plain = resnet.plain34(num_classes=10, width=8).eval()
    torch.manual_seed(0)
    res = resnet.resnet34(num_classes=10, width=8).eval()
    blocks = [b for b in plain.modules() if isinstance(b, resnet.BasicBlock)]
    assert len(blocks) == 3 + 4 + 6 + 3
    assert all(b.shortcut is None and not b.residual for b in blocks)
    # Full size: the parameter difference is exactly the three projection shortcuts.
    full_res, full_plain = build_meta(resnet.resnet34), build_meta(resnet.plain34)
    projections = [b.shortcut for b in full_res.modules()
                   if isinstance(b, resnet.BasicBlock) and b.shortcut is not None]
    assert len(projections) == 3
    proj = sum(count_params(s) for s in projections)
    assert proj == 173_824
    assert count_params(full_res) - count_params(full_plain) == proj
    # Count tensor additions in an eval forward (eval: BN does no running-stat updates).
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with CountOps(torch.ops.aten.add.Tensor) as adds_plain:
            y_plain = plain(x)
        with CountOps(torch.ops.aten.add.Tensor) as adds_res:
            y_res = res(x)
    assert adds_plain.n == 0
    assert adds_res.n == len(blocks)  # one Eq. 1/2 addition per block
    assert not torch.allclose(y_plain, y_res)


@pytest.mark.parametrize("builder", [resnet.resnet18, resnet.resnet50])
def test_zero_init_residual_makes_blocks_identity(builder: Callable[..., nn.Module]) -> None:
    """Goyal et al. 2017 Sec. 5.1: with gamma = 0 on each branch's last BN, F(x) = 0 at init, so
    a block computes relu(x) (identity shortcut) or relu(W_s x) (projection)."""
    torch.manual_seed(0)
    m = builder(num_classes=10, width=8, zero_init_residual=True)
    blocks = [b for b in m.modules() if isinstance(b, (resnet.BasicBlock, resnet.Bottleneck))]
    for train in (True, False):
        m.train(train)
        with torch.no_grad():
            for b in blocks:
                x = torch.randn(2, b.conv1.in_channels, 8, 8)  # negative values too
                expect = torch.relu(x if b.shortcut is None else b.shortcut(x))
                assert torch.equal(b(x), expect)
    assert not torch.equal(m.fc.weight, torch.zeros_like(m.fc.weight))
    # default init: no gamma is zero
    d = builder(num_classes=10, width=8)
    assert all(bn.weight.abs().min() > 0 for bn in d.modules() if isinstance(bn, nn.BatchNorm2d))


def test_zero_init_residual_refused_for_plain_nets() -> None:
    with pytest.raises(ValueError):
        resnet.plain18(zero_init_residual=True)


def test_weight_init() -> None:
    """Convs: He normal, fan_out (arXiv:1502.01852); BN 1/0; fc: N(0, 0.01), bias 0 (our
    choice, the paper does not state it)."""
    torch.manual_seed(0)
    m = resnet.resnet18(num_classes=1000)
    w = m.layer3[1].conv2.weight  # 256x256x3x3: fan_out = 256*9
    assert abs(w.std().item() - (2 / (256 * 9)) ** 0.5) < 0.02 * (2 / (256 * 9)) ** 0.5
    for bn in (b for b in m.modules() if isinstance(b, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert abs(m.fc.weight.std().item() - 0.01) < 0.0005
    assert torch.equal(m.fc.bias, torch.zeros_like(m.fc.bias))
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d))


def test_resnet_constructor_options() -> None:
    m = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=7, width=4, in_channels=1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    with pytest.raises(TypeError):  # options are keyword-only
        resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], 7)  # type: ignore[misc]
