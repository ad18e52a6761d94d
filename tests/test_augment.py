"""Tests of common/augment.py: mixup, cutmix, random erasing as loader extras with soft targets;
RandAugment and TrivialAugment op by op against torchvision.

Batches are built so that their pixels say what they are (image i is the constant i + 1), so a
test can read back from the output how much of each image, and whose, each sample holds.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, RandAugment, TrivialAugmentWide
from torchvision.transforms.v2 import functional as TF

from common.augment import (GEOMETRIC_OPS, RAND_AUGMENT_OPS, TRIVIAL_AUGMENT_OPS, _apply_ops, _bin_magnitudes,
                            _geometric, _inverse_affine, _policy, cutmix, mixup, mixup_or_cutmix, rand_augment,
                            random_erasing, soft_targets, trivial_augment)
from common.cache import ImageSet
from common.loader import IMAGENET_MEAN, IMAGENET_STD, BatchLoader, BatchTransform

C = 10  # classes


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def indexed_batch(b: int = 6, side: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is the constant i + 1 (never 0), label i: all labels differ, so do the partners."""
    x = (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, 3, side, side).clone()
    return x, torch.arange(b)


def all_transforms() -> dict[str, BatchTransform]:
    return {"mixup": mixup(0.4, C), "cutmix": cutmix(1.0, C), "mixup_or_cutmix": mixup_or_cutmix(0.8, 1.0, C),
            "random_erasing": random_erasing(0.5)}


def test_soft_targets() -> None:
    y = torch.tensor([0, 3, 9])
    t = soft_targets(y, C)
    assert t.shape == (3, C) and t.dtype == torch.float32 and torch.equal(t.argmax(1), y)
    assert torch.equal(t.sum(1), torch.ones(3))
    assert soft_targets(t, C) is t  # soft targets pass through: transforms chain
    with pytest.raises(ValueError, match="expected 5"):
        soft_targets(t, 5)


def test_same_generator_seed_same_output_other_seed_other_output() -> None:
    x, y = torch.randn(16, 3, 12, 12, generator=gen(0)), torch.arange(16) % C
    for name, transform in all_transforms().items():
        a, b, c = (transform(x.clone(), y, gen(s)) for s in (1, 1, 2))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), name
        assert not torch.equal(a[0], c[0]), name
        assert torch.equal(x, torch.randn(16, 3, 12, 12, generator=gen(0)))  # the input is not modified


def partner(i: int, b: int) -> int:
    return b - 1 - i  # the batch reversed


def test_mixup_blends_images_and_targets_by_one_lam() -> None:
    b = 6
    lams = []
    for seed in range(200):
        x, y = indexed_batch(b)
        out, t = mixup(0.4, C)(x, y, gen(seed))
        assert t.shape == (b, C) and t.dtype == torch.float32
        assert torch.allclose(t.sum(1), torch.ones(b))
        lam = float(t[0, 0])
        for i in range(b):  # x~ = lam x_i + (1 - lam) x_j, y~ likewise (Sec. 2), one lam per batch
            j = partner(i, b)
            assert math.isclose(float(t[i, i]), lam, abs_tol=1e-6)
            assert math.isclose(float(t[i, j]), 1 - lam, abs_tol=1e-6)
            assert torch.allclose(out[i], torch.full_like(out[i], lam * (i + 1) + (1 - lam) * (j + 1)))
        lams.append(lam)
    lams_t = torch.tensor(lams)
    assert 0 <= lams_t.min() and lams_t.max() <= 1
    # Beta(0.4, 0.4): symmetric about 0.5 (sd of the mean of 200 ~ 0.026), mostly near 0 or 1
    assert abs(lams_t.mean() - 0.5) < 0.1 and ((lams_t < 0.2) | (lams_t > 0.8)).float().mean() > 0.4


def test_mixup_of_soft_targets_mixes_them() -> None:
    x, y = indexed_batch(4)
    smooth = soft_targets(y, C) * 0.9 + 0.01  # label smoothing first, then mixup
    _, t = mixup(1.0, C)(x, smooth, gen(3))
    lam = (float(t[0, 0]) - 0.01) / 0.9  # t[0, 0] = lam 0.91 + (1 - lam) 0.01
    assert torch.allclose(t, lam * smooth + (1 - lam) * smooth.flip(0), atol=1e-6)


