"""Embedded models: a catalogue entry whose file ships beside the catalogue (as the default model ships
inside the package), listed as installed, verified and loaded exactly like a downloaded one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from versemi.cli import main as cli_main
from versemi.inference import Predictor
from versemi.models import (
    CatalogueEntry,
    CatalogueError,
    ModelNotInstalledError,
    NoDefaultModelError,
    load_catalogue,
    model_record_for_path,
    parse_catalogue,
    resolve_default_model,
    resolve_model,
    verify_all,
    verify_model,
)

from inference.helpers import tiny_payload
from models.embedded import flip_byte, make_embedded_catalogue

HELDOUT = {"Dataset901_Alpha": ["alpha_001", "alpha_002"]}
PLANS = {"Dataset901_Alpha": {"modality": "MR", "target_spacing": [1.5, 1.5, 1.5], "patch_size": [16, 16, 16]}}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    catalogue = make_embedded_catalogue(tmp_path / "shipped", tiny_payload(), heldout=HELDOUT, plans=PLANS)
    cache = tmp_path / "cache"
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(catalogue))
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(cache))
    return {"catalogue": catalogue, "cache": cache, "model": catalogue.parent / "models" / "tiny-default-1.0.0.pt"}


def test_entry_fields_resolve_beside_the_catalogue(env: dict[str, Path]) -> None:
    catalogue = load_catalogue()
    entry = catalogue.default_entry()
    assert entry is not None and entry.spec == "tiny-default@1.0.0"
    assert entry.embedded_path == env["model"] and entry.card_path == env["model"].with_suffix(".md")
    assert entry.heldout == {"Dataset901_Alpha": ("alpha_001", "alpha_002")}
    assert entry.is_heldout("Dataset901_Alpha", "alpha_001") is True
    assert entry.is_heldout("Dataset901_Alpha", "alpha_007") is False
    assert entry.is_heldout("Dataset902_Beta", "beta_001") is None  # neither held out nor planned: unknown
    assert CatalogueEntry(**{**entry.__dict__, "plans": {**entry.plans, "Dataset902_Beta": {}}}).is_heldout(
        "Dataset902_Beta", "beta_001") is False  # trained on that dataset, no case of it held out
    assert entry.plans["Dataset901_Alpha"]["patch_size"] == [16, 16, 16]
    # The entry round-trips as written (relative paths, not the resolved ones).
    written = json.loads(env["catalogue"].read_text())["models"][0]
    assert {k: v for k, v in entry.to_dict().items() if k in written} == written


def test_remote_catalogue_ignores_embedded_files(env: dict[str, Path]) -> None:
    document = json.loads(env["catalogue"].read_text())
    catalogue = parse_catalogue(document, source="https://example.org/c.json", base_url="https://example.org/c.json")
    entry = catalogue.get("tiny-default")
    assert entry.embedded == "models/tiny-default-1.0.0.pt" and entry.embedded_path is None  # a plain download
    assert entry.card_path is None


@pytest.mark.parametrize("value", ["../outside.pt", "/abs/model.pt", "models\\x.pt", "C:/x.pt", ""])
def test_embedded_paths_must_stay_in_the_catalogue_folder(env: dict[str, Path], value: str) -> None:
    document = json.loads(env["catalogue"].read_text())
    document["models"][0]["embedded"] = value
    with pytest.raises(CatalogueError, match="'embedded'"):
        parse_catalogue(document, source="test", base_dir=env["catalogue"].parent)


def test_only_one_default_name_and_valid_summaries(env: dict[str, Path]) -> None:
    document = json.loads(env["catalogue"].read_text())
    other = {**document["models"][0], "name": "other"}
    with pytest.raises(CatalogueError, match="more than one default model"):
        parse_catalogue({**document, "models": [document["models"][0], other]}, source="test")
    newer = {**document["models"][0], "version": "1.1.0"}
    assert parse_catalogue({**document, "models": [document["models"][0], newer]}).default_entry().version == "1.1.0"
    bad_plans = {**document["models"][0], "plans": {"D": {"modality": "MR", "target_spacing": [1, 1],
                                                           "patch_size": [16, 16, 16]}}}
    with pytest.raises(CatalogueError, match="target_spacing"):
        parse_catalogue({**document, "models": [bad_plans]}, source="test")
    bad_heldout = {**document["models"][0], "heldout": {"D": "case_1"}}
    with pytest.raises(CatalogueError, match="heldout"):
        parse_catalogue({**document, "models": [bad_heldout]}, source="test")


def test_embedded_model_is_installed_verified_and_resolved(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert resolve_model("tiny-default") == env["model"]
    entry, path = resolve_default_model()
    assert entry.spec == "tiny-default@1.0.0" and path == env["model"]
    result = verify_model("tiny-default")
    assert result.ok and result.embedded and "shipped with versemi" in result.message
    assert [r.name for r in verify_all()] == ["tiny-default"]

    assert cli_main(["models", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["status"] == "installed" and row["embedded"] is True and row["default"] is True
    assert row["path"] == str(env["model"]) and row["heldout"] == HELDOUT
    assert cli_main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "tiny-default@1.0.0  installed (embedded)" in table and "default model" in table
    assert cli_main(["models", "verify"]) == 0
    assert "tiny-default@1.0.0: OK" in capsys.readouterr().out
    assert cli_main(["models", "path", "tiny-default"]) == 0
    assert capsys.readouterr().out.strip() == str(env["model"])
    assert not env["cache"].exists()  # nothing was copied or downloaded


def test_models_info_prints_the_card_then_the_entry(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["models", "info", "tiny-default"]) == 0
    out = capsys.readouterr().out
    card = env["model"].with_suffix(".md").read_text()
    assert out.startswith(card.rstrip("\n"))
    entry = json.loads(out.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert entry["name"] == "tiny-default" and entry["status"] == "installed" and entry["embedded"] is True
    assert entry["plans"] == PLANS and entry["path"] == str(env["model"])
    assert cli_main(["models", "info", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is neither in the catalogue" in err and len(err.strip().splitlines()) == 1


def test_predictor_knows_an_embedded_file_by_its_entry(env: dict[str, Path]) -> None:
    record = model_record_for_path(env["model"])
    assert record is not None and record.source == "embedded" and record.spec == "tiny-default@1.0.0"
    predictor = Predictor(resolve_model("tiny-default"), device="cpu")
    assert predictor.model_info["name"] == "tiny-default" and predictor.model_info["version"] == "1.0.0"
    assert predictor.model_info["sha256"] == load_catalogue().get("tiny-default").sha256


def test_tampered_copy_is_refused_with_one_line(env: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(env["catalogue"].parent, copy)
    flip_byte(copy / "models" / "tiny-default-1.0.0.pt")
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(copy / "catalogue.json"))
    result = verify_model("tiny-default")
    assert not result.ok and "is damaged" in result.message and "reinstall versemi" in result.message
    with pytest.raises(ModelNotInstalledError, match="is damaged"):
        resolve_default_model()
    assert cli_main(["models", "verify"]) == 1
    err = capsys.readouterr().err
    assert "tiny-default@1.0.0" in err and "is damaged" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["models", "list", "--json", "--verify"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["status"] == "DAMAGED" and row["embedded"] is True
    assert cli_main(["models", "list", "--verify"]) == 0
    assert "tiny-default@1.0.0  DAMAGED (embedded)" in capsys.readouterr().out


def test_a_cache_copy_is_used_before_the_embedded_file(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["models", "import", str(env["model"])]) == 0  # recognised by its SHA-256
    capsys.readouterr()
    cached = env["cache"] / "tiny-default-1.0.0.pt"
    assert resolve_model("tiny-default") == cached
    assert cli_main(["models", "list", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["models"]
    assert row["status"] == "installed" and row["embedded"] is False
    assert cli_main(["models", "remove", "tiny-default"]) == 0  # the cache copy goes, the embedded stays
    capsys.readouterr()
    assert resolve_model("tiny-default") == env["model"]
    assert cli_main(["models", "remove", "tiny-default"]) == 2
    assert "ships with versemi" in capsys.readouterr().err


def test_no_default_model_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": "versemi-catalogue", "format_version": 1, "models": []}))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(empty))
    with pytest.raises(NoDefaultModelError, match="names no default model; pass --model"):
        resolve_default_model()


def test_default_listed_but_not_installed_says_how_to_get_it(env: dict[str, Path], monkeypatch) -> None:
    document = json.loads(env["catalogue"].read_text())
    del document["models"][0]["embedded"]
    plain = env["catalogue"].with_name("download-only.json")
    plain.write_text(json.dumps(document))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(plain))
    with pytest.raises(ModelNotInstalledError, match="versemi models download tiny-default@1.0.0"):
        resolve_default_model()


def test_entry_helper_prints_embedded_fields_and_the_plans_summary(env: dict[str, Path], capsys) -> None:
    assert cli_main(["models", "entry", str(env["model"]), "--name", "tiny-default", "--version", "2.0.0",
                     "--url", "https://example.org/tiny-default-2.0.0.pt", "--licence", "CC0-1.0",
                     "--embedded", "models/tiny-default-2.0.0.pt", "--card", "models/tiny-default-2.0.0.md",
                     "--default", "--heldout", "Dataset901_Alpha=alpha_001,alpha_002"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert raw["default"] is True and raw["embedded"] == "models/tiny-default-2.0.0.pt"
    assert raw["heldout"] == HELDOUT
    assert raw["plans"]["Dataset901_Alpha"] == {"modality": "MR", "target_spacing": [1.5, 1.5, 1.5],
                                                "patch_size": [16, 16, 16]}
    assert set(raw["plans"]) == {"Dataset901_Alpha", "Dataset902_Beta"}
