"""Nothing lost, nothing silent: the output path, the disk, signals and odd headers (issue 23).

Each case a hostile user found after the first round of bad-input fixes (``test_bad_input.py``),
built on the fly and run through the real command line. The rules they check are written once in
``docs/REFUSALS.md``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cli.test_bad_input import (  # noqa: F401 - model: a fixture
    hidden_temp_files,
    model,
    one_error_line,
    refuse_predict,
    run,
    run_process,
    scan_array,
    snapshot,
    write,
)
from inference.helpers import make_image, write_dicom_series
from process_helpers import ENV

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals, rlimits and file modes")


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    return write(make_image(scan_array(), spacing=(1.2, 1.2, 1.5)), tmp_path / "in" / "scan.nii.gz")


def predict(model: Path, *args: str) -> tuple[int, str, str]:
    return run(["predict", "-m", str(model), *args, "--progress", "none"])


def patch_nifti(path: Path, patch) -> Path:
    """Change header fields of an uncompressed ``.nii`` in place: ``patch(bytearray)``."""
    data = bytearray(path.read_bytes())
    patch(data)
    path.write_bytes(bytes(data))
    return path


# --- data loss ------------------------------------------------------------------------------------
def test_stale_cleanup_keeps_the_users_files_that_look_temporary(model: Path, tmp_path: Path, scan: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    users = [out / ".tmp-notes", out / ".thesis.draft001.tmp", out / ".seg.nii.gz.k2j3h4g5.tmp"]
    old = time.time() - 3 * 3600
    for path in users:
        path.write_text("mine")
        os.utime(path, (old, old))
    code, _, err = predict(model, "-i", str(scan), "-o", str(out / "seg.nii.gz"))
    assert code == 0, err
    assert all(p.read_text() == "mine" for p in users)


def test_sidecar_name_of_a_bids_json_is_not_overwritten_without_overwrite(model: Path, tmp_path: Path) -> None:
    bids = tmp_path / "sub-01" / "anat"
    image = write(make_image(scan_array(), spacing=(1.2, 1.2, 1.5)), bids / "sub-01_T1w.nii.gz")
    metadata = bids / "sub-01_T1w.json"
    metadata.write_text('{"RepetitionTime": 2.3}\n')
    target = bids / "sub-01_T1w.nrrd"
    refuse_predict(model, tmp_path, ["-i", str(image), "-o", str(target)], f"{metadata}: is not a versemi sidecar",
                   "--overwrite")
    # A labelmap someone else made, with no versemi sidecar beside it, is kept too.
    manual = tmp_path / "manual" / "seg.nii.gz"
    write(make_image(np.zeros((16, 20, 18), np.uint8)), manual)
    refuse_predict(model, tmp_path, ["-i", str(image), "-o", str(manual)], f"{manual}: exists and was not written by "
                   "versemi", "--overwrite")
    code, _, err = predict(model, "-i", str(image), "-o", str(target), "--overwrite")
    assert code == 0, err
    assert json.loads(metadata.read_text())["versemi_version"]  # replaced, as asked
    code, _, err = predict(model, "-i", str(image), "-o", str(target))  # versemi's own outputs: replaced
    assert code == 0, err


def test_two_outputs_of_one_run_that_are_the_same_file_are_refused(model: Path, tmp_path: Path, scan: Path) -> None:
    probabilities = tmp_path / "probs"
    code, out, _ = run(["predict", "-m", str(model), "--list-prompts"])
    prompt = out.split("\t")[1].split()[0]
    target = probabilities / f"{prompt}.nii.gz"
    refuse_predict(model, tmp_path, ["-i", str(scan), "-o", str(target), "--probabilities", str(probabilities)],
                   "two outputs of this run are the same file", str(target))


def test_pseudolabel_refuses_its_input_folder_as_output(model: Path, tmp_path: Path, scan: Path) -> None:
    dataset = tmp_path / "Dataset"
    images = dataset / "imagesTr"
    write(make_image(scan_array()), images / "case_000_0000.nii.gz")
    for args in (["-i", str(images), "-o", str(images)], ["-i", str(dataset), "-o", str(images / "pseudo")],
                 ["-i", str(scan.parent), "-o", str(scan.parent)]):
        before = snapshot(tmp_path)
        code, _, err = run(["pseudolabel", "-m", str(model), *args, "--progress", "none"])
        assert code == 2, err
        one_error_line(err, "pseudolabel", "must not be the input folder")
        assert snapshot(tmp_path) == before  # no manifest.json, no .manifest.lock, no labelmap


def test_output_inside_an_input_dicom_folder_is_refused(model: Path, tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 100, (12, 20, 18)).astype(np.int16)
    folder = tmp_path / "dicom"
    write_dicom_series(folder, sitk.Cast(make_image(array, spacing=(0.8, 0.8, 1.0)), sitk.sitkInt16))
    refuse_predict(model, tmp_path, ["-i", str(folder), "-o", str(folder / "seg.nii.gz")],
                   f"{folder / 'seg.nii.gz'}: is inside the input folder")
    refuse_predict(model, tmp_path, ["-i", str(folder), "-o", str(tmp_path / "seg.nii.gz"), "--probabilities",
                                     str(folder / "p")], "is inside the input folder")


# --- the disk -------------------------------------------------------------------------------------
def _limited_predict(model: Path, scan: Path, target: Path, limit: int) -> subprocess.CompletedProcess:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "versemi.cli", "predict", "-m", str(model), "-i", str(scan),
                           "-o", str(target), "--progress", "none"], env=ENV, capture_output=True, text=True,
                          timeout=300, preexec_fn=cap)


@posix_only
@pytest.mark.parametrize("name", ["seg.nii", "seg.nrrd"])
def test_short_write_under_a_file_size_limit_fails_naming_the_labelmap(
    model: Path, tmp_path: Path, name: str
) -> None:
    """RLIMIT_FSIZE makes every write beyond the limit fail (EFBIG), as a full disk does (ENOSPC);
    ITK's writers do not notice. The labelmap gets half its size as the limit; the NIfTI library's
    own ``** ERROR: NWAD`` line is replaced by versemi's."""
    big = write(make_image(scan_array((40, 40, 40))), tmp_path / "in" / "big.nrrd")
    target = tmp_path / "out" / name
    code, _, err = predict(model, "-i", str(big), "-o", str(target))
    assert code == 0, err
    previous = snapshot(tmp_path / "out")
    proc = _limited_predict(model, big, target, target.stat().st_size // 2)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr, "predict", str(target), "incomplete")
    assert ".ctbl" not in line and ".tmp" not in line
    assert snapshot(tmp_path / "out") == previous  # the previous outputs intact, no temporary file


@posix_only
def test_full_disk_fails_naming_the_labelmap(model: Path, tmp_path: Path) -> None:
    """A real full disk (ENOSPC): a 1 MiB tmpfs, where root may mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (the file-size-limit test covers short writes)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        (mount / "filler").write_bytes(b"\0" * (1024 * 1024 - 40 * 1024))
        big = write(make_image(scan_array((40, 40, 40))), tmp_path / "in" / "big.nrrd")
        target = mount / "seg.nii"
        code, _, err = predict(model, "-i", str(big), "-o", str(target))
        assert code == 2, err
        line = one_error_line(err, "predict", str(target))
        assert ".ctbl" not in line and ".tmp" not in line
        assert sorted(p.name for p in mount.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@posix_only
def test_outputs_follow_the_umask(model: Path, tmp_path: Path, scan: Path) -> None:
    previous = os.umask(0o022)
    try:
        code, _, err = predict(model, "-i", str(scan), "-o", str(tmp_path / "out" / "seg.nii.gz"))
    finally:
        os.umask(previous)
    assert code == 0, err
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes == {"seg.nii.gz": 0o644, "seg.json": 0o644, "seg.ctbl": 0o644}


# --- geometry and header oddities -----------------------------------------------------------------
def test_sheared_nifti_sform_is_refused_not_changed(model: Path, tmp_path: Path) -> None:
    path = write(make_image(scan_array(), spacing=(1.2, 1.3, 1.4)), tmp_path / "in" / "sheared.nii")
    patch_nifti(path, lambda b: struct.pack_into("<4f", b, 280, -1.2, 0.3, 0.0, 5.0))  # srow_x: a shear
    for target in ("seg.nii.gz", "seg.nrrd"):
        refuse_predict(model, tmp_path, ["-i", str(path), "-o", str(tmp_path / "out" / target)],
                       f"{path}: its NIfTI sform", "sheared", "different sform")


def test_zero_spacing_in_a_nifti_header_is_named_in_a_warning(model: Path, tmp_path: Path) -> None:
    path = write(make_image(scan_array(), spacing=(1.2, 1.3, 1.4)), tmp_path / "in" / "flat.nii")

    def zero_z(b: bytearray) -> None:
        struct.pack_into("<f", b, 76 + 12, 0.0)  # pixdim[3]
        struct.pack_into("<h", b, 254, 0)  # no sform: the qform (and pixdim) is the geometry

    patch_nifti(path, zero_z)
    code, _, err = predict(model, "-i", str(path), "-o", str(tmp_path / "out" / "seg.nii.gz"))
    assert code == 0, err
    assert f"versemi predict: warning: {path}: header spacing of axis z is 0, read as 1 mm" in err


def test_uint32_intensities_beyond_float32_are_named_in_a_warning(model: Path, tmp_path: Path) -> None:
    array = np.full((16, 20, 18), 4_000_000_000, np.uint32)
    array[4:10, 5:12, 5:12] += 200  # a structure 200 above the background: one float32 step is 256
    path = write(make_image(array), tmp_path / "in" / "u32.nii.gz")
    code, _, err = predict(model, "-i", str(path), "-o", str(tmp_path / "out" / "seg.nii.gz"))
    assert code == 0, err
    line = next(ln for ln in err.splitlines() if "warning" in ln)
    assert line.startswith(f"versemi predict: warning: {path}: integer intensities up to 4e+09")
    assert "values 256 apart merge" in line and "about 1 distinct levels" in line


def test_undeclared_label_values_are_named_by_evaluate_and_check_dataset(tmp_path: Path) -> None:
    from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

    root = make_nnunet_dataset(tmp_path, "Dataset901_Alpha", [SyntheticStructure("organ_a", 1, 1.0)], num_cases=2,
                               seed=1)
    label = sorted((root / "labelsTr").iterdir())[0]
    image = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(image)
    array[0, 0, :3] = 3  # a value dataset.json does not declare
    extra = sitk.GetImageFromArray(array)
    extra.CopyInformation(image)
    sitk.WriteImage(extra, str(label), useCompression=True)
    code, out, _ = run(["check-dataset", str(root)])
    assert code == 1 and f"ERROR {label}: label values [3] are not declared in dataset.json" in out
    predictions = tmp_path / "pred"
    shutil.copytree(root / "labelsTr", predictions)
    code, _, err = run(["evaluate", "--predictions", str(predictions), "--labels", str(root / "labelsTr"),
                        "--output", str(tmp_path / "eval"), "--quiet"])
    assert code == 0, err
    assert f"versemi evaluate: warning: {label}: reference label value(s) [3] are not declared" in err


# --- signals and leftovers ------------------------------------------------------------------------
@posix_only
def test_sigterm_as_soon_as_a_temp_file_exists_leaves_nothing(model: Path, tmp_path: Path, scan: Path) -> None:
    """The signal lands at the first moment a temporary file is visible (the race of issue 23)."""
    out = tmp_path / "new" / "folder" / "seg.nii.gz"
    before = snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "versemi.cli", "predict", "-m", str(model), "-i", str(scan),
                             "-o", str(out), "--progress", "none"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (
            (tmp_path / "new").exists() and hidden_temp_files(tmp_path / "new")
        ):
            time.sleep(0.001)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert snapshot(tmp_path) == before, "a temporary file or a created folder was left"


def test_non_utf8_file_name_gives_an_error_line_not_an_abort(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(make_image(scan_array()), folder / "scan.nii.gz")
    bad = os.path.join(os.fsencode(folder), b"scan\xff.nii.gz")
    os.rename(os.fsencode(folder / "scan.nii.gz"), bad)
    proc = run_process(["predict", "-m", str(model), "-i", os.fsdecode(bad), "-o", str(tmp_path / "o.nii.gz"),
                        "--progress", "none"])
    assert proc.returncode == 2, proc.stderr  # not -6 (SIGABRT)
    one_error_line(proc.stderr, "predict", "not valid UTF-8", "\\xff")
    proc = run_process(["pseudolabel", "-m", str(model), "-i", str(folder), "-o", str(tmp_path / "p"),
                        "--progress", "none"])
    assert proc.returncode == 1 and "not valid UTF-8" in proc.stderr, proc.stderr


def test_symlink_loop_as_input_gives_an_error_line(model: Path, tmp_path: Path) -> None:
    loop = tmp_path / "loop.nii.gz"
    loop.symlink_to(loop)
    refuse_predict(model, tmp_path, ["-i", str(loop), "-o", str(tmp_path / "o.nii.gz")], str(loop),
                   "symbolic link loop")


# --- messages that name the file and the cause ----------------------------------------------------
def test_bad_memory_limit_variable_is_named_even_for_a_small_scan(
    model: Path, tmp_path: Path, scan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VERSEMI_MEMORY_LIMIT", "banana")
    refuse_predict(model, tmp_path, ["-i", str(scan), "-o", str(tmp_path / "o.nii.gz")], "VERSEMI_MEMORY_LIMIT",
                   "'banana'", "not a size")


def test_scan_over_the_memory_cap_is_refused_from_its_header(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header of 1024^3 float32 voxels (4 GiB) and hardly any data: the size check comes before
    any voxel is read, and says it is memory, not a corrupt file."""
    path = write(make_image(np.zeros((2, 2, 2), np.float32)), tmp_path / "in" / "huge.nii")
    patch_nifti(path, lambda b: struct.pack_into("<3h", b, 42, 1024, 1024, 1024))
    monkeypatch.setenv("VERSEMI_MEMORY_LIMIT", "1G")
    line = refuse_predict(model, tmp_path, ["-i", str(path), "-o", str(tmp_path / "o.nii.gz")],
                          f"{path}: reading its 1024 x 1024 x 1024 voxels", "4.0 GiB", "VERSEMI_MEMORY_LIMIT=1G")
    assert "corrupt" not in line


def test_folder_named_like_an_image_gives_a_correct_message(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    refuse_predict(model, tmp_path, ["-i", str(folder)], f"{folder}: is a folder, not an image file")


def test_refused_models_import_leaves_no_empty_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache" / "models"
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(cache))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(tmp_path / "no-catalogue.json"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = run(["models", "import", str(junk)])
    assert code != 0 and "junk.pt" in err
    assert not (tmp_path / "cache").exists()


def test_zero_spacing_is_a_check_dataset_warning(tmp_path: Path) -> None:
    from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

    root = make_nnunet_dataset(tmp_path, "Dataset901_Alpha", [SyntheticStructure("organ_a", 1, 1.0)], num_cases=1,
                               seed=1)
    (image,) = sorted((root / "imagesTr").iterdir())
    flat = image.with_name(image.name.replace(".nii.gz", ".nii"))
    sitk.WriteImage(sitk.ReadImage(str(image)), str(flat))
    image.unlink()
    patch_nifti(flat, lambda b: (struct.pack_into("<f", b, 76 + 12, 0.0), struct.pack_into("<h", b, 254, 0)))
    (label,) = sorted((root / "labelsTr").iterdir())
    sitk.WriteImage(sitk.ReadImage(str(label)), str(label.with_name(label.name.replace(".nii.gz", ".nii"))))
    label.unlink()
    document = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**document, "file_ending": ".nii"}))
    code, out, err = run(["check-dataset", str(root)])
    assert f"WARNING {flat}: header spacing of axis z is 0, read as 1 mm" in out, out + err
