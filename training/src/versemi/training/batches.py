"""The trainer's data: preprocessed cases and one bundle of patches per step, one group per dataset.

Cases come from the config and are preprocessed once into the
:class:`~versemi.data.cache.PreprocessedCache` with their dataset's plan. Every step has a **group**
per labeled dataset (its own patch shape, so its own forward pass): ``batch_size`` labeled patches
and, when the method needs them, as many CutMix **donor** patches of that shape from the other
datasets and ``unlabeled_batch_size`` **unlabeled** patches planned like it. :class:`StepStream`
draws and augments steps in DataLoader workers, seeded by (seed, rank, stage, start step), so ranks
differ and a resumed run does not replay its first patches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from versemi.data.cache import CacheJob, CachedCase, PreprocessedCache, fill_cache
from versemi.data.config import TrainConfig
from versemi.data.plans import Plans
from versemi.data.sampling import Patch, PatchSampler, seed_worker
from versemi.training.options import TrainingOptions
from versemi.training.validation import ValidationCase


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


def load_cases(
    config: TrainConfig, plans: Plans, with_unlabeled: bool, progress: bool = False, workers: int = 1
) -> TrainingCases:
    """Preprocess (or read from the cache) every case the run needs, each with its dataset's plan.

    Args:
        config: The training config.
        plans: The run's plans.
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
    jobs = [CacheJob(c.case_id, c.image_path, c.label_path, plans.spec_for(c.dataset), c.dataset)
            for c in [*train, *val]]
    jobs += [CacheJob(c.case_id, c.image_path, None, plans.spec_for(c.dataset), c.dataset) for c in unlabeled]
    cached, _ = fill_cache(PreprocessedCache(config.cache_dir), jobs, workers=max(1, workers), progress=progress)
    n_train, n_val = len(train), len(val)
    return TrainingCases(cached[:n_train], cached[n_train : n_train + n_val], cached[n_train + n_val :])


def validation_cases(cases: Sequence[CachedCase], plans: Plans) -> list[ValidationCase]:
    """Cached validation cases as :class:`ValidationCase` (their plan's window, the preprocessed grid)."""
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
                plans.plan_for(c.dataset or "").patch_size_zyx,
                c.background_value,
                plans.plan_for(c.dataset or "").network,
            )
        )
    return out


@dataclass
class GroupPatches:
    """One dataset's patches of one step (all of one shape), before augmentation."""

    dataset: str
    labeled: list[Patch]
    donors: list[Patch]
    unlabeled: list[Patch]


class StepSampler:
    """Draws the patches of one step: a group per labeled dataset (see the module docstring).

    Args:
        labeled: The labeled training cases (every dataset).
        unlabeled: The unlabeled scans (may be empty).
        plans: Patch shape of each dataset, and which dataset's plan each unlabeled source uses.
        batch_size: Labeled patches per dataset.
        unlabeled_batch_size: Unlabeled patches per dataset (0: none).
        foreground_oversample: Share of labeled patches forced to contain foreground.
        donors: Whether to draw CutMix donor patches.
    """

    def __init__(
        self,
        labeled: Sequence[CachedCase],
        unlabeled: Sequence[CachedCase],
        plans: Plans,
        batch_size: int,
        unlabeled_batch_size: int,
        foreground_oversample: float,
        donors: bool,
    ) -> None:
        by_dataset: dict[str, list[CachedCase]] = {}
        for c in labeled:
            by_dataset.setdefault(c.dataset or "", []).append(c)
        unlabeled_by: dict[str, list[CachedCase]] = {}
        for c in unlabeled:
            unlabeled_by.setdefault(plans.plan_for(c.dataset or "").dataset, []).append(c)
        self.datasets = list(by_dataset)
        self.shapes = {d: plans.plan_for(d).patch_size_zyx for d in self.datasets}
        self.batch_size = int(batch_size)
        self.unlabeled_batch_size = int(unlabeled_batch_size)
        self.donors = donors
        # One sampler per (source dataset, patch shape): donors are cut at the host's shape.
        self._labeled = {
            (src, host): PatchSampler(cases, self.shapes[host], foreground_oversample)
            for src, cases in by_dataset.items()
            for host in self.datasets
            if src == host or donors
        }
        self._unlabeled = {
            d: PatchSampler(unlabeled_by[d], self.shapes[d], 0.0)
            for d in self.datasets
            if d in unlabeled_by and unlabeled_batch_size > 0
        }

    @property
    def has_unlabeled(self) -> bool:
        return bool(self._unlabeled)

    def sample(self, rng: np.random.Generator) -> list[GroupPatches]:
        groups = []
        for host in self.datasets:
            labeled = [self._labeled[(host, host)].sample(rng) for _ in range(self.batch_size)]
            donors = []
            if self.donors:
                others = [d for d in self.datasets if d != host] or [host]
                for _ in range(self.batch_size):
                    src = others[int(rng.integers(len(others)))]
                    donors.append(self._labeled[(src, host)].sample(rng))
            unlabeled = []
            if host in self._unlabeled:
                unlabeled = [self._unlabeled[host].sample(rng) for _ in range(self.unlabeled_batch_size)]
            groups.append(GroupPatches(host, labeled, donors, unlabeled))
        return groups


