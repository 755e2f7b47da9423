"""MRML side against REAL Slicer classes (``slicer-core``): volume export and segmentation import."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SimpleITK = pytest.importorskip("SimpleITK")

from VerSemiSegmenterLib import segmentation_import, selftest, volume_export  # noqa: E402
from VerSemiSegmenterLib.segmentation_import import LabelTableError, import_prediction  # noqa: E402

LABELS = [
    {"value": 1, "name": "liver", "color": [221, 130, 101], "prompt_id": 0,
     "snomed": {"code": "10200004", "meaning": "Liver", "category_code": "123037004",
                "category_meaning": "Anatomical Structure"}},
    {"value": 2, "name": "organ_x", "color": [60, 180, 75], "prompt_id": 1, "snomed": None},
    {"value": 3, "name": "spleen", "color": [157, 108, 162], "prompt_id": 2,
     "snomed": {"code": "78961009", "meaning": "Spleen", "category_code": "123037004",
                "category_meaning": "Anatomical Structure"}},
]


def _matrix(node) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def _lps_matrix(image) -> np.ndarray:
    """IJK-to-RAS of a SimpleITK image (LPS physical space -> RAS)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = direction * np.array(image.GetSpacing())[None, :]
    m[:3, 3] = image.GetOrigin()
    return np.diag([-1, -1, 1, 1]) @ m


def _prediction(tmp_path: Path, volume, labels=LABELS, values=(1, 3), extra_value: int | None = None):
    """A labelmap on the volume's grid (exported + read back like the predictor does) and its sidecar."""
    exported = volume_export.export_volume(volume, tmp_path / "input.nrrd")
    reference = SimpleITK.ReadImage(exported)
    array = np.zeros(SimpleITK.GetArrayFromImage(reference).shape, np.uint8)
    if len(values) > 0:
        array[3:8, 4:10, 5:12] = values[0]
    if len(values) > 1:
        array[10:15, 12:18, 14:22] = values[1]
    if extra_value is not None:
        array[0, 0, 0] = extra_value
    label = SimpleITK.GetImageFromArray(array)
    label.CopyInformation(reference)
    labelmap = tmp_path / "out ü" / "seg.nii.gz"
    labelmap.parent.mkdir(exist_ok=True)
    SimpleITK.WriteImage(label, str(labelmap))
    sidecar = labelmap.with_name("seg.json")
    sidecar.write_text(json.dumps({"labels": labels}), encoding="utf-8")
    return labelmap, sidecar, array


def _node_counts(scene) -> dict[str, int]:
    return {c: scene.GetNumberOfNodesByClass(c) for c in
            ("vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode", "vtkMRMLColorTableNode",
             "vtkMRMLVolumeArchetypeStorageNode")}


def test_export_keeps_oblique_geometry_and_voxels(mrml_scene, tmp_path: Path) -> None:
    volume = selftest.add_sample_volume(mrml_scene)
    path = volume_export.export_volume(volume, tmp_path / "dir with space ü" / "input.nrrd")
    image = SimpleITK.ReadImage(path)
    np.testing.assert_allclose(_lps_matrix(image), _matrix(volume), atol=1e-5)
    np.testing.assert_array_equal(SimpleITK.GetArrayFromImage(image), selftest.sample_volume_array())
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLVolumeArchetypeStorageNode") == 0


def test_export_refuses_label_maps_and_empty_volumes(mrml_scene, tmp_path: Path) -> None:
    labelmap = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "lab")
    with pytest.raises(volume_export.VolumeExportError, match="label map"):
        volume_export.export_volume(labelmap, tmp_path / "x.nrrd")
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(volume_export.VolumeExportError, match="no image data"):
        volume_export.export_volume(empty, tmp_path / "x.nrrd")
    with pytest.raises(volume_export.VolumeExportError, match="no input volume"):
        volume_export.check_volume_node(None)


