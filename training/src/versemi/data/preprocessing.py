"""Preprocessing of one scan (and its label) for training and inference, and its exact inverse.

:func:`preprocess_case`, in order:

1. **Reorient** to ``spec.orientation`` (``DICOMOrient``: axes permuted and flipped, no interpolation;
   the letters say where each index increases, ``"RAS"`` = x to the right, y anterior, z superior).
2. **Resample** to ``spec.target_spacing`` in physical space: the image linear or B-spline, the label
   nearest-neighbour onto the image's new grid, so both share one grid.
3. **Normalise** (``spec.normalization``): ``zscore`` over the non-zero voxels (MR); ``ct_zscore``:
   clip to the dataset's foreground percentiles and z-score with its foreground statistics (nnU-Net's
   CT scheme); ``ct_window``: clip to ``spec.ct_window`` and scale to ``[0, 1]``.
4. **Crop** to the body (voxels ``!= 0``; CT: ``> -500`` HU) united with the label's foreground.

:func:`restore_to_input_grid` undoes 4 -> 2 -> 1 onto EXACTLY the input grid (nearest neighbour for
labels, linear for probabilities). Arrays are ``(z, y, x)``; record spacings and sizes ``(x, y, z)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.data.memory import check_preprocessing_memory
from versemi.image_headers import grid_differences

# Bump whenever the algorithm's output changes: cache entries made by another version are rebuilt.
PREPROCESSING_VERSION = 2

DEFAULT_CT_WINDOW = (-175.0, 250.0)  # soft-tissue abdominal window (HU)
CT_BODY_THRESHOLD_HU = -500.0  # voxels denser than this count as "body" for cropping CT scans
_INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}
NORMALIZATIONS = ("zscore", "ct_zscore", "ct_window")


def default_normalization(modality: str, has_intensity_stats: bool = False) -> str:
    """``ct_zscore`` for CT with dataset statistics, ``ct_window`` for CT without, else ``zscore``."""
    if str(modality).upper() == "CT":
        return "ct_zscore" if has_intensity_stats else "ct_window"
    return "zscore"


@dataclass(frozen=True)
class PreprocessingSpec:
    """How scans are brought to the network's input space: one dataset's part of the plans
    (:class:`versemi.data.plans.DatasetPlan`), stored in every checkpoint.

    Attributes:
        target_spacing: voxel spacing after resampling, ``(x, y, z)`` in mm.
        modality: ``"CT"`` (body mask by HU for cropping) or anything else (MR-like).
        normalization: one of :data:`NORMALIZATIONS`; ``None`` = :func:`default_normalization` of the
            modality without dataset statistics.
        ct_window: ``(lo, hi)`` HU window of ``"ct_window"``, mapped to ``[0, 1]``.
        intensity_clip: ``(lo, hi)`` clip of ``"ct_zscore"``.
        intensity_mean: mean of ``"ct_zscore"``.
        intensity_std: standard deviation of ``"ct_zscore"``.
        orientation: three-letter orientation for :func:`SimpleITK.DICOMOrient` (e.g. ``"RAS"``).
        image_interpolation: ``"linear"`` or ``"bspline"`` (cubic) for images; labels are always
            nearest neighbour.
        crop_to_nonzero: crop to the bounding box of the body / non-zero region.
        version: the preprocessing algorithm version this spec was made with.
    """

    target_spacing: tuple[float, float, float]
    modality: str = "MR"
    normalization: str | None = None
    ct_window: tuple[float, float] = DEFAULT_CT_WINDOW
    intensity_clip: tuple[float, float] | None = None
    intensity_mean: float | None = None
    intensity_std: float | None = None
    orientation: str = "RAS"
    image_interpolation: str = "linear"
    crop_to_nonzero: bool = True
    version: int = field(default=PREPROCESSING_VERSION)

    def __post_init__(self) -> None:
        # Normalise sequences to tuples of floats so equal specs compare and hash equal.
        spacing = tuple(float(s) for s in self.target_spacing)
        if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"target_spacing must be three positive numbers (x, y, z mm), got {self.target_spacing!r}")
        window = tuple(float(w) for w in self.ct_window)
        if len(window) != 2 or not window[0] < window[1]:
            raise ValueError(f"ct_window must be (lo, hi) with lo < hi, got {self.ct_window!r}")
        if self.image_interpolation not in _INTERPOLATORS:
            raise ValueError(
                f"image_interpolation must be one of {sorted(_INTERPOLATORS)}, got {self.image_interpolation!r}"
            )
        orientation = str(self.orientation).upper()
        if len(orientation) != 3 or sorted(_axis_of(c) for c in orientation) != [0, 1, 2]:
            raise ValueError(f"orientation must be three letters like 'RAS' or 'LPS', got {self.orientation!r}")
        normalization = self.normalization or default_normalization(self.modality)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
        clip = None
        if normalization == "ct_zscore":
            if self.intensity_clip is None or self.intensity_mean is None or self.intensity_std is None:
                raise ValueError("normalization 'ct_zscore' needs intensity_clip, intensity_mean and intensity_std")
            clip = tuple(float(v) for v in self.intensity_clip)
            if len(clip) != 2 or not clip[0] < clip[1]:
                raise ValueError(f"intensity_clip must be (lo, hi) with lo < hi, got {self.intensity_clip!r}")
            if not (math.isfinite(float(self.intensity_std)) and float(self.intensity_std) > 0):
                raise ValueError(f"intensity_std must be positive, got {self.intensity_std!r}")
            object.__setattr__(self, "intensity_mean", float(self.intensity_mean))
            object.__setattr__(self, "intensity_std", float(self.intensity_std))
        else:  # statistics only mean something for ct_zscore: drop them so equal specs compare equal
            object.__setattr__(self, "intensity_mean", None)
            object.__setattr__(self, "intensity_std", None)
        object.__setattr__(self, "intensity_clip", clip)
        object.__setattr__(self, "normalization", normalization)
        object.__setattr__(self, "target_spacing", spacing)
        object.__setattr__(self, "ct_window", window)
        object.__setattr__(self, "orientation", orientation)
        object.__setattr__(self, "modality", str(self.modality))
        object.__setattr__(self, "crop_to_nonzero", bool(self.crop_to_nonzero))
        object.__setattr__(self, "version", int(self.version))

    @property
    def is_ct(self) -> bool:
        return self.modality.upper() == "CT"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (lists, not tuples) that :meth:`from_dict` reads back."""
        return {
            "target_spacing": list(self.target_spacing),
            "modality": self.modality,
            "normalization": self.normalization,
            "ct_window": list(self.ct_window),
            "intensity_clip": list(self.intensity_clip) if self.intensity_clip is not None else None,
            "intensity_mean": self.intensity_mean,
            "intensity_std": self.intensity_std,
            "orientation": self.orientation,
            "image_interpolation": self.image_interpolation,
            "crop_to_nonzero": self.crop_to_nonzero,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessingSpec":
        """Build a spec from :meth:`to_dict` output; unknown keys are an error (typos)."""
        known = {"target_spacing", "modality", "normalization", "ct_window", "intensity_clip", "intensity_mean",
                 "intensity_std", "orientation", "image_interpolation", "crop_to_nonzero", "version"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown preprocessing setting(s): {sorted(unknown)}")
        if "target_spacing" not in d:
            raise ValueError("preprocessing settings lack 'target_spacing'")
        return cls(**{k: d[k] for k in known if k in d})


@dataclass
class PreprocessedCase:
    """One preprocessed case.

    Attributes:
        image: ``(D, H, W)`` float32, normalised, on the target grid (cropped).
        label: ``(D, H, W)`` uint8 on the same grid, or None.
        record: JSON-serialisable dict with everything :func:`restore_to_input_grid` needs.
    """

    image: np.ndarray
    label: np.ndarray | None
    record: dict[str, Any]


def _axis_of(letter: str) -> int:
    return {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}.get(letter, -1)


def _geometry(image: sitk.Image) -> dict[str, Any]:
    return {
        "size": [int(s) for s in image.GetSize()],
        "spacing": [float(s) for s in image.GetSpacing()],
        "origin": [float(o) for o in image.GetOrigin()],
        "direction": [float(d) for d in image.GetDirection()],
    }


def _check_3d_scalar(image: sitk.Image, what: str) -> None:
    if not isinstance(image, sitk.Image):
        raise TypeError(f"{what} must be a SimpleITK.Image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise ValueError(f"{what} must be a 3D image, got {image.GetDimension()}D (size {image.GetSize()})")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"{what} must have one component per voxel, got {image.GetNumberOfComponentsPerPixel()}"
            " (split multi-channel scans into one file per channel)"
        )


def resampled_grid(image: sitk.Image, target_spacing: Sequence[float]) -> dict[str, Any]:
    """The grid an image is resampled onto: target spacing, same direction, same physical extent.

    The new size is ``round(size * spacing / target_spacing)`` per axis and the grid is centred on
    the input's physical extent (voxel edges, not centres), so every new voxel centre lies inside
    the input and no extrapolation is needed.

    Args:
        image: the (already reoriented) image.
        target_spacing: ``(x, y, z)`` mm.

    Returns:
        ``{"size", "spacing", "origin", "direction"}`` in SimpleITK ``(x, y, z)`` order.
    """
    old_spacing = np.asarray(image.GetSpacing(), dtype=float)
    old_size = np.asarray(image.GetSize(), dtype=float)
    new_spacing = np.asarray(target_spacing, dtype=float)
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    # Offset (along the image axes) from the old first voxel centre to the new one.
    offset = -0.5 * old_spacing + 0.5 * (old_size * old_spacing - new_size * new_spacing) + 0.5 * new_spacing
    origin = np.asarray(image.GetOrigin(), dtype=float) + direction @ offset
    return {
        "size": [int(s) for s in new_size],
        "spacing": [float(s) for s in new_spacing],
        "origin": [float(o) for o in origin],
        "direction": [float(d) for d in direction.ravel()],
    }


def _resample(
    image: sitk.Image,
    grid: Mapping[str, Any],
    interpolator: int,
    default_value: float,
    pixel_type: int,
) -> sitk.Image:
    return sitk.Resample(
        image,
        [int(s) for s in grid["size"]],
        sitk.Transform(),
        interpolator,
        [float(o) for o in grid["origin"]],
        [float(s) for s in grid["spacing"]],
        [float(d) for d in grid["direction"]],
        float(default_value),
        pixel_type,
    )


def _label_to_uint8(label: sitk.Image) -> sitk.Image:
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(label)
    lo, hi = stats.GetMinimum(), stats.GetMaximum()
    if lo < 0 or hi > 255:
        raise ValueError(f"label values must lie in 0..255, found {lo:g}..{hi:g}")
    if label.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(label)
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise ValueError("label image has non-integer values (is it a probability map?)")
    return sitk.Cast(label, sitk.sitkUInt8)


def _normalise(raw: np.ndarray, spec: PreprocessingSpec) -> tuple[np.ndarray, dict[str, Any]]:
    if spec.normalization == "ct_window":
        lo, hi = spec.ct_window
        out = (np.clip(raw, lo, hi) - lo) / (hi - lo)
        return out.astype(np.float32, copy=False), {"kind": "ct_window", "window": [lo, hi], "range": [0.0, 1.0]}
    if spec.normalization == "ct_zscore":
        assert spec.intensity_clip is not None and spec.intensity_mean is not None and spec.intensity_std is not None
        lo, hi = spec.intensity_clip
        out = (np.clip(raw, lo, hi) - np.float32(spec.intensity_mean)) / np.float32(spec.intensity_std)
        return out.astype(np.float32, copy=False), {
            "kind": "ct_zscore", "clip": [lo, hi], "mean": spec.intensity_mean, "std": spec.intensity_std,
        }
    nonzero = raw != 0
    region = "nonzero" if nonzero.any() else "all"
    values = raw[nonzero] if region == "nonzero" else raw
    mean = float(values.mean(dtype=np.float64))
    std = float(values.std(dtype=np.float64))
    if not math.isfinite(std) or std < 1e-8:  # constant image: centre it, don't blow it up
        std = 1.0
    out = (raw - np.float32(mean)) / np.float32(std)
    return out.astype(np.float32, copy=False), {"kind": "zscore", "mean": mean, "std": std, "region": region}


def _body_bbox(raw: np.ndarray, label: np.ndarray | None, spec: PreprocessingSpec) -> list[list[int]]:
    """Bounding box ``[[z0, z1], [y0, y1], [x0, x1]]`` (half-open) of body voxels + label foreground."""
    mask = raw > CT_BODY_THRESHOLD_HU if spec.is_ct else raw != 0
    if label is not None:
        mask |= label > 0
    bbox = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:  # nothing found: keep the whole volume
            return [[0, int(n)] for n in raw.shape]
        bbox.append([int(hits[0]), int(hits[-1]) + 1])
    return bbox


def preprocess_case(
    image: sitk.Image, spec: PreprocessingSpec, label: sitk.Image | None = None
) -> PreprocessedCase:
    """Reorient, resample, normalise and crop one scan (and its label) - see the module docstring.

    Args:
        image: the scan, a single-channel 3D SimpleITK image on any grid (oblique ones included).
        spec: the preprocessing settings.
        label: optional integer label map (values 0..255) on the same grid as ``image``.

    Returns:
        The preprocessed arrays in ``(z, y, x)`` order and the record to invert them.

    Raises:
        ValueError: a non-3D or multi-channel image, a label on another grid or with values the
            label format cannot hold.
        versemi.data.memory.MemoryLimitError: the resampled scan would not fit in memory.
    """
    _check_3d_scalar(image, "image")
    check_preprocessing_memory(image, spec.target_spacing, spec.orientation, with_label=label is not None)
    if label is not None:
        _check_3d_scalar(label, "label")
        differences = grid_differences(image, label)
        if differences:
            raise ValueError("label grid differs from the image grid (image vs label): " + "; ".join(differences))
    original = _geometry(image)
    original["pixel_type"] = image.GetPixelIDTypeAsString()
    original["orientation"] = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())

    oriented = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), spec.orientation)
    grid = resampled_grid(oriented, spec.target_spacing)
    oriented_geometry = _geometry(oriented)
    same_grid = oriented_geometry["size"] == grid["size"] and np.allclose(
        oriented_geometry["spacing"], grid["spacing"], rtol=1e-6
    )
    if same_grid:  # already at the target spacing: skip an identity interpolation
        resampled = oriented
    else:
        stats = sitk.MinimumMaximumImageFilter()
        stats.Execute(oriented)
        resampled = _resample(
            oriented, grid, _INTERPOLATORS[spec.image_interpolation], stats.GetMinimum(), sitk.sitkFloat32
        )
    raw = sitk.GetArrayFromImage(resampled)

    label_array = None
    if label is not None:
        # Nearest neighbour straight onto the image's new grid (physical space) - one interpolation.
        label8 = _label_to_uint8(label)
        label_array = sitk.GetArrayFromImage(
            _resample(label8, _geometry(resampled), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        )

    # Crop first, then normalise only the kept block (less memory and time on large scans). Same
    # result: the z-score statistics use non-zero voxels, which all lie inside the body box.
    bbox = _body_bbox(raw, label_array, spec) if spec.crop_to_nonzero else [[0, int(n)] for n in raw.shape]
    region = tuple(slice(a, b) for a, b in bbox)
    cropped, norm_info = _normalise(raw[region], spec)
    cropped = np.ascontiguousarray(cropped, dtype=np.float32)
    cropped_label = np.ascontiguousarray(label_array[region]) if label_array is not None else None

    record: dict[str, Any] = {
        "version": PREPROCESSING_VERSION,
        "spec": spec.to_dict(),
        "original": original,
        "resampled": _geometry(resampled),
        "crop_bbox_zyx": bbox,
        "shape_zyx": [int(n) for n in cropped.shape],
        "normalization": norm_info,
        # Intensity of "nothing" after normalisation: what samplers pad images with.
        "background_value": float(cropped.min()) if cropped.size else 0.0,
    }
    return PreprocessedCase(image=cropped, label=cropped_label, record=record)


def _reference_image(geometry: Mapping[str, Any], pixel_type: int = sitk.sitkUInt8) -> sitk.Image:
    ref = sitk.Image([int(s) for s in geometry["size"]], pixel_type)
    ref.SetSpacing([float(s) for s in geometry["spacing"]])
    ref.SetOrigin([float(o) for o in geometry["origin"]])
    ref.SetDirection([float(d) for d in geometry["direction"]])
    return ref


def restore_to_input_grid(
    array: np.ndarray, record: Mapping[str, Any], is_label: bool, fill: float = 0
) -> sitk.Image | list[sitk.Image]:
    """Map an array on the preprocessed grid back onto the original scan's grid exactly.

    Args:
        array: ``(D, H, W)`` with the shape of the preprocessed image (``record["shape_zyx"]``), or
            ``(C, D, H, W)`` for several channels (e.g. one probability map per prompt). Torch
            tensors are accepted (moved to CPU).
        record: the record from :func:`preprocess_case`.
        is_label: True for label maps (nearest neighbour, integer pixel type kept; bool -> uint8),
            False for probabilities / intensities (linear interpolation, float32).
        fill: value for voxels outside the cropped region and outside the resampled field of view.

    Returns:
        A SimpleITK image with exactly the original size, spacing, origin and direction; for a
        ``(C, D, H, W)`` input, a list of C such images (channel order kept).
    """
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    expected = tuple(int(n) for n in record["shape_zyx"])
    if array.ndim == 4:
        return [restore_to_input_grid(channel, record, is_label, fill) for channel in array]
    if array.ndim != 3 or array.shape != expected:
        raise ValueError(f"array of shape {array.shape} does not match the preprocessed shape {expected} (z, y, x)")

    if is_label:
        if array.dtype == bool:
            array = array.astype(np.uint8)
        elif not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"label arrays must be integer or bool, got {array.dtype}")
        elif array.dtype.itemsize == 8:  # SimpleITK has no 64-bit label resampling need; keep it small
            array = array.astype(np.int32)
        interpolator = sitk.sitkNearestNeighbor
    else:
        array = array.astype(np.float32, copy=False)
        interpolator = sitk.sitkLinear

    resampled_geom = record["resampled"]
    full_shape = tuple(int(n) for n in reversed(resampled_geom["size"]))
    full = np.full(full_shape, fill, dtype=array.dtype)
    full[tuple(slice(a, b) for a, b in record["crop_bbox_zyx"])] = array

    on_grid = sitk.GetImageFromArray(full)
    on_grid.SetSpacing([float(s) for s in resampled_geom["spacing"]])
    on_grid.SetOrigin([float(o) for o in resampled_geom["origin"]])
    on_grid.SetDirection([float(d) for d in resampled_geom["direction"]])

    original = record["original"]
    restored = _resample(on_grid, original, interpolator, fill, on_grid.GetPixelID())
    # Copy the geometry verbatim so float round-trips through the record cannot perturb it.
    restored.SetSpacing([float(s) for s in original["spacing"]])
    restored.SetOrigin([float(o) for o in original["origin"]])
    restored.SetDirection([float(d) for d in original["direction"]])
    return restored


def reference_grid(record: Mapping[str, Any]) -> sitk.Image:
    """An empty image on the original scan's grid (handy for writing outputs beside the input)."""
    return _reference_image(record["original"])
