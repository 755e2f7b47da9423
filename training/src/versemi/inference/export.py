"""Export of a prediction: probabilities back onto the input grid, the labelmap, and the files.

The last step of :class:`~versemi.inference.Predictor` (nnU-Net's ``export_prediction``).
:class:`LabelmapAssembler` restores each prompt's probabilities onto the input grid (linear, as nnU-Net
resamples probabilities rather than labels; only the box above :data:`THRESHOLD`) and folds them into
one labelmap: 1 + the most probable prompt where its probability is >= 0.5, else 0. Only the labelmap
and the running maximum are held at full resolution. :func:`sidecar_document`,
:func:`probability_image` and :func:`default_output_path` are ``versemi predict``'s output contract
(docs/DEVELOPMENT.md, "Prediction outputs").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi import __version__
from versemi.data.preprocessing import restore_to_input_grid
from versemi.images import split_image_extension
from versemi.inference.io import copy_geometry, iter_slabs
from versemi.inference.postprocess import keep_largest_components
from versemi.inference.progress import StageProgress
from versemi.inference.results import LabelEntry, PredictionError, PredictionResult, ProbabilitySink

if TYPE_CHECKING:
    import torch

THRESHOLD = 0.5
PROBABILITY_DTYPES = ("float32", "uint8")
# z-slices handled at a time when merging restored probabilities (bounds temporaries).
_MERGE_SLAB = 32
# Input-grid z-slices restored per resampling call (bounds the memory of one prompt's restore).
_RESTORE_SLAB = 64


class LabelmapAssembler:
    """The labelmap of one scan, assembled from the restored probabilities of each preprocessing group.

    Args:
        image: The input scan (the labelmap's grid).
        work: What was segmented: ``image``, or its ROI ``box`` (whose grid the restore targets).
        box: The ROI ``(x0, y0, z0, x1, y1, z1)`` that was segmented, or None for the whole scan.
        num_labels: How many label values the labelmap holds (uint16 from 256 on, else uint8).
        keep_probabilities: Keep every prompt's full-resolution probability image (4 bytes per voxel
            per prompt) for :meth:`probabilities`.
        sink: Receives each prompt's full-resolution probability image as soon as it is restored.
    """

    def __init__(self, image: sitk.Image, work: sitk.Image, box: tuple[int, ...] | None, num_labels: int,
                 keep_probabilities: bool = False, sink: ProbabilitySink | None = None) -> None:
        self.image = image
        self.box = box
        self.work = work
        shape = tuple(reversed(self.work.GetSize()))
        self.label = np.zeros(shape, dtype=np.uint8 if num_labels < 256 else np.uint16)
        self.maxprob = np.zeros(shape, dtype=np.uint16)
        self.kept: dict[str, sitk.Image] | None = {} if keep_probabilities else None
        self.sink = sink

    def add(self, probs: "torch.Tensor", record: Mapping[str, Any], labels: Sequence[LabelEntry],
            stage: StageProgress) -> None:
        """Restore each prompt's probabilities to the input grid and fold them into the labelmap.

        Only probabilities >= :data:`THRESHOLD` can decide a voxel, so a voxel takes a prompt's label
        value where that prompt reaches the threshold and beats the running maximum: no separate
        arg-max array and no final thresholding pass. ``label`` and ``maxprob`` are updated in place,
        so several preprocessing groups fold into the same arrays. The running maximum is kept as
        uint16 (``floor(p * 65535)``, 2 bytes per voxel; prompts closer than 1.5e-5 tie and the
        lower label value wins, whatever the order of the groups). Unless the caller wants the
        probability maps, each prompt is restored only inside the box where it can reach the
        threshold and in slabs of :data:`_RESTORE_SLAB` slices (see
        :func:`restore_above_threshold`): exact, with a cost proportional to the size of the
        structures and memory bounded by the slab instead of the scan.
        """
        self.add_parts([(probs, record, None)], labels, stage)

    def add_parts(self, parts: Sequence[tuple["torch.Tensor", Mapping[str, Any], tuple[int, ...] | None]],
                  labels: Sequence[LabelEntry], stage: StageProgress) -> None:
        """:meth:`add` for a group segmented in parts: ``(probs, record, box)`` per part, ``box`` the
        ``(x0, y0, z0, x1, y1, z1)`` of the segmented image that was preprocessed (None: all of it).
        The boxes do not overlap (coarse-to-fine merges overlapping ones); outside them the
        probability is 0."""
        label, maxprob, kept, sink = self.label, self.maxprob, self.kept, self.sink
        whole = len(parts) == 1 and parts[0][2] is None
        for k, entry in enumerate(labels):
            stage(k / len(labels), f"restoring {entry.name} to the input grid")
            if kept is None and sink is None:
                for probs, record, box in parts:
                    target, offset = self._part(box)
                    # Nothing is yielded for a prompt that reaches the threshold nowhere.
                    for region, values, _image in restore_above_threshold(probs[k].numpy(), record, target, THRESHOLD):
                        region = tuple(slice(r.start + o, r.stop + o) for r, o in zip(region, offset))
                        merge_above_threshold(label[region], maxprob[region], values, entry.value)
                continue
            if whole:
                restored = restore_to_input_grid(parts[0][0][k].numpy(), parts[0][1], is_label=False)
                merge_above_threshold(label, maxprob, sitk.GetArrayViewFromImage(restored), entry.value)
                full = (
                    copy_geometry(restored, self.image)  # already the whole input grid: no copy
                    if self.box is None
                    else on_input_grid(sitk.GetArrayFromImage(restored), self.image, self.box)
                )
            else:
                canvas = np.zeros(label.shape, dtype=np.float32)
                for probs, record, box in parts:
                    _, offset = self._part(box)
                    values = sitk.GetArrayFromImage(restore_to_input_grid(probs[k].numpy(), record, is_label=False))
                    region = tuple(slice(o, o + n) for o, n in zip(offset, values.shape))
                    canvas[region] = values
                    merge_above_threshold(label[region], maxprob[region], values, entry.value)
                full = on_input_grid(canvas, self.image, self.box)
            if sink is not None:
                sink(entry, full)
            if kept is not None:
                kept[entry.name] = full

    def _part(self, box: tuple[int, ...] | None) -> tuple[sitk.Image, tuple[int, int, int]]:
        """The part of ``work`` a box covers and its ``(z, y, x)`` offset in ``work``'s arrays."""
        if box is None:
            return self.work, (0, 0, 0)
        return self.work[box[0]:box[3], box[1]:box[4], box[2]:box[5]], (box[2], box[1], box[0])

    def labelmap(self, keep_largest: Mapping[int, Sequence[int]] | None = None,
                 kinds: Mapping[int, str] | None = None) -> sitk.Image:
        """The labelmap on exactly the input grid (an ROI result pasted into zeros).

        Args:
            keep_largest: label value -> the values of its group: keep only the components of each
                that its kind keeps (:func:`versemi.inference.postprocess.keep_largest_components`).
            kinds: label value -> post-processing kind (default ``largest_component``).
        """
        if keep_largest:
            axis_xyz = left_right_axis(self.work)
            keep_largest_components(self.label, keep_largest, kinds, 2 - axis_xyz, self.work.GetSpacing()[axis_xyz])
        return on_input_grid(self.label, self.image, self.box)

    def probabilities(self, labels: Sequence[LabelEntry]) -> dict[str, sitk.Image] | None:
        """The kept probability images in ``labels`` order (None unless ``keep_probabilities``)."""
        return None if self.kept is None else {e.name: self.kept[e.name] for e in labels}


