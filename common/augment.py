"""Batch transforms for the loader's ``extras`` hook: mixup, cutmix, random erasing, PCA lighting, soft targets.

Each factory returns a ``BatchTransform``: (x (B, 3, H, W) normalised float, labels, generator)
-> (x, labels or soft targets (B, C) float), applied by common/loader.py's BatchLoader in train
mode after crop, flip and normalisation. The whole batch is transformed at once on x's device:
no per-image Python work.

Every random number comes from the step's generator ``g`` (seeded by seed, epoch, step, rank),
directly or through a seed drawn from it, so a resumed run replays the same batches bit for bit.

No transform makes the host wait for the device (tests/test_syncs.py counts): a draw is made
on the device from a device generator, or on the host and sent with common.loader.to_device
(pinned, non-blocking on CUDA); no op has a data-dependent output size; no value is read back.

  mixup:           Zhang, Cisse, Dauphin, Lopez-Paz, "mixup: Beyond Empirical Risk
                   Minimization", arXiv:1710.09412.
  cutmix:          Yun, Han, Oh, Chun, Choe, Yoo, "CutMix: Regularization Strategy to Train
                   Strong Classifiers with Localizable Features", arXiv:1905.04899.
  random erasing:  Zhong, Zheng, Kang, Li, Yang, "Random Erasing Data Augmentation",
                   arXiv:1708.04896.
  PCA lighting:    Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
                   Convolutional Neural Networks", NeurIPS 2012, Sec. 4.1.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from common.loader import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, to_device


def soft_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer labels (B,) -> one-hot float (B, C); soft targets (B, C) float pass unchanged, so
    transforms that mix labels can be chained."""
    if y.is_floating_point() and y.ndim == 2:
        if y.shape[1] != num_classes:
            raise ValueError(f"soft targets have {y.shape[1]} classes, expected {num_classes}")
        return y
    return F.one_hot(y, num_classes).float()


def _beta(alpha: float, g: torch.Generator) -> float:
    """lam ~ Beta(alpha, alpha), drawn from a seed taken from g (torch.distributions takes no
    generator; numpy's generator, seeded from g, keeps the draw a function of g alone)."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed``; on ``meta``, which has no generator of its
    own (its random ops take any generator and draw nothing), the CPU's."""
    return torch.Generator(device=device if device.type != "meta" else "cpu").manual_seed(seed)


def _check_alpha(name: str, alpha: float) -> None:
    if not alpha > 0:
        raise ValueError(f"{name} alpha must be > 0 (lam ~ Beta(alpha, alpha)), got {alpha}")


def _mix_targets(y: torch.Tensor, num_classes: int, lam: float) -> torch.Tensor:
    """lam x own targets + (1 - lam) x the partner's (the batch reversed)."""
    t = soft_targets(y, num_classes)
    return lam * t + (1 - lam) * t.flip(0)


def _mixup(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, alpha: float,
           num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    lam = _beta(alpha, g)
    # Sec. 2 of mixup: x~ = lam x_i + (1 - lam) x_j, y~ likewise. The partner j is the batch
    # reversed (as timm does) rather than a second permutation: the batch order is already a
    # fresh random permutation each epoch, and reversing costs no draw. Mixing normalised
    # images is mixing the raw ones, normalisation being affine.
    return lam * x + (1 - lam) * x.flip(0), _mix_targets(y, num_classes, lam)


def _cutmix(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, alpha: float,
            num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[-2:]
    lam = _beta(alpha, g)
    # Sec. 3.1 of CutMix: a box of sides W sqrt(1 - lam), H sqrt(1 - lam) centred uniformly in
    # the image and clipped to it, one box for the whole batch (the paper's Algorithm A1).
    cut = math.sqrt(1 - lam)
    bh, bw = round(h * cut), round(w * cut)
    cy, cx = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
    top, bottom = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, h)
    left, right = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, w)
    rows = torch.arange(h, device=x.device).view(h, 1)
    cols = torch.arange(w, device=x.device).view(1, w)
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)  # (H, W)
    x = torch.where(box, x.flip(0), x)
    # Clipping shrinks the box: lam is corrected to the share of the image still one's own
    # (as the paper's code does), so the targets match what is visible.
    lam = 1 - (bottom - top) * (right - left) / (h * w)
    return x, _mix_targets(y, num_classes, lam)


