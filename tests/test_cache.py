"""Tests of common/cache.py: the uint8 image cache, on small JPEG trees built here.

Each check names what it guards: labels and class order as torchvision's ImageFolder gives
them, pixels as PIL decodes them, odd files (grayscale, CMYK, truncated), reuse of an unchanged
cache, rebuild of a stale one, no complete-looking cache after an interrupted build, and the
same array whatever the number of decode processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from common import cache
from common.cache import ImageSet, build_cache
from common.datasets import DataError
from tests.helpers import EXTRAS, child_pids, class_colour, make_image_tree, pid_alive

RES = 16  # cache side, pixels: tiny keeps every build well under a second


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A 3-class tree (3 train, 2 val per class, 20 x 16 RGB) plus a grayscale, a CMYK and a
    truncated JPEG in the first class's train folder. Fresh per test: tests may change it."""
    return make_image_tree(tmp_path / "src", n_classes=3, extras=EXTRAS)


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Wrap common.cache.decode so each call is recorded (seen only with workers=1)."""
    calls: list[Path] = []
    real = cache.decode

    def counting(path: Path, resolution: int):
        calls.append(path)
        return real(path, resolution)

    monkeypatch.setattr(cache, "decode", counting)
    return calls


def pil_resized(path: Path | str, res: int) -> np.ndarray:
    """The reference: PIL's own full-resolution decode and bilinear resize, as uint8 RGB."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((res, res), Image.BILINEAR), dtype=np.uint8)


def cache_files(cache_dir: Path) -> list[str]:
    """The cache's data files (the lock files that serialise builds are not counted)."""
    if not cache_dir.exists():
        return []
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))


# ---------------------------------------------------------------------------------------------
# Contents: labels, class order, pixels, odd files
# ---------------------------------------------------------------------------------------------


def test_labels_and_classes_match_imagefolder(tree: Path, tmp_path: Path) -> None:
    """Same classes, same order, same label per position as ImageFolder, less the skipped file."""
    for split in ("train", "val"):
        data = build_cache(tree, split, RES, tmp_path / "cache", workers=1)
        ref = torchvision.datasets.ImageFolder(str(tree / split))
        assert data.classes == ref.classes == sorted(ref.classes)
        assert data.num_classes == 3
        kept = [(p, t) for p, t in ref.samples if p not in data.skipped]
        assert data.labels.dtype == torch.int64
        assert data.labels.tolist() == [t for _, t in kept]
        # each row is that file's image: the cache keeps ImageFolder's file order too
        for i, (path, _) in enumerate(kept):
            diff = np.abs(data.images[i].numpy().astype(int) - pil_resized(path, RES).astype(int))
            assert diff.max() <= 2, f"row {i} is not {path}"


def test_decode_matches_pil_resize(tmp_path: Path) -> None:
    """A cached image equals PIL's resize of its file: exactly where JPEG draft mode cannot
    apply (source < 2 x res), closely where it decodes at reduced scale (source >= 2 x res)."""
    root = tmp_path / "src"
    (root / "train" / "a").mkdir(parents=True)
    y, x = np.mgrid[0:96, 0:128]
    smooth = np.stack([x * 2, y * 2, (x + y)], axis=-1).clip(0, 255).astype(np.uint8)
    Image.fromarray(smooth).save(root / "train" / "a" / "big.jpg", quality=95)  # 128 x 96
    Image.fromarray(smooth[:20, :24]).save(root / "train" / "a" / "small.jpg", quality=95)
    data = build_cache(root, "train", RES, tmp_path / "cache", workers=1)
    big, small = data.images.numpy().astype(int)
    assert np.array_equal(small, pil_resized(root / "train" / "a" / "small.jpg", RES))
    ref = pil_resized(root / "train" / "a" / "big.jpg", RES).astype(int)
    assert np.abs(big - ref).mean() < 2.0 and np.abs(big - ref).max() <= 8


def test_aspect_ratio_recorded(tmp_path: Path) -> None:
    """Every image is squashed to res x res; its source width / height is kept beside it."""
    root = tmp_path / "src"
    for name, size in (("wide", (40, 20)), ("tall", (15, 45)), ("square", (30, 30))):
        (root / "train" / name).mkdir(parents=True)
        Image.new("RGB", size, (10, 200, 30)).save(root / "train" / name / "x.JPEG")
    data = build_cache(root, "train", RES, tmp_path / "cache", workers=1)
    assert data.classes == ["square", "tall", "wide"]
    assert data.images.shape == (3, RES, RES, 3) and data.images.dtype == torch.uint8
    assert data.aspect.dtype == torch.float32
    assert data.aspect.tolist() == pytest.approx([1.0, 1 / 3, 2.0], abs=1e-4)