def test_import_names_colours_terms_geometry_and_place(mrml_scene, tmp_path: Path) -> None:
    import slicer
    import vtk

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    volume = selftest.add_sample_volume(mrml_scene)
    study = sh.CreateFolderItem(sh.CreateFolderItem(sh.GetSceneItemID(), "patient"), "study")
    volume_item = sh.GetItemByDataNode(volume)
    if volume_item:
        sh.SetItemParent(volume_item, study)
    else:  # slicer-core has no subject hierarchy plugins that add items for new nodes
        sh.CreateItem(study, volume)
    labelmap, sidecar, array = _prediction(tmp_path, volume)
    before = _node_counts(mrml_scene)

    result = import_prediction(labelmap, sidecar, volume)

    after = _node_counts(mrml_scene)
    assert after["vtkMRMLSegmentationNode"] == before["vtkMRMLSegmentationNode"] + 1
    for temporary in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLColorTableNode", "vtkMRMLVolumeArchetypeStorageNode"):
        assert after[temporary] == before[temporary], f"temporary {temporary} left in the scene"
    node = result.segmentation_node
    assert node.GetName() == "VerSemi test volume VerSemi"
    colors = {entry["name"]: tuple(entry["color"]) for entry in LABELS}
    problems = selftest.check_segmentation(
        node, volume, ["liver", "organ_x", "spleen"], colors, selftest.TINY_PROMPT_CODES
    )
    assert problems == []
    assert result.empty_segments == ["organ_x"]
    # Voxels: each segment is exactly its label value, on the volume's grid.
    ids = vtk.vtkStringArray()
    for segment_id in result.segment_ids:
        ids.InsertNextValue(segment_id)
    exported = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "exported")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, ids, exported, volume)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(exported), array)
    np.testing.assert_allclose(_matrix(exported), _matrix(volume), atol=1e-6)
    mrml_scene.RemoveNode(exported)
    tag_name = slicer.vtkSegment.GetTerminologyEntryTagName()
    tag = vtk.reference("")
    node.GetSegmentation().GetSegment(result.segment_ids[0]).GetTag(tag_name, tag)
    assert str(tag).startswith("Segmentation category and type - DICOM master list~SCT^123037004^")
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study


def test_segments_can_be_saved_as_seg_nrrd(mrml_scene, tmp_path: Path) -> None:
    """The imported segmentation writes a .seg.nrrd whose geometry is the input volume's."""
    import slicer

    volume = selftest.add_sample_volume(mrml_scene)
    labelmap, sidecar, _ = _prediction(tmp_path, volume)
    node = import_prediction(labelmap, sidecar, volume).segmentation_node
    storage = slicer.vtkMRMLSegmentationStorageNode()
    mrml_scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "result.seg.nrrd"))
    assert storage.WriteData(node)
    written = SimpleITK.ReadImage(str(tmp_path / "result.seg.nrrd"))
    original = SimpleITK.ReadImage(str(tmp_path / "input.nrrd"))
    np.testing.assert_allclose(_lps_matrix(written)[:3, :3], _lps_matrix(original)[:3, :3], atol=1e-5)
    # The saved grid is the input grid (possibly cropped to the segments): integer voxel offset.
    offset = np.linalg.solve(_lps_matrix(original), _lps_matrix(written)[:, 3])[:3]
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-4)


def test_replace_existing_segmentation_keeps_the_node(mrml_scene, tmp_path: Path) -> None:
    volume = selftest.add_sample_volume(mrml_scene)
    existing = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    existing.GetSegmentation().AddEmptySegment("old", "old segment", [1.0, 0.0, 0.0])
    labelmap, sidecar, _ = _prediction(tmp_path, volume, labels=LABELS[2:], values=(3,))
    result = import_prediction(labelmap, sidecar, volume, segmentation_node=existing)
    assert result.segmentation_node is existing
    assert existing.GetName() == "my segmentation"
    assert selftest.check_segmentation(existing, volume, ["spleen"], {"spleen": (157, 108, 162)}) == []


def test_replace_with_a_failing_import_leaves_the_original_segments(mrml_scene, tmp_path: Path, monkeypatch) -> None:
    """All or nothing: the import fails after the old segments were removed -> they come back."""
    volume = selftest.add_sample_volume(mrml_scene)
    first, first_sidecar, _ = _prediction(tmp_path / "first", volume)
    existing = import_prediction(first, first_sidecar, volume).segmentation_node
    segmentation = existing.GetSegmentation()
    before_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    before = {i: (segmentation.GetSegment(i).GetName(), _terminology(segmentation.GetSegment(i)),
                  _segment_voxels(existing, i)) for i in before_ids}
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "t")
    volume.SetAndObserveTransformNodeID(transform.GetID())  # the import would move the node under it
    labelmap, sidecar, _ = _prediction(tmp_path / "second", volume, labels=LABELS[2:], values=(3,))

    def failing(*args, **kwargs):
        assert existing.GetSegmentation().GetNumberOfSegments() == 1  # the old ones are gone by now
        raise RuntimeError("simulated failure half-way through the import")

    monkeypatch.setattr(segmentation_import, "_apply_label_table", failing)
    with pytest.raises(RuntimeError, match="simulated failure"):
        import_prediction(labelmap, sidecar, volume, segmentation_node=existing)
    segmentation = existing.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == before_ids
    for segment_id, (name, tag, voxels) in before.items():
        segment = segmentation.GetSegment(segment_id)
        assert segment.GetName() == name and _terminology(segment) == tag
        assert _segment_voxels(existing, segment_id) == voxels
    assert not existing.GetTransformNodeID()


