"""The module self-test's review round trip (``selftest.run_review_round_trip``) on slicer-core's MRML.

Slicer's ``VerSemiSegmenterTest.test_ReviewRoundTrip`` calls the same function on ``slicer.mrmlScene``;
here it runs on a real ``vtkMRMLScene`` from the ``slicer-core`` package.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("versemi.review")

from VerSemiSegmenterLib import review, selftest  # noqa: E402


def _node_count(scene) -> int:
    """Nodes in the scene, less the subject hierarchy (created on first use; Slicer always has one)."""
    return scene.GetNumberOfNodes() - scene.GetNumberOfNodesByClass("vtkMRMLSubjectHierarchyNode")


def test_review_round_trip_passes_and_cleans_up(mrml_scene, tmp_path: Path) -> None:
    nodes_before = _node_count(mrml_scene)
    selftest.run_review_round_trip(mrml_scene, tmp_path)
    assert list(tmp_path.iterdir()) == []  # temporary review folder removed
    assert _node_count(mrml_scene) == nodes_before  # every case node removed


def test_review_round_trip_reports_a_wrong_volume_geometry(mrml_scene, tmp_path: Path, monkeypatch) -> None:
    """A case volume off the image's grid fails the 'next case' step; cleanup still happens."""
    load_volume_node = review.load_volume_node

    def shifted(path, scene, name):
        node = load_volume_node(path, scene, name)
        origin = node.GetOrigin()
        node.SetOrigin(origin[0] + 1.0, origin[1], origin[2])
        return node

    monkeypatch.setattr(review, "load_volume_node", shifted)
    nodes_before = _node_count(mrml_scene)
    with pytest.raises(selftest.SelfTestError, match=r"next case: .*volume geometry differs from the image file"):
        selftest.run_review_round_trip(mrml_scene, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert _node_count(mrml_scene) == nodes_before


def test_review_round_trip_reports_a_refined_label_that_is_not_the_edit(mrml_scene, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """An export that loses the segments fails the 'save refined' step."""
    import numpy as np
    import SimpleITK as sitk

    export_segmentation = review.export_segmentation

    def emptied(segmentation_node, reference_volume, entries):
        labelmap = export_segmentation(segmentation_node, reference_volume, entries)
        empty = sitk.GetImageFromArray(np.zeros_like(sitk.GetArrayFromImage(labelmap)))
        empty.CopyInformation(labelmap)
        return empty

    monkeypatch.setattr(review, "export_segmentation", emptied)
    with pytest.raises(selftest.SelfTestError, match="save refined: refined label voxels differ"):
        selftest.run_review_round_trip(mrml_scene, tmp_path)
    assert list(tmp_path.iterdir()) == []
