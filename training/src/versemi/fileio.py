"""Crash-safe file writes, leftovers of killed writers, and file hashing: one place for all of them.

Every write goes to a hidden temporary file beside the target
(``.<name>.versemi-<pid>-<host>-<random>.tmp``), is size-checked, ``fsync``-ed and renamed over the
target, then the folder is ``fsync``-ed: a crash leaves the old file or the new one, never a torn one.
Temporary names are registered before they are created, so any exception (Ctrl-C, SIGTERM included)
removes them; those of a process killed outright are removed by :func:`remove_stale_temp_files` once
that process is gone from this machine, and nothing else is ever deleted. Errors name the target, not
the temporary file. The rules: docs/REFUSALS.md.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Any, BinaryIO, Callable

# Hashing reads this much at a time: large enough to be fast, small enough for any memory.
HASH_CHUNK_BYTES = 1024 * 1024
# ".<target name>.versemi-<pid>-<host token>-<random>.tmp[<ext>]".
_TEMP_RE = re.compile(
    r"^\.(?P<target>.+)\.versemi-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{8}\.tmp(?P<ext>(\.[A-Za-z0-9]+){0,2})$"
)


def _machine_token() -> str:
    """Six hex digits naming this host, boot and PID namespace: a process id means something only there."""
    parts = [socket.gethostname()]
    for source in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):
            parts.append(os.readlink(source) if source.endswith("/pid") else Path(source).read_text().strip())
    return hashlib.sha256("\0".join(parts).encode("utf-8", "replace")).hexdigest()[:6]


MACHINE_TOKEN = _machine_token()


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


def describe_error(exc: BaseException) -> str:
    """One line for an error: ``<file>: <reason>`` for an ``OSError`` that names its file."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def temp_path_for(target: str | Path, suffix: str = "") -> Path:
    """A new temporary name beside ``target`` that names this process (the file is not created).

    Args:
        target: the file it will become.
        suffix: appended after ``.tmp`` (e.g. ``".nii.gz"``: SimpleITK picks a writer by extension).

    Returns:
        ``<folder>/.<name>.versemi-<pid>-<host>-<random>.tmp<suffix>``.
    """
    target = Path(target)
    return target.parent / f".{target.name}.versemi-{os.getpid()}-{MACHINE_TOKEN}-{secrets.token_hex(4)}.tmp{suffix}"


def create_temp_file(path: Path, target: str | Path) -> None:
    """Create the empty file ``path`` (a name from :func:`temp_path_for`), mode ``0o666`` less the umask.

    Raises:
        OSError: it cannot be created; the error names ``target``.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise retarget_error(exc, target) from None
    os.close(fd)


def make_temp_file(target: str | Path, suffix: str = "") -> Path:
    """Create an empty hidden temporary file beside ``target`` that names this process.

    Callers that must never leave it behind register the name first (:meth:`AtomicGroup.temp_for`).

    Args:
        target: the file it will become; its folder must exist.
        suffix: appended after ``.tmp``.

    Returns:
        The temporary file (see :func:`temp_path_for`).

    Raises:
        OSError: the folder cannot be written; the error names ``target``.
    """
    tmp = temp_path_for(target, suffix)
    create_temp_file(tmp, target)
    return tmp


def make_folder(folder: str | Path, created: list[Path] | None = None) -> list[Path]:
    """Create ``folder`` and its missing parents.

    Args:
        folder: the folder.
        created: each folder is appended here *before* it is created, so that an interruption at any
            point leaves a complete list for the caller's cleanup.

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
    record = created if created is not None else []
    made: list[Path] = []
    for path in reversed(missing):  # outermost first
        record.append(path)
        try:
            path.mkdir()
        except FileExistsError:
            record.remove(path)  # made by someone else meanwhile: not ours to remove
            if not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(path)) from None
            continue
        except OSError as exc:
            record.remove(path)
            raise retarget_error(exc, folder) from None
        made.append(path)
    return list(reversed(made))


def _fsync_file(path: Path) -> None:
    with open(path, "r+b") as f:  # write access: Windows cannot flush a read-only handle
        os.fsync(f.fileno())


def short_write_error(target: str | Path, written: int, expected: int) -> OSError:
    """The error of a file that holds fewer bytes than were written to it (disk full, size limit)."""
    return OSError(errno.EIO, f"short write: the file holds {written} of {expected} bytes "
                              "(disk full or file-size limit?); the previous file is unchanged", str(target))


