"""Verified, resumable model downloads.

:func:`download_model` streams an entry's URL to ``<cache>/<name>-<version>.pt.part``, continues an
interrupted transfer with an HTTP ``Range`` request, checks size and SHA-256 and only then renames the
file into place; a file that fails is deleted, so nothing unverified is ever loaded. Not
``torch.hub`` or ``pooch``: neither resumes (a large model over a proxy that drops connections may
never arrive), caps the size at the catalogue's or checks the free disk space first.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable

from versemi import __version__
from versemi.fileio import sha256_digest
from versemi.models.catalogue import CatalogueEntry, ModelError
from versemi.models.store import (
    ChecksumError,
    InstalledModel,
    file_lock,
    find_installed,
    models_dir,
    record_installed,
    sha256_file,
)

ProgressCallback = Callable[[int, int], None]
"""Called with ``(bytes done, bytes total)`` while downloading or hashing."""

_CHUNK = 256 * 1024
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


class DownloadError(ModelError):
    """A transfer that failed (network, HTTP status, interrupted); the message names the URL."""


class IncompatibleModelError(ModelError):
    """A model that needs a newer versemi than this one."""


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"versemi/{__version__}", "Accept-Encoding": "identity"}
    if start > 0:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - http(s)/file only
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start > 0:
            raise _RangeNotSatisfiable() from exc
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect: {reason}") from exc


class _RangeNotSatisfiable(Exception):
    """The server refused our Range (the partial file does not fit the remote file): start over."""


def _resume_offset(response: http.client.HTTPResponse, requested: int, entry: CatalogueEntry) -> int:
    """Where the response body starts in the file: ``requested`` (206) or 0 (server ignored Range)."""
    status = getattr(response, "status", None)  # file:// responses have no status: whole file
    if requested == 0 or status != 206:
        length = response.headers.get("Content-Length")
        if status == 200 and length is not None and length.isdigit() and int(length) != entry.size:
            raise ChecksumError(
                f"{entry.url}: server file has {int(length)} bytes but the catalogue says {entry.size} "
                f"for {entry.spec}; the catalogue or the server is out of date"
            )
        return 0
    match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != requested:
        return -1  # a range we did not ask for: do not trust it
    if match.group(3) != "*" and int(match.group(3)) != entry.size:
        raise ChecksumError(
            f"{entry.url}: server file has {match.group(3)} bytes but the catalogue says {entry.size} "
            f"for {entry.spec}; the catalogue or the server is out of date"
        )
    return requested


def _stream(
    response: IO[bytes],
    out: IO[bytes],
    digest: "hashlib._Hash",
    done: int,
    entry: CatalogueEntry,
    progress_callback: ProgressCallback | None,
) -> int:
    """Copy the body to ``out`` while hashing; returns the bytes now in the part file."""
    try:
        while chunk := response.read(_CHUNK):
            if done + len(chunk) > entry.size:
                raise ChecksumError(
                    f"{entry.url}: server sent more than the {entry.size} bytes the catalogue lists for "
                    f"{entry.spec}; download discarded"
                )
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if progress_callback is not None:
                progress_callback(done, entry.size)
    except (http.client.HTTPException, OSError) as exc:
        # Keep what arrived: the next attempt resumes from it.
        out.flush()
        raise DownloadError(
            f"{entry.url}: transfer interrupted after {done} of {entry.size} bytes ({exc}); "
            "run the download again to resume"
        ) from exc
    return done


def _check_disk_space(folder: Path, needed: int, entry: CatalogueEntry) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(
            f"{folder}: not enough free disk space for {entry.spec}: needs {needed} more bytes, {free} free"
        )


def download_model(
    entry: CatalogueEntry,
    cache_dir: str | Path | None = None,
    progress_callback: ProgressCallback | None = None,
    *,
    timeout: float = 60.0,
    force: bool = False,
) -> Path:
    """Download ``entry`` into the model cache, verified, and return the installed file's path.

    An already installed file whose hash matches is returned without downloading (unless ``force``).
    An interrupted transfer leaves ``<name>-<version>.pt.part``; the next call resumes it with a
    ``Range`` request (a server that ignores ``Range`` makes it start over).

    Args:
        entry: the catalogue entry (URL, expected size and SHA-256).
        cache_dir: the model cache; None = ``$VERSEMI_MODELS_DIR`` or the platform user cache.
        progress_callback: called with ``(bytes done, total bytes)`` as data arrives; ``done`` starts
            at the resumed offset.
        timeout: seconds to wait on the connection before giving up (the part file is kept).
        force: download again even when a verified file is installed.

    Raises:
        IncompatibleModelError: the entry needs a newer versemi.
        DownloadError: network or HTTP error, interrupted transfer (the part file is kept).
        ChecksumError: wrong size or SHA-256 (the part file is deleted; nothing is installed).
    """
    if not entry.is_supported():
        raise IncompatibleModelError(
            f"model {entry.spec} needs versemi >= {entry.min_versemi} (this is {__version__}); "
            "upgrade versemi to use it"
        )
    cache = models_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / entry.file_name
    part = cache / f"{entry.file_name}.part"

    with file_lock(cache / f".{entry.file_name}.lock"):
        if target.is_file() and not force:
            if target.stat().st_size == entry.size and sha256_file(target) == entry.sha256:
                recorded = find_installed(entry.name, entry.version, cache)
                if recorded is None or recorded.sha256 != entry.sha256:
                    _record(entry, cache)  # e.g. a file copied in by hand
                return target
            # A damaged installed file is replaced (atomically, at the end) by a fresh download.

        for _attempt in range(3):  # resume; on a bad/ignored range start over once or twice
            have = part.stat().st_size if part.is_file() else 0
            if have > entry.size:
                part.unlink()
                have = 0
            if have == entry.size:
                break  # complete from an earlier run; only the check below is left
            _check_disk_space(cache, entry.size - have, entry)
            try:
                response = _open(entry.url, have, timeout)
            except _RangeNotSatisfiable:
                part.unlink(missing_ok=True)
                continue
            with response:
                try:
                    start = _resume_offset(response, have, entry)
                except ChecksumError:
                    part.unlink(missing_ok=True)
                    raise
                if start < 0:
                    part.unlink(missing_ok=True)
                    continue
                # Hash the bytes we keep, then append: one pass over the data in total.
                digest = sha256_digest(part, start) if start else hashlib.sha256()
                with part.open("r+b" if start else "wb") as out:
                    out.seek(start)
                    out.truncate()
                    try:
                        done = _stream(response, out, digest, start, entry, progress_callback)
                    except ChecksumError:
                        out.close()
                        part.unlink(missing_ok=True)
                        raise
                    out.flush()
                    os.fsync(out.fileno())
            if done < entry.size:
                raise DownloadError(
                    f"{entry.url}: transfer interrupted after {done} of {entry.size} bytes; "
                    "run the download again to resume"
                )
            _verify_part(part, entry, digest.hexdigest())
            os.replace(part, target)
            _record(entry, cache)
            return target
        else:
            raise DownloadError(f"{entry.url}: the server keeps answering with unusable byte ranges")

        # A complete part file left by an earlier run: hash it from disk.
        _verify_part(part, entry, sha256_file(part))
        os.replace(part, target)
        _record(entry, cache)
        return target


def _verify_part(part: Path, entry: CatalogueEntry, actual_sha256: str) -> None:
    """Raise ``ChecksumError`` (and delete the part file) unless size and hash match the entry."""
    size = part.stat().st_size
    if size != entry.size:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{entry.spec}: downloaded file has {size} bytes, expected {entry.size}; deleted {part}"
        )
    if actual_sha256 != entry.sha256:
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{entry.spec}: SHA-256 mismatch for {entry.url}: expected {entry.sha256}, got "
            f"{actual_sha256}; the file was deleted and nothing was installed"
        )


def _record(entry: CatalogueEntry, cache: Path) -> None:
    record_installed(InstalledModel.from_catalogue(entry, entry.url), cache)
