"""The models shipped inside the package (embedded entries of the packaged catalogue).

Each check runs on every embedded entry of ``versemi/resources/catalogue.json``; while the catalogue
ships none the entry checks are skipped (say so), and they bite as soon as one is added: the file is
in the package data, verifies (size, SHA-256), loads with ``weights_only=True``, matches its entry
(prompts, plans), is compact, its card is the one in ``docs/models/``, and every bundled example case
of a dataset it lists held-out cases for is held out.
"""

from __future__ import annotations

import fnmatch
import shutil
import sys
from pathlib import Path

import pytest

from versemi.checkpoint import Checkpoint
from versemi.models import load_catalogue, verify_model
from versemi.models.catalogue import CatalogueEntry

from models.embedded import flip_byte

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "training" / "src" / "versemi"
EXAMPLES = REPO / "examples" / "data"
DOCS_MODELS = REPO / "docs" / "models"
MAX_SIZE = 20 * 1024 * 1024  # the budget for the shipped weights


def _packaged() -> list[CatalogueEntry]:
    return [e for e in load_catalogue(str(PACKAGE / "resources" / "catalogue.json")) if e.embedded]


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[CatalogueEntry]:
    monkeypatch.delenv("VERSEMI_CATALOGUE", raising=False)
    monkeypatch.setenv("VERSEMI_MODELS_DIR", str(tmp_path / "empty-cache"))
    entries = _packaged()
    if not entries:
        pytest.skip("the packaged catalogue embeds no model yet")
    return entries


def _package_data_patterns() -> list[str]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        tomllib = pytest.importorskip("tomli")
    pyproject = tomllib.loads((REPO / "training" / "pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["tool"]["setuptools"]["package-data"]["versemi"])


def test_package_data_ships_the_models_folder() -> None:
    patterns = _package_data_patterns()
    for name in ("resources/catalogue.json", "resources/models/example-1.0.0.pt",
                 "resources/models/example-1.0.0.md"):
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} would not be installed"


def test_at_most_one_default_and_it_is_usable_without_a_download(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VERSEMI_CATALOGUE", raising=False)
    catalogue = load_catalogue()
    default = catalogue.default_entry()
    if default is None:
        pytest.skip("the packaged catalogue names no default model yet")
    assert default.embedded_path is not None, "the default model must ship with versemi (embedded)"


def test_embedded_files_are_package_data_and_verify(embedded: list[CatalogueEntry]) -> None:
    patterns = _package_data_patterns()
    for entry in embedded:
        for relative in filter(None, (entry.embedded, entry.card)):
            assert any(fnmatch.fnmatch(f"resources/{relative}", p) for p in patterns), f"{relative} not package data"
        assert entry.embedded_path is not None and entry.embedded_path.is_file(), entry.embedded
        assert entry.size <= MAX_SIZE, f"{entry.spec}: {entry.size} bytes > {MAX_SIZE}"
        result = verify_model(entry.spec)
        assert result.ok and result.embedded, result.message
        assert entry.url.startswith("https://"), "a release URL for later downloads"


def test_embedded_checkpoint_matches_its_entry(embedded: list[CatalogueEntry]) -> None:
    for entry in embedded:
        checkpoint = Checkpoint.load(entry.embedded_path, expected_sha256=entry.sha256)
        assert tuple(checkpoint.label_space.names) == entry.label_space
        assert entry.plans, f"{entry.spec}: no plans summary"
        for name, summary in entry.plans.items():
            plan = checkpoint.plans.plan_for(name)
            assert summary["modality"] == plan.spec.modality
            assert summary["target_spacing"] == pytest.approx(list(plan.target_spacing))
            assert summary["patch_size"] == list(plan.patch_size)
        checkpoint.build_model()  # the weights fit the architecture


def test_cards_are_the_docs_copies(embedded: list[CatalogueEntry]) -> None:
    for entry in embedded:
        assert entry.card_path is not None and entry.card_path.is_file(), f"{entry.spec}: no model card"
        docs = DOCS_MODELS / f"{entry.name}.md"
        assert docs.is_file(), f"{docs} missing (the card is also published in the docs)"
        assert docs.read_text(encoding="utf-8") == entry.card_path.read_text(encoding="utf-8"), (
            f"{docs} differs from the packaged card {entry.card_path}: copy one over the other"
        )


def test_docs_model_cards_belong_to_packaged_models() -> None:
    names = {e.name for e in _packaged() if e.card}
    for card in sorted(DOCS_MODELS.glob("*.md")) if DOCS_MODELS.is_dir() else []:
        assert card.stem in names, f"{card} is no packaged model's card"


def test_bundled_examples_are_held_out(embedded: list[CatalogueEntry]) -> None:
    from versemi.inference.io import find_images

    for entry in embedded:
        for dataset, cases in entry.heldout.items():
            folder = EXAMPLES / dataset
            if not folder.is_dir():
                continue
            bundled = [case for case, _ in find_images(folder)]
            missing = sorted(set(bundled) - set(cases))
            assert not missing, f"{entry.spec}: bundled {dataset} cases not held out: {missing}"


def test_a_tampered_copy_of_the_shipped_model_is_refused(embedded: list[CatalogueEntry], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    resources = PACKAGE / "resources"
    copy = tmp_path / "resources"
    shutil.copytree(resources, copy)
    monkeypatch.setenv("VERSEMI_CATALOGUE", str(copy / "catalogue.json"))
    for entry in embedded:
        flip_byte(copy / entry.embedded)
        result = verify_model(entry.spec)
        assert not result.ok and "is damaged" in result.message


def test_shipped_localisers_are_package_data_verify_and_fit_their_model(embedded: list[CatalogueEntry]) -> None:
    from versemi.inference.coarse_to_fine import Localisers, catalogue_localisers

    patterns = _package_data_patterns()
    for entry in embedded:
        refs = catalogue_localisers(entry)
        assert set(refs) == set(entry.localisers), f"{entry.spec}: a localiser file is missing"
        for dataset, ref in refs.items():
            relative = entry.localisers[dataset]["file"]
            assert any(fnmatch.fnmatch(f"resources/{relative}", p) for p in patterns), f"{relative} not package data"
            assert dataset in entry.plans, f"{entry.spec}: localiser of {dataset}, which the model was not trained on"
            assert ref.path.stat().st_size < 2**20 and Localisers(refs).get(dataset).dataset == dataset
