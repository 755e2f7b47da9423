"""The folder manifest: ONE JSON file per pseudo-label / review folder, the single source of its state.

``versemi pseudolabel`` records every case it handles, the review (Slicer panel, ``versemi review``)
every decision, and training reads the refined cases from it; the format is in docs/REVIEW.md
("manifest.json"). Every change goes through :meth:`ReviewManifest.transaction`: an inter-process lock,
a fresh read, the change, then an atomic rename over ``manifest.json`` (the one commit point, so a
crash leaves the old or the new manifest and readers need no lock). Decisions can be conditional on a
case's revision (compare-and-swap, :class:`RevisionConflict`); the rows are
:mod:`versemi.review.manifest_rows`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from filelock import FileLock, Timeout

from versemi.fileio import atomic_write_bytes
from versemi.review.manifest_rows import (
    REVIEW_STATUSES,
    STATUSES,
    ManifestError,
    ManifestRow,
    RevisionConflict,
    default_user,
    sort_key,
    store_path,
    stored_path,
)
from versemi.timestamps import utc_now

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
FORMAT = "versemi-review-manifest"
FORMAT_VERSION = 2  # 2: status "failed" and "error" (pseudolabel's run log folded in)
CSV_COLUMNS = (
    "case", "image", "pseudo_label", "refined_label", "model_name", "model_version", "model_sha256",
    "score", "disagreement", "entropy", "status", "updated_by", "updated_at", "error",
)
DEFAULT_LOCK_TIMEOUT_S = 60.0


@dataclass
class ManifestState:
    """The whole manifest in memory (what a transaction edits)."""

    name: str
    labels: list[dict[str, Any]] | None = None
    rows: dict[str, ManifestRow] = field(default_factory=dict)

    def sorted_rows(self) -> list[ManifestRow]:
        return sorted(self.rows.values(), key=sort_key)


# --- the manifest ----------------------------------------------------------------------------------
class ReviewManifest:
    """The manifest of a review folder.

    Args:
        review_dir: the review folder (created on the first write).
        lock_timeout: seconds to wait for another process holding the lock.
        before_replace: called when a new manifest is on disk under its temporary name, before the
            rename that commits it (:func:`versemi.fileio.atomic_write`'s hook; tests stop there).

    Reads (:meth:`load`, :meth:`rows`, ...) need no lock: the file is only ever replaced whole.
    """

    def __init__(
        self,
        review_dir: str | Path,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
        before_replace: Callable[[], None] | None = None,
    ) -> None:
        self.before_replace = before_replace
        self.root = Path(review_dir).expanduser().resolve()
        self.path = self.root / MANIFEST_NAME
        self.lock_path = self.root / LOCK_NAME
        self.lock_timeout = lock_timeout
        # One FileLock object per manifest: re-entrant within this process (nested transactions).
        self._lock: FileLock | None = None

    def __repr__(self) -> str:
        return f"ReviewManifest({str(self.root)!r})"

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    # --- reading ---------------------------------------------------------------------------------
    def load(self) -> ManifestState:
        """The current state; an empty state when the manifest does not exist yet.

        Raises:
            ManifestError: unreadable JSON, wrong format, bad rows (the message names the file).
        """
        if not self.path.exists():
            return ManifestState(name=self.root.name)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{self.path}: cannot read review manifest: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{self.path}: not a VerSemi review manifest (no \"format\": \"{FORMAT}\")")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ManifestError(
                f"{self.path}: manifest format version {version!r} is newer than this VerSemi understands "
                f"({FORMAT_VERSION}); update VerSemi"
            )
        cases = data.get("cases")
        if not isinstance(cases, list):
            raise ManifestError(f"{self.path}: 'cases' must be a list")
        labels = data.get("labels")
        if labels is not None and not isinstance(labels, list):
            raise ManifestError(f"{self.path}: 'labels' must be a list of label entries or null")
        state = ManifestState(name=str(data.get("name") or self.root.name), labels=labels)
        for i, raw in enumerate(cases):
            row = ManifestRow.from_json(raw, self.root, f"{self.path}: cases[{i}]")
            if row.case in state.rows:
                raise ManifestError(f"{self.path}: case {row.case!r} is listed twice")
            state.rows[row.case] = row
        return state

    def rows(self) -> list[ManifestRow]:
        """Every row, highest score first."""
        return self.load().sorted_rows()

    def row(self, case: str) -> ManifestRow:
        """One row.

        Raises:
            KeyError: no such case (the message names the manifest).
        """
        return self._case_row(self.load(), case)

    def _case_row(self, state: Any, case: str) -> ManifestRow:
        """``state.rows[case]``, or a KeyError naming the manifest."""
        if case not in state.rows:
            raise KeyError(f"{self.path}: no case {case!r} in the review manifest")
        return state.rows[case]

    def pending(self) -> list[ManifestRow]:
        """The pending rows, highest score first (the review order)."""
        return [r for r in self.rows() if r.status == "pending"]

    def counts(self) -> dict[str, int]:
        """Number of rows per status (every status present, possibly 0)."""
        out = {s: 0 for s in STATUSES}
        for r in self.load().rows.values():
            out[r.status] += 1
        return out

    # --- writing ---------------------------------------------------------------------------------
    def _file_lock(self) -> FileLock:
        if self._lock is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.lock_path), timeout=self.lock_timeout)
        return self._lock

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the manifest lock (re-entrant in one process), without reading or writing.

        Raises:
            ManifestError: another process held the lock longer than ``lock_timeout``.
        """
        lock = self._file_lock()
        try:
            lock.acquire()
        except Timeout:
            raise ManifestError(
                f"{self.lock_path}: the review folder is locked by another process (waited "
                f"{self.lock_timeout:.0f} s); is a save still running?"
            ) from None
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ManifestState]:
        """Lock, read, let the caller change the state, write it atomically (only if no exception).

        Example::

            with manifest.transaction() as state:
                state.rows["s01"].status = "rejected"
        """
        with self.locked():
            state = self.load()
            yield state
            self._write(state)

    def _write(self, state: ManifestState) -> None:
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": state.name,
            "labels": state.labels,
            "cases": [r.to_json(self.root) for r in state.sorted_rows()],
        }
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:  # a file name that is not UTF-8: kept exactly, as JSON \u escapes
            encoded = (json.dumps(data, indent=1, ensure_ascii=True) + "\n").encode("ascii")
        atomic_write_bytes(self.path, encoded, before_replace=self.before_replace)

    def upsert(
        self,
        case: str,
        *,
        image: str | Path,
        pseudo_label: str | Path | None,
        model: Mapping[str, Any] | None = None,
        score: float | Any | None = None,
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
        reset_status: bool = False,
        labels: Sequence[Mapping[str, Any]] | None = None,
    ) -> ManifestRow:
        """Add a case, or record a new pseudo-label for it (what ``versemi pseudolabel`` calls).

        A case already reviewed keeps its status and refined label (human work is never discarded
        by re-running the model) unless ``reset_status``; its pseudo-label, model and score are
        updated and the history records the new pseudo-label.

        Args:
            case: the case id.
            image: the scan.
            pseudo_label: the pseudo-label labelmap (on the scan's grid).
            model: ``{"name", "version", "sha256"}`` of the model that made it.
            score: the review score: a float, or an :class:`~versemi.review.uncertainty.UncertaintyScore`
                (its components are stored under ``uncertainty``).
            extra: free-form JSON-compatible data kept with the row (e.g. the sidecar path, timings).
            user: who ran it (default: the login name).
            reset_status: set the case back to pending.
            labels: the pseudo-label's label table (see :meth:`set_label_table`), recorded in the
                same transaction.
        """
        table = _check_label_table(labels) if labels is not None else None
        uncertainty: dict[str, Any] = {}
        if score is not None and hasattr(score, "to_dict"):
            uncertainty = {k: v for k, v in score.to_dict().items() if k != "score"}
            score = score.score
        if score is not None:
            score = float(score)
        user = user or default_user()
        stamp = utc_now()
        with self.transaction() as state:
            if table is not None:
                self._apply_label_table(state, table)
            row = state.rows.get(case)
            event = {"action": "pseudolabel", "by": user, "at": stamp, "score": score,
                     "pseudo_label": store_path(Path(pseudo_label), self.root) if pseudo_label else None,
                     "model": dict(model or {})}
            if row is None:
                row = ManifestRow(case=case, image=Path(image), pseudo_label=None)
                state.rows[case] = row
            row.image = Path(image).expanduser().resolve()
            row.pseudo_label = Path(pseudo_label).expanduser().resolve() if pseudo_label else None
            row.model = dict(model or {})
            row.score = score
            row.uncertainty = uncertainty
            if extra:
                row.extra.update(dict(extra))
            if reset_status or row.status == "failed":
                row.status = "pending"
            row.error = None
            row.updated_by, row.updated_at = user, stamp
            row.history.append(event)
        return row

    def record_failure(
        self,
        case: str,
        *,
        image: str | Path,
        error: str,
        model: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        user: str | None = None,
    ) -> ManifestRow:
        """Record that pseudo-labelling failed for a case (what ``versemi pseudolabel`` calls).

        A case without a pseudo-label becomes (or stays) ``failed``: listed, never reviewed or trained
        on, until a later run succeeds. A case that has one keeps it, its status and any refined label;
        the failure goes into its ``error`` and history.

        Args:
            case: the case id.
            image: the scan.
            error: the one-line error.
            model: ``{"name", "version", "sha256"}`` of the model that was run.
            extra: free-form fields kept with the row (e.g. the seconds spent).
            user: who ran it (default: the login name).
        """
        user = user or default_user()
        stamp = utc_now()
        with self.transaction() as state:
            row = state.rows.get(case)
            if row is None:
                row = ManifestRow(case=case, image=Path(image).expanduser().resolve(), pseudo_label=None,
                                  model=dict(model or {}), status="failed")
                state.rows[case] = row
            if row.status == "failed":
                row.image = Path(image).expanduser().resolve()
                row.model = dict(model or {})
            if extra:
                row.extra.update(dict(extra))
            row.error = str(error)
            row.updated_by, row.updated_at = user, stamp
            row.history.append({"action": "failed", "by": user, "at": stamp, "error": str(error),
                                "model": dict(model or {})})
        return row

    def set_status(
        self,
        case: str,
        status: str,
        *,
        user: str | None = None,
        reason: str | None = None,
        refined_label: str | Path | None = None,
        clear_refined_label: bool = False,
        expected_revision: int | None = None,
        extra_event: Mapping[str, Any] | None = None,
    ) -> ManifestRow:
        """Mark a case ``pending``, ``refined`` (with its label file) or ``rejected``.

        The event records the status and refined label it replaced (``from``,
        ``previous_refined_label``), so :meth:`undo_target` can put them back.

        Args:
            refined_label: the refined label file; ``refined`` without one keeps the case's current
                refined label (e.g. undoing the rejection of a refined case).
            clear_refined_label: the case has no refined label afterwards (undoing its first save).
            expected_revision: the case's revision the change is based on; a newer one raises
                :class:`RevisionConflict` and changes nothing (checked under the lock).
            extra_event: more fields for the history event (e.g. ``{"restored": 2}``).

        Raises:
            KeyError: no such case.
            RevisionConflict: the case changed since ``expected_revision``.
            ManifestError: unknown status, ``refined`` without a label file, or a case whose
                pseudo-labelling failed (there is nothing to review; run ``versemi pseudolabel`` again).
        """
        if status not in REVIEW_STATUSES:
            raise ManifestError(f"unknown status {status!r}; expected one of {', '.join(REVIEW_STATUSES)}")
        user = user or default_user()
        stamp = utc_now()
        with self.transaction() as state:
            row = self._case_row(state, case)
            if row.status == "failed":
                raise ManifestError(
                    f"{self.path}: {case}: pseudo-labelling failed ({row.error}); there is nothing to review - "
                    "run versemi pseudolabel again"
                )
            if expected_revision is not None and row.revision != expected_revision:
                raise RevisionConflict(self.path, row, expected_revision)
            if status == "refined" and refined_label is None and row.refined_label is None:
                raise ManifestError(f"{case}: status 'refined' needs the refined label file")
            event: dict[str, Any] = {"action": status, "by": user, "at": stamp, "from": row.status,
                                     "previous_refined_label": store_path(row.refined_label, self.root)}
            if reason:
                event["reason"] = reason
            event.update(dict(extra_event or {}))
            if clear_refined_label:
                row.refined_label = None
            if refined_label is not None:
                row.refined_label = Path(refined_label).expanduser().resolve()
            if status == "refined":
                event["refined_label"] = store_path(row.refined_label, self.root)
            row.status = status
            row.updated_by, row.updated_at = user, stamp
            row.history.append(event)
        return row

    def record_conflict(self, case: str, refined_label: str | Path, *, based_on: int, user: str | None = None) -> ManifestRow:
        """Record a label saved on an outdated revision: kept on disk and in the history, not current.

        The case's status and current label do not change (nor its revision), so the file is
        listed by the revisions and can be restored, and ``cleanup`` keeps it.
        """
        user = user or default_user()
        stamp = utc_now()
        with self.transaction() as state:
            row = self._case_row(state, case)
            row.history.append({"action": "conflict", "by": user, "at": stamp, "based_on": based_on,
                                "refined_label": store_path(Path(refined_label).expanduser().resolve(), self.root)})
        return row

    def set_label_table(self, labels: Sequence[Mapping[str, Any]]) -> None:
        """Record the label table of the pseudo-labels (``[{"value", "name", "prompt_id", ...}]``).

        Refined labels use the same values, so the table cannot change while refined cases exist.

        Raises:
            ManifestError: malformed entries, or a different table while cases are refined.
        """
        table = _check_label_table(labels)
        with self.transaction() as state:
            self._apply_label_table(state, table)

    def _apply_label_table(self, state: ManifestState, table: list[dict[str, Any]]) -> None:
        if state.labels is not None and _value_names(state.labels) != _value_names(table):
            refined = [r.case for r in state.rows.values() if r.status == "refined"]
            if refined:
                raise ManifestError(
                    f"{self.path}: the label table would change ({_value_names(state.labels)} -> "
                    f"{_value_names(table)}) but {len(refined)} case(s) are already refined with the old "
                    f"values (e.g. {refined[0]}); use a new review folder for a model with other labels"
                )
        state.labels = table

    def export_csv(self, path: str | Path | None = None) -> str:
        """The manifest as CSV (one row per case, review order); also written to ``path`` when given."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in self.rows():
            writer.writerow([
                r.case, r.image, r.pseudo_label or "", r.refined_label or "", r.model.get("name") or "",
                r.model.get("version") or "", r.model.get("sha256") or "",
                "" if r.score is None else f"{r.score:.6f}",
                _fmt(r.uncertainty.get("disagreement")), _fmt(r.uncertainty.get("entropy")),
                r.status, r.updated_by or "", r.updated_at or "", r.error or "",
            ])
        text = buf.getvalue()
        if path is not None:
            atomic_write_bytes(Path(path), text.encode("utf-8"))
        return text

    def referenced_files(self) -> set[Path]:
        """Every file the manifest points to (current rows and their history)."""
        state = self.load()
        out: set[Path] = set()
        for r in state.rows.values():
            for p in (r.image, r.pseudo_label, r.refined_label):
                if p is not None:
                    out.add(p)
            for event in r.history:
                for key in ("refined_label", "pseudo_label"):
                    p = stored_path(event.get(key), self.root)
                    if p is not None:
                        out.add(p)
        return out


def _check_label_table(labels: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    table = [dict(e) for e in labels]
    for i, e in enumerate(table):
        value = e.get("value")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or not str(e.get("name") or "").strip():
            raise ManifestError(f"label table entry {i} needs a positive int 'value' and a 'name': {e}")
    if len({e["value"] for e in table}) != len(table) or len({e["name"] for e in table}) != len(table):
        raise ManifestError(f"label table has duplicate values or names: {table}")
    return table


def _value_names(labels: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    return sorted((int(e["value"]), str(e["name"])) for e in labels)


def _fmt(x: Any) -> str:
    return "" if x is None else f"{float(x):.6f}"


__all__ = [
    "CSV_COLUMNS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "ManifestState",
    "ReviewManifest",
]
