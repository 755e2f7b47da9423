"""End-to-end training on generated data: both VerSemi stages, baselines, logs and checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from versemi.checkpoint import Checkpoint, load_checkpoint
from versemi.cli import main
from versemi.training.run_log import read_jsonl
from versemi.training.checkpointing import weights_digest


def train_events(folder: Path, event: str) -> list[dict]:
    return [r for r in read_jsonl(folder / "train_log.jsonl") if r["event"] == event]


def test_versemi_both_stages(write_train_config, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_train_config({"max_steps": 40, "lr": 3e-3, "validate_every": 10, "checkpoint_every": 10,
                              "tensorboard": True})
    assert main(["train", str(cfg), "--device", "cpu", "--no-progress"]) == 0
    runs = tmp_path / "runs"
    s1, s2 = runs / "stage1", runs / "stage2"

    # Stage 1: finite, falling losses with every stage-1 term.
    steps = train_events(s1, "train")
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert set(steps[0]["losses"]) == {"total", "supervised", "synthetic", "auxiliary"}
    totals = [r["losses"]["total"] for r in steps]
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-5:]) / 5 < 0.9 * sum(totals[:5]) / 5

    # The log names the labeled / validation / unlabeled cases per dataset.
    start = train_events(s1, "start")[0]
    cases = start["cases"]
    assert cases["labeled"]["Dataset901_Alpha"] and cases["labeled"]["Dataset902_Beta"]
    assert len(cases["validation"]["Dataset901_Alpha"]) == 1
    assert not set(cases["validation"]["Dataset901_Alpha"]) & set(cases["labeled"]["Dataset901_Alpha"])
    assert cases["unlabeled"] == {}  # stage 1 reads no unlabeled scan

    # Stage 2 starts from stage 1's final checkpoint, uses the unlabeled scans, all terms finite.
    s2_start = train_events(s2, "start")[0]
    stage1_final = load_checkpoint(s1 / "best.pt")
    assert s2_start["weights_sha256"] == weights_digest(stage1_final["model"])
    assert s2_start["cases"]["unlabeled"] == {
        "Dataset901_Alpha": ["alpha_003"], "Dataset902_Beta": ["beta_003"], "extra": ["extra_000_0000", "extra_001_0000"]
    }
    steps2 = train_events(s2, "train")
    assert set(steps2[0]["losses"]) >= {"supervised", "synthetic", "auxiliary", "cube", "consistency"}
    assert all(math.isfinite(v) for r in steps2 for v in r["losses"].values())
    assert steps2[-1]["losses"]["consistency_weight"] == pytest.approx(1.0)
    assert 0 <= steps2[-1]["data_wait_fraction"] <= 1

    # Validation: per-prompt metrics of each dataset's own prompts, best checkpoint chosen by mean Dice.
    val = read_jsonl(s2 / "validation_log.jsonl")
    assert [v["step"] for v in val] == [10, 20]
    assert set(val[-1]["metrics"]) == {"organ_a", "spleen", "liver"}
    assert {c["dataset"] for c in val[-1]["cases"]} == {"Dataset901_Alpha", "Dataset902_Beta"}
    best = max(v["mean_dice"] for v in val)
    assert load_checkpoint(s2 / "best.pt")["best_metric"] == pytest.approx(best)

    # Checkpoints are plain weights-only files with everything to predict and to resume.
    raw = torch.load(s2 / "last.pt", map_location="cpu", weights_only=True)
    for key in ("model_config", "label_space", "plans", "model", "config", "optimizer", "scaler", "ema",
                "schedule", "rng", "step", "stage", "best_metric"):
        assert key in raw, key
    assert raw["step"] == 20 and raw["stage"] == 2 and raw["method"] == "versemi"
    plans = raw["plans"]["datasets"]
    assert list(plans) == ["Dataset901_Alpha", "Dataset902_Beta"]
    for plan in plans.values():  # the config's top-level keys override every dataset's plan
        assert plan["patch_size"] == [16, 16, 16]
        assert plan["preprocessing"]["target_spacing"] == [1.5, 1.5, 2.0]
    assert plans["Dataset902_Beta"]["preprocessing"]["normalization"] == "ct_zscore"
    assert raw["plans"]["aliases"] == {"extra": "Dataset901_Alpha"}  # the MR folder uses the MR dataset's plan
    assert json.loads((runs / "plans.json").read_text()) == raw["plans"]
    # training.postprocessing auto: the last validation decided, per prompt, whether keeping the
    # largest connected component helps; the checkpoint carries the decision for predict.
    last_val = val[-1]
    expected = {name for name, m in last_val["metrics"].items() if m["dice_largest_component"] > m["dice"]}
    assert set(raw["postprocessing"]) == expected == set(last_val["postprocessing"])
    assert raw["label_space"]["prompts"][-1]["name"] == "all_foreground"
    out = capsys.readouterr().out
    assert str(s2 / "best.pt") in out
    assert list((s2 / "tensorboard").glob("events.out.tfevents.*"))

    # Resuming a finished run skips both stages: no new steps, and nothing appended after "end".
    logs = {path: path.read_bytes() for folder in (s1, s2) for path in folder.glob("*_log.jsonl")}
    assert main(["train", str(cfg), "--device", "cpu", "--no-progress", "--resume"]) == 0
    assert {path: path.read_bytes() for path in logs} == logs
    for folder, steps_done in ((s1, 20), (s2, 20)):
        assert train_events(folder, "resume") == []
        assert len(train_events(folder, "train")) == steps_done


@pytest.mark.parametrize("method", ["supervised", "mean_teacher", "bcp"])
def test_baselines_train_in_the_same_trainer(write_train_config, tmp_path: Path, method: str) -> None:
    cfg = write_train_config({"max_steps": 3, "validate_every": 3})
    assert main(["train", str(cfg), "--device", "cpu", "--method", method, "--no-progress"]) == 0
    folder = tmp_path / "runs" / method
    steps = train_events(folder, "train")
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(math.isfinite(v) for r in steps for v in r["losses"].values())
    ckpt = load_checkpoint(folder / "last.pt")
    assert ckpt["method"] == method and ckpt["step"] == 3
    assert bool(ckpt["ema"]) is (method != "supervised")


def test_synthetic_prompt_on_a_head_of_its_own(write_train_config, tmp_path: Path) -> None:
    cfg = write_train_config({"max_steps": 4}, model={"backbone": "vnet", "base_filters": 4, "depth": 3,
                                                      "synthetic_head": "own"})
    assert main(["train", str(cfg), "--device", "cpu", "--no-progress"]) == 0
    ckpt = Checkpoint.load(tmp_path / "runs" / "stage2" / "last.pt")
    synthetic = ckpt.label_space.synthetic_id
    assert ckpt.model_config["synthetic_head"] == "own" and ckpt.model_config["synthetic_prompt"] == synthetic
    model = ckpt.build_model()  # strict load: the synthetic head's weights are in the checkpoint
    assert model.synthetic_head is not None
    initial = Checkpoint.load(tmp_path / "runs" / "stage1" / "last.pt").build_model()
    assert weights_digest(model.synthetic_head.state_dict()) != weights_digest(initial.synthetic_head.state_dict())


def test_user_errors_are_one_line(write_train_config, capsys: pytest.CaptureFixture) -> None:
    cfg = write_train_config({"nonsense": 1})
    assert main(["train", str(cfg), "--device", "cpu"]) == 2
    assert "training.nonsense: unknown key" in capsys.readouterr().err
    cfg = write_train_config(name="ok.yaml")
    assert main(["train", str(cfg), "--device", "cpu", "--stage", "2"]) == 2
    assert "no stage-1 checkpoint" in capsys.readouterr().err
    assert main(["train", str(cfg), "--device", "cpu", "--resume"]) == 2
    assert "--resume: no last.pt" in capsys.readouterr().err
    assert main(["train", str(cfg), "--method", "supervised", "--stage", "2"]) == 2
    bad_patch = write_train_config(name="bad.yaml", patch_size=[18, 16, 16])
    assert main(["train", str(bad_patch), "--device", "cpu"]) == 2
    assert "size divisor" in capsys.readouterr().err


def test_early_stopping_after_patience(write_train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import versemi.training.trainer as trainer_module

    scores = iter([0.5, 0.4, 0.45, 0.3, 0.9])
    monkeypatch.setattr(trainer_module, "validate",
                        lambda *a, **k: {"mean_dice": next(scores), "metrics": {}, "cases": []})
    cfg = write_train_config({"max_steps": 10, "validate_every": 1, "early_stopping_patience": 2,
                              "checkpoint_every": 100})
    assert main(["train", str(cfg), "--device", "cpu", "--method", "supervised", "--no-progress"]) == 0
    folder = tmp_path / "runs" / "supervised"
    end = train_events(folder, "end")[0]
    assert end["stopped_early"] and end["step"] == 3 and end["best_step"] == 1
    assert load_checkpoint(folder / "best.pt")["step"] == 1
    assert load_checkpoint(folder / "last.pt")["step"] == 3


@pytest.mark.parametrize("native", [True, False])
def test_cpu_precision_follows_the_one_rule(write_train_config, tmp_path: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """bf16 where the CPU computes it natively, else float32 with a warning (as predict); fp16: float32."""
    import versemi.devices

    monkeypatch.setattr(versemi.devices, "cpu_has_native_bf16", lambda: native)
    cfg = write_train_config({"max_steps": 2, "validate_every": 2, "precision": "bf16"})
    assert main(["train", str(cfg), "--device", "cpu", "--stage", "1", "--no-progress"]) == 0
    start = train_events(tmp_path / "runs" / "stage1", "start")[0]
    assert start["amp"] == ("torch.bfloat16" if native else "none")
    assert ("bf16 was asked for but cpu has no native bf16" in capsys.readouterr().err) is not native
    assert all(math.isfinite(v) for r in train_events(tmp_path / "runs" / "stage1", "train") for v in r["losses"].values())
    out = tmp_path / "x"
    assert main(["train", str(cfg), "--device", "cpu", "--stage", "1", "--amp", "fp16", "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: --amp is deprecated: use --precision fp16" in err
    assert "warning: fp16 was asked for but cpu has no CUDA; training in float32" in err
    assert train_events(out / "stage1", "start")[0]["amp"] == "none"


def test_resume_from_starts_from_a_checkpoints_weights(write_train_config, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    from versemi.checkpoint import save_checkpoint

    cfg = write_train_config({"max_steps": 2, "validate_every": 2})
    assert main(["train", str(cfg), "--device", "cpu", "--method", "supervised", "--no-progress"]) == 0
    source = tmp_path / "runs" / "supervised" / "last.pt"
    out = tmp_path / "retrain"
    assert main(["train", str(cfg), "--device", "cpu", "--stage", "1", "--resume-from", str(source),
                 "--output-dir", str(out), "--no-progress"]) == 0
    start = train_events(out / "stage1", "start")[0]
    assert start["step"] == 0 and start["init_checkpoint"] == str(source)
    assert start["weights_sha256"] == weights_digest(load_checkpoint(source)["model"])

    other = load_checkpoint(source)
    other["label_space"]["prompts"][0]["name"] = "kidney"
    save_checkpoint({k: v for k, v in other.items() if k not in ("format", "format_version", "versemi_version")},
                    tmp_path / "other.pt")
    capsys.readouterr()
    assert main(["train", str(cfg), "--device", "cpu", "--resume-from", str(tmp_path / "other.pt"),
                 "--output-dir", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "differ from this config's label space" in capsys.readouterr().err


def test_non_finite_loss_stops_with_a_clear_error(write_train_config, capsys: pytest.CaptureFixture) -> None:
    cfg = write_train_config({"max_steps": 3, "lr": 1e30, "grad_clip": 0, "validate_every": 100})
    assert main(["train", str(cfg), "--device", "cpu", "--method", "supervised", "--no-progress"]) == 2
    assert "non-finite loss at step" in capsys.readouterr().err