def left_right_axis(image: sitk.Image) -> int:
    """The index axis (0 = x, 1 = y, 2 = z) of ``image`` closest to the patient's left-right axis."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return int(np.argmax(np.abs(direction[0])))


def on_input_grid(array: np.ndarray, image: sitk.Image, box: tuple[int, ...] | None) -> sitk.Image:
    """An image on exactly ``image``'s grid; an ROI result is pasted into zeros."""
    if box is not None:
        full = np.zeros(tuple(reversed(image.GetSize())), dtype=array.dtype)
        full[box[2]:box[5], box[1]:box[4], box[0]:box[3]] = array
        array = full
    out = sitk.GetImageFromArray(array)
    return copy_geometry(out, image)


def merge_above_threshold(label: np.ndarray, maxprob: np.ndarray, values: np.ndarray, value: int) -> None:
    """Where ``values`` >= the threshold and beats ``maxprob`` (uint16, ``floor(p * 65535)``): take it
    and set ``label`` to ``value`` (slab by slab, in place). On a tie the lower label value wins, so
    the result does not depend on the order in which prompts (or preprocessing groups) are merged."""
    for sl in iter_slabs(values.shape[0], _MERGE_SLAB):
        p = values[sl]
        q = (p * np.float32(65535.0)).astype(np.uint16)
        current = maxprob[sl]
        better = (p >= THRESHOLD) & ((q > current) | ((q == current) & (label[sl] > value)))
        np.copyto(maxprob[sl], q, where=better)
        label[sl][better] = value


