"""How fast is the data pipeline? torchvision's usual one against this project's, on the same JPEGs.

    python -m common.bench_data [--folder PATH] [--image-dim 64] [--batch-size 128] [--workers 2]
                                [--device auto] [--epochs 2] [--generate N] [--model resnet18]

(a) the usual way: ``ImageFolder`` + PIL transforms (RandomResizedCrop, RandomHorizontalFlip,
    ToTensor, Normalize) + ``DataLoader`` with ``--workers`` processes; one epoch of the train
    split, every batch moved to the device.
(b) this project's way: ``build_cache`` into a fresh (cold) cache folder, timed on its own, then
    ``BatchLoader(train=True)`` for ``--epochs`` epochs on the device (same crop scale, flip and
    normalisation, done in batch by grid_sample).

``--model resnet18`` also trains that torchvision model on every batch of both ways (SGD, bf16
autocast, channels_last) and times its bare step on one fixed batch: what a training run sees,
where on a CPU the DataLoader's workers and the model compete for the same cores.

``--folder`` reads an extracted dataset (``<folder>/train/<class>/<image>``, e.g.
data/imagenette2-160, or a copy you already have); without it, ``--generate N`` JPEGs at
Imagenette-160-like sizes (213 x 160 and 160 x 213) are written to a temporary folder first.
Before timing, every JPEG is read once so that both ways find the files in the OS page cache
and neither pays for the disk. Report the machine's load with the figures: on a shared machine
both ways compete for the same cores.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import errors, registry
from common.cache import IMAGE_EXTENSIONS, build_cache, typical_short_side
from common.loader import IMAGENET_MEAN, IMAGENET_STD, BatchLoader
from common.data import cache_dim
from common.datasets import DataError

SCALE = (0.35, 1.0)  # RandomResizedCrop's area range: the project's default in both ways
SIZES = ((213, 160), (160, 213))  # (width, height) of generated images, as in imagenette2-160


def generate_jpegs(root: Path, n: int, n_classes: int = 10, seed: int = 0) -> Path:
    """Write n JPEGs as ``root/train/<class>/<k>.JPEG``; return root.

    Each image is a coarse random pattern upscaled (smooth, like a photo, not white noise that
    would make JPEG decoding unrealistically slow) plus a little fine noise.
    """
    rng = np.random.default_rng(seed)
    for k in range(n):
        d = root / "train" / f"n{k % n_classes:08d}"
        d.mkdir(parents=True, exist_ok=True)
        w, h = SIZES[k % 2]
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
        noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        Image.blend(coarse, noise, 0.1).save(d / f"{k:06d}.JPEG", quality=90)
    return root


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Step = Callable[[torch.Tensor, torch.Tensor], None]


def make_train_step(model_name: str, device: torch.device, image_dim: int, batch_size: int) -> tuple[Step, float]:
    """A training step of a torchvision model (SGD, bf16 autocast, channels_last, as the trainer
    runs it), and its bare speed in images/s on one fixed batch (no data loading at all)."""
    import torchvision

    model = torchvision.models.get_model(model_name, weights=None, num_classes=10)
    model = model.to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    x = torch.randn(batch_size, 3, image_dim, image_dim, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    for _ in range(3):  # warm-up (cudnn autotuning, allocator)
        step(x, y)
    synchronize(device)
    start, n = time.perf_counter(), 25
    for _ in range(n):
        step(x, y)
    synchronize(device)
    return step, n * batch_size / (time.perf_counter() - start)


def torchvision_loader(folder: Path, image_dim: int, batch_size: int, workers: int, device: torch.device,
                       scale: tuple[float, float] = SCALE) -> torch.utils.data.DataLoader:
    """torchvision's usual training pipeline over ``folder/train``: ImageFolder, PIL
    RandomResizedCrop + flip + ToTensor + Normalize, a shuffling DataLoader with ``workers``."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([
        transforms.RandomResizedCrop(image_dim, scale=scale),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    dataset = datasets.ImageFolder(str(folder / "train"), transform)
    return torch.utils.data.DataLoader(dataset, batch_size, shuffle=True, drop_last=True,
                                       num_workers=workers, pin_memory=device.type == "cuda",
                                       persistent_workers=workers > 0)


def bench_torchvision(folder: Path, image_dim: int, batch_size: int, workers: int,
                      device: torch.device, step: Step | None = None) -> tuple[int, float]:
    """(a): one epoch of ImageFolder + PIL transforms + DataLoader (feeding ``step`` if given);
    return (images, seconds)."""
    start = time.perf_counter()  # the clock includes the folder scan and the workers' start
    loader = torchvision_loader(folder, image_dim, batch_size, workers, device)
    n = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if step is not None:
            step(x, y)
        n += len(x)
    synchronize(device)
    return n, time.perf_counter() - start


