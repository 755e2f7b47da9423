"""Turn ``versemi predict`` outputs into a Slicer segmentation.

The pure-Python layer reads and checks the label-table sidecar (colours, terminology strings); the
MRML layer (``slicer`` imported inside functions; Slicer or ``slicer-core``) loads the labelmap into a
new or existing segmentation node with names, colours, terminology and the input's geometry. Every
chosen prompt gets a segment, also an empty one, so the list matches the request and "not found" is
visible (:func:`import_prediction` returns the empty ones' names).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from .i18n import _

# Segment tag holding the prompt name (the segment's own name is the human-readable title).
PROMPT_TAG = "VerSemi.prompt"
# Slicer's terminology contexts for DICOM/SNOMED CT coded anatomy (loaded by default in Slicer).
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
CODING_SCHEME = "SCT"


class LabelTableError(ValueError):
    """A sidecar label table that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SnomedTerm:
    """SNOMED CT type, category, type modifier and anatomic region of a label (as written by
    ``versemi predict``; the modifier and region may be empty)."""

    code: str
    meaning: str
    category_code: str
    category_meaning: str
    modifier_code: str = ""
    modifier_meaning: str = ""
    region_code: str = ""
    region_meaning: str = ""


@dataclass(frozen=True)
class LabelEntry:
    """One label value of the predicted labelmap."""

    value: int
    name: str
    color: tuple[int, int, int]
    snomed: SnomedTerm | None = None
    prompt_id: int | None = None
    title: str = ""  # the human-readable name (sidecar "title"); the segment's name

    @property
    def segment_name(self) -> str:
        """What the segment is called in Slicer: the title, else the prompt name."""
        return self.title or self.name

    @property
    def color_float(self) -> tuple[float, float, float]:
        """The colour as 0-1 floats (what ``vtkSegment.SetColor`` takes)."""
        return (self.color[0] / 255.0, self.color[1] / 255.0, self.color[2] / 255.0)

    @property
    def terminology_tag(self) -> str | None:
        """The terminology entry string Slicer stores in a segment tag, or ``None`` without a code."""
        return terminology_tag(self.snomed)


def terminology_tag(snomed: SnomedTerm | None) -> str | None:
    """Slicer's serialized terminology entry for a SNOMED CT concept.

    Format (``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry``): ``context~category~type~
    type modifier~anatomic context~anatomic region~region modifier``, each code ``scheme^value^meaning``.
    """
    if snomed is None:
        return None
    parts = [snomed.code, snomed.meaning, snomed.category_code, snomed.category_meaning, snomed.modifier_code,
             snomed.modifier_meaning, snomed.region_code, snomed.region_meaning]
    if any(("~" in p or "^" in p) for p in parts):
        raise LabelTableError(_("terminology code contains a reserved character (~ or ^): {parts}").format(parts=parts))

    def coded(code: str, meaning: str) -> str:
        return f"{CODING_SCHEME}^{code}^{meaning}" if code else "^^"

    return (
        f"{TERMINOLOGY_CONTEXT}"
        f"~{coded(snomed.category_code, snomed.category_meaning)}"
        f"~{coded(snomed.code, snomed.meaning)}"
        f"~{coded(snomed.modifier_code, snomed.modifier_meaning)}"
        f"~{ANATOMIC_CONTEXT}"
        f"~{coded(snomed.region_code, snomed.region_meaning)}"
        f"~^^"
    )


