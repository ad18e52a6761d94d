"""AlexNet, written to be read against its paper.

Krizhevsky, Sutskever, Hinton. "ImageNet Classification with Deep Convolutional Neural
Networks". NeurIPS 2012 (no arXiv id; proceedings.neurips.cc, paper 4824).

The one-tower variant that torchvision ships ("alexnet_2014") is from Krizhevsky. "One weird
trick for parallelizing convolutional neural networks". arXiv:1404.5997 (2014).

The file follows the paper: the nonlinearity (Sec. 3.1, Fig. 1), local response normalisation
(Sec. 3.3), the layers of Sec. 3.5 / Fig. 2 as data (with the two-GPU split of Sec. 3.2 and the
overlapping pooling of Sec. 3.4 as columns), dropout (Sec. 4.2), the network, its init (Sec. 5),
then the builders.

Deviations / options, each named again where it happens:
- Input 227x227, not the paper's "224x224x3": with an 11x11 stride-4 unpadded conv1 only
  227 gives the 55x55 maps of Fig. 2 ((227 - 11) / 4 + 1 = 55); a known erratum.
- An adaptive average pool to 6x6 before fc6 (as torchvision has). At 227 px the last map is
  already 6x6 and the pool is the identity, so the paper's network is unchanged there; at
  other sizes fc6 keeps its 9216 inputs. The smallest input is ``min_input_size`` (67 px for
  the paper's layers, 63 for the 2014 ones): below it a max pool would get less than 3x3.
- ``towers=2`` (the paper's "alexnet") keeps the two-GPU connectivity on one device: grouped
  convs for the layers that see only their own GPU's maps, and the response normalisation per
  tower. ``towers=1`` ("alexnet_one_tower") connects every layer to all of the previous one.
- ``width`` scales every layer's channels and the hidden fully connected layers (1 = the paper),
  for CPU-sized experiments; not in the paper.
- ``activation="tanh"`` swaps every ReLU for tanh: the Fig. 1 comparison on this network.
- ``init="torch"``: PyTorch's default layer init (what torchvision's alexnet has) instead of
  Sec. 5's; the default of ``alexnet_2014``. ``init="kaiming"``: He et al.'s (arXiv:1502.01852)
  for the chosen nonlinearity, not in the paper; what the modern recipe and the Fig. 1 re-run use.
- Dropout sits after the ReLUs of fc6 and fc7 (Sec. 4.2: the outputs of the hidden neurons are
  dropped); torchvision puts it before fc6 and fc7 instead. Same parameters either way.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, NamedTuple

import torch
import torch.nn as nn


# --- Sec. 3.1 and Fig. 1: "Rectified Linear Units (ReLUs)" f(x) = max(0, x), against the
# saturating tanh f(x) = tanh(x). The option exists for the Fig. 1 comparison.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
}


# --- Sec. 3.3, "Local Response Normalization": b^i = a^i / (k + alpha * sum_j (a^j)^2)^beta, the
# sum over the n channels adjacent to i, j from max(0, i - n/2) to min(N - 1, i + n/2).
LRN_K, LRN_N, LRN_ALPHA, LRN_BETA = 2.0, 5, 1e-4, 0.75  # "k = 2, n = 5, alpha = 10^-4, beta = 0.75"


class TowerLRN(nn.Module):
    """Sec. 3.3's response normalisation, done separately within each tower (Sec. 3.2).

    In the two-GPU net each GPU normalises its own kernel maps: a channel's n neighbours never
    include the other GPU's channels. With ``towers=1`` this is one LRN over all channels.
    """

    def __init__(self, towers: int = 1) -> None:
        super().__init__()
        self.towers = towers
        # torch's LocalResponseNorm divides alpha by the size n (b = a / (k + alpha/n * sum)^beta),
        # the paper does not: alpha = n * 1e-4 here is the paper's alpha = 1e-4.
        self.lrn = nn.LocalResponseNorm(size=LRN_N, alpha=LRN_N * LRN_ALPHA, beta=LRN_BETA, k=LRN_K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W), the towers' channels one after the other (C/towers each)
        if self.towers == 1:
            return self.lrn(x)
        return torch.cat([self.lrn(t) for t in x.chunk(self.towers, dim=1)], dim=1)  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"towers={self.towers}"


# --- Sec. 3.5 and Fig. 2: the five convolutional layers, as data.
class ConvSpec(NamedTuple):
    out_channels: int  # both GPUs together (Fig. 2 draws 48 + 48 for conv1)
    kernel: int
    stride: int
    padding: int  # not in the paper; what makes Fig. 2's map sizes (55, 27, 13, 13, 13 at 227)
    split: bool  # Sec. 3.2: sees only the kernel maps on its own GPU (groups=2 in the two-tower net)
    lrn: bool  # Sec. 3.5: "Response-normalization layers follow the first and second conv layers"
    pool: bool  # Sec. 3.4/3.5: an overlapping max pool follows (conv1, conv2, conv5)


# Sec. 3.5: "The first convolutional layer filters the 224x224x3 input image with 96 kernels of
# size 11x11x3 with a stride of 4 pixels ... The second ... 256 kernels of size 5x5x48. The third,
# fourth, and fifth ... The third ... 384 kernels of size 3x3x256 ..., the fourth ... 384 kernels
# of size 3x3x192, and the fifth ... 256 kernels of size 3x3x192." The x48 and x192 depths are
# the two-GPU split (Sec. 3.2): "the kernels of layer 3 take input from all kernel maps in layer
# 2. However, kernels in layer 4 take input only from those kernel maps in layer 3 which reside
# on the same GPU."
ALEXNET_CONFIGS: dict[str, list[ConvSpec]] = {
    "paper": [
        ConvSpec(96, 11, 4, 0, split=False, lrn=True, pool=True),  # conv1: 227 -> 55 -> pool 27
        ConvSpec(256, 5, 1, 2, split=True, lrn=True, pool=True),  # conv2: 27 -> pool 13
        ConvSpec(384, 3, 1, 1, split=False, lrn=False, pool=False),  # conv3: 13, sees both GPUs
        ConvSpec(384, 3, 1, 1, split=True, lrn=False, pool=False),  # conv4: 13
        ConvSpec(256, 3, 1, 1, split=True, lrn=False, pool=True),  # conv5: 13 -> pool 6
    ],
    # arXiv:1404.5997 Sec. 3 (one GPU's column, torchvision's alexnet): 64-192-384-256-256
    # kernels, no response normalisation, a padded conv1 on 224 px (224 -> 55).
    "2014": [
        ConvSpec(64, 11, 4, 2, split=False, lrn=False, pool=True),
        ConvSpec(192, 5, 1, 2, split=False, lrn=False, pool=True),
        ConvSpec(384, 3, 1, 1, split=False, lrn=False, pool=False),
        ConvSpec(256, 3, 1, 1, split=False, lrn=False, pool=False),
        ConvSpec(256, 3, 1, 1, split=False, lrn=False, pool=True),
    ],
}
# Sec. 3.4, "Overlapping Pooling": s = 2, z = 3 (z > s: neighbouring windows overlap).
POOL_SIZE, POOL_STRIDE = 3, 2
# Sec. 3.5: "The fully-connected layers have 4096 neurons each", then the 1000-way softmax.
FC_HIDDEN = [4096, 4096]  # fc6, fc7
FC_INPUT_SIDE = 6  # Fig. 2: conv5's pooled output is 6x6 (x 256) = 9216 inputs of fc6
DROPOUT = 0.5  # Sec. 4.2: "setting to zero the output of each hidden neuron with probability 0.5"
# Sec. 5: "We initialized the weights in each layer from a zero-mean Gaussian distribution with
# standard deviation 0.01. We initialized the neuron biases in the second, fourth, and fifth
# convolutional layers, as well as in the fully-connected hidden layers, with the constant 1 ...
# We initialized the neuron biases in the remaining layers with the constant 0."
INIT_STD = 0.01
BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")
INITS = {
    "paper": "Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, else 0",
    "torch": "PyTorch's default layer init (kaiming-uniform, a = sqrt(5)), as torchvision's alexnet",
    "kaiming": "He et al. 2015: N(0, gain^2 / fan_in), gain sqrt(2) (ReLU) or 5/3 (tanh); fc8 N(0, 0.01); biases 0",
}


def min_input_size(config: list[ConvSpec]) -> int:
    """The smallest square input ``config`` takes: every max pool needs at least a 3x3 map.

    Walks the layers backwards, inverting out = (in + 2 * pad - kernel) // stride + 1.
    """
    side = 1  # the last pool's output
    for spec in reversed(config):
        if spec.pool:
            side = (side - 1) * POOL_STRIDE + POOL_SIZE
        side = (side - 1) * spec.stride + spec.kernel - 2 * spec.padding
    return side


def scaled(channels: int, width: float, groups: int = 1) -> int:
    """``channels * width``, rounded to a multiple of ``groups`` (each tower gets as many), at
    least one per group."""
    return max(groups, groups * round(channels * width / groups))


class AlexNet(nn.Module):
    """The network of Sec. 3.5 / Fig. 2: five conv layers, three fully connected."""

    def __init__(
        self,
        config: list[ConvSpec],
        *,
        num_classes: int = 1000,
        towers: int = 2,
        activation: str = "relu",
        dropout: float = DROPOUT,
        width: float = 1.0,
        init: str = "paper",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if towers not in (1, 2):
            raise ValueError(f"towers must be 1 or 2 (Sec. 3.2: two GPUs), got {towers}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} (Sec. 3.1), got {activation!r}")
        if not width > 0:
            raise ValueError(f"width must be > 0 (1 = the paper), got {width}")
        if init not in INITS:
            raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.towers, self.activation = towers, activation

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_ch = in_channels
        for i, spec in enumerate(config, start=1):
            # Sec. 3.2: a split layer's kernels see only their own GPU's half of the maps.
            groups = towers if spec.split else 1
            out_ch = scaled(spec.out_channels, width, towers)  # every map count splits in two
            layers[f"conv{i}"] = nn.Conv2d(in_ch, out_ch, spec.kernel, spec.stride, spec.padding,
                                           groups=groups)
            layers[f"act{i}"] = ACTIVATIONS[activation]()  # Sec. 3.5: after every layer
            if spec.lrn:
                layers[f"norm{i}"] = TowerLRN(towers)  # Sec. 3.5: after the nonlinearity
            if spec.pool:
                layers[f"pool{i}"] = nn.MaxPool2d(POOL_SIZE, POOL_STRIDE)  # Sec. 3.4, overlapping
            in_ch = out_ch
        self.features = nn.Sequential(layers)
        # DEVIATION (not in the paper, as torchvision): any input >= min_input_size gives fc6 its
        # 6x6 map; the identity at the native 227 px (2014 variant: 224 px).
        self.avgpool = nn.AdaptiveAvgPool2d(FC_INPUT_SIDE)

        fc: OrderedDict[str, nn.Module] = OrderedDict()
        in_features = in_ch * FC_INPUT_SIDE**2
        for i, hidden in enumerate(FC_HIDDEN, start=6):
            # Sec. 3.2: "The neurons in the fully-connected layers are connected to all neurons in
            # the previous layer": no split here.
            fc[f"fc{i}"] = nn.Linear(in_features, scaled(hidden, width))
            fc[f"act{i}"] = ACTIVATIONS[activation]()
            fc[f"drop{i}"] = nn.Dropout(dropout)  # Sec. 4.2: "in the first two fully-connected layers"
            in_features = scaled(hidden, width)
        fc["fc8"] = nn.Linear(in_features, num_classes)  # softmax lives in the loss
        self.classifier = nn.Sequential(fc)

        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        """Sec. 5 (``init="paper"``); PyTorch's default layer init (``"torch"``: kaiming-uniform
        weights with a = sqrt(5) and uniform biases, what torchvision's AlexNet keeps); or
        ``"kaiming"``, not in the paper (below)."""
        if init == "torch":
            return  # nn.Conv2d / nn.Linear initialised themselves so at construction
        layers = [(n, m) for n, m in (*self.features.named_children(), *self.classifier.named_children())
                  if isinstance(m, (nn.Conv2d, nn.Linear))]
        for name, m in layers:
            if init == "paper":
                nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)  # Sec. 5: N(0, 0.01) everywhere
                # Sec. 5: bias 1 in conv2, conv4, conv5, fc6, fc7 ("accelerates the early stages of
                # learning by providing the ReLUs with positive inputs"), 0 in conv1, conv3, fc8.
                nn.init.constant_(m.bias, 1.0 if name in BIAS_ONE else 0.0)
                continue
            # init="kaiming", not the paper: He et al. 2015 ("Delving Deep into Rectifiers",
            # arXiv:1502.01852, Sec. 2.2) keep the signal's scale through every layer with
            # std = gain / sqrt(fan_in), the nonlinearity's gain (sqrt(2) for ReLU, torch's 5/3 for
            # tanh). Sec. 5's fixed N(0, 0.01) shrinks the signal at every layer of a narrow net,
            # which then sits at chance for epochs (measured at width 0.25, see README). fc8 feeds
            # the softmax: N(0, 0.01), so that the first loss is near ln(num_classes).
            if name == "fc8":
                nn.init.normal_(m.weight, mean=0.0, std=INIT_STD)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=self.activation)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 3, 227, 227) in the paper; shapes below for the paper's layers at width 1
        x = self.features(x)  # conv1 (B, 96, 55, 55) -> pool (B, 96, 27, 27) -> conv2 (B, 256, 27, 27)
        #                        -> pool (B, 256, 13, 13) -> conv3..5 (B, 384|384|256, 13, 13) -> pool (B, 256, 6, 6)
        x = torch.flatten(self.avgpool(x), 1)  # (B, 9216)
        return self.classifier(x)  # fc6 (B, 4096) -> fc7 (B, 4096) -> fc8 (B, num_classes) logits


def alexnet(num_classes: int = 1000, **kwargs) -> AlexNet:
    """The paper's network (Fig. 2): two towers, as trained on two GPUs; 60,965,224 parameters at
    1000 classes (Sec. 3: "60 million parameters")."""
    return AlexNet(ALEXNET_CONFIGS["paper"], num_classes=num_classes, towers=2, **kwargs)


def alexnet_one_tower(num_classes: int = 1000, **kwargs) -> AlexNet:
    """The paper's layers with every layer connected to all of the previous one (one GPU, no
    split): 62,378,344 parameters at 1000 classes."""
    return AlexNet(ALEXNET_CONFIGS["paper"], num_classes=num_classes, towers=1, **kwargs)


def alexnet_2014(num_classes: int = 1000, **kwargs) -> AlexNet:
    """arXiv:1404.5997's one-tower net as torchvision's ``alexnet``: 64-192-384-256-256 kernels,
    no LRN, PyTorch's default init unless ``init="paper"``; 61,100,840 parameters at 1000 classes."""
    kwargs.setdefault("init", "torch")
    return AlexNet(ALEXNET_CONFIGS["2014"], num_classes=num_classes, towers=1, **kwargs)


