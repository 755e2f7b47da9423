"""Offline import, verification and lookup of installed models.

- :func:`import_model`: copy a checkpoint obtained elsewhere into the cache, verified against its
  catalogue entry, or, when no catalogue lists it, loaded as predict loads it and recorded with its
  SHA-256 in ``installed.json``;
- :func:`verify_model`: re-hash an installed file against the catalogue (or the manifest);
- :func:`resolve_model` / :func:`resolve_default_model`: what a user typed (a path, ``NAME[@VERSION]``)
  or the default model -> a verified path. A cached copy is preferred to an embedded one; both are
  checked (size, SHA-256) before every load.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from versemi.environment import catalogue_source
from versemi.models.catalogue import (
    Catalogue,
    CatalogueEntry,
    CatalogueError,
    CatalogueUnavailableError,
    ModelError,
    load_catalogue,
    is_remote_source,
    parse_model_spec,
    validate_identifier,
    version_key,
)
from versemi.fileio import create_temp_file, make_folder, remove_stale_temp_files, short_write_error, temp_path_for
from versemi.models.download import ProgressCallback
from versemi.models.store import (
    ChecksumError,
    InstalledModel,
    file_lock,
    find_installed,
    installed_for_path,
    model_file_name,
    models_dir,
    read_manifest,
    record_installed,
    sha256_file,
)
from versemi.timestamps import utc_now

LOCAL_VERSION = "local"  # version given to imported checkpoints when none is named


class ModelNotInstalledError(ModelError):
    """A catalogue model that is not (or not correctly) installed in the cache."""


class NoDefaultModelError(ModelError):
    """The catalogue names no default model."""


def entry_file(entry: CatalogueEntry, cache_dir: str | Path | None = None) -> Path:
    """Where a catalogue entry's checkpoint is: the model cache's copy when there is one, else the
    embedded file when the entry ships one, else the (missing) cache path."""
    cached = models_dir(cache_dir) / entry.file_name
    if cached.is_file():
        return cached
    if entry.embedded_path is not None and entry.embedded_path.is_file():
        return entry.embedded_path
    return cached


def is_embedded_file(entry: CatalogueEntry, path: Path) -> bool:
    """True when ``path`` is the entry's embedded file (not a cache copy)."""
    return entry.embedded_path is not None and Path(path) == entry.embedded_path


