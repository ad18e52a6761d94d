"""vit model cases for the one list of models (tests/test_models.py).

Dosovitskiy et al. 2020 (arXiv:2010.11929), Table 1: 86M, 307M, 632M parameters for Base, Large,
Huge. The exact counts at 1000 classes are torchvision's vit_b_16 ... vit_h_14 (weights=None,
counted on the meta device in tests/test_vit.py): the /32 models have more than the /16 ones
only through the patch projection (3 x 32^2 x D weights) less the shorter position embedding.
DeiT (arXiv:2012.12877) Table 1: 5M (Ti) and 22M (S); timm's deit_tiny/small_patch16_224 have
5,717,416 and 22,050,664, which these are (the same layers: no distillation token). The
distilled models (DeiT Sec. 4) add one token of D, its position embedding (D: DeiT's code has
num_patches + 2 positions) and a head of D x 1000 + 1000: 193,384 for Ti, 385,768 for S, timm's
deit_tiny/small_distilled_patch16_224's 5,910,800 and 22,436,432.

MACs at 224 px, as torch.utils.flop_counter counts them (halved: it counts a multiply-add as 2
FLOPs): the patch projection, q/k/v, the attention products q k^T and A v (its
scaled_dot_product_attention rule, on the meta device too), the output projection, the MLP and
the head; not LayerNorm, GELU, softmax or the additions. ViT-B/16 by hand: 196 x 768 x 768
(patch) + 12 x [12 x 197 x 768^2 (qkv, proj, MLP) + 2 x 197^2 x 768 (attention)] + 768,000
(head) = 17.564e9. The references are torchvision's published GFLOPS (17.56, 4.41, 61.55,
15.38, 167.29), tolerance 0.01e9, one unit of their last printed digit: four of ours round
to the published value, vit_h_14's 167.2951e9 would print as 167.30 (the published figure looks
truncated, or leaves out the 1.28e6 of the head, 167.2938e9); nothing else lies within 0.01e9
(the nearest other count differs by 4e9). DeiT's Table 1 (1.3 and 4.6 GFLOPs, one decimal, i.e.
multiply-adds): tolerance 0.05e9, the rounding; we count 1.254e9 and 4.599e9. DeiT prints no
FLOPs for its distilled models; one token more (198 of 197) keeps them within Table 1's rounding
of the same rows (1.261e9 and 4.624e9).
"""
from __future__ import annotations

from tests.model_cases import Case
from vit import model as vit

# Two blocks of width 16, two heads, 8x8 patches of a 32 px image: 17 tokens, a CPU step in
# milliseconds. DeiT's init: the official code's zero head would stop every gradient below it
# at the first step, which the generic "gradient reaches every parameter" test checks.
TINY = {"image_size": 32, "patch_size": 8, "width": 16, "layers": 2, "heads": 2, "init": "deit"}
TINY_INPUT = 32
TV_TOL = 0.01e9  # one unit of torchvision's last printed digit (see above)
DEIT_TOL = 0.05e9  # DeiT's one-decimal rounding

PARAMS = {
    "vit_b_16": 86_567_656,
    "vit_b_32": 88_224_232,
    "vit_l_16": 304_326_632,
    "vit_l_32": 306_535_400,
    "vit_h_14": 632_045_800,
    "deit_tiny_16": 5_717_416,
    "deit_small_16": 22_050_664,
    "deit_tiny_distilled_16": 5_717_416 + 193_384,
    "deit_small_distilled_16": 22_050_664 + 385_768,
}
MACS = {  # (published multiply-adds, tolerance)
    "vit_b_16": (17.56e9, TV_TOL),
    "vit_b_32": (4.41e9, TV_TOL),
    "vit_l_16": (61.55e9, TV_TOL),
    "vit_l_32": (15.38e9, TV_TOL),
    "vit_h_14": (167.29e9, TV_TOL),
    "deit_tiny_16": (1.3e9, DEIT_TOL),
    "deit_small_16": (4.6e9, DEIT_TOL),
    "deit_tiny_distilled_16": (1.3e9, DEIT_TOL),
    "deit_small_distilled_16": (4.6e9, DEIT_TOL),
}

CASES: list[Case] = [
    Case(name, vit.MODELS[name], TINY, PARAMS[name], *MACS[name], tiny_input=TINY_INPUT)
    for name in vit.MODELS
]