def test_grayscale_and_cmyk_become_rgb(tree: Path, tmp_path: Path) -> None:
    data = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    # class 0 holds _0.._2 (RGB), _3 (grayscale), _4 (CMYK), _5 (truncated, skipped)
    rgb, gray, cmyk = data.images[:3].float(), data.images[3].float(), data.images[4].float()
    assert data.labels[:5].tolist() == [0] * 5 and data.images.shape[1:] == (RES, RES, 3)
    mean_rgb = rgb.mean(dim=(0, 1, 2))  # about 0.75 x class colour + 0.25 x mid-grey noise
    expected = 0.75 * torch.tensor(class_colour(0, 3), dtype=torch.float) + 0.25 * 127.5
    assert torch.allclose(mean_rgb, expected, atol=6)
    # grayscale: three equal channels at the RGB images' luminance
    assert torch.equal(gray[..., 0], gray[..., 1]) and torch.equal(gray[..., 1], gray[..., 2])
    luma = float(mean_rgb @ torch.tensor([0.299, 0.587, 0.114]))
    assert gray.mean().item() == pytest.approx(luma, abs=8)
    # CMYK: converted back to the same colour, not inverted or black
    assert torch.allclose(cmyk.mean(dim=(0, 1)), mean_rgb, atol=12)


