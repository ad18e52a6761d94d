"""alexnet model cases for the one list of models (tests/test_models.py).

Parameter counts at 1000 classes:
- alexnet (the paper's two towers, Fig. 2): 60,965,224, Sec. 3's "60 million parameters"; it is
  also Caffe's reference bvlc_alexnet (grouped conv2/4/5). By layer: conv1 34,944, conv2
  307,456 (5x5x48 kernels), conv3 885,120, conv4 663,936 (3x3x192), conv5 442,624 (3x3x192),
  fc6 37,752,832, fc7 16,781,312, fc8 4,097,000.
- alexnet_one_tower: conv2, conv4, conv5 see all of the previous layer: +307,200 + 663,552 +
  442,368 = 62,378,344.
- alexnet_2014: torchvision.models.alexnet(), 61,100,840 (checked on the meta device in
  tests/test_alexnet.py).

MACs (multiply-adds; the paper gives none). alexnet at 227 px: 724.4e6, the count published for
the grouped AlexNet (Sze, Chen, Yang, Emer, "Efficient Processing of Deep Neural Networks",
arXiv:1703.09039, its table of popular DNNs: 724M MACs, 666M conv + 58.6M fc). alexnet_2014 at 224 px: 714.2e6,
torchvision's published 0.71 GFLOPS for alexnet (its docs count multiply-adds). Tolerance 5e6:
both published figures have three significant digits, and the two nets differ by 10e6, so
neither could pass for the other. The
one-tower net has no published count we can cite; 1,135.3e6 is the two-tower count plus the
cross-tower connections of conv2 (27^2 x 256 x 48 x 25 = 223.9e6), conv4 (13^2 x 384 x 192 x 9 =
112.1e6) and conv5 (13^2 x 256 x 192 x 9 = 74.8e6), worked out by hand; tolerance 1e6.
"""
from __future__ import annotations

from alexnet import model as alexnet
from tests.model_cases import Case

ALEXNET_TINY = {"width": 0.125}  # conv 12-32-48-48-32 (2014: 8-24-48-32-32), fc 512
ALEXNET_MAC_TOL = 5e6

CASES: list[Case] = [
    Case("alexnet", alexnet.alexnet, ALEXNET_TINY, 60_965_224, 724e6, ALEXNET_MAC_TOL,
         tiny_input=alexnet.MIN_INPUT["alexnet"], native_input=227),
    Case("alexnet_one_tower", alexnet.alexnet_one_tower, ALEXNET_TINY, 62_378_344,
         724.4e6 + 223.9e6 + 112.1e6 + 74.8e6, 1e6, tiny_input=alexnet.MIN_INPUT["alexnet_one_tower"],
         native_input=227),
    Case("alexnet_2014", alexnet.alexnet_2014, ALEXNET_TINY, 61_100_840, 714e6, ALEXNET_MAC_TOL,
         tiny_input=alexnet.MIN_INPUT["alexnet_2014"], native_input=224),
]
