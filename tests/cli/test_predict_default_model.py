"""``versemi predict`` / ``pseudolabel`` without ``--model``: the catalogue's default model.

The catalogue is a temporary one laid out like the packaged catalogue (``VERSEMI_CATALOGUE``), whose
default entry embeds a tiny random model, so these tests run the shipped code path before and after
the real default model exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from inference.helpers import tiny_payload
from models.embedded import flip_byte, make_embedded_catalogue

REPO = Path(__file__).resolve().parents[2]
BUNDLED_SCAN = REPO / "examples" / "data" / "Dataset001_Hippocampus" / "imagesTr" / "hippocampus_023_0000.nii.gz"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue folder whose default model is a tiny random one, embedded."""
    return make_embedded_catalogue(tmp_path_factory.mktemp("shipped"), tiny_payload())


def _versemi(args: list[str], catalogue: Path, models: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VERSEMI_CATALOGUE": str(catalogue), "VERSEMI_MODELS_DIR": str(models)}
    return subprocess.run([sys.executable, "-m", "versemi.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_predict_a_bundled_scan_with_no_model_argument(shipped: Path, tmp_path: Path) -> None:
    proc = _versemi(["predict", "-i", str(BUNDLED_SCAN), "-o", "out.nii.gz", "--threads", "1"],
                    shipped, tmp_path / "cache", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out.nii.gz"
    assert sitk.ReadImage(str(out)).GetSize() == sitk.ReadImage(str(BUNDLED_SCAN)).GetSize()
    sidecar = json.loads((tmp_path / "out.json").read_text())
    entry = json.loads(shipped.read_text())["models"][0]
    assert sidecar["model"] == {"name": "tiny-default", "version": "1.0.0", "sha256": entry["sha256"]}
    assert not (tmp_path / "cache").exists()  # used in place: nothing downloaded or copied


def test_pseudolabel_uses_the_default_model_too(shipped: Path, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(BUNDLED_SCAN, scans / "case_0000.nii.gz")
    proc = _versemi(["pseudolabel", "-i", str(scans), "-o", str(tmp_path / "review"), "--threads", "1",
                     "--prompts", "organ_a"], shipped, tmp_path / "cache", tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "review" / "manifest.json").read_text())
    assert "tiny-default" in json.dumps(manifest)


def test_a_tampered_default_model_is_refused(shipped: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(shipped.parent, copy)
    flip_byte(copy / "models" / "tiny-default-1.0.0.pt")
    proc = _versemi(["predict", "-i", str(BUNDLED_SCAN), "-o", "out.nii.gz"], copy / "catalogue.json",
                    tmp_path / "cache", tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("versemi predict: error: default model tiny-default@1.0.0:")
    assert "is damaged: expected SHA-256" in lines[0]
    assert not (tmp_path / "out.nii.gz").exists()


def test_no_default_model_is_one_clear_line(tmp_path: Path) -> None:
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"format": "versemi-catalogue", "format_version": 1, "models": []}))
    proc = _versemi(["predict", "-i", str(BUNDLED_SCAN), "-o", "out.nii.gz"], catalogue, tmp_path / "cache", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"versemi predict: error: the model catalogue ({catalogue}) names no default model; pass --model FILE "
        "or --model NAME[@VERSION] (see `versemi models list`)"
    ]
