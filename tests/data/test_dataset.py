"""Tests for versemi.data.dataset: nnU-Net raw folders, plain folders of scans, image reading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.data.dataset import (
    Case,
    DatasetError,
    ImageFolder,
    NnUNetDataset,
    load_dataset_json,
    split_ending,
)
from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset
from versemi.images import read_image

TINY = (6, 8, 8)


def _write(path: Path, shape=TINY, value: float = 1.0) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.full(shape, value, np.float32)), str(path))
    return path


def test_nnunet_dataset_properties(synthetic_datasets: dict[str, Path]) -> None:
    ds = NnUNetDataset(synthetic_datasets["Dataset902_Beta"])
    assert ds.name == "Dataset902_Beta"
    assert ds.file_ending == ".nii.gz"
    assert ds.modality == "CT"
    assert ds.num_channels == 1
    assert ds.labels == {"background": 0, "spleen": 1, "liver": 2}
    assert ds.label_values == [0, 1, 2]
    assert ds.foreground_values == [1, 2]
    assert ds.num_training == 4
    assert ds.dataset_json["channel_names"] == {"0": "CT"}
    assert len(ds) == 4
    assert ds.case_ids == ["beta_000", "beta_001", "beta_002", "beta_003"]
    case = ds.case("beta_002")
    assert case == Case(
        "beta_002",
        (ds.root / "imagesTr" / "beta_002_0000.nii.gz",),
        ds.root / "labelsTr" / "beta_002.nii.gz",
        "Dataset902_Beta",
    )
    assert case.image_path.is_file() and case.is_labeled
    assert case.without_label().label_path is None
    with pytest.raises(KeyError, match="nope"):
        ds.case("nope")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_every_supported_file_ending(tmp_path: Path, ending: str) -> None:
    root = make_nnunet_dataset(tmp_path, "Dataset903_Ends", num_cases=2, shape_zyx=TINY, file_ending=ending)
    ds = NnUNetDataset(root)
    assert ds.file_ending == ending
    assert [c.case_id for c in ds.cases] == ["ends_000", "ends_001"]
    for case in ds.cases:
        assert case.image_path.name.endswith("_0000" + ending)
        assert case.label_path is not None and case.label_path.name == case.case_id + ending
        assert read_image(case.image_path).GetSize() == (8, 8, 6)


def test_case_without_label_and_stray_files(tmp_path: Path) -> None:
    root = make_nnunet_dataset(tmp_path, "Dataset904_Part", num_cases=3, shape_zyx=TINY)
    (root / "labelsTr" / "part_001.nii.gz").unlink()
    (root / "imagesTr" / "notes.txt").write_text("not an image")
    _write(root / "imagesTr" / "other_0000.nrrd")  # wrong ending for this dataset: ignored
    ds = NnUNetDataset(root)
    assert ds.case_ids == ["part_000", "part_001", "part_002"]
    assert ds.case("part_001").label_path is None
    assert ds.case("part_000").label_path is not None


def test_multichannel_case_needs_explicit_handling(tmp_path: Path) -> None:
    root = make_nnunet_dataset(tmp_path, "Dataset905_Multi", num_cases=1, shape_zyx=TINY)
    meta = json.loads((root / "dataset.json").read_text())
    meta["channel_names"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    _write(root / "imagesTr" / "multi_000_0001.nii.gz")
    case = NnUNetDataset(root).cases[0]
    assert [p.name for p in case.image_paths] == ["multi_000_0000.nii.gz", "multi_000_0001.nii.gz"]
    with pytest.raises(DatasetError, match="2 channels"):
        _ = case.image_path


def test_split_ending() -> None:
    assert split_ending("a_0000.nii.gz") == ("a_0000", ".nii.gz")
    assert split_ending("/x/b.NII") == ("b", ".NII")
    assert split_ending("c.nrrd") == ("c", ".nrrd")
    assert split_ending("d.mha") == ("d", ".mha")
    assert split_ending("e.png") is None
    assert split_ending(".nii.gz") is None


def test_dataset_json_errors(tmp_path: Path) -> None:
    root = tmp_path / "Dataset906_Bad"
    (root / "imagesTr").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"dataset\.json not found"):
        _ = NnUNetDataset(root).dataset_json
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="invalid JSON"):
        load_dataset_json(root / "dataset.json")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(DatasetError, match="missing required key.*channel_names.*numTraining.*file_ending"):
        load_dataset_json(root / "dataset.json")
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": [1, 2]}, "numTraining": 0,
         "file_ending": ".nii.gz"}))
    with pytest.raises(DatasetError, match="region labels"):
        _ = NnUNetDataset(root).labels
    with pytest.raises(DatasetError, match="dataset folder not found"):
        NnUNetDataset(tmp_path / "nowhere")


def test_image_folder_of_unlabeled_scans(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    _write(folder / "scan_b.nii.gz")
    _write(folder / "scan_a.mha")
    _write(folder / "scan_c.nrrd")
    (folder / "readme.txt").write_text("ignored")
    (folder / "sub").mkdir()
    _write(folder / "sub" / "nested.nii.gz")  # sub-folders are not searched
    scans = ImageFolder(folder)
    assert scans.name == "scans"
    assert scans.case_ids == ["scan_a", "scan_b", "scan_c"]
    assert all(c.label_path is None and c.dataset == "scans" for c in scans.cases)
    assert scans.cases[0].image_path == (folder / "scan_a.mha").resolve()
    assert ImageFolder(folder, name="pool").cases[0].dataset == "pool"

    _write(folder / "scan_a.nii")
    with pytest.raises(DatasetError, match="same case id 'scan_a'"):
        _ = ImageFolder(folder).cases
    with pytest.raises(DatasetError, match="not found"):
        ImageFolder(tmp_path / "none")
