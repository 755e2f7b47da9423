"""Review safety in the library: compare-and-swap saves, undoable decisions, revisions kept and restored.

Two ``ReviewSession`` objects on one folder stand for two annotators (the Slicer panel and the CLI
share this class, so what holds here holds for both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.review import ReviewConflict, ReviewError, ReviewSession, refined_cases

from .conftest import box_label, on_grid


def _voxels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_two_annotators_save_the_same_case_both_revisions_kept_second_told(review_dir: Path) -> None:
    alice, bob = ReviewSession(review_dir, user="alice"), ReviewSession(review_dir, user="bob")
    opened_by_alice = alice.case("case01").revision
    opened_by_bob = bob.case("case01").revision
    assert opened_by_alice == opened_by_bob == 1  # the pseudolabel event

    first = alice.save_refined("case01", on_grid(box_label(5)), expected_revision=opened_by_alice)
    assert first.status == "refined" and first.revision == 2 and first.refined_by == "alice"

    with pytest.raises(ReviewConflict) as info:
        bob.save_refined("case01", on_grid(box_label(6)), expected_revision=opened_by_bob)
    conflict = info.value
    assert "case01 changed since you opened it" in str(conflict) and "refined by alice" in str(conflict)
    assert [e["by"] for e in conflict.newer] == ["alice"]
    # Nothing lost: alice's label is still current, bob's is on disk as a revision that is not.
    now = bob.case("case01")
    assert now.refined_label == first.refined_label and now.refined_by == "alice" and now.revision == 2
    assert conflict.kept is not None and conflict.kept.action == "conflict" and not conflict.kept.current
    np.testing.assert_array_equal(_voxels(first.refined_label), box_label(5))
    np.testing.assert_array_equal(_voxels(conflict.kept.path), box_label(6))
    revisions = bob.revisions("case01")
    assert [(r.number, r.action, r.by, r.current) for r in revisions] == [
        (1, "refined", "alice", True), (2, "conflict", "bob", False)
    ]
    assert bob.cleanup(dry_run=True) == []  # the kept file is referenced, never a "leftover"

    # Bob chooses "keep mine on top": his revision becomes current, alice's stays restorable.
    mine = bob.restore("case01", conflict.kept.number, expected_revision=conflict.case.revision)
    assert mine.refined_label == conflict.kept.path and mine.refined_by == "bob"
    assert refined_cases(review_dir)[0].label_path == conflict.kept.path
    # ... and anyone can go back to alice's.
    back = alice.restore("case01", 1)
    assert back.refined_label == first.refined_label and back.status == "refined"


def test_a_stale_decision_changes_nothing(review_dir: Path) -> None:
    alice, bob = ReviewSession(review_dir, user="alice"), ReviewSession(review_dir, user="bob")
    opened = bob.case("case02").revision
    alice.save_refined("case02", on_grid(box_label(1)))
    with pytest.raises(ReviewConflict, match="refined by alice"):
        bob.reject("case02", reason="motion", expected_revision=opened)
    assert bob.case("case02").status == "refined"


def test_rejecting_a_refined_case_can_be_undone_with_its_label(review_dir: Path) -> None:
    s = ReviewSession(review_dir, user="alice")
    saved = s.save_refined("case03", on_grid(box_label(4)))
    rejected = s.reject("case03", reason="second thoughts", expected_revision=saved.revision)
    assert rejected.status == "rejected" and rejected.refined_label == saved.refined_label
    assert saved.refined_label.is_file()  # the file stays; training no longer reads it
    assert "case03" not in [c.case_id for c in refined_cases(review_dir)]
    undone = s.undo("case03", expected_revision=rejected.revision)
    assert undone.status == "refined" and undone.refined_label == saved.refined_label
    assert [c.case_id for c in refined_cases(review_dir)] == ["case03"]


def test_undo_the_first_save_returns_to_the_pseudo_label(review_dir: Path) -> None:
    s = ReviewSession(review_dir, user="alice")
    saved = s.save_refined("case00", on_grid(box_label(2)))
    undone = s.undo("case00")
    assert undone.status == "pending" and undone.refined_label is None
    assert undone.label_to_edit == undone.pseudo_label
    assert saved.refined_label.is_file() and [r.number for r in s.revisions("case00")] == [1]
    with pytest.raises(ReviewError, match="not a review decision"):
        s.undo("case01")  # only a pseudo-label so far


def test_rejected_and_refined_cases_can_be_reopened(review_dir: Path) -> None:
    s = ReviewSession(review_dir, user="alice")
    s.reject("case01")
    assert s.reopen("case01").status == "pending"
    saved = s.save_refined("case02", on_grid(box_label(3)))
    reopened = s.reopen("case02", expected_revision=saved.revision)
    assert reopened.status == "pending" and reopened.label_to_edit == saved.refined_label


def test_restore_refuses_unknown_or_missing_revisions(review_dir: Path) -> None:
    s = ReviewSession(review_dir, user="alice")
    with pytest.raises(ReviewError, match="no revision 1"):
        s.restore("case00", 1)
    saved = s.save_refined("case00", on_grid(box_label(2)))
    s.save_refined("case00", on_grid(box_label(3)))
    saved.refined_label.unlink()
    with pytest.raises(ReviewError, match="revision 1 is gone"):
        s.restore("case00", 1)
