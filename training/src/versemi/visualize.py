"""PNG overlays of a labelmap on its image, for quick visual checks of predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from versemi.fileio import atomic_write


def _window(slice_: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(slice_, [1, 99])
    return np.clip((slice_ - lo) / max(hi - lo, 1e-6), 0, 1)


def save_overlay_png(
    image: sitk.Image,
    labelmap: sitk.Image,
    colors: Mapping[int, Sequence[int]],
    path: str | Path,
    names: Mapping[int, str] | None = None,
    reference: sitk.Image | None = None,
    alpha: float = 0.45,
) -> Path:
    """Write a PNG with the three orthogonal slices through the labelmap's centre of mass.

    The image and labelmap are first put in RAS orientation so the views read the same for any
    input direction. A reference labelmap, when given, is drawn as contours on a second row.

    Args:
        image: the scan.
        labelmap: integer labels on the image's grid.
        colors: label value -> RGB 0-255.
        path: the PNG to write (atomically).
        names: label value -> name, shown in the legend.
        reference: optional ground-truth labelmap on the same grid.
        alpha: opacity of the filled labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    def ras(img: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.DICOMOrient(img, "RAS"))  # (z, y, x)

    img = ras(image).astype(np.float32)
    lab = ras(labelmap).astype(np.int32)
    ref = ras(reference).astype(np.int32) if reference is not None else None
    spacing = sitk.DICOMOrient(image, "RAS").GetSpacing()  # (x, y, z)
    focus = lab if lab.any() else (ref if ref is not None and ref.any() else None)
    centre = (
        [int(round(c)) for c in np.argwhere(focus > 0).mean(axis=0)]
        if focus is not None
        else [s // 2 for s in img.shape]
    )
    # (slice of z, y, x arrays, aspect): axial, coronal, sagittal, flipped so superior/anterior is up.
    views = [
        (lambda a: a[centre[0]], spacing[1] / spacing[0], "axial"),
        (lambda a: np.flipud(a[:, centre[1], :]), spacing[2] / spacing[0], "coronal"),
        (lambda a: np.flipud(a[:, :, centre[2]]), spacing[2] / spacing[1], "sagittal"),
    ]
    rows = 2 if ref is not None else 1
    fig, axes = plt.subplots(rows, 3, figsize=(10, 3.6 * rows), squeeze=False)
    lut = np.zeros((max(list(colors) + [0]) + 1, 4), dtype=np.float32)
    for value, rgb in colors.items():
        lut[value, :3] = np.asarray(rgb[:3], dtype=np.float32) / 255.0
        lut[value, 3] = alpha
    for col, (take, aspect, title) in enumerate(views):
        for row in range(rows):
            ax = axes[row][col]
            ax.imshow(_window(take(img)), cmap="gray", aspect=aspect, interpolation="nearest")
            shown = take(lab) if row == 0 else take(ref)
            shown = np.clip(shown, 0, len(lut) - 1)
            ax.imshow(lut[shown], aspect=aspect, interpolation="nearest")
            ax.set_title(f"{title} ({'prediction' if row == 0 else 'reference'})", fontsize=9)
            ax.axis("off")
    legend = [
        Patch(color=np.asarray(colors[v][:3]) / 255.0, label=(names or {}).get(v, str(v)))
        for v in sorted(colors)
        if v > 0
    ]
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=min(4, len(legend)), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    try:
        # format="png" explicitly: a file object has no extension to infer it from.
        return atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)
