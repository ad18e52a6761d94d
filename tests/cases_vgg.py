"""vgg model cases for the one list of models (tests/test_models.py).

Simonyan & Zisserman 2014 (arXiv:1409.1556). Parameter counts at 1000 classes: Table 2 gives
133, 133, 133, 134, 138, 144 million for A, A-LRN, B, C, D, E; for A, B, D, E torchvision's
vgg11/13/16/19(weights=None) have exactly the counts below (its documentation's numbers); A-LRN
adds no parameter to A (LRN has none); C is D less 8 x (256^2 + 2 x 512^2) = 4,718,592 weights,
three 3x3 convs become 1x1 (each keeps its bias): 133,638,952, Table 2's 134M. The *_bn
variants add gamma and beta per conv channel and drop the conv biases (torchvision keeps them,
which is why its vgg11_bn has 132,868,840 = ours + 2,752 conv biases).

MACs at 224 px: the paper gives none; torchvision publishes 7.61, 11.31, 15.47, 19.63 GFLOPS
(multiply-adds, printed to two decimals) for vgg11/13/16/19, the same for the *_bn variants
(BN is not counted) and for A-LRN (LRN has no multiply-adds in the conv/fc count). C has no
published count: 15.470e9 (D) less the three 3x3 -> 1x1 convs, 8 x (56^2 x 256^2 + 28^2 x
512^2 + 14^2 x 512^2) = 3.699e9, so 11.771e9, computed here by hand. Tolerance 0.005e9: the
two-decimal rounding of the published numbers, nothing more.
"""
from __future__ import annotations

from tests.model_cases import Case
from vgg import model as vgg

TINY = {"width": 1 / 16}  # 4 .. 32 conv channels, FC 256: a CPU step in milliseconds
TINY_INPUT = 32  # the smallest input the five 2x2 max pools allow (a 1x1 map)
TOL = 0.005e9  # published values' two-decimal rounding
C_MACS = 15.47e9 - 8 * (56 ** 2 * 256 ** 2 + 28 ** 2 * 512 ** 2 + 14 ** 2 * 512 ** 2)
BN_EXTRA = {  # per configuration: 2 x channels (gamma, beta) - channels (conv biases) = channels
    "A": 64 + 128 + 2 * 256 + 4 * 512,
    "B": 2 * 64 + 2 * 128 + 2 * 256 + 4 * 512,
    "D": 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512,
    "E": 2 * 64 + 2 * 128 + 4 * 256 + 8 * 512,
}
PARAMS = {"A": 132_863_336, "B": 133_047_848, "D": 138_357_544, "E": 143_667_240}


def _case(name: str, params: int, macs: float) -> Case:
    return Case(name, vgg.MODELS[name], TINY, params, macs, TOL, tiny_input=TINY_INPUT)


CASES: list[Case] = [
    _case("vgg11", PARAMS["A"], 7.61e9),
    _case("vgg11_lrn", PARAMS["A"], 7.61e9),
    _case("vgg13", PARAMS["B"], 11.31e9),
    _case("vgg16_1x1", PARAMS["D"] - 8 * (256 ** 2 + 2 * 512 ** 2), C_MACS),
    _case("vgg16", PARAMS["D"], 15.47e9),
    _case("vgg19", PARAMS["E"], 19.63e9),
    _case("vgg11_bn", PARAMS["A"] + BN_EXTRA["A"], 7.61e9),
    _case("vgg13_bn", PARAMS["B"] + BN_EXTRA["B"], 11.31e9),
    _case("vgg16_bn", PARAMS["D"] + BN_EXTRA["D"], 15.47e9),
    _case("vgg19_bn", PARAMS["E"] + BN_EXTRA["E"], 19.63e9),
]
