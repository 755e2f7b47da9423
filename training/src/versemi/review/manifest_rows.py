"""The rows of the review manifest: one case each, its history and revision, and the manifest's errors.

:mod:`versemi.review.manifest` reads and writes them (under its lock); this module holds what a row is.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

REVIEW_STATUSES = ("pending", "refined", "rejected")  # what a review decision sets
STATUSES = (*REVIEW_STATUSES, "failed")
# History actions that record a file without changing the case (a save that lost a compare-and-swap).
NON_STATE_ACTIONS = ("conflict",)


class ManifestError(ValueError):
    """A manifest that cannot be read or a change that cannot be made; the message names the file."""


class RevisionConflict(ManifestError):
    """A change made on a revision of a case that is no longer its current one (compare-and-swap).

    Attributes:
        case: the case id.
        expected: the revision the change was based on.
        row: the case as it is now.
        newer: the history events after ``expected`` (who changed what, when).
    """

    def __init__(self, path: Path, row: "ManifestRow", expected: int) -> None:
        self.case = row.case
        self.expected = expected
        self.row = row
        self.newer = row.events_since(expected)
        super().__init__(
            f"{path}: case {row.case!r} changed since revision {expected} was opened (now revision {row.revision}): "
            + "; ".join(describe_event(e) for e in self.newer)
        )


def describe_event(event: Mapping[str, Any]) -> str:
    """One history event in words: ``"refined by alice at 2026-...: labelsTr/s01.r2.nii.gz"``."""
    text = f"{event.get('action')} by {event.get('by') or 'unknown'} at {event.get('at') or '?'}"
    if event.get("refined_label"):
        text += f": {event['refined_label']}"
    return text


def default_user() -> str:
    """The name recorded in ``updated_by`` when none is given (the login name)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (some containers): still record something
        return "unknown"


@dataclass
class ManifestRow:
    """One case of the review folder (see :mod:`versemi.review.manifest` for the JSON form).

    Paths are absolute here; they are stored relative to the review folder when inside it.
    """

    case: str
    image: Path
    pseudo_label: Path | None
    model: dict[str, Any] = field(default_factory=dict)
    score: float | None = None
    uncertainty: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"
    refined_label: Path | None = None
    error: str | None = None
    updated_by: str | None = None
    updated_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def revision(self) -> int:
        """The case's state counter: the number of history events that changed it.

        A save or decision based on revision ``n`` is refused (:class:`RevisionConflict`) once it
        is no longer ``n``; files kept after such a conflict do not count.
        """
        return sum(1 for e in self.history if e.get("action") not in NON_STATE_ACTIONS)

    def events_since(self, revision: int) -> list[dict[str, Any]]:
        """The state-changing history events after ``revision``."""
        changes = [e for e in self.history if e.get("action") not in NON_STATE_ACTIONS]
        return changes[revision:]

    def to_json(self, root: Path) -> dict[str, Any]:
        return {
            "case": self.case,
            "image": store_path(self.image, root),
            "pseudo_label": store_path(self.pseudo_label, root),
            "model": dict(self.model),
            "score": self.score,
            "uncertainty": dict(self.uncertainty),
            "status": self.status,
            "refined_label": store_path(self.refined_label, root),
            "error": self.error,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
            "history": list(self.history),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, d: Any, root: Path, where: str) -> "ManifestRow":
        if not isinstance(d, Mapping):
            raise ManifestError(f"{where}: a case row must be an object")
        try:
            case = str(d["case"])
            image = d["image"]
        except KeyError as exc:
            raise ManifestError(f"{where}: missing key {exc}") from None
        status = d.get("status", "pending")
        if status not in STATUSES:
            raise ManifestError(f"{where} ({case}): status {status!r} is not one of {', '.join(STATUSES)}")
        score = d.get("score")
        if score is not None and not isinstance(score, (int, float)):
            raise ManifestError(f"{where} ({case}): score must be a number or null, got {score!r}")
        return cls(
            case=case,
            image=stored_path(image, root),  # type: ignore[arg-type]
            pseudo_label=stored_path(d.get("pseudo_label"), root),
            model=dict(d.get("model") or {}),
            score=float(score) if score is not None else None,
            uncertainty=dict(d.get("uncertainty") or {}),
            status=status,
            refined_label=stored_path(d.get("refined_label"), root),
            error=d.get("error"),
            updated_by=d.get("updated_by"),
            updated_at=d.get("updated_at"),
            history=list(d.get("history") or []),
            extra=dict(d.get("extra") or {}),
        )


def store_path(path: Path | None, root: Path) -> str | None:
    """A path as the manifest stores it: relative to ``root`` when inside it, else absolute."""
    if path is None:
        return None
    path = Path(path)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def stored_path(value: Any, root: Path) -> Path | None:
    """A path as stored in the manifest (or a history event), made absolute (relative paths are inside ``root``)."""
    if value is None:
        return None
    path = Path(str(value))
    return path if path.is_absolute() else root / path


def sort_key(row: ManifestRow) -> tuple[float, str]:
    """Highest score first; unscored cases last; ties by case id (stable, reproducible order)."""
    return (-(row.score if row.score is not None else float("-inf")), row.case)
