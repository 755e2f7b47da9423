"""The annotation loop on plain folders: pseudo-label -> review -> refined label -> training.

- :mod:`~versemi.review.uncertainty`: the per-case review score, computable slab by slab;
- :mod:`~versemi.review.manifest`: the folder's ``manifest.json``, updated atomically under a lock
  (its rows: :mod:`~versemi.review.manifest_rows`);
- :mod:`~versemi.review.session`: :class:`ReviewSession`, the calls of the Slicer panel and ``versemi review``;
- :mod:`~versemi.review.refined`: the folder as training data (:func:`refined_cases`).

See docs/REVIEW.md.
"""

from versemi.review.manifest import ReviewManifest
from versemi.review.manifest_rows import ManifestError, ManifestRow
from versemi.review.session import ReviewCase, ReviewConflict, ReviewError, ReviewSession, Revision, check_on_grid
from versemi.review.refined import (
    ReviewTrainingView,
    refined_cases,
    review_dataset_name,
    review_label_table,
    training_view,
    unrefined_cases,
)
from versemi.review.uncertainty import (
    UncertaintyAccumulator,
    UncertaintyScore,
    uncertainty_from_prompt_probabilities,
    uncertainty_score,
)

__all__ = [
    "ManifestError",
    "ManifestRow",
    "ReviewCase",
    "ReviewConflict",
    "ReviewError",
    "ReviewManifest",
    "ReviewSession",
    "ReviewTrainingView",
    "Revision",
    "UncertaintyAccumulator",
    "UncertaintyScore",
    "check_on_grid",
    "refined_cases",
    "review_dataset_name",
    "review_label_table",
    "training_view",
    "uncertainty_from_prompt_probabilities",
    "uncertainty_score",
    "unrefined_cases",
]
