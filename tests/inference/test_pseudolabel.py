"""``versemi pseudolabel``: every scan of a folder, its one manifest, resume, failures, extra fields, the
review folder it makes (scores from the synthetic prompt, which is never written as a label), and the
migration of a folder that still has the old ``manifest.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from versemi.checkpoint import save_checkpoint
from versemi.cli import main
from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset
from versemi.inference import Predictor
from versemi.inference.pseudolabel import pseudolabel_folder
from versemi.review import ReviewManifest
from versemi.review.legacy import LEGACY_RUN_LOG
from versemi.review.manifest import MANIFEST_NAME
from versemi.review.uncertainty import model_space_uncertainty

from .helpers import tiny_payload


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = make_nnunet_dataset(tmp_path, "Dataset903_Unlabeled", [SyntheticStructure("spleen", 1, 1.5)],
                                 num_cases=3, shape_zyx=(10, 16, 14), with_labels=False)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    # seed 2: a random model whose synthetic prompt would win voxels if it were labelled.
    return (save_checkpoint(tiny_payload(seed=0), folder / "a.pt"),
            save_checkpoint(tiny_payload(seed=1), folder / "b.pt"),
            save_checkpoint(tiny_payload(seed=2), folder / "c.pt"))


def _counting_predictor(checkpoint: Path, done: list[str]) -> Predictor:
    """A predictor that records the scans it actually predicts."""
    predictor = Predictor(checkpoint, device="cpu")
    original = predictor.predict

    def counting(*args, **kwargs):
        done.append(Path(kwargs["image_name"]).name)
        return original(*args, **kwargs)

    predictor.predict = counting  # type: ignore[method-assign]
    return predictor


def _manifest_rows(out: Path) -> list[dict]:
    """The folder's manifest rows (as stored), by case id."""
    assert not (out / LEGACY_RUN_LOG).exists()  # one manifest per folder
    return sorted(json.loads((out / MANIFEST_NAME).read_text())["cases"], key=lambda r: r["case"])


