"""A run folder's integrity under faults (issue 15 items 1, 2, 5, 7, 18) and the planted bugs of
item 19 that the suite did not catch: each test here fails with its fault or bug in place.

Everything is tiny (a width-4 ResNet at 32 px, a few steps, generated images) and on the CPU.
"""
from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import augment, checkpoint, evaluate as evaluate_cli, files, optim, recipe, trainer
from common.cache import ImageSet
from common.config import constants
from common.loader import BatchLoader
from resnet import train as resnet_train
from tests.test_trainer import _Poisonable
from resnet.model import resnet18

REPO = Path(__file__).resolve().parents[1]
RESNET_RECIPE = constants(resnet_train)
TINY = {**RESNET_RECIPE, "IMAGE_DIM": 32, "EVAL_IMAGE_DIM": 32, "BATCH_SIZE": 16, "NUM_EPOCHS": 2,
        "LEARNING_RATE": 0.05, "LR_SCHEDULE": "onecycle", "WARMUP_EPOCHS": 0.5, "NESTEROV": True,
        "LABEL_SMOOTHING": 0.1, "EMA_DECAY": 0.9, "GRAD_CLIP": 5.0, "DEVICE": "cpu"}
CPU = torch.device("cpu")
MEAN, STD = torch.tensor(augment.IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(augment.IMAGENET_STD).view(1, 3, 1, 1)


def colour_set(n: int, classes: int = 4, size: int = 24, seed: int = 0) -> ImageSet:
    """Images whose mean colour says their class, with noise: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    base = torch.stack([torch.tensor([(c * 70) % 256, (c * 150 + 40) % 256, (255 - c * 60) % 256])
                        for c in range(classes)]).float()
    images = base[labels][:, None, None, :] + 40 * torch.randn(n, size, size, 3, generator=g)
    return ImageSet(images.clamp(0, 255).to(torch.uint8), labels)


def tiny_model(num_classes: int = 4, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    model = resnet18(num_classes=num_classes, width=4, zero_init_residual=True)
    if dropout:  # a model that draws from the global RNG every step (item 19j)
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


def state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def one_epoch_run(tmp_path: Path, **cfg: Any) -> Path:
    """A finished one-epoch run folder (48 images: 3 steps)."""
    summary = trainer.fit(tiny_model(), colour_set(48), colour_set(16, seed=1),
                          {**TINY, "NUM_EPOCHS": 1, "RUNS_DIR": str(tmp_path), **cfg}, name="m")
    return Path(summary["run_dir"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != "run.lock"}


# ----------------------------------------------------------------------------- item 1: resume from an older checkpoint

def test_resuming_an_older_checkpoint_continues_in_a_new_folder_and_leaves_the_run_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = one_epoch_run(tmp_path)
    epoch1 = (run / "last.pt").read_bytes()
    data = colour_set(48), colour_set(16, seed=1)
    trainer.fit(tiny_model(), *data, {**TINY, "RESUME": str(run / "last.pt")}, name="m")  # the latest: in place
    assert state(run / "last.pt")["epoch"] == 2
    (run / "best.pt").write_bytes(epoch1)  # as when epoch 2 scored lower than epoch 1
    before = snapshot(run)
    capsys.readouterr()

    resumed = trainer.fit(tiny_model(), *data, {**TINY, "RESUME": str(run / "best.pt")}, name="m")
    new = Path(resumed["run_dir"])
    assert new.parent == run.parent and new.name.startswith(f"{run.name}-from-best-e1")
    assert snapshot(run) == before  # last.pt, log.csv, config.json, best.pt: byte for byte
    assert state(new / "last.pt")["epoch"] == 2
    said = [line for line in capsys.readouterr().out.splitlines() if "new folder" in line]
    assert len(said) == 1 and "older than" in said[0] and new.name in said[0]

    # A last.pt older than the folder's log (it holds 2 epochs, the checkpoint 1): never in place.
    other = tmp_path / "m" / "copied"
    other.mkdir()
    (other / "last.pt").write_bytes(epoch1)
    (other / "log.csv").write_bytes((run / "log.csv").read_bytes())
    (other / "config.json").write_text("{}")
    before = snapshot(other)
    again = trainer.fit(tiny_model(), *data, {**TINY, "NUM_EPOCHS": 1, "RESUME": str(other / "last.pt")}, name="m")
    assert Path(again["run_dir"]) != other and snapshot(other) == before


# ----------------------------------------------------------------------------- item 2: one process per run folder

CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.test_faults_run import TINY, colour_set, tiny_model
from common import trainer
ready, go = Path({ready!r}), Path({go!r})

def hold(step):
    ready.touch()
    end = time.monotonic() + 120
    while not go.exists() and time.monotonic() < end:
        time.sleep(0.05)

trainer.fit(tiny_model(), colour_set(48), colour_set(16, seed=1),
            {{**TINY, "NUM_EPOCHS": 2, "RESUME": {ckpt!r}}}, name="m", on_step=hold)
"""


def test_a_run_folder_belongs_to_one_process_and_a_second_is_refused_at_once(tmp_path: Path) -> None:
    run = one_epoch_run(tmp_path)
    ready, go = tmp_path / "ready", tmp_path / "go"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = run / f".last.pt.{gone.pid}.0123abcd.tmp"  # left by a process killed mid-save
    live = run / f".log.csv.{os.getpid()}.0123abcd.tmp"  # a writer still running
    stale.write_bytes(b"half"), live.write_bytes(b"half")
    code = CHILD.format(repo=str(REPO), ready=str(ready), go=str(go), ckpt=str(run / "last.pt"))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 180
        while not ready.exists():
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < end, "the child never started training"
            time.sleep(0.1)
        start = time.monotonic()
        with pytest.raises(trainer.TrainingError, match=rf"in use by PID {child.pid}\b") as e:
            trainer.fit(tiny_model(), colour_set(48), colour_set(16, seed=1),
                        {**TINY, "RESUME": str(run / "last.pt")}, name="m")
        assert "\n" not in str(e.value) and time.monotonic() - start < 60  # one line, no waiting
        # ... and a train.py is refused before any data work (common.script.check_before_data)
        with pytest.raises(trainer.TrainingError, match=rf"in use by PID {child.pid}\b"):
            trainer.check_resume_folder_free(run / "last.pt", checkpoint.load_checkpoint(run / "last.pt"))
    finally:
        go.touch()
        out = child.communicate(timeout=300)[0]
    assert child.returncode == 0, out
    assert state(run / "last.pt")["epoch"] == 2  # the holder's run went on and saved
    assert not stale.exists() and live.exists()  # the holder cleared what the dead left
    files.HeldLock(run / "run.lock").acquire().release()  # and let go of the folder at its end


WRITER = """
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from common.files import atomic_write_text
for k in range(300):
    atomic_write_text(Path({path!r}), {text!r} * 20000)
"""


def test_two_processes_writing_one_file_never_share_a_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "log.csv"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO), path=str(target), text=t)],
                              stderr=subprocess.PIPE, text=True) for t in "ab"]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert target.read_text() in ("a" * 20000, "b" * 20000)  # one writer's whole file
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]  # no temporary file left


