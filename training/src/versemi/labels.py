"""The label space: the target structures ("prompts") a VerSemi model can segment.

A prompt is a name, the (dataset, label value) pairs it comes from, an RGB colour and a SNOMED CT code
where one exists; the last prompt is always the synthetic "all foreground" prompt. The label space
comes from the datasets' ``dataset.json`` files plus an optional mapping file, keyed by
``"<dataset>:<label value>"``::

    {"Dataset004_SpleenCT:1": {"name": "spleen", "color": [157, 108, 162],
                               "snomed": {"code": "78961009", "meaning": "Spleen"}},
     "Dataset010_Other:3": {"name": "spleen"}}

Labels with the same name (after mapping) are ONE prompt with several sources, so two datasets that
both annotate the spleen train the same prompt. Checkpoints store it (:meth:`LabelSpace.to_dict`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

SYNTHETIC_PROMPT_NAME = "all_foreground"

# SNOMED CT categories used for the Slicer terminology tags.
ANATOMICAL_STRUCTURE = ("123037004", "Anatomical Structure")
MORPHOLOGICALLY_ALTERED = ("49755003", "Morphologically Altered Structure")
TISSUE = ("85756007", "Tissue")
# Type modifiers: laterality as in Slicer's terminology files; anterior/posterior from DICOM PS3.16
# CID 2 "Anatomic Modifier" (Slicer's files have no such modifier for any type).
LEFT = ("7771000", "Left")
RIGHT = ("24028007", "Right")
ANTERIOR = ("255549009", "Anterior")
POSTERIOR = ("255551008", "Posterior")


@dataclass(frozen=True)
class SnomedCode:
    """A structure's terminology as Slicer and DICOM SEG code it (all SNOMED CT, scheme ``SCT``).

    Attributes:
        code, meaning: the segmented property type (e.g. ``5366008`` Hippocampus).
        category_code, category_meaning: its category (e.g. Anatomical Structure).
        modifier_code, modifier_meaning: a type modifier (e.g. Left, Anterior), or empty.
        region_code, region_meaning: an anatomic region (e.g. Heart for the heart's muscle), or empty.
    """

    code: str
    meaning: str
    category_code: str = ANATOMICAL_STRUCTURE[0]
    category_meaning: str = ANATOMICAL_STRUCTURE[1]
    modifier_code: str = ""
    modifier_meaning: str = ""
    region_code: str = ""
    region_meaning: str = ""

    def to_dict(self) -> dict[str, str]:
        out = {
            "code": self.code,
            "meaning": self.meaning,
            "category_code": self.category_code,
            "category_meaning": self.category_meaning,
        }
        for key in ("modifier_code", "modifier_meaning", "region_code", "region_meaning"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SnomedCode":
        return cls(
            code=str(d["code"]),
            meaning=str(d["meaning"]),
            category_code=str(d.get("category_code", ANATOMICAL_STRUCTURE[0])),
            category_meaning=str(d.get("category_meaning", ANATOMICAL_STRUCTURE[1])),
            **{k: str(d.get(k) or "") for k in ("modifier_code", "modifier_meaning", "region_code", "region_meaning")},
        )


def _sct(code: str, meaning: str, altered: bool = False, modifier: tuple[str, str] = ("", ""),
         region: tuple[str, str] = ("", ""), category: tuple[str, str] | None = None) -> SnomedCode:
    cat = category or (MORPHOLOGICALLY_ALTERED if altered else ANATOMICAL_STRUCTURE)
    return SnomedCode(code, meaning, cat[0], cat[1], modifier[0], modifier[1], region[0], region[1])


# Known structures: normalised name -> (terminology, RGB colour). Every code is an entry of Slicer's
# terminology files ("Segmentation category and type - DICOM master list", anatomic regions from
# "Anatomic codes - DICOM master list"; tests/test_terminology.py checks them against a copy).
# Colours follow Slicer's GenericAnatomyColors where it has the structure. Sides are Slicer's
# laterality modifiers; the hippocampus parts are Hippocampus with the DICOM anterior/posterior
# modifiers; the myocardium is Slicer's "Muscle" (Tissue) in the anatomic region Heart.
KNOWN_STRUCTURES: dict[str, tuple[SnomedCode, tuple[int, int, int]]] = {
    "liver": (_sct("10200004", "Liver"), (221, 130, 101)),
    "spleen": (_sct("78961009", "Spleen"), (157, 108, 162)),
    "kidney": (_sct("64033007", "Kidney"), (185, 102, 83)),
    "left_kidney": (_sct("64033007", "Kidney", modifier=LEFT), (185, 102, 83)),
    "right_kidney": (_sct("64033007", "Kidney", modifier=RIGHT), (185, 102, 83)),
    "pancreas": (_sct("15776009", "Pancreas"), (249, 180, 111)),
    "stomach": (_sct("69695003", "Stomach"), (216, 132, 105)),
    "gallbladder": (_sct("28231008", "Gallbladder"), (139, 150, 98)),
    "aorta": (_sct("15825003", "Aorta"), (224, 97, 76)),
    "lung": (_sct("39607008", "Lung"), (197, 165, 145)),
    "heart": (_sct("80891009", "Heart"), (206, 110, 84)),
    "left_atrium": (_sct("82471001", "Left atrium"), (181, 85, 57)),
    "right_atrium": (_sct("73829009", "Right atrium"), (176, 120, 120)),
    "left_ventricle": (_sct("87878005", "Left ventricle"), (145, 60, 66)),
    "right_ventricle": (_sct("53085002", "Right ventricle"), (111, 184, 210)),
    "myocardium": (_sct("71616004", "Muscle", category=TISSUE, region=("80891009", "Heart")), (206, 110, 84)),
    "brain": (_sct("12738006", "Brain"), (250, 250, 225)),
    "prostate": (_sct("41216001", "Prostate"), (230, 158, 140)),
    "urinary_bladder": (_sct("89837001", "Bladder"), (222, 154, 132)),
    "hippocampus": (_sct("5366008", "Hippocampus"), (220, 216, 20)),
    "hippocampus_anterior": (_sct("5366008", "Hippocampus", modifier=ANTERIOR), (220, 216, 20)),
    "hippocampus_posterior": (_sct("5366008", "Hippocampus", modifier=POSTERIOR), (96, 160, 220)),
    "tumor": (_sct("108369006", "Neoplasm", altered=True), (253, 232, 158)),
    "lesion": (_sct("4147007", "Mass", altered=True), (253, 232, 158)),  # Slicer has no "Lesion" type
}
_ALIASES = {
    "tumour": "tumor",
    "bladder": "urinary_bladder",
    "la": "left_atrium",
    "lv": "left_ventricle",
    "rv": "right_ventricle",
    "myo": "myocardium",
    "kidneys": "kidney",
    "liver_tumor": "tumor",
    "pancreas_tumor": "tumor",
    "lung_tumor": "tumor",
}
SYNTHETIC_COLOR = (128, 174, 128)

# A fixed palette for structures without a known colour (distinct, readable on grey images).
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
]


def normalize_name(name: str) -> str:
    """Lower-case, spaces/dashes to underscores: ``"Left Atrium"`` -> ``"left_atrium"``."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def display_name(name: str) -> str:
    """A prompt name as a Slicer user reads it: ``hippocampus_anterior`` -> ``"Hippocampus, anterior"``,
    ``left_atrium`` -> ``"Left atrium"``."""
    snomed, _ = lookup_structure(name)
    if snomed is not None and snomed.modifier_meaning:
        return f"{snomed.meaning}, {snomed.modifier_meaning.lower()}"
    words = normalize_name(name).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def lookup_structure(name: str) -> tuple[SnomedCode | None, tuple[int, int, int] | None]:
    """SNOMED CT code and colour of a known structure name (aliases and suffixes understood)."""
    key = normalize_name(name)
    key = _ALIASES.get(key, key)
    if key in KNOWN_STRUCTURES:
        return KNOWN_STRUCTURES[key]
    if key.endswith(("tumor", "tumour")):
        return KNOWN_STRUCTURES["tumor"]
    return None, None


@dataclass(frozen=True)
class LabelSource:
    """One (dataset, label value) pair a prompt is trained from."""

    dataset: str
    value: int


@dataclass(frozen=True)
class Prompt:
    """One target structure the model can be asked to segment.

    Attributes:
        name: display name, unique in the label space (e.g. ``"spleen"``).
        sources: the (dataset, label value) pairs that annotate this structure; empty for the
            synthetic prompt.
        color: RGB colour 0-255.
        snomed: SNOMED CT concept, or ``None`` where none exists.
        synthetic: True only for the synthetic "all foreground" prompt.
    """

    name: str
    sources: tuple[LabelSource, ...]
    color: tuple[int, int, int]
    snomed: SnomedCode | None = None
    synthetic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sources": [{"dataset": s.dataset, "value": s.value} for s in self.sources],
            "color": list(self.color),
            "snomed": self.snomed.to_dict() if self.snomed else None,
            "synthetic": self.synthetic,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Prompt":
        return cls(
            name=str(d["name"]),
            sources=tuple(LabelSource(str(s["dataset"]), int(s["value"])) for s in d.get("sources", [])),
            color=tuple(int(c) for c in d["color"]),  # type: ignore[arg-type]
            snomed=_current_terminology(str(d["name"]), d.get("snomed")),
            synthetic=bool(d.get("synthetic", False)),
        )


def _current_terminology(name: str, stored: Mapping[str, Any] | None) -> SnomedCode | None:
    """A known structure's terminology from today's table (codes corrected since a checkpoint was
    written reach it: e.g. the hippocampus, 5300001 -> 5366008); any other prompt keeps its stored code."""
    known, _ = lookup_structure(name)
    if known is not None and stored:
        return known
    return SnomedCode.from_dict(stored) if stored else None


class UnknownPromptError(ValueError):
    """A prompt name that the label space does not contain."""


@dataclass
class LabelSpace:
    """An ordered list of prompts; a prompt's index is its prompt id. The synthetic prompt is last."""

    prompts: list[Prompt] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [p.name for p in self.prompts]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate prompt names in label space: {names}")
        synthetic = [i for i, p in enumerate(self.prompts) if p.synthetic]
        if synthetic and synthetic != [len(self.prompts) - 1]:
            raise ValueError("the synthetic prompt must be the single last prompt")

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_dataset_labels(
        cls,
        datasets: Mapping[str, Mapping[str, Any]],
        mapping: Mapping[str, Mapping[str, Any]] | None = None,
        include_synthetic: bool = True,
    ) -> "LabelSpace":
        """Build the label space from ``{dataset name: dataset.json content}`` and a mapping.

        Args:
            datasets: dataset name -> parsed ``dataset.json`` (its ``labels``: name -> value; nnU-Net
                region labels given as lists are not supported and raise ``ValueError``).
            mapping: optional ``"<dataset>:<value>"`` -> ``{"name", "color", "snomed"}`` overrides.
            include_synthetic: append the synthetic "all foreground" prompt.
        """
        mapping = dict(mapping or {})
        order: list[str] = []
        sources: dict[str, list[LabelSource]] = {}
        overrides: dict[str, dict[str, Any]] = {}
        used_keys: set[str] = set()
        for ds_name, ds_json in datasets.items():
            labels = ds_json.get("labels")
            if not isinstance(labels, Mapping):
                raise ValueError(f"dataset {ds_name}: dataset.json has no 'labels' mapping")
            for label_name, value in labels.items():
                if isinstance(value, (list, tuple)):
                    raise ValueError(
                        f"dataset {ds_name}: region label {label_name!r} (a list of values) is not supported"
                    )
                value = int(value)
                if value == 0:
                    continue
                key = f"{ds_name}:{value}"
                over = dict(mapping.get(key, {}))
                if key in mapping:
                    used_keys.add(key)
                name = normalize_name(str(over.get("name", label_name)))
                if name == SYNTHETIC_PROMPT_NAME:
                    raise ValueError(f"{key}: the name {SYNTHETIC_PROMPT_NAME!r} is reserved")
                if name not in sources:
                    order.append(name)
                    sources[name] = []
                    overrides[name] = {}
                sources[name].append(LabelSource(ds_name, value))
                overrides[name].update(over)
        unused = set(mapping) - used_keys
        if unused:
            raise ValueError(f"mapping entries match no dataset label: {sorted(unused)}")
        prompts = []
        for i, name in enumerate(order):
            snomed, color = lookup_structure(name)
            over = overrides[name]
            if "snomed" in over:
                snomed = SnomedCode.from_dict(over["snomed"]) if over["snomed"] else None
            if "color" in over:
                color = tuple(int(c) for c in over["color"])  # type: ignore[assignment]
            if color is None:
                color = _PALETTE[i % len(_PALETTE)]
            prompts.append(Prompt(name, tuple(sources[name]), color, snomed))
        if include_synthetic:
            prompts.append(Prompt(SYNTHETIC_PROMPT_NAME, (), SYNTHETIC_COLOR, None, synthetic=True))
        return cls(prompts)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LabelSpace":
        return cls([Prompt.from_dict(p) for p in d["prompts"]])

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": [p.to_dict() for p in self.prompts]}

    # --- queries ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.prompts]

    @property
    def real_prompt_ids(self) -> list[int]:
        return [i for i, p in enumerate(self.prompts) if not p.synthetic]

    @property
    def synthetic_id(self) -> int | None:
        if self.prompts and self.prompts[-1].synthetic:
            return len(self.prompts) - 1
        return None

    @property
    def datasets(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.prompts:
            for s in p.sources:
                seen.setdefault(s.dataset, None)
        return list(seen)

    def prompt_id(self, name: str) -> int:
        key = normalize_name(name)
        for i, p in enumerate(self.prompts):
            if p.name == key:
                return i
        raise UnknownPromptError(
            f"unknown prompt {name!r}; available prompts: {', '.join(self.names)}"
        )

    def prompts_for_dataset(self, dataset: str) -> list[tuple[int, int]]:
        """The (prompt id, label value) pairs a dataset annotates, in prompt order."""
        return [
            (i, s.value)
            for i, p in enumerate(self.prompts)
            for s in p.sources
            if s.dataset == dataset
        ]

    def resolve(self, spec: str | Iterable[str]) -> list[int]:
        """Prompt ids from ``"liver,spleen"``, a list of names, or ``"all"`` (every real prompt).

        Raises:
            UnknownPromptError: a name is not in the label space (the message lists the available ones).
        """
        names = [s for s in (spec.split(",") if isinstance(spec, str) else spec)]
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise UnknownPromptError(f"no prompt given; available prompts: {', '.join(self.names)}")
        ids: list[int] = []
        for n in names:
            new = self.real_prompt_ids if normalize_name(n) == "all" else [self.prompt_id(n)]
            ids.extend(i for i in new if i not in ids)
        return ids


def load_mapping(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a label mapping file (JSON, or YAML by extension)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - report any parse error with the file name
        raise ValueError(f"{path}: cannot parse label mapping: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: label mapping must be an object keyed by '<dataset>:<value>'")
    return data
