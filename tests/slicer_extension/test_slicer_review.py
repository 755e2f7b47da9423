"""The Review section's controller against REAL MRML (``slicer-core``) and a real review folder.

A tiny review folder (scans outside it, pseudo-labels + sidecars inside, manifest via
``ReviewManifest.upsert``) is walked through :class:`ReviewController` with :class:`MrmlReviewScene`:
next case -> segments named/coloured from the label table on the image's geometry -> edit the
segments -> save refined (file on disk = the edit, on the image grid; pseudo-label untouched) ->
reject -> next, with the previous case's nodes removed from the scene each time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
review_lib = pytest.importorskip("versemi.review")

from VerSemiSegmenterLib import review, selftest  # noqa: E402
from VerSemiSegmenterLib.review import MrmlReviewScene, ReviewController, ReviewPanelError  # noqa: E402

# The self-test's review fixture (non-consecutive label values 1 and 3, an oblique grid), here with
# three cases and folder names with a space and a non-ASCII letter.
LABELS = list(selftest.REVIEW_LABELS)
SHAPE_ZYX = selftest.REVIEW_SHAPE_ZYX
SCORES = {"case00": 0.2, "case01": 0.9, "case02": 0.5}  # review order: case01, case02, case00
NODE_CLASSES = selftest.REVIEW_NODE_CLASSES
_pseudo_label = selftest.review_pseudo_label


def _make_review(root: Path) -> Path:
    return selftest.make_review_folder(root, SCORES, scans_name="scans ü", review_name="review folder")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _counts(scene) -> dict[str, int]:
    return {c: scene.GetNumberOfNodesByClass(c) for c in NODE_CLASSES}


def _lps_matrix(image) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())[None, :]
    m[:3, 3] = image.GetOrigin()
    return np.diag([-1, -1, 1, 1]) @ m


def _ijk_to_ras(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def _segment_labelmap(loaded, name: str):
    """A temporary labelmap node holding one segment on the volume's grid (value 1 inside)."""
    import slicer
    import vtk

    segment_id = loaded.segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(name)
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    scene = loaded.volume_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "edit")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        loaded.segmentation_node, ids, node, loaded.volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    )
    return node, ids


def _remove_labelmap(node) -> None:
    """Remove a temporary labelmap with the colour table the export made for it."""
    color = node.GetDisplayNode().GetColorNode() if node.GetDisplayNode() else None
    review.remove_nodes(node.GetScene(), [node, color])


def _segment_array(loaded, name: str) -> np.ndarray:
    import slicer

    node, _ = _segment_labelmap(loaded, name)
    array = slicer.util.arrayFromVolume(node) > 0
    _remove_labelmap(node)
    return array


def _set_segment(loaded, name: str, mask: np.ndarray) -> None:
    """Paint/erase: replace a segment's voxels through a labelmap round trip (export, edit, import)."""
    import slicer

    node, ids = _segment_labelmap(loaded, name)
    array = slicer.util.arrayFromVolume(node)
    array[:] = mask.astype(array.dtype)
    slicer.util.arrayFromVolumeModified(node)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        node, loaded.segmentation_node, ids
    )
    _remove_labelmap(node)
    np.testing.assert_array_equal(_segment_array(loaded, name), mask)


@pytest.fixture
def controller(mrml_scene, tmp_path: Path) -> ReviewController:
    folder = _make_review(tmp_path)
    return review.open_review(folder, MrmlReviewScene(mrml_scene), user="alice")


