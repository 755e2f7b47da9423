"""Sliding window: window count matches MONAI, per-batch progress, Gaussian blending, TTA, malloc tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from versemi.inference.malloc import tune_malloc
from versemi.inference.sliding import SlidingWindowSettings, count_windows, sliding_window_probabilities


class ConstantPerPrompt(torch.nn.Module):
    """Logit = image intensity + prompt id: checks shapes, prompt order and blending of equal values."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def forward(self, images: torch.Tensor, prompt_ids: torch.Tensor, geometry: object = None) -> torch.Tensor:
        self.calls.append(tuple(images.shape))
        return images.expand(-1, len(prompt_ids), -1, -1, -1) + prompt_ids.view(1, -1, 1, 1, 1).float()


@pytest.mark.parametrize("shape,overlap,batch", [((20, 33, 41), 0.5, 1), ((8, 16, 16), 0.25, 3), ((40, 17, 9), 0.0, 2)])
def test_window_count_and_progress(shape: tuple[int, int, int], overlap: float, batch: int) -> None:
    model = ConstantPerPrompt()
    seen: list[tuple[int, int]] = []
    volume = np.zeros(shape, np.float32)
    settings = SlidingWindowSettings(patch_size_zyx=(16, 16, 16), overlap=overlap, batch_size=batch)
    probs = sliding_window_probabilities(model, volume, [2, 0], settings, torch.device("cpu"),
                                         progress=lambda d, t: seen.append((d, t)))
    total = count_windows(shape, (16, 16, 16), overlap)
    assert sum(c[0] for c in model.calls) == total
    assert len(seen) == len(model.calls) == -(-total // batch)  # one callback per batch of windows
    assert seen[-1] == (total, total)
    assert probs.shape == (2, *shape)
    # Constant logits -> blending returns exactly the sigmoid, in prompt order.
    torch.testing.assert_close(probs[0], torch.full(shape, float(torch.sigmoid(torch.tensor(2.0)))))
    torch.testing.assert_close(probs[1], torch.full(shape, 0.5))


def test_tta_runs_eight_flips_and_undoes_them() -> None:
    model = ConstantPerPrompt()
    volume = np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32)
    plain = sliding_window_probabilities(model, volume, [0], SlidingWindowSettings((16, 16, 16)), torch.device("cpu"))
    calls = len(model.calls)
    tta = sliding_window_probabilities(model, volume, [0], SlidingWindowSettings((16, 16, 16), tta=True),
                                       torch.device("cpu"))
    assert len(model.calls) - calls == 8 * calls
    # A flip-equivariant model: mirroring changes nothing once the flips are undone.
    torch.testing.assert_close(tta, plain)


def test_tune_malloc_is_idempotent() -> None:
    first = tune_malloc()
    assert isinstance(first, bool)
    assert tune_malloc() == first


def test_bf16_windows_stay_close_to_fp32() -> None:
    from versemi.network import build_model
    from versemi.inference.sliding import autocast_context

    torch.manual_seed(0)
    model = build_model({"backbone": "unet", "base_filters": 4, "depth": 3, "convs_per_stage": 1,
                         "head_channels": 4, "num_prompts": 2}).eval()
    volume = np.random.default_rng(0).normal(size=(20, 24, 18)).astype(np.float32)
    settings = SlidingWindowSettings(patch_size_zyx=(16, 16, 16))
    cpu = torch.device("cpu")
    fp32 = sliding_window_probabilities(model, volume, [0, 1], settings, cpu, None)
    bf16 = sliding_window_probabilities(model, volume, [0, 1], settings, cpu, torch.bfloat16)
    assert fp32.dtype == bf16.dtype == torch.float32  # probabilities are accumulated in float32
    assert not torch.equal(fp32, bf16)  # the autocast really ran
    assert (fp32 - bf16).abs().max() < 0.05
    with autocast_context(cpu, torch.bfloat16):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
