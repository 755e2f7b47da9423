"""End to end with the real predictor: Slicer volume node -> `versemi predict` subprocess -> segments.

A tiny model is trained for a few steps (the inference tests' helper), so the segmentation is real
and not empty. The run goes through exactly the code the module uses (``SegmentationJob``), with the
MRML classes of ``slicer-core``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from VerSemiSegmenterLib import catalogue, parameters, selftest
from VerSemiSegmenterLib.pipeline import SegmentationJob

REPO = Path(__file__).resolve().parents[2]

# Three real predictor runs plus a few training steps: ~25 s of CPU, more on a busy machine.
pytestmark = pytest.mark.slow


def _inference_helpers():
    spec = importlib.util.spec_from_file_location("versemi_inference_helpers", REPO / "tests" / "inference" / "helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> str:
    """A tiny model trained for a few steps: organ_a (+1.0 MR), spleen (+1.5), liver (-1.0)."""
    from versemi.checkpoint import save_checkpoint

    helpers = _inference_helpers()
    path = tmp_path_factory.mktemp("model") / "tiny model ü.pt"
    return str(save_checkpoint(helpers.train_tiny_model(steps=40), path))


def _scan(shape=(32, 32, 32), seed: int = 3) -> np.ndarray:
    from versemi.data.synthetic import SyntheticStructure, make_volume

    image, _ = make_volume(
        shape, [SyntheticStructure("spleen", 1, 1.5), SyntheticStructure("liver", 2, -1.0)], np.random.default_rng(seed)
    )
    return image


def _settings(checkpoint: str, prompts: list[str]) -> parameters.RunSettings:
    return parameters.RunSettings(
        input_path="", output_path="", model=checkpoint, prompts=prompts, device="cpu", threads=1,
        python_executable=sys.executable,
    )


def test_predict_and_import_match_the_request(mrml_scene, trained_checkpoint: str, tmp_path: Path) -> None:
    from versemi.labels import lookup_structure

    volume = selftest.add_sample_volume(mrml_scene, "scan ü", array=_scan())
    prompts = ["spleen", "liver"]  # not the label-space order: output values follow the request
    job = SegmentationJob(volume, _settings(trained_checkpoint, prompts), temp_parent=str(tmp_path))
    events: list = []
    job.progress.connect(events.append)
    job.start()
    work_dir = job.work_dir
    assert job.wait(timeout=300), job.error
    assert events and events[-1].fraction == pytest.approx(1.0)
    assert not os.path.exists(work_dir), "temporary files left behind"

    node = job.import_result.segmentation_node
    colors = {p.name: p.color for p in catalogue.read_checkpoint_prompts(trained_checkpoint, sys.executable)}
    codes = {name: lookup_structure(name)[0].code for name in prompts}
    assert selftest.check_segmentation(node, volume, prompts, colors, codes) == []
    assert job.import_result.empty_segments == []  # the trained model finds both structures


def test_unknown_prompt_fails_with_the_predictor_message(mrml_scene, trained_checkpoint: str, tmp_path: Path) -> None:
    volume = selftest.add_sample_volume(mrml_scene, array=_scan((16, 16, 16)))
    job = SegmentationJob(volume, _settings(trained_checkpoint, ["pancreas"]), temp_parent=str(tmp_path))
    job.start()
    assert job.wait(timeout=300) is False
    assert "pancreas" in job.error and "spleen" in job.error  # names the prompt and lists the available ones
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_a_real_run_ends_the_tree_and_adds_nothing(
    mrml_scene, trained_checkpoint: str, tmp_path: Path
) -> None:
    # A larger scan so that inference is still running when we cancel.
    volume = selftest.add_sample_volume(mrml_scene, array=_scan((64, 96, 96)))
    job = SegmentationJob(volume, _settings(trained_checkpoint, ["spleen", "liver", "organ_a"]),
                          temp_parent=str(tmp_path))
    progress: list = []
    job.progress.connect(progress.append)
    job.start()
    deadline = time.monotonic() + 120
    while not any(e.stage == "inference" for e in progress) and time.monotonic() < deadline:
        assert job.poll() is None, f"the run ended before it could be cancelled: {job.error}"
        time.sleep(0.02)
    assert progress, "the predictor reported no progress"
    tree = [job.pid] + [c.pid for c in psutil.Process(job.pid).children(recursive=True)]
    t0 = time.monotonic()
    job.cancel()
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s"
    assert job.cancelled and not job.succeeded and not job.is_running, (job.run_result, job.error)
    for pid in tree:
        try:
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"process {pid} still running"
        except psutil.NoSuchProcess:
            pass
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert list(tmp_path.iterdir()) == [], "temporary files left behind"


def test_the_in_slicer_self_test_sequence(mrml_scene, tmp_path: Path) -> None:
    """What VerSemiSegmenterTest.test_segment_with_tiny_model does in Slicer, with slicer-core."""
    checkpoint = selftest.make_tiny_checkpoint(tmp_path / "tiny model.pt", sys.executable)
    volume = selftest.add_sample_volume(mrml_scene)
    prompts = ["liver", "spleen", "organ_x"]
    from versemi.checkpoint import load_checkpoint

    space = load_checkpoint(checkpoint)["label_space"]  # in-process here; the self-test uses a subprocess
    colors = {p["name"]: tuple(p["color"]) for p in space["prompts"]}
    job = SegmentationJob(volume, _settings(checkpoint, prompts))
    job.start()
    assert job.wait(timeout=300), job.error
    node = job.import_result.segmentation_node
    assert selftest.check_segmentation(node, volume, prompts, colors, selftest.TINY_PROMPT_CODES) == []
    # (The self-test's second, replace-mode run is covered by test_slicer_mrml's replace test.)


def _segment_voxels_ijk(segmentation_node, segment_id: str) -> np.ndarray:
    """IJK indices (N x 3, on the segment's own grid = the volume's) of a segment's non-zero voxels."""
    import slicer
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
    if image.IsEmpty():
        return np.zeros((0, 3), dtype=int)
    extent = image.GetExtent()
    dims = [extent[2 * i + 1] - extent[2 * i] + 1 for i in range(3)]
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    zyx = np.argwhere(array > 0)
    return zyx[:, ::-1] + np.array([extent[0], extent[2], extent[4]])