def restore_above_threshold(
    channel: np.ndarray, record: Mapping[str, Any], work: sitk.Image, threshold: float,
    slab: int | None = None,
) -> Iterator[tuple[tuple[slice, ...], np.ndarray, sitk.Image]]:
    """Restore one probability map onto the input grid, only where it can reach ``threshold``.

    Linear interpolation is a convex combination of the 2x2x2 surrounding voxels, so a restored value
    can only reach the threshold near a model-spacing voxel that does. Restoring the box around
    those voxels, grown by one voxel (whose outer layer is then below the threshold) and zero-padded
    like :func:`~versemi.data.preprocessing.restore_to_input_grid` pads the crop, gives exactly the
    values the full restore gives wherever they reach the threshold; everywhere else both are below
    it. (Uses the record's documented ``resampled`` grid and ``crop_bbox_zyx``.)

    Args:
        channel: ``(d, h, w)`` probabilities on the preprocessed (cropped) grid.
        record: The preprocessing record.
        work: The image that was preprocessed (its grid is the target grid).
        threshold: The decision threshold.
        slab: Input-grid z-slices resampled per step (default :data:`_RESTORE_SLAB`), which bounds
            the memory of the restored values.

    Yields:
        ``(region, values, image)`` per slab of the box: the input-grid region as ``(z, y, x)``
        slices, a float32 array view of the values there and the image that owns them (keep it
        while using the view). Nothing when the threshold is reached nowhere.
    """
    slab = slab or _RESTORE_SLAB
    hits = [np.flatnonzero((channel >= threshold).any(axis=tuple(a for a in range(3) if a != axis)))
            for axis in range(3)]
    if hits[0].size == 0:
        return
    grid = record["resampled"]
    full_zyx = [int(n) for n in reversed(grid["size"])]
    crop = [(int(a), int(b)) for a, b in record["crop_bbox_zyx"]]
    lo = [max(int(h[0]) + c[0] - 1, 0) for h, c in zip(hits, crop)]
    hi = [min(int(h[-1]) + 1 + c[0] + 1, n) for h, c, n in zip(hits, crop, full_zyx)]
    sub = np.zeros([b - a for a, b in zip(lo, hi)], dtype=np.float32)
    # Copy the part of the box that lies inside the crop; the rest stays 0 like the full restore's fill.
    src = tuple(slice(max(a, c0) - c0, min(b, c1) - c0) for a, b, (c0, c1) in zip(lo, hi, crop))
    dst = tuple(slice(max(a, c0) - a, min(b, c1) - a) for a, b, (c0, c1) in zip(lo, hi, crop))
    sub[dst] = channel[src]

    spacing = np.asarray(grid["spacing"], dtype=float)
    direction = np.asarray(grid["direction"], dtype=float).reshape(3, 3)
    lo_xyz = np.asarray(lo[::-1], dtype=float)
    sub_image = sitk.GetImageFromArray(sub)
    sub_image.SetSpacing(spacing.tolist())
    sub_image.SetDirection(direction.ravel().tolist())
    sub_image.SetOrigin((np.asarray(grid["origin"], dtype=float) + direction @ (spacing * lo_xyz)).tolist())

    # The input-grid box covering the sub-image's physical extent (voxel edges, all 8 corners).
    size_xyz = np.asarray(sub_image.GetSize(), dtype=float)
    corners = [
        work.TransformPhysicalPointToContinuousIndex(
            sub_image.TransformContinuousIndexToPhysicalPoint([(-0.5 if c == 0 else n - 0.5) for c, n in zip(bits, size_xyz)])
        )
        for bits in np.ndindex(2, 2, 2)
    ]
    corners_arr = np.asarray(corners)
    work_size = np.asarray(work.GetSize())
    out_lo = np.clip(np.floor(corners_arr.min(axis=0)).astype(int), 0, work_size)
    out_hi = np.clip(np.ceil(corners_arr.max(axis=0)).astype(int) + 1, 0, work_size)
    if np.any(out_hi <= out_lo):
        return
    for z0 in range(int(out_lo[2]), int(out_hi[2]), slab):
        z1 = min(z0 + slab, int(out_hi[2]))
        start = [int(out_lo[0]), int(out_lo[1]), z0]
        restored = sitk.Resample(
            sub_image,
            [int(out_hi[0] - out_lo[0]), int(out_hi[1] - out_lo[1]), z1 - z0],
            sitk.Transform(),
            sitk.sitkLinear,
            work.TransformIndexToPhysicalPoint(start),
            work.GetSpacing(),
            work.GetDirection(),
            0.0,
            sitk.sitkFloat32,
        )
        region = (slice(z0, z1), slice(int(out_lo[1]), int(out_hi[1])), slice(int(out_lo[0]), int(out_hi[0])))
        # A view, not a copy (no fresh array per slab); it keeps no reference to the image, so the
        # image rides along with it.
        yield region, sitk.GetArrayViewFromImage(restored), restored


