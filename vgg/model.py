"""VGG, written to be read against its paper.

Simonyan, Zisserman. "Very Deep Convolutional Networks for Large-Scale Image Recognition".
arXiv:1409.1556 (2014; ICLR 2015).

Local response normalisation (net A-LRN) from Krizhevsky, Sutskever, Hinton. "ImageNet
Classification with Deep Convolutional Neural Networks". NeurIPS 2012, Sec. 3.3.
Glorot init from Glorot, Bengio. "Understanding the difficulty of training deep feedforward
neural networks". AISTATS 2010 (allowed by the paper's Sec. 3.1 note).
Batch-norm variants (a later addition, not in the paper) after Ioffe, Szegedy. "Batch
Normalization". arXiv:1502.03167 (2015); He init for them from arXiv:1502.01852 (2015).

The file follows the paper: the layers of Sec. 2.1 (3x3 convs, 2x2 max pools, LRN), Table 1 as
data, the network with its classifier (Sec. 2.1) and dense evaluation (Sec. 3.2), the init of
Sec. 3.1 (random, or the first layers copied from a trained net A), then the builders.

Deviations / options, each named again where it happens:
- ``classifier="pool"`` (default) puts torchvision's adaptive 7x7 average pool before the FC
  layers, so any input of at least 32 px works; the paper's nets see 224 px crops in training
  and, at test time, turn the FC layers into convolutions (``classifier="dense"``, Sec. 3.2).
  Both are the same function at 224 px.
- ``width`` scales every layer's width, FC layers included (1 = the paper), so configurations
  can be compared on a CPU at the same proportions.
- The ``*_bn`` builders add batch norm after every conv (Ioffe & Szegedy 2015), without conv
  biases (torchvision keeps them; BN's shift makes them redundant).
- ``init="normal"`` uses std 0.01, the common reading of Sec. 3.1; the paper's text says
  "10^-2 variance" (std 0.1), see ``VGG._init_weights``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

# --- Sec. 2.1 "Architecture": the layers every configuration is made of.


def conv(in_ch: int, out_ch: int, kernel: int, *, bias: bool = True) -> nn.Conv2d:
    """Sec. 2.1: "the convolution stride is fixed to 1 pixel; the spatial padding ... is 1 pixel
    for 3x3 conv. layers", so the resolution is kept; a 1x1 conv (net C) needs no padding."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=1, padding=kernel // 2, bias=bias)


def max_pool() -> nn.MaxPool2d:
    """Sec. 2.1: "Max-pooling is performed over a 2x2 pixel window, with stride 2"."""
    return nn.MaxPool2d(kernel_size=2, stride=2)


# Krizhevsky et al. 2012, Sec. 3.3: b = a / (k + alpha * sum_{j in n adjacent maps} a_j^2)^beta
# with k = 2, n = 5, alpha = 1e-4, beta = 0.75 ("the parameters for the LRN layer are those of
# (Krizhevsky et al., 2012)", VGG Sec. 2.3).
LRN_K, LRN_N, LRN_ALPHA, LRN_BETA = 2.0, 5, 1e-4, 0.75