def test_an_roi_box_limits_the_segmentation_to_it(mrml_scene, trained_checkpoint: str, tmp_path: Path) -> None:
    import dataclasses

    from VerSemiSegmenterLib import roi

    volume = selftest.add_sample_volume(mrml_scene, "scan", array=_scan())
    box = (0, 0, 0, 22, 32, 32)  # x < 22: the liver (x 7-12) inside, the spleen (x 19-24) cut
    settings = dataclasses.replace(_settings(trained_checkpoint, ["spleen", "liver"]), roi=box)
    job = SegmentationJob(volume, settings, temp_parent=str(tmp_path))
    job.start()
    assert job.wait(timeout=300), job.error
    node = job.import_result.segmentation_node
    assert selftest.check_segmentation(node, volume, ["spleen", "liver"]) == []  # the whole volume's geometry
    segmentation = node.GetSegmentation()
    found = 0
    for i in range(segmentation.GetNumberOfSegments()):
        ijk = _segment_voxels_ijk(node, segmentation.GetNthSegmentID(i))
        found += len(ijk)
        if len(ijk):
            assert (ijk.min(axis=0) >= box[:3]).all() and (ijk.max(axis=0) < box[3:]).all(), (ijk.min(0), ijk.max(0))
    assert found > 0, "nothing segmented inside the box"
    full = SegmentationJob(volume, _settings(trained_checkpoint, ["spleen", "liver"]), temp_parent=str(tmp_path))
    full.start()
    assert full.wait(timeout=300), full.error
    outside = 0
    whole = full.import_result.segmentation_node
    for i in range(whole.GetSegmentation().GetNumberOfSegments()):
        ijk = _segment_voxels_ijk(whole, whole.GetSegmentation().GetNthSegmentID(i))
        outside += int((~((ijk >= box[:3]) & (ijk < box[3:])).all(axis=1)).sum())
    assert outside > 0, "the box must cut something off for this test to mean anything"
    assert roi.whole_volume((0, 0, 0, 32, 32, 32), volume) and not roi.whole_volume(box, volume)


def test_predictor_warnings_reach_the_job(mrml_scene, tmp_path: Path) -> None:
    """A volume far larger than the model's training crops: the run succeeds and the job reports the
    predictor's field-of-view warning (the panel shows it in its status line)."""
    from versemi.checkpoint import save_checkpoint
    from versemi.data.fingerprint import DatasetFingerprint
    from versemi.data.plans import DatasetPlan, Plans
    from versemi.data.preprocessing import PreprocessingSpec

    helpers = _inference_helpers()
    payload = helpers.tiny_payload(spacing_xyz=(3.0, 3.0, 3.0))
    spec = PreprocessingSpec(target_spacing=(3.0, 3.0, 3.0), modality="MR")
    crops = DatasetFingerprint("Dataset901_Alpha", "MR", 10, (1.0, 1.0, 1.0), (8.0, 8.0, 8.0))
    plans = Plans({"Dataset901_Alpha": DatasetPlan("Dataset901_Alpha", spec, (16, 16, 16), crops),
                   "Dataset902_Beta": DatasetPlan("Dataset902_Beta", spec, (16, 16, 16))})
    checkpoint = save_checkpoint({**payload, "plans": plans.to_dict()}, tmp_path / "crops.pt")
    volume = selftest.add_sample_volume(mrml_scene, "big")  # ~40 mm across: 5x the 8 mm crops
    job = SegmentationJob(volume, _settings(str(checkpoint), ["organ_a"]), temp_parent=str(tmp_path))
    job.start()
    assert job.wait(timeout=300), job.error
    assert len(job.warnings) == 1 and "field of view" in job.warnings[0] and "--roi" in job.warnings[0]
