"""ResNet, written to be read against its paper.

He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition". arXiv:1512.03385 (2015).

Weight init from He, Zhang, Ren, Sun. "Delving Deep into Rectifiers: Surpassing Human-Level
Performance on ImageNet Classification". arXiv:1502.01852 (2015).
Optional zero-init of the last BN in each residual branch from Goyal et al. "Accurate, Large
Minibatch SGD: Training ImageNet in 1 Hour". arXiv:1706.02677 (2017).

The file follows the paper: the shortcuts (Sec. 3.3, options A/B/C of Table 3), the two residual
blocks (Sec. 3.3, Fig. 5), Table 1 as data, the network (Sec. 3.4) and its init, then the builders.
The plain baselines of Sec. 4.1 are the same networks with ``residual=False``.

Deviations / options, each named again where it happens:
- ``stride_in_1x1=False`` moves the bottleneck's stride from the first 1x1 (the paper and its
  Caffe release) to the 3x3, as torchvision's "ResNet v1.5" does. Default is the paper.
- The fc initialisation is not stated by the paper; see ``ResNet._init_weights``.
- The default ``shortcut="B"`` projects every shortcut that changes shape -- also for
  ResNet-18/34, whose plain-vs-residual comparison (Sec. 4.1, Table 2, Fig. 4) the paper ran with
  option A (zero padding, no extra parameters). Pass ``shortcut="A"`` to reproduce it.
"""

from __future__ import annotations

from typing import Callable, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 conv, padding 1, no bias (a BN follows every conv, Sec. 3.4)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 conv, no bias (a BN follows every conv, Sec. 3.4)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


# Table 3: the shortcut options compared on ResNet-34; A and B from Sec. 3.3, C from Sec. 4.1.
SHORTCUT_OPTIONS = {
    "A": "zero-padding for increasing dimensions, all shortcuts parameter-free",
    "B": "projections for increasing dimensions, other shortcuts identity",
    "C": "all shortcuts are projections",
}