def lrn() -> nn.LocalResponseNorm:
    """AlexNet's LRN. torch's LocalResponseNorm divides alpha by n (its denominator is
    k + alpha / n * sum a^2), so we pass n * 1e-4 to get AlexNet's alpha = 1e-4 per term."""
    return nn.LocalResponseNorm(size=LRN_N, alpha=LRN_N * LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


# --- Table 1: the configurations, one column each, as data.
# An int n is "conv3-n" (3x3, n channels), (n, 1) is "conv1-n" (1x1, net C only), "LRN" is
# AlexNet's local response normalisation (net A-LRN only), "M" is "maxpool". Every conv is
# followed by a ReLU (Sec. 2.1), not written in the table.
Entry = Union[int, tuple[int, int], str]
VGG_CONFIGS: dict[str, list[Entry]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}
FC_WIDTH = 4096  # Sec. 2.1: "the first two have 4096 channels each, the third ... 1000"
FC_INPUT_SIDE = 7  # 224 px / 2^5 max pools: fc6 reads a 7x7 map (512 x 7 x 7 inputs)
CLASSIFIERS = ("pool", "dense")
INITS = ("normal", "glorot", "kaiming")

# Sec. 3.1, "Initialisation": "we initialised the first four convolutional layers and the last
# three fully-connected layers with the layers of net A". A's first four convs are conv1_1,
# conv2_1, conv3_1 and conv3_2 (Caffe's names, which the authors' released models use); the
# layers of those names in B, C, D and E have the same shapes, so they are the ones copied.
A_LAYERS = ("features.conv1_1", "features.conv2_1", "features.conv3_1", "features.conv3_2",
            "classifier.fc6", "classifier.fc7", "classifier.fc8")


def scaled(channels: int, width: float) -> int:
    """A layer's width under the width multiplier (at least one channel)."""
    return max(1, round(channels * width))


def make_features(config: list[Entry], *, batch_norm: bool, width: float,
                  in_channels: int = 3) -> nn.Sequential:
    """The convolutional part of a Table 1 column, named as in the authors' Caffe models:
    conv<stage>_<i>, relu<stage>_<i>, norm1 (LRN), pool<stage> (bn<stage>_<i> with batch norm)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    stage, i, ch = 1, 1, in_channels
    for entry in config:
        if entry == "M":
            layers[f"pool{stage}"] = max_pool()
            stage, i = stage + 1, 1
        elif entry == "LRN":
            # Table 1, A-LRN: after conv1_1 (and its ReLU, the order of Krizhevsky et al. Sec. 3.3)
            layers[f"norm{stage}"] = lrn()
        else:
            out, kernel = entry if isinstance(entry, tuple) else (entry, 3)
            out = scaled(out, width)
            name = f"{stage}_{i}"
            # Batch norm (not in the paper): no conv bias, BN's beta takes its place.
            layers[f"conv{name}"] = conv(ch, out, kernel, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{name}"] = nn.BatchNorm2d(out)
            layers[f"relu{name}"] = nn.ReLU(inplace=True)  # Sec. 2.1: ReLU after every conv
            ch, i = out, i + 1
    return nn.Sequential(layers)


class VGG(nn.Module):
    """A Table 1 network: the conv stack, then FC-4096, FC-4096, FC-classes (Sec. 2.1)."""

    def __init__(
        self,
        config: list[Entry],
        *,
        num_classes: int = 1000,
        batch_norm: bool = False,
        width: float = 1.0,
        dropout: float = 0.5,
        classifier: str = "pool",
        init: str = "normal",
        init_std: float = 0.01,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {classifier!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)} (Sec. 3.1), got {init!r}")
        self.features = make_features(config, batch_norm=batch_norm, width=width, in_channels=in_channels)
        ch = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.dense = classifier == "dense"
        # DEVIATION (classifier="pool", the default): torchvision's adaptive average pool to the
        # 7x7 map fc6 was made for. At 224 px it is the identity; smaller inputs (e.g. 64 px on a
        # CPU, a 2x2 map) have their map stretched to 7x7, larger ones averaged down to it. The
        # paper instead trains on 224 crops only and evaluates densely (classifier="dense").
        self.avgpool = nn.AdaptiveAvgPool2d(FC_INPUT_SIDE)
        fc = scaled(FC_WIDTH, width)  # the width multiplier scales the FC layers too
        # Sec. 2.1 "three Fully-Connected (FC) layers ... the final layer is the soft-max layer"
        # (the softmax lives in the loss); Sec. 3.1: dropout 0.5 on the first two FC layers.
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(ch * FC_INPUT_SIDE ** 2, fc)),
            ("relu6", nn.ReLU(inplace=True)),
            ("drop6", nn.Dropout(dropout)),
            ("fc7", nn.Linear(fc, fc)),
            ("relu7", nn.ReLU(inplace=True)),
            ("drop7", nn.Dropout(dropout)),
            ("fc8", nn.Linear(fc, num_classes)),
        ]))
        self._init_weights(init, init_std)

    def _init_weights(self, init: str, std: float) -> None:
        """Explicit init; each choice names its source. Biases start at zero in all three."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if init == "normal":
                    # Sec. 3.1: "we sampled the weights from a normal distribution with the zero
                    # mean and 10^-2 variance. The biases were initialised with zero." Read
                    # literally that is std 0.1; std 0.01 is the reading reimplementations use
                    # (torchvision initialises its VGG linear layers so), and the
                    # default here. Either way the signal shrinks or grows by a constant factor
                    # per layer, which is why deeper nets were started from net A's weights.
                    nn.init.normal_(m.weight, mean=0.0, std=std)
                elif init == "glorot":
                    # Sec. 3.1 note: "it is possible to initialise the weights without
                    # pre-training by using the random initialisation procedure of Glorot &
                    # Bengio (2010)": their normalised init, U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
                    nn.init.xavier_uniform_(m.weight)
                elif isinstance(m, nn.Conv2d):  # init == "kaiming"; not in the paper
                    # He et al. 2015 (arXiv:1502.01852) Sec. 2.2, std sqrt(2 / fan_out), derived
                    # for ReLU nets (their Fig. 3: a 30-layer plain net trains from scratch with
                    # it and stalls with Glorot's); torchvision's VGG init.
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:  # init == "kaiming", FC layers: torchvision's N(0, 0.01)
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                # BN starts as the identity map up to normalisation (Ioffe & Szegedy 2015).
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 224, 224) in the paper
        x = self.features(x)  # (B, 512w, H/32, W/32): 7x7 at 224 px
        if self.dense:
            return self.dense_scores(x).mean(dim=(2, 3))  # (B, classes)  Sec. 3.2 averaging
        x = torch.flatten(self.avgpool(x), 1)  # (B, 512w * 7 * 7)
        return self.classifier(x)  # (B, num_classes) logits

    def dense_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Sec. 3.2 dense evaluation: "the fully-connected layers are first converted to
        convolutional layers (the first FC layer to a 7x7 conv. layer, the last two FC layers to
        1x1 conv. layers)", applied to the whole feature map; returns the class score map."""
        # x: (B, C, h, w) feature map, h, w >= 7 (inputs of at least 224 px)
        if min(x.shape[-2:]) < FC_INPUT_SIDE:
            raise ValueError(f"the dense classifier (Sec. 3.2) needs a feature map of at least "
                             f"{FC_INPUT_SIDE}x{FC_INPUT_SIDE}, i.e. inputs of at least 224 px; got "
                             f"{tuple(x.shape[-2:])}")
        fc6, fc7, fc8 = self.classifier.fc6, self.classifier.fc7, self.classifier.fc8
        # fc6's inputs are the flattened (C, 7, 7) map, so its rows are 7x7 filters as they are.
        w6 = fc6.weight.view(fc6.out_features, -1, FC_INPUT_SIDE, FC_INPUT_SIDE)
        x = self.classifier.drop6(F.relu(F.conv2d(x, w6, fc6.bias)))  # (B, 4096w, h-6, w-6)
        x = self.classifier.drop7(F.relu(F.conv2d(x, fc7.weight[:, :, None, None], fc7.bias)))
        return F.conv2d(x, fc8.weight[:, :, None, None], fc8.bias)  # (B, classes, h-6, w-6)


