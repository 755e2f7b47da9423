"""``versemi predict`` as users and the Slicer module run it, and its answers to bad input."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from versemi.checkpoint import save_checkpoint
from versemi.cli import main
from versemi.labels import LabelSpace

from inference.helpers import make_image, tiny_payload, write_dicom_series
from inference.test_predictor import oblique_case


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    path = tmp_path / "input" / "scan.nrrd"
    path.parent.mkdir()
    sitk.WriteImage(oblique_case()[0], str(path))
    return path


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny model: enough for error paths, no training needed."""
    return save_checkpoint(tiny_payload(), tmp_path_factory.mktemp("rnd") / "random.pt")


def test_cli_subprocess_json_progress(trained_checkpoint: Path, scan: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "scan_seg.nii.gz"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "versemi.cli", "predict", "--model", str(trained_checkpoint), "--input", str(scan),
         "--output", str(out), "--prompts", "spleen,liver", "--progress", "json", "--threads", "1",
         "--probabilities", str(tmp_path / "prob")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    messages = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert messages, proc.stdout
    progress = [m for m in messages if m["type"] == "progress"]
    stages = [m["stage"] for m in progress]
    assert {"preprocess", "inference", "export"} <= set(stages)
    fractions = [m["fraction"] for m in progress]
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    assert any(m["message"].startswith("window ") for m in progress)  # per batch of windows
    done = messages[-1]
    assert done["type"] == "done"
    assert Path(done["output"]) == out and out.is_file()
    assert Path(done["sidecar"]) == out.with_name("scan_seg.json")
    sidecar = json.loads(Path(done["sidecar"]).read_text())
    assert [d["name"] for d in sidecar["labels"]] == ["spleen", "liver"]
    assert out.with_name("scan_seg.ctbl").is_file()
    assert sorted(p.name for p in (tmp_path / "prob").iterdir()) == ["liver.nii.gz", "spleen.nii.gz"]
    labelmap = sitk.ReadImage(str(out))
    assert labelmap.GetSize() == sitk.ReadImage(str(scan)).GetSize()


def test_cli_list_prompts(random_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["predict", "--model", str(random_checkpoint), "--list-prompts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[1].split()[0] for ln in lines] == ["organ_a", "spleen", "liver", "all_foreground"]


def test_dicom_series_input(random_checkpoint: Path, tmp_path: Path) -> None:
    image = sitk.Cast(make_image(np.random.default_rng(0).integers(0, 100, (6, 20, 18)).astype(np.int16),
                                 spacing=(0.8, 0.8, 2.5), origin=(-5.0, 3.0, 11.0)), sitk.sitkInt16)
    folder = tmp_path / "dicom"
    series_uid = "1.2.826.0.1.3680043.2.1125.1.42"
    write_dicom_series(folder, image, series_uid)
    out = tmp_path / "dicom_seg.nii.gz"
    assert main(["predict", "-m", str(random_checkpoint), "-i", str(folder), "-o", str(out), "--progress", "none"]) == 0
    labelmap = sitk.ReadImage(str(out))
    assert labelmap.GetSize() == image.GetSize()
    np.testing.assert_allclose(labelmap.GetSpacing(), image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(labelmap.GetOrigin(), image.GetOrigin(), atol=1e-3)
    # Several series in one folder: the user must choose one.
    write_dicom_series(folder, image[:, :, :3], "1.2.826.0.1.3680043.2.1125.1.99",
                       uid_root="1.2.826.0.1.3680043.2.1125.1.45", name="other")
    out2 = tmp_path / "two" / "seg.nii.gz"
    expect_error(["predict", "-m", str(random_checkpoint), "-i", str(folder), "-o", str(out2)], "--series-uid")
    assert not out2.parent.exists()
    assert main(["predict", "-m", str(random_checkpoint), "-i", str(folder), "-o", str(out2), "--progress", "none",
                 "--series-uid", series_uid]) == 0


def expect_error(argv: list[str], needle: str) -> None:
    """Run the CLI in-process with JSON progress; expect a non-zero exit, an error line and ``needle``
    in both the JSON error line (what Slicer shows) and the one-line stderr message."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv + ["--progress", "json"])
    assert code != 0
    lines = [json.loads(ln) for ln in out.getvalue().splitlines() if ln.startswith("{")]
    assert lines and lines[-1]["type"] == "error", out.getvalue()
    assert needle in lines[-1]["message"], lines[-1]["message"]
    assert needle in err.getvalue()


# --- bad input: clear error naming the file, non-zero exit, no partial outputs -------------------
def _write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _run_bad(checkpoint: Path, input_path: Path, tmp_path: Path, needle: str, prompts: str = "all") -> None:
    out_dir = tmp_path / "bad_out"
    out = out_dir / "seg.nii.gz"
    expect_error(["predict", "-m", str(checkpoint), "-i", str(input_path), "-o", str(out), "-p", prompts,
                  "--probabilities", str(out_dir / "prob")], needle)
    # No partial outputs: not even the folders the command would have created.
    assert not out_dir.exists(), list(out_dir.rglob("*"))


def test_unknown_prompt_lists_available(random_checkpoint: Path, scan: Path, tmp_path: Path) -> None:
    _run_bad(random_checkpoint, scan, tmp_path, "available prompts: organ_a, spleen, liver, all_foreground",
             prompts="spleen,kidneyz")


def test_model_whose_label_space_lacks_the_prompt(scan: Path, tmp_path: Path) -> None:
    space = LabelSpace.from_dataset_labels({"Dataset005_Heart": {"labels": {"background": 0, "left_atrium": 1}}})
    ckpt = save_checkpoint(tiny_payload(space), tmp_path / "heart.pt")
    _run_bad(ckpt, scan, tmp_path, "unknown prompt 'liver'", prompts="liver")
    _run_bad(ckpt, scan, tmp_path, "left_atrium", prompts="liver")


def test_2d_input(random_checkpoint: Path, tmp_path: Path) -> None:
    path = _write(sitk.GetImageFromArray(np.zeros((20, 20), np.float32)), tmp_path / "in" / "slice.nii.gz")
    _run_bad(random_checkpoint, path, tmp_path, f"{path}: a 2D image")


def test_single_slice_3d_input(random_checkpoint: Path, tmp_path: Path) -> None:
    path = _write(sitk.GetImageFromArray(np.zeros((1, 20, 20), np.float32)), tmp_path / "in" / "slice.nrrd")
    _run_bad(random_checkpoint, path, tmp_path, "single slice")


def test_4d_input(random_checkpoint: Path, tmp_path: Path) -> None:
    array = np.zeros((3, 8, 10, 12), np.float32)  # (t, z, y, x)
    path = _write(sitk.GetImageFromArray(array, isVector=False), tmp_path / "in" / "dyn.nii.gz")
    _run_bad(random_checkpoint, path, tmp_path, f"{path}: a 4D image")


def test_empty_file(random_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "in" / "empty.nii.gz"
    path.parent.mkdir()
    path.touch()
    _run_bad(random_checkpoint, path, tmp_path, f"{path}: image file is empty")


def test_corrupt_file(random_checkpoint: Path, scan: Path, tmp_path: Path) -> None:
    path = tmp_path / "in" / "corrupt.nii.gz"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(scan.read_bytes()[:300])  # truncated
    _run_bad(random_checkpoint, path, tmp_path, f"{path}: cannot read image")
    garbage = tmp_path / "in" / "garbage.mha"
    garbage.write_bytes(b"not an image at all\n" * 10)
    _run_bad(random_checkpoint, garbage, tmp_path, f"{garbage}: cannot read image")


def test_missing_file(random_checkpoint: Path, tmp_path: Path) -> None:
    _run_bad(random_checkpoint, tmp_path / "nope.nii.gz", tmp_path, "image file not found")


def test_nan_voxels(random_checkpoint: Path, tmp_path: Path) -> None:
    array = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    array[5, 6, 7] = np.nan
    # NRRD keeps NaN (ITK's NIfTI reader turns NaN voxels into 0 when reading).
    path = _write(make_image(array), tmp_path / "in" / "nan.nrrd")
    _run_bad(random_checkpoint, path, tmp_path, f"{path}: image contains NaN")


def test_incompatible_checkpoint_version(scan: Path, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tiny_payload(), tmp_path / "old.pt")
    payload = torch.load(ckpt, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, ckpt)
    _run_bad(ckpt, scan, tmp_path, "incompatible")
    _run_bad(ckpt, scan, tmp_path, str(ckpt))
    from versemi.checkpoint import CheckpointError
    from versemi.inference import Predictor

    with pytest.raises(CheckpointError, match="format version 99"):
        Predictor(payload, device="cpu")  # an already loaded checkpoint dict is checked too


def test_corrupt_checkpoint(scan: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "broken.pt"
    ckpt.write_bytes(b"\x00" * 100)
    _run_bad(ckpt, scan, tmp_path, f"{ckpt}: cannot read checkpoint")


def test_failure_during_writing_leaves_nothing(random_checkpoint: Path, scan: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from versemi.inference import Predictor
    from versemi.inference import io as io_module

    calls = {"n": 0}
    real = io_module.AtomicOutputs.write_text

    def failing_write_text(self, text, target):
        calls["n"] += 1
        if calls["n"] == 2:  # the sidecar, after labelmap, probabilities and colour table
            raise OSError(f"{target}: disk full (simulated)")
        return real(self, text, target)

    monkeypatch.setattr(io_module.AtomicOutputs, "write_text", failing_write_text)
    out_dir = tmp_path / "o"
    with pytest.raises(OSError, match="disk full"):
        Predictor(random_checkpoint, device="cpu").predict_file(scan, out_dir / "seg.nii.gz", "spleen",
                                                                probabilities_dir=out_dir / "prob")
    assert not out_dir.exists()


def test_dataset_option_sets_the_preprocessing(random_checkpoint: Path, scan: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "seg.nii.gz"
    assert main(["predict", "-m", str(random_checkpoint), "-i", str(scan), "-o", str(out), "-p", "organ_a,spleen",
                 "--dataset", "Dataset902_Beta", "--progress", "none"]) == 0
    prediction = json.loads(out.with_name("seg.json").read_text())["prediction"]
    # organ_a comes from Alpha, spleen from Beta: forced to Beta, both share one preprocessing.
    assert [(g["datasets"], g["prompts"]) for g in prediction["preprocessing"]] == [
        (["Dataset902_Beta"], ["organ_a", "spleen"])]


@pytest.mark.parametrize("command", ["predict", "pseudolabel"])
def test_unknown_dataset_lists_the_models_datasets(command: str, random_checkpoint: Path, scan: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    target = ["-o", str(out / "seg.nii.gz")] if command == "predict" else ["-o", str(out)]
    source = str(scan) if command == "predict" else str(scan.parent)
    assert main([command, "-m", str(random_checkpoint), "-i", source, *target, "--dataset", "Dataset999_Nope",
                 "--progress", "none"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'Dataset999_Nope'" in err and "Dataset901_Alpha, Dataset902_Beta" in err
    assert not out.exists()