def parse_label_table(data: Mapping[str, Any], source: str = "label table") -> list[LabelEntry]:
    """Check and convert a parsed sidecar (``{"labels": [...]}``) into label entries.

    Raises:
        LabelTableError: missing/ill-typed fields, duplicate or non-positive values, bad colours.
    """
    labels = data.get("labels") if isinstance(data, Mapping) else None
    if not isinstance(labels, list):
        raise LabelTableError(_("{source}: no 'labels' list").format(source=source))
    entries: list[LabelEntry] = []
    seen: set[int] = set()
    for i, item in enumerate(labels):
        where = f"{source}: labels[{i}]"
        if not isinstance(item, Mapping):
            raise LabelTableError(_("{where} is not an object").format(where=where))
        try:
            value = int(item["value"])
            name = str(item["name"]).strip()
            color_raw = item["color"]
        except (KeyError, TypeError, ValueError) as exc:
            raise LabelTableError(_("{where}: needs 'value' (int), 'name' and 'color' ({exc})").format(where=where, exc=exc)) from exc
        if value <= 0:
            raise LabelTableError(_("{where}: label value must be positive, got {value}").format(where=where, value=value))
        if value in seen:
            raise LabelTableError(_("{where}: duplicate label value {value}").format(where=where, value=value))
        seen.add(value)
        if not name:
            raise LabelTableError(_("{where}: empty name").format(where=where))
        if (
            not isinstance(color_raw, (list, tuple))
            or len(color_raw) != 3
            or not all(isinstance(c, (int, float)) and 0 <= c <= 255 for c in color_raw)
        ):
            raise LabelTableError(_("{where}: 'color' must be [r, g, b] in 0-255, got {color_raw!r}").format(where=where, color_raw=color_raw))
        color = (int(round(color_raw[0])), int(round(color_raw[1])), int(round(color_raw[2])))
        snomed = None
        raw = item.get("snomed")
        if raw:
            try:
                snomed = SnomedTerm(
                    code=str(raw["code"]),
                    meaning=str(raw["meaning"]),
                    category_code=str(raw.get("category_code") or "123037004"),
                    category_meaning=str(raw.get("category_meaning") or "Anatomical Structure"),
                    **{k: str(raw.get(k) or "") for k in ("modifier_code", "modifier_meaning", "region_code",
                                                          "region_meaning")},
                )
            except (KeyError, TypeError) as exc:
                raise LabelTableError(_("{where}: 'snomed' needs 'code' and 'meaning'").format(where=where)) from exc
        prompt_id = item.get("prompt_id")
        title = str(item.get("title") or "").strip()
        entries.append(
            LabelEntry(value, name, color, snomed, int(prompt_id) if prompt_id is not None else None, title)
        )
    return sorted(entries, key=lambda e: e.value)