def _fill(tmp: Path, target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Run ``write`` on ``tmp`` and check that every byte it wrote is in the file."""
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            expected, size = f.tell(), os.fstat(f.fileno()).st_size
    except OSError as exc:
        if _names(exc, tmp):
            raise retarget_error(exc, target) from None
        raise
    if size != expected:
        raise short_write_error(target, size, expected)


def atomic_write(
    path: str | Path,
    write: Callable[[BinaryIO], None],
    before_replace: Callable[[], None] | None = None,
) -> Path:
    """Write ``path`` atomically: ``write`` fills a temporary file beside it, which then replaces it.

    Args:
        path: the file to create or replace; its folder is created if missing (and removed again
            on failure).
        write: called once with the temporary file, opened for binary writing; it must not close it.
        before_replace: called after the temporary file is on disk and before the rename (tests use
            it to stop a process at exactly that point).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: the file cannot be written, or fewer bytes reached it than were written (the error
            names ``path``, not the temporary file).
    """
    path = Path(path)
    with AtomicGroup(before_replace) as group:
        _fill(group.temp_for(path), path, write)
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
    Every temporary file and folder is registered before it is created, so an interruption between
    the two leaves nothing behind. Subclasses add writers for other kinds of files through
    :meth:`temp_for`.
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
        make_folder(folder, self._created_dirs)
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
            probe = self.temp_for(target)
            probe.unlink()
            self._pending.remove((probe, target))

    def temp_for(self, target: str | Path, suffix: str = "") -> Path:
        """A new temporary file (registered for commit/discard) that will become ``target``."""
        target = Path(target)
        self.make_folder(target.parent)
        tmp = temp_path_for(target, suffix)
        self._pending.append((tmp, target))  # before it exists: discard() always finds it
        create_temp_file(tmp, target)
        return tmp

    def write_bytes(self, data: bytes, target: str | Path) -> Path:
        """Write ``data`` to a temporary file for ``target``; returns ``target``."""
        target = Path(target)
        _fill(self.temp_for(target), target, lambda f: f.write(data))
        return target

    def write_text(self, text: str, target: str | Path) -> Path:
        """Write UTF-8 ``text`` to a temporary file for ``target``; returns ``target``."""
        return self.write_bytes(text.encode("utf-8"), target)

    def write_json(self, obj: Any, target: str | Path) -> Path:
        """Write ``obj`` as indented JSON to a temporary file for ``target``; returns ``target``."""
        return self.write_text(json.dumps(obj, indent=2) + "\n", target)

    def commit(self) -> list[Path]:
        """``fsync`` every temporary file, then rename each to its target; returns the targets."""
        for tmp, target in self._pending:
            try:
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
    """Whether a process with this id runs (a zombie does not; when unsure: yes, so that nothing in
    use is deleted)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        import psutil

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:
            return True
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


def is_stale_temp_file(path: str | Path) -> bool:
    """Whether ``path`` is a temporary file of :mod:`versemi.fileio` whose writer is gone: its name
    has this machine's token and a process id that no longer runs here."""
    match = _TEMP_RE.match(Path(path).name)
    return match is not None and match["host"] == MACHINE_TOKEN and not _process_alive(int(match["pid"]))


def is_temp_file_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name of this module."""
    return _TEMP_RE.match(name) is not None


def temp_file_target(name: str) -> str | None:
    """The name of the file a temporary file of this module was to become; None for any other name.

    Example: ``".case.r2.nii.gz.versemi-4711-3fa2c1-ab12cd34.tmp.nii.gz"`` -> ``"case.r2.nii.gz"``.
    """
    match = _TEMP_RE.match(name)
    return match["target"] if match is not None else None


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder`` (not recursive).

    Only names this module makes are considered, and only when their writer process is gone, so a
    write in progress in another process is never disturbed and no file of the user's is touched.
    Call it at the start of a run on the folders the run writes to.

    Returns:
        The files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        if is_stale_temp_file(path):
            try:
                if path.is_file() and not path.is_symlink():
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
    "MACHINE_TOKEN",
    "AtomicGroup",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "create_temp_file",
    "describe_error",
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
    "short_write_error",
    "temp_file_target",
    "temp_path_for",
]
