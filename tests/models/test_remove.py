"""``versemi models remove`` and the catalogue's ``default`` flag (used by the Slicer panel)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from versemi.data.plans import Plans
from versemi.data.preprocessing import PreprocessingSpec

from versemi.checkpoint import save_checkpoint
from versemi.labels import LabelSpace
from versemi.cli import main as cli_main
from versemi.models import CatalogueError, catalogue_document, import_model, parse_catalogue, read_manifest
from versemi.models.catalogue import Catalogue, CatalogueEntry


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "default-cache-not-used"))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(tmp_path / "no-default-catalogue.json"))
    return tmp_path / "cache"


def _checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    payload = {
        "model_config": {"backbone": "tiny"},
        "label_space": LabelSpace.from_dataset_labels({"D": {"labels": {"background": 0, "organ_a": 1}}}).to_dict(),
        "plans": Plans.single(PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0)), (16, 16, 16), ["D"]).to_dict(),
        "model": {"weight": torch.randn(64)},
    }
    return save_checkpoint(payload, path)


def test_remove_deletes_file_and_record_and_keeps_the_others(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for version, seed in (("1", 0), ("2", 1)):
        import_model(_checkpoint(tmp_path / f"m{version}.pt", seed), name="mine", version=version,
                     catalogue=Catalogue([]), cache_dir=cache)
    common = ["--catalogue", str(tmp_path / "none.json"), "--models-dir", str(cache)]

    assert cli_main(["models", "remove", "mine@1", *common]) == 0
    out = capsys.readouterr().out
    assert "mine@1: removed" in out and str(cache / "mine-1.pt") in out
    assert not (cache / "mine-1.pt").exists() and (cache / "mine-2.pt").is_file()
    assert [m.spec for m in read_manifest(cache)] == ["mine@2"]

    assert cli_main(["models", "remove", "mine@1", *common]) == 2
    err = capsys.readouterr().err
    assert "mine@1 is not installed" in err and "mine@2" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    assert cli_main(["models", "remove", "mine", *common]) == 0  # newest installed version
    capsys.readouterr()
    assert read_manifest(cache) == [] and not (cache / "mine-2.pt").exists()


def test_default_flag_is_parsed_listed_and_validated(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = b"x" * 10
    fields = dict(version="1.0", url="https://example.invalid/m.pt", sha256=hashlib.sha256(data).hexdigest(),
                  size=len(data), label_space=("liver",), licence="CC0-1.0")
    entries = [CatalogueEntry(name="plain", **fields), CatalogueEntry(name="chosen", default=True, **fields)]
    document = catalogue_document(entries)
    assert "default" not in document["models"][0] and document["models"][1]["default"] is True
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(document), encoding="utf-8")

    assert cli_main(["models", "list", "--json", "--catalogue", str(path), "--models-dir", str(cache)]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert rows["chosen"]["default"] is True and rows["plain"]["default"] is False

    bad = {**document, "models": [{**document["models"][0], "default": "yes"}]}
    with pytest.raises(CatalogueError, match="'default' must be true or false"):
        parse_catalogue(bad, source="test")