# --- Sec. 3.1: deeper nets started from a trained net A.


def copy_from_a(model: VGG, state: dict[str, torch.Tensor], *, check_only: bool = False,
                ignore_classes: bool = False) -> list[str]:
    """Copy A_LAYERS (and their batch norms) from net A's ``state`` into ``model``; the other
    layers keep their random init (Sec. 3.1, "the intermediate layers were initialised
    randomly"). Returns the state keys copied; ValueError names the first key that is missing
    or has another shape. ``check_only`` compares without copying (e.g. on the meta device);
    ``ignore_classes`` skips fc8's class count (when the dataset is not known yet)."""
    own = model.state_dict()
    bn = [f"features.bn{n.removeprefix('features.conv')}" for n in A_LAYERS if n.startswith("features.conv")]
    prefixes = tuple(f"{n}." for n in (*A_LAYERS, *bn))
    keys = [k for k in own if k.startswith(prefixes)]
    for k in keys:
        if k not in state:
            raise ValueError(f"net A's weights lack {k}")
        have, want = tuple(state[k].shape), tuple(own[k].shape)
        if ignore_classes and k.startswith("classifier.fc8."):
            have, want = have[1:], want[1:]  # (classes, 4096w) and (classes,): the rows aside
        if have != want:
            raise ValueError(f"{k} has shape {tuple(state[k].shape)} there and {tuple(own[k].shape)} here")
    if not check_only:
        with torch.no_grad():
            for k in keys:
                own[k].copy_(state[k])  # state_dict() tensors share storage with the model
    return keys


# --- builders: one per Table 1 column (names as torchvision's), then the batch-norm variants.


def _vgg(config: str, num_classes: int, **kwargs) -> VGG:
    return VGG(VGG_CONFIGS[config], num_classes=num_classes, **kwargs)


