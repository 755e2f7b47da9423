"""The field-of-view warning: a scan far from what a prompt's dataset was trained on (e.g. a whole-head
MRI for prompts trained on hippocampus crops) is segmented with one clear warning line, not refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from versemi.checkpoint import save_checkpoint
from versemi.data.fingerprint import DatasetFingerprint
from versemi.data.plans import DatasetPlan, Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.inference import Predictor
from versemi.inference.planning import FIELD_OF_VIEW_FACTOR, field_of_view_warnings
from versemi.inference.predictor import FieldOfViewWarning

from .helpers import make_image, tiny_payload

ALPHA, BETA = "Dataset901_Alpha", "Dataset902_Beta"


def crops_payload() -> dict:
    """organ_a trained on 35 x 50 x 36 mm crops (Alpha, like the hippocampus); Beta without a fingerprint."""
    spec = PreprocessingSpec(target_spacing=(6.0, 6.0, 6.0), modality="MR")
    fingerprint = DatasetFingerprint(ALPHA, "MR", 200, (1.0, 1.0, 1.0), (35.0, 50.0, 36.0))
    plans = Plans({ALPHA: DatasetPlan(ALPHA, spec, (16, 16, 16), fingerprint), BETA: DatasetPlan(BETA, spec, (16, 16, 16))})
    return {**tiny_payload(), "plans": plans.to_dict()}


def scan(extent_mm: tuple[float, float, float], spacing: float = 5.0) -> sitk.Image:
    shape_zyx = [max(2, int(round(e / spacing))) for e in reversed(extent_mm)]
    array = np.random.default_rng(0).normal(size=shape_zyx).astype(np.float32)
    return make_image(array, spacing=(spacing, spacing, spacing))


def predict_warnings(predictor: Predictor, image: sitk.Image, prompts: str, **kwargs) -> tuple[list[str], dict]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predictor.predict(image, prompts, image_name="head.nii.gz", **kwargs)
    return [str(w.message) for w in caught if w.category is FieldOfViewWarning], result.info


def test_whole_head_for_a_crop_trained_prompt_warns_once_and_still_segments() -> None:
    predictor = Predictor(crops_payload(), device="cpu")
    lines, info = predict_warnings(predictor, scan((180.0, 220.0, 180.0)), "organ_a,spleen")
    assert len(lines) == 1, lines
    line = lines[0]
    assert "\n" not in line
    assert line.startswith("head.nii.gz: field of view 180 x 220 x 180 mm is 5x larger than the scans "
                           f"{ALPHA} was trained on (median 35 x 50 x 36 mm)")
    assert "--roi" in line and line.endswith("[prompts organ_a]")  # spleen's dataset has no fingerprint
    assert info["warnings"] == lines and info["prompts"] == ["organ_a", "spleen"]  # segmented anyway


def test_a_crop_like_scan_or_an_roi_around_the_structure_gives_no_warning() -> None:
    predictor = Predictor(crops_payload(), device="cpu")
    lines, info = predict_warnings(predictor, scan((36.0, 48.0, 40.0), spacing=2.0), "organ_a")
    assert lines == [] and "warnings" not in info
    head = scan((180.0, 220.0, 180.0))
    lines, _ = predict_warnings(predictor, head, "organ_a", roi=(10, 10, 10, 18, 20, 18))  # 40 x 50 x 40 mm
    assert lines == []


def test_far_smaller_scans_warn_too_and_the_factor_is_the_threshold() -> None:
    payload = crops_payload()
    plans = Plans.from_dict(payload["plans"])
    predictor = Predictor(payload, device="cpu")
    groups = predictor.preprocessing_groups(predictor.resolve_prompts("organ_a"))
    ids = predictor.resolve_prompts("organ_a")
    small = scan((10.0, 10.0, 10.0), spacing=1.0)
    (line,) = field_of_view_warnings(small, groups, plans, predictor.label_space, ids, "small.nrrd")
    assert "is 5x smaller than the scans" in line and "may be cut off" in line
    just_below = scan((35.0 * FIELD_OF_VIEW_FACTOR * 0.95, 50.0, 36.0), spacing=1.0)
    assert field_of_view_warnings(just_below, groups, plans, predictor.label_space, ids, "x") == []
    at_factor = scan((36.0 * FIELD_OF_VIEW_FACTOR, 50.0 * FIELD_OF_VIEW_FACTOR, 36.0), spacing=1.0)
    assert len(field_of_view_warnings(at_factor, groups, plans, predictor.label_space, ids, "x")) == 1


def test_cli_prints_one_warning_line_and_succeeds(tmp_path: Path) -> None:
    checkpoint = save_checkpoint(crops_payload(), tmp_path / "crops.pt")
    head = tmp_path / "head.nii.gz"
    sitk.WriteImage(scan((180.0, 220.0, 180.0)), str(head))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VERSEMI_CATALOGUE": str(tmp_path / "none.json")}
    proc = subprocess.run([sys.executable, "-m", "versemi.cli", "predict", "--model", str(checkpoint), "-i", str(head),
                           "-o", str(tmp_path / "seg.nii.gz"), "--prompts", "organ_a", "--progress", "none"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if "warning:" in ln]
    assert len(warned) == 1 and warned[0].startswith(f"versemi predict: warning: {head}: field of view 180 x 220 x 180")
    sidecar = json.loads((tmp_path / "seg.json").read_text())
    assert sidecar["prediction"]["warnings"] == [warned[0].split("warning: ", 1)[1]]
