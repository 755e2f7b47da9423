"""``ReviewSession``: the calls behind the Slicer review panel and ``versemi review``.

:meth:`~ReviewSession.next_case` gives the highest-scored pending case; the annotator edits its label;
:meth:`~ReviewSession.save_refined` stores the result or :meth:`~ReviewSession.reject` sets it aside.
A save writes a new revision file (``labelsTr/<case>.r<N>.nii.gz``) atomically, then commits by
renaming the manifest, all under the manifest lock: a crash leaves the old state plus at most an
orphan file (:meth:`~ReviewSession.cleanup`). ``expected_revision`` makes saves compare-and-swap;
a conflicting save is kept as a non-current revision. Training reads refined labels through the
manifest, never by listing ``labelsTr``. Details: docs/REVIEW.md ("Crash safety", "Revisions").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import SimpleITK as sitk

from versemi.data.dataset import SUPPORTED_ENDINGS
from versemi.dicomseg import DicomSegError, is_dicom_seg_path, read_dicom_seg, segments_to_label_values
from versemi.fileio import is_temp_file_name, temp_file_target
from versemi.image_headers import grid_differences
from versemi.images import ImageFileError, read_image, read_image_header
from versemi.outputs import AtomicOutputs, sidecar_paths
from versemi.review.legacy import migrate_run_log
from versemi.review.manifest import ReviewManifest
from versemi.review.manifest_rows import (
    REVIEW_STATUSES,
    ManifestError,
    ManifestRow,
    RevisionConflict,
    default_user,
    describe_event,
    stored_path,
)

LABELS_DIR = "labelsTr"
LABEL_ENDING = ".nii.gz"
_REVISION_RE = re.compile(r"^(?P<case>.+)\.r(?P<rev>\d+)\.nii\.gz$")
# The steps of a save, in order, as :class:`ReviewSession`'s ``on_step`` hook sees them.
SAVE_STEPS = ("before_label_write", "label_temp_written", "label_renamed", "manifest_temp_written", "committed")


class ReviewError(ValueError):
    """A review action that cannot be done; the message names the case/file and the problem."""


class ReviewConflict(ReviewError):
    """The case changed since the annotator opened it (another save or decision came first).

    Nothing was lost: a refused save still wrote its label as a new revision file, recorded in the
    history but not current (``kept``); :meth:`ReviewSession.restore` makes it current ("keep mine on
    top"), or the annotator loads the newer label instead.

    Attributes:
        case: the case as it is now (with the newer revision).
        expected: the revision the annotator opened.
        newer: the history events since then (``action``, ``by``, ``at``, ``refined_label``).
        kept: the revision holding the refused save's label, or ``None`` (a refused decision).
    """

    def __init__(self, message: str, case: "ReviewCase", expected: int, newer: list[dict[str, Any]],
                 kept: "Revision | None" = None) -> None:
        super().__init__(message)
        self.case = case
        self.expected = expected
        self.newer = newer
        self.kept = kept


@dataclass(frozen=True)
class Revision:
    """One refined label file of a case (every save writes one; none is ever overwritten).

    Attributes:
        number: ``N`` of ``<case>.r<N>.nii.gz``.
        path: the file.
        action: ``refined`` (was current when saved) or ``conflict`` (saved on an outdated
            revision, kept without becoming current).
        by: who saved it.
        at: when (UTC, ISO 8601).
        current: it is the case's refined label now (and the case is refined).
        exists: the file is on disk.
    """

    number: int
    path: Path
    action: str
    by: str | None
    at: str | None
    current: bool
    exists: bool


@dataclass(frozen=True)
class ReviewCase:
    """One case as the review panel shows it.

    Attributes:
        case_id: the case id.
        image: the scan.
        pseudo_label: the model's pseudo-label (never modified).
        refined_label: the latest refined label, or ``None``.
        status: ``pending``, ``refined``, ``rejected`` (or ``failed``: pseudo-labelling failed).
        score: the review score (higher = review first), ``None`` if unscored.
        disagreement: the score's disagreement component, if known.
        entropy: the score's entropy component, if known.
        model: ``{"name", "version", "sha256"}`` of the model that made the pseudo-label.
        updated_by: who changed the case last.
        updated_at: when (UTC, ISO 8601).
        sidecar: the pseudo-label's label-table sidecar (``.json`` beside it) if it exists; it also
            names the values of refined labels.
        revision: the case's state counter (:attr:`ManifestRow.revision`); pass it back as
            ``expected_revision`` so a save or decision never silently supersedes a newer one.
        refined_by: who saved the current refined label (``None``: none).
        refined_at: when.
    """

    case_id: str
    image: Path
    pseudo_label: Path | None
    refined_label: Path | None
    status: str
    score: float | None
    disagreement: float | None
    entropy: float | None
    model: dict[str, Any]
    updated_by: str | None
    updated_at: str | None
    sidecar: Path | None
    revision: int = 0
    refined_by: str | None = None
    refined_at: str | None = None

    @property
    def label_to_edit(self) -> Path | None:
        """What to load for editing: the latest refined label, else the pseudo-label."""
        return self.refined_label or self.pseudo_label

    @classmethod
    def from_row(cls, row: ManifestRow, root: Path) -> "ReviewCase":
        # The sidecar pseudolabel recorded (an absolute path in ``extra``), else the
        # ``versemi predict`` naming rule (``<label stem>.json`` beside the label).
        current = next((r for r in row_revisions(row, root) if r.path == row.refined_label), None)
        recorded = row.extra.get("sidecar")
        if recorded and Path(str(recorded)).is_absolute():
            sidecar: Path | None = Path(str(recorded))
        else:
            sidecar = sidecar_paths(row.pseudo_label)[0] if row.pseudo_label else None
        return cls(
            case_id=row.case,
            image=row.image,
            pseudo_label=row.pseudo_label,
            refined_label=row.refined_label,
            status=row.status,
            score=row.score,
            disagreement=_opt_float(row.uncertainty.get("disagreement")),
            entropy=_opt_float(row.uncertainty.get("entropy")),
            model=dict(row.model),
            updated_by=row.updated_by,
            updated_at=row.updated_at,
            sidecar=sidecar if sidecar is not None and sidecar.is_file() else None,
            revision=row.revision,
            refined_by=current.by if current else None,
            refined_at=current.at if current else None,
        )


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def row_revisions(row: ManifestRow, root: Path) -> list[Revision]:
    """Every refined label file a case's history names, oldest first (see :class:`Revision`)."""
    seen: dict[Path, Revision] = {}
    for event in row.history:
        path = stored_path(event.get("refined_label"), root)
        if path is None or path in seen or event.get("action") not in ("refined", "conflict"):
            continue
        m = _REVISION_RE.match(path.name)
        number = int(m["rev"]) if m else len(seen) + 1
        seen[path] = Revision(number, path, str(event["action"]), event.get("by"), event.get("at"),
                              current=row.status == "refined" and path == row.refined_label,
                              exists=path.is_file())
    return sorted(seen.values(), key=lambda r: r.number)


# --- grid check ------------------------------------------------------------------------------------
def image_grid(image_path: Path) -> Any:
    """The case image's grid (size, spacing, origin, direction): the header of an image file, or
    the DICOM series of a folder (which has no header of its own).

    Raises:
        ReviewError: the image cannot be read.
    """
    try:
        if Path(image_path).is_dir():
            return read_image(image_path, allow_gaps=True)
        return read_image_header(image_path, endings=SUPPORTED_ENDINGS)
    except ImageFileError as exc:
        raise ReviewError(str(exc)) from exc


def check_on_grid(labelmap: sitk.Image, image_path: Path, what: str = "labelmap") -> None:
    """Refuse a labelmap that is not on exactly the image's voxel grid.

    Raises:
        ReviewError: dimension, size, spacing, origin or direction differ (beyond float rounding);
            the message names the image and both values.
    """
    ref = image_grid(image_path)
    if labelmap.GetDimension() != 3 or ref.GetDimension() != 3:
        raise ReviewError(
            f"{what} is {labelmap.GetDimension()}D and {image_path} is {ref.GetDimension()}D; both must be 3D"
        )
    if labelmap.GetNumberOfComponentsPerPixel() != 1:
        raise ReviewError(f"{what} has {labelmap.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar labelmap")
    problems = grid_differences(labelmap, ref)  # the rule of check-dataset, training and evaluate
    if problems:
        raise ReviewError(
            f"{what} is not on the voxel grid of {image_path}: " + "; ".join(problems)
            + " (export the segmentation with the image as reference geometry)"
        )


def _label_array(labelmap: sitk.Image, what: str, allowed: set[int] | None) -> np.ndarray:
    """The labelmap's voxels as uint8/uint16 after checking they are allowed label values."""
    arr = sitk.GetArrayViewFromImage(labelmap)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ReviewError(f"{what} has non-integer voxel values ({arr.dtype}); a labelmap holds label values")
    values = {int(v) for v in np.unique(arr)}
    if any(v < 0 for v in values):
        raise ReviewError(f"{what} has negative label values {sorted(v for v in values if v < 0)}")
    if allowed is not None:
        unknown = values - allowed - {0}
        if unknown:
            raise ReviewError(
                f"{what} has label values {sorted(unknown)} that the review's label table does not have "
                f"(allowed: {sorted(allowed)})"
            )
    dtype = np.uint8 if max(values, default=0) <= 255 else np.uint16
    return np.asarray(arr).astype(dtype, copy=False)


# --- the session -----------------------------------------------------------------------------------
class ReviewSession:
    """Review of one folder by one annotator.

    Args:
        review_dir: the review folder (holds ``manifest.json``; refined labels go to ``labelsTr/``).
        user: the name recorded with every change (default: the login name).
        on_step: called with the name of each step of a save as it is reached (:data:`SAVE_STEPS`:
            the label's temporary file is on disk, renamed, the new manifest on disk, committed; the
            manifest step also on reject/reopen). Tests stop a process there to show that a crash at
            any step leaves a consistent folder.

    Raises:
        ReviewError: the folder has no manifest, or it cannot be read.
    """

    def __init__(
        self, review_dir: str | Path, user: str | None = None, on_step: Callable[[str], None] | None = None
    ) -> None:
        self._on_step = on_step
        self.manifest = ReviewManifest(review_dir, before_replace=lambda: self._step("manifest_temp_written"))
        self.root = self.manifest.root
        self.user = user or default_user()
        if not self.manifest.exists:
            raise ReviewError(f"{self.manifest.path}: no review manifest (run versemi pseudolabel into this folder)")
        try:
            migrate_run_log(self.manifest)  # a folder made before one manifest per folder
        except (ManifestError, OSError) as exc:
            raise ReviewError(f"{self.manifest.path}: {exc}") from exc
        self._load()  # fail early on a broken manifest

    def __repr__(self) -> str:
        return f"ReviewSession({str(self.root)!r}, user={self.user!r})"

    @property
    def labels_dir(self) -> Path:
        return self.root / LABELS_DIR

    def _load(self):  # noqa: ANN202 - ManifestState
        try:
            return self.manifest.load()
        except ManifestError as exc:
            raise ReviewError(str(exc)) from exc

    def _row(self, case_id: str) -> ManifestRow:
        state = self._load()
        if case_id not in state.rows:
            raise ReviewError(f"{self.manifest.path}: no case {case_id!r} in the review")
        return state.rows[case_id]

    # --- queries ---------------------------------------------------------------------------------
    def cases(self, status: str | None = None) -> list[ReviewCase]:
        """Every case to review (or those with ``status``), highest score first; cases whose
        pseudo-labelling failed only when asked for (``status="failed"``)."""
        rows = self._load().sorted_rows()
        return [ReviewCase.from_row(r, self.root) for r in rows if status == r.status or (status is None and r.status != "failed")]

    def case(self, case_id: str) -> ReviewCase:
        """One case.

        Raises:
            ReviewError: no such case.
        """
        return ReviewCase.from_row(self._row(case_id), self.root)

    def next_case(self, skip: Iterable[str] = ()) -> ReviewCase | None:
        """The pending case with the highest score (ties: case id), or ``None`` when none is left.

        Args:
            skip: case ids to pass over (e.g. the ones the annotator skipped in this session).
        """
        skipped = set(skip)
        for row in self._load().sorted_rows():
            if row.status == "pending" and row.case not in skipped:
                return ReviewCase.from_row(row, self.root)
        return None

    def counts(self) -> dict[str, int]:
        """Cases per status."""
        return self.manifest.counts()

    def label_table(self) -> list[dict[str, Any]] | None:
        """The label table of the pseudo-labels (and refined labels), if recorded."""
        return self._load().labels

    # --- actions ---------------------------------------------------------------------------------
    def save_refined(
        self, case_id: str, labelmap: sitk.Image | str | Path, expected_revision: int | None = None
    ) -> ReviewCase:
        """Store an edited labelmap as the case's refined label and mark the case refined.

        Args:
            case_id: the case.
            labelmap: the edited labelmap (a SimpleITK image, or a label file e.g. exported from
                Slicer, or a DICOM Segmentation of the case's DICOM series) on exactly the case
                image's grid; values must be in the label table.
            expected_revision: the case's :attr:`ReviewCase.revision` when the annotator opened it
                (compare-and-swap). If the case changed since, the label is still written, as a new
                revision that is not current, and :class:`ReviewConflict` says who changed what.
                ``None``: save on top of whatever is current.

        Returns:
            The case as now recorded (status ``refined``, ``refined_label`` = the new file).

        Raises:
            ReviewConflict: the case changed since ``expected_revision`` (the label is kept as
                ``kept``; nothing else changed).
            ReviewError: unknown case, unreadable file, labelmap off the image grid, unknown label
                values, or a manifest that cannot be written; nothing is committed then.
        """
        row = self._row(case_id)
        if row.status == "failed":
            raise ReviewError(f"{self.manifest.path}: {case_id}: pseudo-labelling failed ({row.error}); "
                              "run versemi pseudolabel again before reviewing it")
        if "/" in case_id or "\\" in case_id or case_id in ("", ".", ".."):
            raise ReviewError(f"case id {case_id!r} cannot be used as a file name")
        what = f"refined label for {case_id}"
        if not isinstance(labelmap, sitk.Image):
            what = f"{labelmap}"
            labelmap = self._read_label_file(Path(labelmap), row)
        check_on_grid(labelmap, row.image, what)
        table = self._load().labels
        allowed = {int(e["value"]) for e in table} if table else None
        array = _label_array(labelmap, what, allowed)
        # The image header's geometry, copied verbatim: the stored label is on EXACTLY its grid.
        ref = image_grid(row.image)
        out = sitk.GetImageFromArray(array)
        out.SetSpacing(ref.GetSpacing())
        out.SetOrigin(ref.GetOrigin())
        out.SetDirection(ref.GetDirection())
        del array

        try:
            with self.manifest.locked():
                row = self._row(case_id)  # under the lock: the compare of the compare-and-swap
                stale = expected_revision is not None and row.revision != expected_revision
                target = self._new_label_path(case_id)
                protected = {p.resolve() for p in (row.image, row.pseudo_label) if p is not None}
                if target.resolve() in protected:  # cannot happen with fresh names; never risk it
                    raise ReviewError(f"{target}: refusing to overwrite the case's image or pseudo-label")
                self._step("before_label_write")
                with AtomicOutputs(before_replace=lambda: self._step("label_temp_written")) as group:
                    group.write_image(out, target)
                self._step("label_renamed")
                if stale:
                    assert expected_revision is not None
                    self.manifest.record_conflict(case_id, target, based_on=expected_revision, user=self.user)
                else:
                    self.manifest.set_status(case_id, "refined", user=self.user, refined_label=target,
                                             expected_revision=expected_revision)
                self._step("committed")
        except ManifestError as exc:
            raise ReviewError(str(exc)) from exc
        except (OSError, RuntimeError) as exc:  # disk full, permissions, ITK writer errors
            raise ReviewError(f"{self.labels_dir}: cannot write the refined label of {case_id}: {exc}") from exc
        if stale:
            assert expected_revision is not None
            kept = next(r for r in self.revisions(case_id) if r.path == target)
            raise self._conflict(case_id, expected_revision, kept)
        return self.case(case_id)

    def reject(self, case_id: str, reason: str | None = None, expected_revision: int | None = None) -> ReviewCase:
        """Mark a case rejected (it stays unlabeled for training; a refined label stays on disk).

        Raises:
            ReviewConflict: the case changed since ``expected_revision``; nothing changed.
            ReviewError: unknown case or the manifest cannot be written.
        """
        return self._mark(case_id, "rejected", reason, expected_revision)

    def reopen(self, case_id: str, reason: str | None = None, expected_revision: int | None = None) -> ReviewCase:
        """Set a rejected or refined case back to pending (its refined label stays the label to edit).

        Raises:
            ReviewConflict: the case changed since ``expected_revision``; nothing changed.
        """
        return self._mark(case_id, "pending", reason, expected_revision)

    def undo(self, case_id: str, expected_revision: int | None = None) -> ReviewCase:
        """Undo the case's last review decision: its previous status and refined label come back.

        E.g. rejecting a refined case, then ``undo``: refined again, with the same label file.

        Raises:
            ReviewConflict: the case changed since ``expected_revision`` (the decision to undo is
                no longer the last one); nothing changed.
            ReviewError: the last change is not a review decision (e.g. a new pseudo-label).
        """
        row = self._row(case_id)
        changes = row.events_since(0)
        last = changes[-1] if changes else {}
        previous = last.get("from")
        if last.get("action") not in REVIEW_STATUSES or previous not in REVIEW_STATUSES:
            raise ReviewError(f"{case_id}: the last change ({describe_event(last) if last else 'none'}) "
                              "is not a review decision that can be undone")
        label = stored_path(last.get("previous_refined_label"), self.root)
        return self._mark(case_id, str(previous), f"undo: {last['action']}", expected_revision,
                          refined_label=label, clear_refined_label=label is None, extra_event={"undo": True})

    def revisions(self, case_id: str) -> list[Revision]:
        """Every refined label the case ever had (saved or kept after a conflict), oldest first.

        Raises:
            ReviewError: no such case.
        """
        return row_revisions(self._row(case_id), self.root)

    def restore(self, case_id: str, number: int, expected_revision: int | None = None) -> ReviewCase:
        """Make revision ``number`` the case's refined label (status ``refined``); nothing is deleted.

        Also "keep mine on top" after a :class:`ReviewConflict` (its ``kept`` revision).

        Raises:
            ReviewConflict: the case changed since ``expected_revision``; nothing changed.
            ReviewError: no such revision, or its file is gone.
        """
        found = [r for r in self.revisions(case_id) if r.number == number]
        if not found:
            numbers = [r.number for r in self.revisions(case_id)]
            raise ReviewError(f"{case_id}: no revision {number} (revisions: {numbers or 'none'})")
        if not found[0].exists:
            raise ReviewError(f"{case_id}: revision {number} is gone from disk ({found[0].path})")
        return self._mark(case_id, "refined", f"restore revision {number}", expected_revision,
                          refined_label=found[0].path, extra_event={"restored": number})

    def _mark(self, case_id: str, status: str, reason: str | None, expected_revision: int | None,
              **change: Any) -> ReviewCase:
        self._row(case_id)
        try:
            self.manifest.set_status(case_id, status, user=self.user, reason=reason,
                                     expected_revision=expected_revision, **change)
        except RevisionConflict as exc:
            raise self._conflict(case_id, exc.expected, None) from exc
        except (ManifestError, KeyError) as exc:
            raise ReviewError(str(exc)) from exc
        return self.case(case_id)

    def _conflict(self, case_id: str, expected: int, kept: Revision | None) -> ReviewConflict:
        row = self._row(case_id)
        newer = row.events_since(expected)
        message = (f"{case_id} changed since you opened it: "
                   + "; ".join(describe_event(e) for e in newer))
        if kept is not None:
            message += f". Your label was kept as revision {kept.number} ({kept.path}), not current"
        return ReviewConflict(message, ReviewCase.from_row(row, self.root), expected, newer, kept)

    def _read_label_file(self, path: Path, row: ManifestRow) -> sitk.Image:
        """A label file as a SimpleITK image; a DICOM SEG (``.dcm``) of the case's DICOM series gives
        the label table's values on the series' grid (segments matched by name)."""
        if is_dicom_seg_path(path):
            if not row.image.is_dir():
                raise ReviewError(f"{path}: a DICOM SEG needs the case image to be a DICOM series; {row.image} is not")
            try:
                numbers, segments = read_dicom_seg(path, row.image)
                return segments_to_label_values(numbers, segments, self._load().labels, str(path))
            except (DicomSegError, ImageFileError) as exc:
                raise ReviewError(str(exc)) from exc
        try:
            return read_image(path, endings=SUPPORTED_ENDINGS)
        except ImageFileError as exc:
            raise ReviewError(str(exc)) from exc

    def cleanup(self, dry_run: bool = False) -> list[Path]:
        """Delete crash leftovers: files in ``labelsTr/`` the manifest does not reference, temp manifests.

        Older refined revisions stay while the history names them. Runs under the manifest lock, so
        it never races a save.

        Returns:
            The files deleted (or that would be, with ``dry_run``).
        """
        removed: list[Path] = []
        with self.manifest.locked():
            # Temporary manifests of a write killed before its rename.
            for path in sorted(self.root.iterdir()):
                if temp_file_target(path.name) == self.manifest.path.name:
                    removed.append(path)
                    if not dry_run:
                        path.unlink()
            if not self.labels_dir.is_dir():
                return removed
            keep = {p.resolve() for p in self.manifest.referenced_files()}
            for path in sorted(self.labels_dir.iterdir()):
                if not path.is_file() or path.resolve() in keep:
                    continue
                if is_temp_file_name(path.name) or _REVISION_RE.match(path.name):
                    removed.append(path)
                    if not dry_run:
                        path.unlink()
        return removed

    # --- helpers ---------------------------------------------------------------------------------
    def _step(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    def _new_label_path(self, case_id: str) -> Path:
        """``labelsTr/<case>.r<N>.nii.gz`` with N above every revision on disk or in the history."""
        highest = 0
        if self.labels_dir.is_dir():
            for path in self.labels_dir.iterdir():
                m = _REVISION_RE.match(temp_file_target(path.name) or path.name)
                if m and m["case"] == case_id:
                    highest = max(highest, int(m["rev"]))
        for event in self._row(case_id).history:
            m = _REVISION_RE.match(Path(str(event.get("refined_label") or "")).name)
            if m:
                highest = max(highest, int(m["rev"]))
        return self.labels_dir / f"{case_id}.r{highest + 1}{LABEL_ENDING}"


__all__ = [
    "LABELS_DIR",
    "SAVE_STEPS",
    "ReviewCase",
    "ReviewConflict",
    "ReviewError",
    "Revision",
    "ReviewSession",
    "check_on_grid",
]
