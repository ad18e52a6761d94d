"""Progress in a log file (issue 17, item 6): when stderr is not a terminal, plain lines with the
step, images/s and the ETAs; lines around the cache decode; the epoch lines carry the run's ETA."""
from __future__ import annotations

import io
import re
from pathlib import Path

from common import runlog


def test_a_run_with_stderr_in_a_file_prints_progress_lines(tiny_imagenette: Path, tmp_path: Path,
                                                            capsys) -> None:
    from resnet import train

    train.main(["--RECIPE=tiny", "--DEVICE=cpu", "--DECODE_WORKERS=1", "--PROGRESS_SECONDS=1e-6",
                f"--DATA_PATH={tiny_imagenette}", f"--DATA_DIR={tmp_path / 'data'}",
                f"--RUNS_DIR={tmp_path / 'runs'}"])
    out, err = capsys.readouterr()  # pytest's capture: not a terminal, as with nohup or tee
    lines = re.findall(r"^epoch (\d)/2  step (\d+)/(\d+)  \d+ img/s  epoch ETA \S+  run ETA (\S+)$", err, re.M)
    steps = int(lines[0][2])
    # Every step of both epochs (PROGRESS_SECONDS is tiny), the run's ETA reaching 0 at the last.
    assert [(int(e), int(s)) for e, s, _, _ in lines] == [(e, s) for e in (1, 2) for s in range(1, steps + 1)]
    assert lines[-1][3] == "0s"  # (a quiet machine may round every ETA of this tiny run to 0s)
    assert all(_seconds(eta) >= 0 for *_, eta in lines)  # each a duration (the fake clock below checks values)
    assert re.search(r"^epoch 1/2  train loss .* run ETA \d+s$", out, re.M)  # the epoch line
    assert re.search(r"^epoch 2/2  train loss .*s$", out, re.M) and "ETA" not in out.splitlines()[-2]


def _seconds(text: str) -> int:
    """runlog.duration's text back in seconds (45s, 3m10s, 2h05m)."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert m, text
    h, mi, s = (int(g or 0) for g in m.groups())
    return 3600 * h + 60 * mi + s


def test_progress_lines_come_at_most_every_progress_seconds_and_never_on_a_terminal(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(runlog.time, "perf_counter", lambda: clock[0])
    log = io.StringIO()
    progress = runlog.Progress(30, epoch=0, num_epochs=3, steps=100, start_step=0, images_per_step=64, stream=log)
    for step in range(100):
        clock[0] = step + 1.0  # one second a step
        progress.step(step)
    assert log.getvalue().splitlines() == [  # after 30 s and 60 s and 90 s; 64 img/s
        "epoch 1/3  step 30/100  64 img/s  epoch ETA 1m10s  run ETA 4m30s",
        "epoch 1/3  step 60/100  64 img/s  epoch ETA 40s  run ETA 4m00s",
        "epoch 1/3  step 90/100  64 img/s  epoch ETA 10s  run ETA 3m30s"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Terminal()
    progress = runlog.Progress(1e-9, 0, 1, 10, 0, 8, stream=tty)  # tqdm's bar is the terminal's
    for step in range(10):
        clock[0] += 1
        progress.step(step)
    assert tty.getvalue() == ""


def test_the_cache_decode_says_when_it_starts_and_ends(tiny_imagenette: Path, tmp_path: Path, caplog) -> None:
    import logging

    from common.cache import build_cache

    with caplog.at_level(logging.INFO, logger="common.cache"):
        build_cache(tiny_imagenette, "val", 16, tmp_path / "cache", workers=1)
        build_cache(tiny_imagenette, "val", 16, tmp_path / "cache", workers=1)  # cached: silent
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if m.startswith("decoding 20 images of imagenette2-160-val-16px")]) == 1
    assert len([m for m in said if re.match(r"decoded imagenette2-160-val-16px in \d+ s", m)]) == 1
