"""Catalogue parsing/validation, model specs and the cache location (no network)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from versemi.environment import default_models_dir
from versemi.models import (
    CatalogueError,
    CatalogueUnavailableError,
    ModelError,
    UnknownModelError,
    catalogue_document,
    load_catalogue,
    parse_catalogue,
    parse_model_spec,
)
from versemi.models.catalogue import version_key

SHA = "ab" * 32


def entry(**overrides) -> dict:
    base = {
        "name": "abdomen-ct",
        "version": "1.0.0",
        "url": "https://example.org/abdomen-ct-1.0.0.pt",
        "sha256": SHA,
        "size": 1234,
        "label_space": ["liver", "spleen"],
        "licence": "CC-BY-4.0",
        "description": "abdominal organs",
    }
    base.update(overrides)
    return base


def document(*models: dict) -> dict:
    return {"format": "versemi-catalogue", "format_version": 1, "models": list(models)}


def write(tmp_path: Path, doc: object, name: str = "catalogue.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_packaged_catalogue_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VERSEMI_CATALOGUE", raising=False)
    catalogue = load_catalogue()
    assert catalogue.source == "packaged"
    for e in catalogue:  # whatever is published must be complete
        assert len(e.sha256) == 64 and e.size > 0 and e.url.startswith("https://")


def test_load_valid_catalogue_and_pick_versions(tmp_path: Path) -> None:
    label_space_dict = {"prompts": [{"name": "liver"}, {"name": "all_foreground", "synthetic": True}]}
    path = write(
        tmp_path,
        document(
            entry(version="1.9.0"),
            entry(version="1.10.0", sha256=SHA.upper(), label_space=label_space_dict, min_versemi="0.1.0"),
            entry(name="brain-mr", version="2", url="models/brain.pt", license="MIT", licence=None),
        ),
    )
    catalogue = load_catalogue(path)
    assert catalogue.source == str(path) and len(catalogue) == 3
    newest = catalogue.get("abdomen-ct")
    assert newest.version == "1.10.0"  # numeric, not text, order
    assert newest.sha256 == SHA  # normalised to lower case
    assert newest.label_space == ("liver", "all_foreground")
    assert catalogue.get("abdomen-ct@1.9.0").version == "1.9.0"
    brain = catalogue.get("brain-mr")
    assert brain.licence == "MIT"
    # relative URLs resolve against the catalogue's own location
    assert brain.url == (tmp_path / "models" / "brain.pt").as_uri()
    assert brain.file_name == "brain-mr-2.pt"
    # round trip through catalogue_document
    again = parse_catalogue(catalogue_document(catalogue), source="again")
    assert again.entries == catalogue.entries


def test_unknown_model_lists_available(tmp_path: Path) -> None:
    catalogue = load_catalogue(write(tmp_path, document(entry())))
    with pytest.raises(UnknownModelError, match=r"abdomen-ct@1\.0\.0") as info:
        catalogue.get("spleen")
    assert "'spleen'" in str(info.value)
    with pytest.raises(UnknownModelError):
        catalogue.get("abdomen-ct@9")


@pytest.mark.parametrize(
    ("models", "problem"),
    [
        ([entry(sha256="1234")], "'sha256' must be 64 hexadecimal digits"),
        ([entry(size=-1)], "'size' must be a positive integer"),
        ([entry(size=True)], "'size' must be a positive integer"),
        ([entry(size="12")], "'size' must be a positive integer"),
        ([entry(label_space=[])], "'label_space'"),
        ([entry(label_space="liver")], "'label_space'"),
        ([entry(name="../evil")], "invalid model name"),
        ([entry(version="1.0/2")], "invalid model version"),
        ([entry(url="ftp://example.org/x.pt")], "must be http://, https:// or file://"),
        ([entry(licence="")], "'licence' must be a non-empty string"),
        ([entry(min_versemi="latest")], "'min_versemi'"),
        ([entry(), entry()], "duplicate entry abdomen-ct@1.0.0"),
        (["not an object"], "each model must be a JSON object"),
    ],
)
def test_invalid_entries_name_file_and_problem(tmp_path: Path, models: list, problem: str) -> None:
    path = write(tmp_path, document(*models))
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path)
    message = str(info.value)
    assert str(path) in message and problem in message


def test_missing_label_space_is_an_error(tmp_path: Path) -> None:
    bad = entry()
    del bad["label_space"]
    with pytest.raises(CatalogueError, match="'label_space' is missing"):
        load_catalogue(write(tmp_path, document(bad)))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ([], "top level must be a JSON object"),
        ({"format": "other", "format_version": 1, "models": []}, "'format' must be"),
        ({"format": "versemi-catalogue", "format_version": 99, "models": []}, "format_version 99"),
        ({"format": "versemi-catalogue", "format_version": 1, "models": {}}, "'models' must be a list"),
    ],
)
def test_invalid_documents(tmp_path: Path, content: object, problem: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(CatalogueError, match=problem) as info:
        load_catalogue(path)
    assert str(path) in str(info.value)


def test_relative_url_needs_a_location() -> None:
    with pytest.raises(CatalogueError, match="relative url"):
        parse_catalogue(document(entry(url="x.pt")), source="memory")


def test_missing_catalogue_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogueUnavailableError, match="file not found"):
        load_catalogue(tmp_path / "nope.json")
    with pytest.raises(CatalogueUnavailableError, match="cannot fetch"):
        load_catalogue("http://127.0.0.1:9/catalogue.json")  # discard port: refused at once


def test_env_var_selects_catalogue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, document(entry()))
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(path))
    assert load_catalogue().source == str(path)
    assert len(load_catalogue()) == 1
    # an explicit source wins over the environment
    other = write(tmp_path, document(), "other.json")
    assert len(load_catalogue(other)) == 0


def test_model_spec_and_versions() -> None:
    assert parse_model_spec("abdomen-ct") == ("abdomen-ct", None)
    assert parse_model_spec("abdomen-ct@1.2.0") == ("abdomen-ct", "1.2.0")
    for bad in ["", "@1", "a@", "a/b", "a@1@2", ".hidden"]:
        with pytest.raises(ModelError):
            parse_model_spec(bad)
    assert version_key("1.10.0") > version_key("1.9.2")
    assert version_key("2") > version_key("1.99")
    assert version_key("1.0.0") < version_key("1.0.0post1")


def test_models_dir_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "custom"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_models_dir() == tmp_path / "custom"
    monkeypatch.delenv("VERSEMI_MODELS_DIR")
    assert default_models_dir() == tmp_path / "xdg" / "versemi" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    assert default_models_dir() == tmp_path / "home" / ".cache" / "versemi" / "models"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_models_dir() == tmp_path / "home" / "Library" / "Caches" / "versemi" / "models"


def test_localisers_and_heldout_dice_round_trip_and_are_checked(tmp_path: Path) -> None:
    raw = entry(localisers={"Dataset001_Hippocampus": {"file": "models/loc.pt", "sha256": SHA}},
                heldout_dice={"liver": 0.91})
    catalogue = write(tmp_path, document(raw))
    parsed = load_catalogue(str(catalogue)).get("abdomen-ct")
    assert parsed.localisers == {"Dataset001_Hippocampus": {"file": "models/loc.pt", "sha256": SHA}}
    assert parsed.localiser_paths["Dataset001_Hippocampus"] == tmp_path / "models" / "loc.pt"
    assert parsed.heldout_dice == {"liver": 0.91} and parsed.to_dict()["heldout_dice"] == {"liver": 0.91}
    for bad, problem in (({"localisers": {"D": {"file": "../x.pt", "sha256": SHA}}}, "inside the catalogue"),
                         ({"localisers": {"D": {"file": "x.pt"}}}, "64 hexadecimal"),
                         ({"heldout_dice": {"liver": 91}}, "between 0 and 1")):
        with pytest.raises(CatalogueError, match=problem):
            parse_catalogue({**catalogue_document([]), "models": [entry(**bad)]}, source="x", base_url="")


def test_models_info_prints_every_prompts_heldout_dice(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VERSEMI_CATALOGUE", raising=False)
    from versemi.cli import main as cli_main

    assert cli_main(["models", "info", "versemi-default"]) == 0
    out = capsys.readouterr().out
    table = out.split("## Held-out Dice per prompt", 1)[1].split("## Catalogue entry", 1)[0]
    dice = load_catalogue().default_entry().heldout_dice["hippocampus_anterior"]
    assert f"| hippocampus_anterior | {100 * dice:.1f} |" in table and "all_foreground" not in table
    for name in load_catalogue().default_entry().label_space:
        assert name == "all_foreground" or f"| {name} |" in table
