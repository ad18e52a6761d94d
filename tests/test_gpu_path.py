"""The GPU path, proven on a CPU: DDP's random streams, the device switches, the optimiser's
kernels, and the cache's memory layout.

The DDP test launches this file itself under torchrun (two gloo processes): see ``_ddp_worker``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run by torchrun as a script: the repository's packages first
    sys.path.insert(0, str(REPO))

from common import optim, recipe, script, system, trainer  # noqa: E402
from common.cache import ImageSet, build_cache  # noqa: E402
from common.loader import BatchLoader  # noqa: E402
from tests.helpers import make_image_tree  # noqa: E402

# A whole recipe for a tiny run (fit refuses a partial one): plain SGD, no EMA, no augmentation
# beyond the loader's own, 16 px images.
TINY = {**recipe.SWITCHES, "DATASET": "imagenette", "DATASET_SIZE": "160", "IMAGE_DIM": 16, "EVAL_IMAGE_DIM": 0,
        "MIN_SCALE": 0.35, "SCALE_JITTER": (0, 0), "HFLIP": True, "NUM_EPOCHS": 1, "BATCH_SIZE": 4,
        "OPTIMIZER": "sgd", "MOMENTUM": 0.9, "NESTEROV": False, "LEARNING_RATE": 0.1, "WEIGHT_DECAY": 1e-4,
        "DECAY_NORM_AND_BIAS": False, "LR_SCHEDULE": "constant", "LABEL_SMOOTHING": 0.0, "GRAD_CLIP": 0.0,
        "EMA_DECAY": 0.0, "DEVICE": "cpu", "AMP": "off", "CHANNELS_LAST": False}


class DropoutNet(nn.Module):
    """Linear -> dropout -> linear; records the dropout mask of every training forward."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 32), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(32, num_classes)
        self.masks: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x) + 1.0  # > 0 everywhere: a zero after dropout is a dropped unit
        out = self.drop(h)
        if self.training:
            self.masks.append((out == 0).detach().clone())
        return self.head(out)


def noise_set(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(torch.randint(0, 256, (n, 20, 20, 3), dtype=torch.uint8, generator=g), torch.arange(n) % 3)


def train_once(cfg: dict, runs: Path) -> DropoutNet:
    """script._train_once's own seeding and the loop: the model it trained, masks recorded."""
    built: list[DropoutNet] = []

    def build(cfg: dict, num_classes: int) -> DropoutNet:
        built.append(DropoutNet(num_classes))
        return built[-1]

    script._train_once({**cfg, "RUNS_DIR": str(runs)}, build, noise_set(32, 0), noise_set(6, 1), "ddp",
                       None, None, None)
    return built[0]


# ----------------------------------------------------------------------------- DDP

def _ddp_worker(out: Path) -> None:
    """One torchrun rank: train a few steps, save this rank's masks and weights, and what _place
    builds DDP with."""
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    model = train_once({**TINY, "SEED": 3}, out / "runs")
    # fit closes nothing: the process group is still up, so _place can build DDP once more
    _, net, _ = trainer._place(DropoutNet(3), TINY, torch.device("cpu"), 2)
    torch.save({"masks": model.masks, "weights": model.state_dict(),
                "bucket_view": net.gradient_as_bucket_view}, out / f"rank{rank}.pt")
    system.close_distributed()


def test_ddp_ranks_draw_their_own_dropout_but_keep_the_same_weights(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           __file__, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # 32 images, 2 ranks, batch 4: 4 steps each
    assert len(r0["masks"]) == len(r1["masks"]) == 4
    # every step, the two ranks dropped different units (with one shared stream: the same ones)
    assert all(not torch.equal(a, b) for a, b in zip(r0["masks"], r1["masks"]))
    # ... and after those steps their weights are still the same, to the bit
    assert r0["weights"].keys() == r1["weights"].keys()
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])
    assert r0["bucket_view"] and r1["bucket_view"]  # gradients are views into DDP's buckets


def test_one_process_keeps_its_stream_and_a_seed_repeats_the_run(tmp_path: Path) -> None:
    a = train_once({**TINY, "SEED": 5}, tmp_path / "a")
    b = train_once({**TINY, "SEED": 5}, tmp_path / "b")
    c = train_once({**TINY, "SEED": 6}, tmp_path / "c")
    assert all(torch.equal(x, y) for x, y in zip(a.masks, b.masks)) and len(a.masks) == 8
    assert not all(torch.equal(x, y) for x, y in zip(a.masks, c.masks))
    # rank 0 goes on from SEED's own stream (a one-process run is what it was); rank 1 does not
    torch.manual_seed(5)
    system.seed_rank(5, 0)
    zero = torch.rand(8)
    torch.manual_seed(5)
    system.seed_rank(5, 1)
    one = torch.rand(8)
    torch.manual_seed(5)
    assert torch.equal(zero, torch.rand(8)) and not torch.equal(zero, one)