def read_label_table(path: str | os.PathLike[str]) -> list[LabelEntry]:
    """Read the ``.json`` sidecar that ``versemi predict`` writes beside its labelmap."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LabelTableError(_("{path}: label table not found").format(path=path)) from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LabelTableError(_("{path}: cannot read label table: {exc}").format(path=path, exc=exc)) from exc
    return parse_label_table(data, str(path))


# --- MRML ------------------------------------------------------------------------------------------


def load_labelmap_node(path: str | os.PathLike[str], scene: Any, name: str = "VerSemi labelmap") -> Any:
    """Read a labelmap file into a new ``vtkMRMLLabelMapVolumeNode`` (reader of Slicer's volume IO)."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    try:
        storage.SetFileName(os.fspath(path))
        # Only this file: without it the reader may glob sibling files into a series.
        storage.SetSingleFile(True)
        if not storage.ReadData(node) or node.GetImageData() is None:
            raise LabelTableError(_("{path}: cannot read labelmap").format(path=path))
    except BaseException:
        scene.RemoveNode(node)
        raise
    finally:
        scene.RemoveNode(storage)
    return node


def make_color_table_node(entries: list[LabelEntry], scene: Any, name: str = "VerSemi labels") -> Any:
    """A temporary colour table (value -> name, colour) that names the segments on import."""
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    node.SetTypeToUser()
    node.SetNumberOfColors(max([e.value for e in entries], default=0) + 1)
    node.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
    for entry in entries:
        node.SetColor(entry.value, entry.name, *entry.color_float, 1.0)
    return node


@dataclass
class ImportResult:
    """What :func:`import_prediction` did."""

    segmentation_node: Any
    segment_ids: list[str]
    empty_segments: list[str]


def import_prediction(
    labelmap_path: str | os.PathLike[str],
    sidecar_path: str | os.PathLike[str],
    input_volume_node: Any,
    segmentation_node: Any | None = None,
    name: str | None = None,
) -> ImportResult:
    """Import a predicted labelmap as segments of a (new or existing) segmentation node.

    Args:
        labelmap_path: the labelmap ``versemi predict`` wrote (on the input volume's grid).
        sidecar_path: its label table (``.json``).
        input_volume_node: the volume that was segmented; gives the reference geometry, the parent
            transform and the subject-hierarchy location.
        segmentation_node: ``None`` creates a new node; an existing node has ALL its segments replaced
            (the module asks the user first).
        name: name of a new segmentation node (default: ``"<volume name> VerSemi"``).

    Returns:
        the node, its segment ids in label order, and the names of the segments that came out empty.
    """
    entries = read_label_table(sidecar_path)
    if not entries:
        raise LabelTableError(_("{sidecar_path}: the label table lists no labels").format(sidecar_path=sidecar_path))
    return import_labelmap(labelmap_path, entries, input_volume_node, segmentation_node, name)


def import_labelmap(
    labelmap_path: str | os.PathLike[str] | None,
    entries: list[LabelEntry],
    input_volume_node: Any,
    segmentation_node: Any | None = None,
    name: str | None = None,
) -> ImportResult:
    """Import a labelmap with an already-read label table (what :func:`import_prediction` does).

    Args:
        labelmap_path: a labelmap on the input volume's grid; ``None`` gives one empty segment per
            label (e.g. a review case without a pseudo-label).
        entries: the label table (value -> name, colour, terminology); must not be empty.
        input_volume_node: reference geometry, parent transform and subject-hierarchy location.
        segmentation_node: ``None`` creates a new node; an existing node has ALL its segments replaced,
            all or nothing: if the import fails, its old segments (ids, names, voxels, terminology)
            and transform are put back.
        name: name of a new segmentation node (default: ``"<volume name> VerSemi"``).

    Returns:
        the node, its segment ids in label order, and the names of the segments that came out empty.
    """
    import slicer

    if not entries:
        raise LabelTableError(_("{labelmap_path}: the label table lists no labels").format(labelmap_path=labelmap_path))
    scene = input_volume_node.GetScene()
    labelmap_node = load_labelmap_node(labelmap_path, scene) if labelmap_path is not None else None
    color_node = make_color_table_node(entries, scene)
    created = segmentation_node is None
    backup = old_transform = None
    if not created:
        backup = slicer.vtkSegmentation()
        backup.DeepCopy(segmentation_node.GetSegmentation())
        old_transform = segmentation_node.GetTransformNodeID()
    try:
        if labelmap_node is not None:
            _check_labels(labelmap_node, entries, labelmap_path)
        if created:
            segmentation_node = scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", name or f"{input_volume_node.GetName()} VerSemi"
            )
            segmentation_node.CreateDefaultDisplayNodes()
        else:
            segmentation_node.GetSegmentation().RemoveAllSegments()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(input_volume_node)
        # The labelmap is in the volume's local coordinates: follow the volume's parent transform.
        segmentation_node.SetAndObserveTransformNodeID(input_volume_node.GetTransformNodeID())
        if labelmap_node is not None:
            labelmap_node.SetAndObserveTransformNodeID(input_volume_node.GetTransformNodeID())
            segmentation_node.SetLabelmapConversionColorTableNodeID(color_node.GetID())
            logic = slicer.vtkSlicerSegmentationsModuleLogic
            if not logic.ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node):
                raise RuntimeError(_("{labelmap_path}: Slicer could not import the labelmap as segments").format(labelmap_path=labelmap_path))
        segment_ids, empty = _apply_label_table(segmentation_node, entries)
        if created:
            place_next_to(segmentation_node, input_volume_node)
    except BaseException:
        if created and segmentation_node is not None:
            scene.RemoveNode(segmentation_node)
        elif backup is not None:  # replace mode: the user's segments come back as they were
            segmentation_node.GetSegmentation().DeepCopy(backup)
            segmentation_node.SetAndObserveTransformNodeID(old_transform)
        raise
    finally:
        if segmentation_node is not None:
            segmentation_node.SetLabelmapConversionColorTableNodeID("")
        if labelmap_node is not None:
            scene.RemoveNode(labelmap_node)
        scene.RemoveNode(color_node)
    return ImportResult(segmentation_node, segment_ids, empty)