def test_cutmix_box_area_matches_the_label_weight() -> None:
    b, side = 6, 16
    clipped = 0
    for seed in range(100):
        x, y = indexed_batch(b, side)
        out, t = cutmix(1.0, C)(x, y, gen(seed))
        assert torch.allclose(t.sum(1), torch.ones(b))
        boxes = []
        for i in range(b):
            j = partner(i, b)
            pasted = out[i] == j + 1
            assert torch.equal(pasted | (out[i] == i + 1), torch.ones_like(pasted))  # pasted, not blended
            pasted = pasted[0]
            # the share of the image taken by the partner is the partner's label weight
            assert math.isclose(float(pasted.float().mean()), float(t[i, j]), abs_tol=1e-6)
            assert math.isclose(float(t[i, i]), 1 - float(t[i, j]), abs_tol=1e-6)
            rows, cols = pasted.any(1).nonzero(), pasted.any(0).nonzero()
            if len(rows):  # a box: its bounding rectangle is all pasted
                assert int(pasted.sum()) == len(rows) * len(cols)
                assert int(rows[-1] - rows[0]) + 1 == len(rows) and int(cols[-1] - cols[0]) + 1 == len(cols)
            boxes.append(pasted)
        assert all(torch.equal(box, boxes[0]) for box in boxes)  # one box for the batch
        area = boxes[0].float().mean()
        edge = boxes[0][0].any() or boxes[0][-1].any() or boxes[0][:, 0].any() or boxes[0][:, -1].any()
        clipped += int(bool(edge) and 0 < area < 1)
    assert clipped > 10  # boxes cut by the border happen, and their weights still match


def is_cutmix(out: torch.Tensor, b: int) -> bool:
    return all(bool(((out[i] == i + 1) | (out[i] == partner(i, b) + 1)).all()) for i in range(b))


def test_mixup_or_cutmix_switches_per_batch() -> None:
    b = 6
    picks = [is_cutmix(mixup_or_cutmix(0.8, 1.0, C)(*indexed_batch(b), gen(s))[0], b) for s in range(200)]
    assert 70 < sum(picks) < 130  # switch_prob 0.5: 100 +- 4 sigma
    picks = [is_cutmix(mixup_or_cutmix(0.8, 1.0, C, switch_prob=0.2)(*indexed_batch(b), gen(s))[0], b)
             for s in range(200)]
    assert 15 < sum(picks) < 65
    assert all(is_cutmix(mixup_or_cutmix(0.0, 1.0, C)(*indexed_batch(b), gen(s))[0], b) for s in range(20))
    assert not any(is_cutmix(mixup_or_cutmix(0.8, 0.0, C)(*indexed_batch(b), gen(s))[0], b)
                   for s in range(20))


def test_random_erasing_boxes_and_rate() -> None:
    b, side, p = 400, 16, 0.5
    x = torch.full((b, 3, side, side), 5.0)  # N(0, 1) noise never lands on 5 exactly
    y = torch.arange(b) % C
    out, y_out = random_erasing(p)(x, y, gen(0))
    assert y_out is y  # labels unchanged
    erased = (out != 5.0).any(1)  # (B, H, W)
    hit = erased.flatten(1).any(1)
    assert 160 < int(hit.sum()) < 240  # p = 0.5: 200 +- 4 sigma
    log_ratios = []
    for mask in erased[hit]:  # each one a single box (all channels), of the drawn size
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        h, w = len(rows), len(cols)
        assert int(mask.sum()) == h * w and int(rows[-1] - rows[0]) + 1 == h
        assert 0.02 * 0.5 <= h * w / side**2 <= 1 / 3 * 1.5  # U(0.02, 1/3) of the area, +- rounding
        log_ratios.append(math.log(h / w))
    assert all(-math.log(3.3) - 0.7 < r < math.log(3.3) + 0.7 for r in log_ratios)
    assert abs(torch.tensor(log_ratios).median()) < 0.3  # log-uniform ratio: as many tall as wide
    noise = out[(out != 5.0)]
    assert abs(float(noise.mean())) < 0.1 and abs(float(noise.std()) - 1) < 0.1  # N(0, 1) fill

    assert torch.equal(random_erasing(0.0)(x, y, gen(1))[0], x)
    assert bool((random_erasing(1.0)(x, y, gen(1))[0] != 5.0).flatten(1).any(1).all())


