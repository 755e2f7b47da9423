"""Cropping with a markups ROI box: the voxel box of ``versemi predict --roi``, from an ROI node.

Models trained on crops around a structure do badly on a whole head or chest, so the user fits an ROI
to the volume (:func:`fit_roi_to_volume`), drags it to the structure, and :func:`voxel_box` turns it
into the volume's voxel indices ``x0,y0,z0,x1,y1,z1`` (end exclusive). The ROI's corners go through
world coordinates and the volume's (linear) parent transform to IJK; a rotated ROI gets the
axis-aligned box around it, clipped to the volume. The exported file keeps the node's IJK grid
(``volume_export``), so the indices address the same voxels in ``versemi predict``.
"""

from __future__ import annotations

import math
from typing import Any
from .i18n import _

MIN_VOXELS = 2  # versemi predict refuses a box thinner than this (planning.check_roi)


class ROIError(ValueError):
    """An ROI that cannot crop the volume; the message names both and says what to do."""


def _matrix_to_world(node: Any) -> Any:
    """The linear transform from the node's local coordinates to world (identity without a parent).

    Raises:
        ROIError: a non-linear parent transform (the box would not be a box).
    """
    import vtk

    matrix = vtk.vtkMatrix4x4()
    parent = node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise ROIError(_("'{name}' is under a non-linear transform; harden it (Transforms module) first").format(name=node.GetName()))
        parent.GetMatrixTransformToWorld(matrix)
    return matrix


def roi_corners_world(roi_node: Any) -> list[tuple[float, float, float]]:
    """The eight corners of an ROI box in world (RAS) coordinates."""
    object_to_world = roi_node.GetObjectToWorldMatrix()
    sx, sy, sz = (float(s) / 2.0 for s in roi_node.GetSize())
    corners = []
    for x in (-sx, sx):
        for y in (-sy, sy):
            for z in (-sz, sz):
                p = object_to_world.MultiplyPoint((x, y, z, 1.0))
                corners.append((p[0], p[1], p[2]))
    return corners


def voxel_box(roi_node: Any, volume_node: Any) -> tuple[int, int, int, int, int, int]:
    """The voxel box ``(x0, y0, z0, x1, y1, z1)`` of ``volume_node`` inside ``roi_node``.

    Args:
        roi_node: a ``vtkMRMLMarkupsROINode`` (any orientation, parent transform allowed).
        volume_node: the input volume (a linear parent transform is allowed).

    Returns:
        Start (inclusive) and end (exclusive) voxel indices along I, J, K: what ``--roi`` takes.

    Raises:
        ROIError: the ROI is not defined (no size), lies outside the volume, covers fewer than
            :data:`MIN_VOXELS` voxels along an axis, or a transform is non-linear.
    """
    import vtk

    name, volume = roi_node.GetName(), volume_node.GetName()
    if any(float(s) <= 0 for s in roi_node.GetSize()):
        raise ROIError(_("ROI '{name}' has no size yet: place it (or click 'Fit ROI to volume') before Apply").format(name=name))
    image = volume_node.GetImageData()
    if image is None:
        raise ROIError(_("volume '{volume}' has no image data").format(volume=volume))
    dims = image.GetDimensions()
    world_to_local = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Invert(_matrix_to_world(volume_node), world_to_local)
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    world_to_ijk = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(ras_to_ijk, world_to_local, world_to_ijk)
    _matrix_to_world(roi_node)  # refuses an ROI under a non-linear transform
    ijk = [world_to_ijk.MultiplyPoint((*p, 1.0))[:3] for p in roi_corners_world(roi_node)]
    box_start, box_end = [], []
    for axis in range(3):
        lo = min(p[axis] for p in ijk)
        hi = max(p[axis] for p in ijk)
        start = max(0, math.ceil(lo - 1e-6))
        end = min(dims[axis], math.floor(hi + 1e-6) + 1)
        if end <= 0 or start >= dims[axis] or end <= start:
            raise ROIError(_("ROI '{name}' lies outside volume '{volume}': move it over the volume, or choose 'Whole volume'").format(name=name, volume=volume))
        if end - start < MIN_VOXELS:
            raise ROIError(_("ROI '{name}' covers {value} voxel(s) of volume '{volume}' along axis {value2}; make it "
                              "at least {mIN_VOXELS} voxels thick").format(name=name, value=end - start, volume=volume, value2='IJK'[axis], mIN_VOXELS=MIN_VOXELS))
        box_start.append(start)
        box_end.append(end)
    return (*box_start, *box_end)  # type: ignore[return-value]


def whole_volume(box: tuple[int, ...], volume_node: Any) -> bool:
    """True when the box covers every voxel (no cropping needed)."""
    dims = volume_node.GetImageData().GetDimensions()
    return tuple(box[:3]) == (0, 0, 0) and tuple(box[3:]) == tuple(dims)


def fit_roi_to_volume(roi_node: Any, volume_node: Any) -> None:
    """Place ``roi_node`` (axis-aligned, no parent transform) around the whole volume, world coordinates.

    The panel's "Fit ROI to volume": the user then drags the box's faces onto the structure.
    """
    import vtk

    bounds = [0.0] * 6
    volume_node.GetRASBounds(bounds)
    roi_node.SetAndObserveTransformNodeID(None)
    roi_node.SetAndObserveObjectToNodeMatrix(vtk.vtkMatrix4x4())  # axis-aligned again
    roi_node.SetCenter([(bounds[2 * i] + bounds[2 * i + 1]) / 2.0 for i in range(3)])
    roi_node.SetSize([bounds[2 * i + 1] - bounds[2 * i] for i in range(3)])


def roi_text(box: tuple[int, ...]) -> str:
    """``--roi`` syntax: ``x0,y0,z0,x1,y1,z1``."""
    return ",".join(str(int(v)) for v in box)
