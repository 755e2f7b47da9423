"""Folders written with a separate ``manifest.jsonl`` run log, folded into the one manifest.

:func:`migrate_run_log` moves that run log into the folder's manifest (format version 2) and removes
it; ``versemi pseudolabel`` and :class:`~versemi.review.ReviewSession` call it on the folders they open.
Kept apart so it can be dropped once no such folder is left.
"""

from __future__ import annotations

import json
from pathlib import Path

from versemi.review.manifest import ReviewManifest
from versemi.review.manifest_rows import ManifestRow

LEGACY_RUN_LOG = "manifest.jsonl"  # pseudolabel's own run log before format version 2
# Keys of a legacy run-log line that the row already holds (the others go into the row's extra).
_RUN_LOG_ROW_KEYS = ("case", "image", "pseudo_label", "model", "status", "time", "error", "uncertainty")


def migrate_run_log(manifest: ReviewManifest) -> bool:
    """Fold a ``manifest.jsonl`` left by a versemi before format version 2 into ``manifest``, then
    remove it (one manifest per folder).

    Per line of the old run log: a ``failed`` case without a row becomes a ``failed`` row (a row
    that has one keeps it: the failure only goes into its history when newer than the row); a
    ``done`` case's per-case fields (sidecar, prompts, seconds, model-space hook fields) are added
    to its row's ``extra`` where missing. Unreadable lines are skipped (those cases are redone by
    the next pseudolabel run, as before). Idempotent: a crash before the removal just repeats it.

    Returns:
        Whether there was a run log to fold in.
    """
    legacy = manifest.root / LEGACY_RUN_LOG
    if not legacy.is_file():
        return False
    records = []
    for line in legacy.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record["case"], str) and record.get("image"):
                records.append(record)
        except (ValueError, KeyError):
            continue
    with manifest.transaction() as state:
        for record in records:
            row = state.rows.get(record["case"])
            fields = {k: v for k, v in record.items() if k not in _RUN_LOG_ROW_KEYS and v is not None}
            if record.get("status") == "failed":
                error = str(record.get("error") or "failed")
                if row is None:
                    row = ManifestRow(case=record["case"], image=Path(str(record["image"])).expanduser().resolve(),
                                      pseudo_label=None, model=dict(record.get("model") or {}), status="failed",
                                      updated_by="pseudolabel", updated_at=record.get("time"))
                    state.rows[row.case] = row
                if row.error is None and (row.status == "failed" or str(record.get("time") or "") > str(row.updated_at or "")):
                    row.error = error
                    row.history.append({"action": "failed", "by": "pseudolabel", "at": record.get("time"),
                                        "error": error, "model": dict(record.get("model") or {})})
            elif row is not None:
                for key, value in fields.items():
                    row.extra.setdefault(key, value)
    legacy.unlink(missing_ok=True)
    return True


__all__ = ["LEGACY_RUN_LOG", "migrate_run_log"]