def test_bad_arguments_refused() -> None:
    for make in (lambda: mixup(0.0, C), lambda: cutmix(-1.0, C), lambda: mixup_or_cutmix(0.0, 0.0, C),
                 lambda: mixup_or_cutmix(0.8, 1.0, C, switch_prob=1.5), lambda: random_erasing(p=2.0),
                 lambda: random_erasing(scale=(0.5, 0.1)), lambda: random_erasing(ratio=(0.0, 1.0))):
        with pytest.raises(ValueError):
            make()


# ---------------------------------------------------------------------------------------------
# In the loader: soft targets out, and the same batches on a replay or a resume
# ---------------------------------------------------------------------------------------------


def tiny_set(n: int = 24, side: int = 16, classes: int = 4) -> ImageSet:
    images = torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=gen(0))
    return ImageSet(images, torch.arange(n) % classes)


def test_loader_with_mixup_yields_soft_targets_and_replays_exactly() -> None:
    data = tiny_set()
    for extras in ([mixup(0.4, 4)], [mixup_or_cutmix(0.8, 1.0, 4), random_erasing(0.5)]):
        def loader() -> BatchLoader:
            fresh = BatchLoader(data, 8, train=True, image_dim=12, seed=3, extras=extras)
            fresh.set_epoch(2)
            return fresh

        first = list(loader())
        assert len(first) == 3
        for x, t in first:
            assert x.shape == (8, 3, 12, 12) and t.shape == (8, 4) and t.dtype == torch.float32
            assert torch.allclose(t.sum(1), torch.ones(8))
        same = loader()
        for again in (list(same), list(same), list(loader())):  # the same epoch, twice, and fresh
            assert all(torch.equal(x, xa) and torch.equal(t, ta) for (x, t), (xa, ta) in zip(first, again))
        resumed = list(loader().iterate(start_step=1))  # a restarted run picks up at step 1
        assert all(torch.equal(x, xa) and torch.equal(t, ta) for (x, t), (xa, ta) in zip(first[1:], resumed))
        other = loader()
        other.set_epoch(3)
        assert not torch.equal(next(iter(other))[1], first[0][1])  # another epoch, other mixing


# ---------------------------------------------------------------------------------------------
# RandAugment and TrivialAugment: each op against torchvision's, per image draws, replay
# ---------------------------------------------------------------------------------------------

TABLES = {"rand": (RAND_AUGMENT_OPS, RandAugment()._augmentation_space),
          "trivial": (TRIVIAL_AUGMENT_OPS, lambda n, size: TrivialAugmentWide()._augmentation_space(n))}
H, W = 20, 26  # not square: a mixed-up height and width shows


def photo_like(b: int = 4, h: int = H, w: int = W) -> torch.Tensor:
    """(b, 3, h, w) uint8: smooth gradients of low contrast plus noise, each image its own, so
    autocontrast and equalize have work to do and geometric ops move structure."""
    g = gen(7)
    rows = torch.linspace(0, 1, h).view(1, 1, h, 1)
    cols = torch.linspace(0, 1, w).view(1, 1, 1, w)
    tilt = torch.rand(b, 3, 1, 1, generator=g)
    base = 40 + 120 * (tilt * rows + (1 - tilt) * cols) + 30 * torch.rand(b, 3, 1, 1, generator=g)
    return (base + 25 * torch.rand(b, 3, h, w, generator=g)).round().clamp(0, 255).to(torch.uint8)


