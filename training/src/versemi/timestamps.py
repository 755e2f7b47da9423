"""The one way VerSemi stamps a record with the time: UTC, ISO 8601, whole seconds.

Every file the package writes that records *when* (the review manifest's ``updated_at`` and history,
the model cache's ``installed_at``, the preprocessing cache's ``created``) uses :func:`utc_now`, so
all of them read alike (``2026-11-25T22:00:00+00:00``) and parse with
``datetime.fromisoformat``. Run logs that need arithmetic on times store ``time.time()`` instead.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """The current UTC time as ISO 8601 with seconds, e.g. ``2026-11-25T22:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["utc_now"]
