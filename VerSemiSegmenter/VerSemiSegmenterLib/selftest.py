"""Helpers shared by the module's self-test (inside Slicer) and the pytest tests (slicer-core).

- :func:`make_tiny_checkpoint` writes a small, randomly initialised VerSemi checkpoint in a
  subprocess of the predictor's Python (torch stays out of Slicer's process);
- :func:`add_sample_volume` adds a small scalar volume with oblique geometry to a scene;
- :func:`pick_sample` chooses the bundled sample scan (``sampledata``) a model can segment;
- :func:`run_review_round_trip` walks a tiny review folder through the Review panel's controller
  (next case -> save refined -> reject) on a given scene and cleans up after itself.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping
from .i18n import _

# Prompts of the tiny model: two with SNOMED CT codes (terminology tags), one without.
TINY_PROMPTS = ("liver", "organ_x", "spleen")  # label-space order

_TINY_CHECKPOINT_SNIPPET = r"""
import sys, torch
from versemi.checkpoint import Checkpoint
from versemi.data.plans import Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.labels import LabelSpace
from versemi.network import build_model

torch.manual_seed(0)
space = LabelSpace.from_dataset_labels({
    "Dataset901_Alpha": {"labels": {"background": 0, "liver": 1, "organ_x": 2}},
    "Dataset902_Beta": {"labels": {"background": 0, "spleen": 1}},
})
model = build_model({"backbone": "unet", "base_filters": 4, "depth": 3, "convs_per_stage": 1,
                     "head_channels": 4, "num_prompts": len(space)})
