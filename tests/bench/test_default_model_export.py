"""bench/default_model_export.py (``bench/default_model.py export``) on a tiny trained model: fp16
weights, card in both places, a valid default entry in a copy of the packaged catalogue that verifies
and predicts."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from bench_scripts import load_bench_script
from versemi.checkpoint import load_checkpoint
from versemi.inference import Predictor
from versemi.models import load_catalogue, resolve_default_model

REPO = Path(__file__).resolve().parents[2]

DATA_README = """# data

| dataset | cases | modality | labels | spacing (mm) | source and licence |
|---|---|---|---|---|---|
| Dataset901_Alpha | 3 | MR | 1 organ_a | 1 iso | Alpha challenge, CC BY-SA 4.0 |
| Dataset902_Beta | 2 | MR | 1 spleen, 2 liver | 1 iso | Beta archive, CC BY-NC-SA 4.0 |

Attribution: Someone et al., "Alpha" (2020);
Other et al., "Beta" (2021).

Storage: ...
"""


def test_export_packages_a_verified_default_model(trained_checkpoint: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    export = load_bench_script("default_model_export")
    data = tmp_path / "data"
    for dataset, cases in (("Dataset901_Alpha", 3), ("Dataset902_Beta", 2)):
        (data / dataset / "labelsTr").mkdir(parents=True)
        for i in range(cases):
            (data / dataset / "labelsTr" / f"c{i}.nii.gz").write_bytes(b"")
    (data / "README.md").write_text(DATA_README)
    work = tmp_path / "work"
    work.mkdir()
    (work / "train_done.json").write_text(json.dumps({"checkpoint": str(trained_checkpoint)}))
    (work / "heldout.json").write_text(json.dumps({"Dataset901_Alpha": ["c2"], "Dataset003_Other": ["x"]}))
    (work / "evaluation.json").write_text(json.dumps({
        "command": "python bench/default_model.py evaluate",
        "summary": {"Dataset901_Alpha/organ_a": {"dice": 0.8766, "hd95": 2.5, "n": 1}},
    }))
    package = tmp_path / "resources"
    package.mkdir()
    shutil.copy(REPO / "training" / "src" / "versemi" / "resources" / "catalogue.json", package / "catalogue.json")
    from versemi.inference.localiser import Localiser, LocaliserNet

    # A localiser shipped in the package for one of the model's datasets: the entry references it.
    localiser = Localiser("Dataset901_Alpha", LocaliserNet(2)).save(package / "models" / "localiser-Dataset901_Alpha.pt")
    args = argparse.Namespace(work=work, data=data, checkpoint=None, name="tiny-default", version="2.0.0",
                              package=package, docs=tmp_path / "docs" / "models")
    assert export.export(args) == 0

    weights = package / "models" / "tiny-default-2.0.0.pt"
    payload = load_checkpoint(weights)
    assert payload["model_name"] == "tiny-default" and payload["model_version"] == "2.0.0"
    assert {v.dtype for v in payload["model"].values() if v.is_floating_point()} == {torch.float16}
    assert "optimizer" not in payload
    card = (package / "models" / "tiny-default-2.0.0.md").read_text()
    assert card == (tmp_path / "docs" / "models" / "tiny-default.md").read_text()
    assert "research only, not for clinical use" in card
    assert "| Dataset901_Alpha/organ_a | 87.7 | 2.50 | 1 |" in card
    assert "| Dataset901_Alpha | 2 | 1 | Alpha challenge, CC BY-SA 4.0 |" in card
    assert 'Attribution: Someone et al., "Alpha" (2020); Other et al., "Beta" (2021).' in card
    assert "`versemi demo --data ../shared/data --heldout-only`" in card and "Field of view" in card
    assert "| organ_a | " in card.split("## Post-processing per prompt", 1)[1]  # each prompt's rule

    monkeypatch.setenv("VERSEMI_CATALOGUE", str(package / "catalogue.json"))
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "cache"))
    entry, path = resolve_default_model()
    assert entry.spec == "tiny-default@2.0.0" and path == weights
    assert entry.heldout == {"Dataset901_Alpha": ("c2",)}  # datasets the model has no plan for are dropped
    assert entry.url.endswith("/tiny-default-2.0.0/tiny-default-2.0.0.pt") and entry.licence == "CC-BY-NC-SA-4.0"
    assert entry.card_path.read_text() == card
    assert set(entry.plans) == {"Dataset901_Alpha", "Dataset902_Beta"}
    assert entry.heldout_dice == {"organ_a": 0.8766}
    assert entry.localisers["Dataset901_Alpha"]["file"] == "models/localiser-Dataset901_Alpha.pt"
    assert entry.localiser_paths["Dataset901_Alpha"] == localiser
    predictor = Predictor(path, device="cpu")
    assert predictor.model_info["name"] == "tiny-default" and predictor.model_info["version"] == "2.0.0"
    # Exported again (e.g. after a new evaluation): the entry is replaced, not duplicated.
    assert export.export(args) == 0
    specs = [e.spec for e in load_catalogue()]
    assert specs.count("tiny-default@2.0.0") == 1
    assert [e.spec for e in load_catalogue() if e.default] == ["tiny-default@2.0.0"]  # one default only


def test_export_refuses_without_evaluation(tmp_path: Path) -> None:
    export = load_bench_script("default_model_export")
    args = argparse.Namespace(work=tmp_path, data=tmp_path, checkpoint=None, name="x", version="1")
    with pytest.raises(SystemExit, match="run `bench/default_model.py evaluate` first"):
        export.export(args)
