"""A disk cache of preprocessed cases: memory-mapped ``.npy`` arrays + JSON metadata.

Each case has its own slot folder, ``<cache_dir>/<case_id>-<hash of its paths and spec>/``, holding
``image-<key>.npy``, ``label-<key>.npy`` (labeled cases), ``fg-<key>.npz`` (sampled foreground voxels
per label value) and ``meta.json``, written last. The **key** hashes the input files (path, size,
``mtime_ns``), the preprocessing spec and its version, so a changed input rebuilds only its entry.
Files are renamed into place and readers open only what a ``meta.json`` names, so a killed run leaves
the old entry or the new one, and DataLoader workers can read while another process rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from versemi.images import read_image
from versemi.data.preprocessing import PREPROCESSING_VERSION, PreprocessingSpec, preprocess_case
from versemi.fileio import atomic_write, atomic_write_bytes, is_temp_file_name, remove_stale_temp_files
from versemi.timestamps import utc_now

if TYPE_CHECKING:
    from versemi.data.config import TrainConfig
    from versemi.data.plans import Plans

CACHE_FORMAT = 1
# How many foreground voxel coordinates are kept per label value: plenty for oversampling, and
# small enough (<= 120 kB per value) to load eagerly.
MAX_FOREGROUND_LOCATIONS = 10_000


@dataclass
class CacheStats:
    """Counters of one :class:`PreprocessedCache` instance (this process only)."""

    hits: int = 0
    misses: int = 0  # entries (re)built, i.e. calls of preprocess_case


class CachedCase:
    """One preprocessed case, read from the cache.

    ``image`` and ``label`` are read-only ``np.memmap`` arrays opened lazily on first access, so
    slicing a patch reads only that patch from disk. Pickling (e.g. to ``spawn`` DataLoader workers)
    sends the file paths, not the data; each process maps the files itself.

    Attributes:
        case_id: the case identifier given to :meth:`PreprocessedCache.get`.
        record: the preprocessing record (see :func:`preprocess_case`).
        foreground_locations: label value -> ``(N, 3)`` int32 ``(z, y, x)`` voxel coordinates, a
            random sample of at most :data:`MAX_FOREGROUND_LOCATIONS` voxels of that value. Empty
            for unlabeled cases and for labels with no foreground.
        foreground_counts: label value -> total number of voxels with that value.
        image_file / label_file: the ``.npy`` files (``label_file`` None for unlabeled cases).
        dataset: optional dataset name given to :meth:`PreprocessedCache.get`.
        key: the cache key the entry was built with.
    """

    def __init__(
        self,
        case_id: str,
        record: dict[str, Any],
        image_file: Path,
        label_file: Path | None,
        foreground_locations: dict[int, np.ndarray],
        foreground_counts: dict[int, int],
        key: str,
        dataset: str | None = None,
    ) -> None:
        self.case_id = case_id
        self.record = record
        self.image_file = Path(image_file)
        self.label_file = Path(label_file) if label_file is not None else None
        self.foreground_locations = foreground_locations
        self.foreground_counts = foreground_counts
        self.key = key
        self.dataset = dataset
        self._image: np.ndarray | None = None
        self._label: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:
        """``(D, H, W)`` float32, memory-mapped read-only."""
        if self._image is None:
            self._image = np.load(self.image_file, mmap_mode="r")
        return self._image

    @property
    def label(self) -> np.ndarray | None:
        """``(D, H, W)`` uint8, memory-mapped read-only, or None for unlabeled cases."""
        if self.label_file is None:
            return None
        if self._label is None:
            self._label = np.load(self.label_file, mmap_mode="r")
        return self._label

    @property
    def labeled(self) -> bool:
        return self.label_file is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` without opening the arrays."""
        return tuple(int(n) for n in self.record["shape_zyx"])  # type: ignore[return-value]

    @property
    def background_value(self) -> float:
        """Normalised intensity of empty space: what images are padded with."""
        return float(self.record.get("background_value", 0.0))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_image"] = None  # never pickle the mapped data
        state["_label"] = None
        return state

    def __repr__(self) -> str:
        return f"CachedCase({self.case_id!r}, shape={self.shape}, labeled={self.labeled})"


def _file_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def cache_key(image_path: Path, label_path: Path | None, spec: PreprocessingSpec) -> str:
    """SHA-256 of the absolute input paths, their size and mtime, the spec and the algorithm version."""
    payload = {
        "format": CACHE_FORMAT,
        "preprocessing_version": PREPROCESSING_VERSION,
        "spec": spec.to_dict(),
        "image": _file_fingerprint(image_path),
        "label": _file_fingerprint(label_path) if label_path is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80] or "case"


