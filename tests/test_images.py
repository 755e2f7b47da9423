"""versemi.images (the one checking reader), versemi.image_headers (the grid rule) and versemi.outputs (the output
checks), file by file."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inference.helpers import make_image, write_dicom_series
from versemi.data.dataset import SUPPORTED_ENDINGS
from versemi.images import ImageFileError, itk_reason, read_image, read_image_header, scan_nifti
from versemi.outputs import OutputPathError, check_output_geometry, check_output_paths, is_orthonormal


def _volume(dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(50, 10, size=(6, 7, 8)).astype(dtype)


def _write(path: Path, array: np.ndarray, compress: bool | None = None) -> Path:
    sitk.WriteImage(make_image(array), str(path), useCompression=path.name.endswith(".gz") if compress is None else compress)
    return path


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
def test_scan_nifti_counts_nonfinite_and_finds_truncation(tmp_path: Path, name: str, dtype) -> None:
    array = _volume(dtype)
    path = _write(tmp_path / name, array)
    assert scan_nifti(path) == 0
    assert np.array_equal(sitk.GetArrayFromImage(read_image(path)), array)
    if np.issubdtype(dtype, np.floating):
        array[0, 0, 0], array[5, 6, 7], array[2, 3, 4] = np.nan, np.inf, -np.inf
        _write(path, array)
        assert scan_nifti(path) == 3
        image, bad = read_image(path, count_nonfinite=True)
        assert bad == 3 and np.isfinite(sitk.GetArrayViewFromImage(image)).all()  # ITK made them 0
        with pytest.raises(ImageFileError, match=r"NaN or infinite voxel values \(3 voxel\(s\)\)"):
            read_image(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # the last voxels (and the gzip trailer) are missing
    with pytest.raises(ImageFileError, match=f"{path}: cannot read image: .*truncated"):
        read_image(path)
    with pytest.raises(ImageFileError, match="truncated"):
        read_image(path)


def test_a_flipped_byte_in_a_nii_gz_fails_its_crc(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.nii.gz", _volume())
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[:-8] + b"\x00" * 8)  # zeroed CRC-32 and length
    with pytest.raises(ImageFileError, match="truncated or corrupt"):
        read_image(path)


def test_nrrd_and_mha_errors_are_one_line(tmp_path: Path) -> None:
    array = _volume()
    array[1, 1, 1] = np.nan
    for name in ("a.nrrd", "a.mha"):
        path = _write(tmp_path / name, array, compress=True)
        with pytest.raises(ImageFileError, match=r"NaN or infinite voxel values \(1 voxel"):
            read_image(path)
        assert read_image(path, count_nonfinite=True)[1] == 1
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageFileError) as info:
            read_image(path)
        message = str(info.value)
        assert message.startswith(f"{path}: cannot read image (truncated, corrupt or unsupported file): ")
        assert "\n" not in message and "0x" not in message and "No such file" not in message


def test_missing_empty_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(ImageFileError, match="not found"):
        read_image(tmp_path / "none.nii.gz")
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(ImageFileError, match="empty"):
        read_image(empty)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(ImageFileError, match="cannot read image"):
        read_image(garbage)


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(ImageFileError, match=r"empty\.nii\.gz: image file is empty"):
        read_image(empty)
    with pytest.raises(ImageFileError, match=r"corrupt\.nii\.gz: cannot read image"):
        read_image(corrupt)
    with pytest.raises(ImageFileError, match=r"corrupt\.nii\.gz: cannot read image header"):
        read_image_header(corrupt)
    with pytest.raises(ImageFileError, match="not a file"):
        read_image_header(tmp_path)
    with pytest.raises(ImageFileError, match=r"missing\.nii\.gz: image file not found"):
        read_image(tmp_path / "missing.nii.gz")
    with pytest.raises(ImageFileError, match="unsupported file type"):
        bad = tmp_path / "x.png"
        bad.write_bytes(b"123")
        read_image(bad, endings=SUPPORTED_ENDINGS)


def test_read_image_header_reads_geometry(tmp_path: Path) -> None:
    img = sitk.GetImageFromArray(np.zeros((6, 8, 8), np.int16))
    img.SetSpacing((0.5, 0.7, 2.0))
    img.SetOrigin((1.0, -2.0, 3.0))
    sitk.WriteImage(img, str(tmp_path / "g.nrrd"))
    reader = read_image_header(tmp_path / "g.nrrd")
    assert reader.GetSize() == (8, 8, 6)
    assert reader.GetSpacing() == pytest.approx((0.5, 0.7, 2.0))
    assert reader.GetOrigin() == pytest.approx((1.0, -2.0, 3.0))


def test_dicom_series_checks(tmp_path: Path) -> None:
    image = sitk.Cast(make_image(np.arange(6 * 8 * 9).reshape(6, 8, 9).astype(np.int16), spacing=(0.5, 0.5, 2.0)),
                      sitk.sitkInt16)
    folder = tmp_path / "series"
    files = write_dicom_series(folder, image)
    read = read_image(folder)
    assert read.GetSize() == image.GetSize() and read.GetSpacing() == pytest.approx(image.GetSpacing())
    files[2].unlink()
    with pytest.raises(ImageFileError, match=r"about 1 slice\(s\) missing between positions 2.000 and 6.000 mm"):
        read_image(folder)
    assert read_image(folder, allow_gaps=True).GetSize()[2] == 5
    with pytest.raises(ImageFileError, match="no DICOM series with UID 9.9"):
        read_image(folder, "9.9")
    empty = tmp_path / "no_dicom"
    empty.mkdir()
    with pytest.raises(ImageFileError, match="holds no DICOM series"):
        read_image(empty)


def test_output_formats_links_and_geometry(tmp_path: Path) -> None:
    scan = _write(tmp_path / "scan.nii.gz", _volume())
    for ok in ("seg.nii.gz", "seg.nii", "seg.nrrd", "seg.mha", "SEG.NII.GZ"):
        check_output_paths([tmp_path / ok], inputs=[scan])
    for bad, needle in (("seg.png", "2D image format"), ("seg.mhd", "second file"), ("seg.nhdr", "second file"),
                        ("seg", "no extension"), ("seg.vtk", "unsupported")):
        with pytest.raises(OutputPathError, match=needle):
            check_output_paths([tmp_path / bad])
    with pytest.raises(OutputPathError, match="is the input"):
        check_output_paths([tmp_path / "seg.nii.gz"], [scan], inputs=[scan])  # a sidecar that is the input
    os.link(scan, tmp_path / "hard.nii.gz")
    with pytest.raises(OutputPathError, match="same file"):
        check_output_paths([tmp_path / "hard.nii.gz"], inputs=[scan])
    sheared = make_image(_volume(), direction=(1, 0.2, 0, 0, 0.98, 0, 0, 0, 1))
    assert not is_orthonormal(sheared.GetDirection())
    assert is_orthonormal(make_image(_volume(), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1)).GetDirection())
    check_output_geometry([tmp_path / "seg.nrrd", tmp_path / "seg.mha"], sheared)
    with pytest.raises(OutputPathError, match="sheared .* write .nrrd or .mha"):
        check_output_geometry([tmp_path / "seg.nrrd", tmp_path / "p.nii.gz"], sheared)


def test_itk_reason_keeps_the_informative_line() -> None:
    meta = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: /x/itkMetaImageIO.cxx:490:\n"
                        "ITK ERROR: MetaImageIO(0x55577ca9ad00): File cannot be read: a.mha for reading.\n"
                        "Reason: No such file or directory")
    assert itk_reason(meta) == "File cannot be read: a.mha for reading."
    nrrd = RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: x\n[nrrd] nrrdLoad: trouble\n"
                        "[nrrd] _nrrdEncodingGzip_read: expected 96000 bytes but received 47856\n")
    assert itk_reason(nrrd) == "[nrrd] _nrrdEncodingGzip_read: expected 96000 bytes but received 47856"


@pytest.mark.parametrize(
    "name, sidecar",
    [("case.nii.gz", "case.json"), ("case.nrrd", "case.json"), ("a.b.mha", "a.b.json"), ("x.NII.GZ", "x.json"),
     ("seg.seg.nrrd", "seg.seg.json")],
)
def test_sidecar_name(name: str, sidecar: str) -> None:
    """The one naming rule of a labelmap's sidecar and colour table (predict, pseudolabel, review,
    evaluate and the Slicer module, which reads the names from predict's ``done`` line)."""
    from versemi.outputs import sidecar_paths

    assert sidecar_paths(Path("/d") / name) == (Path("/d") / sidecar, Path("/d") / sidecar.replace(".json", ".ctbl"))