def test_two_new_runs_started_in_the_same_second_get_two_folders(tmp_path: Path) -> None:
    from common import runlog

    first, second = (runlog.new_run_dir(tmp_path, "m", create=True) for _ in range(2))
    assert first != second and first.is_dir() and second.is_dir()


# ----------------------------------------------------------------------------- item 5: a NaN validation loss

class _NaNWhenEvaluated(_Poisonable):
    """Trains normally; its evaluation (eval mode) turns NaN once ``poisoned``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out * float("nan") if self.poisoned and not self.training else out


def test_a_nan_validation_loss_is_a_diverged_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    model = _NaNWhenEvaluated()

    def poison(step: int) -> None:
        if step == 4:  # in epoch 2 (3 steps an epoch), after epoch 1's checkpoint
            model.poisoned = True

    with pytest.raises(trainer.TrainingError, match=r"validation loss became nan.*last good checkpoint is intact"):
        trainer.fit(model, colour_set(48), colour_set(16, seed=1), {**TINY, "RUNS_DIR": str(tmp_path)},
                    name="m", on_step=poison)
    (run,) = (tmp_path / "m").iterdir()
    assert state(run / "last.pt")["epoch"] == 1 and len((run / "log.csv").read_text().splitlines()) == 2


# ----------------------------------------------------------------------------- items 7, 19a: a save failing half-way

class _FailingFile:
    """A real file that takes ``room`` bytes, then raises ``error`` (a full disk, a Ctrl-C)."""

    def __init__(self, f: Any, room: int, error: BaseException) -> None:
        self._f, self.room, self.error = f, room, error

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self._f.write(data[: self.room])
            self.room = 0
            raise self.error
        self.room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _FailingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "second-ctrl-c"])
def test_a_checkpoint_save_that_fails_half_way_leaves_the_old_file_intact(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """torch's zip writer turns the file's error into RuntimeError [enforce fail ...]: the user gets
    the one-line TrainingError (or the KeyboardInterrupt itself), the old last.pt byte for byte,
    and no temporary file."""
    last = tmp_path / "last.pt"
    payload = {"model": {"w": torch.randn(64, 1024)}, "epoch": 1}
    checkpoint.save_checkpoint(payload, last)
    old = last.read_bytes()

    def disk(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 - closed by _FailingFile
        return _FailingFile(f, len(old) // 2, error) if "w" in mode else f

    monkeypatch.setattr(files, "open", disk, raising=False)  # every file files.py opens
    new = {"model": {"w": torch.randn(64, 1024)}, "epoch": 2}
    if isinstance(error, OSError):
        with pytest.raises(trainer.TrainingError, match=r"could not write checkpoint .*No space left.*intact") as e:
            checkpoint.save_checkpoint(new, last)
        assert "\n" not in str(e.value) and "enforce" not in str(e.value)
    else:
        with pytest.raises(KeyboardInterrupt):
            checkpoint.save_checkpoint(new, last)
    assert last.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# ----------------------------------------------------------------------------- items 18 and 19j: exact resume

def test_resume_is_exact_with_dropout_and_carries_the_unfolded_sums(tmp_path: Path) -> None:
    """The same run, stopped mid-epoch and resumed, ends bit-identical to never stopping: weights,
    and train_loss to the last bit (the checkpoint carries the float32 sums unfolded, so they are
    grouped as in an uninterrupted run). Dropout draws from the global RNG every step: a resume
    that does not restore the RNG states ends elsewhere."""
    train_set, val_set = colour_set(64), colour_set(16, seed=1)
    cfg = {**TINY, "RUNS_DIR": str(tmp_path / "a")}
    full = trainer.fit(tiny_model(dropout=0.5), train_set, val_set, cfg, name="m")

    def interrupt(step: int) -> None:
        if step == 6:  # epoch 2 of 4 steps, after its 2nd step
            os.kill(os.getpid(), signal.SIGTERM)

    cut = trainer.fit(tiny_model(dropout=0.5), train_set, val_set, {**cfg, "RUNS_DIR": str(tmp_path / "b")},
                      name="m", on_step=interrupt)
    ckpt = Path(cut["run_dir"]) / "last.pt"
    (sums,) = state(ckpt)["rank_sums"]
    assert sums["unfolded"]["n"] == 2 * 16 and sums["accum"]["n"] == 0  # not folded at the stop
    # The carried float32 sum is the one an uninterrupted run holds at that step.
    assert sums["unfolded"]["loss"] == torch.tensor(sums["unfolded"]["loss"], dtype=torch.float32).item()

    resumed = trainer.fit(tiny_model(dropout=0.5), train_set, val_set, {**cfg, "RESUME": str(ckpt)}, name="m")
    a, b = state(Path(full["run_dir"]) / "last.pt"), state(ckpt)
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]
    assert [h["train_top1"] for h in resumed["history"]] == [h["train_top1"] for h in full["history"]]


def test_device_sums_carried_through_a_checkpoint_add_up_as_if_never_stopped() -> None:
    """Float32 sums whose grouping shows: a fold at the stop would round differently."""
    values = [torch.tensor(v, dtype=torch.float32) for v in (1e8, 3.0, 3.0, 3.0, 3.0, -1e8)]
    whole, cut = trainer.DeviceSums(CPU), trainer.DeviceSums(CPU)
    for v in values:
        whole.add(v, torch.tensor(1), 1)
    for v in values[:3]:
        cut.add(v, torch.tensor(1), 1)
    carried = trainer.DeviceSums(CPU, cut.state())
    for v in values[3:]:
        carried.add(v, torch.tensor(1), 1)
    a, b = trainer._new_accum(), trainer._new_accum()
    whole.fold_into(a)
    carried.fold_into(b)
    assert a == b


# ----------------------------------------------------------------------------- item 19: planted bugs

def setup_run(tmp_path: Path, **cfg: Any) -> trainer.Run:
    run = trainer.setup(tiny_model(), colour_set(32), colour_set(8, seed=1),
                        recipe.complete({**TINY, "RUNS_DIR": str(tmp_path), **cfg}), "m", None, ())
    with run.lock:  # nothing else will run: let go of the folder
        return run


def test_one_clipped_sgd_step_moves_the_weights_by_at_most_lr_times_grad_clip(tmp_path: Path) -> None:
    """(19b) Clipping after the optimiser step would clip nothing that step."""
    lr, clip = 0.5, 1e-3
    run = setup_run(tmp_path, OPTIMIZER="sgd", MOMENTUM=0.0, NESTEROV=False, WEIGHT_DECAY=0.0, LEARNING_RATE=lr,
                    LR_SCHEDULE="constant", GRAD_CLIP=clip, EMA_DECAY=0.0, AMP="off")
    before = torch.cat([p.detach().flatten().clone() for p in run.model.parameters()])
    x, y = next(iter(run.train_loader))
    trainer.train_step(run, x, y, 0, trainer.DeviceSums(run.device))
    after = torch.cat([p.detach().flatten() for p in run.model.parameters()])
    moved = (after - before).norm().item()
    assert 0.5 * lr * clip < moved <= lr * clip * (1 + 1e-4)


def test_resnet_train_py_passes_stride_in_1x1_to_the_model() -> None:
    """(19c) Accepted and ignored, PRETRAINED ResNet-50 weights (v1.5) would load into a v1 net."""
    for stride_in_1x1 in (True, False):
        cfg = {**RESNET_RECIPE, "ARCH": "resnet50", "WIDTH": 4, "STRIDE_IN_1X1": stride_in_1x1}
        block = resnet_train.build_model(cfg, 10).layer2[0]  # conv3_1: the first stride-2 bottleneck
        assert (block.conv1.stride, block.conv2.stride) == (((2, 2), (1, 1)) if stride_in_1x1 else ((1, 1), (2, 2)))


def test_one_ema_update_is_decay_times_the_average_plus_the_rest_times_the_weights() -> None:
    """(19d) ema = decay * w0 + (1 - decay) * w1 after one update; a flipped decay gives the opposite."""
    decay = 0.9
    model = nn.Linear(3, 2)
    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema = optim.ema_model(model, decay)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    w1 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema.update_parameters(model)
    for k, v in ema.module.state_dict().items():
        assert torch.allclose(v, decay * w0[k] + (1 - decay) * w1[k], atol=1e-6), k


def test_the_loss_the_trainer_builds_smooths_the_labels(tmp_path: Path) -> None:
    """(19e) Label smoothing (Szegedy et al., arXiv:1512.00567, Sec. 7): the target is
    (1 - eps) on the label plus eps / C on every class."""
    eps = 0.2
    run = setup_run(tmp_path, LABEL_SMOOTHING=eps)
    logits, y = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 0])
    logp = logits.log_softmax(1)
    want = ((1 - eps) * -logp[torch.arange(5), y] + eps * -logp.mean(1)).mean()
    assert torch.allclose(run.criterion(logits, y), want)
    assert not torch.allclose(run.criterion(logits, y), F.cross_entropy(logits, y))


class _Lookup(nn.Module):
    """Fixed logits per image: image k of a ``lookup_set`` is all pixels k * STEP; a mirrored
    image (its left half darker than its right) gets ``mirrored`` instead."""

    STEP = 20

    def __init__(self, logits: torch.Tensor, mirrored: torch.Tensor | None = None) -> None:
        super().__init__()
        self.logits, self.mirrored = logits, mirrored
        self.anchor = nn.Parameter(torch.zeros(()))  # an nn.Module with a parameter, like a net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x * STD + MEAN  # back to pixel values in [0, 1]
        k = (level[:, 0, :, :4].mean((1, 2)) * 255 / self.STEP).round().long()  # from the left edge
        out = self.logits[k]
        if self.mirrored is not None:
            flipped = level[:, 0, :, :4].mean((1, 2)) < level[:, 0, :, -4:].mean((1, 2))
            out = torch.where(flipped[:, None], self.mirrored[k], out)
        return out + 0 * self.anchor


def lookup_set(labels: list[int], ramp: bool = False, classes: int = 2) -> ImageSet:
    """Image k: every pixel k * STEP (``ramp``: plus a left half 5 levels brighter, so a mirror
    image can be told apart)."""
    img = torch.stack([torch.full((32, 32, 3), k * _Lookup.STEP, dtype=torch.float32) for k in range(len(labels))])
    if ramp:
        img[:, :, :16] += 5
    return ImageSet(img.clamp(0, 255).to(torch.uint8), torch.tensor(labels), classes=[f"c{c}" for c in range(classes)])


NO_AUTOCAST = trainer.system.autocast(CPU, "off")


def test_evaluate_counts_top5_apart_from_top1_on_ten_classes() -> None:
    """(19f) The label ranked 1st, 3rd and 8th: top-1 1/3, top-5 2/3."""
    ranks = [0, 2, 7]
    logits = torch.zeros(3, 10)
    for k, r in enumerate(ranks):
        order = [c for c in range(10) if c != k]
        order.insert(r, k)  # class k at rank r, the others after and before it
        logits[k, order] = torch.arange(10, 0, -1).float()
    loader = BatchLoader(lookup_set([0, 1, 2], classes=10), 3, train=False, image_dim=32, eval_crop=1.0)
    result = trainer.evaluate(_Lookup(logits), loader, NO_AUTOCAST)
    assert (result["top1"], result["top5"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_multi_view_evaluation_averages_probabilities_not_logits() -> None:
    """(19h) Two views whose logits disagree: the mean of the softmaxes (AlexNet Sec. 4.1, VGG
    Sec. 3.2) picks class 0, the mean of the logits class 1."""
    view1, view2 = torch.tensor([[2.0, 0.0, -10.0]]), torch.tensor([[0.0, 3.0, 4.5]])  # centre, mirror
    probs = (view1.softmax(1) + view2.softmax(1)) / 2
    assert probs.argmax().item() == 0 and (view1 + view2).argmax().item() == 1
    loader = BatchLoader(lookup_set([0], ramp=True, classes=3), 1, train=False, image_dim=32, eval_crop=1.0,
                         views="flip")
    model = _Lookup(view1, mirrored=view2)
    result = trainer.evaluate(model, loader, NO_AUTOCAST, views=True)
    assert result["top1"] == 1.0 and result["loss"] == pytest.approx(-math.log(probs[0, 0].item()), rel=1e-5)
    p, _ = evaluate_cli.probabilities(model, loader, NO_AUTOCAST)
    assert torch.allclose(p, probs)


def test_an_ensemble_averages_every_member(monkeypatch: pytest.MonkeyPatch) -> None:
    """(19i) Two networks each right on one image of two: their averaged softmax is right on both."""
    p_a = torch.tensor([[0.9, 0.1], [0.4, 0.6]])
    p_b = torch.tensor([[0.4, 0.6], [0.9, 0.1]])
    nets = {"a.pt": _Lookup(p_a.log()), "b.pt": _Lookup(p_b.log())}
    ckpt = {"config": {"AMP": "off"}, "classes": ["c0", "c1"]}
    monkeypatch.setattr(evaluate_cli, "load_model", lambda path, dev, *a, **k: (nets[Path(path).name], ckpt))
    monkeypatch.setattr(evaluate_cli, "val_loader_for", lambda cfg, dev, *a, **k: BatchLoader(
        lookup_set([0, 0]), 2, train=False, image_dim=32, eval_crop=1.0))
    results = evaluate_cli.evaluate([Path("a.pt"), Path("b.pt")], device="cpu")
    assert results["a.pt"]["top1"] == results["b.pt"]["top1"] == 0.5
    assert results["ensemble"]["top1"] == 1.0


def test_rand_augment_gives_every_image_the_strength_of_bin_m(monkeypatch: pytest.MonkeyPatch) -> None:
    """(19g) With Brightness as the only op, every image is brightened or darkened by exactly
    bin M's factor (0.9 * M / 30 at M=20), whatever the other images drew."""
    spec = augment.RAND_AUGMENT_OPS["Brightness"]
    monkeypatch.setattr(augment, "RAND_AUGMENT_OPS", {"Brightness": spec})
    m = 20
    strength = augment._bin_magnitudes("Brightness", spec, 31, 8, 8)[m].item()
    pixels = torch.full((16, 3, 8, 8), 0.4)
    mean, std = MEAN, STD
    x = (pixels - mean) / std
    out, _ = augment.rand_augment(num_ops=1, magnitude=m)(x, torch.zeros(16, dtype=torch.long),
                                                          torch.Generator().manual_seed(0))
    factor = ((out * std + mean) / pixels).mean((1, 2, 3))
    assert torch.allclose((factor - 1).abs(), torch.full((16,), strength), atol=1e-4), factor
    assert (factor > 1).any() and (factor < 1).any()  # a sign per image