def mixup(alpha: float, num_classes: int) -> BatchTransform:
    """mixup (arXiv:1710.09412): every image blended with its partner by one lam ~ Beta(alpha,
    alpha) per batch, the targets blended alike; returns soft targets (B, C)."""
    _check_alpha("mixup", alpha)

    def transform(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return _mixup(x, y, g, alpha, num_classes)

    return transform


def cutmix(alpha: float, num_classes: int) -> BatchTransform:
    """CutMix (arXiv:1905.04899): a box of area ~(1 - lam) of each image replaced by the same box
    of its partner, lam ~ Beta(alpha, alpha) and corrected to the box's clipped area; the
    targets weight the two labels by the areas they cover; returns soft targets (B, C)."""
    _check_alpha("cutmix", alpha)

    def transform(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return _cutmix(x, y, g, alpha, num_classes)

    return transform


def mixup_or_cutmix(mixup_alpha: float, cutmix_alpha: float, num_classes: int,
                    switch_prob: float = 0.5) -> BatchTransform:
    """Per batch, cutmix with probability ``switch_prob``, otherwise mixup (the DeiT recipe, as
    timm's Mixup does it). An alpha of 0 turns that one off; returns soft targets (B, C)."""
    if mixup_alpha < 0 or cutmix_alpha < 0 or not (mixup_alpha > 0 or cutmix_alpha > 0):
        raise ValueError(f"alphas must be >= 0 and one of them > 0, got mixup_alpha={mixup_alpha}, "
                         f"cutmix_alpha={cutmix_alpha}")
    if not 0 <= switch_prob <= 1:
        raise ValueError(f"switch_prob must be in [0, 1], got {switch_prob}")
    p_cutmix = switch_prob if mixup_alpha > 0 and cutmix_alpha > 0 else float(cutmix_alpha > 0)

    def transform(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if float(torch.rand(1, generator=g)) < p_cutmix:
            return _cutmix(x, y, g, cutmix_alpha, num_classes)
        return _mixup(x, y, g, mixup_alpha, num_classes)

    return transform


def random_erasing(p: float = 0.25, scale: tuple[float, float] = (0.02, 1 / 3),
                   ratio: tuple[float, float] = (0.3, 3.3), tries: int = 10) -> BatchTransform:
    """Random erasing (arXiv:1708.04896, Algorithm 1): each image, with probability p, gets one
    box of area fraction ~U(scale) and height/width ratio in ``ratio`` filled with noise; labels
    are returned unchanged. Done for the whole batch with masks.

    Deviations from Algorithm 1, both torchvision's and timm's: the ratio is drawn log-uniform
    (the paper: uniform, which favours tall boxes), the box is placed uniformly where it fits
    (the paper: corner first, redrawn until the box fits), and the fill is N(0, 1) per pixel in
    normalised space (the paper: uniform in [0, 255]). After ``tries`` boxes that do not fit
    (torchvision's 10) the image is left as it is.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1 (area fractions), got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def transform(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        # The draws happen on x's device from a generator seeded by g: a (B, 3, H, W) noise
        # tensor drawn on the CPU would cost a copy per batch as big as the batch itself. The
        # same seed gives other numbers on another device type, but the same on a rerun.
        dev = _device_generator(x.device, int(torch.randint(0, 2**63 - 1, (1,), generator=g)))

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(shape, generator=dev, device=x.device)

        area = uniform(*scale, b, tries) * (h * w)  # in pixels
        r = torch.exp(uniform(*log_ratio, b, tries))  # height / width
        bh, bw = torch.sqrt(area * r).round().long(), torch.sqrt(area / r).round().long()
        fits = (bh >= 1) & (bh <= h) & (bw >= 1) & (bw <= w)  # (B, tries)
        first = fits.long().argmax(1, keepdim=True)  # the first box that fits (0 if none does)
        bh, bw = bh.gather(1, first).squeeze(1), bw.gather(1, first).squeeze(1)
        erase = (uniform(0, 1, b) < p) & fits.any(1)
        top = (uniform(0, 1, b) * (h - bh + 1)).long()  # uniform over where the box fits
        left = (uniform(0, 1, b) * (w - bw + 1)).long()
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        mask = ((rows >= top.view(b, 1, 1)) & (rows < (top + bh).view(b, 1, 1))
                & (cols >= left.view(b, 1, 1)) & (cols < (left + bw).view(b, 1, 1))
                & erase.view(b, 1, 1))  # (B, H, W)
        noise = torch.randn(x.shape, generator=dev, device=x.device, dtype=x.dtype)
        return torch.where(mask.unsqueeze(1), noise, x), y

    return transform


def pca_lighting(eigval: torch.Tensor, eigvec: torch.Tensor, std: float = 0.1,
                 pixel_std: tuple[float, float, float] = IMAGENET_STD) -> BatchTransform:
    """AlexNet's colour augmentation (Sec. 4.1): to every pixel of an image add
    [p1, p2, p3] [a1 l1, a2 l2, a3 l3]^T, with p_i, l_i the eigenvectors and eigenvalues of the
    training set's RGB covariance (common.cache.rgb_pca) and a_i ~ N(0, ``std``) drawn once per
    image each time it is used (the paper: std 0.1). Labels are returned unchanged.

    Units: eigval and eigvec as rgb_pca gives them, for pixel values in [0, 1] (pixel / 255);
    the shift is made in those units, i.e. 255 x as many pixel levels, then divided by the
    loader's per-channel std (``pixel_std``) because x arrives normalised, (pixel / 255 - mean)
    / std (the mean does not matter to a shift). The paper states no scale for its eigenvalues.
    On [0, 1] values a typical shift is a few pixel levels, and Imagenette's eigenvalues (0.2165,
    0.0174, 0.0035) are close to the ImageNet ones fb.resnet.torch uses (0.2175, 0.0188,
    0.0045), so this is the scale implementations since have taken; eigenvalues of pixel values
    0..255 (65,025 x larger) would shift colours by hundreds of levels. No clipping (the paper
    has none).
    """
    if not std >= 0:
        raise ValueError(f"std must be >= 0 (the paper: 0.1), got {std}")
    eigval, eigvec = torch.as_tensor(eigval, dtype=torch.float32), torch.as_tensor(eigvec, dtype=torch.float32)
    if eigval.shape != (3,) or eigvec.shape != (3, 3):
        raise ValueError(f"eigval must be (3,) and eigvec (3, 3), got {tuple(eigval.shape)}, {tuple(eigvec.shape)}")
    to_normalised = 1.0 / torch.tensor(pixel_std, dtype=torch.float32)  # (3,)

    def transform(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = torch.randn(len(x), 3, generator=g) * std  # (B, 3), one draw per image, on the CPU
        shift = (alpha * eigval) @ eigvec.T * to_normalised  # (B, 3): eigvec @ (alpha * eigval) per image
        return x + to_device(shift, x.device).to(x.dtype).view(-1, 3, 1, 1), y

    return transform


# ---------------------------------------------------------------------------------------------
# RandAugment and TrivialAugment: per-image ops drawn from one list, batched
#
#   RandAugment:     Cubuk, Zoph, Shlens, Le, "RandAugment: Practical automated data augmentation
#                    with a reduced search space", arXiv:1909.13719.
#   TrivialAugment:  Müller, Hutter, "TrivialAugment: Tuning-free Yet State-of-the-Art Data
#                    Augmentation", arXiv:2103.10129.
#
# The ops and their magnitude ranges are torchvision's (transforms.RandAugment and
# TrivialAugmentWide, v0.29), so results compare with the usual PyTorch recipes. The images are
# worked on in pixel space [0, 1]: torchvision works on uint8 (or [0, 1] floats) and fills what
# a geometric op uncovers with 0, black; the loader's x is normalised, so it is un-normalised
# first and normalised again at the end (black becomes -mean / std).
# ---------------------------------------------------------------------------------------------


class AugmentOp(NamedTuple):
    """One op's magnitudes: bin k of n is torch.linspace(lo, hi, n)[k], negated for half of the
    images if ``signed``; ``per`` "width" / "height" makes it a fraction of that image side."""
    lo: float = 0.0
    hi: float = 0.0
    signed: bool = False
    per: str = ""


# torchvision.transforms.RandAugment._augmentation_space: the 14 ops RandAugment's Sec. 3 lists
# (identity, autoContrast, equalize, rotate, solarize, color, posterize, contrast, brightness,
# sharpness, shear-x/y, translate-x/y), drawn with probability 1/14 each, over AutoAugment's
# ranges (arXiv:1805.09501), the largest at the last of num_magnitude_bins bins. Units:
# shear as tan(angle), translate in pixels (truncated to whole pixels, as torchvision does),
# rotate in degrees, the four enhancers as factor - 1, posterize as bits kept, solarize as the
# threshold in pixel levels 0..255. The order is torchvision's (an op is drawn by its index); the
# geometric ops sit together, one slice for _apply_ops.
RAND_AUGMENT_OPS: dict[str, AugmentOp] = {
    "Identity": AugmentOp(),
    "ShearX": AugmentOp(0.0, 0.3, True),
    "ShearY": AugmentOp(0.0, 0.3, True),
    "TranslateX": AugmentOp(0.0, 150.0 / 331.0, True, per="width"),  # AutoAugment's 150 px at 331
    "TranslateY": AugmentOp(0.0, 150.0 / 331.0, True, per="height"),
    "Rotate": AugmentOp(0.0, 30.0, True),
    "Brightness": AugmentOp(0.0, 0.9, True),
    "Color": AugmentOp(0.0, 0.9, True),
    "Contrast": AugmentOp(0.0, 0.9, True),
    "Sharpness": AugmentOp(0.0, 0.9, True),
    "Posterize": AugmentOp(8, 4),  # bits: 8 - round(k / ((n - 1) / 4)), see _bin_magnitudes
    "Solarize": AugmentOp(255.0, 0.0),
    "AutoContrast": AugmentOp(),
    "Equalize": AugmentOp(),
}

# torchvision.transforms.TrivialAugmentWide._augmentation_space: the same ops over the paper's
# "Wide" augmentation space (arXiv:2103.10129, Sec. 3 and its table of spaces): shear and the
# enhancers to 0.99, translate a fixed 32 px whatever the image size, rotate to 135 degrees,
# posterize down to 2 bits.
TRIVIAL_AUGMENT_OPS: dict[str, AugmentOp] = {
    "Identity": AugmentOp(),
    "ShearX": AugmentOp(0.0, 0.99, True),
    "ShearY": AugmentOp(0.0, 0.99, True),
    "TranslateX": AugmentOp(0.0, 32.0, True),
    "TranslateY": AugmentOp(0.0, 32.0, True),
    "Rotate": AugmentOp(0.0, 135.0, True),
    "Brightness": AugmentOp(0.0, 0.99, True),
    "Color": AugmentOp(0.0, 0.99, True),
    "Contrast": AugmentOp(0.0, 0.99, True),
    "Sharpness": AugmentOp(0.0, 0.99, True),
    "Posterize": AugmentOp(8, 2),  # bits: 8 - round(k / ((n - 1) / 6))
    "Solarize": AugmentOp(255.0, 0.0),
    "AutoContrast": AugmentOp(),
    "Equalize": AugmentOp(),
}

GEOMETRIC_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
# ITU-R 601-2 luma, torchvision's (and PIL's) grayscale for Color and Contrast.
_LUMA = (0.2989, 0.587, 0.114)


def _bin_magnitudes(op: str, spec: AugmentOp, num_bins: int, h: int, w: int) -> torch.Tensor:
    """(num_bins,) magnitudes of one op, computed as torchvision computes them (float32
    linspace), so the same bin gives the same number, whole pixels included."""
    if op == "Posterize":  # rounded to whole bits, ties as torch.round (half to even)
        span = spec.lo - spec.hi
        return spec.lo - (torch.arange(num_bins) / ((num_bins - 1) / span)).round()
    side = {"width": w, "height": h, "": 1}[spec.per]
    return torch.linspace(spec.lo, spec.hi * side, num_bins)


def _inverse_affine(names: list[str], ids: torch.Tensor, m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(n, 2, 3) matrices for F.affine_grid (align_corners=False), output pixel -> input pixel,
    one per image, for the geometric op ``names[ids[i]]`` it drew at its magnitude ``m[i]`` (float64,
    CPU).

    As torchvision's _get_inverse_affine_matrix builds them for F.affine / F.rotate, in pixels
    about the image centre: shear by atan(m) about the top-left corner (torchvision's
    RandAugment passes center=[0, 0]), translate by whole pixels, rotate about the centre
    (counter-clockwise for m > 0)."""
    n = len(m)
    zero = torch.zeros(n, dtype=torch.float64)
    none = torch.zeros(n, dtype=torch.bool)  # an op table without some geometric op (e.g. TrivialAugment's subset)
    is_op = {name: ids == names.index(name) if name in names else none for name in GEOMETRIC_OPS}  # (n,) bool each
    # torchvision's shear angle is atan(m) in degrees, then tan of it again: tan_sx = m
    tan_sx = torch.where(is_op["ShearX"], m, zero)
    sy = torch.where(is_op["ShearY"], torch.atan(m), zero)
    tx = torch.where(is_op["TranslateX"], m.trunc(), zero)  # int(magnitude): toward zero
    ty = torch.where(is_op["TranslateY"], m.trunc(), zero)
    rot = torch.where(is_op["Rotate"], -torch.deg2rad(m), zero)  # F.rotate passes -angle
    shear = is_op["ShearX"] | is_op["ShearY"]
    cx = torch.where(shear, torch.full_like(m, -w / 2), zero)  # centre, relative to the image's
    cy = torch.where(shear, torch.full_like(m, -h / 2), zero)
    # rotation-shear block RSS = R(rot) SHy(sy) SHx(sx), det 1; its inverse is [[d, -b], [-c, a]]
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * tan_sx
    m00, m01, m10, m11 = d, -b, -c, a
    # M^-1 = C RSS^-1 C^-1 T^-1: x_in = RSS^-1 (x_out - c - t) + c
    m02 = cx - m00 * (cx + tx) - m01 * (cy + ty)
    m12 = cy - m10 * (cx + tx) - m11 * (cy + ty)
    # pixels about the centre -> affine_grid's [-1, 1] (x / (w / 2)); align_corners=False puts
    # pixel i's centre at i + 0.5 - w / 2, the base grid torchvision's _affine_grid uses
    theta = torch.stack([torch.stack([m00, m01 * h / w, m02 * 2 / w], 1),
                         torch.stack([m10 * w / h, m11, m12 * 2 / h], 1)], 1)
    return theta  # (n, 2, 3)


def _geometric(p: torch.Tensor, theta: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """One grid_sample for all images (n, 3, H, W) with their own matrices (n, 2, 3), on p's
    device (_apply_ops sends them there); uncovered pixels 0 (black), torchvision's default fill.
    ``mode``: torchvision's RandAugment and TrivialAugmentWide interpolate NEAREST by default."""
    grid = F.affine_grid(theta.to(device=p.device, dtype=p.dtype), list(p.shape), align_corners=False)
    return F.grid_sample(p, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _per_image(m: torch.Tensor) -> torch.Tensor:
    return m.view(-1, 1, 1, 1)


def _blend(p: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance rule, torchvision's _blend: factor x image + (1 - factor) x degenerate,
    clipped to the pixel range."""
    f = _per_image(factor)
    return (f * p + (1 - f) * other).clamp(0, 1)


def _gray(p: torch.Tensor) -> torch.Tensor:
    r, g, b = p.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)  # (n, 1, H, W)


def _brightness(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (p * _per_image(1 + m)).clamp(0, 1)  # blend with black


def _color(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _blend(p, _gray(p), 1 + m)  # saturation: blend with the image's grayscale


def _contrast(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return _blend(p, _gray(p).mean((1, 2, 3), keepdim=True), 1 + m)  # with its mean gray


def _sharpness(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Blend with PIL's SMOOTH filter (3x3, 1s around a 5, / 13), the one-pixel border kept as it
    is (torchvision's adjust_sharpness); images smaller than 3x3 pass unchanged."""
    if min(p.shape[-2:]) <= 2:
        return p
    # The 3x3 box as two running sums of shifted views (a depthwise conv2d is ~10x slower on
    # the CPU), plus 4 more of the centre: the 1-1-1 / 1-5-1 / 1-1-1 kernel.
    rows = p[..., :-2, :] + p[..., 1:-1, :] + p[..., 2:, :]  # (n, 3, H - 2, W)
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]  # (n, 3, H - 2, W - 2)
    smooth = p.clone()
    smooth[..., 1:-1, 1:-1] = (box + 4 * p[..., 1:-1, 1:-1]) / 13
    return _blend(p, smooth, 1 + m)


def _levels(p: torch.Tensor) -> torch.Tensor:
    """Pixel levels 0..255 (uint8), for the ops torchvision defines on uint8 images: rounded,
    since the loader's values are k / 255 up to float error."""
    return (p * 255).round_().clamp_(0, 255).to(torch.uint8)


def _posterize(p: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top ``bits`` bits of each uint8 level; 8 bits returns the image as it is."""
    keep = bits.to(torch.int32).view(-1, 1, 1, 1)
    mask = ((1 << keep) - 1) << (8 - keep)  # (n, 1, 1, 1), e.g. 4 bits -> 0b11110000
    out = (_levels(p).to(torch.int32) & mask).to(p.dtype) / 255
    return torch.where(keep >= 8, p, out)


def _solarize(p: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert every level >= threshold (in 0..255). 1e-3 of a level absorbs the float error of
    un-normalising (~1e-5 levels), so k / 255 counts as level k."""
    return torch.where(p * 255 >= _per_image(threshold) - 1e-3, 1 - p, p)


def _autocontrast(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Stretch each image's each channel from [min, max] to [0, 1]; a flat channel is kept."""
    lo, hi = p.amin((2, 3), keepdim=True), p.amax((2, 3), keepdim=True)  # (n, 3, 1, 1)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), hi - lo)
    return torch.where(flat, p, ((p - lo) / scale).clamp(0, 1))


def _equalize(p: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each image's each channel on uint8 levels, PIL's
    ImageOps.equalize rule (torchvision's): step = (pixels not at the top level) // 255,
    lut[k] = (step // 2 + pixels below level k) // step; step 0 (one level, or almost) keeps
    the channel. All histograms at once: one count over level + 256 x (image, channel), added
    into a tensor of its known size (bincount's size depends on the data: a device sync)."""
    n, c, h, w = p.shape
    q = _levels(p).long().flatten(2)  # (n, 3, HW)
    offset = (torch.arange(n * c, device=p.device) * 256).view(n, c, 1)
    bins = (q + offset).flatten()
    hist = torch.zeros(n * c * 256, dtype=torch.long, device=p.device).scatter_add_(0, bins, torch.ones_like(bins))
    hist = hist.view(n, c, 256)
    top = hist.gather(2, q.amax(2, keepdim=True))  # (n, 3, 1): pixels at the highest level
    step = (h * w - top) // 255
    below = hist.cumsum(2) - hist  # pixels below level k
    lut = ((below + step // 2) // step.clamp(min=1)).clamp(0, 255)  # (n, 3, 256)
    out = lut.gather(2, q).view(n, c, h, w).to(p.dtype) / 255
    return torch.where((step > 0).unsqueeze(-1), out, p)


# Colour and histogram ops, each (images (n, 3, H, W) in [0, 1], magnitudes (n,)) -> images.
_COLOUR_OPS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Brightness": _brightness, "Color": _color, "Contrast": _contrast, "Sharpness": _sharpness,
    "Posterize": _posterize, "Solarize": _solarize, "AutoContrast": _autocontrast, "Equalize": _equalize,
}


def _apply_ops(p: torch.Tensor, ops: dict[str, AugmentOp], op_ids: torch.Tensor,
               mags: torch.Tensor) -> torch.Tensor:
    """One round: image i gets op ``op_ids[i]`` (host, (B,)) at magnitude ``mags[i]`` (host).

    The batch is sorted by op, so each op's images are one slice of one index tensor: each op
    runs once on just its own images (index_select), all the geometric ops in one grid_sample,
    and nothing waits on the device: the order, the slice bounds and the geometric matrices are
    worked out on the host and sent in one non-blocking copy (common.loader.to_device), packed
    as float64, which holds the indices, the float32 magnitudes and the matrices exactly.
    Computing every op on the whole batch and picking with masks would cost ~14x the work for
    the same result."""
    names = list(ops)
    h, w = p.shape[-2:]
    order = torch.argsort(op_ids, stable=True)  # (B,) image indices, grouped by op
    ends = torch.bincount(op_ids, minlength=len(names)).cumsum(0).tolist()  # on the host: no sync
    span = {name: slice(ends[k - 1] if k else 0, ends[k]) for k, name in enumerate(names)}
    geometric = [span[name] for name in GEOMETRIC_OPS if name in span]  # adjacent ids: one slice
    geo = slice(geometric[0].start, geometric[-1].stop) if geometric else slice(0, 0)
    theta = _inverse_affine(names, op_ids[order[geo]], mags[order[geo]].double(), h, w)  # (G, 2, 3)
    b = len(order)
    sent = to_device(torch.cat([order.double(), mags[order].double(), theta.flatten()]), p.device)
    order_dev, mags_dev, theta_dev = sent[:b].long(), sent[b:2 * b].to(p.dtype), sent[2 * b:].view(-1, 2, 3)
    out = p.clone()
    if geo.stop > geo.start:
        out[order_dev[geo]] = _geometric(p.index_select(0, order_dev[geo]), theta_dev)
    for name, fn in _COLOUR_OPS.items():
        rows = span.get(name, slice(0, 0))
        if rows.stop > rows.start:
            out[order_dev[rows]] = fn(p.index_select(0, order_dev[rows]), mags_dev[rows])
    return out


def _draw_magnitudes(ops: dict[str, AugmentOp], op_ids: torch.Tensor, bins: torch.Tensor,
                     g: torch.Generator, num_bins: int, h: int, w: int) -> torch.Tensor:
    """(B,) magnitudes for op ``op_ids[i]`` at bin ``bins[i]``, with a random sign per image for
    the signed ops (torchvision: a fair coin per op applied)."""
    table = torch.stack([_bin_magnitudes(name, spec, num_bins, h, w).float() for name, spec in ops.items()])
    signed = torch.tensor([spec.signed for spec in ops.values()])
    flip = (torch.randint(2, op_ids.shape, generator=g) == 1) & signed[op_ids]
    m = table[op_ids, bins]
    return torch.where(flip, -m, m)


def _policy(ops: dict[str, AugmentOp], num_ops: int, num_bins: int,
            magnitude: int | None) -> BatchTransform:
    """Each image draws ``num_ops`` ops uniformly from ``ops``, each at bin ``magnitude``, or,
    if None, at a bin drawn uniformly per op (TrivialAugment); ops applied in the order drawn."""
    present = [k for k, name in enumerate(ops) if name in GEOMETRIC_OPS]
    if present and present != list(range(present[0], present[-1] + 1)):  # _apply_ops's one slice
        raise ValueError(f"the geometric ops must be adjacent in the op table, got {list(ops)}")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    on_device: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}  # sent once

    def transform(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        # All draws on the CPU from g, B x num_ops numbers each: no device syncs, and a replay
        # gives the same ops on any device.
        op_ids = torch.randint(len(ops), (num_ops, b), generator=g)
        if magnitude is None:
            bins = torch.randint(num_bins, (num_ops, b), generator=g)
        else:
            bins = torch.full((num_ops, b), magnitude)
        if (x.device, x.dtype) not in on_device:
            on_device[x.device, x.dtype] = (to_device(std, x.device).to(x.dtype),
                                            to_device(mean, x.device).to(x.dtype))
        s, mu = on_device[x.device, x.dtype]
        p0 = (x * s + mu).clamp(0, 1)  # (B, 3, H, W) pixel values, as torchvision's [0, 1]
        p = p0
        for r in range(num_ops):
            mags = _draw_magnitudes(ops, op_ids[r], bins[r], g, num_bins, h, w)
            p = _apply_ops(p, ops, op_ids[r], mags)
        # Normalised again as a change to x: an image that drew only Identity (or ops that left
        # it as it was) comes back bit for bit.
        return x + (p - p0) / s, y

    return transform


def _check_bins(num_magnitude_bins: int) -> None:
    if not (isinstance(num_magnitude_bins, int) and num_magnitude_bins >= 2):
        raise ValueError(f"num_magnitude_bins must be an integer >= 2 (torchvision's default: 31), "
                         f"got {num_magnitude_bins}")


def rand_augment(num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31) -> BatchTransform:
    """RandAugment (arXiv:1909.13719, Sec. 3): each image draws ``num_ops`` ops uniformly from
    RAND_AUGMENT_OPS (with replacement) and applies them in turn, all at bin ``magnitude`` of
    ``num_magnitude_bins`` (torchvision's defaults N=2, M=9 of bins 0..30), a random sign per
    image and op for the signed ones. Scale: torchvision puts each op's maximum at bin 30, so
    M=9 is 0.3 of it. The paper's Sec. 3 describes an integer scale 0..10 with 10 the maximum
    (its studies plot M up to 30), and timm reads M out of 10: timm's "rand-m9" strength is
    ``rand_augment(2, 27)`` here.
    Labels are returned unchanged. x is expected normalised with IMAGENET_MEAN / IMAGENET_STD.

    Deviations from torchvision's per-image transform, all within a pixel level per op: the
    ops run on float pixels, so there is no truncation to uint8 between ops (torchvision's
    blends truncate, its grayscale floors); Posterize and Equalize round to uint8 levels first.
    """
    _check_bins(num_magnitude_bins)
    if not (isinstance(num_ops, int) and num_ops >= 0):
        raise ValueError(f"num_ops must be an integer >= 0, got {num_ops}")
    if not (isinstance(magnitude, int) and 0 <= magnitude < num_magnitude_bins):
        raise ValueError(f"magnitude must be an integer bin in [0, {num_magnitude_bins - 1}] "
                         f"(num_magnitude_bins={num_magnitude_bins}), got {magnitude}")
    return _policy(RAND_AUGMENT_OPS, num_ops, num_magnitude_bins, magnitude)


def trivial_augment(num_magnitude_bins: int = 31) -> BatchTransform:
    """TrivialAugment (arXiv:2103.10129, Sec. 3, Algorithm 1): each image draws one op uniformly
    from TRIVIAL_AUGMENT_OPS and one magnitude bin uniformly from ``num_magnitude_bins``, the
    "wide" ranges (torchvision's TrivialAugmentWide); a random sign for the signed ops. Labels
    are returned unchanged; the same deviations as rand_augment."""
    _check_bins(num_magnitude_bins)
    return _policy(TRIVIAL_AUGMENT_OPS, 1, num_magnitude_bins, None)
