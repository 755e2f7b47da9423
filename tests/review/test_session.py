"""ReviewSession: next case, save refined (grid, values, revisions), reject, reopen, cleanup."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.review import ReviewError, ReviewSession, refined_cases, unrefined_cases

from .conftest import DIRECTION, ORIGIN_XYZ, SHAPE_ZYX, SPACING_XYZ, box_label, make_review_folder, on_grid


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_review_flow(review_dir: Path) -> None:
    s = ReviewSession(review_dir, user="alice")
    first = s.next_case()
    assert first is not None and first.case_id == "case03"  # highest score first
    assert first.status == "pending" and first.label_to_edit == first.pseudo_label
    assert first.sidecar == review_dir / "pseudo" / "case03.json"
    assert first.model["name"] == "tiny" and first.score == pytest.approx(0.4)
    protected = {p: _digest(p) for p in (first.image, first.pseudo_label)}

    edited = box_label(7)
    saved = s.save_refined("case03", on_grid(edited))
    assert saved.status == "refined" and saved.updated_by == "alice"
    assert saved.refined_label == review_dir / "labelsTr" / "case03.r1.nii.gz"
    assert saved.label_to_edit == saved.refined_label
    out = sitk.ReadImage(str(saved.refined_label))
    assert np.array_equal(sitk.GetArrayFromImage(out), edited)
    assert out.GetSpacing() == pytest.approx(SPACING_XYZ) and out.GetOrigin() == pytest.approx(ORIGIN_XYZ)
    assert out.GetDirection() == pytest.approx(DIRECTION)
    assert {p: _digest(p) for p in protected} == protected  # image and pseudo-label untouched

    assert s.next_case().case_id == "case02"
    assert s.next_case(skip=["case02"]).case_id == "case01"
    s.reject("case02", reason="wrong anatomy")
    assert s.case("case02").status == "rejected"
    assert s.manifest.row("case02").history[-1] == {
        "action": "rejected", "by": "alice", "at": s.case("case02").updated_at, "reason": "wrong anatomy",
        "from": "pending", "previous_refined_label": None,
    }

    # A second save makes a new revision; the first stays (the history names it).
    again = s.save_refined("case03", on_grid(box_label(2)))
    assert again.refined_label.name == "case03.r2.nii.gz"
    assert (review_dir / "labelsTr" / "case03.r1.nii.gz").is_file()
    s.reopen("case03")
    assert s.case("case03").status == "pending" and s.case("case03").label_to_edit == again.refined_label
    assert s.counts() == {"pending": 3, "refined": 0, "rejected": 1, "failed": 0}
    s.save_refined("case03", on_grid(box_label(3)))

    assert [c.case_id for c in refined_cases(review_dir)] == ["case03"]
    assert refined_cases(review_dir)[0].label_path.name == "case03.r3.nii.gz"
    assert [c.case_id for c in unrefined_cases(review_dir)] == ["case00", "case01", "case02"]

    for case in ("case01", "case00"):
        s.reject(case)
    assert s.next_case() is None
    assert [c.case_id for c in s.cases(status="rejected")] == ["case02", "case01", "case00"]


def test_labelmap_from_file_and_float_rounding(tmp_path: Path, review_dir: Path) -> None:
    s = ReviewSession(review_dir)
    # Slicer exports: another format, a different integer type, geometry off in the last digits.
    img = on_grid(box_label(5).astype(np.int16))
    img.SetOrigin(tuple(o + 1e-7 for o in ORIGIN_XYZ))
    img.SetSpacing(tuple(sp * (1 + 1e-7) for sp in SPACING_XYZ))
    path = tmp_path / "edited.nrrd"
    sitk.WriteImage(img, str(path))
    case = s.save_refined("case00", path)
    out = sitk.ReadImage(str(case.refined_label))
    ref = sitk.ReadImage(str(case.image))
    assert out.GetPixelID() == sitk.sitkUInt8
    # The stored label carries the IMAGE's geometry, not the slightly-off one it came with.
    assert (out.GetOrigin(), out.GetSpacing(), out.GetDirection()) == (ref.GetOrigin(), ref.GetSpacing(), ref.GetDirection())
    # Integral float voxels are labels too.
    s.save_refined("case01", on_grid(box_label(1).astype(np.float32)))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda img: img[:, :, :-1], "size"),
        (lambda img: _with(img, spacing=(1.5, 1.25, 2.5)), "spacing"),
        (lambda img: _with(img, origin=(-10.0, 4.5, 31.0)), "origin"),
        (lambda img: _with(img, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)), "direction"),
    ],
)
def test_off_grid_labelmap_is_refused(review_dir: Path, change, message: str) -> None:
    s = ReviewSession(review_dir)
    with pytest.raises(ReviewError, match=f"not on the voxel grid of .*case00.nii.gz.*{message}"):
        s.save_refined("case00", change(on_grid(box_label(0))))
    assert s.case("case00").status == "pending"
    assert not (review_dir / "labelsTr").exists() or not any((review_dir / "labelsTr").iterdir())


def _with(img: sitk.Image, **geometry) -> sitk.Image:
    out = sitk.Image(img)
    if "spacing" in geometry:
        out.SetSpacing(geometry["spacing"])
    if "origin" in geometry:
        out.SetOrigin(geometry["origin"])
    if "direction" in geometry:
        out.SetDirection(geometry["direction"])
    return out


def test_bad_labelmaps(tmp_path: Path, review_dir: Path) -> None:
    s = ReviewSession(review_dir)
    arr = box_label(0)
    arr[0, 0, 0] = 7
    with pytest.raises(ReviewError, match=r"label values \[7\].*allowed: \[1, 2\]"):
        s.save_refined("case00", on_grid(arr))
    with pytest.raises(ReviewError, match="non-integer"):
        s.save_refined("case00", on_grid(box_label(0).astype(np.float32) * 0.5))
    with pytest.raises(ReviewError, match="negative"):
        s.save_refined("case00", on_grid(-box_label(0).astype(np.int8)))
    with pytest.raises(ReviewError, match="2D"):
        s.save_refined("case00", sitk.Image(4, 4, sitk.sitkUInt8))
    with pytest.raises(ReviewError, match="file not found"):
        s.save_refined("case00", tmp_path / "missing.nii.gz")
    with pytest.raises(ReviewError, match="no case 'nope'"):
        s.save_refined("nope", on_grid(box_label(0)))
    with pytest.raises(ReviewError, match="no case 'nope'"):
        s.reject("nope")
    assert s.counts()["refined"] == 0


def test_no_manifest(tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match="no review manifest"):
        ReviewSession(tmp_path)


def test_cleanup_removes_only_unreferenced_leftovers(review_dir: Path) -> None:
    from versemi.fileio import temp_path_for

    s = ReviewSession(review_dir)
    kept = s.save_refined("case00", on_grid(box_label(0))).refined_label
    labels = review_dir / "labelsTr"
    orphan = labels / "case01.r1.nii.gz"  # a save killed before its commit
    temp = temp_path_for(labels / "case01.r2.nii.gz", ".nii.gz")  # versemi's temporary name of a killed save
    other = labels / "notes.txt"  # not ours: never touched
    for p in (orphan, temp, other):
        p.write_bytes(b"partial")
    # A new save never reuses a name that exists on disk.
    assert s.save_refined("case01", on_grid(box_label(1))).refined_label.name == "case01.r3.nii.gz"
    assert s.cleanup(dry_run=True) == sorted([temp, orphan])
    assert orphan.exists()
    assert s.cleanup() == sorted([temp, orphan])
    assert kept.is_file() and other.is_file() and not orphan.exists() and not temp.exists()
    assert (labels / "case01.r3.nii.gz").is_file()


def test_scores_order_ties_and_unscored(tmp_path: Path) -> None:
    review = make_review_folder(tmp_path, n=3, scores=[0.5, 0.5, 0.9])
    s = ReviewSession(review)
    assert [c.case_id for c in s.cases()] == ["case02", "case00", "case01"]
    assert s.label_table()[0]["name"] == "spleen"
