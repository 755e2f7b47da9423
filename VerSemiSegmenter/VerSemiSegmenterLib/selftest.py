"""Helpers shared by the module's self-test (inside Slicer) and the pytest tests (slicer-core).

- :func:`make_tiny_checkpoint` writes a small, randomly initialised VerSemi checkpoint in a
  subprocess of the predictor's Python (torch stays out of Slicer's process);
- :func:`add_sample_volume` adds a small scalar volume with oblique geometry to a scene.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

# Prompts of the tiny model: two with SNOMED CT codes (terminology tags), one without.
TINY_PROMPTS = ("liver", "organ_x", "spleen")  # label-space order

_TINY_CHECKPOINT_SNIPPET = r"""
import sys, torch
from versemi.checkpoint import save_checkpoint
from versemi.data.preprocessing import PreprocessingSpec
from versemi.labels import LabelSpace
from versemi.model import build_model

torch.manual_seed(0)
space = LabelSpace.from_dataset_labels({
    "Dataset901_Alpha": {"labels": {"background": 0, "liver": 1, "organ_x": 2}},
    "Dataset902_Beta": {"labels": {"background": 0, "spleen": 1}},
})
model = build_model({"backbone": "unet", "base_filters": 4, "depth": 3, "convs_per_stage": 1,
                     "head_channels": 4, "num_prompts": len(space)})
spec = PreprocessingSpec(target_spacing=(2.0, 2.0, 2.0), modality="MR")
save_checkpoint({
    "model_config": model.config,
    "label_space": space.to_dict(),
    "preprocessing": {**spec.to_dict(), "patch_size": [16, 16, 16]},
    "model": model.state_dict(),
}, sys.argv[1])
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
        raise RuntimeError(f"cannot create the test checkpoint {path}:\n{completed.stderr[-2000:]}")
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


# SNOMED CT codes the tiny model's prompts must carry (from versemi.labels.KNOWN_STRUCTURES).
TINY_PROMPT_CODES = {"liver": "10200004", "spleen": "78961009", "organ_x": None}


def check_segmentation(
    segmentation_node: Any,
    volume_node: Any,
    expected_names: list[str],
    expected_colors: dict[str, tuple[int, int, int]] | None = None,
    expected_codes: dict[str, str | None] | None = None,
    tolerance: float = 1e-4,
) -> list[str]:
    """Problems (empty list = fine) of an imported segmentation against what was asked for.

    Checks: one segment per prompt, in order, with the prompt's name, colour and SNOMED CT code in its
    terminology tag; the reference geometry and every non-empty segment's grid equal the volume's.
    """
    import slicer
    import vtk

    problems: list[str] = []
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = [segmentation.GetSegment(i).GetName() for i in ids]
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
