"""Batch transforms for the loader's ``extras`` hook: mixup, cutmix, random erasing, PCA lighting, soft targets.

Each factory returns a ``BatchTransform``: (x (B, 3, H, W) normalised float, labels, generator)
-> (x, labels or soft targets (B, C) float), applied by common/loader.py's BatchLoader in train
mode after crop, flip and normalisation. The whole batch is transformed at once on x's device:
no per-image Python work.

Every random number comes from the step's generator ``g`` (seeded by seed, epoch, step, rank),
directly or through a seed drawn from it, so a resumed run replays the same batches bit for bit.

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

import numpy as np
import torch
import torch.nn.functional as F

from common.loader import IMAGENET_STD, BatchTransform


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
        dev = torch.Generator(device=x.device)
        dev.manual_seed(int(torch.randint(0, 2**63 - 1, (1,), generator=g)))

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
        return x + shift.to(device=x.device, dtype=x.dtype).view(-1, 3, 1, 1), y

    return transform
