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