def test_folder_manifest_and_resume(dataset: Path, checkpoints: tuple[Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "pseudo"
    # An nnU-Net raw dataset folder: imagesTr is found, _0000 stripped from case names.
    assert main(["pseudolabel", "-m", str(checkpoints[0]), "-i", str(dataset), "-o", str(out),
                 "--progress", "json", "--prompts", "all"]) == 0
    stdout = capsys.readouterr().out
    messages = [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
    assert messages[-1]["type"] == "done" and messages[-1]["cases"] == 3
    fractions = [m["fraction"] for m in messages if m["type"] == "progress"]
    assert fractions == sorted(fractions)
    rows = _manifest_rows(out)
    assert [r["case"] for r in rows] == ["unlabeled_000", "unlabeled_001", "unlabeled_002"]
    sha = Predictor(checkpoints[0], device="cpu").sha256
    for r in rows:
        assert r["status"] == "pending" and r["error"] is None and r["model"]["sha256"] == sha
        assert r["extra"]["prompts"] == ["organ_a", "spleen", "liver"]
        assert r["pseudo_label"] == f"{r['case']}.nii.gz"  # inside the folder: relative
        assert (out / r["pseudo_label"]).is_file() and Path(r["extra"]["sidecar"]).is_file()
        assert r["image"].endswith(f"{r['case']}_0000.nii.gz") and r["extra"]["seconds"] > 0 and r["updated_at"]
        image = sitk.ReadImage(r["image"])
        assert sitk.ReadImage(str(out / r["pseudo_label"])).GetSize() == image.GetSize()
    assert (out / "unlabeled_000.ctbl").is_file()

    # Resume: same model and prompts -> nothing redone, the manifest keeps one line per case.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST_NAME}
    (out / "unlabeled_001.json").unlink()  # this case is incomplete now and must be redone
    done: list[str] = []
    records = pseudolabel_folder(_counting_predictor(checkpoints[0], done), dataset, out, "all")
    assert done == ["unlabeled_001_0000.nii.gz"]
    assert [r.status for r in records] == ["done"] * 3
    assert (out / "unlabeled_000.nii.gz").stat().st_mtime_ns == mtimes["unlabeled_000.nii.gz"]
    assert len(_manifest_rows(out)) == 3

    # Another model (different SHA-256) redoes every case.
    records = pseudolabel_folder(Predictor(checkpoints[1], device="cpu"), dataset, out, "all")
    other_sha = Predictor(checkpoints[1], device="cpu").sha256
    assert {r["model"]["sha256"] for r in _manifest_rows(out)} == {other_sha}
    assert all(json.loads(Path(r.sidecar).read_text())["model"]["sha256"] == other_sha for r in records)


def test_bad_scan_is_recorded_and_run_goes_on(dataset: Path, checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    broken = dataset / "imagesTr" / "unlabeled_001_0000.nii.gz"
    broken.write_bytes(b"garbage")
    out = tmp_path / "pseudo"
    assert main(["pseudolabel", "-m", str(checkpoints[0]), "-i", str(dataset / "imagesTr"), "-o", str(out),
                 "--progress", "none", "-p", "spleen"]) == 1
    rows = {r["case"]: r for r in _manifest_rows(out)}
    assert rows["unlabeled_001"]["status"] == "failed"
    assert str(broken) in rows["unlabeled_001"]["error"]
    assert rows["unlabeled_001"]["pseudo_label"] is None
    assert not list(out.glob("unlabeled_001*"))  # no partial output for the bad scan
    assert rows["unlabeled_000"]["status"] == rows["unlabeled_002"]["status"] == "pending"
    # A failed case is listed, but neither reviewed nor trained on.
    from versemi.review import ReviewSession, unrefined_cases

    session = ReviewSession(out)
    assert {c.case_id for c in session.cases()} == {"unlabeled_000", "unlabeled_002"}
    assert [c.case_id for c in session.cases("failed")] == ["unlabeled_001"]
    assert session.counts()["failed"] == 1
    assert "unlabeled_001" not in {c.case_id for c in unrefined_cases(out)}
    with pytest.raises(ValueError, match="pseudo-labelling failed"):
        session.reject("unlabeled_001")

    # Once the scan is fixed, the next run pseudo-labels it and the case becomes pending.
    sitk.WriteImage(sitk.ReadImage(str(dataset / "imagesTr" / "unlabeled_000_0000.nii.gz")), str(broken))
    assert main(["pseudolabel", "-m", str(checkpoints[0]), "-i", str(dataset / "imagesTr"), "-o", str(out),
                 "--progress", "none", "-p", "spleen"]) == 0
    fixed = ReviewManifest(out).row("unlabeled_001")
    assert fixed.status == "pending" and fixed.error is None and fixed.pseudo_label.is_file()
    assert [e["action"] for e in fixed.history] == ["failed", "pseudolabel"]


def test_extra_fields_from_model_space_hook(dataset: Path, checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    """A caller's hook sees the chosen prompts only; its fields reach the manifest and the sidecar."""

    def mean_probability(probs, labels, record):
        assert probs.shape[0] == len(labels) == 2
        return {"mean_probability": {"value": float(probs.mean()), "prompts": [e.name for e in labels]},
                "uncertainty": "the review score wins"}

    out = tmp_path / "pseudo"
    records = pseudolabel_folder(Predictor(checkpoints[0], device="cpu"), dataset, out, "spleen,liver",
                                 model_space_hook=mean_probability)
    assert all(0 <= r.extra["mean_probability"]["value"] <= 1 for r in records)
    row = ReviewManifest(out).row(records[0].case)
    assert row.extra["mean_probability"]["prompts"] == ["spleen", "liver"]
    assert row.extra["mean_probability"] == records[0].extra["mean_probability"]
    assert 0 <= row.score <= 1 and row.score == records[0].extra["uncertainty"]["score"]
    prediction = json.loads(Path(row.extra["sidecar"]).read_text())["prediction"]
    assert prediction["mean_probability"] == row.extra["mean_probability"]
    assert prediction["uncertainty"]["score"] == row.score


def test_unknown_prompt_and_empty_folder(checkpoints: tuple[Path, Path], dataset: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    assert main(["pseudolabel", "-m", str(checkpoints[0]), "-i", str(dataset), "-o", str(tmp_path / "o"),
                 "-p", "kidney"]) == 2
    assert "available prompts: organ_a, spleen, liver, all_foreground" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pseudolabel", "-m", str(checkpoints[0]), "-i", str(empty), "-o", str(tmp_path / "o")]) == 2
    assert "no scans found" in capsys.readouterr().err


def test_review_manifest_scores_without_labelling_the_synthetic_prompt(
    dataset: Path, checkpoints: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "review"
    assert main(["pseudolabel", "-m", str(checkpoints[2]), "-i", str(dataset), "-o", str(out),
                 "--progress", "none"]) == 0
    predictor = Predictor(checkpoints[2], device="cpu")
    space = predictor.label_space
    real, synthetic = space.real_prompt_ids, space.synthetic_id
    manifest = ReviewManifest(out)
    rows = manifest.rows()
    assert sorted(r.case for r in rows) == ["unlabeled_000", "unlabeled_001", "unlabeled_002"]
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)  # review order
    assert [e["name"] for e in manifest.load().labels] == ["organ_a", "spleen", "liver"]
    for row in rows:
        assert row.status == "pending" and row.model["sha256"] == predictor.sha256
        assert row.pseudo_label == out / f"{row.case}.nii.gz" and row.image.name == f"{row.case}_0000.nii.gz"
        assert row.extra["sidecar"] == str(out / f"{row.case}.json")
        image = sitk.ReadImage(str(row.image))
        # The score is VerSemi's own signal: the real prompts against the synthetic one, at the model
        # spacing (the same numbers as the library hook on the same prediction).
        expected = predictor.predict(image, real + [synthetic], model_space_hook=model_space_uncertainty)
        assert row.score == pytest.approx(expected.info["uncertainty"]["score"], abs=1e-6)
        assert set(row.uncertainty) >= {"disagreement", "entropy"} and 0 <= row.score <= 1
        sidecar = json.loads(Path(row.extra["sidecar"]).read_text())
        assert sidecar["prediction"]["uncertainty"]["score"] == row.score
        # The synthetic prompt is nowhere in the outputs: labels, colour table, labelmap values...
        assert [e["name"] for e in sidecar["labels"]] == row.extra["prompts"] == ["organ_a", "spleen", "liver"]
        assert "all_foreground" not in (out / f"{row.case}.ctbl").read_text()
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(row.pseudo_label)))
        with_synthetic = sitk.GetArrayFromImage(expected.labelmap)
        assert (with_synthetic == 4).any()  # ...though this model's synthetic prompt would win voxels
        # ...and the labelmap is exactly the one of the real prompts alone.
        alone = sitk.GetArrayFromImage(predictor.predict(image, real).labelmap)
        np.testing.assert_array_equal(written, alone)


def test_resume_keeps_review_manifest_and_files_consistent(
    dataset: Path, checkpoints: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "review"
    pseudolabel_folder(Predictor(checkpoints[2], device="cpu"), dataset, out, "all")
    manifest = ReviewManifest(out)
    scores = {r.case: r.score for r in manifest.rows()}

    # Stopped after the files but before the manifest: nothing is predicted again, the rows come
    # back from the sidecars.
    (out / "manifest.json").unlink()
    done: list[str] = []
    pseudolabel_folder(_counting_predictor(checkpoints[2], done), dataset, out, "all")
    assert done == []
    assert {r.case: r.score for r in manifest.rows()} == scores
    assert all(r.status == "pending" and r.pseudo_label.is_file() for r in manifest.rows())

    # An up-to-date row is left alone (no history entry per resume); an incomplete case is redone.
    history = {r.case: len(r.history) for r in manifest.rows()}
    (out / "unlabeled_002.json").unlink()
    pseudolabel_folder(_counting_predictor(checkpoints[2], done), dataset, out, "all")
    assert done == ["unlabeled_002_0000.nii.gz"]
    after = {r.case: r for r in manifest.rows()}
    assert {c: len(r.history) for c, r in after.items()} == {**history, "unlabeled_002": 2}
    assert after["unlabeled_002"].score == pytest.approx(scores["unlabeled_002"])
    assert (out / "unlabeled_002.json").is_file()

    # A reviewed case keeps its status and refined label when another model pseudo-labels again.
    label = out / "labelsTr" / "unlabeled_000.r1.nii.gz"
    label.parent.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(out / "unlabeled_000.nii.gz")), str(label))
    manifest.set_status("unlabeled_000", "refined", refined_label=label)
    other = Predictor(checkpoints[1], device="cpu")
    pseudolabel_folder(other, dataset, out, "all")
    rows = {r.case: r for r in manifest.rows()}
    assert rows["unlabeled_000"].status == "refined" and rows["unlabeled_000"].refined_label == label
    assert {r.model["sha256"] for r in rows.values()} == {other.sha256}
    sidecars = {c: json.loads((out / f"{c}.json").read_text()) for c in rows}
    assert all(rows[c].score == s["prediction"]["uncertainty"]["score"] for c, s in sidecars.items())

    # Other prompts would change the label values of refined cases: refused before any work.
    with pytest.raises(ValueError, match="label table would change"):
        pseudolabel_folder(_counting_predictor(checkpoints[2], done), dataset, out, "spleen")
    assert done == ["unlabeled_002_0000.nii.gz"]


def test_folder_with_the_old_run_log_is_migrated(dataset: Path, checkpoints: tuple[Path, Path, Path],
                                                 tmp_path: Path) -> None:
    """A folder from when pseudolabel kept its own manifest.jsonl: the failed cases and per-case fields
    it held move into manifest.json, and the old file goes (also when only a review opens the folder)."""
    out = tmp_path / "old"
    pseudolabel_folder(Predictor(checkpoints[0], device="cpu"), dataset, out, "spleen")
    rows = ReviewManifest(out).load().rows
    for row in rows.values():  # as the old versemi wrote it: the run log held these, the rows did not
        row.extra.pop("prompts")
    with ReviewManifest(out).transaction() as state:
        state.rows = {case: row for case, row in rows.items() if case != "unlabeled_002"}
    old_lines = [
        {"case": "unlabeled_000", "image": str(rows["unlabeled_000"].image), "status": "done",
         "pseudo_label": str(rows["unlabeled_000"].pseudo_label), "prompts": ["spleen"], "seconds": 1.5,
         "time": "2026-11-25T23:10:00+00:00", "mean_probability": 0.25},
        {"case": "scan_x", "image": str(tmp_path / "scan_x.nii.gz"), "status": "failed", "pseudo_label": None,
         "error": "scan_x.nii.gz: cannot read image: truncated", "model": {"sha256": "ab" * 32},
         "time": "2026-11-25T23:11:00+00:00"},
        "not json",
    ]
    (out / LEGACY_RUN_LOG).write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n"
                                              for ln in old_lines))
    from versemi.review import ReviewSession

    ReviewSession(out)  # opening the folder for review migrates it
    assert not (out / LEGACY_RUN_LOG).exists()
    migrated = ReviewManifest(out).load().rows
    assert migrated["unlabeled_000"].extra["prompts"] == ["spleen"]
    assert migrated["unlabeled_000"].extra["mean_probability"] == 0.25
    assert migrated["unlabeled_000"].extra["seconds"] > 0  # the row's own value wins
    assert migrated["scan_x"].status == "failed" and "truncated" in migrated["scan_x"].error
    # The run that resumes the folder re-registers the case the old pair had lost from its sidecar.
    done: list[str] = []
    pseudolabel_folder(_counting_predictor(checkpoints[0], done), dataset, out, "spleen")
    assert done == [] and ReviewManifest(out).row("unlabeled_002").status == "pending"
