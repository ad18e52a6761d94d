"""MobileNet v1 and v2, written to be read against their papers.

Howard, Zhu, Chen, Kalenichenko, Wang, Weyand, Andreetto, Adam. "MobileNets: Efficient
Convolutional Neural Networks for Mobile Vision Applications". arXiv:1704.04861 (2017).
Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear
Bottlenecks". arXiv:1801.04381 (2018).

The file follows the papers: v1's depthwise separable block (Sec. 3.1, Fig. 3) and the "Conv
MobileNet" block it replaces (Table 4), v1's Table 1 as data, the width multiplier alpha
(Sec. 3.3; the resolution multiplier rho of Sec. 3.4 is the input size), the v1 network; then
v2's inverted residual with its linear bottleneck (Sec. 3.2-3.3, Table 1, Fig. 4d), v2's Table 2
as data, the v2 network, the shared init, the builders, and the map from torchvision's weights.

Deviations / options, each named again where it happens:
- v1 Table 1 lists the 13th depthwise conv as "s2" on a 7x7 input that stays 7x7: a misprint;
  we use stride 1, as the authors' TF-slim code does (the counts of Tables 6-7 need it too).
- v1's ReLU is the paper's (Fig. 3); the authors' TF-slim code uses ReLU6. v2 uses ReLU6 (Sec. 4).
- v1 channels under alpha: ``int(alpha * c)`` (TF-slim's truncation), at least 1; TF-slim's
  ``min_depth=8`` floor is dropped so the tests can build tiny nets (no paper alpha reaches it).
- v2 channels under a width multiplier: rounded to a multiple of 8 by ``make_divisible``, the
  rule of the authors' TF code (``_make_divisible``); the last 1x1 conv keeps 1280 channels for
  multipliers below 1 (Sec. 4, "Architecture Details"). Dropout 0.2 before v2's classifier
  follows TF-slim and torchvision (the paper states none).
- The init is not stated by either paper; see ``init_weights``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, groups: int = 1,
            act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """kxk conv (no bias) + BN (+ the activation): v1 Sec. 3.1, "all layers are followed by a
    batchnorm and ReLU nonlinearity", except v2's projections, which have no activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


# =============================================================================================
# MobileNet v1 (Howard et al. 2017)


class DepthwiseSeparable(nn.Module):
    """Fig. 3 right: 3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU.

    Sec. 3.1: the depthwise conv "applies a single filter per each input channel" (groups = M),
    the pointwise 1x1 conv combines them into N outputs. Cost (Eq. 5):
    D_K^2 M D_F^2 + M N D_F^2 mult-adds, against D_K^2 M N D_F^2 for a full conv (Eq. 2),
    a ratio of 1/N + 1/D_K^2: 8 to 9 times fewer for 3x3 kernels.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.depthwise = conv_bn(in_ch, in_ch, 3, stride, groups=in_ch)  # one 3x3 filter per channel
        self.pointwise = conv_bn(in_ch, out_ch, 1)  # 1x1: a linear mix of the M channels into N

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, M, H, W)
        return self.pointwise(self.depthwise(x))  # (B, M, H/s, W/s) -> (B, N, H/s, W/s)


class FullConv(nn.Module):
    """Table 4's "Conv MobileNet": the same place in the stack as one full 3x3 conv + BN + ReLU,
    D_K^2 M N D_F^2 mult-adds (Eq. 1-2)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = conv_bn(in_ch, out_ch, 3, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, M, H, W) -> (B, N, H/s, W/s)


# Table 4's comparison as a named choice: what each of the 13 blocks of Table 1 is.
CONV_KINDS: dict[str, type[nn.Module]] = {"depthwise": DepthwiseSeparable, "full": FullConv}

# Table 1, as (output channels of the pointwise conv, stride of the depthwise conv), one row pair
# ("Conv dw / s" + "Conv / s1") per entry; at 224 px the maps are 112, 56, 28, 14, 7.
V1_STEM = (32, 2)  # "Conv / s2, 3x3x3x32": 224 -> 112
V1_BLOCKS: list[tuple[int, int]] = [
    (64, 1),  # 112
    (128, 2), (128, 1),  # 56
    (256, 2), (256, 1),  # 28
    (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),  # 14: "5x" the 512 pair
    (1024, 2),  # 7
    # DEVIATION from the printed table: "Conv dw / s2" on a 7x7 input whose output is 7x7 is a
    # misprint; stride 1 as in the authors' TF-slim mobilenet_v1.py.
    (1024, 1),  # 7
]


