"""The one loop over a folder of scans (``versemi.inference.folder``) that ``predict -i FOLDER`` and
``pseudolabel`` share: the output-folder check, the cases it hands out, and one line per failed case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.inference.batch import predict_folder
from versemi.inference.folder import ScanFolder
from versemi.inference.pseudolabel import pseudolabel_folder
from versemi.inference.results import PredictionError

from .helpers import make_image


def _scans(folder: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    folder.mkdir(parents=True)
    for name in names:
        sitk.WriteImage(make_image(np.zeros((4, 5, 6), np.float32)), str(folder / f"{name}.nii.gz"))
    return folder


@pytest.mark.parametrize("run", [predict_folder, pseudolabel_folder], ids=["predict", "pseudolabel"])
@pytest.mark.parametrize("inside", ["", "out", "out/deeper"])
def test_predict_and_pseudolabel_refuse_an_output_folder_inside_the_input(tmp_path: Path, run, inside: str) -> None:
    scans = _scans(tmp_path / "scans")
    output = scans / inside
    with pytest.raises(PredictionError, match=f"{output}: the output folder must not be the input folder"):
        ScanFolder(scans, output)
    # The same refusal, before the predictor is used (a stand-in that has nothing) or anything is created.
    with pytest.raises(PredictionError, match=f"{output}: the output folder must not be the input folder"):
        run(object(), scans, output)
    assert sorted(p.name for p in scans.iterdir()) == ["a.nii.gz", "b.nii.gz"]


def test_an_output_folder_beside_imagesTr_is_allowed(tmp_path: Path) -> None:
    dataset = tmp_path / "Dataset001_X"
    _scans(dataset / "imagesTr", ("a_0000", "a_0001", "b_0000"))
    folder = ScanFolder(dataset, dataset / "predictions")
    assert [name for name, _ in folder.scans] == ["a", "b"]  # channel 0 only, _0000 stripped


def test_missing_and_empty_input_folders(tmp_path: Path) -> None:
    with pytest.raises(PredictionError, match="input folder not found"):
        ScanFolder(tmp_path / "none", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictionError, match="no scans found"):
        ScanFolder(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cases_and_one_line_per_failure(tmp_path: Path) -> None:
    folder = ScanFolder(_scans(tmp_path / "scans"), tmp_path / "out", ".nrrd")
    results = []
    for case in folder.cases():
        assert (case.index, case.total) == (len(results) + 1, 2)
        assert case.output == tmp_path / "out" / f"{case.name}.nrrd" and case.sidecar == tmp_path / "out" / f"{case.name}.json"

        def work() -> str:
            if case.name == "a":
                raise PermissionError(13, "Permission denied", str(case.output))
            return "written"

        results.append((case.attempt(work), case.error))
    assert (tmp_path / "out").is_dir()  # created by the loop
    assert results == [(None, f"{tmp_path / 'out' / 'a.nrrd'}: Permission denied"), ("written", None)]
