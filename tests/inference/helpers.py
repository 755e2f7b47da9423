"""Tiny test checkpoints and images for the inference tests (no trainer needed)."""

from __future__ import annotations

import contextlib
import locale
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk
import torch

from versemi.checkpoint import save_checkpoint
from versemi.data.plans import DatasetPlan, Plans
from versemi.data.preprocessing import PreprocessingSpec
from versemi.labels import LabelSpace
from versemi.network import build_model

TINY_MODEL = {"backbone": "unet", "base_filters": 4, "depth": 3, "convs_per_stage": 1, "head_channels": 4}


def two_dataset_label_space() -> LabelSpace:
    """organ_a (dataset Alpha) + spleen, liver (dataset Beta) + the synthetic prompt."""
    return LabelSpace.from_dataset_labels(
        {
            "Dataset901_Alpha": {"labels": {"background": 0, "organ_a": 1}},
            "Dataset902_Beta": {"labels": {"background": 0, "spleen": 1, "liver": 2}},
        }
    )


def tiny_payload(
    label_space: LabelSpace | None = None,
    spacing_xyz: Sequence[float] = (1.5, 1.5, 1.5),
    patch_xyz: Sequence[int] = (16, 16, 16),
    modality: str = "MR",
    seed: int = 0,
    model: torch.nn.Module | None = None,
) -> dict:
    """A checkpoint payload with a randomly initialised (or given) tiny model."""
    label_space = label_space or two_dataset_label_space()
    torch.manual_seed(seed)
    if model is None:
        model = build_model({**TINY_MODEL, "num_prompts": len(label_space)})
    spec = PreprocessingSpec(target_spacing=tuple(spacing_xyz), modality=modality)
    return {
        "model_config": model.config,
        "label_space": label_space.to_dict(),
        "plans": Plans.single(spec, patch_xyz, label_space.datasets).to_dict(),
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


def with_plans(
    payload: dict,
    specs: dict[str, PreprocessingSpec],
    patch_xyz: Sequence[int] = (16, 16, 16),
    patches: dict[str, Sequence[int]] | None = None,
) -> dict:
    """``payload`` with per-dataset plans: ``specs`` maps each dataset (first = default) to its
    preprocessing; ``patches`` gives some datasets another window than ``patch_xyz``."""
    patches = patches or {}
    plans = Plans({name: DatasetPlan(name, spec, tuple(patches.get(name, patch_xyz))) for name, spec in specs.items()})
    return {**payload, "plans": plans.to_dict()}


def with_spec_changes(payload: dict, **changes) -> dict:
    """``payload`` whose every dataset plan has these preprocessing settings changed."""
    import dataclasses

    plans = Plans.from_dict(payload["plans"])
    datasets = {name: dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, **changes))
                for name, plan in plans.datasets.items()}
    return {**payload, "plans": dataclasses.replace(plans, datasets=datasets).to_dict()}


def write_checkpoint(path: Path, **kwargs) -> Path:
    return save_checkpoint(tiny_payload(**kwargs), path)


def make_image(
    array_zyx: np.ndarray,
    spacing=(1.0, 1.0, 1.0),
    origin=(0.0, 0.0, 0.0),
    direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> sitk.Image:
    img = sitk.GetImageFromArray(np.asarray(array_zyx))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in direction])
    return img


def write_tiny_model_datasets(root: Path, alpha_cases: int = 1, beta_cases: int = 1) -> Path:
    """Labeled nnU-Net datasets of the structures ``train_tiny_model`` learns (Alpha, Beta), under ``root``."""
    from versemi.data.synthetic import SyntheticStructure, make_nnunet_dataset

    make_nnunet_dataset(root, "Dataset901_Alpha", [SyntheticStructure("organ_a", 1, 1.0)], num_cases=alpha_cases,
                        shape_zyx=(32, 32, 32), spacing_xyz=(1.5, 1.5, 1.5), seed=3)
    make_nnunet_dataset(root, "Dataset902_Beta", [SyntheticStructure("spleen", 1, 1.5),
                                                  SyntheticStructure("liver", 2, -1.0)],
                        num_cases=beta_cases, shape_zyx=(32, 32, 32), spacing_xyz=(1.5, 1.5, 1.5), seed=4)
    return root


