"""The trainer's step stream: one batch per dataset, each of its plan's shape, with same-shape CutMix
donors from the other datasets and unlabeled patches of the scans that use its plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from versemi.data.augmentation import make_training_augmentation
from versemi.data.cache import CachedCase
from versemi.data.plans import DatasetPlan, Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.training.batches import StepSampler, StepStream, make_step_loader

A, B = "Dataset901_Alpha", "Dataset902_Beta"


def _case(tmp_path: Path, name: str, dataset: str, shape: tuple[int, int, int], labeled: bool, value: int) -> CachedCase:
    """A cached case whose image is ``value`` everywhere (so a patch tells where it came from)."""
    image_file = tmp_path / f"{name}-image.npy"
    np.save(image_file, np.full(shape, float(value), dtype=np.float32))
    label_file, locations, counts = None, {}, {}
    if labeled:
        label = np.zeros(shape, dtype=np.uint8)
        label[1:3, 1:3, 1:3] = 1
        label_file = tmp_path / f"{name}-label.npy"
        np.save(label_file, label)
        locations, counts = {1: np.argwhere(label == 1).astype(np.int32)}, {1: 8}
    record = {"shape_zyx": list(shape), "background_value": -1.0}
    return CachedCase(name, record, image_file, label_file, locations, counts, "k", dataset)


@pytest.fixture
def plans() -> Plans:
    spec = PreprocessingSpec(target_spacing=(1.0, 1.0, 1.0))
    return Plans({A: DatasetPlan(A, spec, (8, 8, 4)), B: DatasetPlan(B, spec, (4, 4, 8))}, aliases={"extra": A})


@pytest.fixture
def cases(tmp_path: Path) -> tuple[list[CachedCase], list[CachedCase]]:
    labeled = [_case(tmp_path, f"a{i}", A, (10, 12, 12), True, 1) for i in range(2)]
    labeled += [_case(tmp_path, f"b{i}", B, (12, 6, 6), True, 2) for i in range(2)]
    unlabeled = [_case(tmp_path, "ua", A, (10, 12, 12), False, 3), _case(tmp_path, "ux", "extra", (9, 9, 9), False, 4)]
    return labeled, unlabeled


def test_each_dataset_gets_its_shape_donors_from_the_others_and_its_plans_unlabeled(plans, cases) -> None:
    labeled, unlabeled = cases
    stream = StepStream(StepSampler(labeled, unlabeled, plans, 2, 3, 0.5, donors=True), {}, seed=1)
    step = next(iter(stream))
    assert [g["dataset"] for g in step] == [A, B]
    a, b = step
    assert a["image"].shape == (2, 1, 4, 8, 8) and a["label"].shape == (2, 4, 8, 8)  # plan (8, 8, 4) x y z
    assert b["image"].shape == (2, 1, 8, 4, 4)
    # Host patches come from the host dataset, donors from the other one, at the host's shape.
    assert set(a["image"].unique().tolist()) <= {1.0, -1.0} and a["donor_dataset"] == [B, B]
    assert a["donor_image"].shape == a["image"].shape and set(a["donor_image"].unique().tolist()) <= {2.0, -1.0}
    assert b["donor_dataset"] == [A, A] and b["donor_image"].shape == b["image"].shape
    # Alpha's unlabeled patches are its own scan and the folder mapped to its plan; Beta has none.
    assert a["unlabeled"].shape == (3, 1, 4, 8, 8)
    assert set(a["unlabeled"].unique().tolist()) <= {3.0, 4.0, -1.0}
    assert b["unlabeled"] is None


def test_without_donors_or_unlabeled_the_batches_are_plain(plans, cases) -> None:
    labeled, _ = cases
    step = next(iter(StepStream(StepSampler(labeled, [], plans, 1, 0, 0.0, donors=False), {}, seed=0)))
    assert all(g["donor_image"] is None and g["unlabeled"] is None for g in step)
    single = [c for c in labeled if c.dataset == A]
    step = next(iter(StepStream(StepSampler(single, [], plans, 1, 0, 0.0, donors=True), {}, seed=0)))
    assert step[0]["donor_dataset"] == [A]  # one dataset: donors come from it


def test_workers_draw_different_steps_and_a_seed_reproduces_them(plans, cases) -> None:
    labeled, unlabeled = cases
    sampler = StepSampler(labeled, unlabeled, plans, 2, 1, 0.5, donors=True)
    transforms = {A: make_training_augmentation({"affine_prob": 0.0, "intensity_shift_prob": 1.0}), B: None}

    def steps(seed: int, workers: int, n: int = 4) -> list[torch.Tensor]:
        loader = make_step_loader(StepStream(sampler, transforms, seed=seed), workers, pin_memory=False)
        return [next(loader)[0]["image"] for _ in range(n)]

    first, again = steps(3, 2), steps(3, 2)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[0], first[1])  # worker 0's step vs worker 1's
    assert not all(torch.equal(x, y) for x, y in zip(first, steps(4, 2)))


def test_dataset_augmentation_overrides_only_its_dataset() -> None:
    from types import SimpleNamespace

    from monai.transforms import RandAffined

    from versemi.training.options import training_options
    from versemi.training.trainer import dataset_augmentations

    plans = SimpleNamespace(
        sources=("Thin", "Thick"),
        plan_for=lambda name: SimpleNamespace(target_spacing=(1.0, 1.0, 1.0) if name == "Thin" else (1.5, 1.5, 10.0)),
    )
    options = training_options({"augmentation": {"affine_prob": 0.0},
                                "dataset_augmentation": {"Thick": {"affine_prob": 0.5, "rotate_deg": 30.0}}})
    transforms = dataset_augmentations(options, plans)
    affines = {name: [t for t in transforms[name].transforms if isinstance(t, RandAffined)] for name in plans.sources}
    assert not affines["Thin"] and len(affines["Thick"]) == 1 and affines["Thick"][0].prob == 0.5
    # In-plane for the thick-slice plan: rotation about the slice axis (array axis 0) only.
    grid = affines["Thick"][0].rand_affine.rand_affine_grid
    assert grid.rotate_range[0] != 0.0 and list(grid.rotate_range[1:]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="names Other, not a dataset of this run"):
        dataset_augmentations(training_options({"dataset_augmentation": {"Other": {}}}), plans)
