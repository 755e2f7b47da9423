"""The annotation loop end to end, outside Slicer but with Slicer's real MRML classes (slicer-core).

train a tiny model (``versemi train``) -> pseudo-label a folder of new scans with a review score ->
refine two cases through :class:`~versemi.review.ReviewSession` (the calls the review panel makes),
the label going image + pseudo-label -> MRML segmentation -> labelmap node -> file -> ``save_refined``;
reject one -> retrain from the previous model with the review folder in the config -> the training
log lists the refined cases as labeled and the others as unlabeled.

Pseudo-labelling is ``versemi pseudolabel`` itself: its output folder is the review folder
(labelmaps, sidecars and the folder's scored ``manifest.json``). The retraining
part is ``versemi train --resume-from`` with the config's ``review_dirs`` key (skipped where either is
missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from versemi.review import ReviewManifest, ReviewSession, refined_cases, unrefined_cases

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = {"backbone": "vnet", "base_filters": 8, "depth": 3}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("versemi.cli.train") is None or importlib.util.find_spec("versemi.inference") is None,
        reason="needs the trainer (versemi.cli.train) and the predictor (versemi.inference)",
    ),
]


def _train_cli_has(option: str) -> bool:
    from versemi.cli import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return option in parser._option_string_actions  # noqa: SLF001 - argparse has no public lookup


def _config_has_review_dirs() -> bool:
    from versemi.data import config

    return "review_dirs" in getattr(config, "TOP_LEVEL_KEYS", ())


def _write_config(path: Path, root: Path, datasets: dict[str, Path], max_steps: int, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "datasets": [
            {"path": str(datasets["alpha"]), "labeled": ["alpha_000", "alpha_001", "alpha_002"]},
            {"path": str(datasets["beta"]), "labeled": ["beta_000", "beta_001", "beta_002"]},
        ],
        "target_spacing": [1.5, 1.5, 2.0],
        "patch_size": [16, 16, 16],
        "validation": {"fraction": 0.0},
        "seed": 0,
        "model": dict(TINY_MODEL),
        "training": {"max_steps": max_steps, "batch_size": 2, "unlabeled_batch_size": 2, "num_workers": 0,
                     "validate_every": 1000, "checkpoint_every": 1000, "log_every": 1, "tensorboard": False,
                     "lr": 1e-2},
        "cache_dir": str(root / "cache"),
        "output_dir": str(root / path.stem),
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _last_checkpoint(run_dir: Path) -> Path:
    found = sorted(run_dir.rglob("last.pt"), key=lambda p: p.stat().st_mtime)
    assert found, f"no last.pt under {run_dir}"
    return found[-1]


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained tiny model and a review folder pseudo-labelled by it (shared by the tests below)."""
    import torch

    from versemi.cli import main
    from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("loop")
    datasets = {
        "alpha": make_nnunet_dataset(root, "Dataset901_Alpha", [SyntheticStructure("organ_a", 1, 1.0)],
                                     num_cases=4, shape_zyx=(16, 24, 24), seed=1),
        "beta": make_nnunet_dataset(root, "Dataset902_Beta", [SyntheticStructure("spleen", 1, 1.5),
                                    SyntheticStructure("liver", 2, -1.0)], num_cases=4, shape_zyx=(16, 24, 24),
                                    modality="CT", spacing_xyz=(1.2, 1.2, 2.0), seed=2),
    }
    incoming = make_nnunet_dataset(root / "incoming", "Dataset905_New", [SyntheticStructure("spleen", 1, 1.5),
                                   SyntheticStructure("liver", 2, -1.0)], num_cases=3, shape_zyx=(16, 24, 24),
                                   modality="CT", spacing_xyz=(1.2, 1.2, 2.0), seed=5, with_labels=False)
    scans = sorted((incoming / "imagesTr").glob("*.nii.gz"))
    config = _write_config(root / "first.yaml", root, datasets, max_steps=100)
    assert main(["train", str(config), "--device", "cpu", "--no-progress"]) == 0
    model = _last_checkpoint(root / "first")
    review = root / "review"
    # Every real prompt is labelled; the synthetic prompt is computed for the score only.
    assert main(["pseudolabel", "-m", str(model), "-i", str(incoming), "-o", str(review), "--device", "cpu",
                 "--threads", "1", "--progress", "none"]) == 0
    return {"root": root, "datasets": datasets, "model": model, "review": review, "scans": scans}


