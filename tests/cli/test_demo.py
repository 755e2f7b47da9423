"""``versemi demo``: the default model on labeled example scans (Dice per case and prompt, time,
overlays, held-out vs trained-on), then optionally the training demo."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.cli import demo as demo_module
from versemi.cli import main
from versemi.labels import LabelSpace

from inference.helpers import tiny_payload, write_tiny_model_datasets
from models.embedded import make_embedded_catalogue

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"


@pytest.fixture
def bundled_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A default model (tiny, random) over the bundled examples' own datasets and labels, embedded in a
    catalogue that holds out the hippocampus cases 011-023 and was trained on the spleen CT."""
    datasets = {d.name: json.loads((d / "dataset.json").read_text()) for d in sorted(EXAMPLES.iterdir())
                if (d / "dataset.json").is_file()}
    payload = tiny_payload(LabelSpace.from_dataset_labels(datasets), spacing_xyz=(2.0, 2.0, 2.0))
    plan = {"modality": "MR", "target_spacing": [2.0, 2.0, 2.0], "patch_size": [16, 16, 16]}
    catalogue = make_embedded_catalogue(
        tmp_path / "shipped", payload,
        heldout={"Dataset001_Hippocampus": ["hippocampus_011", "hippocampus_015", "hippocampus_020", "hippocampus_023"]},
        plans={name: plan for name in datasets},
    )
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(catalogue))
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "cache"))
    return catalogue


def test_demo_segments_every_bundled_case_with_the_default_model(bundled_default: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(EXAMPLES), "--output", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "model tiny-default@1.0.0 (shipped with versemi" in printed
    results = json.loads((out / "results.json").read_text())
    bundled = sorted(p.name.split("_0000")[0] for p in EXAMPLES.glob("*/imagesTr/*_0000.nii.gz"))
    assert sorted(r["case"] for r in results["cases"]) == bundled
    splits = {r["case"]: r["split"] for r in results["cases"]}
    assert splits["hippocampus_023"] == "held out" and splits["hippocampus_001"] == "TRAINED ON"
    assert splits["spleen_002"] == "TRAINED ON"  # the only spleen case: trained on, its Dice is no test
    assert "Trained on (Dice shown, not a test): hippocampus_001" in printed and "spleen_002" in printed
    for row in results["cases"]:
        assert row["seconds"] > 0 and Path(row["overlay"]).is_file() and Path(row["labelmap"]).is_file()
        expected = ["spleen"] if row["dataset"] == "Dataset004_SpleenCT" else ["hippocampus_anterior",
                                                                                 "hippocampus_posterior"]
        assert [s["prompt"] for s in row["prompts"]] == expected
        line = next(ln for ln in printed.splitlines() if ln.startswith(row["case"] + " "))
        assert f"{row['prompts'][0]['dice']:.3f}" in line and f"{row['seconds']:.1f} s" in line
    # The summary is the mean over the held-out cases only.
    held = [r for r in results["cases"] if r["heldout"]]
    mean = np.mean([r["prompts"][0]["dice"] for r in held])
    summary = results["heldout_mean"]["hippocampus_anterior"]
    assert summary["mean_dice"] == round(float(mean), 6) and summary["cases"] == 4
    assert f"hippocampus_anterior     Dice {100 * mean:.1f} %" in printed  # percent, as the model card
    hd95 = [r["prompts"][0]["hd95_mm"] for r in held if r["prompts"][0]["hd95_mm"] is not None]
    assert summary["hd95_undefined"] == 4 - len(hd95)
    assert summary["mean_hd95_mm"] == (round(float(np.mean(hd95)), 2) if hd95 else None)


def test_demo_heldout_only_segments_just_the_heldout_cases(bundled_default: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(EXAMPLES), "--output", str(out), "--threads", "1", "--heldout-only"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["case"] for r in results["cases"]] == ["hippocampus_011", "hippocampus_015", "hippocampus_020",
                                                     "hippocampus_023"]
    assert "Held-out cases (never trained on), mean per prompt:" in capsys.readouterr().out


def test_demo_dice_is_the_dice_of_the_written_labelmaps(trained_checkpoint: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """A trained tiny model on labeled cases of its own datasets: real segmentations, Dice recomputed."""
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(tmp_path / "none.json"))
    data = write_tiny_model_datasets(tmp_path / "data")
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(data), "--output", str(out), "--model", str(trained_checkpoint),
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "no list of held-out cases for this model" in printed
    results = json.loads((out / "results.json").read_text())
    assert {r["split"] for r in results["cases"]} == {"not listed"} and results["heldout_mean"] == {}
    for row in results["cases"]:
        dataset = data / row["dataset"]
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / f"{row['case']}.nii.gz")))
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(row["labelmap"]))
        labels = json.loads((dataset / "dataset.json").read_text())["labels"]
        for value, score in enumerate(row["prompts"], start=1):
            ref = reference == labels[score["prompt"]]
            pred = predicted == value
            dice = 2 * (ref & pred).sum() / (ref.sum() + pred.sum())
            assert score["dice"] == pytest.approx(dice, abs=1e-4)
            assert score["dice"] > 0.5, row  # a trained model finds its structures
    assert [s["prompt"] for s in results["cases"][1]["prompts"]] == ["spleen", "liver"]


def test_demo_without_a_default_model_runs_the_training_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "catalogue.json"
    empty.write_text(json.dumps({"format": "versemi-catalogue", "format_version": 1, "models": []}))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(empty))
    calls = []
    monkeypatch.setattr(demo_module, "training_demo", lambda args, out: calls.append(out) or 0)
    assert main(["demo", "--data", str(EXAMPLES), "--output", str(tmp_path / "demo")]) == 0
    assert calls == [tmp_path / "demo" / "training"]
    err = capsys.readouterr().err
    assert "names no default model" in err and "trains a small one instead" in err


def test_demo_train_flag_runs_the_training_demo_after_segmenting(bundled_default: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(demo_module, "training_demo",
                        lambda args, out: calls.append((out, (tmp_path / "demo" / "results.json").is_file())) or 0)
    only_spleen = tmp_path / "examples"
    only_spleen.mkdir()
    (only_spleen / "Dataset004_SpleenCT").symlink_to(EXAMPLES / "Dataset004_SpleenCT")
    assert main(["demo", "--data", str(only_spleen), "--output", str(tmp_path / "demo"), "--train",
                 "--threads", "1"]) == 0
    assert calls == [(tmp_path / "demo" / "training", True)]


def test_demo_with_a_damaged_default_model_fails_in_one_line(bundled_default: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    from models.embedded import flip_byte

    flip_byte(bundled_default.parent / "models" / "tiny-default-1.0.0.pt")
    assert main(["demo", "--data", str(EXAMPLES), "--output", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("versemi demo: error: default model tiny-default@1.0.0:")
    assert not (tmp_path / "demo" / "results.json").exists()


def test_demo_prints_every_prompts_heldout_dice_of_the_shipped_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    from versemi.models import load_catalogue

    monkeypatch.delenv("VERSEMI_CATALOGUE", raising=False)
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "cache"))
    entry = load_catalogue().default_entry()
    assert main(["demo", "--data", str(EXAMPLES), "--output", str(tmp_path / "demo"), "--threads", "1"]) == 0
    printed = capsys.readouterr().out.split("Every prompt's held-out Dice", 1)[1]
    real = [name for name in entry.label_space if name != "all_foreground"]
    assert real and set(entry.heldout_dice) == set(real)  # no prompt ships without a held-out number
    for name in real:
        assert f"{name:<24} Dice {100 * entry.heldout_dice[name]:.1f} %" in printed
