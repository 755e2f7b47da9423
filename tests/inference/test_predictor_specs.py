"""Predictor: each prompt is preprocessed like the dataset it was trained from (CT window vs MR z-score)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import versemi.inference.sliding as sliding
from versemi.data.preprocessing import PreprocessingSpec
from versemi.inference import Predictor
from versemi.inference.predictor import PredictionError
from versemi.labels import LabelSpace

from .helpers import make_image, tiny_payload, with_plans

ALPHA, BETA = "Dataset901_Alpha", "Dataset902_Beta"
# Alpha is CT at 2 mm, Beta MR at 1.5 mm: each prompt must get its own dataset's preprocessing.
CT_SPEC = PreprocessingSpec(target_spacing=(2.0, 2.0, 2.0), modality="CT")
MR_SPEC = PreprocessingSpec(target_spacing=(1.5, 1.5, 1.5), modality="MR")


def two_spec_payload(label_space: LabelSpace | None = None, beta_spec: PreprocessingSpec = MR_SPEC) -> dict:
    """A tiny checkpoint trained (nominally) on a CT dataset (Alpha, first) and an MR dataset (Beta)."""
    return with_plans(tiny_payload(label_space), {ALPHA: CT_SPEC, BETA: beta_spec})


def halves_image() -> sitk.Image:
    """24^3 voxels of 1 mm: 100 in the half x < 12, 300 in the other half (no zeros: all body).

    CT window (-175, 250) -> 0.65 and 1.0; z-score (mean 200, std 100) -> -1 and +1.
    """
    array = np.full((24, 24, 24), 100.0, dtype=np.float32)
    array[:, :, 12:] = 300.0
    return make_image(array)


def intensity_as_probability(model: Any, volume: np.ndarray, prompt_ids: list[int], *args: Any) -> torch.Tensor:
    """A stand-in for the network: every prompt's probability is the clipped normalised intensity."""
    prob = torch.from_numpy(np.clip(volume, 0.0, 1.0).astype(np.float32))
    return prob[None].repeat(len(prompt_ids), 1, 1, 1)


@pytest.fixture
def predictor() -> Predictor:
    return Predictor(two_spec_payload(), device="cpu")


def groups_of(predictor: Predictor, prompts: str) -> list[tuple[str, list[str]]]:
    """The preprocessing groups of ``prompts`` as (modality, prompt names), for readable assertions."""
    chosen = predictor.resolve_prompts(prompts)
    names = [predictor.label_space.prompts[pid].name for pid in chosen]
    return [(g.spec.modality, [names[i] for i in g.positions]) for g in predictor.preprocessing_groups(chosen)]


def test_groups_follow_the_source_datasets(predictor: Predictor) -> None:
    assert predictor.specs_by_dataset == {ALPHA: CT_SPEC, BETA: MR_SPEC}
    assert groups_of(predictor, "organ_a") == [("CT", ["organ_a"])]
    assert groups_of(predictor, "spleen,liver") == [("MR", ["spleen", "liver"])]
    # Mixed: one group per spec, ordered by first prompt; the synthetic prompt joins the first
    # chosen real prompt's group even when it is asked for first.
    assert groups_of(predictor, "all_foreground,spleen,organ_a") == [
        ("MR", ["all_foreground", "spleen"]), ("CT", ["organ_a"]),
    ]
    # Alone, the synthetic prompt uses the first dataset's spec.
    assert groups_of(predictor, "all_foreground") == [("CT", ["all_foreground"])]
    [group] = predictor.preprocessing_groups(predictor.resolve_prompts("all_foreground"))
    assert group.datasets == (ALPHA,) and group.spec == CT_SPEC


def test_dataset_override_and_unknown_dataset() -> None:
    forced = Predictor(two_spec_payload(), device="cpu", dataset=BETA)
    [group] = forced.preprocessing_groups(forced.resolve_prompts("organ_a,spleen,all_foreground"))
    assert group.spec == MR_SPEC and group.datasets == (BETA,) and group.positions == (0, 1, 2)
    with pytest.raises(PredictionError, match=f"unknown dataset 'Nope'.*{ALPHA}, {BETA}"):
        Predictor(two_spec_payload(), device="cpu", dataset="Nope")


def test_identical_specs_share_one_pass() -> None:
    same = Predictor(two_spec_payload(beta_spec=CT_SPEC), device="cpu")
    [group] = same.preprocessing_groups(same.resolve_prompts("organ_a,spleen"))
    assert group.datasets == (ALPHA, BETA) and group.positions == (0, 1)


def test_prompt_of_two_datasets_prefers_a_spec_already_needed() -> None:
    space = LabelSpace.from_dataset_labels({
        ALPHA: {"labels": {"background": 0, "spleen": 1}},
        BETA: {"labels": {"background": 0, "spleen": 1, "liver": 2}},
    })
    predictor = Predictor(two_spec_payload(space), device="cpu")
    assert groups_of(predictor, "spleen") == [("CT", ["spleen"])]  # first source
    assert groups_of(predictor, "spleen,liver") == [("MR", ["spleen", "liver"])]  # no second pass


def test_checkpoint_whose_datasets_share_one_plan_runs_one_group() -> None:
    payload = with_plans(tiny_payload(), {ALPHA: CT_SPEC, BETA: CT_SPEC})
    predictor = Predictor(payload, device="cpu")
    assert predictor.specs_by_dataset == {ALPHA: CT_SPEC, BETA: CT_SPEC}
    [group] = predictor.preprocessing_groups(predictor.resolve_prompts("all,all_foreground"))
    assert group.spec == CT_SPEC and group.positions == (0, 1, 2, 3)
    result = predictor.predict(halves_image(), "organ_a,spleen")
    assert result.labelmap.GetSize() == (24, 24, 24)
    assert [g["modality"] for g in result.info["preprocessing"]] == ["CT"]


