"""Can a segmentation be exported as DICOM SEG through Slicer's DICOM module? (no Qt)

Slicer writes DICOM SEG with the ``DICOMSegmentationPlugin`` of the QuantitativeReporting
extension, from its DICOM export dialog (``qSlicerDICOMExportDialog``, what the Data module's
"Export to DICOM..." opens). The SEG references the series the segmentation was made on, so the
input volume must have been loaded from DICOM (its subject-hierarchy item carries a DICOM series
UID). :func:`dicom_seg_export_problem` says what is missing, before the dialog opens; the module
then only opens the dialog on the segmentation's item.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from .i18n import _

SEG_PLUGIN = "DICOMSegmentationPlugin"  # registered in slicer.modules.dicomPlugins by QuantitativeReporting


def dicom_series_uid(volume_node: Any) -> Optional[str]:
    """The DICOM series instance UID of a volume loaded from DICOM (``None`` otherwise)."""
    import slicer

    scene = volume_node.GetScene() if volume_node is not None else None
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    if sh is None:
        return None
    item = sh.GetItemByDataNode(volume_node)
    uid = sh.GetItemUID(item, "DICOM") if item else ""
    return uid or None


def dicom_seg_export_problem(segmentation_node: Any, volume_node: Any, dicom_plugins: Iterable[str]) -> Optional[str]:
    """Why the result cannot be exported as DICOM SEG now (``None``: open the export dialog).

    Args:
        segmentation_node: the result to export (``None``: nothing segmented yet).
        volume_node: the volume it was made on.
        dicom_plugins: the names of Slicer's registered DICOM plugins (``slicer.modules.dicomPlugins``).
    """
    if segmentation_node is None or segmentation_node.GetScene() is None:
        return _("Segment a volume first: the export writes the result as DICOM SEG.")
    if SEG_PLUGIN not in set(dicom_plugins):
        return _("Slicer writes DICOM SEG with the QuantitativeReporting extension: install it from the Extensions "
                 "Manager and restart Slicer. (Or run 'versemi predict --output-format dicom-seg' on the DICOM folder.)")
    if volume_node is None or dicom_series_uid(volume_node) is None:
        return _("'{name}' was not loaded from DICOM, so a DICOM SEG has no series to refer to. Load the scan "
                 "with the DICOM module and segment it again.").format(
            name=volume_node.GetName() if volume_node is not None else "?")
    return None


__all__ = ["SEG_PLUGIN", "dicom_seg_export_problem", "dicom_series_uid"]