def _load_volume(scene: Any, path: Path) -> Any:
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    assert storage.ReadData(node), f"cannot read {path}"
    scene.RemoveNode(storage)
    return node


def _edit_in_slicer(scene: Any, case: Any, edit: Any, out: Path) -> np.ndarray:
    """The panel's round trip: load image + label to edit as a segmentation, edit, export, write a file.

    Returns the labelmap the annotator ends up with (as an array, z-y-x).
    """
    import slicer
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy
    from VerSemiSegmenterLib.segmentation_import import import_prediction, read_label_table

    volume = _load_volume(scene, case.image)
    imported = import_prediction(case.label_to_edit, case.sidecar, volume)
    segmentation = imported.segmentation_node
    # The annotator edits in the Segment Editor; then "Save refined label" exports every segment, in
    # label-value order, to a labelmap on the image's geometry.
    ids = vtk.vtkStringArray()
    for segment_id in imported.segment_ids:
        ids.InsertNextValue(segment_id)
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "refined")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation, ids, labelmap, volume)
    dims = labelmap.GetImageData().GetDimensions()
    voxels = vtk_to_numpy(labelmap.GetImageData().GetPointData().GetScalars()).reshape(dims[::-1])
    # The export numbers segments 1..N: back to the label values (the modality guard may have skipped a
    # prompt, e.g. the MR organ_a on these CT scans, so the values need not be 1..N), as the panel does.
    values = np.array([0, *(e.value for e in read_label_table(case.sidecar))], dtype=voxels.dtype)
    voxels[...] = values[voxels]
    edit(voxels)  # in place: the vtkImageData is edited
    labelmap.GetImageData().Modified()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(out))
    assert storage.WriteData(labelmap)
    scene.RemoveNode(storage)
    return np.array(voxels)