def bench_cache(folder: Path, image_dim: int, batch_size: int, workers: int, device: torch.device,
                epochs: int, step: Step | None = None) -> tuple[float, float, list[tuple[int, float]]]:
    """(b): a cold cache build, the loader's setup, then ``epochs`` epochs of BatchLoader
    (feeding ``step`` if given).

    Returns (build seconds, setup seconds, [(images, seconds) per epoch]).
    """
    # The cache side a training run at this image_dim would use (common/script.py's rule).
    resolution = cache_dim({"IMAGE_DIM": image_dim}, typical_short_side(folder, "train"))
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache_dir:
        start = time.perf_counter()
        data = build_cache(folder, "train", resolution, Path(cache_dir), workers=max(workers, 1))
        build_s = time.perf_counter() - start

        start = time.perf_counter()  # the whole split copied to the device once, channels first
        loader = BatchLoader(data, batch_size, train=True, image_dim=image_dim, device=device, scale=SCALE)
        synchronize(device)
        setup_s = time.perf_counter() - start

        runs = []
        for epoch in range(epochs):
            loader.set_epoch(epoch)
            start, n = time.perf_counter(), 0
            for x, y in loader:
                if step is not None:
                    step(x, y)
                n += len(x)
            synchronize(device)
            runs.append((n, time.perf_counter() - start))
    return build_s, setup_s, runs


@errors.entry_point
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="an extracted dataset holding train/<class>/<image>")
    parser.add_argument("--image-dim", type=int, default=64, help="side of the training crops, pixels")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, and cache decode processes")
    parser.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu, cuda, cuda:1 ...")
    parser.add_argument("--epochs", type=int, default=2, help="BatchLoader epochs timed in (b)")
    parser.add_argument("--generate", type=int, default=2000, help="JPEGs to generate when no --folder")
    parser.add_argument("--model", default="", help="also train this torchvision model (e.g. resnet18) "
                        "on every batch: the throughput a training run would see")
    args = parser.parse_args(argv)
    if args.folder is not None and not (args.folder / "train").is_dir():
        raise DataError(f"--folder {args.folder} has no train/ folder of class folders: give an extracted "
                        f"dataset (e.g. data/imagenette2-160), or leave --folder out to time generated JPEGs")
    device = registry.device(args.device)

    with tempfile.TemporaryDirectory(prefix="bench-jpegs-") as tmp:
        if args.folder is None:
            start = time.perf_counter()
            folder = generate_jpegs(Path(tmp), args.generate)
            print(f"generated {args.generate} JPEGs (213x160 / 160x213) in {time.perf_counter() - start:.1f} s")
        else:
            folder = args.folder
        files = [p for p in (folder / "train").rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
        megabytes = sum(len(p.read_bytes()) for p in files) / 2**20  # into the OS page cache
        print(f"data: {folder}/train, {len(files)} images, {megabytes:.0f} MiB | device: {device} | "
              f"image_dim {args.image_dim}, batch {args.batch_size}, workers {args.workers}, "
              f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
              f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

        step = None
        if args.model:
            step, bare = make_train_step(args.model, device, args.image_dim, args.batch_size)
            print(f"training {args.model} on every batch; its bare step (one fixed batch, no data): "
                  f"{bare:,.0f} images/s")
        n_a, s_a = bench_torchvision(folder, args.image_dim, args.batch_size, args.workers, device, step)
        rate_a = n_a / s_a
        print(f"(a) ImageFolder + PIL + DataLoader:  {n_a} images in {s_a:.2f} s = {rate_a:,.0f} images/s (1 epoch)")

        build_s, setup_s, runs = bench_cache(folder, args.image_dim, args.batch_size, args.workers,
                                             device, args.epochs, step)
        n_b, s_b = sum(n for n, _ in runs), sum(s for _, s in runs)
        rate_b = n_b / s_b
        per_epoch = ", ".join(f"{n / s:,.0f}" for n, s in runs)
        print(f"(b) cache build (cold):              {build_s:.2f} s = {len(files) / build_s:,.0f} images/s decoded")
        print(f"    BatchLoader setup (to {device.type}):      {setup_s:.2f} s")
        print(f"    BatchLoader:                     {n_b} images in {s_b:.2f} s = {rate_b:,.0f} images/s "
              f"({len(runs)} epochs: {per_epoch})")
        print(f"(b)/(a) throughput:                  {rate_b / rate_a:.1f} x")
        print(f"cache build vs one epoch of (a):     {build_s:.2f} s vs {s_a:.2f} s = {build_s / s_a:.2f} x")
        saved = s_a - n_a / rate_b  # seconds (b) saves per epoch once its cache exists
        if saved > 0:
            print(f"break-even: (b), cache build and setup included, is ahead from epoch "
                  f"{math.ceil((build_s + setup_s) / saved)} on")
        print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