def _terminology(segment) -> str:
    import vtk

    tag = vtk.reference("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
    return str(tag)


def _segment_voxels(segmentation_node, segment_id: str) -> tuple[tuple[int, ...], int]:
    """A segment's binary labelmap as (extent, number of voxels inside)."""
    from vtk.util.numpy_support import vtk_to_numpy

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation("Binary labelmap")
    if image is None or image.GetPointData().GetScalars() is None:
        return (), 0
    inside = vtk_to_numpy(image.GetPointData().GetScalars()) == segment.GetLabelValue()
    return tuple(image.GetExtent()), int(inside.sum())


def test_nothing_found_still_gives_one_empty_segment_per_prompt(mrml_scene, tmp_path: Path) -> None:
    volume = selftest.add_sample_volume(mrml_scene)
    labelmap, sidecar, _ = _prediction(tmp_path, volume, values=())
    result = import_prediction(labelmap, sidecar, volume)
    assert result.empty_segments == ["liver", "organ_x", "spleen"]
    colors = {entry["name"]: tuple(entry["color"]) for entry in LABELS}
    assert selftest.check_segmentation(
        result.segmentation_node, volume, ["liver", "organ_x", "spleen"], colors, selftest.TINY_PROMPT_CODES
    ) == []


def test_volume_under_a_transform_gives_a_segmentation_under_it(mrml_scene, tmp_path: Path) -> None:
    volume = selftest.add_sample_volume(mrml_scene)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    labelmap, sidecar, _ = _prediction(tmp_path, volume)
    node = import_prediction(labelmap, sidecar, volume).segmentation_node
    assert node.GetTransformNodeID() == transform.GetID()


def test_mismatched_outputs_leave_the_scene_unchanged(mrml_scene, tmp_path: Path) -> None:
    volume = selftest.add_sample_volume(mrml_scene)
    labelmap, sidecar, _ = _prediction(tmp_path, volume, extra_value=7)
    before = _node_counts(mrml_scene)
    with pytest.raises(LabelTableError, match=r"label values \[7\]"):
        import_prediction(labelmap, sidecar, volume)
    assert _node_counts(mrml_scene) == before
    sidecar.write_text(json.dumps({"labels": []}), encoding="utf-8")
    with pytest.raises(LabelTableError, match="no labels"):
        import_prediction(labelmap, sidecar, volume)
    (tmp_path / "garbage.nrrd").write_bytes(b"NRRD0004\nbroken")
    with pytest.raises(LabelTableError, match="cannot read labelmap"):
        segmentation_import.load_labelmap_node(tmp_path / "garbage.nrrd", mrml_scene)
    assert _node_counts(mrml_scene) == before


def test_terminology_tags_are_understood_by_slicer_terminology_logic(mrml_scene) -> None:
    """Slicer's own (de)serializer reads our tag back to the same codes and writes the same string."""
    import slicer

    for raw in LABELS:
        entry = segmentation_import.parse_label_table({"labels": [raw]})[0]
        if entry.terminology_tag is None:
            continue
        terminology = slicer.vtkSlicerTerminologyEntry()
        logic = slicer.vtkSlicerTerminologiesModuleLogic
        assert logic.DeserializeTerminologyEntry(entry.terminology_tag, terminology)
        assert terminology.GetTypeObject().GetCodeValue() == raw["snomed"]["code"]
        assert terminology.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        assert terminology.GetCategoryObject().GetCodeValue() == raw["snomed"]["category_code"]
        assert logic.SerializeTerminologyEntry(terminology) == entry.terminology_tag


def test_a_single_slice_volume_is_refused_before_any_process_starts(mrml_scene, tmp_path: Path, monkeypatch) -> None:
    from VerSemiSegmenterLib import parameters, pipeline

    volume = selftest.add_sample_volume(mrml_scene, "one slice", np.zeros((1, 32, 24), np.int16))
    problem = volume_export.volume_problem(volume)
    assert problem == "'one slice' is a single slice (24 x 32 x 1 voxels); VerSemi segments 3D volumes"
    assert volume_export.volume_problem(selftest.add_sample_volume(mrml_scene)) is None

    def no_process(*args, **kwargs):
        raise AssertionError("a process was started for a single-slice volume")

    monkeypatch.setattr(pipeline, "ProcessRunner", no_process)
    monkeypatch.setattr(pipeline.tempfile, "mkdtemp", no_process)
    settings = parameters.RunSettings(input_path="", output_path="", model="m.pt", prompts=["liver"])
    with pytest.raises(volume_export.VolumeExportError, match="single slice"):
        pipeline.SegmentationJob(volume, settings)


def test_a_sequence_frame_is_named_so_the_panel_can_say_only_it_is_segmented(mrml_scene) -> None:
    volume = selftest.add_sample_volume(mrml_scene, "cine")
    assert volume_export.sequence_frame(volume) is None
    import slicer

    sequence = slicer.vtkMRMLSequenceNode()
    mrml_scene.AddNode(sequence)
    for t in range(4):
        sequence.SetDataNodeAtValue(volume, str(t))
    browser = slicer.vtkMRMLSequenceBrowserNode()  # (Slicer's Sequences module registers the class)
    browser.SetName("cine browser")
    mrml_scene.AddNode(browser)
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.AddProxyNode(volume, sequence, False)
    browser.SetSelectedItemNumber(2)
    frame = volume_export.sequence_frame(volume)
    assert frame is not None and (frame.index, frame.count) == (2, 4)
    assert frame.note("cine") == "'cine' is frame 3 of 4 of sequence 'cine browser': only this frame is segmented."


def test_modifier_and_region_tags_are_understood_by_slicer_terminology_logic(mrml_scene) -> None:
    """Hippocampus + Anterior and Muscle in the region Heart: Slicer reads back each code."""
    import slicer
    from versemi.labels import KNOWN_STRUCTURES

    logic = slicer.vtkSlicerTerminologiesModuleLogic
    for name in ("hippocampus_anterior", "hippocampus_posterior", "myocardium", "left_kidney"):
        snomed = KNOWN_STRUCTURES[name][0]
        entry = segmentation_import.parse_label_table(
            {"labels": [{"value": 1, "name": name, "color": [1, 2, 3], "snomed": snomed.to_dict()}]})[0]
        terminology = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(entry.terminology_tag, terminology)
        assert terminology.GetTypeObject().GetCodeValue() == snomed.code
        assert (terminology.GetTypeModifierObject().GetCodeValue() or "") == snomed.modifier_code
        assert (terminology.GetAnatomicRegionObject().GetCodeValue() or "") == snomed.region_code
        assert logic.SerializeTerminologyEntry(terminology) == entry.terminology_tag


def test_dicom_seg_export_says_what_is_missing_before_the_dialog(mrml_scene, tmp_path: Path) -> None:
    import slicer
    from VerSemiSegmenterLib.dicom_export import SEG_PLUGIN, dicom_seg_export_problem

    volume = selftest.add_sample_volume(mrml_scene)
    labelmap, sidecar, _ = _prediction(tmp_path, volume)
    node = import_prediction(labelmap, sidecar, volume).segmentation_node
    assert "Segment a volume first" in dicom_seg_export_problem(None, volume, [SEG_PLUGIN])
    assert "QuantitativeReporting" in dicom_seg_export_problem(node, volume, ["DICOMScalarVolumePlugin"])
    assert "was not loaded from DICOM" in dicom_seg_export_problem(node, volume, [SEG_PLUGIN])
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene)
    item = sh.GetItemByDataNode(volume) or sh.CreateItem(sh.GetSceneItemID(), volume)
    sh.SetItemUID(item, "DICOM", "1.2.826.0.1.3680043.2.1125.1.42")
    assert dicom_seg_export_problem(node, volume, [SEG_PLUGIN, "DICOMScalarVolumePlugin"]) is None


