"""Crash-safe file writes and file hashing, shared by checkpoints, manifests and the model store.

Every write goes to a hidden temporary file in the target's folder (``.<name>.<random>.tmp``), which
is flushed and ``fsync``-ed, then renamed over the target with ``os.replace`` (atomic on POSIX and
Windows), then the folder itself is ``fsync``-ed so the rename survives a power cut. A crash at any
point leaves either the old file or the new one, never a truncated one; on any exception (including
``KeyboardInterrupt``) the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

# Hashing reads this much at a time: large enough to be fast, small enough for any memory.
HASH_CHUNK_BYTES = 1024 * 1024


def fsync_directory(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened, e.g. Windows).

    Args:
        path: the folder whose entries changed.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) refuse to fsync a directory: the rename still happened
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], None],
    before_replace: Callable[[], None] | None = None,
) -> Path:
    """Write ``path`` atomically: ``write`` fills a temporary file beside it, which then replaces it.

    Args:
        path: the file to create or replace; its folder is created if missing.
        write: called once with the temporary file, opened for binary writing; it must not close it.
        before_replace: called after the temporary file is on disk and before the rename (tests use
            it to stop a process at exactly that point).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(
    path: str | Path, data: bytes, before_replace: Callable[[], None] | None = None
) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda f: f.write(data), before_replace)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; newlines are written as ``\\n`` on every platform."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, document: Any, indent: int | None = 2) -> Path:
    """Write ``document`` as UTF-8 JSON plus a final newline to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(document, indent=indent) + "\n")


def sha256_file(path: str | Path, progress_callback: Callable[[int, int], None] | None = None) -> str:
    """Lower-case hex SHA-256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        progress_callback: called with ``(bytes hashed, file size)`` after each chunk.
    """
    digest = hashlib.sha256()
    path = Path(path)
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            done += len(chunk)
            if progress_callback is not None:
                progress_callback(done, total)
    return digest.hexdigest()


__all__ = [
    "HASH_CHUNK_BYTES",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_directory",
    "sha256_file",
]
