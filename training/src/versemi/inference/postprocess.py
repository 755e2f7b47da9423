"""Post-processing of labelmaps: keep each structure's largest component, one per side, or every large one.

A model trained on few labeled scans adds scattered false-positive blobs. As in nnU-Net, the trainer
keeps a prompt's largest component where that improves its validation Dice; the rule per prompt is
stored in the checkpoint (``"postprocessing"``) and ``versemi predict`` applies it on the input grid:

- ``largest_component``: the largest component;
- ``paired``: plus the largest other one at least :data:`PAIRED_MIN_FRACTION` of its size and
  :data:`PAIRED_MIN_SEPARATION_MM` away left-right (the other side: hippocampus, kidneys);
- ``above_fraction:F``: every component at least ``F`` times the largest (multi-part structures).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

LARGEST_COMPONENT = "largest_component"
PAIRED = "paired"
ABOVE_FRACTION = "above_fraction"
POSTPROCESSING_KINDS = (LARGEST_COMPONENT, PAIRED, f"{ABOVE_FRACTION}:F")
#: ``paired``: the other side's component is at least this fraction of the largest one.
PAIRED_MIN_FRACTION = 0.2
#: ``paired``: centres of the two sides at least this far apart along the left-right axis (mm).
PAIRED_MIN_SEPARATION_MM = 20.0


def parse_kind(kind: str) -> tuple[str, float]:
    """``(rule, fraction)`` of a post-processing kind (fraction only for ``above_fraction:F``).

    Raises:
        ValueError: an unknown kind or a fraction outside (0, 1].
    """
    if kind in (LARGEST_COMPONENT, PAIRED):
        return kind, 0.0
    rule, _, value = str(kind).partition(":")
    if rule == ABOVE_FRACTION:
        try:
            fraction = float(value)
        except ValueError:
            fraction = -1.0
        if 0.0 < fraction <= 1.0:
            return rule, fraction
    raise ValueError(f"post-processing {kind!r} is unknown; expected one of {', '.join(POSTPROCESSING_KINDS)} "
                     "(0 < F <= 1)")


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected component labels of ``mask`` and their sizes (index 0 = background, size 0)."""
    from scipy import ndimage

    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels, sizes


def kept_components(mask: np.ndarray, kind: str, side_axis: int = 2, side_spacing: float = 1.0) -> np.ndarray:
    """The voxels of boolean ``(D, H, W)`` ``mask`` that ``kind`` keeps.

    Args:
        mask: The structure (or its group's union).
        kind: A post-processing kind (:func:`parse_kind`).
        side_axis: The array axis closest to the patient's left-right axis (``paired``).
        side_spacing: Its voxel spacing, mm.
    """
    mask = np.asarray(mask, dtype=bool)
    rule, fraction = parse_kind(kind)
    if rule == LARGEST_COMPONENT:
        return largest_component(mask)
    if not mask.any():
        return mask
    labels, sizes = _components(mask)
    largest = int(np.argmax(sizes))
    if rule == ABOVE_FRACTION:
        return np.isin(labels, np.flatnonzero(sizes >= fraction * sizes[largest]))
    from scipy import ndimage

    index = np.arange(len(sizes))
    centres = np.asarray(ndimage.center_of_mass(mask, labels, index[1:]))[:, side_axis]
    centres = np.concatenate([[np.nan], centres])
    apart = np.abs(centres - centres[largest]) * side_spacing >= PAIRED_MIN_SEPARATION_MM
    other = np.where(apart & (sizes >= PAIRED_MIN_FRACTION * sizes[largest]), sizes, 0)
    keep = [largest] + ([int(np.argmax(other))] if other.any() else [])
    return np.isin(labels, keep)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean ``(D, H, W)`` mask (empty stays empty)."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def keep_largest_components(
    labelmap: np.ndarray, groups: Mapping[int, Sequence[int]], kinds: Mapping[int, str] | None = None,
    side_axis: int = 2, side_spacing: float = 1.0,
) -> np.ndarray:
    """``labelmap`` (modified in place and returned) where each label value ``v`` of ``groups`` keeps
    only its voxels inside the components of the union of the values ``groups[v]`` (which includes
    ``v``) that its kind keeps (:func:`kept_components`; default ``largest_component``); the rest
    become 0 (background).

    Only the bounding box of each group is searched, so the cost follows the structures' size, not
    the scan's.

    Args:
        labelmap: ``(D, H, W)`` label values.
        groups: Label value -> the values of its group.
        kinds: Label value -> post-processing kind (missing: ``largest_component``).
        side_axis: See :func:`kept_components`.
        side_spacing: See :func:`kept_components`.
    """
    by_group: dict[tuple[tuple[int, ...], str], list[int]] = {}
    for value, group in groups.items():
        kind = (kinds or {}).get(value, LARGEST_COMPONENT)
        by_group.setdefault((tuple(sorted(set(group) | {value})), kind), []).append(int(value))
    for (group, kind), values in by_group.items():
        union = np.isin(labelmap, group)
        if not union.any():
            continue
        box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in np.nonzero(union))
        keep = kept_components(union[box], kind, side_axis, side_spacing)
        region = labelmap[box]
        region[np.isin(region, values) & ~keep] = 0
    return labelmap


def check_postprocessing(settings: Mapping[str, str], prompt_names: Iterable[str], where: str) -> dict[str, str]:
    """Validate a ``{prompt name: kind}`` mapping; returns a plain dict.

    Raises:
        ValueError: an unknown prompt or kind (the message says where the mapping came from).
    """
    names = set(prompt_names)
    out = {}
    for name, kind in dict(settings or {}).items():
        if name not in names:
            raise ValueError(f"{where}: post-processing names {name!r}, which is not a prompt "
                             f"({', '.join(sorted(names))})")
        try:
            parse_kind(kind)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc} (for {name!r})") from None
        out[str(name)] = str(kind)
    return out
