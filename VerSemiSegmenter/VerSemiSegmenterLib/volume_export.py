"""Write a Slicer volume node to a file the predictor reads, keeping its exact geometry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from .i18n import _


class VolumeExportError(ValueError):
    """The volume cannot be written for prediction; the message says why."""


def check_volume_node(volume_node: Any) -> None:
    """Refuse what the predictor cannot use: no node, no voxels, label maps, multi-component images."""
    if volume_node is None:
        raise VolumeExportError(_("no input volume selected"))
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode") or volume_node.IsA("vtkMRMLSegmentationNode"):
        raise VolumeExportError(_("'{name}' is a label map; select an image volume").format(name=volume_node.GetName()))
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise VolumeExportError(_("'{name}' has no image data").format(name=volume_node.GetName()))
    if image.GetNumberOfScalarComponents() != 1:
        raise VolumeExportError(
            _("'{name}' has {numberOfScalarComponents} components per voxel; select a single-channel "
               "(scalar) volume").format(name=volume_node.GetName(), numberOfScalarComponents=image.GetNumberOfScalarComponents())
        )
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise VolumeExportError(
            _("'{name}' is a single slice ({x} x {y} x {z} voxels); VerSemi segments 3D volumes").format(
                name=volume_node.GetName(), x=dims[0], y=dims[1], z=dims[2])
        )


def volume_problem(volume_node: Any) -> Optional[str]:
    """Why ``volume_node`` cannot be segmented (for the panel, before anything starts), or ``None``."""
    try:
        check_volume_node(volume_node)
    except VolumeExportError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class SequenceFrame:
    """The volume is the proxy of a sequence: which frame is shown (0-based) of how many."""

    browser_name: str
    index: int
    count: int

    def note(self, volume_name: str) -> str:
        """The sentence the panel shows: only the current frame is segmented."""
        return _("'{name}' is frame {index} of {count} of sequence '{browser}': only this frame is segmented.").format(
            name=volume_name, index=self.index + 1, count=self.count, browser=self.browser_name)


def sequence_frame(volume_node: Any) -> Optional[SequenceFrame]:
    """The sequence frame ``volume_node`` shows, if it is the proxy node of a sequence browser."""
    scene = volume_node.GetScene() if volume_node is not None else None
    if scene is None:
        return None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode")):
        browser = scene.GetNthNodeByClass(i, "vtkMRMLSequenceBrowserNode")
        if browser.IsProxyNodeID(volume_node.GetID()):
            return SequenceFrame(browser.GetName(), int(browser.GetSelectedItemNumber()), int(browser.GetNumberOfItems()))
    return None


def export_volume(volume_node: Any, path: str | os.PathLike[str]) -> str:
    """Write ``volume_node`` to ``path`` (``.nrrd`` recommended) through Slicer's volume writer.

    The file holds the volume's own IJK-to-RAS geometry (origin, spacing, direction; converted to LPS
    by the writer). A parent transform is NOT applied: the result is imported in the same local
    coordinates and placed under the same transform (see ``segmentation_import``).

    Returns:
        the absolute path written.
    """
    import slicer

    check_volume_node(volume_node)
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scene = volume_node.GetScene()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    try:
        storage.SetFileName(path)
        storage.SetUseCompression(False)  # a temporary file: speed over size
        if not storage.WriteData(volume_node) or not os.path.isfile(path):
            raise VolumeExportError(_("{path}: cannot write volume '{name}'").format(path=path, name=volume_node.GetName()))
    finally:
        scene.RemoveNode(storage)
    return path