def test_truncated_jpeg_skipped_rest_kept(tree: Path, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    bad = tree / "train" / "n01440764" / "n01440764_5.JPEG"
    with caplog.at_level("WARNING", logger="common.cache"):
        data = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    assert data.skipped == [str(bad)]
    assert str(bad) in caplog.text
    assert len(data) == 3 * 3 + 2  # 3 RGB per class, plus the grayscale and CMYK files
    assert data.labels.tolist() == [0] * 5 + [1] * 3 + [2] * 3
    assert len(data.aspect) == len(data) == len(data.labels)
    # no row of zeros stands in for the skipped file
    assert (data.images.flatten(1).max(dim=1).values > 0).all()
    # reloading the cache from disk gives the same set, skipped list included
    again = build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
    assert again.skipped == data.skipped and torch.equal(again.images, data.images)


def test_split_with_only_unreadable_files(tmp_path: Path) -> None:
    """Every file truncated: an empty set that lists them (it used to crash loading the cache,
    indexing with an empty float tensor, and so on every later run too)."""
    d = tmp_path / "src" / "train" / "a"
    d.mkdir(parents=True)
    (d / "x.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    for _ in range(2):  # the build, then the reload of what it wrote
        data = build_cache(tmp_path / "src", "train", RES, tmp_path / "cache", workers=1)
        assert len(data) == 0 and data.skipped == [str(d / "x.JPEG")] and data.classes == ["a"]


def test_missing_split_is_a_clear_error(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="No 'test' folder"):
        build_cache(tree, "test", RES, tmp_path / "cache", workers=1)


# ---------------------------------------------------------------------------------------------
# Reuse, rebuild, interruption, workers
# ---------------------------------------------------------------------------------------------


def test_unchanged_source_reuses_cache(tree: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_decodes(monkeypatch)
    cache_dir = tmp_path / "cache"
    first = build_cache(tree, "train", RES, cache_dir, workers=1)
    assert len(calls) == 12  # every file, the truncated one included
    files, mtimes = cache_files(cache_dir), {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()}
    calls.clear()
    second = build_cache(tree, "train", RES, cache_dir, workers=1)
    assert calls == []  # nothing decoded again
    assert cache_files(cache_dir) == files
    assert {p: p.stat().st_mtime_ns for p in cache_dir.iterdir()} == mtimes  # nothing rewritten
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    # other splits and resolutions have their own keys and leave this cache alone
    build_cache(tree, "val", RES, cache_dir, workers=1)
    build_cache(tree, "train", 2 * RES, cache_dir, workers=1)
    assert set(files) <= set(cache_files(cache_dir)) and len(cache_files(cache_dir)) == 6


def test_changed_source_rebuilds_and_removes_stale(tree: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "cache"
    build_cache(tree, "train", RES, cache_dir, workers=1)
    first = cache_files(cache_dir)
    assert len(first) == 2 and first[0].startswith("imagenette2-160-train-16px-")

    # a file added to a class: new key, stale files gone, the new image in its class
    extra = tree / "train" / "n02102040" / "n02102040_9.JPEG"
    Image.new("RGB", (20, 16), (0, 0, 255)).save(extra)
    data = build_cache(tree, "train", RES, cache_dir, workers=1)
    second = cache_files(cache_dir)
    assert len(second) == 2 and not set(first) & set(second)
    assert len(data) == 12 and data.labels.tolist() == [0] * 5 + [1] * 4 + [2] * 3
    assert data.images[8].float().mean(dim=(0, 1)).tolist() == pytest.approx([0, 0, 255], abs=3)

    # a file rewritten in place (new content, new mtime): rebuilt, the new pixels in the cache
    Image.new("RGB", (20, 16), (255, 255, 0)).save(extra)
    os.utime(extra, ns=(1_000_000_000, 1_000_000_000))  # a different mtime, whatever the clock
    calls = count_decodes(monkeypatch)
    data = build_cache(tree, "train", RES, cache_dir, workers=1)
    third = cache_files(cache_dir)
    assert len(calls) == 13 and len(third) == 2 and not set(second) & set(third)
    assert data.images[8].float().mean(dim=(0, 1)).tolist() == pytest.approx([255, 255, 0], abs=3)

    # a file removed: rebuilt without it
    extra.unlink()
    data = build_cache(tree, "train", RES, cache_dir, workers=1)
    assert len(cache_files(cache_dir)) == 2 and len(data) == 11


def test_interrupted_build_leaves_no_complete_cache(tree: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir, real, seen = tmp_path / "cache", cache.decode, []

    def dies_midway(path: Path, resolution: int):
        seen.append(path)
        if len(seen) == 6:
            raise KeyboardInterrupt  # Ctrl-C half way through the decode
        return real(path, resolution)

    monkeypatch.setattr(cache, "decode", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_cache(tree, "train", RES, cache_dir, workers=1)
    left = cache_files(cache_dir)
    assert not [f for f in left if f.endswith(".json")]
    assert not [f for f in left if f.endswith(".npy")]  # at most a .npy.tmp remains

    # the next run decodes everything again and cleans up the partial file
    monkeypatch.setattr(cache, "decode", real)
    calls = count_decodes(monkeypatch)
    data = build_cache(tree, "train", RES, cache_dir, workers=1)
    assert len(calls) == 12 and len(data) == 11
    files = cache_files(cache_dir)
    assert len(files) == 2 and {Path(f).suffix for f in files} == {".npy", ".json"}
    fresh = build_cache(tree, "train", RES, tmp_path / "fresh", workers=1)
    assert torch.equal(data.images, fresh.images) and torch.equal(data.labels, fresh.labels)


def test_two_workers_same_as_one(tmp_path: Path) -> None:
    """Over 256 images, so the decode is split in two chunks handed to two processes."""
    tree = make_image_tree(tmp_path / "src", n_classes=2, n_train=140, n_val=0, size=(12, 10),
                           extras=("corrupt", "grayscale"))
    one = build_cache(tree, "train", RES, tmp_path / "one", workers=1)
    two = build_cache(tree, "train", RES, tmp_path / "two", workers=2)
    assert len(one) == 281 and one.skipped == two.skipped and len(one.skipped) == 1
    assert torch.equal(one.images, two.images)
    assert torch.equal(one.labels, two.labels) and torch.equal(one.aspect, two.aspect)
    assert cache_files(tmp_path / "one") == cache_files(tmp_path / "two")  # same key


# ---------------------------------------------------------------------------------------------
# ImageSet from tensors: any labelled uint8 set plugs in
# ---------------------------------------------------------------------------------------------


def images(n: int = 4, side: int = 8, channels: int = 3, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    return torch.zeros(n, side, side, channels, dtype=dtype)


def test_imageset_from_tensors_defaults() -> None:
    data = ImageSet(images(4), torch.tensor([0, 2, 1, 2]))
    assert len(data) == 4 and data.num_classes == 3 and data.classes == ["0", "1", "2"]
    assert torch.equal(data.aspect, torch.ones(4)) and data.skipped == []
    named = ImageSet(images(2), torch.tensor([0, 0]), classes=["cat", "dog"])
    assert named.num_classes == 2
    assert len(ImageSet(images(0), torch.zeros(0, dtype=torch.int64))) == 0


@pytest.mark.parametrize("bad_images", [
    images(dtype=torch.float32),  # floats, not uint8
    images(channels=1),  # one channel
    images()[..., 0],  # (N, H, W)
    images().permute(0, 3, 1, 2),  # channels first
])
def test_imageset_rejects_bad_images(bad_images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="images must be"):
        ImageSet(bad_images, torch.zeros(len(bad_images), dtype=torch.int64))


@pytest.mark.parametrize("labels, kwargs", [
    (torch.zeros(3, dtype=torch.int64), {}),  # 3 labels for 4 images
    (torch.zeros(4, 2, dtype=torch.int64), {}),  # not (N,)
    (torch.tensor([0.0, 1.0, 1.0, 0.0]), {}),  # not integers
    (torch.tensor([0, -1, 1, 1]), {}),  # negative
    (torch.tensor([0, 1, 2, 5]), {"classes": ["a", "b", "c"]}),  # past the class list
    (torch.zeros(4, dtype=torch.int64), {"aspect": torch.ones(3)}),  # one aspect short
])
def test_imageset_rejects_bad_labels_and_aspect(labels: torch.Tensor, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ImageSet(images(4), labels, **kwargs)


def test_two_processes_building_the_same_cache_at_once(tmp_path: Path) -> None:
    """Two runs started together: one decodes, the other waits and reuses it (no lost files)."""
    tree = make_image_tree(tmp_path / "src", "imagenette2-160", n_train=20, n_val=1, size=(40, 30))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
            "from common.cache import build_cache;"
            "s = build_cache(Path(sys.argv[2]), 'train', 24, Path(sys.argv[3]), workers=1);"
            "print(len(s))")
    repo = str(Path(__file__).resolve().parents[1])
    procs = [subprocess.Popen([sys.executable, "-c", code, repo, str(tree), str(tmp_path / "cache")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert [o[0].strip() for o in outs] == ["200", "200"]
    assert len([f for f in cache_files(tmp_path / "cache") if f.endswith(".npy")]) == 1


# ---------------------------------------------------------------------------------------------
# Class folders checked before decoding
# ---------------------------------------------------------------------------------------------


def test_check_class_folders_accepts_matching_splits(tree: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The truncated JPEG does not matter: nothing is decoded, only names and listings."""
    with caplog.at_level("WARNING", logger="common.cache"):
        cache.check_class_folders(tree)
    assert caplog.records == []


def test_check_class_folders_refuses_different_classes(tree: Path) -> None:
    """A class with images only in val/ would be scored against another class's label."""
    only_val = tree / "val" / "n09999999"
    only_val.mkdir()
    Image.new("RGB", (20, 16)).save(only_val / "x.JPEG")
    shutil.rmtree(tree / "val" / "n02979186")
    with pytest.raises(DataError) as info:
        cache.check_class_folders(tree)
    msg = str(info.value)
    assert f"train/ and val/ of {tree} hold different class folders" in msg
    assert "Only in train/: n02979186." in msg and "Only in val/: n09999999." in msg


def test_check_class_folders_lists_many_differences_briefly(tree: Path) -> None:
    for k in range(12):
        (tree / "train" / f"extra{k:02d}").mkdir()
    with pytest.raises(DataError, match=r"Only in train/: extra00, .*extra09 and 2 more\. "
                                         r"Only in val/: none\."):
        cache.check_class_folders(tree)


@pytest.mark.parametrize("check", ["check_class_folders", "build_cache"])
def test_empty_train_class_refused(tree: Path, tmp_path: Path, check: str) -> None:
    """An empty train/ class folder used to add, silently, a class the model can never learn.
    A file that is not an image does not count."""
    empty = tree / "train" / "n09999999"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    (tree / "val" / "n09999999").mkdir()
    Image.new("RGB", (20, 16)).save(tree / "val" / "n09999999" / "x.JPEG")
    with pytest.raises(DataError) as info:
        if check == "build_cache":
            build_cache(tree, "train", RES, tmp_path / "cache", workers=1)
        else:
            cache.check_class_folders(tree)
    msg = str(info.value)
    assert msg.startswith(f"{empty} holds no images (.jpeg, .jpg")
    assert "a class the model can never learn. Remove this folder or add images to it." in msg
    assert cache_files(tmp_path / "cache") == []  # refused before anything was decoded


def test_empty_val_class_warned_not_refused(tree: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    empty = tree / "val" / "n02102040"
    for f in empty.iterdir():
        f.unlink()
    with caplog.at_level("WARNING", logger="common.cache"):
        cache.check_class_folders(tree)
    assert [r.getMessage() for r in caplog.records] == [
        f"{empty} holds no images (.jpeg, .jpg, .png, .bmp, .webp): class n02102040 is trained "
        "but never validated"]
    val = build_cache(tree, "val", RES, tmp_path / "cache", workers=1)  # allowed when building too
    assert val.classes == ["n01440764", "n02102040", "n02979186"]
    assert val.labels.tolist() == [0, 0, 2, 2]


# ---------------------------------------------------------------------------------------------
# SIGTERM during the decode
# ---------------------------------------------------------------------------------------------

REPO = str(Path(__file__).resolve().parents[1])

# Builds the train cache with 2 workers, each decode slowed to 0.1 s and logged with the
# worker's PID; "exit" turns SIGTERM into SystemExit, as a training script's handler may.
SLOW_BUILD = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from common import cache
real = cache.decode
def slow(path, resolution):
    with open(sys.argv[4], "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(0.1)
    return real(path, resolution)
cache.decode = slow
if sys.argv[5] == "exit":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
cache.build_cache(Path(sys.argv[2]), "train", 16, Path(sys.argv[3]), workers=2)
"""
BUILD = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from common.cache import build_cache
print(len(build_cache(Path(sys.argv[2]), "train", 16, Path(sys.argv[3]), workers=2)))
"""


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


# how the run is stopped -> the signal, sent to the run alone or to its process group, and the
# exit status: SIGTERM kills at once; SIGTERM with a handler exits through SystemExit; Ctrl-C
# reaches the whole group (the workers too) and raises KeyboardInterrupt in the run.
STOPS = {"sigterm": (signal.SIGTERM, False, -signal.SIGTERM),
         "sigterm-handled": (signal.SIGTERM, False, 143),
         "ctrl-c": (signal.SIGINT, True, -signal.SIGINT)}


@pytest.mark.parametrize("how", list(STOPS))
def test_stopped_mid_decode_leaves_no_worker_and_no_stuck_lock(tmp_path: Path, how: str) -> None:
    """Stopped while 2 workers decode: the workers end with the run (after SIGTERM they used to
    live on, holding the cache lock, so the next run waited for ever), and the run ends at once
    (SystemExit and Ctrl-C used to wait for the whole decode first)."""
    sig, to_group, status = STOPS[how]
    # 512 images: two chunks of 256, one per worker, about 26 s of slowed decoding
    tree = make_image_tree(tmp_path / "src", n_classes=2, n_train=256, n_val=0, size=(12, 10))
    cache_dir, decoded = tmp_path / "cache", tmp_path / "decoded-by.txt"
    decoded.touch()
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, REPO, str(tree), str(cache_dir),
                             str(decoded), "exit" if how == "sigterm-handled" else ""],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    workers: set[int] = set()
    try:
        # import torch can take a while on a busy machine
        wait_until(lambda: len(set(decoded.read_text().split())) == 2 or proc.poll() is not None,
                   60, "both workers to decode")
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        workers = {int(p) for p in decoded.read_text().split()} | child_pids(proc.pid)
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        sent = time.monotonic()
        proc.wait(timeout=20)
        assert time.monotonic() - sent < 10  # not after the whole decode
        assert proc.returncode == status
        wait_until(lambda: not any(pid_alive(p) for p in workers), 5, "the workers to end")
    finally:
        for pid in [proc.pid] * (proc.poll() is None) + [p for p in workers if pid_alive(p)]:
            os.kill(pid, signal.SIGKILL)  # a failed test leaves nothing running
        proc.wait()
        errors = proc.stderr.read()
        proc.stderr.close()
    assert "ForkProcess" not in errors  # no traceback from a worker
    assert not [f for f in cache_files(cache_dir) if f.endswith((".npy", ".json"))]

    # the lock is free: the same split builds (a hang fails here instead of stalling the suite)
    done = subprocess.run([sys.executable, "-c", BUILD, REPO, str(tree), str(cache_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "512"