def train_tiny_model(
    steps: int = 100, spacing_xyz: Sequence[float] = (1.5, 1.5, 1.5), patch: int = 24, seed: int = 0,
    volume: int = 32,
) -> dict:
    """A checkpoint payload of a tiny model trained for a few steps on generated ellipsoids.

    Dataset Alpha images hold organ_a (brighter by 1.0), Beta images spleen (+1.5) and liver (-1.0);
    each image trains the prompts its dataset annotates with Dice + BCE. A few dozen steps teach the
    model enough (intensity + shape) for geometry tests to see real, non-trivial segmentations.
    """
    from versemi.data.preprocessing import preprocess_case
    from versemi.data.synthetic import SyntheticStructure, make_volume

    label_space = two_dataset_label_space()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = build_model({**TINY_MODEL, "base_filters": 8, "num_prompts": len(label_space)})
    spec = PreprocessingSpec(target_spacing=tuple(spacing_xyz), modality="MR", crop_to_nonzero=False)
    datasets = {
        "Dataset901_Alpha": [SyntheticStructure("organ_a", 1, 1.0)],
        "Dataset902_Beta": [SyntheticStructure("spleen", 1, 1.5), SyntheticStructure("liver", 2, -1.0)],
    }
    volumes = []
    for name, structures in datasets.items():
        pairs = label_space.prompts_for_dataset(name)
        for _ in range(4):
            # Volumes larger than the patch: random crops teach the model to work on any window,
            # not only on one whole, centred volume.
            image, label = make_volume((volume, volume, volume), structures, rng)
            img = sitk.GetImageFromArray(image)
            img.SetSpacing([float(s) for s in spacing_xyz])
            lab = sitk.GetImageFromArray(label)
            lab.CopyInformation(img)
            case = preprocess_case(img, spec, lab)
            target = np.stack([case.label == value for _, value in pairs]).astype(np.float32)
            volumes.append((case.image, [pid for pid, _ in pairs], target))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        image, ids, target = volumes[step % len(volumes)]
        z, y, x = (int(rng.integers(0, n - patch + 1)) for n in image.shape)
        window = (slice(z, z + patch), slice(y, y + patch), slice(x, x + patch))
        inputs = torch.from_numpy(np.ascontiguousarray(image[window]))[None, None]
        labels = torch.from_numpy(np.ascontiguousarray(target[(slice(None), *window)]))[None]
        logits = model(inputs, torch.tensor(ids))
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * labels).sum() + 1e-5) / (p.sum() + labels.sum() + 1e-5)
        loss = dice + torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    payload = tiny_payload(label_space, spacing_xyz=spacing_xyz, patch_xyz=(patch, patch, patch), model=model)
    return with_spec_changes(payload, crop_to_nonzero=False)


@contextlib.contextmanager
def kept_locale() -> Iterator[None]:
    """Restore the C locale after the block: GDCM's DICOM writer switches LC_CTYPE to "C" (ASCII) and
    leaves it there, which would make later ``Path.read_text()`` calls in the same process fail."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def write_dicom_series(
    folder: Path, image: sitk.Image, series_uid: str = "1.2.826.0.1.3680043.2.1125.1.42",
    uid_root: str = "1.2.826.0.1.3680043.2.1125.1.44", name: str = "slice",
) -> list[Path]:
    """Write ``image`` (int16, axis-aligned) as a DICOM series, one file per z slice, with the tags a
    series reader needs (position, orientation, spacing, series/instance UIDs); returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    spacing = image.GetSpacing()
    with kept_locale():
        for z in range(image.GetSize()[2]):
            slice_ = image[:, :, z]
            for tag, value in {
                "0020|000e": series_uid, "0020|000d": "1.2.826.0.1.3680043.2.1125.1.43", "0008|0060": "MR",
                "0020|0032": "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, z))),
                "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(z + 1),
                "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0008|0018": f"{uid_root}.{z + 1}",
                "0020|0052": f"{series_uid}.1",  # frame of reference (every scanner writes one)
            }.items():
                slice_.SetMetaData(tag, value)
            path = folder / f"{name}{z:03d}.dcm"
            writer.SetFileName(str(path))
            writer.Execute(slice_)
            files.append(path)
    return files


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((prediction & truth).sum()) / total
