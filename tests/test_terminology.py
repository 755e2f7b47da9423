"""Every terminology code VerSemi ships is an entry of Slicer's own terminology files.

``tests/resources/slicer_terminology_codes.json`` holds the codes (category, type, modifiers;
anatomic regions) of Slicer's ``Modules/Loadable/Terminologies/Resources/*.json`` at the commit it
names. Type modifiers Slicer's files lack (anterior/posterior) must come from DICOM PS3.16 CID 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from versemi.labels import ANTERIOR, KNOWN_STRUCTURES, POSTERIOR, Prompt, SnomedCode, display_name

SLICER = json.loads((Path(__file__).parent / "resources" / "slicer_terminology_codes.json").read_text(encoding="utf-8"))
CONTEXT = "Segmentation category and type - DICOM master list"  # what VerSemi's Slicer tags name
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
# DICOM PS3.16 CID 2 "Anatomic Modifier" codes used where Slicer's files have no modifier.
DICOM_CID2 = {ANTERIOR, POSTERIOR}


def _entries() -> dict[tuple[str, str], dict]:
    return {(e["category"][1], e["type"][1]): e for e in SLICER["segmentation"][CONTEXT]["entries"]}


def check_in_slicer(snomed: SnomedCode) -> list[str]:
    """What of ``snomed`` is not in Slicer's terminology (empty when all is)."""
    entry = _entries().get((snomed.category_code, snomed.code))
    if entry is None:
        return [f"type {snomed.code} {snomed.meaning!r} in category {snomed.category_code} is not in {CONTEXT}"]
    problems = []
    if entry["type"][2] != snomed.meaning or entry["category"][2] != snomed.category_meaning:
        problems.append(f"meaning {snomed.meaning!r} differs from Slicer's {entry['type'][2]!r}")
    if snomed.modifier_code:
        slicer_modifiers = {(m[1], m[2]) for m in entry.get("modifiers", [])}
        if (snomed.modifier_code, snomed.modifier_meaning) not in slicer_modifiers | DICOM_CID2:
            problems.append(f"modifier {snomed.modifier_code} {snomed.modifier_meaning!r} of {snomed.meaning}")
    if snomed.region_code:
        regions = {(e["region"][1], e["region"][2]) for e in SLICER["anatomic"][ANATOMIC_CONTEXT]["entries"]}
        if (snomed.region_code, snomed.region_meaning) not in regions:
            problems.append(f"anatomic region {snomed.region_code} {snomed.region_meaning!r}")
    return problems


@pytest.mark.parametrize("name", sorted(KNOWN_STRUCTURES))
def test_every_known_structure_code_is_in_slicers_terminology(name: str) -> None:
    assert check_in_slicer(KNOWN_STRUCTURES[name][0]) == []


def test_every_prompt_of_the_shipped_model_is_in_slicers_terminology() -> None:
    """The default model's checkpoint stores codes from when it was trained; loading gives today's."""
    from versemi.checkpoint import Checkpoint
    from versemi.models import resolve_default_model

    _, path = resolve_default_model()
    prompts = list(Checkpoint.load(path).label_space.prompts)
    real = [p for p in prompts if not p.synthetic]
    assert real and all(p.snomed is not None for p in real)
    for prompt in real:
        assert check_in_slicer(prompt.snomed) == [], prompt.name
    tags = {(p.snomed.code, p.snomed.modifier_code, p.snomed.region_code) for p in real}
    assert len(tags) == len(real), "two prompts share one terminology entry"


def test_anterior_and_posterior_hippocampus_are_distinct_and_readable() -> None:
    anterior, posterior = KNOWN_STRUCTURES["hippocampus_anterior"][0], KNOWN_STRUCTURES["hippocampus_posterior"][0]
    assert anterior.code == posterior.code == "5366008"  # Slicer's Hippocampus
    assert (anterior.modifier_meaning, posterior.modifier_meaning) == ("Anterior", "Posterior")
    assert display_name("hippocampus_anterior") == "Hippocampus, anterior"
    assert display_name("left_atrium") == "Left atrium"