# Builder by name, so train.py can pick one with a string constant (ARCH = "alexnet").
MODELS: dict[str, Callable[..., AlexNet]] = {
    "alexnet": alexnet,
    "alexnet_one_tower": alexnet_one_tower,
    "alexnet_2014": alexnet_2014,
}
# The smallest input side of each builder's layers (checked against the network in the tests).
MIN_INPUT = {"alexnet": min_input_size(ALEXNET_CONFIGS["paper"]),
             "alexnet_one_tower": min_input_size(ALEXNET_CONFIGS["paper"]),
             "alexnet_2014": min_input_size(ALEXNET_CONFIGS["2014"])}

# --- torchvision's ImageNet weights (PRETRAINED=True in train.py; common/pretrained.py).
# torchvision's ``alexnet`` is arXiv:1404.5997's one-tower net, our alexnet_2014: the same layers
# in the same order, numbered there (features.0, classifier.1) and named here (features.conv1,
# classifier.fc6). Its weights were trained with ReLU; dropout's place (before fc6/fc7 there,
# after here) does not matter at evaluation, so outputs are equal (tests/test_pretrained.py).
TORCHVISION: dict[str, str | tuple[str, dict]] = {"alexnet_2014": ("alexnet", {"ACTIVATION": "relu"})}


def from_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's alexnet state_dict -> alexnet_2014's."""
    with torch.device("meta"):
        names = list(alexnet_2014().state_dict())
    return dict(zip(names, state.values()))  # same order, our names

