"""Predictor hidden prompts: run in the same pass, seen by the model-space hook, never written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import versemi.inference.sliding as sliding
from versemi.inference import Predictor
from versemi.inference.io import sidecar_paths
from versemi.inference.predictor import LabelEntry
from versemi.labels import UnknownPromptError

from .helpers import tiny_payload
from .test_predictor import oblique_case
from .test_predictor_specs import BETA, halves_image, intensity_as_probability, two_spec_payload


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    # seed 2: a random model whose synthetic prompt wins voxels when it is labelled.
    return Predictor(tiny_payload(seed=2), device="cpu")


class RecordingHook:
    """Keeps what the predictor showed it (a copy: the probabilities are restored afterwards)."""

    def __init__(self) -> None:
        self.probs: np.ndarray | None = None
        self.labels: list[LabelEntry] = []

    def __call__(self, probs: torch.Tensor, labels: list[LabelEntry], record: Any) -> dict[str, Any]:
        self.probs = probs.numpy().copy()
        self.labels = list(labels)
        return {"hook_saw": [e.name for e in labels]}


def test_hidden_prompt_is_seen_by_the_hook_and_never_labelled(predictor: Predictor) -> None:
    image, _ = oblique_case()
    synthetic = predictor.label_space.synthetic_id
    hook = RecordingHook()
    sunk: list[str] = []
    result = predictor.predict(image, "spleen,liver", hidden_prompts="all_foreground", model_space_hook=hook,
                               return_probabilities=True, probability_sink=lambda e, p: sunk.append(e.name))
    # The hook gets the hidden prompt last, marked, with its own channel.
    assert [(e.name, e.value, e.hidden) for e in hook.labels] == [
        ("spleen", 1, False), ("liver", 2, False), ("all_foreground", 0, True)]
    assert hook.labels[2].prompt_id == synthetic
    assert hook.probs is not None and hook.probs.shape[0] == 3
    assert result.info["hook_saw"] == ["spleen", "liver", "all_foreground"]
    # Its channel is the prompt's real prediction: the same as when it is an ordinary prompt.
    visible_hook = RecordingHook()
    labelled = predictor.predict(image, "spleen,liver,all_foreground", model_space_hook=visible_hook)
    np.testing.assert_allclose(hook.probs, visible_hook.probs, atol=1e-5)
    assert (sitk.GetArrayFromImage(labelled.labelmap) == 3).any()  # it would win voxels if labelled

    # Nowhere in the outputs: labels, probabilities, sink, info prompts; the labelmap is exactly the
    # one of a run without it.
    plain = predictor.predict(image, "spleen,liver", return_probabilities=True)
    assert result.labels == plain.labels and [e.name for e in result.labels] == ["spleen", "liver"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.labelmap), sitk.GetArrayFromImage(plain.labelmap))
    assert result.probabilities is not None and list(result.probabilities) == ["spleen", "liver"]
    for name in ("spleen", "liver"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(result.probabilities[name]),
                                      sitk.GetArrayFromImage(plain.probabilities[name]))
    assert sunk == ["spleen", "liver"]
    assert result.info["prompts"] == ["spleen", "liver"]
    assert result.info["hidden_prompts"] == ["all_foreground"]
    assert "hidden_prompts" not in plain.info


def test_hidden_prompt_that_is_also_chosen_stays_a_label(predictor: Predictor) -> None:
    hook = RecordingHook()
    image, _ = oblique_case()
    result = predictor.predict(image, "spleen,liver", hidden_prompts=["liver"], model_space_hook=hook)
    assert [(e.name, e.hidden) for e in hook.labels] == [("spleen", False), ("liver", False)]
    assert "hidden_prompts" not in result.info
    with pytest.raises(UnknownPromptError, match="kidneyz"):
        predictor.predict(image, "spleen", hidden_prompts="kidneyz")


def test_predict_file_never_writes_a_hidden_prompt(predictor: Predictor, tmp_path: Path) -> None:
    image, _ = oblique_case()
    src = tmp_path / "scan.nrrd"
    sitk.WriteImage(image, str(src))
    hook = RecordingHook()
    out = tmp_path / "out" / "scan_seg.nii.gz"
    written = predictor.predict_file(src, out, "spleen,liver", probabilities_dir=tmp_path / "prob",
                                     model_space_hook=hook, hidden_prompts=["all_foreground"])
    assert hook.labels[-1].name == "all_foreground" and hook.labels[-1].hidden
    sidecar, ctbl = sidecar_paths(out)
    meta = json.loads(sidecar.read_text())
    assert [d["name"] for d in meta["labels"]] == ["spleen", "liver"]
    assert meta["prediction"]["hidden_prompts"] == ["all_foreground"]
    assert "all_foreground" not in ctbl.read_text()
    assert sorted(p.name for p in written.probabilities) == ["liver.nii.gz", "spleen.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "prob").iterdir()) == ["liver.nii.gz", "spleen.nii.gz"]
    plain = predictor.predict(image, "spleen,liver")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))),
                                  sitk.GetArrayFromImage(plain.labelmap))


def test_hidden_prompts_join_the_first_visible_prompts_group(monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = Predictor(two_spec_payload(), device="cpu")  # organ_a: CT dataset; spleen, liver: MR
    space = predictor.label_space
    spleen, organ_a, synthetic = space.prompt_id("spleen"), space.prompt_id("organ_a"), space.synthetic_id
    groups = predictor.preprocessing_groups([spleen, organ_a], [synthetic])
    assert [(g.spec.modality, g.positions, g.hidden_prompt_ids) for g in groups] == [
        ("MR", (0,), (synthetic,)), ("CT", (1,), ())]
    # A hidden real prompt of another dataset still joins the first group: no extra pass or dataset.
    [group] = predictor.preprocessing_groups([spleen], [organ_a])
    assert group.spec.modality == "MR" and group.datasets == (BETA,) and group.hidden_prompt_ids == (organ_a,)

    calls: list[list[int]] = []

    def fake(model: Any, volume: np.ndarray, prompt_ids: list[int], *args: Any) -> torch.Tensor:
        calls.append(list(prompt_ids))
        return intensity_as_probability(model, volume, prompt_ids)

    monkeypatch.setattr(sliding, "sliding_window_probabilities", fake)
    hook = RecordingHook()
    result = predictor.predict(halves_image(), "spleen,organ_a", hidden_prompts="all_foreground",
                               model_space_hook=hook)
    assert calls == [[spleen, synthetic], [organ_a]]  # the same pass as spleen's
    assert [e.name for e in hook.labels] == ["spleen", "all_foreground"]
    assert [g["prompts"] for g in result.info["preprocessing"]] == [["spleen"], ["organ_a"]]
    assert result.info["preprocessing"][0]["hidden_prompts"] == ["all_foreground"]
    assert "hidden_prompts" not in result.info["preprocessing"][1]
    assert set(np.unique(sitk.GetArrayFromImage(result.labelmap))) <= {0, 1, 2}
