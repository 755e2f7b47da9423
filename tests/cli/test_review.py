"""``versemi review``: list / status / next / reject / mark / import-labels / export-csv / cleanup."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.cli import main
from versemi.review import ReviewManifest

from review.conftest import box_label, on_grid


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["review", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_status_next(review_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list", str(review_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["#", "case", "status", "score"]
    assert [ln.split()[1] for ln in lines[1:]] == ["case03", "case02", "case01", "case00"]

    code, out, _ = _run(capsys, "list", str(review_dir), "--json")
    data = json.loads(out)
    assert data["counts"] == {"pending": 4, "refined": 0, "rejected": 0, "failed": 0}
    assert data["cases"][0]["case"] == "case03" and data["cases"][0]["score"] == pytest.approx(0.4)

    code, out, _ = _run(capsys, "status", str(review_dir))
    assert out.splitlines() == ["4 pending, 0 refined, 0 rejected (4 cases)", "next: case03 (score 0.400)"]
    code, out, _ = _run(capsys, "next", str(review_dir), "--json")
    assert json.loads(out)["label_to_edit"].endswith("pseudo/case03.nii.gz")


def test_reject_mark_import_export_cleanup(tmp_path: Path, review_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "reject", str(review_dir), "case03", "--reason", "bad scan", "--user", "carol")[0] == 0
    row = ReviewManifest(review_dir).row("case03")
    assert row.status == "rejected" and row.updated_by == "carol" and row.history[-1]["reason"] == "bad scan"
    assert _run(capsys, "mark", str(review_dir), "case03", "pending")[0] == 0
    assert ReviewManifest(review_dir).row("case03").status == "pending"

    edited = tmp_path / "fixed.nrrd"
    sitk.WriteImage(on_grid(box_label(6)), str(edited))
    code, out, _ = _run(capsys, "import-labels", str(review_dir), "case02", str(edited))
    assert code == 0 and out.strip().endswith("labelsTr/case02.r1.nii.gz")
    saved = sitk.ReadImage(str(review_dir / "labelsTr" / "case02.r1.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(saved), box_label(6))

    code, out, _ = _run(capsys, "list", str(review_dir), "--status", "refined")
    assert [ln.split()[1] for ln in out.splitlines()[1:]] == ["case02"]

    code, out, _ = _run(capsys, "export-csv", str(review_dir))
    assert out.splitlines()[0].startswith("case,image,pseudo_label,refined_label")
    assert len(out.splitlines()) == 5

    (review_dir / "labelsTr" / "case01.r1.nii.gz").write_bytes(b"orphan")
    code, out, _ = _run(capsys, "cleanup", str(review_dir), "--dry-run")
    assert "would delete" in out and (review_dir / "labelsTr" / "case01.r1.nii.gz").exists()
    code, out, _ = _run(capsys, "cleanup", str(review_dir))
    assert out.strip().endswith("1 file(s) deleted")
    assert not (review_dir / "labelsTr" / "case01.r1.nii.gz").exists()


def test_errors_are_one_line(tmp_path: Path, review_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "reject", str(review_dir), "nope")
    assert code == 2 and err.strip() == f"versemi review: error: {review_dir / 'manifest.json'}: no case 'nope' in the review"
    off_grid = tmp_path / "small.nii.gz"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkUInt8), str(off_grid))
    code, _, err = _run(capsys, "import-labels", str(review_dir), "case00", str(off_grid))
    assert code == 2 and "not on the voxel grid" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "list", str(tmp_path / "empty"))
    assert code == 2 and "no review manifest" in err
    for case in ("case00", "case01", "case02", "case03"):
        _run(capsys, "reject", str(review_dir), case)
    code, out, _ = _run(capsys, "next", str(review_dir))
    assert code == 1 and out.strip() == "no pending case"


def test_reject_of_refined_needs_yes_then_undo_revisions_restore(review_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from versemi.review import ReviewSession

    alice = ReviewSession(review_dir, user="alice")
    first = alice.save_refined("case02", on_grid(box_label(1)))
    second = alice.save_refined("case02", on_grid(box_label(2)))
    code, _, err = _run(capsys, "reject", str(review_dir), "case02")
    assert code != 0 and "refined label saved by alice" in err and "--yes" in err
    assert alice.case("case02").status == "refined"
    assert _run(capsys, "reject", str(review_dir), "case02", "--yes", "--user", "bob")[0] == 0
    assert alice.case("case02").status == "rejected"
    code, out, _ = _run(capsys, "undo", str(review_dir), "case02")
    assert code == 0 and out.startswith("case02: refined") and alice.case("case02").refined_label == second.refined_label
    code, out, _ = _run(capsys, "revisions", str(review_dir), "case02")
    assert code == 0 and out.splitlines()[0].startswith("r1  alice") and "(current)" in out.splitlines()[1]
    code, out, _ = _run(capsys, "restore", str(review_dir), "case02", "1")
    assert code == 0 and alice.case("case02").refined_label == first.refined_label
    code, out, _ = _run(capsys, "revisions", str(review_dir), "case02", "--json")
    assert [(r["revision"], r["current"]) for r in json.loads(out)] == [(1, True), (2, False)]
    code, _, err = _run(capsys, "restore", str(review_dir), "case02", "7")
    assert code != 0 and "no revision 7" in err
