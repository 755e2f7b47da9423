"""versemi.review: the annotation loop on plain folders (pseudo-label -> review -> refined label -> train).

- :mod:`versemi.review.uncertainty`: the per-case review score (real-vs-synthetic prompt disagreement
  plus predictive entropy), computable slab by slab;
- :mod:`versemi.review.manifest`: ``<review_dir>/manifest.json``, the folder's one manifest (what
  ``versemi pseudolabel`` did per case, every review decision), updated atomically under a lock;
  its rows (one case, its history and revision) are :mod:`versemi.review.manifest_rows`;
- :mod:`versemi.review.training`: :func:`refined_cases` / :func:`unrefined_cases` for the training
  config;
- :mod:`versemi.review.session`: :class:`ReviewSession` (next case, save refined with compare-and-swap, reject,
  reopen, undo, revisions, restore), the calls
  the Slicer review panel and ``versemi review`` make.

See ``docs/REVIEW.md``.
"""

from versemi.review.manifest import ReviewManifest
from versemi.review.manifest_rows import ManifestError, ManifestRow
from versemi.review.session import ReviewCase, ReviewConflict, ReviewError, ReviewSession, Revision, check_on_grid
from versemi.review.training import (
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
