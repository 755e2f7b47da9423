"""Coarse-to-fine prediction: whole scans for prompts trained on crops.

When a scan's volume is at least :data:`COARSE_TO_FINE_VOLUME_FACTOR` times its dataset's median
training scan and a localiser of that dataset is available (:mod:`versemi.inference.localiser`), the
predictor runs the localiser once over the whole scan on its coarse grid, segments at the plan's grid
only inside the located boxes and restores the parts onto the input grid (zero outside them).
Otherwise (nothing located, no localiser, a scan near the training size): the full sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import SimpleITK as sitk

from versemi.data.plans import Plans, PlansError
from versemi.inference.localiser import Localiser, LocaliserError, merge_boxes
from versemi.inference.planning import PreprocessingGroup, physical_extent_mm
from versemi.models import lookup_catalogue

#: A scan at least this many times the volume of a dataset's median training scan is located first.
COARSE_TO_FINE_VOLUME_FACTOR = 8.0


@dataclass(frozen=True)
class LocaliserRef:
    """A localiser file and its recorded SHA-256 (None: only the file's own checksum is checked)."""

    path: Path
    sha256: str | None = None


def is_much_larger(image: sitk.Image, plans: Plans, dataset: str, factor: float = COARSE_TO_FINE_VOLUME_FACTOR) -> bool:
    """Whether ``image`` covers at least ``factor`` times the volume of ``dataset``'s median training
    scan (False without a fingerprint)."""
    try:
        fingerprint = plans.plan_for(dataset).fingerprint
    except PlansError:
        return False
    if fingerprint is None:
        return False
    trained = math.prod(n * s for n, s in zip(fingerprint.median_size, fingerprint.median_spacing))
    return trained > 0 and math.prod(physical_extent_mm(image)) >= factor * trained


class Localisers:
    """The localisers a predictor may use, loaded on first use.

    Args:
        refs: Dataset -> a localiser file (:class:`LocaliserRef` or path) or a loaded :class:`Localiser`.
    """

    def __init__(self, refs: Mapping[str, LocaliserRef | str | Path | Localiser] | None = None) -> None:
        self._refs = dict(refs or {})
        self._loaded: dict[str, Localiser] = {}

    def __contains__(self, dataset: str) -> bool:
        return dataset in self._refs

    def get(self, dataset: str) -> Localiser:
        """The localiser of ``dataset``.

        Raises:
            LocaliserError: a damaged or unreadable file, or one for another dataset.
        """
        if dataset not in self._loaded:
            ref = self._refs[dataset]
            if isinstance(ref, Localiser):
                localiser = ref
            else:
                ref = ref if isinstance(ref, LocaliserRef) else LocaliserRef(Path(ref))
                localiser = Localiser.load(ref.path, ref.sha256)
            if localiser.dataset != dataset:
                raise LocaliserError(f"localiser of {localiser.dataset} given for {dataset}")
            self._loaded[dataset] = localiser
        return self._loaded[dataset]

    def boxes(self, image: sitk.Image, group: PreprocessingGroup, plans: Plans) -> tuple[list[tuple[int, ...]] | None, dict[str, Any]]:
        """The boxes of ``image`` to segment for ``group``, or None for the full sweep, and the record
        for ``info``: full sweep unless every dataset of the group has a localiser and the scan is
        much larger than that dataset's training scans; then the union of the located boxes, merged
        where they overlap (None again when nothing is located)."""
        if not group.datasets or not all(d in self for d in group.datasets):
            return None, {}
        if not any(is_much_larger(image, plans, d) for d in group.datasets):
            return None, {}

        found: list[tuple[int, ...]] = []
        for dataset in group.datasets:
            found.extend(self.get(dataset).locate(image, group.spec))
        if not found:
            return None, {"localised": "nothing located: full sweep"}
        boxes = merge_boxes(found)
        return boxes, {"localised": [list(b) for b in boxes]}


def catalogue_localisers(entry: Any) -> dict[str, LocaliserRef]:
    """The localiser files of a catalogue entry (its ``localisers``), for an entry with a folder."""
    paths = getattr(entry, "localiser_paths", None) or {}
    return {dataset: LocaliserRef(paths[dataset], item["sha256"]) for dataset, item in entry.localisers.items()
            if paths.get(dataset) is not None}


def installed_localisers(installed: Any) -> dict[str, LocaliserRef]:
    """The localisers of an installed or embedded model's catalogue entry (``installed``: its
    :class:`~versemi.models.InstalledModel` record, or None for any other file: none)."""
    if installed is None:
        return {}
    try:
        entry = lookup_catalogue().find(installed.name, installed.version)
    except Exception:  # noqa: BLE001 - the catalogue is optional for prediction
        return {}
    return catalogue_localisers(entry) if entry is not None else {}


def box_slices(box: Sequence[int]) -> tuple[slice, slice, slice]:
    """``(x0, y0, z0, x1, y1, z1)`` -> SimpleITK image slices ``(x, y, z)``."""
    return slice(box[0], box[3]), slice(box[1], box[4]), slice(box[2], box[5])


__all__ = ["COARSE_TO_FINE_VOLUME_FACTOR", "LocaliserRef", "Localisers", "box_slices", "catalogue_localisers",
           "installed_localisers", "is_much_larger"]
