"""PromptedSegmenter: prompt batching equals single-prompt forwards, shapes, gradients, config."""

from __future__ import annotations

import json
import math

import pytest
import torch

from versemi.network import PromptedSegmenter, build_model
from versemi.network.backbones import reference_convs_per_stage

TINY = {"base_filters": 4, "depth": 3, "num_prompts": 5}
SIZE = (8, 16, 12)  # anisotropic on purpose, divisible by 4


def tiny_model(backbone: str, **overrides: object) -> PromptedSegmenter:
    torch.manual_seed(0)
    model = build_model({**TINY, "backbone": backbone, **overrides})
    return model.eval()


def images(batch: int = 2, channels: int = 1) -> torch.Tensor:
    return torch.randn(batch, channels, *SIZE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("backbone", ["vnet", "unet"])
def test_many_prompts_equal_single_prompt_forwards(backbone: str) -> None:
    model = tiny_model(backbone)
    x = images()
    prompts = torch.tensor([4, 0, 2, 2])
    with torch.no_grad():
        together = model(x, prompts)
        singles = torch.cat([model(x, prompts[i : i + 1]) for i in range(len(prompts))], dim=1)
    assert together.shape == (2, 4, *SIZE)
    assert together.dtype == torch.float32
    torch.testing.assert_close(together, singles, rtol=1e-4, atol=1e-5)
    # Different prompts give different maps (the prompt code reaches the head).
    assert not torch.allclose(together[:, 0], together[:, 1])
    # The repeated prompt gives identical maps.
    torch.testing.assert_close(together[:, 2], together[:, 3])


@pytest.mark.parametrize("backbone", ["vnet", "unet"])
def test_per_image_prompts_equal_single_image_forwards(backbone: str) -> None:
    model = tiny_model(backbone)
    x = images()
    prompts = torch.tensor([[0, 3, 4], [1, 1, 2]])
    with torch.no_grad():
        together = model(x, prompts)
        for b in range(2):
            single = model(x[b : b + 1], prompts[b])
            torch.testing.assert_close(together[b : b + 1], single, rtol=1e-4, atol=1e-5)
            # And per prompt, one at a time.
            for p in range(3):
                one = model(x[b : b + 1], prompts[b, p : p + 1])
                torch.testing.assert_close(together[b : b + 1, p : p + 1], one, rtol=1e-4, atol=1e-5)


def test_encode_then_decode_equals_forward() -> None:
    model = tiny_model("vnet", in_channels=2)
    x = images(channels=2)
    with torch.no_grad():
        features, pooled = model.encode(x)
        assert features.shape == (2, 4, *SIZE)
        assert pooled.shape == (2, 16)  # base 4 * 2**(depth-1)
        split = model.decode_prompts(features, pooled, [1, 2])
        torch.testing.assert_close(split, model(x, torch.tensor([1, 2])))


def test_gradients_reach_controller_and_backbone() -> None:
    model = tiny_model("vnet").train()
    logits = model(images(), torch.tensor([[0, 1], [2, 4]]))
    target = (torch.rand_like(logits) > 0.5).float()
    torch.nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
    for name in (
        "head.controller.weight",
        "head.input_projection.weight",
        "backbone.encoder.0.convs.0.weight",
        "backbone.down.1.0.weight",
        "backbone.decoder.1.convs.0.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_autocast_bf16_on_cpu_gives_float32_logits_close_to_fp32() -> None:
    model = tiny_model("unet")
    x = images()
    with torch.no_grad():
        reference = model(x, [0, 1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, [0, 1])
    assert low.dtype == torch.float32
    assert (low - reference).abs().max() < 0.1 * reference.abs().max() + 0.05


def test_build_model_round_trip_through_json() -> None:
    model = tiny_model("unet", norm="group", dropout=0.1, prompt_encoding="embedding",
                       convs_per_stage=[1, 2, 1])
    config = json.loads(json.dumps(model.config))
    rebuilt = build_model(config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, [3]), model(x, [3]))
    assert rebuilt.size_divisor == 4 and rebuilt.num_prompts == 5


def test_own_synthetic_head_keeps_its_losses_out_of_the_shared_head() -> None:
    own = tiny_model("unet", synthetic_head="own", synthetic_prompt=4).train()
    shared = tiny_model("unet").train()
    x = images()
    with torch.no_grad():  # same seed: the shared parts start equal; only prompt 4 is served apart
        torch.testing.assert_close(own(x, [0, 1, 2, 3]), shared(x, [0, 1, 2, 3]))
        both = own(x, torch.tensor([[4, 0], [1, 4]]))
        torch.testing.assert_close(both[0, 0], own(x[:1], [4])[0, 0])
        torch.testing.assert_close(both[1, 0], shared(x[1:], [1])[0, 0])
    own(x, [0, 4])[:, 1].sigmoid().mean().backward()  # a loss on the synthetic prompt only
    grads = {n: p.grad for n, p in own.named_parameters()}
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n.startswith("head."))
    assert grads["synthetic_head.controller.weight"].abs().sum() > 0
    assert grads["backbone.encoder.0.convs.0.weight"].abs().sum() > 0
    own.zero_grad(set_to_none=True)
    own(x, [0, 4])[:, 0].sigmoid().mean().backward()  # and on a real prompt only
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in own.synthetic_head.parameters())
    rebuilt = build_model(json.loads(json.dumps(own.config)))
    rebuilt.load_state_dict(own.state_dict())  # strict: the own head is part of the checkpoint


