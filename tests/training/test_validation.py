"""Training validation judges a checkpoint with exactly the procedure ``versemi predict`` ships."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from versemi.data.cache import PreprocessedCache
from versemi.data.plans import Plans
from versemi.data.synthetic import SyntheticStructure, make_volume
from versemi.devices import autocast_dtype
from versemi.inference import Predictor
from versemi.labels import LabelSpace
from versemi.network import build_model
from versemi.training.batches import validation_cases
from versemi.training.validation import predict_volume, validate

from versemi.data.plans import DatasetPlan
from versemi.data.preprocessing import PreprocessingSpec

ALPHA = "Dataset901_Alpha"


def _case(tmp_path: Path, spacing=(0.9, 1.1, 1.7)) -> tuple[Path, Path]:
    rng = np.random.default_rng(4)
    image, label = make_volume((30, 34, 22), [SyntheticStructure("organ_a", 1, 1.0)], rng)
    img = sitk.GetImageFromArray(image.astype(np.float32) + 3.0)  # no exact zeros: the whole scan is body
    img.SetSpacing(spacing)
    img.SetOrigin((4.0, -2.0, 7.5))
    lab = sitk.GetImageFromArray(label.astype(np.uint8))
    lab.CopyInformation(img)
    sitk.WriteImage(img, str(tmp_path / "alpha_000_0000.nii.gz"))
    sitk.WriteImage(lab, str(tmp_path / "alpha_000.nii.gz"))
    return tmp_path / "alpha_000_0000.nii.gz", tmp_path / "alpha_000.nii.gz"


def test_validation_and_predict_give_identical_probabilities(tmp_path: Path) -> None:
    space = LabelSpace.from_dataset_labels({ALPHA: {"labels": {"background": 0, "organ_a": 1}}})
    # An anisotropic plan with a non-cubic window, so a mismatch of window, grid or padding would show.
    spec = PreprocessingSpec(target_spacing=(1.2, 1.2, 2.5), modality="MR")
    plans = Plans({ALPHA: DatasetPlan(ALPHA, spec, (16, 8, 8))})
    torch.manual_seed(3)
    model = build_model({"backbone": "unet", "base_filters": 4, "depth": 3, "convs_per_stage": 1,
                         "head_channels": 4, "num_prompts": len(space)}).eval()
    payload = {"model_config": model.config, "label_space": space.to_dict(), "plans": plans.to_dict(),
               "model": model.state_dict()}
    image_path, label_path = _case(tmp_path)

    cached = PreprocessedCache(tmp_path / "cache").get("alpha_000", image_path, label_path, spec, dataset=ALPHA)
    [case] = validation_cases([cached], plans)
    assert case.window_zyx == (8, 8, 16)
    prompt = space.prompt_id("organ_a")
    # The autocast the trainer passes (the one rule of predict and validation, whatever the CPU default).
    autocast = autocast_dtype("auto", torch.device("cpu"))
    from_validation = predict_volume(model, case, [prompt], torch.device("cpu"), overlap=0.5, sw_batch_size=2,
                                     autocast_dtype=autocast)

    seen = {}

    def hook(probs: torch.Tensor, labels, record) -> None:
        seen["probs"] = probs.clone()

    Predictor(payload, device="cpu", overlap=0.5, batch_size=2).predict(
        sitk.ReadImage(str(image_path)), "organ_a", model_space_hook=hook
    )
    assert seen["probs"].shape == from_validation.shape == (1, *cached.shape)
    assert torch.equal(seen["probs"], from_validation)

    # And validate() scores exactly these probabilities.
    result = validate(model, [case], space, torch.device("cpu"), overlap=0.5, sw_batch_size=2, autocast_dtype=autocast)
    pred = from_validation[0].numpy() > 0.5
    truth = np.asarray(case.label) == 1
    expected = 2 * (pred & truth).sum() / max(1, pred.sum() + truth.sum())
    assert result["cases"][0]["dice"] == (1.0 if not pred.any() and not truth.any() else float(expected))
