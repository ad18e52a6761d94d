"""Batches from an in-memory uint8 image set, augmented in batch on the device.

No DataLoader, no per-image Python work (the airbench way): the whole split sits on the device
as uint8; each epoch is a seeded permutation, cut into slices; each slice is cropped, resized,
flipped and normalised for the whole batch at once by one ``affine_grid`` + ``grid_sample``.

Crops are computed in the *source* image's geometry (the cache stores each image squashed to a
square with its width/height ratio beside it, see common/cache.py), so random-resized-crop's
scale and ratio mean what they mean in torchvision, and the squash is undone by the sampling.

Randomness is a function of (seed, epoch, step) only, so a run resumed at any step sees the
same batches it would have seen without stopping, and every DDP rank agrees on the permutation.

Evaluation views (``iterate_views``), cut in batch the same way:
  AlexNet's ten-crop test: Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NeurIPS 2012, Sec. 4.1.
  VGG's multi-scale test: Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale
    Image Recognition", arXiv:1409.1556, Sec. 3.2 and Table 4.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from common.cache import ImageSet

# ImageNet channel statistics (torchvision's), the usual normalisation for Imagenette too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A hook for per-architecture extras (mixup, cutmix, random erasing, colour ops ...):
# (images (B, 3, H, W) float normalised, labels, generator) -> (images, labels or soft targets).
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]

# Evaluation views of each image, as iterate_views yields them (see BatchLoader).
EVAL_VIEWS = ("center", "flip", "5crop", "10crop")
# Where the five crops sit, in units of the room left around the crop (grid y = -1 is the top):
# centre, top-left, top-right, bottom-left, bottom-right, the order of AlexNet's Sec. 4.1 list.
_FIVE_CROPS = ((0.0, 0.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0))


def shard_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                  shuffle: bool = True, equal: bool = False) -> torch.Tensor:
    """This rank's share of one epoch: a permutation seeded by (seed, epoch), dealt round-robin.

    ``equal`` truncates every shard to the same length (DDP needs the same number of training
    steps on every rank); otherwise the shards cover all n indices with no overlap.
    """
    if shuffle:
        g = torch.Generator().manual_seed(_mix(seed, epoch))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    if equal:
        order = order[: n // world_size * world_size]
    return order[rank::world_size]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor (the batch's indices, crop boxes, a batch transform's per-image draws) on
    ``device`` without stalling the host: on CUDA a plain copy from pageable memory waits for the
    GPU's queue to drain, so the copy is made from pinned memory, non-blocking, and queued behind
    the work already there. Other devices (MPS, XPU, meta) get a plain copy; the CPU none.
    The one host-to-device copy of the per-batch path: tests/test_syncs.py allows it by name."""
    if t.device == device:
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _mix(*xs: int) -> int:
    """A deterministic seed from several integers (Python's hash() is salted for strings only)."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (x + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFF
    return h


def progressive_dim(epoch: int, num_epochs: int, image_dim: int, start_dim: int,
                    ramp: tuple[float, float]) -> int:
    """The training crop of ``epoch`` under progressive resizing: ``start_dim`` until the
    fraction ramp[0] of the epochs, then linear to ``image_dim`` at ramp[1], after that
    ``image_dim``; a multiple of 8 on the way (fewer distinct sizes: fewer kernel plans, fewer
    recompiles with COMPILE). ``start_dim`` 0 is off. Small early images are cheap (the cost of
    a step grows with the pixels) while the weights are still coarse; the last epochs train at
    the full size so that BatchNorm's statistics and the filters fit the size evaluated."""
    if not start_dim:
        return image_dim
    t = epoch / max(num_epochs, 1)
    lo, hi = ramp
    w = 1.0 if t >= hi else 0.0 if t < lo else (t - lo) / (hi - lo)
    return image_dim if w >= 1 else 8 * round((start_dim + w * (image_dim - start_dim)) / 8)