# --- one grid rule ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shift_voxels, same", [(0.05, False), (5e-4, True)])
def test_one_grid_rule_for_check_dataset_training_evaluate_and_review(
    tmp_path: Path, shift_voxels: float, same: bool
) -> None:
    """A label 0.05 voxel off the image grid is refused by check-dataset, training's preprocessing,
    evaluate and the review alike; header round-off (5e-4 voxel) is accepted by all of them."""
    from versemi.data.cache import PreprocessedCache
    from versemi.data.check import ERROR, check_dataset
    from versemi.data.preprocessing import PreprocessingSpec
    from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset
    from versemi.evaluation.report import EvaluationError, evaluate_case
    from versemi.image_headers import grid_differences
    from versemi.review import ReviewError, check_on_grid

    # An oblique grid: the rule is a physical distance, whatever the axes.
    c, s = float(np.cos(0.4)), float(np.sin(0.4))
    root = make_nnunet_dataset(tmp_path, "Dataset911_Grid", [SyntheticStructure("organ", 1, 1.0)], num_cases=1,
                               shape_zyx=(8, 10, 12), spacing_xyz=(0.8, 0.9, 2.0), origin_xyz=(-120.5, 33.25, 400.0),
                               direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    image_path = root / "imagesTr" / "grid_000_0000.nii.gz"
    label_path = root / "labelsTr" / "grid_000.nii.gz"
    reference = tmp_path / "reference.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(label_path)), str(reference))  # on the image grid
    label = sitk.ReadImage(str(label_path))
    step = np.asarray(label.GetDirection()).reshape(3, 3)[:, 0] * label.GetSpacing()[0] * shift_voxels
    label.SetOrigin(tuple(np.asarray(label.GetOrigin()) + step))  # along the first voxel axis
    sitk.WriteImage(label, str(label_path))

    image = sitk.ReadImage(str(image_path))
    assert (grid_differences(image, label) == []) is same
    geometry_errors = [p for p in check_dataset(root) if p.severity == ERROR and "geometry" in p.message]
    assert (geometry_errors == []) is same
    cache = PreprocessedCache(tmp_path / "cache")
    if same:
        assert cache.get("grid_000", image_path, label_path, PreprocessingSpec((1.0, 1.0, 2.0))).labeled
        assert evaluate_case(label_path, reference, {"organ": [1]})[0][0]["dice"] == 1.0
        check_on_grid(label, image_path)
    else:
        with pytest.raises(ValueError, match=r"label grid differs from the image grid.*origin"):
            cache.get("grid_000", image_path, label_path, PreprocessingSpec((1.0, 1.0, 2.0)))
        with pytest.raises(EvaluationError, match="different grids: origin"):
            evaluate_case(label_path, reference, {"organ": [1]})
        with pytest.raises(ReviewError, match="not on the voxel grid.*origin"):
            check_on_grid(label, image_path)