def tv_op(img: torch.Tensor, name: str, m: float, mode: InterpolationMode = InterpolationMode.NEAREST) -> torch.Tensor:
    """The op as torchvision's RandAugment / TrivialAugmentWide apply it (transforms.autoaugment
    ._apply_op), through torchvision.transforms.v2.functional."""
    if name in ("ShearX", "ShearY"):
        shear = [math.degrees(math.atan(m)), 0.0] if name == "ShearX" else [0.0, math.degrees(math.atan(m))]
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=mode,
                         center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        t = [int(m), 0] if name == "TranslateX" else [0, int(m)]
        return TF.affine(img, angle=0.0, translate=t, scale=1.0, shear=[0.0, 0.0], interpolation=mode)
    ops = {"Identity": lambda: img, "Rotate": lambda: TF.rotate(img, m, interpolation=mode),
           "Brightness": lambda: TF.adjust_brightness(img, 1 + m), "Color": lambda: TF.adjust_saturation(img, 1 + m),
           "Contrast": lambda: TF.adjust_contrast(img, 1 + m), "Sharpness": lambda: TF.adjust_sharpness(img, 1 + m),
           "Posterize": lambda: TF.posterize(img, int(m)), "AutoContrast": lambda: TF.autocontrast(img),
           "Solarize": lambda: TF.solarize(img, m if img.dtype == torch.uint8 else m / 255),
           "Equalize": lambda: TF.equalize(img)}
    return ops[name]()


def test_op_tables_are_torchvisions() -> None:
    # _augmentation_space is torchvision's private table: if it moves, torchvision changed its ops
    for table, tv_space in TABLES.values():
        space = tv_space(31, (H, W))
        assert list(table) == list(space)
        for name, spec in table.items():
            mags, signed = space[name]
            assert spec.signed == signed, name
            if mags.ndim:  # ops with magnitudes: the same numbers, bin for bin
                assert torch.equal(_bin_magnitudes(name, spec, 31, H, W), mags.float()), name
    assert list(TRIVIAL_AUGMENT_OPS)[1:6] == list(GEOMETRIC_OPS)


def op_cases() -> list[tuple[str, str]]:
    return [(t, name) for t in TABLES for name in TABLES[t][0]]


@pytest.mark.parametrize("table_name,name", op_cases())
def test_each_op_matches_torchvision(table_name: str, name: str) -> None:
    """Eight images, each at its own magnitude (bins 0, 9, 20, 30, each sign for signed ops) in
    one call, each against torchvision's op on that image alone."""
    table = TABLES[table_name][0]
    bins = _bin_magnitudes(name, table[name], 31, H, W)[[0, 9, 20, 30]]
    mags = torch.cat([bins, -bins if table[name].signed else bins])  # (8,)
    u8 = photo_like(8)
    ids = torch.full((8,), list(table).index(name))
    ours = _apply_ops(u8.float() / 255, table, ids, mags) * 255
    ref = torch.stack([tv_op(img, name, float(m)) for img, m in zip(u8, mags)]).float()
    if name in GEOMETRIC_OPS:
        # NEAREST, as torchvision's policies: the same pixel except where a sample point lies on
        # a half-pixel tie (shear 0.2 about the corner: every other row), which float rounding
        # of the two grids may break either way.
        theta = _inverse_affine(list(table), ids, mags.double(), H, W)
        grid = F.affine_grid(theta.float(), [8, 3, H, W], align_corners=False)
        src = (grid + 1) * torch.tensor([W, H]) / 2 - 0.5  # sample points, in input pixels
        tie = ((src - src.floor() - 0.5).abs() < 1e-3).any(-1).unsqueeze(1).expand_as(ours)  # (8, 3, H, W)
        assert torch.equal(ours[~tie], ref[~tie])
        # the exact check of the matrices: bilinear, on floats, against torchvision's
        smooth = _geometric(u8.float() / 255, theta, mode="bilinear")
        ref_f = torch.stack([tv_op(img.float() / 255, name, float(m), InterpolationMode.BILINEAR)
                             for img, m in zip(u8, mags)])
        assert torch.allclose(smooth, ref_f, atol=1e-4)
    elif name in ("Identity", "Posterize", "Solarize", "Equalize"):
        assert torch.equal(ours.round(), ref)  # uint8 ops on uint8 levels: exact
        assert (ours - ours.round()).abs().max() < 1e-3
    else:
        # torchvision's uint8 path truncates each result to a whole level: ours - ref in [0, 1).
        # Color / Contrast also floor the gray, Sharpness rounds the smoothed image, an error
        # in (-1, 1), resp. [-0.5, 0.5], weighted by 1 - factor in (-1, 1): ours - ref in (-1, 2).
        # On float input torchvision computes what we do, to float error.
        lo, hi = (0, 1) if name in ("Brightness", "AutoContrast") else (-1, 2)
        diff = ours - ref
        assert diff.min() > lo - 1e-3 and diff.max() < hi + 1e-3
        ref_f = torch.stack([tv_op(img.float() / 255, name, float(m)) for img, m in zip(u8, mags)])
        assert torch.allclose(ours / 255, ref_f, atol=1e-5)