def catalogue_or_empty(source: str | Path | None = None) -> tuple[Catalogue, str | None]:
    """Load a catalogue; when it cannot be fetched (offline) return an empty one and the reason.

    Used by commands that can work from the manifest alone (``path``, ``verify``, ``list``, ``import``).
    Invalid catalogues still raise ``CatalogueError``.
    """
    try:
        return load_catalogue(source), None
    except CatalogueUnavailableError as exc:
        return Catalogue([], source=str(source)), str(exc)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of re-hashing one installed model.

    Attributes:
        name, version: the model.
        path: its file in the cache.
        ok: True when the file exists and size and SHA-256 match.
        expected_sha256: from the catalogue entry when there is one, else from the manifest.
        actual_sha256: the file's hash now ("" when the file is missing).
        message: one line for humans.
        embedded: the file is the one shipped beside the catalogue (not in the model cache).
    """

    name: str
    version: str
    path: Path
    ok: bool
    expected_sha256: str
    actual_sha256: str
    message: str
    embedded: bool = False


def _copy_hashing(source: Path, dest_dir: Path, progress_callback: ProgressCallback | None) -> tuple[Path, str]:
    """Copy ``source`` to a temp file in ``dest_dir`` hashing the bytes written; returns (temp, sha256).

    The temporary name is :mod:`versemi.fileio`'s (so a killed import's copy is recognised and
    removed by the next run), chosen before the file exists so an interruption never orphans it.
    """
    digest = hashlib.sha256()
    total = source.stat().st_size
    done = 0
    tmp = temp_path_for(dest_dir / source.name)
    try:
        create_temp_file(tmp, dest_dir / source.name)
        with source.open("rb") as src, open(tmp, "wb") as out:
            while chunk := src.read(1024 * 1024):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress_callback is not None:
                    progress_callback(done, total)
            out.flush()
            if os.fstat(out.fileno()).st_size != done:
                raise short_write_error(dest_dir / source.name, os.fstat(out.fileno()).st_size, done)
            os.fsync(out.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), digest.hexdigest()


def _entry_for_import(
    file_sha256: str, name: str | None, version: str | None, catalogue: Catalogue
) -> CatalogueEntry | None:
    """The catalogue entry an imported file claims to be (by name) or is (by hash), if any."""
    if name is not None:
        if version is None:
            # Any listed version with this exact content; else the newest, which it must then match.
            for entry in catalogue.versions(name):
                if entry.sha256 == file_sha256:
                    return entry
        return catalogue.find(name, version)
    matches = [e for e in catalogue if e.sha256 == file_sha256]
    return max(matches, key=lambda e: version_key(e.version)) if matches else None


def import_model(
    file: str | Path,
    name: str | None = None,
    version: str | None = None,
    catalogue: Catalogue | None = None,
    cache_dir: str | Path | None = None,
    progress_callback: ProgressCallback | None = None,
) -> InstalledModel:
    """Install a checkpoint file obtained elsewhere into the model cache (offline sites).

    - ``name`` (and ``version``) given and listed in the catalogue, or no name and the file's hash
      equals a catalogue entry's: the file must match that entry's size and SHA-256.
    - otherwise a local model: the file must load with ``Checkpoint.load`` (as predict loads it); it is
      installed as ``name`` (default: the file name without extension) and ``version`` (default
      ``"local"``) and its SHA-256 is recorded in ``installed.json``.

    The bytes are hashed while being copied into the cache and renamed into place only when they
    match, so a bad copy never lands in the cache.

    Args:
        file: the checkpoint to import.
        name: model name; for a catalogue model its catalogue name.
        version: model version; None = the newest catalogue version of ``name``, or ``"local"``.
        catalogue: the catalogue to check against; None = the default catalogue (an unreachable one
            is treated as empty).
        cache_dir: the model cache; None = the default.
        progress_callback: ``(bytes copied, total)`` while copying.

    Returns:
        The manifest record of the installed model.

    Raises:
        ModelError: missing file, bad name or version.
        ChecksumError: the file does not match its catalogue entry (nothing is installed).
        versemi.checkpoint.CheckpointError: a local file that is not a usable VerSemi checkpoint.
    """
    source = Path(file).expanduser()
    if not source.is_file():
        raise ModelError(f"{source}: file not found")
    if name is not None:
        validate_identifier(name, "name")
    if version is not None:
        validate_identifier(version, "version")
    if catalogue is None:
        catalogue, _ = catalogue_or_empty()
    cache = models_dir(cache_dir)
    created: list[Path] = []
    try:
        make_folder(cache, created)
        remove_stale_temp_files(cache)
        tmp, actual = _copy_hashing(source, cache, progress_callback)
    except BaseException:
        _remove_empty(created)  # a refused import leaves no empty cache folder behind
        raise
    try:
        entry = _entry_for_import(actual, name, version, catalogue)
        if entry is not None:
            size = tmp.stat().st_size
            if size != entry.size or actual != entry.sha256:
                raise ChecksumError(
                    f"{source}: does not match catalogue entry {entry.spec}: expected SHA-256 "
                    f"{entry.sha256} ({entry.size} bytes), got {actual} ({size} bytes); nothing imported"
                )
            record = InstalledModel.from_catalogue(entry, str(source.resolve()))
        else:
            record = _local_record(source, tmp, actual, name, version)
        with file_lock(cache / f".{record.file}.lock"):
            os.replace(tmp, cache / record.file)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_empty(created)
        raise
    record_installed(record, cache)
    return record


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this import created (deepest first) where they are still empty."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty (another process installed something meanwhile), or gone


def _local_record(
    source: Path, copied: Path, sha256: str, name: str | None, version: str | None
) -> InstalledModel:
    """Check a non-catalogue checkpoint loads for inference and describe it for the manifest."""
    import warnings

    from versemi.checkpoint import Checkpoint, CheckpointError, CheckpointIntegrityWarning

    try:
        with warnings.catch_warnings():
            # Installing records the file's SHA-256, which then verifies every load by name.
            warnings.simplefilter("ignore", CheckpointIntegrityWarning)
            checkpoint = Checkpoint.load(copied)
    except CheckpointError as exc:
        # The message should name the user's file, not our temporary copy.
        raise CheckpointError(str(exc).replace(str(copied), str(source))) from None
    if name is None:
        stem = source.name.split(".")[0]
        name = "".join(c if c.isalnum() or c in "._+-" else "_" for c in stem).lstrip("._+-") or "model"
    version = version or LOCAL_VERSION
    return InstalledModel(
        name=name,
        version=version,
        file=model_file_name(name, version),
        sha256=sha256,
        size=copied.stat().st_size,
        source="local",
        origin=str(source.resolve()),
        installed_at=utc_now(),
        label_space=list(checkpoint.label_space.names),
    )


def _expected(
    name: str, version: str, catalogue: Catalogue, cache: Path
) -> tuple[str, int, Path, bool] | None:
    """(sha256, size, file, embedded) a model must have: from the catalogue entry, else the manifest."""
    entry = catalogue.find(name, version)
    if entry is not None:
        path = entry_file(entry, cache)
        return entry.sha256, entry.size, path, is_embedded_file(entry, path)
    record = find_installed(name, version, cache)
    if record is not None:
        return record.sha256, record.size, cache / record.file, False
    return None


def installed_versions(name: str, catalogue: Catalogue, cache_dir: str | Path | None = None) -> list[str]:
    """Versions of ``name`` present in the cache (manifest records or catalogue files) or embedded,
    newest first."""
    cache = models_dir(cache_dir)
    versions = {m.version for m in read_manifest(cache) if m.name == name and (cache / m.file).is_file()}
    versions |= {e.version for e in catalogue.versions(name) if entry_file(e, cache).is_file()}
    return sorted(versions, key=version_key, reverse=True)


def verify_model(
    spec: str,
    catalogue: Catalogue | None = None,
    cache_dir: str | Path | None = None,
    progress_callback: ProgressCallback | None = None,
) -> VerifyResult:
    """Re-hash an installed model against its catalogue entry (or its manifest record).

    Args:
        spec: ``NAME[@VERSION]``; without a version, the newest installed version.
        catalogue: None = the default catalogue (an unreachable one is treated as empty).
        cache_dir: the model cache; None = the default.
        progress_callback: ``(bytes hashed, total)``.

    Raises:
        ModelNotInstalledError: no such model in the cache.
    """
    if catalogue is None:
        catalogue, _ = catalogue_or_empty()
    cache = models_dir(cache_dir)
    name, version = parse_model_spec(spec)
    if version is None:
        versions = installed_versions(name, catalogue, cache)
        if not versions:
            raise ModelNotInstalledError(_not_installed_message(spec, catalogue, cache))
        version = versions[0]
    expected = _expected(name, version, catalogue, cache)
    if expected is None:
        raise ModelNotInstalledError(_not_installed_message(spec, catalogue, cache))
    sha256, size, path, embedded = expected
    if not path.is_file():
        hint = (f"; run `versemi models download {name}@{version}` (or `versemi models import FILE --name {name}` "
                "offline)" if catalogue.find(name, version) is not None else "; import it again")
        return VerifyResult(name, version, path, False, sha256, "", f"{name}@{version}: {path} is missing{hint}")
    actual = sha256_file(path, progress_callback)
    actual_size = path.stat().st_size
    ok = actual == sha256 and actual_size == size
    where = f"{path} (shipped with versemi)" if embedded else str(path)
    remedy = (f"reinstall versemi, or run `versemi models download {name}@{version}` for a verified copy in the "
              "model cache" if embedded else "download or import it again")
    message = (
        f"{name}@{version}: OK ({where})"
        if ok
        else f"{name}@{version}: {where} is damaged: expected SHA-256 {sha256} ({size} bytes), "
        f"got {actual} ({actual_size} bytes); {remedy}"
    )
    return VerifyResult(name, version, path, ok, sha256, actual, message, embedded)


def verify_all(
    catalogue: Catalogue | None = None, cache_dir: str | Path | None = None
) -> list[VerifyResult]:
    """Verify every model in the cache (manifest records and catalogue files present on disk)."""
    if catalogue is None:
        catalogue, _ = catalogue_or_empty()
    cache = models_dir(cache_dir)
    specs = {m.spec for m in read_manifest(cache)}
    specs |= {e.spec for e in catalogue if entry_file(e, cache).is_file()}
    ordered = sorted(specs, key=lambda s: (s.split("@")[0], version_key(s.split("@")[1])))
    return [verify_model(s, catalogue, cache) for s in ordered]


def _not_installed_message(spec: str, catalogue: Catalogue, cache: Path) -> str:
    name, _ = parse_model_spec(spec)
    if catalogue.versions(name):
        hint = f"run `versemi models download {spec}` (or `versemi models import FILE --name {name}` offline)"
    else:
        hint = "it is not in the catalogue either; import a checkpoint with `versemi models import FILE`"
    return f"model {spec!r} is not installed in {cache}; {hint}"


def _looks_like_path(value: str) -> bool:
    return os.sep in value or (os.altsep or "/") in value or value.endswith((".pt", ".pth", ".ckpt"))


def resolve_model(
    name_or_path: str | Path,
    catalogue: Catalogue | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The checkpoint file to load for what the user named.

    Args:
        name_or_path: an existing file path (returned as is), or ``NAME[@VERSION]`` of an installed
            model (without a version: the newest installed one).
        catalogue: None = the default catalogue (an unreachable one is treated as empty).
        cache_dir: the model cache; None = the default.

    Returns:
        The path of a file that exists and, for a cached model, whose SHA-256 was just checked.

    Raises:
        ModelError: a path that does not exist.
        ModelNotInstalledError: the model is not installed, or its file fails verification.
    """
    value = str(name_or_path)
    candidate = Path(value).expanduser()
    if isinstance(name_or_path, Path) or candidate.is_file() or _looks_like_path(value):
        if not candidate.is_file():
            raise ModelError(f"{candidate}: model file not found")
        return candidate
    result = verify_model(value, catalogue, cache_dir)
    if not result.ok:
        raise ModelNotInstalledError(result.message)
    return result.path