def test_pseudolabel_review_and_refine_through_mrml(loop: dict[str, Any], tmp_path: Path) -> None:
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module found is not slicer-core")
    sys.path.insert(0, str(REPO / "VerSemiSegmenter"))

    review = loop["review"]
    manifest = ReviewManifest(review)
    rows = manifest.rows()
    assert len(rows) == 3 and all(r.status == "pending" and r.score is not None for r in rows)
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    for r in rows:  # the tiny model finds something in every scan: the review has real content
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(r.pseudo_label))).any(), f"{r.case}: empty pseudo-label"
    assert all(0.0 <= r.score <= 1.0 and set(r.uncertainty) >= {"disagreement", "entropy"} for r in rows)

    session = ReviewSession(review, user="annotator")
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    expected: dict[str, np.ndarray] = {}
    try:
        for k, edit in enumerate((lambda v: v.__setitem__((slice(2, 6), slice(3, 9), slice(4, 10)), 1),
                                  lambda v: v.__setitem__((slice(None), slice(None), slice(0, 3)), 0))):
            case = session.next_case()
            assert case is not None and case.case_id == rows[k].case  # highest score first
            pseudo = sitk.GetArrayFromImage(sitk.ReadImage(str(case.pseudo_label)))
            pseudo_bytes = case.pseudo_label.read_bytes()
            edited = _edit_in_slicer(scene, case, edit, tmp_path / f"{case.case_id}_edited.nrrd")
            # The MRML round trip alone reproduces the pseudo-label exactly; only the edit differs.
            reference = pseudo.copy()
            edit(reference)
            np.testing.assert_array_equal(edited, reference)
            saved = session.save_refined(case.case_id, tmp_path / f"{case.case_id}_edited.nrrd")
            assert saved.status == "refined" and saved.updated_by == "annotator"
            stored = sitk.ReadImage(str(saved.refined_label))
            image = sitk.ReadImage(str(case.image))
            assert (stored.GetSize(), stored.GetSpacing(), stored.GetOrigin(), stored.GetDirection()) == (
                image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
            np.testing.assert_array_equal(sitk.GetArrayFromImage(stored), reference)
            assert case.pseudo_label.read_bytes() == pseudo_bytes  # the original pseudo-label is kept
            expected[case.case_id] = reference
    finally:
        scene.Clear(True)

    last = session.next_case()
    assert last is not None
    session.reject(last.case_id, reason="artefact")
    assert session.next_case() is None
    assert {c.case_id for c in refined_cases(review)} == set(expected)
    assert [c.case_id for c in unrefined_cases(review)] == [last.case_id]
    assert all(c.label_path is None for c in unrefined_cases(review))


@pytest.mark.skipif(not (_train_cli_has("--resume-from") and _config_has_review_dirs()),
                    reason="needs `versemi train --resume-from` and the config key review_dirs")
def test_retraining_uses_refined_cases_as_labeled(loop: dict[str, Any]) -> None:
    from versemi.cli import main
    from versemi.review import review_dataset_name
    from versemi.training.run_log import read_jsonl

    review = loop["review"]
    refined = {c.case_id for c in refined_cases(review)}
    unrefined = {c.case_id for c in unrefined_cases(review)}
    if len(refined) < 2:
        pytest.skip("run with test_pseudolabel_review_and_refine_through_mrml first (it refines the cases)")
    root = loop["root"]
    config = _write_config(root / "second.yaml", root, loop["datasets"], max_steps=4,
                           # The datasets mix MR and CT, so the review folder says what its scans are.
                           review_dirs=[{"path": str(review), "modality": "CT"}])
    assert main(["train", str(config), "--resume-from", str(loop["model"]), "--device", "cpu",
                 "--no-progress"]) == 0
    name = review_dataset_name(review)
    starts = [r for log in sorted((root / "second").rglob("train_log.jsonl")) for r in read_jsonl(log)
              if r.get("event") == "start"]
    assert starts, "no start event in the training log"
    for start in starts:
        assert set(start["cases"]["labeled"].get(name, [])) == refined
        assert not refined & set(start["cases"]["unlabeled"].get(name, []))
    assert any(set(s["cases"]["unlabeled"].get(name, [])) == unrefined for s in starts)  # stage 2 uses them


def test_retrained_model_preprocesses_review_sources_like_their_datasets(loop: dict[str, Any]) -> None:
    from versemi.checkpoint import load_checkpoint
    from versemi.inference import Predictor
    from versemi.review import review_dataset_name

    runs = sorted((loop["root"] / "second").rglob("last.pt")) if (loop["root"] / "second").is_dir() else []
    if not runs:
        pytest.skip("run test_retraining_uses_refined_cases_as_labeled first (it retrains with the review folder)")
    name = review_dataset_name(loop["review"])
    payload = load_checkpoint(runs[-1], map_location="cpu", for_inference=True)
    from versemi.data.plans import Plans

    assert Plans.from_dict(payload["plans"]).spec_for(name).modality == "CT"
    predictor = Predictor(runs[-1], device="cpu")
    space = predictor.label_space
    groups = predictor.preprocessing_groups(space.real_prompt_ids)
    modality_of = {space.names[space.real_prompt_ids[i]]: g.spec.modality for g in groups for i in g.positions}
    # (organ_a is trained from MR data and from the CT review folder: either preprocessing is right.)
    assert modality_of["spleen"] == modality_of["liver"] == "CT"
