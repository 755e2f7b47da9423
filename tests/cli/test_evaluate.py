"""``versemi evaluate`` and ``evaluate_folders`` end to end on small generated label maps."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.cli import main
from versemi.evaluation.report import EvaluationError, evaluate_folders

SPACING_XYZ = (0.8, 0.8, 2.5)
ORIGIN_XYZ = (-10.0, 4.0, 7.5)
DIRECTION = (0, 1, 0, -1, 0, 0, 0, 0, 1)  # rotated in-plane: not the identity
SHAPE_ZYX = (12, 12, 14)
DATASET = "Dataset950_Eval"


def _write(array: np.ndarray, path: Path, spacing=SPACING_XYZ, origin=ORIGIN_XYZ) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path), useCompression=True)


def _reference(case: int) -> np.ndarray:
    """Spleen (1): a 6^3 cube at z 2..7; liver (2): a box elsewhere, moving a little per case."""
    ref = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    ref[2:8, 0:6, 0:6] = 1
    ref[1:5, 7:11, 8 + case % 3 : 12 + case % 3] = 2
    return ref


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """Three reference cases with dataset.json, and predictions:

    - eval_000: spleen shifted by 2 slices along z (hand-computed: Dice 2/3, HD95 = 2 x 2.5 mm,
      NSD@2mm = 96/152), liver exact;
    - eval_001: exact for both;
    - eval_002: spleen exact, liver missed (empty prediction).
    """
    labels = tmp_path / DATASET / "labelsTr"
    preds = tmp_path / "predictions"
    labels.mkdir(parents=True)
    preds.mkdir()
    (tmp_path / DATASET / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1, "liver": 2},
                    "numTraining": 3, "file_ending": ".nii.gz"})
    )
    for i in range(3):
        ref = _reference(i)
        pred = ref.copy()
        if i == 0:
            pred[pred == 1] = 0
            pred[0:6, 0:6, 0:6] = 1
        if i == 2:
            pred[pred == 2] = 0
        _write(ref, labels / f"eval_{i:03d}.nii.gz")
        _write(pred, preds / f"eval_{i:03d}.nii.gz")
    return {"labels": labels, "preds": preds, "root": tmp_path}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_cli_end_to_end_outputs_agree(folders, capsys):
    rc = main(["evaluate", "--predictions", str(folders["preds"]), "--labels", str(folders["labels"])])
    assert rc == 0
    out_dir = folders["preds"] / "evaluation"
    assert sorted(p.name for p in out_dir.iterdir()) == ["metrics.csv", "metrics.json", "summary.md"]

    rows = _read_csv(out_dir / "metrics.csv")
    assert [(r["case"], r["label"]) for r in rows] == [
        (f"eval_{i:03d}", name) for i in range(3) for name in ("spleen", "liver")
    ]
    by_key = {(r["case"], r["label"]): r for r in rows}
    shifted = by_key[("eval_000", "spleen")]
    assert float(shifted["dice"]) == pytest.approx(2 / 3)
    assert float(shifted["hd95"]) == pytest.approx(5.0)  # 2 slices x 2.5 mm, in mm
    assert float(shifted["nsd"]) == pytest.approx(96 / 152)
    missed = by_key[("eval_002", "liver")]
    assert (missed["status"], missed["dice"], missed["hd95"]) == ("pred_empty", "0.0", "inf")

    report = json.loads((out_dir / "metrics.json").read_text())
    json_rows = {(c["case"], name): m for c in report["cases"] for name, m in c["labels"].items()}
    assert set(json_rows) == set(by_key)
    for key, row in by_key.items():
        for metric in ("dice", "nsd"):
            assert json_rows[key][metric] == pytest.approx(float(row[metric]))
        hd = json_rows[key]["hd95"]
        assert (hd is None) == (row["hd95"] == "inf")
    assert json_rows[("eval_002", "liver")]["hd95"] is None  # undefined, never 0

    liver = report["summary"]["liver"]
    assert liver["n"] == 3 and liver["hd95_n"] == 2 and liver["hd95_undefined"] == 1
    assert liver["n_pred_empty"] == 1
    assert liver["dice"]["mean"] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3
    assert liver["hd95"]["mean"] == pytest.approx(0.0)  # over the 2 defined cases
    spleen = report["summary"]["spleen"]
    assert spleen["dice"]["mean"] == pytest.approx((2 / 3 + 2) / 3)
    assert spleen["hd95"]["mean"] == pytest.approx(5.0 / 3)
    assert report["labels"] == {"spleen": [1], "liver": [2]}
    assert report["cases"][2]["prediction"] == str((folders["preds"] / "eval_002.nii.gz").resolve())

    summary = (out_dir / "summary.md").read_text()
    assert f"| spleen | 3 | {spleen['dice']['mean']:.3f} ± {spleen['dice']['std']:.3f} |" in summary
    assert f"| liver | 3 | {liver['dice']['mean']:.3f} ± {liver['dice']['std']:.3f} | 0.00 ± 0.00 (n=2) |" in summary
    assert "| spleen |" in capsys.readouterr().out


def test_sidecar_maps_prediction_values_by_name(folders, tmp_path):
    preds = tmp_path / "swapped"
    preds.mkdir()
    for i in range(3):
        ref = _reference(i)
        swapped = np.where(ref == 1, 2, np.where(ref == 2, 1, 0))  # the model's order: liver, spleen
        _write(swapped, preds / f"eval_{i:03d}.nii.gz")
        labels = [{"value": 1, "name": "Liver", "prompt_id": 0}, {"value": 2, "name": "spleen", "prompt_id": 1}]
        if i == 1:
            labels = labels[1:]  # this case was predicted for the spleen only
            swapped[swapped == 1] = 0
            _write(swapped, preds / f"eval_{i:03d}.nii.gz")
        (preds / f"eval_{i:03d}.json").write_text(json.dumps({"labels": labels}))
    names = {"spleen": 1, "liver": 2}

    result = evaluate_folders(preds, folders["labels"], names)
    assert all(r["dice"] == 1.0 for r in result.rows)
    assert [(r["case"], r["label"]) for r in result.rows if r["case"] == "eval_001"] == [("eval_001", "spleen")]
    assert result.not_predicted == {"eval_001": ["liver"]}
    assert result.summary["liver"]["n"] == 2
    liver_row = next(r for r in result.rows if r["label"] == "liver")
    assert (liver_row["ref_values"], liver_row["pred_values"]) == ("2", "1")

    ignored = evaluate_folders(preds, folders["labels"], names, use_sidecars=False)
    assert ignored.summary["spleen"]["dice"]["mean"] == 0.0  # values compared as is: swapped

    with pytest.raises(EvaluationError, match="dataset.json"):
        evaluate_folders(preds, folders["labels"], None)  # a sidecar needs reference names
    with pytest.raises(EvaluationError, match="none of the reference labels"):
        evaluate_folders(preds, folders["labels"], {"kidney": 1})  # names that never match


def test_grid_mismatch_is_an_error_naming_both_files(folders, capsys):
    bad = folders["preds"] / "eval_001.nii.gz"
    _write(_reference(1), bad, spacing=(0.8, 0.8, 3.0))
    out_dir = folders["root"] / "out"
    rc = main(["evaluate", "--predictions", str(folders["preds"]), "--labels", str(folders["labels"]),
               "--output", str(out_dir)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "different grids" in err and "spacing" in err
    assert str(bad) in err and str(folders["labels"] / "eval_001.nii.gz") in err
    assert not out_dir.exists()  # no partial outputs

    _write(_reference(1), bad, origin=(-10.0, 4.0, 9.0))
    with pytest.raises(EvaluationError, match="origin"):
        evaluate_folders(folders["preds"], folders["labels"])


def test_missing_predictions_fail_unless_allowed(folders, capsys):
    (folders["preds"] / "eval_002.nii.gz").unlink()
    args = ["evaluate", "--predictions", str(folders["preds"]), "--labels", str(folders["labels"])]
    assert main(args) == 2
    assert "eval_002" in capsys.readouterr().err

    assert main(args + ["--allow-missing", "--quiet"]) == 0
    report = json.loads((folders["preds"] / "evaluation" / "metrics.json").read_text())
    assert report["missing_predictions"] == ["eval_002"]
    assert [c["case"] for c in report["cases"]] == ["eval_000", "eval_001"]
    assert "eval_002" in (folders["preds"] / "evaluation" / "summary.md").read_text()


def test_no_matching_and_unreadable_files(folders, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    _write(_reference(0), other / "unrelated_case.nii.gz")
    assert main(["evaluate", "--predictions", str(other), "--labels", str(folders["labels"])]) == 2
    assert "no prediction" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--predictions", str(empty), "--labels", str(folders["labels"])]) == 2
    assert "no prediction files" in capsys.readouterr().err

    corrupt = folders["preds"] / "eval_001.nii.gz"
    corrupt.write_bytes(b"this is not a nifti file")
    assert main(["evaluate", "--predictions", str(folders["preds"]), "--labels", str(folders["labels"])]) == 2
    assert str(corrupt) in capsys.readouterr().err


def test_without_names_values_are_labels_and_absent_ones_count_as_both_empty(folders, tmp_path):
    labels = tmp_path / "plain_labels"
    labels.mkdir()
    for i in range(3):
        ref = _reference(i)
        if i == 1:
            ref[ref == 2] = 0
        _write(ref, labels / f"eval_{i:03d}.nrrd")  # another format than the predictions
    preds = tmp_path / "plain_preds"
    preds.mkdir()
    for i in range(3):
        pred = _reference(i)
        if i == 1:
            pred[pred == 2] = 0
        _write(pred, preds / f"eval_{i:03d}.mha")
    result = evaluate_folders(preds, labels, None, nsd_tolerance_mm=1.0)
    assert list(result.summary) == ["1", "2"]
    both_empty = [r for r in result.rows if r["status"] == "both_empty"]
    assert [(r["case"], r["label"]) for r in both_empty] == [("eval_001", "2")]
    assert result.summary["2"]["n_both_empty"] == 1 and result.summary["2"]["dice"]["mean"] == 1.0


def test_region_labels_and_labels_map(folders, tmp_path):
    region = evaluate_folders(folders["preds"], folders["labels"], {"organs": [1, 2]})
    assert list(region.summary) == ["organs"] and region.summary["organs"]["n"] == 3

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({f"{DATASET}:1": {"name": "Splenic Tissue"}}))
    rc = main(["evaluate", "--predictions", str(folders["preds"]), "--labels", str(folders["labels"]),
               "--labels-map", str(mapping), "--output", str(tmp_path / "mapped"), "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "mapped" / "metrics.json").read_text())
    assert list(report["labels"]) == ["splenic_tissue", "liver"]

    mapping.write_text(json.dumps({"Dataset999_Other:1": {"name": "x"}}))
    rc = main(["evaluate", "--predictions", str(folders["preds"]), "--labels", str(folders["labels"]),
               "--labels-map", str(mapping)])
    assert rc == 2