def test_segments_get_human_readable_names_and_keep_their_prompt(mrml_scene, tmp_path: Path) -> None:
    """A sidecar from versemi predict names segments "Hippocampus, anterior"; the prompt stays in a tag,
    so the review's export still finds each segment's label value."""
    from versemi.inference.results import LabelEntry as VersemiEntry
    from versemi.labels import KNOWN_STRUCTURES
    from VerSemiSegmenterLib import review

    labels = [VersemiEntry(v, n, KNOWN_STRUCTURES[n][1], KNOWN_STRUCTURES[n][0].to_dict(), v - 1).to_dict()
              for v, n in ((1, "hippocampus_anterior"), (3, "hippocampus_posterior"))]
    assert [e["title"] for e in labels] == ["Hippocampus, anterior", "Hippocampus, posterior"]
    volume = selftest.add_sample_volume(mrml_scene)
    labelmap, sidecar, array = _prediction(tmp_path, volume, labels=labels, values=(1, 3))
    result = import_prediction(labelmap, sidecar, volume)
    segmentation = result.segmentation_node.GetSegmentation()
    names = [segmentation.GetSegment(i).GetName() for i in result.segment_ids]
    assert names == ["Hippocampus, anterior", "Hippocampus, posterior"]
    assert selftest.check_segmentation(result.segmentation_node, volume,
                                       ["hippocampus_anterior", "hippocampus_posterior"]) == []
    entries = segmentation_import.read_label_table(sidecar)
    exported = review.export_segmentation(result.segmentation_node, volume, entries)
    np.testing.assert_array_equal(SimpleITK.GetArrayFromImage(exported), array)
    tags = [segmentation_import.terminology_tag(e.snomed) for e in entries]
    assert tags[0] != tags[1] and "~SCT^255549009^Anterior~" in tags[0]