def probability_image(prob: sitk.Image, dtype: str) -> sitk.Image:
    """A probability map as written: ``float32`` (0..1) or ``uint8`` (``round(255 * p)``: 4x smaller).

    Raises:
        PredictionError: another dtype.
    """
    check_probability_dtype(dtype)
    if dtype == "uint8":
        return sitk.Cast(sitk.Round(sitk.Clamp(prob, sitk.sitkFloat32, 0.0, 1.0) * 255.0), sitk.sitkUInt8)
    return prob


def check_probability_dtype(dtype: str) -> None:
    """Raise :class:`PredictionError` unless ``dtype`` is one of :data:`PROBABILITY_DTYPES`."""
    if dtype not in PROBABILITY_DTYPES:
        raise PredictionError(f"probabilities dtype must be one of {', '.join(PROBABILITY_DTYPES)}, got {dtype!r}")


def sidecar_document(result: PredictionResult, model_info: Mapping[str, Any], input_path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of the output contract (plus a ``prediction`` section with settings)."""
    return {
        "labels": [e.to_dict() for e in result.labels],
        "model": dict(model_info),
        "input": str(input_path),
        "versemi_version": __version__,
        "prediction": result.info,
    }


def default_output_path(input_path: str | Path, output_dir: str | Path | None = None) -> Path:
    """``scan.nrrd`` -> ``scan_seg.nii.gz`` beside it (or in ``output_dir``); a DICOM folder -> ``<folder>_seg.nii.gz``."""
    input_path = Path(input_path)
    root, _ = split_image_extension(input_path.name)
    folder = Path(output_dir) if output_dir else input_path.parent
    return folder / f"{root}_seg.nii.gz"


__all__ = [
    "PROBABILITY_DTYPES",
    "THRESHOLD",
    "LabelmapAssembler",
    "check_probability_dtype",
    "default_output_path",
    "merge_above_threshold",
    "on_input_grid",
    "probability_image",
    "restore_above_threshold",
    "sidecar_document",
]
