"""Resume after a hard kill: a real ``versemi train`` process is SIGKILLed mid-run, then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from versemi.checkpoint import CheckpointError, load_checkpoint
from versemi.cli import main
from versemi.training.run_log import read_jsonl
from versemi.training.checkpointing import weights_digest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VERSEMI_TEST_THREADS": "1"}


def versemi(*args: str) -> list[str]:
    return [sys.executable, "-m", "versemi.cli", "train", *args, "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_sigkill_then_resume_continues_exactly(write_train_config, tmp_path: Path) -> None:
    cfg = write_train_config({"max_steps": 1000, "checkpoint_every": 2, "validate_every": 1000})
    folder = tmp_path / "runs" / "mean_teacher"
    proc = subprocess.Popen(versemi(str(cfg), "--method", "mean_teacher"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "last.pt").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    saved = load_checkpoint(folder / "last.pt")  # the atomic write never leaves a torn file
    step = saved["step"]
    assert 2 <= step < 1000 and step % 2 == 0
    assert saved["ema"]["updates"] == step

    done = subprocess.run(versemi(str(cfg), "--method", "mean_teacher", "--resume", "--max-steps", str(step + 3)),
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_jsonl(folder / "train_log.jsonl")
    resume = [r for r in log if r["event"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == step
    assert resume[0]["weights_sha256"] == weights_digest(saved["model"])  # weights at the resume point
    after = [r["step"] for r in log[log.index(resume[0]):] if r["event"] == "train"]
    assert after == [step + 1, step + 2, step + 3]
    final = load_checkpoint(folder / "last.pt")
    assert final["step"] == step + 3 and final["ema"]["updates"] == step + 3
    adam_steps = {float(s["step"]) for s in final["optimizer"]["state"].values()}
    assert adam_steps == {float(step + 3)}  # the optimizer state continued, it was not re-created
    assert final["schedule"]["last_epoch"] == step + 3


def test_truncated_checkpoint_gives_a_clear_error(write_train_config, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    cfg = write_train_config({"max_steps": 2})
    assert main(["train", str(cfg), "--device", "cpu", "--method", "supervised", "--no-progress"]) == 0
    last = tmp_path / "runs" / "supervised" / "last.pt"
    raw = torch.load(last, weights_only=True)  # plain weights-only file
    assert raw["step"] == 2
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(last)
    capsys.readouterr()
    assert main(["train", str(cfg), "--device", "cpu", "--method", "supervised", "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(last) in err and "truncated" in err and "Traceback" not in err
