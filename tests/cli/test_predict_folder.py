"""``versemi predict -i FOLDER -o FOLDER``: every scan, resumable, one line per case, a failing case
reported without stopping the others, exit status 1 when any failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.checkpoint import save_checkpoint
from versemi.cli import main

from inference.helpers import make_image, tiny_payload


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tiny_payload(), tmp_path_factory.mktemp("m") / "tiny.pt")


def write_scan(path: Path, seed: int) -> Path:
    array = np.random.default_rng(seed).normal(size=(12, 14, 10)).astype(np.float32)
    sitk.WriteImage(make_image(array, spacing=(1.5, 1.5, 1.5)), str(path))
    return path


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    folder = tmp_path / "scans"
    folder.mkdir()
    write_scan(folder / "case_a.nii.gz", 0)
    (folder / "case_b.nii.gz").write_bytes(b"not an image at all")  # fails
    write_scan(folder / "case_c.nrrd", 2)
    (folder / "notes.txt").write_text("not a scan")  # ignored
    return folder


def run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, list[str], str]:
    code = main(["predict", *args])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def test_folder_run_reports_each_case_and_goes_on_after_a_failure(model: Path, scans: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    code, lines, _ = run(capsys, "-m", str(model), "-i", str(scans), "-o", str(out), "--progress", "none")
    assert code == 1
    case_lines = [ln for ln in lines if ln.startswith("[")]
    assert len(case_lines) == 3
    assert case_lines[0].startswith("[1/3] case_a: done in ") and case_lines[0].endswith(str(out / "case_a.nii.gz"))
    assert case_lines[1].startswith("[2/3] case_b: FAILED: ") and "case_b.nii.gz" in case_lines[1]
    assert case_lines[2].startswith("[3/3] case_c: done in ")
    assert lines[-1] == f"2 of 3 scans segmented into {out} (0 already done, skipped); 1 failed"
    assert sorted(p.name for p in out.iterdir()) == ["case_a.ctbl", "case_a.json", "case_a.nii.gz",
                                                      "case_c.ctbl", "case_c.json", "case_c.nii.gz"]
    for case, scan in (("case_a", "case_a.nii.gz"), ("case_c", "case_c.nrrd")):
        labelmap = sitk.ReadImage(str(out / f"{case}.nii.gz"))
        assert labelmap.GetSize() == sitk.ReadImage(str(scans / scan)).GetSize()


def test_folder_run_resumes_and_redoes_what_changed(model: Path, scans: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert run(capsys, "-m", str(model), "-i", str(scans), "-o", str(out), "--progress", "none")[0] == 1
    stamp = (out / "case_a.nii.gz").stat().st_mtime_ns
    (scans / "case_b.nii.gz").unlink()
    write_scan(scans / "case_b.nii.gz", 1)  # fixed: done now; the others are skipped
    code, lines, _ = run(capsys, "-m", str(model), "-i", str(scans), "-o", str(out), "--progress", "none")
    assert code == 0
    assert lines[0] == f"[1/3] case_a: skipped, already done by this model ({out / 'case_a.nii.gz'})"
    assert lines[1].startswith("[2/3] case_b: done in ") and lines[2].startswith("[3/3] case_c: skipped")
    assert lines[-1] == f"3 of 3 scans segmented into {out} (2 already done, skipped); 0 failed"
    assert (out / "case_a.nii.gz").stat().st_mtime_ns == stamp
    # Other prompts (or another model) make other outputs: redone, not skipped.
    code, lines, _ = run(capsys, "-m", str(model), "-i", str(scans), "-o", str(out), "--progress", "none",
                         "--prompts", "spleen")
    assert code == 0 and all(": done in " in ln for ln in lines[:3])
    assert [e["name"] for e in json.loads((out / "case_a.json").read_text())["labels"]] == ["spleen"]
    code, lines, _ = run(capsys, "-m", str(model), "-i", str(scans), "-o", str(out), "--progress", "none",
                         "--prompts", "spleen", "--no-resume")
    assert code == 0 and all(": done in " in ln for ln in lines[:3])


def test_folder_run_json_progress_and_nnunet_layout(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dataset = tmp_path / "Dataset123_X"
    (dataset / "imagesTr").mkdir(parents=True)
    write_scan(dataset / "imagesTr" / "x_001_0000.nii.gz", 0)
    write_scan(dataset / "imagesTr" / "x_001_0001.nii.gz", 1)  # a second channel: not a case
    code, _, stdout = run(capsys, "-m", str(model), "-i", str(dataset), "-o", str(tmp_path / "o"), "--progress", "json")
    assert code == 0
    messages = [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
    assert any(m.get("message", "").startswith("[1/1] x_001: done in ") for m in messages)
    assert messages[-1] == {"type": "done", "output": str(tmp_path / "o"), "cases": 1, "skipped": 0, "failed": 0}
    fractions = [m["fraction"] for m in messages if m["type"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert (tmp_path / "o" / "x_001.nii.gz").is_file()


@pytest.mark.parametrize("extra, expected", [
    (["-o", "{scans}"], "must not be the input folder"),
    (["-o", "{scans}/sub"], "must not be the input folder"),
    (["-o", "{tmp}/seg.nii.gz"], "--output must be a folder"),
    (["-o", "{tmp}/o", "--roi", "0,0,0,4,4,4"], "--roi applies to one scan"),
    ([], "--output FOLDER is required"),
])
def test_folder_run_refusals_are_one_line(model: Path, scans: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                          extra: list[str], expected: str) -> None:
    args = [a.format(scans=scans, tmp=tmp_path) for a in extra]
    before = sorted(os.listdir(scans))
    code, lines, _ = run(capsys, "-m", str(model), "-i", str(scans), *args)
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert sorted(os.listdir(scans)) == before


def test_a_folder_of_dicom_series_is_a_folder_of_scans_and_one_series_is_one_scan(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from inference.helpers import write_dicom_series

    studies = tmp_path / "studies"
    for i, name in enumerate(("patient_1", "patient_2")):
        image = sitk.Cast(make_image(np.random.default_rng(i).integers(0, 100, (6, 14, 12)).astype(np.int16),
                                     spacing=(1.5, 1.5, 2.0)), sitk.sitkInt16)
        write_dicom_series(studies / name, image, series_uid=f"1.2.826.0.1.3680043.2.1125.1.{50 + i}",
                           uid_root=f"1.2.826.0.1.3680043.2.1125.1.{60 + i}")
    code, lines, _ = run(capsys, "-m", str(model), "-i", str(studies), "-o", str(tmp_path / "out"), "--progress", "none")
    assert code == 0, lines
    assert [ln.split(":")[0] for ln in lines[:2]] == ["[1/2] patient_1", "[2/2] patient_2"]
    code, lines, _ = run(capsys, "-m", str(model), "-i", str(studies / "patient_1"), "-o", str(tmp_path / "one.nrrd"),
                         "--progress", "none")
    assert code == 0 and (tmp_path / "one.nrrd").is_file()