def _check_labels(labelmap_node: Any, entries: list[LabelEntry], path: Any) -> None:
    """Refuse a labelmap with values the label table does not explain (mismatched outputs)."""
    import numpy as np
    from vtk.util.numpy_support import vtk_to_numpy

    scalars = labelmap_node.GetImageData().GetPointData().GetScalars()
    values = set(int(v) for v in np.unique(vtk_to_numpy(scalars))) - {0}
    unknown = values - {e.value for e in entries}
    if unknown:
        raise LabelTableError(_("{path}: label values {unknown} are not in the label table").format(path=path, unknown=sorted(unknown)))


def _apply_label_table(segmentation_node: Any, entries: list[LabelEntry]) -> tuple[list[str], list[str]]:
    """Names, colours, terminology per label value; empty segments for labels absent from the image."""
    import slicer

    segmentation = segmentation_node.GetSegmentation()
    # An all-empty labelmap imports nothing and leaves no source representation, without which
    # empty segments cannot be added: use binary labelmaps, as an import would.
    labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if hasattr(segmentation, "GetSourceRepresentationName"):  # Slicer >= 5.4
        if not segmentation.GetSourceRepresentationName():
            segmentation.SetSourceRepresentationName(labelmap_name)
    elif not segmentation.GetMasterRepresentationName():
        segmentation.SetMasterRepresentationName(labelmap_name)
    value_by_name = {e.name: e.value for e in entries}
    by_value: dict[int, str] = {}
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        if hasattr(segment, "GetLabelValue"):
            by_value[segment.GetLabelValue()] = segment_id
        elif segment.GetName() in value_by_name:  # older Slicer: segments named from the colour table
            by_value[value_by_name[segment.GetName()]] = segment_id
    segment_ids: list[str] = []
    empty: list[str] = []
    for index, entry in enumerate(entries):
        segment_id = by_value.get(entry.value)
        if segment_id is None:
            segment_id = _add_empty_segment(segmentation, entry, labelmap_name)
            empty.append(entry.segment_name)
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(entry.segment_name)
        segment.SetTag(PROMPT_TAG, entry.name)
        segment.SetColor(*entry.color_float)
        tag = entry.terminology_tag
        if tag:
            segment.SetTag(segment.GetTerminologyEntryTagName(), tag)
        segmentation.SetSegmentIndex(segment_id, index)
        segment_ids.append(segment_id)
    return segment_ids, empty


def _add_empty_segment(segmentation: Any, entry: LabelEntry, labelmap_name: str) -> str:
    """Add a segment without voxels; returns its id."""
    import slicer

    segment_id = segmentation.AddEmptySegment("", entry.name, list(entry.color_float))
    if not segment_id:
        # Without registered converter rules (slicer-core), AddEmptySegment cannot build an empty
        # representation when the segmentation has no segment yet: give it one explicitly.
        segment = slicer.vtkSegment()
        segment.SetName(entry.name)
        segment.SetColor(*entry.color_float)
        segment.AddRepresentation(labelmap_name, slicer.vtkOrientedImageData())
        if not segmentation.AddSegment(segment):
            raise RuntimeError(_("cannot add an empty segment for {name!r}").format(name=entry.name))
        segment_id = segmentation.GetSegmentIdBySegment(segment)
    return segment_id


def place_next_to(node: Any, reference_node: Any) -> None:
    """Put ``node`` under the same subject-hierarchy parent (study) as ``reference_node``."""
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(reference_node.GetScene())
    if sh is None:
        return
    reference_item = sh.GetItemByDataNode(reference_node)
    if not reference_item:
        return
    parent = sh.GetItemParent(reference_item)
    item = sh.GetItemByDataNode(node)
    if item:
        sh.SetItemParent(item, parent)
    else:  # Slicer's subject hierarchy plugins normally create the item; slicer-core has none
        sh.CreateItem(parent, node)
