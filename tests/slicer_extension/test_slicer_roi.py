"""Markups ROI -> ``versemi predict --roi`` voxel box, against REAL Slicer classes (``slicer-core``)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from VerSemiSegmenterLib import parameters, roi, selftest


def _ijk_to_ras(volume) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])


def roi_around_voxels(scene, volume, start, end, name="ROI"):
    """An ROI aligned with the volume's (oblique) voxel axes, covering voxels start..end-1 (centres
    inside with a margin of a quarter voxel)."""
    import vtk

    m = _ijk_to_ras(volume)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    directions = m[:3, :3] / spacing
    centre_ijk = (np.array(start) + np.array(end) - 1) / 2.0
    centre = m[:3, :3] @ centre_ijk + m[:3, 3]
    size = (np.array(end) - np.array(start) - 1 + 0.5) * spacing
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    orientation = vtk.vtkMatrix4x4()
    for i in range(3):
        for j in range(3):
            orientation.SetElement(i, j, directions[i, j])
    node.SetAndObserveObjectToNodeMatrix(orientation)
    node.SetCenter(list(centre))
    node.SetSize(list(size))
    return node


def test_an_roi_aligned_with_oblique_voxels_gives_exactly_their_box(mrml_scene) -> None:
    volume = selftest.add_sample_volume(mrml_scene)  # 28 x 24 x 20 voxels, rotated, anisotropic
    node = roi_around_voxels(mrml_scene, volume, (4, 5, 3), (11, 13, 10))
    assert roi.voxel_box(node, volume) == (4, 5, 3, 11, 13, 10)
    assert roi.roi_text(roi.voxel_box(node, volume)) == "4,5,3,11,13,10"


def test_transforms_of_the_roi_and_the_volume_are_followed(mrml_scene) -> None:
    import vtk

    volume = selftest.add_sample_volume(mrml_scene)
    node = roi_around_voxels(mrml_scene, volume, (2, 2, 2), (9, 10, 8))
    shift = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 40.0)
    matrix.SetElement(2, 3, -12.5)
    shift.SetMatrixTransformToParent(matrix)
    # Both moved together: the same voxels.
    volume.SetAndObserveTransformNodeID(shift.GetID())
    node.SetAndObserveTransformNodeID(shift.GetID())
    assert roi.voxel_box(node, volume) == (2, 2, 2, 9, 10, 8)
    # Only the volume moved 40 mm away: the ROI no longer overlaps it.
    node.SetAndObserveTransformNodeID(None)
    with pytest.raises(roi.ROIError, match="lies outside volume"):
        roi.voxel_box(node, volume)


def test_fit_to_volume_covers_every_voxel_and_is_clipped(mrml_scene) -> None:
    volume = selftest.add_sample_volume(mrml_scene)
    node = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.fit_roi_to_volume(node, volume)
    box = roi.voxel_box(node, volume)
    assert box == (0, 0, 0, 28, 24, 20) and roi.whole_volume(box, volume)
    node.SetSize([s * 3 for s in node.GetSize()])  # larger than the volume: clipped to it
    assert roi.voxel_box(node, volume) == box


def test_unusable_rois_are_refused_with_a_reason(mrml_scene) -> None:
    volume = selftest.add_sample_volume(mrml_scene)
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "unplaced")
    with pytest.raises(roi.ROIError, match="'unplaced' has no size yet"):
        roi.voxel_box(empty, volume)
    thin = roi_around_voxels(mrml_scene, volume, (4, 4, 4), (5, 12, 12), name="thin")
    with pytest.raises(roi.ROIError, match="covers 1 voxel"):
        roi.voxel_box(thin, volume)


def test_run_settings_pass_the_box_to_versemi_predict() -> None:
    settings = parameters.RunSettings(input_path="in.nrrd", output_path="out.nrrd", model="m.pt", prompts=["liver"],
                                      python_executable=sys.executable, roi=(4, 5, 3, 11, 13, 10))
    command = settings.to_command()
    assert command[command.index("--roi") + 1] == "4,5,3,11,13,10"
    assert "--roi" not in parameters.RunSettings("in.nrrd", "out.nrrd", "m.pt", ["liver"]).to_command()
    for bad in ((4, 5, 3, 4, 13, 10), (0, 0, 0, 1, 1), (-1, 0, 0, 2, 2, 2)):
        with pytest.raises(ValueError, match="ROI box"):
            parameters.RunSettings("in.nrrd", "out.nrrd", "m.pt", ["liver"], roi=bad).validate()