def vgg11(num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration A (Table 1): 11 weight layers, 133M parameters (Table 2)."""
    return _vgg("A", num_classes, **kwargs)


def vgg11_lrn(num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration A-LRN (Table 1): A with AlexNet's LRN after conv1_1, 133M parameters."""
    return _vgg("A-LRN", num_classes, **kwargs)


def vgg13(num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration B (Table 1): 13 weight layers, 133M parameters."""
    return _vgg("B", num_classes, **kwargs)


def vgg16_1x1(num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration C (Table 1): 16 weight layers, the last conv of stages 3-5 is 1x1; 134M."""
    return _vgg("C", num_classes, **kwargs)


def vgg16(num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration D (Table 1): 16 weight layers, all 3x3; 138M parameters."""
    return _vgg("D", num_classes, **kwargs)


def vgg19(num_classes: int = 1000, **kwargs) -> VGG:
    """Configuration E (Table 1): 19 weight layers; 144M parameters."""
    return _vgg("E", num_classes, **kwargs)


def vgg11_bn(num_classes: int = 1000, **kwargs) -> VGG:
    """A with batch norm after every conv (Ioffe & Szegedy 2015; not in the paper)."""
    return _vgg("A", num_classes, batch_norm=True, **kwargs)


def vgg13_bn(num_classes: int = 1000, **kwargs) -> VGG:
    """B with batch norm after every conv (Ioffe & Szegedy 2015; not in the paper)."""
    return _vgg("B", num_classes, batch_norm=True, **kwargs)


def vgg16_bn(num_classes: int = 1000, **kwargs) -> VGG:
    """D with batch norm after every conv (Ioffe & Szegedy 2015; not in the paper)."""
    return _vgg("D", num_classes, batch_norm=True, **kwargs)


def vgg19_bn(num_classes: int = 1000, **kwargs) -> VGG:
    """E with batch norm after every conv (Ioffe & Szegedy 2015; not in the paper)."""
    return _vgg("E", num_classes, batch_norm=True, **kwargs)


# Builder by name, so train.py can pick one with a string constant (ARCH = "vgg16").
MODELS: dict[str, Callable[..., VGG]] = {
    "vgg11": vgg11,
    "vgg11_lrn": vgg11_lrn,
    "vgg13": vgg13,
    "vgg16_1x1": vgg16_1x1,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "vgg11_bn": vgg11_bn,
    "vgg13_bn": vgg13_bn,
    "vgg16_bn": vgg16_bn,
    "vgg19_bn": vgg19_bn,
}
# Table 1's column of each builder (for train.py's INIT_FROM check and the tests).
CONFIG_OF = {"vgg11": "A", "vgg11_lrn": "A-LRN", "vgg13": "B", "vgg16_1x1": "C", "vgg16": "D", "vgg19": "E",
             "vgg11_bn": "A", "vgg13_bn": "B", "vgg16_bn": "D", "vgg19_bn": "E"}

# --- torchvision's ImageNet weights (PRETRAINED=True in train.py; common/pretrained.py).
# torchvision's VGGs (A, B, D, E and their BN variants; no A-LRN, no C) hold our layers in the
# same order, numbered (features.0, classifier.0) where we name them (features.conv1_1,
# classifier.fc6). With batch norm torchvision's convs keep a bias, which ours drop (BN's beta
# does its work): it is folded into BN's running mean, BN(conv(x) + b) = BN'(conv(x)) with
# mean' = mean - b, exact at evaluation; in training BN subtracts the batch mean, so b never
# mattered there either.
TORCHVISION: dict[str, str | tuple[str, dict]] = {
    name: name for name, config in CONFIG_OF.items() if config in ("A", "B", "D", "E")}
_CONFIG_OF_CONVS = {8: "A", 10: "B", 13: "D", 16: "E"}  # conv layers per column of Table 1


def from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's VGG state_dict (configuration read from its layers) -> ours."""
    state = dict(state)
    convs = [k[: -len(".weight")] for k, v in state.items() if k.startswith("features.") and v.ndim == 4]
    batch_norm = any(k.endswith("running_mean") for k in state)
    if batch_norm:
        for conv in convs:  # each conv's BN is the next module: features.i -> features.(i+1)
            i = int(conv.split(".")[1])
            state[f"features.{i + 1}.running_mean"] = state[f"features.{i + 1}.running_mean"] - state.pop(f"{conv}.bias")
    with torch.device("meta"):
        ours = _vgg(_CONFIG_OF_CONVS[len(convs)], 1000, batch_norm=batch_norm)
    return dict(zip(ours.state_dict(), state.values()))  # same order, our names

