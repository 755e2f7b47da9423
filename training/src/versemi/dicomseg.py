"""DICOM Segmentation (SEG) objects: a labelmap out as a SEG of its DICOM series, a SEG back in.

Hospitals exchange segmentations as DICOM SEG. :func:`write_dicom_seg` turns a labelmap on a series'
grid into a SEG that references that series (slice ``k`` = file ``k`` of
:func:`versemi.images.dicom_series_files`), one segment per label with its name and codes from the
label table (the terminology Slicer uses; "Tissue" for a label without one). :func:`read_dicom_seg`
reads a SEG back onto the series' grid, matching segments by prompt name, display name or number.
highdicom (the ``versemi[dicom]`` extra) is imported only here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi import __version__
from versemi.fileio import atomic_write_bytes
from versemi.images import dicom_series_files, read_image
from versemi.labels import ANATOMICAL_STRUCTURE, display_name

DICOM_SEG_EXTENSION = ".dcm"
# A label without a code: "Tissue" (category and type, as in Slicer's DICOM master list), so the
# segment is still a valid coded entry; its label and description carry the name.
_GENERIC_TYPE = ("85756007", "Tissue")
_GENERIC_CATEGORY = ("85756007", "Tissue")


class DicomSegError(ValueError):
    """A DICOM SEG that cannot be written or read; the message names the file and the problem."""


@dataclass(frozen=True)
class SegSegment:
    """One segment of a DICOM SEG as read back."""

    number: int
    label: str
    description: str
    type_code: str
    type_meaning: str
    modifier_code: str
    category_code: str
    region_code: str


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DicomSegError("DICOM SEG needs highdicom: pip install 'versemi[dicom]'") from exc
    return highdicom


def _entry(label: Any) -> dict[str, Any]:
    """A label-table entry as a dict (``LabelEntry`` objects and sidecar dicts alike)."""
    return dict(label.to_dict()) if hasattr(label, "to_dict") else dict(label)


def _description(number: int, entry: Mapping[str, Any], algorithm: Any) -> Any:
    hd = _highdicom()
    snomed = entry.get("snomed") or {}
    category = (snomed.get("category_code"), snomed.get("category_meaning")) if snomed else _GENERIC_CATEGORY
    kind = (snomed.get("code"), snomed.get("meaning")) if snomed else _GENERIC_TYPE
    regions = ([hd.sr.CodedConcept(snomed["region_code"], "SCT", snomed["region_meaning"])]
               if snomed.get("region_code") else None)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=display_name(str(entry["name"]))[:64],
        segmented_property_category=hd.sr.CodedConcept(category[0] or ANATOMICAL_STRUCTURE[0], "SCT",
                                                       category[1] or ANATOMICAL_STRUCTURE[1]),
        segmented_property_type=hd.sr.CodedConcept(kind[0], "SCT", kind[1]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        anatomic_regions=regions,
        display_color=hd.color.CIELabColor.from_rgb(*entry["color"]) if entry.get("color") else None,
    )
    description.SegmentDescription = str(entry["name"])[:64]  # the prompt name: matched on import
    if snomed.get("modifier_code"):
        modifier = hd.sr.CodedConcept(snomed["modifier_code"], "SCT", snomed["modifier_meaning"])
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


def write_dicom_seg(
    labelmap: sitk.Image,
    labels: Sequence[Any],
    series_folder: str | Path,
    output: str | Path,
    *,
    series_uid: str | None = None,
    model_name: str = "VerSemi",
    series_description: str = "VerSemi segmentation",
) -> Path:
    """Write ``labelmap`` (on the series' grid) as a DICOM SEG referencing the DICOM series.

    Args:
        labelmap: label values of ``labels`` on exactly the series' voxel grid.
        labels: the label table (``LabelEntry`` or sidecar dicts: ``value``, ``name``, ``color``,
            ``snomed``); each becomes one segment, numbered 1..N in this order.
        series_folder: the DICOM folder the labelmap was made from.
        output: the SEG file to write (atomically).
        series_uid: the series, when the folder holds several.
        model_name: recorded as the algorithm name and the manufacturer model name.
        series_description: the SEG's series description.

    Raises:
        DicomSegError: the labelmap is not on the series' grid, or holds values not in ``labels``.
    """
    hd = _highdicom()
    import pydicom

    entries = [_entry(e) for e in labels]
    if not entries:
        raise DicomSegError(f"{output}: no labels to write as segments")
    uid, files = dicom_series_files(series_folder, series_uid)
    sources = [pydicom.dcmread(f) for f in files]
    for ds in sources:  # highdicom needs it; not every series has it (in memory only, never written)
        if "SliceThickness" not in ds:
            ds.SliceThickness = float(labelmap.GetSpacing()[2])
    array = sitk.GetArrayFromImage(labelmap)
    rows, cols = int(sources[0].Rows), int(sources[0].Columns)
    if array.shape != (len(sources), rows, cols):
        raise DicomSegError(
            f"{output}: the labelmap has shape {array.shape} (z, y, x) but DICOM series {uid} in {series_folder} "
            f"has {len(sources)} slices of {rows} x {cols}"
        )
    values = [int(e["value"]) for e in entries]
    unknown = sorted({int(v) for v in np.unique(array)} - set(values) - {0})
    if unknown:
        raise DicomSegError(f"{output}: label values {unknown} are not in the label table {values}")
    lookup = np.zeros(max(values) + 1, np.uint16 if len(values) > 255 else np.uint8)
    lookup[values] = np.arange(1, len(values) + 1)
    segments = lookup[array]
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64], version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    try:
        seg = _segmentation(hd, sources, segments, entries, algorithm, model_name, series_description)
    except (ValueError, TypeError, AttributeError) as exc:  # highdicom's checks of the source series
        raise DicomSegError(f"{series_folder}: cannot make a DICOM SEG of series {uid}: {exc}") from exc
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return atomic_write_bytes(Path(output), buffer.getvalue())


def _segmentation(hd: Any, sources: list[Any], segments: np.ndarray, entries: list[dict[str, Any]], algorithm: Any,
                  model_name: str, series_description: str) -> Any:
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segments,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(i + 1, e, algorithm) for i, e in enumerate(entries)],
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="VerSemi",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number="0",
        content_description=series_description[:64],
        series_description=series_description[:64],
    )


def read_dicom_seg(
    path: str | Path, series_folder: str | Path, series_uid: str | None = None
) -> tuple[sitk.Image, list[SegSegment]]:
    """Read a DICOM SEG of a DICOM series as segment numbers on the series' grid.

    Returns:
        The segment-number labelmap (geometry of the series as :func:`~versemi.images.read_image` reads it;
        where segments overlap the higher number wins) and the segments.

    Raises:
        DicomSegError: not a readable SEG, or one that references another series.
    """
    hd = _highdicom()
    import pydicom

    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:  # noqa: BLE001 - pydicom/highdicom raise many types for a bad file
        raise DicomSegError(f"{path}: not a readable DICOM SEG: {exc}") from exc
    uid, files = dicom_series_files(series_folder, series_uid)
    referenced = {s.SeriesInstanceUID for s in getattr(seg, "ReferencedSeriesSequence", [])}
    if uid not in referenced:
        raise DicomSegError(f"{path}: the SEG references series {sorted(referenced)}, not {uid} of {series_folder}")
    sop_uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    numbers = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=sop_uids, combine_segments=True, skip_overlap_checks=True,
    )
    reference = read_image(series_folder, uid, allow_gaps=True)
    image = sitk.GetImageFromArray(np.asarray(numbers).astype(np.uint16 if numbers.max(initial=0) > 255 else np.uint8))
    image.CopyInformation(reference)
    segments = []
    for item in seg.SegmentSequence:
        kind = item.SegmentedPropertyTypeCodeSequence[0]
        modifiers = getattr(kind, "SegmentedPropertyTypeModifierCodeSequence", [])
        regions = getattr(item, "AnatomicRegionSequence", [])
        segments.append(SegSegment(
            number=int(item.SegmentNumber), label=str(item.SegmentLabel),
            description=str(getattr(item, "SegmentDescription", "") or ""),
            type_code=str(kind.CodeValue), type_meaning=str(kind.CodeMeaning),
            modifier_code=str(modifiers[0].CodeValue) if modifiers else "",
            category_code=str(item.SegmentedPropertyCategoryCodeSequence[0].CodeValue),
            region_code=str(regions[0].CodeValue) if regions else "",
        ))
    return image, segments


def segments_to_label_values(
    numbers: sitk.Image, segments: Sequence[SegSegment], labels: Sequence[Mapping[str, Any]] | None, where: str
) -> sitk.Image:
    """Segment numbers -> the label table's values, matching each segment by prompt name
    (segment description), then human-readable name (segment label); without a table, the
    segment number is the value.

    Raises:
        DicomSegError: a segment that matches no label (the message names it and the labels).
    """
    if not labels:
        return numbers
    by_name: dict[str, int] = {}
    for e in labels:
        by_name[str(e["name"])] = int(e["value"])
        by_name.setdefault(display_name(str(e["name"])), int(e["value"]))
    lookup = np.zeros(max([s.number for s in segments], default=0) + 1, np.uint16)
    for s in segments:
        value = by_name.get(s.description) or by_name.get(s.label)
        if value is None:
            raise DicomSegError(
                f"{where}: segment {s.number} {s.label!r} matches no label of the review ({sorted(by_name)})"
            )
        lookup[s.number] = value
    array = lookup[sitk.GetArrayViewFromImage(numbers)]
    out = sitk.GetImageFromArray(array.astype(np.uint8 if array.max(initial=0) <= 255 else np.uint16))
    out.CopyInformation(numbers)
    return out


def is_dicom_seg_path(path: str | Path) -> bool:
    """A file name that :func:`write_dicom_seg` writes (``.dcm``)."""
    return Path(path).suffix.lower() == DICOM_SEG_EXTENSION


__all__ = [
    "DICOM_SEG_EXTENSION",
    "DicomSegError",
    "SegSegment",
    "is_dicom_seg_path",
    "read_dicom_seg",
    "segments_to_label_values",
    "write_dicom_seg",
]