def test_default_model_is_the_reference_vnet() -> None:
    model = build_model({"num_prompts": 5})
    assert model.config["backbone"] == "vnet" and model.size_divisor == 16
    assert reference_convs_per_stage(5) == [1, 2, 3, 3, 3]
    assert model.backbone.bottleneck_channels == 256 and model.backbone.out_channels == 16
    # The controller emits 8*8+8 + 8*8+8 + 8+1 = 153 parameters from 256 + 5 inputs (paper sizes).
    assert tuple(model.head.controller.weight.shape) == (153, 261)
    assert 9_000_000 < sum(p.numel() for p in model.parameters()) < 10_000_000


def test_non_divisible_input_is_a_clear_error() -> None:
    model = tiny_model("vnet")
    with pytest.raises(ValueError, match=r"not divisible by the model's size divisor 4"):
        model(torch.zeros(1, 1, 8, 10, 12), [0])


@pytest.mark.parametrize(
    ("prompts", "message"),
    [([5], r"prompt ids must be in \[0, 4\]"), ([[0], [1], [2]], r"\(P,\) or \(B, P\) with B=2"),
     ([], "empty"), (torch.tensor([0.0]), "integers")],
)
def test_bad_prompt_ids_are_clear_errors(prompts: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_model("vnet")(images(), prompts)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"base_filters": 4}, "num_prompts"),
        ({**TINY, "backbon": "vnet"}, "unknown model config"),
        ({**TINY, "backbone": "resnet"}, "unknown backbone"),
        ({**TINY, "norm": "layer"}, "unknown norm"),
        ({**TINY, "convs_per_stage": [1, 2]}, "convs_per_stage"),
        ({**TINY, "synthetic_head": "separate"}, "unknown synthetic_head"),
        ({**TINY, "synthetic_head": "own"}, "needs synthetic_prompt"),
        ({**TINY, "synthetic_head": "own", "synthetic_prompt": 5}, "not a prompt id"),
    ],
)
def test_bad_configs_are_clear_errors(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(config)


def test_wrong_channel_count_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="2 channels but the model expects 1"):
        tiny_model("vnet")(images(channels=2), [0])


def test_voxel_chunking_does_not_change_the_logits() -> None:
    model = tiny_model("vnet")
    x = images()
    with torch.no_grad():
        whole = model(x, [0, 1, 2])
        model.head.voxels_per_chunk = 100  # 1536 voxels -> 16 chunks, the last one partial
        torch.testing.assert_close(model(x, [0, 1, 2]), whole)


def test_backward_under_bf16_autocast_reaches_the_backbone() -> None:
    model = tiny_model("vnet").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(images(), [0, 4])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    loss.backward()
    grad = model.backbone.encoder[0].convs[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_bf16_autocast_conv_weight_gradient_matches_float32(depth: int) -> None:
    """oneDNN's bf16 3x3x3 weight gradient is garbage for inputs of depth exactly 2 on some CPUs
    (AVX-512-BF16 Xeon, torch 2.13: relative error ~1, often inf/NaN), which made bf16 training
    diverge; the backbone's convolution steps out of autocast there, so its gradient stays at bf16
    precision whatever the depth."""
    from versemi.network.backbones import Conv3d

    torch.manual_seed(depth)
    conv = Conv3d(32, 32, 3, padding=1, bias=False)
    x = torch.randn(2, 32, depth, 6, 6)
    g = torch.randn(2, 32, depth, 6, 6)
    conv(x).backward(g)
    reference = conv.weight.grad.clone()
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
    out.float().backward(g)
    error = float((conv.weight.grad - reference).norm() / reference.norm())
    assert math.isfinite(error) and error < 0.01, error