def test_next_case_loads_top_scored_case_with_named_segments_on_image_geometry(controller, mrml_scene) -> None:
    assert [(r.case_id, r.status, r.score_text) for r in controller.rows()] == [
        ("case01", "pending", "0.900"), ("case02", "pending", "0.500"), ("case00", "pending", "0.200")
    ]
    loaded = controller.next_case()
    assert loaded.case_id == "case01" and controller.current is loaded
    image = sitk.ReadImage(str(controller.session.case("case01").image))
    np.testing.assert_allclose(_ijk_to_ras(loaded.volume_node), _lps_matrix(image), atol=1e-5)
    colors = {e["name"]: tuple(e["color"]) for e in LABELS}
    assert selftest.check_segmentation(
        loaded.segmentation_node, loaded.volume_node, ["liver", "spleen"], colors
    ) == []
    # The segments hold the pseudo-label; unedited, the export gives it back value for value.
    pseudo = _pseudo_label(1)
    np.testing.assert_array_equal(_segment_array(loaded, "liver"), pseudo == 1)
    np.testing.assert_array_equal(_segment_array(loaded, "spleen"), pseudo == 3)
    exported = review.export_segmentation(loaded.segmentation_node, loaded.volume_node, loaded.entries)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(exported), pseudo)
    np.testing.assert_allclose(_lps_matrix(exported), _lps_matrix(image), atol=1e-5)
    assert "Editing case01" in controller.status_text() and "3 pending" in controller.status_text()


def test_save_refined_stores_the_edit_and_moves_on(controller, mrml_scene) -> None:
    before = _counts(mrml_scene)
    loaded = controller.next_case()
    case = controller.session.case("case01")
    protected = {p: _digest(p) for p in (case.image, case.pseudo_label)}
    # Edit: erase part of the liver, paint a new spleen block.
    liver = _segment_array(loaded, "liver").astype(bool)
    liver[1] = False
    spleen = _segment_array(loaded, "spleen").astype(bool)
    spleen[4:6, 1:3, 7:11] = True
    _set_segment(loaded, "liver", liver)
    _set_segment(loaded, "spleen", spleen)
    expected = np.zeros(SHAPE_ZYX, np.uint8)
    expected[liver] = 1
    expected[spleen] = 3

    saved = controller.save_refined()

    assert saved.case_id == "case01" and saved.status == "refined" and saved.updated_by == "alice"
    refined = sitk.ReadImage(str(saved.refined_label))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(refined), expected)
    image = sitk.ReadImage(str(case.image))
    assert refined.GetSize() == image.GetSize()
    np.testing.assert_allclose(_lps_matrix(refined), _lps_matrix(image), atol=1e-6)
    assert saved.refined_label.parent == controller.review_dir / "labelsTr"
    assert {p: _digest(p) for p in protected} == protected  # image and pseudo-label untouched
    # Moved on: the next pending case is open, the saved case's nodes are gone.
    assert controller.current.case_id == "case02"
    assert loaded.volume_node.GetScene() is None and loaded.segmentation_node.GetScene() is None
    after = _counts(mrml_scene)
    assert after["vtkMRMLScalarVolumeNode"] == before["vtkMRMLScalarVolumeNode"] + 1
    assert after["vtkMRMLSegmentationNode"] == before["vtkMRMLSegmentationNode"] + 1
    for temporary in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLColorTableNode", "vtkMRMLVolumeArchetypeStorageNode"):
        assert after[temporary] == before[temporary], f"temporary {temporary} left in the scene"
    assert controller.session.counts() == {"pending": 2, "refined": 1, "rejected": 0, "failed": 0}
    assert [r.status for r in controller.rows() if r.case_id == "case01"] == ["refined"]


def test_reject_then_next_until_done_leaves_an_empty_scene(controller, mrml_scene) -> None:
    before = _counts(mrml_scene)
    assert controller.next_case().case_id == "case01"
    rejected = controller.reject("wrong anatomy")
    assert rejected.status == "rejected"
    assert controller.session.manifest.row("case01").history[-1]["reason"] == "wrong anatomy"
    assert controller.current.case_id == "case02"
    controller.reject()
    assert controller.current.case_id == "case00"
    case00 = controller.current
    controller.reject(move_on=False)  # the panel's way: close, then load the next on its own
    assert controller.current is None and case00.volume_node.GetScene() is None
    assert controller.session.counts() == {"pending": 0, "refined": 0, "rejected": 3, "failed": 0}
    assert controller.status_text().endswith("Nothing left to review.")
    assert controller.next_case() is None
    assert _counts(mrml_scene) == before  # every case's nodes removed
    with pytest.raises(ReviewPanelError, match="no case is open"):
        controller.save_refined()


