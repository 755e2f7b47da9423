"""DICOM SEG out and in (``versemi.dicomseg``) on a small DICOM series the test writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("highdicom")
import pydicom  # noqa: E402

from versemi.dicomseg import DicomSegError, read_dicom_seg, segments_to_label_values, write_dicom_seg  # noqa: E402
from versemi.images import read_image  # noqa: E402
from versemi.labels import KNOWN_STRUCTURES  # noqa: E402

from inference.helpers import make_image, write_dicom_series  # noqa: E402

LABELS = [
    {"value": 1, "name": "hippocampus_anterior", "color": [220, 216, 20],
     "snomed": KNOWN_STRUCTURES["hippocampus_anterior"][0].to_dict()},
    {"value": 2, "name": "myocardium", "color": [206, 110, 84], "snomed": KNOWN_STRUCTURES["myocardium"][0].to_dict()},
    {"value": 3, "name": "organ_x", "color": [1, 2, 3], "snomed": None},
]


def dicom_series(folder: Path, shape_zyx=(5, 12, 10)) -> sitk.Image:
    """A small int16 DICOM series on disk; returns the image as the series reader reads it."""
    array = np.random.default_rng(0).integers(0, 100, shape_zyx).astype(np.int16)
    image = sitk.Cast(make_image(array, spacing=(0.8, 0.9, 2.5), origin=(-5.0, 3.0, 11.0)), sitk.sitkInt16)
    write_dicom_series(folder, image)
    return read_image(folder)


def labelmap_on(image: sitk.Image) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    array[1:3, 2:6, 3:7] = 1
    array[3, 5:9, 1:4] = 2
    array[4, 0, 0] = 3
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    return label


def test_labelmap_to_dicom_seg_and_back_same_voxels_and_codes(tmp_path: Path) -> None:
    image = dicom_series(tmp_path / "series")
    label = labelmap_on(image)
    out = write_dicom_seg(label, LABELS, tmp_path / "series", tmp_path / "out" / "seg.dcm", model_name="tiny")

    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    source = pydicom.dcmread(sorted((tmp_path / "series").iterdir())[0])
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    segs = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert [segs[n].SegmentLabel for n in (1, 2, 3)] == ["Hippocampus, anterior", "Myocardium", "Organ x"]
    hippo = segs[1].SegmentedPropertyTypeCodeSequence[0]
    assert (hippo.CodeValue, hippo.CodingSchemeDesignator, hippo.CodeMeaning) == ("5366008", "SCT", "Hippocampus")
    assert hippo.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "255549009"
    assert segs[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "71616004"
    assert segs[2].AnatomicRegionSequence[0].CodeValue == "80891009"
    assert segs[3].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"  # no code: generic type

    numbers, segments = read_dicom_seg(out, tmp_path / "series")
    back = segments_to_label_values(numbers, segments, LABELS, str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(label))
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-4)
    assert [(s.label, s.description, s.type_code, s.modifier_code, s.region_code) for s in segments] == [
        ("Hippocampus, anterior", "hippocampus_anterior", "5366008", "255549009", ""),
        ("Myocardium", "myocardium", "71616004", "", "80891009"),
        ("Organ x", "organ_x", "85756007", "", ""),
    ]


def test_a_labelmap_off_the_series_or_with_unknown_values_is_refused(tmp_path: Path) -> None:
    image = dicom_series(tmp_path / "series")
    label = labelmap_on(image)
    with pytest.raises(DicomSegError, match="shape"):
        write_dicom_seg(label[:, :, :4], LABELS, tmp_path / "series", tmp_path / "a.dcm")
    with pytest.raises(DicomSegError, match=r"label values \[3\]"):
        write_dicom_seg(label, LABELS[:2], tmp_path / "series", tmp_path / "b.dcm")
    assert not list(tmp_path.glob("*.dcm"))


def test_a_seg_of_another_series_is_refused(tmp_path: Path) -> None:
    image = dicom_series(tmp_path / "series")
    out = write_dicom_seg(labelmap_on(image), LABELS, tmp_path / "series", tmp_path / "seg.dcm")
    other = tmp_path / "other"
    array = np.zeros((5, 12, 10), np.int16)
    write_dicom_series(other, sitk.Cast(make_image(array), sitk.sitkInt16), series_uid="1.2.826.0.1.3680043.2.1125.1.77",
                       uid_root="1.2.826.0.1.3680043.2.1125.1.78")
    with pytest.raises(DicomSegError, match="references series"):
        read_dicom_seg(out, other)
