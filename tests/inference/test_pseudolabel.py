"""``versemi pseudolabel``: every scan of a folder, manifest.jsonl, resume, failures, extra fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk

from versemi.checkpoint import save_checkpoint
from versemi.cli import main
from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset
from versemi.inference import Predictor
from versemi.inference.pseudolabel import MANIFEST_NAME, pseudolabel_folder, read_manifest

from .helpers import tiny_payload


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    folder = make_nnunet_dataset(tmp_path, "Dataset903_Unlabeled", [SyntheticStructure("spleen", 1, 1.5)],
                                 num_cases=3, shape_zyx=(10, 16, 14), with_labels=False)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ckpt")
    return (save_checkpoint(tiny_payload(seed=0), folder / "a.pt"),
            save_checkpoint(tiny_payload(seed=1), folder / "b.pt"))


def _manifest_lines(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / MANIFEST_NAME).read_text().splitlines()]


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
    lines = _manifest_lines(out)
    assert [ln["case"] for ln in lines] == ["unlabeled_000", "unlabeled_001", "unlabeled_002"]
    sha = Predictor(checkpoints[0], device="cpu").sha256
    for ln in lines:
        assert ln["status"] == "done" and ln["model"]["sha256"] == sha
        assert ln["prompts"] == ["organ_a", "spleen", "liver"]
        assert Path(ln["pseudo_label"]).is_file() and Path(ln["sidecar"]).is_file()
        assert Path(ln["pseudo_label"]).name == f"{ln['case']}.nii.gz"
        assert ln["image"].endswith(f"{ln['case']}_0000.nii.gz") and ln["seconds"] > 0 and ln["time"]
        image = sitk.ReadImage(ln["image"])
        assert sitk.ReadImage(ln["pseudo_label"]).GetSize() == image.GetSize()
    assert (out / "unlabeled_000.ctbl").is_file()

    # Resume: same model and prompts -> nothing redone, the manifest keeps one line per case.
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != MANIFEST_NAME}
    (out / "unlabeled_001.json").unlink()  # this case is incomplete now and must be redone
    predictor = Predictor(checkpoints[0], device="cpu")
    done: list[str] = []
    original = predictor.predict_file

    def counting(*args, **kwargs):
        done.append(Path(args[0]).name)
        return original(*args, **kwargs)

    predictor.predict_file = counting  # type: ignore[method-assign]
    records = pseudolabel_folder(predictor, dataset, out, "all")
    assert done == ["unlabeled_001_0000.nii.gz"]
    assert [r.status for r in records] == ["done"] * 3
    assert (out / "unlabeled_000.nii.gz").stat().st_mtime_ns == mtimes["unlabeled_000.nii.gz"]
    assert len(_manifest_lines(out)) == 3

    # Another model (different SHA-256) redoes every case.
    records = pseudolabel_folder(Predictor(checkpoints[1], device="cpu"), dataset, out, "all")
    other_sha = Predictor(checkpoints[1], device="cpu").sha256
    assert {ln["model"]["sha256"] for ln in _manifest_lines(out)} == {other_sha}
    assert all(json.loads(Path(r.sidecar).read_text())["model"]["sha256"] == other_sha for r in records)


def test_bad_scan_is_recorded_and_run_goes_on(dataset: Path, checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    broken = dataset / "imagesTr" / "unlabeled_001_0000.nii.gz"
    broken.write_bytes(b"garbage")
    out = tmp_path / "pseudo"
    assert main(["pseudolabel", "-m", str(checkpoints[0]), "-i", str(dataset / "imagesTr"), "-o", str(out),
                 "--progress", "none", "-p", "spleen"]) == 1
    lines = {ln["case"]: ln for ln in _manifest_lines(out)}
    assert lines["unlabeled_001"]["status"] == "failed"
    assert str(broken) in lines["unlabeled_001"]["error"]
    assert lines["unlabeled_001"]["pseudo_label"] is None
    assert not list(out.glob("unlabeled_001*"))  # no partial output for the bad scan
    assert lines["unlabeled_000"]["status"] == lines["unlabeled_002"]["status"] == "done"


def test_extra_fields_from_model_space_hook(dataset: Path, checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    """Room for a per-case uncertainty score: a hook's fields reach the manifest and the sidecar."""

    def mean_probability(probs, labels, record):
        return {"uncertainty": {"score": float(probs.mean()), "prompts": [e.name for e in labels]}}

    out = tmp_path / "pseudo"
    records = pseudolabel_folder(Predictor(checkpoints[0], device="cpu"), dataset, out, "spleen,liver",
                                 model_space_hook=mean_probability)
    assert all(0 <= r.extra["uncertainty"]["score"] <= 1 for r in records)
    line = _manifest_lines(out)[0]
    assert line["uncertainty"]["prompts"] == ["spleen", "liver"]
    assert read_manifest(out)[line["case"]].extra["uncertainty"] == line["uncertainty"]
    assert json.loads(Path(line["sidecar"]).read_text())["prediction"]["uncertainty"] == line["uncertainty"]


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