def test_next_skips_the_open_case_and_comes_round_again(controller) -> None:
    assert controller.next_case().case_id == "case01"
    assert controller.next_case().case_id == "case02"  # case01 skipped, stays pending
    assert controller.next_case().case_id == "case00"
    assert controller.next_case().case_id == "case01"  # all skipped: another round
    assert controller.session.case("case02").status == "pending"
    controller.reject()
    controller.reject()  # case02 then case00 ... until one is left
    assert controller.current.case_id == "case00"
    only = controller.current
    assert controller.next_case() is only  # the only pending case stays open with its edits


def test_unknown_segment_refuses_to_save_and_keeps_the_case_open(controller) -> None:
    loaded = controller.next_case()
    loaded.segmentation_node.GetSegmentation().AddEmptySegment("extra", "my tumour", [1.0, 0.0, 0.0])
    with pytest.raises(ReviewPanelError, match=r"\['my tumour'\] are not in the review's label table"):
        controller.save_refined()
    assert controller.current is loaded
    assert controller.session.case("case01").status == "pending"
    assert not (controller.review_dir / "labelsTr").exists()


def test_refined_case_reopens_with_its_refined_label(controller) -> None:
    loaded = controller.next_case()
    _set_segment(loaded, "liver", np.zeros(SHAPE_ZYX, bool))  # erase the whole liver
    controller.save_refined()
    reopened = controller.open_case("case01")
    assert reopened.edited_label == controller.session.case("case01").refined_label
    assert not _segment_array(reopened, "liver").any()
    np.testing.assert_array_equal(_segment_array(reopened, "spleen"), _pseudo_label(1) == 3)


def test_label_table_from_manifest_when_the_sidecar_is_missing(tmp_path: Path) -> None:
    entries = review.label_entries(None, [{"value": 2, "name": "kidney"}], "REVIEW case x")
    assert [(e.value, e.name, e.color) for e in entries] == [(2, "kidney", review.DEFAULT_COLORS[0])]
    with pytest.raises(review.LabelTableError, match="REVIEW case x: no label table"):
        review.label_entries(None, None, "REVIEW case x")


def test_folder_without_manifest_is_refused(mrml_scene, tmp_path: Path) -> None:
    with pytest.raises(review_lib.ReviewError, match="no review manifest"):
        review.open_review(tmp_path, MrmlReviewScene(mrml_scene))


def test_scene_close_forgets_the_open_case_which_stays_pending(controller, mrml_scene) -> None:
    opened = controller.next_case()
    mrml_scene.Clear(False)  # File > Close Scene: the case's nodes are gone
    controller.forget_open_case()
    assert controller.current is None and opened.volume_node.GetScene() is None
    assert controller.next_case().case_id == "case01"  # not counted as skipped


def test_review_needs_no_torch_in_slicers_process() -> None:
    """The panel imports versemi.review in Slicer's own Python: it must not pull in torch or MONAI."""
    import subprocess
    import sys

    code = ("import sys; import versemi.review; "
            "print(sorted(m for m in ('torch', 'monai', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
    assert review.missing_review_packages() == []
    # versemi is installed --no-deps in Slicer: the module's requirements must bring the rest.
    from VerSemiSegmenterLib import dependencies

    requirements = Path(__file__).resolve().parents[2] / "VerSemiSegmenter" / "Resources" / "requirements.txt"
    listed = {r.key for r in dependencies.read_requirements(str(requirements))}
    assert set(review.REVIEW_PACKAGES) - {"versemi"} <= listed