spec = PreprocessingSpec(target_spacing=(2.0, 2.0, 2.0), modality="MR")
Checkpoint(model.config, space, Plans.single(spec, (16, 16, 16), space.datasets), model.state_dict()).save(sys.argv[1])
"""


def make_tiny_checkpoint(path: str | os.PathLike[str], python_executable: str = sys.executable) -> str:
    """Write a tiny random-weights checkpoint with the prompts :data:`TINY_PROMPTS` (+ synthetic)."""
    path = os.path.abspath(os.fspath(path))
    from .process import subprocess_environment

    completed = subprocess.run(
        [python_executable, "-c", _TINY_CHECKPOINT_SNIPPET, path],
        capture_output=True, text=True, encoding="utf-8", errors="replace", check=False, timeout=600,
        env=subprocess_environment(),
    )
    if completed.returncode != 0 or not os.path.isfile(path):
        raise RuntimeError(_("cannot create the test checkpoint {path}:\n{stderr}").format(path=path, stderr=completed.stderr[-2000:]))
    return path


def oblique_ijk_to_ras(spacing=(1.5, 1.2, 2.0), origin=(12.0, -30.0, 5.5), angle_rad=0.35):
    """A 4x4 IJK-to-RAS matrix (nested lists) rotated about two axes, for geometry tests."""
    ca, sa = math.cos(angle_rad), math.sin(angle_rad)
    cb, sb = math.cos(angle_rad / 2), math.sin(angle_rad / 2)
    rz = [[ca, -sa, 0.0], [sa, ca, 0.0], [0.0, 0.0, 1.0]]
    rx = [[1.0, 0.0, 0.0], [0.0, cb, -sb], [0.0, sb, cb]]
    rot = [[sum(rz[i][k] * rx[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    return [
        [rot[i][0] * spacing[0], rot[i][1] * spacing[1], rot[i][2] * spacing[2], origin[i]] for i in range(3)
    ] + [[0.0, 0.0, 0.0, 1.0]]


def sample_volume_array(shape_zyx=(20, 24, 28)):
    """A float32 image: noisy background with three bright/dark ellipsoids."""
    import numpy as np

    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape_zyx], indexing="ij")
    image = rng.normal(0.0, 0.1, shape_zyx).astype(np.float32)
    image[((x + 0.3) / 0.35) ** 2 + (y / 0.4) ** 2 + (z / 0.5) ** 2 < 1] += 1.5
    image[((x - 0.4) / 0.25) ** 2 + ((y - 0.2) / 0.3) ** 2 + (z / 0.4) ** 2 < 1] -= 1.0
    return image


def add_sample_volume(scene: Any, name: str = "VerSemi test volume", array=None) -> Any:
    """Add a scalar volume node with :func:`sample_volume_array` voxels and oblique geometry."""
    import vtk
    from vtk.util import numpy_support

    array = sample_volume_array() if array is None else array
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    vtk_array = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(vtk_array)
    node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    for i, row in enumerate(oblique_ijk_to_ras()):
        for j, value in enumerate(row):
            matrix.SetElement(i, j, value)
    node.SetIJKToRASMatrix(matrix)
    node.CreateDefaultDisplayNodes()
    return node


def pick_sample(model_prompts: list[str]) -> tuple[Any, list[str]]:
    """The bundled sample scan whose labelled structures a model segments most, with those prompts.

    Returns:
        ``(sampledata.Sample, prompts)``, or ``(None, [])`` when the model segments none of them.
    """
    from .sampledata import SAMPLES

    best, prompts = None, []
    for sample in SAMPLES:
        shared = [p for p in model_prompts if p in sample.prompts]
        if len(shared) > len(prompts):
            best, prompts = sample, shared
    return best, prompts


# SNOMED CT codes the tiny model's prompts must carry (from versemi.labels.KNOWN_STRUCTURES).
TINY_PROMPT_CODES = {"liver": "10200004", "spleen": "78961009", "organ_x": None}


def _prompt_name(segment: Any) -> str:
    """The prompt a segment was imported for (its tag), else its name."""
    import vtk

    from .segmentation_import import PROMPT_TAG

    tag = vtk.reference("")
    segment.GetTag(PROMPT_TAG, tag)
    return str(tag) or segment.GetName()


def check_segmentation(
    segmentation_node: Any,
    volume_node: Any,
    expected_names: list[str],
    expected_colors: dict[str, tuple[int, int, int]] | None = None,
    expected_codes: dict[str, str | None] | None = None,
    tolerance: float = 1e-4,
) -> list[str]:
    """Problems (empty list = fine) of an imported segmentation against what was asked for.

    Checks: one segment per prompt, in order, with the prompt's name (its tag; the segment is named
    with the human-readable title), colour and SNOMED CT code in its
    terminology tag; the reference geometry and every non-empty segment's grid equal the volume's.
    """
    import slicer
    import vtk

    problems: list[str] = []
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = [_prompt_name(segmentation.GetSegment(i)) for i in ids]
    if names != list(expected_names):
        problems.append(f"segment names {names} != expected {list(expected_names)}")
    tag_name = slicer.vtkSegment.GetTerminologyEntryTagName()
    for segment_id, name in zip(ids, names):
        segment = segmentation.GetSegment(segment_id)
        if expected_colors and name in expected_colors:
            want = [c / 255.0 for c in expected_colors[name]]
            got = list(segment.GetColor())
            if max(abs(a - b) for a, b in zip(want, got)) > 1e-6:
                problems.append(f"{name}: colour {got} != {want}")
        if expected_codes and expected_codes.get(name):
            tag = vtk.reference("")
            segment.GetTag(tag_name, tag)
            if f"~SCT^{expected_codes[name]}^" not in str(tag):
                problems.append(f"{name}: terminology tag {str(tag)!r} lacks SCT code {expected_codes[name]}")
    volume_matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(volume_matrix)
    reference = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    got_geometry = segmentation.GetConversionParameter(reference)
    want_geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(volume_matrix, volume_node.GetImageData())
    if not _same_geometry_strings(got_geometry, want_geometry, tolerance):
        problems.append(f"reference geometry {got_geometry!r} != volume geometry {want_geometry!r}")
    for segment_id, name in zip(ids, names):
        image = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
        if image.IsEmpty():
            continue
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        diff = max(abs(matrix.GetElement(i, j) - volume_matrix.GetElement(i, j)) for i in range(4) for j in range(4))
        if diff > tolerance:
            problems.append(f"{name}: segment grid differs from the volume grid (max matrix difference {diff})")
    return problems


def _same_geometry_strings(a: str, b: str, tolerance: float) -> bool:
    try:
        va = [float(x) for x in a.replace(";", " ").split()]
        vb = [float(x) for x in b.replace(";", " ").split()]
    except ValueError:
        return a == b
    return len(va) == len(vb) and all(abs(x - y) <= tolerance for x, y in zip(va, vb))


# --- review round trip ------------------------------------------------------------------------------

# Non-consecutive values: the refined label must keep the table's values, not renumber to 1..N.
REVIEW_LABELS = (
    {"value": 1, "name": "liver", "color": [221, 130, 101], "prompt_id": 0,
     "snomed": {"code": "10200004", "meaning": "Liver", "category_code": "123037004",
                "category_meaning": "Anatomical Structure"}},
    {"value": 3, "name": "spleen", "color": [157, 108, 162], "prompt_id": 2, "snomed": None},
)
# Review order is by score: the first case is saved as refined, the second rejected.
REVIEW_CASES = {"refine me": 0.9, "reject me": 0.4}
REVIEW_SHAPE_ZYX = (7, 9, 11)
# Oblique LPS geometry: the case's volume, segments and refined file must all carry it exactly.
_REVIEW_SPACING_XYZ = (1.5, 1.25, 2.0)
_REVIEW_ORIGIN_XYZ = (-10.0, 4.5, 30.25)
_REVIEW_DIRECTION = (math.cos(0.3), -math.sin(0.3), 0.0, math.sin(0.3), math.cos(0.3), 0.0, 0.0, 0.0, 1.0)
# Node classes a case adds (and must remove): volumes, segmentations and their helpers.
REVIEW_NODE_CLASSES = (
    "vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode",
    "vtkMRMLColorTableNode", "vtkMRMLVolumeArchetypeStorageNode", "vtkMRMLDisplayNode",
)


class SelfTestError(AssertionError):
    """A self-test step found problems (the message lists them)."""


def review_pseudo_label(case_index: int):
    """The pseudo-label of review case ``case_index``: a liver box and a spleen row (values 1 and 3)."""
    import numpy as np

    array = np.zeros(REVIEW_SHAPE_ZYX, np.uint8)
    array[1:3 + case_index, 2:6, 2:6] = 1
    array[5, 7, 1:4 + case_index] = 3
    return array


def _on_review_grid(array: Any) -> Any:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(_REVIEW_SPACING_XYZ)
    image.SetOrigin(_REVIEW_ORIGIN_XYZ)
    image.SetDirection(_REVIEW_DIRECTION)
    return image


def make_review_folder(
    root: str | os.PathLike[str],
    cases: Mapping[str, float] = REVIEW_CASES,
    scans_name: str = "scans",
    review_name: str = "review",
) -> Path:
    """Write a tiny review folder under ``root``, as ``versemi pseudolabel`` would.

    Scans go to ``root/<scans_name>``; the folder ``root/<review_name>`` holds the pseudo-labels with
    their label table sidecars and the manifest (one pending case per ``cases`` entry: case id ->
    score; case ``k`` gets :func:`review_pseudo_label` ``(k)``).

    Returns:
        The review folder.
    """
    import json

    import numpy as np
    import SimpleITK as sitk
    from versemi.review import ReviewManifest

    root = Path(root)
    scans, folder = root / scans_name, root / review_name
    (folder / "pseudo").mkdir(parents=True)
    scans.mkdir()
    manifest = ReviewManifest(folder)
    manifest.set_label_table(list(REVIEW_LABELS))
    rng = np.random.default_rng(0)
    for index, (case_id, score) in enumerate(cases.items()):
        image = scans / f"{case_id}.nii.gz"
        sitk.WriteImage(_on_review_grid(rng.normal(size=REVIEW_SHAPE_ZYX).astype(np.float32)), str(image))
        pseudo = folder / "pseudo" / f"{case_id}.nii.gz"
        sitk.WriteImage(_on_review_grid(review_pseudo_label(index)), str(pseudo))
        (folder / "pseudo" / f"{case_id}.json").write_text(
            json.dumps({"labels": list(REVIEW_LABELS)}), encoding="utf-8"
        )
        manifest.upsert(case_id, image=image, pseudo_label=pseudo, model={"name": "tiny"}, score=score,
                        user="pseudolabel")
    return folder


def _node_counts(scene: Any) -> dict[str, int]:
    return {name: scene.GetNumberOfNodesByClass(name) for name in REVIEW_NODE_CLASSES}


def _lps_to_ras_matrix(image: Any) -> list[list[float]]:
    """The IJK-to-RAS matrix (nested lists) of a ``SimpleITK.Image``'s LPS geometry."""
    direction, spacing, origin = image.GetDirection(), image.GetSpacing(), image.GetOrigin()
    flip = (-1.0, -1.0, 1.0)  # LPS -> RAS
    rows = [[flip[i] * direction[3 * i + j] * spacing[j] for j in range(3)] + [flip[i] * origin[i]] for i in range(3)]
    return rows + [[0.0, 0.0, 0.0, 1.0]]


