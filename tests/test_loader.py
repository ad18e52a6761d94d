"""Tests of common/loader.py: batches of an in-memory ImageSet, augmented in batch.

Images are built so that their pixels say what they are (a constant value = their index, a
ramp along x), so a test can read back from a batch which image it is, where it was cropped
and whether it was flipped.
"""

from __future__ import annotations

import pytest
import torch

from common.cache import ImageSet
from common.loader import EVAL_VIEWS, IMAGENET_MEAN, IMAGENET_STD, BatchLoader, shard_indices

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to [0, 255] floats."""
    return (x * STD + MEAN) * 255


def indexed_set(n: int = 37, side: int = 12, n_classes: int = 5) -> ImageSet:
    """Image i is the constant value i (n <= 256), label i % n_classes: any crop names it."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, side, side, 3).clone()
    return ImageSet(images, torch.arange(n) % n_classes)


def ids(x: torch.Tensor) -> torch.Tensor:
    """Which image of indexed_set each sample of a batch is (constant images stay constant)."""
    pix = to_pixels(x)
    assert (pix.amax(dim=(1, 2, 3)) - pix.amin(dim=(1, 2, 3))).max() < 1e-3
    return pix[:, 0, 0, 0].round().long()


def random_set(n: int = 24, side: int = 16, seed: int = 0, aspect: float | None = None) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=g)
    return ImageSet(images, torch.arange(n) % 4, None if aspect is None else torch.full((n,), aspect))


def ramp_set(n: int, side: int, axis: int, aspect: float = 1.0) -> ImageSet:
    """Every image a ramp of 10 * position + 5 along ``axis`` (2: x, 1: y) of the stored square."""
    pos = torch.arange(side, dtype=torch.float32) * 10 + 5
    ramp = pos.view(1, 1, side, 1) if axis == 2 else pos.view(1, side, 1, 1)
    images = ramp.expand(n, side, side, 3).to(torch.uint8).clone()
    return ImageSet(images, torch.zeros(n, dtype=torch.int64), torch.full((n,), aspect))


