"""The trainer's data: preprocessed cases, per-dataset balanced patch streams, DataLoaders.

- Cases come from the config (:meth:`TrainConfig.split_validation` for labeled training/validation
  cases, :meth:`TrainConfig.unlabeled_cases` for unlabeled scans), preprocessed once into the
  :class:`~versemi.data.cache.PreprocessedCache` with each dataset's own modality.
- Labeled patches are drawn dataset-balanced by default (a dataset uniformly, then a case of it), so
  a batch usually holds several datasets: what cross-dataset CutMix needs. Unlabeled patches are
  drawn uniformly from the pooled unlabeled scans.
- Each stream is a :class:`~versemi.data.sampling.PatchStream` read by a DataLoader whose workers
  prefetch; the stream seed depends on the run seed, the rank, the stage and the step the run
  (re)starts at, so ranks draw different patches and a resumed run does not replay the first ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from versemi.data.cache import CacheJob, CachedCase, PreprocessedCache, fill_cache, spec_for_dataset
from versemi.data.config import TrainConfig
from versemi.data.preprocessing import PreprocessingSpec
from versemi.data.sampling import Patch, PatchSampler, PatchStream, patch_size_zyx, seed_worker
from versemi.training.validation import ValidationCase

DATASET_SAMPLING = ("balanced", "proportional")


def preprocessing_spec(config: TrainConfig, dataset: str) -> PreprocessingSpec:
    """The spec of a dataset or unlabeled folder (:func:`versemi.data.cache.spec_for_dataset`)."""
    return spec_for_dataset(config, dataset)


@dataclass
class TrainingCases:
    """The preprocessed cases of one run.

    Attributes:
        labeled: Labeled TRAINING cases (validation cases removed).
        validation: Labeled validation cases (model selection only).
        unlabeled: Unlabeled scans (empty when the method does not use them).
    """

    labeled: list[CachedCase]
    validation: list[CachedCase]
    unlabeled: list[CachedCase]

    def listing(self) -> dict[str, Any]:
        """Case ids per dataset, for the training log (a later step checks which were labeled)."""

        def by_dataset(cases: Sequence[CachedCase]) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for c in cases:
                out.setdefault(c.dataset or "?", []).append(c.case_id)
            return out

        return {
            "labeled": by_dataset(self.labeled),
            "validation": by_dataset(self.validation),
            "unlabeled": by_dataset(self.unlabeled),
        }


def load_cases(config: TrainConfig, with_unlabeled: bool, progress: bool = False, workers: int = 1) -> TrainingCases:
    """Preprocess (or read from the cache) every case the run needs.

    Args:
        config: The training config.
        with_unlabeled: Also the unlabeled scans (methods that use them).
        progress: tqdm bar while preprocessing.
        workers: Processes preprocessing at once.

    Raises:
        ValueError: no labeled training case, or a case that cannot be read/preprocessed (the
            message names the file).
    """
    train, val = config.split_validation()
    if not train:
        raise ValueError(f"{config.source or 'config'}: no labeled training cases")
    unlabeled = config.unlabeled_cases() if with_unlabeled else []
    jobs = [CacheJob(c.case_id, c.image_path, c.label_path, spec_for_dataset(config, c.dataset), c.dataset)
            for c in [*train, *val]]
    jobs += [CacheJob(c.case_id, c.image_path, None, spec_for_dataset(config, c.dataset), c.dataset)
             for c in unlabeled]
    cached, _ = fill_cache(PreprocessedCache(config.cache_dir), jobs, workers=max(1, workers), progress=progress)
    n_train, n_val = len(train), len(val)
    return TrainingCases(cached[:n_train], cached[n_train : n_train + n_val], cached[n_train + n_val :])


def validation_cases(cases: Sequence[CachedCase]) -> list[ValidationCase]:
    """Cached validation cases as :class:`ValidationCase` (spacing of the preprocessed grid, zyx)."""
    out = []
    for c in cases:
        spacing_xyz = c.record["resampled"]["spacing"]
        out.append(
            ValidationCase(
                c.case_id,
                c.dataset or "",
                c.image,
                c.label,
                (float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0])),
            )
        )
    return out


class DatasetBalancedSampler:
    """Draws a dataset (uniformly, or proportionally to its number of cases), then a patch of it.

    Has the ``sample(rng)`` interface of :class:`~versemi.data.sampling.PatchSampler`, so a
    :class:`~versemi.data.sampling.PatchStream` can use it.
    """

    def __init__(
        self, cases: Sequence[CachedCase], patch_size: Sequence[int], foreground_oversample: float, mode: str
    ) -> None:
        if mode not in DATASET_SAMPLING:
            raise ValueError(f"training.dataset_sampling must be one of {DATASET_SAMPLING}, got {mode!r}")
        groups: dict[str, list[CachedCase]] = {}
        for c in cases:
            groups.setdefault(c.dataset or "", []).append(c)
        self.samplers = [PatchSampler(g, patch_size, foreground_oversample) for g in groups.values()]
        sizes = np.array([len(g) for g in groups.values()], dtype=np.float64)
        self.probabilities = sizes / sizes.sum() if mode == "proportional" else np.full(len(sizes), 1 / len(sizes))

    def sample(self, rng: np.random.Generator | None = None) -> Patch:
        rng = rng if rng is not None else np.random.default_rng()
        index = int(rng.choice(len(self.samplers), p=self.probabilities))
        return self.samplers[index].sample(rng)


def stream_seed(seed: int, rank: int, stage: int, start_step: int, stream: int) -> int:
    """A 31-bit seed for one patch stream of one (re)start of one rank."""
    return int(np.random.SeedSequence([seed, rank, stage, start_step, stream]).generate_state(1)[0] >> 1)


def make_loader(
    stream: PatchStream, batch_size: int, num_workers: int, pin_memory: bool
) -> Iterator[dict[str, Any]]:
    """An endless iterator of collated batches from a prefetching DataLoader."""
    loader = DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )
    return iter(loader)


def build_streams(
    cases: TrainingCases,
    config: TrainConfig,
    options: Mapping[str, Any],
    rank: int,
    stage: int,
    start_step: int,
    with_unlabeled: bool,
    transform: Any,
) -> tuple[PatchStream, PatchStream | None]:
    """The labeled and (optionally) unlabeled patch streams of one rank."""
    patch = patch_size_zyx(config.patch_size)
    labeled = PatchStream(
        DatasetBalancedSampler(  # type: ignore[arg-type]
            cases.labeled, patch, float(options["foreground_oversample"]), str(options["dataset_sampling"])
        ),
        dataset="labeled",
        transform=transform,
        seed=stream_seed(config.seed, rank, stage, start_step, 0),
    )
    unlabeled = None
    if with_unlabeled:
        if not cases.unlabeled:
            raise ValueError(
                f"{config.source or 'config'}: the method needs unlabeled scans but the config has none "
                "(datasets with unlabeled cases or unlabeled_dirs)"
            )
        unlabeled = PatchStream(
            PatchSampler(cases.unlabeled, patch, 0.0),
            dataset="unlabeled",
            transform=transform,
            seed=stream_seed(config.seed, rank, stage, start_step, 1),
        )
    return labeled, unlabeled


def labeled_batch_to_device(
    batch: Mapping[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(images (B, 1, D, H, W), labels (B, D, H, W), datasets)`` of a collated labeled batch."""
    if not all(bool(x) for x in batch["labeled"]):
        raise RuntimeError("an unlabeled patch reached the labeled stream")
    images = batch["image"].to(device, non_blocking=True)
    labels = batch["label"].to(device, non_blocking=True)
    return images, labels, list(batch["dataset"])