def _sample_foreground(label: np.ndarray, seed: int) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """A random subset of voxel coordinates per non-zero label value (deterministic per entry)."""
    rng = np.random.default_rng(seed)
    flat = label.ravel()
    counts = np.bincount(flat, minlength=1)
    locations: dict[int, np.ndarray] = {}
    totals: dict[int, int] = {}
    for value in np.flatnonzero(counts):
        if value == 0:
            continue
        idx = np.flatnonzero(flat == value)
        if idx.size > MAX_FOREGROUND_LOCATIONS:
            idx = np.sort(rng.choice(idx, MAX_FOREGROUND_LOCATIONS, replace=False))
        locations[int(value)] = np.stack(np.unravel_index(idx, label.shape), axis=1).astype(np.int32)
        totals[int(value)] = int(counts[value])
    return locations, totals


class PreprocessedCache:
    """Preprocess cases once, then serve them as memory-mapped arrays.

    Args:
        cache_dir: folder of the cache (created if missing). Safe to share between runs and
            between concurrent processes.

    Example::

        cache = PreprocessedCache("~/.cache/versemi/run1")
        case = cache.get("spleen_002", "imagesTr/spleen_002_0000.nii.gz", "labelsTr/spleen_002.nii.gz", spec)
        patch = case.image[10:42, 0:64, 0:64]  # reads just that block
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir).expanduser().resolve()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()

    # -- public API -----------------------------------------------------------------------------

    def get(
        self,
        case_id: str,
        image_path: str | os.PathLike[str],
        label_path: str | os.PathLike[str] | None,
        spec: PreprocessingSpec,
        dataset: str | None = None,
    ) -> CachedCase:
        """The cached case, preprocessing it first if it is missing or stale.

        Args:
            case_id: identifier of the case (used in the slot name and error messages).
            image_path: the scan.
            label_path: its label map, or None for an unlabeled case (no label file is read then).
            spec: preprocessing settings.
            dataset: optional dataset name, carried on the returned :class:`CachedCase`.

        Raises:
            FileNotFoundError: an input file is missing.
            ValueError: an input cannot be read or preprocessed (the message names the file).
        """
        image_path = self._existing(image_path, "image")
        label_path = self._existing(label_path, "label") if label_path is not None else None
        key = cache_key(image_path, label_path, spec)
        slot = self.slot_dir(case_id, image_path, label_path, spec)
        cached = self._load(slot, key, case_id, dataset)
        if cached is not None:
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        self._build(slot, key, case_id, image_path, label_path, spec)
        cached = self._load(slot, key, case_id, dataset)
        if cached is None:  # another process replaced it with a different key in between
            raise RuntimeError(f"cache entry {slot} changed while it was being written; run again")
        return cached

    def get_many(
        self,
        items: Iterable[tuple[str, str | os.PathLike[str], str | os.PathLike[str] | None]],
        spec: PreprocessingSpec,
        dataset: str | None = None,
        progress: bool = False,
        workers: int = 1,
    ) -> list[CachedCase]:
        """:meth:`get` for ``(case_id, image_path, label_path)`` items (see :func:`fill_cache`)."""
        jobs = [
            CacheJob(case_id, Path(image), Path(label) if label is not None else None, spec, dataset)
            for case_id, image, label in items
        ]
        return fill_cache(self, jobs, workers=workers, progress=progress)[0]

    def is_cached(
        self,
        case_id: str,
        image_path: str | os.PathLike[str],
        label_path: str | os.PathLike[str] | None,
        spec: PreprocessingSpec,
    ) -> bool:
        """Whether :meth:`get` would be served without preprocessing."""
        image_path = self._existing(image_path, "image")
        label_path = self._existing(label_path, "label") if label_path is not None else None
        key = cache_key(image_path, label_path, spec)
        return self._load(self.slot_dir(case_id, image_path, label_path, spec), key, case_id, None) is not None

    def slot_dir(self, case_id: str, image_path: Path, label_path: Path | None, spec: PreprocessingSpec) -> Path:
        """The folder holding a case's entry for one spec (stable across input file changes)."""
        ident = (f"{Path(image_path).resolve()}\0{Path(label_path).resolve() if label_path else ''}\0"
                 f"{json.dumps(spec.to_dict(), sort_keys=True)}")
        return self.cache_dir / f"{_safe_name(case_id)}-{hashlib.sha1(ident.encode()).hexdigest()[:12]}"

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _existing(path: str | os.PathLike[str], what: str) -> Path:
        p = Path(path).expanduser().resolve()
        if not p.is_file():
            raise FileNotFoundError(f"{p}: {what} file not found")
        return p

    def _load(self, slot: Path, key: str, case_id: str, dataset: str | None) -> CachedCase | None:
        meta_file = slot / "meta.json"
        try:
            meta = json.loads(meta_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if meta.get("key") != key or meta.get("format") != CACHE_FORMAT:
            return None
        image_file = slot / meta["image_file"]
        label_file = slot / meta["label_file"] if meta.get("label_file") else None
        fg_file = slot / meta["foreground_file"] if meta.get("foreground_file") else None
        if not image_file.is_file() or (label_file is not None and not label_file.is_file()):
            return None
        locations: dict[int, np.ndarray] = {}
        if fg_file is not None:
            try:
                with np.load(fg_file) as fg:
                    locations = {int(name.split("_", 1)[1]): fg[name] for name in fg.files}
            except (OSError, ValueError):
                return None
        counts = {int(v): int(n) for v, n in meta.get("foreground_counts", {}).items()}
        return CachedCase(case_id, meta["record"], image_file, label_file, locations, counts, key, dataset)

    def _build(
        self,
        slot: Path,
        key: str,
        case_id: str,
        image_path: Path,
        label_path: Path | None,
        spec: PreprocessingSpec,
    ) -> None:
        image = read_image(image_path)
        label = read_image(label_path) if label_path is not None else None
        try:
            case = preprocess_case(image, spec, label)
        except ValueError as exc:
            raise ValueError(f"{image_path}: {exc}") from None

        slot.mkdir(parents=True, exist_ok=True)
        short = key[:16]
        meta: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "key": key,
            "case_id": case_id,
            "image_path": str(image_path),
            "label_path": str(label_path) if label_path is not None else None,
            "created": utc_now(),
            "record": case.record,
            "image_file": f"image-{short}.npy",
            "label_file": None,
            "foreground_file": None,
            "foreground_counts": {},
        }
        self._atomic_npy(slot / meta["image_file"], case.image)
        if case.label is not None:
            meta["label_file"] = f"label-{short}.npy"
            self._atomic_npy(slot / meta["label_file"], case.label)
            locations, counts = _sample_foreground(case.label, seed=int(key[:8], 16))
            meta["foreground_file"] = f"fg-{short}.npz"
            meta["foreground_counts"] = {str(v): n for v, n in counts.items()}
            atomic_write(
                slot / meta["foreground_file"],
                lambda f: np.savez(f, **{f"value_{v}": loc for v, loc in locations.items()}),
            )
        # meta.json last: a slot without it is not an entry, so readers never see half-written arrays.
        atomic_write_bytes(slot / "meta.json", json.dumps(meta, indent=1).encode())
        self._remove_stale(slot, keep=short)

    def _atomic_npy(self, path: Path, array: np.ndarray) -> None:
        atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))

    @staticmethod
    def _remove_stale(slot: Path, keep: str) -> None:
        """Delete arrays of older keys, and temporary files whose writer is gone
        (:func:`versemi.fileio.remove_stale_temp_files`); mapped files stay readable by processes
        that have them open."""
        remove_stale_temp_files(slot)
        for f in slot.iterdir():
            name = f.name
            if name == "meta.json" or keep in name or is_temp_file_name(name):
                continue  # the entry itself, or a write another process is still doing
            try:
                f.unlink(missing_ok=True)
            except OSError:
                pass  # another process cleaned it first


