"""Tests of common/augment.py: mixup, cutmix, random erasing as loader extras with soft targets.

Batches are built so that their pixels say what they are (image i is the constant i + 1), so a
test can read back from the output how much of each image, and whose, each sample holds.
"""

from __future__ import annotations

import math

import pytest
import torch

from common.augment import cutmix, mixup, mixup_or_cutmix, random_erasing, soft_targets
from common.cache import ImageSet
from common.loader import BatchLoader, BatchTransform

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
