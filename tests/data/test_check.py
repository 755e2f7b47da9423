"""Tests for versemi.data.check and ``versemi check-dataset``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.cli import main
from versemi.data.check import ERROR, WARNING, Problem, check_dataset, summarize
from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

TINY = (6, 8, 8)  # (z, y, x)


def _make(tmp_path: Path, name: str = "Dataset910_Check", num_cases: int = 3, **kw) -> Path:
    return make_nnunet_dataset(
        tmp_path, name, [SyntheticStructure("organ", 1, 1.0)], num_cases=num_cases, shape_zyx=TINY, **kw
    )


def _rewrite(path: Path, transform) -> None:
    """Read an image, let ``transform(image) -> image`` change it, and write it back."""
    sitk.WriteImage(transform(sitk.ReadImage(str(path))), str(path))


def _problems_for(problems: list[Problem], path: Path) -> list[Problem]:
    return [p for p in problems if p.path == path]


def _broken_dataset(tmp_path: Path) -> Path:
    """A dataset with a geometry-mismatched label, an undeclared label value and a 2D image."""
    root = _make(tmp_path, num_cases=4)

    def shift_spacing(im: sitk.Image) -> sitk.Image:
        im.SetSpacing((1.0, 1.0, 3.0))
        im.SetOrigin((5.0, 0.0, 0.0))
        return im

    def add_value_7(im: sitk.Image) -> sitk.Image:
        arr = sitk.GetArrayFromImage(im)
        arr[0, 0, 0] = 7
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(im)
        return out

    _rewrite(root / "labelsTr" / "check_000.nii.gz", shift_spacing)
    _rewrite(root / "labelsTr" / "check_001.nii.gz", add_value_7)
    flat = sitk.GetImageFromArray(np.zeros((8, 8), np.float32))
    sitk.WriteImage(flat, str(root / "imagesTr" / "check_002_0000.nii.gz"))
    return root


def test_clean_dataset_has_no_problems(tmp_path: Path) -> None:
    assert check_dataset(_make(tmp_path)) == []


def test_broken_dataset_reports_all_three_problems(tmp_path: Path) -> None:
    root = _broken_dataset(tmp_path).resolve()
    problems = check_dataset(root)

    geom = _problems_for(problems, root / "labelsTr" / "check_000.nii.gz")
    assert len(geom) == 1 and geom[0].severity == ERROR
    assert "geometry differs from image check_000_0000.nii.gz" in geom[0].message
    assert "spacing (1, 1, 1.5) vs (1, 1, 3)" in geom[0].message
    assert "origin (0, 0, 0) vs (5, 0, 0)" in geom[0].message
    assert "size" not in geom[0].message and "direction" not in geom[0].message

    undeclared = _problems_for(problems, root / "labelsTr" / "check_001.nii.gz")
    assert [p.severity for p in undeclared] == [ERROR]
    assert "label values [7] are not declared" in undeclared[0].message

    flat = _problems_for(problems, root / "imagesTr" / "check_002_0000.nii.gz")
    assert flat and flat[0].severity == ERROR and "is 2D" in flat[0].message

    assert summarize(problems)[0] == 3
    assert _problems_for(problems, root / "labelsTr" / "check_003.nii.gz") == []


def test_cli_exits_nonzero_and_names_the_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _broken_dataset(tmp_path).resolve()
    assert main(["check-dataset", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    errors = [ln for ln in out if ln.startswith("ERROR ")]
    assert len(errors) == 3
    for name in ("check_000.nii.gz", "check_001.nii.gz", "check_002_0000.nii.gz"):
        assert any(name in ln for ln in errors), name
    assert out[-1].startswith("Dataset910_Check: FAILED: 4 case(s), 3 error(s), 0 warning(s)")

    assert main(["check-dataset", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["errors"] == 3 and report["cases"] == 4
    assert {Path(p["path"]).name for p in report["problems"]} == {
        "check_000.nii.gz", "check_001.nii.gz", "check_002_0000.nii.gz"}


def test_cli_as_a_real_process(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "versemi"
    if not exe.is_file():
        pytest.skip(f"console script not installed at {exe}")
    bad = _broken_dataset(tmp_path / "bad")
    good = _make(tmp_path / "good", name="Dataset911_Good")
    # One process (importing the CLI costs seconds): the bad folder fails the whole run.
    res = subprocess.run([str(exe), "check-dataset", str(bad), str(good)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "check_001.nii.gz: label values [7]" in res.stdout
    assert "Dataset910_Check: FAILED: 4 case(s), 3 error(s)" in res.stdout
    assert "Dataset911_Good: OK: 3 case(s), 0 error(s), 0 warning(s)" in res.stdout


def test_dataset_json_problems(tmp_path: Path) -> None:
    root = _make(tmp_path).resolve()
    meta = root / "dataset.json"
    meta.unlink()
    problems = check_dataset(root)
    assert [(p.path, p.severity) for p in problems] == [(meta, ERROR)]
    assert "dataset.json not found" in problems[0].message

    meta.write_text("{ broken")
    assert "invalid JSON" in check_dataset(root)[0].message

    meta.write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": {"organ": 1, "x": 1}}))
    messages = [p.message for p in check_dataset(root) if p.path == meta]
    assert any("missing required key(s): numTraining, file_ending" in m for m in messages)
    assert any("share the value(s) [1]" in m for m in messages)
    assert any("background with value 0" in m for m in messages)


def test_unmatched_files_missing_channels_and_warnings(tmp_path: Path) -> None:
    root = _make(tmp_path, num_cases=4).resolve()
    images, labels = root / "imagesTr", root / "labelsTr"
    (labels / "check_000.nii.gz").unlink()  # image without label
    (images / "check_001_0000.nii.gz").unlink()  # label without image
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}  # every case now misses channel 1
    (root / "dataset.json").write_text(json.dumps(meta))
    (images / "notes.txt").write_text("stray")
    problems = check_dataset(root)
    by_path = {(p.path.name, p.severity): p.message for p in problems}
    assert "image has no label" in by_path[("check_000_0000.nii.gz", ERROR)]
    assert "label has no image" in by_path[("check_001.nii.gz", ERROR)]
    for case in ("check_000", "check_002", "check_003"):
        assert "missing channel 1" in by_path[(f"{case}_0001.nii.gz", ERROR)]
    assert "ignored" in by_path[("notes.txt", WARNING)]
    assert "numTraining is 4 but imagesTr has 3 case(s)" in by_path[("dataset.json", WARNING)]


def test_voxel_level_problems(tmp_path: Path) -> None:
    root = _make(tmp_path, num_cases=3).resolve()

    def with_nan(im: sitk.Image) -> sitk.Image:
        arr = sitk.GetArrayFromImage(im)
        arr[1, 2, 3] = np.nan
        arr[0, 0, 0] = np.inf
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(im)
        return out

    def emptied(im: sitk.Image) -> sitk.Image:
        return im * 0

    def as_vector(im: sitk.Image) -> sitk.Image:
        return sitk.Compose(im, im)

    _rewrite(root / "imagesTr" / "check_000_0000.nii.gz", with_nan)
    _rewrite(root / "labelsTr" / "check_001.nii.gz", emptied)
    _rewrite(root / "imagesTr" / "check_002_0000.nii.gz", as_vector)
    (root / "labelsTr" / "check_000.nii.gz").write_bytes(b"corrupt" * 20)

    problems = check_dataset(root, workers=1)
    msgs = {(p.path.name, p.severity): p.message for p in problems}
    assert msgs[("check_000_0000.nii.gz", ERROR)] == "2 voxel(s) are NaN or infinite"
    assert "cannot read image" in msgs[("check_000.nii.gz", ERROR)]
    assert msgs[("check_001.nii.gz", WARNING)] == "label is empty (background only)"
    assert "2 components per voxel" in msgs[("check_002_0000.nii.gz", ERROR)]
    # A dataset with only warnings passes the CLI.
    assert summarize(problems) == (3, 1)


def test_warnings_only_exit_zero_and_tolerance(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = _make(tmp_path, num_cases=2).resolve()
    _rewrite(root / "labelsTr" / "check_000.nii.gz", lambda im: im * 0)

    def nudge_origin(im: sitk.Image) -> sitk.Image:
        im.SetOrigin((1e-5, 0.0, 0.0))  # float32 round-off of a NIfTI header: not a mismatch
        return im

    _rewrite(root / "labelsTr" / "check_001.nii.gz", nudge_origin)
    assert main(["check-dataset", str(root)]) == 0
    out = capsys.readouterr().out
    assert "WARNING" in out and "check_000.nii.gz: label is empty" in out

    def shift_origin(im: sitk.Image) -> sitk.Image:
        im.SetOrigin((0.05 * im.GetSpacing()[0], 0.0, 0.0))  # 0.05 voxel: a different grid, not round-off
        return im

    _rewrite(root / "labelsTr" / "check_001.nii.gz", shift_origin)
    assert check_dataset(root)[-1].message.startswith("label geometry differs")


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    problems = check_dataset(tmp_path / "nope")
    assert problems[0].severity == ERROR and "not found" in problems[0].message
    assert main(["check-dataset", str(tmp_path / "nope")]) == 1


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


@pytest.mark.parametrize("dataset", ["Dataset001_Hippocampus", "Dataset004_SpleenCT"])
def test_bundled_real_examples_check_clean(dataset: str) -> None:
    """Real MR and CT cases shipped with the repo (the default suite's stand-in for ../shared)."""
    assert check_dataset(EXAMPLES / dataset) == []


@pytest.mark.shared_data
def test_real_hippocampus_checks_clean_and_fast(shared_data: Path) -> None:
    start = time.perf_counter()
    problems = check_dataset(shared_data / "Dataset001_Hippocampus")
    seconds = time.perf_counter() - start
    assert problems == []
    assert seconds < 30, f"checking 203 cases took {seconds:.1f} s"