@dataclass(frozen=True)
class CacheJob:
    """One case to cache: what :meth:`PreprocessedCache.get` takes."""

    case_id: str
    image_path: Path
    label_path: Path | None
    spec: PreprocessingSpec
    dataset: str | None = None


def _run_job(cache_dir: str, job: CacheJob) -> tuple[CachedCase, bool]:
    cache = PreprocessedCache(cache_dir)
    case = cache.get(job.case_id, job.image_path, job.label_path, job.spec, dataset=job.dataset)
    return case, cache.stats.misses > 0


def fill_cache(
    cache: PreprocessedCache,
    jobs: Iterable[CacheJob],
    workers: int = 1,
    progress: bool = False,
) -> tuple[list[CachedCase], CacheStats]:
    """Make sure every job is cached, preprocessing missing or stale entries in parallel.

    Args:
        cache: the cache to fill.
        jobs: the cases.
        workers: processes preprocessing at once (1 = in this process).
        progress: show a tqdm progress bar (on stderr).

    Returns:
        The cached cases in job order, and how many were reused (hits) or built (misses).

    Raises:
        FileNotFoundError / ValueError: the first case that fails, naming its file.
    """
    jobs = list(jobs)
    stats = CacheStats()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="preprocess", unit="case")
    results: list[CachedCase | None] = [None] * len(jobs)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                results[i], built = _run_job(str(cache.cache_dir), job)
                stats.misses += built
                stats.hits += not built
                if bar is not None:
                    bar.update(1)
        else:
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_run_job, str(cache.cache_dir), job): i for i, job in enumerate(jobs)}
                try:
                    for future in as_completed(futures):
                        results[futures[future]], built = future.result()
                        stats.misses += built
                        stats.hits += not built
                        if bar is not None:
                            bar.update(1)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
    cache.stats.hits += stats.hits
    cache.stats.misses += stats.misses
    return [r for r in results if r is not None], stats


def jobs_for_config(config: "TrainConfig", plans: "Plans") -> list[CacheJob]:
    """Every case a training run reads, each with its dataset's planned preprocessing: labeled cases
    with their labels (training and validation), then the unlabeled scans without labels. Excluded
    cases are left out."""
    jobs = [
        CacheJob(c.case_id, c.image_path, c.label_path, plans.spec_for(c.dataset), c.dataset)
        for c in config.labeled_cases()
    ]
    jobs += [CacheJob(c.case_id, c.image_path, None, plans.spec_for(c.dataset), c.dataset)
             for c in config.unlabeled_cases()]
    return jobs
