"""A real 2-process DDP run (torchrun, gloo on CPU): both ranks end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from versemi.checkpoint import load_checkpoint
from versemi.training.run_log import read_jsonl
from versemi.training.checkpointing import weights_digest


@pytest.mark.slow
def test_torchrun_two_processes_keep_weights_in_sync(write_train_config, tmp_path: Path) -> None:
    # Both VerSemi stages, 2 steps each; stage 2 with the EMA teacher, so its copies must agree too.
    cfg = write_train_config({"max_steps": 4, "validate_every": 2, "checkpoint_every": 2,
                              "versemi": {"ema_teacher": True}})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VERSEMI_TEST_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "versemi.cli", "train", str(cfg), "--device", "cpu", "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in (1, 2):
        folder = tmp_path / "runs" / f"stage{stage}"
        log = read_jsonl(folder / "train_log.jsonl")
        # Only rank 0 writes logs: one start and one end record.
        assert sum(r["event"] == "start" for r in log) == 1 and sum(r["event"] == "end" for r in log) == 1
        start = next(r for r in log if r["event"] == "start")
        end = next(r for r in log if r["event"] == "end")
        assert start["world_size"] == 2
        digests = end["rank_weights_sha256"]
        assert len(digests) == 2 and digests[0] == digests[1]
        ckpt = load_checkpoint(folder / "last.pt")
        assert ckpt["step"] == 2
        assert digests[0].split("/")[0] == weights_digest(ckpt["model"])
        if stage == 2:
            assert digests[0].split("/ema:")[1] == weights_digest(ckpt["ema"]["model"])
