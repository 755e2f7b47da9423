"""Training logs after a resume: every step once, one ``best`` per validation, nothing after ``end``.

A real ``versemi train`` process is SIGKILLed at a deterministic point (right after the validation
of step 6, while ``last.pt`` is still at step 4), so the logs hold steps the resumed run redoes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from process_helpers import ENV, leave_temp_file
from versemi.cli import main
from versemi.training.run_log import RunLog, read_jsonl, truncate_jsonl

_KILL_AFTER_VALIDATION = textwrap.dedent("""
    import os, signal, sys
    from versemi.training import trainer

    real = trainer.Trainer.run_validation

    def run_validation(self):
        record = real(self)
        if self.step == 6:  # logged steps 5 and 6 and validated step 6; last.pt is at step 4
            os.kill(os.getpid(), signal.SIGKILL)
        return record

    trainer.Trainer.run_validation = run_validation
    from versemi.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _train_steps(log: list[dict]) -> list[int]:
    return [r["step"] for r in log if r["event"] == "train"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_resume_after_a_kill_logs_every_step_once(write_train_config, tmp_path: Path) -> None:
    cfg = write_train_config({"max_steps": 8, "checkpoint_every": 4, "validate_every": 2, "log_every": 1,
                              "tensorboard": True})
    argv = ["train", str(cfg), "--method", "supervised", "--device", "cpu", "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER_VALIDATION, *argv], env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-3000:]
    folder = tmp_path / "runs" / "supervised"
    assert _train_steps(read_jsonl(folder / "train_log.jsonl")) == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in read_jsonl(folder / "validation_log.jsonl")] == [2, 4, 6]
    with (folder / "train_log.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"event": "train", "st')  # a line torn by the kill
    stale = leave_temp_file(folder / "last.pt")  # what a kill during a checkpoint write leaves

    assert main([*argv, "--resume"]) == 0
    log = read_jsonl(folder / "train_log.jsonl")
    assert _train_steps(log) == [1, 2, 3, 4, 5, 6, 7, 8]  # 5 and 6 were redone, and appear once
    assert [r["event"] for r in log if r["event"] != "train"] == ["start", "resume", "end"]
    assert log[-1]["event"] == "end" and log[-1]["step"] == 8
    assert next(r for r in log if r["event"] == "resume")["step"] == 4
    validation = read_jsonl(folder / "validation_log.jsonl")
    assert [r["step"] for r in validation] == [2, 4, 6, 8]  # one record, so at most one best, per step
    best = [r["step"] for r in validation if r["best"]]
    assert len(best) == len(set(best))
    assert not stale.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]

    # Resuming the finished stage again changes nothing: no record after "end".
    before = {name: (folder / name).read_bytes() for name in ("train_log.jsonl", "validation_log.jsonl")}
    assert main([*argv, "--resume"]) == 0
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_run_log_truncates_only_when_the_resumed_run_writes(tmp_path: Path) -> None:
    train = tmp_path / "train_log.jsonl"
    records = [{"event": "start", "step": 0}] + [{"event": "train", "step": s} for s in (1, 2, 3)] + [
        {"event": "end", "step": 3}]
    train.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn', encoding="utf-8")
    (tmp_path / "validation_log.jsonl").write_text(
        "".join(json.dumps({"step": s, "best": True}) + "\n" for s in (2, 3)), encoding="utf-8")
    untouched = train.read_bytes()
    log = RunLog(tmp_path, tensorboard=False, resume_step=2)
    log.close()
    assert train.read_bytes() == untouched  # nothing written: nothing changed
    log = RunLog(tmp_path, tensorboard=False, resume_step=2)
    log.event({"event": "resume", "step": 2})
    assert [(r["event"], r["step"]) for r in read_jsonl(train)] == [
        ("start", 0), ("train", 1), ("train", 2), ("resume", 2)]
    assert [r["step"] for r in read_jsonl(tmp_path / "validation_log.jsonl")] == [2]
    assert truncate_jsonl(train, lambda r: True) == 0  # already clean: not rewritten


def test_model_section_typo_names_the_config_file(write_train_config, capsys: pytest.CaptureFixture) -> None:
    cfg = write_train_config(model={"backbone": "vnet", "base_filtrs": 4, "depth": 3})
    assert main(["train", str(cfg), "--device", "cpu", "--method", "supervised", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"versemi train: error: {cfg}: model: ")
    assert "base_filtrs" in err[0]
    assert not (cfg.parent / "runs").exists() and not (cfg.parent / "cache").exists()  # refused before any work
