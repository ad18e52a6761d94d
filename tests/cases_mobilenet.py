"""mobilenet model cases for the one list of models (tests/test_models.py).

MobileNet v1, Howard et al. 2017 (arXiv:1704.04861). Table 6 (alpha = 1, 0.75, 0.5, 0.25 at
224 px): 4.2 / 2.6 / 1.3 / 0.5 million parameters, 569 / 325 / 149 / 41 million mult-adds;
Table 7 (alpha = 1 at 224 / 192 / 160 / 128 px): 569 / 418 / 290 / 186 million mult-adds;
Table 4: Conv MobileNet 29.3 M parameters, 4866 M mult-adds. Our exact counts at 1000 classes
(BN's gamma and beta included, 21,888 of them at alpha = 1) round to every printed figure:
4,231,976 / 2,585,560 / 1,331,592 / 470,072 and 29,294,088. Mult-adds (convs + FC, counted on the
meta device): 568.74 / 325.40 / 149.50 / 41.03 M at 224 px, 418.12 / 290.68 / 186.40 M at 192 /
160 / 128 px, 4867.29 M for Conv MobileNet.

Tolerances. The paper prints whole millions, but not by one rule: 569, 418, 186, 325, 149 and 41
are ours rounded to the nearest million, 290 is our 290.68 cut down. So 1e6, one unit of the last
printed digit, for Tables 6 and 7; a wrong stride or width is off by tens of millions at least.
Conv MobileNet is 1.29e6 above Table 4's 4866, which no counting convention we tried explains
together with the other tables (without the FC it would be 4866.27, but MobileNet's 569 needs
the FC); 1.5e6 (0.03 %) allows that one difference and still rejects a misplaced stride
(hundreds of millions).

MobileNet v2, Sandler et al. 2018 (arXiv:1801.04381), Table 4: 3.4 M parameters, 300 M MACs.
torchvision's mobilenet_v2(weights=None) has 3,504,872 parameters, and so has ours (the same
tensors, see test_mobilenet.py). Of those, 34,112 are BN gammas and betas; the convs and the
classifier hold 3,470,760, which is the "3.47M" of the authors' own model table (TF-slim
mobilenet README); Table 4's "3.4" is that figure cut to one decimal, not rounded (with BN it
would be 3.5). MACs: 300.77 M, the paper's 300 M within 1e6 (its round figure).
"""
from __future__ import annotations

from functools import partial

from mobilenet import model as mobilenet
from tests.model_cases import Case

TINY = {"width": 0.125}  # v1: 4 .. 128 channels; v2: 8 .. 40 (rounded to 8s), the 1280 kept
TINY_INPUT = 32  # five stride-2 layers: a 1x1 map before the pool
ROUNDING = 1e6  # Tables 6-7 print whole millions, rounded or cut (see above)
V1 = {  # builder: (parameters at 1000 classes, mult-adds at 224 px as printed in Table 6)
    "mobilenet_v1": (4_231_976, 569e6),
    "mobilenet_v1_075": (2_585_560, 325e6),
    "mobilenet_v1_050": (1_331_592, 149e6),
    "mobilenet_v1_025": (470_072, 41e6),
}
TABLE7 = {192: 418e6, 160: 290e6, 128: 186e6}  # 1.0 MobileNet at 224 rho px


def _case(name: str, params: int, macs: float, tol: float, builder=None, native: int = 224) -> Case:
    return Case(name, builder or mobilenet.MODELS[name], TINY, params, macs, tol, tiny_input=TINY_INPUT,
                native_input=native)


CASES: list[Case] = [
    *(_case(name, params, macs, ROUNDING) for name, (params, macs) in V1.items()),
    # Table 7: the resolution multiplier is the input side, the network is the same.
    *(_case(f"mobilenet_v1-{side}px", V1["mobilenet_v1"][0], macs, ROUNDING, mobilenet.mobilenet_v1, side)
      for side, macs in TABLE7.items()),
    _case("conv_mobilenet_v1", 29_294_088, 4866e6, 1.5e6),
    # conv=full on the builder is the same net as conv_mobilenet_v1 (train.py's CONV=full)
    _case("mobilenet_v1-full", 29_294_088, 4866e6, 1.5e6, partial(mobilenet.mobilenet_v1, conv="full")),
    _case("mobilenet_v2", 3_504_872, 300e6, 1e6),
]