def test_normalisation_follows_the_prompt(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int]] = []

    def fake(model: Any, volume: np.ndarray, prompt_ids: list[int], *args: Any) -> torch.Tensor:
        calls.append(list(prompt_ids))
        return intensity_as_probability(model, volume, prompt_ids)

    monkeypatch.setattr(sliding, "sliding_window_probabilities", fake)
    image = halves_image()
    # Away from the boundary between the halves (interpolation blurs it differently per spacing).
    left, right = (slice(None), slice(None), slice(0, 8)), (slice(None), slice(None), slice(16, 24))

    ct = sitk.GetArrayFromImage(predictor.predict(image, "organ_a").labelmap)
    assert (ct[left] == 1).all() and (ct[right] == 1).all()  # CT window: 0.65 and 1.0

    mr_result = predictor.predict(image, "spleen")
    mr = sitk.GetArrayFromImage(mr_result.labelmap)
    assert (mr[left] == 0).all() and (mr[right] == 1).all()  # z-score: -1 and +1
    assert mr_result.info["spacing_mm"] == [1.5, 1.5, 1.5]
    assert mr_result.info["preprocessing"] == [{
        "datasets": [BETA], "modality": "MR", "spacing_mm": [1.5, 1.5, 1.5], "patch_size": [16, 16, 16],
        "normalization": "zscore", "prompts": ["spleen"],
    }]

    # Mixed: one pass per group, merged; on the right both reach 1.0 and the lower value (spleen) wins.
    calls.clear()
    hook_calls: list[list[str]] = []

    def hook(probs: torch.Tensor, labels: list, record: Any) -> dict:
        hook_calls.append([e.name for e in labels])
        return {"probed": True}

    mixed_result = predictor.predict(image, "spleen,organ_a", return_probabilities=True, model_space_hook=hook)
    space = predictor.label_space
    assert calls == [[space.prompt_id("spleen")], [space.prompt_id("organ_a")]]
    assert hook_calls == [["spleen"]] and mixed_result.info["probed"] is True
    mixed = sitk.GetArrayFromImage(mixed_result.labelmap)
    assert (mixed[left] == 2).all() and (mixed[right] == 1).all()
    assert list(mixed_result.probabilities) == ["spleen", "organ_a"]
    assert [g["normalization"] for g in mixed_result.info["preprocessing"]] == ["zscore", "ct_window"]
    np.testing.assert_allclose(sitk.GetArrayFromImage(mixed_result.probabilities["organ_a"])[left], 275 / 425,
                               rtol=1e-5)


def test_mixed_groups_with_the_real_model_keep_the_input_grid() -> None:
    """Prompts of datasets with different grids AND windows (Alpha: CT, 2 mm, 16^3; Beta: MR, an
    anisotropic 1 x 1 x 3 mm grid, a 16 x 8 x 4 window): each group is preprocessed, slid and restored
    with its own plan, and every label lands on the input grid."""
    beta = PreprocessingSpec(target_spacing=(1.0, 1.0, 3.0), modality="MR")
    predictor = Predictor(with_plans(tiny_payload(), {ALPHA: CT_SPEC, BETA: beta}, patches={BETA: (16, 8, 4)}),
                          device="cpu")
    direction = (0, 1, 0, -1, 0, 0, 0, 0, 1)
    image = make_image(np.random.default_rng(0).normal(0, 200, (18, 22, 26)).astype(np.float32),
                       spacing=(0.8, 1.1, 2.3), origin=(3.0, -7.5, 11.0), direction=direction)
    result = predictor.predict(image, "all,all_foreground", roi="2,3,1,24,20,16", return_probabilities=True)
    out = result.labelmap
    assert (out.GetSize(), out.GetSpacing(), out.GetOrigin(), out.GetDirection()) == (
        image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    assert [g["prompts"] for g in result.info["preprocessing"]] == [["organ_a", "all_foreground"], ["spleen", "liver"]]
    assert [g["patch_size"] for g in result.info["preprocessing"]] == [[16, 16, 16], [16, 8, 4]]
    assert [g["spacing_mm"] for g in result.info["preprocessing"]] == [[2.0, 2.0, 2.0], [1.0, 1.0, 3.0]]
    labels = sitk.GetArrayFromImage(out)
    probs = np.stack([sitk.GetArrayFromImage(result.probabilities[e.name]) for e in result.labels])
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    # The merge rule across groups: the label is the most probable prompt where it reaches 0.5.
    best = probs.max(axis=0)
    decided = (best >= 0.5) & (np.sort(probs, axis=0)[-2] < best - 1e-4)
    np.testing.assert_array_equal(labels[decided], probs.argmax(axis=0)[decided] + 1)
    assert (labels[best < 0.5 - 1e-4] == 0).all()


def test_progress_moves_through_every_preprocessing_group(predictor: Predictor) -> None:
    """Two groups: each owns half of the job and runs all three stages in it, so the overall fraction
    keeps moving while the second group is preprocessed (it used to wait at the first's export)."""
    updates: list[tuple[str, float, str]] = []

    class Recorder:
        def update(self, stage: str, fraction: float, message: str = "") -> None:
            updates.append((stage, fraction, message))

        def close(self) -> None:
            pass

    predictor.predict(halves_image(), "spleen,organ_a", progress=Recorder())
    fractions = [f for _, f, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    preprocessed = [f for _, f, m in updates if m.startswith("preprocessed to")]
    assert preprocessed == pytest.approx([0.05, 0.55])  # 0.1 of each group's half
    second = [f for s, f, m in updates if s == "inference" and f > 0.5]
    assert second and min(second) == pytest.approx(0.55) and max(second) == pytest.approx(0.95)
