"""``--output-format dicom-seg``: a DICOM series in, a DICOM SEG out (predict and pseudolabel), and
the review folder taking a refined DICOM SEG back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("highdicom")
import pydicom  # noqa: E402

from versemi.cli import main  # noqa: E402
from versemi.dicomseg import read_dicom_seg, segments_to_label_values, write_dicom_seg  # noqa: E402
from versemi.labels import display_name  # noqa: E402

from inference.helpers import make_image, write_dicom_series  # noqa: E402
from inference.test_predictor import oblique_case  # noqa: E402


def dicom_scan(folder: Path, series_uid: str = "1.2.826.0.1.3680043.2.1125.1.42",
               uid_root: str = "1.2.826.0.1.3680043.2.1125.1.44") -> Path:
    """The synthetic organs scan as an axis-aligned int16 DICOM series."""
    array = sitk.GetArrayFromImage(oblique_case()[0])
    image = sitk.Cast(make_image(np.round(array * 100), spacing=(1.3, 0.9, 1.8), origin=(-12.5, 40.25, 7.0)),
                      sitk.sitkInt16)
    write_dicom_series(folder, image, series_uid, uid_root=uid_root)
    return folder


def check_seg_matches_labelmap(seg: Path, series: Path, labelmap: Path, sidecar: Path) -> None:
    """Same voxels as the labelmap, one segment per label with the sidecar's codes."""
    labels = json.loads(sidecar.read_text())["labels"]
    numbers, segments = read_dicom_seg(seg, series)
    back = segments_to_label_values(numbers, segments, labels, str(seg))
    expected = sitk.ReadImage(str(labelmap))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(expected))
    assert [s.label for s in segments] == [display_name(e["name"]) for e in labels]
    for segment, entry in zip(segments, labels):
        assert segment.description == entry["name"]
        if entry["snomed"]:
            assert (segment.type_code, segment.category_code) == (entry["snomed"]["code"], entry["snomed"]["category_code"])
    ds = pydicom.dcmread(seg)
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(
        sorted(series.iterdir())[0]).SeriesInstanceUID


def test_predict_dicom_series_to_dicom_seg_same_voxels_as_the_nifti(trained_checkpoint: Path, tmp_path: Path) -> None:
    series = dicom_scan(tmp_path / "ct series")
    out = tmp_path / "out" / "ct_seg.dcm"
    assert main(["predict", "-m", str(trained_checkpoint), "-i", str(series), "-o", str(out), "--progress", "none",
                 "--output-format", "dicom-seg", "--prompts", "spleen,liver"]) == 0
    nifti = out.with_suffix(".nii.gz")
    assert out.is_file() and nifti.is_file()
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(nifti))).any(), "the tiny model found nothing to compare"
    check_seg_matches_labelmap(out, series, nifti, nifti.parent / "ct_seg.json")
    # The same labelmap as a plain labelmap run.
    plain = tmp_path / "plain.nii.gz"
    assert main(["predict", "-m", str(trained_checkpoint), "-i", str(series), "-o", str(plain), "--progress", "none",
                 "--prompts", "spleen,liver"]) == 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(plain))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(nifti))))


def test_dicom_seg_needs_a_dicom_series(trained_checkpoint: Path, tmp_path: Path, capsys) -> None:
    scan = tmp_path / "scan.nii.gz"
    sitk.WriteImage(oblique_case()[0], str(scan))
    assert main(["predict", "-m", str(trained_checkpoint), "-i", str(scan), "--output-format", "dicom-seg",
                 "--progress", "none"]) != 0
    assert "needs a DICOM series folder" in capsys.readouterr().err


def test_pseudolabel_writes_a_dicom_seg_per_dicom_case_and_the_review_takes_a_refined_one(
    trained_checkpoint: Path, tmp_path: Path
) -> None:
    from versemi.review import ReviewSession

    scans = tmp_path / "scans"
    dicom_scan(scans / "patient1")
    sitk.WriteImage(oblique_case()[0], str(scans / "patient2.nii.gz"))  # not DICOM: labelmap only
    review_dir = tmp_path / "review"
    assert main(["pseudolabel", "-m", str(trained_checkpoint), "-i", str(scans), "-o", str(review_dir),
                 "--progress", "none", "--output-format", "dicom-seg", "--prompts", "spleen,liver"]) == 0
    session = ReviewSession(review_dir, user="alice")
    case = session.case("patient1")
    seg = review_dir / "patient1.dcm"
    assert seg.is_file() and session.manifest.row("patient1").extra["dicom_seg"] == str(seg)
    assert not (review_dir / "patient2.dcm").exists()
    check_seg_matches_labelmap(seg, scans / "patient1", case.pseudo_label, case.sidecar)

    # A refined label comes back from a PACS / another viewer as a DICOM SEG of the same series.
    labels = session.label_table()
    refined = np.zeros(sitk.GetArrayViewFromImage(sitk.ReadImage(str(case.pseudo_label))).shape, np.uint8)
    refined[3:9, 10:20, 5:15] = labels[1]["value"]
    image = sitk.GetImageFromArray(refined)
    image.CopyInformation(sitk.ReadImage(str(case.pseudo_label)))
    edited = write_dicom_seg(image, labels, scans / "patient1", tmp_path / "edited" / "refined.dcm")
    saved = session.save_refined("patient1", edited, expected_revision=case.revision)
    assert saved.status == "refined"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(saved.refined_label))), refined)
