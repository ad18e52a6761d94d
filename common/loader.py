"""Batches from an in-memory uint8 image set, augmented in batch on the device.

No DataLoader, no per-image Python work (the airbench way): the whole split sits on the device
as uint8; each epoch is a seeded permutation, cut into slices; each slice is cropped, resized,
flipped and normalised for the whole batch at once by one ``affine_grid`` + ``grid_sample``.

Crops are computed in the *source* image's geometry (the cache stores each image squashed to a
square with its width/height ratio beside it, see common/cache.py), so random-resized-crop's
scale and ratio mean what they mean in torchvision, and the squash is undone by the sampling.

Randomness is a function of (seed, epoch, step) only, so a run resumed at any step sees the
same batches it would have seen without stopping, and every DDP rank agrees on the permutation.
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


def _mix(*xs: int) -> int:
    """A deterministic seed from several integers (Python's hash() is salted for strings only)."""
    h = 0x9E3779B97F4A7C15
    for x in xs:
        h = (h ^ (x + 0x9E3779B97F4A7C15 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFF
    return h


class BatchLoader:
    """Iterate (images, labels) batches of an ImageSet on ``device``.

    Train mode: random-resized-crop (``scale``, ``ratio`` as in torchvision), horizontal flip,
    then ``extras``. Eval mode: the deterministic resize + centre crop (``eval_crop`` of the
    short side, 0.875 = the usual 224/256), computed once and kept as uint8.
    """

    def __init__(self, data: ImageSet, batch_size: int, *, train: bool, image_dim: int,
                 device: torch.device | str = "cpu", seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool | None = None, scale: tuple[float, float] = (0.35, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = True, eval_crop: float = 0.875,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channels_last: bool = False, extras: Sequence[BatchTransform] = ()) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size, self.train, self.image_dim = batch_size, train, image_dim
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.scale, self.ratio, self.hflip, self.eval_crop = scale, ratio, hflip, eval_crop
        self.channels_last, self.extras = channels_last, list(extras)
        self.labels = data.labels.to(self.device)
        self.aspect = data.aspect.cpu()  # crop parameters are drawn on the CPU: no device syncs
        # (N, H, W, 3) -> (N, 3, H, W): grid_sample wants channels first. One copy, on the device.
        self.images = data.images.to(self.device).permute(0, 3, 1, 2).contiguous()
        # Normalisation folded into one multiply-add: (x / 255 - mean) / std.
        std_t = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self._mul = 1.0 / (255.0 * std_t)
        self._add = -torch.tensor(mean, device=self.device).view(1, 3, 1, 1) / std_t
        self.epoch = 0
        if not train:  # eval images never change: crop them once, keep them as uint8
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

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iterate()

    def iterate(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield this epoch's batches from ``start_step`` on (a resumed run skips what it did)."""
        idx = shard_indices(len(self.labels), self.epoch, self.seed, self.rank, self.world_size,
                            shuffle=self.train, equal=self.drop_last)
        for step in range(start_step, len(self)):
            b = idx[step * self.batch_size:(step + 1) * self.batch_size]
            b_dev = self._to_device(b)
            y = self.labels[b_dev]
            if self.train:
                g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, step, self.rank))
                x = self._augment(b, b_dev, g)
                x = x * self._mul + self._add
                for extra in self.extras:
                    x, y = extra(x, y, g)
            else:
                x = self.images[b_dev].float() * self._mul + self._add
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        """CPU -> device without stalling: a plain copy from pageable memory waits for the GPU's
        queue to drain; one from pinned memory is queued behind the work already there."""
        if self.device.type != "cuda":
            return t
        return t.pin_memory().to(self.device, non_blocking=True)

    def _augment(self, b: torch.Tensor, b_dev: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Random-resized-crop + flip of a batch, in one sampling pass; float in [0, 255]."""
        n = len(b)
        aspect = self.aspect[b]
        # torchvision's RandomResizedCrop: area fraction s ~ U(scale), log(ratio) ~ U(log ratio),
        # crop width/height = sqrt(s * A * r), sqrt(s * A / r) in the source's pixels. As fractions
        # of the source's width W and height H (A = W * H, aspect a = W / H):
        s = torch.empty(n).uniform_(*self.scale, generator=g)
        r = torch.exp(torch.empty(n).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g))
        fw, fh = torch.sqrt(s * r / aspect), torch.sqrt(s * aspect / r)
        # Where the crop would not fit, torchvision retries and finally falls back to a centre
        # crop; shrinking both sides by the same factor keeps the ratio and is one vector op.
        over = torch.clamp(torch.maximum(fw, fh), min=1.0)
        fw, fh = fw / over, fh / over
        # Centre anywhere the crop fits; grid coordinates span [-1, 1], so a crop of fraction f
        # has half-width f and its centre lies in [-(1 - f), 1 - f].
        cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - fw)
        cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - fh)
        flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        return self._sample(self.images[b_dev], fw * flip, fh, cx, cy)

    def _sample(self, src: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, cx: torch.Tensor,
                cy: torch.Tensor) -> torch.Tensor:
        """Resample the boxes (centre cx, cy; half-extent sx, sy in grid units) to image_dim."""
        n = len(src)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, sy, cy
        d = self.image_dim
        grid = F.affine_grid(self._to_device(theta), [n, 3, d, d], align_corners=False)
        return F.grid_sample(src.float(), grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)

    def _centre_crops(self) -> torch.Tensor:
        """Resize + centre crop: a square of ``eval_crop`` x the source's short side."""
        out = []
        for s in range(0, len(self.images), 512):
            a = self.aspect[s:s + 512]
            fw = self.eval_crop * torch.clamp(1 / a, max=1.0)  # crop side / source width
            fh = self.eval_crop * torch.clamp(a, max=1.0)  # crop side / source height
            zero = torch.zeros(len(a))
            x = self._sample(self.images[s:s + 512], fw, fh, zero, zero)
            out.append(x.round_().clamp_(0, 255).to(torch.uint8))
        return torch.cat(out) if out else self.images[:, :, :self.image_dim, :self.image_dim]
