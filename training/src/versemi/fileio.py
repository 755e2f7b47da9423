"""Crash-safe file writes, leftovers of killed writers, and file hashing: one place for all of them.

Every write goes to a hidden temporary file in the target's folder (``.<name>.<pid>-<random>.tmp``,
plus the target's image extension where a writer picks its format by it), which is flushed and
``fsync``-ed, then renamed over the target with ``os.replace`` (atomic on POSIX and Windows), then
the folder itself is ``fsync``-ed so the rename survives a power cut. A crash at any point leaves
either the old file or the new one, never a truncated one; on any exception (including
``KeyboardInterrupt``, and SIGTERM, which the command line turns into one) the temporary file is
removed and the target is untouched.

A process killed with SIGKILL (or by the kernel's OOM killer) cannot remove its temporary file.
Its name carries the writer's process id, so :func:`remove_stale_temp_files` - called by every
command at the start of a run, on the folders it writes to - knows it is abandoned once that
process is gone, and deletes it. Errors name the target, never the hidden temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

# Hashing reads this much at a time: large enough to be fast, small enough for any memory.
HASH_CHUNK_BYTES = 1024 * 1024
# Temporary names without a process id (written by versemi before 0.2) count as abandoned after this.
LEGACY_TEMP_MAX_AGE_S = 3600.0
# ".<target name>.<pid>-<random>.tmp[<ext>]"; the random part is tempfile's (8 of [a-z0-9_]).
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)-[a-z0-9_]{8}\.tmp(?P<ext>(\.[A-Za-z0-9]+){0,2})$")
# The names atomic_write used before the process id was added: ".<target name>.<random>.tmp"; and
# ".tmp-<random>~<target name>" / ".tmp-<random>", which the preprocessing cache and the review's
# label writer used before they wrote through this module.
_LEGACY_TEMP_RE = re.compile(
    r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(?P<ext>(\.[A-Za-z0-9]+){0,2})$|^\.tmp-[^~]*(~(?P<old_target>.+))?$"
)


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


def retarget_error(exc: OSError, target: str | Path) -> OSError:
    """The same error, naming ``target`` instead of the hidden temporary file it happened on.

    Args:
        exc: an error raised while writing a temporary file for ``target``.
        target: the file the user asked for.

    Returns:
        An error of the same type (``PermissionError``, ...) whose ``filename`` is ``target``.
    """
    if exc.errno is not None and exc.strerror:
        return type(exc)(exc.errno, exc.strerror, str(target))
    return OSError(f"{target}: {exc}")


def make_temp_file(target: str | Path, suffix: str = "") -> Path:
    """Create an empty hidden temporary file beside ``target`` that names this process.

    Args:
        target: the file it will become; its folder must exist.
        suffix: appended after ``.tmp`` (e.g. ``".nii.gz"``: SimpleITK picks a writer by extension).

    Returns:
        ``<folder>/.<name>.<pid>-<random>.tmp<suffix>``.

    Raises:
        OSError: the folder cannot be written; the error names ``target``.
    """
    target = Path(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=f".tmp{suffix}", dir=target.parent)
    except OSError as exc:
        raise retarget_error(exc, target) from None
    os.close(fd)
    return Path(tmp)


def make_folder(folder: str | Path) -> list[Path]:
    """Create ``folder`` and its missing parents.

    Returns:
        The folders created, deepest first (empty when it existed).

    Raises:
        OSError: it cannot be created; a file in the way is named as ``is a file, not a folder``.
    """
    folder = Path(folder)
    if folder.is_dir():
        return []
    blocking = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(blocking))
    missing = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise retarget_error(exc, folder) from None
    return missing


def _fsync_file(path: Path) -> None:
    with open(path, "r+b") as f:  # write access: Windows cannot flush a read-only handle
        os.fsync(f.fileno())


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

    Raises:
        OSError: the file cannot be written (the error names ``path``, not the temporary file).
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = make_temp_file(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and _names(exc, tmp):
            raise retarget_error(exc, path) from None
        raise
    fsync_directory(path.parent)
    return path


def _names(exc: OSError, tmp: Path) -> bool:
    return str(tmp) in (str(exc.filename), str(exc.filename2)) or exc.filename is None


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


class AtomicGroup:
    """Writes several files under temporary names and publishes them together (all or nothing).

    Usage::

        with AtomicGroup() as group:
            group.write_text("a,b\\n", out / "metrics.csv")
            group.write_text("...", out / "summary.md")
        # all renamed here; on an exception every temporary file, and every folder the group
        # created, is removed

    Files are ``fsync``-ed and renamed in the order they were added, so a writer that adds a
    completion marker last (e.g. a sidecar) has a reader that sees the marker see every file.
    Subclasses add writers for other kinds of files through :meth:`temp_for`.
    """

    def __init__(self, before_replace: Callable[[], None] | None = None) -> None:
        """
        Args:
            before_replace: called in :meth:`commit` once every temporary file is on disk, before the
                first rename (as :func:`atomic_write`'s; tests stop a process there).
        """
        self._pending: list[tuple[Path, Path]] = []
        self._created_dirs: list[Path] = []
        self._before_replace = before_replace

    def make_folder(self, folder: str | Path) -> Path:
        """Create ``folder`` (and its parents) if missing, remembering them for :meth:`discard`.

        Raises:
            OSError: it cannot be created (or is a file); the error names the folder.
        """
        folder = Path(folder)
        self._created_dirs.extend(p for p in make_folder(folder) if p not in self._created_dirs)
        return folder

    def check_writable(self, targets: list[Path]) -> None:
        """Fail now, before any work, if a target cannot be written: its folder cannot be created or
        written, or the target is a folder. Creates the folders (removed again by :meth:`discard`).

        Raises:
            OSError: naming the first target that cannot be written.
        """
        for target in targets:
            target = Path(target)
            if target.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(target))
            self.make_folder(target.parent)
            probe = make_temp_file(target)
            probe.unlink()

    def temp_for(self, target: str | Path, suffix: str = "") -> Path:
        """A new temporary file (registered for commit/discard) that will become ``target``."""
        target = Path(target)
        self.make_folder(target.parent)
        tmp = make_temp_file(target, suffix)
        self._pending.append((tmp, target))
        return tmp

    def write_bytes(self, data: bytes, target: str | Path) -> Path:
        """Write ``data`` to a temporary file for ``target``; returns ``target``."""
        target = Path(target)
        tmp = self.temp_for(target)
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise retarget_error(exc, target) from None
        return target

    def write_text(self, text: str, target: str | Path) -> Path:
        """Write UTF-8 ``text`` to a temporary file for ``target``; returns ``target``."""
        return self.write_bytes(text.encode("utf-8"), target)

    def write_json(self, obj: Any, target: str | Path) -> Path:
        """Write ``obj`` as indented JSON to a temporary file for ``target``; returns ``target``."""
        return self.write_text(json.dumps(obj, indent=2) + "\n", target)

    def commit(self) -> list[Path]:
        """``fsync`` every temporary file, then rename each to its target; returns the targets."""
        try:
            for tmp, target in self._pending:
                _fsync_file(tmp)
        except OSError as exc:
            raise retarget_error(exc, target) from None
        if self._before_replace is not None and self._pending:
            self._before_replace()
        done = []
        for tmp, target in self._pending:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise retarget_error(exc, target) from None
            done.append(target)
        for folder in dict.fromkeys(t.parent for t in done):
            fsync_directory(folder)
        self._pending = []
        self._created_dirs = []
        return done

    def discard(self) -> None:
        """Remove every temporary file (and the folders this group created, if left empty)."""
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending = []
        for folder in sorted(self._created_dirs, key=lambda p: len(p.parts), reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._created_dirs = []

    def __enter__(self) -> "AtomicGroup":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()


def _process_alive(pid: int) -> bool:
    """Whether a process with this id exists (when unsure: yes, so that nothing in use is deleted)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        import psutil

        return bool(psutil.pid_exists(pid))
    except ImportError:
        pass
    if os.name != "posix":
        return True  # os.kill would terminate the process on Windows: never probe it that way
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but belongs to someone else
    return True


def is_stale_temp_file(path: str | Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file of :mod:`versemi.fileio` whose writer is gone.

    A name with a process id is stale when no such process exists; an older name without one when
    it is older than :data:`LEGACY_TEMP_MAX_AGE_S`.
    """
    path = Path(path)
    match = _TEMP_RE.match(path.name)
    if match is not None:
        return not _process_alive(int(match["pid"]))
    if _LEGACY_TEMP_RE.match(path.name) is not None:
        try:
            age = (now if now is not None else time.time()) - path.stat().st_mtime
        except OSError:
            return False
        return age > LEGACY_TEMP_MAX_AGE_S
    return False


def is_temp_file_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name of this module (or of an older versemi)."""
    return _TEMP_RE.match(name) is not None or _LEGACY_TEMP_RE.match(name) is not None


def temp_file_target(name: str) -> str | None:
    """The name of the file a temporary file of this module (or of an older versemi) was to become;
    None for any other name, or for an old temporary name that does not say.

    Example: ``".case.r2.nii.gz.4711-ab12cd34.tmp.nii.gz"`` -> ``"case.r2.nii.gz"``.
    """
    match = _TEMP_RE.match(name)
    if match is not None:
        return match["target"]
    match = _LEGACY_TEMP_RE.match(name)
    if match is not None:
        return match["target"] or match["old_target"]
    return None


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (not recursive).

    Only names this module makes are considered, and only when their writer process is gone, so a
    write in progress in another process is never disturbed. Call it at the start of a run on the
    folders the run writes to.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        if is_temp_file_name(path.name) and is_stale_temp_file(path, now):
            try:
                if path.is_file():
                    path.unlink()
                    removed.append(path)
            except OSError:
                pass  # another process removed it first, or we may not: leave it
    return removed


def sha256_file(path: str | Path, progress_callback: Callable[[int, int], None] | None = None) -> str:
    """Lower-case hex SHA-256 of a file, read in 1 MiB chunks.

    Args:
        path: the file.
        progress_callback: called with ``(bytes hashed, file size)`` after each chunk.
    """
    return sha256_prefix(path, None, progress_callback)


def sha256_prefix(
    path: str | Path, length: int | None, progress_callback: Callable[[int, int], None] | None = None
) -> str:
    """Lower-case hex SHA-256 of the first ``length`` bytes of a file (None: the whole file).

    Args:
        path: the file.
        length: how many bytes to hash from the start.
        progress_callback: called with ``(bytes hashed, bytes to hash)`` after each chunk.
    """
    return sha256_digest(path, length, progress_callback).hexdigest()


def sha256_digest(
    path: str | Path, length: int | None = None, progress_callback: Callable[[int, int], None] | None = None
) -> "hashlib._Hash":
    """The SHA-256 object of the first ``length`` bytes of a file (None: the whole file), to go on
    hashing more bytes (a resumed download) or to read its digest; reads 1 MiB at a time."""
    digest = hashlib.sha256()
    path = Path(path)
    total = path.stat().st_size if length is None else length
    done = 0
    with path.open("rb") as f:
        while done < total and (chunk := f.read(min(HASH_CHUNK_BYTES, total - done))):
            digest.update(chunk)
            done += len(chunk)
            if progress_callback is not None:
                progress_callback(done, total)
    return digest


__all__ = [
    "HASH_CHUNK_BYTES",
    "AtomicGroup",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_directory",
    "is_stale_temp_file",
    "is_temp_file_name",
    "make_folder",
    "make_temp_file",
    "remove_stale_temp_files",
    "retarget_error",
    "sha256_digest",
    "sha256_file",
    "sha256_prefix",
    "temp_file_target",
]