def scale_v1(channels: int, alpha: float) -> int:
    """Sec. 3.3 width multiplier: "the number of input channels M becomes alpha M and the number of
    output channels N becomes alpha N". int() truncates as TF-slim's ``depth`` does; at least 1."""
    return max(1, int(channels * alpha))


class MobileNetV1(nn.Module):
    """Table 1: a full 3x3 conv, 13 depthwise separable blocks, average pool, FC, softmax.

    ``alpha`` is the width multiplier (Sec. 3.3); the resolution multiplier rho (Sec. 3.4) is the
    input size itself (224 rho px), which the global average pool lets the same net take.
    ``conv="full"`` is Table 4's Conv MobileNet.
    """

    def __init__(self, *, num_classes: int = 1000, alpha: float = 1.0, conv: str = "depthwise",
                 in_channels: int = 3) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"the width multiplier alpha must be positive (Sec. 3.3), got {alpha}")
        if conv not in CONV_KINDS:
            raise ValueError(f"conv must be one of {', '.join(CONV_KINDS)} (Table 4), got {conv!r}")
        block = CONV_KINDS[conv]
        width, stride = V1_STEM
        in_ch = scale_v1(width, alpha)
        # Table 1, first row: a full convolution ("Conv / s2"), the only one in the net.
        self.stem = conv_bn(in_channels, in_ch, 3, stride)
        blocks: list[nn.Module] = []
        for width, stride in V1_BLOCKS:
            out_ch = scale_v1(width, alpha)
            blocks.append(block(in_ch, out_ch, stride))
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        # Table 1, last rows: "Avg Pool / s1, Pool 7x7", "FC / s1, 1024x1000", "Softmax" (in the loss).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 224 rho, 224 rho); shapes below at rho = 1, alpha = 1
        x = self.stem(x)  # (B, 32, 112, 112)
        x = self.blocks(x)  # (B, 1024, 7, 7)
        x = torch.flatten(self.pool(x), 1)  # (B, 1024)
        return self.fc(x)  # (B, num_classes) logits


# =============================================================================================
# MobileNet v2 (Sandler et al. 2018)


def make_divisible(value: float, divisor: int = 8) -> int:
    """The width rule of the authors' TF code (``_make_divisible`` in slim/nets/mobilenet): the
    nearest multiple of ``divisor``, at least ``divisor``, and never more than 10 % below
    ``value`` (then one ``divisor`` more). torchvision uses the same rule."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """The bottleneck residual block of Table 1 / Fig. 4d (Sec. 3.2-3.3).

    1x1 expansion conv to t*k channels + BN + ReLU6, 3x3 depthwise conv (stride s) + BN + ReLU6,
    then a *linear* 1x1 projection to k' channels + BN: no activation after it (Sec. 3.2,
    "linear bottlenecks": a ReLU on the narrow bottleneck would destroy information). The
    shortcut joins the thin bottlenecks ("inverted" against ResNet's, Sec. 3.3), and only where
    the shapes match: stride 1 and k == k' (Fig. 4d; stride-2 blocks have none).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))  # Table 1: "tk"
        self.use_residual = stride == 1 and in_ch == out_ch
        # t = 1 (the first bottleneck, Table 2) has nothing to expand: no 1x1 conv there, as in
        # the authors' code (Table 1 would add an identity-sized 1x1 conv).
        self.expand = conv_bn(in_ch, hidden, 1, act=nn.ReLU6) if expand_ratio != 1 else None
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        self.project = conv_bn(hidden, out_ch, 1, act=None)  # Sec. 3.2: linear, no ReLU6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, k, H, W)
        out = x if self.expand is None else self.expand(x)  # (B, tk, H, W)
        out = self.depthwise(out)  # (B, tk, H/s, W/s)
        out = self.project(out)  # (B, k', H/s, W/s), linear
        return x + out if self.use_residual else out


# Table 2, rows of (t expansion factor, c output channels, n repeats, s stride of the first).
V2_STEM = (32, 2)  # "conv2d, 224^2 x 3, -, 32, 1, 2": 224 -> 112
V2_BLOCKS: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),  # 112
    (6, 24, 2, 2),  # 56
    (6, 32, 3, 2),  # 28
    (6, 64, 4, 2),  # 14
    (6, 96, 3, 1),  # 14
    (6, 160, 3, 2),  # 7
    (6, 320, 1, 1),  # 7
]
V2_LAST = 1280  # "conv2d 1x1, 7^2 x 320, -, 1280, 1, 1"