def train_dim(cfg: dict, epoch: int) -> int:
    """The training crop of ``epoch`` under a run's constants (IMAGE_DIM, START_IMAGE_DIM, RESIZE_RAMP)."""
    return progressive_dim(epoch, cfg["NUM_EPOCHS"], cfg["IMAGE_DIM"], cfg["START_IMAGE_DIM"],
                           tuple(cfg["RESIZE_RAMP"]))


def training_dims(cfg: dict) -> list[int]:
    """Every training crop the constants make, in epoch order, repeats removed."""
    return list(dict.fromkeys(train_dim(cfg, e) for e in range(cfg["NUM_EPOCHS"])))


class BatchLoader:
    """Iterate (images, labels) batches of an ImageSet on ``device``.

    Train mode: random-resized-crop (``scale``, ``ratio`` as in torchvision), horizontal flip,
    then ``extras``. Eval mode: the deterministic resize + centre crop (``eval_crop`` of the
    short side, 0.875 = the usual 224/256), computed once and kept as uint8.

    Eval mode also offers several views of each image through ``iterate_views`` (``views``, one
    of EVAL_VIEWS, at each of ``scales``); plain iteration always yields the centre crop alone.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, train: bool, image_dim: int,
                 device: torch.device | str = "cpu", seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool | None = None, scale: tuple[float, float] = (0.35, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True, eval_crop: float = 0.875,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channels_last: bool = False, extras: Sequence[BatchTransform] = (), views: str = "center",
                 scales: Sequence[float] = (1.0,), scale_jitter: tuple[float, float] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if views not in EVAL_VIEWS:
            raise ValueError(f"unknown eval views {views!r}; choose one of "
                             f"{', '.join(map(repr, EVAL_VIEWS))}")
        scales = tuple(float(s) for s in scales)
        if not scales or not all(0 < s < math.inf and round(image_dim * s) >= 1 for s in scales):
            raise ValueError(f"eval scales must be positive numbers, each giving at least 1 pixel (the test "
                             f"image is image_dim * s pixels wide, e.g. (0.875, 1.0, 1.143)), got {scales}")
        if train and (views, scales) != ("center", (1.0,)):
            raise ValueError(f"views={views!r}, scales={scales} are evaluation views: give them to a "
                             f"loader with train=False")
        if scale_jitter is not None and not 1 <= scale_jitter[0] <= scale_jitter[1]:
            raise ValueError(f"scale_jitter must be (lo, hi) with 1 <= lo <= hi (the short side S as a "
                             f"multiple of image_dim), got {scale_jitter}")
        self.views, self.scales, self.scale_jitter = views, scales, scale_jitter
        self.device = torch.device(device)
        self.batch_size, self.train, self.image_dim = batch_size, train, image_dim
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.scale, self.ratio, self.hflip, self.eval_crop = scale, ratio, hflip, eval_crop
        self.channels_last, self.extras = channels_last, list(extras)
        self.labels = data.labels.to(self.device)
        self.aspect = data.aspect.cpu()  # crop parameters are drawn on the CPU: no device syncs
        # (N, H, W, 3) -> (N, 3, H, W): grid_sample wants channels first. A cache is stored so
        # (common/cache.py): on the CPU this is the memory-mapped file itself, no copy (which
        # would hold the set twice); on a GPU one copy, in the file's layout (.to keeps strides).
        # A set built in memory as (N, H, W, 3) is copied once.
        self.images = data.images.to(self.device).permute(0, 3, 1, 2).contiguous()
        # Normalisation folded into one multiply-add: (x / 255 - mean) / std.
        std_t = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self._mul = 1.0 / (255.0 * std_t)
        self._add = -torch.tensor(mean, device=self.device).view(1, 3, 1, 1) / std_t
        self.epoch = 0
        self._source: torch.Tensor | None = None
        if not train:  # eval images never change: crop them once, keep them as uint8
            if (views, scales) != ("center", (1.0,)):
                # Corners and other sizes are cut per batch from the uint8 source, so it stays on
                # the device beside the crops: N x 3 x res^2 bytes more (Imagenette's 3925 val
                # images cached at 160 px: 0.3 GB), instead of the views x scales times
                # N x 3 x d^2 that caching every view would take.
                self._source = self.images
            self.images = self._centre_crops()

    def __len__(self) -> int:
        n = self._shard_len()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _shard_len(self) -> int:
        n = len(self.labels)
        if self.drop_last:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentations __iter__ produces."""
        self.epoch = epoch

    @property
    def view_name(self) -> str:
        """The eval views as a log column name: "center", "10crop", "flip@0.875,1,1.143"."""
        if self.scales == (1.0,):
            return self.views
        return f"{self.views}@" + ",".join(f"{round(s, 3):g}" for s in self.scales)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate()

    def iterate(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this epoch's batches from ``start_step`` on (a resumed run skips what it did)."""
        for step, b, b_dev in self._batches(start_step):
            y = self.labels[b_dev]
            if self.train:
                g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, step, self.rank))
                x = self._augment(b, b_dev, g)
                x = x * self._mul + self._add
                for extra in self.extras:
                    x, y = extra(x, y, g)
                yield self._layout(x), y
            else:
                yield self._normalise(self.images[b_dev]), y

    def iterate_views(self, start_step: int = 0) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Eval mode: yield ([x of each view], labels) per batch, each x (B, 3, d, d) normalised.

        Views, scale by scale (d = round(image_dim * s) for s in ``scales``, VGG Sec. 3.2):
        "center" the centre crop; "flip" it and its mirror; "5crop" the centre crop and the same
        square at the four corners (top-left, top-right, bottom-left, bottom-right); "10crop"
        those five, then their five mirrors (AlexNet Sec. 4.1). The "center" view at d ==
        image_dim is exactly what ``iterate`` yields.

        Deviation from VGG: its multi-scale test runs the net densely over the whole uncropped
        image rescaled to each size; here the eval square is what is rescaled (``eval_crop=1.0``
        takes all of the short side), so a batch stays one tensor per view.
        """
        if self.train:
            raise RuntimeError("iterate_views is for evaluation loaders (train=False)")
        five = self.views in ("5crop", "10crop")
        mirror = self.views in ("flip", "10crop")
        for _, b, b_dev in self._batches(start_step):
            src = None if self._source is None else self._source[b_dev].float()  # one cast per batch
            xs: list[torch.Tensor] = []
            for s in self.scales:
                d = round(self.image_dim * s)
                crops = [self._normalise(self._eval_crop(b, b_dev, src, d, cx, cy))
                         for cx, cy in _FIVE_CROPS[:5 if five else 1]]
                # a mirror of the crop, not a crop of the mirror: its pixels are exactly the view's
                xs += (crops + [c.flip(-1) for c in crops]) if mirror else crops
            yield xs, self.labels[b_dev]

    def _batches(self, start_step: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(step, indices on the CPU, the same on the device) of this rank's batches."""
        idx = shard_indices(len(self.labels), self.epoch, self.seed, self.rank, self.world_size,
                            shuffle=self.train, equal=self.drop_last)
        for step in range(start_step, len(self)):
            b = idx[step * self.batch_size:(step + 1) * self.batch_size]
            yield step, b, self._to_device(b)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or its float values) -> normalised float in the loader's memory layout."""
        return self._layout(x.float() * self._mul + self._add)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _eval_crop(self, b: torch.Tensor, b_dev: torch.Tensor, src: torch.Tensor | None, d: int,
                   cx: float, cy: float) -> torch.Tensor:
        """The eval square of batch ``b_dev`` placed at (cx, cy) of the room around it, at d x d
        pixels, rounded like the cached centre crops; those are reused where they fit."""
        if (cx, cy) == (0.0, 0.0) and d == self.image_dim:
            return self.images[b_dev]
        assert src is not None  # the constructor keeps the source whenever views need it
        fw, fh = self._eval_box(self.aspect[b])  # on the CPU, like the training crops: no sync
        x = self._sample(src, fw, fh, cx * (1 - fw), cy * (1 - fh), d)
        return x.round_().clamp_(0, 255)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return to_device(t, self.device)

    def _augment(self, b: torch.Tensor, b_dev: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random-resized-crop (or scale jittering) + flip of a batch, in one sampling pass;
        float in [0, 255]."""
        n = len(b)
        aspect = self.aspect[b]
        if self.scale_jitter is not None:
            fw, fh = self._jitter_box(aspect, g)
        else:
            fw, fh = self._rrc_box(aspect, g)
        # Centre anywhere the crop fits; grid coordinates span [-1, 1], so a crop of fraction f
        # has half-width f and its centre lies in [-(1 - f), 1 - f].
        cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - fw)
        cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - fh)
        flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        return self._sample(self.images[b_dev], fw * flip, fh, cx, cy)

    def _jitter_box(self, aspect: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale jittering (VGG Sec. 3.1; ResNet Sec. 3.4): the image rescaled so that its short side
        is S ~ U(lo, hi) x image_dim, then an image_dim square cut from it. The square is 1/u of
        the short side (u = S / image_dim); as fractions of the width and height (a = W / H):"""
        u = torch.empty(len(aspect)).uniform_(*self.scale_jitter, generator=g)
        return torch.clamp(1 / aspect, max=1.0) / u, torch.clamp(aspect, max=1.0) / u

    def _rrc_box(self, aspect: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random-resized-crop's box as fractions of the source's width and height."""
        n = len(aspect)
        # torchvision's RandomResizedCrop: area fraction s ~ U(scale), log(ratio) ~ U(log ratio),
        # crop width/height = sqrt(s * A * r), sqrt(s * A / r) in the source's pixels. As fractions
        # of the source's width W and height H (A = W * H, aspect a = W / H):
        s = torch.empty(n).uniform_(*self.scale, generator=g)
        r = torch.exp(torch.empty(n).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g))
        fw, fh = torch.sqrt(s * r / aspect), torch.sqrt(s * aspect / r)
        # Where the crop would not fit, torchvision retries and finally falls back to a centre
        # crop; shrinking both sides by the same factor keeps the ratio and is one vector op.
        over = torch.clamp(torch.maximum(fw, fh), min=1.0)
        return fw / over, fh / over

    def _sample(self, src: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, cx: torch.Tensor,
                cy: torch.Tensor, d: int | None = None) -> torch.Tensor:
        """Resample the boxes (centre cx, cy; half-extent sx, sy in grid units) to d (image_dim)."""
        n = len(src)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
        d = d or self.image_dim
        grid = F.affine_grid(self._to_device(theta), [n, 3, d, d], align_corners=False)
        return F.grid_sample(src.float(), grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def _eval_box(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The eval square, ``eval_crop`` x the short side, as fractions of the stored width and
        height of sources of aspect ``a`` (width / height)."""
        return self.eval_crop * torch.clamp(1 / a, max=1.0), self.eval_crop * torch.clamp(a, max=1.0)

    def _centre_crops(self) -> torch.Tensor:
        """Resize + centre crop: a square of ``eval_crop`` x the source's short side."""
        out = []
        for s in range(0, len(self.images), 512):
            a = self.aspect[s:s + 512]
            fw, fh = self._eval_box(a)
            zero = torch.zeros(len(a))
            x = self._sample(self.images[s:s + 512], fw, fh, zero, zero)
            out.append(x.round_().clamp_(0, 255).to(torch.uint8))
        return torch.cat(out) if out else self.images[:, :, :self.image_dim, :self.image_dim]