def normalise(u8: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (u8.float() / 255 - mean) / std


def augmenters() -> dict[str, BatchTransform]:
    return {"rand_augment": rand_augment(), "trivial_augment": trivial_augment()}


def test_policies_keep_shape_dtype_labels_and_replay() -> None:
    x, y = normalise(photo_like(16)), torch.arange(16) % C
    for name, transform in augmenters().items():
        x_in = x.clone()
        a, b, c = (transform(x, y, gen(s)) for s in (1, 1, 2))
        assert a[0].shape == x.shape and a[0].dtype == x.dtype and a[1] is y, name
        assert torch.equal(x, x_in), name  # the input is not modified
        assert torch.equal(a[0], b[0]), name  # the same seed replays bit for bit
        assert not torch.equal(a[0], c[0]), name
        # in pixel range: within the normalised images of black and white
        lo, hi = normalise(torch.zeros(1, 3, 1, 1)), normalise(torch.full((1, 3, 1, 1), 255))
        assert bool((a[0] >= lo - 1e-5).all() and (a[0] <= hi + 1e-5).all()), name


def test_each_image_draws_its_own_ops() -> None:
    x = normalise(photo_like(1).expand(32, -1, -1, -1))  # 32 copies of one image
    y = torch.zeros(32, dtype=torch.long)
    for name, transform in augmenters().items():
        out = transform(x, y, gen(0))[0].flatten(1)
        distinct = len({tuple(row.tolist()) for row in out})
        # RandAugment: 14 x 14 op pairs x signs; TrivialAugment: 14 ops x 31 bins x signs
        assert distinct >= 16, (name, distinct)


def test_identity_ops_at_magnitude_zero_return_the_input_exactly() -> None:
    identity_ish = {n: RAND_AUGMENT_OPS[n] for n in ("Identity", *GEOMETRIC_OPS, "Brightness", "Color",
                                                       "Contrast", "Sharpness", "Posterize")}  # Posterize: 8 bits
    x, y = normalise(photo_like(16)), torch.arange(16) % C
    assert torch.equal(_policy(identity_ish, 3, 31, 0)(x, y, gen(0))[0], x)
    assert torch.equal(rand_augment(num_ops=0)(x, y, gen(0))[0], x)


def test_bad_policy_arguments_refused() -> None:
    for make in (lambda: rand_augment(num_ops=-1), lambda: rand_augment(magnitude=31),
                 lambda: rand_augment(magnitude=-1), lambda: trivial_augment(num_magnitude_bins=1)):
        with pytest.raises(ValueError):
            make()


def test_policies_in_the_loader_replay_exactly() -> None:
    data = tiny_set()
    for extra in augmenters().values():
        def loader() -> BatchLoader:
            fresh = BatchLoader(data, 8, train=True, image_dim=12, seed=3, extras=[extra])
            fresh.set_epoch(1)
            return fresh

        first = list(loader())
        assert all(torch.equal(x, xa) for (x, _), (xa, _) in zip(first, list(loader())))
        resumed = list(loader().iterate(start_step=1))
        assert all(torch.equal(x, xa) for (x, _), (xa, _) in zip(first[1:], resumed))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_policies_on_cuda_match_the_cpu() -> None:
    x, y = normalise(photo_like(16)), torch.arange(16) % C
    for name, transform in augmenters().items():
        cpu = transform(x, y, gen(5))[0]
        out, y_out = transform(x.cuda(), y.cuda(), gen(5))
        assert out.device.type == "cuda" and out.dtype == x.dtype and torch.equal(y_out.cpu(), y), name
        # the draws are on the CPU: the same ops; values agree but for rare nearest-neighbour ties
        assert ((out.cpu() - cpu).abs() < 1e-4).float().mean() > 0.99, name