class MobileNetV2(nn.Module):
    """Table 2: conv 3x3, 17 bottlenecks, conv 1x1 to 1280, average pool, classifier.

    The classifier is Table 2's "conv2d 1x1, k" on a 1x1 map, written as the Linear it equals.
    ``width`` is the multiplier of Sec. 4 ("Architecture Details"), rounded by ``make_divisible``.
    """

    def __init__(self, *, num_classes: int = 1000, width: float = 1.0, round_to: int = 8,
                 dropout: float = 0.2, in_channels: int = 3) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"the width multiplier must be positive (Sec. 4), got {width}")
        c, stride = V2_STEM
        in_ch = make_divisible(c * width, round_to)
        self.stem = conv_bn(in_channels, in_ch, 3, stride, act=nn.ReLU6)
        blocks: list[nn.Module] = []
        for t, c, n, s in V2_BLOCKS:
            out_ch = make_divisible(c * width, round_to)
            for i in range(n):
                # Table 2: "The first layer of each sequence has a stride s and all others use stride 1."
                blocks.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        # Sec. 4: the width multiplier is applied "to all layers except the very last
        # convolutional layer" when below 1: the 1280 features are kept for small models.
        last = make_divisible(V2_LAST * max(1.0, width), round_to)
        self.last = conv_bn(in_ch, last, 1, act=nn.ReLU6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        # DEVIATION (named): dropout before the classifier, TF-slim's / torchvision's 0.2.
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 224, 224); shapes below at width = 1
        x = self.stem(x)  # (B, 32, 112, 112)
        x = self.blocks(x)  # (B, 320, 7, 7)
        x = self.last(x)  # (B, 1280, 7, 7)
        x = torch.flatten(self.pool(x), 1)  # (B, 1280)
        return self.fc(self.dropout(x))  # (B, num_classes) logits


# =============================================================================================
# Init (both papers are silent)