def epoch(loader: BatchLoader, e: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(e)
    return list(loader)


# ---------------------------------------------------------------------------------------------
# Batches: shape, dtype, range, labels
# ---------------------------------------------------------------------------------------------


def test_shapes_dtype_and_length() -> None:
    data = random_set(n=24, side=16)
    for train, drop_last, sizes in ((True, True, [10, 10]), (True, False, [10, 10, 4]),
                                    (False, False, [10, 10, 4])):
        loader = BatchLoader(data, 10, train=train, image_dim=8, drop_last=drop_last)
        batches = list(loader)
        assert len(loader) == len(batches) == len(sizes)
        for (x, y), b in zip(batches, sizes):
            assert x.shape == (b, 3, 8, 8) and x.dtype == torch.float32
            assert y.shape == (b,) and y.dtype == torch.int64
    assert len(BatchLoader(data, 10, train=True, image_dim=8)) == 2  # train drops the last by default
    assert len(BatchLoader(data, 10, train=False, image_dim=8)) == 3  # eval keeps it


def test_values_are_normalised() -> None:
    data = random_set(n=32, side=16)
    for train in (True, False):
        x, _ = next(iter(BatchLoader(data, 32, train=train, image_dim=12)))
        lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD  # where [0, 1] lands per channel
        assert (x >= lo - 1e-4).all() and (x <= hi + 1e-4).all()
        pix = to_pixels(x) / 255
        assert pix.min() > -1e-4 and pix.max() < 1 + 1e-4
        assert 0.4 < pix.mean() < 0.6 and pix.std() > 0.15  # uniform noise, not squashed to a colour
        assert abs(x.mean().item()) < 0.5  # roughly centred, as normalisation means


def test_labels_follow_their_images() -> None:
    data = indexed_set(n=37, n_classes=5)
    for train in (True, False):
        for x, y in BatchLoader(data, 8, train=train, image_dim=6, seed=3):
            assert torch.equal(y, ids(x) % 5)


# ---------------------------------------------------------------------------------------------
# Epochs: coverage, permutation, seed, resume, shards
# ---------------------------------------------------------------------------------------------


def test_every_image_once_per_epoch_and_new_order_each_epoch() -> None:
    data = indexed_set(n=37)
    loader = BatchLoader(data, 8, train=True, image_dim=6, drop_last=False)
    orders = []
    for e in range(3):
        seen = torch.cat([ids(x) for x, _ in epoch(loader, e)])
        assert sorted(seen.tolist()) == list(range(37))
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    assert not torch.equal(orders[0], torch.arange(37))  # shuffled
    assert torch.equal(torch.cat([ids(x) for x, _ in epoch(loader, 1)]), orders[1])  # replayable


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    data = random_set(n=24, side=16)

    def noise(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return x + torch.rand(1, generator=g), y  # an extra drawing from the step's generator

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return epoch(BatchLoader(data, 8, train=True, image_dim=12, seed=seed, extras=[noise]), 2)

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not any(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_resume_from_a_step() -> None:
    """A restarted run (a fresh loader) that starts at step k gets batches k.. of the epoch."""
    data = random_set(n=40, side=16)

    def loader() -> BatchLoader:
        fresh = BatchLoader(data, 6, train=True, image_dim=12, seed=1, drop_last=False)
        fresh.set_epoch(3)
        return fresh

    full = list(loader())
    assert len(full) == 7
    for k in (0, 1, 4, 6, 7):
        resumed = list(loader().iterate(start_step=k))
        assert len(resumed) == len(full) - k
        for (x, y), (fx, fy) in zip(resumed, full[k:]):
            assert torch.equal(x, fx) and torch.equal(y, fy)


def test_two_ranks_split_the_set() -> None:
    data = indexed_set(n=37)

    def rank_ids(rank: int, drop_last: bool, train: bool = True) -> list[list[int]]:
        loader = BatchLoader(data, 4, train=train, image_dim=6, seed=5, rank=rank, world_size=2,
                             drop_last=drop_last)
        batches = [ids(x).tolist() for x, _ in epoch(loader, 1)]
        assert len(batches) == len(loader)
        return batches

    for train in (True, False):  # all of it, no overlap
        r0, r1 = (sum(rank_ids(r, False, train), []) for r in (0, 1))
        assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(37))
        assert len(r0) == 19 and len(r1) == 18
    r0, r1 = rank_ids(0, True), rank_ids(1, True)  # DDP: same number of full steps on each rank
    assert len(r0) == len(r1) == 4 and all(len(b) == 4 for b in r0 + r1)
    assert not set(sum(r0, [])) & set(sum(r1, []))
    # the ranks agree on the permutation: their shards interleave back into one epoch
    assert torch.equal(torch.stack([shard_indices(37, 1, 5, r, 2, equal=True) for r in (0, 1)], 1).flatten(),
                       shard_indices(37, 1, 5)[:36])


# ---------------------------------------------------------------------------------------------
# Geometry: eval centre crop, identity crop, flips
# ---------------------------------------------------------------------------------------------


def test_eval_is_deterministic_and_identity_on_a_square_source() -> None:
    data = random_set(n=10, side=16)
    loader = BatchLoader(data, 4, train=False, image_dim=16, eval_crop=1.0, seed=0)
    x = torch.cat([x for x, _ in loader])
    assert torch.allclose(to_pixels(x), data.images.permute(0, 3, 1, 2).float(), atol=1.01)
    again = torch.cat([x for x, _ in epoch(BatchLoader(data, 4, train=False, image_dim=16,
                                                       eval_crop=1.0, seed=9), 5)])
    assert torch.equal(x, again)  # neither the seed nor the epoch changes eval batches
    default = BatchLoader(data, 10, train=False, image_dim=12)  # eval_crop 0.875
    assert torch.equal(next(iter(default))[0], next(iter(default))[0])


def test_eval_crop_undoes_the_squash() -> None:
    """A source twice as wide as high, squashed into the square: the centre crop (of the short
    side) is the central half of the stored width, all of its height; and the other way round."""
    side, dim = 16, 8
    wide = BatchLoader(ramp_set(2, side, axis=2, aspect=2.0), 2, train=False, image_dim=dim, eval_crop=1.0)
    x = to_pixels(next(iter(wide))[0])  # (2, 3, 8, 8)
    centre = torch.arange(side // 4, 3 * side // 4) * 10.0 + 5  # stored columns 4..11
    assert torch.allclose(x, centre.view(1, 1, 1, dim).expand_as(x), atol=1.01)

    tall = BatchLoader(ramp_set(2, side, axis=1, aspect=0.5), 2, train=False, image_dim=dim, eval_crop=1.0)
    x = to_pixels(next(iter(tall))[0])
    assert torch.allclose(x, centre.view(1, 1, dim, 1).expand_as(x), atol=1.01)

    # without the aspect (a square source) the same stored image is resized whole: 2 columns -> 1
    square = BatchLoader(ramp_set(2, side, axis=2), 2, train=False, image_dim=dim, eval_crop=1.0)
    x = to_pixels(next(iter(square))[0])
    whole = torch.arange(dim) * 20.0 + 10  # the mean of columns 2k and 2k + 1
    assert torch.allclose(x, whole.view(1, 1, 1, dim).expand_as(x), atol=1.01)


def test_full_crop_without_flip_is_the_identity() -> None:
    data = random_set(n=12, side=16, aspect=1.0)
    loader = BatchLoader(data, 6, train=True, image_dim=16, scale=(1, 1), ratio=(1, 1), hflip=False,
                         drop_last=False, seed=4)
    for e in range(2):
        loader.set_epoch(e)
        for x, y in loader:
            src = data.images[y.new_tensor([_find(data, xi) for xi in x])].permute(0, 3, 1, 2).float()
            assert torch.allclose(to_pixels(x), src, atol=1e-2)


def _find(data: ImageSet, x: torch.Tensor) -> int:
    """Index of the stored image that ``x`` (one normalised sample) reproduces."""
    err = (to_pixels(x[None]) - data.images.permute(0, 3, 1, 2).float()).abs().flatten(1).amax(1)
    return int(err.argmin())


def test_hflip_flips_about_half() -> None:
    n, side = 256, 8
    data = ramp_set(n, side, axis=2)
    loader = BatchLoader(data, n, train=True, image_dim=side, scale=(1, 1), ratio=(1, 1), seed=2)
    x = to_pixels(next(iter(loader))[0])
    ramp = data.images[0].permute(2, 0, 1).float()
    same = (x - ramp).abs().flatten(1).amax(1) < 1e-2
    flipped = (x - ramp.flip(-1)).abs().flatten(1).amax(1) < 1e-2
    assert (same ^ flipped).all()  # each one is the image or its mirror, nothing in between
    assert 96 < int(flipped.sum()) < 160  # p = 0.5: 128 +- 4 sigma
    no_flip = BatchLoader(data, n, train=True, image_dim=side, scale=(1, 1), ratio=(1, 1), hflip=False)
    assert torch.allclose(to_pixels(next(iter(no_flip))[0]), ramp.expand(n, -1, -1, -1), atol=1e-2)


def test_random_crop_size_is_torchvisions_in_the_source_geometry() -> None:
    """With scale and ratio pinned, each crop covers area fraction s of the *source* with
    width / height = r in source pixels, whatever the squash: read back from a 2-D ramp."""
    side, dim, n = 32, 8, 16
    pos = torch.arange(side, dtype=torch.float32) * 8 + 4
    images = torch.stack([pos.view(1, side).expand(side, side), pos.view(side, 1).expand(side, side),
                          torch.zeros(side, side)], dim=-1).to(torch.uint8)  # R: x ramp, G: y ramp

    def crop_fractions(aspect: float, s: float, r: float) -> tuple[torch.Tensor, torch.Tensor]:
        data = ImageSet(images.expand(n, -1, -1, -1).clone(), torch.zeros(n, dtype=torch.int64),
                        torch.full((n,), aspect))
        x = to_pixels(next(iter(BatchLoader(data, n, train=True, image_dim=dim, scale=(s, s),
                                            ratio=(r, r), hflip=False, seed=3)))[0])
        per_fraction = 8 * side * (dim - 1) / dim  # ramp span of a crop of fraction 1
        return ((x[:, 0, :, -1] - x[:, 0, :, 0]).mean(1) / per_fraction,
                (x[:, 1, -1, :] - x[:, 1, 0, :]).mean(1) / per_fraction)

    for aspect, s, r in ((2.0, 0.25, 1.0), (2.0, 0.25, 2.0), (0.5, 0.3, 0.75), (1.0, 0.4, 4 / 3)):
        fw, fh = crop_fractions(aspect, s, r)  # fractions of the stored (squashed) width, height
        assert torch.allclose(fw * fh, torch.full((n,), s), atol=1e-3)  # area fraction s
        assert torch.allclose(fw / fh * aspect, torch.full((n,), r), atol=1e-3)  # w / h in the source
    # a crop that cannot fit (the whole area at ratio 1 of a 2:1 source) shrinks to the largest
    # one that does, keeping the ratio: the source's full height, half the stored width
    fw, fh = crop_fractions(2.0, 1.0, 1.0)
    assert torch.allclose(fw, torch.full((n,), 0.5), atol=1e-3) and torch.allclose(fh, torch.ones(n), atol=1e-3)


def test_random_crop_stays_inside_the_image() -> None:
    """Small crops of a wide source still sample inside it: x ramp values stay in its range,
    and crops differ (zoom and position are random)."""
    data = ramp_set(64, 16, axis=2, aspect=4 / 3)
    x = to_pixels(next(iter(BatchLoader(data, 64, train=True, image_dim=8, scale=(0.1, 0.5), seed=1)))[0])
    assert x.min() >= 5 - 1e-3 and x.max() <= 155 + 1e-3
    widths = (x[..., -1] - x[..., 0]).abs().mean(dim=(1, 2))  # how much of the ramp each crop spans
    assert widths.max() < 150 * 0.8 and widths.std() > 1  # never the whole width; varied zoom


# ---------------------------------------------------------------------------------------------
# Hooks and layout
# ---------------------------------------------------------------------------------------------


def test_extras_get_the_batch_and_can_replace_labels() -> None:
    data = indexed_set(n=20, n_classes=4)
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Generator]] = []

    def record(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append((x.clone(), y.clone(), g))
        return x, y

    def soft_targets(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 0, torch.nn.functional.one_hot(y, 4).float() * 0.9 + 0.025  # smoothing, say

    loader = BatchLoader(data, 5, train=True, image_dim=6, extras=[record, soft_targets])
    for x, y in loader:
        xs, ys, g = calls[-1]
        assert isinstance(g, torch.Generator)
        assert xs.shape == (5, 3, 6, 6) and xs.dtype == torch.float32
        assert torch.equal(ys, ids(xs) % 4)  # normalised images and their integer labels
        assert torch.equal(x, torch.zeros_like(x))  # the hooks' output is what comes out
        assert y.shape == (5, 4) and torch.allclose(y.argmax(1), ys) and torch.allclose(y.sum(1), torch.ones(5))
    assert len(calls) == len(loader) == 4

    calls.clear()
    list(BatchLoader(data, 5, train=False, image_dim=6, extras=[record]))
    assert calls == []  # eval batches are never augmented


def test_channels_last() -> None:
    data = random_set(n=8, side=16)
    for train in (True, False):
        x, _ = next(iter(BatchLoader(data, 4, train=train, image_dim=8, channels_last=True)))
        assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (4, 3, 8, 8)
        x, _ = next(iter(BatchLoader(data, 4, train=train, image_dim=8)))
        assert x.is_contiguous()


# ---------------------------------------------------------------------------------------------
# Evaluation views: flips, five and ten crops (AlexNet Sec. 4.1), scales (VGG Sec. 3.2)
# ---------------------------------------------------------------------------------------------

VIEW_COUNTS = {"center": 1, "flip": 2, "5crop": 5, "10crop": 10}


def test_eval_views_shapes_counts_and_labels() -> None:
    assert set(VIEW_COUNTS) == set(EVAL_VIEWS)
    data = indexed_set(n=23, side=12, n_classes=5)
    for views in EVAL_VIEWS:
        for scales, dims in (((1.0,), [8]), ((0.5, 1.0, 1.25), [4, 8, 10])):
            for channels_last in (False, True):
                loader = BatchLoader(data, 10, train=False, image_dim=8, views=views, scales=scales,
                                     channels_last=channels_last)
                batches = list(loader.iterate_views())
                assert len(batches) == len(loader) == 3
                for (xs, y), (x0, y0), b in zip(batches, loader, (10, 10, 3)):
                    assert len(xs) == VIEW_COUNTS[views] * len(scales)
                    sizes = [d for d in dims for _ in range(VIEW_COUNTS[views])]  # scale by scale
                    for x, d in zip(xs, sizes):
                        assert x.shape == (b, 3, d, d) and x.dtype == torch.float32
                        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
                        assert torch.equal(y, ids(x) % 5)  # every view of image i is image i
                    assert torch.equal(y, y0)


def test_center_view_is_what_iterate_yields() -> None:
    data = random_set(n=20, side=16, aspect=1.5)
    for views in EVAL_VIEWS:
        for scales in ((1.0,), (0.75, 1.0)):
            loader = BatchLoader(data, 8, train=False, image_dim=12, views=views, scales=scales)
            at_one = scales.index(1.0) * VIEW_COUNTS[views]  # the first view at scale 1
            for (xs, y), (x, y0) in zip(loader.iterate_views(), loader, strict=True):
                assert torch.equal(xs[at_one], x) and torch.equal(y, y0)
    plain = BatchLoader(data, 8, train=False, image_dim=12)
    ten = BatchLoader(data, 8, train=False, image_dim=12, views="10crop")
    assert all(torch.equal(x, xs[0]) for (x, _), (xs, _) in zip(plain, ten.iterate_views(), strict=True))
    assert plain._source is None and ten._source is not None  # the source is kept only for views


def test_flip_views_are_exact_mirrors() -> None:
    data = random_set(n=9, side=16, aspect=0.8)
    xs, _ = next(BatchLoader(data, 9, train=False, image_dim=12, views="flip").iterate_views())
    assert torch.equal(xs[1], xs[0].flip(-1)) and not torch.equal(xs[1], xs[0])
    xs, _ = next(BatchLoader(data, 9, train=False, image_dim=12, views="10crop",
                             scales=(1.0, 0.5)).iterate_views())
    for i in range(5):
        for at in (0, 10):
            assert torch.equal(xs[at + 5 + i], xs[at + i].flip(-1))
    assert not any(torch.equal(xs[i], xs[j]) for i in range(5) for j in range(i))  # five places


def quadrant_set(n: int, side: int, aspect: float) -> tuple[ImageSet, torch.Tensor]:
    """Images whose stored quadrants are four colours: top-left, top-right, bottom-left, -right."""
    colours = torch.tensor([[200, 20, 20], [20, 200, 20], [20, 20, 200], [200, 200, 20]], dtype=torch.uint8)
    img = torch.empty(side, side, 3, dtype=torch.uint8)
    h = side // 2
    img[:h, :h], img[:h, h:], img[h:, :h], img[h:, h:] = colours
    return ImageSet(img.expand(n, -1, -1, -1).clone(), torch.zeros(n, dtype=torch.int64),
                    torch.full((n,), aspect)), colours.float()


def test_ten_crop_corners_pick_up_their_quadrants() -> None:
    # A square source, crops of 0.4 x the side; and a 2:1 source, whose crop of 0.45 x the short
    # side is 0.225 of the stored width: either way each corner crop lies inside one quadrant.
    for aspect, eval_crop in ((1.0, 0.4), (2.0, 0.45)):
        data, colours = quadrant_set(3, 16, aspect)
        loader = BatchLoader(data, 3, train=False, image_dim=4, eval_crop=eval_crop, views="10crop")
        xs, _ = next(loader.iterate_views())
        for k in range(4):  # views 1..4: the corners; 6..9: their mirrors
            for view in (xs[1 + k], xs[6 + k]):
                want = colours[k].view(1, 3, 1, 1).expand(3, 3, 4, 4)
                assert torch.allclose(to_pixels(view), want, atol=1.01), (aspect, k)
        centre = to_pixels(xs[0]).mean(dim=(0, 2, 3))  # straddles all four: their mean colour
        assert torch.allclose(centre, colours.mean(0), atol=1.01)


def test_corner_crops_sit_at_the_source_edges() -> None:
    """A 2:1 source: its square crops (eval_crop 1) are the left, central and right halves of
    the stored width, all of its height; a 1:2 source: the top, central and bottom halves."""
    side, dim = 16, 8
    left, right = torch.arange(0, 8) * 10.0 + 5, torch.arange(8, 16) * 10.0 + 5
    for aspect, axis in ((2.0, 2), (0.5, 1)):
        loader = BatchLoader(ramp_set(2, side, axis=axis, aspect=aspect), 2, train=False, image_dim=dim,
                             eval_crop=1.0, views="5crop")
        xs, _ = next(loader.iterate_views())
        # top-left, top-right, bottom-left, bottom-right: which half of the ramp each one shows
        for x, half in zip(xs[1:], (left, right, left, right) if axis == 2 else (left, left, right, right)):
            want = half.view(1, 1, 1, dim) if axis == 2 else half.view(1, 1, dim, 1)
            assert torch.allclose(to_pixels(x), want.expand_as(x), atol=1.01)


def test_scales_resample_the_same_square() -> None:
    """Each scale is the eval square at round(image_dim * s) pixels: at s = side / image_dim
    (and eval_crop 1) it is the stored image itself."""
    data = random_set(n=4, side=16)
    loader = BatchLoader(data, 4, train=False, image_dim=8, eval_crop=1.0, views="flip",
                         scales=(2.0, 0.625, 1.0))
    xs, _ = next(loader.iterate_views())
    assert [x.shape[-1] for x in xs] == [16, 16, 5, 5, 8, 8]
    assert torch.allclose(to_pixels(xs[0]), data.images.permute(0, 3, 1, 2).float(), atol=1.01)
    assert torch.equal(xs[1], xs[0].flip(-1))


def test_views_follow_the_shards_and_resume() -> None:
    data = indexed_set(n=37)

    def views_ids(rank: int, start: int = 0) -> list[int]:
        loader = BatchLoader(data, 4, train=False, image_dim=6, rank=rank, world_size=2, views="10crop",
                             scales=(0.5, 1.0))
        seen = []
        for xs, y in loader.iterate_views(start_step=start):
            assert all(torch.equal(ids(x), ids(xs[0])) for x in xs)
            seen += ids(xs[0]).tolist()
        assert seen == torch.cat([ids(x) for x, _ in loader])[start * 4:].tolist()
        return seen

    r0, r1 = views_ids(0), views_ids(1)
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(37))
    assert views_ids(1, start=2) == r1[8:]


def test_view_names_and_bad_views_refused() -> None:
    data = random_set(n=4, side=8)

    def name(**kw: object) -> str:
        return BatchLoader(data, 4, train=False, image_dim=8, **kw).view_name

    assert name() == "center" and name(views="10crop") == "10crop"
    assert name(views="flip", scales=(0.875, 1.0, 8 / 7)) == "flip@0.875,1,1.143"
    assert name(scales=[1.0, 1.5]) == "center@1,1.5"
    with pytest.raises(ValueError, match="choose one of 'center', 'flip', '5crop', '10crop'"):
        name(views="12crop")
    for bad in ((0.0,), (1.0, -0.5), (), (float("nan"),), (float("inf"),), (0.01,)):
        with pytest.raises(ValueError, match="scales must be positive"):
            name(scales=bad)
    with pytest.raises(ValueError, match="train=False"):
        BatchLoader(data, 4, train=True, image_dim=8, views="flip")
    with pytest.raises(RuntimeError, match="evaluation"):
        next(BatchLoader(data, 4, train=True, image_dim=8).iterate_views())


def test_scale_jitter_cuts_an_image_dim_square_of_the_rescaled_short_side(monkeypatch) -> None:
    """VGG Sec. 3.1 / ResNet Sec. 3.4: short side S ~ U(lo, hi) x image_dim, then an image_dim
    crop: the square is image_dim / S = 1/u of the short side, whatever the aspect ratio."""
    images = torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
    data = ImageSet(images, torch.arange(4), aspect=torch.tensor([2.0, 0.5, 1.0, 4 / 3]))
    boxes = []
    loader = BatchLoader(data, 4, train=True, image_dim=8, scale_jitter=(2.0, 2.0), hflip=False)
    real = loader._sample
    monkeypatch.setattr(loader, "_sample", lambda src, sx, sy, cx, cy, d=None: boxes.append((sx, sy)) or
                        real(src, sx, sy, cx, cy, d))
    next(iter(loader))
    sx, sy = boxes[0]
    # u = 2: half the short side. Wide (a = 2): half the height, a quarter of the width.
    assert torch.allclose(sx, torch.tensor([0.25, 0.5, 0.5, 0.375]))
    assert torch.allclose(sy, torch.tensor([0.5, 0.25, 0.5, 0.5]))
    square = ImageSet(images, torch.arange(4))  # aspect 1 (batches are shuffled)
    wide = BatchLoader(square, 4, train=True, image_dim=8, scale_jitter=(1.5, 3.0), hflip=False)
    monkeypatch.setattr(wide, "_sample", lambda src, sx, sy, cx, cy, d=None: boxes.append((sx, sy)) or src)
    for epoch in range(20):
        wide.set_epoch(epoch)
        next(iter(wide))
    u = torch.cat([1 / b[1] for b in boxes[1:]])  # square images: sx = sy = 1/u
    assert torch.equal(torch.cat([b[0] for b in boxes[1:]]), torch.cat([b[1] for b in boxes[1:]]))
    assert u.min() >= 1.5 - 1e-6 and u.max() <= 3.0 + 1e-6 and u.max() - u.min() > 0.8
    with pytest.raises(ValueError, match="scale_jitter"):
        BatchLoader(data, 4, train=True, image_dim=8, scale_jitter=(0.5, 2.0))
