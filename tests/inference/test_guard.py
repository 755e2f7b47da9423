"""The modality and content guard: default prompts run only where the scan's modality matches their
plan's; named prompts run anyway with a warning; intensities far from a prompt's training scans warn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.data.intensity import IntensityProfile
from versemi.data.fingerprint import DatasetFingerprint
from versemi.data.plans import DatasetPlan, Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.inference import PredictionError, Predictor
from versemi.inference.guard import scan_modality
from versemi.inference.predictor import ModalityWarning

from .helpers import make_image, tiny_payload

ALPHA, BETA = "Dataset901_Alpha", "Dataset902_Beta"
REPO = Path(__file__).resolve().parents[2]
SPLEEN_CT = REPO / "examples" / "data" / "Dataset004_SpleenCT" / "imagesTr" / "spleen_002_0000.nii.gz"
HIPPOCAMPUS = ("hippocampus_anterior", "hippocampus_posterior")


def mr_alpha_ct_beta(profile: IntensityProfile | None = None) -> dict:
    """organ_a from an MR dataset (Alpha, optionally with an intensity profile), spleen and liver from CT."""
    mr = PreprocessingSpec(target_spacing=(3.0, 3.0, 3.0), modality="MRI")
    ct = PreprocessingSpec(target_spacing=(3.0, 3.0, 3.0), modality="CT")
    fingerprint = DatasetFingerprint(ALPHA, "MRI", 10, (1.0, 1.0, 1.0), (30.0, 30.0, 30.0), intensity_profile=profile)
    plans = Plans({ALPHA: DatasetPlan(ALPHA, mr, (16, 16, 16), fingerprint), BETA: DatasetPlan(BETA, ct, (16, 16, 16))})
    return {**tiny_payload(), "plans": plans.to_dict()}


def ct_like() -> sitk.Image:
    """Air around soft tissue, in Hounsfield units."""
    array = np.full((20, 24, 24), -1000.0, dtype=np.float32)
    array[4:16, 4:20, 4:20] = np.random.default_rng(0).normal(40, 20, (12, 16, 16))
    return make_image(array, spacing=(3.0, 3.0, 3.0))


def mr_like(seed: int = 0, scale: float = 300.0) -> sitk.Image:
    array = np.random.default_rng(seed).gamma(4.0, scale / 4.0, (20, 24, 24)).astype(np.float32)
    return make_image(array, spacing=(3.0, 3.0, 3.0))


def run(predictor: Predictor, image: sitk.Image, prompts: str) -> tuple[list[str], dict]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predictor.predict(image, prompts, image_name="scan.nii.gz")
    return [str(w.message) for w in caught if w.category is ModalityWarning], result.info


def test_scan_modality_reads_hounsfield_units_and_the_header() -> None:
    assert scan_modality(ct_like())[0] == "CT"
    assert scan_modality(mr_like())[0] == "MR"
    zscored = make_image(np.random.default_rng(1).normal(0, 1, (10, 10, 10)).astype(np.float32))
    assert scan_modality(zscored)[0] == "MR"  # z-scored MR never reaches Hounsfield values of fat
    tagged = mr_like()
    tagged.SetMetaData("0008|0060", "CT")
    assert scan_modality(tagged) == ("CT", "DICOM header Modality CT")


def test_default_prompts_on_a_ct_run_no_mri_prompt_and_say_which_were_skipped() -> None:
    predictor = Predictor(mr_alpha_ct_beta(), device="cpu")
    lines, info = run(predictor, ct_like(), "all")
    assert info["prompts"] == ["spleen", "liver"]
    assert info["modality"]["scan"] == "CT" and info["modality"]["skipped"] == {"organ_a": "trained on MR"}
    (line,) = lines
    assert line.startswith("scan.nii.gz: the scan is CT (intensities reach -1000") and "organ_a (trained on MR)" in line
    assert "--prompts" in line and "--any-modality" in line and info["warnings"] == [line]


def test_named_prompts_of_another_modality_run_with_a_warning() -> None:
    predictor = Predictor(mr_alpha_ct_beta(), device="cpu")
    lines, info = run(predictor, ct_like(), "organ_a,spleen")
    assert info["prompts"] == ["organ_a", "spleen"] and info["modality"]["skipped"] == {}
    (line,) = lines
    assert "prompt organ_a was trained on MR but the scan is CT" in line and "asked for" in line


def test_label_values_stay_those_of_the_prompts_asked_for() -> None:
    predictor = Predictor(mr_alpha_ct_beta(), device="cpu")
    result = predictor.predict(mr_like(), "all")
    assert [(e.name, e.value) for e in result.labels] == [("organ_a", 1)]
    result = predictor.predict(ct_like(), "all")
    assert [(e.name, e.value) for e in result.labels] == [("spleen", 2), ("liver", 3)]
    assert set(np.unique(sitk.GetArrayFromImage(result.labelmap))) <= {0, 2, 3}


def test_no_fitting_prompt_is_an_error_and_the_guard_can_be_switched_off() -> None:
    payload = mr_alpha_ct_beta()
    with pytest.raises(PredictionError, match="no prompt of model .* is left to run"):
        Predictor({**payload, "plans": _all_mr(payload)}, device="cpu").predict(ct_like(), "all")
    lines, info = run(Predictor(payload, device="cpu", modality_guard=False), ct_like(), "all")
    assert lines == [] and info["prompts"] == ["organ_a", "spleen", "liver"]


def _all_mr(payload: dict) -> dict:
    plans = Plans.from_dict(payload["plans"])
    mr = plans.datasets[ALPHA].spec
    return Plans({name: DatasetPlan(name, mr, plan.patch_size) for name, plan in plans.datasets.items()}).to_dict()


def test_intensities_far_from_the_training_scans_warn() -> None:
    profile = IntensityProfile.from_scans("MRI", [sitk.GetArrayFromImage(mr_like(seed)) for seed in range(5)])
    predictor = Predictor(mr_alpha_ct_beta(profile), device="cpu")
    lines, _ = run(predictor, mr_like(seed=9, scale=50.0), "organ_a")  # same shape of histogram: no warning
    assert lines == []
    bimodal = np.where(np.random.default_rng(2).random((20, 24, 24)) < 0.9, 100.0, 3000.0).astype(np.float32)
    lines, info = run(predictor, make_image(bimodal, spacing=(3.0, 3.0, 3.0)), "organ_a")
    (line,) = lines
    assert line.startswith(f"scan.nii.gz: intensities far from the scans {ALPHA} was trained on: its ")
    assert line.endswith("[prompts organ_a]") and info["warnings"] == [line]


def test_profiles_round_trip_and_old_plans_without_one_still_load() -> None:
    profile = IntensityProfile.from_scans("CT", [sitk.GetArrayFromImage(ct_like())])
    fingerprint = DatasetFingerprint(BETA, "CT", 1, (1.0, 1.0, 1.0), (9.0, 9.0, 9.0), intensity_profile=profile)
    assert DatasetFingerprint.from_dict(fingerprint.to_dict()) == fingerprint
    old = fingerprint.to_dict()
    del old["intensity_profile"]
    assert DatasetFingerprint.from_dict(old).intensity_profile is None


def test_cli_default_prompts_on_a_ct_skip_the_mri_prompts_of_the_default_model(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra: str) -> tuple[subprocess.CompletedProcess, Path]:
        out = tmp_path / f"seg{len(extra)}.nii.gz"
        proc = subprocess.run([sys.executable, "-m", "versemi.cli", "predict", "-i", str(SPLEEN_CT), "-o", str(out),
                               "--threads", "1", "--progress", "none", *extra],
                              capture_output=True, text=True, env=env, timeout=600)
        return proc, out

    def predict(*extra: str) -> tuple[subprocess.CompletedProcess, dict]:
        proc, out = run(*extra)
        assert proc.returncode == 0, proc.stderr
        return proc, json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())

    # The shipped model's prompts are all MR: with the default prompts nothing fits a CT, so nothing runs,
    # and the one error line names every skipped prompt and why.
    proc, out = run()
    assert proc.returncode == 2 and not out.exists()
    assert "the scan is CT" in proc.stderr and "hippocampus_anterior (trained on MR)" in proc.stderr
    assert "left_atrium (trained on MR)" in proc.stderr and "--any-modality" in proc.stderr
    proc, sidecar = predict("--prompts", "hippocampus_anterior", "--quality", "fast")
    assert [label["name"] for label in sidecar["labels"]] == ["hippocampus_anterior"]
    assert "prompt hippocampus_anterior was trained on MR but the scan is CT" in proc.stderr