Transform = Callable[[dict[str, Any]], dict[str, Any]]


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (MONAI returns MetaTensors; their metadata only slows collation)."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(x)


def augment_patch(patch: Patch, transform: Transform | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(image (1, D, H, W) float32, label (D, H, W) uint8 or None)`` of one augmented patch."""
    data: dict[str, Any] = {"image": torch.from_numpy(patch.image)}
    if patch.label is not None:
        data["label"] = torch.from_numpy(patch.label[None])
    if transform is not None:
        data = transform(data)
    image = _plain(data["image"]).to(torch.float32).contiguous()
    label = _plain(data["label"])[0].round().to(torch.uint8).contiguous() if patch.label is not None else None
    return image, label


class StepStream(IterableDataset):
    """An endless stream of whole steps for a DataLoader with ``batch_size=None``.

    Each item is a list of group dicts, one per labeled dataset::

        {"dataset": str, "image": (B, 1, D, H, W) float32, "label": (B, D, H, W) uint8,
         "donor_image": (B, 1, D, H, W) | None, "donor_label": (B, D, H, W) | None,
         "donor_dataset": [str] * B | None, "unlabeled": (U, 1, D, H, W) | None}

    Args:
        sampler: Draws the patches.
        transforms: Augmentation per dataset (a dataset missing from it is not augmented). The
            donors and unlabeled patches of a group use their SOURCE dataset's augmentation.
        seed: Base seed; each DataLoader worker draws from ``default_rng([seed, worker_id])`` and
            seeds its own copy of every transform.
    """

    def __init__(self, sampler: StepSampler, transforms: Mapping[str, Transform | None], seed: int = 0) -> None:
        super().__init__()
        self.sampler = sampler
        self.transforms = dict(transforms)
        self.seed = int(seed)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        info = get_worker_info()
        worker_id = info.id if info is not None else 0
        seq = np.random.SeedSequence([self.seed, worker_id])
        rng = np.random.default_rng(seq)
        transforms = copy.deepcopy(self.transforms)
        children = seq.spawn(len(transforms))
        for child, name in zip(children, sorted(transforms)):
            t = transforms[name]
            if t is not None and hasattr(t, "set_random_state"):
                t.set_random_state(seed=int(child.generate_state(1)[0]))
        while True:
            yield [self._group(g, transforms) for g in self.sampler.sample(rng)]

    def _group(self, group: GroupPatches, transforms: Mapping[str, Transform | None]) -> dict[str, Any]:
        def stack(patches: list[Patch]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if not patches:
                return None, None
            done = [augment_patch(p, transforms.get(p.case.dataset or "")) for p in patches]
            images = torch.stack([d[0] for d in done])
            labels = torch.stack([d[1] for d in done]) if all(d[1] is not None for d in done) else None
            return images, labels

        image, label = stack(group.labeled)
        donor_image, donor_label = stack(group.donors)
        unlabeled, _ = stack(group.unlabeled)
        return {
            "dataset": group.dataset,
            "image": image,
            "label": label,
            "donor_image": donor_image,
            "donor_label": donor_label,
            "donor_dataset": [p.case.dataset or "" for p in group.donors] if group.donors else None,
            "unlabeled": unlabeled,
        }


def stream_seed(seed: int, rank: int, stage: int, start_step: int, stream: int = 0) -> int:
    """A 31-bit seed for the patch stream of one (re)start of one rank."""
    return int(np.random.SeedSequence([seed, rank, stage, start_step, stream]).generate_state(1)[0] >> 1)


def make_step_loader(stream: StepStream, num_workers: int, pin_memory: bool) -> Iterator[list[dict[str, Any]]]:
    """An endless iterator of steps from a prefetching DataLoader (items are already batched)."""
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )
    return iter(loader)


def build_step_stream(
    cases: TrainingCases,
    config: TrainConfig,
    plans: Plans,
    options: TrainingOptions,
    rank: int,
    stage: int,
    start_step: int,
    with_unlabeled: bool,
    with_donors: bool,
    transforms: Mapping[str, Transform | None],
) -> StepStream:
    """The step stream of one rank.

    Raises:
        ValueError: the method needs unlabeled scans and no dataset has any.
    """
    sampler = StepSampler(
        cases.labeled,
        cases.unlabeled if with_unlabeled else [],
        plans,
        options.batch_size,
        options.unlabeled_batch_size if with_unlabeled else 0,
        options.foreground_oversample,
        with_donors,
    )
    if with_unlabeled and not sampler.has_unlabeled:
        raise ValueError(
            f"{config.source or 'config'}: the method needs unlabeled scans but the config has none "
            "(datasets with unlabeled cases or unlabeled_dirs), or training.unlabeled_batch_size is 0"
        )
    return StepStream(sampler, transforms, seed=stream_seed(config.seed, rank, stage, start_step))
