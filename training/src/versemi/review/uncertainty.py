"""Per-case uncertainty of a pseudo-label: the review ranking only a VerSemi model can give.

A VerSemi model says "foreground" twice: the maximum over its real prompts (``m``) and its synthetic
"all foreground" prompt (``s``). Training makes them agree on unlabeled scans, so where they still
disagree the model is unsure. Over the support ``S = {v : max(m_v, s_v) > SUPPORT_THRESHOLD}``::

    disagreement = 1 - soft Dice of m and s over S          (0 when S is empty)
    entropy      = mean over S of (H(m) + H(s)) / 2         (binary entropy in bits)
    score        = 0.5 * disagreement + 0.5 * entropy       (in [0, 1]; higher = review first)

All sums over voxels, so :class:`UncertaintyAccumulator` gets the same numbers slab by slab.
Why the support and what the score means: docs/REVIEW.md, "The review score".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from versemi.labels import SYNTHETIC_PROMPT_NAME

SUPPORT_THRESHOLD = 0.05
DISAGREEMENT_WEIGHT = 0.5
ENTROPY_WEIGHT = 0.5
# Probabilities are clipped to [EPS, 1 - EPS] inside the logarithms only (H(0) = H(1) = 0 exactly).
_EPS = 1e-7
_SLAB = 32


@dataclass(frozen=True)
class UncertaintyScore:
    """The review score of one case and its two components (all in [0, 1]).

    Attributes:
        score: ``DISAGREEMENT_WEIGHT * disagreement + ENTROPY_WEIGHT * entropy``.
        disagreement: 1 - soft Dice between the max-aggregated real prompts and the synthetic prompt.
        entropy: mean binary predictive entropy (bits) of both answers over the support.
        support_voxels: number of voxels in the support ``S`` (0 = both answers empty).
    """

    score: float
    disagreement: float
    entropy: float
    support_voxels: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "disagreement": self.disagreement,
            "entropy": self.entropy,
            "support_voxels": self.support_voxels,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UncertaintyScore":
        return cls(float(d["score"]), float(d["disagreement"]), float(d["entropy"]), int(d.get("support_voxels", 0)))


def _as_float_array(x: Any, name: str) -> np.ndarray:
    """NumPy float32 view/copy of an array or a torch tensor (moved to the CPU, detached)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: probabilities contain NaN or Inf")
    return arr


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits (``[0, 1]``) of foreground probabilities ``p`` (float64 result)."""
    q = np.clip(p.astype(np.float64), _EPS, 1.0 - _EPS)
    h = -(q * np.log(q) + (1.0 - q) * np.log1p(-q)) / math.log(2.0)
    # Exactly 0 for certain voxels (the clip would otherwise leave ~2e-6).
    h[(p <= 0.0) | (p >= 1.0)] = 0.0
    return h


class UncertaintyAccumulator:
    """Streams the score over chunks of voxels (slabs, windows, anything that partitions the volume).

    Each voxel must be given exactly once, with all prompts' probabilities for that voxel. The
    result equals :func:`uncertainty_score` on the whole volume up to float rounding.

    Args:
        support_threshold: the probability above which a voxel is in the support.
        disagreement_weight: weight of the disagreement in the score.
        entropy_weight: weight of the entropy in the score.
    """

    def __init__(
        self,
        support_threshold: float = SUPPORT_THRESHOLD,
        disagreement_weight: float = DISAGREEMENT_WEIGHT,
        entropy_weight: float = ENTROPY_WEIGHT,
    ) -> None:
        if not 0.0 <= support_threshold < 1.0:
            raise ValueError(f"support_threshold must be in [0, 1), got {support_threshold}")
        if disagreement_weight < 0 or entropy_weight < 0 or disagreement_weight + entropy_weight <= 0:
            raise ValueError("weights must be non-negative and not both zero")
        self.support_threshold = float(support_threshold)
        self.disagreement_weight = float(disagreement_weight)
        self.entropy_weight = float(entropy_weight)
        self._support = 0
        self._intersection = 0.0
        self._sum_real = 0.0
        self._sum_synthetic = 0.0
        self._entropy = 0.0
        self._voxels = 0

    def update(self, real_probs: Any, synthetic_prob: Any) -> None:
        """Add one chunk.

        Args:
            real_probs: ``(K, ...)`` foreground probabilities of the K real prompts (array or tensor).
            synthetic_prob: ``(...)`` synthetic-prompt probability, same spatial shape.

        Raises:
            ValueError: shapes differ, K is 0, or non-finite values.
        """
        real = _as_float_array(real_probs, "real_probs")
        synthetic = _as_float_array(synthetic_prob, "synthetic_prob")
        if real.ndim < 1 or real.shape[0] == 0:
            raise ValueError(f"real_probs must have a leading prompt axis with K >= 1, got shape {real.shape}")
        if real.shape[1:] != synthetic.shape:
            raise ValueError(
                f"real_probs spatial shape {real.shape[1:]} differs from synthetic_prob shape {synthetic.shape}"
            )
        m = np.clip(real.max(axis=0), 0.0, 1.0)
        s = np.clip(synthetic, 0.0, 1.0)
        self._voxels += m.size
        support = np.maximum(m, s) > self.support_threshold
        if not support.any():
            return
        m = m[support].astype(np.float64)
        s = s[support].astype(np.float64)
        self._support += int(m.size)
        self._intersection += float(np.dot(m, s))
        self._sum_real += float(m.sum())
        self._sum_synthetic += float(s.sum())
        self._entropy += float((binary_entropy(m) + binary_entropy(s)).sum() / 2.0)

    @property
    def voxels(self) -> int:
        """Voxels seen so far (support or not)."""
        return self._voxels

    def result(self) -> UncertaintyScore:
        """The score of everything given so far (0 everywhere for no support)."""
        if self._support == 0:
            return UncertaintyScore(0.0, 0.0, 0.0, 0)
        denominator = self._sum_real + self._sum_synthetic
        dice = 2.0 * self._intersection / denominator if denominator > 0 else 1.0
        disagreement = float(min(max(1.0 - dice, 0.0), 1.0))
        entropy = float(min(max(self._entropy / self._support, 0.0), 1.0))
        total = self.disagreement_weight + self.entropy_weight
        score = (self.disagreement_weight * disagreement + self.entropy_weight * entropy) / total
        return UncertaintyScore(float(score), disagreement, entropy, self._support)


def uncertainty_score(real_probs: Any, synthetic_prob: Any, **kwargs: float) -> UncertaintyScore:
    """The review score of one case from all its probabilities at once.

    Args:
        real_probs: ``(K, D, H, W)`` foreground probabilities of the K real prompts (array or tensor).
        synthetic_prob: ``(D, H, W)`` synthetic-prompt probability.
        **kwargs: ``support_threshold``, ``disagreement_weight``, ``entropy_weight`` (see
            :class:`UncertaintyAccumulator`).

    Returns:
        The score and its components (module docstring for the exact formula).
    """
    acc = UncertaintyAccumulator(**kwargs)
    real = _as_float_array(real_probs, "real_probs")
    synthetic = _as_float_array(synthetic_prob, "synthetic_prob")
    if real.ndim != synthetic.ndim + 1:
        raise ValueError(
            f"real_probs must be (K, *spatial) and synthetic_prob (*spatial); got {real.shape} and {synthetic.shape}"
        )
    # Slabs along the first spatial axis bound the float64 temporaries.
    for start in range(0, max(synthetic.shape[0], 1), _SLAB):
        acc.update(real[:, start:start + _SLAB], synthetic[start:start + _SLAB])
    return acc.result()


def uncertainty_from_prompt_probabilities(
    probabilities: Any, real_indices: Sequence[int], synthetic_index: int, **kwargs: float
) -> UncertaintyScore:
    """The score from a ``(P, D, H, W)`` stack of prompt probabilities (e.g. the sliding-window output).

    Args:
        probabilities: probabilities of P prompts (array or tensor), e.g. at the model spacing.
        real_indices: positions in the stack of the real prompts to max-aggregate.
        synthetic_index: position of the synthetic prompt.
        **kwargs: as for :func:`uncertainty_score`.
    """
    real_indices = list(real_indices)
    if not real_indices:
        raise ValueError("real_indices is empty: the score needs at least one real prompt")
    if synthetic_index in real_indices:
        raise ValueError(f"synthetic_index {synthetic_index} is also listed as a real prompt")
    acc = UncertaintyAccumulator(**kwargs)
    depth = int(probabilities.shape[1])
    for start in range(0, depth, _SLAB):
        chunk = probabilities[:, start:start + _SLAB]
        acc.update(chunk[real_indices], chunk[synthetic_index])
    return acc.result()


def model_space_uncertainty(probabilities: Any, labels: Sequence[Any], record: Any = None) -> dict[str, Any]:
    """A :data:`versemi.inference.predictor.ModelSpaceHook`: the score at the model spacing.

    Cheap (no resampling): computed on the sliding-window output before it is restored to the input
    grid. The prompts passed to the predictor must include the synthetic prompt (``all_foreground``)
    and at least one real prompt; the synthetic one is recognised by its name in the label table.

    Args:
        probabilities: ``(P, d, h, w)`` probabilities of the chosen prompts (tensor or array).
        labels: the label table of the chosen prompts (entries with a ``name``), in the same order.
        record: the preprocessing record (unused).

    Returns:
        ``{"uncertainty": UncertaintyScore.to_dict()}``.

    Raises:
        ValueError: the synthetic prompt, or every real prompt, is missing from the chosen prompts.
    """
    names = [str(getattr(e, "name", e.get("name") if isinstance(e, dict) else e)) for e in labels]
    if SYNTHETIC_PROMPT_NAME not in names:
        raise ValueError(
            f"the review score needs the synthetic prompt {SYNTHETIC_PROMPT_NAME!r} among the predicted prompts "
            f"(got {names})"
        )
    synthetic = names.index(SYNTHETIC_PROMPT_NAME)
    real = [i for i in range(len(names)) if i != synthetic]
    return {"uncertainty": uncertainty_from_prompt_probabilities(probabilities, real, synthetic).to_dict()}


__all__ = [
    "DISAGREEMENT_WEIGHT",
    "ENTROPY_WEIGHT",
    "SUPPORT_THRESHOLD",
    "UncertaintyAccumulator",
    "UncertaintyScore",
    "binary_entropy",
    "model_space_uncertainty",
    "uncertainty_from_prompt_probabilities",
    "uncertainty_score",
]