def resolve_default_model(
    catalogue: Catalogue | None = None, cache_dir: str | Path | None = None
) -> tuple[CatalogueEntry, Path]:
    """The catalogue's default model and its verified file (what ``versemi predict`` uses without ``--model``).

    Args:
        catalogue: None = the default catalogue (an unreachable one is treated as empty).
        cache_dir: the model cache; None = the default.

    Raises:
        NoDefaultModelError: the catalogue names no default model.
        ModelNotInstalledError: the default model is neither embedded nor installed, or its file
            fails verification (size or SHA-256).
    """
    if catalogue is None:
        catalogue, _ = catalogue_or_empty()
    entry = catalogue.default_entry()
    if entry is None:
        raise NoDefaultModelError(
            f"the model catalogue ({catalogue.source}) names no default model; pass --model FILE or "
            "--model NAME[@VERSION] (see `versemi models list`)"
        )
    result = verify_model(entry.spec, catalogue, cache_dir)
    if not result.ok:
        raise ModelNotInstalledError(f"default model {result.message}")
    return entry, result.path


def lookup_catalogue() -> Catalogue:
    """The default catalogue when reading it needs no network (packaged, or a local file), else an
    empty one; an invalid catalogue also gives an empty one (never an error): for identifying a
    model file, not for choosing one."""
    source = catalogue_source()
    if is_remote_source(source):
        return Catalogue([], source=str(source))
    try:
        return load_catalogue(source)
    except CatalogueError:
        return Catalogue([], source=str(source))


def model_record_for_path(
    path: str | Path, catalogue: Catalogue | None = None, cache_dir: str | Path | None = None
) -> InstalledModel | None:
    """What is known about a model file: its model-cache record, or the record of the catalogue entry
    it is the embedded file of (``source="embedded"``); None for any other file.

    Args:
        path: the checkpoint file.
        catalogue: where to look for embedded entries; None = :func:`lookup_catalogue` (no network).
        cache_dir: the model cache; None = the default.
    """
    record = installed_for_path(path, cache_dir)
    if record is not None:
        return record
    try:
        target = Path(path).resolve()
    except OSError:
        return None
    for entry in catalogue if catalogue is not None else lookup_catalogue():
        if entry.embedded_path is not None and entry.embedded_path.resolve() == target:
            return InstalledModel(
                name=entry.name, version=entry.version, file=entry.embedded_path.name, sha256=entry.sha256,
                size=entry.size, source="embedded", origin=str(entry.embedded_path),
                label_space=list(entry.label_space),
            )
    return None
