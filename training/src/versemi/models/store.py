"""The local model cache: the folder installed models live in and ``installed.json``, which records them.

The folder is ``$VERSEMI_MODELS_DIR``, else the platform user cache (e.g. ``~/.cache/versemi/models``;
:func:`versemi.environment.default_models_dir`): outside any Slicer install, so models survive upgrades.
Each model is one file ``<name>-<version>.pt``; the manifest keeps the SHA-256 it was verified against,
so models imported offline (in no catalogue) can be verified later too.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock

from versemi.environment import default_models_dir
from versemi.fileio import atomic_write_json
from versemi.fileio import sha256_file  # noqa: F401 - re-exported: versemi.models and download import it from here
from versemi.models.catalogue import CatalogueEntry, ModelError, validate_identifier, version_key
from versemi.timestamps import utc_now

MANIFEST_NAME = "installed.json"
MANIFEST_FORMAT = "versemi-installed-models"
MANIFEST_FORMAT_VERSION = 1


def models_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else :func:`default_models_dir`."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_models_dir()


def model_file_name(name: str, version: str) -> str:
    """``<name>-<version>.pt`` after checking both are safe in a file name."""
    return f"{validate_identifier(name, 'name')}-{validate_identifier(version, 'version')}.pt"


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (created if needed) for the ``with`` body.

    Two processes (say the Slicer module and a terminal) downloading the same model would otherwise
    append to the same ``.part`` file. The OS drops the lock when a process dies, so no stale locks.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):  # the inter-process lock the review manifest uses too
        yield


@dataclass
class InstalledModel:
    """One model file in the cache as recorded in ``installed.json``.

    Attributes:
        name, version: identify the model.
        file: file name inside the cache folder.
        sha256: the hash the file was verified against when installed.
        size: file size in bytes.
        source: ``"catalogue"`` (downloaded, or imported and matched to a catalogue entry) or
            ``"local"`` (a checkpoint imported from elsewhere, checked with ``Checkpoint.load``).
        origin: URL or original path it came from.
        installed_at: UTC time stamp (ISO 8601).
        label_space: prompt names, when known.
    """

    name: str
    version: str
    file: str
    sha256: str
    size: int
    source: str
    origin: str = ""
    installed_at: str = ""
    label_space: list[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    def path(self, cache_dir: str | Path | None = None) -> Path:
        return models_dir(cache_dir) / self.file

    @classmethod
    def from_catalogue(cls, entry: CatalogueEntry, origin: str) -> "InstalledModel":
        """The record of a catalogue entry's verified file, installed now from ``origin`` (URL or path)."""
        return cls(
            name=entry.name,
            version=entry.version,
            file=entry.file_name,
            sha256=entry.sha256,
            size=entry.size,
            source="catalogue",
            origin=origin,
            installed_at=utc_now(),
            label_space=list(entry.label_space),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InstalledModel":
        return cls(
            name=str(d["name"]),
            version=str(d["version"]),
            file=str(d["file"]),
            sha256=str(d["sha256"]).lower(),
            size=int(d["size"]),
            source=str(d.get("source", "local")),
            origin=str(d.get("origin", "")),
            installed_at=str(d.get("installed_at", "")),
            label_space=[str(n) for n in d.get("label_space", [])],
        )


def _manifest_path(cache_dir: Path) -> Path:
    return cache_dir / MANIFEST_NAME


def read_manifest(cache_dir: str | Path | None = None) -> list[InstalledModel]:
    """Models recorded in ``<cache>/installed.json`` (empty when there is none).

    Raises:
        ModelError: the manifest exists but is not a valid manifest (the message names the file).
    """
    path = _manifest_path(models_dir(cache_dir))
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"'format' is not {MANIFEST_FORMAT!r}")
        models = [InstalledModel.from_dict(m) for m in document["models"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: invalid installed-models manifest ({exc}); delete it and re-import") from exc
    return models


def _write_manifest(cache_dir: Path, models: list[InstalledModel]) -> None:
    """Write the manifest atomically (temp file + rename): readers never see half a file."""
    path = _manifest_path(cache_dir)
    models = sorted(models, key=lambda m: (m.name, version_key(m.version)))
    document = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_FORMAT_VERSION,
        "models": [asdict(m) for m in models],
    }
    atomic_write_json(path, document)


def record_installed(model: InstalledModel, cache_dir: str | Path | None = None) -> None:
    """Add or replace (same name and version) a manifest record, under the manifest lock."""
    cache = models_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with file_lock(cache / f".{MANIFEST_NAME}.lock"):
        models = [m for m in read_manifest(cache) if m.spec != model.spec]
        models.append(model)
        _write_manifest(cache, models)


def remove_installed(name: str, version: str | None = None, cache_dir: str | Path | None = None) -> InstalledModel:
    """Delete an installed model's file and its manifest record (newest version when ``version`` is None).

    The manifest is rewritten first (under its lock), then the file is deleted under the model's own
    lock (a download of the same model waits): a crash in between leaves an unrecorded file, which
    ``versemi models list`` ignores and a new download replaces.

    Raises:
        ModelError: no such model in the cache (the message lists the installed ones).
    """
    cache = models_dir(cache_dir)
    with file_lock(cache / f".{MANIFEST_NAME}.lock"):
        models = read_manifest(cache)
        matches = [m for m in models if m.name == name and version in (None, m.version)]
        if not matches:
            installed = ", ".join(m.spec for m in models) or "none"
            wanted = f"{name}@{version}" if version else name
            raise ModelError(f"{wanted} is not installed in {cache} (installed: {installed})")
        target = max(matches, key=lambda m: version_key(m.version))
        _write_manifest(cache, [m for m in models if m.spec != target.spec])
    with file_lock(cache / f".{target.file}.lock"):
        (cache / target.file).unlink(missing_ok=True)
    return target


def find_installed(
    name: str, version: str | None = None, cache_dir: str | Path | None = None
) -> InstalledModel | None:
    """The manifest record of ``name@version`` (newest recorded version when None), or None."""
    matches = [m for m in read_manifest(cache_dir) if m.name == name and version in (None, m.version)]
    if not matches:
        return None
    return max(matches, key=lambda m: version_key(m.version))


def installed_for_path(path: str | Path, cache_dir: str | Path | None = None) -> InstalledModel | None:
    """The manifest record of a cached model file (e.g. for a prediction's ``model`` sidecar field)."""
    cache = models_dir(cache_dir)
    try:
        target = Path(path).resolve()
    except OSError:
        return None
    for model in read_manifest(cache):
        if (cache / model.file).resolve() == target:
            return model
    return None


class ChecksumError(ModelError):
    """A file whose size or SHA-256 is not the expected one."""