def projection(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """Projection shortcut W_s x of Eq. 2: a strided 1x1 conv + BN (Sec. 3.3, options B, C)."""
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class ZeroPadShortcut(nn.Module):
    """Option A (Sec. 3.3): "the shortcut still performs identity mapping, with extra zero entries
    padded for increasing dimensions ... when the shortcuts go across feature maps of two sizes,
    they are performed with a stride of 2". No parameters, no multiply-adds.

    The paper does not say where the zeros go; we append them after the input's channels.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"option A can only add channels, not go {in_ch} -> {out_ch}")
        self.extra, self.stride = out_ch - in_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W)
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)  every s-th position
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))  # (B, C_out, H/s, W/s)  new channels = 0

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra}, stride={self.stride}"


def check_shortcut_option(option: str) -> None:
    if option not in SHORTCUT_OPTIONS:
        raise ValueError(f"shortcut must be one of {', '.join(SHORTCUT_OPTIONS)} (Table 3), "
                         f"got {option!r}")


def make_shortcut(in_ch: int, out_ch: int, stride: int, option: str) -> nn.Module | None:
    """The shortcut of a residual block under Table 3's ``option``; None is the identity."""
    check_shortcut_option(option)
    changes_shape = stride != 1 or in_ch != out_ch
    if option == "C":  # Table 3 (C): every shortcut is a projection
        return projection(in_ch, out_ch, stride)
    if not changes_shape:  # Eq. 1: identity where the shapes match (A and B)
        return None
    if option == "A":  # Table 3 (A): zero-pad and subsample, parameter-free
        return ZeroPadShortcut(in_ch, out_ch, stride)
    return projection(in_ch, out_ch, stride)  # Table 3 (B): Eq. 2 where the shape changes


class BasicBlock(nn.Module):
    """Two 3x3 convs (Fig. 5 left), used by ResNet-18/34.

    Computes y = relu(F(x) + x) (Eq. 1), or relu(F(x) + W_s x) (Eq. 2) where the shape changes.
    With ``residual=False`` it is two layers of the plain network (Sec. 4.1): y = relu(F(x)).
    """

    expansion = 1  # output channels = expansion * planes (Table 1)

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        *,
        residual: bool = True,
        shortcut: str = "B",  # Table 3 option, see make_shortcut
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.residual = residual
        # Sec. 3.3: "downsampling directly by convolutional layers that have a stride of 2"
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)  # last BN of the branch: zero-init target (Goyal 5.1)
        # Sec. 3.3: identity where shapes match; where they do not, zero padding (option A) or
        # a projection (option B); option C projects everywhere (Table 3).
        # Plain nets (residual=False) have no shortcut, so no projection parameters either.
        self.shortcut = make_shortcut(in_ch, out_ch, stride, shortcut) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W)
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, C_out, H/s, W/s)  = F(x)
        if self.residual:
            identity = x if self.shortcut is None else self.shortcut(x)  # (B, C_out, H/s, W/s)
            out = out + identity  # Eq. 1 (identity, option A) / Eq. 2 (projection)
        return F.relu(out)  # second nonlinearity after the addition (Sec. 3.2, Fig. 2)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (Fig. 5 right), used by ResNet-50/101/152 (Sec. 4.1).

    The expand 1x1 restores 4x the width, so a stage of ``planes`` outputs ``4 * planes``.
    """

    expansion = 4  # Table 1: e.g. conv2_x is [1x1, 64; 3x3, 64; 1x1, 256]

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        *,
        residual: bool = True,
        stride_in_1x1: bool = True,
        shortcut: str = "B",  # Table 3 option; the paper uses B for 50/101/152 (Sec. 4.1)
    ) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.residual = residual
        # The paper (Sec. 3.3, "performed by conv3_1, conv4_1, and conv5_1 with a stride of 2")
        # and its released Caffe model put the stride on the first 1x1 conv.
        # DEVIATION when stride_in_1x1=False: torchvision's "ResNet v1.5" strides the 3x3
        # instead; the 3x3 then runs at full resolution, so resnet50 costs ~4.1 GMACs, not 3.8.
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_ch, planes, s1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, s3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)  # last BN of the branch: zero-init target (Goyal 5.1)
        # Sec. 4.1 "Deeper Bottleneck Architectures": "We use option B for increasing
        # dimensions"; the first block of conv2_x needs it too (64 -> 256 channels, stride 1).
        # Option A is allowed here (it then pads 64 -> 256 with zeros) but is not the paper's.
        self.shortcut = make_shortcut(in_ch, out_ch, stride, shortcut) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, H, W)
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/s1, W/s1)
        out = F.relu(self.bn2(self.conv2(out)))  # (B, planes, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, 4*planes, H/s, W/s)  = F(x)
        if self.residual:
            identity = x if self.shortcut is None else self.shortcut(x)  # (B, 4*planes, H/s, W/s)
            out = out + identity  # Eq. 1 (identity, option A) / Eq. 2 (projection)
        return F.relu(out)


Block = Union[Type[BasicBlock], Type[Bottleneck]]

# Table 1: block type and number of blocks in conv2_x, conv3_x, conv4_x, conv5_x, by depth.
RESNET_CONFIGS: dict[int, tuple[Block, list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
# Table 1: width (planes) of each stage relative to conv2_x, and its first block's stride.
# conv2_x does not stride: the max pool before it has already halved 112 -> 56.
STAGE_WIDTH_MULT = [1, 2, 4, 8]  # 64, 128, 256, 512 at width=64
STAGE_STRIDES = [1, 2, 2, 2]  # output sizes 56, 28, 14, 7 at 224x224 input


class ResNet(nn.Module):
    """The ImageNet ResNet of Sec. 3.4 / Table 1 (and its plain counterpart, Sec. 4.1)."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        *,
        num_classes: int = 1000,
        residual: bool = True,
        stride_in_1x1: bool = True,
        zero_init_residual: bool = False,
        shortcut: str = "B",
        width: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_shortcut_option(shortcut)  # here too: a plain net builds no shortcut to check it
        if zero_init_residual and not residual:
            # A plain net has no shortcut to carry the signal: zero gamma would zero every block.
            raise ValueError("zero_init_residual needs residual=True")
        self.residual = residual
        # conv1 (Table 1): 7x7, 64, stride 2 -> 112x112; BN after every conv (Sec. 3.4).
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # conv2_x (Table 1) opens with a 3x3 max pool, stride 2 -> 56x56.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        stages: list[nn.Sequential] = []
        in_ch = width
        # Where a bottleneck strides (the paper or v1.5); a basic block has no 1x1 to choose.
        placement = {"stride_in_1x1": stride_in_1x1} if block is Bottleneck else {}
        for n_blocks, mult, stride in zip(layers, STAGE_WIDTH_MULT, STAGE_STRIDES):
            planes = width * mult
            blocks: list[nn.Module] = []
            for i in range(n_blocks):
                # Only the first block of a stage changes the shape (Sec. 3.3).
                blocks.append(
                    block(
                        in_ch,
                        planes,
                        stride if i == 0 else 1,
                        residual=residual,
                        shortcut=shortcut,  # Sec. 3.3 / Table 3: A, B or C; ignored if plain
                        **placement,
                    )
                )
                in_ch = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages  # conv2_x ... conv5_x

        # Table 1, last row: "average pool, 1000-d fc, softmax" (softmax lives in the loss).
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """Explicit init; each choice names its source."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Sec. 3.4 "We initialize the weights as in [13]": He et al. 2015, "Delving Deep
                # into Rectifiers" (arXiv:1502.01852) Sec. 2.2, zero-mean Gaussian with
                # std = sqrt(2 / n) for ReLU nets. We use that section's backward-pass form,
                # n = k*k*c_out (fan_out); the paper notes either form keeps the signal stable.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                # BN starts as the identity map up to normalisation (Ioffe & Szegedy 2015).
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                # The paper does not state the fc init. He init is derived for layers followed
                # by a ReLU; the classifier feeds a softmax instead, so we use a small Gaussian
                # (std 0.01, as for AlexNet's layers, Krizhevsky et al. 2012 Sec. 5) and a zero
                # bias: the initial logits are near 0, the softmax near uniform, and the first
                # loss near ln(num_classes).
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Goyal et al. 2017 (arXiv:1706.02677) Sec. 5.1: gamma = 0 on the last BN of each
            # residual branch, so every block starts as relu(shortcut(x)). Not in He et al.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 224, 224) in the paper
        x = F.relu(self.bn1(self.conv1(x)))  # (B, w, 112, 112)            conv1
        x = self.maxpool(x)  # (B, w, 56, 56)
        x = self.layer1(x)  # (B, w*e, 56, 56)            conv2_x, e = block.expansion
        x = self.layer2(x)  # (B, 2w*e, 28, 28)           conv3_x
        x = self.layer3(x)  # (B, 4w*e, 14, 14)           conv4_x
        x = self.layer4(x)  # (B, 8w*e, 7, 7)             conv5_x
        x = torch.flatten(self.avgpool(x), 1)  # (B, 8w*e)
        return self.fc(x)  # (B, num_classes) logits


def _resnet(depth: int, num_classes: int, **kwargs) -> ResNet:
    block, layers = RESNET_CONFIGS[depth]
    return ResNet(block, layers, num_classes=num_classes, **kwargs)


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18 (Table 1): BasicBlock, [2, 2, 2, 2]."""
    return _resnet(18, num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34 (Table 1, Fig. 3 right): BasicBlock, [3, 4, 6, 3]."""
    return _resnet(34, num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50 (Table 1): Bottleneck, [3, 4, 6, 3]."""
    return _resnet(50, num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-101 (Table 1): Bottleneck, [3, 4, 23, 3]."""
    return _resnet(101, num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-152 (Table 1): Bottleneck, [3, 8, 36, 3]."""
    return _resnet(152, num_classes, **kwargs)


def plain18(num_classes: int = 1000, **kwargs) -> ResNet:
    """Plain-18 (Sec. 4.1, Fig. 4 left): ResNet-18 without shortcuts."""
    return _resnet(18, num_classes, residual=False, **kwargs)


def plain34(num_classes: int = 1000, **kwargs) -> ResNet:
    """Plain-34 (Sec. 4.1, Fig. 3 middle): ResNet-34 without shortcuts."""
    return _resnet(34, num_classes, residual=False, **kwargs)


# Builder by name, so train.py can pick one with a string constant (ARCH = "resnet34").
MODELS: dict[str, Callable[..., ResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "plain18": plain18,
    "plain34": plain34,
}

# --- torchvision's ImageNet weights (PRETRAINED=True in train.py; common/pretrained.py).
# torchvision's ResNets have our names and shapes (option B shortcuts, WIDTH 64). Its bottleneck
# nets are "ResNet v1.5" (stride on the 3x3), so their weights need STRIDE_IN_1X1=False: with the
# paper's placement the same tensors would compute another function. The plain nets have no
# torchvision counterpart.
TORCHVISION: dict[str, str | tuple[str, dict]] = {
    "resnet18": ("resnet18", {"SHORTCUT": "B"}),
    "resnet34": ("resnet34", {"SHORTCUT": "B"}),
    **{f"resnet{d}": (f"resnet{d}", {"SHORTCUT": "B", "STRIDE_IN_1X1": False}) for d in (50, 101, 152)},
}


def from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ResNet state_dict -> ours: the same names (conv1, bn1, layerN.i.conv1, ...,
    fc) but for the projection shortcut, torchvision's ``downsample``."""
    return {k.replace(".downsample.", ".shortcut."): v for k, v in state.items()}