def init_weights(model: nn.Module) -> None:
    """Explicit init; neither paper states one.

    We use torchvision's MobileNet init (mobilenetv2.py), with BN after every conv: convs He
    normal, fan_out mode (He et al. 2015, arXiv:1502.01852, Sec. 2.2); BN gamma 1, beta 0; the
    classifier N(0, 0.01), bias 0, so the first logits are near 0 and the loss near ln(classes).
    The authors' TF-slim v1 code draws every conv from a truncated normal with std 0.09; with a
    BN after each conv the scale of a conv's init does not change its output, only how fast its
    weights move, so the He form (the same for every model of this project) is kept.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.01)
            nn.init.zeros_(m.bias)


def is_depthwise(module: nn.Module) -> bool:
    """A conv with one filter per input channel (Sec. 3.1), e.g. for a weight-decay rule."""
    return isinstance(module, nn.Conv2d) and module.groups == module.in_channels > 1


# =============================================================================================
# Builders. ``width`` multiplies the variant's own width multiplier (tests build tiny nets with
# it, train.py's WIDTH_MULT sets it): mobilenet_v1(width=0.5) is mobilenet_v1_050().


def mobilenet_v1(num_classes: int = 1000, width: float = 1.0, **kwargs) -> MobileNetV1:
    """1.0 MobileNet-224 (Table 1; Table 6's first row: 4.2 M parameters, 569 M mult-adds)."""
    return MobileNetV1(num_classes=num_classes, alpha=width, **kwargs)


def mobilenet_v1_075(num_classes: int = 1000, width: float = 1.0, **kwargs) -> MobileNetV1:
    """0.75 MobileNet (Table 6: alpha = 0.75, 2.6 M parameters, 325 M mult-adds)."""
    return MobileNetV1(num_classes=num_classes, alpha=0.75 * width, **kwargs)


def mobilenet_v1_050(num_classes: int = 1000, width: float = 1.0, **kwargs) -> MobileNetV1:
    """0.5 MobileNet (Table 6: alpha = 0.5, 1.3 M parameters, 149 M mult-adds)."""
    return MobileNetV1(num_classes=num_classes, alpha=0.5 * width, **kwargs)


def mobilenet_v1_025(num_classes: int = 1000, width: float = 1.0, **kwargs) -> MobileNetV1:
    """0.25 MobileNet (Table 6: alpha = 0.25, 0.5 M parameters, 41 M mult-adds)."""
    return MobileNetV1(num_classes=num_classes, alpha=0.25 * width, **kwargs)


def conv_mobilenet_v1(num_classes: int = 1000, width: float = 1.0, **kwargs) -> MobileNetV1:
    """Table 4's Conv MobileNet: Table 1 with full 3x3 convs (29.3 M parameters, 4866 M mult-adds)."""
    return MobileNetV1(num_classes=num_classes, alpha=width, conv="full", **kwargs)


def mobilenet_v2(num_classes: int = 1000, width: float = 1.0, **kwargs) -> MobileNetV2:
    """MobileNetV2 1.0-224 (Table 2; Table 4: 3.4 M parameters, 300 M MACs)."""
    return MobileNetV2(num_classes=num_classes, width=width, **kwargs)


# Builder by name, so train.py can pick one with a string constant (ARCH = "mobilenet_v1_050").
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v1_075": mobilenet_v1_075,
    "mobilenet_v1_050": mobilenet_v1_050,
    "mobilenet_v1_025": mobilenet_v1_025,
    "conv_mobilenet_v1": conv_mobilenet_v1,
    "mobilenet_v2": mobilenet_v2,
}


# =============================================================================================
# torchvision's ImageNet weights (common/pretrained.py loads them through this map)

# Builders here whose architecture equals a torchvision one (same shapes at default options).
# torchvision has no MobileNet v1.
TORCHVISION: dict[str, str] = {"mobilenet_v2": "mobilenet_v2"}  # our builder -> torchvision.models builder


def _v2_has_expand() -> list[bool]:
    """Per bottleneck of Table 2, in order: whether it has the 1x1 expansion conv (t != 1)."""
    return [t != 1 for t, _, n, _ in V2_BLOCKS for _ in range(n)]


def from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's mobilenet_v2 state_dict -> ours (names only; the tensors are the same).

    torchvision: features.0 (stem), features.1..17 (blocks; inside, ``conv`` holds the expand
    and depthwise conv-BN-ReLU6 triples, then the projection conv and its BN as two entries),
    features.18 (last 1x1), classifier.1 (the Linear after Dropout).
    """
    has_expand = _v2_has_expand()
    last = len(has_expand) + 1
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "classifier":  # classifier.1.weight -> fc.weight
            name = "fc." + ".".join(parts[2:])
        elif parts[0] == "features" and parts[1] == "0":  # features.0.{0,1}.* -> stem.{0,1}.*
            name = "stem." + ".".join(parts[2:])
        elif parts[0] == "features" and int(parts[1]) == last:
            name = "last." + ".".join(parts[2:])
        elif parts[0] == "features" and parts[2] == "conv":  # features.i.conv.j.* -> blocks.(i-1).*
            i, j, rest = int(parts[1]) - 1, int(parts[3]), parts[4:]
            # torchvision's entries in order: conv-BN-ReLU6 triples whole, the projection's conv
            # and BN as two entries (ours: project.0, project.1)
            order = (["expand"] if has_expand[i] else []) + ["depthwise", "project.0", "project.1"]
            name = f"blocks.{i}.{order[j]}." + ".".join(rest)
        else:
            raise KeyError(f"unexpected torchvision mobilenet_v2 key {key!r}")
        out[name] = tensor
    return out