def _volume_matrix_problem(volume_node: Any, image: Any, tolerance: float) -> str | None:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    want = _lps_to_ras_matrix(image)
    diff = max(abs(matrix.GetElement(i, j) - want[i][j]) for i in range(4) for j in range(4))
    dims = volume_node.GetImageData().GetDimensions()
    if tuple(dims) != tuple(image.GetSize()):
        return f"volume dimensions {tuple(dims)} != image size {tuple(image.GetSize())}"
    if diff > tolerance:
        return f"volume geometry differs from the image file (max matrix difference {diff})"
    return None


def _raise_if(problems: list[str], step: str) -> None:
    if problems:
        raise SelfTestError(_("review round trip, {step}: ").format(step=step) + "; ".join(problems))


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_review_round_trip(scene: Any, work_dir: str | os.PathLike[str] | None = None, tolerance: float = 1e-4) -> None:
    """Review a tiny folder end to end with the panel's controller on ``scene``; clean up after.

    Steps: make a review folder (:func:`make_review_folder`) in a new temporary folder, open it
    (:func:`VerSemiSegmenterLib.review.open_review` with a :class:`MrmlReviewScene`), *Next case*
    (top-scored case: named, coloured segments holding the pseudo-label, on the image's geometry),
    *Save refined* (a new file on the image grid equal to the segments, status ``refined``, image and
    pseudo-label untouched), then *Reject* on the second case. The case nodes and the temporary
    folder are removed whatever happens; the scene must end with the node counts it started with.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer, a ``slicer-core`` scene in pytest).
        work_dir: where to make the temporary folder (system default when ``None``).
        tolerance: largest allowed matrix difference between grids.

    Raises:
        SelfTestError: a step found problems (the message names the step and lists them).
    """
    import numpy as np
    import SimpleITK as sitk

    from .review import MrmlReviewScene, open_review

    before = _node_counts(scene)
    parent = None if work_dir is None else os.fspath(work_dir)
    temp_dir = tempfile.mkdtemp(prefix="VerSemi review self-test ", dir=parent)
    controller = None
    try:
        folder = make_review_folder(temp_dir)
        controller = open_review(folder, MrmlReviewScene(scene, name_prefix="VerSemi self-test"), user="selftest")
        first, second = list(REVIEW_CASES)
        names = [entry["name"] for entry in REVIEW_LABELS]
        colors = {entry["name"]: tuple(entry["color"]) for entry in REVIEW_LABELS}
        codes = {entry["name"]: (entry["snomed"] or {}).get("code") for entry in REVIEW_LABELS}

        # Next case: the top-scored case, as named segments on the image's geometry.
        loaded = controller.next_case()
        if loaded is None or loaded.case_id != first:
            _raise_if([f"next case is {getattr(loaded, 'case_id', None)!r}, expected {first!r}"], "next case")
        case = controller.session.case(first)
        protected = {path: _digest(path) for path in (case.image, case.pseudo_label)}
        image = sitk.ReadImage(str(case.image))
        problems = check_segmentation(loaded.segmentation_node, loaded.volume_node, names, colors, codes, tolerance)
        volume_problem = _volume_matrix_problem(loaded.volume_node, image, tolerance)
        problems += [volume_problem] if volume_problem else []
        _raise_if(problems, "next case")

        # Save refined (unedited: the refined file must hold the pseudo-label's values) -> second case opens.
        saved = controller.save_refined()
        problems = []
        refined_path = saved.refined_label
        if saved.status != "refined" or controller.session.case(first).status != "refined":
            problems.append(f"status after save is {controller.session.case(first).status!r}, expected 'refined'")
        if refined_path is None or not Path(refined_path).is_file():
            problems.append(f"refined label {refined_path} was not written")
        else:
            refined = sitk.ReadImage(str(refined_path))
            if refined.GetSize() != image.GetSize():
                problems.append(f"refined label size {refined.GetSize()} != image size {image.GetSize()}")
            else:
                grids = np.array(_lps_to_ras_matrix(refined)) - np.array(_lps_to_ras_matrix(image))
                diff = float(np.max(np.abs(grids)))
                if diff > tolerance:
                    problems.append(f"refined label grid differs from the image grid (max matrix difference {diff})")
                if not np.array_equal(sitk.GetArrayFromImage(refined), review_pseudo_label(0)):
                    problems.append("refined label voxels differ from the (unedited) segments")
        if {path: _digest(path) for path in protected} != protected:
            problems.append("the image or the pseudo-label file was modified")
        if loaded.volume_node.GetScene() is not None or loaded.segmentation_node.GetScene() is not None:
            problems.append("the saved case's nodes are still in the scene")
        if controller.current is None or controller.current.case_id != second:
            problems.append(f"after saving, the open case is {getattr(controller.current, 'case_id', None)!r}, "
                            f"expected {second!r}")
        _raise_if(problems, "save refined")

        # Reject the second case: nothing pending is left, so no case opens.
        rejected = controller.reject("self-test")
        problems = []
        if rejected.status != "rejected":
            problems.append(f"status after reject is {rejected.status!r}, expected 'rejected'")
        counts = controller.session.counts()
        if counts != {"pending": 0, "refined": 1, "rejected": 1, "failed": 0}:
            problems.append(f"manifest counts {counts} != 1 refined, 1 rejected")
        if controller.current is not None:
            problems.append(f"case {controller.current.case_id!r} opened after the last reject")
        after = _node_counts(scene)
        if after != before:
            problems.append(f"scene node counts {after} != before the review {before}")
        _raise_if(problems, "reject")
    finally:
        if controller is not None:
            controller.close_case()
        shutil.rmtree(temp_dir, ignore_errors=True)