# ----------------------------------------------------------------------------- device switches

def test_a_numbered_gpu_becomes_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        system.setup_device(torch.device("cuda", 1))
        assert chosen == [torch.device("cuda", 1)] and torch.backends.cudnn.benchmark
        system.setup_device(torch.device("cuda", 1), deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
        torch.use_deterministic_algorithms(False)
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    system.setup_device(torch.device("cpu"))
    assert len(chosen) == 2 and not torch.are_deterministic_algorithms_enabled()


def test_deterministic_is_a_switch_the_loop_applies(tmp_path: Path) -> None:
    assert recipe.SWITCHES["DETERMINISTIC"] is False
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        train_once({**TINY, "DETERMINISTIC": True}, tmp_path)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def test_each_rank_draws_its_own_augmentations() -> None:
    """The loader's crops, flips and batch transforms draw from a generator seeded by (SEED,
    epoch, step, rank): two ranks given the same images cut them differently."""
    same = ImageSet(torch.arange(20 * 20 * 3, dtype=torch.int64).remainder(256).to(torch.uint8)
                    .view(1, 20, 20, 3).expand(8, -1, -1, -1).contiguous(), torch.zeros(8, dtype=torch.int64))
    draws = []

    def record(x: torch.Tensor, y: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        draws.append(torch.rand(4, generator=g))
        return x, y

    x0, x1 = (next(iter(BatchLoader(same, 4, train=True, image_dim=12, seed=7, rank=r, world_size=2,
                                    extras=[record]))) for r in (0, 1))
    assert not torch.equal(x0[0], x1[0]) and not torch.equal(draws[0], draws[1])


# ----------------------------------------------------------------------------- optimiser kernels

OPTIMIZERS = {"sgd": {"MOMENTUM": 0.9, "NESTEROV": True}, "adam": {"ADAM_BETAS": (0.9, 0.999)},
              "adamw": {"ADAM_BETAS": (0.9, 0.999)},
              "rmsprop": {"MOMENTUM": 0.9, "RMSPROP_ALPHA": 0.9, "RMSPROP_EPS": 1.0}}


def _cfg(kind: str) -> dict:
    return {**TINY, "OPTIMIZER": kind, **OPTIMIZERS[kind]}


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_fused_kernels_on_cuda_and_the_cpu_unchanged(kind: str) -> None:
    with FakeTensorMode(), torch.device("cuda"):  # a CUDA model without a GPU
        opt = optim.build_optimizer(DropoutNet(3), _cfg(kind))
        assert opt.param_groups[0].get("fused") is (True if kind != "rmsprop" else None)
        saved_on_cpu = {**opt.state_dict(), "param_groups": [{**g, "fused": None}
                                                             for g in opt.state_dict()["param_groups"]]}
        opt.load_state_dict(saved_on_cpu)  # a CPU run resumed on a GPU keeps the GPU's kernel
        assert opt.param_groups[0].get("fused") is (True if kind != "rmsprop" else None)
    opt = optim.build_optimizer(DropoutNet(3), _cfg(kind))
    assert opt.param_groups[0].get("fused") is None and opt.param_groups[0].get("foreach") is None
    opt.load_state_dict({**opt.state_dict(), "param_groups": [{**g, "fused": kind != "rmsprop"}
                                                              for g in opt.state_dict()["param_groups"]]})
    assert not opt.param_groups[0].get("fused")  # ... and a GPU run resumed on the CPU the CPU's


# ----------------------------------------------------------------------------- the cache's memory

def test_the_loader_maps_the_cache_file_without_a_copy(tmp_path: Path) -> None:
    """The cache is channels-first on disk, as grid_sample reads it: the training loader's images
    are the memory-mapped file itself (copying it held the whole set twice while building)."""
    tree = make_image_tree(tmp_path / "src", n_train=2, n_val=1, size=(20, 16))
    data = build_cache(tree, "train", 12, tmp_path / "cache", workers=1)
    (npy,) = (tmp_path / "cache").glob("*.npy")
    on_disk = np.load(npy, mmap_mode="r")
    assert on_disk.shape == (20, 3, 12, 12) and data.images.shape == (20, 12, 12, 3)  # ImageSet's view of it
    assert np.array_equal(on_disk.transpose(0, 2, 3, 1), data.images.numpy())
    assert json.loads(npy.with_suffix(".json").read_text())["keep"] is None
    loader = BatchLoader(data, 4, train=True, image_dim=8)
    assert loader.images.data_ptr() == data.images.data_ptr() and loader.images.is_contiguous()
    assert loader.images.shape == (20, 3, 12, 12)


if __name__ == "__main__":
    _ddp_worker(Path(sys.argv[1]))
