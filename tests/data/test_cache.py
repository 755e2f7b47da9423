"""PreprocessedCache: build once, reuse, invalidate per entry, atomic writes, no stray label reads."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import versemi.data.cache as cache_module
from versemi.data.cache import MAX_FOREGROUND_LOCATIONS, PreprocessedCache
from versemi.data.preprocessing import PreprocessingSpec
from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

SPEC = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.5))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return make_nnunet_dataset(
        tmp_path / "raw",
        "Dataset901_Alpha",
        [SyntheticStructure("organ_a", 1, 1.0), SyntheticStructure("organ_b", 2, -1.0)],
        num_cases=2,
        shape_zyx=(12, 20, 20),
        spacing_xyz=(1.2, 1.2, 2.0),
    )


def _paths(dataset: Path, i: int) -> tuple[str, Path, Path]:
    case = f"alpha_{i:03d}"
    return case, dataset / "imagesTr" / f"{case}_0000.nii.gz", dataset / "labelsTr" / f"{case}.nii.gz"


@pytest.fixture
def count_preprocessing(monkeypatch):
    """Counts real preprocess_case calls made by the cache (independently of its own stats)."""
    calls: list[str] = []
    original = cache_module.preprocess_case

    def counting(image, spec, label=None):
        calls.append("x")
        return original(image, spec, label)

    monkeypatch.setattr(cache_module, "preprocess_case", counting)
    return calls


def test_get_builds_memmaps_and_reuses(tmp_path, dataset, count_preprocessing):
    cache = PreprocessedCache(tmp_path / "cache")
    case_id, image, label = _paths(dataset, 0)
    first = cache.get(case_id, image, label, SPEC, dataset="Dataset901_Alpha")
    assert len(count_preprocessing) == 1
    assert isinstance(first.image, np.memmap) and isinstance(first.label, np.memmap)
    assert first.image.dtype == np.float32 and first.label.dtype == np.uint8
    assert not first.image.flags.writeable
    assert first.image.shape == first.label.shape == first.shape
    assert first.dataset == "Dataset901_Alpha" and first.labeled

    # Foreground locations point at voxels of their value.
    assert set(first.foreground_locations) == {1, 2}
    for value, locs in first.foreground_locations.items():
        assert locs.shape[1] == 3 and 0 < len(locs) <= MAX_FOREGROUND_LOCATIONS
        assert np.all(np.asarray(first.label)[tuple(locs.T)] == value)
        assert first.foreground_counts[value] == int((np.asarray(first.label) == value).sum())

    # A new cache object on the same folder (a second run) reuses the entry.
    again = PreprocessedCache(tmp_path / "cache")
    second = again.get(case_id, image, label, SPEC)
    assert len(count_preprocessing) == 1
    assert again.stats.hits == 1 and again.stats.misses == 0
    np.testing.assert_array_equal(np.asarray(second.image), np.asarray(first.image))
    assert second.record == first.record


def test_changed_input_or_spec_invalidates_only_that_entry(tmp_path, dataset, count_preprocessing):
    cache = PreprocessedCache(tmp_path / "cache")
    a, b = _paths(dataset, 0), _paths(dataset, 1)
    cache.get(*a, SPEC)
    cache.get(*b, SPEC)
    assert len(count_preprocessing) == 2

    # Rewrite case a's image (new mtime and content): only a is rebuilt.
    img = sitk.ReadImage(str(a[1]))
    sitk.WriteImage(img * 2.0, str(a[1]))
    stat = os.stat(a[1])
    os.utime(a[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    cache.get(*a, SPEC)
    cache.get(*b, SPEC)
    assert len(count_preprocessing) == 3

    # Old arrays of a rebuilt slot are removed; one image, label, fg file + meta per slot.
    slot = cache.slot_dir(a[0], a[1], a[2], SPEC)
    assert sorted(p.name.split("-")[0] for p in slot.iterdir()) == ["fg", "image", "label", "meta.json"]

    # Another spec (another plan): an entry of its own, beside the first one (both stay usable, so
    # two runs with different plans can share the cache).
    other = PreprocessingSpec(target_spacing=(2.0, 2.0, 2.0))
    small = cache.get(*b, other)
    assert len(count_preprocessing) == 4
    assert small.record["spec"]["target_spacing"] == [2.0, 2.0, 2.0]
    assert cache.slot_dir(*b, other) != cache.slot_dir(*b, SPEC)
    assert cache.is_cached(*b, SPEC) and cache.is_cached(*b, other)
    cache.get(*b, SPEC)
    assert len(count_preprocessing) == 4


def test_unlabeled_case_never_reads_a_label(tmp_path, dataset, monkeypatch):
    cache = PreprocessedCache(tmp_path / "cache")
    case_id, image, label = _paths(dataset, 0)
    read = []
    real_read = sitk.ReadImage
    monkeypatch.setattr(sitk, "ReadImage", lambda p, *a, **k: read.append(str(p)) or real_read(p, *a, **k))
    unlabeled = cache.get(case_id, image, None, SPEC)
    assert read == [str(image)]
    assert unlabeled.label is None and not unlabeled.labeled and unlabeled.foreground_locations == {}
    # The labeled version of the same scan lives in its own slot: both stay cached.
    labeled = cache.get(case_id, image, label, SPEC)
    assert labeled.labeled
    assert cache.is_cached(case_id, image, None, SPEC) and cache.is_cached(case_id, image, label, SPEC)


def test_killed_write_leaves_no_entry(tmp_path, dataset, monkeypatch):
    cache = PreprocessedCache(tmp_path / "cache")
    case_id, image, label = _paths(dataset, 0)
    real_savez = np.savez

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if the run were killed half-way through writing

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        cache.get(case_id, image, label, SPEC)
    slot = cache.slot_dir(case_id, image, label, SPEC)
    assert not (slot / "meta.json").exists()
    assert not [p for p in slot.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert not cache.is_cached(case_id, image, label, SPEC)
    monkeypatch.setattr(np, "savez", real_savez)
    assert cache.get(case_id, image, label, SPEC).labeled  # the next run builds it


def test_rebuild_removes_temp_files_of_dead_writers_only(tmp_path, dataset):
    """A killed writer's temporary file goes on the next rebuild (fileio's rule: its process is gone);
    one of a live writer stays, and so does the entry."""
    from process_helpers import leave_temp_file

    from versemi.fileio import make_temp_file

    cache = PreprocessedCache(tmp_path / "cache")
    case_id, image, label = _paths(dataset, 0)
    slot = cache.slot_dir(case_id, image, label, SPEC)
    slot.mkdir(parents=True)
    dead = leave_temp_file(slot / "image-0123456789abcdef.npy")
    live = make_temp_file(slot / "label-0123456789abcdef.npy")  # this process is alive
    old_key = slot / "image-fedcba9876543210.npy"
    old_key.write_bytes(b"an array of an older key")
    assert cache.get(case_id, image, label, SPEC).labeled
    assert not dead.exists() and not old_key.exists()
    assert live.exists() and (slot / "meta.json").is_file()


def test_cached_case_pickles_paths_not_data(tmp_path, dataset):
    cache = PreprocessedCache(tmp_path / "cache")
    case = cache.get(*_paths(dataset, 0), SPEC)
    _ = case.image[0, 0, 0]  # opened
    blob = pickle.dumps(case)
    assert len(blob) < 200_000 and case.image.nbytes > 0
    clone = pickle.loads(blob)
    assert isinstance(clone.image, np.memmap)
    np.testing.assert_array_equal(np.asarray(clone.image), np.asarray(case.image))


def test_missing_and_broken_inputs_name_the_file(tmp_path, dataset):
    cache = PreprocessedCache(tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        cache.get("x", tmp_path / "nope.nii.gz", None, SPEC)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.nii.gz"):
        cache.get("x", broken, None, SPEC)


def test_fill_cache_in_worker_processes(tmp_path, dataset):
    from versemi.data.cache import CacheJob, fill_cache

    cache = PreprocessedCache(tmp_path / "cache")
    jobs = [CacheJob(case_id, image, label, SPEC, "Dataset901_Alpha") for case_id, image, label in
            (_paths(dataset, 0), _paths(dataset, 1))]
    cases, stats = fill_cache(cache, jobs, workers=2)
    assert [c.case_id for c in cases] == ["alpha_000", "alpha_001"]
    assert (stats.hits, stats.misses) == (0, 2)
    assert all(c.dataset == "Dataset901_Alpha" and c.image.shape == c.shape for c in cases)
    _, stats = fill_cache(cache, jobs, workers=1)
    assert (stats.hits, stats.misses) == (2, 0)


def test_preprocess_cli_fills_and_reuses_cache(tmp_path, synthetic_datasets, capsys):
    import json

    from versemi.cli import main

    config = {
        "datasets": [
            {"path": str(synthetic_datasets["Dataset901_Alpha"]), "labeled": ["alpha_000", "alpha_001"]},
            {"path": str(synthetic_datasets["Dataset902_Beta"]), "labeled": "all"},
        ],
        "target_spacing": [1.5, 1.5, 2.0],
        "patch_size": [16, 16, 16],
        "cache_dir": str(tmp_path / "cli-cache"),
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["preprocess", str(path), "--workers", "1", "--json", "--no-progress"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (first["cases"], first["labeled"], first["unlabeled"], first["built"]) == (8, 6, 2, 8)
    assert main(["preprocess", str(path), "--json", "--no-progress"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (second["built"], second["reused"]) == (0, 8)
    # The labeled CT dataset was clipped and z-scored with its foreground statistics (its plan),
    # the MR one z-scored per image.
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cli-cache").glob("*/meta.json")]
    kinds = {m["record"]["normalization"]["kind"] for m in metas}
    assert kinds == {"ct_zscore", "zscore"}
    assert main(["preprocess", str(tmp_path / "missing.yaml")]) == 2


def test_remove_stale_spares_fresh_temp_files_of_other_writers(tmp_path):
    """The cache follows fileio's rule for temporary files (:func:`versemi.fileio.is_stale_temp_file`):
    a live writer's temporary file stays, a killed one's goes; inside its own slot the cache also
    removes every file of an older key, temporary names of older versemi versions included."""
    from process_helpers import leave_temp_file

    from versemi.fileio import make_temp_file

    slot = tmp_path / "slot"
    slot.mkdir()
    fresh = make_temp_file(slot / "image-other.npy")  # a live process is writing this right now
    old = leave_temp_file(slot / "meta.json")  # abandoned by a killed run
    legacy = slot / ".tmp-42-deadbeef-image-old.npy"  # temp name of older versions: a file of an older key
    stale_array = slot / "image-old.npy"
    for path in (legacy, stale_array):
        path.write_bytes(b"x")
    PreprocessedCache._remove_stale(slot, keep="new")
    assert sorted(p.name for p in slot.iterdir()) == [fresh.name]
